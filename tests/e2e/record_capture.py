#!/usr/bin/env python3
"""Record the sample captures in samples/: real MQTT sessions between paho-mqtt and mosquitto.

Usage: .venv/bin/python tests/e2e/record_capture.py [OUT_DIR]   (default: samples/)

It starts a mosquitto with scripts/mosquitto-start, puts a small recording TCP proxy between it
and a paho-mqtt client, runs one scripted session per protocol version, and writes each
direction's raw bytes, exactly as they crossed the wire:
    paho-v5.to-server.bin    paho-v5.to-client.bin      (MQTT 5.0)
    paho-v311.to-server.bin  paho-v311.to-client.bin    (MQTT 3.1.1)
The session: CONNECT (with a will and, in 5.0, properties), a retained PUBLISH, SUBSCRIBE to two
filters, PUBLISH at QoS 0, 1 and 2 with (in 5.0) user properties, content type, correlation
data, response topic and a topic alias, each delivered back through the subscription (so both
sides run the PUBACK and PUBREC/PUBREL/PUBCOMP flows), a PINGREQ after an idle keepalive,
UNSUBSCRIBE, the retained message cleared, DISCONNECT. Every wait is bounded.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

import brokers

TIMEOUT_S = 10
KEEPALIVE_S = 2
PACKET_NAMES = [
    "reserved",
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
    "AUTH",
]


class Direction:
    """The bytes that went one way, and the packet types seen in them so far."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.packets: list[str] = []
        self._next = 0  # offset of the first byte of the next frame

    def feed(self, chunk: bytes) -> None:
        self.data += chunk
        while True:
            # Fixed header: type and flags, then the remaining length (1 to 4 bytes, 7 bits each).
            pos, length, shift = self._next + 1, 0, 0
            while pos < len(self.data):
                byte = self.data[pos]
                length |= (byte & 0x7F) << shift
                shift += 7
                pos += 1
                if not byte & 0x80:
                    break
            else:
                return
            if pos + length > len(self.data):
                return
            self.packets.append(PACKET_NAMES[self.data[self._next] >> 4])
            self._next = pos + length


