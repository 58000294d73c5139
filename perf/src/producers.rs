//! `sluice-perf kafka-producers`: one librdkafka producer per worker thread against one
//! producer shared by the workers, both into the Kafka blackhole, with the data plane's
//! producer settings ([`crate::kafka_bench::PRODUCER_SETTINGS`]).
//!
//! Each run starts a blackhole, makes the producers (one per thread, or one shared by all
//! threads: `BaseProducer` is `Send + Sync`), sends one record through each producer and waits
//! for its delivery (so that connections, the producer id and the topic's metadata are there),
//! then starts the clock: every thread sends its records of `--payload-bytes` as the data
//! plane's worker does, keyless, `send` after `send`, and every millisecond (and whenever
//! librdkafka's queue is full) polls the producer without blocking, up to 64 times while
//! delivery reports come. The run ends when every record's delivery report has come back.
//!
//! Figures per run: records per second (from the start to the last delivery report), CPU
//! seconds per million records of this process less the blackhole's connection threads (so:
//! the sending threads and librdkafka's own threads), and that CPU split by thread: the
//! senders, librdkafka's broker threads (`rdk:broker*`), its main thread (`rdk:main`) and the
//! rest. The layouts alternate run by run, the first layout changing every run, so that a
//! drift of the machine's load spreads over both.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::json;

use crate::kafka_bench::{PRODUCER_SETTINGS, TOPIC};
use crate::kafka_blackhole::{BlackholeConfig, BlackholeStats, KafkaBlackhole};
use crate::payload;
use crate::procstat;

/// How the threads get their producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// One producer per thread (the data plane's layout: one per dataflow and core).
    PerThread,
    /// One producer shared by all threads.
    Shared,
}

impl Layout {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::PerThread => "per-thread",
            Self::Shared => "shared",
        }
    }
}

/// Options of `sluice-perf kafka-producers`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProducersArgs {
    /// Sending threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Records each thread sends per run.
    #[arg(long, default_value_t = 2_000_000)]
    pub records: u64,
    /// Payload size in bytes (at least 13).
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Runs of each layout.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Run only this layout (default: both, alternating).
    #[arg(long, value_enum)]
    pub only: Option<Layout>,
    /// Partitions of the blackhole's topic.
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// `queue.buffering.max.messages` of the shared producer (default: the data plane's 65,536,
    /// as each per-thread producer has).
    #[arg(long)]
    pub shared_queue_messages: Option<u32>,
    /// A run fails when its records are not all delivered within this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

impl Default for ProducersArgs {
    fn default() -> Self {
        Self {
            threads: 2,
            records: 2_000_000,
            payload_bytes: 100,
            runs: 3,
            only: None,
            partitions: 8,
            shared_queue_messages: None,
            timeout_secs: 120,
            json: None,
        }
    }
}

/// Counts delivery reports.
#[derive(Debug, Default)]
struct Counting {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Counting {
    fn stats_raw(&self, _statistics: &[u8]) {}
}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let c = if result.is_ok() {
            &self.delivered
        } else {
            &self.failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl Counting {
    fn reported(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

type Prod = BaseProducer<Counting>;

/// CPU time of this process's threads, in clock ticks, by class of thread name.
fn thread_ticks() -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let Some(tid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
            continue;
        };
        let Some(ticks) = stat.rsplit_once(')').and_then(|(_, rest)| {
            let mut f = rest.split_ascii_whitespace().skip(11);
            Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
        }) else {
            continue;
        };
        let comm = comm.trim();
        let class = if comm.starts_with("rdk:broker") {
            "rdk:broker"
        } else if comm.starts_with("rdk:main") {
            "rdk:main"
        } else if comm.starts_with("kp-sender") {
            "senders"
        } else if comm.starts_with("kafka-blackhole") {
            "blackhole"
        } else {
            "other"
        };
        *out.entry(class).or_insert(0) += ticks;
    }
    out
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The layout.
    pub layout: Layout,
    /// Its run number, from 1.
    pub run: usize,
    /// Records sent (all threads, the warm-up records not included).
    pub records: u64,
    /// Delivery reports with an error.
    pub failed: u64,
    /// From the start to the last delivery report, in seconds.
    pub secs: f64,
    /// CPU seconds of this process during the run, less the blackhole's threads.
    pub cpu_secs: f64,
    /// CPU seconds by class of thread: `senders` (their own clocks), and from `/proc` at the
    /// start and the end `rdk:broker` (librdkafka's broker threads), `rdk:main` and `other`
    /// (this process's other threads, the harness's main thread and librdkafka's internal
    /// ones).
    pub cpu_by_thread: BTreeMap<&'static str, f64>,
    /// "Queue full" refusals of `send`.
    pub queue_full: u64,
    /// The blackhole's counters at the end.
    pub blackhole: BlackholeStats,
}

impl RunResult {
    /// Records per second.
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.secs
    }

    /// CPU seconds per million records.
    pub fn cpu_secs_per_million(&self) -> f64 {
        self.cpu_secs * 1e6 / self.records as f64
    }

    /// CPU seconds per million records of one class of threads.
    pub fn class_per_million(&self, class: &str) -> f64 {
        self.cpu_by_thread.get(class).copied().unwrap_or(0.0) * 1e6 / self.records as f64
    }

    /// Whether the blackhole saw every record once, with clean sequences.
    pub fn clean(&self, warmup: u64) -> bool {
        self.failed == 0
            && self.blackhole.records == self.records + warmup
            && self.blackhole.sequence_anomalies() == 0
            && self.blackhole.rejected_partitions == 0
            && self.blackhole.errors == 0
    }

    /// The result as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "layout": self.layout.name(),
            "run": self.run,
            "records": self.records,
            "failed": self.failed,
            "secs": self.secs,
            "records_per_sec": self.records_per_sec(),
            "cpu_secs": self.cpu_secs,
            "cpu_secs_per_million": self.cpu_secs_per_million(),
            "cpu_secs_by_thread": self.cpu_by_thread,
            "queue_full": self.queue_full,
            "blackhole": self.blackhole.to_json(),
        })
    }
}

