//! HTTP/1.x message heads, parsed with `httparse`: the request head the metrics server reads, and
//! the response heads of the WebSocket upgrade and the IMDS client. The one place in the data
//! plane that parses an HTTP head.
//!
//! Pure functions of the bytes received so far: `Ok(None)` while the head is incomplete, the
//! head and its length once the empty line has arrived, a typed [`Http1Error`] as soon as the
//! bytes cannot be a head or the head is over its bound. Bodies, chunked decoding and what the
//! headers mean are for the callers; lines may end in `\r\n` or a bare `\n`, and empty lines
//! before the start line are skipped (RFC 9112 section 2.2).
//!
//! Memory: a head holds at most `MAX_HEADERS` (64) header fields, as slices of the caller's
//! buffer in a fixed array (no allocation); its size in bytes is bounded by the caller's limit.

/// The most header fields a head may have; more is [`Http1Error::TooManyHeaders`].
pub(crate) const MAX_HEADERS: usize = 64;

/// Why bytes are not an acceptable HTTP/1.x head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Http1Error {
    /// The head is longer than the caller's limit (or did not end within it).
    #[error("head longer than {limit} bytes")]
    TooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// More header fields than `MAX_HEADERS` (64).
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// `MAX_HEADERS`.
        limit: usize,
    },
    /// The version is `HTTP/` something other than `1.0` or `1.1`.
    #[error("HTTP version is not 1.0 or 1.1")]
    UnsupportedVersion,
    /// No HTTP version where one must be (not HTTP at all, or a malformed start line).
    #[error("no HTTP/1.x version")]
    Version,
    /// A method, request target or separator that is not valid.
    #[error("malformed start line")]
    Token,
    /// A status code that is not three digits.
    #[error("status code is not 3 digits")]
    Status,
    /// An invalid byte in a header field name (a line without ':' among them).
    #[error("invalid header field name")]
    HeaderName,
    /// An invalid byte in a header field value.
    #[error("invalid header field value")]
    HeaderValue,
    /// A line break that is neither `\r\n` nor `\n`.
    #[error("invalid line ending")]
    NewLine,
}

impl Http1Error {
    fn from_httparse(e: httparse::Error) -> Self {
        match e {
            httparse::Error::HeaderName => Self::HeaderName,
            httparse::Error::HeaderValue => Self::HeaderValue,
            httparse::Error::NewLine => Self::NewLine,
            httparse::Error::Status => Self::Status,
            httparse::Error::Token => Self::Token,
            httparse::Error::TooManyHeaders => Self::TooManyHeaders { limit: MAX_HEADERS },
            httparse::Error::Version => Self::Version,
        }
    }
}

/// The header fields of a head, in the order received, as slices of the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Headers<'b> {
    fields: [httparse::Header<'b>; MAX_HEADERS],
    len: usize,
}

impl<'b> Headers<'b> {
    /// Every field as (name, value), names as sent.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'b str, &'b [u8])> + '_ {
        self.fields[..self.len].iter().map(|h| (h.name, h.value))
    }

    /// Every value of the fields named `name` (case-insensitive).
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'b [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// A request head: what the metrics server routes on (its header fields are checked, not kept).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestHead<'b> {
    /// The method, a token (`GET`).
    pub(crate) method: &'b str,
    /// The request target as sent (`/metrics?x=1`, `http://host/path`, `*`).
    pub(crate) target: &'b str,
    /// Bytes of the head, through its empty line: the body (if any) starts there.
    pub(crate) len: usize,
}

/// A response head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseHead<'b> {
    /// The status code (three digits).
    pub(crate) status: u16,
    /// The reason phrase as sent (may be empty).
    pub(crate) reason: &'b str,
    /// The header fields.
    pub(crate) headers: Headers<'b>,
    /// Bytes of the head, through its empty line: the body starts there.
    pub(crate) len: usize,
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is incomplete.
///
/// # Errors
/// [`Http1Error::TooLarge`] when the head is longer than `max_head_bytes` (or `buf` holds that
/// many bytes without its end), else what is wrong with the bytes.
pub(crate) fn parse_request(
    buf: &[u8],
    max_head_bytes: usize,
) -> Result<Option<RequestHead<'_>>, Http1Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let parsed = request.parse(buf).map_err(|e| match e {
        httparse::Error::Version if http_version_at_end(start_line(buf), 3) => {
            Http1Error::UnsupportedVersion
        }
        e => Http1Error::from_httparse(e),
    });
    let Some(len) = complete(parsed, buf.len(), max_head_bytes)? else {
        return Ok(None);
    };
    Ok(Some(RequestHead {
        method: request.method.unwrap_or_default(),
        target: request.path.unwrap_or_default(),
        len,
    }))
}

