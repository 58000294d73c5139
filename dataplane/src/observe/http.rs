//! A small blocking HTTP/1.1 server on `std` for the data plane's observability endpoints:
//!
//! - `GET /metrics`: [`super::prometheus::render`] as `text/plain; version=0.0.4` (Prometheus text format);
//! - `GET /healthz`: `200 ok` while the process runs (liveness);
//! - `GET /readyz`: `200 ready`, or `503` with [`Registry::not_ready_reasons`], one per line
//!   (readiness).
//!
//! `HEAD` is answered like `GET` without the body. A known path with another method gets `405`
//! (with `Allow: GET, HEAD`), any other path `404`. The query string is ignored. Every response
//! carries `Content-Length` and `Connection: close`, and the connection is closed after it.
//!
//! It is not a general HTTP server: no keep-alive, no request bodies, no chunked encoding, no
//! TLS. It is off the data path: it only reads the counters the cores write.
//!
//! # Bad clients
//!
//! The request head (request line and headers) is read into a buffer of at most
//! [`ServerOptions::max_head_bytes`] (8 KiB) and parsed by [`crate::net::http1`] after every
//! read; a longer head, or one with more than [`http1::MAX_HEADERS`] fields, gets `431`, a
//! malformed one `400` (without waiting for its end), a version other than 1.0 and 1.1 `505`,
//! and the connection is closed. The whole head must arrive within [`ServerOptions::head_timeout`] (5 s), measured from
//! the accept, not per read, so a client that trickles one byte at a time cannot hold a
//! connection longer; it gets `408`. Lines may end in `\r\n` or a bare `\n`.
//!
//! Each connection is served on its own short-lived thread, at most
//! [`ServerOptions::max_connections`] at a time. Past that, the connection that has been reading
//! its request head the longest, if for at least [`ServerOptions::evict_after`] (1 s), is closed
//! to make room, so slow clients (one byte a second) cannot keep the kubelet's probes out; when
//! none has, the new one gets `503` at once. Refusals and evictions are counted and logged at
//! most once a second. Serving
//! connections one after another would be simpler, but then a client that sends half a request
//! would delay the kubelet's probes and the Prometheus scrape behind it by up to the head timeout,
//! and probes that time out restart the pod. A thread per connection costs a stack mapping and a
//! `clone`, which is nothing at the few requests per second these endpoints see, and the cap
//! bounds what a flood of connections can take.
//!
//! # Why not an HTTP server crate
//!
//! The shell (accept thread, a thread per connection with its cap, the head deadline, the
//! linger before close) and the write side stay hand-written: HTTP server crates bring an async
//! runtime and their own buffering, where this needs three fixed routes, blocking `std`
//! sockets off the data path, and buffers whose bounds are the ones above. Only the head
//! parsing, where the subtle cases are, is a crate's (`httparse`, through [`crate::net::http1`]).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use crate::net::http1::{self, Http1Error, RequestHead};
use crate::observe::logs::Escaped;
use crate::observe::metrics::Registry;

/// Content type of `/metrics`: the Prometheus text exposition format 0.0.4.
pub(crate) const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// After the response, how long the server keeps reading (and discarding) what the client still
/// sends before it closes, so that unread request bytes do not turn the close into a reset that
/// can destroy the response in flight.
const LINGER: Duration = Duration::from_secs(1);
/// At most this many bytes are discarded while lingering.
const LINGER_MAX_BYTES: usize = 64 * 1024;

