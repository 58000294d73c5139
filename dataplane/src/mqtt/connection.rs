//! One side's MQTT connections (source or destination) of a dataflow on one core: connect with
//! jittered exponential backoff, present credentials (a token fetched for every connection, a
//! login read again), set up TLS and WebSocket, then run a reader, a writer and a timer task
//! until the connection ends, and start over until the dataflow stops.
//!
//! The sans-IO [`Session`] holds all protocol state and belongs to the dataflow's task (the
//! [`Owner`]); these tasks only move bytes in and out of it and call [`Owner::process`] after
//! every input. Backpressure: before each read, a reader whose owner says
//! [`Owner::read_paused`] stops reading (the session is told, so that it sends PINGREQ every
//! Keep Alive and gives no verdict on a PINGRESP it cannot read) until
//! [`Connection::resume_reader`].
//!
//! Buffers: one read buffer of [`READ_BUFFER`] bytes per connection (plus one for the MQTT bytes
//! behind TLS or WebSocket). After each read the session takes every whole frame, so what stays
//! is at most one partial frame, whose size the session checked from its fixed header against
//! its maximum packet size (`--max-packet-bytes`) before anything of its body was reserved; the
//! reader itself adds at most [`READ_BUFFER`] of room at a time. The writer's pieces are what
//! the session queued.

use std::cell::{Cell, RefCell, RefMut};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{
    AsyncWriteRent, CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller, OwnedReadHalf,
    OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use tracing::{debug, warn};

use super::session::{CloseReason, Session};
use crate::config::mqtt_endpoint::{Credentials, MqttEndpointPlan};
use crate::message::Side;
use crate::net::address::Address;
use crate::net::connect::{Backoff, connect};
use crate::net::iovec::IoChunks;
use crate::net::transport::{Transport, TransportError, WsSettings};
use crate::observe::logs::Escaped;
use crate::observe::metrics::DataflowMetrics;
use crate::runtime::sync::Notify;
use crate::secrets::AuthError;
use crate::secrets::files::read_login;
use crate::secrets::tokens::TokenSource;

/// Read buffer size per connection.
pub(crate) const READ_BUFFER: usize = 256 << 10;
/// A connection up at least this long resets the reconnect backoff.
pub(crate) const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// What a connection needs from the dataflow task that owns its session.
pub(crate) trait Owner {
    /// The session of `side`, borrowed for one call (never across an await).
    fn session(&self, side: Side) -> RefMut<'_, Session>;
    /// Moves the dataflow on after an input was given to a session (bytes, a timeout, a
    /// connection change, bytes taken for writing).
    fn process(&self);
    /// Whether the reader of `side` must wait before reading more (backpressure).
    fn read_paused(&self, side: Side) -> bool;
    /// The writer of `side` took the session's queued bytes: fewer unwritten bytes, which may
    /// end a pause for backpressure.
    fn bytes_taken(&self, side: Side);
}

/// One connection attempt.
#[derive(Default)]
struct Conn {
    /// Wakes the writer.
    tx: Notify,
    /// The connection is ending: the writer flushes what is queued, then shuts the socket.
    closing: Cell<bool>,
    /// The writer has finished.
    writer_done: Cell<bool>,
    writer_done_notify: Notify,
    /// Cancels the reader's (and a stuck writer's) operation.
    canceller: RefCell<Option<Canceller>>,
    /// TLS and/or WebSocket between the socket and the session; `None`: plain TCP, written
    /// with vectored writes.
    transport: RefCell<Option<Transport>>,
    /// When to fetch a fresh token and re-authenticate (enhanced authentication only).
    reauth_at: Cell<Option<SystemTime>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("closing", &self.closing.get())
            .finish()
    }
}

impl Conn {
    fn close(&self) {
        self.closing.set(true);
        self.tx.notify();
    }

    fn cancel_io(&self) {
        if let Some(c) = self.canceller.borrow_mut().take() {
            c.cancel();
        }
    }

