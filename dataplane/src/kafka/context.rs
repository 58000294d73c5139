//! The clients' contexts: what librdkafka calls back with while the sink polls its producer
//! ([`SinkContext`]) or the source its consumer ([`SourceContext`]). Delivery reports, client
//! errors and rebalances are queued here for the sink or source to take ([`Reports`],
//! [`SourceReports`]); librdkafka's log lines go to `tracing` (escaped); a managed identity's
//! token is handed over from here when librdkafka asks for one. The two share their client
//! callbacks (the functions below the contexts).
//!
//! Every callback runs on the worker's thread, inside `poll`: the lock is never contended. The
//! queues are bounded: delivery reports by the producer's own queue limit (one per message it
//! holds), client errors to [`MAX_ERRORS`] (later ones are counted, not kept), rebalances by
//! the source taking them after every poll (librdkafka serves at most one per poll).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::client::OAuthToken;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance as RdRebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, TopicPartitionList};
use tracing::{debug, warn};

use crate::observe::logs::Escaped;
use crate::secrets::tokens::Token;

/// Client errors kept until the sink takes them; more are counted in [`Reports::errors_lost`].
pub(crate) const MAX_ERRORS: usize = 16;

/// What the callbacks left for the sink.
#[derive(Debug, Default)]
pub(crate) struct Reports {
    /// `(slot, error)` per delivery report: `None` when Kafka has the message.
    pub(crate) delivered: Vec<(usize, Option<RDKafkaErrorCode>)>,
    /// Client-level errors (all brokers down, authentication failed, fatal), oldest first.
    pub(crate) errors: VecDeque<(RDKafkaErrorCode, String)>,
    /// Client errors not kept because [`MAX_ERRORS`] were waiting.
    pub(crate) errors_lost: u64,
    /// librdkafka asked for a token and none was there.
    pub(crate) token_wanted: bool,
    /// From the last statistics: whether any broker connection is up (`None`: no statistics
    /// yet).
    pub(crate) brokers_up: Option<bool>,
}

/// The producer's context. See the module documentation.
#[derive(Debug)]
pub(crate) struct SinkContext {
    /// `namespace/name` of the dataflow and the core, for log lines.
    label: String,
    reports: Mutex<Reports>,
    token: Mutex<Option<Token>>,
}

impl SinkContext {
    /// A context for the producer of `label` (`<dataflow> core <n>`).
    pub(crate) fn new(label: String) -> Self {
        Self {
            label,
            reports: Mutex::new(Reports::default()),
            token: Mutex::new(None),
        }
    }

    /// The queued reports, to take from.
    pub(crate) fn reports(&self) -> MutexGuard<'_, Reports> {
        self.reports.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The managed identity token to hand to librdkafka from now on.
    pub(crate) fn set_token(&self, token: Token) {
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = Some(token);
    }
}

impl ClientContext for SinkContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_line(&self.label, level, fac, log_message);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        if let Some(up) = brokers_up(statistics) {
            self.reports().brokers_up = Some(up);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let mut r = self.reports();
        let r = &mut *r;
        keep_error(&mut r.errors, &mut r.errors_lost, &error, reason);
    }

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        oauth_token(&self.token, || self.reports().token_wanted = true)
    }
}

/// Logs a librdkafka log line of the client `label`: errors come through the error callback
/// as well, where the sink and source log them at a bounded rate; the log lines are detail.
fn log_line(label: &str, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            warn!(client = %label, facility = %Escaped(fac), "librdkafka: {}", Escaped(log_message));
        }
        _ => {
            debug!(client = %label, facility = %Escaped(fac), "librdkafka: {}", Escaped(log_message));
        }
    }
}