/// Limits of the server; [`Default`] gives the documented values.
#[derive(Debug, Clone)]
pub(crate) struct ServerOptions {
    /// Largest request head (request line and headers), bytes. Default 8 KiB.
    pub(crate) max_head_bytes: usize,
    /// Time from accepting a connection to the end of its request head. Default 5 s.
    pub(crate) head_timeout: Duration,
    /// Time a single write of the response may block. Default 5 s.
    pub(crate) write_timeout: Duration,
    /// Connections served at once. Past it, the connection that has been reading its request
    /// head the longest, if for more than [`ServerOptions::evict_after`], is closed to make room
    /// (slow clients cannot keep the probes out); with none such, the new one gets `503` at
    /// once. Default 64.
    pub(crate) max_connections: usize,
    /// How long a connection must have been reading its head before a new one may take its
    /// slot. Default 1 s.
    pub(crate) evict_after: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_head_bytes: 8 * 1024,
            head_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_connections: 64,
            evict_after: Duration::from_secs(1),
        }
    }
}

/// The running server: a listening socket and the thread that accepts on it.
///
/// Dropping it leaves the server running (the thread is detached); [`shutdown`](Self::shutdown)
/// stops it.
#[derive(Debug)]
pub(crate) struct MetricsServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and serves [`Registry`] on a background thread
    /// with the default [`ServerOptions`].
    ///
    /// # Errors
    /// Binding the socket or starting the thread failed.
    pub(crate) fn start(addr: SocketAddr, registry: Arc<Registry>) -> io::Result<Self> {
        Self::start_with(addr, registry, ServerOptions::default())
    }

    /// [`start`](Self::start) with other limits.
    ///
    /// # Errors
    /// Binding the socket or starting the thread failed.
    pub(crate) fn start_with(
        addr: SocketAddr,
        registry: Arc<Registry>,
        options: ServerOptions,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let accept = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || accept_loop(&listener, &registry, &options, &stop)
            })?;
        debug!(%local_addr, "metrics http: listening");
        Ok(MetricsServer {
            local_addr,
            stop,
            accept,
        })
    }

    /// The address the server listens on (with the port chosen when `addr` had port 0).
    #[must_use]
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes the listening socket and waits for the accept thread. Requests
    /// already being served finish on their own threads.
    pub(crate) fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        match TcpStream::connect_timeout(&wake, Duration::from_secs(1)) {
            Ok(_) => {
                let _ = self.accept.join();
            }
            // The thread stays blocked in accept until the next connection, then exits.
            Err(e) => warn!(error = %e, "metrics http: cannot wake the accept thread"),
        }
    }
}

/// The metrics server of the process: on the address `--metrics-addr` fixed, or on the port the
/// dataflow profile names (`diagnostics.metrics.prometheusPort`), moved when a snapshot names
/// another. Dropping it stops the server.
#[derive(Debug)]
pub(crate) struct MetricsEndpoint {
    registry: Arc<Registry>,
    /// `--metrics-addr` was given: profiles do not move it.
    fixed: bool,
    server: Mutex<Option<MetricsServer>>,
}

impl MetricsEndpoint {
    /// Serves on `addr` for the life of the process.
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub(crate) fn fixed(addr: SocketAddr, registry: Arc<Registry>) -> io::Result<Self> {
        Self::start(addr, registry, true)
    }

    /// Serves on `addr` until a snapshot's profile names another port.
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub(crate) fn following_profile(addr: SocketAddr, registry: Arc<Registry>) -> io::Result<Self> {
        Self::start(addr, registry, false)
    }

