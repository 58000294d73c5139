//! The `dataplane` command line.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Parser;
use sluice_config_agent::control::{DEFAULT_MAX_FRAME_BYTES, FrameDecoder};
use tracing::info;

use crate::control::{bind, serve};
use crate::state::{ConfigState, Dirs};

/// Sluice's data plane: configured by `config-agent` over a Unix socket.
#[derive(Debug, Parser)]
#[command(name = "dataplane", version)]
pub struct Args {
    /// The control socket to create (mode 0600); `config-agent` connects to it.
    #[arg(long, value_name = "PATH")]
    pub control_socket: PathBuf,
    /// Folder where `secretRef: NAME` resolves to `NAME/<key>` files.
    #[arg(long, value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Folder where a ConfigMap reference resolves to `NAME/`.
    #[arg(long, value_name = "DIR")]
    pub configmaps_dir: Option<PathBuf>,
    /// Folder where a persistent volume claim resolves to `NAME/`.
    #[arg(long, value_name = "DIR")]
    pub volumes_dir: Option<PathBuf>,
    /// The largest control frame accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: u32,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a `tracing` directive list);
    /// `RUST_LOG` overrides it.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log: String,
}

/// Runs the data plane until it is killed.
///
/// # Errors
/// When the control socket cannot be created.
pub fn run(args: Args) -> anyhow::Result<()> {
    sluice_config_agent::cli::init_logs(&args.log)?;
    let listener = bind(&args.control_socket)?;
    info!(socket = %args.control_socket.display(), "control socket ready");
    let state = ConfigState::new(Dirs {
        secrets: args.secrets_dir,
        configmaps: args.configmaps_dir,
        volumes: args.volumes_dir,
    });
    serve(
        listener,
        Arc::new(Mutex::new(state)),
        FrameDecoder::new(args.max_frame_bytes),
    );
    Ok(())
}