    /// Cancels outstanding I/O from a fresh task, so that the caller (which may be the reader
    /// itself, inside its processing) is not re-entered.
    fn cancel_io_later(self: &Rc<Self>) {
        let c = Rc::clone(self);
        monoio::spawn(async move {
            // Let the writer flush a DISCONNECT first.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !c.writer_done.get() && Instant::now() < deadline {
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
            c.cancel_io();
        });
    }
}

/// Setting up a side's connections failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    /// The token source is unusable (a bad IMDS endpoint).
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    /// The TLS configuration (CA or client certificate files) is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] TransportError),
}

/// One side's connections. See the module documentation.
#[derive(Debug)]
pub(crate) struct Connection {
    side: Side,
    endpoint: MqttEndpointPlan,
    /// `namespace/name` of the dataflow, for logs.
    dataflow: Arc<str>,
    core: usize,
    metrics: Arc<DataflowMetrics>,
    tls: RefCell<TlsCache>,
    token: TokenSource,
    conn: RefCell<Option<Rc<Conn>>>,
    /// The reader may read again.
    resume: Notify,
    /// Stopped: the driver ends.
    stopped: Cell<bool>,
    /// The driver has ended.
    done: Cell<bool>,
}

impl Connection {
    /// The connections of `side` to `endpoint`; nothing is started until [`Connection::drive`].
    ///
    /// # Errors
    /// [`ConnectionError`] when the TLS files or the token source are unusable.
    pub(crate) fn new(
        side: Side,
        endpoint: &MqttEndpointPlan,
        dataflow: Arc<str>,
        core: usize,
        metrics: Arc<DataflowMetrics>,
    ) -> Result<Self, ConnectionError> {
        let token = match &endpoint.credentials {
            Credentials::ServiceAccountToken { path } => TokenSource::file(path.clone()),
            Credentials::ManagedIdentity {
                endpoint,
                resource,
                client_id,
            } => TokenSource::imds(endpoint, resource.clone(), client_id.clone())?,
            Credentials::None | Credentials::UsernamePassword { .. } => TokenSource::None,
        };
        let config = match &endpoint.tls {
            Some(tls) => Some(tls.client_config()?),
            None => None,
        };
        Ok(Self {
            side,
            tls: RefCell::new(TlsCache {
                config,
                stamps: tls_stamps(endpoint),
            }),
            endpoint: endpoint.clone(),
            dataflow,
            core,
            metrics,
            token,
            conn: RefCell::new(None),
            resume: Notify::new(),
            stopped: Cell::new(false),
            done: Cell::new(false),
        })
    }

    /// Wakes the writer: the session queued bytes.
    pub(crate) fn wake_writer(&self) {
        if let Some(c) = self.conn.borrow().as_ref() {
            c.tx.notify();
        }
    }

    /// Wakes a reader paused for backpressure, to look again.
    pub(crate) fn resume_reader(&self) {
        self.resume.notify();
    }

    /// The session reported the connection closed: a refused token is not presented again, and
    /// the connection's tasks end (after the writer flushed what the session queued).
    pub(crate) fn on_closed(&self, reason: &CloseReason) {
        if let CloseReason::Refused { reason_code } = reason
            && matches!(reason_code.0, 0x86 | 0x87 | 0x8C)
        {
            self.token.invalidate();
        }
        // A reader paused for backpressure must see the close.
        self.resume.notify();
        if let Some(c) = self.conn.borrow().as_ref() {
            c.close();
            c.cancel_io_later();
        }
    }

    /// Ends the driver: the current connection flushes what is queued (the DISCONNECT the
    /// session queued) and closes; no new one is made.
    pub(crate) fn stop(&self) {
        self.stopped.set(true);
        self.resume.notify();
        if let Some(c) = self.conn.borrow().as_ref() {
            c.close();
        }
    }

    /// Cancels the current connection's outstanding reads and writes (a writer that does not
    /// finish flushing).
    pub(crate) fn cancel_io(&self) {
        if let Some(c) = self.conn.borrow().as_ref() {
            c.cancel_io();
        }
    }

