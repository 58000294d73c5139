//! Decode and encode errors. Each decode error names the clause of the specification that the
//! bytes break and the MQTT 5.0 reason code a peer would put in its DISCONNECT (or CONNACK).
//!
//! Clause ids such as `MQTT-3.3.1-4` are the normative statements of MQTT 5.0 (OASIS Standard,
//! 7 March 2019) unless marked `(3.1.1)`; where the specification has no numbered statement the id
//! is its section (`MQTT-5.0 §2.2.2.2`). Where the specification calls a violation neither a
//! Malformed Packet nor a Protocol Error, the reason code is our choice, and docs/codec.md says so.

use crate::topic::TopicError;
use crate::types::{PacketType, Role};

crate::clause_enum! {
    /// Why a frame could not be decoded. Every variant is a malformed packet or a protocol error
    /// that the decoder can see: the connection that sent it must be closed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum DecodeError {
    /// The remaining length (or another variable byte integer) has a continuation bit in its
    /// fourth byte.
    VarIntTooLong => "MQTT-5.0 §1.5.5", MALFORMED_PACKET,
        "variable byte integer runs to a 5th byte";
    /// A variable byte integer is not in its shortest form.
    VarIntNotMinimal => "MQTT-1.5.5-1", MALFORMED_PACKET,
        "variable byte integer does not use the minimum number of bytes";
    /// Packet type 0.
    ReservedPacketType => "MQTT-5.0 §2.1.2", MALFORMED_PACKET,
        "packet type 0 is reserved";
    /// Packet type 15 (AUTH) on an MQTT 3.1.1 connection.
    AuthInV311 => "MQTT-3.1.1 §2.2.1", MALFORMED_PACKET,
        "packet type 15 is reserved in MQTT 3.1.1 (AUTH exists only in 5.0)";
    /// Reserved fixed-header flag bits do not have their required value.
    InvalidFlags { packet: PacketType, flags: u8 } => "MQTT-2.1.3-1", MALFORMED_PACKET,
        "{packet} fixed header flags {flags:#06b} differ from the reserved value";
    /// Both QoS bits are set in a PUBLISH.
    PublishQos3 => "MQTT-3.3.1-4", MALFORMED_PACKET,
        "PUBLISH has both QoS bits set (QoS 3)";
    /// DUP set on a QoS 0 PUBLISH.
    DupOnQos0 => "MQTT-3.3.1-2", MALFORMED_PACKET,
        "PUBLISH with QoS 0 has the DUP flag set";
    /// A topic name breaks the topic rules.
    InvalidTopicName { error: TopicError } => error.clause(), TOPIC_NAME_INVALID,
        "invalid topic name: {error}";
    /// An MQTT 5.0 PUBLISH with an empty topic name and no Topic Alias.
    EmptyTopicWithoutAlias => "MQTT-5.0 §3.3.2.1", PROTOCOL_ERROR,
        "PUBLISH has an empty topic name and no Topic Alias";
    /// A topic filter breaks the topic filter rules.
    InvalidTopicFilter { error: TopicError } => error.clause(), TOPIC_FILTER_INVALID,
        "invalid topic filter: {error}";
    /// A string is not well-formed UTF-8 (overlong forms, surrogates, truncated sequences).
    InvalidUtf8 => "MQTT-1.5.4-1", MALFORMED_PACKET,
        "string is not well-formed UTF-8";
    /// A string contains U+0000.
    NullCharacter => "MQTT-1.5.4-2", MALFORMED_PACKET,
        "string contains the null character U+0000";
    /// Packet identifier 0 where one is required.
    ZeroPacketId { packet: PacketType } => "MQTT-2.2.1-3", PROTOCOL_ERROR,
        "{packet} has packet identifier 0";
    /// A field, string, binary or property block runs past the end of the packet.
    Truncated { packet: PacketType, field: &'static str } => "MQTT-5.0 §2.1.4", MALFORMED_PACKET,
        "{packet} {field} runs past the end of the packet";
    /// Bytes are left after the last field of the packet.
    TrailingBytes { packet: PacketType } => "MQTT-5.0 §2.1.4", MALFORMED_PACKET,
        "{packet} has bytes after its last field";
    /// A property identifier that MQTT 5.0 does not define.
    UnknownProperty { id: u8 } => "MQTT-5.0 §2.2.2.2", MALFORMED_PACKET,
        "unknown property identifier {id:#04x}";
    /// A property that this packet type may not carry.
    PropertyNotAllowed { id: u8, packet: PacketType } => "MQTT-5.0 §2.2.2.2", MALFORMED_PACKET,
        "property {id:#04x} is not allowed in {packet}";
    /// A property that may appear once appears again.
    DuplicateProperty { id: u8 } => "MQTT-5.0 §3 (the property's section)", PROTOCOL_ERROR,
        "property {id:#04x} appears more than once";
    /// Topic Alias 0.
    TopicAliasZero => "MQTT-3.3.2-8", TOPIC_ALIAS_INVALID,
        "Topic Alias 0 is not permitted";
    /// Payload Format Indicator other than 0 or 1.
    InvalidPayloadFormat { value: u8 } => "MQTT-5.0 §3.3.2.3.2", PROTOCOL_ERROR,
        "Payload Format Indicator {value} is neither 0 nor 1";
    /// Subscription Identifier 0.
    SubscriptionIdZero => "MQTT-5.0 §3.8.2.1.2", PROTOCOL_ERROR,
        "Subscription Identifier 0 is not permitted";
    /// A PUBLISH from a client carries a Subscription Identifier.
    SubscriptionIdFromClient => "MQTT-3.3.4-6", PROTOCOL_ERROR,
        "PUBLISH sent to a server carries a Subscription Identifier";
    /// The Response Topic is not a valid topic name.
    InvalidResponseTopic { error: TopicError } => "MQTT-3.3.2-14", PROTOCOL_ERROR,
        "invalid Response Topic: {error}";
    /// Receive Maximum 0.
    ReceiveMaximumZero => "MQTT-5.0 §3.1.2.11.3", PROTOCOL_ERROR,
        "Receive Maximum 0 is not permitted";
    /// Maximum Packet Size 0.
    MaximumPacketSizeZero => "MQTT-5.0 §3.1.2.11.4", PROTOCOL_ERROR,
        "Maximum Packet Size 0 is not permitted";
    /// A property whose value must be 0 or 1 has another value.
    InvalidBooleanProperty { id: u8, value: u8 } => "MQTT-5.0 §2.2.2.2", PROTOCOL_ERROR,
        "property {id:#04x} has value {value}, not 0 or 1";
    /// Authentication Data without Authentication Method.
    AuthDataWithoutMethod => "MQTT-5.0 §3.1.2.11.10", PROTOCOL_ERROR,
        "Authentication Data without an Authentication Method";
    /// A packet bigger than the configured maximum packet size, seen from its fixed header.
    PacketTooLarge { size: usize, max: u32 } => "MQTT-5.0 §3.1.2.11.4", PACKET_TOO_LARGE,
        "packet of {size} bytes exceeds the maximum packet size of {max} bytes";
    /// A packet type that the other direction sends.
    UnexpectedPacket { packet: PacketType, role: Role } => "MQTT-5.0 §2.1.2", PROTOCOL_ERROR,
        "{packet} is never sent to a {role}";
    /// A server's DISCONNECT carries a Session Expiry Interval.
    SessionExpiryFromServer => "MQTT-3.14.2-2", PROTOCOL_ERROR,
        "DISCONNECT from a server carries a Session Expiry Interval";
    /// A server's first packet from a client is not CONNECT.
    FirstPacketNotConnect { packet: PacketType } => "MQTT-3.1.0-1", PROTOCOL_ERROR,
        "the first packet from a client must be CONNECT, not {packet}";
    /// CONNECT's protocol name is not "MQTT".
    InvalidProtocolName => "MQTT-3.1.2-1", UNSUPPORTED_PROTOCOL_VERSION,
        "CONNECT protocol name is not \"MQTT\"";
    /// CONNECT's protocol level is not 4 or 5.
    UnsupportedProtocolVersion { level: u8 } => "MQTT-3.1.2-2", UNSUPPORTED_PROTOCOL_VERSION,
        "CONNECT protocol level {level} is not supported (4 = 3.1.1, 5 = 5.0)";
    /// CONNECT's protocol level differs from the version this connection was set to.
    ProtocolVersionMismatch { level: u8 } => "MQTT-3.1.2-2", UNSUPPORTED_PROTOCOL_VERSION,
        "CONNECT protocol level {level} differs from the connection's protocol version";
    /// CONNECT's reserved flag (bit 0) is set.
    ConnectReservedFlag => "MQTT-3.1.2-3", MALFORMED_PACKET,
        "CONNECT reserved flag bit 0 is set";
    /// CONNECT's Will QoS is 3.
    WillQos3 => "MQTT-3.1.2-12", MALFORMED_PACKET,
        "CONNECT Will QoS is 3";
    /// Will QoS or Will Retain set without the Will Flag.
    WillFlagsWithoutWill => "MQTT-3.1.2-11, MQTT-3.1.2-13", MALFORMED_PACKET,
        "CONNECT has Will QoS or Will Retain set without the Will Flag";
    /// MQTT 3.1.1 CONNECT with the Password Flag but not the User Name Flag.
    PasswordWithoutUsername => "MQTT-3.1.2-22 (3.1.1)", MALFORMED_PACKET,
        "CONNECT has the Password Flag set without the User Name Flag";
    /// CONNACK's reserved acknowledge flag bits are set.
    ConnAckReservedFlags { flags: u8 } => "MQTT-3.2.2-1", MALFORMED_PACKET,
        "CONNACK acknowledge flags {flags:#010b} set reserved bits 7-1";
    /// CONNACK with Session Present and a failure code.
    SessionPresentWithError => "MQTT-3.2.2-6", PROTOCOL_ERROR,
        "CONNACK has Session Present set with a non-zero reason code";
    /// A reason code that this packet type may not carry.
    InvalidReasonCode { packet: PacketType, code: u8 } => reason_clause(packet), MALFORMED_PACKET,
        "reason code {code:#04x} is not valid in {packet}";
    /// An MQTT 3.1.1 return code out of range.
    InvalidReturnCode { packet: PacketType, code: u8 } => if matches!(packet, PacketType::SubAck) { "MQTT-3.9.3-2 (3.1.1)" } else { "MQTT-3.1.1 §3.2.2.3" }, MALFORMED_PACKET,
        "return code {code:#04x} is not valid in an MQTT 3.1.1 {packet}";
    /// SUBSCRIBE without any topic filter.
    SubscribeWithoutFilters => "MQTT-3.8.3-2", PROTOCOL_ERROR,
        "SUBSCRIBE has no topic filter";
    /// UNSUBSCRIBE without any topic filter.
    UnsubscribeWithoutFilters => "MQTT-3.10.3-2", PROTOCOL_ERROR,
        "UNSUBSCRIBE has no topic filter";
    /// SUBACK or UNSUBACK without any reason code.
    AckWithoutReasonCodes { packet: PacketType } => if matches!(packet, PacketType::SubAck) { "MQTT-3.8.4-6" } else { "MQTT-3.11.3-2" }, PROTOCOL_ERROR,
        "{packet} has no reason code";
    /// Reserved bits of the subscription options are set.
    SubscriptionOptionsReserved { options: u8 } => "MQTT-3.8.3-5", MALFORMED_PACKET,
        "subscription options {options:#010b} set reserved bits";
    /// Subscription options with QoS 3.
    SubscriptionQos3 => "MQTT-5.0 §3.8.3.1", PROTOCOL_ERROR,
        "subscription options request QoS 3";
    /// Subscription options with Retain Handling 3.
    RetainHandling3 => "MQTT-5.0 §3.8.3.1", PROTOCOL_ERROR,
        "subscription options have Retain Handling 3";
    /// No Local on a shared subscription.
    NoLocalOnSharedSubscription => "MQTT-3.8.3-4", PROTOCOL_ERROR,
        "No Local is set on a shared subscription";
    }
}

