//! The blackhole's counters: atomics updated by the connection threads (once per request or per
//! batch, never per record), and the snapshot [`BlackholeStats`] with its JSON form.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use serde_json::{Value, json};

/// The counters behind [`BlackholeStats`] (all but the per-partition ones, which live in the
/// partitions).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) connections: AtomicU64,
    pub(super) closed_connections: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) api_versions_requests: AtomicU64,
    pub(super) metadata_requests: AtomicU64,
    pub(super) init_producer_id_requests: AtomicU64,
    pub(super) find_coordinator_requests: AtomicU64,
    pub(super) produce_requests: AtomicU64,
    pub(super) produce_requests_acks0: AtomicU64,
    pub(super) unsupported_requests: AtomicU64,
    /// Served requests by position in [`super::API_VERSIONS`] and version.
    pub(super) by_version: [[AtomicU64; 16]; super::API_VERSIONS.len()],
    pub(super) errors: AtomicU64,
    pub(super) producer_ids: AtomicU64,
    pub(super) batches: AtomicU64,
    pub(super) records: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) decoded_records: AtomicU64,
    pub(super) key_bytes: AtomicU64,
    pub(super) value_bytes: AtomicU64,
    pub(super) record_count_mismatches: AtomicU64,
    pub(super) duplicate_batches: AtomicU64,
    pub(super) duplicate_records: AtomicU64,
    pub(super) sequence_gaps: AtomicU64,
    pub(super) missing_sequences: AtomicU64,
    pub(super) out_of_order_batches: AtomicU64,
    pub(super) stale_epoch_batches: AtomicU64,
    pub(super) rejected_partitions: AtomicU64,
    /// CPU time of the connection threads, in nanoseconds.
    pub(super) cpu_ns: AtomicU64,
    /// Nanoseconds since the epoch plus one of the first and last Produce request that held
    /// records; 0 is "none yet".
    pub(super) first_produce_ns: AtomicU64,
    pub(super) last_produce_ns: AtomicU64,
}

