//! Counters, gauges and the acknowledgement-latency histogram of the data plane, and readiness.
//! Rendered in the Prometheus text format by [`super::prometheus`] and served over HTTP by
//! [`super::http`]; this module does no I/O.
//!
//! # Layout: one block per (dataflow, core), one writer each
//!
//! A dataflow runs on every core, and each (dataflow, core) pair gets its own
//! [`DataflowMetrics`] block from [`Registry::register`]. Only that core's worker thread writes to
//! the block; the HTTP thread reads it. Writes are therefore a `Relaxed` load and a `Relaxed`
//! store of the same atomic (no `lock`-prefixed read-modify-write, no fence, no lock), and each
//! block is aligned to 128 bytes so that no two blocks, and no block and its `Arc` counts, share a
//! cache line (128 covers the adjacent-line prefetcher on x86 and the line size on Apple/Neoverse
//! parts).
//!
//! The contract is *one writer per block*. A second thread writing the same block is not
//! undefined behaviour, but increments can be lost. A reader sees every counter at some recent
//! value; the values of one scrape are not a consistent cut across counters (a message may show as
//! forwarded before its byte count does), which Prometheus tolerates.
//!
//! # Aggregation and series lifetime
//!
//! A scrape ([`Registry::scrape`]) sums every metric per dataflow over its cores, so the label set is only
//! `dataflow` (plus `reason` or `side` where stated). When a block is replaced or unregistered,
//! its counters are folded into a per-dataflow remainder, so a dataflow's counters never go down
//! while any of its cores is registered (an increment made through the old `Arc` after that is
//! not counted). When a dataflow is unregistered on every core, its series disappear from the
//! output; if it comes back, its counters start again at zero, which Prometheus treats as a
//! counter reset (`rate()` and `increase()` handle it).
//!
//! # Metrics
//!
//! | name | type | labels |
//! |---|---|---|
//! | `sluice_up` | gauge | (always 1) |
//! | `sluice_snapshot_applied` | gauge | 1 once the latest snapshot is in force |
//! | `sluice_dataflow_running` | gauge | `dataflow`: 1 while it runs, 0 for a dataflow of the snapshot that does not run (`/readyz` says why) |
//! | `sluice_dataflow_cores` | gauge | `dataflow`: cores the dataflow is registered on |
//! | `sluice_messages_received_total` | counter | `dataflow` |
//! | `sluice_bytes_received_total` | counter | `dataflow` |
//! | `sluice_messages_forwarded_total` | counter | `dataflow` |
//! | `sluice_bytes_forwarded_total` | counter | `dataflow` |
//! | `sluice_messages_dropped_total` | counter | `dataflow`, `reason` (a [`DropReason`] label; only reasons that occurred) |
//! | `sluice_messages_in_flight` | gauge | `dataflow` |
//! | `sluice_receive_maximum_overruns_total` | counter | `dataflow`: QoS 1 messages the source broker sent beyond our Receive Maximum |
//! | `sluice_messages_retried_total` | counter | `dataflow`: messages the destination gave back to be offered again (a refusal that may pass, a Kafka delivery that timed out) |
//! | `sluice_kafka_headers_dropped_total` | counter | `dataflow`: Kafka record headers (and keys) left out of MQTT messages: not UTF-8, or 64 KiB or more |
//! | `sluice_kafka_commit_failures_total` | counter | `dataflow`: offset commits of a Kafka source that failed (offsets are committed again later; nothing is lost, more may be delivered twice) |
//! | `sluice_reconnects_total` | counter | `dataflow`, `side` = `source` or `destination` |
//! | `sluice_packets_too_large_total` | counter | `dataflow`, `side`: connections closed because the broker sent a packet bigger than our maximum packet size (`--max-packet-bytes`) |
//! | `sluice_session_connected` | gauge | `dataflow`, `side`: cores whose session is up |
//! | `sluice_ack_latency_seconds` | histogram | `dataflow`; buckets [`LATENCY_BUCKETS_SECONDS`] |

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::message::{DropReason, Side};

/// Upper bounds (inclusive, `le`) of the finite buckets of `sluice_ack_latency_seconds`; a last
/// bucket, `+Inf`, takes the rest.
pub(crate) const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// [`LATENCY_BUCKETS_SECONDS`] in nanoseconds, for the comparison on the write path.
const LATENCY_BUCKETS_NANOS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Number of buckets of `sluice_ack_latency_seconds`, `+Inf` included.
pub(crate) const LATENCY_BUCKET_COUNT: usize = LATENCY_BUCKETS_SECONDS.len() + 1;

