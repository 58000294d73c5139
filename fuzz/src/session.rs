//! The `session_bytes` target: bytes from a hostile broker given to the data plane's MQTT client
//! session (`Session::handle_bytes`, through
//! [`SessionHarness`](sluice_dataplane::bench_support::fuzz::SessionHarness)), in one read or
//! several, and the session's answers checked against the codec's own reading of the same bytes.
//!
//! Input: a selector byte (the flags below, and [`FRAMED`] for framed input as in
//! [`reframe`](crate::reframe)), a read size (0: all the bytes in one read), then the bytes the
//! broker sends. Each read is appended to the buffer the session keeps, as the I/O task does.
//!
//! Checked (any failure is a panic):
//! - nothing panics;
//! - once the session reports `Closed`, it reports nothing more, sends nothing more, and is not
//!   connected; it reports `Closed` at most once;
//! - a frame that the codec refuses (a client codec of the same version and maximum packet size,
//!   decoding the whole stream) closes the connection, reported as malformed, and a connection
//!   closed as malformed had such a frame; until then every message reported is the codec's next
//!   PUBLISH, equal to it, with an ack token exactly at QoS 1;
//! - while the connection is up, what is left in the buffer is the codec's incomplete tail, and
//!   the buffer's capacity stays within a bound set by the maximum packet size (not by what a
//!   fixed header announces);
//! - the session's own bytes all decode (as a server reads them), they are not more than the
//!   broker sent plus a fixed allowance (the answers to one CONNACK), and its PUBACKs name the
//!   QoS 1 messages acknowledged, in the order received, each once;
//! - events fit the setup: `Connected` first and only when awaiting CONNACK, `Subscribed` with
//!   one reason code per filter, `Acked` and `Refused` for in-flight packet ids only, each once,
//!   `Reauthenticated` only during a re-authentication;
//! - after the input, a new transport and an accepting CONNACK connect the session again, with no
//!   unacknowledged inbound message left, and a token of the old connection acknowledges nothing.

use std::collections::BTreeSet;

use bytes::BytesMut;
use sluice_codec::{Codec, DecodeError, Packet, PacketId, ProtocolVersion, Publish, QoS, Role};
use sluice_dataplane::bench_support::fuzz::{SessionEvent, SessionHarness, SessionSetup};

use crate::{FRAMED, reframe};

/// Selector bit: MQTT 5.0 (else 3.1.1).
pub const V5: u8 = 0x01;
/// Selector bit: the session awaits CONNACK ([`SessionSetup::await_connack`]).
pub const AWAIT_CONNACK: u8 = 0x02;
/// Selector bit: enhanced authentication (5.0; [`SessionSetup::authentication`]).
pub const AUTHENTICATION: u8 = 0x04;
/// Selector bit: a re-authentication waits for its answer ([`SessionSetup::reauthenticating`]).
pub const REAUTHENTICATING: u8 = 0x08;
/// Selector bit: [`SessionSetup::enforce_receive_maximum`].
pub const ENFORCE_RECEIVE_MAXIMUM: u8 = 0x10;
/// Selector bit: acknowledge every QoS 1 message after the read that brought it, the last one
/// first (else only after the whole input).
pub const ACK_EACH_READ: u8 = 0x20;

/// What the session may send in answer to the bytes beyond their own length: SUBSCRIBE,
/// UNSUBSCRIBE and the in-flight messages again after a CONNACK, and a DISCONNECT.
const OUTPUT_ALLOWANCE: usize = 512;

/// The setup that the selector byte `sel` chooses.
pub fn setup_for(sel: u8) -> SessionSetup {
    SessionSetup {
        protocol: if sel & V5 != 0 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        },
        await_connack: sel & AWAIT_CONNACK != 0,
        authentication: sel & AUTHENTICATION != 0,
        reauthenticating: sel & REAUTHENTICATING != 0,
        enforce_receive_maximum: sel & ENFORCE_RECEIVE_MAXIMUM != 0,
    }
}

/// How the codec reads the whole stream: the packets up to the first refused frame (or the end
/// of the whole frames), the error if one was refused, and how many bytes of an incomplete frame
/// are left after them.
struct Reference {
    publishes: Vec<Publish>,
    error: Option<DecodeError>,
    tail: usize,
}

impl Reference {
    fn read(protocol: ProtocolVersion, stream: &[u8]) -> Self {
        let mut codec = Codec::new(Role::Client, protocol)
            .with_max_packet_size(SessionHarness::MAX_PACKET_SIZE);
        let mut buf = BytesMut::from(stream);
        let mut publishes = Vec::new();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Packet::Publish(p))) => publishes.push(p),
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Self {
                        publishes,
                        error: None,
                        tail: buf.len(),
                    };
                }
                Err(e) => {
                    return Self {
                        publishes,
                        error: Some(e),
                        tail: 0,
                    };
                }
            }
        }
    }
}

