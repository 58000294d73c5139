//! `sluice-perf load`: a load test of an MQTT broker, or of Sluice's dataflows between brokers
//! (publish to the source broker, subscribe at the destination or read the Kafka topic).
//!
//! - [`args`]: the options, and what they become (endpoints, steps, sizes, topic patterns);
//! - [`schedule`]: open-loop send times per connection (a fixed rate or a ramp of steps);
//! - [`stamp`]: the publisher, sequence number and scheduled time at the front of a payload;
//! - [`worker`]: per-core threads running the connections on the data plane's session;
//! - [`ticker`]: precise waits for the schedule (monoio's timer has 1 ms slots);
//! - [`kafka`]: the Kafka reader at the end of an MQTT -> Kafka dataflow;
//! - [`track`]: loss, duplicates and order per publisher;
//! - [`shared`]: the clock, the phases, counters and histograms shared by the threads;
//! - [`report`], [`chart`], [`gate`]: the markdown table, the JSON file, the SVG charts and the
//!   CI gate.
//!
//! A run: every receiver connects and subscribes (the Kafka reader positions itself at the
//! end of the topic), then every publisher connects, then the schedule starts for all at once;
//! one progress line a second; after the schedule, up to `--drain` for what is still under
//! way; then everyone disconnects and the threads hand in their histograms and trackers.

pub mod args;
pub mod chart;
pub mod gate;
pub mod kafka;
pub mod report;
pub mod schedule;
pub mod shared;
pub mod stamp;
pub mod ticker;
pub mod track;
pub mod worker;

use std::collections::BTreeMap;
use std::io::Write;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use sluice_codec::{ByteStr, ProtocolVersion, QoS, Subscription, SubscriptionOptions};
use sluice_dataplane::bench_support::load::{SessionConfig, allowed_cpus};

use args::{Endpoint, LoadArgs, Sizes, TopicPattern};
use report::{GroupSummary, Latency, Point, StepSummary, Summary, fmt_count, fmt_ns};
use schedule::{Schedule, boundaries};
use shared::{Report, Shared, ThreadResult, histogram};
use track::Tracker;
use worker::{ConnPlan, PublisherPlan, WorkerPlan};

/// With `--timer auto`, a worker whose publishers are offered at most this many messages a
/// second uses the precise timer.
pub const AUTO_PRECISE_MAX_RATE: f64 = 2_000.0;

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// What it found.
    pub summary: Summary,
    /// The gate's broken thresholds (empty: passed, or no gate).
    pub failed: Vec<String>,
}

fn qos(n: u8, what: &str) -> anyhow::Result<QoS> {
    match n {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        q => bail!("{what} {q}: 0 or 1 (QoS 2 is not done)"),
    }
}

