//! The negative table: one or more frames for every class of malformed packet or protocol error
//! that the decoder must refuse, each with the exact error it must give.

use bytes::BytesMut;
use sluice_codec::{
    Codec, DecodeError, Packet, PacketType, ProtocolVersion, ReasonCode, Role, TopicError,
};

use DecodeError as E;
use PacketType as T;
use ProtocolVersion::{V5, V311};
use Role::{Client, Server};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
        .collect()
}

/// A frame with its remaining length computed: `first` byte, then the body.
fn frame(first: u8, body: &str) -> Vec<u8> {
    let body = hex(body);
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len & 0x7F) as u8;
        len >>= 7;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend(body);
    out
}

/// A 5.0 CONNECT with these connect flags, property block and payload (hex, after the client id).
fn connect_v5(flags: u8, props: &str, rest: &str) -> Vec<u8> {
    let props = hex(props);
    let mut body = format!("00044d51545405{flags:02x}003c{:02x}", props.len());
    for b in props {
        body.push_str(&format!("{b:02x}"));
    }
    body.push_str("0000"); // empty client id
    body.push_str(rest);
    frame(0x10, &body)
}

/// A 3.1.1 CONNECT with these connect flags and payload after the (empty) client id.
fn connect_v311(flags: u8, rest: &str) -> Vec<u8> {
    frame(0x10, &format!("00044d51545404{flags:02x}003c0000{rest}"))
}

