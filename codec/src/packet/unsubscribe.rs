//! UNSUBSCRIBE (§3.10).

use bytes::{BufMut, Bytes, BytesMut};

use super::connect::props_len;
use super::{check_str, own_str, put_bin};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{self, Allowed, Encode, PropValue, RepeatedCounts, UserProperties};
use crate::reader::Reader;
use crate::string::ByteStr;
use crate::topic::validate_topic_filter;
use crate::types::{PacketId, PacketType, ProtocolVersion};

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Properties (5.0).
    pub properties: UnsubscribeProperties,
    /// At least one topic filter.
    pub filters: Vec<ByteStr>,
}

/// UNSUBSCRIBE properties (§3.10.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsubscribeProperties {
    /// User Properties.
    pub user_properties: UserProperties,
}

const P: PacketType = PacketType::Unsubscribe;

impl Unsubscribe {
    pub(crate) fn decode(
        frame: &Bytes,
        body: &[u8],
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body, P);
        let packet_id = r.packet_id()?;
        let mut properties = UnsubscribeProperties::default();
        if version == ProtocolVersion::V5 {
            let mut counts = RepeatedCounts::default();
            let block = properties::parse(&mut r, Allowed::UNSUBSCRIBE, |property, _| {
                counts.count(property);
            })?;
            properties.user_properties = counts.user_properties(block).to_owned_in(frame);
        }
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.utf8("topic filter")?;
            validate_topic_filter(filter)
                .map_err(|error| DecodeError::InvalidTopicFilter { error })?;
            filters.push(own_str(frame, filter));
        }
        if filters.is_empty() {
            return Err(DecodeError::UnsubscribeWithoutFilters);
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
                reason: "UNSUBSCRIBE needs at least one topic filter",
            });
        }
        let mut len = 2;
        if version == ProtocolVersion::V5 {
            len += props_len(&self.properties)?;
        }
        for f in &self.filters {
            check_str("topic filter", f)?;
            if validate_topic_filter(f).is_err() {
                return Err(EncodeError::Invalid {
                    packet: P,
                    reason: "a topic filter is invalid",
                });
            }
            len += 2 + f.len();
        }
        Ok(len)
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id.get());
        if version == ProtocolVersion::V5 {
            let plen = properties::encoded_len(&self.properties);
            properties::write(&self.properties, plen, buf);
        }
        for f in &self.filters {
            put_bin(buf, f.as_bytes());
        }
    }
}

impl Encode for UnsubscribeProperties {
    fn visit<'s>(&'s self, f: &mut impl FnMut(u8, PropValue<'s>)) {
        properties::visit_user(&self.user_properties, f);
    }
}
