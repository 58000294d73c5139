//! The Kafka blackhole: a minimal Kafka broker on plain TCP that acknowledges every Produce
//! request at once and keeps nothing but counters, so that a benchmark of MQTT to Kafka measures
//! the data plane and not a real broker. See docs/kafka-blackhole.md.
//!
//! - **APIs.** ApiVersions, Metadata, InitProducerId, FindCoordinator and Produce, at the
//!   versions of [`API_VERSIONS`]. Fetch is advertised but not served: librdkafka only enables
//!   the v2 record batch format (needed for idempotence) when the broker advertises Produce v3+
//!   *and* Fetch v4+, and zstd only with Produce v7+ and Fetch v10+. Any request of an API or
//!   version that is not served closes its connection, with a note ([`KafkaBlackhole::notes`],
//!   and stderr with [`BlackholeConfig::log_stderr`]) and [`BlackholeStats::unsupported_requests`].
//! - **One broker.** Metadata names one broker, this one (node [`BlackholeConfig::node_id`] at
//!   the address the client connected to), leader of every partition. Topics are "created" when
//!   first named, by Metadata or by Produce, with [`BlackholeConfig::partitions`] partitions; a
//!   Metadata request for all topics gets the known ones. Invalid topic names get
//!   INVALID_TOPIC_EXCEPTION, partitions past the count UNKNOWN_TOPIC_OR_PARTITION.
//! - **Produce.** Every partition's records are read as record batches (v2) by
//!   `kafka-protocol`'s header decoder, which checks each batch's CRC without decompressing: the
//!   record count is in the header. Offsets of a partition grow by each batch's record count.
//!   The answer goes out at once (acks=1 and acks=all alike); acks=0 gets none.
//! - **Idempotent producers.** InitProducerId hands out producer ids (and bumps the epoch of a
//!   known one). Per (producer id, partition) the base sequence of each batch must follow the
//!   previous batch's last sequence + 1: gaps, batches behind and stale epochs are counted and
//!   still appended, where a broker would answer OUT_OF_ORDER_SEQUENCE_NUMBER or
//!   INVALID_PRODUCER_EPOCH; an exact repeat of one of the producer's last five batches is not
//!   appended and is answered DUPLICATE_SEQUENCE_NUMBER with its first offset, as a broker does
//!   (librdkafka takes that as delivered).
//! - **Counters.** Records, record batch bytes and batches per topic and partition, requests by
//!   API, sequence anomalies; with [`BlackholeConfig::decode_records`] also every record is
//!   decoded (and decompressed) to count key and value bytes, which costs CPU and allocates per
//!   record. Counters are atomics updated once per partition per request.
//! - **Threads.** One acceptor and one thread per connection, with a non-blocking socket and
//!   `poll(2)`: reads of up to the buffer's size (1 MiB, growing for larger requests), every
//!   complete request handled, then all the responses written at once.
//!
//! **Decoding cost.** Every request, Produce included, is decoded by `kafka-protocol`. A request
//! is copied out of the read buffer into one `Bytes` (one allocation and one copy per request),
//! from which the decoder takes the topic names and each partition's records without copying;
//! what it allocates is per request and per partition (the topic and partition vectors, the
//! batch header list), not per record. The batch headers' CRC-32C is computed over every byte
//! received. Measured, this costs 0.04 to 0.055 CPU seconds per million uncompressed 100-byte
//! records against pre-encoded requests (12 to 17 million records a second on one connection)
//! and 0.02 to 0.08 behind one librdkafka producer (docs/kafka-blackhole.md), so the Produce
//! path does not bypass the crate.

mod conn;
mod log;
mod stats;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
pub use kafka_protocol::messages::ApiKey;
use rustix::event::PollFlags;

use self::stats::Counters;
pub use self::stats::{BlackholeStats, PartitionStats, TopicStats, VersionUsed};
use crate::replay::poll_one;

/// An API the blackhole advertises in its ApiVersions response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    /// The API.
    pub key: ApiKey,
    /// Lowest version served.
    pub min: i16,
    /// Highest version served.
    pub max: i16,
    /// Whether requests of this API are answered; `false` for Fetch, which is only advertised
    /// for librdkafka's feature detection.
    pub served: bool,
}

