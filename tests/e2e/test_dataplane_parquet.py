"""The LocalStorage destination: MQTT messages become rows of Parquet files in a folder of a
volume, read back by independent readers (pyarrow and duckdb), and a message is acknowledged
only once the file that holds it is in place.

- 100,000 QoS 1 messages through mosquitto into Parquet with an output schema (`schemaRef`, a
  Delta schema in --schemas-dir), on two cores: every row is there once, with the schema's types
  and the metadata columns; files hold `batching.maxMessages` rows except each writer's last.
- kill -9 of the data plane mid-stream, then a restart: every message is in a complete file (or
  was delivered again: duplicates allowed), no temporary file is left, and a temporary file of
  an earlier run is removed at start.
- Payloads that do not fit the schema and payloads that are not JSON are dead-lettered with
  their reasons and counted; the rest are written.
- A full volume (a tmpfs of a few KiB) and a read-only one: nothing is acknowledged, /readyz
  says why, and once there is room (the tmpfs grown, remounted read-write) every message is
  written. These mount tmpfs, so they need root; without it they are skipped, saying so.
- Every Delta type, nested ones included, and the User Properties column, in a Snappy file.
- A Kafka source (tansu, records produced with confluent-kafka) into the same destination.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataplane import (
    API,
    Client,
    Dataplane,
    Failure,
    Harness,
    key,
    mqtt_endpoint,
    profile,
    wait_until,
    write_manifests,
)

N = 100_000
MAX_ROWS = 5_000
CORES = 2
DONE_TIMEOUT_S = 240

SCHEMA = {
    "$schema": "Delta/1.0",
    "type": "object",
    "properties": {
        "type": "struct",
        "fields": [
            {"name": "deviceId", "type": "string", "nullable": False, "metadata": {}},
            {"name": "timestamp", "type": "timestamp", "nullable": False, "metadata": {}},
            {"name": "temperature", "type": "double", "nullable": True, "metadata": {}},
            {"name": "humidity", "type": "float", "nullable": True, "metadata": {}},
            {"name": "pressure", "type": "integer", "nullable": True, "metadata": {}},
            {"name": "online", "type": "boolean", "nullable": True, "metadata": {}},
            {"name": "seq", "type": "long", "nullable": False, "metadata": {}},
        ],
    },
}


def payload(seq: int) -> str:
    return json.dumps({
        "deviceId": f"dev-{seq % 100}",
        "timestamp": f"2026-12-02T08:{(seq // 60) % 60:02}:{seq % 60:02}.{seq % 1000:03}Z",
        "temperature": 20 + (seq % 977) / 100,
        "humidity": 40 + (seq % 311) / 10,
        "pressure": 1000 + seq % 50,
        "online": seq % 3 != 0,
        "seq": seq,
    })


class Storage:
    """A volume folder, a schema folder and the manifests of one LocalStorage dataflow."""

    def __init__(self, sluice: Harness, src_host: str, source: dict | None = None,
                 data_sources: list[str] | None = None, **settings: object) -> None:
        self.volumes = sluice.tmp / "volumes"
        self.volume = self.volumes / "telemetry"
        self.volume.mkdir(parents=True)
        self.folder = self.volume / "plant" / "line1"
        schemas = sluice.tmp / "schemas" / "factory"
        schemas.mkdir(parents=True)
        (schemas / "telemetry-1.0.0.json").write_text(json.dumps(SCHEMA))
        self.schemas = sluice.tmp / "schemas"
        self.config = sluice.tmp / "config"
        local = {
            "persistentVolumeClaimRef": "telemetry",
            "batching": {"latencySeconds": 3, "maxMessages": MAX_ROWS},
            "metadataColumns": ["Topic", "ReceivedTime"],
            **settings,
        }
        write_manifests(self.config, [
            source or mqtt_endpoint("src", src_host, maxInflightMessages=65535),
            {
                "apiVersion": API,
                "kind": "DataflowEndpoint",
                "metadata": {"name": "files"},
                "spec": {"endpointType": "LocalStorage", "localStorageSettings": local},
            },
            profile(),
            {
                "apiVersion": API,
                "kind": "Dataflow",
                "metadata": {"name": "to-parquet"},
                "spec": {
                    "profileRef": "default",
                    "operations": [
                        {"operationType": "Source",
                         "sourceSettings": {"endpointRef": "src",
                                            "dataSources": data_sources or ["factory/#"]}},
                        {"operationType": "BuiltInTransformation",
                         "builtInTransformationSettings": {
                             "serializationFormat": "Parquet",
                             "schemaRef": "aio-sr://factory/telemetry:1.0.0",
                             "map": [{"type": "PassThrough", "inputs": ["*"], "output": "*"}],
                         }},
                        {"operationType": "Destination",
                         "destinationSettings": {"endpointRef": "files",
                                                 "dataDestination": "plant/line1"}},
                    ],
                },
            },
        ])

    def args(self) -> list[str]:
        return ["--volumes-dir", str(self.volumes), "--schemas-dir", str(self.schemas)]

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.name.endswith(".parquet"))

    def temps(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return [p for p in self.folder.iterdir() if p.name.endswith(".tmp")]

    def rows_on_disk(self) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files())

    def seqs(self) -> list[int]:
        return [s for f in self.files() for s in pq.read_table(f, columns=["seq"])["seq"].to_pylist()]


def start(sluice: Harness, storage: Storage, src_host: str) -> Dataplane:
    dp = sluice.dataplane(cores=CORES, extra=storage.args())
    sluice.agent(storage.config, dp, src_host)
    return dp


def wait_subscribed(sluice: Harness, dp: Dataplane, port: int) -> None:
    """Publish a probe row (seq -1) until the data plane has received one."""
    pub = sluice.client(port, "probe")

    def received() -> bool:
        pub.publish("factory/probe", payload(-1))
        v = dp.metrics().value("sluice_messages_received_total", dataflow=key("to-parquet"))
        return bool(v and v >= 1)

    wait_until("the dataflow to receive a probe", received, timeout=30, every=0.2)


AHEAD = 5_000


def publish_window(pub: Client, seqs: range, stop: threading.Event | None = None) -> None:
    """Publish SEQS at QoS 1, at most AHEAD beyond what the broker acknowledged."""
    for i, s in enumerate(seqs):
        while i - pub.acked > AHEAD:
            if stop is not None and stop.is_set():
                return
            time.sleep(0.001)
        pub.publish(f"factory/line{s % 4}/temp", payload(s))


def publish_all(sluice: Harness, port: int, seqs: range) -> None:
    pub = sluice.client(port, "pub")
    publish_window(pub, seqs)
    wait_until(
        "the source broker to acknowledge every message",
        lambda: pub.acked >= len(seqs), timeout=DONE_TIMEOUT_S, every=0.2,
    )


def writer_of(name: str) -> str:
    """`<time>-<writer>-<run>-<seq>.parquet` -> writer."""
    stem = name.removesuffix(".parquet")
    return stem[21:].rsplit("-", 2)[0]


def test_every_message_becomes_one_row_read_by_pyarrow_and_duckdb(sluice: Harness) -> None:
    src = sluice.mosquitto("src", extra="max_inflight_messages 0\n")
    storage = Storage(sluice, src.host)
    dp = start(sluice, storage, src.host)
    wait_subscribed(sluice, dp, src.port)
    dp.wait_ready(timeout=30)
    publish_all(sluice, src.port, range(N))
    wait_until(
        "every message in a file",
        lambda: storage.rows_on_disk() >= N + 1,
        timeout=DONE_TIMEOUT_S, every=0.5,
    )
    files = storage.files()
    assert not storage.temps(), storage.temps()

    # pyarrow: the schema as configured, every row once.
    table = pa.concat_tables(pq.read_table(f) for f in files)
    schema = table.schema
    assert schema.field("deviceId").type == pa.string() and not schema.field("deviceId").nullable
    assert schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("temperature").type == pa.float64()
    assert schema.field("humidity").type == pa.float32()
    assert schema.field("pressure").type == pa.int32()
    assert schema.field("online").type == pa.bool_()
    assert schema.field("seq").type == pa.int64()
    assert schema.field("_topic").type == pa.string()
    assert schema.field("_received_time").type == pa.timestamp("us", tz="UTC")
    assert schema.names == ["deviceId", "timestamp", "temperature", "humidity", "pressure",
                            "online", "seq", "_topic", "_received_time"]
    seqs = [s for s in table["seq"].to_pylist() if s >= 0]
    assert sorted(seqs) == list(range(N)), f"{len(seqs)} rows, {len(set(seqs))} distinct"
    row = table.filter(pa.compute.equal(table["seq"], 1234)).to_pylist()[0]
    want = json.loads(payload(1234))
    assert row["deviceId"] == want["deviceId"] and row["pressure"] == want["pressure"]
    assert abs(row["temperature"] - want["temperature"]) < 1e-9
    assert row["timestamp"].isoformat() == "2026-12-02T08:20:34.234000+00:00"
    assert row["_topic"] == "factory/line2/temp"

    # duckdb, on its own reader.
    glob = str(storage.folder / "*.parquet")
    con = duckdb.connect()
    count, distinct, lo, hi = con.execute(
        f"SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM read_parquet('{glob}') "
        "WHERE seq >= 0"
    ).fetchone()
    assert (count, distinct, lo, hi) == (N, N, 0, N - 1)
    types = dict(con.execute(
        f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet('{glob}'))"
    ).fetchall())
    assert types["timestamp"] == "TIMESTAMP WITH TIME ZONE", types
    assert types["pressure"] == "INTEGER" and types["humidity"] == "FLOAT", types
    online = con.execute(
        f"SELECT count(*) FROM read_parquet('{glob}') WHERE seq >= 0 AND online"
    ).fetchone()[0]
    assert online == sum(1 for s in range(N) if s % 3 != 0)

    # Rows per file as the roll settings say: each writer's files hold maxMessages rows, but
    # its last (cut by age); names never collide across the two cores.
    by_writer: dict[str, list[Path]] = {}
    for f in files:
        by_writer.setdefault(writer_of(f.name), []).append(f)
    assert len(by_writer) == CORES, sorted(by_writer)
    for writer, fs in by_writer.items():
        counts = [pq.ParquetFile(f).metadata.num_rows for f in fs]
        assert all(c <= MAX_ROWS for c in counts), (writer, counts)
        full = [c for c in counts[:-1] if c == MAX_ROWS]
        assert len(full) >= len(counts) - 3, (writer, counts)
        assert pq.ParquetFile(fs[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    m = dp.metrics()
    assert m.value("sluice_messages_forwarded_total", dataflow=key("to-parquet")) >= N


def test_kill_9_mid_stream_loses_nothing_and_leaves_no_partial_file(sluice: Harness) -> None:
    src = sluice.mosquitto("src", extra="max_inflight_messages 0\n")
    storage = Storage(sluice, src.host)
    dp = start(sluice, storage, src.host)
    wait_subscribed(sluice, dp, src.port)
    pub = sluice.client(src.port, "pub")
    stop = threading.Event()

    t = threading.Thread(target=publish_window, args=(pub, range(N), stop), daemon=True)
    sluice.closers.append(stop.set)
    t.start()
    wait_until("30% of the rows on disk", lambda: storage.rows_on_disk() >= N * 0.3,
               timeout=DONE_TIMEOUT_S, every=0.2)
    dp.kill9()
    # A temporary file a crash left behind (this writer's, of another run) is removed at start;
    # another writer's is not touched.
    ours = storage.folder / ".20260101T000000.000Z-to-parquet-dst-0-00000000-000001.parquet.tmp"
    theirs = storage.folder / ".20260101T000000.000Z-other-dst-0-00000000-000001.parquet.tmp"
    ours.write_bytes(b"PAR1 partial")
    theirs.write_bytes(b"PAR1 partial")
    dp.start()
    t.join(timeout=DONE_TIMEOUT_S)
    wait_until("every message in a file after the restart",
               lambda: set(range(N)) <= set(storage.seqs()),
               timeout=DONE_TIMEOUT_S, every=1.0)
    assert not ours.exists(), "the earlier run's temporary file is removed"
    assert theirs.exists(), "another writer's temporary file is left alone"
    dp.stop()
    theirs.unlink()
    assert not storage.temps(), storage.temps()
    seqs = [s for s in storage.seqs() if s >= 0]
    for f in storage.files():
        pq.read_table(f)  # every file is complete
    dups = len(seqs) - len(set(seqs))
    print(f"kill -9: {len(seqs)} rows for {N} messages, {dups} duplicates")


def test_what_does_not_fit_is_dead_lettered_with_its_reason(sluice: Harness) -> None:
    src = sluice.mosquitto("src")
    storage = Storage(sluice, src.host, deadLetter="Enabled")
    dp = start(sluice, storage, src.host)
    wait_subscribed(sluice, dp, src.port)
    pub = sluice.client(src.port, "pub")
    bad_type = json.loads(payload(100))
    bad_type["temperature"] = "hot"
    missing = json.loads(payload(101))
    del missing["seq"]
    for s in range(10):
        pub.publish("factory/good", payload(s))
    pub.publish("factory/bad", json.dumps(bad_type))
    pub.publish("factory/bad", json.dumps(missing))
    pub.publish("factory/bad", "not json at all")
    pub.publish("factory/bad", b"\xff\xfe")
    pub.publish("factory/bad", "[1, 2, 3]")

    def letters() -> list[dict]:
        return [json.loads(line) for f in storage.folder.glob("*.deadletter.jsonl")
                for line in f.read_text().splitlines()]

    wait_until("5 dead letters", lambda: len(letters()) >= 5, timeout=30, every=0.3)
    reasons = sorted(letter["reason"] for letter in letters())
    assert any('"temperature": expected a number, found a string' in r for r in reasons), reasons
    assert any('"seq" is missing' in r for r in reasons), reasons
    assert sum(r.startswith("not JSON") for r in reasons) == 2, reasons
    assert any("expected an object, found an array" in r for r in reasons), reasons
    base64 = [letter for letter in letters() if "payloadBase64" in letter]
    assert base64 and base64[0]["payloadBase64"] == "//4=", letters()
    assert all(letter["topic"] == "factory/bad" for letter in letters())
    wait_until("the good rows", lambda: len([s for s in storage.seqs() if s >= 0]) == 10,
               timeout=30, every=0.3)
    m = dp.metrics()
    k = key("to-parquet")
    assert m.value("sluice_messages_dropped_total", dataflow=k, reason="schema_mismatch") == 3
    assert m.value("sluice_messages_dropped_total", dataflow=k, reason="not_json") == 2


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")


def mount_tmpfs(sluice: Harness, at: Path, size: str, *opts: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *opts]),
                    "tmpfs", str(at)], check=True, timeout=30)
    sluice.closers.append(lambda: subprocess.run(["umount", "-l", str(at)], timeout=30))


def remount(at: Path, *opts: str) -> None:
    subprocess.run(["mount", "-o", ",".join(["remount", *opts]), str(at)], check=True, timeout=30)


def test_a_full_volume_acknowledges_nothing_until_there_is_room(sluice: Harness) -> None:
    needs_root()
    src = sluice.mosquitto("src", extra="max_inflight_messages 0\n")
    storage = Storage(sluice, src.host)
    mount_tmpfs(sluice, storage.volume, "16k")
    dp = start(sluice, storage, src.host)
    wait_subscribed(sluice, dp, src.port)
    n = 20_000
    pub = sluice.client(src.port, "pub")
    threading.Thread(target=publish_window, args=(pub, range(n)), daemon=True).start()

    def says_full() -> bool:
        status, body = dp.get("/readyz")
        return status == 503 and "No space left on device" in body

    wait_until("/readyz to say the volume is full", says_full, timeout=60, every=0.3)
    assert not storage.files() or storage.rows_on_disk() < 1000, "nothing much fits"
    forwarded = dp.metrics().value("sluice_messages_forwarded_total", dataflow=key("to-parquet"))
    assert forwarded == storage.rows_on_disk(), "only what is on disk is acknowledged"
    assert not storage.temps(), storage.temps()
    remount(storage.volume, "size=256m")
    wait_until("every message written once there is room",
               lambda: set(range(n)) <= set(storage.seqs()), timeout=120, every=0.5)
    dp.wait_ready(timeout=30)


def test_a_read_only_volume_is_not_ready_until_it_is_writable(sluice: Harness) -> None:
    needs_root()
    src = sluice.mosquitto("src")
    storage = Storage(sluice, src.host)
    mount_tmpfs(sluice, storage.volume, "64m")
    remount(storage.volume, "ro")
    dp = start(sluice, storage, src.host)

    def says_read_only() -> bool:
        status, body = dp.get("/readyz")
        return status == 503 and "Read-only file system" in body

    wait_until("/readyz to say the volume is read-only", says_read_only, timeout=30, every=0.3)
    remount(storage.volume, "rw")
    wait_subscribed(sluice, dp, src.port)
    pub = sluice.client(src.port, "pub")
    for s in range(100):
        pub.publish("factory/line/temp", payload(s))
    wait_until("the rows, once the volume is writable",
               lambda: set(range(100)) <= set(storage.seqs()), timeout=60, every=0.3)
    dp.wait_ready(timeout=30)
    if not storage.files():
        raise Failure("no file")


ALL_TYPES = {
    "$schema": "Delta/1.0",
    "type": "object",
    "properties": {
        "type": "struct",
        "fields": [
            {"name": "id", "type": "string", "nullable": False, "metadata": {}},
            {"name": "n", "type": "long", "nullable": True, "metadata": {}},
            {"name": "i", "type": "integer", "nullable": True, "metadata": {}},
            {"name": "s", "type": "short", "nullable": True, "metadata": {}},
            {"name": "b", "type": "byte", "nullable": True, "metadata": {}},
            {"name": "d", "type": "double", "nullable": True, "metadata": {}},
            {"name": "f", "type": "float", "nullable": True, "metadata": {}},
            {"name": "ok", "type": "boolean", "nullable": True, "metadata": {}},
            {"name": "raw", "type": "binary", "nullable": True, "metadata": {}},
            {"name": "day", "type": "date", "nullable": True, "metadata": {}},
            {"name": "ts", "type": "timestamp", "nullable": True, "metadata": {}},
            {"name": "local", "type": "timestamp_ntz", "nullable": True, "metadata": {}},
            {"name": "pos", "nullable": True, "metadata": {}, "type": {"type": "struct", "fields": [
                {"name": "x", "type": "double", "nullable": False, "metadata": {}},
                {"name": "tags", "nullable": True, "metadata": {},
                 "type": {"type": "array", "elementType": "string", "containsNull": True}},
            ]}},
        ],
    },
}


def test_every_type_and_the_user_properties_column_read_back(sluice: Harness) -> None:
    """Each Delta type, nested ones included, and `_user_properties`, in a Snappy file, as
    pyarrow and duckdb read them."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    src = sluice.mosquitto("src")
    storage = Storage(sluice, src.host, compression="Snappy",
                      metadataColumns=["Topic", "UserProperties"],
                      batching={"latencySeconds": 1, "maxMessages": 1000})
    (sluice.tmp / "schemas" / "factory" / "telemetry-1.0.0.json").write_text(json.dumps(ALL_TYPES))
    dp = start(sluice, storage, src.host)
    pub = sluice.client(src.port, "pub")
    full = {"id": "dev-1", "n": -12, "i": 7, "s": 300, "b": -5, "d": 21.53, "f": 0.5, "ok": True,
            "raw": "aGk=", "day": "2026-12-02", "ts": "2026-12-02T09:15:00.5+01:00",
            "local": "2026-12-02T08:15:00", "pos": {"x": 1.5, "tags": ["a", None, "b"]}}
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("site", "munich"), ("site", "plant-2")]

    def published() -> bool:
        pub.publish("factory/all", json.dumps(full), properties=props)
        return bool(storage.files())

    wait_until("a file", published, timeout=30, every=1.0)
    table = pq.read_table(storage.files()[0])
    assert pq.ParquetFile(storage.files()[0]).metadata.row_group(0).column(0).compression == "SNAPPY"
    schema = table.schema
    assert schema.field("n").type == pa.int64() and schema.field("i").type == pa.int32()
    assert schema.field("s").type == pa.int16() and schema.field("b").type == pa.int8()
    assert schema.field("f").type == pa.float32() and schema.field("raw").type == pa.binary()
    assert schema.field("day").type == pa.date32()
    assert schema.field("local").type == pa.timestamp("us")
    row = table.to_pylist()[0]
    assert row["raw"] == b"hi" and str(row["day"]) == "2026-12-02"
    assert row["ts"].isoformat() == "2026-12-02T08:15:00.500000+00:00"
    assert row["local"].isoformat() == "2026-12-02T08:15:00"
    assert row["pos"] == {"x": 1.5, "tags": ["a", None, "b"]}
    assert row["_user_properties"] == [{"key": "site", "value": "munich"},
                                       {"key": "site", "value": "plant-2"}]
    assert row["_topic"] == "factory/all"
    glob = str(storage.folder / "*.parquet")
    tags, site = duckdb.connect().execute(
        f"SELECT pos.tags[3], _user_properties[2].value FROM read_parquet('{glob}') LIMIT 1"
    ).fetchone()
    assert (tags, site) == ("b", "plant-2")
    assert dp.metrics().value("sluice_messages_dropped_total", dataflow=key("to-parquet"),
                              reason="schema_mismatch") is None


