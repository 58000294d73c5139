"""Kafka destinations with credentials and TLS, against tansu (docs/configuration.md,
`kafkaSettings.authentication` and `tls`). Each dataflow goes from a mosquitto to its own topic;
an independent confluent-kafka consumer (with the same kind of credentials) reads the topics,
and the data plane's metrics are checked too.

- SASL SCRAM-SHA-256 and SCRAM-SHA-512: tansu keeps SCRAM users in its storage and requires
  SASL with `--authentication`, which answers nothing but ApiVersions and the SASL requests
  before a client authenticates; so the users and topics are made first on a broker without it
  (file-backed storage), which is then restarted with it. A third dataflow has a wrong password:
  it delivers nothing, acknowledges nothing to MQTT and says why in the log, and once the
  password file is fixed it recovers (the producer is remade after an authentication failure
  and reads the secret again) and delivers every message.
- TLS: tansu has no working TLS of its own here, so stunnel (scripts/stunnel-start) is a TLS
  server in front of it, and tansu advertises stunnel's address in its Metadata (librdkafka
  connects to the advertised address and checks its name against the certificate: 127.0.0.1 is
  in the test certificate's subjectAltName). The endpoint trusts the test CA from a ConfigMap
  folder; a second dataflow trusts another CA, delivers nothing and logs the certificate error.
- Mutual TLS: stunnel requires a client certificate signed by the test CA; the X509Certificate
  endpoint presents one from its secret folder, a second one without a certificate is refused.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import brokers
from dataplane import (
    Dataplane,
    Failure,
    Harness,
    KafkaTail,
    dataflow,
    free_port,
    kafka_create_topics,
    kafka_endpoint,
    key,
    mqtt_endpoint,
    profile,
    wait_until,
    write_manifests,
)

N = 200
CORES = 1


@pytest.fixture(autouse=True)
def timed(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"\n{request.node.name}: {time.monotonic() - started:.1f} s")


def write_secret(dir: Path, files: dict[str, str | Path]) -> None:
    """A secret or ConfigMap folder: one file per key (text, or a copy of a file); replaced
    atomically (a rename), as a rotated Kubernetes volume is."""
    dir.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        tmp = dir / f".{name}.tmp"
        if isinstance(value, Path):
            shutil.copy(value, tmp)
        else:
            tmp.write_text(value)
        os.replace(tmp, dir / name)


def folders(sluice: Harness) -> tuple[Path, Path, list[str]]:
    secrets = sluice.tmp / "secrets"
    configmaps = sluice.tmp / "configmaps"
    secrets.mkdir()
    configmaps.mkdir()
    return secrets, configmaps, ["--secrets-dir", str(secrets), "--configmaps-dir", str(configmaps)]


def run(
    sluice: Harness, docs: list[dict], extra: list[str]
) -> tuple[Dataplane, Any]:
    """A mosquitto for the sources (its $SYS topics every second), the data plane and the agent
    with DOCS (plus the source endpoint and the profile); returns the data plane and a publisher
    client."""
    src = sluice.mosquitto("src", extra="sys_interval 1\n")
    config = sluice.tmp / "config"
    write_manifests(config, [mqtt_endpoint("src", src.host), profile(), *docs])
    # A dataflow that cannot deliver cannot drain either: SIGTERM at the end would wait for it.
    dp = sluice.dataplane(cores=CORES, extra=[*extra, "--drain-timeout", "1"])
    sluice.agent(config, dp, src.host)
    pub = sluice.client(src.port, "pub", keep_messages=False)
    return dp, pub


def to_kafka(name: str, endpoint: str, topic: str) -> dict:
    return dataflow(name, "src", [f"in/{name}/#"], endpoint, topic)


def publish(pub: Any, flow: str, n: int = N) -> set[bytes]:
    infos = [pub.publish(f"in/{flow}/m", f"{flow} {i}") for i in range(n)]
    wait_until(f"mosquitto's PUBACKs for {flow}", lambda: all(i.is_published() for i in infos))
    return {f"{flow} {i}".encode() for i in range(n)}


def wait_delivered(
    dp: Dataplane, tail: KafkaTail, flow: str, topic: str, want: set[bytes],
    timeout: float = 30,
) -> None:
    """Every value of WANT is in TOPIC, and the data plane counts them as forwarded."""
    tail_has = lambda: want <= set(tail.values(topic))  # noqa: E731
    wait_until(f"{len(want)} records of {flow} in Kafka topic {topic}", tail_has, timeout, 0.1)
    wait_until(
        f"{flow}: {len(want)} forwarded in /metrics",
        lambda: (dp.metrics().value("sluice_messages_forwarded_total", dataflow=key(flow)) or 0)
        >= len(want),
    )


def assert_nothing_acknowledged(dp: Dataplane, tail: KafkaTail, flow: str, topic: str) -> str:
    """FLOW delivered nothing to Kafka, counted nothing as forwarded, dropped nothing, and
    acknowledged nothing to the source broker (its receive-to-acknowledge histogram is empty);
    returns the figures."""
    m = dp.metrics()
    k = key(flow)
    forwarded = m.value("sluice_messages_forwarded_total", dataflow=k)
    acked = m.value("sluice_ack_latency_seconds_count", dataflow=k)
    received = m.value("sluice_messages_received_total", dataflow=k)
    in_flight = m.value("sluice_messages_in_flight", dataflow=k)
    dropped = m.value("sluice_messages_dropped_total", dataflow=k)
    assert tail.values(topic) == [], f"{flow}: records in {topic}: {tail.values(topic)[:5]}"
    assert not forwarded, f"{flow}: forwarded {forwarded}"
    assert not acked, f"{flow}: acknowledged {acked} to the source broker"
    assert not dropped, f"{flow}: dropped {dropped}"
    return (
        f"received {received}, in flight {in_flight}, forwarded {forwarded}, "
        f"acknowledged {acked}"
    )


def kafka_log(dp: Dataplane, flow: str, pattern: str) -> list[str]:
    """The data plane's log lines about FLOW that match PATTERN (case-insensitive)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", dp.log_text())
    return [
        line for line in text.splitlines()
        if key(flow) in line and re.search(pattern, line, re.IGNORECASE)
    ]


