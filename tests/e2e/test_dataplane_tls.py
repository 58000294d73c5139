"""The data plane's transports and credentials against real mosquitto listeners that
scripts/mosquitto-start configures (TLS with the test CA, mutual TLS, user name and password,
MQTT over WebSocket, plain with a request path and over TLS at `/`): one dataflow per way in and
out, all on one broker (topic remapping, in/<way>/... to out/<way>/...), checked with paho-mqtt
on the plain listener.

Run with both I/O drivers of the workers: io_uring (`--io-driver auto` here) and the epoll
fallback.

A wrong password and a CA that did not sign the broker's certificate leave their dataflow
unconnected and /readyz not ready, with the reason, while the others forward.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

import brokers
from dataplane import (
    Harness,
    dataflow,
    key,
    mqtt_endpoint,
    probe_until_flowing,
    profile,
    wait_until,
    write_manifests,
)

CORES = 2


def files(sluice: Harness, broker: brokers.Broker, password: str | None = None) -> list[str]:
    """Secrets and ConfigMaps as the data plane reads them (one folder per name, one file per
    key); returns the data plane's arguments that point at them."""
    env = broker.env
    secrets = sluice.tmp / "secrets"
    configmaps = sluice.tmp / "configmaps"
    (configmaps / "test-ca").mkdir(parents=True)
    shutil.copy(env["CA_FILE"], configmaps / "test-ca" / "ca.crt")
    (secrets / "client-cert").mkdir(parents=True)
    shutil.copy(env["CLIENT_CERT"], secrets / "client-cert" / "client_cert.pem")
    shutil.copy(env["CLIENT_KEY"], secrets / "client-cert" / "client_key.pem")
    for name, pw in (("login", env["MQTT_PASSWORD"]), ("bad-login", password or "wrong")):
        (secrets / name).mkdir(parents=True)
        (secrets / name / "username").write_text(env["MQTT_USER"] + "\n")
        (secrets / name / "password").write_text(pw + "\n")
    # A CA of its own, which did not sign the broker's certificate.
    other = sluice.tmp / "other-ca"
    other.mkdir()
    subprocess_run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=Another CA", "-keyout", str(other / "ca.key"), "-out", str(other / "ca.crt")]
    )
    (configmaps / "other-ca").mkdir()
    shutil.copy(other / "ca.crt", configmaps / "other-ca" / "ca.crt")
    return ["--secrets-dir", str(secrets), "--configmaps-dir", str(configmaps)]


def subprocess_run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{argv[0]}: {proc.stderr}"


def tls(ca: str = "test-ca") -> dict:
    return {"mode": "Enabled", "trustedCaCertificateConfigMapRef": ca}


def endpoints(broker: brokers.Broker) -> list[dict]:
    env = broker.env
    at = lambda port: f"localhost:{env[port]}"  # noqa: E731 - the certificate names localhost
    login = {"method": "UsernamePassword", "usernamePasswordSettings": {"secretRef": "login"}}
    return [
        mqtt_endpoint("plain", f"127.0.0.1:{env['MQTT_PORT']}"),
        mqtt_endpoint("tls", at("MQTT_TLS_PORT"), tls=tls()),
        mqtt_endpoint(
            "mtls",
            f"127.0.0.1:{env['MQTT_MTLS_PORT']}",
            tls=tls(),
            authentication={
                "method": "X509Certificate",
                "x509CertificateSettings": {"secretRef": "client-cert"},
            },
        ),
        mqtt_endpoint("login", f"127.0.0.1:{env['MQTT_AUTH_PORT']}", authentication=login),
        # A request path after the port, as Event Grid's host is written (mosquitto takes any).
        mqtt_endpoint("ws", at("MQTT_WS_PORT") + "/mqtt", protocol="WebSockets"),
        mqtt_endpoint("wss", at("MQTT_WSS_PORT"), protocol="WebSockets", tls=tls()),
        # The two that must not connect.
        mqtt_endpoint(
            "bad-login",
            f"127.0.0.1:{env['MQTT_AUTH_PORT']}",
            authentication={
                "method": "UsernamePassword",
                "usernamePasswordSettings": {"secretRef": "bad-login"},
            },
        ),
        mqtt_endpoint("wrong-ca", at("MQTT_TLS_PORT"), tls=tls("other-ca")),
        profile(),
    ]


