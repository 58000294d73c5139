//! PUBLISH (§3.3): the hot path. [`PublishRef`] is a borrowed view of a frame that decodes without
//! touching a reference count; [`Publish`] owns `Bytes` slices of its frame.

use std::num::NonZeroU16;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{check_len, own_bin, own_str, put_bin};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{
    self, Allowed, Encode, PropValue, RepeatedCounts, SubscriptionIds, UserProperties, id, slice_in,
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

/// PUBLISH properties (§3.3.2.3), owned: the validated property block, kept encoded and read on
/// demand, like [`PublishPropertiesRef`].
///
/// A decoded block is a slice of its frame (no copy, one reference count; none when the block is
/// empty), and encoding writes it back as it is. To send properties, fill a
/// [`PublishPropertyValues`] and [`build`](PublishPropertyValues::build) it: that checks the
/// values and encodes them once.
///
/// The accessors walk the block (a few instructions per property, nothing when it is empty); the
/// Topic Alias and the counts of User Properties and Subscription Identifiers are kept aside, so
/// reading them costs nothing. Equality compares values, not bytes: two blocks that hold the same
/// properties in another order are equal, as long as their User Properties and their
/// Subscription Identifiers come in the same order. `Debug` shows the values.
///
/// ```
/// use sluice_codec::{PublishPropertyValues, UserProperties};
///
/// let props = PublishPropertyValues {
///     content_type: Some("text/plain".into()),
///     user_properties: UserProperties::from_pairs([("unit", "celsius")])?,
///     ..PublishPropertyValues::default()
/// }
/// .build()?;
/// assert_eq!(props.content_type(), Some("text/plain"));
/// assert_eq!(props.user_properties().get("unit"), Some("celsius"));
/// # Ok::<(), sluice_codec::EncodeError>(())
/// ```
#[derive(Clone, Default)]
pub struct PublishProperties {
    /// The property block without its length; `Bytes::new()` when empty.
    raw: Bytes,
    topic_alias: Option<NonZeroU16>,
    user: u32,
    sub_ids: u32,
}

/// PUBLISH property values, to build [`PublishProperties`] for sending: fill in the fields and
/// call [`build`](Self::build). [`PublishProperties::to_values`] gives them back from a decoded
/// packet, without copying.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishPropertyValues {
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
/// property, and nothing when the block is empty. Equality and `Debug` are by value, as for
/// [`PublishProperties`].
#[derive(Clone, Copy, Default)]
pub struct PublishPropertiesRef<'a> {
    raw: &'a [u8],
    topic_alias: Option<NonZeroU16>,
    user: u32,
    sub_ids: u32,
}

/// The single-occurrence properties of a block, found in one walk.
#[derive(Debug, Default, PartialEq, Eq)]
struct Singles<'a> {
    payload_format_indicator: Option<PayloadFormat>,
    message_expiry_interval_secs: Option<u32>,
    response_topic: Option<&'a str>,
    correlation_data: Option<&'a [u8]>,
    content_type: Option<&'a str>,
}