impl std::error::Error for DecodeError {}

/// The clause that lists the reason codes a packet type may carry.
const fn reason_clause(packet: PacketType) -> &'static str {
    match packet {
        PacketType::ConnAck => "MQTT-3.2.2-8",
        PacketType::PubAck => "MQTT-3.4.2-1",
        PacketType::PubRec => "MQTT-3.5.2-1",
        PacketType::PubRel => "MQTT-3.6.2-1",
        PacketType::PubComp => "MQTT-3.7.2-1",
        PacketType::SubAck => "MQTT-3.9.3-2",
        PacketType::UnsubAck => "MQTT-3.11.3-2",
        PacketType::Disconnect => "MQTT-3.14.2-1",
        PacketType::Auth => "MQTT-3.15.2-1",
        _ => "MQTT-5.0 §2.4",
    }
}

impl From<std::convert::Infallible> for DecodeError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

/// Why a packet could not be encoded. The encoder refuses to write bytes that its own decoder
/// would reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded packet would exceed the largest remaining length (268,435,455 bytes) or the
    /// peer's maximum packet size.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Encoded size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A string or binary field is longer than 65,535 bytes.
    #[error("{field} is {len} bytes, longer than 65535")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The packet does not exist in this protocol version (AUTH in 3.1.1).
    #[error("{packet} does not exist in MQTT 3.1.1")]
    NotInVersion {
        /// The packet type.
        packet: PacketType,
    },
    /// A string contains U+0000, which MQTT strings may not ([MQTT-1.5.4-2]).
    #[error("{field} contains U+0000")]
    NullCharacter {
        /// Which field.
        field: &'static str,
    },
    /// A field the peer's decoder would refuse, with the decode error it would give.
    #[error("the peer would refuse this packet: {error}")]
    Rejected {
        /// What the decoder says.
        error: DecodeError,
    },
    /// The connection's protocol version is not known yet (no CONNECT seen).
    #[error("the protocol version is not known before CONNECT")]
    VersionUnknown,
    /// A field value the decoder would reject (for example a QoS 0 PUBLISH with a packet id).
    #[error("invalid {packet}: {reason}")]
    Invalid {
        /// The packet type.
        packet: PacketType,
        /// What is wrong.
        reason: &'static str,
    },
}
