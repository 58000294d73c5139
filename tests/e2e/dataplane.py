"""Helpers for the data plane's end-to-end tests: mosquitto instances of the test's own
configuration, the `dataplane` and `config-agent` binaries as processes, manifests written to a
watched folder, /metrics parsing, and paho-mqtt clients (MQTT 5) that record what they receive.

Why a mosquitto of our own rather than scripts/mosquitto-start: these tests need one plain
listener with settings the shared script does not offer:
- `max_queued_messages 0` (mosquitto 2.0: no limit; the default 1000 silently drops QoS 1
  messages beyond it for a client that is offline or slow, which would make a loss test fail for
  the wrong reason);
- `max_inflight_messages` raised, so that the test's own clients are not the bottleneck;
- `persistence true` for the broker restart test, and a restart on the same port.

Every process writes its output to a log file in the test's directory; `Harness.logs` lists them
so that a failing test shows them. Every wait polls with a bounded timeout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR_ENV = "SLUICE_BIN_DIR"
NAMESPACE = "azure-iot-operations"
WAIT_S = 10.0
BUILD_TIMEOUT_S = 1800


class Failure(AssertionError):
    """A helper could not do what it was asked (a process died, a wait timed out)."""


# --- waiting ----------------------------------------------------------------------------------


# Checks that every wait runs at each poll (the running test's processes are still up), so that a
# process that dies makes the test fail at once, with its exit status, rather than time out.
GUARDS: list[Callable[[], None]] = []


def wait_until(
    what: str, cond: Callable[[], Any], timeout: float = WAIT_S, every: float = 0.02
) -> Any:
    """Poll COND until it returns something truthy (returned), at most TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for guard in GUARDS:
            guard()
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Failure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# --- binaries ---------------------------------------------------------------------------------


def bin_dir() -> Path:
    return Path(os.environ.get(BIN_DIR_ENV) or ROOT / "target" / "release")