/// Adds `n` to a counter that only the calling thread writes: a plain load, add and store, with
/// no `lock`-prefixed instruction (`fetch_add` would be a `lock xadd` on x86 and an LL/SC loop or
/// LSE atomic on ARM).
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// The metrics of one dataflow on one core. Written only by that core's worker thread (see the
/// module documentation), read by the HTTP thread through the [`Registry`].
///
/// Aligned to 128 bytes so that blocks of different cores never share a cache line.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct DataflowMetrics {
    messages_received: AtomicU64,
    bytes_received: AtomicU64,
    messages_forwarded: AtomicU64,
    bytes_forwarded: AtomicU64,
    in_flight: AtomicU64,
    reconnects: [AtomicU64; 2],
    packets_too_large: [AtomicU64; 2],
    connected: [AtomicBool; 2],
    /// Acknowledgements per latency bucket, not cumulative; the last is `+Inf`. Their sum is the
    /// histogram's count, so `_count` and the `+Inf` bucket always agree.
    ack_buckets: [AtomicU64; LATENCY_BUCKET_COUNT],
    /// Sum of acknowledgement latencies in seconds, as `f64` bits (as Prometheus clients keep it:
    /// nanoseconds in a `u64` would wrap within months at a few thousand seconds of latency per
    /// second).
    ack_sum_seconds: AtomicU64,
    /// Drops per [`DropReason::index`].
    drops: [AtomicU64; DropReason::COUNT],
    receive_maximum_overruns: AtomicU64,
    retries: AtomicU64,
    kafka_headers_dropped: AtomicU64,
    kafka_commit_failures: AtomicU64,
    /// Since when (Unix milliseconds) a message given back has waited to be delivered; 0 while
    /// none waits. Past [`STALLED_AFTER`], `/readyz` names the dataflow.
    retrying_since_ms: AtomicU64,
    /// Why the destination is not connected, when it has more to say than that (a LocalStorage
    /// folder that takes no files); written on changes only, never per message.
    destination_problem: Mutex<Option<String>>,
}

/// How long a message may keep being given back before `/readyz` reports the dataflow stalled.
pub(crate) const STALLED_AFTER: Duration = Duration::from_secs(60);

impl DataflowMetrics {
    fn new() -> Self {
        DataflowMetrics {
            messages_received: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            messages_forwarded: AtomicU64::new(0),
            bytes_forwarded: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            reconnects: Default::default(),
            packets_too_large: Default::default(),
            connected: Default::default(),
            destination_problem: Mutex::new(None),
            ack_buckets: Default::default(),
            ack_sum_seconds: AtomicU64::new(0f64.to_bits()),
            drops: Default::default(),
            receive_maximum_overruns: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            kafka_headers_dropped: AtomicU64::new(0),
            kafka_commit_failures: AtomicU64::new(0),
            retrying_since_ms: AtomicU64::new(0),
        }
    }