/// Parses the response head at the start of `buf`: `Ok(None)` while it is incomplete. An interim
/// (1xx) response is returned like any other; the caller skips it when it expects a final one.
///
/// # Errors
/// [`Http1Error::TooLarge`] when the head is longer than `max_head_bytes` (or `buf` holds that
/// many bytes without its end), else what is wrong with the bytes.
pub(crate) fn parse_response(
    buf: &[u8],
    max_head_bytes: usize,
) -> Result<Option<ResponseHead<'_>>, Http1Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let parsed = response.parse(buf).map_err(|e| match e {
        httparse::Error::Version if http_version_at_start(start_line(buf)) => {
            Http1Error::UnsupportedVersion
        }
        e => Http1Error::from_httparse(e),
    });
    let Some(len) = complete(parsed, buf.len(), max_head_bytes)? else {
        return Ok(None);
    };
    let (status, reason) = (
        response.code.unwrap_or_default(),
        response.reason.unwrap_or_default(),
    );
    let count = response.headers.len();
    Ok(Some(ResponseHead {
        status,
        reason,
        headers: Headers { fields, len: count },
        len,
    }))
}

/// Parses the trailer section after a chunked body's last chunk (RFC 9112 section 7.1.2):
/// header fields, then an empty line. Returns its length, `Ok(None)` while incomplete; the
/// fields themselves are dropped.
///
/// # Errors
/// [`Http1Error::TooLarge`] beyond `max_bytes`, else what is wrong with the fields.
pub(crate) fn parse_trailers(buf: &[u8], max_bytes: usize) -> Result<Option<usize>, Http1Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let parsed = httparse::parse_headers(buf, &mut fields)
        .map(|s| match s {
            httparse::Status::Complete((len, _)) => httparse::Status::Complete(len),
            httparse::Status::Partial => httparse::Status::Partial,
        })
        .map_err(Http1Error::from_httparse);
    complete(parsed, buf.len(), max_bytes)
}

/// The size of the chunk whose size line starts `buf` and the length of that line (RFC 9112
/// section 7.1; extensions skipped): `Ok(None)` while the line is incomplete.
///
/// # Errors
/// [`Http1Error::Token`] for a line that is not a chunk size.
pub(crate) fn parse_chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, Http1Error> {
    match buf.first() {
        None => return Ok(None),
        Some(b) if !b.is_ascii_hexdigit() => return Err(Http1Error::Token),
        Some(_) => {}
    }
    match httparse::parse_chunk_size(buf) {
        Ok(httparse::Status::Complete(c)) => Ok(Some(c)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::InvalidChunkSize) => Err(Http1Error::Token),
    }
}

