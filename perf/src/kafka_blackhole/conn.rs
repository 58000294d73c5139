//! One client connection of the blackhole: requests framed out of the read buffer, decoded with
//! `kafka-protocol`, answered into one write buffer that is written after each read.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{self, Decompressor};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FindCoordinatorRequest,
    FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, ProducerId, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{BatchDecodeInfo, Compression, RecordBatchDecoder};
use rustix::event::PollFlags;
use rustix::time::{ClockId, clock_gettime};

use super::log::{Batch, Partition, Seq, Topic};
use super::stats::Counters;
use super::{API_VERSIONS, ApiRange, POLL_IDLE, Shared};
use crate::readbuf::ReadBuf;
use crate::replay::poll_one;

/// The largest request accepted (Kafka's default `socket.request.max.bytes`).
const MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;
/// The read buffer's initial size: a librdkafka Produce request is at most about 1 MB.
const READ_BUFFER_BYTES: usize = 1024 * 1024;
/// The cluster id in Metadata.
const CLUSTER_ID: &str = "sluice-kafka-blackhole";
/// "Authorized operations not requested" in Metadata.
const NO_AUTHORIZED_OPERATIONS: i32 = i32::MIN;
/// Topic names a connection remembers before it starts over (bounds what bogus names cost).
const MAX_CACHED_TOPICS: usize = 10_000;

/// A request of an API or version that the blackhole does not serve: the connection is closed.
#[derive(Debug)]
pub(super) struct Unsupported(String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

/// Serves one connection until the client closes it, an error, or the blackhole stops.
pub(super) fn serve(shared: &Arc<Shared>, sock: TcpStream, id: u64, peer: SocketAddr) {
    let mut client = None;
    let result = Conn::new(shared, sock).and_then(|mut c| {
        let r = c.run();
        client = c.client_id.take();
        r
    });
    Counters::incr(&shared.c.closed_connections);
    if let Err(e) = result {
        if e.downcast_ref::<Unsupported>().is_some() {
            Counters::incr(&shared.c.unsupported_requests);
        }
        Counters::incr(&shared.c.errors);
        let client = client.map_or_else(String::new, |c| format!(" (client id {c:?})"));
        shared.note(format!("connection {id} from {peer}{client} closed: {e:#}"));
    }
}

struct Conn<'a> {
    shared: &'a Shared,
    sock: TcpStream,
    /// The address the client connected to: the broker's address in Metadata.
    host: StrBytes,
    port: i32,
    rbuf: ReadBuf,
    out: BytesMut,
    /// Topics by name, so that a Produce request takes no lock to find them; `None` for
    /// invalid names.
    topics: HashMap<String, Option<Arc<Topic>>>,
    client_id: Option<String>,
    /// This thread's CPU time already added to the counters, in nanoseconds.
    cpu_counted: u64,
}

/// How one partition of a Produce request is answered.
enum Answer {
    /// Appended (some batches may have been duplicates): the first new offset.
    Appended(i64),
    /// Every batch was an exact duplicate: DUPLICATE_SEQUENCE_NUMBER with the first one's
    /// original offset.
    Duplicate(i64),
    /// Not counted: the error.
    Rejected(ResponseError),
}

/// One batch of a partition, before it is appended.
struct Pending {
    info: BatchDecodeInfo,
    bytes: u64,
    /// Decoded records, key bytes and value bytes (with `decode_records`).
    decoded: Option<(u64, u64, u64)>,
}

impl<'a> Conn<'a> {
    fn new(shared: &'a Shared, sock: TcpStream) -> anyhow::Result<Self> {
        sock.set_nonblocking(true)?;
        // Responses are small and the client waits for them: no Nagle delay.
        sock.set_nodelay(true)?;
        let local = sock.local_addr()?;
        Ok(Self {
            shared,
            host: StrBytes::from_string(local.ip().to_string()),
            port: i32::from(local.port()),
            sock,
            rbuf: ReadBuf::new(READ_BUFFER_BYTES),
            out: BytesMut::with_capacity(64 * 1024),
            topics: HashMap::new(),
            client_id: None,
            cpu_counted: 0,
        })
    }

    fn run(&mut self) -> anyhow::Result<()> {
        let r = self.serve();
        self.count_cpu();
        r
    }

