//! Transport layers between a TCP socket and the MQTT session: TLS (rustls) and MQTT over
//! WebSocket (RFC 6455 client, subprotocol `mqtt`), stacked as
//!
//! ```text
//!   socket bytes ──> [TLS] ──> [WebSocket] ──> MQTT bytes      (Transport::read)
//!   socket bytes <── [TLS] <── [WebSocket] <── MQTT bytes      (Transport::write, poll_write)
//! ```
//!
//! with either layer optional, and the rustls client configuration built from an endpoint's files
//! ([`client_config`], [`ca_files_in`]). Sans-IO (docs/architecture.md, principle 5): no sockets and
//! no clock. The I/O task reads the socket into a buffer and hands it to [`Transport::read`],
//! which appends MQTT bytes for the session; it gives the session's bytes to
//! [`Transport::write`] and writes what [`Transport::poll_write`] produces. Timeouts (for the
//! handshakes too) are the I/O task's. Not here: ALPN, proxies, HTTP redirects or authentication,
//! WebSocket extensions, disabling certificate verification.
//!
//! Driving it:
//! 1. After [`Transport::new`], call [`Transport::poll_write`] and send what it gives (the TLS
//!    ClientHello, or the HTTP upgrade request).
//! 2. After every [`Transport::read`], [`Transport::write`] and [`Transport::close`], call
//!    [`Transport::poll_write`] again: reads produce handshake records, pongs, Close answers.
//! 3. MQTT bytes may be written before [`Transport::is_ready`]; they are held until the
//!    handshakes complete, then sent in order.
//! 4. After an error from [`Transport::read`], call [`Transport::poll_write`] once more to get
//!    the TLS alert or WebSocket Close frame that reports it, send it, and drop the connection.
//!    MQTT bytes appended to `app_out` before the error are valid: a DISCONNECT that came just
//!    before the peer's Close is there.
//!
//! Buffering, and what bounds it:
//! - [`Transport::read`] consumes all of `socket_in`. Partial TLS records are kept by rustls
//!   (at most one record, 16 KiB plus overhead; 64 KiB for a handshake message); a partial
//!   WebSocket frame header (at most 10 bytes) and control frame (at most 125 bytes) are kept
//!   here; data frames are streamed, never buffered whole. The WebSocket response head is
//!   collected up to 8 KiB ([`ws::MAX_RESPONSE_HEAD`]).
//! - Outgoing bytes are queued until [`Transport::poll_write`]; how much is the caller's to
//!   bound (what it writes between two calls). rustls's 64 KiB limit on its send buffers is
//!   lifted so that a write never fails halfway.
//!
//! What is copied:
//! - Plain: nothing when the destination is empty (the buffers are swapped), one copy otherwise;
//!   the I/O task special-cases it anyway ([`Transport::is_plain`]).
//! - TLS: decryption writes plaintext in rustls's buffer, which is copied once into `app_out`;
//!   encryption reads the application bytes into records, which are copied once into
//!   `socket_out`.
//! - WebSocket: frame payloads are copied once from the input into `app_out` (over TLS, straight
//!   from rustls's plaintext buffer); written bytes are copied once into a frame, masking as they
//!   go (each [`Transport::write`] call is one frame, so write batches, not packets). Over TLS,
//!   the frames are then encrypted as above.
//!
//! Randomness: the `Sec-WebSocket-Key` and the seed of the per-connection masking-key generator
//! (`fastrand`) come from the operating system's secure source through rustls's ring provider,
//! once per connection.

mod tls;
pub mod ws;

use std::fmt;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::pki_types::ServerName;

pub use tls::{ClientAuthFiles, ConfigProblem, ca_files_in, client_config};
pub use ws::{WsHandshakeError, WsProtocolError, WsSettings};

use tls::{TlsLayer, TlsStatus};
use ws::WsLayer;

