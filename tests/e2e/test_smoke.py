"""Smoke test of the test infrastructure: each broker that the scripts start carries one message
from an independent client back to an independent client.

mosquitto: paho-mqtt, through each of its four listeners (plain, TLS, mutual TLS,
username/password), MQTT 5 with a user property checked on receipt, and MQTT 3.1.1 once.
tansu: confluent-kafka (topic created with the admin API, one message produced and consumed
back), and kcat as a second client in both directions.
Every wait is a poll with a bounded timeout; nothing sleeps a fixed time.
"""

from __future__ import annotations

import queue
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import paho.mqtt.client as mqtt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from brokers import Broker

MQTT_TIMEOUT_S = 10
KAFKA_TIMEOUT_S = 30

# --- MQTT -------------------------------------------------------------------------------------


class Session:
    """A paho client on its network thread, whose callbacks feed queues the test waits on."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.events: queue.Queue[tuple[str, object]] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        client.on_connect = lambda _c, _u, _f, rc, _p: self.events.put(("connack", rc))
        client.on_disconnect = lambda _c, _u, _f, rc, _p: self.events.put(("disconnect", rc))
        client.on_subscribe = lambda _c, _u, mid, rcs, _p: self.events.put(("suback", (mid, rcs)))
        client.on_message = lambda _c, _u, msg: self.messages.put(msg)

    def next_event(self) -> tuple[str, object]:
        try:
            return self.events.get(timeout=MQTT_TIMEOUT_S)
        except queue.Empty:
            pytest.fail(f"no MQTT event within {MQTT_TIMEOUT_S} s")

    def expect(self, kind: str) -> object:
        event, value = self.next_event()
        assert event == kind, f"expected {kind}, got {event}: {value}"
        return value


def new_client(broker: Broker, listener: str, protocol: int, **tls: str) -> tuple[mqtt.Client, int]:
    """A client set up for LISTENER (plain, tls, mtls, auth) and the port to connect to."""
    env = broker.env
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"smoke-{listener}-{uuid.uuid4().hex[:8]}",
        protocol=protocol,
    )
    if listener == "plain":
        return client, broker.port("MQTT_PORT")
    if listener == "auth":
        client.username_pw_set(env["MQTT_USER"], tls.get("password", env["MQTT_PASSWORD"]))
        return client, broker.port("MQTT_AUTH_PORT")
    if listener == "tls":
        client.tls_set(ca_certs=env["CA_FILE"])
        return client, broker.port("MQTT_TLS_PORT")
    if listener == "mtls":
        client.tls_set(
            ca_certs=env["CA_FILE"],
            certfile=tls.get("certfile", env["CLIENT_CERT"]),
            keyfile=tls.get("keyfile", env["CLIENT_KEY"]),
        )
        return client, broker.port("MQTT_MTLS_PORT")
    raise ValueError(listener)


@contextmanager
def session(client: mqtt.Client, port: int) -> Iterator[Session]:
    s = Session(client)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        yield s
    finally:
        client.disconnect()
        client.loop_stop()


def roundtrip(broker: Broker, listener: str, protocol: int) -> None:
    """Subscribe, publish one QoS 1 message to ourselves, and check what comes back."""
    client, port = new_client(broker, listener, protocol)
    topic = f"sluice/smoke/{listener}"
    payload = f"hello over {listener}".encode()
    with session(client, port) as s:
        rc = s.expect("connack")
        assert not rc.is_failure, f"CONNACK: {rc}"

        client.subscribe(topic, qos=1)
        _mid, granted = s.expect("suback")
        assert [int(rc.value) for rc in granted] == [1]

        props = None
        if protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("origin", "sluice-smoke"), ("listener", listener)]
        info = client.publish(topic, payload, qos=1, properties=props)
        info.wait_for_publish(timeout=MQTT_TIMEOUT_S)
        assert info.is_published(), "no PUBACK"

        try:
            msg = s.messages.get(timeout=MQTT_TIMEOUT_S)
        except queue.Empty:
            pytest.fail(f"message not delivered back within {MQTT_TIMEOUT_S} s")
        assert (msg.topic, msg.payload, msg.qos) == (topic, payload, 1)
        if protocol == mqtt.MQTTv5:
            assert msg.properties.UserProperty == [
                ("origin", "sluice-smoke"),
                ("listener", listener),
            ]


@pytest.mark.parametrize("listener", ["plain", "tls", "mtls", "auth"])
def test_mqtt5_roundtrip(mosquitto: Broker, listener: str) -> None:
    roundtrip(mosquitto, listener, mqtt.MQTTv5)


def test_mqtt311_roundtrip(mosquitto: Broker) -> None:
    roundtrip(mosquitto, "plain", mqtt.MQTTv311)


def test_auth_listener_rejects_a_wrong_password(mosquitto: Broker) -> None:
    client, port = new_client(mosquitto, "auth", mqtt.MQTTv5, password="not-the-password")
    with session(client, port) as s:
        rc = s.expect("connack")
        assert rc.is_failure and rc.getName() in ("Bad user name or password", "Not authorized")


def test_mtls_listener_rejects_a_client_without_certificate(mosquitto: Broker) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=mosquitto.env["CA_FILE"])
    s = Session(client)
    try:
        # With TLS 1.3 the server's refusal may arrive only after the client's side of the
        # handshake is done, so it shows either here or as a disconnect before any CONNACK.
        client.connect("127.0.0.1", mosquitto.port("MQTT_MTLS_PORT"))
    except (ssl.SSLError, OSError):
        return
    client.loop_start()
    try:
        event, value = s.next_event()
        assert event == "disconnect" or value.is_failure, f"accepted without a certificate: {value}"
    finally:
        client.loop_stop()


# --- Kafka ------------------------------------------------------------------------------------


def create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=1)], request_timeout=KAFKA_TIMEOUT_S
    )
    futures[topic].result(timeout=KAFKA_TIMEOUT_S)


def produce(
    bootstrap: str, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    reports: list[KafkaError | None] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(
        topic,
        value=value,
        key=key,
        headers=headers,
        on_delivery=lambda err, _msg: reports.append(err),
    )
    assert producer.flush(KAFKA_TIMEOUT_S) == 0, f"not delivered within {KAFKA_TIMEOUT_S} s"
    assert reports == [None], f"delivery report: {reports}"


def consume(
    bootstrap: str, topic: str, count: int
) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """Read COUNT messages from the start of partition 0: (key, value, headers) each."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"smoke-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = []
    deadline = time.monotonic() + KAFKA_TIMEOUT_S
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(timeout=0.5)
            if msg is None:
                continue
            assert msg.error() is None, f"consumer: {msg.error()}"
            got.append((msg.key(), msg.value(), msg.headers() or []))
    finally:
        consumer.close()
    assert len(got) == count, f"read {len(got)} of {count} messages within {KAFKA_TIMEOUT_S} s"
    return got