impl Counters {
    pub(super) fn add(c: &AtomicU64, n: u64) {
        if n != 0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(super) fn incr(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes that a Produce request with records was handled at `now_ns`.
    pub(super) fn produced_at(&self, now_ns: u64) {
        let v = now_ns + 1;
        let _ = self
            .first_produce_ns
            .compare_exchange(0, v, Ordering::Relaxed, Ordering::Relaxed);
        self.last_produce_ns.fetch_max(v, Ordering::Release);
    }
}

/// A snapshot of the blackhole's counters.
///
/// `records`, `bytes` and `batches` count what was appended: every batch of every accepted
/// partition except the exact duplicates, which are counted apart. `bytes` are record batch
/// bytes as sent (compressed, headers included); `key_bytes` and `value_bytes` are only counted
/// with [`super::BlackholeConfig::decode_records`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlackholeStats {
    /// Connections accepted so far.
    pub connections: u64,
    /// Connections that ended (closed by the client, by an error, or at stop).
    pub closed_connections: u64,
    /// Requests of every kind.
    pub requests: u64,
    /// ApiVersions requests.
    pub api_versions_requests: u64,
    /// Metadata requests.
    pub metadata_requests: u64,
    /// InitProducerId requests.
    pub init_producer_id_requests: u64,
    /// FindCoordinator requests.
    pub find_coordinator_requests: u64,
    /// Produce requests (all acks settings).
    pub produce_requests: u64,
    /// Produce requests with acks=0 (no response sent).
    pub produce_requests_acks0: u64,
    /// Requests of an API or version that is not served; each closed its connection.
    pub unsupported_requests: u64,
    /// Served requests per API and version (only those that were used).
    pub versions_used: Vec<VersionUsed>,
    /// Connections closed because of a protocol or I/O error, including the unsupported
    /// requests.
    pub errors: u64,
    /// Producer ids handed out (new ids and epoch bumps).
    pub producer_ids: u64,
    /// Record batches appended.
    pub batches: u64,
    /// Records appended (the batch headers' record counts).
    pub records: u64,
    /// Record batch bytes appended.
    pub bytes: u64,
    /// Records decoded (only with `decode_records`).
    pub decoded_records: u64,
    /// Key bytes of the decoded records.
    pub key_bytes: u64,
    /// Value bytes of the decoded records.
    pub value_bytes: u64,
    /// Batches whose decoded records were not as many as their header said.
    pub record_count_mismatches: u64,
    /// Batches that repeated one of the producer's recent batches exactly (answered
    /// DUPLICATE_SEQUENCE_NUMBER, not appended).
    pub duplicate_batches: u64,
    /// Records in those batches.
    pub duplicate_records: u64,
    /// Batches whose base sequence was ahead of the expected one (appended).
    pub sequence_gaps: u64,
    /// Sequence numbers skipped by those gaps.
    pub missing_sequences: u64,
    /// Batches whose base sequence was behind the expected one without being a recent batch
    /// (appended).
    pub out_of_order_batches: u64,
    /// Batches with an epoch older than their producer id's current one (appended).
    pub stale_epoch_batches: u64,
    /// Partitions of Produce requests answered with an error other than
    /// DUPLICATE_SEQUENCE_NUMBER (invalid topic name, unknown partition, corrupt batches, bad
    /// acks); nothing of them is counted above.
    pub rejected_partitions: u64,
    /// CPU time of the connection threads (user and system), updated after every read.
    pub cpu: Duration,
    /// When the first Produce request with records was handled, since the blackhole started.
    pub first_produce: Option<Duration>,
    /// When the last one was.
    pub last_produce: Option<Duration>,
    /// Every topic, in order of creation.
    pub topics: Vec<TopicStats>,
}

/// How many requests of one API version were served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionUsed {
    /// The API.
    pub api: ApiKey,
    /// Its version.
    pub version: i16,
    /// Requests served.
    pub requests: u64,
}

/// What one topic received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicStats {
    /// The topic's name.
    pub name: String,
    /// Its partitions, in order.
    pub partitions: Vec<PartitionStats>,
}

/// What one partition received (appended batches; its next offset is `records`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Partition index.
    pub partition: i32,
    /// Records appended.
    pub records: u64,
    /// Record batch bytes appended.
    pub bytes: u64,
    /// Batches appended.
    pub batches: u64,
}

impl BlackholeStats {
    /// Records per second between the first and the last Produce request; `None` until two
    /// requests apart in time held records.
    pub fn records_per_sec(&self) -> Option<f64> {
        let secs = self.last_produce?.checked_sub(self.first_produce?)?;
        (!secs.is_zero()).then(|| self.records as f64 / secs.as_secs_f64())
    }

    /// Record batch bytes per second, over the same span as [`BlackholeStats::records_per_sec`].
    pub fn bytes_per_sec(&self) -> Option<f64> {
        let secs = self.last_produce?.checked_sub(self.first_produce?)?;
        (!secs.is_zero()).then(|| self.bytes as f64 / secs.as_secs_f64())
    }

    /// CPU seconds of the connection threads per million records appended.
    pub fn cpu_secs_per_million(&self) -> Option<f64> {
        (self.records > 0).then(|| self.cpu.as_secs_f64() * 1e6 / self.records as f64)
    }

    /// The versions of `api` that were used.
    pub fn versions_of(&self, api: ApiKey) -> Vec<i16> {
        self.versions_used
            .iter()
            .filter(|v| v.api == api)
            .map(|v| v.version)
            .collect()
    }

    /// The topic called `name`.
    pub fn topic(&self, name: &str) -> Option<&TopicStats> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// Sequence anomalies of idempotent producers: gaps, out-of-order and stale-epoch batches
    /// (duplicates are not anomalies: retries produce them).
    pub fn sequence_anomalies(&self) -> u64 {
        self.sequence_gaps + self.out_of_order_batches + self.stale_epoch_batches
    }

