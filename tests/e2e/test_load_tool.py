"""`sluice-perf load` against real mosquitto listeners (scripts/mosquitto-start): every way in
(MQTT 5.0 and 3.1.1, TLS, mutual TLS, user name and password, WebSocket, WebSocket over TLS)
with zero loss; the reports (markdown, JSON, SVG charts for a run and a ramp) and the CI gate's
exit status and one-line reason; a shared subscription and JSON payloads; a subscriber that
starts late in another process sees the loss; setup errors exit 2 with the reason.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import brokers
from loadtool import figures, finish, load, start

QUICK = ["-c", "2", "-s", "1", "-r", "400", "-d", "1.5s", "--drain", "5s"]


def ways(env: dict[str, str], tmp: Path) -> dict[str, list[str]]:
    pw = tmp / "password"
    pw.write_text(env["MQTT_PASSWORD"] + "\n")
    ca = ["--cafile", env["CA_FILE"]]
    return {
        "mqtt5": ["--url", f"mqtt://127.0.0.1:{env['MQTT_PORT']}"],
        "mqtt311": ["--url", f"mqtt://127.0.0.1:{env['MQTT_PORT']}", "-V", "3"],
        "tls": ["--url", f"mqtts://localhost:{env['MQTT_TLS_PORT']}", *ca],
        "mtls": ["--url", f"mqtts://localhost:{env['MQTT_MTLS_PORT']}", *ca,
                 "--cert", env["CLIENT_CERT"], "--key", env["CLIENT_KEY"]],
        "login": ["--url", f"mqtt://127.0.0.1:{env['MQTT_AUTH_PORT']}",
                  "-u", env["MQTT_USER"], "--password-file", str(pw)],
        "ws": ["--url", f"ws://127.0.0.1:{env['MQTT_WS_PORT']}/mqtt"],
        "wss": ["--url", f"wss://localhost:{env['MQTT_WSS_PORT']}/", *ca],
    }


@pytest.mark.parametrize("way", ["mqtt5", "mqtt311", "tls", "mtls", "login", "ws", "wss"])
def test_every_way_in_with_zero_loss(
    way: str, mosquitto: brokers.Broker, sluice_bins: Path, tmp_path: Path
) -> None:
    args = ways(mosquitto.env, tmp_path)[way]
    r = load(sluice_bins, tmp_path / "out", *args, *QUICK, "-t", f"perf/{way}/%c",
             "--sub-topic", f"perf/{way}/#", "--max-loss", "0", "--max-duplicates", "0")
    assert r.status == 0, r.why()
    rep = r.report
    assert rep is not None
    assert rep["sent"] == 600 and rep["offered"] == 600, figures(rep)
    assert rep["received"] == 600 and rep["lost"] == 0 and rep["reordered"] == 0, figures(rep)
    assert rep["acked"] == 600, "QoS 1: every publish acknowledged"
    assert rep["latency"]["count"] == 600
    assert "gate passed" in r.out


def test_reports_for_a_ramp_and_the_gate(
    mosquitto: brokers.Broker, sluice_bins: Path, tmp_path: Path
) -> None:
    url = f"mqtt://127.0.0.1:{mosquitto.env['MQTT_PORT']}"
    out = tmp_path / "ramp"
    r = load(sluice_bins, out, "--url", url, "-c", "3", "-r", "300,600,1200",
             "--step-secs", "1.5s", "-q", "0", "--payload-bytes", "100..300", "--max-loss", "1%")
    assert r.status == 0, r.why()
    rep = r.report
    assert rep is not None
    assert [s["rate"] for s in rep["steps"]] == [300, 600, 1200]
    assert [s["sent"] for s in rep["steps"]] == [450, 900, 1800]
    assert all(s["latency"]["count"] > 0 for s in rep["steps"])
    assert len(rep["series"]) >= 4, "one point a second"
    md = (out / "report.md").read_text()
    assert "| offered/s | sent/s | received/s | p50 | p99 | p99.9 | max |" in md
    assert md in r.out, "the same table on stdout"
    for chart in ("latency.svg", "ramp.svg"):
        root = ET.parse(out / chart).getroot()
        assert root.tag.endswith("svg"), chart
        texts = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
        assert "p99" in texts and "latency" in texts, chart

    # The gate: every broken threshold named, on one line, exit status 1.
    r = load(sluice_bins, tmp_path / "gate", "--url", url, "-r", "200", "-d", "1s",
             "--max-p99", "1ns", "--min-rate", "1000000", "--max-loss", "0")
    assert r.status == 1, r.why()
    line = [ln for ln in r.err.splitlines() if "gate failed" in ln]
    assert len(line) == 1, r.err
    assert "p99 " in line[0] and "> 1 ns" in line[0] and "< 1000000/s" in line[0], line[0]
    assert "lost" not in line[0], "loss was within its limit"


def test_a_shared_subscription_with_json_payloads(
    mosquitto: brokers.Broker, sluice_bins: Path, tmp_path: Path
) -> None:
    url = f"mqtt://127.0.0.1:{mosquitto.env['MQTT_PORT']}"
    r = load(sluice_bins, tmp_path / "out", "--url", url, "-c", "4", "-s", "3", "-r", "1000",
             "-d", "2s", "--sub-topic", "$share/g/sluice-perf/#", "--payload-format", "json",
             "--payload-bytes", "200", "--max-loss", "0", "--max-duplicates", "0")
    assert r.status == 0, r.why()
    rep = r.report
    assert rep is not None
    assert [g["name"] for g in rep["groups"]] == ["$share/g"], "one group, merged"
    assert rep["groups"][0]["distinct"] == 2000 and rep["expected"] == 2000, figures(rep)


def test_a_late_subscriber_in_another_process_sees_the_loss(
    mosquitto: brokers.Broker, sluice_bins: Path, tmp_path: Path
) -> None:
    url = f"mqtt://127.0.0.1:{mosquitto.env['MQTT_PORT']}"
    publisher = start(sluice_bins, tmp_path / "pub", "--url", url, "-s", "0", "-r", "1000",
                      "-d", "4s", "-t", "late/%c")
    time.sleep(1.5)
    sub = load(sluice_bins, tmp_path / "sub", "--url", url, "-c", "0", "-s", "1", "-d", "4s",
               "--sub-topic", "late/#", "--max-loss", "0")
    pub = finish(publisher, tmp_path / "pub")
    assert pub.status == 0, pub.why()
    assert pub.report is not None and pub.report["sent"] == 4000
    assert sub.status == 1, sub.why()
    rep = sub.report
    assert rep is not None
    # What the publisher sent before the subscriber was there is missing from its view.
    assert 500 <= rep["lost"] <= 3000, figures(rep)
    assert rep["sent"] == 4000, "the publisher's count, from the highest sequence number seen"
    assert rep["groups"][0]["lost_by_publisher"] == [{"publisher": 0, "lost": rep["lost"]}]
    assert "gate failed: lost" in sub.err


def test_setup_errors_exit_2_with_the_reason(sluice_bins: Path, tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    r = load(sluice_bins, tmp_path / "a", "--url", f"mqtt://127.0.0.1:{port}", "-d", "1s",
             "--connect-timeout", "2s")
    assert r.status == 2, r.why()
    assert "setup failed" in r.err and "cannot connect" in r.err, r.err
    r = load(sluice_bins, tmp_path / "b", "--payload-bytes", "10")
    assert r.status == 2 and "at least 60" in r.err, r.why()
    r = load(sluice_bins, tmp_path / "c", "--url", "http://x")
    assert r.status == 2 and "unknown scheme" in r.err, r.why()
