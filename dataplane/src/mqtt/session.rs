//! The MQTT client session: a sans-IO state machine for one persistent MQTT session over a series
//! of connections (3.1.1 and 5.0). It does not open sockets, read the clock or spawn anything: the
//! I/O task feeds it bytes and `now`, and takes from it the bytes to write ([`Session::poll_transmit`]),
//! what happened ([`Session::poll_event`]) and when to call back ([`Session::poll_timeout`]).
//! Reconnect backoff and TLS are not here; getting tokens is not either (see [`crate::secrets::tokens`]).
//!
//! ```text
//!  handle_connected ──> CONNECT ──> CONNACK ──> SUBSCRIBE (5.0: always; 3.1.1: unless Session Present) ──> SUBACK
//!  handle_bytes     ──> events: Message (caller acks later), Acked, Subscribed, Reauthenticated,
//!                       Closed
//!  handle_timeout   ──> PINGREQ when idle for Keep Alive; Closed when no PINGRESP / CONNACK /
//!                       re-authentication answer in time
//!  reauthenticate   ──> AUTH 0x19 ──> AUTH 0x00 (Reauthenticated) or DISCONNECT (Closed)
//! ```
//!
//! Enhanced authentication (MQTT 5.0 §4.12) is done for single-step token methods such as
//! `K8S-SAT` (Azure IoT Operations MQTT broker: the data is a Kubernetes service account token)
//! and `OAUTH2-JWT` (Azure Event Grid: the data is a Microsoft Entra JWT). CONNECT carries
//! [`SessionConfig::authentication_method`] and the current data
//! ([`Session::set_authentication_data`]); the broker answers with CONNACK. Neither method defines
//! a challenge: the broker documentation describes CONNECT with the token and AUTH 0x19 with a new
//! token, nothing else. So an AUTH Continue authentication (0x18) from the broker is answered with
//! DISCONNECT Protocol Error (0x82) instead of a further AUTH: this session does not do
//! challenge-response methods (SCRAM, Kerberos). Re-authentication is client-initiated only
//! ([MQTT-4.12.1-1]); the server cannot ask for it, and an AUTH 0x19 from it breaks
//! [MQTT-3.15.2-1] (Re-authenticate is sent by the client only).
//!
//! Checks on the broker, each answered with DISCONNECT Protocol Error (0x82), as Bad
//! authentication method (0x8C) is not a DISCONNECT reason code (§3.14.2.1):
//! - AUTH or an Authentication Method in CONNACK when CONNECT had none ([MQTT-4.12.0-6]);
//! - a successful CONNACK, or any AUTH, whose Authentication Method is not ours
//!   ([MQTT-4.12.0-5]);
//! - AUTH Success (0x00) while no re-authentication is under way (before CONNACK, the exchange
//!   ends with CONNACK, not AUTH);
//! - AUTH Continue authentication (0x18), see above.
//!
//! A refused re-authentication ends with the broker's DISCONNECT ([MQTT-4.12.1-2]), reported as
//! [`CloseReason::ServerDisconnect`]. Before CONNACK the session sends nothing but CONNECT
//! ([MQTT-3.1.2-30]).
//!
//! Acknowledgements (principle 1): the session never PUBACKs an inbound QoS 1 message by itself.
//! Each [`Event::Message`] at QoS 1 carries an [`AckToken`]; [`Session::ack`] marks it done, and
//! PUBACKs go out strictly in receive order ([MQTT-4.6.0-2]).
//!
//! Memory: the transmit buffer holds what was queued since the last [`Session::poll_transmit`];
//! the inbound queue holds 4 bytes per unacknowledged QoS 1 message (at most Receive Maximum in
//! 5.0, at most 65,535 distinct packet ids in 3.1.1) plus a fixed 8 KiB bitmap of the ids in use;
//! the outbound in-flight table holds one [`Publish`] (slices, no payload copy) per message, up
//! to the broker's Receive Maximum.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::num::{NonZeroU16, NonZeroU32};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sluice_codec::topic::validate_topic_filter;
use sluice_codec::{
    Auth, AuthProperties, ByteStr, Codec, ConnAck, Connect, DecodeError, Disconnect, EncodeError,
    Packet, PacketId, PacketType, ProtocolVersion, PubAck, Publish, PublishRef, QoS, ReasonCode,
    Role, SubAck, Subscribe, Subscription, TopicError, Unsubscribe,
};

use super::violation::SpecViolation;

/// Payloads of at least this many bytes are queued by reference and sent with a vectored write;
/// smaller ones are copied next to their header, which costs less than another I/O vector
/// entry and reference count.
pub const VECTORED_MIN_PAYLOAD: usize = 512;

/// The default [`SessionConfig::maximum_packet_size`] (and `--max-packet-bytes`): 64 MiB, the
/// largest packet the Azure IoT Operations MQTT broker accepts with its default memory profile
/// (Medium; Tiny takes 4 MB, Low 16 MB, High 256 MB). That broker does not honour the Maximum
/// Packet Size a client announces, so a smaller default would turn every message it accepted
/// above it into a connection closed and the message delivered again, over and over.
pub const DEFAULT_MAXIMUM_PACKET_SIZE: NonZeroU32 = NonZeroU32::new(64 << 20).unwrap();

/// How a session connects and what it subscribes to. Its `Debug` output leaves out the password
/// and the authentication data.
#[derive(Clone)]
pub struct SessionConfig {
    /// MQTT version for every connection of this session.
    pub protocol: ProtocolVersion,
    /// Client Identifier; stable across restarts so that the broker keeps the session.
    pub client_id: ByteStr,
    /// Keep Alive announced in CONNECT, seconds; 0 turns keep alive off. A 5.0 broker may
    /// replace it with Server Keep Alive. Default 60.
    pub keep_alive_secs: u16,
    /// Clean Start (5.0) / Clean Session (3.1.1). Default `false`: persistent sessions.
    pub clean_start: bool,
    /// Session Expiry Interval sent in a 5.0 CONNECT, seconds; ignored in 3.1.1, where a session
    /// without Clean Session does not expire. Default 3,600.
    pub session_expiry_secs: u32,
    /// Receive Maximum (our `maxInflightMessages`): the most inbound QoS 1 messages left
    /// unacknowledged at once. Announced in a 5.0 CONNECT, where a broker sending more is a
    /// protocol error (0x93). Default 100.
    pub receive_maximum: NonZeroU16,
    /// Whether a 5.0 broker that sends more unacknowledged QoS 1 PUBLISH packets than our
    /// Receive Maximum is disconnected (0x93 Receive Maximum exceeded, as the specification
    /// says) or only counted ([`Session::receive_maximum_overruns`]). Default `false`: Debian's
    /// mosquitto 2.0.11 with shared subscriptions overruns a client's Receive Maximum under load
    /// (seen here: the first time by one message, then more and more), and disconnecting throws
    /// the whole window away to be sent again, over and over. Memory stays bounded without it:
    /// the pipeline stops reading when its own queues are full.
    pub enforce_receive_maximum: bool,
    /// The most outbound QoS 1 messages left unacknowledged at once (our `maxInflightMessages`
    /// when publishing); the broker's Receive Maximum lowers it further. Default 100.
    pub max_in_flight: NonZeroU16,
    /// Largest packet accepted from the broker, bytes (the whole frame, fixed header included):
    /// announced as Maximum Packet Size in every 5.0 CONNECT, and enforced in 3.1.1 too. A
    /// bigger packet is refused from its fixed header, before its body is buffered, so no read
    /// buffer grows past it: the connection closes with [`CloseReason::Decode`]
    /// (`DecodeError::PacketTooLarge`) and, in 5.0, DISCONNECT 0x95 Packet too large. Default
    /// [`DEFAULT_MAXIMUM_PACKET_SIZE`].
    pub maximum_packet_size: NonZeroU32,
    /// User Name.
    pub username: Option<ByteStr>,
    /// Password.
    pub password: Option<Bytes>,
    /// Authentication Method for MQTT 5.0 enhanced authentication, for example `K8S-SAT` or
    /// `OAUTH2-JWT`; see the module documentation for what this session does with it. 5.0 only
    /// ([`ConfigError::AuthenticationNeedsV5`] in 3.1.1). Default `None`.
    pub authentication_method: Option<ByteStr>,
    /// Authentication Data sent in the first CONNECT (the token); replaced for later connections
    /// by [`Session::set_authentication_data`] and [`Session::reauthenticate`]. Needs
    /// `authentication_method` (§3.1.2.11.10). Default `None`.
    pub authentication_data: Option<Bytes>,
    /// Topic filters with their options, all in one SUBSCRIBE after a CONNACK without Session
    /// Present. QoS 0 or 1 (this session does not do QoS 2).
    pub subscriptions: Vec<Subscription>,
    /// Filters of an earlier configuration of the same client id that this one no longer has:
    /// removed with one UNSUBSCRIBE after the first CONNACK that reports Session Present (the
    /// broker kept them with the session). Default empty.
    pub unsubscribe_first: Vec<ByteStr>,
    /// How long to wait for CONNACK after the transport is up. Default 30 s.
    pub connect_timeout: Duration,
    /// How long to wait for PINGRESP after a PINGREQ before the connection is considered dead.
    /// Default 10 s.
    pub ping_timeout: Duration,
}

impl SessionConfig {
    /// A configuration with the defaults given on each field, no credentials and no
    /// subscriptions.
    pub fn new(protocol: ProtocolVersion, client_id: ByteStr) -> Self {
        Self {
            protocol,
            client_id,
            keep_alive_secs: 60,
            clean_start: false,
            session_expiry_secs: 3600,
            receive_maximum: NonZeroU16::new(100).expect("non-zero"),
            max_in_flight: NonZeroU16::new(100).expect("non-zero"),
            enforce_receive_maximum: false,
            maximum_packet_size: DEFAULT_MAXIMUM_PACKET_SIZE,
            username: None,
            password: None,
            authentication_method: None,
            authentication_data: None,
            subscriptions: Vec::new(),
            unsubscribe_first: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("protocol", &self.protocol)
            .field("client_id", &self.client_id)
            .field("keep_alive_secs", &self.keep_alive_secs)
            .field("clean_start", &self.clean_start)
            .field("session_expiry_secs", &self.session_expiry_secs)
            .field("receive_maximum", &self.receive_maximum)
            .field("max_in_flight", &self.max_in_flight)
            .field("maximum_packet_size", &self.maximum_packet_size)
            .field("username", &self.username)
            .field("password", &Redacted(&self.password))
            .field("authentication_method", &self.authentication_method)
            .field("authentication_data", &Redacted(&self.authentication_data))
            .field("subscriptions", &self.subscriptions)
            .field("connect_timeout", &self.connect_timeout)
            .field("ping_timeout", &self.ping_timeout)
            .finish()
    }
}

/// Shows whether a secret is set and its length, not its bytes.
struct Redacted<'a>(&'a Option<Bytes>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(b) => write!(f, "Some(<{} bytes redacted>)", b.len()),
            None => f.write_str("None"),
        }
    }
}

/// A configuration the session refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A subscription asks for QoS 2, which this session does not implement.
    #[error("subscription {filter:?}: QoS 2 is not supported")]
    Qos2Subscription {
        /// The filter.
        filter: String,
    },
    /// A topic filter breaks the topic rules.
    #[error("subscription {filter:?}: {error}")]
    InvalidFilter {
        /// The filter.
        filter: String,
        /// Why.
        error: TopicError,
    },
    /// The CONNECT this configuration gives cannot be encoded (for example a 3.1.1 password
    /// without a user name, or an empty client id with Clean Session 0).
    #[error("CONNECT: {0}")]
    Connect(EncodeError),
    /// An Authentication Method or Data in a 3.1.1 session: enhanced authentication is MQTT 5.0.
    #[error("enhanced authentication (Authentication Method / Data) needs MQTT 5.0")]
    AuthenticationNeedsV5,
    /// Authentication Data without an Authentication Method, which CONNECT cannot carry
    /// (§3.1.2.11.10: a Protocol Error).
    #[error("Authentication Data without an Authentication Method")]
    AuthenticationDataWithoutMethod,
}

/// Why [`Session::reauthenticate`] did not start a re-authentication. Nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReauthError {
    /// The session has no Authentication Method (or is 3.1.1): there is nothing to
    /// re-authenticate ([MQTT-4.12.1-1]).
    #[error("no Authentication Method: the connection was not made with enhanced authentication")]
    NoAuthenticationMethod,
    /// No connection is up (before CONNACK, or after it closed). The data is kept for the next
    /// CONNECT.
    #[error("not connected")]
    NotConnected,
    /// A re-authentication is under way: wait for [`Event::Reauthenticated`] or
    /// [`Event::Closed`]. The data is kept for the next CONNECT.
    #[error("a re-authentication is already under way")]
    InProgress,
}

/// Identifies one inbound QoS 1 message for [`Session::ack`]. It names the connection the message
/// came on as well as its packet id: a packet id is reused once acknowledged, and after a
/// reconnect the same id may name another message, so a late ack must not hit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckToken {
    connection: u32,
    packet_id: PacketId,
}

impl AckToken {
    /// The message's packet id.
    #[cfg(test)]
    pub(crate) fn packet_id(&self) -> PacketId {
        self.packet_id
    }
}

