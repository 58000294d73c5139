//! MQTT 5.0 properties (§2.2.2): one strict parser for every packet's property block, the
//! property sets each packet allows, and the encoder side.
//!
//! The parser checks, in one pass: identifiers known and allowed for the packet, single-occurrence
//! properties given once, value ranges (Topic Alias, Receive Maximum, Maximum Packet Size,
//! Subscription Identifier, the 0/1 properties), strings as UTF-8 and the Response Topic as a topic
//! name. Repeated properties (User Property, and Subscription Identifier in PUBLISH) are not copied
//! out: they stay in the validated block and are iterated lazily, so decoding allocates nothing
//! whatever their number.

use bytes::{BufMut, Bytes};

use crate::error::{DecodeError, EncodeError};
use crate::reader::Reader;
use crate::string::str_from_checked;
use crate::topic::check_name_chars;
use crate::types::PacketType;
use crate::varint::{decode_varint, put_varint, varint_len};

/// Property identifiers (§2.2.2.2).
#[allow(missing_docs)]
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// The name the specification gives a property identifier.
pub const fn property_name(property: u8) -> Option<&'static str> {
    Some(match property {
        id::PAYLOAD_FORMAT_INDICATOR => "Payload Format Indicator",
        id::MESSAGE_EXPIRY_INTERVAL => "Message Expiry Interval",
        id::CONTENT_TYPE => "Content Type",
        id::RESPONSE_TOPIC => "Response Topic",
        id::CORRELATION_DATA => "Correlation Data",
        id::SUBSCRIPTION_IDENTIFIER => "Subscription Identifier",
        id::SESSION_EXPIRY_INTERVAL => "Session Expiry Interval",
        id::ASSIGNED_CLIENT_IDENTIFIER => "Assigned Client Identifier",
        id::SERVER_KEEP_ALIVE => "Server Keep Alive",
        id::AUTHENTICATION_METHOD => "Authentication Method",
        id::AUTHENTICATION_DATA => "Authentication Data",
        id::REQUEST_PROBLEM_INFORMATION => "Request Problem Information",
        id::WILL_DELAY_INTERVAL => "Will Delay Interval",
        id::REQUEST_RESPONSE_INFORMATION => "Request Response Information",
        id::RESPONSE_INFORMATION => "Response Information",
        id::SERVER_REFERENCE => "Server Reference",
        id::REASON_STRING => "Reason String",
        id::RECEIVE_MAXIMUM => "Receive Maximum",
        id::TOPIC_ALIAS_MAXIMUM => "Topic Alias Maximum",
        id::TOPIC_ALIAS => "Topic Alias",
        id::MAXIMUM_QOS => "Maximum QoS",
        id::RETAIN_AVAILABLE => "Retain Available",
        id::USER_PROPERTY => "User Property",
        id::MAXIMUM_PACKET_SIZE => "Maximum Packet Size",
        id::WILDCARD_SUBSCRIPTION_AVAILABLE => "Wildcard Subscription Available",
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => "Subscription Identifier Available",
        id::SHARED_SUBSCRIPTION_AVAILABLE => "Shared Subscription Available",
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Byte,
    TwoByte,
    FourByte,
    VarInt,
    Utf8,
    Binary,
    Pair,
}

const fn kind(property: u8) -> Option<Kind> {
    use id::*;
    Some(match property {
        PAYLOAD_FORMAT_INDICATOR
        | REQUEST_PROBLEM_INFORMATION
        | REQUEST_RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => Kind::Byte,
        SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => Kind::TwoByte,
        MESSAGE_EXPIRY_INTERVAL
        | SESSION_EXPIRY_INTERVAL
        | WILL_DELAY_INTERVAL
        | MAXIMUM_PACKET_SIZE => Kind::FourByte,
        SUBSCRIPTION_IDENTIFIER => Kind::VarInt,
        CONTENT_TYPE
        | RESPONSE_TOPIC
        | ASSIGNED_CLIENT_IDENTIFIER
        | AUTHENTICATION_METHOD
        | RESPONSE_INFORMATION
        | SERVER_REFERENCE
        | REASON_STRING => Kind::Utf8,
        CORRELATION_DATA | AUTHENTICATION_DATA => Kind::Binary,
        USER_PROPERTY => Kind::Pair,
        _ => return None,
    })
}

/// A decoded property value, borrowing from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Byte(u8),
    TwoByte(u16),
    FourByte(u32),
    VarInt(u32),
    Utf8(&'a str),
    Binary(&'a [u8]),
    Pair(&'a str, &'a str),
}

impl Value<'_> {
    pub(crate) fn encoded_len(&self) -> usize {
        1 + match self {
            Value::Byte(_) => 1,
            Value::TwoByte(_) => 2,
            Value::FourByte(_) => 4,
            Value::VarInt(v) => varint_len(*v),
            Value::Utf8(s) => 2 + s.len(),
            Value::Binary(b) => 2 + b.len(),
            Value::Pair(k, v) => 4 + k.len() + v.len(),
        }
    }

    pub(crate) fn write(&self, property: u8, buf: &mut impl BufMut) {
        buf.put_u8(property);
        match *self {
            Value::Byte(v) => buf.put_u8(v),
            Value::TwoByte(v) => buf.put_u16(v),
            Value::FourByte(v) => buf.put_u32(v),
            Value::VarInt(v) => put_varint(buf, v),
            Value::Utf8(s) => put_binary(buf, s.as_bytes()),
            Value::Binary(b) => put_binary(buf, b),
            Value::Pair(k, v) => {
                put_binary(buf, k.as_bytes());
                put_binary(buf, v.as_bytes());
            }
        }
    }
}

fn put_binary(buf: &mut impl BufMut, b: &[u8]) {
    // Lengths were checked by the encoder before anything was written.
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
}

const fn bit(property: u8) -> u64 {
    1u64 << property
}

macro_rules! set {
    ($($p:ident),* $(,)?) => { 0 $(| bit(id::$p))* };
}

/// The properties a packet may carry (§2.2.2.2, and each packet's Properties section).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allowed {
    packet: PacketType,
    allowed: u64,
    repeatable: u64,
}

