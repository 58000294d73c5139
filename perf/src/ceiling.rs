//! `sluice-perf ceiling`: the replay broker alone, read by trivial in-process readers
//! ([`Client::drain`]), to show how fast it can feed a client. If this is far above what a
//! forwarder reaches in `bench`, the broker side is not the bottleneck.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_codec::{ProtocolVersion, QoS};

use crate::client::{Client, Drained};
use crate::procstat;
use crate::replay::{ReplayBroker, ReplayConfig};

/// Options of `sluice-perf ceiling`.
#[derive(Debug, Clone, clap::Args)]
pub struct CeilingArgs {
    /// Messages to stream.
    #[arg(long, default_value_t = 5_000_000)]
    pub messages: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// QoS of the stream (0 or 1; at 1 the readers acknowledge every message).
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// Readers (more than one share the stream through `$share/ceiling/...`).
    #[arg(long, default_value_t = 1)]
    pub readers: usize,
    /// The readers' Receive Maximum (the window at QoS 1).
    #[arg(long, default_value_t = 65535)]
    pub max_inflight: u16,
}

impl Default for CeilingArgs {
    fn default() -> Self {
        Self {
            messages: 5_000_000,
            payload_bytes: 100,
            qos: 0,
            readers: 1,
            max_inflight: 65535,
        }
    }
}

/// What one ceiling run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceiling {
    /// Messages the readers received.
    pub messages: u64,
    /// From the gate opening to the last read, in seconds.
    pub secs: f64,
    /// Messages per second over `secs`.
    pub per_sec: f64,
    /// CPU seconds of the whole process (broker and readers) per million messages.
    pub cpu_secs_per_million: f64,
}

/// Runs the replay broker with `args.readers` trivial readers until they have every message.
///
/// # Errors
/// Bad arguments, or a reader's error.
pub fn run(args: &CeilingArgs) -> anyhow::Result<Ceiling> {
    let qos = match args.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        q => bail!("QoS {q}: 0 or 1"),
    };
    if args.readers == 0 {
        bail!("at least one reader");
    }
    let broker = ReplayBroker::start(ReplayConfig {
        messages: args.messages,
        payload_bytes: args.payload_bytes,
        qos,
        ..ReplayConfig::default()
    })?;
    let total = Arc::new(AtomicU64::new(0));
    let filter = if args.readers > 1 {
        "$share/ceiling/bench/in/#"
    } else {
        "bench/in/#"
    };
    let mut readers = Vec::new();
    for i in 0..args.readers {
        readers.push(reader(
            broker.source_addr(),
            i,
            filter,
            qos,
            args.max_inflight,
            args.messages,
            Arc::clone(&total),
        )?);
    }
    while broker.stats().stream_subscriptions < args.readers as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let cpu0 = procstat::self_cpu_secs()?;
    let t0 = Instant::now();
    broker.release();
    let mut last = t0;
    let mut messages = 0;
    for r in readers {
        let d = r
            .join()
            .map_err(|_| anyhow::anyhow!("a reader panicked"))??;
        messages += d.messages;
        last = last.max(d.last.unwrap_or(t0));
    }
    let cpu = procstat::self_cpu_secs()? - cpu0;
    broker.shutdown();
    let secs = last.duration_since(t0).as_secs_f64();
    Ok(Ceiling {
        messages,
        secs,
        per_sec: messages as f64 / secs,
        cpu_secs_per_million: cpu * 1e6 / messages as f64,
    })
}

fn reader(
    addr: SocketAddr,
    i: usize,
    filter: &str,
    qos: QoS,
    window: u16,
    messages: u64,
    total: Arc<AtomicU64>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<Drained>>> {
    let (mut client, _) = Client::connect(
        addr,
        ProtocolVersion::V5,
        &format!("ceiling-{i}"),
        Some(window),
    )?;
    client.subscribe(filter, qos)?;
    client.set_read_timeout(Some(Duration::from_millis(20)))?;
    std::thread::Builder::new()
        .name(format!("ceiling-reader-{i}"))
        .spawn(move || {
            let mut counted = 0;
            client.drain(qos == QoS::AtLeastOnce, false, |mine| {
                let all = total.fetch_add(mine - counted, Ordering::Relaxed) + mine - counted;
                counted = mine;
                all >= messages
            })
        })
        .context("spawning a reader")
}