/// Why a connection ended. The session itself survives: call [`Session::handle_connected`] on
/// the next transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// The broker sent bytes the codec refuses; a 5.0 DISCONNECT with its reason code was queued.
    #[error("malformed packet from the broker: {0}")]
    Decode(DecodeError),
    /// The broker broke a rule that depends on the session's state; a 5.0 DISCONNECT with
    /// [`SpecViolation::reason_code`] was queued. Shown as the violation: its clause first.
    #[error("{0}")]
    Protocol(SpecViolation),
    /// Every packet identifier is in use, so SUBSCRIBE cannot be sent; a 5.0 DISCONNECT with
    /// Implementation specific error (0x83) was queued.
    #[error("no packet identifier free for SUBSCRIBE")]
    PacketIdsExhausted,
    /// The broker refused the connection (5.0 reason code, or 3.1.1 return code 1 to 5).
    #[error("connection refused by the broker: {reason_code:?}")]
    Refused {
        /// CONNACK reason code / return code.
        reason_code: ReasonCode,
    },
    /// The broker sent DISCONNECT (5.0).
    #[error("disconnected by the broker: {reason_code:?}")]
    ServerDisconnect {
        /// Its reason code.
        reason_code: ReasonCode,
    },
    /// No CONNACK within the connect timeout.
    #[error("no CONNACK within the connect timeout")]
    ConnectTimeout,
    /// No PINGRESP within the ping timeout.
    #[error("no PINGRESP within the ping timeout")]
    KeepAliveTimeout,
    /// No answer to our re-authentication (AUTH 0x19) within the connect timeout.
    #[error("no answer to re-authentication within the connect timeout")]
    ReauthTimeout,
    /// A packet of ours could not be encoded (for example it exceeds the broker's Maximum Packet
    /// Size).
    #[error("cannot encode a packet: {0}")]
    Encode(EncodeError),
    /// The transport went away ([`Session::handle_disconnected`]).
    #[error("transport closed")]
    TransportClosed,
    /// We closed it ([`Session::disconnect`]).
    #[error("closed locally")]
    Local,
}

/// What the session reports to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// CONNACK accepted the connection.
    Connected {
        /// The broker kept our session: in-flight messages were re-sent with DUP (and a 3.1.1
        /// session whose subscriptions were confirmed does not subscribe again).
        session_present: bool,
    },
    /// SUBACK for the session's SUBSCRIBE, one reason code per filter in order (failures are
    /// 0x80 and above; the caller decides).
    Subscribed {
        /// SUBACK reason codes (5.0) or return codes (3.1.1).
        reason_codes: Vec<ReasonCode>,
    },
    /// An inbound PUBLISH. At QoS 1 it carries the token to pass to [`Session::ack`] once the
    /// destination has the message.
    Message {
        /// The message; its topic and payload are slices of the read buffer's frame.
        publish: Publish,
        /// `Some` at QoS 1.
        ack: Option<AckToken>,
    },
    /// The broker accepted the re-authentication started by [`Session::reauthenticate`] (AUTH
    /// Success). A refused one ends the connection instead ([`Event::Closed`]).
    Reauthenticated,
    /// The broker acknowledged one of our QoS 1 publishes (in any order) with a success code.
    Acked {
        /// The id [`Session::publish`] returned.
        packet_id: PacketId,
        /// PUBACK reason code (always success in 3.1.1).
        reason_code: ReasonCode,
    },
    /// The broker answered one of our QoS 1 publishes with a 5.0 PUBACK reason code of 0x80 or
    /// above: it did not take the message. The protocol is done with it (the id is free); the
    /// message comes back so that the caller can decide to send it again later (quota exceeded,
    /// a passing error) or give it up (not authorized, invalid topic).
    Refused {
        /// The id [`Session::publish`] returned.
        packet_id: PacketId,
        /// PUBACK reason code.
        reason_code: ReasonCode,
        /// The message as it was sent (DUP and packet id as on the wire).
        publish: Box<Publish>,
    },
    /// The connection is over: flush [`Session::poll_transmit`], close the transport, reconnect
    /// later.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

/// Why [`Session::publish`] did not take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The in-flight window (the broker's Receive Maximum) is full: wait for [`Event::Acked`].
    #[error("in-flight window full")]
    Full,
    /// No connection is up (before CONNACK, or after it closed).
    #[error("not connected")]
    NotConnected,
    /// QoS above what the broker allows (5.0 Maximum QoS), or QoS 2, which this session does not do.
    #[error("QoS {0:?} not supported")]
    QosNotSupported(QoS),
    /// The packet cannot be encoded (too large for the broker, invalid field).
    #[error("cannot encode: {0}")]
    Encode(EncodeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No transport: before the first connection, or after the transport went away.
    Idle,
    /// CONNECT sent, waiting for CONNACK.
    Connecting { deadline: Instant },
    /// CONNACK accepted.
    Connected,
    /// We ended the connection; waiting for the caller to drop the transport.
    Closed,
}

/// One outbound QoS 1 message waiting for its PUBACK.
#[derive(Debug)]
struct InFlight {
    /// Order of first sending: re-sent in this order ([MQTT-4.6.0-1]).
    seq: u64,
    /// Sent on the current connection.
    sent: bool,
    publish: Publish,
}

/// One inbound QoS 1 message waiting for the caller's ack.
#[derive(Debug, Clone, Copy)]
struct Inbound {
    packet_id: PacketId,
    acked: bool,
}

/// A persistent MQTT client session. See the module documentation. Its `Debug` output shows the
/// connection state, not the buffers (which hold credentials).
pub struct Session {
    config: SessionConfig,
    state: State,
    codec: Codec,
    /// Bumped by every `handle_connected`; part of each [`AckToken`].
    connection: u32,
    /// Encoded bytes not yet taken by the transport; follows `tx_chunks`.
    tx: BytesMut,
    /// Frozen pieces queued before `tx`: headers and payloads of large PUBLISH packets, sent by
    /// reference (see [`VECTORED_MIN_PAYLOAD`]).
    tx_chunks: VecDeque<Bytes>,
    /// Bytes in `tx_chunks`.
    tx_chunks_len: usize,
    events: VecDeque<Event>,
    /// Client id for CONNECT: the configured one, or the one a 5.0 broker assigned.
    client_id: ByteStr,

    // Keep alive, for the current connection.
    keep_alive: Option<Duration>,
    last_sent: Instant,
    ping_sent: Option<Instant>,
    /// The caller reads the transport ([`Session::set_reading`]).
    reading: bool,

    // Inbound QoS 1, in receive order, current connection only.
    inbound: VecDeque<Inbound>,
    /// The packet ids in `inbound`, one bit each, for an O(1) "in use" check per PUBLISH.
    inbound_ids: Box<[u64; 1024]>,

    // Outbound.
    in_flight: HashMap<u16, InFlight>,
    unsent: usize,
    /// Keys of in-flight messages to re-send on this connection, oldest first; entries whose
    /// message was acknowledged meanwhile are skipped.
    resend: VecDeque<u16>,
    next_seq: u64,
    next_packet_id: u16,
    /// The broker's Receive Maximum (65,535 until a 5.0 CONNACK says otherwise).
    send_window: u16,
    maximum_qos: QoS,
    subscribe_id: Option<PacketId>,
    /// QoS 1 PUBLISH packets received beyond Receive Maximum.
    receive_maximum_overruns: u64,
    /// A SUBACK confirmed this configuration's subscriptions on some connection: from then on a
    /// Session Present CONNACK needs no SUBSCRIBE. Until then the session subscribes even when the
    /// broker kept a session, because that session may hold another configuration's filters.
    subscribed: bool,
    unsubscribe_id: Option<PacketId>,
    /// `unsubscribe_first` was done (or was not needed).
    unsubscribed: bool,

