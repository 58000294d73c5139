//! Criterion benchmark of `sluice-codec` against `mqttbytes` 0.6: decode and encode buffers of
//! 1,000,000 PUBLISH frames (20-byte topics; 100-byte and 1 KiB payloads; QoS 0 and 1; MQTT 3.1.1
//! and 5.0, plus one 5.0 case with two User Properties), both codecs on the same bytes in the same
//! run. It measures the codecs alone: one thread, no I/O.
//!
//! `cargo bench --bench codec` runs it (about four minutes on 2 cores); add a filter to run part of
//! it, e.g. `cargo bench --bench codec -- decode/v5`. `cargo test --benches` runs every routine
//! once on 1,000 frames, as a smoke test. Figures and their reading: docs/PERFORMANCE.md.
//!
//! Per case there are three decoders, side by side in one criterion group:
//! - `ours_owned`: [`Codec::decode`], which splits each frame off a `BytesMut` and returns a
//!   [`Publish`] whose topic and payload are `Bytes` slices of it;
//! - `ours_borrowed`: [`Codec::next_frame`] and [`Codec::decode_publish`] over a `&[u8]`, which
//!   return a borrowed [`sluice_codec::PublishRef`] (the data plane's hot path);
//! - `mqttbytes`: `mqttbytes::v4::read` or `mqttbytes::v5::read`, which split the frame off a
//!   `BytesMut` like ours and copy the topic into a `String`.
//!
//! and two encoders: [`Codec::encode`] of a `Packet::Publish`, and mqttbytes' `Publish::write`.
//!
//! What is timed, and what is not:
//! - The frame buffer of a case is built and checked once, before its first measurement:
//!   the three decoders must see the same number of frames with the same topics, payloads,
//!   packet identifiers and User Properties ([`check_decoders`]), and both encoders must write
//!   the same bytes ([`check_encoders`]).
//! - `ours_owned` and `mqttbytes` consume their `BytesMut`, so each iteration refills a work
//!   buffer from the case's frames first. The refill is outside the timed section: it is done
//!   before `Instant::now()` inside `iter_custom` (see [`bench_consuming`]). The work buffer is
//!   allocated once per benchmark and reused: once every decoded frame is dropped, `BytesMut`
//!   reclaims its whole allocation on the next `extend_from_slice` (documented in
//!   `BytesMut::reserve`), which the benchmark asserts, so the timed decode never runs on freshly
//!   mapped pages. The borrowed decoder reads the case's frames directly and needs no refill.
//! - Each decoded packet is passed to `black_box` and dropped inside the timed loop, for all three
//!   decoders: dropping is part of what a consumer of owned packets pays (reference counts for
//!   ours; reference counts and a `String` for mqttbytes).
//! - The encoders write the same PUBLISH 1,000,000 times into a buffer that was allocated and
//!   touched before timing and is cleared (not freed) between iterations.

use std::cell::LazyCell;
use std::hint::black_box;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use sluice_codec::{
    ByteStr, Codec, MAX_PACKET_SIZE, Packet, ProtocolVersion, Publish, PublishPropertyValues, QoS,
    Role, UserProperties,
};

/// Frames per buffer under `cargo bench`.
const FRAMES: usize = 1_000_000;
/// Frames per buffer in criterion's test mode (`cargo test --benches`, unoptimised).
const FRAMES_TEST: usize = 1_000;
/// Distinct topics in a buffer, each [`TOPIC_LEN`] bytes long.
const TOPICS: usize = 100;
const TOPIC_LEN: usize = 20;
/// The two User Properties of the properties case (name, value).
const USER_PROPERTIES: [(&str, &str); 2] = [("source", "plant-7/line-3"), ("unit", "celsius")];
/// The largest remaining length mqttbytes accepts: as large as ours, so neither refuses a frame.
const MQTTBYTES_MAX: usize = MAX_PACKET_SIZE as usize;

/// One benchmark case: the kind of frame its buffer holds.
#[derive(Debug, Clone, Copy)]
struct Case {
    version: ProtocolVersion,
    qos: QoS,
    payload_len: usize,
    /// Two User Properties on every frame (5.0 only); otherwise no properties.
    user_properties: bool,
}

