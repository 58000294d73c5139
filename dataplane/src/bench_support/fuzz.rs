//! Entry points for the fuzz targets (`fuzz/`) and benchmarks, not an API: the parsers of what a
//! hostile peer sends, reachable from outside the crate without making their modules public.
//! Each wraps the crate's own code with a fixed, documented setup; what the targets check is in
//! `fuzz/src/`, and docs/fuzzing.md describes both.
//!
//! - [`SessionHarness`]: a client `Session` fed with broker bytes
//!   (`Session::handle_bytes`), set up in one of a few states (connected or awaiting CONNACK,
//!   subscriptions and in-flight messages outstanding, enhanced authentication).
//! - [`WsHarness`]: the WebSocket layer of a connection (`WsLayer`), with a fixed
//!   `Sec-WebSocket-Key` so that a fuzzer can complete the opening handshake.
//! - [`imds_response`] and [`imds_token`]: the IMDS client's HTTP response parser and its token
//!   body parser.

use std::num::{NonZeroU16, NonZeroU32};
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use sluice_codec::{
    ByteStr, Codec, ConnAck, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode, Role,
    Subscription, SubscriptionOptions,
};

use crate::mqtt::session::{AckToken, CloseReason, Event, Session, SessionConfig};
use crate::net::transport::TransportError;
use crate::net::transport::ws::{WsLayer, WsSettings, accept_key};
use crate::secrets::AuthError;
use crate::secrets::imds;
use crate::secrets::tokens::Token;

/// The state a [`SessionHarness`] starts in. Fixed for every setup: the topic filters
/// [`SessionHarness::FILTERS`] (QoS 1 and QoS 0), one filter of an earlier configuration to
/// unsubscribe after a CONNACK with Session Present, a Receive Maximum of
/// [`SessionHarness::RECEIVE_MAXIMUM`], a maximum packet size of
/// [`SessionHarness::MAX_PACKET_SIZE`], and [`SessionHarness::IN_FLIGHT`] QoS 1 messages published
/// and not acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSetup {
    /// The MQTT version.
    pub protocol: ProtocolVersion,
    /// Stop before CONNACK: the first connection was accepted (SUBSCRIBE sent with packet id 1,
    /// the in-flight messages published with ids 2 and up), then the transport was replaced,
    /// so that the session has sent CONNECT again and waits for the broker's answer. Otherwise
    /// the session is connected and waits for SUBACK (packet id 1) and the PUBACKs.
    pub await_connack: bool,
    /// 5.0 only (ignored in 3.1.1): enhanced authentication with
    /// [`SessionHarness::AUTHENTICATION_METHOD`].
    pub authentication: bool,
    /// With `authentication`, connected: a re-authentication (AUTH 0x19) waits for its answer.
    pub reauthenticating: bool,
    /// 5.0: disconnect a broker that sends more unacknowledged QoS 1 messages than the Receive
    /// Maximum, rather than count them.
    pub enforce_receive_maximum: bool,
}

/// What a [`SessionHarness`] reported, as the session's own event says it (the close reason as
/// its message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// CONNACK accepted the connection.
    Connected {
        /// The broker kept the session.
        session_present: bool,
    },
    /// SUBACK for the session's SUBSCRIBE.
    Subscribed {
        /// Its reason codes.
        reason_codes: Vec<ReasonCode>,
    },
    /// An inbound PUBLISH the session took.
    Message {
        /// The message.
        publish: Publish,
        /// At QoS 1: the number to pass to [`SessionHarness::ack`].
        token: Option<usize>,
    },
    /// AUTH Success for the re-authentication under way.
    Reauthenticated,
    /// PUBACK with a success code for an in-flight message.
    Acked {
        /// Its packet id.
        packet_id: PacketId,
    },
    /// PUBACK with an error code for an in-flight message.
    Refused {
        /// Its packet id.
        packet_id: PacketId,
    },
    /// The connection is over.
    Closed {
        /// Why, as the session words it.
        reason: String,
        /// The broker's bytes were malformed (the codec refused them), as opposed to a rule of
        /// the session's state or the broker ending the connection.
        malformed: bool,
    },
}

/// A client session in a [`SessionSetup`] state, fed with bytes from a broker. The clock does not
/// move: only the bytes act on the session.
#[derive(Debug)]
pub struct SessionHarness {
    session: Session,
    setup: SessionSetup,
    tokens: Vec<AckToken>,
    out: BytesMut,
    now: Instant,
}

