//! librdkafka configuration of a Kafka destination or source, from its [`KafkaEndpointPlan`]:
//! pure functions ([`producer_settings`], [`consumer_settings`]) that read the endpoint's secret
//! and certificate files and give the `(property, value)` list, so that the mapping is tested as
//! a table and nothing else decides a client property. The connection settings (the first five
//! rows) are the same for both.
//!
//! | Endpoint setting | librdkafka |
//! |---|---|
//! | `host` | `bootstrap.servers` (a port added where none was written) |
//! | `tls.mode` and the authentication method | `security.protocol`: `plaintext`, `ssl`, `sasl_plaintext`, `sasl_ssl` |
//! | `tls.trustedCaCertificateConfigMapRef` | `ssl.ca.pem`: the ConfigMap's certificates (else the system store) |
//! | `X509Certificate` | `ssl.certificate.pem` (with intermediates), `ssl.key.pem` |
//! | `Sasl` | `sasl.mechanism` `PLAIN` / `SCRAM-SHA-256` / `SCRAM-SHA-512`, `sasl.username`, `sasl.password` from the secret |
//! | managed identities | `sasl.mechanism=OAUTHBEARER`; the token from IMDS ([`super::token`]) |
//! | `compression` | `compression.type` `none` / `gzip` / `snappy` / `lz4` / `zstd` |
//! | `batching` Enabled | `linger.ms` = `latencyMs`, `batch.size` = `maxBytes`, `batch.num.messages` = `maxMessages` |
//! | `batching` Disabled | `linger.ms=0`: every message goes out at once |
//! | `kafkaAcks` | `acks` `0` / `1` / `all`; `all` with `enable.idempotence=true` |
//!
//! | `consumerGroupId` (a source) | `group.id` |
//!
//! A consumer stores offsets itself (`enable.auto.offset.store=false`): the source's
//! per-partition watermark, the offset below which the destination has acknowledged every
//! record; librdkafka commits what was stored every [`COMMIT_INTERVAL_MS`], on a rebalance and on
//! close (`enable.auto.commit=true`), so nothing is committed past an unacknowledged record. A
//! new group starts at the earliest offset. Its prefetch is bounded per partition
//! ([`CONSUMER_QUEUE_KBYTES`], [`CONSUMER_QUEUE_MESSAGES`]) and per fetch ([`FETCH_MAX_BYTES`]).
//!
//! Bounds, whatever the endpoint says: the producer's queue holds at most
//! [`QUEUE_MAX_MESSAGES`] messages and [`QUEUE_MAX_KBYTES`] KiB (past either, a send is refused
//! with "queue full" and the dataflow core holds the message: backpressure, not memory), and a
//! message waits at most [`DELIVERY_TIMEOUT_MS`] for its delivery report before it is reported
//! timed out (and offered again after the core's backoff).
//!
//! Secrets and keys are values of this list: it is never logged (`Debug` is not derived).

use std::fmt::Write as _;
use std::path::Path;

use sluice_config_agent::model::{Compression, KafkaAcks, OperationalMode};
use sluice_config_agent::pem::{read_certificates_file, read_private_key_file};

use crate::config::kafka_endpoint::{KafkaAuth, KafkaEndpointPlan};
use crate::secrets::files::read_login;

