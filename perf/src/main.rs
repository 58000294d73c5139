//! `sluice-perf`: the replay broker (`replay`), its standalone ceiling (`ceiling`) and the
//! MQTT-to-MQTT benchmark (`bench`). See perf/README.md.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, Subcommand};
use sluice_codec::QoS;
use sluice_perf::bench::{self, BenchArgs};
use sluice_perf::ceiling::{self, CeilingArgs};
use sluice_perf::replay::{ReplayBroker, ReplayConfig};

/// Sluice's performance tools.
#[derive(Debug, Parser)]
#[command(name = "sluice-perf", version)]
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
    /// MQTT to MQTT through the data plane and through `mosquitto_sub | mosquitto_pub -l`.
    Bench(Box<BenchArgs>),
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
