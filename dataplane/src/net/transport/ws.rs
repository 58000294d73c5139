//! MQTT over WebSocket, client side (RFC 6455, MQTT 5.0 §6): the opening handshake with the
//! `mqtt` subprotocol, then a byte stream carried in binary frames. Sans-IO, used through
//! [`Transport`](super::Transport); this module holds its settings, errors and helpers.
//!
//! The response head is parsed by [`crate::net::http1`] (`httparse`); the framing is written here
//! rather than taken from a WebSocket crate because it fits the transport's design: sans-IO
//! (bytes in, bytes out, no socket and no async runtime), data frames streamed into the caller's
//! buffer rather than collected into messages, and every buffer bounded as listed below.
//!
//! Not here: extensions (permessage-deflate is never offered), text frames (MQTT forbids them,
//! [MQTT-6.0.0-1]), redirects and HTTP authentication (a non-101 answer is an error).
//!
//! Memory: the response head is collected up to [`MAX_RESPONSE_HEAD`] bytes plus the last read;
//! a frame header (at most 10 bytes) and a control frame's payload (at most 125 bytes) are kept
//! while incomplete; data frames are streamed, so a frame's size costs no memory here. Application
//! bytes written before the handshake completes are held until it does (the caller bounds them:
//! in practice one CONNECT).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut, BytesMut};
use sha1::{Digest, Sha1};

use super::{PeerClose, TransportError};
use crate::net::http1::{self, Http1Error, ResponseHead};

/// Default for [`WsSettings::max_frame_len`]: 16 MiB plus 64 KiB of slack, so that a 16 MiB MQTT
/// packet fits in one frame.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024 + 64 * 1024;

/// The longest HTTP response head (status line and header fields) accepted from the server.
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// RFC 6455 §1.3: appended to `Sec-WebSocket-Key` before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The subprotocol that MQTT requires ([MQTT-6.0.0-3], [MQTT-6.0.0-4]).
const SUBPROTOCOL: &str = "mqtt";

/// Opcodes (RFC 6455 §5.2).
const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Close status codes that we send (RFC 6455 §7.4.1).
const CLOSE_NORMAL: u16 = 1000;

/// Where and how to open the WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsSettings {
    /// The `Host` header: `host:port` as the client connects to it, with an IPv6 address in
    /// brackets (`[::1]:8080`). Example: `broker.example.com:443`.
    pub host: String,
    /// The request path. Default `/`. mosquitto accepts any path; other brokers expect a
    /// particular one (often `/mqtt`). Must start with `/` and hold visible ASCII only.
    pub path: String,
    /// The longest frame accepted from the server, bytes of payload. Frames are streamed rather
    /// than buffered, so this is a sanity bound, not a memory reservation; it is also the largest
    /// frame we send (a longer write is split into several frames). Default
    /// [`DEFAULT_MAX_FRAME_LEN`].
    pub max_frame_len: usize,
}

impl WsSettings {
    /// Settings for `host` (`host:port`) with path `/` and the default frame bound.
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            path: "/".to_owned(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    fn validate(&self) -> Result<(), TransportError> {
        let invalid = |field, reason| Err(TransportError::InvalidWsSettings { field, reason });
        let visible = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if self.host.is_empty() {
            return invalid("host", "empty");
        }
        if !visible(&self.host) {
            return invalid("host", "holds a space, a control character or non-ASCII");
        }
        if !self.path.starts_with('/') {
            return invalid("path", "does not start with '/'");
        }
        if !visible(&self.path) {
            return invalid("path", "holds a space, a control character or non-ASCII");
        }
        if self.max_frame_len == 0 {
            return invalid("max_frame_len", "zero");
        }
        Ok(())
    }
}

/// The server's answer to the opening handshake was not an acceptable upgrade (RFC 6455 §4.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsHandshakeError {
    /// The server answered with another status than 101 (for example 404 for a wrong path, or
    /// 401 when it wants credentials).
    #[error("server answered HTTP {status} {reason} instead of 101 Switching Protocols")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Reason phrase as sent.
        reason: String,
    },
    /// The response head is not HTTP/1.x as [`crate::net::http1`] reads it.
    #[error("malformed HTTP response: {0}")]
    Malformed(Http1Error),
    /// No blank line within [`MAX_RESPONSE_HEAD`] bytes.
    #[error("HTTP response head longer than {limit} bytes")]
    ResponseTooLong {
        /// The bound, bytes.
        limit: usize,
    },
    /// `Upgrade: websocket` is missing.
    #[error("[RFC 6455 4.1] the response lacks 'Upgrade: websocket'")]
    MissingUpgrade,
    /// `Connection: Upgrade` is missing.
    #[error("[RFC 6455 4.1] the response lacks 'Connection: Upgrade'")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Accept` is missing.
    #[error("[RFC 6455 4.1] the response lacks Sec-WebSocket-Accept")]
    MissingAccept,
    /// `Sec-WebSocket-Accept` does not match our key.
    #[error("[RFC 6455 4.1] Sec-WebSocket-Accept is {got:?}, expected {expected:?}")]
    BadAccept {
        /// What we computed from our key.
        expected: String,
        /// What the server sent.
        got: String,
    },
    /// The server did not choose the `mqtt` subprotocol.
    #[error("[MQTT-6.0.0-4] the server chose subprotocol {got:?}, not \"mqtt\"")]
    Subprotocol {
        /// `Sec-WebSocket-Protocol` as sent; `None` when absent.
        got: Option<String>,
    },
    /// The server named an extension, which we never offer.
    #[error("[RFC 6455 4.1] the server chose extensions {0:?}, none were offered")]
    Extension(String),
}

