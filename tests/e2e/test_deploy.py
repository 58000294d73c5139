"""deploy/kubernetes, checked offline: every resource against the Kubernetes schemas
(kubernetes-validate, strict), the kustomization's files, the PodMonitor's shape; and the pod
run here as the kubelet would run it. Its mounts are laid out the kubelet's way: timestamped
folders behind a `..data` symlink, files as symlinks through it, the projected token as
`<token-dir>/<audience>`. The data plane's and the agent's command lines come from the
StatefulSet. The dataflow then flows through two mosquittos (the pod's broker and the
"upstream"), and a ConfigMap update, swapped in as the kubelet does, is applied without a
restart.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from dataplane import ROOT, Harness, free_port, probe_until_flowing, wait_until

DEPLOY = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.34.0"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_the_manifests_are_valid_kubernetes() -> None:
    kustomization = docs(DEPLOY / "kustomization.yaml")[0]
    resources = kustomization["resources"]
    for name in resources:
        for d in docs(DEPLOY / name):
            if d["apiVersion"].startswith("monitoring.coreos.com/"):
                # A CRD's kind: not in the core schemas.
                assert d["kind"] == "PodMonitor"
                ep = d["spec"]["podMetricsEndpoints"][0]
                assert ep["port"] == "metrics" and ep["path"] == "/metrics"
                continue
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    for gen in kustomization["configMapGenerator"]:
        for f in gen["files"]:
            assert (DEPLOY / f).is_file(), f
    assert sorted(p.name for p in DEPLOY.glob("*.yaml")) == sorted(
        ["kustomization.yaml", *resources]
    ), "every file is in the kustomization"

    pod = pod_spec()
    generated = {g["name"] for g in kustomization["configMapGenerator"]}
    for v in pod["volumes"]:
        cm = v.get("configMap")
        if cm and not cm.get("optional"):
            assert cm["name"] in generated, f"ConfigMap {cm['name']} is neither generated nor optional"
        sec = v.get("secret")
        if sec:
            assert sec.get("optional"), f"Secret {sec['secretName']}: optional, or the pod never starts"
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] and ctx["runAsUser"] == ctx["runAsGroup"] != 0, "one non-root uid"
    by_name = {c["name"]: c for c in pod["containers"]}
    dp = by_name["dataplane"]
    assert dp["resources"]["requests"] == dp["resources"]["limits"], "Guaranteed, for CPU pinning"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert dp[probe]["httpGet"]["path"] == "/healthz", f"{probe}: /readyz would fail the pod for a remote outage"
    annotations = statefulset()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(dp["ports"][0]["containerPort"])


def test_the_dataflows_in_the_configmap_are_valid(sluice_bins: Path) -> None:
    out = subprocess.run(
        [str(sluice_bins / "config-agent"), "validate", str(DEPLOY / "manifests"),
         "--local-broker", "localhost:1883"], capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0 and "0 warning(s)" in out.stdout, out.stdout + out.stderr


def statefulset() -> dict[str, Any]:
    return docs(DEPLOY / "statefulset.yaml")[0]


def pod_spec() -> dict[str, Any]:
    return statefulset()["spec"]["template"]["spec"]


class Kubelet:
    """Volumes laid out as the kubelet's atomic writer does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0

    def publish(self, dir: Path, files: dict[str, str]) -> None:
        """Writes FILES into a new timestamped folder of DIR and swaps `..data` to it."""
        dir.mkdir(parents=True, exist_ok=True)
        self.n += 1
        ts = f"..2026_12_02_10_00_{self.n:02d}.{self.n:09d}"
        (dir / ts).mkdir()
        for name, content in files.items():
            (dir / ts / name).write_text(content)
        old = os.readlink(dir / "..data") if (dir / "..data").is_symlink() else None
        tmp = dir / "..data_tmp"
        tmp.symlink_to(ts)
        os.replace(tmp, dir / "..data")
        for name in files:
            link = dir / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        if old:
            for f in (dir / old).iterdir():
                f.unlink()
            (dir / old).rmdir()


