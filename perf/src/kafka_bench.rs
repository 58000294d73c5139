//! MQTT to Kafka in `sluice-perf bench` (`--destination kafka`): the data plane's manifests
//! with a Kafka destination on the blackhole, and the naive bridge `mosquitto_sub | kcat -P`.
//!
//! Both write into the one topic [`TOPIC`] with the producer settings of [`PRODUCER_SETTINGS`]:
//! what the data plane's librdkafka configuration (dataplane/src/kafka/config.rs) gives for the
//! endpoint of [`manifests`] (batching at its defaults, `kafkaAcks: All`, no compression), so
//! that kcat batches, acknowledges and bounds its queue as the data plane does. The bridge is
//! naive in its shape (a line per message through a pipe, one process per protocol), not in
//! its producer settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use sluice_codec::QoS;

use crate::bench::{BenchArgs, Case, find_program};
use crate::kafka_blackhole::KafkaBlackhole;
use crate::procstat::Children;
use crate::replay::ReplayBroker;

/// The Kafka topic both implementations write to.
pub const TOPIC: &str = "bench-out";

/// The librdkafka settings the data plane gives a producer of the bench's endpoint (Anonymous,
/// TLS disabled, batching `latencyMs: 5`, `maxBytes: 1000000`, `maxMessages: 100000`,
/// compression `None`, `kafkaAcks: All`), less `bootstrap.servers`, `client.id` and
/// `statistics.interval.ms` (the data plane reads broker states from the statistics once a
/// second). The queue bound is the sink's window (65,536 records) and 64 MiB.
pub const PRODUCER_SETTINGS: [(&str, &str); 11] = [
    ("security.protocol", "plaintext"),
    ("compression.type", "none"),
    ("linger.ms", "5"),
    ("batch.size", "1000000"),
    ("batch.num.messages", "100000"),
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("queue.buffering.max.messages", "65536"),
    ("queue.buffering.max.kbytes", "65536"),
    ("delivery.timeout.ms", "120000"),
    ("socket.keepalive.enable", "true"),
];

/// The manifests of the Sluice case: an MQTT source endpoint on the replay broker, a Kafka
/// endpoint on the blackhole (settings as [`PRODUCER_SETTINGS`] says), a profile and a dataflow
/// from `bench/in/#` to [`TOPIC`].
pub fn manifests(source: SocketAddr, kafka: SocketAddr, qos: QoS, max_inflight: u16) -> String {
    format!(
        "# Written by sluice-perf bench: the replay broker's source listener, the Kafka blackhole.
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: bench-source
  namespace: azure-iot-operations
spec:
  endpointType: Mqtt
  mqttSettings:
    host: {source}
    authentication:
      method: Anonymous
      anonymousSettings: {{}}
    tls:
      mode: Disabled
    mqttVersion: v5
    qos: {qos}
    maxInflightMessages: {max_inflight}
    clientIdPrefix: sluice-bench
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: bench-kafka
  namespace: azure-iot-operations
spec:
  endpointType: Kafka
  kafkaSettings:
    host: {kafka}
    authentication:
      method: Anonymous
    tls:
      mode: Disabled
    batching:
      mode: Enabled
      latencyMs: 5
      maxBytes: 1000000
      maxMessages: 100000
    compression: None
    kafkaAcks: All
    partitionStrategy: Default
---
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
  name: bench-kafka
  namespace: azure-iot-operations
spec:
  profileRef: bench
  operations:
    - operationType: Source
      sourceSettings:
        endpointRef: bench-source
        dataSources:
          - bench/in/#
    - operationType: Destination
      destinationSettings:
        endpointRef: bench-kafka
        dataDestination: {TOPIC}
",
        qos = qos as u8
    )
}

/// The folders that may be the project's root: this source tree's (where the binary was
/// built), the current folder and its parents, and the executable's folder's parents
/// (`target/release/..`).
fn root_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(root) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        out.push(root.to_path_buf());
    }
    if let Ok(cwd) = std::env::current_dir() {
        out.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        out.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    out
}

/// The librdkafka that the confluent-kafka wheel bundles in `<root>/.venv` (scripts/setup makes
/// the venv): `.venv/lib/python*/site-packages/confluent_kafka.libs/librdkafka*.so*`, for the
/// first root of [`root_candidates`] that has one.
pub fn venv_librdkafka() -> Option<PathBuf> {
    for root in root_candidates() {
        let Ok(pythons) = std::fs::read_dir(root.join(".venv").join("lib")) else {
            continue;
        };
        let mut found: Vec<PathBuf> = pythons
            .flatten()
            .map(|e| e.path().join("site-packages").join("confluent_kafka.libs"))
            .filter_map(|libs| std::fs::read_dir(libs).ok())
            .flat_map(|entries| entries.flatten().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("librdkafka") && n.contains(".so"))
            })
            .collect();
        found.sort();
        if let Some(lib) = found.into_iter().next() {
            return Some(lib);
        }
    }
    None
}