/// Decodes `bytes` as a whole stream and returns the first error.
fn first_error(codec: &mut Codec, bytes: &[u8]) -> Option<DecodeError> {
    let mut buf = BytesMut::from(bytes);
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

struct Case {
    name: &'static str,
    version: ProtocolVersion,
    role: Role,
    bytes: Vec<u8>,
    want: DecodeError,
}

fn case(
    name: &'static str,
    version: ProtocolVersion,
    role: Role,
    bytes: Vec<u8>,
    want: DecodeError,
) -> Case {
    Case {
        name,
        version,
        role,
        bytes,
        want,
    }
}

fn cases() -> Vec<Case> {
    let publish_v5 = |props: &str| frame(0x30, &format!("000161{:02x}{props}", hex(props).len()));
    vec![
        // Fixed header.
        case(
            "remaining length runs to a 5th byte",
            V5,
            Server,
            hex("30 ff ff ff ff 01"),
            E::VarIntTooLong,
        ),
        case(
            "remaining length not minimal",
            V5,
            Server,
            hex("30 80 00"),
            E::VarIntNotMinimal,
        ),
        case(
            "remaining length not minimal (3.1.1)",
            V311,
            Server,
            hex("c0 80 80 00"),
            E::VarIntNotMinimal,
        ),
        case(
            "packet type 0",
            V5,
            Server,
            hex("00 00"),
            E::ReservedPacketType,
        ),
        case(
            "packet type 0 (3.1.1)",
            V311,
            Client,
            hex("00 00"),
            E::ReservedPacketType,
        ),
        case("AUTH in 3.1.1", V311, Server, hex("f0 00"), E::AuthInV311),
        case(
            "PUBACK flags",
            V5,
            Server,
            hex("41 02 00 01"),
            E::InvalidFlags {
                packet: T::PubAck,
                flags: 1,
            },
        ),
        case(
            "PUBREL flags 0",
            V311,
            Client,
            hex("60 02 00 01"),
            E::InvalidFlags {
                packet: T::PubRel,
                flags: 0,
            },
        ),
        case(
            "SUBSCRIBE flags 0",
            V311,
            Server,
            frame(0x80, "0001 0001 61 00"),
            E::InvalidFlags {
                packet: T::Subscribe,
                flags: 0,
            },
        ),
        case(
            "UNSUBSCRIBE flags 3",
            V5,
            Server,
            frame(0xa3, "0001 00 0001 61"),
            E::InvalidFlags {
                packet: T::Unsubscribe,
                flags: 3,
            },
        ),
        case(
            "PINGREQ flags",
            V311,
            Server,
            hex("c1 00"),
            E::InvalidFlags {
                packet: T::PingReq,
                flags: 1,
            },
        ),
        case(
            "CONNECT flags",
            V5,
            Server,
            hex("18 00"),
            E::InvalidFlags {
                packet: T::Connect,
                flags: 8,
            },
        ),
        case(
            "DISCONNECT flags",
            V5,
            Client,
            hex("e2 00"),
            E::InvalidFlags {
                packet: T::Disconnect,
                flags: 2,
            },
        ),
        case(
            "AUTH flags",
            V5,
            Client,
            hex("f1 00"),
            E::InvalidFlags {
                packet: T::Auth,
                flags: 1,
            },
        ),
        // Direction.
        case(
            "CONNACK sent to a server",
            V5,
            Server,
            hex("20 03 00 00 00"),
            E::UnexpectedPacket {
                packet: T::ConnAck,
                role: Server,
            },
        ),
        case(
            "CONNECT sent to a client",
            V311,
            Client,
            connect_v311(0x02, ""),
            E::UnexpectedPacket {
                packet: T::Connect,
                role: Client,
            },
        ),
        case(
            "SUBSCRIBE sent to a client",
            V311,
            Client,
            frame(0x82, "0001 0001 61 00"),
            E::UnexpectedPacket {
                packet: T::Subscribe,
                role: Client,
            },
        ),
        case(
            "SUBACK sent to a server",
            V311,
            Server,
            frame(0x90, "0001 00"),
            E::UnexpectedPacket {
                packet: T::SubAck,
                role: Server,
            },
        ),
        case(
            "UNSUBACK sent to a server",
            V5,
            Server,
            frame(0xb0, "0001 00 00"),
            E::UnexpectedPacket {
                packet: T::UnsubAck,
                role: Server,
            },
        ),
        case(
            "PINGRESP sent to a server",
            V311,
            Server,
            hex("d0 00"),
            E::UnexpectedPacket {
                packet: T::PingResp,
                role: Server,
            },
        ),
        case(
            "PINGREQ sent to a client",
            V5,
            Client,
            hex("c0 00"),
            E::UnexpectedPacket {
                packet: T::PingReq,
                role: Client,
            },
        ),
        case(
            "3.1.1 server sends DISCONNECT",
            V311,
            Client,
            hex("e0 00"),
            E::UnexpectedPacket {
                packet: T::Disconnect,
                role: Client,
            },
        ),
        // PUBLISH.
        case(
            "PUBLISH QoS 3",
            V311,
            Client,
            frame(0x36, "0001 61 0001"),
            E::PublishQos3,
        ),
        case(
            "PUBLISH DUP on QoS 0",
            V5,
            Client,
            frame(0x38, "0001 61 00"),
            E::DupOnQos0,
        ),
        case(
            "topic name with +",
            V311,
            Server,
            frame(0x30, "0003 612f2b"),
            E::InvalidTopicName {
                error: TopicError::WildcardInName,
            },
        ),
        case(
            "topic name with #",
            V5,
            Client,
            frame(0x30, "0001 23 00"),
            E::InvalidTopicName {
                error: TopicError::WildcardInName,
            },
        ),
        case(
            "topic name with U+0000",
            V311,
            Server,
            frame(0x30, "0003 610062"),
            E::NullCharacter,
        ),
        case(
            "topic name overlong UTF-8",
            V311,
            Server,
            frame(0x30, "0002 c0af"),
            E::InvalidUtf8,
        ),
        case(
            "topic name surrogate",
            V5,
            Server,
            frame(0x30, "0003 eda080 00"),
            E::InvalidUtf8,
        ),
        case(
            "topic name truncated sequence",
            V311,
            Client,
            frame(0x30, "0002 e282"),
            E::InvalidUtf8,
        ),
        case(
            "topic name 4-byte overlong",
            V311,
            Client,
            frame(0x30, "0004 f0828291"),
            E::InvalidUtf8,
        ),
        case(
            "topic name above U+10FFFF",
            V311,
            Client,
            frame(0x30, "0004 f4908080"),
            E::InvalidUtf8,
        ),
        case(
            "empty topic name (3.1.1)",
            V311,
            Server,
            frame(0x30, "0000"),
            E::InvalidTopicName {
                error: TopicError::Empty,
            },
        ),
        case(
            "empty topic name without alias",
            V5,
            Server,
            frame(0x30, "0000 00"),
            E::EmptyTopicWithoutAlias,
        ),
        case(
            "PUBLISH packet id 0",
            V311,
            Client,
            frame(0x32, "0001 61 0000"),
            E::ZeroPacketId { packet: T::Publish },
        ),
        case(
            "topic length past the packet",
            V311,
            Server,
            frame(0x30, "0005 6162"),
            E::Truncated {
                packet: T::Publish,
                field: "topic name",
            },
        ),
        case(
            "packet id past the packet",
            V311,
            Server,
            frame(0x32, "0001 61 00"),
            E::Truncated {
                packet: T::Publish,
                field: "packet identifier",
            },
        ),
        // Properties.
        case(
            "unknown property",
            V5,
            Server,
            publish_v5("0500"),
            E::UnknownProperty { id: 0x05 },
        ),
        case(
            "property not allowed in PUBLISH",
            V5,
            Server,
            publish_v5("110000000a"),
            E::PropertyNotAllowed {
                id: 0x11,
                packet: T::Publish,
            },
        ),
        case(
            "property not allowed in PUBACK",
            V5,
            Server,
            frame(0x40, "0001 00 03 0b 01 00"),
            E::PropertyNotAllowed {
                id: 0x0b,
                packet: T::PubAck,
            },
        ),
        case(
            "Payload Format Indicator twice",
            V5,
            Client,
            publish_v5("0100 0101"),
            E::DuplicateProperty { id: 0x01 },
        ),
        case(
            "Content Type twice",
            V5,
            Client,
            publish_v5("03000161 03000162"),
            E::DuplicateProperty { id: 0x03 },
        ),
        case(
            "Reason String twice",
            V5,
            Client,
            frame(0x40, "0001 10 08 1f000161 1f000162"),
            E::DuplicateProperty { id: 0x1f },
        ),
        case(
            "Subscription Identifier twice in SUBSCRIBE",
            V5,
            Server,
            frame(0x82, "0001 04 0b01 0b02 0001 61 00"),
            E::DuplicateProperty { id: 0x0b },
        ),
        case(
            "Topic Alias 0",
            V5,
            Server,
            publish_v5("230000"),
            E::TopicAliasZero,
        ),
        case(
            "Payload Format Indicator 2",
            V5,
            Server,
            publish_v5("0102"),
            E::InvalidPayloadFormat { value: 2 },
        ),
        case(
            "Subscription Identifier 0 in PUBLISH",
            V5,
            Client,
            publish_v5("0b00"),
            E::SubscriptionIdZero,
        ),
        case(
            "Subscription Identifier 0 in SUBSCRIBE",
            V5,
            Server,
            frame(0x82, "0001 02 0b00 0001 61 00"),
            E::SubscriptionIdZero,
        ),
        case(
            "Subscription Identifier from a client",
            V5,
            Server,
            publish_v5("0b01"),
            E::SubscriptionIdFromClient,
        ),
        case(
            "Response Topic with wildcard",
            V5,
            Server,
            publish_v5("08000123"),
            E::InvalidResponseTopic {
                error: TopicError::WildcardInName,
            },
        ),
        case(
            "Response Topic empty",
            V5,
            Server,
            publish_v5("080000"),
            E::InvalidResponseTopic {
                error: TopicError::Empty,
            },
        ),
        case(
            "user property value not UTF-8",
            V5,
            Server,
            publish_v5("26 0001 61 0001 ff"),
            E::InvalidUtf8,
        ),
        case(
            "user property name with U+0000",
            V5,
            Server,
            publish_v5("26 0001 00 0001 61"),
            E::NullCharacter,
        ),
        case(
            "property block past the packet",
            V5,
            Server,
            frame(0x30, "0001 61 05 01"),
            E::Truncated {
                packet: T::Publish,
                field: "property block",
            },
        ),
        case(
            "binary property past its block",
            V5,
            Server,
            publish_v5("090005"),
            E::Truncated {
                packet: T::Publish,
                field: "property value",
            },
        ),
        case(
            "property length runs to a 5th byte",
            V5,
            Server,
            frame(0x30, "0001 61 ffffffff01"),
            E::VarIntTooLong,
        ),
        case(
            "Receive Maximum 0",
            V5,
            Server,
            connect_v5(0x02, "210000", ""),
            E::ReceiveMaximumZero,
        ),
        case(
            "Maximum Packet Size 0",
            V5,
            Server,
            connect_v5(0x02, "2700000000", ""),
            E::MaximumPacketSizeZero,
        ),
        case(
            "Request Problem Information 2",
            V5,
            Server,
            connect_v5(0x02, "1702", ""),
            E::InvalidBooleanProperty { id: 0x17, value: 2 },
        ),
        case(
            "Maximum QoS 2 in CONNACK",
            V5,
            Client,
            frame(0x20, "00 00 02 2402"),
            E::InvalidBooleanProperty { id: 0x24, value: 2 },
        ),
        case(
            "Authentication Data without Method",
            V5,
            Server,
            connect_v5(0x02, "16000101", ""),
            E::AuthDataWithoutMethod,
        ),
        case(
            "Will Delay Interval in CONNECT properties",
            V5,
            Server,
            connect_v5(0x02, "180000000a", ""),
            E::PropertyNotAllowed {
                id: 0x18,
                packet: T::Connect,
            },
        ),
        // CONNECT.
        case(
            "protocol name MQIsdp",
            V311,
            Server,
            frame(0x10, "0006 4d5149736470 03 02 003c 0000"),
            E::InvalidProtocolName,
        ),
        case(
            "protocol level 3",
            V311,
            Server,
            frame(0x10, "0004 4d515454 03 02 003c 0000"),
            E::UnsupportedProtocolVersion { level: 3 },
        ),
        case(
            "protocol level 6",
            V5,
            Server,
            frame(0x10, "0004 4d515454 06 02 003c 0000"),
            E::UnsupportedProtocolVersion { level: 6 },
        ),
        case(
            "CONNECT reserved flag",
            V311,
            Server,
            connect_v311(0x03, ""),
            E::ConnectReservedFlag,
        ),
        case(
            "Will QoS 3",
            V311,
            Server,
            connect_v311(0x1e, "0001 61 0000"),
            E::WillQos3,
        ),
        case(
            "Will QoS without Will Flag",
            V5,
            Server,
            connect_v5(0x0a, "", ""),
            E::WillFlagsWithoutWill,
        ),
        case(
            "Will Retain without Will Flag",
            V311,
            Server,
            connect_v311(0x22, ""),
            E::WillFlagsWithoutWill,
        ),
        case(
            "password without user name (3.1.1)",
            V311,
            Server,
            connect_v311(0x42, "0001 70"),
            E::PasswordWithoutUsername,
        ),
        case(
            "will topic with wildcard",
            V311,
            Server,
            connect_v311(0x06, "0001 2b 0000"),
            E::InvalidTopicName {
                error: TopicError::WildcardInName,
            },
        ),
        case(
            "CONNECT with a trailing byte",
            V311,
            Server,
            connect_v311(0x02, "00"),
            E::TrailingBytes { packet: T::Connect },
        ),
        case(
            "level 5 CONNECT on a 3.1.1 connection",
            V311,
            Server,
            connect_v5(0x02, "", ""),
            E::ProtocolVersionMismatch { level: 5 },
        ),
        // CONNACK.
        case(
            "CONNACK reserved flags",
            V311,
            Client,
            hex("20 02 02 00"),
            E::ConnAckReservedFlags { flags: 2 },
        ),
        case(
            "CONNACK session present with error",
            V311,
            Client,
            hex("20 02 01 05"),
            E::SessionPresentWithError,
        ),
        case(
            "CONNACK session present with error (5.0)",
            V5,
            Client,
            hex("20 03 01 80 00"),
            E::SessionPresentWithError,
        ),
        case(
            "CONNACK return code 6",
            V311,
            Client,
            hex("20 02 00 06"),
            E::InvalidReturnCode {
                packet: T::ConnAck,
                code: 6,
            },
        ),
        case(
            "CONNACK reason code 0x10",
            V5,
            Client,
            hex("20 03 00 10 00"),
            E::InvalidReasonCode {
                packet: T::ConnAck,
                code: 0x10,
            },
        ),
        case(
            "CONNACK too long (3.1.1)",
            V311,
            Client,
            hex("20 03 00 00 00"),
            E::TrailingBytes { packet: T::ConnAck },
        ),
        // Acknowledgements.
        case(
            "PUBACK reason code 0x05",
            V5,
            Client,
            hex("40 03 00 01 05"),
            E::InvalidReasonCode {
                packet: T::PubAck,
                code: 5,
            },
        ),
        case(
            "PUBREL reason code 0x10",
            V5,
            Server,
            hex("62 03 00 01 10"),
            E::InvalidReasonCode {
                packet: T::PubRel,
                code: 0x10,
            },
        ),
        case(
            "PUBACK packet id 0",
            V5,
            Server,
            hex("40 02 00 00"),
            E::ZeroPacketId { packet: T::PubAck },
        ),
        case(
            "PUBACK with 3 bytes (3.1.1)",
            V311,
            Server,
            hex("40 03 00 01 00"),
            E::TrailingBytes { packet: T::PubAck },
        ),
        case(
            "PUBACK truncated",
            V311,
            Server,
            hex("40 01 00"),
            E::Truncated {
                packet: T::PubAck,
                field: "packet identifier",
            },
        ),
        case(
            "SUBACK return code 3 (3.1.1)",
            V311,
            Client,
            frame(0x90, "0001 03"),
            E::InvalidReturnCode {
                packet: T::SubAck,
                code: 3,
            },
        ),
        case(
            "SUBACK without codes",
            V311,
            Client,
            frame(0x90, "0001"),
            E::AckWithoutReasonCodes { packet: T::SubAck },
        ),
        case(
            "SUBACK reason code 0x11",
            V5,
            Client,
            frame(0x90, "0001 00 11"),
            E::InvalidReasonCode {
                packet: T::SubAck,
                code: 0x11,
            },
        ),
        case(
            "UNSUBACK without codes (5.0)",
            V5,
            Client,
            frame(0xb0, "0001 00"),
            E::AckWithoutReasonCodes {
                packet: T::UnsubAck,
            },
        ),
        case(
            "UNSUBACK with a payload (3.1.1)",
            V311,
            Client,
            frame(0xb0, "0001 00"),
            E::TrailingBytes {
                packet: T::UnsubAck,
            },
        ),
        case(
            "DISCONNECT 0x8C (Table 3-10)",
            V5,
            Client,
            hex("e0 01 8c"),
            E::InvalidReasonCode {
                packet: T::Disconnect,
                code: 0x8c,
            },
        ),
        case(
            "DISCONNECT with a body (3.1.1)",
            V311,
            Server,
            hex("e0 01 00"),
            E::TrailingBytes {
                packet: T::Disconnect,
            },
        ),
        case(
            "AUTH reason code 0x01",
            V5,
            Server,
            hex("f0 01 01"),
            E::InvalidReasonCode {
                packet: T::Auth,
                code: 1,
            },
        ),
        case(
            "PINGREQ with a body",
            V311,
            Server,
            hex("c0 01 00"),
            E::TrailingBytes { packet: T::PingReq },
        ),
        // SUBSCRIBE and UNSUBSCRIBE.
        case(
            "SUBSCRIBE without filters",
            V311,
            Server,
            frame(0x82, "0001"),
            E::SubscribeWithoutFilters,
        ),
        case(
            "SUBSCRIBE without filters (5.0)",
            V5,
            Server,
            frame(0x82, "0001 00"),
            E::SubscribeWithoutFilters,
        ),
        case(
            "UNSUBSCRIBE without filters",
            V311,
            Server,
            frame(0xa2, "0001"),
            E::UnsubscribeWithoutFilters,
        ),
        case(
            "SUBSCRIBE packet id 0",
            V311,
            Server,
            frame(0x82, "0000 0001 61 00"),
            E::ZeroPacketId {
                packet: T::Subscribe,
            },
        ),
        case(
            "UNSUBSCRIBE packet id 0",
            V5,
            Server,
            frame(0xa2, "0000 00 0001 61"),
            E::ZeroPacketId {
                packet: T::Unsubscribe,
            },
        ),
        case(
            "subscription options reserved (3.1.1)",
            V311,
            Server,
            frame(0x82, "0001 0001 61 04"),
            E::SubscriptionOptionsReserved { options: 4 },
        ),
        case(
            "subscription options reserved (5.0)",
            V5,
            Server,
            frame(0x82, "0001 00 0001 61 40"),
            E::SubscriptionOptionsReserved { options: 0x40 },
        ),
        case(
            "subscription QoS 3",
            V311,
            Server,
            frame(0x82, "0001 0001 61 03"),
            E::SubscriptionQos3,
        ),
        case(
            "Retain Handling 3",
            V5,
            Server,
            frame(0x82, "0001 00 0001 61 30"),
            E::RetainHandling3,
        ),
        case(
            "No Local on a shared subscription",
            V5,
            Server,
            frame(0x82, "0001 00 000a 2473686172652f672f61 04"),
            E::NoLocalOnSharedSubscription,
        ),
        case(
            "filter with # not last",
            V311,
            Server,
            frame(0x82, "0001 0005 612f232f62 00"),
            E::InvalidTopicFilter {
                error: TopicError::MultiLevelNotLast,
            },
        ),
        case(
            "filter with a+",
            V5,
            Server,
            frame(0xa2, "0001 00 0002 612b"),
            E::InvalidTopicFilter {
                error: TopicError::SingleLevelNotAlone,
            },
        ),
        case(
            "empty filter",
            V311,
            Server,
            frame(0x82, "0001 0000 00"),
            E::InvalidTopicFilter {
                error: TopicError::Empty,
            },
        ),
        case(
            "shared filter without ShareName",
            V5,
            Server,
            frame(0x82, "0001 00 0009 2473686172652f2f61 00"),
            E::InvalidTopicFilter {
                error: TopicError::SharedNameEmpty,
            },
        ),
        case(
            "filter options byte missing",
            V311,
            Server,
            frame(0x82, "0001 0001 61"),
            E::Truncated {
                packet: T::Subscribe,
                field: "subscription options",
            },
        ),
    ]
}

#[test]
fn negative_table() {
    let mut failures = Vec::new();
    let all = cases();
    for c in &all {
        let mut codec = Codec::new(c.role, c.version);
        let got = first_error(&mut codec, &c.bytes);
        if got != Some(c.want) {
            failures.push(format!("{}: want {:?}, got {:?}", c.name, c.want, got));
            continue;
        }
        // Every error cites a clause and maps to an error reason code, and its message says so.
        let msg = c.want.to_string();
        assert!(msg.starts_with(&format!("[{}] ", c.want.clause())), "{msg}");
        assert!(c.want.reason_code().is_error(), "{}", c.name);
        // The code is one the answering DISCONNECT (or, for CONNECT, CONNACK) may carry.
        let rc = c.want.reason_code();
        assert!(
            rc.allowed_in(T::Disconnect) || rc.allowed_in(T::ConnAck),
            "{}",
            c.name
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn reason_codes_follow_the_specification() {
    assert_eq!(E::PublishQos3.reason_code(), ReasonCode::MALFORMED_PACKET);
    assert_eq!(
        E::DuplicateProperty { id: 1 }.reason_code(),
        ReasonCode::PROTOCOL_ERROR
    );
    assert_eq!(
        E::TopicAliasZero.reason_code(),
        ReasonCode::TOPIC_ALIAS_INVALID
    );
    assert_eq!(
        E::PacketTooLarge { size: 10, max: 5 }.reason_code(),
        ReasonCode::PACKET_TOO_LARGE
    );
    assert_eq!(
        E::InvalidTopicName {
            error: TopicError::WildcardInName
        }
        .reason_code(),
        ReasonCode::TOPIC_NAME_INVALID
    );
    assert_eq!(
        E::UnsupportedProtocolVersion { level: 3 }.reason_code(),
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
    );
    assert_eq!(E::PublishQos3.clause(), "MQTT-3.3.1-4");
    assert_eq!(
        E::InvalidTopicFilter {
            error: TopicError::MultiLevelNotLast
        }
        .clause(),
        "MQTT-4.7.1-1"
    );
    assert_eq!(
        E::InvalidReasonCode {
            packet: T::PubAck,
            code: 5
        }
        .clause(),
        "MQTT-3.4.2-1"
    );
}

#[test]
fn oversized_packet_is_refused_from_its_fixed_header() {
    // Only the fixed header has arrived: 2 + 20 bytes announced, the limit is 16.
    let mut codec = Codec::new(Server, V5).with_max_packet_size(16);
    let mut buf = BytesMut::from(&hex("30 14")[..]);
    assert_eq!(
        codec.decode(&mut buf),
        Err(E::PacketTooLarge { size: 22, max: 16 })
    );
    // A 4-byte remaining length announcing 200 MB is refused before anything is buffered.
    let mut codec = Codec::new(Client, V311).with_max_packet_size(1 << 20);
    let mut buf = BytesMut::from(&hex("30 80 80 80 60")[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(E::PacketTooLarge { .. })
    ));
    assert!(buf.capacity() < 1 << 20);
    // At the limit it decodes.
    let mut codec = Codec::new(Server, V311).with_max_packet_size(9);
    let mut buf = BytesMut::from(&hex("30 07 00 03 61 2f 62 68 69")[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Ok(Some(Packet::Publish(_)))
    ));
}

#[test]
fn partial_frames_ask_for_more_and_reserve_what_they_need() {
    let mut codec = Codec::new(Client, V311);
    let mut buf = BytesMut::from(&hex("30 96 01")[..]); // 150 bytes announced
    assert_eq!(codec.decode(&mut buf), Ok(None));
    assert!(buf.capacity() >= 153, "capacity {}", buf.capacity());
    assert_eq!(buf.len(), 3, "nothing consumed");
    let mut empty = BytesMut::new();
    assert_eq!(codec.decode(&mut empty), Ok(None));
    // A header whose first byte is already wrong fails before the rest arrives.
    let mut buf = BytesMut::from(&hex("36")[..]);
    assert_eq!(
        codec.decode(&mut buf),
        Ok(None),
        "flags of PUBLISH are checked with the body"
    );
    let mut buf = BytesMut::from(&hex("00")[..]);
    assert_eq!(codec.decode(&mut buf), Err(E::ReservedPacketType));
}

#[test]
fn byte_order_mark_is_kept() {
    let mut codec = Codec::new(Server, V311);
    let mut buf = BytesMut::from(&frame(0x30, "0005 efbbbf612f 6869")[..]);
    let Ok(Some(Packet::Publish(p))) = codec.decode(&mut buf) else {
        panic!("U+FEFF is a valid character");
    };
    assert_eq!(p.topic, "\u{feff}a/");
    assert_eq!(p.topic.as_bytes().len(), 5);
}

#[test]
fn server_learns_the_version_from_connect() {
    let mut codec = Codec::server_awaiting_connect();
    let mut buf = BytesMut::from(&hex("c0 00")[..]);
    assert_eq!(
        codec.decode(&mut buf),
        Err(E::FirstPacketNotConnect { packet: T::PingReq })
    );

    let mut codec = Codec::server_awaiting_connect();
    let mut bytes = connect_v311(0x02, "");
    bytes.extend(hex("c0 00"));
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Ok(Some(Packet::Connect(_)))
    ));
    assert_eq!(codec.version(), Some(V311));
    assert_eq!(codec.decode(&mut buf), Ok(Some(Packet::PingReq)));
    let mut buf = BytesMut::from(&hex("f0 00")[..]);
    assert_eq!(codec.decode(&mut buf), Err(E::AuthInV311));
}

#[test]
fn encoder_refuses_what_the_decoder_would_reject() {
    use bytes::Bytes;
    use sluice_codec::{ByteStr, Connect, EncodeError, PacketId, Publish, QoS, UserProperties};

    let codec = Codec::new(Client, V5);
    let mut buf = BytesMut::new();
    let mut p = Publish::new(ByteStr::from("a/+"), Bytes::from_static(b"x"));
    assert!(matches!(
        codec.encode(&Packet::Publish(p.clone()), &mut buf),
        Err(EncodeError::Invalid { .. })
    ));
    p.topic = ByteStr::from("a/b");
    p.packet_id = PacketId::new(1);
    assert!(matches!(
        codec.encode(&Packet::Publish(p.clone()), &mut buf),
        Err(EncodeError::Invalid { .. })
    ));
    p.qos = QoS::AtLeastOnce;
    p.topic = ByteStr::from(String::from("a\0b"));
    assert!(codec.encode(&Packet::Publish(p.clone()), &mut buf).is_err());
    p.topic = ByteStr::new();
    assert!(
        codec.encode(&Packet::Publish(p.clone()), &mut buf).is_err(),
        "empty topic without alias"
    );
    assert!(buf.is_empty(), "nothing written on error");

    let mut c = Connect::new(V311, ByteStr::from(String::from("id\0")), 30);
    assert_eq!(
        Codec::new(Server, V311).encode(&Packet::Connect(Box::new(c.clone())), &mut buf),
        Err(EncodeError::NullCharacter {
            field: "client identifier"
        })
    );
    c.client_id = ByteStr::from("id");
    c.password = Some(Bytes::from_static(b"pw"));
    assert!(
        Codec::new(Server, V311)
            .encode(&Packet::Connect(Box::new(c)), &mut buf)
            .is_err()
    );

    assert!(UserProperties::from_pairs([("k", "v\0")]).is_err());
    let long = "x".repeat(70_000);
    assert!(matches!(
        UserProperties::from_pairs([("k", long.as_str())]),
        Err(EncodeError::FieldTooLong { .. })
    ));

    // Packets over the peer's Maximum Packet Size are refused.
    let mut codec = Codec::new(Client, V5);
    codec.set_peer_max_packet_size(10);
    let p = Publish::new(ByteStr::from("a/b"), Bytes::from_static(b"0123456789"));
    assert!(matches!(
        codec.encode(&Packet::Publish(p), &mut buf),
        Err(EncodeError::PacketTooLarge { max: 10, .. })
    ));
    // AUTH does not exist in 3.1.1.
    let auth = sluice_codec::Auth {
        reason_code: ReasonCode::SUCCESS,
        properties: Default::default(),
    };
    assert!(matches!(
        Codec::new(Client, V311).encode(&Packet::Auth(auth), &mut buf),
        Err(EncodeError::NotInVersion { .. })
    ));
}
