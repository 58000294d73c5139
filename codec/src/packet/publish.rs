//! PUBLISH (§3.3): the hot path. [`PublishRef`] is a borrowed view of a frame that decodes without
//! touching a reference count; [`Publish`] owns `Bytes` slices of its frame.

use bytes::{BufMut, Bytes, BytesMut};

use super::{check_len, own_bin, own_str, put_bin};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{
    self, Allowed, Encode, PropValue, RepeatedCounts, SubscriptionIds, UserProperties, id,
};
use crate::reader::Reader;
use crate::string::ByteStr;
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
    pub topic_alias: Option<std::num::NonZeroU16>,
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

/// Borrowed PUBLISH properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishPropertiesRef<'a> {
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Message Expiry Interval, seconds.
    pub message_expiry_interval_secs: Option<u32>,
    /// Topic Alias.
    pub topic_alias: Option<std::num::NonZeroU16>,
    /// Response Topic.
    pub response_topic: Option<&'a str>,
    /// Correlation Data.
    pub correlation_data: Option<&'a [u8]>,
    /// User Properties.
    pub user_properties: UserProperties<&'a [u8]>,
    /// Subscription Identifiers.
    pub subscription_identifiers: SubscriptionIds<&'a [u8]>,
    /// Content Type.
    pub content_type: Option<&'a str>,
}

impl<'a> PublishRef<'a> {
    /// An owned [`Publish`] whose fields are slices of `frame`, which must be the buffer this
    /// view was decoded from (the frame, or any `Bytes` that contains it). No bytes are copied.
    ///
    /// # Panics
    /// If the view does not point into `frame`.
    pub fn to_owned_in(&self, frame: &Bytes) -> Publish {
        let p = &self.properties;
        Publish {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: own_str(frame, self.topic),
            packet_id: self.packet_id,
            properties: PublishProperties {
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval_secs: p.message_expiry_interval_secs,
                topic_alias: p.topic_alias,
                response_topic: p.response_topic.map(|s| own_str(frame, s)),
                correlation_data: p.correlation_data.map(|b| own_bin(frame, b)),
                user_properties: p.user_properties.to_owned_in(frame),
                subscription_identifiers: p.subscription_identifiers.to_owned_in(frame),
                content_type: p.content_type.map(|s| own_str(frame, s)),
            },
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
        encode_publish(version, &f, &self.properties, self.payload, buf)
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
        let body = publish_encoded_len(version, &f, &self.properties, self.payload.len())?;
        write_header(version, &f, &self.properties, body, buf);
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
        let mut counts = RepeatedCounts::default();
        let p = &mut properties;
        let block = properties::parse(&mut r, Allowed::PUBLISH, |property, v| {
            counts.count(property);
            match (property, v) {
                (id::PAYLOAD_FORMAT_INDICATOR, PropValue::Byte(b)) => {
                    p.payload_format_indicator = Some(if b == 0 {
                        PayloadFormat::Unspecified
                    } else {
                        PayloadFormat::Utf8
                    });
                }
                (id::MESSAGE_EXPIRY_INTERVAL, PropValue::FourByte(v)) => {
                    p.message_expiry_interval_secs = Some(v);
                }
                (id::TOPIC_ALIAS, PropValue::TwoByte(v)) => {
                    p.topic_alias = std::num::NonZeroU16::new(v);
                }
                (id::RESPONSE_TOPIC, PropValue::Utf8(s)) => p.response_topic = Some(s),
                (id::CORRELATION_DATA, PropValue::Binary(b)) => p.correlation_data = Some(b),
                (id::CONTENT_TYPE, PropValue::Utf8(s)) => p.content_type = Some(s),
                _ => {}
            }
        })?;
        if counts.sub_ids > 0 && role == Role::Server {
            return Err(DecodeError::SubscriptionIdFromClient);
        }
        properties.user_properties = counts.user_properties(block);
        properties.subscription_identifiers = SubscriptionIds::from_block(
            if counts.sub_ids > 0 { block } else { &[] },
            counts.sub_ids,
        );
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
    let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    check_name_chars(s).map_err(|error| match error {
        TopicError::NullCharacter => DecodeError::NullCharacter,
        error => DecodeError::InvalidTopicName { error },
    })?;
    Ok(s)
}

impl Encode for PublishProperties {
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
        if let Some(v) = self.payload_format_indicator {
            f(id::PAYLOAD_FORMAT_INDICATOR, PropValue::Byte(v as u8));
        }
        if let Some(v) = self.message_expiry_interval_secs {
            f(id::MESSAGE_EXPIRY_INTERVAL, PropValue::FourByte(v));
        }
        if let Some(v) = self.topic_alias {
            f(id::TOPIC_ALIAS, PropValue::TwoByte(v.get()));
        }
        if let Some(v) = self.response_topic {
            f(id::RESPONSE_TOPIC, PropValue::Utf8(v));
        }
        if let Some(v) = self.correlation_data {
            f(id::CORRELATION_DATA, PropValue::Binary(v));
        }
        properties::visit_user(&self.user_properties, f);
        properties::visit_sub_ids(&self.subscription_identifiers, f);
        if let Some(v) = self.content_type {
            f(id::CONTENT_TYPE, PropValue::Utf8(v));
        }
    }
}

/// The remaining length of a PUBLISH, after checking that the decoder would accept it.
pub(crate) fn publish_encoded_len(
    version: ProtocolVersion,
    f: &Fields<'_>,
    props: &impl Encode,
    payload_len: usize,
) -> Result<usize, EncodeError> {
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
    if check_name_chars(f.topic).is_err() {
        return invalid("the topic name contains '+', '#' or U+0000");
    }
    let mut len = 2 + f.topic.len() + payload_len;
    if f.packet_id.is_some() {
        len += 2;
    }
    if version == ProtocolVersion::V5 {
        if f.topic.is_empty() && !f.has_alias {
            return invalid("an empty topic name needs a Topic Alias");
        }
        properties::check_encode(props)?;
        let plen = properties::encoded_len(props);
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
    Ok(len)
}

fn write_header(
    version: ProtocolVersion,
    f: &Fields<'_>,
    props: &impl Encode,
    body_len: usize,
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
        let plen = properties::encoded_len(props);
        properties::write(props, plen, buf);
    }
}

/// Encodes a whole PUBLISH.
pub(crate) fn encode_publish(
    version: ProtocolVersion,
    f: &Fields<'_>,
    props: &impl Encode,
    payload: &[u8],
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let body = publish_encoded_len(version, f, props, payload.len())?;
    write_header(version, f, props, body, buf);
    buf.put_slice(payload);
    Ok(())
}