impl Case {
    const fn new(version: ProtocolVersion, qos: QoS, payload_len: usize) -> Self {
        Self {
            version,
            qos,
            payload_len,
            user_properties: false,
        }
    }

    /// `v311_qos0_100B`, `v5_qos1_1KiB`, `v5_qos1_100B_2props`, ...
    fn name(&self) -> String {
        let version = match self.version {
            ProtocolVersion::V311 => "v311",
            ProtocolVersion::V5 => "v5",
        };
        let size = match self.payload_len {
            1024 => "1KiB".to_owned(),
            n => format!("{n}B"),
        };
        let props = if self.user_properties { "_2props" } else { "" };
        format!("{version}_qos{}_{size}{props}", self.qos as u8)
    }

    /// The PUBLISH at position `i` of the buffer: topic, packet id and payload vary with `i`.
    fn publish(&self, i: usize, topics: &[ByteStr], payloads: &Bytes) -> Publish {
        let offset = i % 256;
        let mut p = Publish::new(
            topics[i % TOPICS].clone(),
            payloads.slice(offset..offset + self.payload_len),
        );
        p.qos = self.qos;
        if self.qos != QoS::AtMostOnce {
            p.packet_id = NonZeroU16::new((i % 65_535) as u16 + 1);
        }
        if self.user_properties {
            p.properties = PublishPropertyValues {
                user_properties: UserProperties::from_pairs(USER_PROPERTIES)
                    .expect("short User Properties without U+0000"),
                ..PublishPropertyValues::default()
            }
            .build()
            .expect("valid properties");
        }
        p
    }

    fn codec(&self) -> Codec {
        Codec::new(Role::Client, self.version)
    }
}

/// The cases the issue asks for, and the cost of properties.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for payload_len in [100, 1024] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                cases.push(Case::new(version, qos, payload_len));
            }
        }
    }
    cases.push(Case {
        user_properties: true,
        ..Case::new(ProtocolVersion::V5, QoS::AtLeastOnce, 100)
    });
    cases
}

/// Whether criterion benchmarks (`cargo bench` passes `--bench`) or only tests each routine once
/// (`cargo test --benches`, or `cargo bench -- --test`); criterion decides the same way.
fn frames_per_buffer() -> usize {
    let (mut bench, mut test) = (false, false);
    for a in std::env::args().skip(1) {
        bench |= a == "--bench";
        test |= a == "--test";
    }
    if bench && !test { FRAMES } else { FRAMES_TEST }
}

/// The topics: `sensors/site-00/t-00` to `sensors/site-09/t-09`.
fn topics() -> Vec<ByteStr> {
    (0..TOPICS)
        .map(|i| {
            let t = format!("sensors/site-{:02}/t-{:02}", i / 10, i % 10);
            assert_eq!(t.len(), TOPIC_LEN);
            ByteStr::from(t)
        })
        .collect()
}

/// The frames of a case, encoded by our codec (and checked against mqttbytes' encoder).
fn build_frames(case: Case, frames: usize) -> Bytes {
    let codec = case.codec();
    let topics = topics();
    let payloads = Bytes::from(
        (0..case.payload_len + 256)
            .map(|i| i as u8)
            .collect::<Vec<_>>(),
    );
    let first = case.publish(0, &topics, &payloads);
    let frame_len = encode_ours(&codec, &first).len();
    let mut buf = BytesMut::with_capacity(frames * (frame_len + 2));
    for i in 0..frames {
        let packet = Packet::Publish(case.publish(i, &topics, &payloads));
        codec.encode(&packet, &mut buf).expect("encodable PUBLISH");
    }
    buf.freeze()
}

/// What a decoder saw in a buffer; the three decoders must agree on all of it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    frames: usize,
    topic_bytes: usize,
    payload_bytes: usize,
    packet_id_sum: u64,
    user_properties: usize,
    /// An order-sensitive digest of every topic and payload byte.
    digest: u64,
}