/// The server broke the framing rules (RFC 6455 §5); the connection must be failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WsProtocolError {
    /// Server-to-client frames are never masked.
    #[error("[RFC 6455 5.1] the server sent a masked frame")]
    MaskedFrame,
    /// RSV1-3 set without a negotiated extension.
    #[error("[RFC 6455 5.2] reserved bits {0:#04x} set with no extension negotiated")]
    ReservedBits(u8),
    /// An opcode that RFC 6455 reserves.
    #[error("[RFC 6455 5.2] reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A 64-bit payload length with its most significant bit set.
    #[error("[RFC 6455 5.2] 64-bit payload length with the most significant bit set")]
    LengthOverflow,
    /// A text frame: MQTT goes in binary frames only.
    #[error("[MQTT-6.0.0-1] the server sent a text frame; MQTT is carried in binary frames")]
    TextFrame,
    /// A continuation frame with no fragmented message to continue.
    #[error("[RFC 6455 5.4] continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is unfinished.
    #[error("[RFC 6455 5.4] new data frame while a fragmented message is unfinished")]
    InterleavedMessage,
    /// A control frame without FIN.
    #[error("[RFC 6455 5.5] fragmented control frame")]
    FragmentedControlFrame,
    /// A control frame with more than 125 bytes of payload.
    #[error("[RFC 6455 5.5] control frame with {0} bytes of payload (at most 125)")]
    ControlFrameTooLong(u64),
    /// A Close frame with a one-byte body.
    #[error("[RFC 6455 5.5.1] Close frame with a 1-byte body")]
    CloseBodyTooShort,
    /// A Close status code that may not be sent.
    #[error("[RFC 6455 7.4] invalid Close status code {0}")]
    InvalidCloseCode(u16),
    /// A Close reason that is not UTF-8.
    #[error("[RFC 6455 5.5.1] Close reason is not UTF-8")]
    InvalidCloseReason,
    /// A frame longer than [`WsSettings::max_frame_len`].
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The frame's payload length.
        len: u64,
        /// [`WsSettings::max_frame_len`].
        max: usize,
    },
}

impl WsProtocolError {
    /// The status code of the Close frame that fails the connection (RFC 6455 §7.4.1).
    pub fn close_code(self) -> u16 {
        match self {
            Self::TextFrame => 1003,
            Self::InvalidCloseReason => 1007,
            Self::FrameTooLarge { .. } => 1009,
            _ => 1002,
        }
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §1.3, §4.2.2):
/// base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID);
    BASE64.encode(sha.finalize())
}

/// Masks (or unmasks) `buf` in place with `mask`, the first byte of `buf` taking `mask[0]`
/// (RFC 6455 §5.3). Eight bytes at a time.
pub(crate) fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word: [u8; 8] = (*chunk).try_into().expect("chunks of 8");
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the mask index restarts at 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[derive(Debug)]
enum Phase {
    /// Request sent (or queued); collecting the response head.
    Handshake {
        expected_accept: String,
        head: Vec<u8>,
    },
    /// 101 received and checked: frames flow.
    Open,
}

#[derive(Debug, Clone, Copy)]
enum Rx {
    /// Collecting a frame header in `hdr`.
    Header,
    /// Inside a data frame: this many payload bytes still to come.
    Data { remaining: u64 },
    /// Collecting a control frame's payload in `ctrl`.
    Control { opcode: u8, len: usize },
}

/// The client side of one WebSocket connection.
pub(crate) struct WsLayer {
    phase: Phase,
    rx: Rx,
    hdr: [u8; 10],
    hdr_len: usize,
    ctrl: Vec<u8>,
    /// A binary message was started without FIN: continuation frames are expected.
    fragmented: bool,
    /// Application bytes written before the handshake completed.
    pending_app: BytesMut,
    /// Bytes for the layer below: the request, then frames.
    out: BytesMut,
    /// We sent (or queued) a Close frame; nothing is sent after it.
    close_sent: bool,
    max_frame_len: usize,
    /// Masking keys. Seeded per connection from the operating system's secure random source.
    rng: fastrand::Rng,
}

impl fmt::Debug for WsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsLayer")
            .field("open", &matches!(self.phase, Phase::Open))
            .field("rx", &self.rx)
            .field("fragmented", &self.fragmented)
            .field("pending_app", &self.pending_app.len())
            .field("out", &self.out.len())
            .field("close_sent", &self.close_sent)
            .finish_non_exhaustive()
    }
}