/// What the checks remember across reads.
struct Run {
    h: SessionHarness,
    setup: SessionSetup,
    /// A server's codec reading everything the session sends.
    broker: Codec,
    /// The session's bytes not yet decoded by `broker` (none once a read's output is whole).
    sent: BytesMut,
    sent_total: usize,
    closed: bool,
    connected: bool,
    events: usize,
    messages: usize,
    /// Ack tokens given (they are numbered from 0).
    tokens: usize,
    /// QoS 1 messages reported and not yet acknowledged: (token, packet id).
    unacked: Vec<(usize, PacketId)>,
    /// Packet ids of the QoS 1 messages acknowledged, in the order received.
    acked: Vec<PacketId>,
    /// PUBACKs the session sent, in order.
    pubacks: Vec<PacketId>,
    /// In-flight packet ids answered with `Acked` or `Refused`.
    answered: BTreeSet<u16>,
    reauthenticated: bool,
}

impl Run {
    fn new(setup: SessionSetup) -> Self {
        let mut h = SessionHarness::new(setup);
        let _ = h.take_transmit(); // what the setup sent: CONNECT, SUBSCRIBE, the publishes
        Self {
            connected: !setup.await_connack,
            h,
            setup,
            broker: Codec::new(Role::Server, setup.protocol),
            sent: BytesMut::new(),
            sent_total: 0,
            closed: false,
            events: 0,
            messages: 0,
            tokens: 0,
            unacked: Vec::new(),
            acked: Vec::new(),
            pubacks: Vec::new(),
            answered: BTreeSet::new(),
            reauthenticated: false,
        }
    }

    fn reauthenticating(&self) -> bool {
        self.setup.protocol == ProtocolVersion::V5
            && self.setup.authentication
            && self.setup.reauthenticating
            && !self.setup.await_connack
    }

    /// Checks one event, in order, against `reference`.
    fn event(&mut self, event: SessionEvent, reference: &Reference) {
        assert!(
            !self.closed,
            "the session reported {event:?} after it closed the connection"
        );
        let first = self.events == 0;
        self.events += 1;
        match event {
            SessionEvent::Connected { .. } => {
                assert!(
                    self.setup.await_connack && first,
                    "Connected, but the session was connected already or reported other events first"
                );
                self.connected = true;
            }
            SessionEvent::Subscribed { reason_codes } => assert_eq!(
                reason_codes.len(),
                SessionHarness::FILTERS.len(),
                "SUBACK reason codes for another number of filters: {reason_codes:?}"
            ),
            SessionEvent::Message { publish, token } => {
                let Some(expected) = reference.publishes.get(self.messages) else {
                    panic!(
                        "message {} reported, but the codec reads only {} PUBLISH packets: {publish:?}",
                        self.messages + 1,
                        reference.publishes.len()
                    );
                };
                assert_eq!(
                    &publish, expected,
                    "the session's message differs from the codec's PUBLISH"
                );
                self.messages += 1;
                match (publish.qos, token) {
                    (QoS::AtLeastOnce, Some(t)) => {
                        let id = publish.packet_id.expect("QoS 1 has a packet id");
                        assert_eq!(t, self.tokens, "ack tokens out of sequence");
                        self.tokens += 1;
                        self.unacked.push((t, id));
                    }
                    (QoS::AtMostOnce, None) => {}
                    (qos, token) => panic!("a message at {qos:?} with ack token {token:?}"),
                }
            }
            SessionEvent::Reauthenticated => {
                assert!(
                    self.reauthenticating() && !self.reauthenticated,
                    "Reauthenticated without a re-authentication under way"
                );
                self.reauthenticated = true;
            }
            SessionEvent::Acked { packet_id } | SessionEvent::Refused { packet_id } => {
                let id = packet_id.get();
                assert!(
                    (2..2 + SessionHarness::IN_FLIGHT).contains(&id),
                    "an answer for packet id {id}, which is not in flight"
                );
                assert!(self.answered.insert(id), "packet id {id} answered twice");
            }
            SessionEvent::Closed { malformed, reason } => {
                self.closed = true;
                if malformed {
                    assert!(
                        reference.error.is_some(),
                        "closed as malformed ({reason}) on bytes the codec reads"
                    );
                }
            }
        }
    }

