//! SUBSCRIBE (§3.8): topic filters with their subscription options.

use std::num::NonZeroU32;

use bytes::{BufMut, Bytes, BytesMut};

use super::connect::props_len;
use super::{check_str, own_str, put_bin};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{self, Allowed, Encode, PropValue, RepeatedCounts, UserProperties, id};
use crate::reader::Reader;
use crate::string::ByteStr;
use crate::topic::{is_shared, validate_topic_filter};
use crate::types::{PacketId, PacketType, ProtocolVersion, QoS};

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Properties (5.0).
    pub properties: SubscribeProperties,
    /// At least one topic filter with its options.
    pub filters: Vec<Subscription>,
}

/// SUBSCRIBE properties (§3.8.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// Subscription Identifier (1 to 268,435,455).
    pub subscription_identifier: Option<NonZeroU32>,
    /// User Properties.
    pub user_properties: UserProperties,
}

/// One topic filter and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Topic filter (may be a `$share/` filter).
    pub filter: ByteStr,
    /// Subscription options.
    pub options: SubscriptionOptions,
}

/// Subscription options (§3.8.3.1). In 3.1.1 only the QoS exists; the rest is default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local (5.0).
    pub no_local: bool,
    /// Retain As Published (5.0).
    pub retain_as_published: bool,
    /// Retain Handling (5.0).
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with this QoS and 5.0 defaults.
    pub const fn qos(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }
}

/// Retain Handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RetainHandling {
    /// 0: send retained messages at subscribe time.
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist.
    SendAtSubscribeIfNew = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

const P: PacketType = PacketType::Subscribe;

impl Subscribe {
    pub(crate) fn decode(
        frame: &Bytes,
        body: &[u8],
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body, P);
        let packet_id = r.packet_id()?;
        let mut properties = SubscribeProperties::default();
        if version == ProtocolVersion::V5 {
            let mut counts = RepeatedCounts::default();
            let mut sub_id = None;
            let block = properties::parse(&mut r, Allowed::SUBSCRIBE, |property, v| {
                counts.count(property);
                if let (id::SUBSCRIPTION_IDENTIFIER, PropValue::VarInt(v)) = (property, v) {
                    sub_id = NonZeroU32::new(v);
                }
            })?;
            properties.subscription_identifier = sub_id;
            properties.user_properties = counts.user_properties(block).to_owned_in(frame);
        }
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.utf8("topic filter")?;
            let options = r.u8("subscription options")?;
            let reserved = match version {
                ProtocolVersion::V311 => 0b1111_1100,
                ProtocolVersion::V5 => 0b1100_0000,
            };
            if options & reserved != 0 {
                return Err(DecodeError::SubscriptionOptionsReserved { options });
            }
            let qos = QoS::from_u8(options & 0b11).ok_or(DecodeError::SubscriptionQos3)?;
            let retain_handling = match (options >> 4) & 0b11 {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendAtSubscribeIfNew,
                2 => RetainHandling::DoNotSend,
                _ => return Err(DecodeError::RetainHandling3),
            };
            validate_topic_filter(filter)
                .map_err(|error| DecodeError::InvalidTopicFilter { error })?;
            let no_local = options & 0b0100 != 0;
            if no_local && is_shared(filter) {
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
            filters.push(Subscription {
                filter: own_str(frame, filter),
                options: SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published: options & 0b1000 != 0,
                    retain_handling,
                },
            });
        }
        if filters.is_empty() {
            return Err(DecodeError::SubscribeWithoutFilters);
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::Invalid {
                packet: P,
                reason: "SUBSCRIBE needs at least one topic filter",
            });
        }
        let mut len = 2;
        if version == ProtocolVersion::V5 {
            len += props_len(&self.properties)?;
        }
        for s in &self.filters {
            check_str("topic filter", &s.filter)?;
            if validate_topic_filter(&s.filter).is_err() {
                return Err(EncodeError::Invalid {
                    packet: P,
                    reason: "a topic filter is invalid",
                });
            }
            len += 3 + s.filter.len();
        }
        Ok(len)
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id.get());
        if version == ProtocolVersion::V5 {
            let plen = properties::encoded_len(&self.properties);
            properties::write(&self.properties, plen, buf);
        }
        for s in &self.filters {
            put_bin(buf, s.filter.as_bytes());
            let o = &s.options;
            let mut b = o.qos as u8;
            if version == ProtocolVersion::V5 {
                b |= u8::from(o.no_local) << 2
                    | u8::from(o.retain_as_published) << 3
                    | (o.retain_handling as u8) << 4;
            }
            buf.put_u8(b);
        }
    }
}

impl Encode for SubscribeProperties {
    fn visit<'s>(&'s self, f: &mut impl FnMut(u8, PropValue<'s>)) {
        if let Some(v) = self.subscription_identifier {
            f(id::SUBSCRIPTION_IDENTIFIER, PropValue::VarInt(v.get()));
        }
        properties::visit_user(&self.user_properties, f);
    }
}