def build_binaries(log: Path) -> Path:
    """Build `dataplane`, `config-agent` and `sluice-perf` (release) unless SLUICE_BIN_DIR names
    a folder that already has them; return the folder. cargo is a no-op when they are up to
    date."""
    if os.environ.get(BIN_DIR_ENV):
        d = bin_dir()
        for name in ("dataplane", "config-agent", "sluice-perf"):
            if not os.access(d / name, os.X_OK):
                raise Failure(f"{BIN_DIR_ENV}={d}: no executable {name} there")
        return d
    cmd = ["cargo", "build", "--release", "-p", "sluice", "-p", "sluice-perf", "--bin", "dataplane",
           "--bin", "config-agent", "--bin", "sluice-perf"]
    try:
        with log.open("wb") as out:
            proc = subprocess.run(
                cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT_S,
            )
    except FileNotFoundError:
        raise Failure("cargo not found: install Rust (see scripts/setup)") from None
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
        raise Failure(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")
    return bin_dir()


# --- processes --------------------------------------------------------------------------------


def wait_progress(
    what: str, count: Callable[[], int], target: int, stall_s: float, timeout: float
) -> None:
    """Wait until COUNT() reaches TARGET (at most TIMEOUT seconds); fail as soon as it has not
    grown for STALL_S seconds."""
    last, last_change = -1, time.monotonic()

    def done() -> bool:
        nonlocal last, last_change
        n = count()
        if n != last:
            last, last_change = n, time.monotonic()
        if n >= target:
            return True
        if time.monotonic() - last_change > stall_s:
            raise Failure(f"{what}: stuck at {n} of {target} for {stall_s} s")
        return False

    wait_until(what, done, timeout, 0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Process:
    """A child process whose stdout and stderr go to LOG (appended over restarts)."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None
        # Started and not stopped by the test: it must be running.
        self.expected = False

    def _spawn(self, argv: list[str], cwd: Path) -> None:
        with self.log.open("ab") as out:
            out.write(f"==== {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
            out.flush()
            try:
                self.popen = subprocess.Popen(
                    argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                )
            except FileNotFoundError:
                raise Failure(f"{argv[0]} not found (scripts/setup installs it)") from None
        self.expected = True

    def check(self) -> None:
        """Fail when the process exited although the test did not stop it."""
        if self.expected and self.popen is not None and self.popen.poll() is not None:
            self.expected = False
            tail = "\n".join(self.log_text().splitlines()[-15:])
            hint = ""
            if "signal=15" in tail or self.popen.returncode in (-15, 143):
                hint = " (SIGTERM, and this test sent none: another process did)"
            raise Failure(f"{self.name} exited with status {self.popen.returncode}{hint}:\n{tail}")

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def kill9(self) -> None:
        """SIGKILL, and reap it."""
        self.expected = False
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=WAIT_S)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, SIGKILL after TIMEOUT; returns the exit status (None if never started)."""
        self.expected = False
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=WAIT_S)
        return self.popen.returncode


class Mosquitto(Process):
    """A mosquitto with one plain, anonymous listener on 127.0.0.1, configured for these tests
    (see the module documentation). `restart()` keeps the port and the persistence file."""

    def __init__(self, dir: Path, name: str, persistence: bool = False, extra: str = "") -> None:
        dir.mkdir(parents=True, exist_ok=True)
        super().__init__(name, dir / "mosquitto.log")
        self.dir = dir
        self.persistence = persistence
        self.extra = extra
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _config(self) -> str:
        conf = f"""# Written by tests/e2e/dataplane.py
listener {self.port} 127.0.0.1
allow_anonymous true
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 1000
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp true
user {_user()}
"""
        if self.persistence:
            conf += f"persistence true\npersistence_location {self.dir}/\nautosave_interval 3600\n"
        else:
            conf += "persistence false\n"
        return conf + self.extra

    def start(self, keep_port: bool = False) -> None:
        """Start; with KEEP_PORT the same port as before (retried while it is taken)."""
        deadline = time.monotonic() + WAIT_S
        attempts = 0
        while True:
            attempts += 1
            if not keep_port:
                self.port = free_port()
            conf = self.dir / "mosquitto.conf"
            conf.write_text(self._config())
            before = len(self.log_text())
            self._spawn(["mosquitto", "-c", str(conf)], self.dir)
            start = time.monotonic()
            while self.alive() and not accepts(self.port):
                if time.monotonic() - start > WAIT_S:
                    self.kill9()
                    raise Failure(f"{self.name}: no connection accepted within {WAIT_S} s")
                time.sleep(0.02)
            if self.alive():
                return
            text = self.log_text()[before:]
            if "Address already in use" not in text or attempts >= 5 or (
                keep_port and time.monotonic() > deadline
            ):
                raise Failure(f"{self.name} exited at start:\n{text}")
            time.sleep(0.1 if keep_port else 0)

    def restart(self) -> None:
        self.stop()
        self.start(keep_port=True)

    def connections(self, client_id: str) -> int:
        """How many times CLIENT_ID connected, from the broker's log."""
        pattern = rf"New client connected from \S+ as {re.escape(client_id)} "
        return len(re.findall(pattern, self.log_text()))


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Dataplane(Process):
    """The `dataplane` binary. `start()` returns once /metrics answers (its port is parsed from
    the log); a restart keeps the control socket path."""

    def __init__(self, dir: Path, bins: Path, cores: int = 2, extra: Iterable[str] = ()) -> None:
        dir.mkdir(parents=True, exist_ok=True)
        super().__init__("dataplane", dir / "dataplane.log")
        self.dir = dir
        self.bin = bins / "dataplane"
        self.socket = dir / "control.sock"
        self.cores = cores
        self.extra = list(extra)
        self.metrics_addr = ""

    def start(self) -> None:
        before = len(self.log_text())
        self._spawn(
            [
                str(self.bin),
                "--control-socket", str(self.socket),
                "--cores", str(self.cores),
                "--metrics-addr", "127.0.0.1:0",
                *self.extra,
            ],
            self.dir,
        )

        def addr() -> str | None:
            if not self.alive():
                raise Failure(f"dataplane exited at start:\n{self.log_text()[before:]}")
            text = _ANSI.sub("", self.log_text()[before:])
            m = re.search(r"metrics listening.*?addr=(\S+)", text)
            return m.group(1) if m else None

        self.metrics_addr = wait_until("the dataplane's metrics address in its log", addr)
        wait_until("the control socket", self.socket.exists)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.metrics_addr}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> Metrics:
        status, body = self.get("/metrics")
        assert status == 200, f"/metrics: {status} {body}"
        return Metrics.parse(body)

    def wait_ready(self, timeout: float = WAIT_S) -> None:
        wait_until("/readyz 200", lambda: self.get("/readyz")[0] == 200, timeout, 0.05)

    def wait_connected(
        self, dataflow: str, cores: int | None = None, timeout: float = WAIT_S
    ) -> None:
        """Until both sides of DATAFLOW have a session up on CORES cores (default: all)."""
        want = self.cores if cores is None else cores

        def up() -> bool:
            m = self.metrics()
            return all(
                m.value("sluice_session_connected", dataflow=key(dataflow), side=s) == want
                for s in ("source", "destination")
            )

        wait_until(f"{dataflow}: {want} sessions up per side", up, timeout, 0.05)


