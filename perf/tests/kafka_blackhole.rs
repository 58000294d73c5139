//! The Kafka blackhole against a real librdkafka producer (rdkafka, bundled librdkafka): every
//! record produced is counted, whatever the acks and the compression, and every delivery report
//! is a success; and against hand-built requests (kafka-protocol) for what a client does not do
//! on purpose: duplicates, gaps, corrupt batches, unknown partitions, unserved APIs.
//!
//! `throughput_one_producer` and `ceiling_pre_encoded` are measurements, not checks (ignored;
//! see docs/kafka-blackhole.md for how to run them).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{self, Compressor};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, InitProducerIdRequest, InitProducerIdResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
    metadata_request::MetadataRequestTopic,
    produce_request::{PartitionProduceData, TopicProduceData},
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use sluice_perf::kafka_blackhole::{API_VERSIONS, BlackholeConfig, BlackholeStats, KafkaBlackhole};
use sluice_perf::{payload, procstat};

// ---------------------------------------------------------------------------------------------
// librdkafka

/// Delivery reports: successes per partition (with their offsets) and failures.
#[derive(Default)]
struct Reports {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    offsets: Mutex<HashMap<i32, Vec<i64>>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();

    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(m) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                let mut offsets = self.offsets.lock().unwrap();
                offsets.entry(m.partition()).or_default().push(m.offset());
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn producer(bh: &KafkaBlackhole, settings: &[(&str, &str)]) -> BaseProducer<Reports> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bh.bootstrap_servers())
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    config
        .create_with_context(Reports::default())
        .expect("producer")
}

/// Produces `n` records of 100 bytes (keys `k<i>`, values in the benchmark's payload format)
/// to `topic`, then flushes (30 s at most).
/// Returns the key bytes sent.
fn produce(p: &BaseProducer<Reports>, topic: &str, n: u64) -> u64 {
    let mut value = payload::template(100).unwrap();
    let mut key_bytes = 0;
    for i in 0..n {
        payload::write_seq(&mut value, i);
        let key = format!("k{i}");
        key_bytes += key.len() as u64;
        let mut record = BaseRecord::to(topic).payload(&value[..]).key(&key);
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    p.poll(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("send: {e}"),
            }
        }
        if i % 1024 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush within 30 s");
    key_bytes
}

fn blackhole(partitions: u32, decode_records: bool) -> KafkaBlackhole {
    KafkaBlackhole::start(BlackholeConfig {
        partitions,
        decode_records,
        ..BlackholeConfig::default()
    })
    .unwrap()
}

/// What every clean run has: no anomalies, nothing rejected, nothing unsupported.
fn assert_clean(st: &BlackholeStats, bh: &KafkaBlackhole) {
    let notes = bh.notes();
    assert_eq!(st.unsupported_requests, 0, "{notes:?}");
    assert_eq!(st.errors, 0, "{notes:?}");
    assert_eq!(st.rejected_partitions, 0, "{notes:?}");
    assert_eq!(st.sequence_anomalies(), 0, "{notes:?}");
    assert_eq!(st.duplicate_batches, 0, "{notes:?}");
}

/// Every version used is advertised; the produce path used exactly these APIs.
fn assert_versions(st: &BlackholeStats) {
    for v in &st.versions_used {
        let a = API_VERSIONS.iter().find(|a| a.key == v.api).unwrap();
        assert!(a.served && (a.min..=a.max).contains(&v.version), "{v:?}");
    }
    let produce = st.versions_of(ApiKey::Produce);
    assert_eq!(
        produce.len(),
        1,
        "one Produce version: {:?}",
        st.versions_used
    );
    // zstd needs Produce v7 and later.
    assert!(produce[0] >= 7, "{:?}", st.versions_used);
    assert_eq!(
        st.requests,
        st.api_versions_requests
            + st.metadata_requests
            + st.init_producer_id_requests
            + st.find_coordinator_requests
            + st.produce_requests
    );
}