/// The APIs and versions the blackhole advertises. librdkafka 2.12 picks Produce v10,
/// Metadata v13, InitProducerId v4, ApiVersions v3.
pub const API_VERSIONS: [ApiRange; 6] = [
    ApiRange {
        key: ApiKey::Produce,
        min: 3,
        max: 12,
        served: true,
    },
    ApiRange {
        key: ApiKey::Fetch,
        min: 4,
        max: 12,
        served: false,
    },
    ApiRange {
        key: ApiKey::Metadata,
        min: 0,
        max: 13,
        served: true,
    },
    ApiRange {
        key: ApiKey::FindCoordinator,
        min: 0,
        max: 4,
        served: true,
    },
    ApiRange {
        key: ApiKey::ApiVersions,
        min: 0,
        max: 3,
        served: true,
    },
    ApiRange {
        key: ApiKey::InitProducerId,
        min: 0,
        max: 4,
        served: true,
    },
];

/// How the blackhole listens and what it reports.
#[derive(Debug, Clone)]
pub struct BlackholeConfig {
    /// Where to listen; port 0 picks a free one ([`KafkaBlackhole::addr`]). Default
    /// 127.0.0.1:0.
    pub listen: SocketAddr,
    /// Partitions of every topic, 1 to 10,000. Default 8.
    pub partitions: u32,
    /// Decode (and decompress) every record to count key and value bytes and check the batch
    /// headers' record counts. Costs CPU and allocations per record. Default off.
    pub decode_records: bool,
    /// The broker's node id in Metadata. Default 1.
    pub node_id: i32,
    /// Also write every note (connections closed on an error or an unsupported request, the
    /// first sequence anomalies) to stderr. Default off.
    pub log_stderr: bool,
}

impl Default for BlackholeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            partitions: 8,
            decode_records: false,
            node_id: 1,
            log_stderr: false,
        }
    }
}

/// A running blackhole. Dropping it stops its threads.
#[derive(Debug)]
pub struct KafkaBlackhole {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl KafkaBlackhole {
    /// Binds the listener and starts accepting connections.
    ///
    /// # Errors
    /// An invalid configuration, or when the address cannot be bound.
    pub fn start(config: BlackholeConfig) -> anyhow::Result<Self> {
        if !(1..=10_000).contains(&config.partitions) {
            bail!(
                "{} partitions: the blackhole takes 1 to 10000",
                config.partitions
            );
        }
        let listener = TcpListener::bind(config.listen)
            .with_context(|| format!("binding {}", config.listen))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            topics: log::Topics::new(config.partitions as usize),
            config,
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
            c: Counters::default(),
            next_producer_id: AtomicI64::new(1000),
            anomaly_notes: AtomicU64::new(0),
            conns: Mutex::new(Vec::new()),
            notes: Mutex::new(VecDeque::new()),
        });
        let s = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("kafka-blackhole-accept".into())
            .spawn(move || accept_loop(&s, &listener))?;
        Ok(Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as a client's `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.addr.to_string()
    }