/// Most messages a producer holds (queued or in flight) before a send is refused.
pub(crate) const QUEUE_MAX_MESSAGES: u32 = 100_000;
/// Most KiB of messages a producer holds before a send is refused (64 MiB).
pub(crate) const QUEUE_MAX_KBYTES: u32 = 64 * 1024;
/// How long a message may wait for its delivery report (librdkafka retries meanwhile).
pub(crate) const DELIVERY_TIMEOUT_MS: u32 = 120_000;
/// How often a consumer commits the offsets its source stored (and on rebalance and close).
pub(crate) const COMMIT_INTERVAL_MS: u32 = 200;
/// Most KiB a consumer prefetches per partition (librdkafka's local queue; 16 MiB).
pub(crate) const CONSUMER_QUEUE_KBYTES: u32 = 16 * 1024;
/// Records a consumer prefetches per partition before it stops fetching (librdkafka's default;
/// memory is bounded by [`CONSUMER_QUEUE_KBYTES`]). A lower count halves the rate: measured with
/// a confluent-kafka consumer against tansu, 10,000 gave 24,000 records a second where the
/// default gave 50,000.
pub(crate) const CONSUMER_QUEUE_MESSAGES: u32 = 100_000;
/// Most bytes of one fetch response (a record batch larger than this still comes, alone).
pub(crate) const FETCH_MAX_BYTES: u32 = 16 << 20;
/// How long the group waits for a consumer that stopped heartbeating (a killed data plane)
/// before its partitions move.
pub(crate) const SESSION_TIMEOUT_MS: u32 = 10_000;
/// The group's rebalance timeout: how long a rebalance waits for members to rejoin (the
/// source polls its consumer every few milliseconds, paused or not).
pub(crate) const MAX_POLL_INTERVAL_MS: u32 = 30_000;

/// A producer's or consumer's configuration: `(property, value)` pairs for
/// `rdkafka::ClientConfig`.
pub(crate) struct ClientSettings {
    pairs: Vec<(&'static str, String)>,
}

impl ClientSettings {
    /// The pairs, in the order they were set.
    pub(crate) fn pairs(&self) -> &[(&'static str, String)] {
        &self.pairs
    }

    /// The value of `key`, if set.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, key: &'static str, value: impl Into<String>) {
        self.pairs.push((key, value.into()));
    }
}

impl std::fmt::Debug for ClientSettings {
    /// Keys only: the values hold secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.pairs.iter().map(|(k, _)| k))
            .finish()
    }
}

/// A file of the endpoint that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SettingsError(String);

/// The producer configuration of `plan` for a client named `client_id`, reading its secret and
/// certificate files now. `window` bounds the producer's queue further (the dataflow core's
/// window), when given.
///
/// # Errors
/// A secret, certificate or key file that cannot be read or used.
pub(crate) fn producer_settings(
    plan: &KafkaEndpointPlan,
    client_id: &str,
    window: Option<u32>,
) -> Result<ClientSettings, SettingsError> {
    let s = &plan.settings;
    let mut c = connection_settings(plan, client_id)?;
    c.set(
        "compression.type",
        match s.compression {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        },
    );
    match s.batching.mode {
        OperationalMode::Enabled => {
            c.set("linger.ms", s.batching.latency_ms.to_string());
            c.set("batch.size", s.batching.max_bytes.max(1).to_string());
            c.set(
                "batch.num.messages",
                s.batching.max_messages.clamp(1, 1_000_000).to_string(),
            );
        }
        OperationalMode::Disabled => c.set("linger.ms", "0"),
    }
    match s.kafka_acks {
        KafkaAcks::Zero => c.set("acks", "0"),
        KafkaAcks::One => c.set("acks", "1"),
        KafkaAcks::All => {
            c.set("acks", "all");
            c.set("enable.idempotence", "true");
        }
    }
    let max_messages = window.map_or(QUEUE_MAX_MESSAGES, |w| w.clamp(1, QUEUE_MAX_MESSAGES));
    c.set("queue.buffering.max.messages", max_messages.to_string());
    c.set("queue.buffering.max.kbytes", QUEUE_MAX_KBYTES.to_string());
    c.set("delivery.timeout.ms", DELIVERY_TIMEOUT_MS.to_string());
    c.set("socket.keepalive.enable", "true");
    // Broker states every second: whether the destination is connected (readiness).
    c.set("statistics.interval.ms", "1000");
    Ok(c)
}

