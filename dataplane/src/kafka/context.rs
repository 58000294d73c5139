//! The producer's context: what librdkafka calls back with while the sink polls it. Delivery
//! reports and client errors are queued here for the sink to take ([`Reports`]); librdkafka's
//! log lines go to `tracing` (escaped); a managed identity's token is handed over from here when
//! librdkafka asks for one.
//!
//! Every callback runs on the worker's thread, inside `poll`: the lock is never contended. The
//! queues are bounded: delivery reports by the producer's own queue limit (one per message it
//! holds), client errors to [`MAX_ERRORS`] (later ones are counted, not kept).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::ClientContext;
use rdkafka::client::OAuthToken;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;
use rdkafka::types::RDKafkaErrorCode;
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
        // Errors come through `error` as well, where the sink logs them at a bounded rate;
        // the log lines are detail.
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                warn!(producer = %self.label, facility = %Escaped(fac), "librdkafka: {}", Escaped(log_message));
            }
            _ => {
                debug!(producer = %self.label, facility = %Escaped(fac), "librdkafka: {}", Escaped(log_message));
            }
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        // Only the brokers' states are read (`"state": "UP"`), not the whole document.
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
        if let Ok(stats) = serde_json::from_slice::<Stats>(statistics) {
            // The bootstrap entries (node id -1) are up before the cluster's brokers are known.
            let up = stats
                .brokers
                .values()
                .any(|b| b.state == "UP" && b.nodeid >= 0);
            self.reports().brokers_up = Some(up);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error
            .rdkafka_error_code()
            .unwrap_or(RDKafkaErrorCode::Unknown);
        let mut r = self.reports();
        // rdkafka 0.39 hands each error event to this callback twice in one poll: keep one.
        if r.errors
            .back()
            .is_some_and(|(c, text)| *c == code && text == reason)
        {
            return;
        }
        if r.errors.len() < MAX_ERRORS {
            r.errors.push_back((code, reason.to_owned()));
        } else {
            r.errors_lost += 1;
        }
    }

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let token = self
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
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
                self.reports().token_wanted = true;
                Err("no managed identity token yet".into())
            }
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
