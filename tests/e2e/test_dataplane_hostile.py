"""The data plane against a hostile source broker (hostile_broker.py: valid CONNACK and SUBACK,
then bytes that break MQTT 5), next to a healthy dataflow on a real mosquitto.

For each malformed frame or protocol violation the data plane must: send DISCONNECT with the
reason code the specification names (0x81 Malformed Packet, 0x82 Protocol Error), close the
connection, reconnect after a backoff, and keep everything else running (the healthy dataflow
still forwards, /healthz answers 200). A valid PUBLISH that arrives in several TCP segments must
be put back together and forwarded; a broker that overruns the Receive Maximum is tolerated (see
hostile_broker.SCENARIOS). A PUBLISH whose header announces 256 MiB is refused from its header
(0x95 Packet too large) and counted, and the data plane's memory does not grow toward it.
"""

from __future__ import annotations

import pytest

import hostile_broker as hb
from dataplane import (
    Harness,
    dataflow,
    key,
    mqtt_endpoint,
    probe_until_flowing,
    profile,
    wait_until,
    write_manifests,
)

CORES = 2
# Full jitter over [base/2, base] with a 100 ms base: the first delay is at least 50 ms.
MIN_BACKOFF_S = 0.045
CLIENT_IDS = [f"hostile-src-{core}" for core in range(CORES)]
# Peak resident memory allowed to the data plane while a broker streams a 256 MiB PUBLISH at it.
MAX_RSS_MIB = 100


def peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set size) of process PID, MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


@pytest.mark.parametrize("scenario", hb.SCENARIOS, ids=lambda s: s.name)
def test_hostile_source_broker(sluice: Harness, scenario: hb.Scenario) -> None:
    mosq = sluice.mosquitto("mosquitto")
    broker = hb.HostileBroker(scenario)
    sluice.closers.append(broker.close)
    config = sluice.tmp / "config"
    write_manifests(
        config,
        [
            mqtt_endpoint(
                "hostile", f"127.0.0.1:{broker.port}", maxInflightMessages=hb.RECEIVE_MAXIMUM
            ),
            mqtt_endpoint("mosquitto", mosq.host, qos=1),
            profile(),
            dataflow("good", "mosquitto", ["good/#"], "mosquitto", "good-out/${inputTopic.2}"),
            dataflow(
                "hostile",
                "hostile",
                ["t/#", "split/#"],
                "mosquitto",
                "from-hostile/${inputTopic.2}",
            ),
        ],
    )
    dp = sluice.dataplane(cores=CORES)
    sluice.agent(config, dp, mosq.host)
    sub = sluice.client(mosq.port, "sub")
    sub.subscribe(["good-out/#", "from-hostile/#"])
    pub = sluice.client(mosq.port, "pub")
    probe_until_flowing(pub, sub, "good/probe", "good-out/probe")

    def by_client() -> dict[str, list[hb.Connection]]:
        out: dict[str, list[hb.Connection]] = {c: [] for c in CLIENT_IDS}
        for conn in broker.snapshot():
            if conn.client_id:
                out.setdefault(conn.client_id, []).append(conn)
        return out

    if scenario.expected_reason is None:
        check_well_formed(sluice, scenario, broker, by_client, dp)
    else:
        check_refused(scenario, by_client)
    if scenario.filler:
        check_not_buffered(dp)

    # Everything else still runs.
    probe_until_flowing(pub, sub, "good/probe", "good-out/probe")
    assert dp.alive(), "the data plane exited"
    status, body = dp.get("/healthz")
    assert status == 200, f"/healthz: {status} {body}"
    m = dp.metrics()
    for side in ("source", "destination"):
        n = m.value("sluice_reconnects_total", dataflow=key("good"), side=side)
        assert n == 0, f"the healthy dataflow's {side} reconnected {n} times"


def check_refused(scenario: hb.Scenario, by_client) -> None:
    """Each core's source connection got DISCONNECT(reason), was closed, and came back."""
    wait_until(
        "a second connection from each core",
        lambda: all(len(conns) >= 2 and conns[0].done for conns in by_client().values()),
    )
    problems = []
    for client_id, conns in sorted(by_client().items()):
        first, second = conns[0], conns[1]
        assert first.hostile_sent_at is not None, f"{client_id}: {first}"
        types = [p.type for p in first.after]
        if types != [hb.DISCONNECT]:
            problems.append(f"{client_id}: sent {types} after the bad bytes, want one DISCONNECT")
        else:
            code = first.after[0].reason_code
            if code != scenario.expected_reason:
                want = scenario.expected_reason
                problems.append(f"{client_id}: DISCONNECT reason 0x{code:02x}, want 0x{want:02x}")
        if first.closed_at is None:
            problems.append(f"{client_id}: the connection was not closed cleanly: {first.error}")
        else:
            gap = second.accepted_at - first.closed_at
            if gap < MIN_BACKOFF_S:
                problems.append(f"{client_id}: reconnected after {gap * 1000:.0f} ms, no backoff")
        if second.protocol_level != 5:
            problems.append(f"{client_id}: reconnected with protocol level {second.protocol_level}")
    assert not problems, "\n".join(problems)


def check_not_buffered(dp) -> None:
    """The oversized frames were counted, one per refused connection, and never buffered."""
    wait_until(
        "sluice_packets_too_large_total counts the refused connections",
        lambda: (
            dp.metrics().value(
                "sluice_packets_too_large_total", dataflow=key("hostile"), side="source"
            )
            or 0
        )
        >= CORES,
    )
    rss = peak_rss_mib(dp.pid)
    assert rss < MAX_RSS_MIB, f"the data plane's peak RSS is {rss:.0f} MiB"


def check_well_formed(
    sluice: Harness, scenario: hb.Scenario, broker: hb.HostileBroker, by_client, dp
) -> None:
    """Every message was forwarded intact and acknowledged; no connection was dropped."""
    sub = sluice.clients[0]
    want = {
        ("from-hostile/" + topic.split("/", 1)[1], payload)
        for topic, payload in scenario.forwarded
    }

    def forwarded() -> set[tuple[str, bytes]]:
        return {(m.topic, m.payload) for m in sub.snapshot() if m.topic.startswith("from-hostile/")}

    wait_until(
        f"{len(want)} messages from the hostile broker at the destination",
        lambda: want <= forwarded(),
    )

    def acked(conn: hb.Connection) -> set[int]:
        return {int.from_bytes(p.body[:2], "big") for p in conn.after if p.type == hb.PUBACK}

    wait_until(
        f"PUBACK {list(scenario.acked)} on every connection",
        lambda: all(
            conns and set(scenario.acked) <= acked(conns[0]) for conns in by_client().values()
        ),
    )
    strays = forwarded() - want
    assert not strays, f"forwarded what the broker never sent: {sorted(strays)[:5]}"
    problems = []
    for client_id, conns in sorted(by_client().items()):
        if len(conns) != 1:
            problems.append(f"{client_id}: {len(conns)} connections, want 1")
        for p in conns[0].after:
            if p.type == hb.DISCONNECT:
                problems.append(f"{client_id}: DISCONNECT 0x{p.reason_code:02x}")
    assert not problems, "\n".join(problems)
    m = dp.metrics()
    n = m.value("sluice_reconnects_total", dataflow=key("hostile"), side="source")
    assert n == 0, f"the source reconnected {n} times"