/// Every delivery report is a success, and per partition the offsets are 0 to n-1 as the
/// blackhole counted them.
fn assert_reports(reports: &Reports, st: &BlackholeStats, topic: &str, n: u64) {
    assert_eq!(
        reports.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        reports.first_error.lock().unwrap()
    );
    assert_eq!(reports.delivered.load(Ordering::Relaxed), n);
    let t = st.topic(topic).expect("the topic exists");
    let mut offsets = reports.offsets.lock().unwrap();
    for p in &t.partitions {
        let mut got = offsets.remove(&p.partition).unwrap_or_default();
        got.sort_unstable();
        assert_eq!(
            got,
            (0..p.records as i64).collect::<Vec<_>>(),
            "partition {}",
            p.partition
        );
    }
    assert!(offsets.is_empty(), "reports for unknown partitions");
}

fn idempotent_run(compression: &str, decode_records: bool) {
    const N: u64 = 100_000;
    let bh = blackhole(8, decode_records);
    let p = producer(
        &bh,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("compression.type", compression),
        ],
    );
    let key_bytes = produce(&p, "bench.out", N);
    let st = bh.stats();
    assert_eq!(st.records, N, "{compression}: {st:?}");
    let t = st.topic("bench.out").unwrap();
    assert_eq!(t.partitions.len(), 8);
    assert_eq!(t.partitions.iter().map(|p| p.records).sum::<u64>(), N);
    assert_eq!(t.partitions.iter().map(|p| p.bytes).sum::<u64>(), st.bytes);
    assert!(
        t.partitions.iter().filter(|p| p.records > 0).count() > 1,
        "keys spread the records: {t:?}"
    );
    assert!(st.init_producer_id_requests >= 1 && st.producer_ids >= 1);
    assert!(st.api_versions_requests >= 1 && st.metadata_requests >= 1);
    assert_eq!(st.produce_requests_acks0, 0);
    if compression == "none" {
        assert!(st.bytes > N * 100, "{} bytes for {N} records", st.bytes);
    } else {
        assert!(
            st.bytes < N * 100,
            "{compression}: {} bytes compressed",
            st.bytes
        );
    }
    if decode_records {
        assert_eq!(st.decoded_records, N);
        assert_eq!(st.value_bytes, N * 100);
        assert_eq!(st.key_bytes, key_bytes);
        assert_eq!(st.record_count_mismatches, 0);
    } else {
        assert_eq!(st.decoded_records, 0);
    }
    assert_clean(&st, &bh);
    assert_versions(&st);
    assert_reports(p.context(), &st, "bench.out", N);
    drop(p);
    let end = bh.stop();
    assert_eq!(end.records, N);
    assert_eq!(end.connections, end.closed_connections);
}

#[test]
fn idempotent_acks_all_uncompressed() {
    idempotent_run("none", false);
}

#[test]
fn idempotent_acks_all_lz4() {
    idempotent_run("lz4", false);
}

#[test]
fn idempotent_acks_all_zstd() {
    idempotent_run("zstd", false);
}

#[test]
fn idempotent_acks_all_gzip() {
    idempotent_run("gzip", false);
}

#[test]
fn idempotent_acks_all_snappy() {
    idempotent_run("snappy", false);
}

#[test]
fn decoded_records_every_compression() {
    for compression in ["none", "lz4", "zstd", "gzip", "snappy"] {
        idempotent_run(compression, true);
    }
}

#[test]
fn acks_1_and_0_without_idempotence() {
    const N: u64 = 100_000;
    for acks in ["1", "0"] {
        let bh = blackhole(4, false);
        let p = producer(
            &bh,
            &[
                ("enable.idempotence", "false"),
                ("acks", acks),
                ("compression.type", "lz4"),
            ],
        );
        produce(&p, "acks", N);
        // With acks=0 the reports come when the requests are written: wait for the counts.
        let st = bh
            .wait_for_records(N, Duration::from_secs(10))
            .unwrap_or_else(|st| panic!("acks={acks}: {st:?}"));
        assert_eq!(st.records, N);
        assert_eq!(st.init_producer_id_requests, 0);
        assert_clean(&st, &bh);
        let reports = p.context();
        assert_eq!(reports.failed.load(Ordering::Relaxed), 0);
        assert_eq!(reports.delivered.load(Ordering::Relaxed), N);
        if acks == "0" {
            assert_eq!(st.produce_requests_acks0, st.produce_requests);
        } else {
            assert_eq!(st.produce_requests_acks0, 0);
            assert_reports(reports, &st, "acks", N);
        }
        assert_eq!(
            st.topic("acks").unwrap().partitions.len(),
            4,
            "--partitions"
        );
    }
}