def test_kafka_roundtrip_with_confluent_kafka(tansu: Broker) -> None:
    bootstrap = tansu.env["KAFKA_BOOTSTRAP"]
    create_topic(bootstrap, "smoke")
    produce(bootstrap, "smoke", b"k1", b"hello kafka", [("origin", b"sluice-smoke")])
    assert consume(bootstrap, "smoke", 1) == [
        (b"k1", b"hello kafka", [("origin", b"sluice-smoke")])
    ]


def test_kafka_with_kcat_as_second_client(tansu: Broker, kcat: Callable[..., str]) -> None:
    bootstrap = tansu.env["KAFKA_BOOTSTRAP"]
    create_topic(bootstrap, "smoke")

    # confluent-kafka writes, kcat reads.
    produce(bootstrap, "smoke", b"k1", b"from confluent-kafka", [])
    out = kcat(
        "-C",
        "-b",
        bootstrap,
        "-t",
        "smoke",
        "-p",
        "0",
        "-o",
        "beginning",
        "-c",
        "1",
        "-e",
        "-f",
        "%k=%s\n",
    )
    assert out == "k1=from confluent-kafka\n"

    # kcat writes, confluent-kafka reads both.
    kcat("-P", "-b", bootstrap, "-t", "smoke", "-p", "0", "-K", "=", stdin="k2=from kcat\n")
    got = [(key, value) for key, value, _ in consume(bootstrap, "smoke", 2)]
    assert got == [(b"k1", b"from confluent-kafka"), (b"k2", b"from kcat")]


# --- Parquet readers --------------------------------------------------------------------------


def test_parquet_readers_agree(tmp_path: Path) -> None:
    """The two Parquet readers that later tests use to check what Sluice wrote are installed."""
    path = tmp_path / "smoke.parquet"
    pq.write_table(pa.table({"topic": ["a/b", "a/c"], "payload": [b"\x00\x01", b"hello"]}), path)
    rows = duckdb.sql(
        f"SELECT topic, payload FROM read_parquet('{path}') ORDER BY topic"
    ).fetchall()
    assert rows == [("a/b", b"\x00\x01"), ("a/c", b"hello")]
