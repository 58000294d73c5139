//! The `websocket_read` target: bytes from a hostile WebSocket server given to the data plane's
//! WebSocket layer (`WsLayer::read`, through
//! [`WsHarness`](sluice_dataplane::bench_support::fuzz::WsHarness)): the HTTP response head of the
//! opening handshake, then frames.
//!
//! Input: a selector byte (the flags below), a read size (0: one read), then the server's bytes.
//! Without [`HANDSHAKE`] the harness completes the handshake first and the bytes are frames only;
//! with [`FRAMED`] (frames only) they are frame descriptions separated by
//! [`SEPARATOR`](crate::SEPARATOR), each written as a frame with its length counted (see
//! [`frames_of`]).
//!
//! Checked (any failure is a panic):
//! - nothing panics;
//! - the outcome does not depend on how the bytes are cut into reads: the same application
//!   bytes, the same error (or none), the same bytes queued for the socket;
//! - the frames give what RFC 6455 and MQTT's rules say, as an independent reading here
//!   ([`model`]) finds it: the application bytes are the payloads of the binary and continuation
//!   frames, in order, a partial one included; the first violation fails the connection with that
//!   violation and a Close frame with its status code; a Close from the server is answered with
//!   a Close of the same status and reported; each Ping is answered with a Pong of the same
//!   payload;
//! - every frame we send is final, masked, and has the shortest length encoding;
//! - before the upgrade completes nothing but the request is queued (application bytes written
//!   early wait, and go out right after the upgrade, as binary frames of at most the frame
//!   bound);
//! - after the input, if the connection is still open, our close queues exactly one Close frame
//!   (1000), and a second close nothing.

use bytes::BytesMut;
use sluice_dataplane::bench_support::fuzz::WsHarness;
use sluice_dataplane::net::transport::ws::DEFAULT_MAX_FRAME_LEN;
use sluice_dataplane::net::transport::{PeerClose, TransportError, WsProtocolError};

use crate::{FRAMED, SEPARATOR};

/// Selector bit: the bytes start with the server's handshake response (else the harness sends an
/// accepting one first).
pub const HANDSHAKE: u8 = 0x01;
/// Selector bit: application bytes ([`EARLY_WRITE`]) are written before the upgrade completes.
pub const WRITE_EARLY: u8 = 0x02;
/// Selector bits: which [`MAX_FRAME_LENS`] bounds the frames, `(sel >> 2) & 3`.
pub const MAX_FRAME_LEN_BITS: u8 = 0x0C;

/// The frame bounds that the selector chooses from.
pub const MAX_FRAME_LENS: [usize; 4] = [DEFAULT_MAX_FRAME_LEN, 1024, 16, 1];

/// What [`WRITE_EARLY`] writes: an MQTT 3.1.1 PINGREQ and DISCONNECT.
pub const EARLY_WRITE: &[u8] = b"\xc0\x00\xe0\x00";

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// How reading ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No error.
    Ok,
    /// The upgrade was refused (the error's `Debug`).
    Handshake(String),
    /// A framing violation failed the connection.
    Violation(WsProtocolError),
    /// The server sent Close.
    Closed {
        /// Its status code.
        code: Option<u16>,
        /// Its reason.
        reason: String,
    },
}

impl Outcome {
    fn of(result: Result<(), TransportError>) -> Self {
        match result {
            Ok(()) => Self::Ok,
            Err(TransportError::WsHandshake(e)) => Self::Handshake(format!("{e:?}")),
            Err(TransportError::WebSocket(e)) => Self::Violation(e),
            Err(TransportError::Closed(PeerClose::WebSocket { code, reason })) => {
                Self::Closed { code, reason }
            }
            Err(e) => panic!("WsLayer::read returned an error it has no business returning: {e:?}"),
        }
    }
}

/// What a run of the layer over some input gave.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    outcome: Outcome,
    app: Vec<u8>,
    out: Vec<u8>,
    open: bool,
}