class ConfigAgent(Process):
    """`config-agent run` watching CONFIG_DIR."""

    def __init__(
        self, dir: Path, bins: Path, config_dir: Path, socket_path: Path, local_broker: str
    ) -> None:
        dir.mkdir(parents=True, exist_ok=True)
        super().__init__("config-agent", dir / "config-agent.log")
        self.dir = dir
        self.argv = [
            str(bins / "config-agent"), "run",
            "--config-dir", str(config_dir),
            "--control-socket", str(socket_path),
            "--local-broker", local_broker,
            "--allow-no-local-broker",
            "--poll-ms", "50",
            "--debounce-ms", "150",
        ]

    def start(self) -> None:
        self._spawn(self.argv, self.dir)


def key(dataflow: str) -> str:
    """The `dataflow` label of a dataflow: namespace/name."""
    return dataflow if "/" in dataflow else f"{NAMESPACE}/{dataflow}"


# --- /metrics ---------------------------------------------------------------------------------


@dataclass
class Metrics:
    """Prometheus text format, parsed: (name, labels, value) per sample."""

    samples: list[tuple[str, dict[str, str], float]]

    _LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
    _LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = cls._LINE.match(line)
            if m:
                labels = dict(cls._LABEL.findall(m.group(2) or ""))
                samples.append((m.group(1), labels, float(m.group(3))))
        return cls(samples)

    def value(self, name: str, **labels: str) -> float | None:
        """The sample of NAME whose labels include LABELS; None when there is none."""
        for n, ls, v in self.samples:
            if n == name and all(ls.get(k) == want for k, want in labels.items()):
                return v
        return None


# --- manifests --------------------------------------------------------------------------------

API = "connectivity.iotoperations.azure.com/v1"


def mqtt_endpoint(name: str, host: str, **settings: Any) -> dict:
    return {
        "apiVersion": API,
        "kind": "DataflowEndpoint",
        "metadata": {"name": name},
        "spec": {
            "endpointType": "Mqtt",
            "mqttSettings": {
                "host": host,
                "authentication": {"method": "Anonymous"},
                "tls": {"mode": "Disabled"},
                **settings,
            },
        },
    }


def profile(name: str = "default", instances: int = 1) -> dict:
    return {
        "apiVersion": API,
        "kind": "DataflowProfile",
        "metadata": {"name": name},
        "spec": {"instanceCount": instances},
    }