    /// Adds the thread's CPU time since the last call to the counters.
    fn count_cpu(&mut self) {
        let t = clock_gettime(ClockId::ThreadCPUTime);
        let ns = (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64;
        Counters::add(&self.shared.c.cpu_ns, ns.saturating_sub(self.cpu_counted));
        self.cpu_counted = self.cpu_counted.max(ns);
    }

    fn serve(&mut self) -> anyhow::Result<()> {
        loop {
            if self.shared.stopping() {
                return Ok(());
            }
            match self.sock.read(self.rbuf.spare()) {
                Ok(0) if self.rbuf.is_empty() => return Ok(()),
                Ok(0) => bail!(
                    "closed by the client in the middle of a request ({} bytes of it read)",
                    self.rbuf.data().len()
                ),
                Ok(n) => {
                    self.rbuf.filled(n);
                    let handled = self.handle_requests();
                    // Answer what was handled even when a later request closes the connection.
                    self.flush()?;
                    self.count_cpu();
                    handled?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    poll_one(&self.sock, PollFlags::IN, POLL_IDLE)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e).context("reading"),
            }
        }
    }

    /// Handles every complete request in the read buffer.
    fn handle_requests(&mut self) -> anyhow::Result<()> {
        loop {
            let data = self.rbuf.data();
            let Some(size) = data.get(..4) else {
                return Ok(());
            };
            let size = i32::from_be_bytes(size.try_into().expect("4 bytes"));
            let size = usize::try_from(size)
                .ok()
                .filter(|s| (8..=MAX_REQUEST_BYTES).contains(s))
                .with_context(|| {
                    format!("request size {size}: not from 8 to {MAX_REQUEST_BYTES} bytes")
                })?;
            let Some(frame) = data.get(4..4 + size) else {
                return Ok(());
            };
            let frame = Bytes::copy_from_slice(frame);
            self.rbuf.consume(4 + size);
            self.handle(frame)?;
        }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        let mut written = 0;
        while written < self.out.len() {
            match self.sock.write(&self.out[written..]) {
                Ok(0) => bail!("the connection took no more bytes"),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.shared.stopping() {
                        break;
                    }
                    poll_one(&self.sock, PollFlags::OUT, POLL_IDLE)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("writing responses"),
            }
        }
        self.out.clear();
        Ok(())
    }

    fn handle(&mut self, frame: Bytes) -> anyhow::Result<()> {
        let c = &self.shared.c;
        Counters::incr(&c.requests);
        let api_key = frame.slice(0..2).get_i16();
        let version = frame.slice(2..4).get_i16();
        let Ok(key) = ApiKey::try_from(api_key) else {
            // No header version to decode it with; v1 (a plain client id) is the likely one.
            let mut buf = frame;
            if self.client_id.is_none()
                && let Ok(h) = RequestHeader::decode(&mut buf, 1)
            {
                self.client_id = h.client_id.map(|s| s.to_string());
            }
            return Err(Unsupported(format!(
                "request with unknown API key {api_key} (version {version})"
            ))
            .into());
        };
        let mut buf = frame;
        let header = RequestHeader::decode(&mut buf, key.request_header_version(version))
            .with_context(|| format!("{key:?} v{version} request header"))?;
        if self.client_id.is_none() {
            self.client_id = header.client_id.as_ref().map(|s| s.to_string());
        }
        let range = served(key, version)?;
        // Counted by version when served at that version (not an ApiVersions request past the
        // range, which gets UNSUPPORTED_VERSION).
        if (range.min..=range.max).contains(&version)
            && let (Some(i), Ok(v)) = (
                API_VERSIONS.iter().position(|a| a.key == key),
                usize::try_from(version),
            )
            && let Some(n) = c.by_version[i].get(v)
        {
            Counters::incr(n);
        }
        let id = header.correlation_id;
        let context = || format!("{key:?} v{version} request");
        match key {
            ApiKey::ApiVersions => {
                Counters::incr(&c.api_versions_requests);
                self.api_versions(id, version, range, &mut buf)
            }
            ApiKey::Metadata => {
                Counters::incr(&c.metadata_requests);
                let req = MetadataRequest::decode(&mut buf, version).with_context(context)?;
                self.metadata(id, version, req)
            }
            ApiKey::InitProducerId => {
                Counters::incr(&c.init_producer_id_requests);
                let req = InitProducerIdRequest::decode(&mut buf, version).with_context(context)?;
                self.init_producer_id(id, version, &req)
            }
            ApiKey::FindCoordinator => {
                Counters::incr(&c.find_coordinator_requests);
                let req =
                    FindCoordinatorRequest::decode(&mut buf, version).with_context(context)?;
                self.find_coordinator(id, version, req)
            }
            ApiKey::Produce => {
                let req = ProduceRequest::decode(&mut buf, version).with_context(context)?;
                self.produce(id, version, req)
            }
            _ => unreachable!("served() lets only these through"),
        }
    }

    /// Appends one response (size, header, body) to the write buffer.
    fn respond<R: Encodable + HeaderVersion>(
        &mut self,
        correlation_id: i32,
        version: i16,
        body: &R,
    ) -> anyhow::Result<()> {
        let start = self.out.len();
        self.out.put_i32(0);
        let mut header = ResponseHeader::default();
        header.correlation_id = correlation_id;
        header.encode(&mut self.out, R::header_version(version))?;
        body.encode(&mut self.out, version)?;
        let len = i32::try_from(self.out.len() - start - 4).context("response too large")?;
        self.out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    fn api_versions(
        &mut self,
        id: i32,
        version: i16,
        range: ApiRange,
        buf: &mut Bytes,
    ) -> anyhow::Result<()> {
        let mut resp = ApiVersionsResponse::default();
        resp.api_keys = API_VERSIONS
            .iter()
            .map(|a| {
                ApiVersion::default()
                    .with_api_key(a.key as i16)
                    .with_min_version(a.min)
                    .with_max_version(a.max)
            })
            .collect();
        if version > range.max {
            // As a broker does: UNSUPPORTED_VERSION in the v0 format, with the versions it
            // serves, so the client retries with one of them.
            resp.error_code = ResponseError::UnsupportedVersion.code();
            return self.respond(id, 0, &resp);
        }
        ApiVersionsRequest::decode(buf, version)
            .with_context(|| format!("ApiVersions v{version} request"))?;
        self.respond(id, version, &resp)
    }

    fn metadata(&mut self, id: i32, version: i16, req: MetadataRequest) -> anyhow::Result<()> {
        let node = BrokerId(self.shared.config.node_id);
        let mut resp = MetadataResponse::default();
        resp.brokers = vec![
            MetadataResponseBroker::default()
                .with_node_id(node)
                .with_host(self.host.clone())
                .with_port(self.port),
        ];
        resp.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
        resp.controller_id = node;
        resp.cluster_authorized_operations = NO_AUTHORIZED_OPERATIONS;
        match req.topics {
            // Null (v1 and later), or empty in v0: every topic.
            None => resp.topics = self.all_topics(),
            Some(t) if version == 0 && t.is_empty() => resp.topics = self.all_topics(),
            Some(requested) => {
                for rt in requested {
                    let entry = match rt.name {
                        Some(name) => match self.topic(name.as_str()) {
                            Some(t) => self.topic_metadata(&t),
                            None => MetadataResponseTopic::default()
                                .with_error_code(ResponseError::InvalidTopicException.code())
                                .with_name(Some(name)),
                        },
                        None => match self.shared.topics.by_id(rt.topic_id) {
                            Some(t) => self.topic_metadata(&t),
                            None => MetadataResponseTopic::default()
                                .with_error_code(ResponseError::UnknownTopicId.code())
                                .with_topic_id(rt.topic_id),
                        },
                    };
                    resp.topics.push(entry);
                }
            }
        }
        self.respond(id, version, &resp)
    }

    fn all_topics(&self) -> Vec<MetadataResponseTopic> {
        let all = self.shared.topics.all();
        all.iter().map(|t| self.topic_metadata(t)).collect()
    }

    fn topic_metadata(&self, t: &Topic) -> MetadataResponseTopic {
        let node = BrokerId(self.shared.config.node_id);
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
            .with_topic_id(t.id)
            .with_topic_authorized_operations(NO_AUTHORIZED_OPERATIONS)
            .with_partitions(
                (0..t.partitions.len() as i32)
                    .map(|i| {
                        MetadataResponsePartition::default()
                            .with_partition_index(i)
                            .with_leader_id(node)
                            .with_leader_epoch(0)
                            .with_replica_nodes(vec![node])
                            .with_isr_nodes(vec![node])
                    })
                    .collect(),
            )
    }

    fn init_producer_id(
        &mut self,
        id: i32,
        version: i16,
        req: &InitProducerIdRequest,
    ) -> anyhow::Result<()> {
        if let Some(txn) = &req.transactional_id {
            self.shared.note(format!(
                "InitProducerId for transactional id {:?}: transactions are not served, \
                 the producer will fail at its first transactional request",
                txn.as_str()
            ));
        }
        // A known producer id and epoch (v3 and later) asks for an epoch bump.
        let (pid, epoch) = if req.producer_id.0 >= 0 && (0..i16::MAX).contains(&req.producer_epoch)
        {
            (req.producer_id.0, req.producer_epoch + 1)
        } else {
            let pid = self.shared.next_producer_id.fetch_add(1, Ordering::Relaxed);
            (pid, 0)
        };
        Counters::incr(&self.shared.c.producer_ids);
        let resp = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_ongoing_txn_producer_id(ProducerId(-1))
            .with_ongoing_txn_producer_epoch(-1);
        self.respond(id, version, &resp)
    }

    fn find_coordinator(
        &mut self,
        id: i32,
        version: i16,
        req: FindCoordinatorRequest,
    ) -> anyhow::Result<()> {
        let node = BrokerId(self.shared.config.node_id);
        let mut resp = FindCoordinatorResponse::default();
        if version >= 4 {
            resp.coordinators = req
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    Coordinator::default()
                        .with_key(key)
                        .with_node_id(node)
                        .with_host(self.host.clone())
                        .with_port(self.port)
                })
                .collect();
        } else {
            resp.node_id = node;
            resp.host = self.host.clone();
            resp.port = self.port;
        }
        self.respond(id, version, &resp)
    }