impl Allowed {
    pub(crate) const CONNECT: Self = Self::new(
        PacketType::Connect,
        set!(
            SESSION_EXPIRY_INTERVAL,
            RECEIVE_MAXIMUM,
            MAXIMUM_PACKET_SIZE,
            TOPIC_ALIAS_MAXIMUM,
            REQUEST_RESPONSE_INFORMATION,
            REQUEST_PROBLEM_INFORMATION,
            USER_PROPERTY,
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA
        ),
    );
    pub(crate) const WILL: Self = Self::new(
        PacketType::Connect,
        set!(
            WILL_DELAY_INTERVAL,
            PAYLOAD_FORMAT_INDICATOR,
            MESSAGE_EXPIRY_INTERVAL,
            CONTENT_TYPE,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            USER_PROPERTY
        ),
    );
    pub(crate) const CONNACK: Self = Self::new(
        PacketType::ConnAck,
        set!(
            SESSION_EXPIRY_INTERVAL,
            RECEIVE_MAXIMUM,
            MAXIMUM_QOS,
            RETAIN_AVAILABLE,
            MAXIMUM_PACKET_SIZE,
            ASSIGNED_CLIENT_IDENTIFIER,
            TOPIC_ALIAS_MAXIMUM,
            REASON_STRING,
            USER_PROPERTY,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            SHARED_SUBSCRIPTION_AVAILABLE,
            SERVER_KEEP_ALIVE,
            RESPONSE_INFORMATION,
            SERVER_REFERENCE,
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA
        ),
    );
    pub(crate) const PUBLISH: Self = Self {
        packet: PacketType::Publish,
        allowed: set!(
            PAYLOAD_FORMAT_INDICATOR,
            MESSAGE_EXPIRY_INTERVAL,
            TOPIC_ALIAS,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            USER_PROPERTY,
            SUBSCRIPTION_IDENTIFIER,
            CONTENT_TYPE
        ),
        repeatable: set!(USER_PROPERTY, SUBSCRIPTION_IDENTIFIER),
    };
    pub(crate) const SUBSCRIBE: Self = Self::new(
        PacketType::Subscribe,
        set!(SUBSCRIPTION_IDENTIFIER, USER_PROPERTY),
    );
    pub(crate) const UNSUBSCRIBE: Self = Self::new(PacketType::Unsubscribe, set!(USER_PROPERTY));
    pub(crate) const DISCONNECT: Self = Self::new(
        PacketType::Disconnect,
        set!(
            SESSION_EXPIRY_INTERVAL,
            REASON_STRING,
            USER_PROPERTY,
            SERVER_REFERENCE
        ),
    );
    pub(crate) const AUTH: Self = Self::new(
        PacketType::Auth,
        set!(
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
            REASON_STRING,
            USER_PROPERTY
        ),
    );

