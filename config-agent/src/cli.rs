//! The `config-agent` command line: `validate` for CI pipelines, `run` to configure a data plane.
//!
//! `run` watches the folder, and the secret and ConfigMap folders the configuration references,
//! as a Kubernetes mount changes them ([`crate::watch`]: inotify, the content of what each file
//! resolves to, polling as a fallback), waits until they have been quiet for the debounce
//! interval, then loads and validates everything again. A valid result that differs from the last snapshot pushed is pushed with the
//! next generation; an invalid one is reported and the last good snapshot stays in force. When the
//! data plane goes away the agent reconnects and pushes the last good snapshot again.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use tracing::{error, info, warn};

use crate::control::{
    AgentMessage, DEFAULT_MAX_FRAME_BYTES, DataplaneMessage, FrameDecoder, MAX_GENERATION,
    NotRunning, SUPPORTED_VERSIONS, check_socket_folder, encode_frame, next_generation, peer_uid,
    read_message, write_message,
};
use crate::model::{DataflowEndpoint, Resource};
use crate::watch::{FolderWatch, Watched, referenced_folders};
use crate::{
    Diagnostic, Options, RealFiles, Snapshot, load_and_validate, load_paths, validate_loaded,
};

/// Validates Azure IoT Operations dataflow resources and configures a Sluice data plane.
#[derive(Debug, Parser)]
#[command(name = "config-agent", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate manifests (files or folders); exit 0 when valid, 1 otherwise.
    Validate(ValidateArgs),
    /// Load, validate and push to the data plane; watch the folder and push every valid change.
    Run(RunArgs),
}

/// Options shared by both subcommands.
#[derive(Debug, ClapArgs)]
pub struct Resolve {
    /// The local MQTT broker (`host:port`): the host of an MQTT endpoint that omits it. Default:
    /// AIO's `aio-broker:18883` (a `v1beta1` endpoint then gets `aio-mq-dmqtt-frontend:8883`).
    #[arg(long, value_name = "HOST:PORT", default_value = crate::snapshot::DEFAULT_LOCAL_BROKER_HOST)]
    pub local_broker: String,
    /// Allow dataflows that neither read from nor write to the local broker (AIO requires one).
    #[arg(long)]
    pub allow_no_local_broker: bool,
    /// Where references resolve to files.
    #[command(flatten)]
    pub dirs: ReferenceDirs,
}

/// Where Kubernetes references resolve to files, as a mounted volume would show them (the
/// agent's and the data plane's options).
#[derive(Debug, Clone, Default, ClapArgs)]
pub struct ReferenceDirs {
    /// Folder where `secretRef: NAME` resolves to `NAME/<key>` files.
    #[arg(long, value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Folder where a ConfigMap reference resolves to `NAME/`.
    #[arg(long, value_name = "DIR")]
    pub configmaps_dir: Option<PathBuf>,
    /// Folder where a persistent volume claim resolves to `NAME/`.
    #[arg(long, value_name = "DIR")]
    pub volumes_dir: Option<PathBuf>,
    /// Folder where `schemaRef: aio-sr://NS/NAME:VERSION` resolves to
    /// `NS/NAME-VERSION.json` (a Delta schema, as Azure IoT Operations' schema registry holds).
    #[arg(long, value_name = "DIR")]
    pub schemas_dir: Option<PathBuf>,
}

impl Resolve {
    fn options(&self) -> Options {
        Options {
            local_broker_host: self.local_broker.clone(),
            require_local_broker: !self.allow_no_local_broker,
            secrets_dir: self.dirs.secrets_dir.clone(),
            configmaps_dir: self.dirs.configmaps_dir.clone(),
            volumes_dir: self.dirs.volumes_dir.clone(),
            schemas_dir: self.dirs.schemas_dir.clone(),
        }
    }
}

/// Output format of `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line per problem: `file:line: path: message`.
    Text,
    /// One JSON document: `{"valid", "errors", "warnings"}`.
    Json,
}

