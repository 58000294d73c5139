//! The managed identity token client of an IMDS-compatible endpoint (Azure IMDS, a test
//! stand-in, an identity sidecar). It gets tokens; [`super::tokens`] says when to get the next.
//!
//! Blocking: [`ImdsClient::fetch`] makes an HTTP request that can take up to its connect timeout
//! plus its read timeout (5 s + 5 s by default). It does not belong on a core's event loop: call
//! it before connecting, or from a helper thread that hands the token over
//! (`TokenSource` in `super::tokens` does). The rest is sans-IO and reads no clock: the HTTP
//! response and token parsing are pure functions of the bytes received.
//!
//! The IMDS request is `GET {endpoint}/metadata/identity/oauth2/token?api-version=2018-02-01&
//! resource=…[&client_id=…]` with `Metadata: true`, plain HTTP/1.1 (IMDS listens on the
//! link-local `169.254.169.254:80`; TLS is not supported here), `Connection: close`. The response
//! may be framed by Content-Length, chunked, or the end of the connection, and is refused beyond
//! [`MAX_RESPONSE_BYTES`]. Its head and chunk size lines are parsed by [`crate::net::http1`]
//! (`httparse`); the blocking request and the body framing are here. A 200 carries JSON with
//! `access_token`, `expires_in` (seconds, a string in IMDS, a number in some stand-ins) and `expires_on` (seconds since the Unix epoch);
//! an error status carries JSON with `error` and `error_description`.
//!
//! Memory: one response of at most [`MAX_RESPONSE_BYTES`] per fetch; a `TokenCache` holds one

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Deserialize;

use super::AuthError;
use super::tokens::Token;
use crate::net::http1::{self, Http1Error};

/// The IMDS API version asked for.
pub const IMDS_API_VERSION: &str = "2018-02-01";

/// Largest IMDS response accepted (status line, headers and body), bytes. A token response is
/// a few KiB.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Default time allowed to open the TCP connection to the IMDS endpoint.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default time allowed for sending the request and receiving the whole response.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for the managed identity token endpoint of Azure IMDS, or of anything that answers
/// the same requests (a test stand-in, an identity sidecar). Blocking: see the module
/// documentation.
#[derive(Debug, Clone)]
pub struct ImdsClient {
    /// The endpoint as given, for error messages.
    endpoint: String,
    /// `host[:port]` as written, for the Host header.
    authority: String,
    host: String,
    port: u16,
    /// Path prefix before `/metadata/...`, without a trailing slash.
    base_path: String,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl ImdsClient {
    /// A client for `endpoint`: `http://host[:port][/path]`, for example
    /// `http://169.254.169.254` (Azure) or `http://127.0.0.1:40342`. Timeouts are
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_READ_TIMEOUT`].
    ///
    /// # Errors
    /// [`AuthError::InvalidEndpoint`] when `endpoint` is not such an address (`https` included:
    /// IMDS is plain HTTP on a link-local address).
    pub fn new(endpoint: &str) -> Result<Self, AuthError> {
        let invalid = |reason| AuthError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let rest = match endpoint.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => return Err(invalid("only http:// is supported")),
            None => return Err(invalid("expected http://host[:port]")),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
            Some(_) => return Err(invalid("a query or fragment is not allowed")),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(invalid("a query or fragment is not allowed"));
        }
        if authority.contains('@') {
            return Err(invalid("user information is not allowed"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| invalid("junk after ']'"))?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p.parse().map_err(|_| invalid("invalid port"))?,
        };
        Ok(Self {
            endpoint: endpoint.to_owned(),
            authority: authority.to_owned(),
            host: host.to_owned(),
            port,
            base_path: path.trim_end_matches('/').to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
        })
    }

    /// Replaces the timeouts: `connect` for opening the TCP connection (per address the host
    /// resolves to), `read` for sending the request and receiving the whole response.
    #[must_use]
    pub fn with_timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.connect_timeout = connect;
        self.read_timeout = read;
        self
    }

    /// The endpoint as given.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The request target (path and query) for a token for `resource`, as a user-assigned
    /// identity `client_id` when given.
    pub fn request_target(&self, resource: &str, client_id: Option<&str>) -> String {
        let mut target = format!(
            "{}/metadata/identity/oauth2/token?api-version={IMDS_API_VERSION}&resource=",
            self.base_path
        );
        percent_encode(resource, &mut target);
        if let Some(id) = client_id {
            target.push_str("&client_id=");
            percent_encode(id, &mut target);
        }
        target
    }

    /// Gets a token for `resource` (for Event Grid `https://eventgrid.azure.net/`), as the
    /// user-assigned identity `client_id` when given, else the system-assigned one. Blocks for up
    /// to the connect timeout plus the read timeout (plus name resolution, for a host name).
    ///
    /// # Errors
    /// [`AuthError::Io`] and [`AuthError::Timeout`] for the network,
    /// [`AuthError::MalformedResponse`] and [`AuthError::ResponseTooLarge`] for what came back,
    /// [`AuthError::Status`] for an error status (with the body's message),
    /// [`AuthError::InvalidTokenResponse`] for a success without a usable token.
    /// [`AuthError::is_retryable`] sorts them.
    pub fn fetch(&self, resource: &str, client_id: Option<&str>) -> Result<Token, AuthError> {
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nMetadata: true\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n",
            self.request_target(resource, client_id),
            self.authority
        );
        let mut stream = self.connect()?;
        let deadline = Instant::now() + self.read_timeout;
        stream
            .set_write_timeout(Some(self.read_timeout))
            .map_err(|e| self.io_error(e))?;
        stream
            .write_all(request.as_bytes())
            .map_err(|e| self.io_error(e))?;
        let response = self.read_response(&mut stream, deadline)?;
        parse_token_response(
            &self.endpoint,
            response.status,
            &response.body,
            SystemTime::now(),
        )
    }

