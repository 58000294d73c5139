//! PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4 to §3.7): a packet identifier, and in 5.0 a reason
//! code and properties that may be omitted. The four share one shape.

use bytes::{BufMut, Bytes, BytesMut};

use super::own_str;
use crate::error::{DecodeError, EncodeError};
use crate::properties::{self, Allowed, Encode, PropValue, RepeatedCounts, UserProperties, id};
use crate::reader::Reader;
use crate::reason::ReasonCode;
use crate::string::ByteStr;
use crate::types::{PacketId, PacketType, ProtocolVersion};
use crate::varint::varint_len;

/// PUBACK, PUBREC, PUBREL or PUBCOMP. In 3.1.1 the reason code is always Success and the
/// properties are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAck {
    /// The PUBLISH (or PUBREC/PUBREL) this answers.
    pub packet_id: PacketId,
    /// Reason code (5.0); `ReasonCode::SUCCESS` when omitted.
    pub reason_code: ReasonCode,
    /// Properties (5.0).
    pub properties: AckProperties,
}

/// PUBREC has the shape of [`PubAck`].
pub type PubRec = PubAck;
/// PUBREL has the shape of [`PubAck`].
pub type PubRel = PubAck;
/// PUBCOMP has the shape of [`PubAck`].
pub type PubComp = PubAck;

impl PubAck {
    /// A successful acknowledgement without properties.
    pub fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason_code: ReasonCode::SUCCESS,
            properties: AckProperties::default(),
        }
    }

    pub(crate) fn decode(
        packet: PacketType,
        frame: &Bytes,
        body: &[u8],
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body, packet);
        let packet_id = r.packet_id()?;
        let mut ack = Self::new(packet_id);
        if version == ProtocolVersion::V311 || r.is_empty() {
            r.finish()?;
            return Ok(ack);
        }
        ack.reason_code = reason_code(&mut r)?;
        if !r.is_empty() {
            ack.properties = AckProperties::decode(&mut r, frame)?;
        }
        r.finish()?;
        Ok(ack)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        if version == ProtocolVersion::V311 {
            return Ok(2);
        }
        if self.properties.is_empty() {
            return Ok(if self.reason_code == ReasonCode::SUCCESS {
                2
            } else {
                3
            });
        }
        properties::check_encode(&self.properties)?;
        let plen = properties::encoded_len(&self.properties);
        Ok(3 + varint_len(plen as u32) + plen)
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, len: usize, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id.get());
        if version == ProtocolVersion::V5 && len > 2 {
            buf.put_u8(self.reason_code.0);
            if len > 3 {
                let plen = properties::encoded_len(&self.properties);
                properties::write(&self.properties, plen, buf);
            }
        }
    }
}

/// Reads a reason code and checks it is one this packet type may carry.
pub(crate) fn reason_code(r: &mut Reader<'_>) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode(r.u8("reason code")?);
    if code.allowed_in(r.packet()) {
        Ok(code)
    } else {
        Err(DecodeError::InvalidReasonCode {
            packet: r.packet(),
            code: code.0,
        })
    }
}

/// The properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckProperties {
    /// Reason String: human-readable diagnostics.
    pub reason_string: Option<ByteStr>,
    /// User Properties.
    pub user_properties: UserProperties,
}

impl AckProperties {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }

    pub(crate) fn decode(r: &mut Reader<'_>, frame: &Bytes) -> Result<Self, DecodeError> {
        let mut reason = None;
        let mut counts = RepeatedCounts::default();
        let block = properties::parse(r, Allowed::ack(r.packet()), |property, v| {
            counts.count(property);
            if let (id::REASON_STRING, PropValue::Utf8(s)) = (property, v) {
                reason = Some(s);
            }
        })?;
        Ok(Self {
            reason_string: reason.map(|s| own_str(frame, s)),
            user_properties: counts.user_properties(block).to_owned_in(frame),
        })
    }
}

impl Encode for AckProperties {
    fn visit<'s>(&'s self, f: &mut impl FnMut(u8, PropValue<'s>)) {
        if let Some(s) = &self.reason_string {
            f(id::REASON_STRING, PropValue::Utf8(s));
        }
        properties::visit_user(&self.user_properties, f);
    }
}
