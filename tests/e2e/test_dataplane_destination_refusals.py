"""A destination broker that refuses messages (a small fake MQTT 5 server: the point is the
PUBACK reason codes it sends, which mosquitto never does): a refusal that may pass (0x97 Quota
exceeded) makes the data plane offer the same message again after a wait, and the source is
acknowledged only once the destination took it; a final refusal (0x87 Not authorized) is
dropped, counted and acknowledged.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from dataplane import Harness, dataflow, key, mqtt_endpoint, profile, wait_until, write_manifests
from hostile_broker import (
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBLISH,
    Closed,
    connack,
    packet,
    read_packet,
)

QUOTA_EXCEEDED = 0x97
NOT_AUTHORIZED = 0x87


@dataclass
class Refusing:
    """Listens on 127.0.0.1; answers PUBLISH to `out/r/quota` with 0x97 the first time and
    success after, to `out/r/denied` always with 0x87, to anything else with success."""

    seen: list[tuple[float, str, int]] = field(default_factory=list)  # (when, topic, reason)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s: socket.socket) -> None:
        try:
            while True:
                p = read_packet(s)
                if p.type == CONNECT:
                    s.sendall(connack())
                elif p.type == PINGREQ:
                    s.sendall(packet(PINGRESP << 4, b""))
                elif p.type == DISCONNECT:
                    return
                elif p.type == PUBLISH:
                    n = struct.unpack(">H", p.body[:2])[0]
                    topic = p.body[2 : 2 + n].decode()
                    packet_id = struct.unpack(">H", p.body[2 + n : 4 + n])[0]
                    with self.lock:
                        tries = sum(1 for _, t, _ in self.seen if t == topic)
                        if topic == "out/r/denied":
                            reason = NOT_AUTHORIZED
                        elif topic == "out/r/quota" and tries == 0:
                            reason = QUOTA_EXCEEDED
                        else:
                            reason = 0
                        self.seen.append((time.monotonic(), topic, reason))
                    # PUBACK with a reason code and no properties (§3.4.2.1).
                    s.sendall(packet(PUBACK << 4, struct.pack(">HB", packet_id, reason) + b"\x00"))
        except (Closed, OSError):
            return
        finally:
            s.close()

    def attempts(self, topic: str) -> list[tuple[float, int]]:
        with self.lock:
            return [(at, reason) for at, t, reason in self.seen if t == topic]

    def close(self) -> None:
        self.sock.close()


def test_quota_exceeded_is_retried_and_not_authorized_is_dropped(sluice: Harness) -> None:
    src = sluice.mosquitto("src")
    dst = Refusing()
    sluice.closers.append(dst.close)
    docs = [
        mqtt_endpoint("src", src.host),
        mqtt_endpoint("dst", f"127.0.0.1:{dst.port}"),
        profile(),
        dataflow("refusals", "src", ["r/#"], "dst", "out/${inputTopic}"),
    ]
    config = sluice.tmp / "config"
    write_manifests(config, docs)
    dp = sluice.dataplane(cores=1)
    sluice.agent(config, dp, src.host)
    dp.wait_ready(timeout=20)

    pub = sluice.client(src.port, "pub")
    for topic in ("r/quota", "r/denied"):
        pub.publish(topic, topic.encode())

    wait_until("the first, refused, attempt", lambda: dst.attempts("out/r/quota"), timeout=15)
    # Given back: the message waits in the data plane (its source PUBACK not sent yet).
    in_flight = dp.metrics().value("sluice_messages_in_flight", dataflow=key("refusals"))
    assert in_flight and in_flight >= 1, in_flight
    quota = wait_until(
        "the quota-refused message taken on a later attempt",
        lambda: (a := dst.attempts("out/r/quota")) and a[-1][1] == 0 and a,
        timeout=15,
    )
    assert [r for _, r in quota] == [QUOTA_EXCEEDED, 0], quota
    assert quota[1][0] - quota[0][0] >= 0.9, "offered again after a wait, not at once"
    wait_until(
        "nothing in flight once the destination took it",
        lambda: dp.metrics().value("sluice_messages_in_flight", dataflow=key("refusals")) == 0,
    )

    denied = dst.attempts("out/r/denied")
    assert [r for _, r in denied] == [NOT_AUTHORIZED], "a final refusal is not retried"
    m = dp.metrics()
    assert (
        m.value("sluice_messages_dropped_total", dataflow=key("refusals"), reason="destination_refused")
        == 1
    )
    assert m.value("sluice_messages_forwarded_total", dataflow=key("refusals")) == 1
    assert "the destination did not take a message" in dp.log_text()