/// The librdkafka kcat is to run with: `None` for the system's.
///
/// # Errors
/// No bundled librdkafka found, or the one named does not exist.
pub(crate) fn kcat_librdkafka(args: &BenchArgs) -> anyhow::Result<Option<PathBuf>> {
    match &args.kcat_librdkafka {
        Some(p) if p.as_os_str() == "system" => Ok(None),
        Some(p) if p.is_file() => Ok(Some(p.clone())),
        Some(p) => bail!("--kcat-librdkafka {}: no such file", p.display()),
        None => venv_librdkafka().map(Some).context(
            "no librdkafka of the confluent-kafka wheel in the project's .venv (scripts/setup \
             makes it); pass --kcat-librdkafka FILE, or `system` for kcat's own",
        ),
    }
}

/// Whether the naive Kafka bridge's programs and library are there; the reason when not.
///
/// # Errors
/// What is missing.
pub fn naive_available(args: &BenchArgs) -> anyhow::Result<()> {
    if find_program(&args.mosquitto_sub).is_none() {
        bail!(
            "{} not found on PATH (Debian: apt-get install mosquitto-clients)",
            args.mosquitto_sub
        );
    }
    if find_program(&args.kcat).is_none() {
        bail!(
            "{} not found on PATH (Debian: apt-get install kcat)",
            args.kcat
        );
    }
    kcat_librdkafka(args).map(drop)
}

/// Bytes that the local clients of `port` on 127.0.0.1 have not yet read from their sockets
/// (the `rx_queue` of `/proc/net/tcp` for established IPv4 connections to that port); `None`
/// when it cannot be read.
pub fn unread_bytes_from(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let mut unread = 0;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(remote), Some(state), Some(queues)) = (f.get(2), f.get(3), f.get(4)) else {
            continue;
        };
        let remote_port = remote
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        if remote_port != Some(port) || *state != "01" {
            continue;
        }
        let rx = queues
            .split_once(':')
            .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())?;
        unread += rx;
    }
    Some(unread)
}

/// The arguments of `kcat -P` into `bootstrap`: [`TOPIC`] and [`PRODUCER_SETTINGS`].
pub fn kcat_args(bootstrap: &str) -> Vec<String> {
    let mut a: Vec<String> = ["-P", "-b", bootstrap, "-t", TOPIC]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for (k, v) in PRODUCER_SETTINGS {
        a.push("-X".into());
        a.push(format!("{k}={v}"));
    }
    a
}

/// `kcat` to run with `lib` (when given) through `LD_LIBRARY_PATH`: a folder `kcat-lib` in
/// `dir` with `librdkafka.so.1` linked to it.
///
/// # Errors
/// When the folder or the link cannot be made.
pub(crate) fn kcat_command(
    args: &BenchArgs,
    lib: Option<&Path>,
    dir: &Path,
) -> anyhow::Result<Command> {
    let mut kcat = Command::new(&args.kcat);
    if let Some(lib) = lib {
        let shim = dir.join("kcat-lib");
        std::fs::create_dir_all(&shim)?;
        let link = shim.join("librdkafka.so.1");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib, &link)
            .with_context(|| format!("linking {} to {}", link.display(), lib.display()))?;
        kcat.env("LD_LIBRARY_PATH", &shim);
    }
    Ok(kcat)
}

/// Starts `mosquitto_sub ... | kcat -P ...`: the subscriber as for the MQTT bridge (same
/// window), kcat with the bundled librdkafka through `LD_LIBRARY_PATH` (a folder in `dir` with
/// `librdkafka.so.1` linked to it).
///
/// # Errors
/// A program or the library missing, or a process that cannot be started.
pub fn start_naive(
    args: &BenchArgs,
    case: Case,
    broker: &ReplayBroker,
    blackhole: &KafkaBlackhole,
    dir: &Path,
    children: &mut Children,
) -> anyhow::Result<()> {
    naive_available(args)?;
    let lib = kcat_librdkafka(args)?;
    let qos = (case.qos as u8).to_string();
    let window = args.max_inflight.to_string();
    let mut sub = Command::new(&args.mosquitto_sub);
    sub.args(["-h", "127.0.0.1", "-p"])
        .arg(broker.source_addr().port().to_string())
        .args(["-V", "5", "-q", &qos, "-t", "bench/in/#"])
        .args(["-i", "sluice-perf-naive-kafka-sub"])
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
    let mut kcat = kcat_command(args, lib.as_deref(), dir)?;
    kcat.args(kcat_args(&blackhole.bootstrap_servers()));
    children.spawn(
        "kcat",
        &mut kcat,
        Stdio::from(pipe),
        &dir.join("kcat.log"),
        true,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::unread_bytes_from;

    #[test]
    fn unread_bytes_are_seen_until_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(unread_bytes_from(port), Some(0));
        server.write_all(&[7; 1000]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while unread_bytes_from(port) != Some(1000) {
            assert!(Instant::now() < deadline, "{:?}", unread_bytes_from(port));
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut buf = [0; 1000];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(unread_bytes_from(port), Some(0));
    }
}