# (dataflow, source endpoint, destination endpoint)
FLOWS = [
    ("via-tls", "tls", "login"),
    ("via-mtls", "mtls", "plain"),
    ("via-login", "login", "tls"),
    ("via-wss", "wss", "ws"),
    ("via-ws", "ws", "mtls"),
]


@pytest.mark.parametrize("driver", ["auto", "epoll"])
def test_tls_mtls_login_websocket(
    sluice: Harness, mosquitto: brokers.Broker, driver: str
) -> None:
    args = files(sluice, mosquitto)
    docs = endpoints(mosquitto)
    for name, src, dst in FLOWS:
        way = name.removeprefix("via-")
        docs.append(dataflow(name, src, [f"in/{way}/#"], dst, "out/${inputTopic}"))
    config = sluice.tmp / "config"
    write_manifests(config, docs)
    dp = sluice.dataplane(cores=CORES, extra=[*args, "--io-driver", driver])
    sluice.agent(config, dp, f"127.0.0.1:{mosquitto.env['MQTT_PORT']}")
    dp.wait_ready(timeout=20)

    plain = int(mosquitto.env["MQTT_PORT"])
    sub = sluice.client(plain, "sub")
    sub.subscribe(["out/#"])
    pub = sluice.client(plain, "pub")
    for name, _, _ in FLOWS:
        way = name.removeprefix("via-")
        # Every core has subscribed once a probe gets through on each; then count 50 more.
        probe_until_flowing(pub, sub, f"in/{way}/probe", f"out/in/{way}/probe", timeout=20)
    n = 50
    for name, _, _ in FLOWS:
        way = name.removeprefix("via-")
        for i in range(n):
            pub.publish(f"in/{way}/m", f"{way} {i}")
    for name, _, _ in FLOWS:
        way = name.removeprefix("via-")
        want = {f"{way} {i}".encode() for i in range(n)}
        sub.wait_for(
            f"{n} messages through {name}",
            lambda msgs, t=f"out/in/{way}/m", w=want: w
            <= {m.payload for m in msgs if m.topic == t},
            timeout=20,
        )
    for name, _, _ in FLOWS:
        # The destination's PUBACK may reach the data plane after the subscriber has the message.
        wait_until(
            f"{name}: {n} forwarded in /metrics",
            lambda k=key(name): (dp.metrics().value("sluice_messages_forwarded_total", dataflow=k)
                                 or 0) >= n,
        )
        m = dp.metrics()
        assert m.value("sluice_reconnects_total", dataflow=key(name), side="source") == 0
    if driver == "epoll":
        assert 'driver="epoll"' in dp.log_text()


def test_refused_credentials_and_unknown_ca_are_not_ready(
    sluice: Harness, mosquitto: brokers.Broker
) -> None:
    args = files(sluice, mosquitto)
    docs = endpoints(mosquitto)
    docs += [
        dataflow("good", "plain", ["in/good/#"], "login", "out/${inputTopic}"),
        dataflow("refused", "bad-login", ["in/refused/#"], "plain", "out/${inputTopic}"),
        dataflow("untrusted", "wrong-ca", ["in/untrusted/#"], "plain", "out/${inputTopic}"),
    ]
    config = sluice.tmp / "config"
    write_manifests(config, docs)
    dp = sluice.dataplane(cores=1, extra=args)
    sluice.agent(config, dp, f"127.0.0.1:{mosquitto.env['MQTT_PORT']}")

    plain = int(mosquitto.env["MQTT_PORT"])
    sub = sluice.client(plain, "sub")
    sub.subscribe(["out/#"])
    pub = sluice.client(plain, "pub")
    probe_until_flowing(pub, sub, "in/good/x", "out/in/good/x", timeout=20)

    status, body = dp.get("/readyz")
    assert status == 503, body
    assert "refused" in body and "untrusted" in body and "good" not in body.replace(
        "refused", ""
    ), body
    wait_until(
        "the refusal and the certificate error in the log",
        lambda: "Not authorized" in dp.log_text() or "0x87" in dp.log_text()
        or "0x86" in dp.log_text(),
        timeout=10,
    )
    wait_until(
        "the certificate error in the log",
        lambda: "UnknownIssuer" in dp.log_text() or "certificate" in dp.log_text().lower(),
        timeout=10,
    )
    m = dp.metrics()
    assert m.value("sluice_session_connected", dataflow=key("refused"), side="source") == 0
    assert m.value("sluice_session_connected", dataflow=key("untrusted"), side="source") == 0
    assert m.value("sluice_session_connected", dataflow=key("good"), side="source") == 1
