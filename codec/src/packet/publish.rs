//! PUBLISH (§3.3): the hot path. [`PublishRef`] is a borrowed view of a frame that decodes without
//! touching a reference count; [`Publish`] owns `Bytes` slices of its frame.

use std::num::NonZeroU16;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{check_len, own_bin, own_str, put_bin};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{
    self, Allowed, Encode, PropValue, RepeatedCounts, SubscriptionIds, UserProperties, id,
};
use crate::reader::Reader;
use crate::string::{ByteStr, str_from_checked};
use crate::topic::{TopicError, check_name_chars};
use crate::types::{PacketId, PacketType, ProtocolVersion, QoS, Role};
use crate::varint::{MAX_VARINT, put_varint, varint_len};

/// Payload Format Indicator (§3.3.2.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PayloadFormat {
    /// 0: unspecified bytes.
    Unspecified = 0,
    /// 1: UTF-8 encoded character data.
    Utf8 = 1,
}

/// A PUBLISH that owns its data as slices of the frame it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP: this may be a re-delivery. Always false at QoS 0.
    pub dup: bool,
    /// Quality of service.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic name; empty only in 5.0 when a Topic Alias stands for it.
    pub topic: ByteStr,
    /// Present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// Properties (5.0; empty in 3.1.1).
    pub properties: PublishProperties,
    /// Application message.
    pub payload: Bytes,
}

/// PUBLISH properties (§3.3.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Message Expiry Interval, seconds.
    pub message_expiry_interval_secs: Option<u32>,
    /// Topic Alias (never 0).
    pub topic_alias: Option<NonZeroU16>,
    /// Response Topic (a topic name).
    pub response_topic: Option<ByteStr>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in order.
    pub user_properties: UserProperties,
    /// Subscription Identifiers (server to client only).
    pub subscription_identifiers: SubscriptionIds,
    /// Content Type.
    pub content_type: Option<ByteStr>,
}

/// A PUBLISH borrowed from the buffer it was read into: decoding it allocates nothing and touches
/// no reference count. Use it where the data is copied onwards anyway (a Kafka batch, an Arrow
/// builder), or turn it into a [`Publish`] with [`PublishRef::to_owned_in`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRef<'a> {
    /// DUP flag.
    pub dup: bool,
    /// Quality of service.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (see [`Publish::topic`]).
    pub topic: &'a str,
    /// Present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// Properties.
    pub properties: PublishPropertiesRef<'a>,
    /// Application message.
    pub payload: &'a [u8],
}

/// Borrowed PUBLISH properties: the validated property block, read on demand. Decoding checks
/// every property once; the accessors walk the block again, which costs a few instructions per
/// property, and nothing when the block is empty. Equality compares the encoded blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishPropertiesRef<'a> {
    raw: &'a [u8],
    topic_alias: Option<NonZeroU16>,
    user: u32,
    sub_ids: u32,
}

impl<'a> PublishPropertiesRef<'a> {
    /// Whether the block is empty (always in 3.1.1).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The encoded property block, without its length.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    fn find(&self, property: u8) -> Option<PropValue<'a>> {
        properties::walk(self.raw)
            .find(|(p, _)| *p == property)
            .map(|(_, v)| v)
    }

    /// Topic Alias.
    pub fn topic_alias(&self) -> Option<NonZeroU16> {
        self.topic_alias
    }

    /// Payload Format Indicator.
    pub fn payload_format_indicator(&self) -> Option<PayloadFormat> {
        match self.find(id::PAYLOAD_FORMAT_INDICATOR)? {
            PropValue::Byte(0) => Some(PayloadFormat::Unspecified),
            _ => Some(PayloadFormat::Utf8),
        }
    }

    /// Message Expiry Interval, seconds.
    pub fn message_expiry_interval_secs(&self) -> Option<u32> {
        match self.find(id::MESSAGE_EXPIRY_INTERVAL)? {
            PropValue::FourByte(v) => Some(v),
            _ => None,
        }
    }

    /// Response Topic.
    pub fn response_topic(&self) -> Option<&'a str> {
        match self.find(id::RESPONSE_TOPIC)? {
            PropValue::Utf8(s) => Some(s),
            _ => None,
        }
    }

    /// Correlation Data.
    pub fn correlation_data(&self) -> Option<&'a [u8]> {
        match self.find(id::CORRELATION_DATA)? {
            PropValue::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// Content Type.
    pub fn content_type(&self) -> Option<&'a str> {
        match self.find(id::CONTENT_TYPE)? {
            PropValue::Utf8(s) => Some(s),
            _ => None,
        }
    }

    /// User Properties, in order.
    pub fn user_properties(&self) -> UserProperties<&'a [u8]> {
        UserProperties::from_block(if self.user > 0 { self.raw } else { &[] }, self.user)
    }

    /// Subscription Identifiers.
    pub fn subscription_identifiers(&self) -> SubscriptionIds<&'a [u8]> {
        SubscriptionIds::from_block(if self.sub_ids > 0 { self.raw } else { &[] }, self.sub_ids)
    }

    /// The owned properties, as slices of `frame` (which must contain this block).
    pub fn to_owned_in(&self, frame: &Bytes) -> PublishProperties {
        if self.raw.is_empty() {
            return PublishProperties::default();
        }
        PublishProperties {
            payload_format_indicator: self.payload_format_indicator(),
            message_expiry_interval_secs: self.message_expiry_interval_secs(),
            topic_alias: self.topic_alias,
            response_topic: self.response_topic().map(|s| own_str(frame, s)),
            correlation_data: self.correlation_data().map(|b| own_bin(frame, b)),
            user_properties: self.user_properties().to_owned_in(frame),
            subscription_identifiers: self.subscription_identifiers().to_owned_in(frame),
            content_type: self.content_type().map(|s| own_str(frame, s)),
        }
    }
}