impl Tally {
    fn add(&mut self, topic: &[u8], payload: &[u8], packet_id: Option<u16>, user_props: usize) {
        self.frames += 1;
        self.topic_bytes += topic.len();
        self.payload_bytes += payload.len();
        self.packet_id_sum += u64::from(packet_id.unwrap_or(0));
        self.user_properties += user_props;
        self.digest = [topic, payload].iter().fold(self.digest, |d, part| {
            part.iter()
                .fold(d.rotate_left(7) ^ part.len() as u64, |d, &b| {
                    d.rotate_left(5) ^ u64::from(b)
                })
        });
    }
}

/// Decodes `frames` with the three decoders and asserts that they saw the same thing, and what
/// the case put there. Runs once per case, outside any measurement.
fn check_decoders(case: Case, frames: &Bytes, n: usize) {
    let mut ours_owned = Tally::default();
    let mut codec = case.codec();
    let mut buf = BytesMut::from(&frames[..]);
    while let Some(packet) = codec
        .decode(&mut buf)
        .expect("our decoder accepts the frame")
    {
        let Packet::Publish(p) = packet else {
            panic!("not a PUBLISH: {packet:?}")
        };
        let props = p.properties.user_properties().len();
        ours_owned.add(
            p.topic.as_bytes(),
            &p.payload,
            p.packet_id.map(NonZeroU16::get),
            props,
        );
    }

    let mut ours_borrowed = Tally::default();
    let codec = case.codec();
    let mut rest = &frames[..];
    while let Some(frame) = codec.next_frame(rest).expect("our decoder frames it") {
        let p = codec
            .decode_publish(&frame)
            .expect("our decoder accepts it");
        let props = p.properties.user_properties().len();
        ours_borrowed.add(
            p.topic.as_bytes(),
            p.payload,
            p.packet_id.map(NonZeroU16::get),
            props,
        );
        rest = &rest[frame.len()..];
    }
    assert!(rest.is_empty());

    let mut theirs = Tally::default();
    let mut buf = BytesMut::from(&frames[..]);
    while !buf.is_empty() {
        match case.version {
            ProtocolVersion::V311 => {
                match mqttbytes::v4::read(&mut buf, MQTTBYTES_MAX).expect("mqttbytes accepts it") {
                    mqttbytes::v4::Packet::Publish(p) => {
                        let pkid = (p.qos != mqttbytes::QoS::AtMostOnce).then_some(p.pkid);
                        theirs.add(p.topic.as_bytes(), &p.payload, pkid, 0);
                    }
                    other => panic!("not a PUBLISH: {other:?}"),
                }
            }
            ProtocolVersion::V5 => {
                match mqttbytes::v5::read(&mut buf, MQTTBYTES_MAX).expect("mqttbytes accepts it") {
                    mqttbytes::v5::Packet::Publish(p) => {
                        let pkid = (p.qos != mqttbytes::QoS::AtMostOnce).then_some(p.pkid);
                        let props = p.properties.map_or(0, |p| p.user_properties.len());
                        theirs.add(p.topic.as_bytes(), &p.payload, pkid, props);
                    }
                    other => panic!("not a PUBLISH: {other:?}"),
                }
            }
        }
    }

    assert_eq!(
        ours_owned,
        ours_borrowed,
        "{}: owned vs borrowed",
        case.name()
    );
    assert_eq!(ours_owned, theirs, "{}: ours vs mqttbytes", case.name());
    assert_eq!(ours_owned.frames, n);
    assert_eq!(ours_owned.topic_bytes, n * TOPIC_LEN);
    assert_eq!(ours_owned.payload_bytes, n * case.payload_len);
    let props_per_frame = if case.user_properties { 2 } else { 0 };
    assert_eq!(ours_owned.user_properties, n * props_per_frame);
}

/// A case's frames, built and checked on first use, so that a filtered run builds only what it
/// measures.
struct Frames {
    bytes: Bytes,
    count: usize,
}