# --- SASL SCRAM ---------------------------------------------------------------------------------

USERS = {
    # user: (mechanism of the endpoint, of the admin API, password)
    "alice": ("ScramSha256", "SCRAM-SHA-256", "alice-secret-256"),
    "bob": ("ScramSha512", "SCRAM-SHA-512", "bob-secret-512"),
}


def create_scram_users(conf: dict[str, Any]) -> None:
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(conf)
    mechanisms = {
        "SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256,
        "SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512,
    }
    upserts = [
        UserScramCredentialUpsertion(
            user, ScramCredentialInfo(mechanisms[mech], 4096), password.encode()
        )
        for user, (_, mech, password) in USERS.items()
    ]
    for user, future in admin.alter_user_scram_credentials(upserts, request_timeout=30).items():
        future.result(timeout=30)


def scram_conf(user: str, conf: dict[str, Any]) -> dict[str, Any]:
    """CONF (plain or TLS) with SASL SCRAM as USER."""
    _, mech, password = USERS[user]
    tls = conf.get("security.protocol") == "ssl"
    return conf | {
        "security.protocol": "sasl_ssl" if tls else "sasl_plaintext",
        "sasl.mechanism": mech,
        "sasl.username": user,
        "sasl.password": password,
    }


def scram_kafka(
    start_broker: Callable[..., brokers.Broker], topics: list[str],
    tls: brokers.Broker | None = None,
) -> brokers.Broker:
    """tansu with the SCRAM users of USERS and TOPICS, requiring SASL: first started without
    `--authentication` (file-backed storage) to make them, then again with it on the same port.
    With TLS (a stunnel), tansu listens on its backend port and advertises stunnel's address, and
    the admin client goes through stunnel."""
    if tls is None:
        args: list[str] = []
    else:
        advertised = f"127.0.0.1:{tls.env['TLS_PORT']}"
        args = ["--port", tls.env["BACKEND_PORT"], "--advertise", advertised]
    kafka = start_broker("tansu", "kafka", "--storage", "sqlite", *args)
    conf = {"bootstrap.servers": kafka.env["KAFKA_BOOTSTRAP"]} if tls is None else tls_conf(tls)
    kafka_create_topics(conf, topics)
    create_scram_users(conf)
    brokers.stop(kafka)
    if tls is None:
        args = ["--port", kafka.env["KAFKA_PORT"]]
    kafka = start_broker("tansu", "kafka", "--storage", "sqlite", *args, "--authentication")
    # Authentication is required now: a client without SASL gets no metadata.
    from confluent_kafka import KafkaException, Producer

    with pytest.raises(KafkaException):
        Producer(conf).list_topics(timeout=3)
    return kafka


def sasl(kind: str, secret: str) -> dict:
    return {"method": "Sasl", "saslSettings": {"saslType": kind, "secretRef": secret}}


