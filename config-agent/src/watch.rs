//! Watching the configuration folder, and the secret and ConfigMap folders it references, the way
//! a Kubernetes volume mount changes them, for `config-agent run`.
//!
//! The kubelet updates a mounted ConfigMap or Secret atomically: it writes a new timestamped
//! folder (`..2026_12_02_10_00_00.000000001/`), points a `..data_tmp` symlink at it, renames
//! that over `..data`, and removes the old folder; the visible files are symlinks through
//! `..data`. Nothing about the visible names changes, so the watcher compares what each file
//! resolves to: a [`Fingerprint`] of the SHA-256 of every file's content, read through its
//! symlinks. inotify (the `notify` crate) wakes the watcher as soon as a watched folder changes;
//! the fingerprint is also taken every poll interval, for file systems and set-ups where events
//! do not arrive (network file systems, inotify limits, a folder that does not exist yet).
//!
//! This module reads files and waits; it does not load or validate anything.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use sha2::{Digest, Sha256};

use crate::files::{MAX_FILE_BYTES, read_bounded};
use crate::is_manifest;
use crate::model::{DataflowEndpoint, EndpointSpec, KafkaAuthentication, MqttAuthentication};
use crate::snapshot::Options;

/// A folder to watch and which of its files count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Watched {
    /// The folder.
    pub dir: PathBuf,
    /// Only manifests (`*.yaml`, `*.yml`): the configuration folder. Otherwise every file
    /// whose name does not start with `.` (a secret's `password`, a ConfigMap's `ca.crt`).
    pub manifests_only: bool,
}

impl Watched {
    /// The configuration folder.
    pub fn manifests(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            manifests_only: true,
        }
    }

    /// A secret or ConfigMap folder.
    pub fn all_files(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            manifests_only: false,
        }
    }
}

/// What the watched folders hold: per folder (`None` when it cannot be listed, e.g. it does not
/// exist yet), each counted file's path and the SHA-256 of what it resolves to (`None` when it
/// cannot be read). Holds hashes only, never content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, Option<FolderFiles>)>);

/// Each counted file of a folder and the SHA-256 of its content, `None` when unreadable.
type FolderFiles = Vec<(PathBuf, Option<[u8; 32]>)>;

/// Takes the fingerprint of `folders`, following symbolic links.
pub fn fingerprint(folders: &[Watched]) -> Fingerprint {
    Fingerprint(
        folders
            .iter()
            .map(|w| (w.dir.clone(), folder_fingerprint(w)))
            .collect(),
    )
}

fn folder_fingerprint(w: &Watched) -> Option<FolderFiles> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&w.dir).ok()?.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        // `is_file` follows symlinks: `flows.yaml -> ..data/flows.yaml` counts, `..data` not.
        if hidden || !path.is_file() || (w.manifests_only && !is_manifest(&path)) {
            continue;
        }
        // A file past the limit hashes as unreadable: loading it is refused in any case.
        let hash = read_bounded(&path, MAX_FILE_BYTES)
            .ok()
            .map(|bytes| Sha256::digest(&bytes).into());
        files.push((path, hash));
    }
    files.sort();
    Some(files)
}

/// The secret and ConfigMap folders that `endpoints` reference (`<secrets-dir>/NAME`,
/// `<configmaps-dir>/NAME`), for the folder options that are given; sorted, no duplicates.
pub fn referenced_folders<'a>(
    endpoints: impl IntoIterator<Item = &'a DataflowEndpoint>,
    options: &Options,
) -> Vec<Watched> {
    let mut out = Vec::new();
    let mut secret = |name: &str| {
        if let Some(dir) = &options.secrets_dir {
            out.push(Watched::all_files(dir.join(name)));
        }
    };
    let mut configmaps = Vec::new();
    for e in endpoints {
        let tls = match &e.spec {
            EndpointSpec::Mqtt { mqtt_settings: s } => {
                match &s.authentication {
                    MqttAuthentication::X509Certificate {
                        x509_certificate_settings: r,
                    }
                    | MqttAuthentication::UsernamePassword {
                        username_password_settings: r,
                    } => secret(&r.secret_ref),
                    _ => {}
                }
                &s.tls
            }
            EndpointSpec::Kafka { kafka_settings: s } => {
                match &s.authentication {
                    KafkaAuthentication::Sasl { sasl_settings } => {
                        secret(&sasl_settings.secret_ref);
                    }
                    KafkaAuthentication::X509Certificate {
                        x509_certificate_settings,
                    } => secret(&x509_certificate_settings.secret_ref),
                    _ => {}
                }
                &s.tls
            }
            EndpointSpec::LocalStorage { .. } => continue,
        };
        if let (Some(dir), Some(name)) = (
            &options.configmaps_dir,
            &tls.trusted_ca_certificate_config_map_ref,
        ) {
            configmaps.push(Watched::all_files(dir.join(name)));
        }
    }
    out.extend(configmaps);
    out.sort();
    out.dedup();
    out
}