#[test]
fn cli_counts_and_writes_the_summary() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-perf"))
        .args([
            "kafka-blackhole",
            "--listen",
            "127.0.0.1:0",
            "--partitions",
            "2",
        ])
        .args(["--exit-after-records", "1000", "--json"])
        .arg(&json)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first.strip_prefix("listening ").expect(&first).to_owned();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &addr)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    let p: BaseProducer<Reports> = config.create_with_context(Reports::default()).unwrap();
    produce(&p, "cli", 1000);
    assert_eq!(p.context().delivered.load(Ordering::Relaxed), 1000);
    drop(p);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the blackhole did not exit after 1000 records");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
    let out: String = lines.map(|l| l.unwrap() + "\n").collect();
    assert!(out.contains("records=1000"), "{out}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(summary["records"], 1000);
    assert_eq!(summary["topics"][0]["name"], "cli");
    assert_eq!(
        summary["topics"][0]["partitions"].as_array().unwrap().len(),
        2
    );
    assert_eq!(summary["sequence_gaps"], 0);
    // The same summary is printed at the end.
    let printed = &out[out.find('{').unwrap()..];
    let printed: serde_json::Value = serde_json::from_str(printed).unwrap();
    assert_eq!(printed["records"], 1000);
}

// ---------------------------------------------------------------------------------------------
// Hand-built requests

/// A blocking Kafka client of one connection: one request, one response.
struct Raw {
    sock: TcpStream,
    correlation: i32,
}

impl Raw {
    fn connect(bh: &KafkaBlackhole) -> Self {
        let sock = TcpStream::connect(bh.addr()).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Self {
            sock,
            correlation: 0,
        }
    }

    /// Sends one request; returns its correlation id.
    fn send<R: Encodable + HeaderVersion>(&mut self, key: ApiKey, version: i16, body: &R) -> i32 {
        let mut request = Self::encode(key, version, body);
        self.send_encoded(&mut request)
    }

    /// Encodes a request once, for [`Raw::send_encoded`].
    fn encode<R: Encodable + HeaderVersion>(key: ApiKey, version: i16, body: &R) -> BytesMut {
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.client_id = Some(StrBytes::from_static_str("raw-test"));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header.encode(&mut buf, R::header_version(version)).unwrap();
        body.encode(&mut buf, version).unwrap();
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        buf
    }

    /// Sends a request of [`Raw::encode`] with the next correlation id.
    fn send_encoded(&mut self, request: &mut BytesMut) -> i32 {
        self.correlation += 1;
        request[8..12].copy_from_slice(&self.correlation.to_be_bytes());
        self.sock.write_all(request).unwrap();
        self.correlation
    }

    /// Sends a request header of any API and version, with a few bytes of body.
    fn send_header(&mut self, key: ApiKey, version: i16) {
        self.correlation += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = self.correlation;
        header.client_id = Some(StrBytes::from_static_str("raw-test"));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        buf.put_slice(&[0; 16]);
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.sock.write_all(&buf).unwrap();
    }

    /// Reads one response: its correlation id and body.
    fn recv_raw(&mut self) -> std::io::Result<Bytes> {
        let mut len = [0u8; 4];
        self.sock.read_exact(&mut len)?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.sock.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }

    fn recv<R: Decodable + HeaderVersion>(&mut self, version: i16, correlation: i32) -> R {
        let mut body = self.recv_raw().expect("a response");
        let header = ResponseHeader::decode(&mut body, R::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, correlation);
        let r = R::decode(&mut body, version).unwrap();
        assert!(!body.has_remaining(), "the whole response was read");
        r
    }