    // Enhanced authentication.
    /// Authentication Data for the next CONNECT (a secret: never logged).
    auth_data: Option<Bytes>,
    /// When a re-authentication (AUTH 0x19) is under way: the deadline for the broker's answer.
    reauth_deadline: Option<Instant>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("config", &self.config)
            .field("state", &self.state)
            .field("connection", &self.connection)
            .field("client_id", &self.client_id)
            .field("transmit_len", &self.transmit_len())
            .field("events", &self.events.len())
            .field("inbound_unacked", &self.inbound.len())
            .field("in_flight", &self.in_flight.len())
            .field("send_window", &self.send_window)
            .field("authentication_data", &Redacted(&self.auth_data))
            .field("reauth_deadline", &self.reauth_deadline)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session that is not connected yet.
    ///
    /// # Errors
    /// [`ConfigError`] when a subscription or the CONNECT it gives is invalid.
    pub fn new(config: SessionConfig, now: Instant) -> Result<Self, ConfigError> {
        if config.protocol != ProtocolVersion::V5
            && (config.authentication_method.is_some() || config.authentication_data.is_some())
        {
            return Err(ConfigError::AuthenticationNeedsV5);
        }
        if config.authentication_method.is_none() && config.authentication_data.is_some() {
            return Err(ConfigError::AuthenticationDataWithoutMethod);
        }
        for s in &config.subscriptions {
            validate_topic_filter(&s.filter).map_err(|error| ConfigError::InvalidFilter {
                filter: s.filter.to_string(),
                error,
            })?;
            if s.options.qos == QoS::ExactlyOnce {
                return Err(ConfigError::Qos2Subscription {
                    filter: s.filter.to_string(),
                });
            }
        }
        let codec = Codec::new(Role::Client, config.protocol)
            .with_max_packet_size(config.maximum_packet_size.get());
        let session = Self {
            client_id: config.client_id.clone(),
            auth_data: config.authentication_data.clone(),
            codec,
            config,
            state: State::Idle,
            connection: 0,
            tx: BytesMut::new(),
            tx_chunks: VecDeque::new(),
            tx_chunks_len: 0,
            events: VecDeque::new(),
            keep_alive: None,
            last_sent: now,
            ping_sent: None,
            reading: true,
            inbound: VecDeque::new(),
            inbound_ids: Box::new([0; 1024]),
            in_flight: HashMap::new(),
            unsent: 0,
            resend: VecDeque::new(),
            next_seq: 0,
            next_packet_id: 1,
            send_window: u16::MAX,
            maximum_qos: QoS::AtLeastOnce,
            subscribe_id: None,
            subscribed: false,
            receive_maximum_overruns: 0,
            unsubscribe_id: None,
            unsubscribed: false,
            reauth_deadline: None,
        };
        // Check the CONNECT once, so that a bad configuration fails here and not per connection.
        session
            .codec
            .encode(
                &Packet::Connect(Box::new(session.connect_packet())),
                &mut BytesMut::new(),
            )
            .map_err(ConfigError::Connect)?;
        Ok(session)
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Whether CONNACK accepted the current connection and it is still up.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Inbound QoS 1 messages not yet PUBACKed (acked by the caller or not).
    pub fn inbound_unacked(&self) -> usize {
        self.inbound.len()
    }

    /// QoS 1 PUBLISH packets the broker sent beyond our Receive Maximum (and which the session
    /// took, unless [`SessionConfig::enforce_receive_maximum`]).
    pub fn receive_maximum_overruns(&self) -> u64 {
        self.receive_maximum_overruns
    }

    /// Outbound QoS 1 messages without a PUBACK yet.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether [`Session::publish`] would take a QoS 1 message now: connected, and the in-flight
    /// window has room.
    pub fn can_publish(&self) -> bool {
        self.state == State::Connected && self.in_flight.len() < usize::from(self.send_window)
    }

    /// The highest QoS the broker accepts from us (5.0 Maximum QoS; QoS 1 otherwise, as this
    /// session does not do QoS 2).
    pub fn maximum_qos(&self) -> QoS {
        self.maximum_qos
    }

    /// Replaces the Authentication Data that the next CONNECT carries. Call it with a fresh token
    /// before each [`Session::handle_connected`]: tokens expire, so the caller re-reads them on
    /// every reconnect. The connection that is up, if any, is not affected (that is
    /// [`Session::reauthenticate`]). Without an [`SessionConfig::authentication_method`] the data
    /// is kept but not sent, as CONNECT cannot carry it (§3.1.2.11.10).
    pub fn set_authentication_data(&mut self, data: Option<Bytes>) {
        self.auth_data = data;
    }

    /// Whether a re-authentication started by [`Session::reauthenticate`] waits for the broker's
    /// answer.
    #[cfg(test)]
    pub fn is_reauthenticating(&self) -> bool {
        self.reauth_deadline.is_some()
    }

    /// Re-authenticates the connection that is up with new Authentication Data (a fresh token),
    /// so that the broker does not drop it when the old token expires: queues AUTH with
    /// Re-authenticate (0x19), our Authentication Method and `data` ([MQTT-4.12.1-1]). Traffic
    /// goes on meanwhile with the previous authentication. The broker answers with AUTH Success
    /// ([`Event::Reauthenticated`]) or DISCONNECT ([`Event::Closed`] with
    /// [`CloseReason::ServerDisconnect`], [MQTT-4.12.1-2]); no answer within
    /// [`SessionConfig::connect_timeout`] ends the connection ([`CloseReason::ReauthTimeout`]).
    /// `data` also becomes the data of the next CONNECT, as by
    /// [`Session::set_authentication_data`]. An AUTH too large for the broker ends the
    /// connection ([`CloseReason::Encode`]).
    ///
    /// # Errors
    /// [`ReauthError::NoAuthenticationMethod`] when the session has no Authentication Method (the
    /// data is not kept then), [`ReauthError::NotConnected`] before CONNACK or after the
    /// connection closed, [`ReauthError::InProgress`] while an earlier re-authentication waits
    /// for its answer. Nothing is sent in these cases.
    pub fn reauthenticate(&mut self, data: Bytes, now: Instant) -> Result<(), ReauthError> {
        let Some(method) = self.config.authentication_method.clone() else {
            return Err(ReauthError::NoAuthenticationMethod);
        };
        self.auth_data = Some(data.clone());
        if self.state != State::Connected {
            return Err(ReauthError::NotConnected);
        }
        if self.reauth_deadline.is_some() {
            return Err(ReauthError::InProgress);
        }
        let auth = Auth {
            reason_code: ReasonCode::RE_AUTHENTICATE,
            properties: Box::new(AuthProperties {
                authentication_method: Some(method),
                authentication_data: Some(data),
                ..AuthProperties::default()
            }),
        };
        self.send(&Packet::Auth(auth), now);
        if self.state == State::Connected {
            self.reauth_deadline = Some(now + self.config.connect_timeout);
        }
        Ok(())
    }

    /// The transport is up: queue CONNECT. Whatever was queued for an earlier transport is
    /// dropped; a connection that was still up is ended as by [`Session::handle_disconnected`].
    pub fn handle_connected(&mut self, now: Instant) {
        self.handle_disconnected(now);
        self.clear_transmit();
        self.connection = self.connection.wrapping_add(1);
        self.codec = Codec::new(Role::Client, self.config.protocol)
            .with_max_packet_size(self.config.maximum_packet_size.get());
        self.keep_alive = None;
        self.ping_sent = None;
        self.send_window = u16::MAX;
        self.maximum_qos = QoS::AtLeastOnce;
        self.subscribe_id = None;
        self.unsubscribe_id = None;
        self.state = State::Connecting {
            deadline: now + self.config.connect_timeout,
        };
        let connect = Packet::Connect(Box::new(self.connect_packet()));
        self.send(&connect, now);
    }

    /// The transport went away. Reports [`Event::Closed`] with [`CloseReason::TransportClosed`]
    /// unless the session had already closed the connection. Unacknowledged inbound messages are
    /// forgotten (the broker re-sends them, and their tokens no longer ack anything); outbound
    /// in-flight messages are kept for the next connection.
    pub fn handle_disconnected(&mut self, _now: Instant) {
        if matches!(self.state, State::Connecting { .. } | State::Connected) {
            self.events.push_back(Event::Closed {
                reason: CloseReason::TransportClosed,
            });
        }
        self.end_connection();
    }

    /// Bytes read from the transport: decodes every whole packet at the front of `buf` and acts
    /// on it. A partial packet stays in `buf`, with the room it still needs reserved (its size
    /// was checked against the maximum packet size from its fixed header). Ignored when no
    /// connection is up.
    ///
    /// The whole frames are found from their fixed headers first and split off `buf` at once,
    /// without copying. A PUBLISH, the packet that comes by the million, is then decoded as a
    /// borrowed view of that block ([`Codec::decode_publish`], the codec's checks without a
    /// reference count) and checked against the session's state; only a message the session
    /// takes becomes a [`Publish`] of slices (topic, payload, property block). Other packets
    /// are decoded owned ([`Codec::decode_frame`]). A fixed header the codec refuses closes the
    /// connection after the frames before it were handled.
    pub fn handle_bytes(&mut self, buf: &mut BytesMut, now: Instant) {
        if !self.is_up() {
            return;
        }
        let mut whole = 0;
        let mut refused = None;
        loop {
            match self.codec.next_frame(&buf[whole..]) {
                Ok(Some(frame)) => whole += frame.len(),
                Ok(None) => break,
                Err(error) => {
                    refused = Some(error);
                    break;
                }
            }
        }
        if whole > 0 {
            let block = buf.split_to(whole).freeze();
            self.handle_frames(&block, now);
        }
        match refused {
            Some(error) => self.close(CloseReason::Decode(error), Some(error.reason_code()), now),
            None => self.codec.reserve_frame(buf),
        }
    }

    /// Acts on `block`, whole frames only, until they end or the connection does.
    fn handle_frames(&mut self, block: &Bytes, now: Instant) {
        let mut at = 0;
        while at < block.len() && self.is_up() {
            let Ok(Some(frame)) = self.codec.next_frame(&block[at..]) else {
                unreachable!("handle_bytes framed the block")
            };
            let len = frame.len();
            if frame.packet_type == PacketType::Publish && self.state == State::Connected {
                match self.codec.decode_publish(&frame) {
                    Ok(publish) => self.handle_publish_ref(&publish, block, now),
                    Err(error) => {
                        self.close(CloseReason::Decode(error), Some(error.reason_code()), now);
                    }
                }
            } else {
                let header_len = frame.header_len;
                match self
                    .codec
                    .decode_frame(&block.slice(at..at + len), header_len)
                {
                    Ok(packet) => self.handle_packet(packet, now),
                    Err(error) => {
                        self.close(CloseReason::Decode(error), Some(error.reason_code()), now);
                    }
                }
            }
            at += len;
        }
    }

    /// Whether a connection is up or being set up (CONNECT sent).
    fn is_up(&self) -> bool {
        matches!(self.state, State::Connecting { .. } | State::Connected)
    }

    /// Replaces the User Name and Password for the next CONNECT (a rotated secret).
    pub fn set_login(&mut self, username: Option<ByteStr>, password: Option<Bytes>) {
        self.config.username = username;
        self.config.password = password;
    }

    /// The caller stops reading the transport (backpressure) or starts again. While it does
    /// not read, a missing PINGRESP does not end the connection (it cannot arrive); when reading
    /// starts again, the PINGRESP gets a fresh ping timeout.
    pub fn set_reading(&mut self, reading: bool, now: Instant) {
        if reading && !self.reading && self.ping_sent.is_some() {
            self.ping_sent = Some(now);
        }
        self.reading = reading;
    }

    /// Call at or after [`Session::poll_timeout`]: sends PINGREQ when nothing was sent for Keep
    /// Alive, and closes the connection when CONNACK, PINGRESP or the answer to a
    /// re-authentication is overdue.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Connecting { deadline } if now >= deadline => {
                self.close(CloseReason::ConnectTimeout, None, now);
            }
            State::Connected => {
                if let Some(deadline) = self.reauth_deadline
                    && now >= deadline
                {
                    // A failed re-authentication: DISCONNECT with a reason code ([MQTT-4.12.1-2]);
                    // none of the specific ones fits a silent broker.
                    self.close(
                        CloseReason::ReauthTimeout,
                        Some(ReasonCode::UNSPECIFIED_ERROR),
                        now,
                    );
                } else if let Some(sent) = self.ping_sent {
                    if self.reading {
                        if now >= sent + self.config.ping_timeout {
                            self.close(CloseReason::KeepAliveTimeout, None, now);
                        }
                    } else if let Some(keep_alive) = self.keep_alive
                        && now >= self.last_sent + keep_alive
                    {
                        // While the caller does not read, the PINGRESP cannot arrive: no
                        // verdict, but a PINGREQ every Keep Alive so that the broker keeps us.
                        self.send(&Packet::PingReq, now);
                    }
                } else if let Some(keep_alive) = self.keep_alive
                    && now >= self.last_sent + keep_alive
                {
                    self.ping_sent = Some(now);
                    self.send(&Packet::PingReq, now);
                }
            }
            _ => {}
        }
    }

    /// Ends the connection on our side: queues DISCONNECT (Normal disconnection) and reports
    /// [`Event::Closed`] with [`CloseReason::Local`]. In-flight messages are kept.
    pub fn disconnect(&mut self, now: Instant) {
        self.disconnect_with(Disconnect::new(ReasonCode::SUCCESS), now);
    }

    /// Ends the connection and, in 5.0, the session with it: DISCONNECT with Session Expiry
    /// Interval 0, so that the broker drops the session and its subscriptions (a removed
    /// dataflow; a shared subscription then stops sending this session its share). In 3.1.1 it
    /// is [`Session::disconnect`].
    pub fn disconnect_ending_session(&mut self, now: Instant) {
        let mut d = Disconnect::new(ReasonCode::SUCCESS);
        if self.config.protocol == ProtocolVersion::V5 {
            d.properties.session_expiry_interval_secs = Some(0);
        }
        self.disconnect_with(d, now);
    }

    fn disconnect_with(&mut self, disconnect: Disconnect, now: Instant) {
        if matches!(self.state, State::Connecting { .. } | State::Connected) {
            self.send(&Packet::Disconnect(disconnect), now);
            self.events.push_back(Event::Closed {
                reason: CloseReason::Local,
            });
            self.state = State::Closed;
            self.reauth_deadline = None;
        }
    }

    /// Appends to `out` everything queued for the transport since the last call, copied into one
    /// buffer (for a transport that transforms the bytes anyway, such as TLS). Returns whether
    /// anything was appended.
    pub fn poll_transmit(&mut self, out: &mut BytesMut) -> bool {
        if self.tx.is_empty() && self.tx_chunks.is_empty() {
            return false;
        }
        for chunk in self.tx_chunks.drain(..) {
            out.extend_from_slice(&chunk);
        }
        self.tx_chunks_len = 0;
        if out.is_empty() {
            std::mem::swap(out, &mut self.tx);
        } else {
            out.extend_from_slice(&self.tx);
            self.tx.clear();
        }
        true
    }

    /// Appends to `out` everything queued for the transport since the last call, as pieces to
    /// write in order with one vectored write: large payloads are the received `Bytes`, not
    /// copies. Returns whether anything was appended.
    pub fn poll_transmit_vectored(&mut self, out: &mut Vec<Bytes>) -> bool {
        if self.tx.is_empty() && self.tx_chunks.is_empty() {
            return false;
        }
        out.extend(self.tx_chunks.drain(..));
        self.tx_chunks_len = 0;
        if !self.tx.is_empty() {
            out.push(self.tx.split().freeze());
        }
        true
    }

    /// Bytes queued for the transport and not yet taken by a `poll_transmit` call.
    pub fn transmit_len(&self) -> usize {
        self.tx.len() + self.tx_chunks_len
    }

    /// The next event, in the order they happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Connecting { deadline } => Some(deadline),
            State::Connected => {
                let keep_alive = match (self.ping_sent, self.keep_alive) {
                    (Some(sent), _) if self.reading => Some(sent + self.config.ping_timeout),
                    (Some(_), Some(keep_alive)) => Some(self.last_sent + keep_alive),
                    (Some(_), None) => None,
                    (None, Some(keep_alive)) => Some(self.last_sent + keep_alive),
                    (None, None) => None,
                };
                match (keep_alive, self.reauth_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            State::Idle | State::Closed => None,
        }
    }

    /// The destination has the message: its PUBACK goes out as soon as every message received
    /// before it on this connection is acked too ([MQTT-4.6.0-2]). Returns `false` (and does
    /// nothing) for a token of an earlier connection, or one already acked: the broker re-sends
    /// those messages on the next connection.
    pub fn ack(&mut self, token: AckToken, now: Instant) -> bool {
        if token.connection != self.connection || self.state != State::Connected {
            return false;
        }
        let Some(entry) = self
            .inbound
            .iter_mut()
            .find(|m| m.packet_id == token.packet_id && !m.acked)
        else {
            return false;
        };
        entry.acked = true;
        while let Some(front) = self.inbound.front()
            && front.acked
        {
            let packet_id = front.packet_id;
            self.inbound.pop_front();
            self.set_inbound_id(packet_id, false);
            self.send(&Packet::PubAck(PubAck::new(packet_id)), now);
        }
        true
    }

    /// Sends a message. At QoS 1 it gets a packet id, counts against the broker's Receive Maximum
    /// until its PUBACK ([`Event::Acked`]), and is re-sent after a reconnect. The message's `dup`
    /// and `packet_id` are set here.
    ///
    /// # Errors
    /// [`PublishError::Full`] when the in-flight window is full, [`PublishError::NotConnected`]
    /// before CONNACK or after the connection closed, [`PublishError::QosNotSupported`] for QoS 2
    /// or above the broker's Maximum QoS, [`PublishError::Encode`] when the packet cannot be
    /// written (nothing is queued then).
    pub fn publish(
        &mut self,
        mut publish: Publish,
        now: Instant,
    ) -> Result<Option<PacketId>, PublishError> {
        if self.state != State::Connected {
            return Err(PublishError::NotConnected);
        }
        if publish.qos == QoS::ExactlyOnce || publish.qos > self.maximum_qos {
            return Err(PublishError::QosNotSupported(publish.qos));
        }
        publish.dup = false;
        if publish.qos == QoS::AtMostOnce {
            publish.packet_id = None;
            self.encode_publish(&publish, now)?;
            return Ok(None);
        }
        if self.in_flight.len() >= usize::from(self.send_window) {
            return Err(PublishError::Full);
        }
        let packet_id = self.allocate_packet_id().ok_or(PublishError::Full)?;
        publish.packet_id = Some(packet_id);
        self.encode_publish(&publish, now)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.insert(
            packet_id.get(),
            InFlight {
                seq,
                sent: true,
                publish,
            },
        );
        Ok(Some(packet_id))
    }

    fn encode_publish(&mut self, publish: &Publish, now: Instant) -> Result<(), PublishError> {
        if publish.payload.len() >= VECTORED_MIN_PAYLOAD {
            self.codec
                .encode_publish_header(publish, &mut self.tx)
                .map_err(PublishError::Encode)?;
            let header = self.tx.split().freeze();
            self.tx_chunks_len += header.len() + publish.payload.len();
            self.tx_chunks.push_back(header);
            self.tx_chunks.push_back(publish.payload.clone());
        } else {
            // A Publish is small (slices), so wrapping it in a Packet costs reference counts
            // only.
            self.codec
                .encode(&Packet::Publish(publish.clone()), &mut self.tx)
                .map_err(PublishError::Encode)?;
        }
        self.last_sent = now;
        Ok(())
    }

    fn clear_transmit(&mut self) {
        self.tx.clear();
        self.tx_chunks.clear();
        self.tx_chunks_len = 0;
    }

    fn connect_packet(&self) -> Connect {
        let mut c = Connect::new(
            self.config.protocol,
            self.client_id.clone(),
            self.config.keep_alive_secs,
        );
        c.clean_start = self.config.clean_start;
        c.username = self.config.username.clone();
        c.password = self.config.password.clone();
        if self.config.protocol == ProtocolVersion::V5 {
            if self.config.session_expiry_secs > 0 {
                c.properties.session_expiry_interval_secs = Some(self.config.session_expiry_secs);
            }
            if self.config.receive_maximum.get() != u16::MAX {
                c.properties.receive_maximum = Some(self.config.receive_maximum);
            }
            c.properties.maximum_packet_size = Some(self.config.maximum_packet_size);
            if let Some(method) = &self.config.authentication_method {
                c.properties.authentication_method = Some(method.clone());
                c.properties.authentication_data = self.auth_data.clone();
            }
        }
        c
    }

    /// Encodes a control packet of ours; when it cannot be, the connection ends.
    fn send(&mut self, packet: &Packet, now: Instant) {
        match self.codec.encode(packet, &mut self.tx) {
            Ok(()) => self.last_sent = now,
            Err(e) => self.close(CloseReason::Encode(e), None, now),
        }
    }

    /// Ends the connection on our side: a 5.0 DISCONNECT with `reason_code` when given, then
    /// [`Event::Closed`].
    fn close(&mut self, reason: CloseReason, reason_code: Option<ReasonCode>, now: Instant) {
        if !matches!(self.state, State::Connecting { .. } | State::Connected) {
            return;
        }
        self.state = State::Closed;
        self.reauth_deadline = None;
        if let Some(code) = reason_code
            && self.config.protocol == ProtocolVersion::V5
        {
            // Best effort: a DISCONNECT that cannot be encoded is not sent.
            if self
                .codec
                .encode(&Packet::Disconnect(Disconnect::new(code)), &mut self.tx)
                .is_ok()
            {
                self.last_sent = now;
            }
        }
        self.events.push_back(Event::Closed { reason });
    }

    fn protocol_error(&mut self, violation: SpecViolation, now: Instant) {
        self.close(
            CloseReason::Protocol(violation),
            Some(violation.reason_code()),
            now,
        );
    }

    /// Connection state that does not outlive the connection.
    fn end_connection(&mut self) {
        self.state = State::Idle;
        self.clear_transmit();
        self.inbound.clear();
        self.inbound_ids.fill(0);
        self.ping_sent = None;
        self.subscribe_id = None;
        self.unsubscribe_id = None;
        self.reauth_deadline = None;
        for m in self.in_flight.values_mut() {
            m.sent = false;
        }
        self.unsent = self.in_flight.len();
        self.resend.clear();
    }

    fn handle_packet(&mut self, packet: Packet, now: Instant) {
        if let State::Connecting { .. } = self.state {
            match packet {
                Packet::ConnAck(connack) => self.handle_connack(connack, now),
                Packet::Disconnect(d) => self.handle_server_disconnect(d, now),
                // Enhanced authentication may put AUTH before CONNACK (§4.12).
                Packet::Auth(auth) => self.handle_auth(&auth, now),
                _ => self.protocol_error(SpecViolation::FirstPacketNotConnAck, now),
            }
            return;
        }
        match packet {
            Packet::Publish(publish) => self.handle_publish(publish, now),
            Packet::PubAck(ack) => self.handle_puback(ack, now),
            Packet::SubAck(ack) => self.handle_suback(ack, now),
            Packet::PingResp => self.ping_sent = None,
            Packet::Disconnect(d) => self.handle_server_disconnect(d, now),
            Packet::ConnAck(_) => self.protocol_error(SpecViolation::SecondConnAck, now),
            Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => {
                self.protocol_error(SpecViolation::Qos2Acknowledgement, now)
            }
            Packet::UnsubAck(ack) if self.unsubscribe_id == Some(ack.packet_id) => {
                // Whatever the reason codes say (0x11 No subscription existed is fine), the old
                // filters are gone or never were.
                self.unsubscribe_id = None;
                self.unsubscribed = true;
            }
            Packet::UnsubAck(_) => self.protocol_error(SpecViolation::UnsubAckUnknownId, now),
            Packet::Auth(auth) => self.handle_auth(&auth, now),
            // The codec refuses these from a server; kept so that the match stays exhaustive.
            Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq => {
                self.protocol_error(SpecViolation::ClientPacket, now);
            }
        }
    }

    fn handle_server_disconnect(&mut self, d: Disconnect, now: Instant) {
        // No DISCONNECT in reply ([MQTT-3.14.4-2]: the server closes the connection).
        self.close(
            CloseReason::ServerDisconnect {
                reason_code: d.reason_code,
            },
            None,
            now,
        );
    }

    fn handle_connack(&mut self, connack: ConnAck, now: Instant) {
        if connack.reason_code != ReasonCode::SUCCESS {
            self.close(
                CloseReason::Refused {
                    reason_code: connack.reason_code,
                },
                None,
                now,
            );
            return;
        }
        if connack.session_present && self.config.clean_start {
            self.protocol_error(SpecViolation::SessionPresentWithCleanStart, now);
            return;
        }
        match (
            &self.config.authentication_method,
            &connack.properties.authentication_method,
        ) {
            (Some(ours), theirs) if theirs.as_ref() != Some(ours) => {
                self.protocol_error(SpecViolation::ConnAckAuthenticationMethod, now);
                return;
            }
            (None, Some(_)) => {
                self.protocol_error(SpecViolation::ConnAckUnaskedAuthentication, now);
                return;
            }
            _ => {}
        }
        let p = &connack.properties;
        self.keep_alive = match p
            .server_keep_alive_secs
            .unwrap_or(self.config.keep_alive_secs)
        {
            0 => None,
            secs => Some(Duration::from_secs(u64::from(secs))),
        };
        self.send_window = p
            .receive_maximum
            .map_or(u16::MAX, NonZeroU16::get)
            .min(self.config.max_in_flight.get());
        self.maximum_qos = match p.maximum_qos {
            Some(QoS::AtMostOnce) => QoS::AtMostOnce,
            _ => QoS::AtLeastOnce,
        };
        if let Some(max) = p.maximum_packet_size {
            self.codec.set_peer_max_packet_size(max.get());
        }
        if let Some(id) = &p.assigned_client_identifier {
            // Reconnect with it, so that the session is found again ([MQTT-3.2.2-16]).
            self.client_id = id.clone();
        }
        self.state = State::Connected;
        self.events.push_back(Event::Connected {
            session_present: connack.session_present,
        });
        if connack.session_present && !self.unsubscribed {
            self.send_unsubscribe(now);
        }
        // 5.0 subscribes on every connection, Session Present or not: mosquitto 2.0.11 restores
        // a persistent session after a restart without its shared subscriptions and still says
        // Session Present, which would leave the dataflow silently idle. Subscribing again is
        // harmless there (Retain Handling 1: no retained messages for an existing
        // subscription). 3.1.1 has no Retain Handling, so it subscribes only when the broker
        // has no session or the configuration's subscriptions were never confirmed.
        if !connack.session_present
            || !self.subscribed
            || self.config.protocol == ProtocolVersion::V5
        {
            self.send_subscribe(now);
        }
        // In-flight messages go out again: with DUP when the broker kept the session
        // ([MQTT-4.4.0-1]); without, as new messages, when it did not (the broker has no record of
        // them, and at least once means they must still be delivered).
        for m in self.in_flight.values_mut() {
            m.publish.dup = connack.session_present;
        }
        let mut order: Vec<(u64, u16)> = self.in_flight.iter().map(|(k, m)| (m.seq, *k)).collect();
        order.sort_unstable();
        self.resend = order.into_iter().map(|(_, k)| k).collect();
        // In-flight messages are QoS 1: a broker that now takes QoS 0 only would refuse them
        // (0x9B) on every connection; they wait (the caller sees it as not ready).
        if self.maximum_qos >= QoS::AtLeastOnce {
            self.send_unsent(now);
        }
    }

    /// AUTH from the broker, before or after CONNACK. See the module documentation for the rules.
    fn handle_auth(&mut self, auth: &Auth, now: Instant) {
        let Some(ours) = &self.config.authentication_method else {
            self.protocol_error(SpecViolation::UnaskedAuth, now);
            return;
        };
        if auth.properties.authentication_method.as_ref() != Some(ours) {
            self.protocol_error(SpecViolation::AuthMethodMismatch, now);
            return;
        }
        match auth.reason_code {
            ReasonCode::SUCCESS if self.reauth_deadline.is_some() => {
                self.reauth_deadline = None;
                self.events.push_back(Event::Reauthenticated);
            }
            ReasonCode::SUCCESS => self.protocol_error(SpecViolation::UnexpectedAuthSuccess, now),
            ReasonCode::CONTINUE_AUTHENTICATION => {
                self.protocol_error(SpecViolation::AuthChallenge, now)
            }
            _ => self.protocol_error(SpecViolation::ServerReauthenticate, now),
        }
    }

    fn send_unsubscribe(&mut self, now: Instant) {
        let filters: Vec<ByteStr> = self
            .config
            .unsubscribe_first
            .iter()
            .filter(|f| !self.config.subscriptions.iter().any(|s| &s.filter == *f))
            .cloned()
            .collect();
        if filters.is_empty() {
            self.unsubscribed = true;
            return;
        }
        let Some(packet_id) = self.allocate_packet_id() else {
            return;
        };
        self.unsubscribe_id = Some(packet_id);
        let unsubscribe = Unsubscribe {
            packet_id,
            properties: Default::default(),
            filters,
        };
        self.send(&Packet::Unsubscribe(unsubscribe), now);
    }

    fn send_subscribe(&mut self, now: Instant) {
        if self.config.subscriptions.is_empty() {
            return;
        }
        let Some(packet_id) = self.allocate_packet_id() else {
            self.close(
                CloseReason::PacketIdsExhausted,
                Some(ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR),
                now,
            );
            return;
        };
        self.subscribe_id = Some(packet_id);
        let subscribe = Subscribe {
            packet_id,
            properties: Default::default(),
            filters: self.config.subscriptions.clone(),
        };
        self.send(&Packet::Subscribe(subscribe), now);
    }

    /// Sends in-flight messages not sent on this connection, oldest first, while the broker's
    /// Receive Maximum allows.
    fn send_unsent(&mut self, now: Instant) {
        while self.unsent > 0 && self.in_flight.len() - self.unsent < usize::from(self.send_window)
        {
            let Some(key) = self.resend.pop_front() else {
                break;
            };
            let Some(m) = self.in_flight.get_mut(&key) else {
                continue; // acknowledged before it was re-sent
            };
            if m.sent {
                continue; // the id was acknowledged, then reused by a new message
            }
            m.sent = true;
            self.unsent -= 1;
            let packet = Packet::Publish(m.publish.clone());
            self.send(&packet, now);
            if self.state != State::Connected {
                break;
            }
        }
    }

    fn allocate_packet_id(&mut self) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            let candidate = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            let id = NonZeroU16::new(candidate)?;
            if !self.in_flight.contains_key(&candidate)
                && self.subscribe_id != Some(id)
                && self.unsubscribe_id != Some(id)
            {
                return Some(id);
            }
        }
        None
    }

    /// A PUBLISH decoded in place from `block`: the message, made of slices of `block`, when
    /// the session takes it.
    fn handle_publish_ref(&mut self, publish: &PublishRef<'_>, block: &Bytes, now: Instant) {
        let has_alias = publish.properties.topic_alias().is_some();
        if let Ok(ack) = self.admit_publish(publish.qos, publish.packet_id, has_alias, now) {
            self.events.push_back(Event::Message {
                publish: publish.to_owned_in(block),
                ack,
            });
        }
    }

    fn handle_publish(&mut self, publish: Publish, now: Instant) {
        let has_alias = publish.properties.topic_alias().is_some();
        if let Ok(ack) = self.admit_publish(publish.qos, publish.packet_id, has_alias, now) {
            self.events.push_back(Event::Message { publish, ack });
        }
    }

    /// The session's checks on an inbound PUBLISH: `Ok` with its token (QoS 1) when it is taken
    /// (and recorded as unacknowledged), `Err` when it broke a rule (the connection is closed).
    fn admit_publish(
        &mut self,
        qos: QoS,
        packet_id: Option<PacketId>,
        has_alias: bool,
        now: Instant,
    ) -> Result<Option<AckToken>, SpecViolation> {
        let refuse = |s: &mut Self, violation| {
            s.protocol_error(violation, now);
            Err(violation)
        };
        if has_alias {
            return refuse(self, SpecViolation::TopicAliasAboveMaximum);
        }
        match (qos, packet_id) {
            (QoS::AtMostOnce, _) => Ok(None),
            (QoS::AtLeastOnce, Some(packet_id)) => {
                if self.inbound_id_in_use(packet_id) {
                    return refuse(self, SpecViolation::PacketIdInUse);
                }
                let receive_maximum = usize::from(self.config.receive_maximum.get());
                if self.config.protocol == ProtocolVersion::V5
                    && self.inbound.len() >= receive_maximum
                {
                    self.receive_maximum_overruns += 1;
                }
                if self.config.protocol == ProtocolVersion::V5
                    && self.config.enforce_receive_maximum
                    && self.inbound.len() >= receive_maximum
                {
                    return refuse(self, SpecViolation::ReceiveMaximumExceeded);
                }
                self.inbound.push_back(Inbound {
                    packet_id,
                    acked: false,
                });
                self.set_inbound_id(packet_id, true);
                Ok(Some(AckToken {
                    connection: self.connection,
                    packet_id,
                }))
            }
            _ => refuse(self, SpecViolation::QosAboveSubscription),
        }
    }

    fn inbound_id_in_use(&self, id: PacketId) -> bool {
        let i = usize::from(id.get());
        self.inbound_ids[i / 64] & (1 << (i % 64)) != 0
    }

    fn set_inbound_id(&mut self, id: PacketId, in_use: bool) {
        let i = usize::from(id.get());
        if in_use {
            self.inbound_ids[i / 64] |= 1 << (i % 64);
        } else {
            self.inbound_ids[i / 64] &= !(1 << (i % 64));
        }
    }

    fn handle_puback(&mut self, ack: PubAck, now: Instant) {
        let Some(m) = self.in_flight.remove(&ack.packet_id.get()) else {
            self.protocol_error(SpecViolation::PubAckUnknownId, now);
            return;
        };
        if !m.sent {
            // Sent on an earlier connection and not re-sent yet: done all the same.
            self.unsent -= 1;
        }
        if ack.reason_code.0 >= 0x80 {
            self.events.push_back(Event::Refused {
                packet_id: ack.packet_id,
                reason_code: ack.reason_code,
                publish: Box::new(m.publish),
            });
        } else {
            self.events.push_back(Event::Acked {
                packet_id: ack.packet_id,
                reason_code: ack.reason_code,
            });
        }
        self.send_unsent(now);
    }

    fn handle_suback(&mut self, ack: SubAck, now: Instant) {
        if self.subscribe_id != Some(ack.packet_id) {
            self.protocol_error(SpecViolation::SubAckUnknownId, now);
            return;
        }
        if ack.reason_codes.len() != self.config.subscriptions.len() {
            self.protocol_error(SpecViolation::SubAckCodeCount, now);
            return;
        }
        self.subscribe_id = None;
        self.subscribed = true;
        self.events.push_back(Event::Subscribed {
            reason_codes: ack.reason_codes,
        });
    }
}

