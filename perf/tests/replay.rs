//! The replay broker against the small codec-based client: streams at QoS 0 and 1 (the window),
//! MQTT 3.1.1 and 5.0, shared subscriptions, and what is published to it.

use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_codec::{Packet, ProtocolVersion, PubAck, QoS, ReasonCode};
use sluice_perf::client::Client;
use sluice_perf::payload;
use sluice_perf::replay::{ReplayBroker, ReplayConfig, ReplayStats};

fn broker(messages: u64, qos: QoS, max_inflight: u16) -> ReplayBroker {
    ReplayBroker::start(ReplayConfig {
        messages,
        qos,
        max_inflight,
        sink_port: Some(0),
        ..ReplayConfig::default()
    })
    .unwrap()
}

/// Polls the broker's counters until `cond` holds (at most 5 s).
fn wait_for(broker: &ReplayBroker, cond: impl Fn(&ReplayStats) -> bool) -> ReplayStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = broker.stats();
        if cond(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "timed out; stats: {st:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn publish_seq(p: &Packet) -> (u64, Option<NonZeroU16>, String) {
    let Packet::Publish(p) = p else {
        panic!("expected PUBLISH, got {p:?}")
    };
    (
        payload::parse_seq(&p.payload).unwrap(),
        p.packet_id,
        p.topic.to_string(),
    )
}

#[test]
fn qos0_stream_in_order_v5_and_v311() {
    for version in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let b = broker(20_000, QoS::AtMostOnce, u16::MAX);
        let (mut c, _) = Client::connect(b.source_addr(), version, "q0", None).unwrap();
        let ack = c.subscribe("bench/in/#", QoS::AtLeastOnce).unwrap();
        // The subscription gets QoS 1; the stream is QoS 0 because the broker is configured so.
        assert_eq!(ack.reason_codes, vec![ReasonCode::GRANTED_QOS_1]);
        b.release();
        let d = c.drain(false, true, |n| n >= 20_000).unwrap();
        assert_eq!(d.seqs, (0..20_000).collect::<Vec<_>>());
        assert_eq!(d.payload_bytes, 20_000 * 100);
        let st = b.stats();
        assert_eq!(st.sent, 20_000);
        assert_eq!(st.stream_subscriptions, 1);
        assert_eq!(st.errors, 0, "{:?}", b.last_error());
    }
}

#[test]
fn qos1_honours_receive_maximum() {
    let b = broker(3_000, QoS::AtLeastOnce, u16::MAX);
    b.release();
    let (mut c, _) = Client::connect(b.source_addr(), ProtocolVersion::V5, "q1", Some(5)).unwrap();
    let granted = c.subscribe("bench/in/+", QoS::AtLeastOnce).unwrap();
    assert_eq!(granted.reason_codes, vec![ReasonCode::GRANTED_QOS_1]);
    let mut ids = Vec::new();
    for seq in 0..5 {
        let (s, id, topic) = publish_seq(&c.recv().unwrap());
        assert_eq!(s, seq);
        assert_eq!(topic, format!("bench/in/{seq}"));
        ids.push(id.expect("QoS 1 has a packet id"));
    }
    // The window is full: nothing more comes until a PUBACK.
    wait_for(&b, |st| st.sent == 5);
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(c.recv().is_err(), "a sixth message within a window of 5");
    c.send(&Packet::PubAck(PubAck::new(ids[0]))).unwrap();
    c.set_read_timeout(None).unwrap();
    let (s, ..) = publish_seq(&c.recv().unwrap());
    assert_eq!(s, 5);
    wait_for(&b, |st| st.acked == 1 && st.sent == 6);
    for id in &ids[1..] {
        c.send(&Packet::PubAck(PubAck::new(*id))).unwrap();
    }
    // The sixth message stays unacknowledged (one slot of the window); drain acknowledges what
    // it receives from now on.
    let d = c.drain(true, true, |n| n >= 3_000 - 6).unwrap();
    assert_eq!(d.seqs, (6..3_000).collect::<Vec<_>>());
    let st = wait_for(&b, |st| st.acked == 3_000 - 1);
    assert_eq!(st.sent, 3_000);
    assert_eq!(st.unknown_acks, 0);
}

