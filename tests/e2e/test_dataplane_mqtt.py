"""The data plane as an MQTT -> MQTT bridge, end to end: two real mosquittos (source and
destination), `config-agent run` watching a folder and `dataplane --cores 2` as processes, and
paho-mqtt (MQTT 5) as the independent publisher and subscriber.

- 10,000 QoS 1 messages with MQTT 5 properties all arrive, properties intact, topic template
  resolved;
- `retain: Keep` and `retain: Never`, as seen live (Retain As Published) and by a late subscriber;
- a template that does not resolve drops (and counts) only the messages it cannot place;
- a change in the watched folder restarts the changed dataflow only.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from pathlib import Path

from dataplane import (
    Dataplane,
    Harness,
    Mosquitto,
    dataflow,
    key,
    mqtt_endpoint,
    probe_until_flowing,
    profile,
    publish_props,
    wait_until,
    write_manifests,
)

CORES = 2


def start_bridge(sluice: Harness, docs: list[dict], src: Mosquitto) -> tuple[Dataplane, Path]:
    config = sluice.tmp / "config"
    write_manifests(config, docs)
    dp = sluice.dataplane(cores=CORES)
    sluice.agent(config, dp, src.host)
    return dp, config


def endpoints(src: Mosquitto, dst: Mosquitto, **dst_settings: object) -> list[dict]:
    return [
        mqtt_endpoint("src", src.host),
        mqtt_endpoint(
            "dst",
            dst.host,
            **({"retain": "Never", "qos": 1, "maxInflightMessages": 100} | dst_settings),
        ),
        profile(),
    ]


# --- 10,000 messages ----------------------------------------------------------------------------

N = 10_000
LINES = 7


def user_properties(seq: int) -> list[tuple[str, str]]:
    # A repeated name, and a non-ASCII value: order and bytes must survive ([MQTT-3.3.2-18]).
    return [("seq", str(seq)), ("origin", "e2e"), ("k", "v1"), ("k", "v2"), ("unit", "°C")]


def sent_properties(seq: int) -> dict[str, object]:
    return {
        "PayloadFormatIndicator": 1,
        "ContentType": "application/json",
        "CorrelationData": f"corr-{seq}".encode(),
        "ResponseTopic": f"reply/line{seq % LINES}/{seq}",
        "UserProperty": user_properties(seq),
    }


EXPIRY_S = 3600


def test_ten_thousand_qos1_messages_keep_properties_and_topic(sluice: Harness) -> None:
    src, dst = sluice.mosquitto("src"), sluice.mosquitto("dst")
    docs = endpoints(src, dst) + [
        dataflow("bridge", "src", ["factory/#"], "dst", "out/${inputTopic.2}")
    ]
    dp, _ = start_bridge(sluice, docs, src)
    dp.wait_connected("bridge")

    sub = sluice.client(dst.port, "sub")
    sub.subscribe(["out/#"])
    pub = sluice.client(src.port, "pub")
    probe_until_flowing(pub, sub, "factory/probe/temp", "out/probe")

    started = time.monotonic()
    acked_before = pub.acked
    for seq in range(N):
        pub.publish(
            f"factory/line{seq % LINES}/temp",
            json.dumps({"seq": seq, "t": 20.5}),
            qos=1,
            properties=publish_props(MessageExpiryInterval=EXPIRY_S, **sent_properties(seq)),
        )
    wait_until("the source broker's PUBACKs", lambda: pub.acked - acked_before >= N, timeout=60)

    def seqs() -> set[int]:
        return {
            json.loads(m.payload)["seq"]
            for m in sub.snapshot()
            if m.topic != "out/probe"
        }

    wait_until(f"{N} distinct messages at the destination", lambda: len(seqs()) >= N, 60, 0.2)
    elapsed = time.monotonic() - started

    by_seq: dict[int, list] = defaultdict(list)
    for m in sub.snapshot():
        if m.topic != "out/probe":
            by_seq[json.loads(m.payload)["seq"]].append(m)
    missing = sorted(set(range(N)) - by_seq.keys())
    assert not missing, f"{len(missing)} messages lost, first: {missing[:20]}"
    duplicates = sum(len(v) - 1 for v in by_seq.values())
    print(f"\n{N} messages in {elapsed:.1f} s, {duplicates} duplicates")

    problems = []
    for seq, copies in sorted(by_seq.items()):
        for m in copies:
            want_topic = f"out/line{seq % LINES}"
            if m.topic != want_topic:
                problems.append(f"seq {seq}: topic {m.topic!r}, want {want_topic!r}")
            if m.qos != 1:
                problems.append(f"seq {seq}: QoS {m.qos}")
            got = {k: v for k, v in m.properties.items() if k != "MessageExpiryInterval"}
            if got != sent_properties(seq):
                problems.append(f"seq {seq}: properties {got}, want {sent_properties(seq)}")
            expiry = m.properties.get("MessageExpiryInterval")
            # The interval counts down while the message waits ([MQTT-3.3.2-6]), but not up.
            if expiry is None or not EXPIRY_S - 120 <= expiry <= EXPIRY_S:
                problems.append(f"seq {seq}: Message Expiry Interval {expiry}, sent {EXPIRY_S}")
        if len(problems) > 20:
            break
    assert not problems, "\n".join(problems[:20])

    m = dp.metrics()
    received = m.value("sluice_messages_received_total", dataflow=key("bridge"))
    forwarded = m.value("sluice_messages_forwarded_total", dataflow=key("bridge"))
    assert received is not None and received >= N, f"sluice_messages_received_total {received}"
    assert forwarded is not None and forwarded >= N, f"sluice_messages_forwarded_total {forwarded}"
    dropped = [
        (labels, v)
        for name, labels, v in m.samples
        if name == "sluice_messages_dropped_total" and labels.get("dataflow") == key("bridge") and v
    ]
    assert not dropped, f"dropped: {dropped}"


# --- retain -------------------------------------------------------------------------------------


def test_retain_keep_and_never(sluice: Harness) -> None:
    src, dst = sluice.mosquitto("src"), sluice.mosquitto("dst")
    docs = [
        mqtt_endpoint("src", src.host),
        mqtt_endpoint("dst-keep", dst.host, retain="Keep"),
        mqtt_endpoint("dst-never", dst.host, retain="Never"),
        profile(),
        dataflow("keep", "src", ["keep/#"], "dst-keep", "kept/${inputTopic.2}"),
        dataflow("never", "src", ["never/#"], "dst-never", "notkept/${inputTopic.2}"),
    ]
    dp, _ = start_bridge(sluice, docs, src)
    dp.wait_connected("keep")
    dp.wait_connected("never")

    # A live subscriber with Retain As Published sees the RETAIN flag as the data plane sent it.
    live = sluice.client(dst.port, "live")
    live.subscribe(["kept/#", "notkept/#"], retain_as_published=True)
    pub = sluice.client(src.port, "pub")
    probe_until_flowing(pub, live, "keep/probe", "kept/probe")
    probe_until_flowing(pub, live, "never/probe", "notkept/probe")

    pub.publish("keep/r", "retained via Keep", retain=True).wait_for_publish(10)
    pub.publish("never/r", "retained via Never", retain=True).wait_for_publish(10)
    pub.publish("keep/plain", "not retained", retain=False).wait_for_publish(10)
    got = live.wait_for(
        "the three messages on the live subscription",
        lambda ms: (
            {m.topic: m for m in ms}
            if {"kept/r", "notkept/r", "kept/plain"} <= {m.topic for m in ms}
            else None
        ),
    )

    # A late subscriber: retained messages come right after SUBACK, filter by filter, so once the
    # marker (retained on the last filter) is here, nothing else retained is still on its way.
    direct = sluice.client(dst.port, "direct")
    direct.publish("zz-marker/x", "marker", retain=True).wait_for_publish(10)
    late = sluice.client(dst.port, "late")
    late.subscribe(["notkept/#", "kept/#", "zz-marker/#"])
    late.wait_for("the retained marker", lambda ms: any(m.topic == "zz-marker/x" for m in ms))
    retained = {m.topic: m for m in late.snapshot()}

    problems = []
    if not got["kept/r"].retain:
        problems.append(
            "retain: Keep: a retained source message was forwarded with RETAIN 0 (live "
            "subscriber with Retain As Published)"
        )
    if got["kept/plain"].retain:
        problems.append("retain: Keep: a message that was not retained arrived retained")
    if got["notkept/r"].retain:
        problems.append("retain: Never: a retained source message was forwarded with RETAIN 1")
    if "kept/r" not in retained:
        problems.append("retain: Keep: the destination broker did not keep the message retained")
    elif (retained["kept/r"].payload, retained["kept/r"].retain) != (b"retained via Keep", True):
        problems.append(f"retain: Keep: late subscriber got {retained['kept/r']}")
    if "notkept/r" in retained:
        problems.append("retain: Never: the destination broker has the message retained")
    assert not problems, "\n".join(problems)


# --- unresolved template -------------------------------------------------------------------------


def test_unresolvable_topic_template_drops_and_counts(sluice: Harness) -> None:
    src, dst = sluice.mosquitto("src"), sluice.mosquitto("dst")
    docs = endpoints(src, dst) + [dataflow("deep", "src", ["deep/#"], "dst", "out/${inputTopic.5}")]
    dp, _ = start_bridge(sluice, docs, src)
    dp.wait_connected("deep")
    sub = sluice.client(dst.port, "sub")
    sub.subscribe(["#"])
    pub = sluice.client(src.port, "pub")
    probe_until_flowing(pub, sub, "deep/p/r/o/probe", "out/probe")
    before = dp.metrics().value(
        "sluice_messages_dropped_total", dataflow=key("deep"), reason="unresolved_topic"
    ) or 0.0

    count = 100
    for i in range(count):
        pub.publish("deep/short", f"short {i}")  # two levels: ${inputTopic.5} does not resolve
        pub.publish(f"deep/a/b/c/d{i}", f"long {i}")  # five levels: out/d<i>
    for i in range(count):
        pub.publish(f"deep/a/b{i}", f"three {i}")  # three levels: does not resolve either

    def long_ones() -> set[str]:
        return {m.topic for m in sub.snapshot() if m.payload.startswith(b"long ")}

    wait_until(f"{count} resolvable messages", lambda: len(long_ones()) == count, 20, 0.1)

    def dropped() -> float:
        v = dp.metrics().value(
            "sluice_messages_dropped_total", dataflow=key("deep"), reason="unresolved_topic"
        )
        return (v or 0.0) - before

    wait_until(f"{2 * count} drops counted", lambda: dropped() >= 2 * count, 20, 0.1)
    assert dropped() == 2 * count
    assert long_ones() == {f"out/d{i}" for i in range(count)}
    strays = [
        (m.topic, m.payload)
        for m in sub.snapshot()
        if not (m.payload.startswith(b"long ") or m.payload.startswith(b"probe "))
    ]
    assert not strays, f"unresolvable messages were published somewhere: {strays[:10]}"
    # The dropped messages were acknowledged at the source (nothing waits for redelivery).
    wait_until(
        "no message in flight",
        lambda: dp.metrics().value("sluice_messages_in_flight", dataflow=key("deep")) == 0,
    )


# --- config change through the watched folder -------------------------------------------------


def test_config_change_restarts_only_the_changed_dataflow(sluice: Harness) -> None:
    src, dst = sluice.mosquitto("src"), sluice.mosquitto("dst")
    base = endpoints(src, dst)
    b = dataflow("bridge-b", "src", ["other/#"], "dst", "other-out/${inputTopic.2}")
    a = dataflow("bridge-a", "src", ["factory/#"], "dst", "out/${inputTopic.2}")
    dp, config = start_bridge(sluice, base + [a, b], src)
    dp.wait_connected("bridge-a")
    dp.wait_connected("bridge-b")
    sub = sluice.client(dst.port, "sub")
    sub.subscribe(["out/#", "moved/#", "other-out/#"])
    pub = sluice.client(src.port, "pub")
    probe_until_flowing(pub, sub, "factory/probe/temp", "out/probe")
    probe_until_flowing(pub, sub, "other/probe/x", "other-out/probe")

    ids = {
        (broker.name, f"{df}-{side}-{core}"): broker
        for df in ("bridge-a", "bridge-b")
        for side, broker in (("src", src), ("dst", dst))
        for core in range(CORES)
    }
    connects_before = {k: broker.connections(k[1]) for k, broker in ids.items()}
    assert all(n == 1 for n in connects_before.values()), connects_before
    m0 = dp.metrics()
    b_forwarded_before = m0.value("sluice_messages_forwarded_total", dataflow=key("bridge-b"))

    # bridge-b carries a steady stream while bridge-a is changed.
    stop = threading.Event()
    b_sent: list[int] = []

    def stream() -> None:
        i = 0
        while not stop.is_set():
            pub.publish(f"other/s{i % 3}/x", f"b {i}")
            b_sent.append(i)
            i += 1
            time.sleep(0.002)

    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        write_manifests(
            config,
            base + [dataflow("bridge-a", "src", ["factory/#"], "dst", "moved/${inputTopic.2}"), b],
        )
        probe_until_flowing(pub, sub, "factory/probe/temp", "moved/probe", timeout=20)
    finally:
        stop.set()
        streamer.join()

    # The change is in force: new messages of bridge-a go to the new topic, none to the old.
    for i in range(200):
        pub.publish(f"factory/line{i % 4}/temp", f"after {i}")

    def after(prefix: str, on: bool) -> list[str]:
        return [
            m.topic
            for m in sub.snapshot()
            if m.payload.startswith(b"after ") and m.topic.startswith(prefix) == on
        ]

    wait_until("200 messages on moved/", lambda: len(after("moved/line", True)) >= 200, 20, 0.1)
    on_old = after("moved/", False)
    assert not on_old, f"messages sent after the change arrived on the old topic: {on_old[:10]}"

    # bridge-b lost nothing and never reconnected.
    want = {f"b {i}".encode() for i in b_sent}
    wait_until(
        f"bridge-b's {len(want)} messages",
        lambda: want <= {m.payload for m in sub.snapshot() if m.topic.startswith("other-out/s")},
        20,
        0.1,
    )
    m1 = dp.metrics()
    for side in ("source", "destination"):
        reconnects = m1.value("sluice_reconnects_total", dataflow=key("bridge-b"), side=side)
        assert reconnects == 0, f"bridge-b {side} reconnects: {reconnects}"
    b_forwarded = m1.value("sluice_messages_forwarded_total", dataflow=key("bridge-b"))
    assert b_forwarded is not None and b_forwarded_before is not None
    assert b_forwarded >= b_forwarded_before + len(want), (
        f"bridge-b's counter went from {b_forwarded_before} to {b_forwarded} "
        f"after {len(want)} more messages (reset?)"
    )
    connects_after = {k: broker.connections(k[1]) for k, broker in ids.items()}
    for (broker, client_id), n in connects_after.items():
        if client_id.startswith("bridge-b"):
            assert n == 1, f"{client_id} connected {n} times to {broker}: restarted by the change"
        else:
            assert n == 2, f"{client_id} connected {n} times to {broker}: expected a restart"