fn payload_format(v: u8) -> PayloadFormat {
    if v == 0 {
        PayloadFormat::Unspecified
    } else {
        PayloadFormat::Utf8
    }
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

    fn singles(&self) -> Singles<'a> {
        let mut s = Singles::default();
        for (property, v) in properties::walk(self.raw) {
            match (property, v) {
                (id::PAYLOAD_FORMAT_INDICATOR, PropValue::Byte(v)) => {
                    s.payload_format_indicator = Some(payload_format(v));
                }
                (id::MESSAGE_EXPIRY_INTERVAL, PropValue::FourByte(v)) => {
                    s.message_expiry_interval_secs = Some(v);
                }
                (id::RESPONSE_TOPIC, PropValue::Utf8(v)) => s.response_topic = Some(v),
                (id::CORRELATION_DATA, PropValue::Binary(v)) => s.correlation_data = Some(v),
                (id::CONTENT_TYPE, PropValue::Utf8(v)) => s.content_type = Some(v),
                _ => {}
            }
        }
        s
    }

    /// Topic Alias.
    pub fn topic_alias(&self) -> Option<NonZeroU16> {
        self.topic_alias
    }

    /// Payload Format Indicator.
    pub fn payload_format_indicator(&self) -> Option<PayloadFormat> {
        match self.find(id::PAYLOAD_FORMAT_INDICATOR)? {
            PropValue::Byte(v) => Some(payload_format(v)),
            _ => None,
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

    /// The owned properties: the block as a slice of `frame`, which must contain it. No bytes
    /// are copied; an empty block takes no reference.
    ///
    /// # Panics
    /// If the block is not empty and does not point into `frame`.
    pub fn to_owned_in(&self, frame: &Bytes) -> PublishProperties {
        PublishProperties {
            raw: slice_in(frame, self.raw),
            topic_alias: self.topic_alias,
            user: self.user,
            sub_ids: self.sub_ids,
        }
    }

    /// Whether both blocks hold the same values (see [`PublishProperties`]).
    fn same_values(&self, other: &Self) -> bool {
        if self.raw == other.raw {
            return true;
        }
        // Both blocks hold only PUBLISH properties, each single-occurrence one at most once, in
        // minimal encodings: the same values take the same number of bytes.
        self.raw.len() == other.raw.len()
            && self.topic_alias == other.topic_alias
            && self.user == other.user
            && self.sub_ids == other.sub_ids
            && self.singles() == other.singles()
            && self.user_properties() == other.user_properties()
            && self.subscription_identifiers() == other.subscription_identifiers()
    }

    fn fmt_values(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.singles();
        let mut d = f.debug_struct(name);
        if let Some(v) = &s.payload_format_indicator {
            d.field("payload_format_indicator", v);
        }
        if let Some(v) = &s.message_expiry_interval_secs {
            d.field("message_expiry_interval_secs", v);
        }
        if let Some(v) = &self.topic_alias {
            d.field("topic_alias", v);
        }
        if let Some(v) = &s.response_topic {
            d.field("response_topic", v);
        }
        if let Some(v) = &s.correlation_data {
            // Copied for the `b"..."` form that `Bytes` prints (Debug only).
            d.field("correlation_data", &Bytes::copy_from_slice(v));
        }
        if self.user > 0 {
            d.field("user_properties", &self.user_properties());
        }
        if self.sub_ids > 0 {
            d.field("subscription_identifiers", &self.subscription_identifiers());
        }
        if let Some(v) = &s.content_type {
            d.field("content_type", v);
        }
        d.finish()
    }
}

impl PartialEq for PublishPropertiesRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.same_values(other)
    }
}

impl Eq for PublishPropertiesRef<'_> {}

impl std::fmt::Debug for PublishPropertiesRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fmt_values("PublishPropertiesRef", f)
    }
}

impl PublishProperties {
    /// No properties.
    pub const fn new() -> Self {
        Self {
            raw: Bytes::new(),
            topic_alias: None,
            user: 0,
            sub_ids: 0,
        }
    }

    /// Checks `values` with the rules the decoder applies and encodes them once.
    ///
    /// # Errors
    /// [`EncodeError::FieldTooLong`], [`EncodeError::NullCharacter`], [`EncodeError::Invalid`] or
    /// [`EncodeError::Rejected`] for a value the peer would refuse (a Response Topic with
    /// wildcards, a Subscription Identifier out of range, ...), and
    /// [`EncodeError::PacketTooLarge`] for a block longer than a packet can be.
    pub fn from_values(values: &PublishPropertyValues) -> Result<Self, EncodeError> {
        properties::check_encode(values)?;
        let len = properties::encoded_len(values);
        if len > MAX_VARINT as usize {
            return Err(EncodeError::PacketTooLarge {
                size: len,
                max: MAX_VARINT as usize,
            });
        }
        if len == 0 {
            return Ok(Self::new());
        }
        let mut raw = Vec::with_capacity(len);
        properties::write_contents(values, &mut raw);
        debug_assert_eq!(raw.len(), len);
        Ok(Self {
            raw: Bytes::from(raw),
            topic_alias: values.topic_alias,
            user: values.user_properties.len() as u32,
            sub_ids: values.subscription_identifiers.len() as u32,
        })
    }