/// A session that a broker codec has connected (CONNECT read, CONNACK without Session Present
/// given), and that codec: for the tests of what runs on top of a session.
#[cfg(test)]
pub(crate) fn connected_to_test_broker(config: SessionConfig, now: Instant) -> (Session, Codec) {
    let protocol = config.protocol;
    let mut session = Session::new(config, now).expect("valid configuration");
    let mut broker = Codec::new(Role::Server, protocol);
    session.handle_connected(now);
    let mut out = BytesMut::new();
    session.poll_transmit(&mut out);
    assert!(matches!(
        broker.decode(&mut out),
        Ok(Some(Packet::Connect(_)))
    ));
    let mut buf = BytesMut::new();
    broker
        .encode(&Packet::ConnAck(ConnAck::new(false)), &mut buf)
        .expect("CONNACK encodes");
    session.handle_bytes(&mut buf, now);
    (session, broker)
}

#[cfg(test)]
mod tests {
    use sluice_codec::{ConnAckProperties, SubscriptionOptions, UnsubAck};

    use super::*;

    const V311: ProtocolVersion = ProtocolVersion::V311;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn id(n: u16) -> PacketId {
        PacketId::new(n).expect("non-zero")
    }

    fn config(protocol: ProtocolVersion) -> SessionConfig {
        let mut c = SessionConfig::new(protocol, ByteStr::from_static("sluice-df-0"));
        c.keep_alive_secs = 30;
        c.receive_maximum = NonZeroU16::new(3).expect("non-zero");
        c.username = Some(ByteStr::from_static("user"));
        c.password = Some(Bytes::from_static(b"secret"));
        c.subscriptions = vec![
            Subscription {
                filter: ByteStr::from_static("$share/df/sensors/#"),
                options: SubscriptionOptions::qos(QoS::AtLeastOnce),
            },
            Subscription {
                filter: ByteStr::from_static("alerts/+"),
                options: SubscriptionOptions::qos(QoS::AtMostOnce),
            },
        ];
        c
    }