impl SessionHarness {
    /// The session's topic filters, QoS 1 then QoS 0: a SUBACK must carry two reason codes.
    pub const FILTERS: [&'static str; 2] = ["sensors/#", "$share/group/alerts/+"];
    /// The filter of an earlier configuration, unsubscribed after a CONNACK with Session Present.
    pub const OLD_FILTER: &'static str = "retired/#";
    /// The Receive Maximum announced in a 5.0 CONNECT.
    pub const RECEIVE_MAXIMUM: u16 = 4;
    /// The largest packet accepted from the broker, bytes.
    pub const MAX_PACKET_SIZE: u32 = 2048;
    /// QoS 1 messages published before the broker's bytes and not acknowledged.
    pub const IN_FLIGHT: u16 = 2;
    /// The Authentication Method of [`SessionSetup::authentication`].
    pub const AUTHENTICATION_METHOD: &'static str = "K8S-SAT";

    /// A session in the state `setup` describes. What it sent while getting there is the first
    /// [`SessionHarness::take_transmit`].
    ///
    /// # Panics
    /// If the session refuses the setup (a bug).
    pub fn new(setup: SessionSetup) -> Self {
        let now = Instant::now();
        let v5 = setup.protocol == ProtocolVersion::V5;
        let mut config = SessionConfig::new(setup.protocol, ByteStr::from_static("fuzz"));
        config.receive_maximum = NonZeroU16::new(Self::RECEIVE_MAXIMUM).expect("non-zero");
        config.enforce_receive_maximum = setup.enforce_receive_maximum;
        config.maximum_packet_size = NonZeroU32::new(Self::MAX_PACKET_SIZE).expect("non-zero");
        config.subscriptions = vec![
            Subscription {
                filter: ByteStr::from_static(Self::FILTERS[0]),
                options: SubscriptionOptions::qos(QoS::AtLeastOnce),
            },
            Subscription {
                filter: ByteStr::from_static(Self::FILTERS[1]),
                options: SubscriptionOptions::qos(QoS::AtMostOnce),
            },
        ];
        config.unsubscribe_first = vec![ByteStr::from_static(Self::OLD_FILTER)];
        if v5 && setup.authentication {
            config.authentication_method = Some(ByteStr::from_static(Self::AUTHENTICATION_METHOD));
            config.authentication_data = Some(Bytes::from_static(b"token-1"));
        }
        let mut h = Self {
            session: Session::new(config, now).expect("valid configuration"),
            setup,
            tokens: Vec::new(),
            out: BytesMut::new(),
            now,
        };
        h.session.handle_connected(now);
        let mut connack = h.connack(false);
        h.session.handle_bytes(&mut connack, now);
        assert!(h.session.is_connected(), "the CONNACK was taken");
        for i in 0..Self::IN_FLIGHT {
            let mut p = Publish::new(
                ByteStr::from_static("out/fuzz"),
                Bytes::from(format!("message {i}")),
            );
            p.qos = QoS::AtLeastOnce;
            h.session.publish(p, now).expect("room in flight");
        }
        if setup.await_connack {
            h.session.handle_connected(now);
        } else if v5 && setup.authentication && setup.reauthenticating {
            h.session
                .reauthenticate(Bytes::from_static(b"token-2"), now)
                .expect("connected, with a method");
        }
        while h.session.poll_event().is_some() {}
        h.session.poll_transmit(&mut h.out);
        h
    }

    /// The setup this harness was made with.
    pub fn setup(&self) -> SessionSetup {
        self.setup
    }

    /// An accepting CONNACK for this session, as a broker encodes it: with the Authentication
    /// Method when the session has one.
    ///
    /// # Panics
    /// If the codec refuses it (a bug).
    pub fn connack(&self, session_present: bool) -> BytesMut {
        let mut connack = ConnAck::new(session_present);
        connack.properties.authentication_method =
            self.session.config().authentication_method.clone();
        let mut buf = BytesMut::new();
        Codec::new(Role::Server, self.setup.protocol)
            .encode(&Packet::ConnAck(connack), &mut buf)
            .expect("CONNACK encodes");
        buf
    }

    /// `Session::handle_bytes` on `buf` (what a read left there, as the I/O task keeps it), then
    /// every event the session reported.
    pub fn handle_bytes(&mut self, buf: &mut BytesMut) -> Vec<SessionEvent> {
        self.session.handle_bytes(buf, self.now);
        let mut events = Vec::new();
        while let Some(event) = self.session.poll_event() {
            events.push(match event {
                Event::Connected { session_present } => SessionEvent::Connected { session_present },
                Event::Subscribed { reason_codes } => SessionEvent::Subscribed { reason_codes },
                Event::Message { publish, ack } => SessionEvent::Message {
                    publish,
                    token: ack.map(|t| {
                        self.tokens.push(t);
                        self.tokens.len() - 1
                    }),
                },
                Event::Reauthenticated => SessionEvent::Reauthenticated,
                Event::Acked { packet_id, .. } => SessionEvent::Acked { packet_id },
                Event::Refused { packet_id, .. } => SessionEvent::Refused { packet_id },
                Event::Closed { reason } => SessionEvent::Closed {
                    malformed: matches!(reason, CloseReason::Decode(_)),
                    reason: reason.to_string(),
                },
            });
        }
        events
    }

    /// `Session::ack` with the token of a [`SessionEvent::Message`]: whether the session took it.
    ///
    /// # Panics
    /// For a number no event gave.
    pub fn ack(&mut self, token: usize) -> bool {
        self.session.ack(self.tokens[token], self.now)
    }

    /// Everything the session queued for the broker since the last call.
    pub fn take_transmit(&mut self) -> BytesMut {
        self.session.poll_transmit(&mut self.out);
        std::mem::take(&mut self.out)
    }

    /// Whether a CONNACK accepted the connection and it is still up.
    pub fn is_connected(&self) -> bool {
        self.session.is_connected()
    }

    /// Inbound QoS 1 messages not yet PUBACKed.
    pub fn inbound_unacked(&self) -> usize {
        self.session.inbound_unacked()
    }

    /// The transport was replaced: `Session::handle_connected`, which queues CONNECT. The events
    /// (a `Closed` when the connection was still up) are dropped.
    pub fn reconnect(&mut self) {
        self.session.handle_connected(self.now);
        while self.session.poll_event().is_some() {}
    }
}

/// The client side of one WebSocket connection (`WsLayer`), its opening handshake queued with
/// the key [`WsHarness::KEY`], so that [`WsHarness::accept_response`] completes it.
#[derive(Debug)]
pub struct WsHarness {
    layer: WsLayer,
}

impl WsHarness {
    /// The `Sec-WebSocket-Key` nonce (before base64).
    pub const KEY: [u8; 16] = *b"sluice-fuzz-key!";