    /// The topic called `name` (created if new), from the connection's cache when it can.
    fn topic(&mut self, name: &str) -> Option<Arc<Topic>> {
        if let Some(t) = self.topics.get(name) {
            return t.clone();
        }
        if self.topics.len() >= MAX_CACHED_TOPICS {
            self.topics.clear();
        }
        let t = self.shared.topics.get_or_create(name);
        self.topics.insert(name.to_owned(), t.clone());
        t
    }

    fn produce(&mut self, id: i32, version: i16, req: ProduceRequest) -> anyhow::Result<()> {
        let c = &self.shared.c;
        Counters::incr(&c.produce_requests);
        let acks = req.acks;
        if acks == 0 {
            Counters::incr(&c.produce_requests_acks0);
        }
        let bad_acks = !matches!(acks, -1..=1);
        let mut responses = Vec::new();
        let mut held_records = false;
        for td in req.topic_data {
            let topic = if bad_acks {
                None
            } else {
                self.topic(td.name.as_str())
            };
            let mut parts = Vec::new();
            for pd in td.partition_data {
                held_records |= pd.records.as_ref().is_some_and(|r| !r.is_empty());
                let partition = topic.as_ref().and_then(|t| {
                    usize::try_from(pd.index)
                        .ok()
                        .and_then(|i| t.partitions.get(i))
                        .map(|p| (t, p))
                });
                let answer = if bad_acks {
                    Answer::Rejected(ResponseError::InvalidRequiredAcks)
                } else if topic.is_none() {
                    Answer::Rejected(ResponseError::InvalidTopicException)
                } else if let Some((t, p)) = partition {
                    self.append(t, pd.index, p, pd.records)
                } else {
                    Answer::Rejected(ResponseError::UnknownTopicOrPartition)
                };
                let (error_code, base_offset) = match answer {
                    Answer::Appended(offset) => (0, offset),
                    Answer::Duplicate(offset) => {
                        (ResponseError::DuplicateSequenceNumber.code(), offset)
                    }
                    Answer::Rejected(e) => {
                        Counters::incr(&c.rejected_partitions);
                        (e.code(), -1)
                    }
                };
                if acks != 0 {
                    parts.push(
                        PartitionProduceResponse::default()
                            .with_index(pd.index)
                            .with_error_code(error_code)
                            .with_base_offset(base_offset)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(0),
                    );
                }
            }
            if acks != 0 {
                responses.push(
                    TopicProduceResponse::default()
                        .with_name(td.name)
                        .with_topic_id(td.topic_id)
                        .with_partition_responses(parts),
                );
            }
        }
        if held_records {
            c.produced_at(self.shared.now_ns());
        }
        if acks == 0 {
            return Ok(());
        }
        let resp = ProduceResponse::default().with_responses(responses);
        self.respond(id, version, &resp)
    }