    /// The broker's end of the link: a server codec, and what the session wrote.
    struct Broker {
        codec: Codec,
        version: ProtocolVersion,
    }

    impl Broker {
        fn new(version: ProtocolVersion) -> Self {
            Self {
                codec: Codec::new(Role::Server, version),
                version,
            }
        }

        /// Everything the session has written, decoded.
        fn recv(&mut self, s: &mut Session) -> Vec<Packet> {
            let mut buf = BytesMut::new();
            s.poll_transmit(&mut buf);
            let mut out = Vec::new();
            while let Some(p) = self
                .codec
                .decode(&mut buf)
                .expect("session wrote a valid frame")
            {
                out.push(p);
            }
            assert!(buf.is_empty(), "a partial frame was written");
            out
        }

        fn send(&mut self, s: &mut Session, packet: Packet, now: Instant) {
            let mut buf = BytesMut::new();
            self.codec.encode(&packet, &mut buf).expect("encode");
            s.handle_bytes(&mut buf, now);
            assert!(buf.is_empty());
        }

        fn connack(&mut self, s: &mut Session, session_present: bool, now: Instant) {
            self.send(s, Packet::ConnAck(ConnAck::new(session_present)), now);
        }

        fn publish_qos1(&mut self, s: &mut Session, packet_id: u16, now: Instant) {
            let mut p = Publish::new(
                ByteStr::from_static("sensors/t"),
                Bytes::from(packet_id.to_string()),
            );
            p.qos = QoS::AtLeastOnce;
            p.packet_id = Some(id(packet_id));
            self.send(s, Packet::Publish(p), now);
        }

        fn suback(&mut self, s: &mut Session, packet_id: PacketId, now: Instant) {
            let codes = match self.version {
                V5 => vec![ReasonCode::GRANTED_QOS_1, ReasonCode::SUCCESS],
                V311 => vec![ReasonCode(1), ReasonCode(0)],
            };
            let ack = SubAck {
                packet_id,
                properties: Default::default(),
                reason_codes: codes,
            };
            self.send(s, Packet::SubAck(ack), now);
        }
    }

    fn events(s: &mut Session) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    /// A session connected (CONNACK without Session Present) and subscribed.
    fn connected(protocol: ProtocolVersion, now: Instant) -> (Session, Broker) {
        let mut s = Session::new(config(protocol), now).expect("valid config");
        let mut b = Broker::new(protocol);
        s.handle_connected(now);
        b.recv(&mut s);
        b.connack(&mut s, false, now);
        let Packet::Subscribe(sub) = &b.recv(&mut s)[0] else {
            panic!("no SUBSCRIBE")
        };
        b.suback(&mut s, sub.packet_id, now);
        events(&mut s);
        (s, b)
    }

    fn handshake(protocol: ProtocolVersion) {
        let now = Instant::now();
        let mut s = Session::new(config(protocol), now).expect("valid config");
        let mut b = Broker::new(protocol);
        assert_eq!(s.poll_timeout(), None);
        assert!(
            b.recv(&mut s).is_empty(),
            "nothing before the transport is up"
        );

        s.handle_connected(now);
        let sent = b.recv(&mut s);
        let [Packet::Connect(c)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(c.protocol, protocol);
        assert_eq!(c.client_id, "sluice-df-0");
        assert!(!c.clean_start);
        assert_eq!(c.keep_alive_secs, 30);
        assert_eq!(c.username.as_deref(), Some("user"));
        assert_eq!(c.password.as_deref(), Some(&b"secret"[..]));
        if protocol == V5 {
            assert_eq!(c.properties.session_expiry_interval_secs, Some(3600));
            assert_eq!(c.properties.receive_maximum, NonZeroU16::new(3));
            assert_eq!(
                c.properties.maximum_packet_size,
                Some(DEFAULT_MAXIMUM_PACKET_SIZE)
            );
        }
        assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(30)));
        assert!(!s.is_connected());