    const fn new(packet: PacketType, allowed: u64) -> Self {
        Self {
            packet,
            allowed,
            repeatable: bit(id::USER_PROPERTY),
        }
    }

    /// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK: Reason String and User Property.
    pub(crate) const fn ack(packet: PacketType) -> Self {
        Self::new(packet, set!(REASON_STRING, USER_PROPERTY))
    }
}

/// Reads a property block (its length and its properties) and hands each property to `visit`.
/// Returns the block's bytes (without the length), for lazy iteration of repeated properties.
pub(crate) fn parse<'a>(
    r: &mut Reader<'a>,
    allowed: Allowed,
    mut visit: impl FnMut(u8, Value<'a>),
) -> Result<&'a [u8], DecodeError> {
    let len = r.varint("property length")?;
    let block = r.take(len as usize, "property block")?;
    let mut p = Reader::new(block, r.packet());
    let mut seen: u64 = 0;
    while !p.is_empty() {
        let property = p.u8("property identifier")?;
        let Some(k) = kind(property) else {
            return Err(DecodeError::UnknownProperty { id: property });
        };
        let b = bit(property);
        if allowed.allowed & b == 0 {
            return Err(DecodeError::PropertyNotAllowed {
                id: property,
                packet: allowed.packet,
            });
        }
        if seen & b != 0 && allowed.repeatable & b == 0 {
            return Err(DecodeError::DuplicateProperty { id: property });
        }
        seen |= b;
        let value = read_value(&mut p, property, k)?;
        check_value(property, &value)?;
        visit(property, value);
    }
    if seen & bit(id::AUTHENTICATION_DATA) != 0 && seen & bit(id::AUTHENTICATION_METHOD) == 0 {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    Ok(block)
}

fn read_value<'a>(r: &mut Reader<'a>, property: u8, k: Kind) -> Result<Value<'a>, DecodeError> {
    let _ = property;
    const F: &str = "property value";
    Ok(match k {
        Kind::Byte => Value::Byte(r.u8(F)?),
        Kind::TwoByte => Value::TwoByte(r.u16(F)?),
        Kind::FourByte => Value::FourByte(r.u32(F)?),
        Kind::VarInt => Value::VarInt(r.varint(F)?),
        Kind::Utf8 => Value::Utf8(r.utf8(F)?),
        Kind::Binary => Value::Binary(r.binary(F)?),
        Kind::Pair => {
            let key = r.utf8(F)?;
            Value::Pair(key, r.utf8(F)?)
        }
    })
}

fn check_value(property: u8, value: &Value<'_>) -> Result<(), DecodeError> {
    use id::*;
    match (property, *value) {
        (PAYLOAD_FORMAT_INDICATOR, Value::Byte(v)) if v > 1 => {
            Err(DecodeError::InvalidPayloadFormat { value: v })
        }
        (
            REQUEST_PROBLEM_INFORMATION
            | REQUEST_RESPONSE_INFORMATION
            | MAXIMUM_QOS
            | RETAIN_AVAILABLE
            | WILDCARD_SUBSCRIPTION_AVAILABLE
            | SUBSCRIPTION_IDENTIFIER_AVAILABLE
            | SHARED_SUBSCRIPTION_AVAILABLE,
            Value::Byte(v),
        ) if v > 1 => Err(DecodeError::InvalidBooleanProperty {
            id: property,
            value: v,
        }),
        (TOPIC_ALIAS, Value::TwoByte(0)) => Err(DecodeError::TopicAliasZero),
        (RECEIVE_MAXIMUM, Value::TwoByte(0)) => Err(DecodeError::ReceiveMaximumZero),
        (MAXIMUM_PACKET_SIZE, Value::FourByte(0)) => Err(DecodeError::MaximumPacketSizeZero),
        (SUBSCRIPTION_IDENTIFIER, Value::VarInt(0)) => Err(DecodeError::SubscriptionIdZero),
        (RESPONSE_TOPIC, Value::Utf8(t)) => {
            let r = if t.is_empty() {
                Err(crate::topic::TopicError::Empty)
            } else {
                check_name_chars(t)
            };
            r.map_err(|error| DecodeError::InvalidResponseTopic { error })
        }
        _ => Ok(()),
    }
}