    fn connect(&self) -> Result<TcpStream, AuthError> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| self.io_error(e))?
            .collect();
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.connect_timeout) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) if is_timeout(&e) => AuthError::Timeout {
                endpoint: self.endpoint.clone(),
                what: "connection",
                timeout: self.connect_timeout,
            },
            Some(e) => self.io_error(e),
            None => self.io_error(io::Error::new(
                io::ErrorKind::NotFound,
                "the host resolves to no address",
            )),
        })
    }

    /// Reads until the response is complete, the deadline passes or the limit is hit.
    fn read_response(
        &self,
        stream: &mut TcpStream,
        deadline: Instant,
    ) -> Result<Response, AuthError> {
        let malformed = |reason| AuthError::MalformedResponse {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(response) = parse_response(&buf, false).map_err(malformed)? {
                return Ok(response);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.response_timeout());
            }
            stream
                .set_read_timeout(Some(remaining))
                .map_err(|e| self.io_error(e))?;
            match stream.read(&mut chunk) {
                Ok(0) => {
                    return parse_response(&buf, true)
                        .map_err(malformed)?
                        .ok_or_else(|| {
                            malformed("the connection closed before the response ended")
                        });
                }
                Ok(n) => {
                    if buf.len() + n > MAX_RESPONSE_BYTES {
                        return Err(AuthError::ResponseTooLarge {
                            endpoint: self.endpoint.clone(),
                        });
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(self.response_timeout()),
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    fn io_error(&self, source: io::Error) -> AuthError {
        if is_timeout(&source) {
            return self.response_timeout();
        }
        AuthError::Io {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    fn response_timeout(&self) -> AuthError {
        AuthError::Timeout {
            endpoint: self.endpoint.clone(),
            what: "response",
            timeout: self.read_timeout,
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Percent-encodes everything but the unreserved characters (RFC 3986 §2.3).
fn percent_encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
}

/// A complete HTTP response: status and decoded body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// Parses an HTTP/1.x response from the bytes read so far: `Ok(None)` while it is incomplete,
/// `eof` when the peer has closed (which ends a body framed by neither Content-Length nor
/// chunked encoding). Interim (1xx) responses are skipped. The head is [`http1::parse_response`]'s.
pub(crate) fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, &'static str> {
    let mut buf = buf;
    loop {
        let head = match http1::parse_response(buf, MAX_RESPONSE_BYTES) {
            Ok(Some(head)) => head,
            Ok(None) if eof => return Err("the connection closed inside the header"),
            Ok(None) => return Ok(None),
            Err(Http1Error::UnsupportedVersion | Http1Error::Version) => {
                return Err("not an HTTP/1.x status line");
            }
            Err(Http1Error::Status) => return Err("invalid status code"),
            Err(Http1Error::TooLarge { .. }) => return Err("header beyond the response limit"),
            Err(Http1Error::TooManyHeaders { .. }) => return Err("too many header fields"),
            Err(_) => return Err("malformed header"),
        };
        let status = head.status;
        let body = &buf[head.len..];
        let mut chunked = false;
        if let Some(value) = head.headers.all("transfer-encoding").last() {
            // The last coding decides the framing (RFC 9112 §6.3).
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if !chunked {
                return Err("unsupported Transfer-Encoding");
            }
        }
        let mut content_length: Option<usize> = None;
        for value in head.headers.all("content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("invalid Content-Length")?;
            if content_length.is_some_and(|m| m != n) {
                return Err("conflicting Content-Length headers");
            }
            content_length = Some(n);
        }
        if (100..200).contains(&status) {
            buf = body;
            continue;
        }
        let body = if matches!(status, 204 | 304) {
            Some(Vec::new())
        } else if chunked {
            // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3).
            decode_chunked(body)?
        } else if let Some(len) = content_length {
            match body.get(..len) {
                Some(b) => Some(b.to_vec()),
                None if eof => return Err("the connection closed inside the body"),
                None => None,
            }
        } else if eof {
            Some(body.to_vec())
        } else {
            None
        };
        return match body {
            Some(body) => Ok(Some(Response { status, body })),
            None if eof => Err("the connection closed inside the body"),
            None => Ok(None),
        };
    }
}

/// Decodes a chunked body (RFC 9112 §7.1) with [`http1::parse_chunk_size`]: `Ok(None)` while
/// incomplete. Extensions and trailer fields are skipped.
fn decode_chunked(data: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let Some((line_len, size)) =
            http1::parse_chunk_size(&data[pos..]).map_err(|_| "invalid chunk size")?
        else {
            return Ok(None);
        };
        // `out` holds at most MAX_RESPONSE_BYTES: the subtraction cannot overflow, the sum could.
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= MAX_RESPONSE_BYTES - out.len())
            .ok_or("chunk beyond the response limit")?;
        pos += line_len;
        if size == 0 {
            // Trailer fields, then an empty line.
            return match http1::parse_trailers(&data[pos..], MAX_RESPONSE_BYTES) {
                Ok(Some(_)) => Ok(Some(out)),
                Ok(None) => Ok(None),
                Err(_) => Err("malformed trailer fields"),
            };
        }
        let Some(chunk) = data.get(pos..pos + size + 2) else {
            return Ok(None);
        };
        if &chunk[size..] != b"\r\n" {
            return Err("chunk data not followed by CRLF");
        }
        out.extend_from_slice(&chunk[..size]);
        pos += size + 2;
    }
}

/// A number of seconds sent as a JSON number or as a string of digits.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(f64),
    Text(String),
}

impl Seconds {
    fn get(&self) -> Option<u64> {
        match self {
            Self::Number(n) => (n.is_finite() && *n >= 0.0).then_some(*n as u64),
            Self::Text(s) => s.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<String>,
    expires_in: Option<Seconds>,
    expires_on: Option<Seconds>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
    error_description: Option<String>,
}

/// Turns an IMDS response into a token, or into the error its status and body describe. Pure:
/// `now` is when the response arrived. The expiry is the earlier of `now + expires_in` and
/// `expires_on`, among those present and readable.
pub(crate) fn parse_token_response(
    endpoint: &str,
    status: u16,
    body: &[u8],
    now: SystemTime,
) -> Result<Token, AuthError> {
    if !(200..300).contains(&status) {
        let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
        let (error, description) = parsed.map_or((None, None), |e| (e.error, e.error_description));
        let message = match (&description, &error) {
            (Some(d), _) => d.clone(),
            (None, Some(e)) => e.clone(),
            (None, None) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
                let text = text.trim();
                if text.is_empty() {
                    "no error description".to_owned()
                } else {
                    text.to_owned()
                }
            }
        };
        return Err(AuthError::Status {
            endpoint: endpoint.to_owned(),
            status,
            error,
            message,
        });
    }
    let invalid = |reason: String| AuthError::InvalidTokenResponse {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let parsed: TokenBody =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let value = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("no access_token".to_owned()))?;
    // A time the clock cannot hold (a server's nonsense: billions of years) is not readable.
    let by_expires_in = parsed
        .expires_in
        .as_ref()
        .and_then(Seconds::get)
        .and_then(|s| now.checked_add(Duration::from_secs(s)));
    let by_expires_on = parsed
        .expires_on
        .as_ref()
        .and_then(Seconds::get)
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)));
    let expires_at = match (by_expires_in, by_expires_on) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a
            .or(b)
            .ok_or_else(|| invalid("no readable expires_in or expires_on".to_owned()))?,
    };
    Ok(Token {
        value: Bytes::from(value),
        issued_at: now,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn endpoints() {
        let c = ImdsClient::new("http://169.254.169.254").expect("valid");
        assert_eq!((c.host.as_str(), c.port), ("169.254.169.254", 80));
        assert_eq!(
            c.request_target("https://eventgrid.azure.net/", None),
            "/metadata/identity/oauth2/token?api-version=2018-02-01\
             &resource=https%3A%2F%2Feventgrid.azure.net%2F"
        );
        let c = ImdsClient::new("http://127.0.0.1:8080/").expect("valid");
        assert_eq!((c.authority.as_str(), c.port), ("127.0.0.1:8080", 8080));
        assert_eq!(
            c.request_target("api://a b", Some("0000-1111")),
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api%3A%2F%2Fa%20b\
             &client_id=0000-1111"
        );
        let c = ImdsClient::new("HTTP://[::1]:9000/identity/").expect("valid");
        assert_eq!((c.host.as_str(), c.port), ("::1", 9000));
        assert_eq!(c.authority, "[::1]:9000");
        assert!(
            c.request_target("r", None)
                .starts_with("/identity/metadata/")
        );
        for bad in [
            "https://169.254.169.254",
            "169.254.169.254",
            "http://",
            "http://:80",
            "http://host:port",
            "http://host:99999",
            "http://user@host",
            "http://host/?q=1",
            "http://[::1",
        ] {
            assert!(
                matches!(ImdsClient::new(bad), Err(AuthError::InvalidEndpoint { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn responses_with_content_length() {
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 5\r\n\r\nhello";
        for cut in 0..raw.len() {
            assert_eq!(parse_response(&raw[..cut], false), Ok(None), "{cut}");
            assert!(parse_response(&raw[..cut], true).is_err(), "{cut}");
        }
        let expected = Response {
            status: 200,
            body: b"hello".to_vec(),
        };
        assert_eq!(parse_response(raw, false), Ok(Some(expected)));
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", false).is_err());
        assert!(parse_response(b"HTTP/1.1 20 OK\r\n\r\n", false).is_err());
    }

    #[test]
    fn responses_to_the_end_of_the_connection_and_interim() {
        let raw = b"HTTP/1.0 400 Bad Request\r\n\r\n{\"error\":1}";
        assert_eq!(parse_response(raw, false), Ok(None));
        assert_eq!(
            parse_response(raw, true),
            Ok(Some(Response {
                status: 400,
                body: b"{\"error\":1}".to_vec()
            }))
        );
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            parse_response(raw, false),
            Ok(Some(Response {
                status: 204,
                body: Vec::new()
            }))
        );
    }

    #[test]
    fn chunked_bodies() {
        let raw: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n\
            5;ext=1\r\nhello\r\n19\r\n, abcdefghijklmnopqrstuvw\r\n0\r\nX-Trailer: y\r\n\r\n";
        for cut in 0..raw.len() {
            assert_eq!(parse_response(&raw[..cut], false), Ok(None), "{cut}");
        }
        assert_eq!(
            parse_response(raw, false),
            Ok(Some(Response {
                status: 200,
                body: b"hello, abcdefghijklmnopqrstuvw".to_vec()
            }))
        );
        assert_eq!(decode_chunked(b"0\r\n\r\n"), Ok(Some(Vec::new())));
        assert!(decode_chunked(b"zz\r\n").is_err());
        assert!(decode_chunked(b"\r\n").is_err());
        assert!(decode_chunked(b"2\r\nabc\r\n").is_err());
        assert!(decode_chunked(b"FFFFFFFFF\r\n").is_err());
        assert!(decode_chunked(b"20000\r\n").is_err(), "beyond the limit");
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).is_err()
        );
    }

    #[test]
    fn a_chunk_size_near_the_top_of_u64_after_a_chunk_is_refused() {
        // This panicked: "attempt to add with overflow" with overflow checks, and without them
        // the size passed the limit and the slice that followed was out of range.
        for size in ["ffffffffffffffff", "fffffffffffffffe", "ffffffffffff0001"] {
            let body = format!("1\r\na\r\n{size}\r\nXYZ\r\n0\r\n\r\n");
            assert_eq!(
                decode_chunked(body.as_bytes()),
                Err("chunk beyond the response limit"),
                "{size}"
            );
        }
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let response = format!("{head}1\r\na\r\nffffffffffffffff\r\nXYZ");
        assert!(parse_response(response.as_bytes(), true).is_err());
    }

    #[test]
    fn token_bodies() {
        let now = t(1_700_000_000);
        // IMDS: strings.
        let body = br#"{"access_token":"eyJ0eXAi","refresh_token":"","expires_in":"86399",
            "expires_on":"1700086399","not_before":"1699999700",
            "resource":"https://eventgrid.azure.net/","token_type":"Bearer"}"#;
        let token = parse_token_response("e", 200, body, now).expect("token");
        assert_eq!(token.value, "eyJ0eXAi");
        assert_eq!(token.issued_at, now);
        assert_eq!(token.expires_at, t(1_700_086_399));
        // Numbers, and the earlier of the two.
        let body = br#"{"access_token":"a","expires_in":3600,"expires_on":1700000600}"#;
        let token = parse_token_response("e", 200, body, now).expect("token");
        assert_eq!(token.expires_at, t(1_700_000_600));
        let body = br#"{"access_token":"a","expires_in":60}"#;
        let token = parse_token_response("e", 200, body, now).expect("token");
        assert_eq!(token.expires_at, t(1_700_000_060));
        // An App Service style date in expires_on is ignored when expires_in is there.
        let body = br#"{"access_token":"a","expires_in":"60","expires_on":"09/14/2017 00:00:00 PM +00:00"}"#;
        let token = parse_token_response("e", 200, body, now).expect("token");
        assert_eq!(token.expires_at, t(1_700_000_060));
        for bad in [
            &br#"{"expires_in":"60"}"#[..],
            br#"{"access_token":"","expires_in":"60"}"#,
            br#"{"access_token":"a"}"#,
            br#"{"access_token":"a","expires_in":"soon"}"#,
            b"<html>",
        ] {
            assert!(
                matches!(
                    parse_token_response("e", 200, bad, now),
                    Err(AuthError::InvalidTokenResponse { .. })
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn expiry_times_beyond_the_clock_are_unreadable() {
        let now = t(1_700_000_000);
        // Found by the imds_response fuzz target: these panicked ("overflow when adding
        // duration to instant").
        for body in [
            &br#"{"access_token":"a","expires_on":"000014440346337578843308"}"#[..],
            br#"{"access_token":"a","expires_in":"18446744073709551615"}"#,
            br#"{"access_token":"a","expires_in":1e300,"expires_on":1e300}"#,
        ] {
            assert!(
                matches!(
                    parse_token_response("e", 200, body, now),
                    Err(AuthError::InvalidTokenResponse { .. })
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // The other field still counts.
        let body = br#"{"access_token":"a","expires_in":"60","expires_on":1e300}"#;
        let token = parse_token_response("e", 200, body, now).expect("token");
        assert_eq!(token.expires_at, t(1_700_000_060));
        assert!(token.refresh_at() <= token.expires_at);
    }

    #[test]
    fn error_bodies() {
        let now = t(0);
        let body =
            br#"{"error":"invalid_resource","error_description":"AADSTS500011: no such resource"}"#;
        let Err(AuthError::Status {
            status,
            error,
            message,
            ..
        }) = parse_token_response("e", 400, body, now)
        else {
            panic!()
        };
        assert_eq!(status, 400);
        assert_eq!(error.as_deref(), Some("invalid_resource"));
        assert_eq!(message, "AADSTS500011: no such resource");
        let err = parse_token_response("e", 503, b"busy\n", now).expect_err("error");
        assert!(err.is_retryable());
        assert!(err.to_string().contains("HTTP 503: busy"), "{err}");
        let err = parse_token_response("e", 400, b"", now).expect_err("error");
        assert!(!err.is_retryable());
    }
}