def test_kafka_records_into_parquet(sluice: Harness, tansu: object) -> None:
    """A Kafka source into LocalStorage: records produced with confluent-kafka into two
    partitions, read by the consumer group on two cores, every one a row once its file is in
    place (the offsets committed only then)."""
    from confluent_kafka import Producer

    from dataplane import kafka_create_topics, kafka_endpoint

    bootstrap = tansu.env["KAFKA_BOOTSTRAP"]  # type: ignore[attr-defined]
    kafka_create_topics({"bootstrap.servers": bootstrap}, ["readings"], 2)
    n = 5_000
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for s in range(n):
        p.produce("readings", payload(s).encode())
        p.poll(0)
    assert p.flush(60) == 0
    # The same LocalStorage dataflow, with a Kafka source instead of MQTT (no local broker:
    # the harness's agent runs with --allow-no-local-broker).
    storage = Storage(sluice, "127.0.0.1:1",
                      source=kafka_endpoint("src", bootstrap, consumerGroupId="to-parquet"),
                      data_sources=["readings"],
                      batching={"latencySeconds": 1, "maxMessages": 2000})
    dp = start(sluice, storage, "127.0.0.1:1")
    wait_until("every record a row", lambda: set(range(n)) <= set(storage.seqs()),
               timeout=90, every=0.5)
    assert all(pq.ParquetFile(f).metadata.num_rows <= 2000 for f in storage.files())
    assert len({writer_of(f.name) for f in storage.files()}) == CORES
    topics = {t for f in storage.files() for t in pq.read_table(f, columns=["_topic"])["_topic"].to_pylist()}
    assert topics == {"readings"}
    dp.wait_ready(timeout=30)
