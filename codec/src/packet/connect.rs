//! CONNECT (§3.1): the first packet a client sends. Its protocol level fixes the connection's
//! version.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{BufMut, Bytes, BytesMut};

use super::{check_len, check_str, own_bin, own_str, put_bin};
use crate::error::{DecodeError, EncodeError};
use crate::packet::PayloadFormat;
use crate::properties::{self, Allowed, Encode, PropValue, RepeatedCounts, UserProperties, id};
use crate::reader::Reader;
use crate::string::ByteStr;
use crate::topic::{TopicError, check_name_chars};
use crate::types::{PacketType, ProtocolVersion, QoS};
use crate::varint::varint_len;

/// CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version (level 4 or 5).
    pub protocol: ProtocolVersion,
    /// Clean Start (5.0) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep Alive, seconds; 0 turns it off.
    pub keep_alive_secs: u16,
    /// Properties (5.0).
    pub properties: ConnectProperties,
    /// Client Identifier; may be empty.
    pub client_id: ByteStr,
    /// Will Message.
    pub will: Option<LastWill>,
    /// User Name.
    pub username: Option<ByteStr>,
    /// Password (binary data).
    pub password: Option<Bytes>,
}

/// The Will Message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will Topic (a topic name).
    pub topic: ByteStr,
    /// Will Payload.
    pub payload: Bytes,
    /// Will Properties (5.0).
    pub properties: WillProperties,
}

/// CONNECT properties (§3.1.2.11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    /// Session Expiry Interval, seconds (0 when absent).
    pub session_expiry_interval_secs: Option<u32>,
    /// Receive Maximum (65,535 when absent).
    pub receive_maximum: Option<NonZeroU16>,
    /// Maximum Packet Size, bytes (no limit when absent).
    pub maximum_packet_size: Option<NonZeroU32>,
    /// Topic Alias Maximum (0 when absent).
    pub topic_alias_maximum: Option<u16>,
    /// Request Response Information.
    pub request_response_information: Option<bool>,
    /// Request Problem Information.
    pub request_problem_information: Option<bool>,
    /// User Properties.
    pub user_properties: UserProperties,
    /// Authentication Method.
    pub authentication_method: Option<ByteStr>,
    /// Authentication Data.
    pub authentication_data: Option<Bytes>,
}

/// Will properties (§3.1.3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    /// Will Delay Interval, seconds.
    pub will_delay_interval_secs: Option<u32>,
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// Message Expiry Interval, seconds.
    pub message_expiry_interval_secs: Option<u32>,
    /// Content Type.
    pub content_type: Option<ByteStr>,
    /// Response Topic.
    pub response_topic: Option<ByteStr>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties.
    pub user_properties: UserProperties,
}

const P: PacketType = PacketType::Connect;

impl Connect {
    /// A clean-start CONNECT with the given client id and keep alive, no will and no credentials.
    pub fn new(protocol: ProtocolVersion, client_id: ByteStr, keep_alive_secs: u16) -> Self {
        Self {
            protocol,
            clean_start: true,
            keep_alive_secs,
            properties: ConnectProperties::default(),
            client_id,
            will: None,
            username: None,
            password: None,
        }
    }