impl<'a> PublishRef<'a> {
    /// An owned [`Publish`] whose fields are slices of `frame`, which must be the buffer this
    /// view was decoded from (the frame, or any `Bytes` that contains it). No bytes are copied.
    ///
    /// # Panics
    /// If the view does not point into `frame`.
    pub fn to_owned_in(&self, frame: &Bytes) -> Publish {
        Publish {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: own_str(frame, self.topic),
            packet_id: self.packet_id,
            properties: self.properties.to_owned_in(frame),
            payload: own_bin(frame, self.payload),
        }
    }

    /// Encodes this PUBLISH (for example to forward it unchanged).
    ///
    /// # Errors
    /// See [`EncodeError`].
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let f = Fields {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic,
            packet_id: self.packet_id,
            has_alias: self.properties.topic_alias.is_some(),
        };
        encode_publish(version, &f, &self.properties, self.payload, usize::MAX, buf)
    }
}

impl Publish {
    /// A QoS 0 message without properties.
    pub fn new(topic: ByteStr, payload: Bytes) -> Self {
        Self {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            packet_id: None,
            properties: PublishProperties::default(),
            payload,
        }
    }

    pub(crate) fn fields(&self) -> Fields<'_> {
        Fields {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            packet_id: self.packet_id,
            has_alias: self.properties.topic_alias.is_some(),
        }
    }

    /// Writes everything but the payload: fixed header, topic, packet id and properties. The
    /// payload follows as a separate slice, for vectored writes. Returns the payload length that
    /// the header announced.
    ///
    /// # Errors
    /// See [`EncodeError`].
    pub fn encode_header(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let f = self.fields();
        let (body, plen) = publish_encoded_len(version, &f, &self.properties, self.payload.len())?;
        write_header(version, &f, &self.properties, body, plen, buf);
        Ok(self.payload.len())
    }
}

/// The fixed fields of a PUBLISH, for the encoder.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    dup: bool,
    qos: QoS,
    retain: bool,
    topic: &'a str,
    packet_id: Option<PacketId>,
    has_alias: bool,
}