/// From librdkafka's statistics: whether any broker connection of the cluster is up (`None`:
/// a document it cannot read). Only the brokers' states are read (`"state": "UP"`).
fn brokers_up(statistics: &[u8]) -> Option<bool> {
    #[derive(serde::Deserialize)]
    struct Stats {
        #[serde(default)]
        brokers: std::collections::HashMap<String, Broker>,
    }
    #[derive(serde::Deserialize)]
    struct Broker {
        #[serde(default)]
        state: String,
        #[serde(default)]
        nodeid: i64,
    }
    let stats = serde_json::from_slice::<Stats>(statistics).ok()?;
    // The bootstrap entries (node id -1) are up before the cluster's brokers are known.
    Some(
        stats
            .brokers
            .values()
            .any(|b| b.state == "UP" && b.nodeid >= 0),
    )
}

/// Keeps a client error in `errors` (at most [`MAX_ERRORS`], the rest counted in `lost`).
fn keep_error(
    errors: &mut VecDeque<(RDKafkaErrorCode, String)>,
    lost: &mut u64,
    error: &KafkaError,
    reason: &str,
) {
    let code = error
        .rdkafka_error_code()
        .unwrap_or(RDKafkaErrorCode::Unknown);
    // rdkafka 0.39 hands each error event to this callback twice in one poll: keep one.
    if errors
        .back()
        .is_some_and(|(c, text)| *c == code && text == reason)
    {
        return;
    }
    if errors.len() < MAX_ERRORS {
        errors.push_back((code, reason.to_owned()));
    } else {
        *lost += 1;
    }
}

/// The managed identity token for librdkafka, if one is there and not expired; else
/// `wanted` is called (the poll loop fetches one) and librdkafka is told there is none yet.
fn oauth_token(
    token: &Mutex<Option<Token>>,
    wanted: impl FnOnce(),
) -> Result<OAuthToken, Box<dyn std::error::Error>> {
    let token = token.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let now = SystemTime::now();
    match token {
        Some(t) if !t.is_expired(now) => {
            let lifetime_ms = t
                .expires_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let value = String::from_utf8(t.value.to_vec())
                .map_err(|_| "the managed identity token is not UTF-8")?;
            Ok(OAuthToken {
                token: value,
                principal_name: "sluice".into(),
                lifetime_ms,
            })
        }
        _ => {
            wanted();
            Err("no managed identity token yet".into())
        }
    }
}

impl ProducerContext for SinkContext {
    /// The sink's slot of the message.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, slot: usize) {
        let error = match result {
            Ok(_) => None,
            Err((e, _)) => Some(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Unknown)),
        };
        self.reports().delivered.push((slot, error));
    }
}

/// A partition of a rebalance: topic and partition number.
pub(crate) type TopicPartition = (String, i32);

/// A consumer group rebalance as the source sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rebalance {
    /// These partitions are this consumer's from now on.
    Assigned(Vec<TopicPartition>),
    /// These partitions are no longer this consumer's (librdkafka has committed what was
    /// stored for them, unless the assignment was lost).
    Revoked(Vec<TopicPartition>),
    /// The rebalance failed (librdkafka's text).
    Failed(String),
}

/// What the consumer's callbacks left for the source.
#[derive(Debug, Default)]
pub(crate) struct SourceReports {
    /// Rebalances, oldest first.
    pub(crate) rebalances: Vec<Rebalance>,
    /// Client-level errors, oldest first (as [`Reports::errors`]).
    pub(crate) errors: VecDeque<(RDKafkaErrorCode, String)>,
    /// Client errors not kept because [`MAX_ERRORS`] were waiting.
    pub(crate) errors_lost: u64,
    /// Commits that failed since the source last looked, and the last failure's text.
    pub(crate) commit_failures: u64,
    /// The last failed commit's error.
    pub(crate) last_commit_error: Option<String>,
    /// librdkafka asked for a token and none was there.
    pub(crate) token_wanted: bool,
    /// From the last statistics: whether any broker connection is up.
    pub(crate) brokers_up: Option<bool>,
}

/// The consumer's context. See the module documentation.
#[derive(Debug)]
pub(crate) struct SourceContext {
    /// `namespace/name` of the dataflow and the core, for log lines.
    label: String,
    reports: Mutex<SourceReports>,
    token: Mutex<Option<Token>>,
}

