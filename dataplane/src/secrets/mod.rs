//! Secrets and tokens: bounded reads of the files that secrets and service account tokens are
//! mounted as ([`files`]), bearer tokens and when to refresh them ([`tokens`]), and the managed
//! identity client of an IMDS endpoint ([`imds`]). Nothing here speaks MQTT or Kafka: the
//! connections present what this module hands them.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub mod files;
pub mod imds;
pub mod tokens;

use files::MAX_SECRET_FILE_BYTES;
use imds::MAX_RESPONSE_BYTES;

/// Why no token was had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token file could not be read.
    #[error("service account token {path}: {source}")]
    ReadToken {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The token file is empty (or only whitespace).
    #[error("service account token {path}: the file is empty")]
    EmptyToken {
        /// The file.
        path: PathBuf,
    },
    /// The token file is larger than [`MAX_SECRET_FILE_BYTES`]: not a token.
    #[error("service account token {path}: larger than {MAX_SECRET_FILE_BYTES} bytes")]
    TokenFileTooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The IMDS endpoint is not an `http://host[:port][/path]` address.
    #[error("IMDS endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Resolving, connecting, writing or reading failed.
    #[error("IMDS {endpoint}: {source}")]
    Io {
        /// The endpoint.
        endpoint: String,
        /// Why.
        source: io::Error,
    },
    /// The connection was not up within the connect timeout, or the response not complete
    /// within the read timeout.
    #[error("IMDS {endpoint}: no {what} within {timeout:?}")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// `"connection"` or `"response"`.
        what: &'static str,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The response is not HTTP/1.x as this client reads it.
    #[error("IMDS {endpoint}: malformed HTTP response: {reason}")]
    MalformedResponse {
        /// The endpoint.
        endpoint: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The response is larger than [`MAX_RESPONSE_BYTES`].
    #[error("IMDS {endpoint}: response larger than {MAX_RESPONSE_BYTES} bytes")]
    ResponseTooLarge {
        /// The endpoint.
        endpoint: String,
    },
    /// The endpoint answered with an error status.
    #[error("IMDS {endpoint}: HTTP {status}: {message}")]
    Status {
        /// The endpoint.
        endpoint: String,
        /// HTTP status code.
        status: u16,
        /// The body's `error` (for example `invalid_resource`), when it is JSON with one.
        error: Option<String>,
        /// The body's `error_description`, else its `error`, else the body itself (up to 512
        /// bytes, lossily decoded).
        message: String,
    },
    /// A 2xx response whose body is not a usable token.
    #[error("IMDS {endpoint}: token response: {reason}")]
    InvalidTokenResponse {
        /// The endpoint.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
}

impl AuthError {
    /// Whether trying again later (with backoff) may succeed: network errors, timeouts, and the
    /// statuses IMDS documents as transient (404 while an identity is being assigned, 410 while
    /// IMDS updates, 429, 5xx). A bad request (400: unknown resource or identity), a bad
    /// endpoint or an unreadable token file is not retryable as such, though a token file may
    /// appear later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Io { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => matches!(status, 404 | 410 | 429 | 500..=599),
            _ => false,
        }
    }
}