/// The consumer configuration of `plan` for a client named `client_id` in the group
/// `group_id`, reading its secret and certificate files now: the connection as for a producer,
/// then at-least-once offsets (see the module documentation) and bounded fetch queues.
///
/// # Errors
/// A secret, certificate or key file that cannot be read or used.
pub(crate) fn consumer_settings(
    plan: &KafkaEndpointPlan,
    client_id: &str,
    group_id: &str,
) -> Result<ClientSettings, SettingsError> {
    let mut c = connection_settings(plan, client_id)?;
    c.set("group.id", group_id);
    // Static membership (KIP-345): the client id is stable across restarts (dataflow,
    // `--instance-id`, core), so a data plane restarted after a crash takes its partitions back
    // at once instead of waiting for the group to time the dead member out (which some brokers,
    // tansu among them, never do). A graceful stop leaves the group explicitly (the source
    // unsubscribes first), so that its partitions move at once.
    c.set("group.instance.id", client_id);
    // Offsets: stored by the source as its per-partition watermark passes (never past a record
    // the destination has not acknowledged), committed by librdkafka in the background, on a
    // rebalance and on close.
    c.set("enable.auto.commit", "true");
    c.set("enable.auto.offset.store", "false");
    c.set("auto.commit.interval.ms", COMMIT_INTERVAL_MS.to_string());
    // A new group reads what the topic already holds: nothing produced before the first start
    // is skipped.
    c.set("auto.offset.reset", "earliest");
    c.set(
        "queued.max.messages.kbytes",
        CONSUMER_QUEUE_KBYTES.to_string(),
    );
    c.set("queued.min.messages", CONSUMER_QUEUE_MESSAGES.to_string());
    c.set("fetch.max.bytes", FETCH_MAX_BYTES.to_string());
    c.set(
        "receive.message.max.bytes",
        (FETCH_MAX_BYTES + 65_536).to_string(),
    );
    c.set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string());
    c.set(
        "heartbeat.interval.ms",
        (SESSION_TIMEOUT_MS / 3).to_string(),
    );
    c.set("max.poll.interval.ms", MAX_POLL_INTERVAL_MS.to_string());
    c.set("socket.keepalive.enable", "true");
    // Broker states every second: whether the source is connected (readiness).
    c.set("statistics.interval.ms", "1000");
    Ok(c)
}

/// What producers and consumers share: servers, client id, TLS and SASL.
fn connection_settings(
    plan: &KafkaEndpointPlan,
    client_id: &str,
) -> Result<ClientSettings, SettingsError> {
    let mut c = ClientSettings { pairs: Vec::new() };
    c.set("bootstrap.servers", plan.bootstrap.clone());
    c.set("client.id", client_id);
    let sasl = !matches!(plan.auth, KafkaAuth::None);
    let protocol = match (plan.tls.is_some(), sasl) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    c.set("security.protocol", protocol);
    if let Some(tls) = &plan.tls {
        if let Some(files) = &tls.ca_files {
            let mut pem = String::new();
            for f in files {
                pem_of_certificates(f, &mut pem)?;
            }
            c.set("ssl.ca.pem", pem);
        } else {
            // The system's trust store, wherever this system keeps it.
            c.set("ssl.ca.location", "probe");
        }
        if let Some(cert) = &tls.client_cert {
            let mut chain = String::new();
            pem_of_certificates(&cert.cert, &mut chain)?;
            if let Some(i) = &cert.intermediates {
                pem_of_certificates(i, &mut chain)?;
            }
            c.set("ssl.certificate.pem", chain);
            c.set("ssl.key.pem", pem_of_key(&cert.key)?);
        }
    }
    match &plan.auth {
        KafkaAuth::None => {}
        KafkaAuth::Sasl {
            mechanism,
            username_file,
            password_file,
        } => {
            let (username, password) = read_login(username_file, password_file)
                .map_err(|e| SettingsError(format!("SASL secret: {e}")))?;
            let password = String::from_utf8(password.to_vec())
                .map_err(|_| SettingsError("SASL secret: the password is not UTF-8".into()))?;
            c.set("sasl.mechanism", *mechanism);
            c.set("sasl.username", username.as_str());
            c.set("sasl.password", password);
        }
        KafkaAuth::ManagedIdentity { .. } => c.set("sasl.mechanism", "OAUTHBEARER"),
    }
    Ok(c)
}

