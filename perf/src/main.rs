//! `sluice-perf`: the replay broker (`replay`), its standalone ceiling (`ceiling`), the
//! MQTT-to-MQTT and MQTT-to-Kafka benchmark (`bench`), the Kafka blackhole (`kafka-blackhole`)
//! and the producer layout benchmark (`kafka-producers`). See perf/README.md.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sluice_codec::QoS;
use sluice_perf::bench::{self, BenchArgs};
use sluice_perf::ceiling::{self, CeilingArgs};
use sluice_perf::kafka_blackhole::{BlackholeConfig, KafkaBlackhole};
use sluice_perf::load::args::LoadArgs;
use sluice_perf::producers::{self, ProducersArgs};
use sluice_perf::publishers_bench::{self, PublishersArgs};
use sluice_perf::replay::{ReplayBroker, ReplayConfig};

/// Sluice's performance tools.
#[derive(Debug, Parser)]
#[command(name = "sluice-perf", version = env!("SLUICE_VERSION"))]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the replay broker until interrupted: stream pre-encoded PUBLISHes to subscribers of
    /// `<topic-prefix>/#`, count what is published to it.
    Replay(ReplayArgs),
    /// Measure the replay broker alone, read by trivial in-process readers.
    Ceiling(CeilingArgs),
    /// MQTT to MQTT through the data plane and through `mosquitto_sub | mosquitto_pub -l`;
    /// with `--destination kafka`, MQTT to the Kafka blackhole through the data plane and
    /// through `mosquitto_sub | kcat -P`.
    Bench(Box<BenchArgs>),
    /// Run the Kafka blackhole until interrupted (or until `--exit-after-records`): a minimal
    /// Kafka broker that acknowledges every Produce request at once and counts what it got.
    KafkaBlackhole(KafkaBlackholeArgs),
    /// One librdkafka producer per sending thread against one shared by the threads, into the
    /// Kafka blackhole, with the data plane's producer settings.
    KafkaProducers(ProducersArgs),
    /// A load test: publishers and subscribers at an open-loop rate against any MQTT broker (or
    /// through Sluice), latency percentiles, loss, reports and a CI gate (exit status 1 when a
    /// threshold is broken, 2 when the run could not be done). See docs/load-testing.md.
    Load(Box<LoadArgs>),
    /// `sluice-perf load`, `mqtt-benchmark` and `mosquitto_pub` as publishers into the replay
    /// broker's sink, side by side: the rate each sustains and its CPU per million messages.
    Publishers(PublishersArgs),
}

