"""Kafka -> MQTT through the data plane: records produced into tansu with an independent client
(confluent-kafka, and kcat for header names no Python client writes), read at mosquitto with
paho-mqtt. Every record arrives with its key, timestamp and headers as AIO maps them; what MQTT
cannot carry is left out and counted; MQTT -> Kafka -> MQTT keeps the MQTT 5 properties.
The delivery tests (consumer group, kill -9, destination outage) are in
test_dataplane_kafka_source_delivery.py.
"""

from __future__ import annotations

from typing import Any, Callable

from confluent_kafka import Producer

from dataplane import (
    API,
    Harness,
    dataflow,
    kafka_create_topics,
    kafka_endpoint,
    key,
    mqtt_endpoint,
    profile,
    publish_props,
    wait_until,
    write_manifests,
)

PARTITIONS = 4


def kafka_dataflow(name: str, source: str, topics: list[str], destination: str, topic: str) -> dict:
    """A Kafka -> MQTT dataflow (the Kafka endpoint needs consumerGroupId)."""
    return dataflow(name, source, topics, destination, topic)


def produce(bootstrap: str, records: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Produce RECORDS (each: topic, value, and optional key, headers, timestamp) and return
    each one's (partition, offset), in order."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
                  "log_level": 0})
    where: list[tuple[int, int] | None] = [None] * len(records)
    errors: list[str] = []

    def report(i: int) -> Callable[[Any, Any], None]:
        def cb(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                where[i] = (msg.partition(), msg.offset())
        return cb

    for i, r in enumerate(records):
        while True:
            try:
                p.produce(r["topic"], r["value"], key=r.get("key"), headers=r.get("headers"),
                          timestamp=r.get("timestamp", 0), on_delivery=report(i))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(60)
    assert left == 0 and not errors, f"{left} records not delivered; errors: {errors[:5]}"
    assert all(w is not None for w in where)
    return [w for w in where if w is not None]


def start(sluice: Harness, local: str, docs: list[dict], cores: int = 2,
          extra: tuple[str, ...] = ()) -> Any:
    config = sluice.tmp / "config"
    write_manifests(config, docs)
    dp = sluice.dataplane(cores=cores, extra=extra)
    sluice.agent(config, dp, local)
    dp.wait_ready(timeout=60)
    return dp


def test_records_arrive_with_key_timestamp_and_headers(
    sluice: Harness, tansu: Any, kcat: Callable[..., str]
) -> None:
    bootstrap = tansu.env["KAFKA_BOOTSTRAP"]
    kafka_create_topics({"bootstrap.servers": bootstrap}, ["telemetry"], PARTITIONS)
    dst = sluice.mosquitto("dst")
    sub = sluice.client(dst.port, "sub")
    sub.subscribe(["from-kafka/#"])
    n = 300
    correlation = bytes(range(256))[:40] + b"\x00\xff"
    records = [
        {
            "topic": "telemetry",
            "value": f'{{"seq":{i}}}'.encode(),
            "key": f"dev-{i % 7}".encode(),
            "timestamp": 1_700_000_000_000 + i,
            "headers": [
                ("seq", str(i).encode()),
                ("tag", b"a"),
                ("tag", b"b"),
                ("Content Type", b"application/json"),
                ("Correlation Data", correlation),
                ("Response Topic", b"replies/x"),
                ("Payload Format Indicator", b"1"),
                ("Message Expiry Interval", b"3600"),
                ("binary", b"\xc3\x28"),
            ],
        }
        for i in range(n)
    ]
    produce(bootstrap, records)
    # A header name that is not UTF-8 (no Python client writes one; kcat takes argv bytes).
    kcat("-P", "-b", bootstrap, "-t", "telemetry", "-p", "0", "-k", "odd",
         "-H", "\udcffname=v", "-H", "fine=1", stdin='{"seq":-1}\n')
    docs = [
        kafka_endpoint("kafka", bootstrap, consumerGroupId="sluice-e2e"),
        mqtt_endpoint("dst", dst.host),
        profile(),
        kafka_dataflow("from-kafka", "kafka", ["telemetry"], "dst", "from-kafka/${inputTopic}"),
    ]
    dp = start(sluice, dst.host, docs)
    sub.wait_for(f"{n + 1} messages", lambda m: len(m) >= n + 1, timeout=60)
    got = sub.snapshot()
    seqs = sorted(int(m.payload.decode().split(":")[1].rstrip("}")) for m in got)
    assert seqs == list(range(-1, n)), "every record once"
    by_seq = {int(m.payload.decode().split(":")[1].rstrip("}")): m for m in got}
    for i in (0, 1, n - 1):
        m = by_seq[i]
        assert m.topic == "from-kafka/telemetry"
        assert m.qos == 1 and not m.retain
        p = m.properties
        users = p.get("UserProperty", [])
        assert users[0] == ("Key", f"dev-{i % 7}"), users
        assert users[1] == ("Timestamp", str(1_700_000_000_000 + i)), users
        assert [v for k, v in users if k == "tag"] == ["a", "b"], "repeated headers kept, in order"
        assert ("seq", str(i)) in users
        assert not any(k == "binary" for k, _ in users), "a header that is not UTF-8 is left out"
        assert p.get("ContentType") == "application/json"
        assert p.get("CorrelationData") == correlation, "binary, unchanged"
        assert p.get("ResponseTopic") == "replies/x"
        assert p.get("PayloadFormatIndicator") == 1
        assert 3590 <= p.get("MessageExpiryInterval", 0) <= 3600
    odd = by_seq[-1].properties.get("UserProperty", [])
    assert ("fine", "1") in odd and len(odd) == 3, odd  # Key, Timestamp, fine

    m = dp.metrics()
    flow = key("from-kafka")
    assert m.value("sluice_messages_forwarded_total", dataflow=flow) == n + 1
    # One non-UTF-8 value per produced record, and the kcat record's name.
    assert m.value("sluice_kafka_headers_dropped_total", dataflow=flow) == n + 1
    assert m.value("sluice_session_connected", dataflow=flow, side="source") == 2


def test_mqtt_to_kafka_to_mqtt_keeps_the_mqtt5_properties(sluice: Harness, tansu: Any) -> None:
    bootstrap = tansu.env["KAFKA_BOOTSTRAP"]
    kafka_create_topics({"bootstrap.servers": bootstrap}, ["round-trip"], PARTITIONS)
    local = sluice.mosquitto("local")
    sub = sluice.client(local.port, "sub")
    sub.subscribe(["back/#"])
    docs = [
        mqtt_endpoint("local", local.host),
        kafka_endpoint("kafka", bootstrap, consumerGroupId="rt"),
        profile(),
        dataflow("out", "local", ["out/#"], "kafka", "round-trip"),
        kafka_dataflow("back", "kafka", ["round-trip"], "local", "back/${inputTopic}"),
    ]
    start(sluice, local.host, docs)
    pub = sluice.client(local.port, "pub")
    correlation = b"\x00\x01binary\xff"
    n = 200
    for i in range(n):
        props = publish_props(
            UserProperty=[("seq", str(i)), ("tag", "a"), ("tag", "b")],
            ContentType="application/json",
            ResponseTopic="replies/x",
            CorrelationData=correlation,
            PayloadFormatIndicator=1,
            MessageExpiryInterval=3600,
        )
        pub.publish(f"out/dev-{i % 3}", f'{{"seq":{i}}}', properties=props).wait_for_publish(5)
    sub.wait_for(f"{n} messages back", lambda m: len(m) >= n, timeout=60)
    got = sub.snapshot()
    assert sorted(int(m.payload.decode().split(":")[1].rstrip("}")) for m in got) == list(range(n))
    for m in got[:5]:
        p = m.properties
        assert m.topic == "back/round-trip"
        assert p.get("ContentType") == "application/json"
        assert p.get("CorrelationData") == correlation
        assert p.get("ResponseTopic") == "replies/x"
        assert p.get("PayloadFormatIndicator") == 1
        assert 3580 <= p.get("MessageExpiryInterval", 0) <= 3600
        users = p.get("UserProperty", [])
        assert users[0][0] == "Timestamp" and not any(k == "Key" for k, _ in users), (
            "the default partitionStrategy writes no key; librdkafka stamps the time", users)
        assert [v for k, v in users if k == "tag"] == ["a", "b"]
        assert not any(k in ("Content Type", "Correlation Data") for k, _ in users), (
            "the destination's property headers are properties again, not user properties")


def test_cloud_events_headers_become_attributes_when_the_destination_asks(
    sluice: Harness, tansu: Any
) -> None:
    bootstrap = tansu.env["KAFKA_BOOTSTRAP"]
    kafka_create_topics({"bootstrap.servers": bootstrap}, ["events"], 1)
    dst = sluice.mosquitto("dst")
    sub = sluice.client(dst.port, "sub")
    sub.subscribe(["ce/#"])
    produce(bootstrap, [{
        "topic": "events",
        "value": b'{"t":21.5}',
        "headers": [
            ("ce_specversion", b"1.0"), ("ce_type", b"ms.aio.telemetry"),
            ("ce_source", b"aio://oven"), ("ce_id", b"A234-1234"),
            ("content-type", b"application/json"),
        ],
    }])
    docs = [
        kafka_endpoint("kafka", bootstrap, consumerGroupId="ce"),
        mqtt_endpoint("dst", dst.host, cloudEventAttributes="Propagate"),
        profile(),
        kafka_dataflow("ce", "kafka", ["events"], "dst", "ce/${inputTopic}"),
    ]
    start(sluice, dst.host, docs)
    sub.wait_for("the event", lambda m: len(m) >= 1, timeout=60)
    (m,) = sub.snapshot()
    users = dict(m.properties.get("UserProperty", []))
    assert users["specversion"] == "1.0" and users["type"] == "ms.aio.telemetry"
    assert users["source"] == "aio://oven" and users["id"] == "A234-1234"
    assert m.properties.get("ContentType") == "application/json"
    assert not any(k.startswith("ce_") for k in users)


def test_a_record_too_large_for_the_destination_is_dropped_and_passed(
    sluice: Harness, tansu: Any
) -> None:
    bootstrap = tansu.env["KAFKA_BOOTSTRAP"]
    kafka_create_topics({"bootstrap.servers": bootstrap}, ["sizes"], 1)
    # mosquitto refuses packets over 10 KiB: the data plane learns it from CONNACK.
    dst = sluice.mosquitto("dst", extra="max_packet_size 10240\n")
    sub = sluice.client(dst.port, "sub")
    sub.subscribe(["sizes/#"])
    produce(bootstrap, [
        {"topic": "sizes", "value": b"small-1"},
        {"topic": "sizes", "value": b"x" * 20_000},
        {"topic": "sizes", "value": b"small-2"},
    ])
    docs = [
        kafka_endpoint("kafka", bootstrap, consumerGroupId="sizes"),
        mqtt_endpoint("dst", dst.host),
        profile(),
        kafka_dataflow("sizes", "kafka", ["sizes"], "dst", "sizes/out"),
    ]
    dp = start(sluice, dst.host, docs)
    sub.wait_for("the two small records", lambda m: len(m) >= 2, timeout=60)
    got = sub.snapshot()
    assert [m.payload for m in got] == [b"small-1", b"small-2"]
    flow = key("sizes")
    wait_until("the drop counted", lambda: (dp.metrics().value(
        "sluice_messages_dropped_total", dataflow=flow, reason="destination_encode") or 0) == 1)
    # Its offset passes: the group's committed offset is past all three.
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sizes"})
    try:
        def committed() -> int:
            (tp,) = c.committed([TopicPartition("sizes", 0)], timeout=10)
            return tp.offset
        wait_until("offset 3 committed", lambda: committed() == 3, timeout=30)
    finally:
        c.close()