    /// Takes what the session sent, decodes it as the broker would, and checks its size.
    fn output(&mut self, limit: usize) {
        let out = self.h.take_transmit();
        self.sent_total += out.len();
        assert!(
            self.sent_total <= limit,
            "the session sent {} bytes in answer to {} (allowance {OUTPUT_ALLOWANCE})",
            self.sent_total,
            limit - OUTPUT_ALLOWANCE
        );
        self.sent.extend_from_slice(&out);
        loop {
            match self.broker.decode(&mut self.sent) {
                Ok(Some(Packet::PubAck(ack))) => self.pubacks.push(ack.packet_id),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("the session sent bytes a broker refuses: {e:?} ({e})"),
            }
        }
        assert!(
            self.sent.is_empty(),
            "the session's output ends inside a packet"
        );
        assert_eq!(
            self.pubacks, self.acked,
            "PUBACKs sent are not the acknowledged messages in the order received"
        );
    }

    /// Acknowledges every message not yet acknowledged, the last one first.
    fn ack_all(&mut self) {
        let up = self.connected && !self.closed;
        for &(token, _) in self.unacked.iter().rev() {
            assert_eq!(
                self.h.ack(token),
                up,
                "ack of a message of this connection returned the opposite of 'connected'"
            );
        }
        if up {
            self.acked.extend(self.unacked.iter().map(|&(_, id)| id));
        }
        self.unacked.clear();
    }
}

/// Feeds `data` (selector byte, read size, the broker's bytes) to a session and checks every
/// invariant listed in the module documentation.
///
/// # Panics
/// When an invariant does not hold: that is the finding.
pub fn session_bytes(data: &[u8]) {
    let [sel, read_size, stream @ ..] = data else {
        return;
    };
    let framed;
    let stream = if sel & FRAMED != 0 {
        framed = reframe(stream);
        &framed[..]
    } else {
        stream
    };
    let setup = setup_for(*sel);
    let reference = Reference::read(setup.protocol, stream);
    let mut run = Run::new(setup);
    let limit = stream.len() + OUTPUT_ALLOWANCE;
    let capacity_bound = 2 * (SessionHarness::MAX_PACKET_SIZE as usize + stream.len()) + (64 << 10);

    let mut buf = BytesMut::new();
    for read in crate::reads(stream, *read_size) {
        let was_closed = run.closed;
        buf.extend_from_slice(read);
        let events = run.h.handle_bytes(&mut buf);
        assert!(
            !was_closed || events.is_empty(),
            "events after the connection closed: {events:?}"
        );
        for event in events {
            run.event(event, &reference);
        }
        if sel & ACK_EACH_READ != 0 {
            run.ack_all();
        }
        let sent_before = run.sent_total;
        run.output(limit);
        assert!(
            !was_closed || run.sent_total == sent_before,
            "the session sent bytes after it closed the connection"
        );
        assert_eq!(
            run.h.is_connected(),
            run.connected && !run.closed,
            "is_connected disagrees with the events"
        );
        if !run.closed {
            assert!(
                buf.capacity() <= capacity_bound,
                "the read buffer holds {} bytes of room for {} bytes of input",
                buf.capacity(),
                stream.len()
            );
            if run.connected {
                assert_eq!(
                    run.h.inbound_unacked(),
                    run.unacked.len(),
                    "inbound messages waiting for their PUBACK"
                );
            }
        }
    }

    // The whole input is read: the codec's verdict and the session's agree.
    if reference.error.is_some() {
        assert!(
            run.closed,
            "the codec refuses a frame ({:?}) but the session stays up",
            reference.error
        );
        assert!(
            run.messages <= reference.publishes.len(),
            "more messages than PUBLISH packets before the refused frame"
        );
    }
    if !run.closed {
        assert_eq!(
            run.messages,
            reference.publishes.len(),
            "the session is up but did not report every PUBLISH"
        );
        assert_eq!(
            buf.len(),
            reference.tail,
            "the session left other bytes in the buffer than the codec's incomplete frame"
        );
    }
    run.ack_all();
    run.output(limit);

    // A new transport: the session connects again from whatever state the bytes left.
    run.h.reconnect();
    let _ = run.h.take_transmit();
    let mut connack = run.h.connack(false);
    let events = run.h.handle_bytes(&mut connack);
    assert!(
        matches!(events.first(), Some(SessionEvent::Connected { .. })),
        "no Connected after a new transport and an accepting CONNACK: {events:?}"
    );
    assert!(run.h.is_connected(), "not connected after a new CONNACK");
    assert_eq!(
        run.h.inbound_unacked(),
        0,
        "inbound messages of the old connection"
    );
    for t in 0..run.tokens {
        assert!(
            !run.h.ack(t),
            "a token of the old connection acknowledged a message"
        );
    }
}
