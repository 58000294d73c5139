//! Where the data plane finds what it needs besides the snapshot: the folders that references
//! resolve to, the token folder, the IMDS endpoint, the cores and this instance's name.

use std::num::NonZeroU32;
use std::path::PathBuf;

use crate::mqtt::session::DEFAULT_MAXIMUM_PACKET_SIZE;

/// Where the data plane finds the files that references resolve to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dirs {
    /// `<secrets-dir>/NAME/<key>`.
    pub(crate) secrets: Option<PathBuf>,
    /// `<configmaps-dir>/NAME/`.
    pub(crate) configmaps: Option<PathBuf>,
    /// `<volumes-dir>/NAME/`: persistent volume claims (LocalStorage).
    pub(crate) volumes: Option<PathBuf>,
    /// `<schemas-dir>/NS/NAME-VERSION.json`: output schemas (`schemaRef`).
    pub(crate) schemas: Option<PathBuf>,
}

/// Where the data plane finds what it needs besides the snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Environment {
    /// Secret, ConfigMap and volume folders.
    pub(crate) dirs: Dirs,
    /// `--token-dir`: service account tokens, one file per audience.
    pub(crate) token_dir: Option<PathBuf>,
    /// `--imds-endpoint`: where managed identity tokens come from.
    pub(crate) imds_endpoint: Option<String>,
    /// Worker threads (cores).
    pub(crate) cores: usize,
    /// `--instance-id`, part of every client id.
    pub(crate) instance_id: Option<String>,
    /// `--shared-subscriptions`: whether a dataflow may run on every core with a shared
    /// subscription (`true`), or always on one core with plain subscriptions.
    pub(crate) shared_subscriptions: bool,
    /// `--max-packet-bytes`: the largest MQTT packet accepted from a broker, bytes (the whole
    /// frame); every session's `SessionConfig::maximum_packet_size`. Default
    /// [`DEFAULT_MAXIMUM_PACKET_SIZE`] (64 MiB).
    pub(crate) max_packet_bytes: NonZeroU32,
}

impl Default for Environment {
    fn default() -> Self {
        Self {
            dirs: Dirs::default(),
            token_dir: None,
            imds_endpoint: None,
            cores: 1,
            instance_id: None,
            shared_subscriptions: true,
            max_packet_bytes: DEFAULT_MAXIMUM_PACKET_SIZE,
        }
    }
}