/// Walks a block that [`parse`] accepted (or that the encoder built), yielding each property.
pub(crate) fn walk(block: &[u8]) -> impl Iterator<Item = (u8, Value<'_>)> + '_ {
    let mut rest = block;
    std::iter::from_fn(move || {
        let (&property, tail) = rest.split_first()?;
        let k = kind(property)?;
        let mut p = Reader::new(tail, PacketType::Publish);
        let value = match k {
            // Strings in a validated block are UTF-8; re-reading them must not check again.
            Kind::Utf8 => Value::Utf8(str_from_checked(p.binary("").ok()?)),
            Kind::Pair => {
                let key = str_from_checked(p.binary("").ok()?);
                Value::Pair(key, str_from_checked(p.binary("").ok()?))
            }
            Kind::Byte => Value::Byte(p.u8("").ok()?),
            Kind::TwoByte => Value::TwoByte(p.u16("").ok()?),
            Kind::FourByte => Value::FourByte(p.u32("").ok()?),
            Kind::VarInt => {
                let (v, _) = decode_varint(p.rest()).ok()??;
                let n = varint_len(v);
                rest = &tail[n..];
                return Some((property, Value::VarInt(v)));
            }
            Kind::Binary => Value::Binary(p.binary("").ok()?),
        };
        rest = p.rest();
        Some((property, value))
    })
}

/// A repeated property kept in its encoded form: the block it was decoded from (which may hold
/// other properties, skipped on iteration) or the entries an encoder built. `B` is `Bytes` for an
/// owned packet or `&[u8]` for a borrowed view.
#[derive(Clone, Default)]
struct Repeated<B> {
    raw: B,
    count: u32,
}

impl<B: AsRef<[u8]>> Repeated<B> {
    fn iter(&self, property: u8) -> impl Iterator<Item = Value<'_>> + '_ {
        walk(self.raw.as_ref())
            .filter(move |(p, _)| *p == property)
            .map(|(_, v)| v)
    }
}

/// User Properties (§3.1.2.11.8): name/value pairs, in order, repeats allowed. They are slices of
/// the packet and are read lazily, so holding any number of them allocates nothing.
#[derive(Clone, Default)]
pub struct UserProperties<B = Bytes>(Repeated<B>);

impl<B: AsRef<[u8]>> UserProperties<B> {
    /// How many pairs.
    pub fn len(&self) -> usize {
        self.0.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.count == 0
    }

    /// The pairs, in the order they were sent.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.0.iter(id::USER_PROPERTY).filter_map(|v| match v {
            Value::Pair(k, v) => Some((k, v)),
            _ => None,
        })
    }

    /// The value of the first pair named `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn visit<'s>(&'s self, f: &mut impl FnMut(u8, Value<'s>)) {
        if self.0.count > 0 {
            for v in self.0.iter(id::USER_PROPERTY) {
                f(id::USER_PROPERTY, v);
            }
        }
    }

    pub(crate) fn from_block(raw: B, count: u32) -> Self {
        Self(Repeated { raw, count })
    }
}

impl UserProperties<Bytes> {
    /// An empty list.
    pub const fn new() -> Self {
        Self(Repeated {
            raw: Bytes::new(),
            count: 0,
        })
    }

    /// Builds a list from pairs (copies them once into one buffer).
    ///
    /// # Errors
    /// [`EncodeError::FieldTooLong`](crate::EncodeError::FieldTooLong) for a name or value over
    /// 65,535 bytes, and [`EncodeError::NullCharacter`](crate::EncodeError::NullCharacter) for one
    /// holding U+0000: neither can be sent.
    pub fn from_pairs<'k>(
        pairs: impl IntoIterator<Item = (&'k str, &'k str)>,
    ) -> Result<Self, EncodeError> {
        let mut raw = Vec::new();
        let mut count = 0;
        for (k, v) in pairs {
            for s in [k, v] {
                crate::packet::check_str("User Property", s)?;
            }
            Value::Pair(k, v).write(id::USER_PROPERTY, &mut raw);
            count += 1;
        }
        Ok(Self(Repeated {
            raw: Bytes::from(raw),
            count,
        }))
    }
}