impl WsLayer {
    /// Queues the opening handshake request. `key` is the 16-byte nonce for
    /// `Sec-WebSocket-Key`, `seed` seeds the masking keys; both must come from a secure source.
    ///
    /// # Errors
    ///
    /// [`TransportError::InvalidWsSettings`] when `settings` cannot be put in a request.
    pub(crate) fn new(
        settings: &WsSettings,
        key: [u8; 16],
        seed: u64,
    ) -> Result<Self, TransportError> {
        settings.validate()?;
        let key = BASE64.encode(key);
        let mut out = BytesMut::with_capacity(256);
        for part in [
            "GET ",
            &settings.path,
            " HTTP/1.1\r\nHost: ",
            &settings.host,
            "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ",
            &key,
            "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ",
            SUBPROTOCOL,
            "\r\n\r\n",
        ] {
            out.extend_from_slice(part.as_bytes());
        }
        Ok(Self {
            phase: Phase::Handshake {
                expected_accept: accept_key(&key),
                head: Vec::new(),
            },
            rx: Rx::Header,
            hdr: [0; 10],
            hdr_len: 0,
            ctrl: Vec::new(),
            fragmented: false,
            pending_app: BytesMut::new(),
            out,
            close_sent: false,
            max_frame_len: settings.max_frame_len,
            rng: fastrand::Rng::with_seed(seed),
        })
    }

    /// The upgrade completed: frames may flow.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// Bytes queued for the layer below.
    pub(crate) fn out(&self) -> &[u8] {
        &self.out
    }

    /// Forgets [`WsLayer::out`] after the caller took it.
    pub(crate) fn clear_out(&mut self) {
        self.out.clear();
    }

    /// Moves [`WsLayer::out`] to the end of `dst`; returns whether there was anything. No copy
    /// when `dst` is empty (the buffers are swapped).
    pub(crate) fn take_out(&mut self, dst: &mut BytesMut) -> bool {
        super::move_all(&mut self.out, dst)
    }

    /// Application bytes to send: framed now when the connection is open, held until the
    /// upgrade completes before that. Ignored after a Close was sent.
    pub(crate) fn write(&mut self, app: &[u8]) {
        if self.close_sent {
            return;
        }
        match self.phase {
            Phase::Handshake { .. } => self.pending_app.extend_from_slice(app),
            Phase::Open => self.put_data(app),
        }
    }

    /// Queues a Close frame (status 1000) unless one was sent; drops application bytes still
    /// waiting for the handshake.
    pub(crate) fn close(&mut self) {
        self.pending_app.clear();
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        if self.is_open() {
            self.put_frame(OP_CLOSE, &CLOSE_NORMAL.to_be_bytes());
        }
    }

    /// Consumes all of `input` (bytes from the layer below) and appends the payload of data
    /// frames to `app_out`. Partial frame headers and control frames are kept here.
    ///
    /// # Errors
    ///
    /// [`TransportError::WsHandshake`] when the upgrade is refused,
    /// [`TransportError::WebSocket`] when the server breaks the framing rules (a Close frame with
    /// the matching status is queued), [`TransportError::Closed`] when the server sent Close (our
    /// Close is queued in answer). Payload before the offending frame is in `app_out`.
    pub(crate) fn read(
        &mut self,
        input: &[u8],
        app_out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        if let Phase::Handshake { .. } = self.phase {
            let Some(rest) = self.read_handshake(input)? else {
                return Ok(());
            };
            return self.read_frames(&rest, app_out);
        }
        self.read_frames(input, app_out)
    }

    /// Collects the response head; when it is complete and acceptable, opens the connection and
    /// returns the bytes that followed it (frames).
    fn read_handshake(&mut self, input: &[u8]) -> Result<Option<Vec<u8>>, TransportError> {
        let Phase::Handshake {
            expected_accept,
            head,
        } = &mut self.phase
        else {
            return Ok(Some(input.to_vec()));
        };
        head.extend_from_slice(input);
        let end = match http1::parse_response(head, MAX_RESPONSE_HEAD) {
            Ok(None) => return Ok(None),
            Ok(Some(response)) => {
                check_response(&response, expected_accept)?;
                response.len
            }
            Err(Http1Error::TooLarge { .. }) => {
                return Err(WsHandshakeError::ResponseTooLong {
                    limit: MAX_RESPONSE_HEAD,
                }
                .into());
            }
            Err(e) => return Err(WsHandshakeError::Malformed(e).into()),
        };
        let rest = head.split_off(end);
        self.phase = Phase::Open;
        let pending = std::mem::take(&mut self.pending_app);
        if !self.close_sent {
            self.put_data(&pending);
        }
        Ok(Some(rest))
    }

    fn read_frames(&mut self, input: &[u8], app_out: &mut BytesMut) -> Result<(), TransportError> {
        match self.parse_frames(input, app_out) {
            Err(TransportError::WebSocket(e)) => {
                if !self.close_sent {
                    self.close_sent = true;
                    self.put_frame(OP_CLOSE, &e.close_code().to_be_bytes());
                }
                Err(e.into())
            }
            other => other,
        }
    }