fn producer(bootstrap: &str, client_id: &str, queue_messages: Option<u32>) -> anyhow::Result<Prod> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config.set("client.id", client_id);
    for (k, v) in PRODUCER_SETTINGS {
        config.set(k, v);
    }
    if let Some(q) = queue_messages {
        config.set("queue.buffering.max.messages", q.to_string());
    }
    config
        .create_with_context(Counting::default())
        .context("creating a producer")
}

/// Polls as the data plane's worker does: without blocking, up to 64 times while reports come.
fn poll_reports(p: &Prod) {
    for _ in 0..64 {
        let before = p.context().reported();
        p.poll(Duration::ZERO);
        if p.context().reported() == before {
            break;
        }
    }
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// One sending thread: `records` records through `p`, polling every millisecond; then polls
/// until `done` says every report of the run is in (or the deadline passes). Returns the
/// queue-full refusals and the thread's CPU time.
fn send_all(
    p: &Prod,
    records: u64,
    payload: &[u8],
    done: &dyn Fn() -> bool,
    deadline: Instant,
) -> anyhow::Result<(u64, Duration)> {
    let cpu0 = thread_cpu();
    const POLL_EVERY: Duration = Duration::from_millis(1);
    let mut sent = 0;
    let mut queue_full = 0;
    let mut last_poll = Instant::now();
    while sent < records {
        match p.send(BaseRecord::<[u8], [u8]>::to(TOPIC).payload(payload)) {
            Ok(()) => sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                // The worker waits for its next tick, then polls.
                queue_full += 1;
                std::thread::sleep(POLL_EVERY.saturating_sub(last_poll.elapsed()));
                poll_reports(p);
                last_poll = Instant::now();
            }
            Err((e, _)) => bail!("send: {e}"),
        }
        if last_poll.elapsed() >= POLL_EVERY {
            poll_reports(p);
            last_poll = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("{sent} of {records} records sent before the deadline");
        }
    }
    while !done() {
        if Instant::now() > deadline {
            bail!("not every delivery report came before the deadline");
        }
        std::thread::sleep(POLL_EVERY);
        poll_reports(p);
    }
    Ok((queue_full, thread_cpu().saturating_sub(cpu0)))
}