def test_the_pod_runs_here_as_the_kubelet_lays_it_out(
    sluice: Harness, sluice_bins: Path, tmp_path: Path
) -> None:
    local, upstream = sluice.mosquitto("local"), sluice.mosquitto("upstream")
    pod = pod_spec()
    root = tmp_path / "pod"
    kubelet = Kubelet(root)

    def at(path: str) -> Path:
        return root / path.lstrip("/")

    manifests = (DEPLOY / "manifests" / "dataflows.yaml").read_text()
    manifests = manifests.replace("localhost:1883", local.host).replace(
        "upstream-broker:1883", upstream.host)
    volumes = {v["name"]: v for v in pod["volumes"]}
    by_name = {c["name"]: c for c in pod["containers"]}
    metrics_port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("dataplane", "config-agent"):
            c = by_name[name]
            for m in c["volumeMounts"]:
                v = volumes[m["name"]]
                where = at(m["mountPath"])
                if "emptyDir" in v:
                    where.mkdir(parents=True, exist_ok=True)
                elif "configMap" in v and v["configMap"]["name"] == "sluice-manifests":
                    if not where.exists():
                        kubelet.publish(where, {"dataflows.yaml": manifests})
                elif "projected" in v:
                    src = v["projected"]["sources"][0]["serviceAccountToken"]
                    if not where.exists():
                        kubelet.publish(where, {src["path"]: "header.payload.signature"})
                else:
                    # An optional Secret or ConfigMap that does not exist: an empty volume.
                    if not where.exists():
                        kubelet.publish(where, {})
            argv = [str(sluice_bins / name)] + c.get("args", [])
            argv = [rewrite(a, at, local.host, metrics_port) for a in argv]
            log = (tmp_path / f"{name}.log").open("wb")
            procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd=tmp_path))
            sluice.on_log(name, tmp_path / f"{name}.log")
            if name == "dataplane":
                wait_until("the control socket", lambda: at("/run/sluice/control.sock").exists(),
                           timeout=20)

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until("/readyz 200", ready, timeout=30)
        # The token is where a ServiceAccountToken endpoint would read it.
        assert (at("/var/run/secrets/tokens") / "aio-internal").read_text() == "header.payload.signature"
        pub = sluice.client(local.port, "pod-pub")
        sub = sluice.client(upstream.port, "pod-sub")
        sub.subscribe(["site-a/#", "site-b/#"])
        probe_until_flowing(pub, sub, "telemetry/line-1", "site-a/telemetry/line-1", timeout=20)

        # `kubectl apply` of a changed ConfigMap: the kubelet swaps the files in.
        kubelet.publish(at("/etc/sluice/manifests"),
                        {"dataflows.yaml": manifests.replace("site-a/", "site-b/")})
        probe_until_flowing(pub, sub, "telemetry/line-1", "site-b/telemetry/line-1", timeout=30)
        for p in procs:
            assert p.poll() is None, "no restart: the change was applied in place"
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        statuses = []
        for p in reversed(procs):
            try:
                statuses.append(p.wait(timeout=20))
            except subprocess.TimeoutExpired:
                p.kill()
                statuses.append(None)
    assert statuses == [0, 0], f"SIGTERM: config-agent, dataplane exit {statuses}"


def rewrite(arg: str, at: Any, local_broker: str, metrics_port: int) -> str:
    """A container argument as it runs here: mount paths under the test's folder, the pod's
    name, a free metrics port, the test's broker."""
    arg = arg.replace("$(POD_NAME)", "sluice-0")
    arg = arg.replace("--metrics-addr=0.0.0.0:9600", f"--metrics-addr=127.0.0.1:{metrics_port}")
    arg = arg.replace("--local-broker=localhost:1883", f"--local-broker={local_broker}")
    m = re.match(r"(--[a-z-]+=)(/.*)", arg)
    if m:
        return m.group(1) + str(at(m.group(2)))
    return arg
