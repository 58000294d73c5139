//! CONNACK (§3.2).

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{BufMut, Bytes, BytesMut};

use super::connect::props_len;
use super::{own_bin, own_str};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{self, Allowed, Encode, PropValue, RepeatedCounts, UserProperties, id};
use crate::reader::Reader;
use crate::reason::ReasonCode;
use crate::string::ByteStr;
use crate::types::{PacketType, ProtocolVersion, QoS};

/// CONNACK. In 3.1.1 `reason_code` holds the return code (0 to 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// Connect Reason Code (5.0) or Connect Return Code (3.1.1).
    pub reason_code: ReasonCode,
    /// Properties (5.0). Boxed: they are large and CONNACK is rare, so that they do not set the
    /// size of every [`Packet`](super::Packet).
    pub properties: Box<ConnAckProperties>,
}

/// CONNACK properties (§3.2.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ConnAckProperties {
    /// Session Expiry Interval, seconds.
    pub session_expiry_interval_secs: Option<u32>,
    /// Receive Maximum.
    pub receive_maximum: Option<NonZeroU16>,
    /// Maximum QoS (0 or 1; 2 when absent).
    pub maximum_qos: Option<QoS>,
    /// Retain Available.
    pub retain_available: Option<bool>,
    /// Maximum Packet Size, bytes.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// Assigned Client Identifier.
    pub assigned_client_identifier: Option<ByteStr>,
    /// Topic Alias Maximum.
    pub topic_alias_maximum: Option<u16>,
    /// Reason String.
    pub reason_string: Option<ByteStr>,
    /// User Properties.
    pub user_properties: UserProperties,
    /// Wildcard Subscription Available.
    pub wildcard_subscription_available: Option<bool>,
    /// Subscription Identifiers Available.
    pub subscription_identifiers_available: Option<bool>,
    /// Shared Subscription Available.
    pub shared_subscription_available: Option<bool>,
    /// Server Keep Alive, seconds.
    pub server_keep_alive_secs: Option<u16>,
    /// Response Information.
    pub response_information: Option<ByteStr>,
    /// Server Reference.
    pub server_reference: Option<ByteStr>,
    /// Authentication Method.
    pub authentication_method: Option<ByteStr>,
    /// Authentication Data.
    pub authentication_data: Option<Bytes>,
}

const P: PacketType = PacketType::ConnAck;

impl ConnAck {
    /// An accepting CONNACK without properties.
    pub fn new(session_present: bool) -> Self {
        Self {
            session_present,
            reason_code: ReasonCode::SUCCESS,
            properties: Box::default(),
        }
    }

    pub(crate) fn decode(
        frame: &Bytes,
        body: &[u8],
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body, P);
        let flags = r.u8("acknowledge flags")?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::ConnAckReservedFlags { flags });
        }
        let session_present = flags & 1 != 0;
        let code = r.u8("reason code")?;
        let mut properties = Box::<ConnAckProperties>::default();
        match version {
            ProtocolVersion::V311 => {
                if code > 5 {
                    return Err(DecodeError::InvalidReturnCode { packet: P, code });
                }
            }
            ProtocolVersion::V5 => {
                if !ReasonCode(code).allowed_in(P) {
                    return Err(DecodeError::InvalidReasonCode { packet: P, code });
                }
                *properties = ConnAckProperties::decode(&mut r, frame)?;
            }
        }
        if session_present && code != 0 {
            return Err(DecodeError::SessionPresentWithError);
        }
        r.finish()?;
        Ok(Self {
            session_present,
            reason_code: ReasonCode(code),
            properties,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        if self.session_present && self.reason_code != ReasonCode::SUCCESS {
            return Err(EncodeError::Invalid {
                packet: P,
                reason: "Session Present must be 0 with a failure code",
            });
        }
        Ok(match version {
            ProtocolVersion::V311 => 2,
            ProtocolVersion::V5 => 2 + props_len(&*self.properties)?,
        })
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u8(u8::from(self.session_present));
        buf.put_u8(self.reason_code.0);
        if version == ProtocolVersion::V5 {
            let plen = properties::encoded_len(&*self.properties);
            properties::write(&*self.properties, plen, buf);
        }
    }
}