    /// The values, as slices of the block (no copy): edit them and [`build`] again to change a
    /// property.
    ///
    /// [`build`]: PublishPropertyValues::build
    pub fn to_values(&self) -> PublishPropertyValues {
        let s = self.view().singles();
        PublishPropertyValues {
            payload_format_indicator: s.payload_format_indicator,
            message_expiry_interval_secs: s.message_expiry_interval_secs,
            topic_alias: self.topic_alias,
            response_topic: s.response_topic.map(|v| self.str_bytes(v)),
            correlation_data: s.correlation_data.map(|v| self.raw.slice_ref(v)),
            user_properties: self.user_properties_bytes(),
            subscription_identifiers: SubscriptionIds::from_block(
                if self.sub_ids > 0 {
                    self.raw.clone()
                } else {
                    Bytes::new()
                },
                self.sub_ids,
            ),
            content_type: s.content_type.map(|v| self.str_bytes(v)),
        }
    }

    /// A borrowed view of these properties.
    pub fn view(&self) -> PublishPropertiesRef<'_> {
        PublishPropertiesRef {
            raw: &self.raw,
            topic_alias: self.topic_alias,
            user: self.user,
            sub_ids: self.sub_ids,
        }
    }

    /// Whether there are no properties (always in 3.1.1).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The encoded property block, without its length.
    pub fn as_bytes(&self) -> &Bytes {
        &self.raw
    }

    /// A string found in the block, as a slice of it.
    fn str_bytes(&self, s: &str) -> ByteStr {
        ByteStr::from_checked(self.raw.slice_ref(s.as_bytes()))
    }

    /// Topic Alias.
    pub fn topic_alias(&self) -> Option<NonZeroU16> {
        self.topic_alias
    }

    /// Payload Format Indicator.
    pub fn payload_format_indicator(&self) -> Option<PayloadFormat> {
        self.view().payload_format_indicator()
    }

    /// Message Expiry Interval, seconds.
    pub fn message_expiry_interval_secs(&self) -> Option<u32> {
        self.view().message_expiry_interval_secs()
    }

    /// Response Topic.
    pub fn response_topic(&self) -> Option<&str> {
        self.view().response_topic()
    }

    /// Response Topic, as a slice of the block (no copy).
    pub fn response_topic_bytes(&self) -> Option<ByteStr> {
        self.response_topic().map(|s| self.str_bytes(s))
    }

    /// Correlation Data.
    pub fn correlation_data(&self) -> Option<&[u8]> {
        self.view().correlation_data()
    }

    /// Correlation Data, as a slice of the block (no copy).
    pub fn correlation_data_bytes(&self) -> Option<Bytes> {
        self.correlation_data().map(|b| self.raw.slice_ref(b))
    }

    /// Content Type.
    pub fn content_type(&self) -> Option<&str> {
        self.view().content_type()
    }

    /// Content Type, as a slice of the block (no copy).
    pub fn content_type_bytes(&self) -> Option<ByteStr> {
        self.content_type().map(|s| self.str_bytes(s))
    }

    /// User Properties, in order.
    pub fn user_properties(&self) -> UserProperties<&[u8]> {
        self.view().user_properties()
    }

    /// User Properties that share the block (no copy), to keep beyond this packet.
    pub fn user_properties_bytes(&self) -> UserProperties {
        if self.user == 0 {
            return UserProperties::new();
        }
        UserProperties::from_block(self.raw.clone(), self.user)
    }

    /// Subscription Identifiers, in order.
    pub fn subscription_identifiers(&self) -> SubscriptionIds<&[u8]> {
        self.view().subscription_identifiers()
    }
}