def dataflow(name: str, source: str, filters: list[str], destination: str, topic: str) -> dict:
    return {
        "apiVersion": API,
        "kind": "Dataflow",
        "metadata": {"name": name},
        "spec": {
            "profileRef": "default",
            "operations": [
                {
                    "operationType": "Source",
                    "sourceSettings": {"endpointRef": source, "dataSources": filters},
                },
                {
                    "operationType": "Destination",
                    "destinationSettings": {"endpointRef": destination, "dataDestination": topic},
                },
            ],
        },
    }


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML; strings are double-quoted (JSON escapes are YAML escapes)."""
    pad = " " * indent
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{k}:\n{to_yaml(v, indent + 2)}")
            else:
                out.append(f"{pad}{k}: {to_yaml(v).strip()}")
        return "\n".join(out)
    if isinstance(value, list):
        if not value:
            return "[]"
        out = []
        for v in value:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 2)
                out.append(f"{pad}- {inner[indent + 2:]}")
            else:
                out.append(f"{pad}- {to_yaml(v).strip()}")
        return "\n".join(out)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return "null"
    return json.dumps(str(value))


def write_manifests(dir: Path, docs: list[dict], name: str = "sluice.yaml") -> Path:
    """Write DOCS as one multi-document YAML file in DIR, atomically (a rename), so that the
    agent never reads half a file."""
    dir.mkdir(parents=True, exist_ok=True)
    text = "\n---\n".join(to_yaml(d) for d in docs) + "\n"
    tmp = dir / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, dir / name)
    return dir / name


# --- MQTT clients -----------------------------------------------------------------------------


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    properties: dict[str, Any]


def props_dict(p: Properties | None) -> dict[str, Any]:
    if p is None:
        return {}
    return {
        k: getattr(p, k)
        for k in (
            "PayloadFormatIndicator",
            "MessageExpiryInterval",
            "ContentType",
            "ResponseTopic",
            "CorrelationData",
            "UserProperty",
        )
        if hasattr(p, k)
    }


class Client:
    """A paho-mqtt MQTT 5 client on its own network thread."""

    def __init__(
        self, port: int, name: str = "e2e",
        keep_messages: bool | Callable[[mqtt.MQTTMessage], bool] = True,
        persistent: bool = False,
    ) -> None:
        """PERSISTENT: a session the broker keeps for an hour (clean start off), so that what is
        published while the client is away (a broker restart; paho reconnects by itself) is
        delivered when it is back."""
        self.port = port
        self.persistent = persistent
        self.client_id = f"{name}-{uuid.uuid4().hex[:8]}"
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        self.c.max_inflight_messages_set(500)
        self.c.max_queued_messages_set(0)
        self.lock = threading.Lock()
        self.keep_messages = keep_messages
        self.messages: list[Received] = []
        self.count = 0
        self.on_message: Callable[[mqtt.MQTTMessage], None] | None = None
        self.connected = threading.Event()
        self.subacks: list[list[int]] = []
        self.acked = 0
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish
        self.c.on_disconnect = lambda *_: self.connected.clear()
        self.on_publish: Callable[[int], None] | None = None

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            self.connected.set()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, rcs: list[Any], _p: Any) -> None:
        with self.lock:
            self.subacks.append([int(rc.value) for rc in rcs])

    def _on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self.lock:
            self.acked += 1
        if self.on_publish is not None:
            self.on_publish(mid)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self.on_message is not None:
            self.on_message(msg)
        with self.lock:
            self.count += 1
            keep = self.keep_messages
            if keep is True or (callable(keep) and keep(msg)):
                self.messages.append(
                    Received(
                        msg.topic, msg.payload, msg.qos, bool(msg.retain), bool(msg.dup),
                        props_dict(getattr(msg, "properties", None)),
                    )
                )

    def connect(self) -> Client:
        if self.persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            self.c.connect("127.0.0.1", self.port, keepalive=60, clean_start=False,
                           properties=props)
        else:
            self.c.connect("127.0.0.1", self.port, keepalive=60, clean_start=True)
        self.c.loop_start()
        if not self.connected.wait(WAIT_S):
            raise Failure(f"{self.client_id}: no CONNACK from port {self.port} within {WAIT_S} s")
        return self

    def subscribe(
        self, filters: list[str], qos: int = 1, retain_as_published: bool = False
    ) -> None:
        opts = SubscribeOptions(qos=qos, retainAsPublished=retain_as_published)
        n = len(self.subacks)
        self.c.subscribe([(f, opts) for f in filters])
        wait_until(f"SUBACK for {filters}", lambda: len(self.subacks) > n)
        granted = self.subacks[n]
        assert all(g == qos for g in granted), f"SUBACK {filters}: {granted}"

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:
        return self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.messages)

    def wait_for(
        self, what: str, pred: Callable[[list[Received]], Any], timeout: float = WAIT_S
    ) -> Any:
        return wait_until(what, lambda: pred(self.snapshot()), timeout)

    def close(self) -> None:
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


def publish_props(**values: Any) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def probe_until_flowing(
    pub: Client, sub: Client, src_topic: str, dst_topic: str, timeout: float = WAIT_S
) -> None:
    """Publish probe messages (QoS 1) to SRC_TOPIC until one arrives on DST_TOPIC: then at least
    one source session of the dataflow has subscribed and the path works end to end."""
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        pub.publish(src_topic, f"probe {token} {n}")
        try:
            wait_until(
                f"a probe on {dst_topic}",
                lambda: any(
                    m.topic == dst_topic and m.payload.startswith(f"probe {token}".encode())
                    for m in sub.snapshot()
                ),
                timeout=min(0.5, max(0.05, deadline - time.monotonic())),
            )
            return
        except Failure:
            if time.monotonic() >= deadline:
                raise Failure(
                    f"no probe from {src_topic} arrived on {dst_topic} within {timeout:.0f} s"
                ) from None


# --- per test ---------------------------------------------------------------------------------


@dataclass
class Harness:
    """What one test started, in TMP; `close()` stops it all (in reverse order)."""

    tmp: Path
    bins: Path
    on_log: Callable[[str, Path], None]
    processes: list[Process] = field(default_factory=list)
    clients: list[Client] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        GUARDS.append(self.check)

    def check(self) -> None:
        for p in self.processes:
            p.check()

    def mosquitto(self, name: str, persistence: bool = False, extra: str = "") -> Mosquitto:
        m = Mosquitto(self.tmp / name, name, persistence, extra)
        self.processes.append(m)
        self.on_log(name, m.log)
        m.start()
        return m

    def dataplane(self, cores: int = 2, extra: Iterable[str] = ()) -> Dataplane:
        d = Dataplane(self.tmp / "dataplane", self.bins, cores, extra)
        self.processes.append(d)
        self.on_log("dataplane", d.log)
        d.start()
        return d

    def agent(self, config_dir: Path, dp: Dataplane, local_broker: str) -> ConfigAgent:
        a = ConfigAgent(self.tmp / "agent", self.bins, config_dir, dp.socket, local_broker)
        self.processes.append(a)
        self.on_log("config-agent", a.log)
        a.start()
        return a

    def client(
        self, port: int, name: str = "e2e",
        keep_messages: bool | Callable[[mqtt.MQTTMessage], bool] = True,
        persistent: bool = False,
    ) -> Client:
        c = Client(port, name, keep_messages, persistent)
        self.clients.append(c)
        return c.connect()

    def close(self) -> None:
        if self.check in GUARDS:
            GUARDS.remove(self.check)
        errors = []
        for c in reversed(self.clients):
            try:
                c.close()
            except Exception as e:  # noqa: BLE001 - clean up the rest anyway
                errors.append(e)
        for f in reversed(self.closers):
            try:
                f()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        for p in reversed(self.processes):
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        if errors:
            raise errors[0]



# --- Kafka destinations (tansu), for test_dataplane_kafka_*.py -------------------------------


def kafka_endpoint(name: str, host: str, **settings: Any) -> dict:
    """A Kafka DataflowEndpoint: anonymous, no TLS, unless SETTINGS say otherwise."""
    return {
        "apiVersion": API,
        "kind": "DataflowEndpoint",
        "metadata": {"name": name},
        "spec": {
            "endpointType": "Kafka",
            "kafkaSettings": {
                "host": host,
                "authentication": {"method": "Anonymous"},
                "tls": {"mode": "Disabled"},
                **settings,
            },
        },
    }


KAFKA_WAIT_S = 30


def kafka_create_topics(
    conf: dict[str, Any], names: Iterable[str], partitions: int = 1
) -> None:
    """Create topics with confluent-kafka's admin client (tansu does not create them on first
    use); CONF holds bootstrap.servers and any security settings."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(conf)
    names = list(names)
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names],
        request_timeout=KAFKA_WAIT_S,
    )
    for n in names:
        futures[n].result(timeout=KAFKA_WAIT_S)


