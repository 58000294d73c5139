//! Tokens for MQTT 5.0 enhanced authentication, fetched for each connection and refreshed
//! before they expire: `K8S-SAT` (a service account token file, re-read every time) and
//! `OAUTH2-JWT` (a managed identity token from an IMDS endpoint, cached until its refresh time).
//! IMDS requests block, so they run on a short-lived thread and the core's event loop awaits
//! the answer.

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;

use super::AuthError;
use super::files::read_service_account_token;
use super::imds::ImdsClient;
use crate::runtime::sync::off_loop;

/// Where an endpoint's token comes from.
#[derive(Debug)]
pub(crate) enum TokenSource {
    /// No enhanced authentication.
    None,
    /// A service account token file.
    File {
        /// The file.
        path: PathBuf,
    },
    /// A managed identity token from IMDS.
    Imds {
        /// The client.
        client: Arc<ImdsClient>,
        /// Resource / scope.
        resource: String,
        /// User-assigned identity.
        client_id: Option<String>,
        /// The last token.
        cache: RefCell<TokenCache>,
    },
}

impl TokenSource {
    /// A service account token read from `path` for every connection.
    pub(crate) fn file(path: PathBuf) -> Self {
        Self::File { path }
    }

    /// A managed identity token for `resource` from the IMDS endpoint.
    ///
    /// # Errors
    /// When the IMDS endpoint is not a usable URL.
    pub(crate) fn imds(
        endpoint: &str,
        resource: String,
        client_id: Option<String>,
    ) -> Result<Self, AuthError> {
        Ok(Self::Imds {
            client: Arc::new(ImdsClient::new(endpoint)?),
            resource,
            client_id,
            cache: RefCell::new(TokenCache::new()),
        })
    }

    /// A token for the next CONNECT (or re-authentication), and when to refresh it.
    ///
    /// # Errors
    /// When the file cannot be read or IMDS refuses.
    pub(crate) async fn token(&self) -> Result<Option<(Bytes, Option<SystemTime>)>, AuthError> {
        match self {
            Self::None => Ok(None),
            Self::File { path } => {
                let token = read_service_account_token(path)?;
                let refresh = jwt_expiry(&token).map(|exp| {
                    let now = SystemTime::now();
                    let left = exp.duration_since(now).unwrap_or_default();
                    // Re-read when 80% of the remaining time has passed (at least a minute
                    // before expiry when there is that much left).
                    // Never sooner than 30 s from now: a token close to expiry is re-read (and
                    // sent again) every 30 s until the kubelet rotates it, not every second.
                    now + (left * 4 / 5)
                        .min(left.saturating_sub(Duration::from_secs(60)))
                        .max(Duration::from_secs(30))
                });
                Ok(Some((token, refresh)))
            }
            Self::Imds {
                client,
                resource,
                client_id,
                cache,
            } => {
                let now = SystemTime::now();
                if let Some(t) = cache.borrow().valid_token(now)
                    && !cache.borrow().needs_refresh(now)
                {
                    return Ok(Some((t.value.clone(), Some(t.refresh_at()))));
                }
                let (client, resource, client_id) =
                    (Arc::clone(client), resource.clone(), client_id.clone());
                let endpoint = client.endpoint().to_owned();
                let token: Token =
                    off_loop(move || Ok(client.fetch(&resource, client_id.as_deref())))
                        .await
                        .map_err(|source| AuthError::Io { endpoint, source })??;
                let answer = (token.value.clone(), Some(token.refresh_at()));
                cache.borrow_mut().set(token);
                Ok(Some(answer))
            }
        }
    }
}

impl TokenSource {
    /// The last managed identity token obtained (with its expiry), if any.
    pub(crate) fn cached(&self) -> Option<Token> {
        match self {
            Self::Imds { cache, .. } => cache.borrow().token().cloned(),
            Self::None | Self::File { .. } => None,
        }
    }

    /// The broker refused the token: forget a cached one, so that the next connection fetches a
    /// fresh token instead of presenting the refused one until its refresh time.
    pub(crate) fn invalidate(&self) {
        if let Self::Imds { cache, .. } = self {
            cache.borrow_mut().clear();
        }
    }
}

/// Authentication Method of the Azure IoT Operations MQTT broker for Kubernetes service account
/// tokens; the Authentication Data is the token.
pub(crate) const K8S_SAT: &str = "K8S-SAT";

/// Authentication Method of Azure Event Grid's MQTT broker for Microsoft Entra ID JWTs (such as
/// a managed identity token); the Authentication Data is the token.
pub(crate) const OAUTH2_JWT: &str = "OAUTH2-JWT";

/// A bearer token and when it stops being valid. `Debug` does not show the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The token, as MQTT Authentication Data.
    pub value: Bytes,
    /// When it was obtained (the caller's `now`).
    pub issued_at: SystemTime,
    /// When it expires.
    pub expires_at: SystemTime,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field(
                "value",
                &format_args!("<{} bytes redacted>", self.value.len()),
            )
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Refresh no later than this long before expiry.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

impl Token {
    /// The token's lifetime as obtained (zero when it had already expired).
    pub fn lifetime(&self) -> Duration {
        self.expires_at
            .duration_since(self.issued_at)
            .unwrap_or(Duration::ZERO)
    }