    /// Reads one partition's record batches and appends them.
    fn append(
        &self,
        topic: &Topic,
        index: i32,
        partition: &Partition,
        records: Option<Bytes>,
    ) -> Answer {
        let Some(pending) = records.and_then(|r| self.read_batches(&r)) else {
            return Answer::Rejected(ResponseError::CorruptMessage);
        };
        let c = &self.shared.c;
        let (mut batches, mut appended, mut bytes) = (0u64, 0u64, 0u64);
        let mut decoded = (0u64, 0u64, 0u64);
        let mut first_offset = None;
        let mut dup_offset = None;
        {
            let mut log = partition.lock();
            for p in &pending {
                let info = &p.info;
                let count = info.record_count as u64;
                let a = log.append(&Batch {
                    producer_id: info.producer_id,
                    producer_epoch: info.producer_epoch,
                    base_sequence: info.base_sequence,
                    records: info.record_count,
                });
                let who = || {
                    format!(
                        "{} [{index}] producer id {} epoch {}: batch of {count} from sequence {}",
                        topic.name, info.producer_id, info.producer_epoch, info.base_sequence
                    )
                };
                match a.seq {
                    Seq::Duplicate => {
                        Counters::incr(&c.duplicate_batches);
                        Counters::add(&c.duplicate_records, count);
                        dup_offset.get_or_insert(a.base_offset);
                        continue;
                    }
                    Seq::Gap { expected, missing } => {
                        Counters::incr(&c.sequence_gaps);
                        Counters::add(&c.missing_sequences, missing);
                        self.shared.anomaly(|| {
                            format!("{}: expected {expected}, {missing} missing", who())
                        });
                    }
                    Seq::Behind { expected } => {
                        Counters::incr(&c.out_of_order_batches);
                        self.shared
                            .anomaly(|| format!("{}: behind, expected {expected}", who()));
                    }
                    Seq::StaleEpoch { current } => {
                        Counters::incr(&c.stale_epoch_batches);
                        self.shared
                            .anomaly(|| format!("{}: stale, epoch is {current}", who()));
                    }
                    Seq::InOrder | Seq::Unchecked => {}
                }
                first_offset.get_or_insert(a.base_offset);
                batches += 1;
                appended += count;
                bytes += p.bytes;
                if let Some((n, k, v)) = p.decoded {
                    decoded = (decoded.0 + n, decoded.1 + k, decoded.2 + v);
                }
            }
        }
        partition.count(batches, appended, bytes);
        Counters::add(&c.batches, batches);
        Counters::add(&c.records, appended);
        Counters::add(&c.bytes, bytes);
        Counters::add(&c.decoded_records, decoded.0);
        Counters::add(&c.key_bytes, decoded.1);
        Counters::add(&c.value_bytes, decoded.2);
        match (first_offset, dup_offset) {
            (Some(offset), _) => Answer::Appended(offset),
            (None, Some(offset)) => Answer::Duplicate(offset),
            (None, None) => unreachable!("read_batches returns at least one batch"),
        }
    }