    /// A message was given back to be offered again.
    pub(crate) fn on_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// Since when (`Some`: the wall clock's Unix time) messages given back have waited, or
    /// `None` once none waits.
    pub(crate) fn set_retrying_since(&self, since: Option<std::time::SystemTime>) {
        let ms = since.map_or(0, |t| {
            t.duration_since(std::time::UNIX_EPOCH).map_or(1, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
            })
        });
        self.retrying_since_ms.store(ms, Relaxed);
    }

    /// How long messages given back have waited at `now`, if any do.
    pub(crate) fn retrying_for(&self, now: std::time::SystemTime) -> Option<Duration> {
        let ms = self.retrying_since_ms.load(Relaxed);
        (ms != 0).then(|| {
            let since = std::time::UNIX_EPOCH + Duration::from_millis(ms);
            now.duration_since(since).unwrap_or_default()
        })
    }

    /// One message of `bytes` payload bytes received from the source.
    #[inline]
    pub(crate) fn on_received(&self, bytes: usize) {
        bump(&self.messages_received, 1);
        bump(&self.bytes_received, bytes as u64);
    }

    /// One message of `bytes` payload bytes accepted (acknowledged) by the destination.
    #[inline]
    pub(crate) fn on_forwarded(&self, bytes: usize) {
        bump(&self.messages_forwarded, 1);
        bump(&self.bytes_forwarded, bytes as u64);
    }

    /// One message dropped on purpose, for `reason`.
    #[inline]
    pub(crate) fn on_dropped(&self, reason: DropReason) {
        bump(&self.drops[reason.index()], 1);
    }

    /// One message acknowledged `latency` after it was received: observed into the
    /// `sluice_ack_latency_seconds` histogram.
    #[inline]
    pub(crate) fn on_acked(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        // Bounds are inclusive (`le`): the first bucket whose bound is at least `nanos`.
        let bucket = LATENCY_BUCKETS_NANOS.partition_point(|&bound| bound < nanos);
        bump(&self.ack_buckets[bucket], 1);
        let sum = f64::from_bits(self.ack_sum_seconds.load(Relaxed)) + latency.as_secs_f64();
        self.ack_sum_seconds.store(sum.to_bits(), Relaxed);
    }

    /// The source session's count of QoS 1 messages the broker sent beyond our Receive Maximum
    /// (a total for the session, set after each read).
    #[inline]
    pub(crate) fn set_receive_maximum_overruns(&self, n: u64) {
        self.receive_maximum_overruns.store(n, Relaxed);
    }

    /// Messages received but not yet acknowledged to the source.
    #[inline]
    pub(crate) fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n as u64, Relaxed);
    }

    /// Kafka record headers left out of a message (not UTF-8, or 64 KiB or more).
    #[inline]
    pub(crate) fn on_kafka_headers_dropped(&self, n: u64) {
        bump(&self.kafka_headers_dropped, n);
    }

    /// Offset commits of the Kafka source that failed.
    pub(crate) fn on_kafka_commit_failures(&self, n: u64) {
        bump(&self.kafka_commit_failures, n);
    }

    /// A new connection (or consumer session) to `side` after the first.
    #[inline]
    pub(crate) fn on_reconnect(&self, side: Side) {
        bump(&self.reconnects[side.index()], 1);
    }

    /// A connection to `side` was closed because the broker sent a packet bigger than our
    /// maximum packet size (refused from its fixed header, with DISCONNECT 0x95 in 5.0).
    #[inline]
    pub(crate) fn on_packet_too_large(&self, side: Side) {
        bump(&self.packets_too_large[side.index()], 1);
    }

    /// Whether `side`'s session is up. Both sides of every block must be up for
    /// `Registry::ready`; a destination without a session (Parquet) is up once it can write.
    #[inline]
    pub(crate) fn set_connected(&self, side: Side, up: bool) {
        self.connected[side.index()].store(up, Relaxed);
    }

    /// Why the destination is down (shown by `/readyz` while it is), or `None`.
    pub(crate) fn set_destination_problem(&self, problem: Option<String>) {
        *self
            .destination_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = problem;
    }

    fn destination_problem(&self) -> Option<String> {
        self.destination_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What [`set_connected`](Self::set_connected) last said for `side` (false at first).
    #[must_use]
    pub(crate) fn is_connected(&self, side: Side) -> bool {
        self.connected[side.index()].load(Relaxed)
    }

    /// Adds this block's counters (and gauges when `gauges`) to `t`.
    fn add_to(&self, t: &mut Totals, gauges: bool) {
        t.messages_received += self.messages_received.load(Relaxed);
        t.bytes_received += self.bytes_received.load(Relaxed);
        t.messages_forwarded += self.messages_forwarded.load(Relaxed);
        t.bytes_forwarded += self.bytes_forwarded.load(Relaxed);
        for (total, count) in t.dropped.iter_mut().zip(&self.drops) {
            *total += count.load(Relaxed);
        }
        for side in Side::ALL {
            t.reconnects[side.index()] += self.reconnects[side.index()].load(Relaxed);
            t.packets_too_large[side.index()] += self.packets_too_large[side.index()].load(Relaxed);
        }
        t.receive_maximum_overruns += self.receive_maximum_overruns.load(Relaxed);
        t.retries += self.retries.load(Relaxed);
        t.kafka_headers_dropped += self.kafka_headers_dropped.load(Relaxed);
        t.kafka_commit_failures += self.kafka_commit_failures.load(Relaxed);
        for (total, bucket) in t.ack_latency_buckets.iter_mut().zip(&self.ack_buckets) {
            *total += bucket.load(Relaxed);
        }
        t.ack_latency_sum_seconds += f64::from_bits(self.ack_sum_seconds.load(Relaxed));
        if gauges {
            t.cores += 1;
            t.in_flight += self.in_flight.load(Relaxed);
            for side in Side::ALL {
                t.connected[side.index()] += u64::from(self.is_connected(side));
            }
        }
    }
}

/// A dataflow's metrics summed over its cores, as `Registry::totals` returns and
/// a scrape prints them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Totals {
    /// Cores the dataflow is registered on.
    pub cores: u64,
    /// Messages received from the source.
    pub messages_received: u64,
    /// Payload bytes received from the source.
    pub bytes_received: u64,
    /// Messages the destination acknowledged.
    pub messages_forwarded: u64,
    /// Payload bytes the destination acknowledged.
    pub bytes_forwarded: u64,
    /// Dropped messages per [`DropReason::index`].
    pub(crate) dropped: [u64; DropReason::COUNT],
    /// Messages in flight.
    pub in_flight: u64,
    /// Acknowledgements per latency bucket, not cumulative: index `i` counts latencies in
    /// `(LATENCY_BUCKETS_SECONDS[i - 1], LATENCY_BUCKETS_SECONDS[i]]`; the last index is `+Inf`.
    pub ack_latency_buckets: [u64; LATENCY_BUCKET_COUNT],
    /// Sum of acknowledgement latencies, seconds.
    pub ack_latency_sum_seconds: f64,
    /// QoS 1 messages the source broker sent beyond our Receive Maximum.
    pub receive_maximum_overruns: u64,
    /// Messages given back by the destination to be offered again.
    pub retries: u64,
    /// Kafka record headers left out of messages.
    pub kafka_headers_dropped: u64,
    /// Offset commits of a Kafka source that failed.
    pub kafka_commit_failures: u64,
    reconnects: [u64; 2],
    packets_too_large: [u64; 2],
    connected: [u64; 2],
}

