"""A dataflow removed from the watched folder is drained and stopped, and its MQTT 5 sessions are
ended on the brokers (DISCONNECT with Session Expiry Interval 0), so that a shared subscription
stops sending it a share of the messages. A changed dataflow keeps its sessions (checked in
test_dataplane_mqtt.py). Checked with paho-mqtt: a client that connects afterwards with the
removed dataflow's client id and Clean Start 0 finds no session.
"""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

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


def session_present(port: int, client_id: str) -> bool:
    """Connects as CLIENT_ID with Clean Start 0 and returns the CONNACK's Session Present."""
    got: dict[str, bool] = {}
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)

    def on_connect(_c, _u, flags, rc, _p) -> None:  # noqa: ANN001 - paho's signature
        got["present"] = bool(flags.session_present)
        done.set()

    c.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0  # and end it again when this probe leaves
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    try:
        assert done.wait(10), f"no CONNACK for {client_id}"
        return got["present"]
    finally:
        c.disconnect()
        c.loop_stop()


def test_removed_dataflow_ends_its_sessions(sluice: Harness) -> None:
    src, dst = sluice.mosquitto("src"), sluice.mosquitto("dst")
    base = [mqtt_endpoint("src", src.host), mqtt_endpoint("dst", dst.host), profile()]
    keep = dataflow("stays", "src", ["stay/#"], "dst", "out/${inputTopic}")
    gone = dataflow("goes", "src", ["go/#"], "dst", "out/${inputTopic}")
    config = sluice.tmp / "config"
    write_manifests(config, [*base, keep, gone])
    dp = sluice.dataplane(cores=CORES)
    sluice.agent(config, dp, src.host)
    dp.wait_ready(timeout=20)
    sub = sluice.client(dst.port, "sub")
    sub.subscribe(["out/#"])
    pub = sluice.client(src.port, "pub")
    probe_until_flowing(pub, sub, "go/x", "out/go/x")
    probe_until_flowing(pub, sub, "stay/x", "out/stay/x")

    write_manifests(config, [*base, keep])
    wait_until(
        "the removed dataflow's metrics to go",
        lambda: dp.metrics().value("sluice_dataflow_cores", dataflow=key("goes")) is None,
        timeout=20,
    )
    for core in range(CORES):
        assert not session_present(src.port, f"goes-src-{core}"), "source session still there"
        assert not session_present(dst.port, f"goes-dst-{core}"), "destination session still there"
    # The other dataflow was not touched.
    assert dp.metrics().value("sluice_reconnects_total", dataflow=key("stays"), side="source") == 0
    probe_until_flowing(pub, sub, "stay/y", "out/stay/y")
