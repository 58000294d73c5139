"""Nothing acknowledged is lost when a process dies mid-stream (docs/architecture.md, principle 1).

100,000 QoS 1 messages (their sequence number is the payload) go from a source mosquitto through
`dataplane --cores 2` to a destination mosquitto, where an independent paho-mqtt subscriber
counts them; a publisher keeps publishing throughout.

(a) After about 30% have arrived, the data plane is killed with SIGKILL and started again with
    the same arguments; `config-agent run` reconnects to the new control socket and pushes the
    snapshot again by itself. Every message must arrive (duplicates are allowed and reported).
(b) After about 30%, the SOURCE broker is stopped (SIGTERM: mosquitto writes its persistence file
    on the way out; it promises nothing for what it acknowledged after its last save if it is
    SIGKILLed, so that would test mosquitto, not Sluice) and restarted on the same port with
    `persistence true`. Every message the source broker acknowledged to the publisher before the
    stop must arrive; the publisher then publishes again, on a new connection, whatever was not
    acknowledged, so in the end every message must arrive.

Both brokers run with `max_queued_messages 0` (no limit; mosquitto's default of 1000 drops QoS 1
messages for a slow or offline client). The publisher keeps at most WINDOW messages ahead of the
subscriber, so that it is still publishing when the process dies, and the source endpoint keeps
the default maxInflightMessages (100), which mosquitto 2.0.11 overruns under load (the data plane
tolerates that; see test_dataplane_hostile.py).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from dataplane import (
    Client,
    Failure,
    Harness,
    Mosquitto,
    dataflow,
    key,
    mqtt_endpoint,
    probe_until_flowing,
    profile,
    wait_until,
    write_manifests,
)

N = 100_000
WINDOW = 20_000
CUT_AT = int(N * 0.3)
CORES = 2
DONE_TIMEOUT_S = 180


class Counter:
    """Which sequence numbers arrived at the destination, and how often."""

    def __init__(self, n: int) -> None:
        self.seen = bytearray(n)
        self.distinct = 0
        self.duplicates = 0
        self.strays = 0
        self.lock = threading.Lock()

    def on_message(self, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == "out/probe":
            return
        try:
            seq = int(msg.payload)
        except ValueError:
            with self.lock:
                self.strays += 1
            return
        with self.lock:
            if self.seen[seq]:
                self.duplicates += 1
                self.seen[seq] = min(255, self.seen[seq] + 1)
            else:
                self.seen[seq] = 1
                self.distinct += 1

    def missing(self) -> list[int]:
        with self.lock:
            return [i for i, c in enumerate(self.seen) if not c]


class Publisher:
    """Publishes SEQS (QoS 1, payload = seq) on its own thread, at most WINDOW ahead of what
    arrived; `infos[seq]` tells whether the broker acknowledged it."""

    def __init__(self, sluice: Harness, client: Client, counter: Counter) -> None:
        sluice.closers.append(self.stop_now)
        self.client = client
        self.counter = counter
        self.infos: dict[int, mqtt.MQTTMessageInfo] = {}
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def stop_now(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def start(self, seqs: list[int]) -> None:
        self.thread = threading.Thread(
            target=self._run, args=(seqs,), name="publisher", daemon=True
        )
        self.thread.start()

    def _run(self, seqs: list[int]) -> None:
        try:
            for i, seq in enumerate(seqs):
                while i - self.counter.distinct > WINDOW and not self.stop.is_set():
                    time.sleep(0.002)
                if self.stop.is_set():
                    return
                topic = f"factory/line{seq % 4}/temp"
                self.infos[seq] = self.client.publish(topic, str(seq), qos=1)
        except BaseException as e:  # noqa: BLE001 - reported by join()
            self.error = e

    def join(self, timeout: float = DONE_TIMEOUT_S) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the publisher did not finish"
        if self.error:
            raise self.error

    def acked(self) -> set[int]:
        return {seq for seq, info in list(self.infos.items()) if published(info)}


def published(info: mqtt.MQTTMessageInfo) -> bool:
    """Whether the broker acknowledged it (paho raises for one it could not even send)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


