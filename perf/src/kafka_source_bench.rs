//! `sluice-perf bench --source kafka`: Kafka to MQTT. Each case pre-loads its records into a
//! tansu of its own (started with the project's `scripts/tansu-start`, sqlite storage), one topic
//! `bench-in` of `--source-partitions` partitions, the payloads of [`crate::payload`] (sequence
//! numbers below the case's message count), produced by a librdkafka producer in batches; then
//! one of:
//!
//! - **Sluice**: `dataplane --cores N` with a Kafka -> MQTT dataflow (a fresh consumer group, so
//!   it reads from the start) into the replay broker's sink at the case's QoS, with the window
//!   `--max-inflight`;
//! - **naive**: `kcat -C -o beginning -e | mosquitto_pub -l` into the same sink (kcat with the
//!   librdkafka of the project's confluent-kafka wheel, as for the MQTT -> Kafka bridge).
//!
//! The sink counts every sequence number; the rate is the sink's, first to last PUBLISH; CPU is
//! the data plane's (or kcat's and mosquitto_pub's), peak RSS the same. Both read the same tansu,
//! which serves fetches at its own pace: the figures are of the whole path, tansu included, not
//! the data plane's ceiling alone.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use sluice_codec::QoS;

use crate::bench::{
    BenchArgs, Case, CaseResult, Destination, Implementation, Source, naive_available, start_sluice,
};
use crate::kafka_bench::{kcat_command, kcat_librdkafka};
use crate::payload;
use crate::procstat::{self, Children};
use crate::replay::{ReplayBroker, ReplayConfig};

/// The topic the records are pre-loaded into.
pub const TOPIC: &str = "bench-in";

/// Runs one case in the folder `<impl>-from-kafka-<payload>-q<qos>` of `work`; a failure is
/// returned in [`CaseResult::error`].
pub fn run_case(args: &BenchArgs, case: Case, work: &Path) -> CaseResult {
    let dir = work.join(format!(
        "{}-from-kafka-{}-q{}",
        case.implementation.name(),
        case.payload_bytes,
        case.qos as u8
    ));
    match measure(args, case, &dir) {
        Ok(r) => r,
        Err(e) => CaseResult::failed(case, Source::Kafka, Destination::Mqtt, format!("{e:#}")),
    }
}

/// A tansu started for one case; stopped when dropped.
struct Tansu {
    dir: PathBuf,
    stop: PathBuf,
    bootstrap: String,
}