    fn start(addr: SocketAddr, registry: Arc<Registry>, fixed: bool) -> io::Result<Self> {
        let server = MetricsServer::start(addr, Arc::clone(&registry)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {addr} ({e}); choose an address with --metrics-addr"),
            )
        })?;
        info!(addr = %server.local_addr(), "metrics listening");
        Ok(Self {
            registry,
            fixed,
            server: Mutex::new(Some(server)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<MetricsServer>> {
        self.server.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A snapshot's profile names `port`: serve there instead (same IP), unless the address
    /// was fixed on the command line. When the new port cannot be bound, the old one stays and
    /// the failure is logged.
    pub(crate) fn follow_port(&self, port: u16) {
        if self.fixed {
            return;
        }
        let mut server = self.lock();
        let Some(current) = server.as_ref().map(MetricsServer::local_addr) else {
            return;
        };
        if current.port() == port {
            return;
        }
        let addr = SocketAddr::new(current.ip(), port);
        match MetricsServer::start(addr, Arc::clone(&self.registry)) {
            Ok(new) => {
                info!(addr = %new.local_addr(), previous = %current, "metrics listening (the profile's prometheusPort)");
                if let Some(old) = server.replace(new) {
                    old.shutdown();
                }
            }
            Err(e) => {
                warn!(%addr, error = %e, %current, "metrics: cannot listen on the profile's prometheusPort; staying where it is");
            }
        }
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        if let Some(server) = self.lock().take() {
            server.shutdown();
        }
    }
}

/// Counts a connection as served until dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connections still reading their request head: a handle to close each, and when it
/// was accepted.
#[derive(Debug, Default)]
struct Reading {
    next_id: u64,
    heads: Vec<(u64, TcpStream, Instant)>,
}

impl Reading {
    fn add(&mut self, stream: &TcpStream) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        self.next_id += 1;
        self.heads.push((self.next_id, handle, Instant::now()));
        Some(self.next_id)
    }

    fn remove(&mut self, id: u64) {
        self.heads.retain(|(i, _, _)| *i != id);
    }

    /// Closes the connection reading its head the longest, if for at least `after`.
    fn evict_oldest(&mut self, after: Duration) -> bool {
        let Some(at) = self
            .heads
            .iter()
            .enumerate()
            .filter(|(_, (_, _, since))| since.elapsed() >= after)
            .min_by_key(|(_, (_, _, since))| *since)
            .map(|(i, _)| i)
        else {
            return false;
        };
        let (_, stream, _) = self.heads.swap_remove(at);
        let _ = stream.shutdown(Shutdown::Both);
        true
    }
}

fn lock_reading(r: &std::sync::Mutex<Reading>) -> std::sync::MutexGuard<'_, Reading> {
    r.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_loop(
    listener: &TcpListener,
    registry: &Arc<Registry>,
    options: &ServerOptions,
    stop: &AtomicBool,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let reading = Arc::new(std::sync::Mutex::new(Reading::default()));
    // Refusals and evictions are counted and logged at most once a second.
    let (mut refused, mut evicted, mut logged) = (0u64, 0u64, Instant::now());
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            debug!("metrics http: stopped");
            return;
        }
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "metrics http: accept failed");
                // Out of descriptors, typically: let some connections finish instead of spinning.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= options.max_connections {
            if lock_reading(&reading).evict_oldest(options.evict_after) {
                evicted += 1;
            } else {
                let _slot = Slot(Arc::clone(&active));
                refused += 1;
                refuse_busy(stream);
                if logged.elapsed() >= Duration::from_secs(1) {
                    warn!(
                        limit = options.max_connections,
                        refused,
                        evicted,
                        "metrics http: too many connections (counted since the last line)"
                    );
                    (refused, evicted, logged) = (0, 0, Instant::now());
                }
                continue;
            }
        }
        if evicted > 0 && logged.elapsed() >= Duration::from_secs(1) {
            warn!(
                limit = options.max_connections,
                refused,
                evicted,
                "metrics http: slow clients closed to make room (counted since the last line)"
            );
            (refused, evicted, logged) = (0, 0, Instant::now());
        }
        let slot = Slot(Arc::clone(&active));
        let registry = Arc::clone(registry);
        let options = options.clone();
        let id = lock_reading(&reading).add(&stream);
        let reading = Arc::clone(&reading);
        let spawned = std::thread::Builder::new()
            .name("metrics-http-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _slot = slot;
                serve_connection(stream, peer, &registry, &options, || {
                    if let Some(id) = id {
                        lock_reading(&reading).remove(id);
                    }
                });
            });
        if let Err(e) = spawned {
            warn!(%peer, error = %e, "metrics http: cannot start a connection thread");
        }
    }
}