impl SourceContext {
    /// A context for the consumer of `label` (`<dataflow> core <n>`).
    pub(crate) fn new(label: String) -> Self {
        Self {
            label,
            reports: Mutex::new(SourceReports::default()),
            token: Mutex::new(None),
        }
    }

    /// The queued reports, to take from.
    pub(crate) fn reports(&self) -> MutexGuard<'_, SourceReports> {
        self.reports.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The managed identity token to hand to librdkafka from now on.
    pub(crate) fn set_token(&self, token: Token) {
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = Some(token);
    }
}

impl ClientContext for SourceContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_line(&self.label, level, fac, log_message);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        if let Some(up) = brokers_up(statistics) {
            self.reports().brokers_up = Some(up);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let mut r = self.reports();
        let r = &mut *r;
        keep_error(&mut r.errors, &mut r.errors_lost, &error, reason);
    }

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        oauth_token(&self.token, || self.reports().token_wanted = true)
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &RdRebalance<'_>) {
        // Revocations are taken before librdkafka unassigns (it commits what was stored then).
        if let RdRebalance::Revoke(tpl) = rebalance {
            self.reports()
                .rebalances
                .push(Rebalance::Revoked(partitions(tpl)));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &RdRebalance<'_>) {
        let event = match rebalance {
            RdRebalance::Assign(tpl) => Rebalance::Assigned(partitions(tpl)),
            RdRebalance::Revoke(_) => return,
            RdRebalance::Error(e) => Rebalance::Failed(e.to_string()),
        };
        self.reports().rebalances.push(event);
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // "No offset to commit" is librdkafka telling that nothing changed.
            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) {
                return;
            }
            let mut r = self.reports();
            r.commit_failures += 1;
            r.last_commit_error = Some(e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    #[test]
    fn a_token_is_handed_over_with_its_expiry_and_asked_for_when_missing() {
        let c = SinkContext::new("test".into());
        assert!(c.generate_oauth_token(None).is_err());
        assert!(c.reports().token_wanted, "the loop is asked to fetch one");
        let now = SystemTime::now();
        let expires_at = now + Duration::from_secs(3600);
        c.set_token(Token {
            value: Bytes::from_static(b"eyJ.token"),
            issued_at: now,
            expires_at,
        });
        let t = c.generate_oauth_token(None).expect("a token");
        assert_eq!(t.token, "eyJ.token");
        let ms = expires_at.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert_eq!(t.lifetime_ms, ms);
        c.set_token(Token {
            value: Bytes::from_static(b"old"),
            issued_at: now - Duration::from_secs(7200),
            expires_at: now - Duration::from_secs(1),
        });
        assert!(
            c.generate_oauth_token(None).is_err(),
            "an expired token is not handed over"
        );
    }

    #[test]
    fn an_error_handed_over_twice_is_kept_once() {
        let c = SinkContext::new("test".into());
        let e = || KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        c.error(e(), "1/1 brokers are down");
        c.error(e(), "1/1 brokers are down");
        c.error(e(), "still down");
        let texts: Vec<String> = c.reports().errors.iter().map(|(_, t)| t.clone()).collect();
        assert_eq!(texts, ["1/1 brokers are down", "still down"]);
    }

    #[test]
    fn broker_states_come_from_the_statistics() {
        let c = SinkContext::new("test".into());
        c.stats_raw(br#"{"brokers":{"b:9092/bootstrap":{"state":"UP","nodeid":-1}}}"#);
        assert_eq!(
            c.reports().brokers_up,
            Some(false),
            "a bootstrap entry is not the cluster"
        );
        c.stats_raw(br#"{"brokers":{"b:9092/1":{"state":"UP","nodeid":1},"c/2":{"state":"DOWN","nodeid":2}}}"#);
        assert_eq!(c.reports().brokers_up, Some(true));
        c.stats_raw(b"not json");
        assert_eq!(
            c.reports().brokers_up,
            Some(true),
            "unchanged by a document it cannot read"
        );
    }
}