impl<'a> UserProperties<&'a [u8]> {
    /// The pairs, in the order they were sent, borrowed from the packet itself rather than from
    /// this value (so they outlive it: `view().user_properties()` is a temporary).
    pub fn pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        walk(self.0.raw)
            .filter(|(p, _)| *p == id::USER_PROPERTY)
            .filter_map(|(_, v)| match v {
                Value::Pair(k, v) => Some((k, v)),
                _ => None,
            })
    }

    pub(crate) fn to_owned_in(&self, frame: &Bytes) -> UserProperties<Bytes> {
        UserProperties(Repeated {
            raw: slice_in(frame, self.0.raw),
            count: self.0.count,
        })
    }
}

impl<B: AsRef<[u8]>, C: AsRef<[u8]>> PartialEq<UserProperties<C>> for UserProperties<B> {
    fn eq(&self, other: &UserProperties<C>) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<B: AsRef<[u8]>> Eq for UserProperties<B> {}

impl<B: AsRef<[u8]>> std::fmt::Debug for UserProperties<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Subscription Identifiers of a PUBLISH sent to a client (§3.3.2.3.8): one per matching
/// subscription that had one. Read lazily from the packet, like [`UserProperties`].
#[derive(Clone, Default)]
pub struct SubscriptionIds<B = Bytes>(Repeated<B>);

impl<B: AsRef<[u8]>> SubscriptionIds<B> {
    /// How many identifiers.
    pub fn len(&self) -> usize {
        self.0.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.count == 0
    }

    /// The identifiers, in order (each 1 to 268,435,455).
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0
            .iter(id::SUBSCRIPTION_IDENTIFIER)
            .filter_map(|v| match v {
                Value::VarInt(v) => Some(v),
                _ => None,
            })
    }

    fn visit<'s>(&'s self, f: &mut impl FnMut(u8, Value<'s>)) {
        if self.0.count > 0 {
            for v in self.0.iter(id::SUBSCRIPTION_IDENTIFIER) {
                f(id::SUBSCRIPTION_IDENTIFIER, v);
            }
        }
    }

    pub(crate) fn from_block(raw: B, count: u32) -> Self {
        Self(Repeated { raw, count })
    }
}

impl SubscriptionIds<Bytes> {
    /// Builds a list from identifiers.
    ///
    /// # Errors
    /// [`EncodeError::Invalid`](crate::EncodeError::Invalid) for an identifier outside
    /// 1 to 268,435,455.
    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> Result<Self, EncodeError> {
        let mut raw = Vec::new();
        let mut count = 0;
        for v in ids {
            if v == 0 || v > crate::varint::MAX_VARINT {
                return Err(EncodeError::Invalid {
                    packet: PacketType::Publish,
                    reason: "a Subscription Identifier is 1 to 268,435,455",
                });
            }
            Value::VarInt(v).write(id::SUBSCRIPTION_IDENTIFIER, &mut raw);
            count += 1;
        }
        Ok(Self(Repeated {
            raw: Bytes::from(raw),
            count,
        }))
    }
}