    pub(crate) fn decode(frame: &Bytes, body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body, P);
        if r.binary("protocol name")? != b"MQTT" {
            return Err(DecodeError::InvalidProtocolName);
        }
        let level = r.u8("protocol level")?;
        let protocol = ProtocolVersion::from_level(level)
            .ok_or(DecodeError::UnsupportedProtocolVersion { level })?;
        let flags = r.u8("connect flags")?;
        if flags & 0b0000_0001 != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let clean_start = flags & 0b0000_0010 != 0;
        let will_flag = flags & 0b0000_0100 != 0;
        let will_qos_bits = (flags >> 3) & 0b11;
        let will_retain = flags & 0b0010_0000 != 0;
        let has_password = flags & 0b0100_0000 != 0;
        let has_username = flags & 0b1000_0000 != 0;
        if will_flag {
            if will_qos_bits == 3 {
                return Err(DecodeError::WillQos3);
            }
        } else if will_qos_bits != 0 || will_retain {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        if protocol == ProtocolVersion::V311 && has_password && !has_username {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive_secs = r.u16("keep alive")?;
        let mut properties = ConnectProperties::default();
        if protocol == ProtocolVersion::V5 {
            properties = ConnectProperties::decode(&mut r, frame)?;
        }
        let client_id = own_str(frame, r.utf8("client identifier")?);
        let will = if will_flag {
            let mut wp = WillProperties::default();
            if protocol == ProtocolVersion::V5 {
                wp = WillProperties::decode(&mut r, frame)?;
            }
            let topic = r.utf8("will topic")?;
            let topic_check = if topic.is_empty() {
                Err(TopicError::Empty)
            } else {
                check_name_chars(topic)
            };
            topic_check.map_err(|error| DecodeError::InvalidTopicName { error })?;
            Some(LastWill {
                qos: QoS::from_u8(will_qos_bits).unwrap_or(QoS::AtMostOnce),
                retain: will_retain,
                topic: own_str(frame, topic),
                payload: own_bin(frame, r.binary("will payload")?),
                properties: wp,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(own_str(frame, r.utf8("user name")?))
        } else {
            None
        };
        let password = if has_password {
            Some(own_bin(frame, r.binary("password")?))
        } else {
            None
        };
        r.finish()?;
        Ok(Self {
            protocol,
            clean_start,
            keep_alive_secs,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    pub(crate) fn body_len(&self) -> Result<usize, EncodeError> {
        let v5 = self.protocol == ProtocolVersion::V5;
        if self.protocol == ProtocolVersion::V311
            && self.password.is_some()
            && self.username.is_none()
        {
            return Err(EncodeError::Invalid {
                packet: P,
                reason: "MQTT 3.1.1 does not allow a password without a user name",
            });
        }
        let mut len = 6 + 1 + 1 + 2;
        if v5 {
            len += props_len(&self.properties)?;
        }
        check_str("client identifier", &self.client_id)?;
        len += 2 + self.client_id.len();
        if let Some(w) = &self.will {
            if w.topic.is_empty() || check_name_chars(&w.topic).is_err() {
                return Err(EncodeError::Invalid {
                    packet: P,
                    reason: "the will topic is not a valid topic name",
                });
            }
            if v5 {
                len += props_len(&w.properties)?;
            }
            check_str("will topic", &w.topic)?;
            check_len("will payload", w.payload.len())?;
            len += 4 + w.topic.len() + w.payload.len();
        }
        if let Some(u) = &self.username {
            check_str("user name", u)?;
            len += 2 + u.len();
        }
        if let Some(p) = &self.password {
            check_len("password", p.len())?;
            len += 2 + p.len();
        }
        Ok(len)
    }

    pub(crate) fn write_body(&self, buf: &mut BytesMut) {
        let v5 = self.protocol == ProtocolVersion::V5;
        put_bin(buf, b"MQTT");
        buf.put_u8(self.protocol.level());
        let mut flags = 0u8;
        if self.clean_start {
            flags |= 0b0000_0010;
        }
        if let Some(w) = &self.will {
            flags |= 0b0000_0100 | ((w.qos as u8) << 3);
            if w.retain {
                flags |= 0b0010_0000;
            }
        }
        if self.password.is_some() {
            flags |= 0b0100_0000;
        }
        if self.username.is_some() {
            flags |= 0b1000_0000;
        }
        buf.put_u8(flags);
        buf.put_u16(self.keep_alive_secs);
        if v5 {
            let plen = properties::encoded_len(&self.properties);
            properties::write(&self.properties, plen, buf);
        }
        put_bin(buf, self.client_id.as_bytes());
        if let Some(w) = &self.will {
            if v5 {
                let plen = properties::encoded_len(&w.properties);
                properties::write(&w.properties, plen, buf);
            }
            put_bin(buf, w.topic.as_bytes());
            put_bin(buf, &w.payload);
        }
        if let Some(u) = &self.username {
            put_bin(buf, u.as_bytes());
        }
        if let Some(p) = &self.password {
            put_bin(buf, p);
        }
    }
}

/// The encoded size of a property block with its length prefix, lengths checked.
pub(crate) fn props_len(p: &impl Encode) -> Result<usize, EncodeError> {
    properties::check_encode(p)?;
    let plen = properties::encoded_len(p);
    Ok(varint_len(plen as u32) + plen)
}

impl ConnectProperties {
    fn decode(r: &mut Reader<'_>, frame: &Bytes) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        let mut method = None;
        let mut data = None;
        let mut counts = RepeatedCounts::default();
        let block = properties::parse(r, Allowed::CONNECT, |property, v| {
            counts.count(property);
            match (property, v) {
                (id::SESSION_EXPIRY_INTERVAL, PropValue::FourByte(v)) => {
                    p.session_expiry_interval_secs = Some(v);
                }
                (id::RECEIVE_MAXIMUM, PropValue::TwoByte(v)) => {
                    p.receive_maximum = NonZeroU16::new(v)
                }
                (id::MAXIMUM_PACKET_SIZE, PropValue::FourByte(v)) => {
                    p.maximum_packet_size = NonZeroU32::new(v);
                }
                (id::TOPIC_ALIAS_MAXIMUM, PropValue::TwoByte(v)) => p.topic_alias_maximum = Some(v),
                (id::REQUEST_RESPONSE_INFORMATION, PropValue::Byte(v)) => {
                    p.request_response_information = Some(v == 1);
                }
                (id::REQUEST_PROBLEM_INFORMATION, PropValue::Byte(v)) => {
                    p.request_problem_information = Some(v == 1);
                }
                (id::AUTHENTICATION_METHOD, PropValue::Utf8(s)) => method = Some(s),
                (id::AUTHENTICATION_DATA, PropValue::Binary(b)) => data = Some(b),
                _ => {}
            }
        })?;
        p.authentication_method = method.map(|s| own_str(frame, s));
        p.authentication_data = data.map(|b| own_bin(frame, b));
        p.user_properties = counts.user_properties(block).to_owned_in(frame);
        Ok(p)
    }
}

impl Encode for ConnectProperties {
    fn visit<'s>(&'s self, f: &mut impl FnMut(u8, PropValue<'s>)) {
        if let Some(v) = self.session_expiry_interval_secs {
            f(id::SESSION_EXPIRY_INTERVAL, PropValue::FourByte(v));
        }
        if let Some(v) = self.receive_maximum {
            f(id::RECEIVE_MAXIMUM, PropValue::TwoByte(v.get()));
        }
        if let Some(v) = self.maximum_packet_size {
            f(id::MAXIMUM_PACKET_SIZE, PropValue::FourByte(v.get()));
        }
        if let Some(v) = self.topic_alias_maximum {
            f(id::TOPIC_ALIAS_MAXIMUM, PropValue::TwoByte(v));
        }
        if let Some(v) = self.request_response_information {
            f(
                id::REQUEST_RESPONSE_INFORMATION,
                PropValue::Byte(u8::from(v)),
            );
        }
        if let Some(v) = self.request_problem_information {
            f(
                id::REQUEST_PROBLEM_INFORMATION,
                PropValue::Byte(u8::from(v)),
            );
        }
        properties::visit_user(&self.user_properties, f);
        if let Some(v) = &self.authentication_method {
            f(id::AUTHENTICATION_METHOD, PropValue::Utf8(v));
        }
        if let Some(v) = &self.authentication_data {
            f(id::AUTHENTICATION_DATA, PropValue::Binary(v));
        }
    }
}

impl WillProperties {
    fn decode(r: &mut Reader<'_>, frame: &Bytes) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        let mut content_type = None;
        let mut response_topic = None;
        let mut correlation = None;
        let mut counts = RepeatedCounts::default();
        let block = properties::parse(r, Allowed::WILL, |property, v| {
            counts.count(property);
            match (property, v) {
                (id::WILL_DELAY_INTERVAL, PropValue::FourByte(v)) => {
                    p.will_delay_interval_secs = Some(v);
                }
                (id::PAYLOAD_FORMAT_INDICATOR, PropValue::Byte(v)) => {
                    p.payload_format_indicator = Some(if v == 0 {
                        PayloadFormat::Unspecified
                    } else {
                        PayloadFormat::Utf8
                    });
                }
                (id::MESSAGE_EXPIRY_INTERVAL, PropValue::FourByte(v)) => {
                    p.message_expiry_interval_secs = Some(v);
                }
                (id::CONTENT_TYPE, PropValue::Utf8(s)) => content_type = Some(s),
                (id::RESPONSE_TOPIC, PropValue::Utf8(s)) => response_topic = Some(s),
                (id::CORRELATION_DATA, PropValue::Binary(b)) => correlation = Some(b),
                _ => {}
            }
        })?;
        p.content_type = content_type.map(|s| own_str(frame, s));
        p.response_topic = response_topic.map(|s| own_str(frame, s));
        p.correlation_data = correlation.map(|b| own_bin(frame, b));
        p.user_properties = counts.user_properties(block).to_owned_in(frame);
        Ok(p)
    }
}

impl Encode for WillProperties {
    fn visit<'s>(&'s self, f: &mut impl FnMut(u8, PropValue<'s>)) {
        if let Some(v) = self.will_delay_interval_secs {
            f(id::WILL_DELAY_INTERVAL, PropValue::FourByte(v));
        }
        if let Some(v) = self.payload_format_indicator {
            f(id::PAYLOAD_FORMAT_INDICATOR, PropValue::Byte(v as u8));
        }
        if let Some(v) = self.message_expiry_interval_secs {
            f(id::MESSAGE_EXPIRY_INTERVAL, PropValue::FourByte(v));
        }
        if let Some(v) = &self.content_type {
            f(id::CONTENT_TYPE, PropValue::Utf8(v));
        }
        if let Some(v) = &self.response_topic {
            f(id::RESPONSE_TOPIC, PropValue::Utf8(v));
        }
        if let Some(v) = &self.correlation_data {
            f(id::CORRELATION_DATA, PropValue::Binary(v));
        }
        properties::visit_user(&self.user_properties, f);
    }
}