/// Appends the certificates of `file` to `out`, checked and in PEM.
fn pem_of_certificates(file: &Path, out: &mut String) -> Result<(), SettingsError> {
    let certs = read_certificates_file(file)
        .map_err(|e| SettingsError(format!("{}: {e}", file.display())))?;
    for cert in certs {
        pem_block(out, "CERTIFICATE", cert.as_ref());
    }
    Ok(())
}

/// The private key of `file`, checked, as PEM.
fn pem_of_key(file: &Path) -> Result<String, SettingsError> {
    use rustls::pki_types::PrivateKeyDer;
    let key = read_private_key_file(file)
        .map_err(|e| SettingsError(format!("{}: {e}", file.display())))?;
    let label = match &key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let mut out = String::new();
    pem_block(&mut out, label, key.secret_der());
    Ok(out)
}

/// `-----BEGIN <label>-----`, base64 in lines of 64, `-----END <label>-----`.
fn pem_block(out: &mut String, label: &str, der: &[u8]) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let _ = writeln!(out, "-----BEGIN {label}-----");
    for line in b64.as_bytes().chunks(64) {
        // Base64 is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {label}-----");
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use sluice_config_agent::model::{
        Batching, KafkaAuthentication, KafkaSettings, OperationalMode,
    };

    use super::*;
    use crate::config::kafka_endpoint::KafkaTls;

    fn plan(settings: KafkaSettings, auth: KafkaAuth, tls: Option<KafkaTls>) -> KafkaEndpointPlan {
        KafkaEndpointPlan {
            name: "ns/kafka".into(),
            bootstrap: "k1:9093,k2:9093".into(),
            tls,
            auth,
            settings,
        }
    }

    fn settings() -> KafkaSettings {
        KafkaSettings::new("k1:9093,k2".into(), KafkaAuthentication::Anonymous)
    }

    fn pairs(c: &ClientSettings) -> Vec<(&str, &str)> {
        c.pairs().iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    #[test]
    fn defaults_map_to_the_documented_properties() {
        let c = producer_settings(&plan(settings(), KafkaAuth::None, None), "id-0", None).unwrap();
        assert_eq!(
            pairs(&c),
            [
                ("bootstrap.servers", "k1:9093,k2:9093"),
                ("client.id", "id-0"),
                ("security.protocol", "plaintext"),
                ("compression.type", "none"),
                ("linger.ms", "5"),
                ("batch.size", "1000000"),
                ("batch.num.messages", "100000"),
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("queue.buffering.max.messages", "100000"),
                ("queue.buffering.max.kbytes", "65536"),
                ("delivery.timeout.ms", "120000"),
                ("socket.keepalive.enable", "true"),
                ("statistics.interval.ms", "1000"),
            ]
        );
    }

    #[test]
    fn each_setting_takes_its_property() {
        type Case = (fn(&mut KafkaSettings), &'static str, Option<&'static str>);
        let table: &[Case] = &[
            (
                |s| s.compression = Compression::Gzip,
                "compression.type",
                Some("gzip"),
            ),
            (
                |s| s.compression = Compression::Snappy,
                "compression.type",
                Some("snappy"),
            ),
            (
                |s| s.compression = Compression::Lz4,
                "compression.type",
                Some("lz4"),
            ),
            (
                |s| s.compression = Compression::Zstd,
                "compression.type",
                Some("zstd"),
            ),
            (|s| s.kafka_acks = KafkaAcks::Zero, "acks", Some("0")),
            (|s| s.kafka_acks = KafkaAcks::One, "acks", Some("1")),
            (
                |s| s.kafka_acks = KafkaAcks::One,
                "enable.idempotence",
                None,
            ),
            (
                |s| {
                    s.batching = Batching {
                        mode: OperationalMode::Enabled,
                        latency_ms: 100,
                        max_bytes: 2_000,
                        max_messages: 10,
                    }
                },
                "linger.ms",
                Some("100"),
            ),
            (
                |s| s.batching.mode = OperationalMode::Disabled,
                "linger.ms",
                Some("0"),
            ),
            (
                |s| s.batching.mode = OperationalMode::Disabled,
                "batch.num.messages",
                None,
            ),
        ];
        for (change, key, want) in table {
            let mut s = settings();
            change(&mut s);
            let c = producer_settings(&plan(s, KafkaAuth::None, None), "id", None).unwrap();
            assert_eq!(c.get(key), *want, "{key}");
        }
    }

    #[test]
    fn security_protocol_follows_tls_and_authentication() {
        let dir = tempfile::tempdir().unwrap();
        let (user, pass) = (dir.path().join("username"), dir.path().join("password"));
        std::fs::write(&user, "$ConnectionString").unwrap();
        std::fs::write(&pass, "Endpoint=sb://x/;SharedAccessKey=k\n").unwrap();
        let sasl = KafkaAuth::Sasl {
            mechanism: "SCRAM-SHA-512",
            username_file: user,
            password_file: pass,
        };
        let tls = KafkaTls {
            ca_files: None,
            client_cert: None,
        };
        let c = producer_settings(&plan(settings(), sasl.clone(), Some(tls)), "id", None).unwrap();
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.username"), Some("$ConnectionString"));
        assert_eq!(
            c.get("sasl.password"),
            Some("Endpoint=sb://x/;SharedAccessKey=k"),
            "a trailing newline of the secret file is not part of it"
        );
        assert!(
            !format!("{c:?}").contains("SharedAccessKey"),
            "Debug shows keys only"
        );
        let c = producer_settings(&plan(settings(), sasl, None), "id", None).unwrap();
        assert_eq!(c.get("security.protocol"), Some("sasl_plaintext"));
        let mi = KafkaAuth::ManagedIdentity {
            endpoint: "http://127.0.0.1:1".into(),
            resource: "https://ns.servicebus.windows.net".into(),
            client_id: None,
        };
        let c = producer_settings(&plan(settings(), mi, None), "id", None).unwrap();
        assert_eq!(c.get("sasl.mechanism"), Some("OAUTHBEARER"));
        // A window bounds the queue below the default.
        let c =
            producer_settings(&plan(settings(), KafkaAuth::None, None), "id", Some(500)).unwrap();
        assert_eq!(c.get("queue.buffering.max.messages"), Some("500"));
    }

    #[test]
    fn a_consumer_shares_the_connection_settings_and_stores_its_own_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let (user, pass) = (dir.path().join("username"), dir.path().join("password"));
        std::fs::write(&user, "u").unwrap();
        std::fs::write(&pass, "p").unwrap();
        let sasl = KafkaAuth::Sasl {
            mechanism: "SCRAM-SHA-256",
            username_file: user,
            password_file: pass,
        };
        let mut s = settings();
        // Producer settings have no place in a consumer's configuration.
        s.compression = Compression::Zstd;
        let c = consumer_settings(&plan(s, sasl, None), "df-src-0", "group-1").unwrap();
        assert_eq!(
            pairs(&c),
            [
                ("bootstrap.servers", "k1:9093,k2:9093"),
                ("client.id", "df-src-0"),
                ("security.protocol", "sasl_plaintext"),
                ("sasl.mechanism", "SCRAM-SHA-256"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
                ("group.id", "group-1"),
                ("group.instance.id", "df-src-0"),
                ("enable.auto.commit", "true"),
                ("enable.auto.offset.store", "false"),
                ("auto.commit.interval.ms", "200"),
                ("auto.offset.reset", "earliest"),
                ("queued.max.messages.kbytes", "16384"),
                ("queued.min.messages", "100000"),
                ("fetch.max.bytes", "16777216"),
                ("receive.message.max.bytes", "16842752"),
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "3333"),
                ("max.poll.interval.ms", "30000"),
                ("socket.keepalive.enable", "true"),
                ("statistics.interval.ms", "1000"),
            ]
        );
    }

    #[test]
    fn unreadable_files_are_errors_naming_the_file() {
        let missing = PathBuf::from("/nonexistent/ca.pem");
        let tls = KafkaTls {
            ca_files: Some(vec![missing]),
            client_cert: None,
        };
        let e = producer_settings(&plan(settings(), KafkaAuth::None, Some(tls)), "id", None)
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