/// One run of `layout`.
///
/// # Errors
/// A producer that cannot be made, a send refused for another reason than a full queue, or
/// the deadline.
pub fn run_once(args: &ProducersArgs, layout: Layout, run: usize) -> anyhow::Result<RunResult> {
    let blackhole = KafkaBlackhole::start(BlackholeConfig {
        partitions: args.partitions,
        ..BlackholeConfig::default()
    })?;
    let bootstrap = blackhole.bootstrap_servers();
    let threads = args.threads.max(1);
    let producers: Vec<Arc<Prod>> = match layout {
        Layout::PerThread => (0..threads)
            .map(|i| producer(&bootstrap, &format!("kp-{i}"), None).map(Arc::new))
            .collect::<anyhow::Result<_>>()?,
        Layout::Shared => vec![Arc::new(producer(
            &bootstrap,
            "kp-shared",
            args.shared_queue_messages,
        )?)],
    };
    let payload = payload::template(args.payload_bytes)
        .with_context(|| format!("--payload-bytes {}: at least 13", args.payload_bytes))?;
    // Warm-up: one record through each producer, delivered.
    let warmup_deadline = Instant::now() + Duration::from_secs(30);
    for p in &producers {
        p.send(BaseRecord::<[u8], [u8]>::to(TOPIC).payload(&payload[..]))
            .map_err(|(e, _)| e)
            .context("warm-up send")?;
        while p.context().reported() < 1 {
            if Instant::now() > warmup_deadline {
                bail!("the warm-up record was not delivered within 30 s");
            }
            p.poll(Duration::from_millis(1));
        }
    }
    let warmup = producers.len() as u64;
    let total = args.records * threads as u64;
    let reported = {
        let producers = producers.clone();
        move || {
            producers
                .iter()
                .map(|p| p.context().reported())
                .sum::<u64>()
        }
    };
    let done = Arc::new(move || reported() >= total + warmup);

    let barrier = Arc::new(Barrier::new(threads + 1));
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut handles = Vec::new();
    for i in 0..threads {
        let p = Arc::clone(&producers[i % producers.len()]);
        let barrier = Arc::clone(&barrier);
        let done = Arc::clone(&done);
        let payload = payload.clone();
        let records = args.records;
        handles.push(
            std::thread::Builder::new()
                .name(format!("kp-sender-{i}"))
                .spawn(move || {
                    barrier.wait();
                    send_all(&p, records, &payload, &*done, deadline)
                })?,
        );
    }
    let ticks = procstat::clock_ticks_per_second() as f64;
    let threads0 = thread_ticks();
    let cpu0 = procstat::self_cpu_secs()?;
    let bh0 = blackhole.stats().cpu;
    barrier.wait();
    let t0 = Instant::now();
    let mut queue_full = 0;
    let mut senders_cpu = Duration::ZERO;
    let mut first_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok((n, cpu))) => {
                queue_full += n;
                senders_cpu += cpu;
            }
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(_) => first_error = first_error.or(Some(anyhow::anyhow!("a sender panicked"))),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = procstat::self_cpu_secs()?;
    let threads1 = thread_ticks();
    let bh1 = blackhole.stats().cpu;
    if let Some(e) = first_error {
        return Err(e);
    }
    let failed = producers
        .iter()
        .map(|p| p.context().failed.load(Ordering::Relaxed))
        .sum();
    drop(done);
    drop(producers);
    let stats = blackhole.stop();
    let mut cpu_by_thread: BTreeMap<&'static str, f64> = threads1
        .iter()
        .filter(|(class, _)| !matches!(**class, "blackhole" | "senders"))
        .map(|(class, t1)| {
            let t0 = threads0.get(class).copied().unwrap_or(0);
            (*class, t1.saturating_sub(t0) as f64 / ticks)
        })
        .collect();
    // The senders have ended by now: their own clocks.
    cpu_by_thread.insert("senders", senders_cpu.as_secs_f64());
    Ok(RunResult {
        layout,
        run,
        records: total,
        failed,
        secs,
        cpu_secs: (cpu1 - cpu0) - (bh1 - bh0).as_secs_f64(),
        cpu_by_thread,
        queue_full,
        blackhole: stats,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs every run of every layout, printing a line after each and a summary at the end.
///
/// # Errors
/// A failed run, or writing the output.
pub fn run(args: &ProducersArgs, out: &mut dyn Write) -> anyhow::Result<Vec<RunResult>> {
    let layouts = match args.only {
        Some(l) => vec![l],
        None => vec![Layout::PerThread, Layout::Shared],
    };
    let load_before = crate::bench::loadavg();
    writeln!(
        out,
        "# sluice-perf kafka-producers: {} threads x {} records of {} B, {} partitions, load average {}",
        args.threads, args.records, args.payload_bytes, args.partitions, load_before
    )?;
    writeln!(
        out,
        "{:<10} {:>3} {:>9} {:>7} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>5}",
        "layout",
        "run",
        "records",
        "secs",
        "records/s",
        "cpu s/M",
        "senders",
        "brokers",
        "rdk:main",
        "other",
        "queue full",
        "clean"
    )?;
    let mut results = Vec::new();
    for run in 1..=args.runs {
        let mut order = layouts.clone();
        if run % 2 == 0 {
            order.reverse();
        }
        for &layout in &order {
            let r = run_once(args, layout, run)
                .with_context(|| format!("{} run {run}", layout.name()))?;
            let warmup = match layout {
                Layout::PerThread => args.threads as u64,
                Layout::Shared => 1,
            };
            writeln!(
                out,
                "{:<10} {:>3} {:>9} {:>7.3} {:>11.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>10} {:>5}",
                layout.name(),
                run,
                r.records,
                r.secs,
                r.records_per_sec(),
                r.cpu_secs_per_million(),
                r.class_per_million("senders"),
                r.class_per_million("rdk:broker"),
                r.class_per_million("rdk:main"),
                r.class_per_million("other"),
                r.queue_full,
                if r.clean(warmup) { "yes" } else { "NO" },
            )?;
            out.flush()?;
            results.push(r);
        }
    }
    for &layout in &layouts {
        let of: Vec<&RunResult> = results.iter().filter(|r| r.layout == layout).collect();
        writeln!(
            out,
            "# {}: median {:.0} records/s, {:.3} CPU s per million ({} runs)",
            layout.name(),
            median(of.iter().map(|r| r.records_per_sec()).collect()),
            median(of.iter().map(|r| r.cpu_secs_per_million()).collect()),
            of.len()
        )?;
    }
    let load_after = crate::bench::loadavg();
    writeln!(out, "# load average after: {load_after}")?;
    if let Some(path) = &args.json {
        let doc = json!({
            "threads": args.threads,
            "records_per_thread": args.records,
            "payload_bytes": args.payload_bytes,
            "partitions": args.partitions,
            "settings": PRODUCER_SETTINGS.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "runs": results.iter().map(RunResult::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(results)
}
