"""A hostile MQTT 5 "broker" for the end-to-end tests: it accepts a client's connection, answers
CONNECT with a valid CONNACK and SUBSCRIBE with a valid SUBACK, then sends bytes that break the
protocol, and records everything the client sends back, with times.

Encoding and decoding are done here by hand (a few bytes each) so that the test does not depend
on Sluice's own codec. One thread accepts, one thread serves each connection; nothing here is
shared with the code under test.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field

# Control packet types (MQTT 5.0 §2.1.2).
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)

MALFORMED_PACKET = 0x81
PROTOCOL_ERROR = 0x82
PACKET_TOO_LARGE = 0x95


# --- encoding ---------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + varint(len(body)) + body


def connack(session_present: bool = False, reason: int = 0) -> bytes:
    # Flags, reason code, properties length 0.
    return packet(CONNACK << 4, bytes([int(session_present), reason, 0]))


def suback(packet_id: int, codes: list[int]) -> bytes:
    return packet(SUBACK << 4, struct.pack(">H", packet_id) + b"\x00" + bytes(codes))


def publish(
    topic: bytes, payload: bytes, qos: int, packet_id: int = 1, flags: int | None = None
) -> bytes:
    """A PUBLISH; FLAGS overrides the low nibble of the first byte (for a QoS of 3, say)."""
    f = (qos << 1) if flags is None else flags
    body = string(topic) + (struct.pack(">H", packet_id) if qos or flags is not None else b"")
    return packet((PUBLISH << 4) | f, body + b"\x00" + payload)


# --- decoding ---------------------------------------------------------------------------------


@dataclass
class Packet:
    """A packet from the client: its type, the flags nibble, the body, when it was read."""

    type: int
    flags: int
    body: bytes
    at: float

    @property
    def reason_code(self) -> int:
        """A DISCONNECT's reason code (0 when the body is empty, [MQTT-3.14.2.1])."""
        assert self.type == DISCONNECT
        return self.body[0] if self.body else 0


class Closed(Exception):
    pass


def read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise Closed
        buf += chunk
    return bytes(buf)