impl Totals {
    /// Reconnections of `side`.
    #[must_use]
    pub(crate) fn reconnects(&self, side: Side) -> u64 {
        self.reconnects[side.index()]
    }

    /// Connections to `side` closed for a packet over our maximum packet size.
    #[must_use]
    pub(crate) fn packets_too_large(&self, side: Side) -> u64 {
        self.packets_too_large[side.index()]
    }

    /// Cores whose `side` is connected.
    #[must_use]
    pub(crate) fn connected_cores(&self, side: Side) -> u64 {
        self.connected[side.index()]
    }

    /// Acknowledgements observed (the histogram's count).
    #[cfg(test)]
    #[must_use]
    pub(crate) fn acks(&self) -> u64 {
        self.ack_latency_buckets.iter().sum()
    }

    /// Drops for `reason`.
    #[must_use]
    pub(crate) fn dropped_for(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }
}

/// A dataflow's registered blocks, and the counters of blocks that were replaced or removed.
#[derive(Debug, Default)]
struct Entry {
    cores: BTreeMap<usize, Arc<DataflowMetrics>>,
    retired: Totals,
}

impl Entry {
    fn totals(&self) -> Totals {
        let mut t = self.retired.clone();
        for block in self.cores.values() {
            block.add_to(&mut t, true);
        }
        t
    }
}

/// Every block of every dataflow, and the process-level state. Shared through an `Arc` by the
/// cores (which register and unregister) and the HTTP thread (which renders).
///
/// The mutex guards only the map: cores take it when a dataflow starts or stops on them, never
/// per message.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    dataflows: Mutex<BTreeMap<String, Entry>>,
    snapshot_applied: AtomicBool,
    /// What this process is (`sluice_build_info`), set once the workers started.
    build: std::sync::OnceLock<BuildInfo>,
    /// Dataflows of the snapshot that do not run, with the reason: those the control thread
    /// did not start (replaced at each snapshot), and those a worker could not start.
    not_running: Mutex<NotRunning>,
}