/// Applies the byte bound to what httparse said.
fn complete(
    parsed: Result<httparse::Status<usize>, Http1Error>,
    available: usize,
    limit: usize,
) -> Result<Option<usize>, Http1Error> {
    match parsed {
        Ok(httparse::Status::Complete(len)) if len <= limit => Ok(Some(len)),
        Ok(httparse::Status::Complete(_)) => Err(Http1Error::TooLarge { limit }),
        Ok(httparse::Status::Partial) if available >= limit => Err(Http1Error::TooLarge { limit }),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The start line of `buf` (after empty lines), without its line ending.
fn start_line(buf: &[u8]) -> &[u8] {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = buf[start..]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether `line` has exactly `tokens` space-separated tokens, the last starting `HTTP/`: a
/// request line whose version httparse refused is then one of another HTTP version.
fn http_version_at_end(line: &[u8], tokens: usize) -> bool {
    line.split(|&b| b == b' ').count() == tokens
        && line
            .rsplit(|&b| b == b' ')
            .next()
            .is_some_and(|v| v.starts_with(b"HTTP/"))
}

/// Whether a status line starts with `HTTP/` (and a version httparse refused).
fn http_version_at_start(line: &[u8]) -> bool {
    line.starts_with(b"HTTP/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let req = |b: &'static [u8]| parse_request(b, 8192);
        let head = req(b"GET /metrics?a=b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\nbody")
            .unwrap()
            .unwrap();
        assert_eq!(
            (head.method, head.target, head.len),
            ("GET", "/metrics?a=b", 51)
        );
        // Bare \n, mixed endings, empty lines before the request line.
        assert_eq!(req(b"GET / HTTP/1.1\n\nrest").unwrap().unwrap().len, 16);
        assert_eq!(
            req(b"GET / HTTP/1.1\r\nA: b\n\r\n").unwrap().unwrap().len,
            23
        );
        let head = req(b"\r\n\r\nHEAD / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!((head.method, head.len), ("HEAD", 23));
        // Incomplete.
        for partial in [
            &b""[..],
            b"\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n",
            b"GET /met",
        ] {
            assert!(req(partial).unwrap().is_none(), "{partial:?}");
        }
        for (bad, e) in [
            (
                &b"GET / HTTP/2.0\r\n\r\n"[..],
                Http1Error::UnsupportedVersion,
            ),
            (b"GET / HTTP/3\r\n\r\n", Http1Error::UnsupportedVersion),
            (b"GET / FTP\r\n\r\n", Http1Error::Version),
            (b"G@T / HTTP/1.1\r\n\r\n", Http1Error::Token),
            (b"GET \xff HTTP/1.1\r\n\r\n", Http1Error::Token),
            (
                b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
                Http1Error::HeaderName,
            ),
        ] {
            assert_eq!(req(bad).unwrap_err(), e, "{bad:?}");
        }
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(req(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bounds() {
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.resize(100 - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_request(&head, 100).unwrap().unwrap().len, 100);
        assert_eq!(
            parse_request(&head, 99).unwrap_err(),
            Http1Error::TooLarge { limit: 99 }
        );
        // An incomplete head that already fills the limit.
        assert_eq!(
            parse_request(&head[..50], 50).unwrap_err(),
            Http1Error::TooLarge { limit: 50 }
        );
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_response(&many, 8192).unwrap_err(),
            Http1Error::TooManyHeaders { limit: MAX_HEADERS }
        );
    }

    #[test]
    fn response_heads() {
        let raw =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX: 1\r\nx: 2\r\n\r\n\x82";
        let head = parse_response(raw, 8192).unwrap().unwrap();
        assert_eq!(
            (head.status, head.reason, head.len),
            (101, "Switching Protocols", raw.len() - 1)
        );
        assert_eq!(head.headers.all("UPGRADE").next(), Some(&b"websocket"[..]));
        assert_eq!(head.headers.iter().count(), 3);
        assert_eq!(head.headers.all("x").collect::<Vec<_>>(), [b"1", b"2"]);
        let head = parse_response(b"HTTP/1.0 204\r\n\r\n", 8192)
            .unwrap()
            .unwrap();
        assert_eq!((head.status, head.reason), (204, ""));
        for (bad, e) in [
            (&b"SSH-2.0-OpenSSH_9.2\r\n\r\n"[..], Http1Error::Version),
            (b"RTSP/1.0 101 x\r\n\r\n", Http1Error::Version),
            (b"HTTP/2 101 x\r\n\r\n", Http1Error::UnsupportedVersion),
            (b"HTTP/1.1 1O1 x\r\n\r\n", Http1Error::Status),
            (b"HTTP/1.1 20 OK\r\n\r\n", Http1Error::Status),
        ] {
            assert_eq!(parse_response(bad, 8192).unwrap_err(), e, "{bad:?}");
        }
    }

    #[test]
    fn chunk_sizes_and_trailers() {
        assert_eq!(parse_chunk_size(b"5;ext=1\r\nhello"), Ok(Some((9, 5))));
        assert_eq!(parse_chunk_size(b"1A\r\n"), Ok(Some((4, 26))));
        assert_eq!(parse_chunk_size(b"1A"), Ok(None));
        assert_eq!(parse_chunk_size(b""), Ok(None));
        for bad in [&b"zz\r\n"[..], b"\r\n", b"-1\r\n", b"11111111111111111\r\n"] {
            assert_eq!(parse_chunk_size(bad), Err(Http1Error::Token), "{bad:?}");
        }
        assert_eq!(parse_trailers(b"\r\n", 100), Ok(Some(2)));
        assert_eq!(parse_trailers(b"X-T: y\r\n\r\nrest", 100), Ok(Some(10)));
        assert_eq!(parse_trailers(b"X-T: y\r\n", 100), Ok(None));
        assert_eq!(
            parse_trailers(b"X-T: y\r\n", 4),
            Err(Http1Error::TooLarge { limit: 4 })
        );
    }
}