def read_packet(sock: socket.socket) -> Packet:
    first = read_exact(sock, 1)[0]
    length, shift = 0, 0
    for _ in range(4):
        b = read_exact(sock, 1)[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    else:
        raise ValueError("client sent a remaining length over 4 bytes")
    return Packet(first >> 4, first & 0x0F, read_exact(sock, length), time.monotonic())


def read_varint(b: bytes, i: int) -> tuple[int, int]:
    n, shift = 0, 0
    while True:
        n |= (b[i] & 0x7F) << shift
        shift += 7
        i += 1
        if not b[i - 1] & 0x80:
            return n, i


def connect_client_id(p: Packet) -> tuple[int, str]:
    """(protocol level, client id) of a CONNECT."""
    b = p.body
    name_len = struct.unpack_from(">H", b, 0)[0]
    i = 2 + name_len
    level = b[i]
    i += 1 + 1 + 2  # level, flags, keep alive
    if level == 5:
        props, i = read_varint(b, i)
        i += props
    id_len = struct.unpack_from(">H", b, i)[0]
    return level, b[i + 2 : i + 2 + id_len].decode()


def subscribe_request(p: Packet) -> tuple[int, list[str]]:
    """(packet id, filters) of a 5.0 SUBSCRIBE."""
    b = p.body
    packet_id = struct.unpack_from(">H", b, 0)[0]
    props, i = read_varint(b, 2)
    i += props
    filters = []
    while i < len(b):
        n = struct.unpack_from(">H", b, i)[0]
        filters.append(b[i + 2 : i + 2 + n].decode())
        i += 2 + n + 1
    return packet_id, filters


# --- the server -------------------------------------------------------------------------------


@dataclass
class Connection:
    """What happened on one accepted connection."""

    accepted_at: float
    client_id: str = ""
    protocol_level: int = 0
    filters: list[str] = field(default_factory=list)
    hostile_sent_at: float | None = None
    # Packets the client sent after the hostile bytes.
    after: list[Packet] = field(default_factory=list)
    # When the client closed its side (end of file), or None (still open / reset / timeout).
    closed_at: float | None = None
    error: str | None = None
    done: bool = False


@dataclass(frozen=True)
class Scenario:
    """What the broker sends after SUBACK (phase "subscribed") or instead of CONNACK (phase
    "connect"): CHUNKS in order, PAUSE seconds apart (each chunk its own TCP segment).

    With an EXPECTED_REASON the client must answer with DISCONNECT and that reason code. Without
    one the connection must stay up, and every message of FORWARDED (source topic, payload) must
    reach the destination and be acknowledged (PUBACK with the ids in ACKED).

    FILLER bytes (zeros) follow the chunks, sent from another thread in 64 KiB pieces until they
    are all sent, the client has answered, or the connection fails: the body of a frame whose
    header announced more than the client takes."""

    name: str
    chunks: tuple[bytes, ...]
    expected_reason: int | None
    phase: str = "subscribed"
    pause: float = 0.0
    forwarded: tuple[tuple[str, bytes], ...] = ()
    acked: tuple[int, ...] = ()
    filler: int = 0


RECEIVE_MAXIMUM = 5
SPLIT_PAYLOAD = bytes(range(256)) * 2
SPLIT_PUBLISH = publish(b"split/topic", SPLIT_PAYLOAD, qos=1, packet_id=7)
OVERRUN = tuple((f"t/rm{i}", f"overrun {i}".encode()) for i in range(1, RECEIVE_MAXIMUM + 2))
# A QoS 1 PUBLISH whose fixed header announces a frame of 256 MiB (the most MQTT can express),
# far over the data plane's maximum packet size: its start, then the rest of it as filler.
HUGE_FRAME = 256 << 20
HUGE_START = (
    bytes([(PUBLISH << 4) | 0b0010])
    + varint(HUGE_FRAME - 5)
    + string(b"t/huge")
    + struct.pack(">H", 1)
    + b"\x00"
)

SCENARIOS = [
    # [MQTT-3.3.1-4] A PUBLISH must not have both QoS bits set: Malformed Packet.
    Scenario("publish_qos3", (publish(b"t/x", b"x", qos=1, flags=0b0110),), MALFORMED_PACKET),
    # Remaining Length in five bytes (at most four are allowed, §1.5.5): Malformed Packet.
    Scenario("remaining_length_5_bytes", (b"\x30\xff\xff\xff\xff\x7f",), MALFORMED_PACKET),
    # [MQTT-1.5.4-1] A topic that is not UTF-8: Malformed Packet.
    Scenario("invalid_utf8_topic", (publish(b"t/\xff\xfe", b"x", qos=1),), MALFORMED_PACKET),
    # [MQTT-3.2.0-2] A second CONNACK: Protocol Error.
    Scenario("second_connack", (connack(),), PROTOCOL_ERROR),
    # [MQTT-3.2.0-1] The first packet from the server is not CONNACK: Protocol Error.
    Scenario("suback_before_connack", (suback(1, [1]),), PROTOCOL_ERROR, phase="connect"),
    # A PUBLISH header announcing 256 MiB, and its body streamed after it: the client must refuse
    # it from the fixed header with 0x95 Packet too large, without buffering the body.
    Scenario(
        "publish_256mib",
        (HUGE_START,),
        PACKET_TOO_LARGE,
        filler=HUGE_FRAME - len(HUGE_START),
    ),
    # Not hostile, only slow: one valid PUBLISH in three segments, split inside its Remaining
    # Length and inside its payload. The client must put it back together and forward it.
    Scenario(
        "publish_split_across_reads",
        (SPLIT_PUBLISH[:2], SPLIT_PUBLISH[2:200], SPLIT_PUBLISH[200:]),
        None,
        pause=0.3,
        forwarded=(("split/topic", SPLIT_PAYLOAD),),
        acked=(7,),
    ),
    # One more unacknowledged QoS 1 PUBLISH than the client's Receive Maximum (the endpoint's
    # maxInflightMessages), in one segment. MQTT 5 lets the client disconnect with 0x93
    # [MQTT-3.3.4-9]; Sluice takes them and counts (mosquitto 2.0.11 overruns under load, and a
    # disconnect would only make it send the whole window again), so all must be forwarded.
    Scenario(
        "receive_maximum_overrun",
        (
            b"".join(
                publish(t.encode(), p, qos=1, packet_id=i) for i, (t, p) in enumerate(OVERRUN, 1)
            ),
        ),
        None,
        forwarded=OVERRUN,
        acked=tuple(range(1, len(OVERRUN) + 1)),
    ),
]


class HostileBroker:
    """Listens on 127.0.0.1 (a free port); serves every connection with SCENARIO."""

    def __init__(self, scenario: Scenario, read_timeout: float = 10.0) -> None:
        self.scenario = scenario
        self.read_timeout = read_timeout
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.connections: list[Connection] = []
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []
        self.open: list[socket.socket] = []
        self.accepter = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            conn = Connection(accepted_at=time.monotonic())
            with self.lock:
                self.connections.append(conn)
                self.open.append(s)
            t = threading.Thread(target=self._serve, args=(s, conn), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, s: socket.socket, conn: Connection) -> None:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(self.read_timeout)
        try:
            p = read_packet(s)
            if p.type != CONNECT:
                conn.error = f"first packet type {p.type}, not CONNECT"
                return
            conn.protocol_level, conn.client_id = connect_client_id(p)
            if self.scenario.phase == "subscribed":
                s.sendall(connack())
                while True:
                    p = read_packet(s)
                    if p.type == SUBSCRIBE:
                        break
                    if p.type == PINGREQ:
                        s.sendall(packet(PINGRESP << 4, b""))
                packet_id, conn.filters = subscribe_request(p)
                s.sendall(suback(packet_id, [1] * len(conn.filters)))
            conn.hostile_sent_at = time.monotonic()
            for i, chunk in enumerate(self.scenario.chunks):
                if i:
                    time.sleep(self.scenario.pause)
                s.sendall(chunk)
            if self.scenario.filler:
                threading.Thread(target=self._fill, args=(s, conn), daemon=True).start()
            # From here on, wait for the client as long as it takes (close() ends the wait).
            s.settimeout(None)
            while True:
                conn.after.append(read_packet(s))
        except Closed:
            conn.closed_at = time.monotonic()
        except (OSError, ValueError) as e:
            conn.error = f"{type(e).__name__}: {e}"
        finally:
            conn.done = True
            s.close()

    def _fill(self, s: socket.socket, conn: Connection) -> None:
        """Sends the scenario's filler until it is all sent, the client answered, or the socket
        fails (the client closed it)."""
        piece = bytes(64 << 10)
        left = self.scenario.filler
        try:
            while left > 0 and not conn.after and not self.stopped.is_set():
                n = min(left, len(piece))
                s.sendall(piece[:n])
                left -= n
        except OSError:
            pass

    def snapshot(self) -> list[Connection]:
        with self.lock:
            return list(self.connections)

    def close(self) -> None:
        self.stopped.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.accepter.join(timeout=5)
        for t in self.threads:
            t.join(timeout=5)