/// A harness as the selector sets it up, before the server's bytes: its request (or nothing,
/// once the harness completed the handshake) in `out`.
fn harness(sel: u8) -> WsHarness {
    let max = MAX_FRAME_LENS[usize::from((sel & MAX_FRAME_LEN_BITS) >> 2)];
    let mut h = WsHarness::new(max);
    if sel & WRITE_EARLY != 0 {
        h.write(EARLY_WRITE);
    }
    if sel & HANDSHAKE == 0 {
        let mut app = BytesMut::new();
        h.read(WsHarness::accept_response().as_bytes(), &mut app)
            .expect("the harness's response is accepted");
        assert!(h.is_open() && app.is_empty(), "the upgrade completed");
        h.clear_out();
    }
    h
}

/// Reads `input` in reads of `read_size` bytes (0: one read), stopping at the first error as
/// the transport does.
fn run(sel: u8, input: &[u8], read_size: u8) -> (WsHarness, Run) {
    let mut h = harness(sel);
    let mut app = BytesMut::new();
    let mut outcome = Outcome::Ok;
    for read in crate::reads(input, read_size) {
        outcome = Outcome::of(h.read(read, &mut app));
        if outcome != Outcome::Ok {
            break;
        }
    }
    let run = Run {
        outcome,
        app: app.to_vec(),
        out: h.out().to_vec(),
        open: h.is_open(),
    };
    (h, run)
}

/// Feeds `data` (selector byte, read size, the server's bytes) to a WebSocket layer and checks
/// every invariant listed in the module documentation.
///
/// # Panics
/// When an invariant does not hold: that is the finding.
pub fn websocket_read(data: &[u8]) {
    let [sel, read_size, input @ ..] = data else {
        return;
    };
    let sel = *sel;
    let framed;
    let input = if sel & FRAMED != 0 && sel & HANDSHAKE == 0 {
        framed = frames_of(input);
        &framed[..]
    } else {
        input
    };
    let max = MAX_FRAME_LENS[usize::from((sel & MAX_FRAME_LEN_BITS) >> 2)];
    let (mut h, whole) = run(sel, input, 0);
    let (_, cut) = run(sel, input, *read_size);
    assert_eq!(
        whole, cut,
        "one read and reads of {read_size} bytes give different results"
    );
    assert!(
        whole.app.len() <= input.len(),
        "more application bytes than input"
    );

    // Where the frames start, what was queued before them, and what we sent first.
    let request = harness(sel).out().to_vec();
    let mut expected = Vec::new();
    let (frames_at, queued_first) = if sel & HANDSHAKE == 0 {
        (0, &[][..])
    } else if !whole.open {
        assert_eq!(
            whole.out, request,
            "bytes other than the request queued before the upgrade completed"
        );
        assert!(
            whole.app.is_empty(),
            "application bytes before the upgrade completed"
        );
        return;
    } else {
        if sel & WRITE_EARLY != 0 {
            // The frame bound is also the largest frame we send.
            expected.extend(EARLY_WRITE.chunks(max).map(|c| (OP_BINARY, c.to_vec())));
        }
        (head_len(sel, input), &request[..])
    };
    let model = model(&input[frames_at..], max);
    assert_eq!(
        whole.outcome, model.outcome,
        "the layer and the RFC's reading end differently"
    );
    assert_eq!(
        whole.app, model.app,
        "the application bytes are not the data frames' payloads"
    );
    let Some(ours) = whole.out.strip_prefix(queued_first) else {
        panic!("the request is not what was queued first");
    };
    expected.extend(model.replies);
    assert_eq!(
        client_frames(ours),
        expected,
        "our frames are not the early write and the answers the server's frames call for"
    );

    if whole.outcome == Outcome::Ok {
        h.clear_out();
        h.close();
        assert_eq!(
            client_frames(h.out()),
            [(OP_CLOSE, 1000u16.to_be_bytes().to_vec())],
            "our close is not one Close frame with 1000"
        );
        h.clear_out();
        h.close();
        assert!(h.out().is_empty(), "a second close queued bytes");
    }
}

