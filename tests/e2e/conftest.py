"""Fixtures for the end-to-end tests.

Every test that asks for a broker gets its own, started by the scripts in scripts/ on free ports
in the test's temporary directory, and stopped when the test ends. When a test fails, the log of
each broker it used is added to the failure report. A broker that cannot start (a tool is
missing, say) fails the test with the script's message; nothing is skipped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import confluent_kafka
import pytest

import brokers
import dataplane

LOG_TAIL_LINES = 200

_BROKERS = pytest.StashKey[list[brokers.Broker]]()


def _run_broker(request: pytest.FixtureRequest, name: str, dir: Path) -> Iterator[brokers.Broker]:
    try:
        broker = brokers.start(name, dir)
    except brokers.StartError as err:
        pytest.fail(str(err), pytrace=False)
    request.node.stash.setdefault(_BROKERS, []).append(broker)
    try:
        yield broker
    finally:
        brokers.stop(broker)


@pytest.fixture
def mosquitto(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[brokers.Broker]:
    """A mosquitto with plain, TLS, mutual-TLS and username/password listeners.

    `env` holds MQTT_PORT, MQTT_TLS_PORT, MQTT_MTLS_PORT, MQTT_AUTH_PORT, MQTT_USER,
    MQTT_PASSWORD, CA_FILE, CLIENT_CERT and CLIENT_KEY (see scripts/mosquitto-start).
    """
    yield from _run_broker(request, "mosquitto", tmp_path / "mosquitto")


@pytest.fixture
def tansu(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[brokers.Broker]:
    """A tansu Kafka-protocol broker (sqlite storage in the test's folder, scripts/tansu-start's
    default); `env` holds KAFKA_BOOTSTRAP.

    It does not create topics on first use: create them with the admin API.
    """
    yield from _run_broker(request, "tansu", tmp_path / "tansu")


KCAT_TIMEOUT_S = 30


@pytest.fixture
def kcat(tmp_path: Path) -> Callable[..., str]:
    """Run kcat with the given arguments (and optional `stdin=` text); return its stdout, fail
    the test on a non-zero exit.

    Debian 12's kcat links librdkafka 2.0.2, which cannot parse tansu's ApiVersions v3 response
    (it chokes on the response's tagged fields, which the Kafka protocol allows), so kcat runs
    with the newer librdkafka that the confluent-kafka wheel bundles, through LD_LIBRARY_PATH.
    """
    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    bundled = sorted(libs.glob("librdkafka*.so*"))
    if not bundled:
        pytest.fail(f"no librdkafka in {libs}: reinstall confluent-kafka from its wheel")
    shim = tmp_path / "kcat-lib"
    shim.mkdir()
    (shim / "librdkafka.so.1").symlink_to(bundled[0])
    env = os.environ | {"LD_LIBRARY_PATH": str(shim)}

    def run(*args: str, stdin: str | None = None) -> str:
        try:
            proc = subprocess.run(
                ["kcat", "-q", *args],
                input=stdin,
                capture_output=True,
                text=True,
                env=env,
                timeout=KCAT_TIMEOUT_S,
            )
        except FileNotFoundError:
            pytest.fail("kcat not found; install the Debian package kcat (scripts/setup does it)")
        assert proc.returncode == 0, f"kcat {' '.join(args)}: exit {proc.returncode}: {proc.stderr}"
        return proc.stdout

    return run


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report = yield
    if report.failed:
        for broker in item.stash.get(_BROKERS, []):
            try:
                lines = broker.log.read_text(errors="replace").splitlines()
            except OSError as err:
                lines = [f"(cannot read the log: {err})"]
            text = "\n".join(lines[-LOG_TAIL_LINES:])
            report.sections.append(
                (f"{broker.name} log (last {LOG_TAIL_LINES} lines of {broker.log})", text)
            )
    return report


# --- data plane tests (test_dataplane_*.py) -------------------------------------------------


@dataclass(frozen=True)
class _Log:
    """A log file to show when the test fails (read like a broker's by the report hook)."""

    name: str
    log: Path


@pytest.fixture(scope="session")
def sluice_bins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder with the `dataplane` and `config-agent` binaries: $SLUICE_BIN_DIR as given, or
    target/release after one `cargo build --release` per session (a no-op when up to date)."""
    try:
        return dataplane.build_binaries(tmp_path_factory.mktemp("build") / "cargo-build.log")
    except dataplane.Failure as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture
def sluice(
    request: pytest.FixtureRequest, tmp_path: Path, sluice_bins: Path
) -> Iterator[dataplane.Harness]:
    """Starts mosquittos, the data plane, the agent and paho clients for one test, in its
    tmp_path; stops them all at teardown, and adds their logs to the report of a failed test."""

    def on_log(name: str, path: Path) -> None:
        request.node.stash.setdefault(_BROKERS, []).append(_Log(name, path))  # type: ignore[arg-type]

    harness = dataplane.Harness(tmp_path, sluice_bins, on_log)
    try:
        yield harness
    finally:
        harness.close()


# --- brokers started, stopped and restarted by the test itself ---------------------------------


@pytest.fixture
def start_broker(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., brokers.Broker]]:
    """`start_broker(name, dirname, *args)` runs scripts/NAME-start tmp_path/DIRNAME ARGS and
    returns the broker; the test may stop it (brokers.stop, brokers.kill9) and start it again in
    the same DIRNAME (tansu with `--storage sqlite --port P` keeps its data and port). Whatever
    still runs is stopped at teardown, and the logs go into a failed test's report.

    Ask for this fixture before `sluice` in the test's arguments, so that the data plane stops
    first (its drain waits for its destination)."""
    dirs: list[Path] = []

    def start(name: str, dirname: str, *args: str) -> brokers.Broker:
        dir = tmp_path / dirname
        try:
            broker = brokers.start(name, dir, args)
        except brokers.StartError as err:
            pytest.fail(str(err), pytrace=False)
        if dir not in dirs:
            dirs.append(dir)
            request.node.stash.setdefault(_BROKERS, []).append(broker)
        return broker

    yield start
    for dir in reversed(dirs):
        brokers.stop(brokers.Broker(dir.name, dir, {}))