    /// A layer for `broker:8080`, path `/mqtt`, that refuses frames over `max_frame_len` bytes.
    ///
    /// # Panics
    /// For a `max_frame_len` of zero.
    pub fn new(max_frame_len: usize) -> Self {
        let mut settings = WsSettings::new("broker:8080");
        settings.path = "/mqtt".to_owned();
        settings.max_frame_len = max_frame_len;
        Self {
            layer: WsLayer::new(&settings, Self::KEY, 1).expect("valid settings"),
        }
    }

    /// A response head that accepts the upgrade for [`WsHarness::KEY`].
    pub fn accept_response() -> String {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.encode(Self::KEY);
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
            accept_key(&key)
        )
    }

    /// `WsLayer::read`: consumes `input`, appends data frames' payload to `app_out`.
    ///
    /// # Errors
    /// As `WsLayer::read`: a refused upgrade, a framing violation, the peer's Close.
    pub fn read(&mut self, input: &[u8], app_out: &mut BytesMut) -> Result<(), TransportError> {
        self.layer.read(input, app_out)
    }

    /// `WsLayer::write`: application bytes, held until the upgrade completes.
    pub fn write(&mut self, app: &[u8]) {
        self.layer.write(app);
    }

    /// `WsLayer::close`: our Close frame, once.
    pub fn close(&mut self) {
        self.layer.close();
    }

    /// The upgrade completed.
    pub fn is_open(&self) -> bool {
        self.layer.is_open()
    }

    /// Bytes queued for the socket (the request, then masked frames).
    pub fn out(&self) -> &[u8] {
        self.layer.out()
    }

    /// Forgets [`WsHarness::out`].
    pub fn clear_out(&mut self) {
        self.layer.clear_out();
    }
}

/// The IMDS client's HTTP response parser on the bytes read so far: `Ok(None)` while incomplete,
/// `eof` when the server has closed. `Some((status, body))`, the body decoded (chunked), once
/// complete. The client reads into a buffer of at most [`imds::MAX_RESPONSE_BYTES`] and calls
/// this after each read, and once more with `eof` when the server closes.
///
/// # Errors
/// Why the response is malformed.
pub fn imds_response(buf: &[u8], eof: bool) -> Result<Option<(u16, Vec<u8>)>, &'static str> {
    imds::parse_response(buf, eof).map(|r| r.map(|r| (r.status, r.body)))
}

/// The IMDS client's reading of a complete response (status and body) into a token, as if it
/// arrived at `now`.
///
/// # Errors
/// The [`AuthError`] the client would report.
pub fn imds_token(status: u16, body: &[u8], now: SystemTime) -> Result<Token, AuthError> {
    imds::parse_token_response("http://169.254.169.254", status, body, now)
}
