//! Tokens for MQTT 5.0 enhanced authentication, fetched for each connection and refreshed
//! before they expire: `K8S-SAT` (a service account token file, re-read every time) and
//! `OAUTH2-JWT` (a managed identity token from an IMDS endpoint, cached until its refresh time).
//! IMDS requests block, so they run on a short-lived thread and the core's event loop awaits
//! the answer.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::auth::{
    AuthError, ImdsClient, Token, TokenCache, jwt_expiry, read_service_account_token,
};
use crate::local::Mailbox;
use crate::plan::Credentials;

/// Where an endpoint's token comes from.
#[derive(Debug)]
pub enum TokenSource {
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
    /// The source for an endpoint's credentials.
    ///
    /// # Errors
    /// When the IMDS endpoint is not a usable URL.
    pub fn new(credentials: &Credentials) -> Result<Self, AuthError> {
        Ok(match credentials {
            Credentials::ServiceAccountToken { path } => Self::File { path: path.clone() },
            Credentials::ManagedIdentity {
                endpoint,
                resource,
                client_id,
            } => Self::Imds {
                client: Arc::new(ImdsClient::new(endpoint)?),
                resource: resource.clone(),
                client_id: client_id.clone(),
                cache: RefCell::new(TokenCache::new()),
            },
            Credentials::None | Credentials::UsernamePassword { .. } => Self::None,
        })
    }

    /// A token for the next CONNECT (or re-authentication), and when to refresh it.
    ///
    /// # Errors
    /// When the file cannot be read or IMDS refuses.
    pub async fn token(&self) -> Result<Option<(Bytes, Option<SystemTime>)>, AuthError> {
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
    /// The broker refused the token: forget a cached one, so that the next connection fetches a
    /// fresh token instead of presenting the refused one until its refresh time.
    pub fn invalidate(&self) {
        if let Self::Imds { cache, .. } = self {
            cache.borrow_mut().clear();
        }
    }
}

/// Runs a blocking call on its own thread and awaits its result on the event loop.
///
/// # Errors
/// When no thread can be started, or the call panicked.
pub async fn off_loop<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let mailbox = Mailbox::new();
    let tx = mailbox.clone();
    std::thread::Builder::new()
        .name("sluice-blocking".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err(std::io::Error::other("blocking call panicked")));
            let _ = tx.send(result);
        })?;
    mailbox.recv().await
}
