//! `sluice-perf bench`: MQTT to MQTT through the Sluice data plane and through a naive bridge
//! (`mosquitto_sub | mosquitto_pub -l`), both fed by the replay broker and both publishing back
//! into it, for each payload size and QoS; and with `--destination kafka`, MQTT to Kafka: the
//! same source, into the Kafka blackhole ([`crate::kafka_blackhole`]), through the data plane
//! and through `mosquitto_sub | kcat -P` ([`crate::kafka_bench`]).
//!
//! One case: start a replay broker (source and sink listeners, gate closed), start the
//! process(es) under test, wait until the source has a subscription and the sink a connection
//! and both have been stable for a moment, sample CPU, open the gate, wait until the sink has
//! every message (or nothing new arrived for the idle timeout), sample CPU and peak RSS again,
//! stop the processes (SIGTERM, then SIGKILL) and the broker. Figures:
//!
//! - messages per second at the sink: `received / (last - first)`, from the replay broker's
//!   timestamps of the first and last reads that held a PUBLISH;
//! - CPU seconds per million messages: `utime + stime` of the processes under test (the
//!   `dataplane`; `mosquitto_sub` plus `mosquitto_pub`), after minus before, per message
//!   received, times one million;
//! - peak RSS: `VmHWM` of the same processes (summed for the two mosquitto clients);
//! - the harness's own CPU per million (the replay broker's threads and this loop, and the
//!   blackhole's threads for Kafka), to show how much of the machine the load source took.
//!
//! For Kafka, "received" is the records the blackhole appended (the record batch headers'
//! counts), messages per second are records between the first and the last Produce request
//! that held records, and the blackhole's checks are kept in [`CaseResult::kafka`]: a record
//! appended twice shows as more records than messages, and the idempotent producer's sequences
//! are checked per partition (gaps, batches out of order, stale epochs).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use sluice_codec::QoS;

use crate::kafka_bench;
use crate::kafka_blackhole::{BlackholeConfig, BlackholeStats, KafkaBlackhole};
use crate::kafka_source_bench;
use crate::procstat::{self, Children};
use crate::replay::{ReplayBroker, ReplayConfig, ReplayStats};

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Implementation {
    /// `mosquitto_sub ... | mosquitto_pub -l ...` (Debian's mosquitto-clients).
    Naive,
    /// `dataplane`, configured by `config-agent run`.
    Sluice,
}

impl Implementation {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Naive => "naive",
            Self::Sluice => "sluice",
        }
    }
}

/// Where the messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Destination {
    /// Back into the replay broker's sink listener (MQTT to MQTT).
    Mqtt,
    /// Into the Kafka blackhole (MQTT to Kafka).
    Kafka,
    /// Into Parquet files in the case's folder (MQTT to LocalStorage): JSON payloads of seven
    /// fields, QoS 1, rows counted by the source's acknowledgements (a row is acknowledged once
    /// its file is in place). Sluice only: no naive bridge writes Parquet.
    Parquet,
}

impl Destination {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mqtt => "mqtt",
            Self::Kafka => "kafka",
            Self::Parquet => "parquet",
        }
    }
}

/// Where the messages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// The replay broker's stream (MQTT).
    Mqtt,
    /// Records pre-loaded into tansu (Kafka to MQTT; the destination is the replay broker's
    /// sink).
    Kafka,
}

impl Source {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mqtt => "mqtt",
            Self::Kafka => "kafka",
        }
    }
}