/// `config-agent validate`.
#[derive(Debug, ClapArgs)]
pub struct ValidateArgs {
    /// Manifest files or folders (`*.yaml`, `*.yml`).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub resolve: Resolve,
}

/// `config-agent run`.
#[derive(Debug, ClapArgs)]
pub struct RunArgs {
    /// The folder of manifests to load and watch.
    #[arg(long, value_name = "DIR")]
    pub config_dir: PathBuf,
    /// The data plane's control socket. Its folder must be one only this user (or root) can
    /// write, and the process listening on it must run as `--dataplane-uid`.
    #[arg(long, value_name = "PATH")]
    pub control_socket: PathBuf,
    /// The uid the data plane runs as; the agent sends its configuration to no other
    /// process. Default: the agent's own.
    #[arg(long, value_name = "UID")]
    pub dataplane_uid: Option<u32>,
    /// Push one snapshot, print the data plane's verdict and exit: 0 applied and every enabled
    /// dataflow running, 1 invalid or rejected, 2 when the data plane cannot be reached, 3
    /// applied but some dataflows not running (each printed with its reason).
    #[arg(long)]
    pub once: bool,
    /// How long the folder must stay unchanged before it is loaded again, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub debounce_ms: u64,
    /// How often the folders are fingerprinted even without an inotify event (the fallback for
    /// file systems without events), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub poll_ms: u64,
    /// The largest control frame the data plane accepts (its `--max-frame-bytes`): a snapshot
    /// larger than this is not sent, and the reason is logged.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: u32,
    /// How long `--once` waits for the data plane's socket, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Log filter (`info`, `debug`, ...); `RUST_LOG` overrides it.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log: String,
    /// Log line format: `text` (for people) or `json` (one object per line, for collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub resolve: Resolve,
}

/// How log lines are written (both processes' `--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `tracing`'s human-readable lines (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `target`,
    /// and the spans.
    Json,
}