        let t1 = now + Duration::from_millis(5);
        b.connack(&mut s, false, t1);
        assert_eq!(
            events(&mut s),
            [Event::Connected {
                session_present: false
            }]
        );
        assert!(s.is_connected());
        let sent = b.recv(&mut s);
        let [Packet::Subscribe(sub)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(sub.filters, config(protocol).subscriptions);
        b.suback(&mut s, sub.packet_id, t1);
        let codes = match protocol {
            V5 => vec![ReasonCode::GRANTED_QOS_1, ReasonCode::SUCCESS],
            V311 => vec![ReasonCode(1), ReasonCode(0)],
        };
        assert_eq!(
            events(&mut s),
            [Event::Subscribed {
                reason_codes: codes
            }]
        );
        // Keep alive runs from the last packet sent (the SUBSCRIBE).
        assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(30)));
    }

    #[test]
    fn connect_and_subscribe_v311() {
        handshake(V311);
    }

    #[test]
    fn connect_and_subscribe_v5() {
        handshake(V5);
    }

    #[test]
    fn large_payloads_go_out_by_reference() {
        let now = Instant::now();
        let (mut s, mut b) = connected(V5, now);
        let big = Bytes::from(vec![b'x'; VECTORED_MIN_PAYLOAD + 10]);
        let small = Bytes::from_static(b"small");
        for payload in [big.clone(), small.clone(), big.clone()] {
            let mut p = Publish::new(ByteStr::from_static("out/t"), payload);
            p.qos = QoS::AtLeastOnce;
            s.publish(p, now).expect("window open");
        }
        let queued = s.transmit_len();
        let mut pieces = Vec::new();
        assert!(s.poll_transmit_vectored(&mut pieces));
        assert_eq!(pieces.iter().map(Bytes::len).sum::<usize>(), queued);
        assert_eq!(s.transmit_len(), 0);
        // The large payloads are the caller's buffers, not copies.
        let by_ref = pieces.iter().filter(|p| p.as_ptr() == big.as_ptr()).count();
        assert_eq!(by_ref, 2);
        // And the pieces are the packets, in order.
        let mut buf = BytesMut::new();
        for piece in &pieces {
            buf.extend_from_slice(piece);
        }
        let mut payloads = Vec::new();
        while let Some(p) = b.codec.decode(&mut buf).expect("valid frames") {
            let Packet::Publish(p) = p else {
                panic!("{p:?}")
            };
            payloads.push(p.payload);
        }
        assert_eq!(payloads, [big.clone(), small, big]);
        assert!(!s.poll_transmit_vectored(&mut pieces));
    }

    #[test]
    fn a_refusing_puback_gives_the_message_back() {
        let now = Instant::now();
        let (mut s, mut b) = connected(V5, now);
        let id = s.publish(qos1("out/q"), now).expect("window").expect("id");
        b.recv(&mut s);
        let mut ack = PubAck::new(id);
        ack.reason_code = ReasonCode(0x97);
        b.send(&mut s, Packet::PubAck(ack), now);
        let ev = events(&mut s);
        let [
            Event::Refused {
                packet_id,
                reason_code,
                publish,
            },
        ] = &ev[..]
        else {
            panic!("{ev:?}")
        };
        assert_eq!((*packet_id, reason_code.0), (id, 0x97));
        assert_eq!(publish.topic, "out/q");
        assert_eq!(s.in_flight(), 0, "the id is free");
    }

    #[test]
    fn ending_the_session_sets_expiry_zero() {
        let now = Instant::now();
        let (mut s, mut b) = connected(V5, now);
        s.disconnect_ending_session(now);
        let sent = b.recv(&mut s);
        let [Packet::Disconnect(d)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(d.properties.session_expiry_interval_secs, Some(0));
        let (mut s, mut b) = connected(V311, now);
        s.disconnect_ending_session(now);
        assert!(matches!(&b.recv(&mut s)[..], [Packet::Disconnect(_)]));
    }

    #[test]
    fn in_flight_waits_when_the_broker_now_takes_qos0_only() {
        let now = Instant::now();
        let (mut s, mut b) = connected(V5, now);
        s.publish(qos1("out/1"), now).expect("window").expect("id");
        b.recv(&mut s);
        let mut connack = ConnAck::new(true);
        connack.properties.maximum_qos = Some(QoS::AtMostOnce);
        let sent = reconnect(&mut s, &mut b, connack, now);
        assert!(sent.is_empty(), "{sent:?}");
        assert_eq!(s.in_flight(), 1, "kept for a later connection");
    }

    #[test]
    fn max_in_flight_caps_the_window() {
        let now = Instant::now();
        let mut c = config(V5);
        c.max_in_flight = NonZeroU16::new(2).expect("non-zero");
        let mut s = Session::new(c, now).expect("valid");
        let mut b = Broker::new(V5);
        s.handle_connected(now);
        b.recv(&mut s);
        b.connack(&mut s, false, now);
        events(&mut s);
        let msg = || {
            let mut p = Publish::new(ByteStr::from_static("o"), Bytes::from_static(b"1"));
            p.qos = QoS::AtLeastOnce;
            p
        };
        assert!(s.publish(msg(), now).is_ok());
        assert!(s.publish(msg(), now).is_ok());
        assert_eq!(s.publish(msg(), now), Err(PublishError::Full));
    }

    #[test]
    fn session_present_skips_resubscribe() {
        for protocol in [V311, V5] {
            let now = Instant::now();
            let (mut s, mut b) = connected(protocol, now);
            s.handle_disconnected(now);
            assert_eq!(
                events(&mut s),
                [Event::Closed {
                    reason: CloseReason::TransportClosed
                }]
            );
            s.handle_connected(now);
            assert!(matches!(b.recv(&mut s)[..], [Packet::Connect(_)]));
            b.connack(&mut s, true, now);
            assert_eq!(
                events(&mut s),
                [Event::Connected {
                    session_present: true
                }]
            );
            let sent = b.recv(&mut s);
            match protocol {
                V311 => assert!(sent.is_empty(), "no SUBSCRIBE with a session: {sent:?}"),
                // 5.0 subscribes again (see handle_connack: mosquitto loses shared
                // subscriptions across a restart and still reports Session Present).
                V5 => assert!(matches!(&sent[..], [Packet::Subscribe(_)]), "{sent:?}"),
            }
        }
    }

    #[test]
    fn first_connection_subscribes_even_with_a_session() {
        // A restarted configuration reuses its client id: the broker's session may hold the old
        // configuration's filters, so the first connection subscribes anyway and removes the
        // filters the new configuration dropped.
        let now = Instant::now();
        let mut c = config(V5);
        c.unsubscribe_first = vec![
            ByteStr::from_static("old/#"),
            ByteStr::from_static("alerts/+"), // still subscribed: not removed
        ];
        let mut s = Session::new(c, now).expect("valid");
        let mut b = Broker::new(V5);
        s.handle_connected(now);
        b.recv(&mut s);
        b.connack(&mut s, true, now);
        let sent = b.recv(&mut s);
        let [Packet::Unsubscribe(unsub), Packet::Subscribe(sub)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(unsub.filters, [ByteStr::from_static("old/#")]);
        let unsuback = UnsubAck {
            packet_id: unsub.packet_id,
            properties: Default::default(),
            reason_codes: vec![ReasonCode::SUCCESS],
        };
        b.send(&mut s, Packet::UnsubAck(unsuback), now);
        b.suback(&mut s, sub.packet_id, now);
        assert!(s.is_connected());
        // Once confirmed, a 5.0 reconnect with a session present subscribes again (and
        // unsubscribes nothing).
        s.handle_disconnected(now);
        s.handle_connected(now);
        b.recv(&mut s);
        b.connack(&mut s, true, now);
        assert!(matches!(&b.recv(&mut s)[..], [Packet::Subscribe(_)]));
    }

    #[test]
    fn connack_refusal_closes() {
        for (protocol, code) in [(V311, ReasonCode(5)), (V5, ReasonCode::NOT_AUTHORIZED)] {
            let now = Instant::now();
            let mut s = Session::new(config(protocol), now).expect("valid config");
            let mut b = Broker::new(protocol);
            s.handle_connected(now);
            b.recv(&mut s);
            let mut connack = ConnAck::new(false);
            connack.reason_code = code;
            b.send(&mut s, Packet::ConnAck(connack), now);
            assert_eq!(
                events(&mut s),
                [Event::Closed {
                    reason: CloseReason::Refused { reason_code: code }
                }]
            );
            assert!(b.recv(&mut s).is_empty());
            assert_eq!(s.poll_timeout(), None);
            assert_eq!(
                s.publish(Publish::new("a".into(), Bytes::new()), now),
                Err(PublishError::NotConnected)
            );
        }
    }

    #[test]
    fn connect_timeout() {
        let now = Instant::now();
        let mut s = Session::new(config(V5), now).expect("valid config");
        s.handle_connected(now);
        s.handle_timeout(now + Duration::from_secs(29));
        assert!(events(&mut s).is_empty());
        s.handle_timeout(now + Duration::from_secs(30));
        assert_eq!(
            events(&mut s),
            [Event::Closed {
                reason: CloseReason::ConnectTimeout
            }]
        );
    }

    #[test]
    fn inbound_acks_go_out_in_receive_order() {
        for protocol in [V311, V5] {
            let now = Instant::now();
            let (mut s, mut b) = connected(protocol, now);
            for packet_id in [7, 3, 9] {
                b.publish_qos1(&mut s, packet_id, now);
            }
            let tokens: Vec<AckToken> = events(&mut s)
                .into_iter()
                .map(|e| match e {
                    Event::Message {
                        publish,
                        ack: Some(token),
                    } => {
                        assert_eq!(publish.packet_id, Some(token.packet_id()));
                        token
                    }
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(s.inbound_unacked(), 3);
            // Nothing is acknowledged by the session itself.
            assert!(b.recv(&mut s).is_empty());

            // The destination confirms the last one first: it waits.
            assert!(s.ack(tokens[2], now));
            assert!(b.recv(&mut s).is_empty());
            // Then the second: still waiting for the first.
            assert!(s.ack(tokens[1], now));
            assert!(b.recv(&mut s).is_empty());
            assert!(!s.ack(tokens[1], now), "acked twice");
            // The first releases all three, in receive order.
            assert!(s.ack(tokens[0], now));
            let acked: Vec<u16> = b
                .recv(&mut s)
                .into_iter()
                .map(|p| match p {
                    Packet::PubAck(a) => a.packet_id.get(),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(acked, [7, 3, 9]);
            assert_eq!(s.inbound_unacked(), 0);

            // QoS 0 carries no token and is never acknowledged.
            b.send(
                &mut s,
                Packet::Publish(Publish::new("alerts/x".into(), Bytes::from_static(b"!"))),
                now,
            );
            assert!(matches!(
                events(&mut s)[..],
                [Event::Message { ack: None, .. }]
            ));
        }
    }

    #[test]
    fn ack_from_an_earlier_connection_is_refused() {
        let now = Instant::now();
        let (mut s, mut b) = connected(V5, now);
        b.publish_qos1(&mut s, 1, now);
        let Some(Event::Message { ack: Some(old), .. }) = s.poll_event() else {
            panic!()
        };
        s.handle_disconnected(now);
        s.handle_connected(now);
        b.recv(&mut s);
        b.connack(&mut s, false, now);
        b.recv(&mut s);
        events(&mut s);
        // The broker lost the session; id 1 now names another message.
        b.publish_qos1(&mut s, 1, now);
        let Some(Event::Message { ack: Some(new), .. }) = s.poll_event() else {
            panic!()
        };
        assert!(
            !s.ack(old, now),
            "a late ack must not acknowledge the new message"
        );
        assert!(b.recv(&mut s).is_empty());
        assert!(s.ack(new, now));
        assert!(matches!(b.recv(&mut s)[..], [Packet::PubAck(_)]));
    }

    #[test]
    fn receive_maximum_enforced_inbound() {
        let now = Instant::now();
        let (mut s, mut b) = connected(V5, now);
        for packet_id in 1..=3 {
            b.publish_qos1(&mut s, packet_id, now);
        }
        assert_eq!(events(&mut s).len(), 3);
        // A fourth while three are unacknowledged: over our Receive Maximum of 3, counted.
        b.publish_qos1(&mut s, 4, now);
        assert_eq!(events(&mut s).len(), 1);
        assert_eq!(s.receive_maximum_overruns(), 1);
        assert!(s.is_connected());

        // Enforced, it is a protocol error.
        let mut c = config(V5);
        c.enforce_receive_maximum = true;
        let mut s = Session::new(c, now).expect("valid");
        let mut b = Broker::new(V5);
        s.handle_connected(now);
        b.recv(&mut s);
        b.connack(&mut s, false, now);
        b.recv(&mut s);
        events(&mut s);
        for packet_id in 1..=3 {
            b.publish_qos1(&mut s, packet_id, now);
        }
        events(&mut s);
        b.publish_qos1(&mut s, 4, now);
        let sent = b.recv(&mut s);
        let [Packet::Disconnect(d)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(d.reason_code, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
        assert_eq!(
            events(&mut s),
            [Event::Closed {
                reason: CloseReason::Protocol(SpecViolation::ReceiveMaximumExceeded)
            }]
        );
    }

    #[test]
    fn receive_maximum_ok_once_acked() {
        let now = Instant::now();
        let (mut s, mut b) = connected(V5, now);
        for packet_id in 1..=3 {
            b.publish_qos1(&mut s, packet_id, now);
        }
        let first = match s.poll_event() {
            Some(Event::Message { ack: Some(t), .. }) => t,
            other => panic!("{other:?}"),
        };
        events(&mut s);
        s.ack(first, now);
        b.recv(&mut s);
        b.publish_qos1(&mut s, 4, now);
        assert!(matches!(
            events(&mut s)[..],
            [Event::Message { ack: Some(_), .. }]
        ));
        assert!(s.is_connected());
    }

    fn qos1(topic: &'static str) -> Publish {
        let mut p = Publish::new(ByteStr::from_static(topic), Bytes::from_static(b"x"));
        p.qos = QoS::AtLeastOnce;
        p
    }

    #[test]
    fn receive_maximum_enforced_outbound() {
        let now = Instant::now();
        let mut s = Session::new(config(V5), now).expect("valid config");
        let mut b = Broker::new(V5);
        s.handle_connected(now);
        b.recv(&mut s);
        let mut connack = ConnAck::new(true);
        connack.properties = Box::new(ConnAckProperties {
            receive_maximum: NonZeroU16::new(2),
            ..ConnAckProperties::default()
        });
        b.send(&mut s, Packet::ConnAck(connack), now);
        events(&mut s);

        let a = s.publish(qos1("out/a"), now).expect("window").expect("id");
        let c = s.publish(qos1("out/b"), now).expect("window").expect("id");
        assert_ne!(a, c);
        assert_eq!(
            s.publish(qos1("out/c"), now),
            Err(PublishError::Full),
            "the broker's Receive Maximum is 2"
        );
        // QoS 0 is outside the window.
        assert_eq!(
            s.publish(Publish::new("out/0".into(), Bytes::new()), now),
            Ok(None)
        );
        let sent: Vec<Packet> = b
            .recv(&mut s)
            .into_iter()
            .filter(|p| matches!(p, Packet::Publish(_)))
            .collect();
        assert_eq!(sent.len(), 3);

        // Out-of-order PUBACK is fine.
        b.send(&mut s, Packet::PubAck(PubAck::new(c)), now);
        assert_eq!(
            events(&mut s),
            [Event::Acked {
                packet_id: c,
                reason_code: ReasonCode::SUCCESS
            }]
        );
        let d = s.publish(qos1("out/c"), now).expect("window").expect("id");
        assert!(d != a, "an id in use is not reused");
        assert_eq!(s.in_flight(), 2);

        // A PUBACK for an id not in flight is a protocol error.
        b.recv(&mut s);
        b.send(&mut s, Packet::PubAck(PubAck::new(id(999))), now);
        assert_protocol_error(&mut s, &mut b, SpecViolation::PubAckUnknownId);
    }

    #[test]
    fn keep_alive_pings_and_detects_a_dead_broker() {
        for protocol in [V311, V5] {
            let t0 = Instant::now();
            let (mut s, mut b) = connected(protocol, t0);
            let keep_alive = Duration::from_secs(30);
            assert_eq!(s.poll_timeout(), Some(t0 + keep_alive));

            // Not idle yet: nothing.
            s.handle_timeout(t0 + keep_alive - Duration::from_millis(1));
            assert!(b.recv(&mut s).is_empty());

            // Idle for Keep Alive: PINGREQ, then the PINGRESP deadline.
            let t1 = t0 + keep_alive;
            s.handle_timeout(t1);
            assert_eq!(b.recv(&mut s), [Packet::PingReq]);
            assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(10)));
            b.send(&mut s, Packet::PingResp, t1 + Duration::from_secs(1));
            assert_eq!(s.poll_timeout(), Some(t1 + keep_alive));

            // Sending something else resets the idle timer.
            let t2 = t1 + Duration::from_secs(20);
            s.publish(qos1("out/a"), t2).expect("window");
            b.recv(&mut s);
            assert_eq!(s.poll_timeout(), Some(t2 + keep_alive));

            // Next PINGREQ goes unanswered: the connection is dead.
            let t3 = t2 + keep_alive;
            s.handle_timeout(t3);
            assert_eq!(b.recv(&mut s), [Packet::PingReq]);
            s.handle_timeout(t3 + Duration::from_secs(9));
            assert!(events(&mut s).is_empty());
            s.handle_timeout(t3 + Duration::from_secs(10));
            assert_eq!(
                events(&mut s),
                [Event::Closed {
                    reason: CloseReason::KeepAliveTimeout
                }]
            );
            assert_eq!(s.poll_timeout(), None);
        }
    }

    #[test]
    fn no_keep_alive_verdict_while_not_reading() {
        let now = Instant::now();
        let (mut s, mut b) = connected(V5, now);
        let t = now + Duration::from_secs(30);
        s.handle_timeout(t);
        assert!(matches!(&b.recv(&mut s)[..], [Packet::PingReq]));
        s.set_reading(false, t);
        assert_eq!(
            s.poll_timeout(),
            Some(t + Duration::from_secs(30)),
            "next wake-up: the next PINGREQ, not the past ping deadline"
        );
        s.handle_timeout(t + Duration::from_secs(60));
        assert!(s.is_connected(), "the PINGRESP cannot be read yet");
        assert!(
            matches!(&b.recv(&mut s)[..], [Packet::PingReq]),
            "a PINGREQ every Keep Alive while not reading"
        );
        let resumed = t + Duration::from_secs(61);
        s.set_reading(true, resumed);
        s.handle_timeout(resumed + Duration::from_secs(5));
        assert!(
            s.is_connected(),
            "a fresh ping timeout after reading resumes"
        );
        s.handle_timeout(resumed + Duration::from_secs(10));
        assert!(!s.is_connected());
    }

    #[test]
    fn server_keep_alive_replaces_ours() {
        let now = Instant::now();
        let mut s = Session::new(config(V5), now).expect("valid config");
        let mut b = Broker::new(V5);
        s.handle_connected(now);
        b.recv(&mut s);
        let mut connack = ConnAck::new(true);
        connack.properties.server_keep_alive_secs = Some(5);
        b.send(&mut s, Packet::ConnAck(connack), now);
        assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(5)));
    }

    #[test]
    fn malformed_frame_sends_disconnect_0x81_in_v5() {
        let now = Instant::now();
        let (mut s, mut b) = connected(V5, now);
        // PUBLISH with QoS 3.
        let mut bad = BytesMut::from(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01][..]);
        s.handle_bytes(&mut bad, now);
        let sent = b.recv(&mut s);
        let [Packet::Disconnect(d)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(d.reason_code, ReasonCode::MALFORMED_PACKET);
        assert_eq!(
            events(&mut s),
            [Event::Closed {
                reason: CloseReason::Decode(DecodeError::PublishQos3)
            }]
        );
        assert!(!s.is_connected());
        // Nothing more is read, and the transport closing reports nothing new.
        let mut more = BytesMut::from(&[0x40, 0x02, 0x00, 0x01][..]);
        s.handle_bytes(&mut more, now);
        assert_eq!(more.len(), 4, "not read after closing");
        assert!(b.recv(&mut s).is_empty());
        s.handle_disconnected(now);
        assert!(events(&mut s).is_empty());
    }

    #[test]
    fn a_packet_over_the_maximum_is_refused_from_its_fixed_header() {
        for protocol in [V311, V5] {
            let now = Instant::now();
            let mut c = config(protocol);
            c.maximum_packet_size = NonZeroU32::new(1024).expect("non-zero");
            let mut s = Session::new(c, now).expect("valid config");
            let mut b = Broker::new(protocol);
            s.handle_connected(now);
            let sent = b.recv(&mut s);
            let [Packet::Connect(connect)] = &sent[..] else {
                panic!("{sent:?}")
            };
            let announced = (protocol == V5).then(|| NonZeroU32::new(1024).expect("non-zero"));
            assert_eq!(connect.properties.maximum_packet_size, announced);
            b.connack(&mut s, false, now);
            b.recv(&mut s);
            events(&mut s);
            // A frame of exactly the maximum is taken: QoS 0 PUBLISH, topic "t", header 3 bytes.
            let body = 1024 - 3;
            let mut frame = vec![
                0x30,
                0x80 | (body % 128) as u8,
                (body / 128) as u8,
                0,
                1,
                b't',
            ];
            if protocol == V5 {
                frame.push(0);
            }
            frame.resize(1024, b'x');
            s.handle_bytes(&mut BytesMut::from(&frame[..]), now);
            assert!(matches!(&events(&mut s)[..], [Event::Message { .. }]));
            // The fixed header of a QoS 1 PUBLISH announcing 256 MiB, and the start of its body.
            let mut buf = BytesMut::with_capacity(64);
            buf.extend_from_slice(&[0x32, 0xfb, 0xff, 0xff, 0x7f, 0, 1, b't', 0, 1]);
            s.handle_bytes(&mut buf, now);
            assert!(buf.capacity() < 4096, "reserved {} bytes", buf.capacity());
            assert_eq!(
                events(&mut s),
                [Event::Closed {
                    reason: CloseReason::Decode(DecodeError::PacketTooLarge {
                        size: 5 + 0x0fff_fffb,
                        max: 1024
                    })
                }]
            );
            let sent = b.recv(&mut s);
            match protocol {
                V5 => assert!(
                    matches!(&sent[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PACKET_TOO_LARGE),
                    "{sent:?}"
                ),
                V311 => assert!(sent.is_empty(), "{sent:?}"),
            }
        }
    }

    #[test]
    fn frames_of_one_read_are_handled_in_order_and_a_partial_one_waits() {
        let now = Instant::now();
        let (mut s, b) = connected(V5, now);
        let mut wire = BytesMut::new();
        let mut p = Publish::new(ByteStr::from_static("sensors/a"), Bytes::from_static(b"1"));
        p.qos = QoS::AtLeastOnce;
        p.packet_id = Some(id(1));
        b.codec
            .encode(&Packet::Publish(p), &mut wire)
            .expect("encode");
        b.codec
            .encode(&Packet::PingResp, &mut wire)
            .expect("encode");
        let mut second = BytesMut::new();
        let p = Publish::new(ByteStr::from_static("alerts/b"), Bytes::from_static(b"22"));
        b.codec
            .encode(&Packet::Publish(p), &mut second)
            .expect("encode");
        wire.extend_from_slice(&second[..4]);
        s.handle_bytes(&mut wire, now);
        assert_eq!(&wire[..], &second[..4], "the partial frame stays");
        let evs = events(&mut s);
        let [
            Event::Message {
                publish,
                ack: Some(_),
            },
        ] = &evs[..]
        else {
            panic!("{evs:?}")
        };
        assert_eq!(
            (&publish.topic[..], &publish.payload[..]),
            ("sensors/a", &b"1"[..])
        );
        wire.extend_from_slice(&second[4..]);
        s.handle_bytes(&mut wire, now);
        assert!(wire.is_empty());
        let evs = events(&mut s);
        assert!(
            matches!(&evs[..], [Event::Message { publish, ack: None }] if &publish.payload[..] == b"22"),
            "{evs:?}"
        );
        // A valid frame before a refused header is handled first.
        let mut wire = BytesMut::from(&second[..]);
        wire.extend_from_slice(&[0x00, 0x00]);
        s.handle_bytes(&mut wire, now);
        assert!(matches!(
            &events(&mut s)[..],
            [
                Event::Message { .. },
                Event::Closed {
                    reason: CloseReason::Decode(DecodeError::ReservedPacketType)
                }
            ]
        ));
    }

    #[test]
    fn malformed_frame_closes_without_disconnect_in_v311() {
        let now = Instant::now();
        let (mut s, mut b) = connected(V311, now);
        let mut bad = BytesMut::from(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01][..]);
        s.handle_bytes(&mut bad, now);
        assert!(b.recv(&mut s).is_empty());
        assert_eq!(
            events(&mut s),
            [Event::Closed {
                reason: CloseReason::Decode(DecodeError::PublishQos3)
            }]
        );
    }

    /// Connects again after the transport dropped, with the given CONNACK, and returns what the
    /// session sent after the CONNECT.
    /// Reconnects; returns what the session sent after CONNACK, but for a 5.0 SUBSCRIBE (sent
    /// on every connection, and answered here).
    fn reconnect(s: &mut Session, b: &mut Broker, connack: ConnAck, now: Instant) -> Vec<Packet> {
        s.handle_disconnected(now);
        s.handle_connected(now);
        assert!(matches!(b.recv(s)[..], [Packet::Connect(_)]));
        b.send(s, Packet::ConnAck(connack), now);
        let mut sent = b.recv(s);
        if let Some(i) = sent.iter().position(|p| matches!(p, Packet::Subscribe(_))) {
            let Packet::Subscribe(sub) = sent.remove(i) else {
                unreachable!()
            };
            b.suback(s, sub.packet_id, now);
            while let Some(Event::Subscribed { .. }) = s.poll_event() {}
        }
        sent
    }

    #[test]
    fn in_flight_resent_with_dup_when_session_present() {
        for protocol in [V311, V5] {
            let now = Instant::now();
            let (mut s, mut b) = connected(protocol, now);
            let ids: Vec<PacketId> = ["out/1", "out/2", "out/3"]
                .into_iter()
                .map(|t| s.publish(qos1(t), now).expect("window").expect("id"))
                .collect();
            b.recv(&mut s);
            b.send(&mut s, Packet::PubAck(PubAck::new(ids[1])), now);
            events(&mut s);

            let sent = reconnect(&mut s, &mut b, ConnAck::new(true), now);
            let resent: Vec<(PacketId, bool, String)> = sent
                .into_iter()
                .map(|p| match p {
                    Packet::Publish(p) => (p.packet_id.expect("QoS 1"), p.dup, p.topic.to_string()),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(
                resent,
                [
                    (ids[0], true, "out/1".to_string()),
                    (ids[2], true, "out/3".to_string())
                ],
                "original ids, DUP, original order"
            );
            b.send(&mut s, Packet::PubAck(PubAck::new(ids[2])), now);
            b.send(&mut s, Packet::PubAck(PubAck::new(ids[0])), now);
            let acked: Vec<Event> = events(&mut s)
                .into_iter()
                .filter(|e| matches!(e, Event::Acked { .. }))
                .collect();
            assert_eq!(
                acked,
                [
                    Event::Acked {
                        packet_id: ids[2],
                        reason_code: ReasonCode::SUCCESS
                    },
                    Event::Acked {
                        packet_id: ids[0],
                        reason_code: ReasonCode::SUCCESS
                    }
                ]
            );
            assert_eq!(s.in_flight(), 0);
        }
    }

    #[test]
    fn in_flight_resent_as_new_when_session_lost() {
        let now = Instant::now();
        let (mut s, mut b) = connected(V5, now);
        let a = s.publish(qos1("out/1"), now).expect("window").expect("id");
        b.recv(&mut s);
        // (`reconnect` answers the SUBSCRIBE and leaves it out.)
        let sent = reconnect(&mut s, &mut b, ConnAck::new(false), now);
        let [Packet::Publish(p)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(p.packet_id, Some(a));
        assert!(!p.dup);
    }

    /// Three QoS 1 messages in flight, then a reconnect to a broker that kept the session but now
    /// allows one in flight: returns what the session sent after the CONNACK.
    fn three_in_flight_then_window_of_one(
        now: Instant,
    ) -> (Session, Broker, Vec<PacketId>, Vec<Packet>) {
        let (mut s, mut b) = connected(V5, now);
        let ids: Vec<PacketId> = (0..3)
            .map(|_| s.publish(qos1("out/x"), now).expect("window").expect("id"))
            .collect();
        b.recv(&mut s);
        let mut connack = ConnAck::new(true);
        connack.properties.receive_maximum = NonZeroU16::new(1);
        let sent = reconnect(&mut s, &mut b, connack, now);
        (s, b, ids, sent)
    }

    #[test]
    fn resend_respects_a_smaller_window() {
        let now = Instant::now();
        let (mut s, mut b, ids, sent) = three_in_flight_then_window_of_one(now);
        assert!(matches!(&sent[..], [Packet::Publish(p)] if p.packet_id == Some(ids[0])));
        assert_eq!(s.publish(qos1("out/y"), now), Err(PublishError::Full));
        b.send(&mut s, Packet::PubAck(PubAck::new(ids[0])), now);
        let sent = b.recv(&mut s);
        assert!(matches!(&sent[..], [Packet::Publish(p)] if p.packet_id == Some(ids[1]) && p.dup));
    }

    #[test]
    fn inbound_packet_id_in_use_is_a_protocol_error() {
        let now = Instant::now();
        let (mut s, mut b) = connected(V5, now);
        b.publish_qos1(&mut s, 5, now);
        let token = match s.poll_event() {
            Some(Event::Message { ack: Some(t), .. }) => t,
            other => panic!("{other:?}"),
        };
        // Acknowledged: the id is free again and may come back.
        s.ack(token, now);
        b.recv(&mut s);
        b.publish_qos1(&mut s, 5, now);
        assert!(s.is_connected());
        // Not acknowledged yet: the same id again is a protocol error.
        events(&mut s);
        b.publish_qos1(&mut s, 5, now);
        assert_protocol_error(&mut s, &mut b, SpecViolation::PacketIdInUse);
    }

    #[test]
    fn puback_for_a_message_not_yet_resent() {
        let now = Instant::now();
        let (mut s, mut b, ids, sent) = three_in_flight_then_window_of_one(now);
        assert_eq!(sent.len(), 1);
        // The broker acknowledges the third (it had it from the last connection) and the first.
        b.send(&mut s, Packet::PubAck(PubAck::new(ids[2])), now);
        assert!(b.recv(&mut s).is_empty(), "window still full");
        b.send(&mut s, Packet::PubAck(PubAck::new(ids[0])), now);
        let sent = b.recv(&mut s);
        assert!(
            matches!(&sent[..], [Packet::Publish(p)] if p.packet_id == Some(ids[1])),
            "only the second is left to re-send: {sent:?}"
        );
        b.send(&mut s, Packet::PubAck(PubAck::new(ids[1])), now);
        assert_eq!(s.in_flight(), 0);
        assert!(b.recv(&mut s).is_empty());
        assert!(s.publish(qos1("out/y"), now).is_ok());
    }

    const SAT: &str = "K8S-SAT";

    fn auth_config() -> SessionConfig {
        let mut c = config(V5);
        c.username = None;
        c.password = None;
        c.authentication_method = Some(ByteStr::from_static(SAT));
        c.authentication_data = Some(Bytes::from_static(b"token-1"));
        c
    }

    fn auth_packet(reason_code: ReasonCode, method: Option<&'static str>) -> Packet {
        Packet::Auth(Auth {
            reason_code,
            properties: Box::new(AuthProperties {
                authentication_method: method.map(ByteStr::from_static),
                ..AuthProperties::default()
            }),
        })
    }

    fn connack_with_method(method: Option<&'static str>) -> ConnAck {
        let mut connack = ConnAck::new(false);
        connack.properties.authentication_method = method.map(ByteStr::from_static);
        connack
    }

    /// A session with `auth_config`, connected and subscribed.
    /// A session with enhanced authentication that has sent its CONNECT (taken by the broker).
    fn auth_connecting(now: Instant) -> (Session, Broker) {
        let mut s = Session::new(auth_config(), now).expect("valid config");
        let mut b = Broker::new(V5);
        s.handle_connected(now);
        b.recv(&mut s);
        (s, b)
    }

    fn auth_connected(now: Instant) -> (Session, Broker) {
        let (mut s, mut b) = auth_connecting(now);
        b.send(&mut s, Packet::ConnAck(connack_with_method(Some(SAT))), now);
        let Packet::Subscribe(sub) = &b.recv(&mut s)[0] else {
            panic!("no SUBSCRIBE")
        };
        b.suback(&mut s, sub.packet_id, now);
        events(&mut s);
        (s, b)
    }

    /// The CONNECT the session sends on its next connection.
    fn next_connect(s: &mut Session, b: &mut Broker, now: Instant) -> Connect {
        s.handle_disconnected(now);
        s.handle_connected(now);
        let sent = b.recv(s);
        let [Packet::Connect(c)] = &sent[..] else {
            panic!("{sent:?}")
        };
        (**c).clone()
    }

    /// Asserts that the session sent DISCONNECT with the violation's reason code and closed the
    /// connection with that violation.
    fn assert_protocol_error(s: &mut Session, b: &mut Broker, violation: SpecViolation) {
        let sent = b.recv(s);
        let [Packet::Disconnect(d)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(d.reason_code, violation.reason_code());
        assert_eq!(
            events(s),
            [Event::Closed {
                reason: CloseReason::Protocol(violation)
            }]
        );
        assert!(!s.is_connected());
    }

    #[test]
    fn connect_carries_authentication_method_and_data() {
        let now = Instant::now();
        let mut s = Session::new(auth_config(), now).expect("valid config");
        let mut b = Broker::new(V5);
        s.handle_connected(now);
        let sent = b.recv(&mut s);
        let [Packet::Connect(c)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(c.properties.authentication_method.as_deref(), Some(SAT));
        assert_eq!(
            c.properties.authentication_data.as_deref(),
            Some(&b"token-1"[..])
        );
        // [MQTT-3.1.2-30]: nothing but CONNECT before CONNACK, keep alive included.
        s.handle_timeout(now + Duration::from_secs(29));
        assert!(b.recv(&mut s).is_empty());

        b.send(&mut s, Packet::ConnAck(connack_with_method(Some(SAT))), now);
        assert_eq!(
            events(&mut s),
            [Event::Connected {
                session_present: false
            }]
        );
        assert!(matches!(b.recv(&mut s)[..], [Packet::Subscribe(_)]));
    }

    #[test]
    fn no_authentication_properties_without_a_method() {
        let now = Instant::now();
        let mut s = Session::new(config(V5), now).expect("valid config");
        let mut b = Broker::new(V5);
        s.set_authentication_data(Some(Bytes::from_static(b"ignored")));
        let c = next_connect(&mut s, &mut b, now);
        assert_eq!(c.properties.authentication_method, None);
        assert_eq!(c.properties.authentication_data, None);
        assert_eq!(
            s.reauthenticate(Bytes::from_static(b"t"), now),
            Err(ReauthError::NoAuthenticationMethod)
        );
    }

    #[test]
    fn token_changes_between_connections() {
        let now = Instant::now();
        let (mut s, mut b) = auth_connected(now);
        // A new token while connected: nothing is sent on this connection.
        s.set_authentication_data(Some(Bytes::from_static(b"token-2")));
        assert!(b.recv(&mut s).is_empty());
        assert!(s.is_connected());
        let c = next_connect(&mut s, &mut b, now);
        assert_eq!(
            c.properties.authentication_data.as_deref(),
            Some(&b"token-2"[..])
        );
        assert_eq!(c.properties.authentication_method.as_deref(), Some(SAT));
        // And again before the following connection.
        s.set_authentication_data(Some(Bytes::from_static(b"token-3")));
        let c = next_connect(&mut s, &mut b, now);
        assert_eq!(
            c.properties.authentication_data.as_deref(),
            Some(&b"token-3"[..])
        );
    }

    #[test]
    fn reauthentication_round_trip() {
        let t0 = Instant::now();
        let (mut s, mut b) = auth_connected(t0);
        assert_eq!(
            s.poll_timeout(),
            Some(t0 + Duration::from_secs(30)),
            "keep alive"
        );
        let t1 = t0 + Duration::from_secs(1);
        s.reauthenticate(Bytes::from_static(b"token-2"), t1)
            .expect("connected");
        let sent = b.recv(&mut s);
        let [Packet::Auth(auth)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(auth.reason_code, ReasonCode::RE_AUTHENTICATE);
        assert_eq!(auth.properties.authentication_method.as_deref(), Some(SAT));
        assert_eq!(
            auth.properties.authentication_data.as_deref(),
            Some(&b"token-2"[..])
        );
        assert!(s.is_reauthenticating());
        // Keep alive runs from the AUTH; the answer is due within the connect timeout (30 s).
        assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(30)));
        assert_eq!(
            s.reauthenticate(Bytes::from_static(b"token-x"), t1),
            Err(ReauthError::InProgress)
        );
        assert!(b.recv(&mut s).is_empty());

        // Traffic goes on meanwhile.
        b.publish_qos1(&mut s, 1, t1);
        assert!(matches!(
            events(&mut s)[..],
            [Event::Message { ack: Some(_), .. }]
        ));
        assert!(s.publish(qos1("out/a"), t1).is_ok());
        b.recv(&mut s);

        b.send(&mut s, auth_packet(ReasonCode::SUCCESS, Some(SAT)), t1);
        assert_eq!(events(&mut s), [Event::Reauthenticated]);
        assert!(!s.is_reauthenticating());
        assert!(s.is_connected());
        assert!(
            b.recv(&mut s).is_empty(),
            "nothing in reply to AUTH Success"
        );

        // Another one may follow; the latest token is the next CONNECT's.
        let t2 = t1 + Duration::from_secs(60);
        s.reauthenticate(Bytes::from_static(b"token-3"), t2)
            .expect("connected");
        b.recv(&mut s);
        b.send(&mut s, auth_packet(ReasonCode::SUCCESS, Some(SAT)), t2);
        assert_eq!(events(&mut s), [Event::Reauthenticated]);
        let c = next_connect(&mut s, &mut b, t2);
        assert_eq!(
            c.properties.authentication_data.as_deref(),
            Some(&b"token-3"[..])
        );
    }

    #[test]
    fn reauthentication_refused_with_disconnect() {
        let now = Instant::now();
        let (mut s, mut b) = auth_connected(now);
        s.reauthenticate(Bytes::from_static(b"stale"), now)
            .expect("connected");
        b.recv(&mut s);
        b.send(
            &mut s,
            Packet::Disconnect(Disconnect::new(ReasonCode::NOT_AUTHORIZED)),
            now,
        );
        assert_eq!(
            events(&mut s),
            [Event::Closed {
                reason: CloseReason::ServerDisconnect {
                    reason_code: ReasonCode::NOT_AUTHORIZED
                }
            }]
        );
        assert!(b.recv(&mut s).is_empty(), "no DISCONNECT in reply");
        assert!(!s.is_reauthenticating());
        assert_eq!(
            s.reauthenticate(Bytes::from_static(b"t"), now),
            Err(ReauthError::NotConnected)
        );
    }

    #[test]
    fn reauthentication_unanswered_times_out() {
        let now = Instant::now();
        let (mut s, mut b) = auth_connected(now);
        s.reauthenticate(Bytes::from_static(b"token-2"), now)
            .expect("connected");
        b.recv(&mut s);
        // Keep alive pings go on meanwhile.
        s.handle_timeout(now + Duration::from_secs(29));
        assert!(b.recv(&mut s).is_empty());
        s.handle_timeout(now + Duration::from_secs(30));
        let sent = b.recv(&mut s);
        let [Packet::Disconnect(d)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(d.reason_code, ReasonCode::UNSPECIFIED_ERROR);
        assert_eq!(
            events(&mut s),
            [Event::Closed {
                reason: CloseReason::ReauthTimeout
            }]
        );
    }

    #[test]
    fn reauthenticate_before_connack_is_refused() {
        let now = Instant::now();
        let mut s = Session::new(auth_config(), now).expect("valid config");
        let mut b = Broker::new(V5);
        assert_eq!(
            s.reauthenticate(Bytes::from_static(b"token-2"), now),
            Err(ReauthError::NotConnected)
        );
        s.handle_connected(now);
        b.recv(&mut s);
        assert_eq!(
            s.reauthenticate(Bytes::from_static(b"token-3"), now),
            Err(ReauthError::NotConnected)
        );
        assert!(b.recv(&mut s).is_empty(), "[MQTT-3.1.2-30]");
        // The data is kept for the next CONNECT.
        let c = next_connect(&mut s, &mut b, now);
        assert_eq!(
            c.properties.authentication_data.as_deref(),
            Some(&b"token-3"[..])
        );
    }

    #[test]
    fn wrong_method_in_connack_is_a_protocol_error() {
        for method in [Some("OAUTH2-JWT"), None] {
            let now = Instant::now();
            let (mut s, mut b) = auth_connecting(now);
            b.send(&mut s, Packet::ConnAck(connack_with_method(method)), now);
            assert_protocol_error(&mut s, &mut b, SpecViolation::ConnAckAuthenticationMethod);
        }
    }

    #[test]
    fn refusal_needs_no_method() {
        // [MQTT-4.12.0-5] names successful CONNACKs only.
        let now = Instant::now();
        let (mut s, mut b) = auth_connecting(now);
        let mut connack = ConnAck::new(false);
        connack.reason_code = ReasonCode::BAD_AUTHENTICATION_METHOD;
        b.send(&mut s, Packet::ConnAck(connack), now);
        assert_eq!(
            events(&mut s),
            [Event::Closed {
                reason: CloseReason::Refused {
                    reason_code: ReasonCode::BAD_AUTHENTICATION_METHOD
                }
            }]
        );
        assert!(b.recv(&mut s).is_empty());
    }

    #[test]
    fn wrong_method_in_auth_is_a_protocol_error() {
        let now = Instant::now();
        let (mut s, mut b) = auth_connected(now);
        s.reauthenticate(Bytes::from_static(b"token-2"), now)
            .expect("connected");
        b.recv(&mut s);
        b.send(
            &mut s,
            auth_packet(ReasonCode::SUCCESS, Some("OAUTH2-JWT")),
            now,
        );
        assert_protocol_error(&mut s, &mut b, SpecViolation::AuthMethodMismatch);
    }

    #[test]
    fn auth_challenge_during_connect_is_a_protocol_error() {
        let now = Instant::now();
        let (mut s, mut b) = auth_connecting(now);
        b.send(
            &mut s,
            auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, Some(SAT)),
            now,
        );
        assert_protocol_error(&mut s, &mut b, SpecViolation::AuthChallenge);
    }

    #[test]
    fn unexpected_auth_from_the_broker() {
        // AUTH Success with no re-authentication under way, before and after CONNACK.
        let now = Instant::now();
        let (mut s, mut b) = auth_connecting(now);
        b.send(&mut s, auth_packet(ReasonCode::SUCCESS, Some(SAT)), now);
        assert_protocol_error(&mut s, &mut b, SpecViolation::UnexpectedAuthSuccess);

        let (mut s, mut b) = auth_connected(now);
        b.send(&mut s, auth_packet(ReasonCode::SUCCESS, Some(SAT)), now);
        assert_protocol_error(&mut s, &mut b, SpecViolation::UnexpectedAuthSuccess);

        // Re-authenticate is the client's code.
        let (mut s, mut b) = auth_connected(now);
        b.send(
            &mut s,
            auth_packet(ReasonCode::RE_AUTHENTICATE, Some(SAT)),
            now,
        );
        assert_protocol_error(&mut s, &mut b, SpecViolation::ServerReauthenticate);
    }

    #[test]
    fn auth_without_a_method_in_connect_is_a_protocol_error() {
        let now = Instant::now();
        let (mut s, mut b) = connected(V5, now);
        b.send(&mut s, auth_packet(ReasonCode::SUCCESS, Some(SAT)), now);
        assert_protocol_error(&mut s, &mut b, SpecViolation::UnaskedAuth);

        // Before CONNACK too, and a method in CONNACK.
        let mut s = Session::new(config(V5), now).expect("valid config");
        s.handle_connected(now);
        b.recv(&mut s);
        b.send(
            &mut s,
            auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, Some(SAT)),
            now,
        );
        assert_protocol_error(&mut s, &mut b, SpecViolation::UnaskedAuth);
        let mut s = Session::new(config(V5), now).expect("valid config");
        s.handle_connected(now);
        b.recv(&mut s);
        b.send(&mut s, Packet::ConnAck(connack_with_method(Some(SAT))), now);
        assert_protocol_error(&mut s, &mut b, SpecViolation::ConnAckUnaskedAuthentication);
    }

    #[test]
    fn authentication_config_is_checked() {
        let now = Instant::now();
        let mut c = config(V311);
        c.authentication_method = Some(ByteStr::from_static(SAT));
        assert_eq!(
            Session::new(c, now).err(),
            Some(ConfigError::AuthenticationNeedsV5)
        );
        let mut c = config(V311);
        c.authentication_data = Some(Bytes::from_static(b"t"));
        assert_eq!(
            Session::new(c, now).err(),
            Some(ConfigError::AuthenticationNeedsV5)
        );
        let mut c = config(V5);
        c.authentication_data = Some(Bytes::from_static(b"t"));
        assert_eq!(
            Session::new(c, now).err(),
            Some(ConfigError::AuthenticationDataWithoutMethod)
        );
        // A method without data is valid (the data may come later).
        let mut c = config(V5);
        c.authentication_method = Some(ByteStr::from_static(SAT));
        assert!(Session::new(c, now).is_ok());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let now = Instant::now();
        let mut c = auth_config();
        c.password = Some(Bytes::from_static(b"hunter2"));
        let text = format!("{c:?}");
        assert!(text.contains("K8S-SAT"), "{text}");
        assert!(!text.contains("token-1"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<7 bytes redacted>"), "{text}");
        let mut s = Session::new(auth_config(), now).expect("valid config");
        s.handle_connected(now);
        assert!(s.transmit_len() > 0, "CONNECT with the token queued");
        let text = format!("{s:?}");
        assert!(!text.contains("token-1"), "{text}");
    }

    #[test]
    fn config_is_checked() {
        let now = Instant::now();
        let mut c = config(V5);
        c.subscriptions[0].options.qos = QoS::ExactlyOnce;
        assert!(matches!(
            Session::new(c, now),
            Err(ConfigError::Qos2Subscription { .. })
        ));
        let mut c = config(V311);
        c.subscriptions[1].filter = ByteStr::from_static("a/#/b");
        assert!(matches!(
            Session::new(c, now),
            Err(ConfigError::InvalidFilter { .. })
        ));
        let mut c = config(V311);
        c.username = None;
        assert!(matches!(Session::new(c, now), Err(ConfigError::Connect(_))));
    }
}
