//! The `dataplane` command line: its options, and the wiring of the runtime, the control socket,
//! the metrics server and the retry of dataflows that could not start yet.

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use sluice_config_agent::cli::ReferenceDirs;
use sluice_config_agent::control::{DEFAULT_MAX_FRAME_BYTES, FrameDecoder};
use sluice_config_agent::model::DEFAULT_PROMETHEUS_PORT;
use tracing::info;

use crate::config::environment::{Dirs, Environment};
use crate::control::apply::{ConfigState, Runner};
use crate::control::server::{bind, remove_socket, serve};
use crate::mqtt::session::DEFAULT_MAXIMUM_PACKET_SIZE;
use crate::observe::http::MetricsEndpoint;
use crate::observe::logs::LogLevel;
use crate::observe::metrics::BuildInfo;
use crate::observe::metrics::Registry;
use crate::runtime::workers::Runtime;
pub use crate::runtime::workers::{IoDriver, Pin};
pub use sluice_config_agent::cli::LogFormat;

/// How often dataflows that wait for a secret are planned again.
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Whether dataflows may use shared subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SharedSubscriptions {
    /// A dataflow runs on every core, each subscribing with `$share/<dataflow>/<filter>`, when
    /// there is more than one core (or instance) and the broker offers shared subscriptions.
    #[default]
    Auto,
    /// Every dataflow runs on one core with plain subscriptions (for a broker that does not
    /// keep shared subscriptions across its own restart; see docs/delivery.md). Run one data
    /// plane per dataflow then: two would each receive every message.
    Off,
}

/// Sluice's data plane: configured by `config-agent` over a Unix socket.
#[derive(Debug, Parser)]
#[command(name = "dataplane", version)]
pub struct Args {
    /// The control socket to create (mode 0600); `config-agent` connects to it.
    #[arg(long, value_name = "PATH")]
    pub control_socket: PathBuf,
    /// Where references resolve to files (the same options as `config-agent`'s).
    #[command(flatten)]
    pub dirs: ReferenceDirs,
    /// Folder of service account tokens, one file per audience (`ServiceAccountToken`
    /// authentication).
    #[arg(long, value_name = "DIR")]
    pub token_dir: Option<PathBuf>,
    /// IMDS-compatible endpoint for managed identity tokens, e.g. `http://169.254.169.254`.
    #[arg(long, value_name = "URL")]
    pub imds_endpoint: Option<String>,
    /// This data plane's name among several that run the same dataflows against the same
    /// brokers (e.g. the pod name): part of every MQTT client id, so that their sessions stay
    /// apart while their shared subscriptions spread the load.
    #[arg(long, value_name = "NAME")]
    pub instance_id: Option<String>,
    /// Worker threads, one per core; default: every CPU this process may use.
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,
    /// I/O driver of the workers.
    #[arg(long, value_enum, default_value_t = IoDriver::Auto)]
    pub io_driver: IoDriver,
    /// Pin each worker to one CPU: `auto` only when this process was given a CPU set smaller
    /// than the machine's (a Kubernetes CPU manager `static` policy, `taskset`), `always`,
    /// `never`.
    #[arg(long, value_enum, default_value_t = Pin::Auto)]
    pub pin: Pin,
    /// Shared subscriptions: `auto` spreads a dataflow over the cores, `off` runs each on one
    /// core with plain subscriptions.
    #[arg(long, value_enum, default_value_t = SharedSubscriptions::Auto)]
    pub shared_subscriptions: SharedSubscriptions,
    /// Serve `/metrics`, `/healthz` and `/readyz` on this address (port 0: any free port,
    /// logged). Default: `0.0.0.0` on the profile's `diagnostics.metrics.prometheusPort`
    /// (9600 until a snapshot names another).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// How long a changed or removed dataflow, or all of them at SIGTERM, may take to drain, in
    /// seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub drain_timeout: u64,
    /// The largest MQTT packet accepted from a broker, in bytes (the whole frame), from 128 to
    /// 268435460. It is announced as Maximum Packet Size in every MQTT 5.0 CONNECT and enforced
    /// for 3.1.1 too: a bigger packet is refused from its fixed header, before its body is
    /// read, and closes that connection (DISCONNECT 0x95 Packet too large in 5.0; counted in
    /// `sluice_packets_too_large_total`). It bounds each connection's read buffer. The default,
    /// 64 MiB, is what the Azure IoT Operations broker accepts with its default memory profile;
    /// that broker ignores the client's Maximum Packet Size, so keep this at least as large as
    /// the broker's own limit, or a larger message is delivered, refused and delivered again.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAXIMUM_PACKET_SIZE, value_parser = parse_max_packet_bytes)]
    pub max_packet_bytes: NonZeroU32,
    /// The largest control frame accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: u32,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a `tracing` directive list);
    /// `RUST_LOG` overrides it. Without either, the level follows the dataflow profiles
    /// (`diagnostics.logs.level`, the most verbose of them), `info` until a snapshot arrives.
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// Log line format: `text` (for people) or `json` (one object per line, for collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Smallest `--max-packet-bytes`: CONNACK, SUBACK and PUBACK must still fit.
const MIN_MAX_PACKET_BYTES: u32 = 128;

/// `--max-packet-bytes`: a number of bytes that MQTT can express and the session's own control
/// packets from the broker fit in.
fn parse_max_packet_bytes(s: &str) -> Result<NonZeroU32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if !(MIN_MAX_PACKET_BYTES..=sluice_codec::MAX_PACKET_SIZE).contains(&n) {
        return Err(format!(
            "{n} is not between {MIN_MAX_PACKET_BYTES} and {} (the largest MQTT packet)",
            sluice_codec::MAX_PACKET_SIZE
        ));
    }
    NonZeroU32::new(n).ok_or_else(|| "0 is not a size".into())
}