    /// Whether the driver has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.done.get()
    }

    /// Connects, runs and reconnects until [`Connection::stop`].
    pub(crate) async fn drive(self: Rc<Self>, owner: Rc<dyn Owner>) {
        let mut backoff = Backoff::default();
        let mut first = true;
        let side = self.side;
        while !self.stopped.get() {
            if !first {
                self.metrics.on_reconnect(side);
                let delay = backoff.next_delay();
                debug!(dataflow = %self.dataflow, %side, ?delay, "reconnecting");
                self.sleep_unless_stopped(delay).await;
                if self.stopped.get() {
                    break;
                }
            }
            first = false;
            // A fresh token for every connection (enhanced authentication).
            let token = match self.token.token().await {
                Ok(t) => t,
                Err(e) => {
                    warn!(dataflow = %self.dataflow, core = self.core, %side, error = %Escaped(&e.to_string()), "cannot get an authentication token");
                    continue;
                }
            };
            if self.stopped.get() {
                break;
            }
            let ep = &self.endpoint;
            let stream = match connect(&ep.host, ep.port).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(dataflow = %self.dataflow, core = self.core, %side, endpoint = %ep.name, host = %ep.host, port = ep.port, error = %Escaped(&e.to_string()), "cannot connect");
                    continue;
                }
            };
            if self.stopped.get() {
                break; // stopped while connecting: this connection would outlive the dataflow
            }
            let _ = stream.set_nodelay(true);
            // Secrets are read again for every connection: a rotated password or certificate is
            // used from the next connection on.
            let login = match &ep.credentials {
                Credentials::UsernamePassword {
                    username_file,
                    password_file,
                    ..
                } => match read_login(username_file, password_file) {
                    Ok(login) => Some(login),
                    Err(e) => {
                        warn!(dataflow = %self.dataflow, core = self.core, %side, error = %e, "cannot read the login secret");
                        continue;
                    }
                },
                _ => None,
            };
            let transport = match self.transport() {
                Ok(t) => t,
                Err(e) => {
                    warn!(dataflow = %self.dataflow, core = self.core, %side, error = %e, "cannot set up TLS/WebSocket");
                    continue;
                }
            };
            let (rd, wr) = stream.into_split();
            let conn = Rc::new(Conn::default());
            *conn.canceller.borrow_mut() = Some(Canceller::new());
            *conn.transport.borrow_mut() = transport;
            *self.conn.borrow_mut() = Some(Rc::clone(&conn));
            {
                let mut s = owner.session(side);
                if let Some((data, refresh_at)) = token {
                    s.set_authentication_data(Some(data));
                    conn.reauth_at.set(refresh_at);
                }
                if let Some((username, password)) = login {
                    s.set_login(Some(username), Some(password));
                }
                s.handle_connected(Instant::now());
            }
            monoio::spawn(write_loop(
                Rc::clone(&self),
                Rc::clone(&owner),
                Rc::clone(&conn),
                wr,
            ));
            monoio::spawn(timer_loop(
                Rc::clone(&self),
                Rc::clone(&owner),
                Rc::clone(&conn),
            ));
            conn.tx.notify();
            let connected_at = self.read_loop(&*owner, &conn, rd).await;
            conn.close();
            // Let the writer flush (a DISCONNECT with the reason code, say), then make sure it
            // ends.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !conn.writer_done.get() && Instant::now() < deadline {
                monoio::time::sleep(Duration::from_millis(2)).await;
            }
            conn.cancel_io();
            while !conn.writer_done.get() {
                conn.writer_done_notify.notified().await;
            }
            owner.session(side).handle_disconnected(Instant::now());
            *self.conn.borrow_mut() = None;
            owner.process();
            self.metrics.set_connected(side, false);
            // A connection that stayed up a while starts the backoff over; one that a broker
            // accepts and then breaks at once (a protocol error after CONNACK) keeps backing
            // off.
            if connected_at.is_some_and(|at| at.elapsed() >= HEALTHY_AFTER) {
                backoff.reset();
            }
        }
        self.done.set(true);
    }

    async fn sleep_unless_stopped(&self, delay: Duration) {
        let deadline = Instant::now() + delay;
        while !self.stopped.get() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            monoio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
    }

    /// The TLS/WebSocket layers for a new connection; `None` for plain TCP.
    fn transport(&self) -> Result<Option<Transport>, TransportError> {
        let ep = &self.endpoint;
        // A rotated CA or client certificate is used from the next connection on: the files
        // are read again when their modification times changed (the configuration keeps its
        // TLS session cache otherwise).
        let fresh = {
            let mut cache = self.tls.borrow_mut();
            let stamps = tls_stamps(ep);
            if stamps != cache.stamps
                && let Some(tls) = &ep.tls
            {
                match tls.client_config() {
                    Ok(c) => {
                        cache.config = Some(c);
                        cache.stamps = stamps;
                    }
                    Err(e) => {
                        warn!(dataflow = %self.dataflow, core = self.core, error = %e, "cannot read the changed TLS files; keeping those read before");
                    }
                }
            }
            cache.config.clone()
        };
        if fresh.is_none() && !ep.websocket {
            return Ok(None);
        }
        let tls = match fresh {
            Some(config) => {
                let name = ServerName::try_from(ep.host.clone()).map_err(|_| {
                    TransportError::InvalidAddress {
                        input: ep.host.clone(),
                        reason: "not a DNS name or IP address",
                    }
                })?;
                Some((config, name))
            }
            None => None,
        };
        Transport::new(tls, ws_settings(ep)).map(Some)
    }

    /// Reads until the connection ends. Returns when CONNACK was received, if it was.
    async fn read_loop(
        &self,
        owner: &dyn Owner,
        conn: &Rc<Conn>,
        mut rd: OwnedReadHalf<TcpStream>,
    ) -> Option<Instant> {
        let side = self.side;
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        let layered = conn.transport.borrow().is_some();
        // With TLS or WebSocket, `buf` holds what the socket gave and `app` the MQTT bytes.
        let mut app = if layered {
            BytesMut::with_capacity(READ_BUFFER)
        } else {
            BytesMut::new()
        };
        let mut connected_at: Option<Instant> = None;
        loop {
            if owner.read_paused(side) {
                owner.session(side).set_reading(false, Instant::now());
                while owner.read_paused(side) && !conn.closing.get() {
                    self.resume.notified().await;
                }
                owner.session(side).set_reading(true, Instant::now());
            }
            if conn.closing.get() {
                break;
            }
            // Room for one more read, never more than READ_BUFFER: a partial frame's own room
            // is reserved by the session's codec, within its maximum packet size.
            if buf.capacity() - buf.len() < READ_BUFFER / 4 {
                buf.reserve(READ_BUFFER);
            }
            let Some(handle) = conn.canceller.borrow().as_ref().map(Canceller::handle) else {
                break;
            };
            // monoio reads a `BytesMut` into its start: read into the spare capacity instead,
            // so that a partial frame at the front survives.
            let start = buf.len();
            let (res, slice) = rd.cancelable_read(buf.slice_mut(start..), handle).await;
            buf = slice.into_inner();
            match res {
                Ok(0) => {
                    debug!(dataflow = %self.dataflow, %side, "connection closed by the broker");
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    if !conn.closing.get() {
                        debug!(dataflow = %self.dataflow, %side, error = %e, "read failed");
                    }
                    break;
                }
            }
            let input = if layered {
                let result = {
                    let mut t = conn.transport.borrow_mut();
                    t.as_mut().map(|t| t.read(&mut buf, &mut app))
                };
                // Handshake records, alerts or pongs may be waiting to go out.
                conn.tx.notify();
                if let Some(Err(e)) = result {
                    if matches!(e, TransportError::Closed(_)) {
                        debug!(dataflow = %self.dataflow, %side, error = %Escaped(&e.to_string()), "transport closed by the broker");
                    } else {
                        warn!(dataflow = %self.dataflow, core = self.core, %side, error = %Escaped(&e.to_string()), "transport error");
                    }
                    conn.close();
                    break;
                }
                &mut app
            } else {
                &mut buf
            };
            {
                let mut s = owner.session(side);
                s.handle_bytes(input, Instant::now());
                if connected_at.is_none() && s.is_connected() {
                    connected_at = Some(Instant::now());
                }
            }
            owner.process();
        }
        connected_at
    }
}