def start(
    sluice: Harness, persistent_source: bool, cores: int = CORES, n: int = N,
    extra: tuple[str, ...] = (), connected_cores: int | None = None,
) -> tuple[Mosquitto, Mosquitto, object, object, Counter, Client]:
    src = sluice.mosquitto("src", persistence=persistent_source)
    dst = sluice.mosquitto("dst")
    config = sluice.tmp / "config"
    write_manifests(
        config,
        [
            mqtt_endpoint("src", src.host),
            mqtt_endpoint("dst", dst.host, qos=1, maxInflightMessages=100),
            profile(),
            dataflow("bridge", "src", ["factory/#"], "dst", "out/${inputTopic.2}"),
        ],
    )
    dp = sluice.dataplane(cores=cores, extra=extra)
    agent = sluice.agent(config, dp, src.host)
    dp.wait_connected("bridge", cores=connected_cores)
    counter = Counter(n)
    sub = sluice.client(dst.port, "sub", keep_messages=lambda m: m.topic == "out/probe")
    sub.on_message = counter.on_message
    sub.subscribe(["out/#"])
    pub = sluice.client(src.port, "pub", keep_messages=False)
    probe_until_flowing(pub, sub, "factory/probe/temp", "out/probe")
    return src, dst, dp, agent, counter, sub


def wait_all(counter: Counter, started: float) -> float:
    wait_progress(f"all {N} messages at the destination", lambda: counter.distinct, N)
    return time.monotonic() - started


def test_dataplane_sigkill_mid_stream_loses_nothing(sluice: Harness) -> None:
    src, dst, dp, agent, counter, _ = start(sluice, persistent_source=False)
    pub = Publisher(sluice, sluice.clients[-1], counter)
    started = time.monotonic()
    pub.start(list(range(N)))

    wait_until(
        f"{CUT_AT} messages at the destination", lambda: counter.distinct >= CUT_AT, 60, 0.01
    )
    at_kill = counter.distinct
    log_before = len(dp.log_text())
    dp.kill9()
    killed_at = time.monotonic()
    dp.start()
    # Nobody pushes the configuration to the new process but the agent, by itself.
    dp.wait_connected("bridge", timeout=30)
    recovered = time.monotonic() - killed_at

    pub.join()
    wait_until("the source broker's PUBACKs", lambda: len(pub.acked()) == N, DONE_TIMEOUT_S, 0.2)
    elapsed = wait_all(counter, started)
    missing = counter.missing()
    assert not missing, f"{len(missing)} messages lost, first: {missing[:20]}"
    assert counter.strays == 0, f"{counter.strays} messages with a foreign payload"
    print(
        f"\nkill -9 at {at_kill} of {N} delivered; flowing again {recovered:.1f} s later; "
        f"all {N} in {elapsed:.1f} s; {counter.duplicates} duplicates"
    )

    # The new process resumed the broker's sessions (clean start off): what the old one held
    # unacknowledged, and what queued meanwhile, came from those.
    after = dp.log_text()[log_before:]
    resumed = re.findall(r"source connected.*session_present=true", after)
    assert len(resumed) >= CORES, f"source sessions resumed after the restart: {len(resumed)}"
    connects = agent.log_text().count("connected to the data plane")
    assert connects >= 2, f"the agent connected {connects} times to the data plane"


# One core: a plain subscription (mosquitto persists it). Two cores: a shared subscription per
# core ($share/bridge/factory/#), which mosquitto 2.0.11 does not persist (see step 2).
@pytest.mark.parametrize("cores", [1, 2])
def test_source_broker_restart_loses_nothing_acknowledged(sluice: Harness, cores: int) -> None:
    src, dst, dp, agent, counter, sub = start(sluice, persistent_source=True, cores=cores)
    first = sluice.clients[-1]
    pub = Publisher(sluice, first, counter)
    started = time.monotonic()
    pub.start(list(range(N)))

    wait_until(
        f"{CUT_AT} messages at the destination", lambda: counter.distinct >= CUT_AT, 60, 0.01
    )
    # The first publisher must not come back on its own when the broker does.
    first.c.reconnect_delay_set(min_delay=600, max_delay=600)
    status = src.stop()
    stopped_at = time.monotonic()
    assert status == 0, f"mosquitto exited with {status} on SIGTERM"
    pub.stop.set()
    pub.join()
    wait_until("the first publisher to notice", lambda: not first.connected.is_set())
    first.c.loop_stop()
    acked = pub.acked()
    at_stop = counter.distinct
    src.start(keep_port=True)

    # 1. What the broker acknowledged before it stopped was in the data plane's sessions (queued
    # or in flight); it comes back from the persistence file and must all arrive.
    def arrived(seqs: set[int]) -> set[int]:
        with counter.lock:
            return {s for s in seqs if counter.seen[s]}

    wait_progress(
        f"the {len(acked)} messages acknowledged before the restart",
        lambda: len(arrived(acked)),
        len(acked),
    )
    recovered = time.monotonic() - stopped_at

    # 2. New messages flow again. mosquitto 2.0.11 restores a persistent session without its
    # shared subscriptions ($share/...) and still answers Session Present 1; the data plane
    # subscribes again on every 5.0 connection, so the dataflow resumes.
    second = sluice.client(src.port, "pub2", keep_messages=False)
    probe_until_flowing(second, sub, "factory/probe/temp", "out/probe", timeout=15)

    # 3. The rest (and whatever the broker never acknowledged) on a new connection.
    again = [seq for seq in range(N) if seq not in acked]
    pub2 = Publisher(sluice, second, counter)
    pub2.start(again)
    pub2.join()
    wait_until(
        "the source broker's PUBACKs",
        lambda: len(pub2.acked()) == len(again),
        DONE_TIMEOUT_S,
        0.2,
    )
    elapsed = wait_all(counter, started)
    missing = counter.missing()
    assert not missing, f"{len(missing)} messages lost, first: {missing[:20]}"
    assert counter.strays == 0, f"{counter.strays} messages with a foreign payload"
    print(
        f"\nsource broker stopped at {at_stop} of {N} delivered, {len(acked)} acknowledged to the "
        f"publisher; all of those delivered {recovered:.1f} s after the stop; all {N} in "
        f"{elapsed:.1f} s; {counter.duplicates} duplicates"
    )
    m = dp.metrics()
    reconnects = m.value("sluice_reconnects_total", dataflow=key("bridge"), side="source")
    assert reconnects is not None and reconnects >= cores, f"source reconnects: {reconnects}"