/// The data plane could not start: what was being set up, and why.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {error}")]
pub struct RunError {
    what: &'static str,
    error: Box<dyn std::error::Error + Send + Sync>,
}

/// Wraps an error with what was being set up.
fn setting_up<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> RunError {
    move |e| RunError {
        what,
        error: Box::new(e),
    }
}

/// What the binary was built as (its package version and commit), for `sluice_build_info`.
#[derive(Debug, Clone, Copy)]
pub struct Build {
    /// The package version.
    pub version: &'static str,
    /// The commit (`unknown` outside a git checkout).
    pub commit: &'static str,
}

/// Runs the data plane until SIGTERM or SIGINT, then drains and exits.
///
/// # Errors
/// When the logs, the signal handlers, the control socket, the metrics listener or the workers
/// cannot be set up.
pub fn run(args: Args, build: Build) -> Result<(), RunError> {
    let log_level =
        Arc::new(LogLevel::init(args.log.as_deref(), args.log_format).map_err(setting_up("logs"))?);
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(setting_up("signal handlers"))?;
    let cores = args.cores.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let registry = Arc::new(Registry::new());
    let metrics = Arc::new(
        match args.metrics_addr {
            Some(addr) => MetricsEndpoint::fixed(addr, Arc::clone(&registry)),
            None => MetricsEndpoint::following_profile(
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PROMETHEUS_PORT)),
                Arc::clone(&registry),
            ),
        }
        .map_err(setting_up("metrics"))?,
    );
    let runtime = Runtime::start(cores, args.io_driver, args.pin, Arc::clone(&registry))
        .map_err(setting_up("workers"))?;
    registry.set_build(BuildInfo {
        version: build.version,
        commit: build.commit,
        io_driver: runtime.driver_name(),
        cores,
        pinned: runtime.pinned(),
    });
    let drain_timeout = Duration::from_secs(args.drain_timeout);
    let dirs = Dirs {
        secrets: args.dirs.secrets_dir,
        configmaps: args.dirs.configmaps_dir,
        volumes: args.dirs.volumes_dir,
        schemas: args.dirs.schemas_dir,
    };
    let state = ConfigState::with_runner(Runner {
        runtime: runtime.handle(),
        env: Environment {
            dirs,
            token_dir: args.token_dir,
            imds_endpoint: args.imds_endpoint,
            cores,
            instance_id: args.instance_id,
            shared_subscriptions: args.shared_subscriptions == SharedSubscriptions::Auto,
            max_packet_bytes: args.max_packet_bytes,
        },
        registry,
        drain_timeout,
        log_level: Some(log_level),
        metrics: Some(Arc::clone(&metrics)),
    });
    let state = Arc::new(Mutex::new(state));
    let listener = bind(&args.control_socket).map_err(setting_up("control socket"))?;
    info!(socket = %args.control_socket.display(), "control socket ready");
    let max_frame = args.max_frame_bytes;
    std::thread::Builder::new()
        .name("sluice-control".into())
        .spawn({
            let state = Arc::clone(&state);
            move || serve(listener, state, FrameDecoder::new(max_frame))
        })
        .map_err(setting_up("the control thread"))?;
    std::thread::Builder::new()
        .name("sluice-retry".into())
        .spawn(move || {
            loop {
                std::thread::sleep(RETRY_EVERY);
                let mut s = state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if s.has_retryable() {
                    s.retry_skipped();
                }
            }
        })
        .map_err(setting_up("the retry thread"))?;
    if let Some(signal) = signals.forever().next() {
        info!(signal, "draining");
    }
    runtime.shutdown(drain_timeout);
    remove_socket(&args.control_socket);
    drop(metrics);
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn max_packet_bytes_defaults_and_bounds() {
        let args = Args::try_parse_from(["dataplane", "--control-socket", "s"]).expect("valid");
        assert_eq!(args.max_packet_bytes, DEFAULT_MAXIMUM_PACKET_SIZE);
        let args = Args::try_parse_from([
            "dataplane",
            "--control-socket",
            "s",
            "--max-packet-bytes",
            "1048576",
        ])
        .expect("valid");
        assert_eq!(args.max_packet_bytes.get(), 1 << 20);
        for bad in ["0", "127", "268435461", "1MiB"] {
            assert!(
                Args::try_parse_from([
                    "dataplane",
                    "--control-socket",
                    "s",
                    "--max-packet-bytes",
                    bad
                ])
                .is_err(),
                "{bad}"
            );
        }
    }
}