    fn call<Q: Encodable + HeaderVersion, R: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Q,
    ) -> R {
        let c = self.send(key, version, body);
        self.recv(version, c)
    }

    /// Whether the blackhole closed the connection (within the read timeout).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.sock.read(&mut b), Ok(0))
            || matches!(self.sock.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}

/// One record batch v2 of `n` records from `base_seq` by producer `pid` (-1 and -1: not
/// idempotent).
fn batch(pid: i64, base_seq: i32, n: usize, compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: if pid < 0 { -1 } else { 0 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch where offsets and sequences stop moving together;
            // -1, 0, 1, ... gives a non-idempotent batch its base sequence of -1.
            sequence: base_seq.wrapping_add(i as i32),
            timestamp: 0,
            key: None,
            value: Some(value(i as u64)),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode_with_custom_compression(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
        Some(compress),
    )
    .unwrap();
    let header = RecordBatchDecoder::decode_batch_info(&mut buf.clone().freeze()).unwrap();
    assert_eq!(header.len(), 1, "one batch");
    assert_eq!(header[0].record_count, n as i32);
    buf.freeze()
}

/// A 100-byte value in the benchmark's payload format: the sequence number, then filler.
fn value(seq: u64) -> Bytes {
    let mut v = payload::template(100).unwrap();
    payload::write_seq(&mut v, seq);
    Bytes::from(v)
}

/// kafka-protocol's compressors, and lz4_flex for LZ4 (kafka-protocol's LZ4 would link the C
/// lz4 beside librdkafka's copy).
fn compress(records: &mut BytesMut, out: &mut BytesMut, c: Compression) -> anyhow::Result<()> {
    let put = |tmp: &mut BytesMut| {
        tmp.put_slice(records);
        Ok(())
    };
    match c {
        Compression::None => out.put_slice(records),
        Compression::Gzip => <compression::Gzip as Compressor<BytesMut>>::compress(out, put)?,
        Compression::Snappy => <compression::Snappy as Compressor<BytesMut>>::compress(out, put)?,
        Compression::Zstd => <compression::Zstd as Compressor<BytesMut>>::compress(out, put)?,
        Compression::Lz4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(records)?;
            out.put_slice(&e.finish()?);
        }
    }
    Ok(())
}

fn produce_request(acks: i16, topic: &str, parts: Vec<(i32, Bytes)>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(
                    parts
                        .into_iter()
                        .map(|(index, records)| {
                            PartitionProduceData::default()
                                .with_index(index)
                                .with_records(Some(records))
                        })
                        .collect(),
                ),
        ])
}

/// (error code, base offset) per partition of a one-topic Produce response.
fn answers(r: &ProduceResponse) -> Vec<(i16, i64)> {
    assert_eq!(r.responses.len(), 1);
    r.responses[0]
        .partition_responses
        .iter()
        .map(|p| (p.error_code, p.base_offset))
        .collect()
}

#[test]
fn api_versions_advertised_and_unsupported_version() {
    let bh = blackhole(8, false);
    let mut c = Raw::connect(&bh);
    let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);
    let got: Vec<_> = r
        .api_keys
        .iter()
        .map(|a| (a.api_key, a.min_version, a.max_version))
        .collect();
    let want: Vec<_> = API_VERSIONS
        .iter()
        .map(|a| (a.key as i16, a.min, a.max))
        .collect();
    assert_eq!(got, want);
    // A version past the served ones: UNSUPPORTED_VERSION (35) in the v0 format.
    c.send_header(ApiKey::ApiVersions, 9);
    let r: ApiVersionsResponse = c.recv(0, c.correlation);
    assert_eq!(r.error_code, 35);
    assert_eq!(r.api_keys.len(), API_VERSIONS.len());
    for v in 0..=3 {
        let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, v, &ApiVersionsRequest::default());
        assert_eq!(r.error_code, 0, "v{v}");
    }
    let st = bh.stats();
    assert_eq!(st.api_versions_requests, 6);
    assert_eq!(st.versions_of(ApiKey::ApiVersions), [0, 1, 2, 3]);
    assert_eq!(st.versions_used.iter().map(|v| v.requests).sum::<u64>(), 5);
}