PRODUCERS_WHILE_WRONG = 6


def stored_messages(sluice: Harness, port: int) -> int:
    """mosquitto's $SYS/broker/store/messages/count: the messages it holds (QoS 1 messages not
    yet acknowledged by every subscriber, retained ones, and its own $SYS topics)."""
    sys = sluice.client(port, "sys")
    try:
        sys.subscribe(["$SYS/broker/store/messages/count"])
        got = sys.wait_for("mosquitto's store count", lambda msgs: msgs, timeout=5)
        return int(got[-1].payload)
    finally:
        sys.close()
        sluice.clients.remove(sys)


def proc_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise Failure(f"no Threads in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of PID so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_sasl_scram_sha_256_and_512_and_a_wrong_password_fixed_later(
    start_broker: Callable[..., brokers.Broker], sluice: Harness
) -> None:
    topics = ["scram-256", "scram-512", "scram-fixed"]
    kafka = scram_kafka(start_broker, topics)
    bootstrap = kafka.env["KAFKA_BOOTSTRAP"]
    secrets, _, extra = folders(sluice)
    for user, (_, _, password) in USERS.items():
        write_secret(secrets / user, {"username": f"{user}\n", "password": f"{password}\n"})
    write_secret(secrets / "wrong", {"username": "alice\n", "password": "not-alice-secret\n"})
    docs = [
        kafka_endpoint("k256", bootstrap, authentication=sasl("ScramSha256", "alice")),
        kafka_endpoint("k512", bootstrap, authentication=sasl("ScramSha512", "bob")),
        kafka_endpoint("kwrong", bootstrap, authentication=sasl("ScramSha256", "wrong")),
        to_kafka("sha256", "k256", "scram-256"),
        to_kafka("sha512", "k512", "scram-512"),
        to_kafka("wrong", "kwrong", "scram-fixed"),
    ]
    # "Kafka producer made" is logged at debug level.
    dp, pub = run(sluice, docs, [*extra, "--log", "info,sluice_dataplane::dataflow::task=debug"])
    tail = KafkaTail(scram_conf("bob", {"bootstrap.servers": bootstrap}), topics)
    sluice.closers.append(tail.close)

    wait_until(
        "three source sessions up",
        lambda: all(
            dp.metrics().value("sluice_session_connected", dataflow=key(f), side="source") == 1
            for f in ("sha256", "sha512", "wrong")
        ),
        20,
    )
    sent = {flow: publish(pub, flow) for flow in ("sha256", "sha512", "wrong")}
    wait_delivered(dp, tail, "sha256", "scram-256", sent["sha256"])
    wait_delivered(dp, tail, "sha512", "scram-512", sent["sha512"])

    # The wrong password: refused, said so, nothing delivered or acknowledged.
    said = wait_until(
        "the authentication failure in the data plane's log",
        lambda: kafka_log(dp, "wrong", r"authenticat|SASL"),
        20,
    )
    wrong_since = time.monotonic()
    # It keeps trying: the producer is made again (reading the secret again) after each
    # authentication failure. Meanwhile: the data plane's threads and CPU time.
    threads: list[int] = []
    cpu_before = cpu_seconds(dp.pid)

    def remade() -> bool:
        threads.append(proc_threads(dp.pid))
        return len(kafka_log(dp, "wrong", r"Kafka producer made")) >= PRODUCERS_WHILE_WRONG

    wait_until(f"{PRODUCERS_WHILE_WRONG} producers made for the wrong password", remade, 30, 0.1)
    wrong_for = time.monotonic() - wrong_since
    cpu = cpu_seconds(dp.pid) - cpu_before
    figures = assert_nothing_acknowledged(dp, tail, "wrong", "scram-fixed")
    status, body = dp.get("/readyz")
    assert status == 503 and "wrong" in body, body
    # mosquitto's side: the messages of the wrong dataflow stay in its store (unacknowledged).
    held = stored_messages(sluice, pub.port)
    assert held >= N, f"mosquitto stores {held} messages, fewer than the {N} unacknowledged"
    print(
        f"\nwrong password: {figures}; mosquitto stores {held} messages; "
        f"/readyz {status} {body.strip()[:200]!r}\n"
        f"  log: {said[0][:400]}\n"
        f"  {PRODUCERS_WHILE_WRONG} producers made in {wrong_for:.1f} s after the first failure; "
        f"the data plane's threads {min(threads)} to {max(threads)}, "
        f"CPU {cpu:.2f} s in that time"
    )

    # Fixed: the next producer reads the secret again.
    write_secret(secrets / "wrong", {"password": "alice-secret-256\n"})
    fixed_at = time.monotonic()
    wait_delivered(dp, tail, "wrong", "scram-fixed", sent["wrong"], timeout=90)
    recovered = time.monotonic() - fixed_at
    warned = len(kafka_log(dp, "wrong", r"WARN.*Kafka client error"))
    made = len(kafka_log(dp, "wrong", r"Kafka producer made"))
    print(
        f"after the fix: all {N} delivered {recovered:.1f} s later (the failure lasted "
        f"{fixed_at - wrong_since:.1f} s after it was first logged; {made} producers made in "
        f"all; {warned} client error lines at warn for it)"
    )
    # Acknowledged now: mosquitto let them go (what it still stores is mostly its own $SYS).
    released = wait_until(
        "mosquitto to drop the acknowledged messages",
        lambda: (n := stored_messages(sluice, pub.port)) <= held - N // 2 and str(n),
        20,
        0.5,
    )
    print(f"mosquitto stores {released} messages after the fix")
    flows = (("sha256", "scram-256"), ("sha512", "scram-512"), ("wrong", "scram-fixed"))
    for flow, topic in flows:
        got = tail.values(topic)
        assert set(got) == sent[flow], f"{flow}: {len(got)} records, {len(set(got))} distinct"
    dp.wait_ready(timeout=20)