/// Errors of the transport layers and of their configuration.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// TLS failed: the handshake (certificate not trusted, wrong name, client certificate
    /// refused: an alert from the server) or a record.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// rustls refused bytes at the record layer (its buffers are full or a record is too long).
    #[error("TLS record layer: {0}")]
    TlsIo(#[source] std::io::Error),
    /// The WebSocket upgrade was refused.
    #[error("WebSocket handshake: {0}")]
    WsHandshake(#[from] WsHandshakeError),
    /// The server broke the WebSocket framing rules.
    #[error("WebSocket: {0}")]
    WebSocket(#[from] WsProtocolError),
    /// The peer closed the connection in order (WebSocket Close or TLS close_notify).
    #[error("the peer closed the connection: {0}")]
    Closed(PeerClose),
    /// [`Transport::write`] after [`Transport::close`], or after [`Transport::read`] returned an
    /// error (the peer closed, or the connection failed).
    #[error("write after the connection was closed")]
    WriteAfterClose,
    /// [`Transport::read`] after it returned an error other than [`TransportError::Closed`].
    #[error("the transport failed earlier and cannot be used")]
    Failed,
    /// A field of [`WsSettings`] cannot go in an HTTP request.
    #[error("WebSocket settings: {field} {reason}")]
    InvalidWsSettings {
        /// `host`, `path` or `max_frame_len`.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file of the TLS configuration was refused.
    #[error("{}: {problem}", path.display())]
    Config {
        /// The file or folder.
        path: std::path::PathBuf,
        /// Why.
        problem: ConfigProblem,
    },
    /// No CA certificate to verify the server with.
    #[error("no trust anchors: {0}")]
    NoTrustAnchors(String),
    /// [`crate::net::address::parse_host_port`] refused its input.
    #[error("invalid address {input:?}: {reason}")]
    InvalidAddress {
        /// The input.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// How the peer closed the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerClose {
    /// A WebSocket Close frame.
    WebSocket {
        /// The status code, when the frame had a body.
        code: Option<u16>,
        /// The reason text (may be empty).
        reason: String,
    },
    /// A TLS close_notify alert.
    TlsCloseNotify,
}

impl fmt::Display for PeerClose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WebSocket { code: None, .. } => f.write_str("WebSocket Close without status"),
            Self::WebSocket {
                code: Some(code),
                reason,
            } => write!(f, "WebSocket Close {code} {reason:?}"),
            Self::TlsCloseNotify => f.write_str("TLS close_notify"),
        }
    }
}

/// A stack of transport layers for one connection. [`Transport::plain`] is a pass-through, which
/// the I/O task special-cases to use vectored writes.
#[derive(Debug)]
pub struct Transport {
    tls: Option<TlsLayer>,
    ws: Option<WsLayer>,
    /// Plain only: bytes written and not yet polled.
    plain_out: BytesMut,
    /// `close` was called, or `read` failed (the peer closed, or an error): writes are refused.
    closed: bool,
    /// `close` was called.
    close_started: bool,
    /// Set when `read` failed: a later `read` repeats a peer close, or reports `Failed`.
    ended: Option<Option<PeerClose>>,
}

impl Transport {
    /// No layers: bytes pass through.
    pub fn plain() -> Self {
        Self {
            tls: None,
            ws: None,
            plain_out: BytesMut::new(),
            closed: false,
            close_started: false,
            ended: None,
        }
    }

    /// A stack with TLS (`config` and the server's name, for SNI and certificate verification;
    /// see [`crate::net::address::parse_host_port`]) and/or a WebSocket; neither gives [`Transport::plain`]. The TLS
    /// ClientHello or the upgrade request is queued for [`Transport::poll_write`].
    ///
    /// # Errors
    ///
    /// [`TransportError::Tls`] when rustls refuses the configuration or the random source fails,
    /// [`TransportError::InvalidWsSettings`].
    pub fn new(
        tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
        websocket: Option<WsSettings>,
    ) -> Result<Self, TransportError> {
        let mut t = Self::plain();
        if let Some((config, name)) = tls {
            t.tls = Some(TlsLayer::new(config, name)?);
        }
        if let Some(settings) = websocket {
            let mut random = [0u8; 24];
            tls::secure_random(&mut random)?;
            let (key, seed) = random.split_at(16);
            t.ws = Some(WsLayer::new(
                &settings,
                key.try_into().expect("16 bytes"),
                u64::from_ne_bytes(seed.try_into().expect("8 bytes")),
            )?);
        }
        Ok(t)
    }

    /// No layers: [`Transport::read`] and [`Transport::poll_write`] only move bytes.
    pub fn is_plain(&self) -> bool {
        self.tls.is_none() && self.ws.is_none()
    }

    /// The handshakes are done (TLS, then the WebSocket upgrade): the MQTT session may send
    /// CONNECT now. Always true for [`Transport::plain`].
    pub fn is_ready(&self) -> bool {
        self.tls.as_ref().is_none_or(|t| !t.is_handshaking())
            && self.ws.as_ref().is_none_or(WsLayer::is_open)
    }

    /// Bytes read from the socket. Consumes all of `socket_in`: partial TLS records and
    /// WebSocket frames are kept inside (see the module documentation for the bounds), so the
    /// caller may reuse `socket_in` at once. Appends application (MQTT) bytes to `app_out`, a
    /// byte stream: packets may span frames and records, and one may hold several.
    ///
    /// # Errors
    ///
    /// [`TransportError::Closed`] when the peer closed in order; [`TransportError::Tls`],
    /// [`TransportError::TlsIo`], [`TransportError::WsHandshake`],
    /// [`TransportError::WebSocket`] when it failed. Bytes appended to `app_out` before the error
    /// stay valid. Either way, call [`Transport::poll_write`] once more for the alert or Close
    /// answer, send it, and end the connection. Later calls repeat `Closed`, or return
    /// [`TransportError::Failed`].
    pub fn read(
        &mut self,
        socket_in: &mut BytesMut,
        app_out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        if let Some(ended) = &self.ended {
            socket_in.clear();
            return Err(ended
                .clone()
                .map_or(TransportError::Failed, TransportError::Closed));
        }
        let result = match (&mut self.tls, &mut self.ws) {
            (None, None) => {
                move_all(socket_in, app_out);
                Ok(())
            }
            (None, Some(ws)) => {
                let r = ws.read(socket_in, app_out);
                socket_in.clear();
                r
            }
            (Some(tls), ws) => {
                let status = match ws {
                    None => tls.read(socket_in, |plain| {
                        app_out.extend_from_slice(plain);
                        Ok(())
                    }),
                    Some(ws) => tls.read(socket_in, |plain| ws.read(plain, app_out)),
                };
                socket_in.clear();
                match status {
                    Ok(TlsStatus::Open) => Ok(()),
                    Ok(TlsStatus::PeerClosed) => {
                        Err(TransportError::Closed(PeerClose::TlsCloseNotify))
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = &result {
            self.ended = Some(match e {
                TransportError::Closed(how) => Some(how.clone()),
                _ => None,
            });
            self.closed = true;
        }
        result
    }

    /// Application bytes to send. Before [`Transport::is_ready`] they are held until the
    /// handshakes complete. With a WebSocket, each call is one binary frame (or several when
    /// longer than [`WsSettings::max_frame_len`]).
    ///
    /// # Errors
    ///
    /// [`TransportError::WriteAfterClose`] after [`Transport::close`] or an error from
    /// [`Transport::read`] (a peer close included).
    pub fn write(&mut self, app: &[u8]) -> Result<(), TransportError> {
        if self.closed {
            return Err(TransportError::WriteAfterClose);
        }
        if app.is_empty() {
            return Ok(());
        }
        match (&mut self.tls, &mut self.ws) {
            (None, None) => self.plain_out.extend_from_slice(app),
            (_, Some(ws)) => ws.write(app),
            (Some(tls), None) => tls.write(app)?,
        }
        Ok(())
    }

    /// Appends the bytes to put on the socket (handshake records, encrypted data, WebSocket
    /// frames) to `socket_out`. Returns whether anything was appended.
    pub fn poll_write(&mut self, socket_out: &mut BytesMut) -> bool {
        match (&mut self.tls, &mut self.ws) {
            (None, None) => move_all(&mut self.plain_out, socket_out),
            (None, Some(ws)) => ws.take_out(socket_out),
            (Some(tls), ws) => {
                if let Some(ws) = ws
                    && !ws.out().is_empty()
                {
                    // Cannot fail: rustls's buffer limit is lifted.
                    let _ = tls.write(ws.out());
                    ws.clear_out();
                }
                tls.poll_write(socket_out)
            }
        }
    }

    /// Starts an orderly close: a WebSocket Close frame (status 1000), then TLS close_notify,
    /// queued for [`Transport::poll_write`]. Application bytes still waiting for a handshake are
    /// dropped; later writes fail. Idempotent.
    pub fn close(&mut self) {
        if self.close_started {
            return;
        }
        self.close_started = true;
        self.closed = true;
        if let Some(ws) = &mut self.ws {
            ws.close();
        }
        if let Some(tls) = &mut self.tls {
            if let Some(ws) = &mut self.ws
                && !ws.out().is_empty()
            {
                let _ = tls.write(ws.out());
                ws.clear_out();
            }
            tls.close();
        }
    }
}

/// Moves all of `src` to the end of `dst`: swaps them when `dst` is empty (no copy), copies
/// otherwise. Returns whether `src` held anything.
fn move_all(src: &mut BytesMut, dst: &mut BytesMut) -> bool {
    if src.is_empty() {
        return false;
    }
    if dst.is_empty() {
        std::mem::swap(src, dst);
    } else {
        dst.extend_from_slice(src);
        src.clear();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_passes_bytes_through() {
        let mut t = Transport::plain();
        assert!(t.is_plain() && t.is_ready());
        let mut socket_in = BytesMut::from(&b"abc"[..]);
        let mut app = BytesMut::new();
        t.read(&mut socket_in, &mut app).unwrap();
        socket_in.extend_from_slice(b"def");
        t.read(&mut socket_in, &mut app).unwrap();
        assert!(socket_in.is_empty());
        assert_eq!(&app[..], b"abcdef");

        let mut out = BytesMut::new();
        assert!(!t.poll_write(&mut out));
        t.write(b"CONNECT").unwrap();
        t.write(b"").unwrap();
        t.write(b"PUBLISH").unwrap();
        assert!(t.poll_write(&mut out));
        t.write(b"PINGREQ").unwrap();
        assert!(t.poll_write(&mut out));
        assert_eq!(&out[..], b"CONNECTPUBLISHPINGREQ");
        t.close();
        assert!(matches!(
            t.write(b"x"),
            Err(TransportError::WriteAfterClose)
        ));
    }

    #[test]
    fn a_websocket_transport_reports_a_close_and_keeps_reporting_it() {
        let mut t = Transport::new(None, Some(WsSettings::new("h:80"))).unwrap();
        assert!(!t.is_plain() && !t.is_ready());
        let mut out = BytesMut::new();
        assert!(t.poll_write(&mut out));
        let request = std::str::from_utf8(&out).unwrap();
        let key = request
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let mut input = BytesMut::from(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\
                 Sec-WebSocket-Protocol: mqtt\r\n\r\n",
                ws::accept_key(key)
            )
            .as_bytes(),
        );
        let mut app = BytesMut::new();
        t.read(&mut input, &mut app).unwrap();
        assert!(t.is_ready() && input.is_empty());

        input.extend_from_slice(&[0x82, 2, b'h', b'i', 0x88, 2, 0x03, 0xe8, 0x82, 1, b'!']);
        let closed = |r| {
            matches!(
                r,
                Err(TransportError::Closed(PeerClose::WebSocket {
                    code: Some(1000),
                    ..
                }))
            )
        };
        assert!(closed(t.read(&mut input, &mut app)));
        assert!(input.is_empty());
        assert_eq!(&app[..], b"hi", "what follows the Close is dropped");
        out.clear();
        assert!(t.poll_write(&mut out), "the Close answer");
        assert_eq!(out[0], 0x88);
        input.extend_from_slice(b"more");
        assert!(closed(t.read(&mut input, &mut app)));
        assert!(matches!(
            t.write(b"x"),
            Err(TransportError::WriteAfterClose)
        ));
    }

    #[test]
    fn after_a_failure_reads_fail() {
        let mut t = Transport::new(None, Some(WsSettings::new("h:80"))).unwrap();
        assert!(t.poll_write(&mut BytesMut::new()), "the request");
        let mut input = BytesMut::from(&b"HTTP/1.1 500 Oops\r\n\r\n"[..]);
        let mut app = BytesMut::new();
        assert!(matches!(
            t.read(&mut input, &mut app),
            Err(TransportError::WsHandshake(WsHandshakeError::Status {
                status: 500,
                ..
            }))
        ));
        input.extend_from_slice(b"x");
        assert!(matches!(
            t.read(&mut input, &mut app),
            Err(TransportError::Failed)
        ));
        assert!(input.is_empty());
        assert!(matches!(
            t.write(b"x"),
            Err(TransportError::WriteAfterClose)
        ));
        t.close();
        assert!(
            !t.poll_write(&mut BytesMut::new()),
            "no frame before the upgrade"
        );
    }
}