/// Dataflows that do not run: those not started, by `namespace/name`, and those a worker could
/// not start, by `namespace/name` and core; each with (code, reason).
#[derive(Debug, Default)]
struct NotRunning {
    skipped: BTreeMap<String, (&'static str, String)>,
    failed: BTreeMap<(String, usize), (&'static str, String)>,
}

impl NotRunning {
    /// One entry per dataflow, sorted by name: why it was not started, or why its first failed
    /// core could not start it.
    fn all(&self) -> Vec<(String, &'static str, String)> {
        let mut all: BTreeMap<&str, (&'static str, String)> = BTreeMap::new();
        for ((key, core), (code, reason)) in &self.failed {
            all.entry(key.as_str())
                .or_insert_with(|| (*code, format!("core {core}: {reason}")));
        }
        for (key, (code, reason)) in &self.skipped {
            all.insert(key.as_str(), (*code, reason.clone()));
        }
        all.into_iter()
            .map(|(k, (code, reason))| (k.to_owned(), code, reason))
            .collect()
    }
}

impl Registry {
    /// An empty registry; not ready until [`set_snapshot_applied`](Self::set_snapshot_applied).
    #[must_use]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // Nothing panics while holding it in a way that leaves the map inconsistent.
        self.dataflows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh block for `dataflow` on `core`. Registering the same pair again replaces the old
    /// block (its counters stay in the dataflow's totals; later writes through it are lost).
    pub(crate) fn register(&self, dataflow: &str, core: usize) -> Arc<DataflowMetrics> {
        let block = Arc::new(DataflowMetrics::new());
        let mut map = self.lock();
        let entry = map.entry(dataflow.to_owned()).or_default();
        if let Some(old) = entry.cores.insert(core, Arc::clone(&block)) {
            old.add_to(&mut entry.retired, false);
        }
        block
    }

    /// Removes `dataflow`'s block on `core`, if any. When it was the dataflow's last, the
    /// dataflow's series disappear from a scrape.
    pub(crate) fn unregister(&self, dataflow: &str, core: usize) {
        let mut map = self.lock();
        let Some(entry) = map.get_mut(dataflow) else {
            return;
        };
        if let Some(old) = entry.cores.remove(&core) {
            old.add_to(&mut entry.retired, false);
        }
        if entry.cores.is_empty() {
            map.remove(dataflow);
        }
    }

    fn not_running(&self) -> MutexGuard<'_, NotRunning> {
        self.not_running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The dataflows of the snapshot in force that the data plane does not run, each with the
    /// `code` and the reason ([`crate::config::skip::SkipReason`]); replaces the last set.
    pub(crate) fn set_skipped(&self, skipped: BTreeMap<String, (&'static str, String)>) {
        self.not_running().skipped = skipped;
    }

    /// The worker of `core` could not start `dataflow` (until it starts there, or is stopped
    /// there).
    pub(crate) fn set_start_failed(
        &self,
        dataflow: &str,
        core: usize,
        code: &'static str,
        reason: String,
    ) {
        self.not_running()
            .failed
            .insert((dataflow.to_owned(), core), (code, reason));
    }

    /// `dataflow` started on `core`, or is gone from it: no start failure stands for it there.
    pub(crate) fn clear_start_failed(&self, dataflow: &str, core: usize) {
        self.not_running()
            .failed
            .remove(&(dataflow.to_owned(), core));
    }

    /// The dataflows not running (on every core they should), with their code and reason,
    /// sorted by name.
    pub(crate) fn not_running_dataflows(&self) -> Vec<(String, &'static str, String)> {
        self.not_running().all()
    }

    /// Records whether the latest snapshot from the agent is in force.
    /// Records what this process is, for `sluice_build_info` (the first call wins).
    pub(crate) fn set_build(&self, build: BuildInfo) {
        let _ = self.build.set(build);
    }

    pub(crate) fn set_snapshot_applied(&self, applied: bool) {
        self.snapshot_applied.store(applied, Relaxed);
    }

    /// Whether the latest snapshot is in force.
    #[must_use]
    pub(crate) fn snapshot_applied(&self) -> bool {
        self.snapshot_applied.load(Relaxed)
    }

    /// Ready: the latest snapshot is in force and every registered block has both sides
    /// connected. With no dataflow registered, ready as soon as the snapshot is applied.
    #[cfg(test)]
    #[must_use]
    pub(crate) fn ready(&self) -> bool {
        self.snapshot_applied()
            && self.not_running().all().is_empty()
            && self.lock().values().all(|e| {
                e.cores
                    .values()
                    .all(|b| Side::ALL.into_iter().all(|s| b.is_connected(s)))
            })
    }

    /// Why `ready` is false, one line each, e.g.
    /// `dataflow X core 1: source not connected`; empty when ready.
    #[must_use]
    pub(crate) fn not_ready_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.snapshot_applied() {
            reasons.push("snapshot not applied".to_owned());
        }
        for (name, _, reason) in self.not_running().all() {
            reasons.push(format!("dataflow {name} not running: {reason}"));
        }
        for (name, entry) in self.lock().iter() {
            for (core, block) in &entry.cores {
                let down: Vec<&str> = Side::ALL
                    .into_iter()
                    .filter(|&s| !block.is_connected(s))
                    .map(Side::as_str)
                    .collect();
                if !down.is_empty() {
                    let why = block
                        .destination_problem()
                        .filter(|_| !block.is_connected(Side::Destination))
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default();
                    reasons.push(format!(
                        "dataflow {name} core {core}: {} not connected{why}",
                        down.join(" and ")
                    ));
                }
                if let Some(waited) = block
                    .retrying_for(std::time::SystemTime::now())
                    .filter(|w| *w >= STALLED_AFTER)
                {
                    reasons.push(format!(
                        "dataflow {name} core {core}: the destination has not taken a message for {} s (offered again with backoff)",
                        waited.as_secs()
                    ));
                }
            }
        }
        reasons
    }

    /// `dataflow`'s metrics summed over its cores, if it is registered anywhere.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn totals(&self, dataflow: &str) -> Option<Totals> {
        self.lock().get(dataflow).map(Entry::totals)
    }

    /// Everything a scrape shows: whether the snapshot is in force, each dataflow's totals
    /// (summed over its cores, sorted by name) and the dataflows that do not run. Summed under
    /// the lock; rendering happens without it.
    pub(crate) fn scrape(&self) -> Scrape {
        let dataflows = self
            .lock()
            .iter()
            .map(|(name, entry)| (name.clone(), entry.totals()))
            .collect();
        Scrape {
            snapshot_applied: self.snapshot_applied(),
            dataflows,
            not_running: self.not_running_dataflows(),
            build: self.build.get().cloned(),
        }
    }
}

/// What this data plane is: `sluice_build_info`'s labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BuildInfo {
    /// The package version.
    pub(crate) version: &'static str,
    /// The commit it was built from (`unknown` outside a git checkout).
    pub(crate) commit: &'static str,
    /// `io_uring` or `epoll`.
    pub(crate) io_driver: &'static str,
    /// Worker threads.
    pub(crate) cores: usize,
    /// Whether they are pinned.
    pub(crate) pinned: bool,
}

/// What one scrape of the [`Registry`] shows (see [`Registry::scrape`]).
#[derive(Debug, Clone)]
pub(crate) struct Scrape {
    /// The latest snapshot is in force.
    pub(crate) snapshot_applied: bool,
    /// Each registered dataflow's totals, sorted by name.
    pub(crate) dataflows: Vec<(String, Totals)>,
    /// The dataflows that do not run: name, code, reason.
    pub(crate) not_running: Vec<(String, &'static str, String)>,
    /// What this process is, once known.
    pub(crate) build: Option<BuildInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A sample of the text format: name, labels, value.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: HashMap<String, String>,
        value: f64,
    }