#[derive(Debug, clap::Args)]
struct KafkaBlackholeArgs {
    /// Address to listen on (port 0: any free port, printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Partitions of every topic (topics are created when first named).
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Decode (and decompress) every record to count key and value bytes: costs CPU.
    #[arg(long)]
    decode_records: bool,
    /// Exit once this many records were received.
    #[arg(long)]
    exit_after_records: Option<u64>,
    /// Also write the final summary (JSON) to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// Source port on 127.0.0.1 (0: any free port, printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Also listen on this sink port (0: any free port, printed); both listeners behave alike.
    #[arg(long)]
    sink_port: Option<u16>,
    /// Messages per stream (per plain subscription, or per shared group).
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Payload size in bytes (at least 13).
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// QoS of the stream (0 or 1).
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// Topics are `<topic-prefix>/<k>`.
    #[arg(long, default_value = "bench/in")]
    topic_prefix: String,
    /// Distinct topics.
    #[arg(long, default_value_t = 8)]
    topics: u32,
    /// Cap on every client's window (Receive Maximum; the whole window for MQTT 3.1.1).
    #[arg(long, default_value_t = 65535)]
    max_inflight: u16,
    /// Exit once the sink has received `--messages` PUBLISHes.
    #[arg(long)]
    exit_when_received: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    if let Cmd::Load(a) = &cli.command {
        return load(a, &mut out);
    }
    let result = match cli.command {
        Cmd::Replay(a) => replay(&a, &mut out),
        Cmd::Ceiling(a) => ceiling::run(&a).and_then(|c| {
            writeln!(
                out,
                "replay broker ceiling: {} messages of {} B at QoS {} to {} reader(s) in {:.3} s: {:.0} msgs/s, {:.2} CPU s per million (broker and readers)",
                c.messages, a.payload_bytes, a.qos, a.readers, c.secs, c.per_sec, c.cpu_secs_per_million
            )?;
            Ok(())
        }),
        Cmd::Bench(a) => bench::run(&a, &mut out).and_then(|results| {
            if results.iter().any(|r| r.error.is_some()) {
                bail!("some cases failed");
            }
            Ok(())
        }),
        Cmd::KafkaBlackhole(a) => kafka_blackhole(&a, &mut out),
        Cmd::KafkaProducers(a) => producers::run(&a, &mut out).map(drop),
        Cmd::Load(_) => unreachable!("handled above"),
        Cmd::Publishers(a) => publishers_bench::run(&a, &mut out).map(drop),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            let _ = writeln!(std::io::stderr(), "sluice-perf: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a load test: exit status 0 when it passed (or had no gate), 1 when the gate failed
/// (the reason on one line, on stderr too), 2 when it could not run.
fn load(a: &LoadArgs, out: &mut dyn Write) -> ExitCode {
    let mut err = std::io::stderr();
    match sluice_perf::load::run(a, out, &mut err) {
        Ok(o) if o.failed.is_empty() => ExitCode::SUCCESS,
        Ok(o) => {
            let _ = out.flush();
            let _ = writeln!(
                err,
                "sluice-perf load: gate failed: {}",
                o.failed.join("; ")
            );
            ExitCode::from(1)
        }
        Err(e) => {
            let _ = out.flush();
            let _ = writeln!(err, "sluice-perf load: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn replay(a: &ReplayArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let qos = match a.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        q => bail!("QoS {q}: 0 or 1"),
    };
    let broker = ReplayBroker::start(ReplayConfig {
        port: a.port,
        sink_port: a.sink_port,
        messages: a.messages,
        payload_bytes: a.payload_bytes,
        qos,
        topic_prefix: a.topic_prefix.clone(),
        topics: a.topics,
        max_inflight: a.max_inflight,
        start_released: true,
        ..ReplayConfig::default()
    })?;
    writeln!(
        out,
        "listening source={} sink={}",
        broker.source_addr(),
        broker.sink_addr()
    )?;
    out.flush()?;
    let mut last = broker.stats();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let st = broker.stats();
        if st != last {
            writeln!(
                out,
                "connections={} subscriptions={} sent={} acked={} received={} distinct={} duplicates={} rate={}",
                st.connections,
                st.stream_subscriptions,
                st.sent,
                st.acked,
                st.received,
                st.distinct,
                st.duplicates,
                st.received_per_sec()
                    .map_or_else(|| "-".into(), |r| format!("{r:.0}/s"))
            )?;
            out.flush()?;
            last = st;
        }
        if a.exit_when_received && st.received >= a.messages {
            return Ok(());
        }
    }
}

/// Runs the blackhole: its address, then one line of counters a second while they change, and
/// at the end (SIGINT, SIGTERM or `--exit-after-records`) the summary as JSON.
fn kafka_blackhole(a: &KafkaBlackholeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
    let blackhole = KafkaBlackhole::start(BlackholeConfig {
        listen: a.listen,
        partitions: a.partitions,
        decode_records: a.decode_records,
        log_stderr: true,
        ..BlackholeConfig::default()
    })?;
    writeln!(out, "listening {}", blackhole.addr())?;
    out.flush()?;
    let mut last = blackhole.stats();
    let mut next_line = Instant::now() + Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        let st = blackhole.stats();
        if a.exit_after_records.is_some_and(|n| st.records >= n) {
            break;
        }
        if Instant::now() >= next_line {
            next_line += Duration::from_secs(1);
            if st != last {
                writeln!(out, "{}", st.line())?;
                out.flush()?;
                last = st;
            }
        }
    }
    let st = blackhole.stop();
    let json = serde_json::to_string_pretty(&st.to_json())?;
    writeln!(out, "{}", st.line())?;
    writeln!(out, "{json}")?;
    if let Some(path) = &a.json {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