/// Runs a load test: the progress line goes to `progress` (unless `--quiet`), the final table
/// to `out`.
///
/// # Errors
/// When the options are invalid, or a connection cannot be set up (nothing is published then).
pub fn run(a: &LoadArgs, out: &mut dyn Write, progress: &mut dyn Write) -> anyhow::Result<Outcome> {
    let gate = gate::Gate::from_args(a)?;
    let pub_qos = qos(a.qos, "--qos")?;
    let sub_qos = qos(a.sub_qos.unwrap_or(a.qos), "--sub-qos")?;
    let protocol = match a.protocol.as_str() {
        "3" | "3.1.1" => ProtocolVersion::V311,
        _ => ProtocolVersion::V5,
    };
    let sizes = Sizes::parse(&a.payload_bytes)?;
    let (smallest, largest) = sizes.bounds();
    if smallest < a.payload_format.min_len() {
        bail!(
            "--payload-bytes {}: at least {} for the {:?} format (the stamp)",
            a.payload_bytes,
            a.payload_format.min_len(),
            a.payload_format
        );
    }
    if largest > 256 << 20 {
        bail!("--payload-bytes {}: at most 256 MiB", a.payload_bytes);
    }
    if a.publishers > stamp::MAX_PUBLISHER.min(track::MAX_PUBLISHERS - 1) {
        bail!("--publishers: at most {}", track::MAX_PUBLISHERS - 1);
    }
    let topic = Arc::new(TopicPattern::parse(&a.topic)?);
    let steps = args::steps(a)?;
    let bounds = boundaries(&steps);
    let subscribers = a
        .subscribers
        .unwrap_or(if a.kafka_bootstrap.is_some() { 0 } else { 1 });
    let cores = a.cores.max(1);
    let pub_ep = Arc::new(Endpoint::parse(&a.url, a)?);
    let sub_ep = match &a.sub_url {
        Some(u) => Arc::new(Endpoint::parse(u, a)?),
        None => Arc::clone(&pub_ep),
    };
    let password = args::password(a)?;
    let prefix = a
        .client_id_prefix
        .clone()
        .unwrap_or_else(|| format!("sluice-perf-{:04x}", fastrand::u16(..)));
    let max_inflight = NonZeroU16::new(a.max_inflight).context("--max-inflight: at least 1")?;
    let filters: Vec<Subscription> = a
        .sub_topic
        .iter()
        .map(|f| {
            sluice_codec::topic::validate_topic_filter(f)
                .map_err(|e| anyhow::anyhow!("--sub-topic `{f}`: {e}"))?;
            Ok(Subscription {
                filter: ByteStr::from(f.clone()),
                options: SubscriptionOptions::qos(sub_qos),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let shared_group = a
        .sub_topic
        .first()
        .and_then(|f| f.strip_prefix("$share/"))
        .and_then(|r| r.split_once('/'))
        .map(|(g, _)| format!("$share/{g}"));
    let session = |client_id: String| {
        let mut c = SessionConfig::new(protocol, ByteStr::from(client_id));
        c.clean_start = true;
        c.session_expiry_secs = 0;
        c.keep_alive_secs = a.keep_alive;
        c.receive_maximum = max_inflight;
        c.max_in_flight = max_inflight;
        c.username = a.username.clone().map(ByteStr::from);
        c.password = password.clone();
        c.connect_timeout = a.connect_timeout;
        c
    };

    // Plans, spread over the workers.
    let filler: Arc<[u8]> = stamp::filler(largest).into();
    let sizes = Arc::new(sizes);
    let per_pub_cap = a.messages.map(|m| {
        let p = u64::from(a.publishers.max(1));
        move |i: u32| m / p + u64::from(u64::from(i) < m % p)
    });
    let mut workers: Vec<WorkerPlan> = (0..cores)
        .map(|i| WorkerPlan {
            index: i,
            cpu: None,
            driver: a.io_driver,
            conns: Vec::new(),
            timer: args::Timer::Wheel,
        })
        .collect();
    if a.pin {
        let cpus = allowed_cpus();
        for w in &mut workers {
            w.cpu = (!cpus.is_empty()).then(|| cpus[w.index % cpus.len()]);
        }
    }
    for j in 0..subscribers {
        let name = format!("{prefix}-s{j}");
        let mut config = session(name.clone());
        config.subscriptions.clone_from(&filters);
        workers[j as usize % cores].conns.push(ConnPlan {
            name: name.clone(),
            endpoint: Arc::clone(&sub_ep),
            session: config,
            publisher: None,
            group: Some(shared_group.clone().unwrap_or(name)),
            connect_timeout: a.connect_timeout,
        });
    }
    for i in 0..a.publishers {
        let name = format!("{prefix}-p{i}");
        workers[i as usize % cores].conns.push(ConnPlan {
            name: name.clone(),
            endpoint: Arc::clone(&pub_ep),
            session: session(name),
            publisher: Some(PublisherPlan {
                index: i,
                schedule: Schedule::new(&steps, i, a.publishers, per_pub_cap.map(|f| f(i))),
                topic: Arc::clone(&topic),
                topic_random: a.topic_random,
                sizes: Arc::clone(&sizes),
                format: a.payload_format,
                filler: Arc::clone(&filler),
                qos: pub_qos,
                retain: a.retain,
            }),
            group: None,
            connect_timeout: a.connect_timeout,
        });
    }
    // The precise timer costs a thread wake-up per wait: worth it while a worker's publishers
    // wait between most messages; above a few thousand a second they send in batches anyway.
    let top_rate = steps
        .iter()
        .map(|s| s.rate.unwrap_or(f64::INFINITY))
        .fold(0.0, f64::max);
    for w in &mut workers {
        let pubs = w.conns.iter().filter(|c| c.publisher.is_some()).count() as f64;
        let per_worker = top_rate * pubs / f64::from(a.publishers.max(1));
        w.timer = match a.timer {
            args::TimerChoice::Auto if per_worker <= AUTO_PRECISE_MAX_RATE => args::Timer::Precise,
            args::TimerChoice::Auto | args::TimerChoice::Wheel => args::Timer::Wheel,
            args::TimerChoice::Precise => args::Timer::Precise,
        };
    }
    let kafka_reader = a.kafka_bootstrap.as_ref().map(|b| kafka::KafkaPlan {
        bootstrap: b.clone(),
        topic: a.kafka_topic.clone().unwrap_or_default(),
        settings: a
            .kafka_set
            .iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect(),
        index: cores,
        timeout: a.connect_timeout,
    });
    if let Some(bad) = a.kafka_set.iter().find(|kv| !kv.contains('=')) {
        bail!("--kafka-set `{bad}`: KEY=VALUE");
    }
    let receivers = subscribers + u32::from(kafka_reader.is_some());
    let threads = cores + usize::from(kafka_reader.is_some());
    let shared = Arc::new(Shared::new(threads, bounds.clone()));
    let (tx, rx) = mpsc::channel();
    let cpu_before = crate::procstat::self_cpu_secs().unwrap_or(0.0);
    let mut handles = Vec::new();
    for w in workers {
        handles.push(worker::spawn(w, Arc::clone(&shared), tx.clone())?);
    }
    if let Some(k) = kafka_reader {
        handles.push(kafka::spawn(k, Arc::clone(&shared), tx.clone())?);
    }
    drop(tx);

    // Receivers first, then publishers.
    let setup_deadline = Instant::now() + a.connect_timeout + Duration::from_secs(2);
    let wait_ready = |counter: &std::sync::atomic::AtomicU32, n: u32| {
        while counter.load(Ordering::Acquire) < n && Instant::now() < setup_deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        counter.load(Ordering::Acquire) >= n
    };
    let mut setup_ok = wait_ready(&shared.receivers_ready, receivers)
        && shared.setup_failures.load(Ordering::Relaxed) == 0;
    setup_ok = setup_ok
        && wait_ready(&shared.publishers_ready, a.publishers)
        && shared.setup_failures.load(Ordering::Relaxed) == 0;
    if !setup_ok {
        shared.stop();
        let results = collect(&rx, threads, &mut None);
        for h in handles {
            let _ = h.join();
        }
        let first = shared
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .or_else(|| results.iter().flat_map(|r| r.errors.iter()).next().cloned())
            .unwrap_or_else(|| "connections not ready in time".into());
        bail!("setup failed: {first}");
    }
    let start = Instant::now() + Duration::from_millis(50);
    shared.set_start(start);
    let end = start + Duration::from_nanos(*bounds.last().unwrap_or(&0));

    // Progress, once a second, until the schedule ends and what is under way arrived.
    let groups = match (&shared_group, subscribers) {
        (_, 0) => 0,
        (Some(_), _) => 1,
        (None, n) => u64::from(n),
    } + u64::from(a.kafka_bootstrap.is_some());
    let mut live = Live::new(start, groups);
    let mut series = Vec::new();
    let mut drain_end: Option<Instant> = None;
    loop {
        // Reports until the next second, looking every 100 ms whether publishing is over.
        let tick = live.next_tick;
        let until = tick.min(Instant::now() + Duration::from_millis(100));
        let mut interval = Some(live.take_interval());
        let results_early = drain_reports(&rx, until, &mut interval);
        live.interval = interval.take().expect("kept");
        if results_early {
            break; // every thread ended (all connections lost)
        }
        let now = Instant::now();
        if now >= tick {
            live.next_tick += Duration::from_secs(1);
            let point = live.point(&shared, now);
            if !a.quiet {
                let _ = writeln!(progress, "{}", live.line(&shared, &point, now));
                let _ = progress.flush();
            }
            series.push(point);
        }
        let publishing_over = now >= end
            || (a.publishers > 0 && shared.publishers_done.load(Ordering::Acquire) >= a.publishers);
        if publishing_over {
            let sent = shared.sum(|c| &c.sent);
            let all_in = shared.sum(|c| &c.received) >= sent * groups
                && (pub_qos == QoS::AtMostOnce
                    || shared.sum(|c| &c.acked) + shared.sum(|c| &c.refused) >= sent);
            let d = *drain_end.get_or_insert(now + a.drain);
            if all_in || now >= d {
                break;
            }
        }
    }
    shared.stop();
    let mut last = Some(live.take_interval());
    let results = collect(&rx, threads, &mut last);
    for h in handles {
        let _ = h.join();
    }
    let cpu_secs = crate::procstat::self_cpu_secs().unwrap_or(0.0) - cpu_before;
    // Publishing time: the schedule's length, or until the last publisher finished early.
    let schedule_secs = bounds.last().copied().unwrap_or(0) as f64 / 1e9;
    let last_done = shared.publishers_last_done_ns.load(Ordering::Acquire);
    let secs = if a.publishers > 0 && last_done > 0 {
        (last_done as f64 / 1e9).min(schedule_secs)
    } else {
        schedule_secs.min(start.elapsed().as_secs_f64())
    };
    let mut setup = vec![
        ("broker".to_owned(), a.url.clone()),
        (
            "publishers".to_owned(),
            format!(
                "{} at QoS {}, payload {} bytes ({:?}), topic `{}`",
                a.publishers, a.qos, a.payload_bytes, a.payload_format, a.topic
            ),
        ),
        (
            "rate".to_owned(),
            format!(
                "{} messages/s{}",
                a.rate.join(", "),
                if a.rate.len() > 1 {
                    format!(" ({} s each)", bounds[1] as f64 / 1e9)
                } else {
                    String::new()
                }
            ),
        ),
    ];
    if subscribers > 0 {
        setup.push((
            "subscribers".to_owned(),
            format!(
                "{subscribers} at QoS {} on `{}`{}",
                a.sub_qos.unwrap_or(a.qos),
                a.sub_topic.join(","),
                a.sub_url
                    .as_ref()
                    .map(|u| format!(" at {u}"))
                    .unwrap_or_default()
            ),
        ));
    }
    if let (Some(b), Some(t)) = (&a.kafka_bootstrap, &a.kafka_topic) {
        setup.push(("Kafka reader".to_owned(), format!("topic `{t}` at {b}")));
    }
    setup.push((
        "MQTT".to_owned(),
        format!(
            "{}, {} worker thread(s), window {}",
            if protocol == ProtocolVersion::V5 {
                "5.0"
            } else {
                "3.1.1"
            },
            cores,
            a.max_inflight
        ),
    ));
    let summary = summarize(SummaryInput {
        setup,
        secs,
        steps: &steps,
        results,
        series,
        shared: &shared,
        cpu_secs,
    });
    let failed = gate.check(&summary);
    let md = summary.markdown();
    writeln!(out, "{md}")?;
    if let Some(dir) = &a.out {
        write_reports(dir, &summary, &a.topic)?;
        writeln!(out, "reports in {}", dir.display())?;
    }
    if gate.is_set() {
        if failed.is_empty() {
            writeln!(out, "gate passed")?;
        } else {
            writeln!(out, "gate failed: {}", failed.join("; "))?;
        }
    }
    Ok(Outcome { summary, failed })
}

/// Receives reports until `until`: intervals are merged into `interval`. Returns `true` when
/// the channel closed (every thread ended).
fn drain_reports(
    rx: &Receiver<Report>,
    until: Instant,
    interval: &mut Option<Histogram<u64>>,
) -> bool {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Report::Interval(h)) => {
                if let Some(i) = interval.as_mut() {
                    let _ = i.add(&h);
                }
            }
            Ok(Report::Done(_)) => {
                // A thread ended early (all its connections failed): its result is lost to the
                // summary but its errors were recorded in the shared first error.
            }
            Err(RecvTimeoutError::Timeout) => return false,
            Err(RecvTimeoutError::Disconnected) => return true,
        }
    }
}

/// Waits (up to 30 s) for every thread's result.
fn collect(
    rx: &Receiver<Report>,
    threads: usize,
    interval: &mut Option<Histogram<u64>>,
) -> Vec<ThreadResult> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut results = Vec::with_capacity(threads);
    while results.len() < threads {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Report::Interval(h)) => {
                if let Some(i) = interval.as_mut() {
                    let _ = i.add(&h);
                }
            }
            Ok(Report::Done(r)) => results.push(*r),
            Err(_) => break,
        }
    }
    results
}