impl PartialEq for PublishProperties {
    fn eq(&self, other: &Self) -> bool {
        self.view().same_values(&other.view())
    }
}

impl Eq for PublishProperties {}

impl std::fmt::Debug for PublishProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.view().fmt_values("PublishProperties", f)
    }
}

impl TryFrom<&PublishPropertyValues> for PublishProperties {
    type Error = EncodeError;

    fn try_from(values: &PublishPropertyValues) -> Result<Self, EncodeError> {
        Self::from_values(values)
    }
}

impl PublishPropertyValues {
    /// Checks the values and encodes them: see [`PublishProperties::from_values`].
    ///
    /// # Errors
    /// See [`PublishProperties::from_values`].
    pub fn build(&self) -> Result<PublishProperties, EncodeError> {
        PublishProperties::from_values(self)
    }
}

/// Writes a PUBLISH property block straight into a scratch buffer, one property at a time, for a
/// carrier that maps its own metadata to MQTT (a Kafka record's key, timestamp and headers): no
/// [`PublishPropertyValues`] with owned strings is built first. Each value is checked with the
/// decoder's rules as it is added ([`PublishProperties::from_values`] has the list); a refused
/// one leaves the block as it was, so the caller may leave it out and go on. A property that
/// may appear once is refused the second time ([`DecodeError::DuplicateProperty`]).
///
/// The buffer is meant to be an arena: [`finish`](Self::finish) splits the block off its front
/// (no copy), and the buffer keeps its spare capacity for the next block.
#[derive(Debug)]
pub struct PublishPropertiesWriter<'b> {
    buf: &'b mut BytesMut,
    user: u32,
    /// Bit per single property written (its identifier's bit).
    singles: u64,
}

impl<'b> PublishPropertiesWriter<'b> {
    /// A writer into `buf`, which it clears first.
    pub fn new(buf: &'b mut BytesMut) -> Self {
        buf.clear();
        Self {
            buf,
            user: 0,
            singles: 0,
        }
    }

    fn put(&mut self, property: u8, v: PropValue<'_>) -> Result<(), EncodeError> {
        if property != id::USER_PROPERTY {
            let bit = 1u64 << property;
            if self.singles & bit != 0 {
                return Err(EncodeError::Rejected {
                    error: DecodeError::DuplicateProperty { id: property },
                });
            }
            properties::check_one(property, &v)?;
            self.singles |= bit;
        } else {
            properties::check_one(property, &v)?;
            self.user += 1;
        }
        let len = self.buf.len() + v.encoded_len();
        if len > MAX_VARINT as usize {
            return Err(EncodeError::PacketTooLarge {
                size: len,
                max: MAX_VARINT as usize,
            });
        }
        v.write(property, self.buf);
        Ok(())
    }

    /// Payload Format Indicator.
    ///
    /// # Errors
    /// A second one.
    pub fn payload_format_indicator(&mut self, f: PayloadFormat) -> Result<(), EncodeError> {
        self.put(id::PAYLOAD_FORMAT_INDICATOR, PropValue::Byte(f as u8))
    }

    /// Message Expiry Interval, seconds.
    ///
    /// # Errors
    /// A second one.
    pub fn message_expiry_interval(&mut self, secs: u32) -> Result<(), EncodeError> {
        self.put(id::MESSAGE_EXPIRY_INTERVAL, PropValue::FourByte(secs))
    }

    /// Response Topic: a topic name (not empty, no wildcards, no U+0000, at most 65,535 bytes).
    ///
    /// # Errors
    /// A value the decoder would refuse, or a second one.
    pub fn response_topic(&mut self, topic: &str) -> Result<(), EncodeError> {
        self.put(id::RESPONSE_TOPIC, PropValue::Utf8(topic))
    }