    /// One line of the main counters, as the CLI prints every second.
    pub fn line(&self) -> String {
        format!(
            "connections={} open={} produce_requests={} batches={} records={} bytes={} duplicates={} gaps={} out_of_order={} rejected={} errors={} rate={}",
            self.connections,
            self.connections - self.closed_connections,
            self.produce_requests,
            self.batches,
            self.records,
            self.bytes,
            self.duplicate_batches,
            self.sequence_gaps,
            self.out_of_order_batches,
            self.rejected_partitions,
            self.errors,
            self.records_per_sec()
                .map_or_else(|| "-".into(), |r| format!("{r:.0}/s"))
        )
    }

    /// The snapshot as JSON: every counter, the rates, and the topics with their partitions.
    pub fn to_json(&self) -> Value {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        let topics: Vec<Value> = self
            .topics
            .iter()
            .map(|t| {
                let partitions: Vec<Value> = t
                    .partitions
                    .iter()
                    .map(|p| {
                        json!({
                            "partition": p.partition,
                            "records": p.records,
                            "bytes": p.bytes,
                            "batches": p.batches,
                        })
                    })
                    .collect();
                json!({
                    "name": t.name,
                    "records": t.partitions.iter().map(|p| p.records).sum::<u64>(),
                    "bytes": t.partitions.iter().map(|p| p.bytes).sum::<u64>(),
                    "partitions": partitions,
                })
            })
            .collect();
        let fields = [
            ("connections", json!(self.connections)),
            ("closed_connections", json!(self.closed_connections)),
            ("requests", json!(self.requests)),
            ("api_versions_requests", json!(self.api_versions_requests)),
            ("metadata_requests", json!(self.metadata_requests)),
            (
                "init_producer_id_requests",
                json!(self.init_producer_id_requests),
            ),
            (
                "find_coordinator_requests",
                json!(self.find_coordinator_requests),
            ),
            ("produce_requests", json!(self.produce_requests)),
            ("produce_requests_acks0", json!(self.produce_requests_acks0)),
            ("unsupported_requests", json!(self.unsupported_requests)),
            (
                "versions_used",
                Value::Object(
                    self.versions_used
                        .iter()
                        .map(|v| (format!("{:?} v{}", v.api, v.version), json!(v.requests)))
                        .collect(),
                ),
            ),
            ("errors", json!(self.errors)),
            ("producer_ids", json!(self.producer_ids)),
            ("batches", json!(self.batches)),
            ("records", json!(self.records)),
            ("bytes", json!(self.bytes)),
            ("decoded_records", json!(self.decoded_records)),
            ("key_bytes", json!(self.key_bytes)),
            ("value_bytes", json!(self.value_bytes)),
            (
                "record_count_mismatches",
                json!(self.record_count_mismatches),
            ),
            ("duplicate_batches", json!(self.duplicate_batches)),
            ("duplicate_records", json!(self.duplicate_records)),
            ("sequence_gaps", json!(self.sequence_gaps)),
            ("missing_sequences", json!(self.missing_sequences)),
            ("out_of_order_batches", json!(self.out_of_order_batches)),
            ("stale_epoch_batches", json!(self.stale_epoch_batches)),
            ("rejected_partitions", json!(self.rejected_partitions)),
            ("cpu_secs", json!(self.cpu.as_secs_f64())),
            (
                "cpu_secs_per_million_records",
                json!(self.cpu_secs_per_million()),
            ),
            ("first_produce_secs", json!(secs(self.first_produce))),
            ("last_produce_secs", json!(secs(self.last_produce))),
            ("records_per_sec", json!(self.records_per_sec())),
            ("bytes_per_sec", json!(self.bytes_per_sec())),
            ("topics", Value::Array(topics)),
        ];
        Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}
