"""Sluice's own load test, run by scripts/test as a step of its own (`-s`, so that the figures
show in the log): 30 s of QoS 1 at a modest fixed rate through mosquitto -> Sluice -> mosquitto,
and 30 s through mosquitto -> Sluice -> Kafka (tansu) read by `sluice-perf load`'s Kafka
reader. Each asserts zero loss and no duplicates; latency figures are printed, never asserted
(a shared CI machine is no place for timing claims: see docs/PERFORMANCE.md for measurements).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataplane import (
    Harness,
    dataflow,
    kafka_create_topics,
    kafka_endpoint,
    mqtt_endpoint,
    profile,
    write_manifests,
)
from loadtool import figures, load

SECONDS = "30s"
RATE = "2000"


def start_sluice(sluice: Harness, tmp_path: Path, src_host: str, docs: list[dict]) -> None:
    config = tmp_path / "config"
    write_manifests(config, docs)
    dp = sluice.dataplane(cores=2)
    sluice.agent(config, dp, src_host)
    dp.wait_ready(timeout=30)


def test_mqtt_through_sluice(sluice: Harness, sluice_bins: Path, tmp_path: Path) -> None:
    src, dst = sluice.mosquitto("src"), sluice.mosquitto("dst")
    docs = [
        mqtt_endpoint("src", src.host),
        mqtt_endpoint("dst", dst.host, maxInflightMessages=1000),
        profile(),
        dataflow("load", "src", ["sluice-perf/#"], "dst", "out/${inputTopic}"),
    ]
    start_sluice(sluice, tmp_path, src.host, docs)
    r = load(sluice_bins, tmp_path / "load", "--url", f"mqtt://{src.host}",
             "--sub-url", f"mqtt://{dst.host}", "--sub-topic", "out/sluice-perf/#",
             "-c", "4", "-s", "1", "-r", RATE, "-d", SECONDS, "-q", "1",
             "--max-loss", "0", "--max-duplicates", "0", timeout=180)
    assert r.status == 0, r.why()
    assert r.report is not None
    print(f"\nmosquitto -> Sluice -> mosquitto, {RATE}/s for {SECONDS}: {figures(r.report)}")


def test_mqtt_to_kafka_through_sluice(
    sluice: Harness, tansu: Any, sluice_bins: Path, tmp_path: Path
) -> None:
    bootstrap = tansu.env["KAFKA_BOOTSTRAP"]
    kafka_create_topics({"bootstrap.servers": bootstrap}, ["load"], partitions=4)
    src = sluice.mosquitto("src")
    docs = [
        mqtt_endpoint("src", src.host),
        kafka_endpoint("kafka", bootstrap),
        profile(),
        dataflow("to-kafka", "src", ["sluice-perf/#"], "kafka", "load"),
    ]
    start_sluice(sluice, tmp_path, src.host, docs)
    r = load(sluice_bins, tmp_path / "load", "--url", f"mqtt://{src.host}",
             "--kafka-bootstrap", bootstrap, "--kafka-topic", "load",
             "-c", "4", "-r", "1000", "-d", SECONDS, "-q", "1",
             "--max-loss", "0", "--max-duplicates", "0", timeout=180)
    assert r.status == 0, r.why()
    assert r.report is not None
    print(f"\nmosquitto -> Sluice -> Kafka (tansu), 1000/s for {SECONDS}: {figures(r.report)}")