    /// Correlation Data (at most 65,535 bytes).
    ///
    /// # Errors
    /// Too long, or a second one.
    pub fn correlation_data(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        self.put(id::CORRELATION_DATA, PropValue::Binary(data))
    }

    /// Content Type.
    ///
    /// # Errors
    /// A value the decoder would refuse, or a second one.
    pub fn content_type(&mut self, value: &str) -> Result<(), EncodeError> {
        self.put(id::CONTENT_TYPE, PropValue::Utf8(value))
    }

    /// One User Property (they keep the order they are written in; names may repeat).
    ///
    /// # Errors
    /// A name or value the decoder would refuse (U+0000, longer than 65,535 bytes).
    pub fn user_property(&mut self, key: &str, value: &str) -> Result<(), EncodeError> {
        self.put(id::USER_PROPERTY, PropValue::Pair(key, value))
    }

    /// The block written, split off the buffer.
    pub fn finish(self) -> PublishProperties {
        if self.buf.is_empty() {
            return PublishProperties::new();
        }
        PublishProperties {
            raw: self.buf.split().freeze(),
            topic_alias: None,
            user: self.user,
            sub_ids: 0,
        }
    }
}

impl Encode for PublishPropertyValues {
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
            properties: self.properties.raw,
            has_alias: self.properties.topic_alias.is_some(),
        };
        encode_publish(version, &f, self.payload, usize::MAX, buf)
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
            properties: PublishProperties::new(),
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
            properties: &self.properties.raw,
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
        let body = publish_encoded_len(version, &f, self.payload.len())?;
        write_header(version, &f, body, buf);
        Ok(self.payload.len())
    }
}

/// The fields of a PUBLISH, for the encoder; `properties` is a validated property block (decoded,
/// or built by [`PublishProperties::from_values`]), written as it is.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    dup: bool,
    qos: QoS,
    retain: bool,
    topic: &'a str,
    packet_id: Option<PacketId>,
    properties: &'a [u8],
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