/// Writes what the session queues until the connection ends.
async fn write_loop(
    c: Rc<Connection>,
    owner: Rc<dyn Owner>,
    conn: Rc<Conn>,
    mut wr: OwnedWriteHalf<TcpStream>,
) {
    if conn.transport.borrow().is_some() {
        write_loop_layered(&c, &*owner, &conn, &mut wr).await;
    } else {
        write_loop_plain(&c, &*owner, &conn, &mut wr).await;
    }
    let _ = wr.shutdown().await;
    conn.writer_done.set(true);
    conn.writer_done_notify.notify();
}

/// The writer of plain TCP: the session's pieces go out with vectored writes (large payloads
/// by reference).
async fn write_loop_plain(
    c: &Connection,
    owner: &dyn Owner,
    conn: &Rc<Conn>,
    wr: &mut OwnedWriteHalf<TcpStream>,
) {
    let side = c.side;
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut chunks = IoChunks::new();
    loop {
        if owner.session(side).poll_transmit_vectored(&mut pieces) {
            owner.bytes_taken(side);
        }
        chunks.extend(&mut pieces);
        if chunks.is_empty() {
            if conn.closing.get() {
                return;
            }
            conn.tx.notified().await;
            continue;
        }
        while !chunks.is_empty() {
            chunks.prepare();
            let Some(handle) = conn.canceller.borrow().as_ref().map(Canceller::handle) else {
                return;
            };
            let (res, back) = wr.cancelable_writev(chunks, handle).await;
            chunks = back;
            match res {
                Ok(0) => return,
                Ok(n) => chunks.advance(n),
                Err(e) => {
                    debug!(dataflow = %c.dataflow, %side, error = %e, "write failed");
                    conn.close();
                    conn.cancel_io();
                    return;
                }
            }
        }
    }
}