STALL_S = 20


def wait_progress(what: str, count: Callable[[], int], target: int) -> None:
    """Wait until COUNT() reaches TARGET; fail when it stops growing for STALL_S seconds."""
    last, last_change = -1, time.monotonic()

    def done() -> bool:
        nonlocal last, last_change
        n = count()
        if n != last:
            last, last_change = n, time.monotonic()
        if n >= target:
            return True
        if time.monotonic() - last_change > STALL_S:
            raise Failure(f"{what}: stuck at {n} of {target} for {STALL_S} s")
        return False

    wait_until(what, done, DONE_TIMEOUT_S, 0.2)


STEADY_N = 20_000


def test_plain_subscriptions_lose_nothing_when_the_source_broker_restarts_mid_publish(
    sluice: Harness,
) -> None:
    """`--shared-subscriptions off`: one core owns the dataflow with a plain subscription, which
    mosquitto keeps in the persistent session across its own restart (it does not keep shared
    ones), so what a publisher sends right after the restart, before the data plane is back, is
    queued for the data plane and arrives. The publisher keeps publishing throughout and
    reconnects at once, with a persistent session, so it re-sends what the broker had not
    acknowledged."""
    src, _, dp, _, counter, _ = start(
        sluice, persistent_source=True, cores=2, n=STEADY_N,
        extra=("--shared-subscriptions", "off"), connected_cores=1,
    )
    assert dp.metrics().value("sluice_dataflow_cores", dataflow=key("bridge")) == 1

    # A publisher with a persistent session that reconnects by itself, every 50 ms.
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="steady-pub", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(100)
    pub.max_queued_messages_set(0)
    pub.reconnect_delay_set(min_delay=0.05, max_delay=0.05)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    pub.connect("127.0.0.1", src.port, clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY, properties=props)
    pub.loop_start()
    sluice.closers.append(pub.loop_stop)
    stop = threading.Event()
    sluice.closers.append(stop.set)

    def publish_all() -> None:
        for seq in range(STEADY_N):
            while seq - counter.distinct > 2_000 and not stop.is_set():
                time.sleep(0.002)
            if stop.is_set():
                return
            pub.publish(f"factory/line{seq % 4}/temp", str(seq), qos=1)

    thread = threading.Thread(target=publish_all, name="steady-publisher", daemon=True)
    thread.start()
    wait_until("a third at the destination", lambda: counter.distinct >= STEADY_N // 3, 60, 0.01)
    status = src.stop()
    assert status == 0, f"mosquitto exited with {status} on SIGTERM"
    src.start(keep_port=True)
    thread.join(DONE_TIMEOUT_S)
    assert not thread.is_alive(), "the publisher did not finish"
    wait_progress(f"all {STEADY_N} messages at the destination", lambda: counter.distinct, STEADY_N)
    assert not counter.missing()
    assert counter.strays == 0
    print(f"\nall {STEADY_N} across the source broker's restart; {counter.duplicates} duplicates")