/// Answers `503` without reading the request, from the accept thread, so it must not block: the
/// socket is non-blocking, and the response fits in a fresh socket's send buffer.
fn refuse_busy(mut stream: TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let response = Response::text(503, "busy\n");
    let _ = stream.write_all(&response.to_bytes(false));
    let _ = stream.shutdown(Shutdown::Write);
    // Discard what already arrived, so the close is a FIN rather than a reset.
    let mut sink = [0u8; 1024];
    for _ in 0..8 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Why a request head could not be served.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("request head not complete within {0:?}")]
    Timeout(Duration),
    #[error("connection closed within the request head")]
    Truncated,
    #[error("request head: {0}")]
    Head(#[from] Http1Error),
    #[error("request target is not a path")]
    Target,
    #[error("reading the request: {0}")]
    Io(#[from] io::Error),
}

impl RequestError {
    /// The response to send, if the client can still be answered.
    fn response(&self) -> Option<Response> {
        let status = match self {
            RequestError::Head(Http1Error::TooLarge { .. } | Http1Error::TooManyHeaders { .. }) => {
                431
            }
            RequestError::Head(Http1Error::UnsupportedVersion) => 505,
            RequestError::Timeout(_) => 408,
            RequestError::Truncated | RequestError::Head(_) | RequestError::Target => 400,
            RequestError::Io(_) => return None,
        };
        Some(Response::text(status, &format!("{self}\n")))
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One read that returns by `deadline`: `Ok(0)` at end of stream, `TimedOut` after `deadline`.
fn read_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(io::ErrorKind::TimedOut.into()),
            other => return other,
        }
    }
}

/// Reads until the end of the request head (checked by [`http1::parse_request`] after every
/// read, so a malformed head is answered without waiting for its end). `Ok(None)`: the client
/// closed without sending anything (a TCP probe). `Ok(Some(len))`: `buf[..len]` is the head.
fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    options: &ServerOptions,
    deadline: Instant,
) -> Result<Option<usize>, RequestError> {
    buf.resize(options.max_head_bytes, 0);
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err(Http1Error::TooLarge {
                limit: options.max_head_bytes,
            }
            .into());
        }
        let n = match read_by(stream, &mut buf[filled..], deadline) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(RequestError::Timeout(options.head_timeout));
            }
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(RequestError::Truncated)
            };
        }
        filled += n;
        if let Some(head) = http1::parse_request(&buf[..filled], options.max_head_bytes)? {
            return Ok(Some(head.len));
        }
    }
}

/// A request, as far as routing needs it.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    /// The path, without query string or fragment.
    path: &'a str,
}

impl<'a> Request<'a> {
    /// The method and path of a parsed head. A target in absolute form (RFC 9112 section
    /// 3.2.2), as proxies send it, loses its scheme and authority.
    fn of(head: &RequestHead<'a>) -> Result<Self, RequestError> {
        let target = head.target;
        let target = match target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("https://"))
        {
            Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => target,
        };
        if !target.starts_with('/') && target != "*" {
            return Err(RequestError::Target);
        }
        let path = target.split(['?', '#']).next().unwrap_or_default();
        Ok(Request {
            method: head.method,
            path,
        })
    }
}

/// Parses the complete head `buf` (as [`read_head`] found it) into a [`Request`].
fn parse_head(buf: &[u8]) -> Result<Request<'_>, RequestError> {
    match http1::parse_request(buf, buf.len())? {
        Some(head) => Request::of(&head),
        None => Err(RequestError::Truncated),
    }
}