/// The writer behind TLS and/or WebSocket: session bytes go through the transport, whose
/// output (records, frames) is written with plain writes.
async fn write_loop_layered(
    c: &Connection,
    owner: &dyn Owner,
    conn: &Rc<Conn>,
    wr: &mut OwnedWriteHalf<TcpStream>,
) {
    let side = c.side;
    let mut plain = BytesMut::new();
    let mut out = BytesMut::with_capacity(64 << 10);
    loop {
        if owner.session(side).poll_transmit(&mut plain) {
            owner.bytes_taken(side);
        }
        {
            let mut t = conn.transport.borrow_mut();
            let Some(t) = t.as_mut() else { return };
            if !plain.is_empty() {
                if let Err(e) = t.write(&plain) {
                    debug!(dataflow = %c.dataflow, %side, error = %e, "transport refused a write");
                    conn.close();
                }
                plain.clear();
            }
            if conn.closing.get() && out.is_empty() {
                t.close();
            }
            t.poll_write(&mut out);
        }
        if out.is_empty() {
            if conn.closing.get() {
                return;
            }
            conn.tx.notified().await;
            continue;
        }
        let Some(handle) = conn.canceller.borrow().as_ref().map(Canceller::handle) else {
            return;
        };
        let (res, b) = wr.cancelable_write(out, handle).await;
        out = b;
        match res {
            Ok(n) if n > 0 => bytes::Buf::advance(&mut out, n),
            Ok(_) => return,
            Err(e) => {
                debug!(dataflow = %c.dataflow, %side, error = %e, "write failed");
                conn.close();
                conn.cancel_io();
                return;
            }
        }
    }
}

/// Calls the session back at its deadlines (keep alive, CONNACK and ping timeouts) and
/// re-authenticates when the token is due for a refresh.
async fn timer_loop(c: Rc<Connection>, owner: Rc<dyn Owner>, conn: Rc<Conn>) {
    let side = c.side;
    loop {
        let wait = {
            let next = owner.session(side).poll_timeout();
            next.map_or(Duration::from_secs(1), |t| {
                t.saturating_duration_since(Instant::now())
            })
        };
        monoio::time::sleep(wait.min(Duration::from_secs(1))).await;
        if conn.closing.get() {
            break;
        }
        owner.session(side).handle_timeout(Instant::now());
        owner.process();
        if conn
            .reauth_at
            .get()
            .is_some_and(|at| SystemTime::now() >= at)
        {
            conn.reauth_at.set(None);
            reauthenticate(&c, &*owner, &conn).await;
        }
    }
}