#[test]
fn metadata_creates_requested_topics_and_lists_known_ones() {
    let bh = blackhole(3, false);
    let mut c = Raw::connect(&bh);
    let topic = |name: &str| {
        MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_owned()))))
    };
    for v in [1, 4, 9, 12, 13] {
        let req = MetadataRequest::default().with_topics(Some(vec![topic("a"), topic("b/c")]));
        let r: MetadataResponse = c.call(ApiKey::Metadata, v, &req);
        assert_eq!(r.brokers.len(), 1, "v{v}");
        assert_eq!(r.brokers[0].port, i32::from(bh.addr().port()));
        assert_eq!(r.brokers[0].host.as_str(), "127.0.0.1");
        assert_eq!(r.topics.len(), 2);
        assert_eq!(r.topics[0].error_code, 0);
        assert_eq!(r.topics[0].partitions.len(), 3);
        assert!(r.topics[0].partitions.iter().all(|p| *p.leader_id == 1));
        assert_eq!(r.topics[1].error_code, 17, "INVALID_TOPIC_EXCEPTION");
    }
    let req = MetadataRequest::default().with_topics(Some(vec![topic("z")]));
    let _: MetadataResponse = c.call(ApiKey::Metadata, 12, &req);
    // All topics: null from v1, empty in v0.
    let all: MetadataResponse = c.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    );
    let names: Vec<_> = all
        .topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().as_str().to_owned())
        .collect();
    assert_eq!(names, ["a", "z"]);
    let v0: MetadataResponse = c.call(
        ApiKey::Metadata,
        0,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    assert_eq!(v0.topics.len(), 2);
    // No topics asked (v1 and later): brokers only.
    let none: MetadataResponse = c.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    assert!(none.topics.is_empty());
    // By topic id (v10 and later).
    let id = all.topics[1].topic_id;
    let by_id: MetadataResponse = c.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default()
                .with_name(None)
                .with_topic_id(id),
        ])),
    );
    assert_eq!(by_id.topics[0].name.as_ref().unwrap().as_str(), "z");
}

#[test]
fn sequences_duplicates_and_gaps() {
    let bh = blackhole(2, false);
    let mut c = Raw::connect(&bh);
    let pid: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_producer_id((-1).into())
            .with_producer_epoch(-1)
            .with_transaction_timeout_ms(60000),
    );
    assert_eq!(pid.error_code, 0);
    assert_eq!(pid.producer_epoch, 0);
    let pid = pid.producer_id.0;
    assert!(pid >= 0);
    let v = 10;
    let mut produce = |parts: Vec<(i32, Bytes)>| -> Vec<(i16, i64)> {
        let r: ProduceResponse = c.call(ApiKey::Produce, v, &produce_request(-1, "seq", parts));
        answers(&r)
    };
    assert_eq!(
        produce(vec![(0, batch(pid, 0, 10, Compression::None))]),
        [(0, 0)]
    );
    assert_eq!(
        produce(vec![(0, batch(pid, 10, 5, Compression::None))]),
        [(0, 10)]
    );
    // The same batch again: DUPLICATE_SEQUENCE_NUMBER (46) with its first offset; not counted.
    assert_eq!(
        produce(vec![(0, batch(pid, 10, 5, Compression::None))]),
        [(46, 10)]
    );
    // 15..=19 skipped: appended, counted as a gap of 5.
    assert_eq!(
        produce(vec![(0, batch(pid, 20, 1, Compression::None))]),
        [(0, 15)]
    );
    // Partition 1 has its own sequence; partition 7 does not exist (3); a corrupt batch (2).
    let mut corrupt = batch(pid, 0, 1, Compression::None).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(
        produce(vec![
            (1, batch(pid, 0, 4, Compression::None)),
            (7, batch(pid, 0, 4, Compression::None)),
        ]),
        [(0, 0), (3, -1)]
    );
    assert_eq!(produce(vec![(1, Bytes::from(corrupt))]), [(2, -1)]);
    let st = bh.stats();
    assert_eq!(st.records, 10 + 5 + 1 + 4);
    assert_eq!(st.batches, 4);
    assert_eq!(st.duplicate_batches, 1);
    assert_eq!(st.duplicate_records, 5);
    assert_eq!(st.sequence_gaps, 1);
    assert_eq!(st.missing_sequences, 5);
    assert_eq!(st.out_of_order_batches, 0);
    assert_eq!(st.rejected_partitions, 2);
    let t = st.topic("seq").unwrap();
    assert_eq!(t.partitions[0].records, 16);
    assert_eq!(t.partitions[1].records, 4);
    assert!(
        bh.notes().iter().any(|n| n.contains("5 missing")),
        "{:?}",
        bh.notes()
    );
    // An epoch bump for the same producer id.
    let bumped: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_producer_id(pid.into())
            .with_producer_epoch(0),
    );
    assert_eq!((bumped.producer_id.0, bumped.producer_epoch), (pid, 1));
}