/// A response: status, content type, extra header, body.
#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    allow: bool,
    body: String,
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            allow: false,
            body: body.to_owned(),
        }
    }

    /// Status line, headers and (unless `head_only`) the body, in one buffer for one write.
    fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nDate: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            http_date(SystemTime::now()),
            self.content_type,
            self.body.len(),
        );
        if self.allow {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        if !head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// The response to a well-formed request.
fn route(request: &Request<'_>, registry: &Registry) -> Response {
    let known = matches!(request.path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return Response::text(404, "not found\n");
    }
    if !matches!(request.method, "GET" | "HEAD") {
        let mut r = Response::text(405, "method not allowed\n");
        r.allow = true;
        return r;
    }
    match request.path {
        "/metrics" => {
            let mut body = String::with_capacity(16 * 1024);
            super::prometheus::render(registry, &mut body);
            Response {
                status: 200,
                content_type: METRICS_CONTENT_TYPE,
                allow: false,
                body,
            }
        }
        "/readyz" => {
            let reasons = registry.not_ready_reasons();
            if reasons.is_empty() {
                Response::text(200, "ready\n")
            } else {
                let mut body = "not ready\n".to_owned();
                for reason in reasons {
                    body.push_str(&reason.replace(['\r', '\n'], " "));
                    body.push('\n');
                }
                Response::text(503, &body)
            }
        }
        _ => Response::text(200, "ok\n"),
    }
}

fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    registry: &Registry,
    options: &ServerOptions,
    head_read: impl FnOnce(),
) {
    let deadline = Instant::now() + options.head_timeout;
    let mut buf = Vec::new();
    let head = read_head(&mut stream, &mut buf, options, deadline);
    // No longer a candidate for eviction: it answers now.
    head_read();
    let (response, head_only) = match head {
        Ok(None) => {
            debug!(%peer, "metrics http: closed without a request");
            return;
        }
        Ok(Some(len)) => match parse_head(&buf[..len]) {
            Ok(request) => {
                let response = route(&request, registry);
                debug!(
                    %peer,
                    method = %Escaped(request.method),
                    path = %Escaped(request.path),
                    status = response.status,
                    "metrics http: request"
                );
                (response, request.method == "HEAD")
            }
            Err(e) => {
                warn!(%peer, error = %Escaped(&e.to_string()), "metrics http: bad request");
                match e.response() {
                    Some(r) => (r, false),
                    None => return,
                }
            }
        },
        Err(e) => {
            warn!(%peer, error = %Escaped(&e.to_string()), "metrics http: bad request");
            match e.response() {
                Some(r) => (r, false),
                None => return,
            }
        }
    };
    let _ = stream.set_nodelay(true);
    let written = stream
        .set_write_timeout(Some(options.write_timeout))
        .and_then(|()| stream.write_all(&response.to_bytes(head_only)));
    if let Err(e) = written {
        warn!(%peer, error = %e, "metrics http: writing the response failed");
        return;
    }
    linger_close(stream);
}

/// Half-closes, then discards what the client still sends (the rest of an oversized head, a
/// body) for up to [`LINGER`], so the close is not a reset that could destroy the response.
fn linger_close(mut stream: TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut discarded = 0;
    while discarded < LINGER_MAX_BYTES {
        match read_by(&mut stream, &mut sink, deadline) {
            Ok(n) if n > 0 => discarded += n,
            _ => break,
        }
    }
}