impl<B: AsRef<[u8]>, C: AsRef<[u8]>> PartialEq<SubscriptionIds<C>> for SubscriptionIds<B> {
    fn eq(&self, other: &SubscriptionIds<C>) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<B: AsRef<[u8]>> Eq for SubscriptionIds<B> {}

impl<B: AsRef<[u8]>> std::fmt::Debug for SubscriptionIds<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// `frame.slice_ref(sub)` that also accepts empty slices from anywhere.
pub(crate) fn slice_in(frame: &Bytes, sub: &[u8]) -> Bytes {
    if sub.is_empty() {
        Bytes::new()
    } else {
        frame.slice_ref(sub)
    }
}

/// Something that lists its properties for the encoder.
pub(crate) trait Encode {
    fn visit<'s>(&'s self, f: &mut impl FnMut(u8, Value<'s>));
}

/// The encoded size of a property block's contents (without its length prefix).
pub(crate) fn encoded_len(p: &impl Encode) -> usize {
    let mut n = 0;
    p.visit(&mut |_, v| n += v.encoded_len());
    n
}

/// Writes a property block: its length, then its properties.
pub(crate) fn write(p: &impl Encode, len: usize, buf: &mut impl BufMut) {
    put_varint(buf, len as u32);
    write_contents(p, buf);
}

/// Writes a block's properties, without the length.
pub(crate) fn write_contents(p: &impl Encode, buf: &mut impl BufMut) {
    p.visit(&mut |property, v| v.write(property, buf));
}

/// Checks one property value with the rules the decoder applies (see [`check_encode`]), before
/// it is written.
pub(crate) fn check_one(property: u8, v: &Value<'_>) -> Result<(), EncodeError> {
    let field = property_name(property).unwrap_or("property");
    let nul = |s: &str| memchr::memchr(0, s.as_bytes()).is_some();
    let too_long = |len: usize| (len > 65_535).then_some(EncodeError::FieldTooLong { field, len });
    let err = match *v {
        Value::Utf8(s) if nul(s) => Some(EncodeError::NullCharacter { field }),
        Value::Pair(k, v) if nul(k) || nul(v) => Some(EncodeError::NullCharacter { field }),
        Value::Utf8(s) => too_long(s.len()),
        Value::Binary(b) => too_long(b.len()),
        Value::Pair(k, v) => too_long(k.len()).or(too_long(v.len())),
        Value::VarInt(n) if n > crate::varint::MAX_VARINT => Some(EncodeError::Invalid {
            packet: PacketType::Subscribe,
            reason: "a Subscription Identifier is 1 to 268,435,455",
        }),
        _ => None,
    }
    .or_else(|| {
        check_value(property, v)
            .err()
            .map(|error| EncodeError::Rejected { error })
    });
    err.map_or(Ok(()), Err)
}

/// Checks a property block before anything is written, with the rules the decoder applies:
/// string and binary lengths within 65,535 bytes, no U+0000 in strings, value ranges (Maximum QoS,
/// the 0/1 properties, Subscription Identifier, Receive Maximum, Response Topic, ...), and
/// Authentication Data only with an Authentication Method.
pub(crate) fn check_encode(p: &impl Encode) -> Result<(), EncodeError> {
    let mut err = None;
    let mut method = false;
    let mut data = false;
    p.visit(&mut |property, v| {
        if err.is_some() {
            return;
        }
        err = check_one(property, &v).err();
        method |= property == id::AUTHENTICATION_METHOD;
        data |= property == id::AUTHENTICATION_DATA;
    });
    if err.is_none() && data && !method {
        err = Some(EncodeError::Rejected {
            error: DecodeError::AuthDataWithoutMethod,
        });
    }
    err.map_or(Ok(()), Err)
}

/// Counts and keeps the repeated properties while a block is parsed.
#[derive(Debug, Default)]
pub(crate) struct RepeatedCounts {
    pub(crate) user: u32,
    pub(crate) sub_ids: u32,
}

impl RepeatedCounts {
    pub(crate) fn count(&mut self, property: u8) {
        match property {
            id::USER_PROPERTY => self.user += 1,
            id::SUBSCRIPTION_IDENTIFIER => self.sub_ids += 1,
            _ => {}
        }
    }

    pub(crate) fn user_properties<'a>(&self, block: &'a [u8]) -> UserProperties<&'a [u8]> {
        UserProperties::from_block(if self.user > 0 { block } else { &[] }, self.user)
    }
}

pub(crate) use Value as PropValue;

/// User properties visit helper for packet property structs.
pub(crate) fn visit_user<'s, B: AsRef<[u8]>>(
    u: &'s UserProperties<B>,
    f: &mut impl FnMut(u8, Value<'s>),
) {
    u.visit(f);
}

/// Subscription identifiers visit helper.
pub(crate) fn visit_sub_ids<'s, B: AsRef<[u8]>>(
    s: &'s SubscriptionIds<B>,
    f: &mut impl FnMut(u8, Value<'s>),
) {
    s.visit(f);
}
