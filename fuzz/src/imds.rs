//! The `imds_response` target: an HTTP response from a hostile IMDS endpoint, read as the data
//! plane's managed identity client reads it (its response parser after each read, then once
//! more when the server closes; see
//! [`imds_response`](sluice_dataplane::bench_support::fuzz::imds_response)), and the token body
//! of a complete response ([`imds_token`](sluice_dataplane::bench_support::fuzz::imds_token)),
//! with the refresh schedule computed from the token.
//!
//! Input: a read size (0: one read), then the server's bytes; the server closes the connection
//! after them.
//!
//! Checked (any failure is a panic):
//! - nothing panics, in the parsers or in the token's arithmetic (`lifetime`, `refresh_at`);
//! - a verdict does not change with more bytes: a response complete (or refused) after some
//!   read is the same response (the same error) read from all the bytes at once, and a complete
//!   response is the same when the server then closes;
//! - a response is a final one (interim 1xx responses are skipped), its body
//!   within the response limit, empty for 204 and 304;
//! - a token has a value, was issued at the time given, and its refresh time is neither before
//!   it was issued nor after it expires (for a token that has not expired already); `Debug` of
//!   the token does not show its value.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_dataplane::bench_support::fuzz::{imds_response, imds_token};
use sluice_dataplane::secrets::imds::MAX_RESPONSE_BYTES;

/// A response parser's verdict: `None` while the response is incomplete.
type Verdict = Result<Option<(u16, Vec<u8>)>, &'static str>;

/// When the response arrives, for the token's times.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

/// Reads `response` as the client does: the parser after each read, a read refused once the
/// response would exceed [`MAX_RESPONSE_BYTES`], and the parser with `eof` when the bytes end.
/// Returns the verdict and how many bytes the parser had seen then (`None` when it came from the
/// size limit).
fn client_read(response: &[u8], read_size: u8) -> (Verdict, Option<usize>) {
    let mut buf = Vec::new();
    for read in crate::reads(response, read_size) {
        match imds_response(&buf, false) {
            Ok(None) => {}
            decided => return (decided, Some(buf.len())),
        }
        if buf.len() + read.len() > MAX_RESPONSE_BYTES {
            return (Err("response too large"), None);
        }
        buf.extend_from_slice(read);
    }
    match imds_response(&buf, false) {
        Ok(None) => (imds_response(&buf, true), Some(buf.len())),
        decided => (decided, Some(buf.len())),
    }
}

/// Reads `data` (read size, the server's bytes) as the IMDS client does and checks every
/// invariant listed in the module documentation.
///
/// # Panics
/// When an invariant does not hold: that is the finding.
pub fn imds_read(data: &[u8]) {
    let [read_size, response @ ..] = data else {
        return;
    };
    let (verdict, seen) = client_read(response, *read_size);
    if let Some(seen) = seen
        && seen < response.len()
    {
        // Decided before the end: all the bytes at once give the same.
        assert_eq!(
            imds_response(response, false),
            verdict,
            "more bytes after the verdict after {seen} bytes change it"
        );
    }
    let Ok(Some((status, body))) = verdict else {
        return;
    };
    assert_eq!(
        imds_response(response, true),
        Ok(Some((status, body.clone()))),
        "a complete response reads differently once the server closes"
    );
    assert!(
        !(100..200).contains(&status),
        "the interim status {status} returned as the final response"
    );
    assert!(
        body.len() <= MAX_RESPONSE_BYTES,
        "a body of {} bytes",
        body.len()
    );
    if matches!(status, 204 | 304) {
        assert!(body.is_empty(), "a body for status {status}");
    }

    let now = now();
    match imds_token(status, &body, now) {
        Ok(token) => {
            assert!(!token.value.is_empty(), "a token without a value");
            assert_eq!(token.issued_at, now, "issued at another time");
            let lifetime = token.lifetime();
            let refresh = token.refresh_at();
            assert!(
                refresh >= token.issued_at,
                "refresh before the token was issued"
            );
            if token.expires_at > token.issued_at {
                assert_eq!(
                    token.issued_at + lifetime,
                    token.expires_at,
                    "lifetime is not the time from issue to expiry"
                );
                assert!(
                    refresh <= token.expires_at,
                    "refresh after the token expires"
                );
            }
            assert!(
                token.is_expired(token.expires_at),
                "not expired at its expiry"
            );
            if token.value.len() >= 24 {
                let debug = format!("{token:?}");
                let value = String::from_utf8_lossy(&token.value);
                assert!(!debug.contains(&*value), "Debug shows the token: {debug}");
            }
        }
        Err(e) => {
            let _ = (e.to_string(), e.is_retryable());
        }
    }
}