/// The progress line's state.
struct Live {
    start: Instant,
    next_tick: Instant,
    interval: Histogram<u64>,
    so_far: Histogram<u64>,
    last: (Instant, u64, u64),
    /// Receiver groups: copies expected per message sent.
    groups: u64,
}

impl Live {
    fn new(start: Instant, groups: u64) -> Self {
        Self {
            groups,
            start,
            next_tick: start + Duration::from_secs(1),
            interval: histogram(),
            so_far: histogram(),
            last: (start, 0, 0),
        }
    }

    fn take_interval(&mut self) -> Histogram<u64> {
        std::mem::replace(&mut self.interval, histogram())
    }

    fn point(&mut self, shared: &Shared, now: Instant) -> Point {
        let (sent, received) = (shared.sum(|c| &c.sent), shared.sum(|c| &c.received));
        let dt = now
            .saturating_duration_since(self.last.0)
            .as_secs_f64()
            .max(1e-9);
        let p = Point {
            t: now.saturating_duration_since(self.start).as_secs_f64(),
            sent_rate: (sent - self.last.1) as f64 / dt,
            received_rate: (received - self.last.2) as f64 / dt,
            latency: Latency::of(&self.interval),
        };
        let _ = self.so_far.add(&self.interval);
        self.interval.reset();
        self.last = (now, sent, received);
        p
    }