#[test]
fn qos1_v311_window_is_the_cap() {
    let b = broker(1_000, QoS::AtLeastOnce, 3);
    b.release();
    let (mut c, _) = Client::connect(b.source_addr(), ProtocolVersion::V311, "v3", None).unwrap();
    c.subscribe("bench/#", QoS::AtLeastOnce).unwrap();
    for seq in 0..3 {
        assert_eq!(publish_seq(&c.recv().unwrap()).0, seq);
    }
    wait_for(&b, |st| st.sent == 3);
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(c.recv().is_err(), "a fourth message within a window of 3");
    // A subscriber that does not acknowledge gets nothing more; a new one gets its own stream.
    let (mut c2, _) = Client::connect(b.source_addr(), ProtocolVersion::V311, "v3b", None).unwrap();
    c2.subscribe("bench/in/#", QoS::AtLeastOnce).unwrap();
    let d = c2.drain(true, true, |n| n >= 1_000).unwrap();
    assert_eq!(d.seqs, (0..1_000).collect::<Vec<_>>());
}

#[test]
fn shared_group_splits_the_stream() {
    const N: u64 = 6_000;
    let b = broker(N, QoS::AtLeastOnce, 10);
    let total = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..2 {
        let (mut c, _) =
            Client::connect(b.source_addr(), ProtocolVersion::V5, &format!("s{i}"), None).unwrap();
        c.subscribe("$share/g/bench/in/#", QoS::AtLeastOnce)
            .unwrap();
        c.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        clients.push(c);
    }
    // A plain subscriber, on the sink listener, gets the whole stream for itself.
    let (mut plain, _) =
        Client::connect(b.sink_addr(), ProtocolVersion::V5, "plain", None).unwrap();
    plain.subscribe("bench/in/#", QoS::AtMostOnce).unwrap();
    wait_for(&b, |st| st.stream_subscriptions == 3);
    b.release();
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let total = Arc::clone(&total);
            std::thread::spawn(move || {
                let mut counted = 0;
                c.drain(true, true, |mine| {
                    let all = total.fetch_add(mine - counted, Ordering::Relaxed) + mine - counted;
                    counted = mine;
                    all >= N
                })
                .unwrap()
            })
        })
        .collect();
    let plain_seqs = plain.drain(false, true, |n| n >= N).unwrap().seqs;
    assert_eq!(plain_seqs, (0..N).collect::<Vec<_>>());
    let shares: Vec<Vec<u64>> = threads
        .into_iter()
        .map(|t| t.join().unwrap().seqs)
        .collect();
    for s in &shares {
        assert!(!s.is_empty(), "each member gets a share");
        assert!(s.windows(2).all(|w| w[0] < w[1]), "each share is in order");
    }
    let mut all: Vec<u64> = shares.concat();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..N).collect::<Vec<_>>(),
        "split without loss or duplicates"
    );
    let st = wait_for(&b, |st| st.acked == N);
    assert_eq!(st.sent, 2 * N);
}

#[test]
fn inbound_publishes_are_counted_and_acknowledged() {
    let b = broker(1_000, QoS::AtLeastOnce, u16::MAX);
    for (version, addr) in [
        (ProtocolVersion::V5, b.sink_addr()),
        (ProtocolVersion::V311, b.source_addr()),
    ] {
        let (mut c, _) = Client::connect(addr, version, "pub", None).unwrap();
        let offset = if version == ProtocolVersion::V5 {
            0
        } else {
            500
        };
        let mut body = payload::template(50).unwrap();
        for seq in 0..100 {
            payload::write_seq(&mut body, offset + seq);
            let id = c
                .publish("bench/out/x", &body, QoS::AtLeastOnce)
                .unwrap()
                .unwrap();
            match c.recv().unwrap() {
                Packet::PubAck(a) => assert_eq!(a.packet_id, id),
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
        // QoS 0, a duplicate, a payload without a sequence number, and QoS 2.
        c.publish("bench/out/x", &body, QoS::AtMostOnce).unwrap();
        c.publish("bench/out/x", b"no sequence\n", QoS::AtMostOnce)
            .unwrap();
        let id = c
            .publish("bench/out/x", b"q2", QoS::ExactlyOnce)
            .unwrap()
            .unwrap();
        match c.recv().unwrap() {
            Packet::PubRec(a) => assert_eq!(a.packet_id, id),
            other => panic!("expected PUBREC, got {other:?}"),
        }
        c.send(&Packet::PubRel(PubAck::new(id))).unwrap();
        match c.recv().unwrap() {
            Packet::PubComp(a) => assert_eq!(a.packet_id, id),
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
    }
    let st = wait_for(&b, |st| st.received == 2 * 103);
    assert_eq!(st.distinct, 200);
    assert_eq!(st.duplicates, 2);
    assert_eq!(st.unsequenced, 4);
    assert_eq!(st.received_bytes, 2 * (101 * 50 + 12 + 2));
    assert!(st.first_received.unwrap() <= st.last_received.unwrap());
    assert_eq!(st.sent, 0, "publishers subscribe to nothing");
    assert_eq!(st.errors, 0, "{:?}", b.last_error());
}