/// Options of `sluice-perf bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Run only this implementation (default: both, Sluice first).
    #[arg(long, value_enum)]
    pub only: Option<Implementation>,
    /// The source: `mqtt` (the replay broker) or `kafka` (records pre-loaded into a tansu that
    /// the bench starts with `scripts/tansu-start`; the destination is then the replay broker's
    /// sink, and `--destination` is not used).
    #[arg(long, value_enum, default_value_t = Source::Mqtt)]
    pub source: Source,
    /// The project's `scripts` folder (for `--source kafka`: `tansu-start`, `stop`).
    #[arg(long, value_name = "DIR", default_value = "scripts")]
    pub scripts_dir: PathBuf,
    /// Partitions of the Kafka source's topic (`--source kafka`).
    #[arg(long, default_value_t = 4)]
    pub source_partitions: i32,
    /// Destinations: `mqtt` (the replay broker's sink), `kafka` (the Kafka blackhole), or both
    /// (`mqtt,kafka`).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Destination::Mqtt])]
    pub destination: Vec<Destination>,
    /// Payload sizes, in bytes (at least 13: a 12-digit sequence number and a space).
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1024])]
    pub payload_bytes: Vec<usize>,
    /// QoS levels of the source and destination (0, 1).
    #[arg(long, value_delimiter = ',', default_values_t = [0u8, 1])]
    pub qos: Vec<u8>,
    /// Messages per Sluice case.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Messages per naive-bridge case (it is slow; figures are reported per million anyway).
    #[arg(long, default_value_t = 100_000)]
    pub naive_messages: u64,
    /// `maxInflightMessages` of both endpoints, and the replay broker's window towards every
    /// client (so the naive bridge gets the same window).
    #[arg(long, default_value_t = 100)]
    pub max_inflight: u16,
    /// Distinct source topics (`bench/in/0` to `bench/in/<N-1>`).
    #[arg(long, default_value_t = 8)]
    pub topics: u32,
    /// `dataplane --cores N`.
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
    /// One more argument for the data plane (repeat for several).
    #[arg(long = "dataplane-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub dataplane_args: Vec<String>,
    /// `--log` of the data plane and the agent (their logs go to files in the work folder).
    #[arg(long, default_value = "info")]
    pub log: String,
    /// Folder of the `dataplane` and `config-agent` binaries (default: this executable's
    /// folder, e.g. target/release).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The `mosquitto_sub` program.
    #[arg(long, default_value = "mosquitto_sub")]
    pub mosquitto_sub: String,
    /// The `mosquitto_pub` program.
    #[arg(long, default_value = "mosquitto_pub")]
    pub mosquitto_pub: String,
    /// The `kcat` program (the naive bridge to Kafka).
    #[arg(long, default_value = "kcat")]
    pub kcat: String,
    /// The librdkafka that `kcat` runs with (through `LD_LIBRARY_PATH`): a `librdkafka.so*`
    /// file, or `system` for the one kcat was built against. Default: the one the confluent-kafka
    /// wheel bundles in the project's `.venv` (Debian's librdkafka 2.0.2 cannot read newer
    /// ApiVersions responses).
    #[arg(long, value_name = "FILE")]
    pub kcat_librdkafka: Option<PathBuf>,
    /// Partitions of the blackhole's topics.
    #[arg(long, default_value_t = 8)]
    pub kafka_partitions: u32,
    /// Profile the data plane during each Sluice case: `perf record -p <pid>` from the gate's
    /// opening to the end of the case, into `perf.data` in the case's folder (the figures of a
    /// profiled case include perf's overhead).
    #[arg(long)]
    pub perf_record: bool,
    /// Arguments of `perf record` before `-p` (repeat for several; default `-g`).
    #[arg(long = "perf-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub perf_args: Vec<String>,
    /// How long to wait for the subscription and the sink connection before starting anyway,
    /// in seconds.
    #[arg(long, default_value_t = 10)]
    pub ready_timeout_secs: u64,
    /// A case fails when no message reached the sink this long after the start, in seconds.
    #[arg(long, default_value_t = 10)]
    pub first_message_timeout_secs: u64,
    /// A case ends when no message reached the sink for this long, in seconds (the missing
    /// messages are reported).
    #[arg(long, default_value_t = 5)]
    pub idle_timeout_secs: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Work folder for manifests, sockets and logs (default: a temporary folder, removed at the
    /// end unless a case failed).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

impl Default for BenchArgs {
    fn default() -> Self {
        Self {
            only: None,
            source: Source::Mqtt,
            scripts_dir: PathBuf::from("scripts"),
            source_partitions: 4,
            destination: vec![Destination::Mqtt],
            payload_bytes: vec![100, 1024],
            qos: vec![0, 1],
            messages: 1_000_000,
            naive_messages: 100_000,
            max_inflight: 100,
            topics: 8,
            cores: 1,
            dataplane_args: Vec::new(),
            log: "info".into(),
            bin_dir: None,
            mosquitto_sub: "mosquitto_sub".into(),
            mosquitto_pub: "mosquitto_pub".into(),
            kcat: "kcat".into(),
            kcat_librdkafka: None,
            kafka_partitions: 8,
            perf_record: false,
            perf_args: Vec::new(),
            ready_timeout_secs: 10,
            first_message_timeout_secs: 10,
            idle_timeout_secs: 5,
            json: None,
            work_dir: None,
        }
    }
}

/// One measurement to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// What forwards.
    pub implementation: Implementation,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// QoS of source and destination.
    pub qos: QoS,
    /// Messages sent.
    pub messages: u64,
}

/// The figures of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    /// The case.
    pub case: Case,
    /// Where the messages came from.
    pub source: Source,
    /// Where the messages went.
    pub destination: Destination,
    /// The replay broker's counters at the end.
    pub stats: ReplayStats,
    /// The Kafka blackhole's counters at the end (Kafka cases).
    pub kafka: Option<BlackholeStats>,
    /// Messages per second at the sink.
    pub msgs_per_sec: Option<f64>,
    /// CPU seconds (user + system) of the processes under test during the run.
    pub cpu_secs: f64,
    /// The same per million messages received.
    pub cpu_secs_per_million: Option<f64>,
    /// Peak RSS of the processes under test, in KiB.
    pub peak_rss_kib: u64,
    /// CPU seconds per million of this process (replay broker, blackhole and harness).
    pub harness_cpu_secs_per_million: Option<f64>,
    /// From the gate opening to the end of the case, in seconds.
    pub wall_secs: f64,
    /// Why the case failed, if it did.
    pub error: Option<String>,
}