    /// The time since the blackhole started (the clock of [`BlackholeStats`]'s timestamps).
    pub fn elapsed(&self) -> Duration {
        self.shared.epoch.elapsed()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BlackholeStats {
        self.shared.stats()
    }

    /// The latest notes (at most 100): connections closed on an error or an unsupported
    /// request, the first sequence anomalies, transactional producers.
    pub fn notes(&self) -> Vec<String> {
        lock(&self.shared.notes).iter().cloned().collect()
    }

    /// Polls the counters (every millisecond) until at least `records` records were appended,
    /// or `timeout` passed: `Ok` with the snapshot that reached it, `Err` with the last one.
    ///
    /// # Errors
    /// The last snapshot, when the count was not reached in time.
    pub fn wait_for_records(
        &self,
        records: u64,
        timeout: Duration,
    ) -> Result<BlackholeStats, Box<BlackholeStats>> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.stats();
            if st.records >= records {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                return Err(Box::new(st));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops accepting, closes every connection, joins the threads and returns the final
    /// counters.
    pub fn stop(mut self) -> BlackholeStats {
        self.stop_threads();
        self.shared.stats()
    }

    fn stop_threads(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for t in std::mem::take(&mut *lock(&self.shared.conns)) {
            let _ = t.join();
        }
    }
}

impl Drop for KafkaBlackhole {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// How long a thread waits in `poll` before it looks at the stop flag.
const POLL_IDLE: Duration = Duration::from_millis(50);
/// Notes kept for [`KafkaBlackhole::notes`].
const MAX_NOTES: usize = 100;
/// Sequence anomalies and rejected record batches that get a note of their own (all are
/// counted).
const MAX_ANOMALY_NOTES: u64 = 20;

#[derive(Debug)]
struct Shared {
    config: BlackholeConfig,
    epoch: Instant,
    stop: AtomicBool,
    topics: log::Topics,
    c: Counters,
    next_producer_id: AtomicI64,
    anomaly_notes: AtomicU64,
    conns: Mutex<Vec<JoinHandle<()>>>,
    notes: Mutex<VecDeque<String>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn note(&self, msg: String) {
        if self.config.log_stderr {
            let _ = writeln!(io::stderr().lock(), "kafka-blackhole: {msg}");
        }
        let mut notes = lock(&self.notes);
        if notes.len() == MAX_NOTES {
            notes.pop_front();
        }
        notes.push_back(msg);
    }

    /// A note about a sequence anomaly or rejected record batches, for the first few only.
    fn anomaly(&self, msg: impl FnOnce() -> String) {
        if self.anomaly_notes.fetch_add(1, Ordering::Relaxed) < MAX_ANOMALY_NOTES {
            self.note(msg());
        }
    }

    fn stats(&self) -> BlackholeStats {
        let c = &self.c;
        let at = |v: &AtomicU64| match v.load(Ordering::Acquire) {
            0 => None,
            ns => Some(Duration::from_nanos(ns - 1)),
        };
        let r = |v: &AtomicU64| v.load(Ordering::Relaxed);
        // The last produce time first: the counters it covers are then at least as recent.
        let last_produce = at(&c.last_produce_ns);
        BlackholeStats {
            connections: r(&c.connections),
            closed_connections: r(&c.closed_connections),
            requests: r(&c.requests),
            api_versions_requests: r(&c.api_versions_requests),
            metadata_requests: r(&c.metadata_requests),
            init_producer_id_requests: r(&c.init_producer_id_requests),
            find_coordinator_requests: r(&c.find_coordinator_requests),
            produce_requests: r(&c.produce_requests),
            produce_requests_acks0: r(&c.produce_requests_acks0),
            unsupported_requests: r(&c.unsupported_requests),
            versions_used: API_VERSIONS
                .iter()
                .zip(&c.by_version)
                .flat_map(|(a, counts)| {
                    counts.iter().enumerate().filter_map(|(v, n)| {
                        let requests = r(n);
                        (requests > 0).then_some(VersionUsed {
                            api: a.key,
                            version: v as i16,
                            requests,
                        })
                    })
                })
                .collect(),
            errors: r(&c.errors),
            producer_ids: r(&c.producer_ids),
            batches: r(&c.batches),
            records: r(&c.records),
            bytes: r(&c.bytes),
            decoded_records: r(&c.decoded_records),
            key_bytes: r(&c.key_bytes),
            value_bytes: r(&c.value_bytes),
            record_count_mismatches: r(&c.record_count_mismatches),
            duplicate_batches: r(&c.duplicate_batches),
            duplicate_records: r(&c.duplicate_records),
            sequence_gaps: r(&c.sequence_gaps),
            missing_sequences: r(&c.missing_sequences),
            out_of_order_batches: r(&c.out_of_order_batches),
            stale_epoch_batches: r(&c.stale_epoch_batches),
            rejected_partitions: r(&c.rejected_partitions),
            cpu: Duration::from_nanos(r(&c.cpu_ns)),
            first_produce: at(&c.first_produce_ns),
            last_produce,
            topics: self
                .topics
                .all()
                .iter()
                .map(|t| TopicStats {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .enumerate()
                        .map(|(i, p)| PartitionStats {
                            partition: i as i32,
                            records: r(&p.records),
                            bytes: r(&p.bytes),
                            batches: r(&p.batches),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    let mut n = 0u64;
    while !shared.stopping() {
        match listener.accept() {
            Ok((sock, peer)) => {
                n += 1;
                Counters::incr(&shared.c.connections);
                let s = Arc::clone(shared);
                let id = n;
                let spawned = std::thread::Builder::new()
                    .name(format!("kafka-blackhole-conn-{n}"))
                    .spawn(move || conn::serve(&s, sock, id, peer));
                match spawned {
                    Ok(handle) => {
                        let mut conns = lock(&shared.conns);
                        conns.retain(|h| !h.is_finished());
                        conns.push(handle);
                    }
                    Err(e) => {
                        Counters::incr(&shared.c.closed_connections);
                        Counters::incr(&shared.c.errors);
                        shared.note(format!("connection {id} from {peer}: no thread: {e}"));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let _ = poll_one(listener, PollFlags::IN, POLL_IDLE);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(POLL_IDLE),
        }
    }
}