# --- TLS through stunnel -------------------------------------------------------------------------


def tls_kafka(
    start_broker: Callable[..., brokers.Broker], require_cert: bool
) -> tuple[brokers.Broker, brokers.Broker]:
    """tansu behind stunnel; tansu advertises stunnel's address."""
    backend = free_port()
    args = ["--connect", str(backend)] + (["--require-cert"] if require_cert else [])
    tls = start_broker("stunnel", "stunnel", *args)
    kafka = start_broker(
        "tansu", "kafka", "--port", str(backend), "--advertise", f"127.0.0.1:{tls.env['TLS_PORT']}"
    )
    return tls, kafka


def tls_conf(tls: brokers.Broker, client_cert: bool = False) -> dict[str, Any]:
    conf = {
        "bootstrap.servers": f"127.0.0.1:{tls.env['TLS_PORT']}",
        "security.protocol": "ssl",
        "ssl.ca.location": tls.env["CA_FILE"],
    }
    if client_cert:
        conf |= {
            "ssl.certificate.location": tls.env["CLIENT_CERT"],
            "ssl.key.location": tls.env["CLIENT_KEY"],
        }
    return conf


def other_ca(sluice: Harness) -> Path:
    """A CA of its own, which did not sign stunnel's certificate."""
    import subprocess

    dir = sluice.tmp / "other-pki"
    proc = subprocess.run(
        [str(brokers.SCRIPTS / "gen-certs"), str(dir)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return dir / "ca.crt"


def tls_settings(ca: str) -> dict:
    return {"mode": "Enabled", "trustedCaCertificateConfigMapRef": ca}


def test_tls_with_the_trusted_ca_and_with_a_ca_that_does_not_match(
    start_broker: Callable[..., brokers.Broker], sluice: Harness
) -> None:
    tls, _ = tls_kafka(start_broker, require_cert=False)
    conf = tls_conf(tls)
    kafka_create_topics(conf, ["tls", "untrusted"])
    secrets, configmaps, extra = folders(sluice)
    write_secret(configmaps / "test-ca", {"ca.crt": Path(tls.env["CA_FILE"])})
    write_secret(configmaps / "other-ca", {"ca.crt": other_ca(sluice)})
    host = f"127.0.0.1:{tls.env['TLS_PORT']}"
    docs = [
        kafka_endpoint("ktls", host, tls=tls_settings("test-ca")),
        kafka_endpoint("kother", host, tls=tls_settings("other-ca")),
        to_kafka("tls", "ktls", "tls"),
        to_kafka("untrusted", "kother", "untrusted"),
    ]
    dp, pub = run(sluice, docs, extra)
    tail = KafkaTail(conf, ["tls", "untrusted"])
    sluice.closers.append(tail.close)
    wait_sources(dp, ["tls", "untrusted"])
    sent = publish(pub, "tls")
    publish(pub, "untrusted")
    wait_delivered(dp, tail, "tls", "tls", sent)

    said = wait_until(
        "the certificate error in the data plane's log",
        lambda: kafka_log(dp, "untrusted", r"certificate verify failed|certificate"),
        20,
    )
    figures = assert_nothing_acknowledged(dp, tail, "untrusted", "untrusted")
    status, body = dp.get("/readyz")
    print(
        f"\nCA that does not match: {figures}; /readyz {status} {body.strip()[:200]!r}\n"
        f"  log: {said[0][:400]}"
    )
    assert sorted(tail.values("tls")) == sorted(sent)


def test_mutual_tls_with_a_client_certificate_and_without(
    start_broker: Callable[..., brokers.Broker], sluice: Harness
) -> None:
    tls, _ = tls_kafka(start_broker, require_cert=True)
    conf = tls_conf(tls, client_cert=True)
    kafka_create_topics(conf, ["mtls", "nocert"])
    secrets, configmaps, extra = folders(sluice)
    write_secret(configmaps / "test-ca", {"ca.crt": Path(tls.env["CA_FILE"])})
    write_secret(
        secrets / "client-cert",
        {
            "client_cert.pem": Path(tls.env["CLIENT_CERT"]),
            "client_key.pem": Path(tls.env["CLIENT_KEY"]),
        },
    )
    host = f"127.0.0.1:{tls.env['TLS_PORT']}"
    x509 = {"method": "X509Certificate", "x509CertificateSettings": {"secretRef": "client-cert"}}
    docs = [
        kafka_endpoint("kmtls", host, tls=tls_settings("test-ca"), authentication=x509),
        kafka_endpoint("knocert", host, tls=tls_settings("test-ca")),
        to_kafka("mtls", "kmtls", "mtls"),
        to_kafka("nocert", "knocert", "nocert"),
    ]
    dp, pub = run(sluice, docs, extra)
    tail = KafkaTail(conf, ["mtls", "nocert"])
    sluice.closers.append(tail.close)
    wait_sources(dp, ["mtls", "nocert"])
    sent = publish(pub, "mtls")
    publish(pub, "nocert")
    wait_delivered(dp, tail, "mtls", "mtls", sent)

    said = wait_until(
        "the refused handshake in the data plane's log",
        lambda: kafka_log(dp, "nocert", r"certificate required|alert|handshake|SSL"),
        20,
    )
    figures = assert_nothing_acknowledged(dp, tail, "nocert", "nocert")
    print(f"\nno client certificate: {figures}\n  log: {said[0][:400]}")
    assert sorted(tail.values("mtls")) == sorted(sent)
    # stunnel's side of it.
    assert "peer did not return a certificate" in Path(tls.env["LOG"]).read_text(errors="replace")


def wait_sources(dp: Dataplane, flows: list[str]) -> None:
    try:
        wait_until(
            f"source sessions of {flows} up",
            lambda: all(
                dp.metrics().value("sluice_session_connected", dataflow=key(f), side="source")
                == CORES
                for f in flows
            ),
            20,
        )
    except Failure:
        status, body = dp.get("/readyz")
        raise Failure(f"sources not connected; /readyz {status}: {body}") from None


def test_sasl_scram_over_tls(
    start_broker: Callable[..., brokers.Broker], sluice: Harness
) -> None:
    """SASL_SSL, as Event Hubs and most managed Kafka services are reached: SCRAM-SHA-512
    through stunnel, the endpoint trusting the test CA."""
    tls = start_broker("stunnel", "stunnel", "--connect", str(free_port()))
    scram_kafka(start_broker, ["sasl-tls"], tls=tls)
    secrets, configmaps, extra = folders(sluice)
    write_secret(configmaps / "test-ca", {"ca.crt": Path(tls.env["CA_FILE"])})
    write_secret(secrets / "bob", {"username": "bob\n", "password": f"{USERS['bob'][2]}\n"})
    host = f"127.0.0.1:{tls.env['TLS_PORT']}"
    docs = [
        kafka_endpoint(
            "ksasltls", host, tls=tls_settings("test-ca"), authentication=sasl("ScramSha512", "bob")
        ),
        to_kafka("sasltls", "ksasltls", "sasl-tls"),
    ]
    dp, pub = run(sluice, docs, extra)
    tail = KafkaTail(scram_conf("bob", tls_conf(tls)), ["sasl-tls"])
    sluice.closers.append(tail.close)
    wait_sources(dp, ["sasltls"])
    sent = publish(pub, "sasltls")
    wait_delivered(dp, tail, "sasltls", "sasl-tls", sent)
    assert sorted(tail.values("sasl-tls")) == sorted(sent)
    dp.wait_ready(timeout=20)