    fn line(&self, shared: &Shared, p: &Point, now: Instant) -> String {
        let so_far = Latency::of(&self.so_far);
        let f = |v: Option<u64>| v.map_or_else(|| "-".into(), fmt_ns);
        let sent = shared.sum(|c| &c.sent);
        let received = shared.sum(|c| &c.received);
        // Copies not (yet) received: on their way, or lost; the final count tells which.
        let behind = (sent * self.groups).saturating_sub(received);
        let mut line = format!(
            "{:>5.1}s sent {}/s received {}/s | so far sent {} received {} not yet received {} p50 {} p99 {} | lost connections {}",
            now.saturating_duration_since(self.start).as_secs_f64(),
            fmt_count(p.sent_rate.round() as u64),
            fmt_count(p.received_rate.round() as u64),
            fmt_count(sent),
            fmt_count(received),
            fmt_count(behind),
            f(so_far.map(|l| l.p50)),
            f(so_far.map(|l| l.p99)),
            shared.sum(|c| &c.disconnects),
        );
        if let Some(e) = shared.first_error.lock().ok().and_then(|e| e.clone()) {
            line.push_str(" | ");
            line.push_str(&e);
        }
        line
    }
}

struct SummaryInput<'a> {
    setup: Vec<(String, String)>,
    secs: f64,
    steps: &'a [schedule::Step],
    results: Vec<ThreadResult>,
    series: Vec<Point>,
    shared: &'a Shared,
    cpu_secs: f64,
}

