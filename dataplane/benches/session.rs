//! Criterion benchmark of `Session::handle_bytes`, the data plane's inbound MQTT path: a buffer
//! of 1,000 QoS 1 PUBLISH frames (20-byte topics, 100-byte payloads, MQTT 5.0 and 3.1.1), given
//! to a connected client session in one call, and the events it reports taken and dropped.
//!
//! `cargo bench -p sluice-dataplane --bench session` runs it; `cargo test -p sluice-dataplane
//! --benches` runs each routine once. Figures: docs/PERFORMANCE.md.
//!
//! What is timed: `handle_bytes` over the buffer, and taking every event (the messages are
//! dropped, their tokens kept). Not timed: refilling the work buffer with the frames before each
//! iteration (the buffer is allocated once and reused), and acknowledging the 1,000 messages
//! after it, so that their packet identifiers are free for the next iteration.

use std::hint::black_box;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_codec::{ByteStr, Codec, Packet, ProtocolVersion, Publish, QoS, Role};
use sluice_dataplane::bench_support::SessionBench;

/// Frames per buffer.
const FRAMES: usize = 1_000;
const PAYLOAD: usize = 100;

/// `FRAMES` QoS 1 PUBLISH frames with packet ids 1 to `FRAMES`, as a broker of `protocol`
/// encodes them.
fn frames(protocol: ProtocolVersion) -> Bytes {
    let codec = Codec::new(Role::Server, protocol);
    let payload = Bytes::from(vec![b'x'; PAYLOAD]);
    let mut buf = BytesMut::new();
    for i in 0..FRAMES {
        let topic = format!("sensors/site-{:02}/t-{:02}", (i / 10) % 10, i % 10);
        let mut p = Publish::new(ByteStr::from(topic), payload.clone());
        p.qos = QoS::AtLeastOnce;
        p.packet_id = NonZeroU16::new(i as u16 + 1);
        codec
            .encode(&Packet::Publish(p), &mut buf)
            .expect("valid PUBLISH");
    }
    buf.freeze()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("handle_bytes");
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for (name, protocol) in [
        ("v5_qos1_100B", ProtocolVersion::V5),
        ("v311_qos1_100B", ProtocolVersion::V311),
    ] {
        let frames = frames(protocol);
        group.bench_function(name, |b| {
            let mut s = SessionBench::connected(protocol);
            let mut work = BytesMut::with_capacity(frames.len());
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    work.clear();
                    work.extend_from_slice(&frames);
                    let start = Instant::now();
                    let n = s.feed(black_box(&mut work));
                    total += start.elapsed();
                    assert_eq!(n, FRAMES);
                    s.ack_all();
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