    fn parse_frames(
        &mut self,
        mut input: &[u8],
        app_out: &mut BytesMut,
    ) -> Result<(), TransportError> {
        while !input.is_empty() {
            match self.rx {
                Rx::Header => {
                    if self.hdr_len < 2 {
                        input = self.fill_header(input, 2);
                        if self.hdr_len < 2 {
                            return Ok(());
                        }
                        self.check_first_bytes()?;
                    }
                    let need = 2 + match self.hdr[1] & 0x7F {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    input = self.fill_header(input, need);
                    if self.hdr_len < need {
                        return Ok(());
                    }
                    self.hdr_len = 0;
                    self.on_header()?;
                }
                Rx::Data { remaining } => {
                    let n = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
                    app_out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    let remaining = remaining - n as u64;
                    self.rx = if remaining == 0 {
                        Rx::Header
                    } else {
                        Rx::Data { remaining }
                    };
                }
                Rx::Control { opcode, len } => {
                    let n = (len - self.ctrl.len()).min(input.len());
                    self.ctrl.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.ctrl.len() == len {
                        self.rx = Rx::Header;
                        self.on_control(opcode)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies header bytes from `input` until `hdr_len` reaches `need`; returns the rest.
    fn fill_header<'a>(&mut self, input: &'a [u8], need: usize) -> &'a [u8] {
        let n = (need - self.hdr_len).min(input.len());
        self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&input[..n]);
        self.hdr_len += n;
        &input[n..]
    }

    /// Checks the first two header bytes: reserved bits, opcode, mask bit.
    fn check_first_bytes(&self) -> Result<(), WsProtocolError> {
        let rsv = self.hdr[0] & 0x70;
        if rsv != 0 {
            return Err(WsProtocolError::ReservedBits(rsv));
        }
        let opcode = self.hdr[0] & 0x0F;
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            return Err(WsProtocolError::ReservedOpcode(opcode));
        }
        if self.hdr[1] & 0x80 != 0 {
            return Err(WsProtocolError::MaskedFrame);
        }
        Ok(())
    }

    /// A whole header is in `hdr`: checks it against the fragmentation and control-frame rules
    /// and sets up reading its payload.
    fn on_header(&mut self) -> Result<(), TransportError> {
        let fin = self.hdr[0] & 0x80 != 0;
        let opcode = self.hdr[0] & 0x0F;
        let len = match self.hdr[1] & 0x7F {
            126 => u64::from(u16::from_be_bytes([self.hdr[2], self.hdr[3]])),
            127 => {
                let len = u64::from_be_bytes(self.hdr[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(WsProtocolError::LengthOverflow.into());
                }
                len
            }
            short => u64::from(short),
        };
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err(WsProtocolError::FragmentedControlFrame.into());
                }
                if len > 125 {
                    return Err(WsProtocolError::ControlFrameTooLong(len).into());
                }
                self.ctrl.clear();
                if len == 0 {
                    self.rx = Rx::Header;
                    return self.on_control(opcode);
                }
                self.rx = Rx::Control {
                    opcode,
                    len: len as usize,
                };
                return Ok(());
            }
            OP_BINARY if self.fragmented => {
                return Err(WsProtocolError::InterleavedMessage.into());
            }
            OP_TEXT => return Err(WsProtocolError::TextFrame.into()),
            OP_CONTINUATION if !self.fragmented => {
                return Err(WsProtocolError::UnexpectedContinuation.into());
            }
            _ => {}
        }
        // A binary or continuation frame.
        if len > self.max_frame_len as u64 {
            return Err(WsProtocolError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            }
            .into());
        }
        self.fragmented = !fin;
        self.rx = if len == 0 {
            Rx::Header
        } else {
            Rx::Data { remaining: len }
        };
        Ok(())
    }

    /// A whole control frame's payload is in `ctrl`.
    fn on_control(&mut self, opcode: u8) -> Result<(), TransportError> {
        match opcode {
            OP_PING => {
                if !self.close_sent {
                    let payload = std::mem::take(&mut self.ctrl);
                    self.put_frame(OP_PONG, &payload);
                    self.ctrl = payload;
                }
                Ok(())
            }
            OP_CLOSE => {
                let (code, reason) = match self.ctrl.as_slice() {
                    [] => (None, String::new()),
                    [_] => return Err(WsProtocolError::CloseBodyTooShort.into()),
                    [hi, lo, reason @ ..] => {
                        let code = u16::from_be_bytes([*hi, *lo]);
                        if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                            return Err(WsProtocolError::InvalidCloseCode(code).into());
                        }
                        let reason = std::str::from_utf8(reason)
                            .map_err(|_| WsProtocolError::InvalidCloseReason)?;
                        (Some(code), reason.to_owned())
                    }
                };
                if !self.close_sent {
                    // Echo the status, as RFC 6455 §5.5.1 suggests.
                    self.close_sent = true;
                    let body = code.map(u16::to_be_bytes);
                    self.put_frame(OP_CLOSE, body.as_ref().map_or(&[][..], |b| &b[..]));
                }
                Err(TransportError::Closed(PeerClose::WebSocket {
                    code,
                    reason,
                }))
            }
            // A pong (unsolicited or not) needs nothing.
            _ => Ok(()),
        }
    }

    /// Frames `app` as binary frames of at most `max_frame_len` bytes each.
    fn put_data(&mut self, app: &[u8]) {
        for chunk in app.chunks(self.max_frame_len) {
            self.put_frame(OP_BINARY, chunk);
        }
    }

    /// Appends one final, masked frame to `out`: the payload is copied once, masking as it goes.
    fn put_frame(&mut self, opcode: u8, payload: &[u8]) {
        let len = payload.len();
        self.out.reserve(14 + len);
        self.out.put_u8(0x80 | opcode);
        if len < 126 {
            self.out.put_u8(0x80 | len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            self.out.put_u8(0x80 | 126);
            self.out.put_u16(len);
        } else {
            self.out.put_u8(0x80 | 127);
            self.out.put_u64(len as u64);
        }
        let mask = self.rng.u32(..).to_ne_bytes();
        self.out.put_slice(&mask);
        let start = self.out.len();
        self.out.extend_from_slice(payload);
        apply_mask(&mut self.out[start..], mask);
    }
}