/// Watches folders for a change of what their files resolve to (see the module docs).
#[derive(Debug)]
pub struct FolderWatch {
    folders: Vec<Watched>,
    /// `None`: polling only (inotify unavailable, or asked for).
    watcher: Option<RecommendedWatcher>,
    /// Paths registered with the watcher.
    registered: Vec<PathBuf>,
    events: Receiver<notify::Result<notify::Event>>,
    /// Kept so that `events` never disconnects when polling only.
    _sender: Sender<notify::Result<notify::Event>>,
    seen: Fingerprint,
}

impl FolderWatch {
    /// Watches `folders` with inotify, and by polling. When inotify cannot be set up, logs a
    /// warning and polls only.
    pub fn new(folders: Vec<Watched>) -> Self {
        let (sender, events) = channel();
        let watcher = match notify::recommended_watcher(sender.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("cannot watch folders for changes ({e}); polling only");
                None
            }
        };
        let mut w = Self {
            folders: Vec::new(),
            watcher,
            registered: Vec::new(),
            events,
            _sender: sender,
            seen: Fingerprint::default(),
        };
        w.set_folders(folders);
        w
    }

    /// Watches `folders` by polling only.
    pub fn polling(folders: Vec<Watched>) -> Self {
        let (sender, events) = channel();
        let mut w = Self {
            folders: Vec::new(),
            watcher: None,
            registered: Vec::new(),
            events,
            _sender: sender,
            seen: Fingerprint::default(),
        };
        w.set_folders(folders);
        w
    }

    /// Whether inotify events wake the watcher (else it polls only).
    pub fn has_events(&self) -> bool {
        self.watcher.is_some()
    }

    /// The folders watched.
    pub fn folders(&self) -> &[Watched] {
        &self.folders
    }

    /// Watches `folders` from now on (the folders a new configuration references), and takes
    /// their fingerprint as the one seen. Each folder is watched, and so is its parent, so that
    /// a folder created or replaced later wakes the watcher too.
    pub fn set_folders(&mut self, folders: Vec<Watched>) {
        let mut folders = folders;
        folders.sort();
        folders.dedup();
        if let Some(watcher) = &mut self.watcher {
            let mut wanted: Vec<PathBuf> = folders
                .iter()
                .flat_map(|w| [Some(w.dir.clone()), w.dir.parent().map(Path::to_path_buf)])
                .flatten()
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
            wanted.sort();
            wanted.dedup();
            for old in &self.registered {
                if !wanted.contains(old) {
                    let _ = watcher.unwatch(old);
                }
            }
            // A folder that does not exist cannot be watched; its parent, or polling, sees it
            // appear, and the next call registers it.
            let registered = std::mem::take(&mut self.registered);
            self.registered = wanted
                .into_iter()
                .filter(|p| {
                    registered.contains(p) || watcher.watch(p, RecursiveMode::NonRecursive).is_ok()
                })
                .collect();
        }
        self.seen = fingerprint(&folders);
        self.folders = folders;
    }

    /// Waits at most `poll` for a change, returning as soon as an event shows one; then (or on
    /// timeout) compares the fingerprint with the one seen. Returns whether it changed (the new
    /// one is then the one seen).
    pub fn wait_for_change(&mut self, poll: Duration) -> bool {
        let deadline = Instant::now() + poll;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                // Opening and reading (ours included) is not a change.
                Ok(Ok(event)) if matches!(event.kind, EventKind::Access(_)) => {}
                Ok(_) => {
                    if self.check() {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    return self.check();
                }
            }
            if Instant::now() >= deadline {
                return self.check();
            }
        }
    }

    /// After a change: waits until the folders stay the same for `quiet` (a debounce), or at
    /// most `limit` in all, so that a half-written update is not loaded.
    pub fn settle(&mut self, quiet: Duration, limit: Duration) {
        let give_up = Instant::now() + limit;
        loop {
            let until = (Instant::now() + quiet).min(give_up);
            // Let events pass; only the fingerprint at the end counts.
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                if left.is_zero() || self.events.recv_timeout(left).is_err() {
                    break;
                }
            }
            if !self.check() || Instant::now() >= give_up {
                return;
            }
        }
    }

    fn check(&mut self) -> bool {
        let now = fingerprint(&self.folders);
        if now == self.seen {
            false
        } else {
            self.seen = now;
            true
        }
    }
}