/// The remaining length of a PUBLISH, after checking that the decoder would accept it. The
/// property block needs no check: it was validated when it was decoded or built.
pub(crate) fn publish_encoded_len(
    version: ProtocolVersion,
    f: &Fields<'_>,
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
    if !plain_ascii_name(f.topic.as_bytes()) && check_name_chars(f.topic).is_err() {
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
        // A block longer than a varint can say fails the total length check below.
        let plen = f.properties.len();
        len += varint_len(plen.min(MAX_VARINT as usize) as u32) + plen;
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

fn write_header(version: ProtocolVersion, f: &Fields<'_>, body_len: usize, buf: &mut BytesMut) {
    buf.reserve(5 + body_len);
    let first = 0x30 | (u8::from(f.dup) << 3) | ((f.qos as u8) << 1) | u8::from(f.retain);
    buf.put_u8(first);
    put_varint(buf, body_len as u32);
    put_bin(buf, f.topic.as_bytes());
    if let Some(id) = f.packet_id {
        buf.put_u16(id.get());
    }
    if version == ProtocolVersion::V5 {
        if f.properties.is_empty() {
            buf.put_u8(0);
        } else {
            put_varint(buf, f.properties.len() as u32);
            buf.put_slice(f.properties);
        }
    }
}

/// Encodes a whole PUBLISH, refusing one whose frame would exceed `max_size` bytes.
pub(crate) fn encode_publish(
    version: ProtocolVersion,
    f: &Fields<'_>,
    payload: &[u8],
    max_size: usize,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    encode_publish_header(version, f, payload.len(), max_size, buf)?;
    buf.put_slice(payload);
    Ok(())
}

/// Encodes a PUBLISH up to its payload (which has `payload_len` bytes and follows separately),
/// refusing one whose frame would exceed `max_size` bytes.
#[inline]
pub(crate) fn encode_publish_header(
    version: ProtocolVersion,
    f: &Fields<'_>,
    payload_len: usize,
    max_size: usize,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let body = publish_encoded_len(version, f, payload_len)?;
    let size = 1 + varint_len(body as u32) + body;
    if size > max_size {
        return Err(EncodeError::PacketTooLarge {
            size,
            max: max_size,
        });
    }
    write_header(version, f, body, buf);
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
    use std::num::NonZeroU16;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::properties::{SubscriptionIds, UserProperties};

    #[test]
    fn the_writer_builds_in_place_what_from_values_builds_and_refuses_what_the_decoder_would() {
        let mut arena = BytesMut::with_capacity(4096);
        let mut w = PublishPropertiesWriter::new(&mut arena);
        w.user_property("Key", "k1").unwrap();
        w.content_type("application/json").unwrap();
        w.correlation_data(&[0, 0xff, 1]).unwrap();
        w.response_topic("replies/x").unwrap();
        w.payload_format_indicator(PayloadFormat::Utf8).unwrap();
        w.message_expiry_interval(60).unwrap();
        w.user_property("tag", "a").unwrap();
        w.user_property("tag", "b").unwrap();
        // Refused values leave the block as it was.
        assert!(matches!(
            w.user_property("nul", "a\0b"),
            Err(EncodeError::NullCharacter { .. })
        ));
        assert!(matches!(
            w.response_topic("a/+"),
            Err(EncodeError::Rejected { .. })
        ));
        assert!(matches!(
            w.content_type("again"),
            Err(EncodeError::Rejected {
                error: DecodeError::DuplicateProperty { id: 0x03 }
            })
        ));
        let long = "x".repeat(65_536);
        assert!(matches!(
            w.user_property("long", &long),
            Err(EncodeError::FieldTooLong { .. })
        ));
        let p = w.finish();
        let capacity_left = arena.capacity();
        assert!(
            arena.is_empty() && capacity_left > 0,
            "the arena keeps its room"
        );
        let v = p.to_values();
        assert_eq!(v.content_type.as_deref(), Some("application/json"));
        assert_eq!(v.correlation_data.as_deref(), Some(&[0, 0xff, 1][..]));
        assert_eq!(v.response_topic.as_deref(), Some("replies/x"));
        assert_eq!(v.payload_format_indicator, Some(PayloadFormat::Utf8));
        assert_eq!(v.message_expiry_interval_secs, Some(60));
        let pairs: Vec<_> = v.user_properties.iter().collect();
        assert_eq!(pairs, [("Key", "k1"), ("tag", "a"), ("tag", "b")]);
        // The same block as from_values, and the decoder reads it back equal.
        assert_eq!(p, v.build().unwrap());
        let decoded = decode_owned(&{
            let mut b = vec![];
            b.extend_from_slice(p.as_bytes());
            b
        });
        assert_eq!(decoded.properties, p);
        // Nothing written: an empty block.
        assert!(PublishPropertiesWriter::new(&mut arena).finish().is_empty());
    }

    /// A 5.0 QoS 0 PUBLISH to `t` with this property block (without its length) and payload
    /// `x`, decoded as a client with the owned path.
    fn decode_owned(block: &[u8]) -> Publish {
        let mut frame = vec![0x30, 0, 0, 1, b't'];
        frame.push(u8::try_from(block.len()).expect("short block"));
        frame.extend_from_slice(block);
        frame.push(b'x');
        frame[1] = u8::try_from(frame.len() - 2).expect("short frame");
        let frame = Bytes::from(frame);
        decode_publish_owned(0, frame, 2, ProtocolVersion::V5, Role::Client).expect("valid")
    }

    fn utf8(property: u8, s: &str) -> Vec<u8> {
        let mut v = vec![property];
        v.extend_from_slice(&u16::try_from(s.len()).expect("short").to_be_bytes());
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn pair(k: &str, v: &str) -> Vec<u8> {
        let mut p = utf8(id::USER_PROPERTY, k);
        p.extend_from_slice(&utf8(0, v)[1..]);
        p
    }

    fn values() -> PublishPropertyValues {
        PublishPropertyValues {
            payload_format_indicator: Some(PayloadFormat::Utf8),
            message_expiry_interval_secs: Some(3600),
            topic_alias: NonZeroU16::new(5),
            response_topic: Some("reply/x".into()),
            correlation_data: Some(Bytes::from_static(b"\x00corr")),
            user_properties: UserProperties::from_pairs([("a", "1"), ("b", "2"), ("a", "3")])
                .expect("valid"),
            subscription_identifiers: SubscriptionIds::from_ids([7, 300]).expect("valid"),
            content_type: Some("text/plain".into()),
        }
    }

    #[test]
    fn values_build_read_back_and_rebuild() {
        let v = values();
        let p = v.build().expect("valid");
        assert_eq!(p.payload_format_indicator(), Some(PayloadFormat::Utf8));
        assert_eq!(p.message_expiry_interval_secs(), Some(3600));
        assert_eq!(p.topic_alias(), NonZeroU16::new(5));
        assert_eq!(p.response_topic(), Some("reply/x"));
        assert_eq!(p.correlation_data(), Some(&b"\x00corr"[..]));
        assert_eq!(p.content_type(), Some("text/plain"));
        let user = p.user_properties();
        let pairs: Vec<_> = user.iter().collect();
        assert_eq!(pairs, [("a", "1"), ("b", "2"), ("a", "3")]);
        assert_eq!(p.user_properties().get("a"), Some("1"));
        let ids = p.subscription_identifiers();
        let ids: Vec<_> = ids.iter().collect();
        assert_eq!(ids, [7, 300]);
        assert_eq!(p.to_values(), v);
        assert_eq!(PublishProperties::try_from(&v).expect("valid"), p);

        // The `_bytes` accessors and `to_values` share the block.
        let range = p.as_bytes().as_ptr_range();
        for b in [
            p.response_topic_bytes().expect("set").into_bytes(),
            p.content_type_bytes().expect("set").into_bytes(),
            p.correlation_data_bytes().expect("set"),
        ] {
            assert!(range.contains(&b.as_ptr()));
        }
        assert_eq!(p.user_properties_bytes(), p.user_properties());

        assert!(
            PublishPropertyValues::default()
                .build()
                .expect("empty")
                .is_empty()
        );
        assert_eq!(PublishProperties::new(), PublishProperties::default());
    }

    #[test]
    fn building_checks_values_like_the_decoder() {
        let refused = |v: PublishPropertyValues| v.build().expect_err("refused");
        assert!(matches!(
            refused(PublishPropertyValues {
                response_topic: Some("reply/+".into()),
                ..Default::default()
            }),
            EncodeError::Rejected {
                error: DecodeError::InvalidResponseTopic { .. }
            }
        ));
        assert!(matches!(
            refused(PublishPropertyValues {
                content_type: Some(ByteStr::from(String::from("a\0b"))),
                ..Default::default()
            }),
            EncodeError::NullCharacter { .. }
        ));
        assert!(matches!(
            refused(PublishPropertyValues {
                correlation_data: Some(Bytes::from(vec![0; 65_536])),
                ..Default::default()
            }),
            EncodeError::FieldTooLong { len: 65_536, .. }
        ));
    }

    /// The properties of [`values`], in another order than the builder's, with the User
    /// Properties in the order given.
    fn reordered_block(user: [(&str, &str); 3]) -> Vec<u8> {
        let mut block = Vec::new();
        block.extend_from_slice(&pair(user[0].0, user[0].1));
        block.extend_from_slice(&utf8(id::CONTENT_TYPE, "text/plain"));
        block.extend_from_slice(&[id::SUBSCRIPTION_IDENTIFIER, 7]);
        block.extend_from_slice(&pair(user[1].0, user[1].1));
        block.extend_from_slice(&[id::TOPIC_ALIAS, 0, 5]);
        block.extend_from_slice(&utf8(id::RESPONSE_TOPIC, "reply/x"));
        block.extend_from_slice(&[id::SUBSCRIPTION_IDENTIFIER, 0xAC, 0x02]);
        block.extend_from_slice(&[id::MESSAGE_EXPIRY_INTERVAL, 0, 0, 0x0E, 0x10]);
        block.extend_from_slice(&pair(user[2].0, user[2].1));
        block.extend_from_slice(&[id::CORRELATION_DATA, 0, 5, 0, b'c', b'o', b'r', b'r']);
        block.extend_from_slice(&[id::PAYLOAD_FORMAT_INDICATOR, 1]);
        block
    }

    #[test]
    fn equality_is_by_value() {
        let built = values().build().expect("valid");
        // The same values, in another order (the repeated ones in the same order).
        let decoded = decode_owned(&reordered_block([("a", "1"), ("b", "2"), ("a", "3")]));
        assert_ne!(decoded.properties.as_bytes(), built.as_bytes());
        assert_eq!(decoded.properties, built);
        assert_eq!(decoded.properties.view(), built.view());
        assert_eq!(format!("{:?}", decoded.properties), format!("{built:?}"));

        // User Properties in another order differ.
        let swapped = decode_owned(&reordered_block([("a", "3"), ("b", "2"), ("a", "1")]));
        assert_ne!(swapped.properties, built);
        assert_ne!(swapped.properties.view(), built.view());

        // One value changed.
        let mut other = values();
        other.message_expiry_interval_secs = Some(3601);
        assert_ne!(other.build().expect("valid"), built);
        other = values();
        other.subscription_identifiers = SubscriptionIds::from_ids([300, 7]).expect("valid");
        assert_ne!(other.build().expect("valid"), built);
        other = values();
        other.topic_alias = NonZeroU16::new(6);
        assert_ne!(other.build().expect("valid"), built);
        assert_ne!(PublishProperties::new(), built);
    }

    #[test]
    fn debug_shows_values() {
        let p = PublishPropertyValues {
            topic_alias: NonZeroU16::new(3),
            user_properties: UserProperties::from_pairs([("k", "v")]).expect("valid"),
            content_type: Some("json".into()),
            ..Default::default()
        }
        .build()
        .expect("valid");
        assert_eq!(
            format!("{p:?}"),
            r#"PublishProperties { topic_alias: 3, user_properties: [("k", "v")], content_type: "json" }"#
        );
        assert_eq!(
            format!("{:?}", PublishProperties::new()),
            "PublishProperties"
        );
    }

    /// An empty block takes no reference to the frame; a non-empty one takes one.
    #[test]
    fn owned_decode_references() {
        let mut p = decode_owned(&[]);
        assert!(p.properties.is_empty());
        p.topic = ByteStr::new();
        assert!(p.payload.is_unique());

        let mut p = decode_owned(&[id::PAYLOAD_FORMAT_INDICATOR, 0]);
        assert_eq!(
            p.properties.payload_format_indicator(),
            Some(PayloadFormat::Unspecified)
        );
        p.topic = ByteStr::new();
        assert!(!p.payload.is_unique());
        p.properties = PublishProperties::new();
        assert!(p.payload.is_unique());
    }

    /// Encoding writes the block as it is: a peer's order survives a round trip.
    #[test]
    fn encode_writes_the_block_unchanged() {
        let block = [&[id::CONTENT_TYPE, 0, 1, b'j'][..], &pair("k", "v")].concat();
        let p = decode_owned(&block);
        let mut buf = BytesMut::new();
        let f = p.fields();
        encode_publish(ProtocolVersion::V5, &f, &p.payload, usize::MAX, &mut buf).expect("valid");
        assert_eq!(decode_owned(&block).properties.as_bytes(), &block[..]);
        assert_eq!(&buf[6..6 + block.len()], &block[..]);
    }

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