/// `t` as an HTTP date (IMF-fixdate, RFC 9110 section 5.6.7), e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`. Before 1970 it is the epoch; past jiff's last instant
/// (9999-12-30T22:00:00Z), that instant.
fn http_date(t: SystemTime) -> String {
    let at = jiff::Timestamp::try_from(t).unwrap_or(if t < SystemTime::UNIX_EPOCH {
        jiff::Timestamp::UNIX_EPOCH
    } else {
        jiff::Timestamp::MAX
    });
    let at = at.max(jiff::Timestamp::UNIX_EPOCH);
    let mut out = String::with_capacity(29);
    // Only years below 0 cannot be written, and `at` is not before 1970.
    let _ = jiff::fmt::rfc2822::DateTimePrinter::new().print_timestamp_rfc9110(&at, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Side;

    fn start(options: ServerOptions) -> (MetricsServer, Arc<Registry>) {
        let registry = Arc::new(Registry::new());
        let server = MetricsServer::start_with(
            "127.0.0.1:0".parse().expect("addr"),
            Arc::clone(&registry),
            options,
        )
        .expect("start");
        (server, registry)
    }

    /// A parsed response.
    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// Reads a whole response (the server closes after it).
    fn read_reply(stream: &mut TcpStream) -> Reply {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                Err(e) if raw.is_empty() => panic!("no response: {e}"),
                Err(_) => break,
            }
        }
        let text = String::from_utf8(raw).expect("UTF-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("end of head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().expect("status");
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").expect("header");
                (n.to_owned(), v.to_owned())
            })
            .collect();
        let reply = Reply {
            status,
            headers,
            body: body.to_owned(),
        };
        let length: usize = reply
            .header("Content-Length")
            .expect("Content-Length")
            .parse()
            .expect("length");
        assert!(
            reply.body.len() == length || reply.body.is_empty(),
            "the body is Content-Length bytes, or absent after HEAD"
        );
        reply
    }

    fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
        let mut s = TcpStream::connect(addr).expect("connect");
        // The server may answer and stop reading before all of an oversized request is written.
        let _ = s.write_all(request);
        read_reply(&mut s)
    }

    fn get(addr: SocketAddr, path: &str) -> Reply {
        exchange(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    }

    #[test]
    fn the_endpoint_follows_the_profiles_port_unless_fixed() {
        let registry = Arc::new(Registry::new());
        let start = "127.0.0.1:0".parse().expect("addr");
        let following =
            MetricsEndpoint::following_profile(start, Arc::clone(&registry)).expect("starts");
        let first = following.lock().as_ref().expect("serving").local_addr();
        let port = free_port();
        following.follow_port(port);
        let moved = following.lock().as_ref().expect("serving").local_addr();
        assert_eq!(moved.port(), port);
        assert_eq!(get(moved, "/healthz").status, 200);
        assert!(TcpStream::connect(first).is_err(), "the old port is closed");
        // A port that cannot be bound: it stays where it is.
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        following.follow_port(taken.local_addr().expect("addr").port());
        assert_eq!(
            following.lock().as_ref().expect("serving").local_addr(),
            moved
        );
        // `--metrics-addr` fixes it.
        let fixed = MetricsEndpoint::fixed(start, registry).expect("starts");
        let at = fixed.lock().as_ref().expect("serving").local_addr();
        fixed.follow_port(free_port());
        assert_eq!(fixed.lock().as_ref().expect("serving").local_addr(), at);
    }

    #[test]
    fn endpoints_methods_and_paths() {
        let (server, registry) = start(ServerOptions::default());
        let addr = server.local_addr();
        registry.register("df", 0).on_received(3);

        let r = get(addr, "/metrics");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some(METRICS_CONTENT_TYPE));
        assert_eq!(r.header("Connection"), Some("close"));
        assert!(r.header("Date").is_some_and(|d| d.ends_with(" GMT")));
        assert_eq!(r.header("Content-Length"), Some(&*r.body.len().to_string()));
        assert!(r.body.contains("\nsluice_up 1\n"), "{}", r.body);
        assert!(
            r.body
                .contains("sluice_bytes_received_total{dataflow=\"df\"} 3\n")
        );

        // Query string ignored, bare \n line endings, leading empty line, HTTP/1.0.
        let r = exchange(addr, b"\r\nGET /metrics?x=1&y HTTP/1.0\nAccept: */*\n\n");
        assert_eq!(r.status, 200);
        assert!(r.body.contains("sluice_up 1"));

        let r = get(addr, "/healthz");
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
        assert_eq!(get(addr, "/nope").status, 404);
        assert_eq!(get(addr, "/metrics/").status, 404);
        assert_eq!(get(addr, "http://example:9600/healthz?a").status, 200);

        let r = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert_eq!(r.status, 405);
        assert_eq!(r.header("Allow"), Some("GET, HEAD"));
        assert_eq!(exchange(addr, b"DELETE /nope HTTP/1.1\r\n\r\n").status, 404);

        let r = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        let length: usize = r
            .header("Content-Length")
            .expect("length")
            .parse()
            .expect("n");
        assert!(length > 100);

        assert_eq!(exchange(addr, b"garbage\r\n\r\n").status, 400);
        assert_eq!(exchange(addr, b"GET metrics HTTP/1.1\r\n\r\n").status, 400);
        assert_eq!(exchange(addr, b"GET / HTTP/2.0\r\n\r\n").status, 505);
        // The client closes its side within the head.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\n").expect("write");
        s.shutdown(Shutdown::Write).expect("half-close");
        assert_eq!(read_reply(&mut s).status, 400);

        // A TCP probe that connects and closes is not an error, and the server goes on.
        drop(TcpStream::connect(addr).expect("connect"));
        assert_eq!(get(addr, "/healthz").status, 200);
        server.shutdown();
        assert!(TcpStream::connect(addr).is_err(), "closed after shutdown");
    }

    #[test]
    fn readyz_reports_why() {
        let (server, registry) = start(ServerOptions::default());
        let addr = server.local_addr();
        let r = get(addr, "/readyz");
        assert_eq!(r.status, 503);
        assert_eq!(r.body, "not ready\nsnapshot not applied\n");

        registry.set_snapshot_applied(true);
        let block = registry.register("df", 1);
        block.set_connected(Side::Destination, true);
        let r = get(addr, "/readyz");
        assert_eq!(r.status, 503);
        assert_eq!(
            r.body,
            "not ready\ndataflow df core 1: source not connected\n"
        );

        block.set_connected(Side::Source, true);
        let r = get(addr, "/readyz");
        assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
        // Liveness does not depend on readiness.
        registry.set_snapshot_applied(false);
        assert_eq!(get(addr, "/healthz").status, 200);
        server.shutdown();
    }

    #[test]
    fn an_oversized_head_gets_431() {
        let (server, _registry) = start(ServerOptions::default());
        let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while request.len() < 20 * 1024 {
            request.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        request.extend_from_slice(b"\r\n");
        let r = exchange(server.local_addr(), &request);
        assert_eq!(r.status, 431);
        // A head of exactly the limit is fine.
        let mut request = b"GET /healthz HTTP/1.1\r\nX-Padding: ".to_vec();
        request.resize(8 * 1024 - 4, b'a');
        request.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exchange(server.local_addr(), &request).status, 200);
        server.shutdown();
    }

    #[test]
    fn a_half_request_does_not_block_another_client() {
        let (server, _registry) = start(ServerOptions {
            head_timeout: Duration::from_secs(60),
            ..ServerOptions::default()
        });
        let addr = server.local_addr();
        let mut slow = TcpStream::connect(addr).expect("connect");
        slow.write_all(b"GET /metr").expect("write");
        let started = Instant::now();
        assert_eq!(get(addr, "/healthz").status, 200);
        assert!(started.elapsed() < Duration::from_secs(30));
        // The slow client can still finish.
        slow.write_all(b"ics HTTP/1.1\r\n\r\n").expect("write");
        assert_eq!(read_reply(&mut slow).status, 200);
        server.shutdown();
    }

    #[test]
    fn a_stalled_client_gets_408() {
        let (server, _registry) = start(ServerOptions {
            head_timeout: Duration::from_millis(300),
            ..ServerOptions::default()
        });
        let mut slow = TcpStream::connect(server.local_addr()).expect("connect");
        slow.write_all(b"GET /metrics HTTP/1.1\r\n").expect("write");
        let r = read_reply(&mut slow);
        assert_eq!(r.status, 408);
        server.shutdown();
    }

    #[test]
    fn slow_clients_do_not_keep_the_probes_out() {
        let (server, _registry) = start(ServerOptions {
            max_connections: 4,
            head_timeout: Duration::from_secs(60),
            evict_after: Duration::from_millis(100),
            ..ServerOptions::default()
        });
        let addr = server.local_addr();
        // Four clients that send half a request and then nothing.
        let mut slow: Vec<TcpStream> = (0..4)
            .map(|_| {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.write_all(b"GET /").expect("write");
                s
            })
            .collect();
        // The probe gets in once they have been slow for long enough (a fresh one may still
        // get 503 before that).
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            let r = get(addr, "/healthz");
            if r.status == 200 || Instant::now() >= deadline {
                break r.status;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status, 200);
        // One of the slow ones was closed to make room.
        let mut closed = 0;
        for s in &mut slow {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            // A closed one reads the end of the stream; the others time out.
            if matches!(s.read(&mut [0u8; 64]), Ok(0)) {
                closed += 1;
            }
        }
        assert!(closed >= 1, "a slow client made room");
        server.shutdown();
    }

    #[test]
    fn connections_beyond_the_limit_get_503() {
        let (server, _registry) = start(ServerOptions {
            max_connections: 1,
            head_timeout: Duration::from_secs(60),
            ..ServerOptions::default()
        });
        let addr = server.local_addr();
        let mut holder = TcpStream::connect(addr).expect("connect");
        holder.write_all(b"GET /").expect("write");
        let mut second = TcpStream::connect(addr).expect("connect");
        let r = read_reply(&mut second);
        assert_eq!((r.status, r.body.as_str()), (503, "busy\n"));
        holder
            .write_all(b"healthz HTTP/1.1\r\n\r\n")
            .expect("write");
        assert_eq!(read_reply(&mut holder).status, 200);
        server.shutdown();
    }

    #[test]
    fn request_heads_are_parsed() {
        fn parse(head: &[u8]) -> Result<(&str, &str), RequestError> {
            parse_head(head).map(|r| (r.method, r.path))
        }
        assert_eq!(
            parse(b"GET /metrics?a=b#c HTTP/1.1\r\n\r\n").expect("ok"),
            ("GET", "/metrics")
        );
        assert_eq!(
            parse(b"\r\nHEAD http://h/readyz HTTP/1.0\n\n").expect("ok"),
            ("HEAD", "/readyz")
        );
        assert_eq!(parse(b"GET http://h HTTP/1.1\n\n").expect("ok").1, "/");
        assert_eq!(parse(b"OPTIONS * HTTP/1.1\n\n").expect("ok").1, "*");
        assert!(matches!(
            parse(b"GET / HTTP/3\r\n\r\n"),
            Err(RequestError::Head(Http1Error::UnsupportedVersion))
        ));
        assert!(matches!(
            parse(b"GET metrics HTTP/1.1\r\n\r\n"),
            Err(RequestError::Target)
        ));
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET / FTP\r\n\r\n",
            b"G@T / HTTP/1.1\r\n\r\n",
            b"GET \xff HTTP/1.1\r\n\r\n",
        ] {
            let e = parse(bad).expect_err("malformed");
            assert!(matches!(e, RequestError::Head(_)), "{bad:?}: {e:?}");
            assert_eq!(e.response().expect("answered").status, 400, "{bad:?}");
        }
        let too_large = RequestError::Head(Http1Error::TooManyHeaders { limit: 64 });
        assert_eq!(too_large.response().expect("answered").status, 431);
    }

    #[test]
    fn dates_are_imf_fixdate() {
        let at = |secs| http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(at(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(at(4_102_444_800), "Fri, 01 Jan 2100 00:00:00 GMT");
        assert_eq!(at(u64::MAX / 2), "Thu, 30 Dec 9999 22:00:00 GMT");
        assert_eq!(
            http_date(SystemTime::UNIX_EPOCH - Duration::from_secs(1)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }
}