    /// When to get the next token: 10 % of the lifetime or 5 minutes before expiry, whichever is
    /// earlier, but not before half the lifetime has passed, so that a short-lived token (10
    /// minutes or less, such as one IMDS hands out from its cache near its end) is not
    /// refreshed in a loop. Never before [`Token::issued_at`]; for an expired token, that is
    /// when it was obtained.
    pub fn refresh_at(&self) -> SystemTime {
        let lifetime = self.lifetime();
        let margin = (lifetime / 10).max(REFRESH_MARGIN);
        let by_margin = self
            .expires_at
            .checked_sub(margin)
            .unwrap_or(self.issued_at);
        let half_life = self.issued_at + lifetime / 2;
        by_margin.max(half_life)
    }

    /// Whether the token has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }
}

/// The last token obtained, and whether it is time for the next. Sans-IO: the caller fetches
/// and passes `now`.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenCache {
    token: Option<Token>,
}

impl TokenCache {
    /// An empty cache: a refresh is due.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The last token stored, expired or not.
    pub(crate) fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// The last token stored if it has not expired at `now`.
    pub(crate) fn valid_token(&self, now: SystemTime) -> Option<&Token> {
        self.token.as_ref().filter(|t| !t.is_expired(now))
    }

    /// Remembers a new token, replacing the last.
    pub(crate) fn set(&mut self, token: Token) {
        self.token = Some(token);
    }

    /// Forgets the token (for example after the broker refused it), so that a refresh is due.
    pub(crate) fn clear(&mut self) {
        self.token = None;
    }

    /// When a refresh is due ([`Token::refresh_at`]); `None` when there is no token, which
    /// means now.
    pub(crate) fn refresh_at(&self) -> Option<SystemTime> {
        self.token.as_ref().map(Token::refresh_at)
    }

    /// Whether to get a new token at `now`: there is none, or its [`Token::refresh_at`] has
    /// come.
    pub(crate) fn needs_refresh(&self, now: SystemTime) -> bool {
        self.refresh_at().is_none_or(|at| now >= at)
    }
}

/// The `exp` claim of a JWT (such as a service account token), read without checking the
/// signature: for scheduling the next read of a token we hold, not for trusting one. `None`
/// when `token` is not a JWT with a numeric `exp`.
pub(crate) fn jwt_expiry(token: &[u8]) -> Option<SystemTime> {
    #[derive(Deserialize)]
    struct Claims {
        exp: Option<f64>,
    }
    let mut parts = token.split(|&b| b == b'.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    parts.next()?; // the signature must be there too
    let unpadded = payload.trim_ascii_end();
    let unpadded =
        &unpadded[..unpadded.len() - unpadded.iter().rev().take_while(|&&b| b == b'=').count()];
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(unpadded)
        .ok()?;
    let exp = serde_json::from_slice::<Claims>(&json).ok()?.exp?;
    (exp.is_finite() && exp >= 0.0).then(|| UNIX_EPOCH + Duration::from_secs(exp as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn token(issued: u64, expires: u64) -> Token {
        Token {
            value: Bytes::from_static(b"eyJ.secret.sig"),
            issued_at: t(issued),
            expires_at: t(expires),
        }
    }

    #[test]
    fn refresh_at_takes_the_earlier_margin() {
        // 24 h: 10 % (2.4 h) is more than 5 min.
        let day = token(1_000, 1_000 + 86_400);
        assert_eq!(day.refresh_at(), t(1_000 + 86_400 - 8_640));
        // 30 min: 5 min is more than 10 % (3 min).
        let half_hour = token(1_000, 1_000 + 1_800);
        assert_eq!(half_hour.refresh_at(), t(1_000 + 1_500));
        // 8 min: 5 min before expiry would be before half-life.
        let short = token(1_000, 1_000 + 480);
        assert_eq!(short.refresh_at(), t(1_000 + 240));
        // Expired on arrival: at once.
        let expired = token(1_000, 900);
        assert_eq!(expired.lifetime(), Duration::ZERO);
        assert_eq!(expired.refresh_at(), t(1_000));
        assert!(expired.is_expired(t(1_000)));
    }

    #[test]
    fn cache_says_when_to_refresh() {
        let mut cache = TokenCache::new();
        assert!(cache.needs_refresh(t(0)));
        assert_eq!(cache.refresh_at(), None);
        cache.set(token(1_000, 1_000 + 3_600));
        let at = t(1_000 + 3_600 - 360);
        assert_eq!(cache.refresh_at(), Some(at));
        assert!(!cache.needs_refresh(t(1_000)));
        assert!(!cache.needs_refresh(at - Duration::from_secs(1)));
        assert!(cache.needs_refresh(at));
        assert!(cache.valid_token(at).is_some());
        assert!(cache.valid_token(t(1_000 + 3_600)).is_none());
        assert!(cache.token().is_some());
        cache.clear();
        assert!(cache.needs_refresh(t(1_000)));
    }

    #[test]
    fn token_debug_hides_the_value() {
        let text = format!("{:?}", token(0, 10));
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("<14 bytes redacted>"), "{text}");
    }

    #[test]
    fn jwt_expiry_reads_exp() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"aud":["aio-internal"],"exp":1700003600,"iat":1700000000}"#)
        );
        assert_eq!(jwt_expiry(jwt.as_bytes()), Some(t(1_700_003_600)));
        let no_exp = format!("{}.{}.sig", b64("{}"), b64(r#"{"iat":1}"#));
        assert_eq!(jwt_expiry(no_exp.as_bytes()), None);
        assert_eq!(jwt_expiry(b"not-a-jwt"), None);
        assert_eq!(jwt_expiry(b"a.!!!.c"), None);
    }
}