/// Runs the command line; returns the process's exit code.
#[allow(clippy::print_stderr)]
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate(args) => validate(&args),
        Command::Run(args) => {
            if let Err(e) = init_logs(&args.log, args.log_format) {
                eprintln!("config-agent: {e:#}");
                return ExitCode::from(2);
            }
            match run(&args) {
                Ok(code) => code,
                Err(e) => {
                    error!("{e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Sends `tracing` logs to stderr as `format` (text: colours only on a terminal), filtered by
/// `RUST_LOG` or else by `filter`. Both binaries use it. When a subscriber is already set (a test calling [`main`]
/// twice), that one stays.
///
/// # Errors
/// When `filter` is not a valid filter.
pub fn init_logs(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .context("--log")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
            .ok(),
        LogFormat::Json => builder.json().try_init().ok(),
    };
    Ok(())
}

#[allow(clippy::print_stdout)]
fn validate(args: &ValidateArgs) -> ExitCode {
    let report = load_and_validate(&RealFiles, &args.paths, &args.resolve.options());
    let (errors, warnings): (Vec<&Diagnostic>, Vec<&Diagnostic>) =
        report.diagnostics.iter().partition(|d| d.is_error());
    match args.format {
        Format::Json => {
            let doc = serde_json::json!({
                "valid": errors.is_empty(),
                "errors": errors,
                "warnings": warnings,
            });
            println!("{doc:#}");
        }
        Format::Text => {
            for d in &report.diagnostics {
                println!("{d}");
            }
            println!(
                "{}: {} error(s), {} warning(s)",
                if errors.is_empty() {
                    "valid"
                } else {
                    "invalid"
                },
                errors.len(),
                warnings.len()
            );
        }
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Loads and validates the folder; logs the problems; returns the snapshot when valid, and the
/// secret and ConfigMap folders that the manifests reference (valid or not).
fn load(args: &RunArgs, options: &Options) -> (Option<Snapshot>, Vec<Watched>) {
    let loaded = load_paths(&RealFiles, std::slice::from_ref(&args.config_dir));
    let endpoints = loaded.resources.iter().filter_map(|r| match &r.resource {
        Resource::DataflowEndpoint(e) => Some(e),
        _ => None,
    });
    let references = referenced_folders(endpoints, options);
    let report = validate_loaded(loaded, options, &RealFiles);
    for d in &report.diagnostics {
        if d.is_error() {
            error!("{d}");
        } else {
            warn!("{d}");
        }
    }
    if report.snapshot.is_none() {
        let errors = report.diagnostics.iter().filter(|d| d.is_error()).count();
        error!(
            errors,
            "the configuration is invalid; the last good snapshot stays in force"
        );
    }
    (report.snapshot, references)
}

/// What `run` watches: the configuration folder, the folders its manifests reference, and
/// those of the snapshot in force (which may differ while the manifests are invalid).
fn watched(
    args: &RunArgs,
    options: &Options,
    references: Vec<Watched>,
    good: Option<&Snapshot>,
) -> Vec<Watched> {
    let mut out = vec![Watched::manifests(&args.config_dir)];
    out.extend(references);
    if let Some(s) = good {
        out.extend(referenced_folders(
            s.endpoints.iter().collect::<Vec<&DataflowEndpoint>>(),
            options,
        ));
    }
    out
}

/// A connection to the data plane after the handshake.
struct Connection {
    stream: UnixStream,
    decoder: FrameDecoder,
    /// The largest frame the data plane accepts.
    max_frame_bytes: u32,
    /// The generation in force on the data plane.
    generation: u64,
}

impl Connection {
    fn open(path: &Path, dataplane_uid: Option<u32>, max_frame_bytes: u32) -> anyhow::Result<Self> {
        check_socket_folder(path)?;
        let mut stream = UnixStream::connect(path)
            .with_context(|| format!("cannot connect to {}", path.display()))?;
        let want = dataplane_uid.unwrap_or_else(|| rustix::process::geteuid().as_raw());
        let uid = peer_uid(&stream).context("cannot read the listener's credentials")?;
        if uid != want {
            bail!(
                "the process listening on {} runs as uid {uid}, not {want} (--dataplane-uid): the configuration is not sent to it",
                path.display()
            );
        }
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let decoder = FrameDecoder::new(max_frame_bytes);
        write_message(
            &mut stream,
            &AgentMessage::<()>::Hello {
                versions: SUPPORTED_VERSIONS.to_vec(),
                agent: format!("config-agent {}", env!("CARGO_PKG_VERSION")),
            },
        )?;
        match read_message(&mut stream, &decoder)? {
            Some(DataplaneMessage::Welcome {
                version,
                dataplane,
                generation,
            }) => {
                info!(%dataplane, version, generation, "connected to the data plane");
                Ok(Self {
                    stream,
                    decoder,
                    max_frame_bytes,
                    generation: generation.unwrap_or(0),
                })
            }
            Some(DataplaneMessage::Error { message }) => bail!("the data plane refused: {message}"),
            Some(other) => bail!("unexpected answer to Hello: {other:?}"),
            None => bail!("the data plane closed the connection"),
        }
    }

    /// Pushes `snapshot` with the next generation; returns the verdict. Dataflows the data plane
    /// does not run are logged at warn.
    fn push(&mut self, snapshot: &Snapshot) -> anyhow::Result<Pushed> {
        let Some(generation) = next_generation(Some(self.generation)) else {
            bail!(
                "the data plane's generation in force ({}) leaves no room above it (the largest is {MAX_GENERATION}); restart the data plane",
                self.generation
            );
        };
        let mut frame = Vec::new();
        encode_frame(
            &AgentMessage::Apply {
                generation,
                snapshot,
            },
            &mut frame,
        )?;
        let len = frame.len() - 4;
        if len > self.max_frame_bytes as usize {
            bail!(
                "the snapshot is {len} bytes as a control frame, more than the {} the data plane accepts (--max-frame-bytes, given to both processes): it is not sent",
                self.max_frame_bytes
            );
        }
        self.stream.write_all(&frame)?;
        self.stream.flush()?;
        match read_message(&mut self.stream, &self.decoder)? {
            Some(DataplaneMessage::Applied {
                generation,
                changes,
                not_running,
            }) => {
                self.generation = generation;
                info!(
                    generation,
                    added = %crate::control::Names(&changes.added),
                    changed = %crate::control::Names(&changes.changed),
                    removed = %crate::control::Names(&changes.removed),
                    unchanged = changes.unchanged.len(),
                    not_running = not_running.len(),
                    "applied"
                );
                for n in &not_running {
                    warn!(
                        generation,
                        dataflow = %n.dataflow,
                        code = %n.code,
                        retrying = n.retrying,
                        "not running: {}",
                        n.reason
                    );
                }
                Ok(Pushed::Applied(not_running))
            }
            Some(DataplaneMessage::Rejected { generation, errors }) => {
                for e in &errors {
                    error!(generation, path = %e.path, "rejected: {}", e.message);
                }
                Ok(Pushed::Rejected)
            }
            Some(DataplaneMessage::Error { message }) => bail!("the data plane: {message}"),
            Some(other) => bail!("unexpected answer to Apply: {other:?}"),
            None => bail!("the data plane closed the connection"),
        }
    }
}

/// The data plane's answer to a pushed snapshot.
#[derive(Debug)]
enum Pushed {
    /// In force; the dataflows it does not run (empty: all run).
    Applied(Vec<NotRunning>),
    /// Refused; the previous snapshot stays in force.
    Rejected,
}

/// Exit code of `run --once` when the snapshot was applied but some dataflows do not run.
pub const EXIT_NOT_RUNNING: u8 = 3;

/// SIGTERM (a pod stopping) or SIGINT ends the agent with status 0: it holds nothing to save
/// (the data plane keeps the configuration in force and drains on its own SIGTERM).
fn exit_on_termination() -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).context("signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                info!(signal, "stopping");
                std::process::exit(0);
            }
        })
        .context("signal thread")?;
    Ok(())
}

fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let options = args.resolve.options();
    if args.once {
        return once(args, &options);
    }
    exit_on_termination()?;
    let poll = Duration::from_millis(args.poll_ms.max(10));
    let debounce = Duration::from_millis(args.debounce_ms);
    // A folder that keeps changing is loaded after this long anyway.
    let settle_limit = (debounce * 20).max(Duration::from_secs(10));
    let (mut good, references) = load(args, &options);
    let mut watch = FolderWatch::new(watched(args, &options, references, good.as_ref()));
    if !watch.has_events() {
        warn!(
            poll_ms = args.poll_ms,
            "no file system events: polling only"
        );
    }
    // The snapshot the data plane has from us on the current connection.
    let mut pushed: Option<Snapshot> = None;
    let mut conn: Option<Connection> = None;
    let mut last_connect_error = Instant::now() - Duration::from_secs(3600);
    loop {
        if conn.is_none() {
            match Connection::open(
                &args.control_socket,
                args.dataplane_uid,
                args.max_frame_bytes,
            ) {
                Ok(c) => {
                    conn = Some(c);
                    pushed = None;
                }
                Err(e) => {
                    if last_connect_error.elapsed() > Duration::from_secs(10) {
                        warn!("{e:#}; retrying");
                        last_connect_error = Instant::now();
                    }
                }
            }
        }
        if let (Some(c), Some(snapshot)) = (conn.as_mut(), good.as_ref())
            && pushed.as_ref() != Some(snapshot)
        {
            match c.push(snapshot) {
                Ok(_) => pushed = Some(snapshot.clone()),
                Err(e) => {
                    warn!("{e:#}; reconnecting");
                    conn = None;
                }
            }
        }
        if watch.wait_for_change(poll) {
            // Debounce: wait until the folders stay the same for the whole interval.
            watch.settle(debounce, settle_limit);
            info!(dir = %args.config_dir.display(), "configuration changed");
            let (loaded, references) = load(args, &options);
            if let Some(s) = loaded {
                good = Some(s);
                // Pushed again even when equal: a rotated secret or CA is the same snapshot,
                // validated anew, under a new generation.
                pushed = None;
            }
            watch.set_folders(watched(args, &options, references, good.as_ref()));
        } else if let Some(c) = conn.as_mut() {
            // Notice a data plane that went away while nothing changed.
            if is_closed(&c.stream) {
                warn!("the data plane closed the connection; reconnecting");
                conn = None;
            }
        }
    }
}

