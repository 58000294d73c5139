"""Runs `sluice-perf load` for the tests: its exit status, output and JSON report."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Run:
    status: int
    out: str
    err: str
    report: dict[str, Any] | None
    dir: Path

    def why(self) -> str:
        return f"exit {self.status}\n--- stdout\n{self.out}\n--- stderr\n{self.err[-4000:]}"


def load(bins: Path, out: Path, *args: str, timeout: float = 120) -> Run:
    """`sluice-perf load ARGS --out OUT --quiet`; the JSON report when it was written."""
    argv = [str(bins / "sluice-perf"), "load", "--out", str(out), "--quiet", *args]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    report_file = out / "report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else None
    return Run(proc.returncode, proc.stdout, proc.stderr, report, out)


def start(bins: Path, out: Path, *args: str) -> subprocess.Popen[str]:
    """The same, started in the background (for runs that overlap)."""
    argv = [str(bins / "sluice-perf"), "load", "--out", str(out), "--quiet", *args]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )


def finish(proc: subprocess.Popen[str], out: Path, timeout: float = 120) -> Run:
    stdout, stderr = proc.communicate(timeout=timeout)
    report_file = out / "report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else None
    return Run(proc.returncode, stdout, stderr, report, out)


def figures(r: dict[str, Any]) -> str:
    """p50/p99/p99.9 and the rates of a report, on one line."""
    lat = r.get("latency") or {}
    return (
        f"sent {r['sent']} ({r['send_rate']:.0f}/s) received {r['received']} lost {r['lost']} "
        f"duplicates {r['duplicates']} p50 {lat.get('p50_us', 0):.0f} us "
        f"p99 {lat.get('p99_us', 0):.0f} us p99.9 {lat.get('p999_us', 0):.0f} us"
    )