    /// Parses the text format strictly enough to catch our own mistakes: HELP and TYPE before a
    /// family's samples, escapes in label values, numeric values.
    fn parse(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'), "the last line ends with a line feed");
        let mut samples = Vec::new();
        let mut typed: HashMap<String, String> = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(
                    typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "one TYPE per family: {name}"
                );
                continue;
            }
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# HELP sluice_") || line.starts_with("# HELP process_"),
                    "{line}"
                );
                continue;
            }
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => panic!("no value: {line}"),
            };
            let mut labels = HashMap::new();
            let mut rest = rest;
            if let Some(body) = rest.strip_prefix('{') {
                let mut chars = body.chars();
                loop {
                    let label: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("unterminated label value") {
                            '"' => break,
                            '\\' => match chars.next() {
                                Some('\\') => value.push('\\'),
                                Some('"') => value.push('"'),
                                Some('n') => value.push('\n'),
                                other => panic!("bad escape {other:?} in {line}"),
                            },
                            c => value.push(c),
                        }
                    }
                    labels.insert(label, value);
                    match chars.next() {
                        Some(',') => {}
                        Some('}') => break,
                        other => panic!("{other:?} after a label in {line}"),
                    }
                }
                rest = chars.as_str();
            }
            let value = rest.strip_prefix(' ').expect("space before the value");
            let value = if value == "+Inf" {
                f64::INFINITY
            } else {
                value.parse().expect("numeric value")
            };
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(typed.contains_key(family), "TYPE before samples: {name}");
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        samples
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = samples
            .iter()
            .filter(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.value)
            .collect();
        assert!(found.len() <= 1, "duplicate series {name} {labels:?}");
        found.first().copied()
    }

    fn rendered(registry: &Registry) -> Vec<Sample> {
        let mut out = String::new();
        crate::observe::prometheus::render(registry, &mut out);
        parse(&out)
    }

    #[test]
    fn blocks_are_on_their_own_cache_lines() {
        assert_eq!(std::mem::align_of::<DataflowMetrics>(), 128);
        assert_eq!(std::mem::size_of::<DataflowMetrics>() % 128, 0);
        fn send_sync<T: Send + Sync>() {}
        send_sync::<DataflowMetrics>();
        send_sync::<Registry>();
    }

    #[test]
    fn counters_sum_over_cores() {
        let r = Registry::new();
        let a0 = r.register("a", 0);
        let a1 = r.register("a", 1);
        let b0 = r.register("b", 0);
        a0.on_received(10);
        a0.on_received(20);
        a1.on_received(5);
        a0.on_forwarded(10);
        a1.on_forwarded(5);
        a0.set_in_flight(1);
        a1.set_in_flight(3);
        a0.on_reconnect(Side::Source);
        a1.on_reconnect(Side::Source);
        a1.on_reconnect(Side::Destination);
        a1.on_packet_too_large(Side::Source);
        a0.set_connected(Side::Source, true);
        a1.set_connected(Side::Source, true);
        a1.set_connected(Side::Destination, true);
        b0.on_received(1);

        let s = rendered(&r);
        let a = [("dataflow", "a")];
        assert_eq!(value(&s, "sluice_up", &[]), Some(1.0));
        assert_eq!(value(&s, "sluice_snapshot_applied", &[]), Some(0.0));
        assert_eq!(value(&s, "sluice_dataflow_cores", &a), Some(2.0));
        assert_eq!(value(&s, "sluice_messages_received_total", &a), Some(3.0));
        assert_eq!(value(&s, "sluice_bytes_received_total", &a), Some(35.0));
        assert_eq!(value(&s, "sluice_messages_forwarded_total", &a), Some(2.0));
        assert_eq!(value(&s, "sluice_bytes_forwarded_total", &a), Some(15.0));
        assert_eq!(value(&s, "sluice_messages_in_flight", &a), Some(4.0));
        let side = |side| [("dataflow", "a"), ("side", side)];
        assert_eq!(
            value(&s, "sluice_reconnects_total", &side("source")),
            Some(2.0)
        );
        assert_eq!(
            value(&s, "sluice_reconnects_total", &side("destination")),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "sluice_packets_too_large_total", &side("source")),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "sluice_packets_too_large_total", &side("destination")),
            Some(0.0)
        );
        assert_eq!(
            value(&s, "sluice_session_connected", &side("source")),
            Some(2.0)
        );
        assert_eq!(
            value(&s, "sluice_session_connected", &side("destination")),
            Some(1.0)
        );
        let b = [("dataflow", "b")];
        assert_eq!(value(&s, "sluice_messages_received_total", &b), Some(1.0));
        assert_eq!(value(&s, "sluice_messages_forwarded_total", &b), Some(0.0));

        let t = r.totals("a").expect("registered");
        assert_eq!((t.cores, t.messages_received, t.in_flight), (2, 3, 4));
        assert_eq!(t.reconnects(Side::Source), 2);
        assert!(r.totals("c").is_none());
    }

    #[test]
    fn drops_are_counted_per_reason_over_cores() {
        let r = Registry::new();
        let c0 = r.register("df", 0);
        let c1 = r.register("df", 1);
        c0.on_dropped(DropReason::Expired);
        c0.on_dropped(DropReason::Expired);
        c1.on_dropped(DropReason::UnresolvedTopic);
        c1.on_dropped(DropReason::Expired);
        let s = rendered(&r);
        let drops = |reason| {
            value(
                &s,
                "sluice_messages_dropped_total",
                &[("dataflow", "df"), ("reason", reason)],
            )
        };
        assert_eq!(drops("expired"), Some(3.0));
        assert_eq!(drops("unresolved_topic"), Some(1.0));
        assert_eq!(
            drops("destination_refused"),
            None,
            "only reasons that occurred"
        );
        let t = r.totals("df").expect("registered");
        assert_eq!(t.dropped_for(DropReason::Expired), 3);
    }

    #[test]
    fn dataflows_not_running_are_not_ready_and_shown() {
        let r = Registry::new();
        r.set_snapshot_applied(true);
        let c0 = r.register("ns/up", 0);
        for side in Side::ALL {
            c0.set_connected(side, true);
        }
        assert!(r.ready());
        r.set_skipped(BTreeMap::from([(
            "ns/kafka".to_owned(),
            (
                "endpoint_kind_not_built",
                "endpoint ns/k: Kafka endpoints are not run".to_owned(),
            ),
        )]));
        r.set_start_failed("ns/bad", 1, "start_failed", "cannot start: TLS".into());
        assert!(!r.ready());
        assert_eq!(
            r.not_ready_reasons(),
            [
                "dataflow ns/bad not running: core 1: cannot start: TLS",
                "dataflow ns/kafka not running: endpoint ns/k: Kafka endpoints are not run",
            ]
        );
        let s = rendered(&r);
        let running = |df| value(&s, "sluice_dataflow_running", &[("dataflow", df)]);
        assert_eq!(running("ns/up"), Some(1.0));
        assert_eq!(running("ns/kafka"), Some(0.0));
        assert_eq!(running("ns/bad"), Some(0.0));
        r.clear_start_failed("ns/bad", 1);
        r.set_skipped(BTreeMap::new());
        assert!(r.ready());
        assert_eq!(r.not_running_dataflows(), []);
    }

    #[test]
    fn histogram_is_cumulative_and_matches_count() {
        let r = Registry::new();
        let c0 = r.register("df", 0);
        let c1 = r.register("df", 1);
        c0.on_acked(Duration::from_micros(50)); // le 0.0001
        c0.on_acked(Duration::from_micros(100)); // le 0.0001 (bounds are inclusive)
        c1.on_acked(Duration::from_micros(101)); // le 0.00025
        c1.on_acked(Duration::from_millis(3)); // le 0.005
        c0.on_acked(Duration::from_secs(60)); // +Inf
        c1.on_acked(Duration::MAX); // +Inf, saturated

        let mut text = String::new();
        crate::observe::prometheus::render(&r, &mut text);
        let s = parse(&text);
        let bucket = |le| {
            value(
                &s,
                "sluice_ack_latency_seconds_bucket",
                &[("dataflow", "df"), ("le", le)],
            )
            .expect(le)
        };
        assert_eq!(bucket("0.0001"), 2.0);
        assert_eq!(bucket("0.00025"), 3.0);
        assert_eq!(bucket("0.0025"), 3.0);
        assert_eq!(bucket("0.005"), 4.0);
        assert_eq!(bucket("10"), 4.0);
        assert_eq!(bucket("+Inf"), 6.0);
        let df = [("dataflow", "df")];
        assert_eq!(
            value(&s, "sluice_ack_latency_seconds_count", &df),
            Some(6.0)
        );
        let sum = value(&s, "sluice_ack_latency_seconds_sum", &df).expect("sum");
        assert!(sum > 60.0, "{sum}");

        // Buckets in order, non-decreasing, one per bound plus +Inf.
        let buckets: Vec<(f64, f64)> = s
            .iter()
            .filter(|x| x.name == "sluice_ack_latency_seconds_bucket")
            .map(|x| {
                let le = &x.labels["le"];
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le")
                };
                (le, x.value)
            })
            .collect();
        assert_eq!(buckets.len(), LATENCY_BUCKETS_SECONDS.len() + 1);
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        // The nanosecond bounds are the second bounds.
        for (s, n) in LATENCY_BUCKETS_SECONDS.iter().zip(LATENCY_BUCKETS_NANOS) {
            assert_eq!(Duration::from_secs_f64(*s), Duration::from_nanos(n));
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let r = Registry::new();
        let name = "we\"ird\\name\nx";
        r.register(name, 0).on_received(7);
        let mut text = String::new();
        crate::observe::prometheus::render(&r, &mut text);
        assert!(
            text.contains(r#"sluice_bytes_received_total{dataflow="we\"ird\\name\nx"} 7"#),
            "{text}"
        );
        let s = parse(&text);
        assert_eq!(
            value(&s, "sluice_messages_received_total", &[("dataflow", name)]),
            Some(1.0)
        );
    }

    #[test]
    fn counters_survive_replacement_and_series_go_with_the_last_core() {
        let r = Registry::new();
        let old = r.register("df", 0);
        let c1 = r.register("df", 1);
        old.on_received(1);
        old.on_dropped(DropReason::Expired);
        old.on_acked(Duration::from_millis(1));
        old.set_in_flight(5);
        c1.on_received(1);
        let new = r.register("df", 0);
        new.on_received(1);
        let t = r.totals("df").expect("registered");
        assert_eq!(t.messages_received, 3);
        assert_eq!(t.dropped_for(DropReason::Expired), 1);
        assert_eq!(t.acks(), 1);
        assert_eq!(t.in_flight, 0, "gauges of a replaced block do not count");
        assert_eq!(t.cores, 2);

        r.unregister("df", 1);
        assert_eq!(
            r.totals("df").expect("still on core 0").messages_received,
            3
        );
        r.unregister("df", 7); // not registered: nothing happens
        r.unregister("nope", 0);
        r.unregister("df", 0);
        assert!(r.totals("df").is_none());
        let mut text = String::new();
        crate::observe::prometheus::render(&r, &mut text);
        assert!(!text.contains("dataflow=\"df\""), "{text}");
        // HELP and TYPE stay; the text still parses.
        parse(&text);
        assert!(!r.register("df", 0).is_connected(Side::Source));
        assert_eq!(r.totals("df").expect("back").messages_received, 0);
    }

    #[test]
    fn readiness() {
        let r = Registry::new();
        assert!(!r.ready());
        assert_eq!(r.not_ready_reasons(), ["snapshot not applied"]);
        r.set_snapshot_applied(true);
        assert!(
            r.ready(),
            "no dataflow: ready once the snapshot is in force"
        );
        assert!(r.not_ready_reasons().is_empty());

        let c0 = r.register("x", 0);
        let c1 = r.register("x", 1);
        assert!(!r.ready());
        assert_eq!(
            r.not_ready_reasons(),
            [
                "dataflow x core 0: source and destination not connected",
                "dataflow x core 1: source and destination not connected",
            ]
        );
        for side in Side::ALL {
            c0.set_connected(side, true);
        }
        c1.set_connected(Side::Destination, true);
        assert!(c1.is_connected(Side::Destination));
        assert!(!r.ready());
        assert_eq!(
            r.not_ready_reasons(),
            ["dataflow x core 1: source not connected"]
        );
        c1.set_connected(Side::Source, true);
        assert!(r.ready());
        assert!(r.not_ready_reasons().is_empty());
        c0.set_connected(Side::Destination, false);
        assert_eq!(
            r.not_ready_reasons(),
            ["dataflow x core 0: destination not connected"]
        );
        r.unregister("x", 0);
        assert!(r.ready());
        r.set_snapshot_applied(false);
        assert!(!r.ready());
        let mut text = String::new();
        crate::observe::prometheus::render(&r, &mut text);
        assert!(text.contains("\nsluice_snapshot_applied 0\n"));
    }

    #[test]
    fn a_reader_sees_a_writer_thread_counts() {
        let r = Arc::new(Registry::new());
        let block = r.register("df", 0);
        let writer = std::thread::spawn(move || {
            for _ in 0..100_000 {
                block.on_received(2);
                block.on_acked(Duration::from_micros(10));
            }
        });
        // Reading while the writer runs never sees a histogram count off its +Inf bucket.
        for _ in 0..100 {
            let mut text = String::new();
            crate::observe::prometheus::render(&r, &mut text);
            let s = parse(&text);
            let df = [("dataflow", "df")];
            let count = value(&s, "sluice_ack_latency_seconds_count", &df);
            let inf = value(
                &s,
                "sluice_ack_latency_seconds_bucket",
                &[("dataflow", "df"), ("le", "+Inf")],
            );
            assert_eq!(count, inf);
        }
        writer.join().expect("writer");
        let t = r.totals("df").expect("registered");
        assert_eq!((t.messages_received, t.bytes_received), (100_000, 200_000));
        assert_eq!(t.acks(), 100_000);
    }
}