/// Whether the peer closed the stream: a non-blocking read gets end of file. The data plane sends
/// nothing unasked, so a byte here is a protocol error and also ends the connection.
fn is_closed(stream: &UnixStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match std::io::Read::read(&mut &*stream, &mut byte) {
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        Ok(_) => true,
    };
    let _ = stream.set_nonblocking(false);
    closed
}

#[allow(clippy::print_stdout)]
fn once(args: &RunArgs, options: &Options) -> anyhow::Result<ExitCode> {
    let (Some(snapshot), _) = load(args, options) else {
        return Ok(ExitCode::from(1));
    };
    let deadline = Instant::now() + Duration::from_millis(args.connect_timeout_ms);
    let mut conn = loop {
        match Connection::open(
            &args.control_socket,
            args.dataplane_uid,
            args.max_frame_bytes,
        ) {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => {
                error!("{e:#}");
                return Ok(ExitCode::from(2));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    match conn.push(&snapshot)? {
        Pushed::Applied(not_running) if not_running.is_empty() => {
            println!("applied generation {}", conn.generation);
            Ok(ExitCode::SUCCESS)
        }
        Pushed::Applied(not_running) => {
            println!(
                "applied generation {}; {} dataflow(s) not running:",
                conn.generation,
                not_running.len()
            );
            for n in &not_running {
                println!("{}", not_running_line(n));
            }
            Ok(ExitCode::from(EXIT_NOT_RUNNING))
        }
        Pushed::Rejected => {
            println!("rejected");
            Ok(ExitCode::from(1))
        }
    }
}

/// `  namespace/name: reason [code, retrying]`: one line per dataflow not running.
fn not_running_line(n: &NotRunning) -> String {
    let retrying = if n.retrying { ", retrying" } else { "" };
    format!("  {}: {} [{}{retrying}]", n.dataflow, n.reason, n.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_talks_only_to_the_data_plane_it_was_told_of() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let own = rustix::process::geteuid().as_raw();
        let err = Connection::open(&path, Some(own.wrapping_add(1)), DEFAULT_MAX_FRAME_BYTES)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("runs as uid"), "{err}");
        // A folder others can write is refused before connecting.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let err = Connection::open(&path, None, DEFAULT_MAX_FRAME_BYTES)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("writable by others"), "{err}");
    }

    #[test]
    fn a_snapshot_past_the_frame_limit_is_not_sent() {
        let (ours, mut theirs) = UnixStream::pair().expect("socketpair");
        let snapshot = Snapshot {
            local_broker_host: "x".repeat(200),
            endpoints: Vec::new(),
            dataflows: Vec::new(),
            profiles: Vec::new(),
        };
        let mut connection = Connection {
            stream: ours,
            decoder: FrameDecoder::new(100),
            max_frame_bytes: 100,
            generation: 0,
        };
        let Err(err) = connection.push(&snapshot) else {
            panic!("sent")
        };
        assert!(err.to_string().contains("--max-frame-bytes"), "{err}");
        drop(connection);
        let mut sent = Vec::new();
        std::io::Read::read_to_end(&mut theirs, &mut sent).expect("read");
        assert!(sent.is_empty(), "nothing was written");
    }

    #[test]
    fn not_running_lines() {
        let n = NotRunning {
            dataflow: "azure-iot-operations/to-kafka".into(),
            code: "endpoint_kind_not_built".into(),
            reason: "Kafka endpoints are not implemented yet".into(),
            retrying: false,
        };
        assert_eq!(
            not_running_line(&n),
            "  azure-iot-operations/to-kafka: Kafka endpoints are not implemented yet [endpoint_kind_not_built]"
        );
        let n = NotRunning {
            retrying: true,
            code: "secret_unreadable".into(),
            ..n
        };
        assert!(not_running_line(&n).ends_with("[secret_unreadable, retrying]"));
    }
}
