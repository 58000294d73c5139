#!/usr/bin/env python3
"""Sluice's added latency, measured with `sluice-perf load`: mosquitto -> Sluice -> mosquitto
against mosquitto alone (publishers and a subscriber on one broker), QoS 1, at 10%, 50% and 80%
of the highest rate the path through Sluice sustains on this machine (found first with a ramp:
the highest step whose messages all arrived at 99% of the offered rate or more, with a p99
below 50 ms: past it, messages queue).

    .venv/bin/python perf/scripts/added_latency.py [--steps 10000,20000,...] [--secs 20]

Needs target/release/{dataplane,config-agent,sluice-perf} (cargo build --release -p sluice
-p sluice-perf --bins) and Debian's mosquitto; uses the e2e harness (tests/e2e/dataplane.py)
to run the brokers and Sluice. Prints a markdown table; --json writes the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from dataplane import Harness, dataflow, mqtt_endpoint, profile, write_manifests  # noqa: E402

BINS = ROOT / "target" / "release"


def load(out: Path, *args: str) -> dict:
    argv = [str(BINS / "sluice-perf"), "load", "--quiet", "--out", str(out), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"sluice-perf load failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads((out / "report.json").read_text())


TIMER = "wheel"


def common(rate: str, secs: str) -> list[str]:
    return ["-c", "4", "-s", "1", "-q", "1", "-r", rate, "-d", secs, "--cores", "1",
            "--max-inflight", "1000", "--drain", "10s", "--timer", TIMER]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="5000,10000,15000,20000,25000,30000,40000,50000,60000")
    ap.add_argument("--step-secs", default="5s")
    ap.add_argument("--secs", default="20s", help="length of each latency run")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--timer", default="wheel", choices=["wheel", "precise", "auto"],
                    help="sluice-perf load --timer, the same for both setups (default wheel: "
                    "its 1 ms slop is in both columns and cancels in the difference)")
    a = ap.parse_args()
    global TIMER
    TIMER = a.timer
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        h = Harness(tmp, BINS, lambda _n, _p: None)
        try:
            alone = h.mosquitto("alone")
            src, dst = h.mosquitto("src"), h.mosquitto("dst")
            docs = [
                mqtt_endpoint("src", src.host, maxInflightMessages=1000),
                mqtt_endpoint("dst", dst.host, maxInflightMessages=1000),
                profile(),
                dataflow("bridge", "src", ["sluice-perf/#"], "dst", "out/${inputTopic}"),
            ]
            config = tmp / "config"
            write_manifests(config, docs)
            dp = h.dataplane(cores=1)
            h.agent(config, dp, src.host)
            dp.wait_ready(timeout=30)
            through = ["--url", f"mqtt://{src.host}", "--sub-url", f"mqtt://{dst.host}",
                       "--sub-topic", "out/sluice-perf/#"]
            direct = ["--url", f"mqtt://{alone.host}"]

            ramp = load(tmp / "ramp", *through, *common(a.steps, "60s"),
                        "--step-secs", a.step_secs)
            highest = 0.0
            for s in ramp["steps"]:
                ok = (s["received"] >= 0.99 * s["rate"] * s["secs"]
                      and s["latency"] and s["latency"]["p99_us"] < 50e3)
                print(f"ramp through Sluice: offered {s['rate']:.0f}/s received "
                      f"{s['received'] / s['secs']:.0f}/s p99 "
                      f"{(s['latency'] or {}).get('p99_us', 0) / 1e3:.2f} ms {'ok' if ok else 'over'}")
                if ok:
                    highest = s["rate"]
                else:
                    break
            if not highest:
                raise SystemExit("the lowest step was not sustained")
            rows = []
            for share in (0.1, 0.5, 0.8):
                rate = str(round(highest * share))
                for name, args in (("mosquitto alone", direct), ("through Sluice", through)):
                    r = load(tmp / f"{name}-{rate}".replace(" ", "-"), *args, *common(rate, a.secs))
                    lat = r["latency"]
                    rows.append({"share": share, "rate": float(rate), "setup": name,
                                 "p50_us": lat["p50_us"], "p99_us": lat["p99_us"],
                                 "p999_us": lat["p999_us"], "lost": r["lost"],
                                 "received": r["received"], "sent": r["sent"]})
            print(f"\nhighest rate through Sluice: {highest:.0f} msg/s (QoS 1, 100 B, 4 publishers)\n")
            print("| load | rate (msg/s) | setup | p50 | p99 | p99.9 | lost |")
            print("|---:|---:|---|---:|---:|---:|---:|")
            for r in rows:
                print(f"| {r['share']:.0%} | {r['rate']:.0f} | {r['setup']} | {r['p50_us'] / 1e3:.2f} ms | "
                      f"{r['p99_us'] / 1e3:.2f} ms | {r['p999_us'] / 1e3:.2f} ms | {r['lost']} |")
            print("\n| load | added p50 | added p99 | added p99.9 |\n|---:|---:|---:|---:|")
            for i in range(0, len(rows), 2):
                d, t = rows[i], rows[i + 1]
                print(f"| {d['share']:.0%} | {(t['p50_us'] - d['p50_us']) / 1e3:+.2f} ms | "
                      f"{(t['p99_us'] - d['p99_us']) / 1e3:+.2f} ms | {(t['p999_us'] - d['p999_us']) / 1e3:+.2f} ms |")
            if a.json:
                a.json.write_text(json.dumps({"highest": highest, "ramp": ramp["steps"], "rows": rows}, indent=2))
        finally:
            h.close()


if __name__ == "__main__":
    main()