/// Decodes a PUBLISH body; `flags` is the low nibble of the first byte.
#[inline]
pub(crate) fn decode_publish<'a>(
    flags: u8,
    body: &'a [u8],
    version: ProtocolVersion,
    role: Role,
) -> Result<PublishRef<'a>, DecodeError> {
    let dup = flags & 0b1000 != 0;
    let retain = flags & 0b0001 != 0;
    let qos = match QoS::from_u8((flags >> 1) & 0b11) {
        Some(q) => q,
        None => return Err(DecodeError::PublishQos3),
    };
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::DupOnQos0);
    }
    let mut r = Reader::new(body, PacketType::Publish);
    let topic_bytes = r.binary("topic name")?;
    let topic = decode_topic_name(topic_bytes)?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(r.packet_id()?)
    };
    let mut properties = PublishPropertiesRef::default();
    if version == ProtocolVersion::V5 {
        if r.peek() == Some(0) {
            // The common case: no properties.
            r.skip(1);
        } else {
            let mut counts = RepeatedCounts::default();
            let mut alias = None;
            let block = properties::parse(&mut r, Allowed::PUBLISH, |property, v| {
                counts.count(property);
                if let (id::TOPIC_ALIAS, PropValue::TwoByte(v)) = (property, v) {
                    alias = NonZeroU16::new(v);
                }
            })?;
            if counts.sub_ids > 0 && role == Role::Server {
                return Err(DecodeError::SubscriptionIdFromClient);
            }
            properties = PublishPropertiesRef {
                raw: block,
                topic_alias: alias,
                user: counts.user,
                sub_ids: counts.sub_ids,
            };
        }
        if topic.is_empty() && properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopicWithoutAlias);
        }
    } else if topic.is_empty() {
        return Err(DecodeError::InvalidTopicName {
            error: TopicError::Empty,
        });
    }
    Ok(PublishRef {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

/// A topic name: UTF-8 without U+0000 and without wildcards, checked in one scan for `+`, `#`
/// and NUL followed by the UTF-8 check.
#[inline]
fn decode_topic_name(bytes: &[u8]) -> Result<&str, DecodeError> {
    if plain_ascii_name(bytes) {
        return Ok(str_from_checked(bytes));
    }
    let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    check_name_chars(s).map_err(|error| match error {
        TopicError::NullCharacter => DecodeError::NullCharacter,
        error => DecodeError::InvalidTopicName { error },
    })?;
    Ok(s)
}

/// Whether `b` is ASCII without `+`, `#` and NUL: then it is a valid topic name (or empty). One
/// pass, eight bytes at a time; topics with other bytes take the general path.
#[inline]
pub(crate) fn plain_ascii_name(b: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    #[inline(always)]
    fn has_zero_byte(x: u64) -> bool {
        x.wrapping_sub(LO) & !x & HI != 0
    }
    #[inline(always)]
    fn word_ok(w: u64) -> bool {
        w & HI == 0
            && !has_zero_byte(w)
            && !has_zero_byte(w ^ (LO * u64::from(b'+')))
            && !has_zero_byte(w ^ (LO * u64::from(b'#')))
    }
    #[inline(always)]
    fn word_at(b: &[u8], i: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(w)
    }
    let n = b.len();
    if n < 8 {
        return b
            .iter()
            .all(|&c| c < 0x80 && c != 0 && c != b'+' && c != b'#');
    }
    let mut i = 0;
    while i + 8 <= n {
        if !word_ok(word_at(b, i)) {
            return false;
        }
        i += 8;
    }
    // The tail, read as the last eight bytes (overlapping what was checked).
    i == n || word_ok(word_at(b, n - 8))
}

impl PublishProperties {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.payload_format_indicator.is_none()
            && self.message_expiry_interval_secs.is_none()
            && self.topic_alias.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user_properties.is_empty()
            && self.subscription_identifiers.is_empty()
            && self.content_type.is_none()
    }
}

impl Encode for PublishProperties {
    fn is_empty(&self) -> bool {
        PublishProperties::is_empty(self)
    }

    fn visit<'s>(&'s self, f: &mut impl FnMut(u8, PropValue<'s>)) {
        if let Some(v) = self.payload_format_indicator {
            f(id::PAYLOAD_FORMAT_INDICATOR, PropValue::Byte(v as u8));
        }
        if let Some(v) = self.message_expiry_interval_secs {
            f(id::MESSAGE_EXPIRY_INTERVAL, PropValue::FourByte(v));
        }
        if let Some(v) = self.topic_alias {
            f(id::TOPIC_ALIAS, PropValue::TwoByte(v.get()));
        }
        if let Some(v) = &self.response_topic {
            f(id::RESPONSE_TOPIC, PropValue::Utf8(v));
        }
        if let Some(v) = &self.correlation_data {
            f(id::CORRELATION_DATA, PropValue::Binary(v));
        }
        properties::visit_user(&self.user_properties, f);
        properties::visit_sub_ids(&self.subscription_identifiers, f);
        if let Some(v) = &self.content_type {
            f(id::CONTENT_TYPE, PropValue::Utf8(v));
        }
    }
}

impl Encode for PublishPropertiesRef<'_> {
    fn visit<'s>(&'s self, f: &mut impl FnMut(u8, PropValue<'s>)) {
        // A decoded block was validated: it is written back as it came.
        if !self.raw.is_empty() {
            f(0, PropValue::Raw(self.raw));
        }
    }

    fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

/// The remaining length of a PUBLISH and the length of its property block, after checking that
/// the decoder would accept it.
pub(crate) fn publish_encoded_len(
    version: ProtocolVersion,
    f: &Fields<'_>,
    props: &impl Encode,
    payload_len: usize,
) -> Result<(usize, usize), EncodeError> {
    const P: PacketType = PacketType::Publish;
    let invalid = |reason| Err(EncodeError::Invalid { packet: P, reason });
    match (f.qos, f.packet_id) {
        (QoS::AtMostOnce, Some(_)) => return invalid("a QoS 0 PUBLISH has no packet identifier"),
        (QoS::AtLeastOnce | QoS::ExactlyOnce, None) => {
            return invalid("a QoS 1 or 2 PUBLISH needs a packet identifier");
        }
        _ => {}
    }
    if f.dup && f.qos == QoS::AtMostOnce {
        return invalid("DUP must be 0 at QoS 0");
    }
    check_len("topic name", f.topic.len())?;
    if !plain_ascii_name(f.topic.as_bytes()) && check_name_chars(f.topic).is_err() {
        return invalid("the topic name contains '+', '#' or U+0000");
    }
    let mut len = 2 + f.topic.len() + payload_len;
    if f.packet_id.is_some() {
        len += 2;
    }
    let mut plen = 0;
    if version == ProtocolVersion::V5 {
        if f.topic.is_empty() && !f.has_alias {
            return invalid("an empty topic name needs a Topic Alias");
        }
        if !props.is_empty() {
            properties::check_encode(props)?;
            plen = properties::encoded_len(props);
        }
        len += varint_len(plen as u32) + plen;
    } else if f.topic.is_empty() {
        return invalid("the topic name is empty");
    }
    if len > MAX_VARINT as usize {
        return Err(EncodeError::PacketTooLarge {
            size: len,
            max: MAX_VARINT as usize,
        });
    }
    Ok((len, plen))
}

fn write_header(
    version: ProtocolVersion,
    f: &Fields<'_>,
    props: &impl Encode,
    body_len: usize,
    props_len: usize,
    buf: &mut BytesMut,
) {
    buf.reserve(5 + body_len);
    let first = 0x30 | (u8::from(f.dup) << 3) | ((f.qos as u8) << 1) | u8::from(f.retain);
    buf.put_u8(first);
    put_varint(buf, body_len as u32);
    put_bin(buf, f.topic.as_bytes());
    if let Some(id) = f.packet_id {
        buf.put_u16(id.get());
    }
    if version == ProtocolVersion::V5 {
        if props_len == 0 {
            buf.put_u8(0);
        } else {
            properties::write(props, props_len, buf);
        }
    }
}

/// Encodes a whole PUBLISH, refusing one whose frame would exceed `max_size` bytes.
pub(crate) fn encode_publish(
    version: ProtocolVersion,
    f: &Fields<'_>,
    props: &impl Encode,
    payload: &[u8],
    max_size: usize,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let (body, plen) = publish_encoded_len(version, f, props, payload.len())?;
    let size = 1 + varint_len(body as u32) + body;
    if size > max_size {
        return Err(EncodeError::PacketTooLarge {
            size,
            max: max_size,
        });
    }
    write_header(version, f, props, body, plen, buf);
    buf.put_slice(payload);
    Ok(())
}

/// Decodes a PUBLISH frame into an owned [`Publish`] that shares the frame: the topic (and the
/// property block, when there is one) are slices of it, and the payload is the frame itself,
/// advanced past the header, so only the topic adds a reference count.
#[inline]
pub(crate) fn decode_publish_owned(
    flags: u8,
    frame: Bytes,
    header_len: usize,
    version: ProtocolVersion,
    role: Role,
) -> Result<Publish, DecodeError> {
    let base = frame.as_ptr() as usize;
    let r = decode_publish(flags, &frame[header_len..], version, role)?;
    let topic_at = r.topic.as_ptr() as usize - base;
    let topic_len = r.topic.len();
    let payload_at = r.payload.as_ptr() as usize - base;
    let properties = r.properties.to_owned_in(&frame);
    let (dup, qos, retain, packet_id) = (r.dup, r.qos, r.retain, r.packet_id);
    let topic = if topic_len == 0 {
        ByteStr::new()
    } else {
        ByteStr::from_checked(frame.slice(topic_at..topic_at + topic_len))
    };
    let mut payload = frame;
    payload.advance(payload_at);
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::plain_ascii_name;
    use crate::topic::check_name_chars;

    /// The one-pass check agrees with the general path: UTF-8, then no `+`, `#` or NUL.
    fn general(b: &[u8]) -> bool {
        b.is_ascii() && std::str::from_utf8(b).is_ok_and(|s| check_name_chars(s).is_ok())
    }

    #[test]
    fn fast_topic_check_edges() {
        for t in [
            &b""[..],
            b"a",
            b"abcdefg",
            b"abcdefgh",
            b"abcdefghi",
            b"sensors/site-01/t-01",
        ] {
            assert!(plain_ascii_name(t), "{t:?}");
        }
        for t in [
            &b"+"[..],
            b"abcdefg#",
            b"abcdefgh+",
            b"a\0",
            b"abcdefghijklmno\0",
            b"caf\xc3\xa9",
        ] {
            assert!(!plain_ascii_name(t), "{t:?}");
        }
    }

    proptest! {
        #[test]
        fn fast_topic_check_agrees(b in proptest::collection::vec(prop_oneof![
            Just(b'+'), Just(b'#'), Just(0u8), Just(0x80u8), Just(0xffu8), 0x20u8..0x7f
        ], 0..40)) {
            prop_assert_eq!(plain_ascii_name(&b), general(&b));
        }
    }
}