class RecordingProxy:
    """Accepts one connection, relays it to the broker, and keeps both byte streams."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.to_server = Direction()
        self.to_client = Direction()
        self.changed = threading.Condition()
        self.pumps: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=TIMEOUT_S)
        server.settimeout(None)
        for src, dst, direction in (
            (client, server, self.to_server),
            (server, client, self.to_client),
        ):
            pump = threading.Thread(target=self._pump, args=(src, dst, direction), daemon=True)
            pump.start()
            self.pumps.append(pump)

    def _pump(self, src: socket.socket, dst: socket.socket, direction: Direction) -> None:
        while chunk := src.recv(65536):
            with self.changed:
                direction.feed(chunk)
                self.changed.notify_all()
            dst.sendall(chunk)
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def wait_for(self, what: str, predicate: Callable[[], bool]) -> None:
        with self.changed:
            if not self.changed.wait_for(predicate, timeout=TIMEOUT_S):
                raise TimeoutError(
                    f"timed out waiting for {what}; to-server: {self.to_server.packets}; "
                    f"to-client: {self.to_client.packets}"
                )

    def note(self, record: Callable[[], object]) -> None:
        """Run RECORD (a client callback's bookkeeping) and wake whoever waits in wait_for."""
        with self.changed:
            record()
            self.changed.notify_all()

    def count(self, direction: Direction, packet: str) -> int:
        return direction.packets.count(packet)

    def close(self) -> None:
        self.acceptor.join(TIMEOUT_S)
        for pump in self.pumps:
            pump.join(TIMEOUT_S)
            if pump.is_alive():
                raise TimeoutError("the connection did not close after DISCONNECT")
        self.listener.close()


def props(packet_type: int, **values: object) -> Properties:
    p = Properties(packet_type)
    for name, value in values.items():
        setattr(p, name, value)
    return p


def run_session(proxy: RecordingProxy, protocol: int) -> None:
    v5 = protocol == mqtt.MQTTv5
    name = "v5" if v5 else "v311"
    received: list[mqtt.MQTTMessage] = []
    acks: list[str] = []

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"sluice-capture-{name}",
        protocol=protocol,
        **({} if v5 else {"clean_session": True}),
    )
    client.on_connect = lambda *_: proxy.note(lambda: acks.append("connack"))
    client.on_subscribe = lambda *_: proxy.note(lambda: acks.append("suback"))
    client.on_unsubscribe = lambda *_: proxy.note(lambda: acks.append("unsuback"))
    client.on_message = lambda _c, _u, msg: proxy.note(lambda: received.append(msg))
    client.username_pw_set("demo", "demo-password")
    client.will_set(
        "sluice/demo/will",
        b"capture client went away",
        qos=1,
        properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=5, ContentType="text/plain")
        if v5
        else None,
    )

    connect_props = None
    if v5:
        connect_props = props(
            PacketTypes.CONNECT,
            SessionExpiryInterval=0,
            ReceiveMaximum=20,
            MaximumPacketSize=1 << 20,
            TopicAliasMaximum=5,
            RequestProblemInformation=1,
            UserProperty=[("app", "sluice-demo")],
        )
    client.connect(
        "127.0.0.1",
        proxy.port,
        keepalive=KEEPALIVE_S,
        **({"clean_start": True, "properties": connect_props} if v5 else {}),
    )
    client.loop_start()
    try:
        proxy.wait_for("CONNACK", lambda: "connack" in acks)

        # A retained message, so the subscription below starts with a PUBLISH that has RETAIN.
        client.publish(
            "sluice/demo/retained", b"retained state", qos=1, retain=True
        ).wait_for_publish(TIMEOUT_S)

        if v5:
            client.subscribe(
                [
                    ("sluice/demo/#", SubscribeOptions(qos=2, retainAsPublished=True)),
                    ("sluice/other/+", SubscribeOptions(qos=1, noLocal=True)),
                ],
                properties=props(
                    PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7, UserProperty=[("sub", "demo")]
                ),
            )
        else:
            client.subscribe([("sluice/demo/#", 2), ("sluice/other/+", 1)])
        proxy.wait_for(
            "SUBACK and the retained message", lambda: "suback" in acks and len(received) == 1
        )

        # (topic, payload, QoS, 5.0 properties)
        messages = [
            (
                "sluice/demo/qos0",
                b"temperature=21.5",
                0,
                {
                    "PayloadFormatIndicator": 1,
                    "ContentType": "text/plain",
                    "UserProperty": [("unit", "celsius")],
                },
            ),
            (
                "sluice/demo/qos1",
                b'{"pressure": 1013}',
                1,
                {
                    "ContentType": "application/json",
                    "MessageExpiryInterval": 60,
                    "ResponseTopic": "sluice/demo/reply",
                    "CorrelationData": b"\x00\x01req-1",
                    "UserProperty": [("site", "a"), ("site", "b")],
                },
            ),
            (
                "sluice/demo/qos2",
                bytes(range(256)),
                2,
                {
                    "PayloadFormatIndicator": 0,
                    "UserProperty": [("kind", "binary"), ("seq", "3")],
                },
            ),
        ]
        if v5:
            # A topic alias: set along with the topic, then used alone with an empty topic name.
            messages.append(("sluice/demo/alias", b"first, with topic", 1, {"TopicAlias": 1}))
            messages.append(("", b"second, alias only", 1, {"TopicAlias": 1}))
        sent = [
            client.publish(
                topic,
                payload,
                qos=qos,
                properties=props(PacketTypes.PUBLISH, **properties) if v5 else None,
            )
            for topic, payload, qos, properties in messages
        ]
        for info in sent:
            info.wait_for_publish(TIMEOUT_S)
        expected = 1 + len(sent)
        proxy.wait_for(f"{expected} messages back", lambda: len(received) == expected)
        # The QoS 2 flow towards the client ends with our PUBCOMP: wait until it is on the wire.
        proxy.wait_for(
            "PUBCOMP to the server", lambda: proxy.count(proxy.to_server, "PUBCOMP") >= 1
        )

        # Idle for a keepalive period: paho sends PINGREQ.
        proxy.wait_for("PINGRESP", lambda: proxy.count(proxy.to_client, "PINGRESP") >= 1)

        client.unsubscribe(
            ["sluice/demo/#", "sluice/other/+"],
            properties=props(PacketTypes.UNSUBSCRIBE, UserProperty=[("sub", "demo")])
            if v5
            else None,
        )
        proxy.wait_for("UNSUBACK", lambda: "unsuback" in acks)

        # Clear the retained message: an empty retained PUBLISH.
        client.publish("sluice/demo/retained", b"", qos=0, retain=True)
        proxy.wait_for(
            "the empty retained PUBLISH",
            lambda: proxy.count(proxy.to_server, "PUBLISH") >= len(sent) + 2,
        )

        if v5:
            client.disconnect(
                ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection"),
                props(PacketTypes.DISCONNECT, UserProperty=[("bye", "capture done")]),
            )
        else:
            client.disconnect()
        proxy.close()
    finally:
        client.loop_stop()

    got = [(m.topic, m.qos, m.retain) for m in received]
    if got[0] != ("sluice/demo/retained", 1, True):
        raise AssertionError(f"first message back should be the retained one: {got}")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else brokers.ROOT / "samples"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sluice-capture-") as tmp:
        broker = brokers.start("mosquitto", Path(tmp) / "mosquitto")
        try:
            for protocol, name in ((mqtt.MQTTv5, "v5"), (mqtt.MQTTv311, "v311")):
                proxy = RecordingProxy(broker.port("MQTT_PORT"))
                started = time.monotonic()
                run_session(proxy, protocol)
                for direction, stream in (
                    ("to-server", proxy.to_server),
                    ("to-client", proxy.to_client),
                ):
                    path = out / f"paho-{name}.{direction}.bin"
                    path.write_bytes(stream.data)
                    print(
                        f"{path}: {len(stream.data)} bytes, {len(stream.packets)} packets: "
                        f"{' '.join(stream.packets)}"
                    )
                print(f"paho-{name}: recorded in {time.monotonic() - started:.1f} s")
        except BaseException:
            sys.stderr.write(broker.log.read_text(errors="replace"))
            raise
        finally:
            brokers.stop(broker)


if __name__ == "__main__":
    main()