fn summarize(i: SummaryInput<'_>) -> Summary {
    let mut total = histogram();
    let mut lateness = histogram();
    let mut from_send = histogram();
    let mut steps_h: Vec<Histogram<u64>> = i.steps.iter().map(|_| histogram()).collect();
    let mut sent_steps = vec![0u64; i.steps.len()];
    let mut sent: BTreeMap<u32, u64> = BTreeMap::new();
    let mut groups: BTreeMap<String, Tracker> = BTreeMap::new();
    let mut errors = Vec::new();
    for r in &i.results {
        let _ = total.add(&r.total);
        let _ = lateness.add(&r.lateness);
        let _ = from_send.add(&r.from_send);
        for (h, o) in steps_h.iter_mut().zip(&r.steps) {
            let _ = h.add(o);
        }
        for (c, o) in sent_steps.iter_mut().zip(&r.sent_steps) {
            *c += o;
        }
        for (p, n) in &r.sent {
            *sent.entry(*p).or_default() += n;
        }
        for (g, t) in &r.receivers {
            match groups.get_mut(g) {
                Some(m) => m.merge(t),
                None => {
                    groups.insert(g.clone(), t.clone());
                }
            }
        }
        errors.extend(r.errors.iter().cloned());
    }
    // Without publishers in this run, each publisher sent at least what was seen of it.
    let inferred = sent.is_empty();
    let mut group_summaries = Vec::new();
    for (name, t) in &groups {
        let c = t.counts();
        let per_publisher: Vec<(u32, u64)> = if inferred {
            t.seen_per_publisher()
                .map(|(p, n)| (p, t.missing(p, n)))
                .collect()
        } else {
            sent.iter().map(|(p, n)| (*p, t.missing(*p, *n))).collect()
        };
        group_summaries.push(GroupSummary {
            name: name.clone(),
            distinct: c.distinct,
            lost: per_publisher.iter().map(|(_, n)| n).sum(),
            duplicates: c.duplicates,
            reordered: c.reordered,
            lost_by_publisher: per_publisher
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .take(100)
                .collect(),
        });
    }
    let sent_total: u64 = if inferred {
        groups
            .values()
            .next()
            .map_or(0, |t| t.seen_per_publisher().map(|(_, n)| n).sum())
    } else {
        sent.values().sum()
    };
    let offered = i
        .steps
        .iter()
        .map(|s| s.rate.map(|r| r * s.duration_ns as f64 / 1e9))
        .sum::<Option<f64>>()
        .map(|o| o.round() as u64);
    let steps = i
        .steps
        .iter()
        .zip(&steps_h)
        .zip(&sent_steps)
        .map(|((s, h), n)| StepSummary {
            rate: s.rate,
            secs: s.duration_ns as f64 / 1e9,
            sent: *n,
            received: h.len(),
            latency: Latency::of(h),
        })
        .collect();
    let sh = i.shared;
    Summary {
        setup: i.setup,
        secs: i.secs,
        offered,
        sent: sent_total,
        acked: sh.sum(|c| &c.acked),
        refused: sh.sum(|c| &c.refused),
        received: sh.sum(|c| &c.received),
        expected: sent_total * groups.len() as u64,
        lost: group_summaries.iter().map(|g| g.lost).sum(),
        duplicates: group_summaries.iter().map(|g| g.duplicates).sum(),
        reordered: group_summaries.iter().map(|g| g.reordered).sum(),
        foreign: sh.sum(|c| &c.foreign),
        disconnects: sh.sum(|c| &c.disconnects),
        latency: Latency::of(&total),
        lateness: Latency::of(&lateness),
        from_send: Latency::of(&from_send),
        steps,
        groups: group_summaries,
        series: i.series,
        cpu_secs: i.cpu_secs,
        errors,
    }
}

/// Writes report.md, report.json, latency.svg and (for a ramp) ramp.svg into `dir`.
fn write_reports(dir: &std::path::Path, s: &Summary, topic: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, data: &str| {
        let p = dir.join(name);
        std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))
    };
    write("report.md", &s.markdown())?;
    write(
        "report.json",
        &format!("{}\n", serde_json::to_string_pretty(&s.json())?),
    )?;
    let rate = s.steps.first().and_then(|st| st.rate);
    let title = match (s.steps.len(), rate) {
        (1, Some(r)) => format!("latency, {} msg/s to `{topic}`", fmt_count(r as u64)),
        _ => format!("latency over the run, `{topic}`"),
    };
    if let Some(svg) = chart::latency_over_time(s, &title)? {
        write("latency.svg", &svg)?;
    }
    if let Some(svg) = chart::latency_against_load(s, "latency against offered load")? {
        write("ramp.svg", &svg)?;
    }
    Ok(())
}