impl Frames {
    fn new(case: Case, count: usize) -> Self {
        let bytes = build_frames(case, count);
        check_decoders(case, &bytes, count);
        Self { bytes, count }
    }
}

/// Ours, owned: splits each frame off `buf`; returns the number of frames.
fn decode_ours_owned(codec: &mut Codec, buf: &mut BytesMut) -> usize {
    let mut n = 0;
    while let Some(packet) = codec.decode(buf).expect("valid frame") {
        black_box(&packet);
        n += 1;
    }
    n
}

/// Ours, borrowed: frames and decodes views of `buf`, which stays as it is.
fn decode_ours_borrowed(codec: &Codec, buf: &[u8]) -> usize {
    let mut rest = buf;
    let mut n = 0;
    while let Some(frame) = codec.next_frame(rest).expect("valid frame") {
        let publish = codec.decode_publish(&frame).expect("valid PUBLISH");
        black_box(&publish);
        rest = &rest[frame.len()..];
        n += 1;
    }
    n
}

fn decode_mqttbytes_v4(buf: &mut BytesMut) -> usize {
    let mut n = 0;
    while !buf.is_empty() {
        let packet = mqttbytes::v4::read(buf, MQTTBYTES_MAX).expect("valid frame");
        black_box(&packet);
        n += 1;
    }
    n
}

fn decode_mqttbytes_v5(buf: &mut BytesMut) -> usize {
    let mut n = 0;
    while !buf.is_empty() {
        let packet = mqttbytes::v5::read(buf, MQTTBYTES_MAX).expect("valid frame");
        black_box(&packet);
        n += 1;
    }
    n
}

/// Benchmarks a decoder that consumes a `BytesMut`. Each iteration refills the work buffer from
/// the case's frames, untimed, then times `decode` over it.
fn bench_consuming(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    frames: &LazyCell<Frames, impl FnOnce() -> Frames>,
    mut decode: impl FnMut(&mut BytesMut) -> usize,
) {
    let mut work = BytesMut::new();
    let mut base: Option<*const u8> = None;
    group.bench_function(name, |b| {
        let frames = &**frames;
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                // Untimed: copy the frames in, reusing the allocation of the previous iteration.
                work.extend_from_slice(&frames.bytes);
                let start_ptr = work.as_ptr();
                assert_eq!(
                    *base.get_or_insert(start_ptr),
                    start_ptr,
                    "the work buffer was reallocated between iterations"
                );
                let start = Instant::now();
                let n = decode(&mut work);
                timed += start.elapsed();
                assert_eq!(n, frames.count);
            }
            timed
        });
    });
}

fn bench_decode(c: &mut Criterion, case: Case, count: usize) {
    let frames = LazyCell::new(|| Frames::new(case, count));
    let mut group = c.benchmark_group(format!("decode/{}", case.name()));
    configure(&mut group, count);

    let mut codec = case.codec();
    bench_consuming(&mut group, "ours_owned", &frames, |buf| {
        decode_ours_owned(&mut codec, buf)
    });

    let codec = case.codec();
    group.bench_function("ours_borrowed", |b| {
        let frames = &*frames;
        b.iter(|| assert_eq!(decode_ours_borrowed(&codec, &frames.bytes), frames.count));
    });

    match case.version {
        ProtocolVersion::V311 => {
            bench_consuming(&mut group, "mqttbytes", &frames, decode_mqttbytes_v4);
        }
        ProtocolVersion::V5 => {
            bench_consuming(&mut group, "mqttbytes", &frames, decode_mqttbytes_v5);
        }
    }
    group.finish();
}

/// One frame encoded by our codec.
fn encode_ours(codec: &Codec, publish: &Publish) -> BytesMut {
    let mut buf = BytesMut::new();
    codec
        .encode(&Packet::Publish(publish.clone()), &mut buf)
        .expect("encodable PUBLISH");
    buf
}

/// The same PUBLISH for mqttbytes' encoders.
enum Theirs {
    V4(mqttbytes::v4::Publish),
    V5(mqttbytes::v5::Publish),
}