impl Tansu {
    fn start(args: &BenchArgs, dir: PathBuf) -> anyhow::Result<Self> {
        let start = args.scripts_dir.join("tansu-start");
        let out = Command::new(&start).arg(&dir).output().with_context(|| {
            format!(
                "running {} (run from the repository root, or pass --scripts-dir)",
                start.display()
            )
        })?;
        if !out.status.success() {
            bail!(
                "{} failed: {}{}",
                start.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let env = std::fs::read_to_string(dir.join("env"))
            .with_context(|| format!("reading {}/env", dir.display()))?;
        let bootstrap = env
            .lines()
            .find_map(|l| l.strip_prefix("KAFKA_BOOTSTRAP="))
            .context("no KAFKA_BOOTSTRAP in tansu-start's env file")?
            .to_owned();
        Ok(Self {
            dir,
            stop: args.scripts_dir.join("stop"),
            bootstrap,
        })
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = Command::new(&self.stop)
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs a future to completion on this thread (rdkafka's admin calls are futures that
/// librdkafka's own threads complete).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn create_topic(bootstrap: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("an admin client")?;
    let topic = NewTopic::new(TOPIC, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.create_topics([&topic], &options)).context("CreateTopics")?;
    for r in results {
        if let Err((name, code)) = r {
            bail!("creating topic {name}: {code}");
        }
    }
    Ok(())
}

/// Produces sequence numbers `0..messages` as `payload_bytes`-byte payloads into [`TOPIC`].
fn preload(bootstrap: &str, messages: u64, payload_bytes: usize) -> anyhow::Result<Duration> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .set("enable.idempotence", "true")
        .create()
        .context("a producer")?;
    let mut p = payload::template(payload_bytes).context("payload size below the minimum")?;
    let started = Instant::now();
    for seq in 0..messages {
        payload::write_seq(&mut p, seq);
        loop {
            match producer.send(BaseRecord::<(), [u8]>::to(TOPIC).payload(&p)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => bail!("producing record {seq}: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the pre-loaded records")?;
    Ok(started.elapsed())
}

/// The Kafka -> MQTT manifests: `bootstrap` as the source (group `group`), the replay broker's
/// sink as the destination.
pub fn manifests(
    bootstrap: &str,
    group: &str,
    sink: std::net::SocketAddr,
    qos: QoS,
    max_inflight: u16,
) -> String {
    format!(
        r#"apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: kafka
spec:
  endpointType: Kafka
  kafkaSettings:
    host: "{bootstrap}"
    authentication:
      method: Anonymous
    tls:
      mode: Disabled
    consumerGroupId: {group}
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: sink
spec:
  endpointType: Mqtt
  mqttSettings:
    host: "{sink}"
    protocol: Mqtt
    qos: {qos}
    maxInflightMessages: {max_inflight}
    authentication:
      method: Anonymous
    tls:
      mode: Disabled
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowProfile
metadata:
  name: default
spec:
  instanceCount: 1
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: Dataflow
metadata:
  name: bench-from-kafka
spec:
  profileRef: default
  operations:
    - operationType: Source
      sourceSettings:
        endpointRef: kafka
        dataSources:
          - {TOPIC}
    - operationType: Destination
      destinationSettings:
        endpointRef: sink
        dataDestination: bench/out
"#,
        qos = qos as u8
    )
}

fn start_naive(
    args: &BenchArgs,
    case: Case,
    bootstrap: &str,
    broker: &ReplayBroker,
    dir: &Path,
    children: &mut Children,
) -> anyhow::Result<()> {
    naive_available(args)?;
    let lib = kcat_librdkafka(args)?;
    let mut kcat = kcat_command(args, lib.as_deref(), dir)?;
    kcat.args([
        "-C",
        "-b",
        bootstrap,
        "-t",
        TOPIC,
        "-o",
        "beginning",
        "-e",
        "-q",
    ])
    .args(["-f", "%s\\n"])
    .stdout(Stdio::piped());
    let p = children.spawn(
        "kcat",
        &mut kcat,
        Stdio::null(),
        &dir.join("kcat.log"),
        false,
    )?;
    let pipe = p.child.stdout.take().context("kcat's stdout")?;
    let qos = (case.qos as u8).to_string();
    let mut publisher = Command::new(&args.mosquitto_pub);
    publisher
        .args(["-h", "127.0.0.1", "-p"])
        .arg(broker.sink_addr().port().to_string())
        .args(["-V", "5", "-q", &qos, "-t", "bench/out", "-l"])
        .args(["-i", "sluice-perf-naive-from-kafka"]);
    children.spawn(
        "mosquitto_pub",
        &mut publisher,
        Stdio::from(pipe),
        &dir.join("mosquitto_pub.log"),
        true,
    )?;
    Ok(())
}

fn measure(args: &BenchArgs, case: Case, dir: &Path) -> anyhow::Result<CaseResult> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tansu = Tansu::start(args, dir.join("tansu"))?;
    create_topic(&tansu.bootstrap, args.source_partitions)?;
    preload(&tansu.bootstrap, case.messages, case.payload_bytes)?;
    let broker = ReplayBroker::start(ReplayConfig {
        sink_port: Some(0),
        messages: case.messages,
        payload_bytes: case.payload_bytes,
        qos: case.qos,
        topics: 1,
        max_inflight: args.max_inflight,
        start_released: false,
        ..ReplayConfig::default()
    })?;
    let mut children = Children::new();
    let names: &[&str] = match case.implementation {
        Implementation::Sluice => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let group = format!("bench-{nanos}");
            let yaml = manifests(
                &tansu.bootstrap,
                &group,
                broker.sink_addr(),
                case.qos,
                args.max_inflight,
            );
            start_sluice(args, &yaml, broker.sink_addr(), dir, &mut children)?;
            &["dataplane"]
        }
        Implementation::Naive => {
            start_naive(args, case, &tansu.bootstrap, &broker, dir, &mut children)?;
            &["kcat", "mosquitto_pub"]
        }
    };
    let ticks = procstat::clock_ticks_per_second() as f64;
    let cpu0 = children.cpu_ticks(names)?;
    let self0 = procstat::self_cpu_secs()?;
    let t0 = Instant::now();
    let first_timeout = Duration::from_secs(args.first_message_timeout_secs);
    let idle_timeout = Duration::from_secs(args.idle_timeout_secs);
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    // kcat and mosquitto_pub exit by themselves at the end of the topic: their CPU and peak RSS
    // are sampled while they run (a reaped process has no /proc entry left).
    let mut cpu1 = cpu0;
    let mut peak_rss_kib = 0;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        if let Ok(t) = children.cpu_ticks(names) {
            cpu1 = t;
        }
        if let Ok(r) = children.peak_rss_kib(names) {
            peak_rss_kib = peak_rss_kib.max(r);
        }
        let st = broker.stats();
        if st.distinct >= case.messages {
            break;
        }
        if let Err(e) = children.check_running() {
            // kcat exits at the end of the topic (`-e`); mosquitto_pub then at the end of input.
            if case.implementation == Implementation::Sluice || st.received == 0 {
                bail!("{e:#}");
            }
        }
        if st.received == 0 {
            if t0.elapsed() > first_timeout {
                let logs = children
                    .procs()
                    .iter()
                    .map(|p| format!("--- end of {}:\n{}", p.log.display(), p.log_tail(15)))
                    .collect::<Vec<_>>()
                    .join("\n");
                bail!(
                    "no messages arrived at the sink within {} s\n{logs}",
                    args.first_message_timeout_secs
                );
            }
        } else if st.received != last_count {
            last_count = st.received;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > idle_timeout {
            break;
        }
    }
    let wall_secs = t0.elapsed().as_secs_f64();
    if let Ok(t) = children.cpu_ticks(names) {
        cpu1 = t;
    }
    if let Ok(r) = children.peak_rss_kib(names) {
        peak_rss_kib = peak_rss_kib.max(r);
    }
    let self1 = procstat::self_cpu_secs()?;
    let stats = broker.stats();
    children.stop_all();
    broker.shutdown();
    drop(tansu);
    let received = stats.received;
    let cpu_secs = (cpu1 - cpu0) as f64 / ticks;
    let per_million = |secs: f64| (received > 0).then(|| secs * 1e6 / received as f64);
    Ok(CaseResult {
        case,
        source: Source::Kafka,
        destination: Destination::Mqtt,
        msgs_per_sec: stats.received_per_sec(),
        stats,
        kafka: None,
        cpu_secs,
        cpu_secs_per_million: per_million(cpu_secs),
        peak_rss_kib,
        harness_cpu_secs_per_million: per_million(self1 - self0),
        wall_secs,
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifests_are_a_valid_kafka_to_mqtt_dataflow() {
        let yaml = manifests(
            "127.0.0.1:9092",
            "g",
            "127.0.0.1:1883".parse().unwrap(),
            QoS::AtLeastOnce,
            100,
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.yaml"), &yaml).unwrap();
        let report = sluice_config_agent::load_and_validate(
            &sluice_config_agent::RealFiles,
            &[dir.path().join("m.yaml")],
            &sluice_config_agent::Options {
                local_broker_host: "127.0.0.1:1883".into(),
                ..sluice_config_agent::Options::default()
            },
        );
        assert!(!report.has_errors(), "{:#?}", report.diagnostics);
        assert_eq!(report.snapshot.unwrap().dataflows.len(), 1);
    }
}