#[test]
fn produce_versions_compressions_and_acks_0() {
    let bh = blackhole(1, true);
    let mut c = Raw::connect(&bh);
    let mut expected = 0;
    for v in [3, 7, 9, 10, 12] {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let r: ProduceResponse = c.call(
                ApiKey::Produce,
                v,
                &produce_request(1, "v", vec![(0, batch(-1, -1, 3, compression))]),
            );
            assert_eq!(answers(&r), [(0, expected)], "v{v} {compression:?}");
            expected += 3;
        }
    }
    // acks=0: no response; the next request's response is the next thing read.
    c.send(
        ApiKey::Produce,
        10,
        &produce_request(0, "v", vec![(0, batch(-1, -1, 2, Compression::None))]),
    );
    let r: ProduceResponse = c.call(
        ApiKey::Produce,
        10,
        &produce_request(-1, "v", vec![(0, batch(-1, -1, 1, Compression::None))]),
    );
    assert_eq!(answers(&r), [(0, expected + 2)]);
    // acks=2 is not a valid setting: INVALID_REQUIRED_ACKS (21).
    let r: ProduceResponse = c.call(
        ApiKey::Produce,
        10,
        &produce_request(2, "v", vec![(0, batch(-1, -1, 1, Compression::None))]),
    );
    assert_eq!(answers(&r), [(21, -1)]);
    let st = bh.stats();
    assert_eq!(st.records, expected as u64 + 3);
    assert_eq!(st.batches, 5 * 5 + 2);
    assert_eq!(st.decoded_records, st.records);
    assert_eq!(st.value_bytes, st.records * 100);
    assert_eq!(st.produce_requests_acks0, 1);
    assert_eq!(st.rejected_partitions, 1);
}