#[cfg(test)]
#[path = "../tests/support/kubelet.rs"]
mod kubelet;

#[cfg(test)]
mod tests {

    use super::*;

    use super::kubelet::Mount;

    /// Calls `wait_for_change` until it reports a change, for at most 10 seconds.
    fn changes_within_deadline(w: &mut FolderWatch) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if w.wait_for_change(Duration::from_millis(50)) {
                return true;
            }
        }
        false
    }

    const FLOWS_V1: &str = "kind: Dataflow # one\n";
    const FLOWS_V2: &str = "kind: Dataflow # two\n";

    #[test]
    fn a_kubelet_swap_of_the_config_folder_is_a_change() {
        let tmp = tempfile::tempdir().unwrap();
        let conf = tmp.path().join("conf");
        let mut mount = Mount::new(&conf, &[("flows.yaml", FLOWS_V1)]);
        let mut w = FolderWatch::new(vec![Watched::manifests(&conf)]);
        assert!(w.has_events());
        assert!(!w.wait_for_change(Duration::from_millis(20)), "nothing yet");
        // Same size, same visible names, a new target.
        mount.update(&[("flows.yaml", FLOWS_V2)]);
        assert!(changes_within_deadline(&mut w));
        assert!(!w.wait_for_change(Duration::from_millis(20)), "seen once");
    }

    #[test]
    fn polling_alone_sees_the_swap_too() {
        let tmp = tempfile::tempdir().unwrap();
        let conf = tmp.path().join("conf");
        let mut mount = Mount::new(&conf, &[("flows.yaml", FLOWS_V1)]);
        let mut w = FolderWatch::polling(vec![Watched::manifests(&conf)]);
        assert!(!w.has_events());
        mount.update(&[("flows.yaml", FLOWS_V2)]);
        assert!(changes_within_deadline(&mut w));
    }

    #[test]
    fn a_rotated_secret_and_a_secret_that_appears_are_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let secrets = tmp.path().join("secrets");
        let mut mount = Mount::new(
            &secrets.join("broker-login"),
            &[("username", "u"), ("password", "p1")],
        );
        let later = secrets.join("later");
        let mut w = FolderWatch::new(vec![
            Watched::all_files(secrets.join("broker-login")),
            Watched::all_files(&later),
        ]);
        mount.update(&[("username", "u"), ("password", "p2")]);
        assert!(changes_within_deadline(&mut w));
        Mount::new(&later, &[("password", "x")]);
        assert!(changes_within_deadline(&mut w));
        // Other files of the config folder, and hidden ones, do not count.
        let conf = tmp.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        w.set_folders(vec![Watched::manifests(&conf)]);
        std::fs::write(conf.join("notes.txt"), "x").unwrap();
        std::fs::write(conf.join(".hidden.yaml"), "x").unwrap();
        assert!(!w.wait_for_change(Duration::from_millis(100)));
        std::fs::write(conf.join("flows.yml"), FLOWS_V1).unwrap();
        assert!(changes_within_deadline(&mut w));
    }

    #[test]
    fn settle_waits_for_quiet_within_its_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let conf = tmp.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        let mut w = FolderWatch::new(vec![Watched::manifests(&conf)]);
        std::fs::write(conf.join("a.yaml"), FLOWS_V1).unwrap();
        assert!(changes_within_deadline(&mut w));
        let start = Instant::now();
        w.settle(Duration::from_millis(20), Duration::from_secs(5));
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(!w.wait_for_change(Duration::from_millis(10)));
    }

    #[test]
    fn referenced_folders_of_endpoints() {
        let text = "apiVersion: connectivity.iotoperations.azure.com/v1\nkind: DataflowEndpoint\nmetadata:\n  name: e\nspec:\n  endpointType: Mqtt\n  mqttSettings:\n    host: h:8883\n    authentication:\n      method: UsernamePassword\n      usernamePasswordSettings:\n        secretRef: login\n    tls:\n      trustedCaCertificateConfigMapRef: ca\n";
        let mut loaded = crate::Loaded::default();
        crate::load_str("e.yaml", text, &mut loaded);
        let crate::model::Resource::DataflowEndpoint(e) = &loaded.resources[0].resource else {
            panic!()
        };
        let options = Options {
            secrets_dir: Some("/s".into()),
            configmaps_dir: Some("/c".into()),
            ..Options::default()
        };
        assert_eq!(
            referenced_folders([e, e], &options),
            [Watched::all_files("/c/ca"), Watched::all_files("/s/login")]
        );
        assert!(referenced_folders([e], &Options::default()).is_empty());
    }
}