/// Checks a response head against RFC 6455 §4.1's client requirements and MQTT's subprotocol
/// rule.
fn check_response(head: &ResponseHead<'_>, expected_accept: &str) -> Result<(), WsHandshakeError> {
    if head.status != 101 {
        return Err(WsHandshakeError::Status {
            status: head.status,
            reason: head.reason.to_owned(),
        });
    }

    let (mut upgrade, mut connection) = (false, false);
    let (mut accept, mut protocol, mut extensions) = (None, None, None);
    for (name, value) in head.headers.iter() {
        // httparse has trimmed the value; the fields read here are ASCII tokens.
        let value = std::str::from_utf8(value).unwrap_or_default();
        let tokens = || value.split(',').map(|t| t.trim_matches([' ', '\t']));
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= tokens().any(|t| t.eq_ignore_ascii_case("websocket"));
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= tokens().any(|t| t.eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            protocol = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") && !value.is_empty() {
            extensions = Some(value);
        }
    }
    if !upgrade {
        return Err(WsHandshakeError::MissingUpgrade);
    }
    if !connection {
        return Err(WsHandshakeError::MissingConnectionUpgrade);
    }
    match accept {
        None => return Err(WsHandshakeError::MissingAccept),
        Some(got) if got != expected_accept => {
            return Err(WsHandshakeError::BadAccept {
                expected: expected_accept.to_owned(),
                got: got.to_owned(),
            });
        }
        Some(_) => {}
    }
    if let Some(ext) = extensions {
        return Err(WsHandshakeError::Extension(ext.to_owned()));
    }
    match protocol {
        Some(p) if p.eq_ignore_ascii_case(SUBPROTOCOL) => Ok(()),
        got => Err(WsHandshakeError::Subprotocol {
            got: got.map(str::to_owned),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = *b"0123456789abcdef";

    fn layer() -> WsLayer {
        layer_with(WsSettings::new("broker:8080"))
    }

    fn layer_with(settings: WsSettings) -> WsLayer {
        WsLayer::new(&settings, KEY, 7).expect("valid settings")
    }

    fn response(accept: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        )
    }

    fn good_response() -> String {
        response(&accept_key(&BASE64.encode(KEY)))
    }

    /// A layer past the handshake, with the request taken out.
    fn open() -> WsLayer {
        let mut ws = layer();
        let mut app = BytesMut::new();
        ws.read(good_response().as_bytes(), &mut app).expect("101");
        assert!(ws.is_open() && app.is_empty());
        ws.clear_out();
        ws
    }

    /// A server frame (unmasked).
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xFFFF => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[derive(Debug, PartialEq, Eq)]
    struct ClientFrame {
        fin: bool,
        opcode: u8,
        mask: [u8; 4],
        header_len: usize,
        payload: Vec<u8>,
    }

    /// Decodes our own output: every frame must be masked.
    fn client_frames(mut out: &[u8]) -> Vec<ClientFrame> {
        let mut frames = Vec::new();
        while !out.is_empty() {
            assert_eq!(out[0] & 0x70, 0, "no reserved bits");
            assert_ne!(out[1] & 0x80, 0, "client frames are masked [RFC 6455 5.3]");
            let (len, mut pos) = match out[1] & 0x7F {
                126 => (u16::from_be_bytes([out[2], out[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            let mask: [u8; 4] = out[pos..pos + 4].try_into().unwrap();
            pos += 4;
            let mut payload = out[pos..pos + len].to_vec();
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            frames.push(ClientFrame {
                fin: out[0] & 0x80 != 0,
                opcode: out[0] & 0x0F,
                mask,
                header_len: pos,
                payload,
            });
            out = &out[pos + len..];
        }
        frames
    }

    #[test]
    fn accept_key_of_the_rfc_example() {
        // RFC 6455 §1.3: SHA-1 b37a4f2cc0624f1690f64606cf385945b2bec4ea, in base64.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn request_asks_for_an_mqtt_websocket() {
        let mut settings = WsSettings::new("[::1]:8080");
        settings.path = "/mqtt?x=1".to_owned();
        let ws = layer_with(settings);
        assert_eq!(
            std::str::from_utf8(ws.out()).unwrap(),
            "GET /mqtt?x=1 HTTP/1.1\r\nHost: [::1]:8080\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        );
        assert_eq!(BASE64.decode("MDEyMzQ1Njc4OWFiY2RlZg==").unwrap(), KEY);
        assert!(!ws.is_open());
    }

    #[test]
    fn settings_that_cannot_go_in_a_request_are_refused() {
        for (host, path, max, field) in [
            ("", "/", 1, "host"),
            ("a b", "/", 1, "host"),
            ("h\r\nX: y", "/", 1, "host"),
            ("h", "mqtt", 1, "path"),
            ("h", "/a b", 1, "path"),
            ("h", "/é", 1, "path"),
            ("h", "/", 0, "max_frame_len"),
        ] {
            let settings = WsSettings {
                host: host.to_owned(),
                path: path.to_owned(),
                max_frame_len: max,
            };
            match WsLayer::new(&settings, KEY, 0) {
                Err(TransportError::InvalidWsSettings { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{settings:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn writes_before_the_upgrade_wait_for_it_then_frames_follow_the_response() {
        let mut ws = layer();
        let request_len = ws.out().len();
        ws.write(b"CONNECT");
        ws.write(b"+more");
        assert_eq!(ws.out().len(), request_len, "nothing framed before 101");

        // The response and the first frames arrive in one read.
        let mut input = good_response().into_bytes();
        input.extend(frame(true, OP_BINARY, b"CONNACK"));
        input.extend(frame(true, OP_BINARY, b""));
        input.extend(frame(true, OP_BINARY, b"PUBLISH"));
        let mut app = BytesMut::new();
        ws.read(&input, &mut app).unwrap();
        assert!(ws.is_open());
        assert_eq!(&app[..], b"CONNACKPUBLISH");

        let frames = client_frames(&ws.out()[request_len..]);
        assert_eq!(frames.len(), 1, "held bytes go out as one frame");
        assert_eq!(frames[0].opcode, OP_BINARY);
        assert!(frames[0].fin);
        assert_eq!(frames[0].payload, b"CONNECT+more");
    }

    #[test]
    fn fed_one_byte_at_a_time() {
        let mut ws = layer();
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut input = good_response().into_bytes();
        let mut expected = Vec::new();
        for (fin, op, payload) in [
            (true, OP_BINARY, &b"abc"[..]),
            (true, OP_BINARY, &big[..300]),
            (false, OP_BINARY, &b"frag1-"[..]),
            (true, OP_PING, &b"are you there"[..]),
            (false, OP_CONTINUATION, &b""[..]),
            (true, OP_PONG, &b""[..]),
            (false, OP_CONTINUATION, &b"frag2-"[..]),
            (true, OP_CONTINUATION, &b"frag3"[..]),
            (true, OP_BINARY, &big[..]),
        ] {
            input.extend(frame(fin, op, payload));
            if op == OP_BINARY || op == OP_CONTINUATION {
                expected.extend_from_slice(payload);
            }
        }
        let mut app = BytesMut::new();
        for b in &input {
            ws.read(std::slice::from_ref(b), &mut app).unwrap();
        }
        assert_eq!(app.len(), expected.len());
        assert!(app[..] == expected[..]);
        let request_len = layer().out().len();
        let pongs = client_frames(&ws.out()[request_len..]);
        assert_eq!(pongs.len(), 1);
        assert_eq!(pongs[0].opcode, OP_PONG);
        assert_eq!(pongs[0].payload, b"are you there");
    }

    #[test]
    fn frames_are_masked_with_fresh_keys_and_the_shortest_length() {
        let mut ws = open();
        let sizes = [0usize, 1, 125, 126, 65_535, 65_536, 100_000];
        for &n in &sizes {
            let payload: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            ws.write(&payload);
        }
        let frames = client_frames(ws.out());
        // An empty write sends nothing.
        assert_eq!(frames.len(), sizes.len() - 1);
        for (f, &n) in frames.iter().zip(&sizes[1..]) {
            assert!(f.fin);
            assert_eq!(f.opcode, OP_BINARY);
            assert_eq!(f.payload.len(), n);
            assert!(
                f.payload
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == (i * 7) as u8)
            );
            let expected_header = match n {
                0..=125 => 6,
                126..=65_535 => 8,
                _ => 14,
            };
            assert_eq!(f.header_len, expected_header, "{n} bytes");
        }
        let masks: std::collections::HashSet<_> = frames.iter().map(|f| f.mask).collect();
        assert_eq!(masks.len(), frames.len(), "a fresh mask per frame");
    }

    #[test]
    fn a_long_write_is_split_at_the_frame_bound() {
        let mut settings = WsSettings::new("h:1");
        settings.max_frame_len = 10;
        let mut ws = layer_with(settings);
        let mut app = BytesMut::new();
        ws.read(good_response().as_bytes(), &mut app).unwrap();
        ws.clear_out();
        ws.write(&[9; 25]);
        let lens: Vec<usize> = client_frames(ws.out())
            .iter()
            .map(|f| f.payload.len())
            .collect();
        assert_eq!(lens, [10, 10, 5]);
    }

    #[test]
    fn masking_matches_the_definition_and_undoes_itself() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let mut masked = data.clone();
            apply_mask(&mut masked, mask);
            let expected: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(masked, expected, "{len} bytes");
            apply_mask(&mut masked, mask);
            assert_eq!(masked, data);
        }
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut hello = *b"Hello";
        apply_mask(&mut hello, mask);
        assert_eq!(hello, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn a_close_is_answered_with_the_same_status_then_reported() {
        let mut ws = open();
        let mut app = BytesMut::new();
        let mut input = frame(true, OP_BINARY, b"last");
        let mut body = 1001u16.to_be_bytes().to_vec();
        body.extend_from_slice("going away ✓".as_bytes());
        input.extend(frame(true, OP_CLOSE, &body));
        match ws.read(&input, &mut app) {
            Err(TransportError::Closed(PeerClose::WebSocket { code, reason })) => {
                assert_eq!(code, Some(1001));
                assert_eq!(reason, "going away ✓");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(&app[..], b"last", "data before the Close is delivered");
        let answer = client_frames(ws.out());
        assert_eq!(answer.len(), 1);
        assert_eq!(answer[0].opcode, OP_CLOSE);
        assert_eq!(answer[0].payload, 1001u16.to_be_bytes());
        // Nothing is sent after the Close.
        ws.clear_out();
        ws.write(b"late");
        assert!(ws.out().is_empty());
    }

    #[test]
    fn an_empty_close_is_answered_with_an_empty_close() {
        let mut ws = open();
        let r = ws.read(&frame(true, OP_CLOSE, b""), &mut BytesMut::new());
        assert!(matches!(
            r,
            Err(TransportError::Closed(PeerClose::WebSocket {
                code: None,
                ..
            }))
        ));
        let answer = client_frames(ws.out());
        assert_eq!((answer[0].opcode, answer[0].payload.len()), (OP_CLOSE, 0));
    }

    #[test]
    fn our_close_is_sent_once() {
        let mut ws = open();
        ws.close();
        ws.close();
        let sent = client_frames(ws.out());
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].opcode, OP_CLOSE);
        assert_eq!(sent[0].payload, 1000u16.to_be_bytes());
        ws.clear_out();
        // The server's answer is not answered again.
        let r = ws.read(
            &frame(true, OP_CLOSE, &1000u16.to_be_bytes()),
            &mut BytesMut::new(),
        );
        assert!(matches!(r, Err(TransportError::Closed(_))));
        assert!(ws.out().is_empty());
    }

    #[test]
    fn closing_before_the_upgrade_sends_no_frame() {
        let mut ws = layer();
        ws.write(b"CONNECT");
        ws.close();
        ws.clear_out();
        ws.read(good_response().as_bytes(), &mut BytesMut::new())
            .unwrap();
        assert!(ws.out().is_empty());
    }

    #[test]
    fn framing_violations_fail_the_connection_with_a_close() {
        use WsProtocolError as E;
        let big_len = {
            let mut f = vec![0x82, 127];
            f.extend_from_slice(&(1u64 << 63).to_be_bytes());
            f
        };
        let cases: Vec<(Vec<u8>, E)> = vec![
            (vec![0x82, 0x81, 1, 2, 3, 4, 5], E::MaskedFrame),
            (frame(true, OP_TEXT, b"{}"), E::TextFrame),
            (frame(true, 0x3, b""), E::ReservedOpcode(3)),
            (frame(true, 0xB, b""), E::ReservedOpcode(0xB)),
            (frame(true, 0x40 | OP_BINARY, b"x"), E::ReservedBits(0x40)),
            (frame(true, OP_PING, &[0; 126]), E::ControlFrameTooLong(126)),
            (frame(false, OP_PING, b""), E::FragmentedControlFrame),
            (
                frame(true, OP_CONTINUATION, b"x"),
                E::UnexpectedContinuation,
            ),
            (
                [frame(false, OP_BINARY, b"a"), frame(true, OP_BINARY, b"b")].concat(),
                E::InterleavedMessage,
            ),
            (big_len, E::LengthOverflow),
            (frame(true, OP_CLOSE, &[3]), E::CloseBodyTooShort),
            (
                frame(true, OP_CLOSE, &1005u16.to_be_bytes()),
                E::InvalidCloseCode(1005),
            ),
            (
                frame(true, OP_CLOSE, &999u16.to_be_bytes()),
                E::InvalidCloseCode(999),
            ),
            (
                frame(true, OP_CLOSE, &[0x03, 0xe8, 0xff, 0xfe]),
                E::InvalidCloseReason,
            ),
        ];
        for (input, expected) in cases {
            let mut ws = open();
            match ws.read(&input, &mut BytesMut::new()) {
                Err(TransportError::WebSocket(e)) => assert_eq!(e, expected),
                other => panic!("{expected:?}: {other:?}"),
            }
            let close = client_frames(ws.out());
            assert_eq!(close.len(), 1, "{expected:?}");
            assert_eq!(close[0].opcode, OP_CLOSE);
            assert_eq!(close[0].payload, expected.close_code().to_be_bytes());
        }
    }

    #[test]
    fn a_frame_over_the_bound_is_refused_from_its_header() {
        let mut settings = WsSettings::new("h:1");
        settings.max_frame_len = 1000;
        let mut ws = layer_with(settings);
        let mut app = BytesMut::new();
        ws.read(good_response().as_bytes(), &mut app).unwrap();
        // The header alone is enough: the payload never comes.
        let r = ws.read(&[0x82, 126, 0x03, 0xe9], &mut app);
        assert!(matches!(
            r,
            Err(TransportError::WebSocket(WsProtocolError::FrameTooLarge {
                len: 1001,
                max: 1000
            }))
        ));
        // At the bound it is fine.
        let mut ws = layer();
        ws.read(good_response().as_bytes(), &mut app).unwrap();
        ws.read(&frame(true, OP_BINARY, &[1; 1000]), &mut app)
            .unwrap();
    }

    fn handshake_error(head: &str) -> WsHandshakeError {
        let mut ws = layer();
        match ws.read(head.as_bytes(), &mut BytesMut::new()) {
            Err(TransportError::WsHandshake(e)) => e,
            other => panic!("{head:?}: {other:?}"),
        }
    }

    #[test]
    fn a_wrong_accept_key_is_refused() {
        // The RFC's example key is not ours.
        let e = handshake_error(&response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert_eq!(
            e,
            WsHandshakeError::BadAccept {
                expected: accept_key("MDEyMzQ1Njc4OWFiY2RlZg=="),
                got: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned(),
            }
        );
    }

    #[test]
    fn refused_upgrades() {
        let accept = accept_key(&BASE64.encode(KEY));
        let with = |extra: &str, skip: &str| {
            let mut head = String::from("HTTP/1.1 101 Switching Protocols\r\n");
            for line in [
                "Upgrade: websocket".to_owned(),
                "Connection: keep-alive, Upgrade".to_owned(),
                format!("Sec-WebSocket-Accept: {accept}"),
                "Sec-WebSocket-Protocol: mqtt".to_owned(),
            ] {
                if skip.is_empty() || !line.starts_with(skip) {
                    head += &line;
                    head += "\r\n";
                }
            }
            head + extra + "\r\n"
        };
        // The base case passes, with a list in Connection and lower-case names.
        layer()
            .read(with("x-other: 1\r\n", "").as_bytes(), &mut BytesMut::new())
            .unwrap();
        assert_eq!(
            handshake_error("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
            WsHandshakeError::Status {
                status: 404,
                reason: "Not Found".to_owned()
            }
        );
        assert_eq!(
            handshake_error(&with("", "Sec-WebSocket-Accept")),
            WsHandshakeError::MissingAccept
        );
        assert_eq!(
            handshake_error(&with("", "Upgrade")),
            WsHandshakeError::MissingUpgrade
        );
        assert_eq!(
            handshake_error(&with("", "Connection")),
            WsHandshakeError::MissingConnectionUpgrade
        );
        assert_eq!(
            handshake_error(&with("", "Sec-WebSocket-Protocol")),
            WsHandshakeError::Subprotocol { got: None }
        );
        assert_eq!(
            handshake_error(&response(&accept).replace(": mqtt", ": mqttv3.1")),
            WsHandshakeError::Subprotocol {
                got: Some("mqttv3.1".to_owned())
            }
        );
        assert_eq!(
            handshake_error(&with(
                "Sec-WebSocket-Extensions: permessage-deflate\r\n",
                ""
            )),
            WsHandshakeError::Extension("permessage-deflate".to_owned())
        );
        assert_eq!(
            handshake_error("SSH-2.0-OpenSSH_9.2\r\n\r\n"),
            WsHandshakeError::Malformed(Http1Error::Version)
        );
        assert_eq!(
            handshake_error("RTSP/1.0 101 x\r\n\r\n"),
            WsHandshakeError::Malformed(Http1Error::Version)
        );
        assert_eq!(
            handshake_error("HTTP/1.1 1O1 x\r\n\r\n"),
            WsHandshakeError::Malformed(Http1Error::Status)
        );
    }

    #[test]
    fn the_response_head_is_bounded() {
        let mut ws = layer();
        let mut app = BytesMut::new();
        let filler = format!("X-Filler: {}\r\n", "a".repeat(1000));
        ws.read(b"HTTP/1.1 101 Switching Protocols\r\n", &mut app)
            .unwrap();
        let mut result = Ok(());
        for _ in 0..9 {
            result = ws.read(filler.as_bytes(), &mut app);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(
            result,
            Err(TransportError::WsHandshake(
                WsHandshakeError::ResponseTooLong { limit: 8192 }
            ))
        ));
    }
}