impl Theirs {
    fn new(version: ProtocolVersion, p: &Publish) -> Self {
        let qos = match p.qos {
            QoS::AtMostOnce => mqttbytes::QoS::AtMostOnce,
            QoS::AtLeastOnce => mqttbytes::QoS::AtLeastOnce,
            QoS::ExactlyOnce => mqttbytes::QoS::ExactlyOnce,
        };
        let pkid = p.packet_id.map_or(0, NonZeroU16::get);
        match version {
            ProtocolVersion::V311 => {
                let mut t = mqttbytes::v4::Publish::from_bytes(&*p.topic, qos, p.payload.clone());
                t.pkid = pkid;
                Self::V4(t)
            }
            ProtocolVersion::V5 => {
                let mut t = mqttbytes::v5::Publish::from_bytes(&*p.topic, qos, p.payload.clone());
                t.pkid = pkid;
                let user: Vec<(String, String)> = p
                    .properties
                    .user_properties()
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                if !user.is_empty() {
                    t.properties = Some(mqttbytes::v5::PublishProperties {
                        payload_format_indicator: None,
                        message_expiry_interval: None,
                        topic_alias: None,
                        response_topic: None,
                        correlation_data: None,
                        user_properties: user,
                        subscription_identifiers: Vec::new(),
                        content_type: None,
                    });
                }
                Self::V5(t)
            }
        }
    }

    fn write(&self, buf: &mut BytesMut) {
        match self {
            Self::V4(p) => p.write(buf),
            Self::V5(p) => p.write(buf),
        }
        .expect("mqttbytes encodes it");
    }
}

/// Both encoders must write the same frame, which is the first frame of the decode buffer.
fn check_encoders(case: Case, ours: &Publish, theirs: &Theirs) -> usize {
    let mine = encode_ours(&case.codec(), ours);
    let mut other = BytesMut::new();
    theirs.write(&mut other);
    assert_eq!(mine, other, "{}: the encoders disagree", case.name());
    assert_eq!(&mine[..], &build_frames(case, 1)[..]);
    mine.len()
}

/// Benchmarks an encoder: `encode` writes `count` frames into a buffer that is allocated and
/// touched once, then cleared (not freed) before each iteration, untimed.
fn bench_encoder(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    count: usize,
    frame_len: usize,
    mut encode: impl FnMut(&mut BytesMut),
) {
    let mut out = BytesMut::new();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                if out.capacity() < count * frame_len {
                    out.resize(count * frame_len, 0);
                }
                out.clear();
                let start = Instant::now();
                for _ in 0..count {
                    encode(&mut out);
                }
                timed += start.elapsed();
                assert_eq!(out.len(), count * frame_len);
            }
            timed
        });
    });
}

fn bench_encode(c: &mut Criterion, case: Case, count: usize) {
    let topics = topics();
    let payloads = Bytes::from(
        (0..case.payload_len + 256)
            .map(|i| i as u8)
            .collect::<Vec<_>>(),
    );
    let ours = case.publish(0, &topics, &payloads);
    let theirs = Theirs::new(case.version, &ours);
    let frame_len = check_encoders(case, &ours, &theirs);

    let mut group = c.benchmark_group(format!("encode/{}", case.name()));
    configure(&mut group, count);
    let codec = case.codec();
    let packet = Packet::Publish(ours);
    bench_encoder(&mut group, "ours", count, frame_len, |out| {
        codec
            .encode(black_box(&packet), out)
            .expect("encodable PUBLISH");
    });
    bench_encoder(&mut group, "mqttbytes", count, frame_len, |out| {
        black_box(&theirs).write(out);
    });
    group.finish();
}

/// Ten flat samples over three seconds: one iteration handles a whole buffer (tens to hundreds
/// of milliseconds), so criterion's default of 100 linearly growing samples would take minutes.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>, count: usize) {
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(count as u64));
}

fn codec_benches(c: &mut Criterion) {
    let count = frames_per_buffer();
    for case in cases() {
        bench_decode(c, case, count);
        bench_encode(c, case, count);
    }
}

criterion_group!(benches, codec_benches);
criterion_main!(benches);
