"""Start and stop the test brokers through the scripts in scripts/ (shared by the fixtures in
conftest.py and by record_capture.py).

A start script runs the broker in the background with its files in a directory of its own, and
returns once the broker accepts connections; its settings (ports, credentials, certificate paths,
log file, pid) are KEY=value lines in DIR/env.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


class StartError(RuntimeError):
    """A start script failed; the message holds what it printed (which names what is missing)."""


@dataclass(frozen=True)
class Broker:
    """A broker that a start script launched."""

    name: str
    dir: Path
    env: dict[str, str]

    @property
    def log(self) -> Path:
        return Path(self.env["LOG"])

    def port(self, key: str) -> int:
        return int(self.env[key])


def read_env(path: Path) -> dict[str, str]:
    """Parse the KEY=value lines that a start script writes (values are never quoted)."""
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            env[key.strip()] = value
    return env


def start(name: str, dir: Path, args: Sequence[str] = ()) -> Broker:
    """Run scripts/NAME-start DIR [ARGS...] and return the broker it started."""
    script = SCRIPTS / f"{name}-start"
    proc = subprocess.run(
        [script, dir, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )
    if proc.returncode != 0:
        raise StartError(
            f"scripts/{script.name} {dir} failed with exit status {proc.returncode}:\n"
            f"{proc.stderr}{proc.stdout}"
        )
    return Broker(name, dir, read_env(dir / "env"))


def stop(broker: Broker) -> None:
    """Run scripts/stop DIR: the broker gets SIGTERM, then SIGKILL if it lingers."""
    subprocess.run(
        [SCRIPTS / "stop", broker.dir],
        stdin=subprocess.DEVNULL,
        check=True,
        timeout=STOP_TIMEOUT_S,
    )


def kill9(broker: Broker) -> None:
    """SIGKILL the broker (no chance to save anything), wait until it is gone, and forget its
    pid file, so that scripts/NAME-start can start it again in the same DIR."""
    pid = int(broker.env["PID"])
    pid_file = broker.dir / "pid"
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{broker.name} (pid {pid}) still there {STOP_TIMEOUT_S} s after SIGKILL"
            )
        time.sleep(0.02)
    pid_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether PID runs (a zombie, exited but not reaped yet, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