#[test]
fn unserved_apis_close_the_connection() {
    let bh = blackhole(1, false);
    // Fetch is advertised (for librdkafka's feature checks) but not served.
    let mut c = Raw::connect(&bh);
    c.send_header(ApiKey::Fetch, 11);
    assert!(c.closed());
    // Not advertised at all.
    let mut c = Raw::connect(&bh);
    c.send_header(ApiKey::ListOffsets, 1);
    assert!(c.closed());
    // A served API at a version past the served ones.
    let mut c = Raw::connect(&bh);
    c.send_header(ApiKey::Produce, 13);
    assert!(c.closed());
    // An API key that does not exist.
    let mut c = Raw::connect(&bh);
    c.sock
        .write_all(&[0, 0, 0, 8, 0x7f, 0x00, 0, 0, 0, 0, 0, 1])
        .unwrap();
    assert!(c.closed());
    let deadline = Instant::now() + Duration::from_secs(5);
    while bh.stats().unsupported_requests < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let st = bh.stats();
    let notes = bh.notes();
    assert_eq!(st.unsupported_requests, 4, "{notes:?}");
    assert!(
        notes.iter().any(|n| n.contains("Fetch v11 is advertised")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains("ListOffsets")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("Produce v13")), "{notes:?}");
    assert!(
        notes.iter().any(|n| n.contains("unknown API key 32512")),
        "{notes:?}"
    );
    // The client id of the request is in the note (the unknown key's request had none).
    assert!(
        notes
            .iter()
            .filter(|n| !n.contains("unknown API key"))
            .all(|n| n.contains("(client id \"raw-test\")")),
        "{notes:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Measurements (ignored)

#[allow(clippy::print_stdout)]
#[test]
#[ignore = "a measurement: run with --release and --ignored --nocapture"]
fn throughput_one_producer() {
    let n: u64 = std::env::var("BLACKHOLE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    // More producer settings: BLACKHOLE_PRODUCER="linger.ms=20,batch.num.messages=50000".
    let extra = std::env::var("BLACKHOLE_PRODUCER").unwrap_or_default();
    let extra: Vec<(&str, &str)> = extra
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    for compression in ["none", "lz4", "zstd"] {
        let bh = blackhole(8, false);
        let mut settings = vec![
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("compression.type", compression),
        ];
        settings.extend(&extra);
        let p = producer(&bh, &settings);
        let cpu0 = procstat::self_cpu_secs().unwrap();
        let start = Instant::now();
        produce(&p, "bench.out", n);
        let secs = start.elapsed().as_secs_f64();
        let cpu = procstat::self_cpu_secs().unwrap() - cpu0;
        let st = bh.stats();
        assert_eq!(st.records, n);
        assert_clean(&st, &bh);
        println!(
            "one rdkafka producer{}, {n} records of 100 B, acks=all, idempotent, {compression}: \
             {:.0} records/s (send to flushed), blackhole {:.0} records/s, CPU s per million: \
             {:.2} blackhole, {:.2} producer and blackhole; {} produce requests, {} batches, {:.1} MB of batches; other \
             requests: {} ApiVersions, {} Metadata, {} InitProducerId, {} FindCoordinator; \
             versions: {}",
            if extra.is_empty() {
                String::new()
            } else {
                format!(" ({extra:?})")
            },
            n as f64 / secs,
            st.records_per_sec().unwrap_or(0.0),
            st.cpu_secs_per_million().unwrap_or(0.0),
            cpu * 1e6 / n as f64,
            st.produce_requests,
            st.batches,
            st.bytes as f64 / 1e6,
            st.api_versions_requests,
            st.metadata_requests,
            st.init_producer_id_requests,
            st.find_coordinator_requests,
            st.versions_used
                .iter()
                .map(|v| format!("{:?} v{}", v.api, v.version))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
}

#[allow(clippy::print_stdout)]
#[test]
#[ignore = "a measurement: run with --release and --ignored --nocapture"]
fn ceiling_pre_encoded() {
    // 8 partitions x 1,250 records of 100 B per request (about 1 MB uncompressed, as
    // librdkafka's default batch.size allows), not idempotent (the same request is sent again
    // and again), acks=1, with up to 5 requests in flight; encoded once, so the client costs
    // little more than its writes.
    const REQUESTS: usize = 2000;
    const IN_FLIGHT: usize = 5;
    for compression in [Compression::None, Compression::Lz4] {
        let bh = blackhole(8, false);
        let parts = (0..8)
            .map(|i| (i, batch(-1, -1, 10_000 / 8, compression)))
            .collect();
        let mut c = Raw::connect(&bh);
        let mut req = Raw::encode(ApiKey::Produce, 10, &produce_request(1, "ceiling", parts));
        let cpu0 = bh.stats().cpu;
        let start = Instant::now();
        let mut sent = Vec::new();
        let mut done = 0;
        while done < REQUESTS {
            while sent.len() - done < IN_FLIGHT && sent.len() < REQUESTS {
                sent.push(c.send_encoded(&mut req));
            }
            let r: ProduceResponse = c.recv(10, sent[done]);
            assert!(answers(&r).iter().all(|a| a.0 == 0));
            done += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        let st = bh.stats();
        let records = REQUESTS as u64 * 8 * (10_000 / 8);
        assert_eq!(st.records, records);
        println!(
            "blackhole ceiling, {compression:?}: {:.0} records/s ({:.0} MB/s of batches), \
             {:.3} blackhole CPU s per million records",
            records as f64 / secs,
            st.bytes as f64 / secs / 1e6,
            (st.cpu - cpu0).as_secs_f64() * 1e6 / records as f64
        );
    }
}