    /// The record batches of one partition's records, or `None` (with a note) when they are
    /// not a sequence of valid v2 batches with at least one record each.
    fn read_batches(&self, records: &Bytes) -> Option<Vec<Pending>> {
        let mut rest = records.clone();
        let infos = match RecordBatchDecoder::decode_batch_info(&mut rest) {
            Ok(infos) => infos,
            Err(e) => {
                self.shared
                    .anomaly(|| format!("record batches rejected (CORRUPT_MESSAGE): {e:#}"));
                return None;
            }
        };
        if rest.has_remaining() || infos.is_empty() {
            self.shared.anomaly(|| format!(
                "record batches rejected (CORRUPT_MESSAGE): {} of {} bytes are not v2 record batches",
                rest.remaining(),
                records.len()
            ));
            return None;
        }
        if let Some(empty) = infos.iter().find(|i| i.record_count < 1) {
            self.shared.anomaly(|| {
                format!(
                    "record batches rejected (CORRUPT_MESSAGE): a batch of {} records",
                    empty.record_count
                )
            });
            return None;
        }
        // The batches were checked: each is its 12-byte offset and length, then `length` bytes.
        let mut at = 0usize;
        let mut pending: Vec<Pending> = infos
            .into_iter()
            .map(|info| {
                let len = 12
                    + i32::from_be_bytes(records[at + 8..at + 12].try_into().expect("4 bytes"))
                        as usize;
                at += len;
                Pending {
                    info,
                    bytes: len as u64,
                    decoded: None,
                }
            })
            .collect();
        if self.shared.config.decode_records
            && let Err(e) = decode_records(records, &mut pending)
        {
            self.shared
                .anomaly(|| format!("record batches rejected (CORRUPT_MESSAGE): {e:#}"));
            return None;
        }
        Some(pending)
    }
}