impl ConnAckProperties {
    fn decode(r: &mut Reader<'_>, frame: &Bytes) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        let mut strs: [Option<&str>; 5] = [None; 5];
        let mut data = None;
        let mut counts = RepeatedCounts::default();
        let block = properties::parse(r, Allowed::CONNACK, |property, v| {
            counts.count(property);
            match (property, v) {
                (id::SESSION_EXPIRY_INTERVAL, PropValue::FourByte(v)) => {
                    p.session_expiry_interval_secs = Some(v);
                }
                (id::RECEIVE_MAXIMUM, PropValue::TwoByte(v)) => {
                    p.receive_maximum = NonZeroU16::new(v)
                }
                (id::MAXIMUM_QOS, PropValue::Byte(v)) => p.maximum_qos = QoS::from_u8(v),
                (id::RETAIN_AVAILABLE, PropValue::Byte(v)) => p.retain_available = Some(v == 1),
                (id::MAXIMUM_PACKET_SIZE, PropValue::FourByte(v)) => {
                    p.maximum_packet_size = NonZeroU32::new(v);
                }
                (id::TOPIC_ALIAS_MAXIMUM, PropValue::TwoByte(v)) => p.topic_alias_maximum = Some(v),
                (id::WILDCARD_SUBSCRIPTION_AVAILABLE, PropValue::Byte(v)) => {
                    p.wildcard_subscription_available = Some(v == 1);
                }
                (id::SUBSCRIPTION_IDENTIFIER_AVAILABLE, PropValue::Byte(v)) => {
                    p.subscription_identifiers_available = Some(v == 1);
                }
                (id::SHARED_SUBSCRIPTION_AVAILABLE, PropValue::Byte(v)) => {
                    p.shared_subscription_available = Some(v == 1);
                }
                (id::SERVER_KEEP_ALIVE, PropValue::TwoByte(v)) => {
                    p.server_keep_alive_secs = Some(v)
                }
                (id::ASSIGNED_CLIENT_IDENTIFIER, PropValue::Utf8(s)) => strs[0] = Some(s),
                (id::REASON_STRING, PropValue::Utf8(s)) => strs[1] = Some(s),
                (id::RESPONSE_INFORMATION, PropValue::Utf8(s)) => strs[2] = Some(s),
                (id::SERVER_REFERENCE, PropValue::Utf8(s)) => strs[3] = Some(s),
                (id::AUTHENTICATION_METHOD, PropValue::Utf8(s)) => strs[4] = Some(s),
                (id::AUTHENTICATION_DATA, PropValue::Binary(b)) => data = Some(b),
                _ => {}
            }
        })?;
        let own = |s: Option<&str>| s.map(|s| own_str(frame, s));
        p.assigned_client_identifier = own(strs[0]);
        p.reason_string = own(strs[1]);
        p.response_information = own(strs[2]);
        p.server_reference = own(strs[3]);
        p.authentication_method = own(strs[4]);
        p.authentication_data = data.map(|b| own_bin(frame, b));
        p.user_properties = counts.user_properties(block).to_owned_in(frame);
        Ok(p)
    }
}

impl Encode for ConnAckProperties {
    fn visit<'s>(&'s self, f: &mut impl FnMut(u8, PropValue<'s>)) {
        let byte = |b: bool| PropValue::Byte(u8::from(b));
        if let Some(v) = self.session_expiry_interval_secs {
            f(id::SESSION_EXPIRY_INTERVAL, PropValue::FourByte(v));
        }
        if let Some(v) = self.receive_maximum {
            f(id::RECEIVE_MAXIMUM, PropValue::TwoByte(v.get()));
        }
        if let Some(v) = self.maximum_qos {
            f(id::MAXIMUM_QOS, PropValue::Byte(v as u8));
        }
        if let Some(v) = self.retain_available {
            f(id::RETAIN_AVAILABLE, byte(v));
        }
        if let Some(v) = self.maximum_packet_size {
            f(id::MAXIMUM_PACKET_SIZE, PropValue::FourByte(v.get()));
        }
        if let Some(v) = &self.assigned_client_identifier {
            f(id::ASSIGNED_CLIENT_IDENTIFIER, PropValue::Utf8(v));
        }
        if let Some(v) = self.topic_alias_maximum {
            f(id::TOPIC_ALIAS_MAXIMUM, PropValue::TwoByte(v));
        }
        if let Some(v) = &self.reason_string {
            f(id::REASON_STRING, PropValue::Utf8(v));
        }
        properties::visit_user(&self.user_properties, f);
        if let Some(v) = self.wildcard_subscription_available {
            f(id::WILDCARD_SUBSCRIPTION_AVAILABLE, byte(v));
        }
        if let Some(v) = self.subscription_identifiers_available {
            f(id::SUBSCRIPTION_IDENTIFIER_AVAILABLE, byte(v));
        }
        if let Some(v) = self.shared_subscription_available {
            f(id::SHARED_SUBSCRIPTION_AVAILABLE, byte(v));
        }
        if let Some(v) = self.server_keep_alive_secs {
            f(id::SERVER_KEEP_ALIVE, PropValue::TwoByte(v));
        }
        if let Some(v) = &self.response_information {
            f(id::RESPONSE_INFORMATION, PropValue::Utf8(v));
        }
        if let Some(v) = &self.server_reference {
            f(id::SERVER_REFERENCE, PropValue::Utf8(v));
        }
        if let Some(v) = &self.authentication_method {
            f(id::AUTHENTICATION_METHOD, PropValue::Utf8(v));
        }
        if let Some(v) = &self.authentication_data {
            f(id::AUTHENTICATION_DATA, PropValue::Binary(v));
        }
    }
}