impl CaseResult {
    pub(crate) fn failed(
        case: Case,
        source: Source,
        destination: Destination,
        error: String,
    ) -> Self {
        Self {
            case,
            source,
            destination,
            stats: ReplayStats::default(),
            kafka: None,
            msgs_per_sec: None,
            cpu_secs: 0.0,
            cpu_secs_per_million: None,
            peak_rss_kib: 0,
            harness_cpu_secs_per_million: None,
            wall_secs: 0.0,
            error: Some(error),
        }
    }

    /// Messages that reached the sink: PUBLISHes at the replay broker's sink, records appended
    /// by the blackhole.
    pub fn received(&self) -> u64 {
        match &self.kafka {
            Some(k) => k.records,
            // A row is acknowledged once its file is in place.
            None if self.destination == Destination::Parquet => self.stats.acked,
            None => self.stats.received,
        }
    }

    /// Messages never received: sequence numbers never seen at the MQTT sink; records fewer
    /// than messages at the blackhole.
    pub fn missing(&self) -> u64 {
        match &self.kafka {
            Some(k) => self.case.messages.saturating_sub(k.records),
            None if self.destination == Destination::Parquet => {
                self.case.messages.saturating_sub(self.stats.acked)
            }
            None => self.case.messages.saturating_sub(self.stats.distinct),
        }
    }

    /// Messages received more than once: repeated sequence numbers at the MQTT sink; records
    /// appended past the messages sent at the blackhole (the blackhole drops exact repeats of an
    /// idempotent producer's batches, so these are messages produced twice).
    pub fn duplicates(&self) -> u64 {
        match &self.kafka {
            Some(k) => k.records.saturating_sub(self.case.messages),
            None => self.stats.duplicates,
        }
    }

    /// The blackhole's complaints: sequence anomalies, rejected partitions, connection errors
    /// (0 for MQTT cases).
    pub fn kafka_anomalies(&self) -> u64 {
        self.kafka.as_ref().map_or(0, |k| {
            k.sequence_anomalies() + k.rejected_partitions + k.errors
        })
    }

    /// The result as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = json!({
            "implementation": self.case.implementation.name(),
            "source": self.source.name(),
            "destination": self.destination.name(),
            "payload_bytes": self.case.payload_bytes,
            "qos": self.case.qos as u8,
            "messages": self.case.messages,
            "received": self.received(),
            "distinct": self.stats.distinct,
            "duplicates": self.duplicates(),
            "missing": self.missing(),
            "msgs_per_sec": self.msgs_per_sec,
            "cpu_secs": self.cpu_secs,
            "cpu_secs_per_million": self.cpu_secs_per_million,
            "peak_rss_kib": self.peak_rss_kib,
            "harness_cpu_secs_per_million": self.harness_cpu_secs_per_million,
            "wall_secs": self.wall_secs,
            "error": self.error,
        });
        if let Some(k) = &self.kafka {
            v["source_sent"] = json!(self.stats.sent);
            v["source_acked"] = json!(self.stats.acked);
            v["blackhole"] = k.to_json();
        }
        v
    }

    /// The blackhole's checks in one line (Kafka cases).
    pub fn kafka_line(&self) -> Option<String> {
        let k = self.kafka.as_ref()?;
        let partitions = k
            .topic(kafka_bench::TOPIC)
            .map_or(0, |t| t.partitions.iter().filter(|p| p.records > 0).count());
        Some(format!(
            "blackhole: {} records in {} batches, {} produce requests, {} partitions used, {} producer ids; duplicate batches answered {} ({} records), sequence gaps {}, out of order {}, stale epoch {}, rejected {}, errors {}; blackhole CPU {}/M; source: {} sent, {} acknowledged",
            k.records,
            k.batches,
            k.produce_requests,
            partitions,
            k.producer_ids,
            k.duplicate_batches,
            k.duplicate_records,
            k.sequence_gaps,
            k.out_of_order_batches,
            k.stale_epoch_batches,
            k.rejected_partitions,
            k.errors,
            k.cpu_secs_per_million()
                .map_or_else(|| "-".into(), |c| format!("{c:.3}")),
            self.stats.sent,
            self.stats.acked,
        ))
    }
}

/// The cases `args` asks for: Sluice first, then the naive bridge; payload sizes, then QoS.
///
/// # Errors
/// A QoS other than 0 or 1.
pub fn cases(args: &BenchArgs) -> anyhow::Result<Vec<Case>> {
    let impls = match args.only {
        Some(i) => vec![i],
        None => vec![Implementation::Sluice, Implementation::Naive],
    };
    let mut out = Vec::new();
    for implementation in impls {
        for &payload_bytes in &args.payload_bytes {
            for &q in &args.qos {
                let qos = match q {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => bail!("QoS {q}: the bench runs QoS 0 and 1"),
                };
                out.push(Case {
                    implementation,
                    payload_bytes,
                    qos,
                    messages: match implementation {
                        Implementation::Sluice => args.messages,
                        Implementation::Naive => args.naive_messages,
                    },
                });
            }
        }
    }
    Ok(out)
}