/// Decodes (and decompresses) every record of the batches, for their key and value bytes.
fn decode_records(records: &Bytes, pending: &mut [Pending]) -> anyhow::Result<()> {
    let mut rest = records.clone();
    for (i, p) in pending.iter_mut().enumerate() {
        let set = RecordBatchDecoder::decode_with_custom_compression(&mut rest, Some(decompress))
            .with_context(|| format!("batch {i}: decoding its records"))?;
        let n = set.records.len() as u64;
        let len = |b: &Option<Bytes>| b.as_ref().map_or(0, |b| b.len() as u64);
        let keys = set.records.iter().map(|r| len(&r.key)).sum();
        let values = set.records.iter().map(|r| len(&r.value)).sum();
        p.decoded = Some((n, keys, values));
        if n != p.info.record_count as u64 {
            bail!(
                "batch {i}: {n} records decoded, the header says {}",
                p.info.record_count
            );
        }
    }
    Ok(())
}

/// The records of one batch, uncompressed.
fn decompress(buf: &mut Bytes, compression: Compression) -> anyhow::Result<Bytes> {
    fn take(b: &mut Bytes) -> anyhow::Result<Bytes> {
        Ok(std::mem::take(b))
    }
    match compression {
        Compression::None => take(buf),
        Compression::Gzip => <compression::Gzip as Decompressor<Bytes>>::decompress(buf, take),
        Compression::Snappy => <compression::Snappy as Decompressor<Bytes>>::decompress(buf, take),
        Compression::Zstd => <compression::Zstd as Decompressor<Bytes>>::decompress(buf, take),
        Compression::Lz4 => {
            let mut out = Vec::new();
            lz4_flex::frame::FrameDecoder::new(&buf[..])
                .read_to_end(&mut out)
                .context("LZ4 frame")?;
            buf.advance(buf.len());
            Ok(Bytes::from(out))
        }
    }
}

/// The served range of `key` if `version` is in it; an [`Unsupported`] error otherwise.
fn served(key: ApiKey, version: i16) -> anyhow::Result<ApiRange> {
    let names = || {
        API_VERSIONS
            .iter()
            .filter(|a| a.served)
            .map(|a| format!("{:?} v{}-{}", a.key, a.min, a.max))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(range) = API_VERSIONS.iter().find(|a| a.key == key) else {
        return Err(Unsupported(format!(
            "unsupported request {key:?} (API key {}) v{version}; the blackhole serves {}",
            key as i16,
            names()
        ))
        .into());
    };
    if !range.served {
        return Err(Unsupported(format!(
            "{key:?} v{version} is advertised (librdkafka enables record batch v2 and zstd \
             only when it is) but not served; the blackhole serves {}",
            names()
        ))
        .into());
    }
    // ApiVersions answers any version (UNSUPPORTED_VERSION past the range), as a broker does.
    if key != ApiKey::ApiVersions && !(range.min..=range.max).contains(&version) {
        return Err(Unsupported(format!(
            "{key:?} v{version}: the blackhole serves v{} to v{}",
            range.min, range.max
        ))
        .into());
    }
    Ok(*range)
}