class KafkaTail:
    """A confluent-kafka consumer on its own thread that reads every partition of TOPICS from the
    beginning and calls ON_RECORD(topic, value) for each record (and keeps them all when
    ON_RECORD is None). Client errors (a broker away for a while) are counted, not raised;
    `close()` ends it."""

    def __init__(
        self, conf: dict[str, Any], topics: list[str],
        on_record: Callable[[str, bytes], None] | None = None,
    ) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.lock = threading.Lock()
        self.records: list[tuple[str, bytes]] = []
        self.count = 0
        self.errors: list[str] = []
        self.on_record = on_record
        self.stop = threading.Event()
        self.consumer = Consumer(
            {
                **conf,
                "group.id": f"e2e-tail-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "error_cb": lambda e: self._error(str(e)),
            }
        )
        metadata = self.consumer.list_topics(timeout=KAFKA_WAIT_S)
        parts = []
        for t in topics:
            tm = metadata.topics.get(t)
            if tm is None or tm.error is not None or not tm.partitions:
                raise Failure(f"topic {t} not in the metadata: {tm and tm.error}")
            parts += [TopicPartition(t, p, OFFSET_BEGINNING) for p in tm.partitions]
        self.consumer.assign(parts)
        self.thread = threading.Thread(target=self._run, name="kafka-tail", daemon=True)
        self.thread.start()

    def _error(self, text: str) -> None:
        with self.lock:
            if len(self.errors) < 1000:
                self.errors.append(text)

    def _run(self) -> None:
        while not self.stop.is_set():
            for msg in self.consumer.consume(num_messages=10_000, timeout=0.2):
                if msg.error() is not None:
                    self._error(str(msg.error()))
                    continue
                value = msg.value() or b""
                if self.on_record is not None:
                    self.on_record(msg.topic(), value)
                with self.lock:
                    self.count += 1
                    if self.on_record is None:
                        self.records.append((msg.topic(), value))

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.records)

    def values(self, topic: str) -> list[bytes]:
        return [v for t, v in self.snapshot() if t == topic]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.consumer.close()


def rss_kib(pid: int) -> int:
    """The resident set size of PID in KiB (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise Failure(f"no VmRSS in /proc/{pid}/status")
