//! SUBACK (§3.9) and UNSUBACK (§3.11): a packet identifier and one reason code per topic filter.

use bytes::{BufMut, Bytes, BytesMut};

use super::puback::{AckProperties, reason_code};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{self};
use crate::reader::Reader;
use crate::reason::ReasonCode;
use crate::types::{PacketId, PacketType, ProtocolVersion};
use crate::varint::varint_len;

/// SUBACK: one reason code per topic filter of the SUBSCRIBE, in order. In 3.1.1 the codes are
/// the return codes 0x00, 0x01, 0x02 and 0x80.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The SUBSCRIBE this answers.
    pub packet_id: PacketId,
    /// Properties (5.0).
    pub properties: AckProperties,
    /// One per topic filter.
    pub reason_codes: Vec<ReasonCode>,
}

/// UNSUBACK: in 5.0 one reason code per topic filter of the UNSUBSCRIBE; in 3.1.1 none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The UNSUBSCRIBE this answers.
    pub packet_id: PacketId,
    /// Properties (5.0).
    pub properties: AckProperties,
    /// One per topic filter (5.0); empty in 3.1.1.
    pub reason_codes: Vec<ReasonCode>,
}

fn decode_codes(
    packet: PacketType,
    frame: &Bytes,
    body: &[u8],
    version: ProtocolVersion,
) -> Result<(PacketId, AckProperties, Vec<ReasonCode>), DecodeError> {
    let mut r = Reader::new(body, packet);
    let packet_id = r.packet_id()?;
    let mut props = AckProperties::default();
    let mut codes = Vec::new();
    match version {
        ProtocolVersion::V5 => {
            props = AckProperties::decode(&mut r, frame)?;
            codes.reserve(r.remaining());
            while !r.is_empty() {
                codes.push(reason_code(&mut r)?);
            }
        }
        ProtocolVersion::V311 if packet == PacketType::UnsubAck => {}
        ProtocolVersion::V311 => {
            codes.reserve(r.remaining());
            while !r.is_empty() {
                let code = r.u8("return code")?;
                if !matches!(code, 0x00 | 0x01 | 0x02 | 0x80) {
                    return Err(DecodeError::InvalidReturnCode { packet, code });
                }
                codes.push(ReasonCode(code));
            }
        }
    }
    r.finish()?;
    let needs_codes = version == ProtocolVersion::V5 || packet == PacketType::SubAck;
    if needs_codes && codes.is_empty() {
        return Err(DecodeError::AckWithoutReasonCodes { packet });
    }
    Ok((packet_id, props, codes))
}

fn body_len(
    version: ProtocolVersion,
    props: &AckProperties,
    codes: usize,
) -> Result<usize, EncodeError> {
    if version == ProtocolVersion::V311 {
        return Ok(2 + codes);
    }
    properties::check_encode(props)?;
    let plen = properties::encoded_len(props);
    Ok(2 + varint_len(plen as u32) + plen + codes)
}

fn write_body(
    version: ProtocolVersion,
    packet_id: PacketId,
    props: &AckProperties,
    codes: &[ReasonCode],
    buf: &mut BytesMut,
) {
    buf.put_u16(packet_id.get());
    if version == ProtocolVersion::V5 {
        let plen = properties::encoded_len(props);
        properties::write(props, plen, buf);
    }
    for c in codes {
        buf.put_u8(c.0);
    }
}

impl SubAck {
    pub(crate) fn decode(
        frame: &Bytes,
        body: &[u8],
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let (packet_id, properties, reason_codes) =
            decode_codes(PacketType::SubAck, frame, body, version)?;
        Ok(Self {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        body_len(version, &self.properties, self.reason_codes.len())
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        write_body(
            version,
            self.packet_id,
            &self.properties,
            &self.reason_codes,
            buf,
        );
    }
}

impl UnsubAck {
    pub(crate) fn decode(
        frame: &Bytes,
        body: &[u8],
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let (packet_id, properties, reason_codes) =
            decode_codes(PacketType::UnsubAck, frame, body, version)?;
        Ok(Self {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let codes = if version == ProtocolVersion::V5 {
            self.reason_codes.len()
        } else {
            0
        };
        body_len(version, &self.properties, codes)
    }

    pub(crate) fn write_body(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        let codes: &[ReasonCode] = if version == ProtocolVersion::V5 {
            &self.reason_codes
        } else {
            &[]
        };
        write_body(version, self.packet_id, &self.properties, codes, buf);
    }
}
