"""A dataflow the data plane does not run is never reported as running: a setting it needs was not
given to the data plane (a LocalStorage endpoint without --volumes-dir), or a secret it needs
cannot be read yet. `config-agent run --once` exits 3 and names it, `/readyz` is 503 with
the reason, `sluice_dataflow_running` is 0 for it (1 for the others), and the data plane logs it.
A dataflow waiting for a secret starts once the secret appears, without a new snapshot.
"""

from __future__ import annotations

import subprocess

from dataplane import (
    API,
    NAMESPACE,
    Harness,
    dataflow,
    key,
    mqtt_endpoint,
    probe_until_flowing,
    profile,
    wait_until,
    write_manifests,
)


def local_storage_endpoint(name: str) -> dict:
    return {
        "apiVersion": API,
        "kind": "DataflowEndpoint",
        "metadata": {"name": name},
        "spec": {
            "endpointType": "LocalStorage",
            "localStorageSettings": {"persistentVolumeClaimRef": "files"},
        },
    }


def manifests(src_host: str, dst_host: str) -> list[dict]:
    return [
        mqtt_endpoint("src", src_host),
        mqtt_endpoint("dst", dst_host),
        local_storage_endpoint("files"),
        profile(),
        dataflow("bridge", "src", ["in/#"], "dst", "out/${inputTopic}"),
        dataflow("to-files", "src", ["f/#"], "files", "parquet"),
    ]


def test_a_dataflow_missing_a_setting_is_visibly_not_running(sluice: Harness) -> None:
    src, dst = sluice.mosquitto("src"), sluice.mosquitto("dst")
    config = sluice.tmp / "config"
    write_manifests(config, manifests(src.host, dst.host))
    agent = str(sluice.bins / "config-agent")

    validate = subprocess.run(
        [agent, "validate", "--local-broker", src.host, "--allow-no-local-broker", str(config)],
        capture_output=True, text=True, timeout=30,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr

    dp = sluice.dataplane(cores=1)
    once = subprocess.run(
        [agent, "run", "--once", "--config-dir", str(config), "--control-socket", str(dp.socket),
         "--local-broker", src.host, "--allow-no-local-broker"],
        capture_output=True, text=True, timeout=60,
    )
    out = once.stdout + once.stderr
    assert once.returncode == 3, out
    assert f"{NAMESPACE}/to-files" in out and "setting_missing" in out, out
    assert "--volumes-dir" in out, out
    assert f"{NAMESPACE}/bridge:" not in out, out

    # The bridge runs and flows; the others do not, and say so.
    sub = sluice.client(dst.port, "sub")
    sub.subscribe(["out/#"])
    pub = sluice.client(src.port, "pub")
    probe_until_flowing(pub, sub, "in/x", "out/in/x")
    status, body = dp.get("/readyz")
    assert status == 503, body
    assert f"dataflow {NAMESPACE}/to-files not running: " in body, body
    assert f"{NAMESPACE}/bridge" not in body, body
    m = dp.metrics()
    assert m.value("sluice_dataflow_running", dataflow=key("bridge")) == 1
    assert m.value("sluice_dataflow_running", dataflow=key("to-files")) == 0
    assert "dataflow not run" in dp.log_text()

    # Without them, the data plane is ready.
    write_manifests(config, [m for m in manifests(src.host, dst.host)
                             if m["metadata"]["name"] != "to-files"])
    again = subprocess.run(
        [agent, "run", "--once", "--config-dir", str(config), "--control-socket", str(dp.socket),
         "--local-broker", src.host, "--allow-no-local-broker"],
        capture_output=True, text=True, timeout=60,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    dp.wait_ready(timeout=20)
    assert dp.metrics().value("sluice_dataflow_running", dataflow=key("to-files")) is None


def test_a_dataflow_waiting_for_a_secret_starts_when_it_appears(sluice: Harness) -> None:
    src, dst = sluice.mosquitto("src"), sluice.mosquitto("dst")
    config = sluice.tmp / "config"
    login = {"method": "UsernamePassword", "usernamePasswordSettings": {"secretRef": "login"}}
    write_manifests(config, [
        mqtt_endpoint("src", src.host),
        mqtt_endpoint("dst", dst.host, authentication=login),
        profile(),
        dataflow("bridge", "src", ["in/#"], "dst", "out/${inputTopic}"),
    ])
    secrets = sluice.tmp / "secrets"
    secrets.mkdir()
    dp = sluice.dataplane(cores=1, extra=["--secrets-dir", str(secrets)])
    # The agent runs where the secret is not mounted (no --secrets-dir): it cannot check it.
    sluice.agent(config, dp, src.host)
    wait_until(
        "the dataflow reported as not running",
        lambda: dp.metrics().value("sluice_dataflow_running", dataflow=key("bridge")) == 0,
        timeout=20,
    )
    status, body = dp.get("/readyz")
    assert status == 503 and "secret login" in body and "(retried)" in body, body

    (secrets / "login").mkdir()
    (secrets / "login" / "username").write_text("sluice\n")
    (secrets / "login" / "password").write_text("secret\n")
    wait_until(
        "the dataflow to start once the secret is there",
        lambda: dp.metrics().value("sluice_dataflow_running", dataflow=key("bridge")) == 1,
        timeout=20,
    )
    dp.wait_ready(timeout=20)
    sub = sluice.client(dst.port, "sub")
    sub.subscribe(["out/#"])
    pub = sluice.client(src.port, "pub")
    probe_until_flowing(pub, sub, "in/y", "out/in/y")