/// Fetches a fresh token and re-authenticates the connection with it (MQTT 5.0 AUTH 0x19).
/// A failure leaves the connection as it is; the next connection tries again.
async fn reauthenticate(c: &Connection, owner: &dyn Owner, conn: &Rc<Conn>) {
    let side = c.side;
    match c.token.token().await {
        Ok(Some((data, refresh_at))) => {
            if conn.closing.get() {
                return;
            }
            conn.reauth_at.set(refresh_at);
            let result = owner.session(side).reauthenticate(data, Instant::now());
            match result {
                Ok(()) => debug!(dataflow = %c.dataflow, %side, "re-authenticating"),
                Err(e) => {
                    debug!(dataflow = %c.dataflow, %side, error = %e, "cannot re-authenticate now")
                }
            }
            owner.process();
        }
        Ok(None) => {}
        Err(e) => {
            warn!(dataflow = %c.dataflow, core = c.core, %side, error = %Escaped(&e.to_string()), "cannot refresh the authentication token");
            conn.reauth_at
                .set(Some(SystemTime::now() + Duration::from_secs(30)));
        }
    }
}

/// An endpoint's TLS configuration and the modification times of the files it came from.
#[derive(Debug)]
struct TlsCache {
    config: Option<Arc<rustls::ClientConfig>>,
    stamps: Vec<Option<SystemTime>>,
}

/// Modification times of an endpoint's CA and client certificate files (none without TLS, or
/// with the system trust store only).
fn tls_stamps(ep: &MqttEndpointPlan) -> Vec<Option<SystemTime>> {
    let Some(tls) = &ep.tls else {
        return Vec::new();
    };
    tls.files()
        .into_iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// The WebSocket upgrade of an endpoint over WebSockets: `Host` is the address connected to
/// (an IPv6 address in brackets), the request path the one after the host's port.
fn ws_settings(ep: &MqttEndpointPlan) -> Option<WsSettings> {
    ep.websocket.then(|| WsSettings {
        path: ep.ws_path.clone(),
        ..WsSettings::new(Address::authority(&ep.host, ep.port))
    })
}

#[cfg(test)]
mod tests {
    use sluice_config_agent::model::{MqttAuthentication, MqttSettings};

    use super::*;
    use crate::config::mqtt_endpoint::Credentials;

    fn endpoint(host: &str, port: u16, websocket: bool, ws_path: &str) -> MqttEndpointPlan {
        MqttEndpointPlan {
            name: "ns/ep".into(),
            host: host.into(),
            port,
            tls: None,
            websocket,
            ws_path: ws_path.into(),
            credentials: Credentials::None,
            settings: MqttSettings::with_authentication(MqttAuthentication::Anonymous),
            can_share: true,
            max_packet_bytes: crate::mqtt::session::DEFAULT_MAXIMUM_PACKET_SIZE,
        }
    }

    #[test]
    fn the_upgrade_asks_for_the_endpoints_path() {
        let ws = ws_settings(&endpoint("broker", 443, true, "/mqtt")).unwrap();
        assert_eq!(
            (ws.host.as_str(), ws.path.as_str()),
            ("broker:443", "/mqtt")
        );
        let mut t = Transport::new(None, Some(ws)).unwrap();
        let mut out = bytes::BytesMut::new();
        t.poll_write(&mut out);
        assert!(
            out.starts_with(b"GET /mqtt HTTP/1.1\r\nHost: broker:443\r\n"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        let ws = ws_settings(&endpoint("::1", 80, true, "/")).unwrap();
        assert_eq!((ws.host.as_str(), ws.path.as_str()), ("[::1]:80", "/"));
        assert_eq!(ws_settings(&endpoint("broker", 1883, false, "/")), None);
    }
}