/// The length of the response head at the start of `input`: the shortest prefix that completes
/// the upgrade (a binary search; `input` does complete it).
fn head_len(sel: u8, input: &[u8]) -> usize {
    let opens = |n: usize| {
        let mut h = harness(sel);
        let _ = h.read(&input[..n], &mut BytesMut::new());
        h.is_open()
    };
    let (mut lo, mut hi) = (0, input.len()); // !opens(lo) (0 bytes never open), opens(hi)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if opens(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// What RFC 6455 (with MQTT's rule against text frames) makes of a server's frames.
#[derive(Debug)]
pub struct Model {
    /// The data frames' payloads, in order.
    pub app: Vec<u8>,
    /// The frames we send in answer (opcode, payload): Pongs, a Close.
    pub replies: Vec<(u8, Vec<u8>)>,
    /// How reading ends.
    pub outcome: Outcome,
}

/// Reads `input` (server frames, from the start of one) as RFC 6455 §5 says, with frames of at
/// most `max_frame_len` bytes of payload: an independent reading to compare the layer with.
pub fn model(input: &[u8], max_frame_len: usize) -> Model {
    let mut m = Model {
        app: Vec::new(),
        replies: Vec::new(),
        outcome: Outcome::Ok,
    };
    let fail = |m: &mut Model, e: WsProtocolError| {
        m.replies
            .push((OP_CLOSE, e.close_code().to_be_bytes().to_vec()));
        m.outcome = Outcome::Violation(e);
    };
    let mut fragmented = false;
    let mut at = 0;
    while input.len() - at >= 2 {
        let (b0, b1) = (input[at], input[at + 1]);
        let opcode = b0 & 0x0F;
        if b0 & 0x70 != 0 {
            fail(&mut m, WsProtocolError::ReservedBits(b0 & 0x70));
            return m;
        }
        if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            fail(&mut m, WsProtocolError::ReservedOpcode(opcode));
            return m;
        }
        if b1 & 0x80 != 0 {
            fail(&mut m, WsProtocolError::MaskedFrame);
            return m;
        }
        let ext = match b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let Some(ext_bytes) = input.get(at + 2..at + 2 + ext) else {
            return m; // the header is incomplete
        };
        let len = match ext {
            0 => u64::from(b1 & 0x7F),
            _ => ext_bytes.iter().fold(0u64, |n, &b| n << 8 | u64::from(b)),
        };
        if ext == 8 && len >> 63 != 0 {
            fail(&mut m, WsProtocolError::LengthOverflow);
            return m;
        }
        at += 2 + ext;
        let fin = b0 & 0x80 != 0;
        let available = (input.len() - at) as u64;
        if opcode >= OP_CLOSE {
            if !fin {
                fail(&mut m, WsProtocolError::FragmentedControlFrame);
                return m;
            }
            if len > 125 {
                fail(&mut m, WsProtocolError::ControlFrameTooLong(len));
                return m;
            }
            if available < len {
                return m; // the payload is incomplete
            }
            let payload = &input[at..at + len as usize];
            at += len as usize;
            match opcode {
                OP_PING => m.replies.push((OP_PONG, payload.to_vec())),
                OP_CLOSE => {
                    let code = match payload {
                        [] => None,
                        [_] => {
                            fail(&mut m, WsProtocolError::CloseBodyTooShort);
                            return m;
                        }
                        [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
                    };
                    if let Some(code) = code
                        && !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
                    {
                        fail(&mut m, WsProtocolError::InvalidCloseCode(code));
                        return m;
                    }
                    let Ok(reason) = std::str::from_utf8(payload.get(2..).unwrap_or_default())
                    else {
                        fail(&mut m, WsProtocolError::InvalidCloseReason);
                        return m;
                    };
                    let echo = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
                    m.replies.push((OP_CLOSE, echo));
                    m.outcome = Outcome::Closed {
                        code,
                        reason: reason.to_owned(),
                    };
                    return m;
                }
                _ => {} // a Pong needs nothing
            }
            continue;
        }
        let violation = match opcode {
            OP_BINARY if fragmented => Some(WsProtocolError::InterleavedMessage),
            OP_TEXT => Some(WsProtocolError::TextFrame),
            OP_CONTINUATION if !fragmented => Some(WsProtocolError::UnexpectedContinuation),
            _ if len > max_frame_len as u64 => Some(WsProtocolError::FrameTooLarge {
                len,
                max: max_frame_len,
            }),
            _ => None,
        };
        if let Some(e) = violation {
            fail(&mut m, e);
            return m;
        }
        fragmented = !fin;
        let take = len.min(available) as usize;
        m.app.extend_from_slice(&input[at..at + take]);
        at += take;
    }
    m
}

/// Our frames in `out`, unmasked, as (opcode, payload); checks that each is final, masked, and
/// has the shortest length encoding.
///
/// # Panics
/// On a frame that breaks those rules, or bytes that end inside a frame.
pub fn client_frames(mut out: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !out.is_empty() {
        assert!(out.len() >= 2, "our bytes end inside a frame header");
        let (b0, b1) = (out[0], out[1]);
        assert_eq!(
            b0 & 0xF0,
            0x80,
            "our frame is not final or has RSV bits: {b0:#04x}"
        );
        assert!(b1 & 0x80 != 0, "our frame is not masked");
        let (len, ext) = match b1 & 0x7F {
            126 => (usize::from(u16::from_be_bytes([out[2], out[3]])), 2),
            127 => {
                let len = u64::from_be_bytes(out[2..10].try_into().expect("8 bytes"));
                (usize::try_from(len).expect("a length that fits"), 8)
            }
            n => (usize::from(n), 0),
        };
        let shortest = match len {
            0..126 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        assert_eq!(
            ext, shortest,
            "our frame of {len} bytes has a longer length encoding than needed"
        );
        let start = 2 + ext + 4;
        assert!(out.len() >= start + len, "our bytes end inside a frame");
        let key = [out[2 + ext], out[3 + ext], out[4 + ext], out[5 + ext]];
        let payload = out[start..start + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        frames.push((b0 & 0x0F, payload));
        out = &out[start + len..];
    }
    frames
}

/// Framed input: frame descriptions separated by [`SEPARATOR`], each its first header byte
/// (FIN, RSV, opcode), a form byte and the payload. The form byte's top bit sets the mask bit
/// (four key bytes of zero follow the length); its low two bits choose the length encoding: 0
/// the shortest, 1 16 bits, 2 64 bits, 3 64 bits with the top bit set (a length overflow). A
/// description of fewer than two bytes is left out.
pub fn frames_of(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + 16);
    let mut rest = input;
    loop {
        let (chunk, next) = match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => (&rest[..at], Some(&rest[at + SEPARATOR.len()..])),
            None => (rest, None),
        };
        if let [b0, form, payload @ ..] = chunk {
            out.push(*b0);
            let mask = form & 0x80;
            let len = payload.len();
            match form & 3 {
                0 if len < 126 => out.push(mask | len as u8),
                0 | 1 if len <= 0xFFFF => {
                    out.push(mask | 126);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                }
                0..=2 => {
                    out.push(mask | 127);
                    out.extend_from_slice(&(len as u64).to_be_bytes());
                }
                _ => {
                    out.push(mask | 127);
                    out.extend_from_slice(&((len as u64) | 1 << 63).to_be_bytes());
                }
            }
            if mask != 0 {
                out.extend_from_slice(&[0; 4]);
            }
            out.extend_from_slice(payload);
        }
        match next {
            Some(next) => rest = next,
            None => return out,
        }
    }
}
