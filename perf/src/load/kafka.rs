//! The Kafka end of an MQTT -> Kafka dataflow: a librdkafka consumer on its own thread that
//! reads every partition of the topic from where it ended when the run started (the high
//! watermarks, fetched before the publishers begin, so that nothing published in the run is
//! skipped and nothing older is counted) and records each record's latency from the stamp in
//! its value, as the MQTT subscribers do. It counts as one receiver group.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::schedule::step_of;
use super::shared::{Counters, Recorder, Report, Shared, ThreadResult};
use super::stamp;
use super::track::Tracker;

/// Where and what to read.
#[derive(Debug, Clone)]
pub struct KafkaPlan {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// The topic.
    pub topic: String,
    /// Extra librdkafka settings.
    pub settings: Vec<(String, String)>,
    /// The counters' index in [`Shared::counters`].
    pub index: usize,
    /// How long fetching the metadata and watermarks may take.
    pub timeout: Duration,
}

/// Starts the reader thread. It counts itself in [`Shared::receivers_ready`] once positioned
/// (or failed), and reports like a worker.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn(
    plan: KafkaPlan,
    shared: Arc<Shared>,
    reports: Sender<Report>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("load-kafka".into())
        .spawn(move || {
            let steps = shared.boundaries.len().saturating_sub(1);
            let mut rec = Recorder::new(steps);
            let mut tracker = Tracker::new();
            let mut errors = Vec::new();
            match position(&plan) {
                Ok(consumer) => {
                    shared.receivers_ready.fetch_add(1, Ordering::Release);
                    read(&consumer, &plan, &shared, &reports, &mut rec, &mut tracker);
                }
                Err(e) => {
                    let e = format!("Kafka reader: {e:#}");
                    shared.error(&e);
                    errors.push(e);
                    shared.setup_failures.fetch_add(1, Ordering::Relaxed);
                    shared.receivers_ready.fetch_add(1, Ordering::Release);
                }
            }
            let _ = reports.send(Report::Interval(rec.take_interval()));
            let _ = reports.send(Report::Done(Box::new(ThreadResult {
                total: rec.total,
                from_send: rec.from_send,
                steps: rec.steps,
                lateness: super::shared::histogram(),
                receivers: vec![(format!("kafka:{}", plan.topic), tracker)],
                sent: Vec::new(),
                sent_steps: Vec::new(),
                errors,
            })));
        })
}

/// A consumer assigned to every partition of the topic at its high watermark.
fn position(plan: &KafkaPlan) -> anyhow::Result<BaseConsumer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &plan.bootstrap)
        .set("group.id", format!("sluice-perf-{}", fastrand::u64(..)))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10")
        .set("fetch.min.bytes", "1");
    for (k, v) in &plan.settings {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create().context("creating the consumer")?;
    let md = consumer
        .fetch_metadata(Some(&plan.topic), plan.timeout)
        .context("fetching the topic's metadata")?;
    let Some(t) = md.topics().iter().find(|t| t.name() == plan.topic) else {
        bail!("topic {} not in the metadata", plan.topic);
    };
    if let Some(e) = t.error() {
        bail!("topic {}: {e:?}", plan.topic);
    }
    if t.partitions().is_empty() {
        bail!("topic {} has no partitions", plan.topic);
    }
    let mut list = TopicPartitionList::new();
    for p in t.partitions() {
        let (_, high) = consumer
            .fetch_watermarks(&plan.topic, p.id(), plan.timeout)
            .with_context(|| format!("fetching the watermarks of partition {}", p.id()))?;
        list.add_partition_offset(&plan.topic, p.id(), Offset::Offset(high))
            .context("adding a partition")?;
    }
    consumer.assign(&list).context("assigning the partitions")?;
    Ok(consumer)
}

fn read(
    consumer: &BaseConsumer,
    plan: &KafkaPlan,
    shared: &Shared,
    reports: &Sender<Report>,
    rec: &mut Recorder,
    tracker: &mut Tracker,
) {
    let counters = &shared.counters[plan.index];
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    let mut last_error = None::<String>;
    while !shared.stopped() {
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            let _ = reports.send(Report::Interval(rec.take_interval()));
        }
        let Some(r) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = match r {
            Ok(m) => m,
            Err(e) => {
                let e = e.to_string();
                if last_error.as_deref() != Some(e.as_str()) {
                    shared.error(&format!("Kafka reader: {e}"));
                    last_error = Some(e);
                }
                continue;
            }
        };
        let now_unix = shared.unix_ns(Instant::now());
        match (m.payload().and_then(stamp::read), shared.start()) {
            (Some(st), Some((_, start_unix))) if st.sent_ns >= start_unix => {
                let step = step_of(&shared.boundaries, st.sent_ns - start_unix);
                rec.record(now_unix, &st, step);
                tracker.record(st.publisher, st.seq);
                Counters::add(&counters.received, 1);
            }
            _ => Counters::add(&counters.foreign, 1),
        }
    }
}
