//! What the load run's threads share: the clock, the phases (everyone connected, the start,
//! the stop), per-thread counters for the progress line, and what each thread reports to the
//! main thread (interval histograms once a second, its results at the end).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use super::track::Tracker;

/// Largest latency recorded: an hour, in nanoseconds (larger ones count as an hour).
pub const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// A latency histogram: 1 ns to an hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid bounds")
}

/// Counters of one thread, read by the progress line. Aligned so that two threads' counters do
/// not share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    /// Publishes handed to the session.
    pub sent: AtomicU64,
    /// QoS 1 publishes the broker acknowledged.
    pub acked: AtomicU64,
    /// QoS 1 publishes the broker refused (a 5.0 PUBACK reason code of 0x80 or above).
    pub refused: AtomicU64,
    /// Stamped messages received (copies included).
    pub received: AtomicU64,
    /// Messages without a stamp of this run.
    pub foreign: AtomicU64,
    /// Connections lost before the stop.
    pub disconnects: AtomicU64,
}

impl Counters {
    /// Adds `n` to a counter (only its thread writes it).
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

/// One thread's results at the end of the run.
#[derive(Debug)]
pub struct ThreadResult {
    /// Every latency.
    pub total: Histogram<u64>,
    /// Every latency from the actual send (not corrected for a late publisher).
    pub from_send: Histogram<u64>,
    /// Latencies by the step their message was scheduled in.
    pub steps: Vec<Histogram<u64>>,
    /// How late publishes were handed to the session after their scheduled time.
    pub lateness: Histogram<u64>,
    /// Receivers' trackers with their group (a shared subscription's name, or the receiver's
    /// own name).
    pub receivers: Vec<(String, Tracker)>,
    /// Messages each publisher sent.
    pub sent: Vec<(u32, u64)>,
    /// Messages sent by the step they were scheduled in.
    pub sent_steps: Vec<u64>,
    /// What went wrong.
    pub errors: Vec<String>,
}

/// What a thread tells the main thread.
#[derive(Debug)]
pub enum Report {
    /// Latencies recorded in the last second or so.
    Interval(Histogram<u64>),
    /// The thread is done.
    Done(Box<ThreadResult>),
}

/// State shared by all threads of a run.
#[derive(Debug)]
pub struct Shared {
    base: Instant,
    base_unix_ns: u64,
    start: OnceLock<(Instant, u64)>,
    stop: AtomicBool,
    /// Receivers subscribed (or failed).
    pub receivers_ready: AtomicU32,
    /// Publishers connected (or failed).
    pub publishers_ready: AtomicU32,
    /// Connections that failed to set up.
    pub setup_failures: AtomicU32,
    /// Publishers whose schedule is over.
    pub publishers_done: AtomicU32,
    /// When the last of them finished, ns since the start (0: none yet).
    pub publishers_last_done_ns: AtomicU64,
    /// One per thread (workers, then the Kafka reader).
    pub counters: Vec<Counters>,
    /// Where the steps start and the last ends, ns since the start.
    pub boundaries: Vec<u64>,
    /// The first error, for the progress line.
    pub first_error: Mutex<Option<String>>,
}

impl Shared {
    /// A run with `threads` counter blocks and these step boundaries.
    pub fn new(threads: usize, boundaries: Vec<u64>) -> Self {
        let base_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self {
            base: Instant::now(),
            base_unix_ns,
            start: OnceLock::new(),
            stop: AtomicBool::new(false),
            receivers_ready: AtomicU32::new(0),
            publishers_ready: AtomicU32::new(0),
            setup_failures: AtomicU32::new(0),
            publishers_done: AtomicU32::new(0),
            publishers_last_done_ns: AtomicU64::new(0),
            counters: (0..threads).map(|_| Counters::default()).collect(),
            boundaries,
            first_error: Mutex::new(None),
        }
    }

    /// `t` as nanoseconds since the Unix epoch (from the monotonic clock, anchored once).
    #[inline]
    pub fn unix_ns(&self, t: Instant) -> u64 {
        self.base_unix_ns
            + u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Starts the schedule at `at`.
    pub fn set_start(&self, at: Instant) {
        let _ = self.start.set((at, self.unix_ns(at)));
    }

    /// The start, once set: the instant and its Unix time in ns.
    pub fn start(&self) -> Option<(Instant, u64)> {
        self.start.get().copied()
    }

    /// Waits (polling, during setup only) for the start; `None` if the run stopped first.
    pub async fn wait_start(&self) -> Option<(Instant, u64)> {
        loop {
            if self.stopped() {
                return None;
            }
            if let Some(s) = self.start() {
                return Some(s);
            }
            monoio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Ends the run: connections disconnect.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Whether the run is ending.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Keeps `e` as the first error if there was none.
    pub fn error(&self, e: &str) {
        let mut f = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(e.to_owned());
        }
    }

    /// The sum of one counter over the threads.
    pub fn sum(&self, f: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        self.counters
            .iter()
            .map(|c| f(c).load(Ordering::Relaxed))
            .sum()
    }
}

/// Latencies of one thread, recorded as messages arrive.
#[derive(Debug)]
pub struct Recorder {
    /// Since the last [`Report::Interval`].
    pub interval: Histogram<u64>,
    /// Every latency.
    pub total: Histogram<u64>,
    /// Every latency from the actual send.
    pub from_send: Histogram<u64>,
    /// By step.
    pub steps: Vec<Histogram<u64>>,
}

impl Recorder {
    /// Empty histograms for `steps` steps.
    pub fn new(steps: usize) -> Self {
        Self {
            interval: histogram(),
            total: histogram(),
            from_send: histogram(),
            steps: (0..steps.max(1)).map(|_| histogram()).collect(),
        }
    }

    /// Records a message of step `step` received at `now_ns` (Unix ns), with its stamp's times.
    #[inline]
    pub fn record(&mut self, now_ns: u64, stamp: &super::stamp::Stamp, step: usize) {
        if stamp.actual_ns > 0 {
            let v = now_ns
                .saturating_sub(stamp.actual_ns)
                .clamp(1, MAX_LATENCY_NS);
            self.from_send.saturating_record(v);
        }
        let v = now_ns
            .saturating_sub(stamp.sent_ns)
            .clamp(1, MAX_LATENCY_NS);
        self.interval.saturating_record(v);
        self.total.saturating_record(v);
        if let Some(h) = self.steps.get_mut(step) {
            h.saturating_record(v);
        }
    }

    /// Takes the interval histogram (leaving an empty one).
    pub fn take_interval(&mut self) -> Histogram<u64> {
        let h = self.interval.clone();
        self.interval.reset();
        h
    }
}