/// Runs every case, printing a table row to `out` after each; returns the results (failed
/// cases carry their error) and writes `--json` if asked.
///
/// # Errors
/// Bad arguments, an unusable work folder, or writing the output.
pub fn run(args: &BenchArgs, out: &mut dyn Write) -> anyhow::Result<Vec<CaseResult>> {
    let cases = cases(args)?;
    let (temp, work) = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            (None, d.clone())
        }
        None => {
            let t = tempfile::Builder::new().prefix("sluice-bench-").tempdir()?;
            let path = t.path().to_path_buf();
            (Some(t), path)
        }
    };
    let load_before = loadavg();
    writeln!(
        out,
        "# sluice-perf bench: {} CPUs, load average {}, window {}, dataplane --cores {}, work folder {}",
        cpus(),
        load_before,
        args.max_inflight,
        args.cores,
        work.display()
    )?;
    writeln!(out, "{}", header())?;
    let mut results = Vec::new();
    let destinations = match args.source {
        Source::Mqtt => args.destination.clone(),
        Source::Kafka => vec![Destination::Mqtt],
    };
    for &destination in &destinations {
        for &case in &cases {
            let result = match args.source {
                Source::Mqtt => run_case_to(args, case, destination, &work),
                Source::Kafka => kafka_source_bench::run_case(args, case, &work),
            };
            writeln!(out, "{}", row(&result))?;
            if let Some(line) = result.kafka_line() {
                writeln!(out, "  {line}")?;
            }
            if let Some(e) = &result.error {
                writeln!(out, "  {} error: {e}", case.implementation.name())?;
            }
            out.flush()?;
            results.push(result);
        }
    }
    let load_after = loadavg();
    writeln!(out, "# load average after: {load_after}")?;
    if let Some(path) = &args.json {
        let doc = json!({
            "cpus": cpus(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "max_inflight": args.max_inflight,
            "cores": args.cores,
            "topics": args.topics,
            "kafka_partitions": args.kafka_partitions,
            "source": args.source.name(),
            "results": results.iter().map(CaseResult::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(t) = temp
        && results.iter().any(|r| r.error.is_some())
    {
        writeln!(out, "# logs and manifests kept in {}", t.keep().display())?;
    }
    Ok(results)
}

fn header() -> String {
    format!(
        "{:<7} {:<11} {:>7} {:>3} {:>9} {:>9} {:>8} {:>6} {:>11} {:>9} {:>9} {:>10}",
        "impl",
        "path",
        "payload",
        "qos",
        "messages",
        "received",
        "missing",
        "dups",
        "msgs/s",
        "cpu s/M",
        "rss MiB",
        "harness/M"
    )
}

fn row(r: &CaseResult) -> String {
    let opt = |v: Option<f64>, prec: usize| match v {
        Some(v) => format!("{v:.prec$}"),
        None => "-".into(),
    };
    format!(
        "{:<7} {:<11} {:>7} {:>3} {:>9} {:>9} {:>8} {:>6} {:>11} {:>9} {:>9.1} {:>10}",
        r.case.implementation.name(),
        format!("{}->{}", r.source.name(), r.destination.name()),
        r.case.payload_bytes,
        r.case.qos as u8,
        r.case.messages,
        r.received(),
        r.missing(),
        r.duplicates(),
        opt(r.msgs_per_sec, 0),
        opt(r.cpu_secs_per_million, 2),
        r.peak_rss_kib as f64 / 1024.0,
        opt(r.harness_cpu_secs_per_million, 2),
    )
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Runs one MQTT-to-MQTT case; a failure is returned in [`CaseResult::error`].
pub fn run_case(args: &BenchArgs, case: Case, work: &Path) -> CaseResult {
    run_case_to(args, case, Destination::Mqtt, work)
}

/// Runs one case into `destination`, in the folder `<impl>-<payload>-q<qos>` of `work` (MQTT)
/// or `<impl>-kafka-<payload>-q<qos>` (Kafka); a failure is returned in [`CaseResult::error`].
pub fn run_case_to(
    args: &BenchArgs,
    case: Case,
    destination: Destination,
    work: &Path,
) -> CaseResult {
    let dest = match destination {
        Destination::Mqtt => String::new(),
        Destination::Kafka => "-kafka".into(),
        Destination::Parquet => "-parquet".into(),
    };
    let dir = work.join(format!(
        "{}{dest}-{}-q{}",
        case.implementation.name(),
        case.payload_bytes,
        case.qos as u8
    ));
    match measure(args, case, destination, &dir) {
        Ok(r) => r,
        Err(e) => CaseResult::failed(case, Source::Mqtt, destination, format!("{e:#}")),
    }
}

/// The processes whose CPU and memory are measured, by name.
fn measured(implementation: Implementation, destination: Destination) -> &'static [&'static str] {
    match (implementation, destination) {
        (Implementation::Naive, Destination::Mqtt) => &["mosquitto_sub", "mosquitto_pub"],
        (Implementation::Naive, Destination::Kafka) => &["mosquitto_sub", "kcat"],
        (Implementation::Naive, Destination::Parquet) => &[],
        (Implementation::Sluice, _) => &["dataplane"],
    }
}

/// What counts the messages at the end of the pipe.
enum Sink {
    /// The replay broker's sink listener.
    Mqtt,
    /// The Kafka blackhole.
    Kafka(KafkaBlackhole),
    /// Parquet files: progress is what the source broker got acknowledged.
    Parquet,
}

impl Sink {
    /// Messages (MQTT) or records (Kafka) received so far, and whether the sink is connected.
    fn progress(&self, broker: &ReplayBroker) -> (u64, bool) {
        match self {
            Self::Mqtt => {
                let st = broker.stats();
                (st.received, st.sink_connections >= 1)
            }
            Self::Kafka(k) => {
                let st = k.stats();
                (st.records, st.connections >= 1)
            }
            Self::Parquet => (broker.stats().acked, true),
        }
    }

    /// The connection count, to wait until it is stable.
    fn connections(&self, broker: &ReplayBroker) -> u64 {
        match self {
            Self::Mqtt | Self::Parquet => broker.stats().connections,
            Self::Kafka(k) => broker.stats().connections + k.stats().connections,
        }
    }

    fn describe(&self, broker: &ReplayBroker) -> String {
        let st = broker.stats();
        match self {
            Self::Mqtt | Self::Parquet => describe(&st),
            Self::Kafka(k) => format!("{}; Kafka blackhole: {}", describe(&st), k.stats().line()),
        }
    }
}

fn measure(
    args: &BenchArgs,
    case: Case,
    destination: Destination,
    dir: &Path,
) -> anyhow::Result<CaseResult> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if destination == Destination::Parquet {
        if case.implementation == Implementation::Naive {
            bail!("no naive bridge writes Parquet: run the parquet destination with --only sluice");
        }
        if case.qos != QoS::AtLeastOnce {
            bail!("Parquet cases run at QoS 1: rows are counted by the source's acknowledgements");
        }
    }
    let broker = ReplayBroker::start(ReplayConfig {
        sink_port: (destination == Destination::Mqtt).then_some(0),
        messages: case.messages,
        payload_bytes: case.payload_bytes,
        qos: case.qos,
        topics: args.topics,
        max_inflight: args.max_inflight,
        start_released: false,
        json_payload: destination == Destination::Parquet,
        ..ReplayConfig::default()
    })?;
    let sink = match destination {
        Destination::Mqtt => Sink::Mqtt,
        Destination::Kafka => Sink::Kafka(KafkaBlackhole::start(BlackholeConfig {
            partitions: args.kafka_partitions,
            ..BlackholeConfig::default()
        })?),
        Destination::Parquet => Sink::Parquet,
    };
    let mut children = Children::new();
    match (case.implementation, &sink) {
        (Implementation::Naive, Sink::Mqtt) => {
            start_naive(args, case, &broker, dir, &mut children)?;
        }
        (Implementation::Naive, Sink::Kafka(k)) => {
            kafka_bench::start_naive(args, case, &broker, k, dir, &mut children)?;
        }
        (Implementation::Sluice, Sink::Mqtt) => {
            let yaml = manifests(
                broker.source_addr(),
                broker.sink_addr(),
                case.qos,
                args.max_inflight,
            );
            start_sluice(args, &yaml, broker.source_addr(), dir, &mut children)?;
        }
        (Implementation::Sluice, Sink::Kafka(k)) => {
            let yaml =
                kafka_bench::manifests(broker.source_addr(), k.addr(), case.qos, args.max_inflight);
            start_sluice(args, &yaml, broker.source_addr(), dir, &mut children)?;
        }
        (Implementation::Sluice, Sink::Parquet) => {
            let (yaml, extra) = parquet_setup(broker.source_addr(), args.max_inflight, dir)?;
            let mut args = args.clone();
            args.dataplane_args.extend(extra);
            start_sluice(&args, &yaml, broker.source_addr(), dir, &mut children)?;
        }
        (Implementation::Naive, Sink::Parquet) => unreachable!("refused above"),
    }
    let names = measured(case.implementation, destination);
    wait_ready(args, &broker, &sink, &mut children)?;

    let profiler = match (args.perf_record, case.implementation) {
        (true, Implementation::Sluice) => Some(Profiler::start(args, &children, dir)?),
        _ => None,
    };
    let ticks = procstat::clock_ticks_per_second() as f64;
    let cpu0 = children.cpu_ticks(names)?;
    let self0 = procstat::self_cpu_secs()?;
    let t0 = Instant::now();
    broker.release();
    let first_timeout = Duration::from_secs(args.first_message_timeout_secs);
    let idle_timeout = Duration::from_secs(args.idle_timeout_secs);
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    // Parquet: when 10% and 90% of the messages were acknowledged (the steady-state rate).
    let (mut at_10, mut at_90): (Option<Instant>, Option<Instant>) = (None, None);
    // The naive Kafka bridge: the blackhole's counters when kcat's input was ended.
    let mut before_eof: Option<BlackholeStats> = None;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let (received, _) = sink.progress(&broker);
        if received * 10 >= case.messages && at_10.is_none() {
            at_10 = Some(Instant::now());
        }
        if received * 10 >= case.messages * 9 && at_90.is_none() {
            at_90 = Some(Instant::now());
        }
        if received >= case.messages {
            break;
        }
        if let (Implementation::Naive, Sink::Kafka(k)) = (case.implementation, &sink)
            && before_eof.is_none()
            && received > 0
            && last_progress.elapsed() > KCAT_TAIL_STALL
        {
            let st = broker.stats();
            if st.sent >= case.messages
                && (case.qos == QoS::AtMostOnce || st.acked >= case.messages)
                && kafka_bench::unread_bytes_from(broker.source_addr().port()) == Some(0)
            {
                // kcat holds the last lines of its input until more comes or the input ends:
                // the subscriber has read everything (nothing left in its socket), so its
                // output is ended (kcat then sends what it holds and exits). The rate is taken
                // up to here.
                before_eof = Some(k.stats());
                children.end("mosquitto_sub")?;
                children.let_exit("kcat")?;
                last_progress = Instant::now();
                continue;
            }
        }
        if let Err(e) = children.check_running() {
            bail!("{e:#}\n(replay broker: {})", sink.describe(&broker));
        }
        if received == 0 {
            if t0.elapsed() > first_timeout {
                let logs = children
                    .procs()
                    .iter()
                    .map(|p| format!("--- end of {}:\n{}", p.log.display(), p.log_tail(15)))
                    .collect::<Vec<_>>()
                    .join("\n");
                bail!(
                    "no messages arrived at the sink within {} s (replay broker: {})\n{logs}",
                    args.first_message_timeout_secs,
                    sink.describe(&broker)
                );
            }
        } else if received != last_count {
            last_count = received;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > idle_timeout {
            break;
        }
    }
    let wall_secs = t0.elapsed().as_secs_f64();
    let cpu1 = children.cpu_ticks(names)?;
    let self1 = procstat::self_cpu_secs()?;
    let peak_rss_kib = children.peak_rss_kib(names)?;
    if let Some(p) = profiler {
        p.stop();
    }
    // QoS 1: the last acknowledgements may still be on their way back to the source.
    if case.qos == QoS::AtLeastOnce && destination == Destination::Kafka {
        let deadline = Instant::now() + Duration::from_secs(2);
        while broker.stats().acked < broker.stats().sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let stats = broker.stats();
    children.stop_all();
    broker.shutdown();
    let kafka = match sink {
        Sink::Mqtt | Sink::Parquet => None,
        Sink::Kafka(k) => Some(k.stop()),
    };
    let received = match (&kafka, destination) {
        (Some(k), _) => k.records,
        (None, Destination::Parquet) => stats.acked,
        (None, _) => stats.received,
    };
    let cpu_secs = (cpu1 - cpu0) as f64 / ticks;
    let per_million = |secs: f64| (received > 0).then(|| secs * 1e6 / received as f64);
    let mut result = CaseResult {
        case,
        source: Source::Mqtt,
        destination,
        stats,
        // The naive Kafka bridge: up to the end of kcat's input when two requests came
        // before it, else over all its requests (the tail then includes the wait for the end).
        msgs_per_sec: match &kafka {
            Some(k) => before_eof
                .as_ref()
                .and_then(BlackholeStats::records_per_sec)
                .or_else(|| k.records_per_sec()),
            // Rows come in files: the first file is written once full, the last one once its
            // age bound passed; the rate is taken between 10% and 90% of the messages.
            None if destination == Destination::Parquet => match (at_10, at_90) {
                (Some(a), Some(b)) if b > a => {
                    Some(case.messages as f64 * 0.8 / (b - a).as_secs_f64())
                }
                _ => None,
            },
            None => stats.received_per_sec(),
        },
        kafka,
        cpu_secs,
        cpu_secs_per_million: per_million(cpu_secs),
        peak_rss_kib,
        harness_cpu_secs_per_million: per_million(self1 - self0),
        wall_secs,
        error: None,
    };
    if result.kafka_anomalies() > 0 {
        result.error = Some(format!(
            "the blackhole found {} anomalies (sequence, rejected partitions, errors); see --json",
            result.kafka_anomalies()
        ));
    }
    Ok(result)
}

/// How long the naive Kafka bridge's records may stall, once the source has sent everything,
/// before kcat's input is ended.
const KCAT_TAIL_STALL: Duration = Duration::from_millis(500);

/// `perf record` attached to the data plane for the length of a case.
struct Profiler {
    child: std::process::Child,
}

impl Profiler {
    fn start(args: &BenchArgs, children: &Children, dir: &Path) -> anyhow::Result<Self> {
        let dp = children
            .get("dataplane")
            .context("no dataplane to profile")?;
        let output = dir.join("perf.data");
        let log = std::fs::File::create(dir.join("perf-record.log"))?;
        let mut cmd = Command::new("perf");
        cmd.arg("record");
        if args.perf_args.is_empty() {
            cmd.arg("-g");
        } else {
            cmd.args(&args.perf_args);
        }
        cmd.arg("-o")
            .arg(&output)
            .args(["-p", &dp.child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = cmd
            .spawn()
            .context("starting perf record (Debian: apt-get install linux-perf)")?;
        // perf needs a moment to attach to every thread.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { child })
    }

    /// Stops the recording (SIGINT, as ^C) and waits for perf to write its file, at most a
    /// minute.
    fn stop(mut self) {
        use rustix::process::{Pid, Signal, kill_process};
        let _ = kill_process(Pid::from_child(&self.child), Signal::INT);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
    }
}

fn describe(st: &ReplayStats) -> String {
    format!(
        "{} connections ({} on the sink listener), {} stream subscriptions, {} messages sent, {} acknowledged, {} received",
        st.connections,
        st.sink_connections,
        st.stream_subscriptions,
        st.sent,
        st.acked,
        st.received
    )
}

/// Waits until the source has a subscription and the sink a connection, and neither count has
/// changed for a moment; starts anyway after the ready timeout (the first-message timeout then
/// says what is missing).
fn wait_ready(
    args: &BenchArgs,
    broker: &ReplayBroker,
    sink: &Sink,
    children: &mut Children,
) -> anyhow::Result<()> {
    const STABLE: Duration = Duration::from_millis(300);
    let start = Instant::now();
    let mut seen = (u64::MAX, u64::MAX);
    let mut since = Instant::now();
    loop {
        children.check_running()?;
        let subscriptions = broker.stats().stream_subscriptions;
        let now = (sink.connections(broker), subscriptions);
        if now != seen {
            seen = now;
            since = Instant::now();
        }
        let (_, sink_connected) = sink.progress(broker);
        if subscriptions >= 1 && sink_connected && since.elapsed() >= STABLE {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(args.ready_timeout_secs) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `program` can be run: a path that exists, or a name found on `PATH`.
pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// Whether the naive bridge's programs are installed; the reason when not.
///
/// # Errors
/// The program that is missing.
pub fn naive_available(args: &BenchArgs) -> anyhow::Result<()> {
    for p in [&args.mosquitto_sub, &args.mosquitto_pub] {
        if find_program(p).is_none() {
            bail!("{p} not found on PATH (Debian: apt-get install mosquitto-clients)");
        }
    }
    Ok(())
}

fn start_naive(
    args: &BenchArgs,
    case: Case,
    broker: &ReplayBroker,
    dir: &Path,
    children: &mut Children,
) -> anyhow::Result<()> {
    naive_available(args)?;
    let qos = (case.qos as u8).to_string();
    let common = |cmd: &mut Command, port: u16| {
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            "5",
            "-q",
            &qos,
        ]);
    };
    let mut sub = Command::new(&args.mosquitto_sub);
    common(&mut sub, broker.source_addr().port());
    // mosquitto clients announce a Receive Maximum of 20 unless told otherwise: give the
    // bridge the same window as the data plane's source.
    let window = args.max_inflight.to_string();
    sub.args(["-t", "bench/in/#", "-i", "sluice-perf-naive-sub"])
        .args(["-D", "connect", "receive-maximum", &window])
        .stdout(Stdio::piped());
    let p = children.spawn(
        "mosquitto_sub",
        &mut sub,
        Stdio::null(),
        &dir.join("mosquitto_sub.log"),
        false,
    )?;
    let pipe = p.child.stdout.take().context("mosquitto_sub's stdout")?;
    let mut publ = Command::new(&args.mosquitto_pub);
    common(&mut publ, broker.sink_addr().port());
    publ.args(["-t", "bench/out", "-l", "-i", "sluice-perf-naive-pub"]);
    children.spawn(
        "mosquitto_pub",
        &mut publ,
        Stdio::from(pipe),
        &dir.join("mosquitto_pub.log"),
        true,
    )?;
    Ok(())
}

/// The manifests of the Sluice case: a source and a destination endpoint on the replay
/// broker's two listeners, a profile and a dataflow from `bench/in/#` to
/// `bench/out/${inputTopic.3}`.
pub fn manifests(source: SocketAddr, sink: SocketAddr, qos: QoS, max_inflight: u16) -> String {
    let mut s = String::from(
        "# Written by sluice-perf bench: the replay broker's source and sink listeners.\n",
    );
    s += &mqtt_endpoint("bench-source", source, qos, max_inflight);
    s += "---\n";
    s += &mqtt_endpoint("bench-sink", sink, qos, max_inflight);
    s += &profile_and_dataflow(
        "    - operationType: Destination
      destinationSettings:
        endpointRef: bench-sink
        dataDestination: bench/out/${inputTopic.3}
",
    );
    s
}

/// The bench's MQTT endpoint `name` on `addr` (anonymous, MQTT 5, the case's QoS and window).
fn mqtt_endpoint(name: &str, addr: SocketAddr, qos: QoS, max_inflight: u16) -> String {
    format!(
        "apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: {name}
  namespace: azure-iot-operations
spec:
  endpointType: Mqtt
  mqttSettings:
    host: {addr}
    authentication:
      method: Anonymous
      anonymousSettings: {{}}
    tls:
      mode: Disabled
    mqttVersion: v5
    qos: {qos}
    maxInflightMessages: {max_inflight}
    clientIdPrefix: sluice-bench
",
        qos = qos as u8
    )
}

/// `---`, the profile `bench`, and the dataflow `bench` from `bench-source`'s `bench/in/#`
/// through `operations` (the operations after the source, as YAML list items).
fn profile_and_dataflow(operations: &str) -> String {
    format!(
        "---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowProfile
metadata:
  name: bench
  namespace: azure-iot-operations
spec:
  instanceCount: 1
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: Dataflow
metadata:
  name: bench
  namespace: azure-iot-operations
spec:
  profileRef: bench
  operations:
    - operationType: Source
      sourceSettings:
        endpointRef: bench-source
        dataSources:
          - bench/in/#
{operations}"
    )
}

/// The manifests of an MQTT-to-Parquet case (the replay broker's source into a LocalStorage
/// endpoint whose volume and schema folders are made in `dir`), and the data plane's arguments
/// for those folders. Files are cut at 100,000 rows or half the window (`maxInflightMessages`),
/// whichever is less, or 1 s after their first row (so that the last ones are written before
/// the idle timeout).
pub fn parquet_setup(
    source: SocketAddr,
    max_inflight: u16,
    dir: &Path,
) -> anyhow::Result<(String, Vec<String>)> {
    let volumes = dir.join("volumes");
    std::fs::create_dir_all(volumes.join("bench"))?;
    let schemas = dir.join("schemas");
    std::fs::create_dir_all(schemas.join("bench"))?;
    std::fs::write(
        schemas.join("bench").join("bench-1.0.0.json"),
        crate::payload::JSON_DELTA_SCHEMA,
    )?;
    let mut yaml =
        String::from("# Written by sluice-perf bench: the replay broker's source into Parquet.\n");
    yaml += &mqtt_endpoint("bench-source", source, QoS::AtLeastOnce, max_inflight);
    yaml += "---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: bench-files
  namespace: azure-iot-operations
spec:
  endpointType: LocalStorage
  localStorageSettings:
    persistentVolumeClaimRef: bench
    batching:
      latencySeconds: 1
";
    yaml += &profile_and_dataflow(
        "    - operationType: BuiltInTransformation
      builtInTransformationSettings:
        serializationFormat: Parquet
        schemaRef: aio-sr://bench/bench:1.0.0
    - operationType: Destination
      destinationSettings:
        endpointRef: bench-files
        dataDestination: out
",
    );
    let args = vec![
        "--volumes-dir".to_owned(),
        volumes.display().to_string(),
        "--schemas-dir".to_owned(),
        schemas.display().to_string(),
    ];
    Ok((yaml, args))
}

pub(crate) fn bin_dir(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    match &args.bin_dir {
        Some(d) => Ok(d.clone()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("the executable's folder")?
            .to_path_buf()),
    }
}

/// Writes `manifests` into the case's folder, validates them with `config-agent validate`, and
/// starts the data plane and the agent.
pub(crate) fn start_sluice(
    args: &BenchArgs,
    manifests: &str,
    local_broker: SocketAddr,
    dir: &Path,
    children: &mut Children,
) -> anyhow::Result<()> {
    let bins = bin_dir(args)?;
    let dataplane = bins.join("dataplane");
    let agent = bins.join("config-agent");
    for b in [&dataplane, &agent] {
        if !b.is_file() {
            bail!(
                "{} not found (build with `cargo build --release -p sluice --bins`, or pass --bin-dir)",
                b.display()
            );
        }
    }
    let config_dir = dir.join("manifests");
    std::fs::create_dir_all(&config_dir)?;
    std::fs::write(config_dir.join("bench.yaml"), manifests)?;
    let local_broker = local_broker.to_string();
    let out = Command::new(&agent)
        .args(["validate", "--local-broker", &local_broker])
        .arg(&config_dir)
        .output()
        .with_context(|| format!("running {} validate", agent.display()))?;
    if !out.status.success() {
        bail!(
            "the bench manifests in {} are not valid:\n{}{}",
            config_dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let socket = dir.join("control.sock");
    let _ = std::fs::remove_file(&socket);
    let mut dp = Command::new(&dataplane);
    dp.arg("--control-socket").arg(&socket).args([
        "--cores",
        &args.cores.to_string(),
        "--log",
        &args.log,
    ]);
    // The data plane always serves metrics; a free port, so that runs never compete for one.
    // Pinned workers, as the figures in docs/PERFORMANCE.md were measured (`--pin auto` pins
    // only when the process was given a CPU set; a later --dataplane-arg may override).
    dp.args(["--metrics-addr", "127.0.0.1:0", "--pin", "always"]);
    dp.args(&args.dataplane_args);
    children.spawn(
        "dataplane",
        &mut dp,
        Stdio::null(),
        &dir.join("dataplane.log"),
        true,
    )?;
    let deadline = Instant::now() + Duration::from_secs(args.ready_timeout_secs);
    while !socket.exists() {
        children.check_running()?;
        if Instant::now() > deadline {
            bail!(
                "the data plane did not create {} within {} s",
                socket.display(),
                args.ready_timeout_secs
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut ag = Command::new(&agent);
    ag.arg("run")
        .arg("--config-dir")
        .arg(&config_dir)
        .arg("--control-socket")
        .arg(&socket)
        .args(["--local-broker", &local_broker, "--log", &args.log]);
    children.spawn(
        "config-agent",
        &mut ag,
        Stdio::null(),
        &dir.join("config-agent.log"),
        true,
    )?;
    Ok(())
}
