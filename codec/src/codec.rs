//! Framing: the fixed header, size limits, direction checks, and dispatch to the packet decoders
//! and encoders. [`Codec`] does no I/O: it reads from and writes to buffers that the caller owns.
//!
//! Buffer contract (as in `tokio-util`): [`Codec::decode`] returns `Ok(None)` when `buf` holds no
//! whole frame yet and reserves the room the current frame still needs, which is bounded by the
//! maximum packet size because that limit is checked from the fixed header before the body is
//! buffered. `Err` means the stream is corrupt: close the connection, with
//! [`DecodeError::reason_code`] in the DISCONNECT for 5.0.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubAck, Publish, PublishRef, SubAck, Subscribe,
    UnsubAck, Unsubscribe, decode_publish, decode_publish_owned, encode_publish,
    encode_publish_header,
};
use crate::reason::ReasonCode;
use crate::types::{PacketType, ProtocolVersion, Role};
use crate::varint::{MAX_VARINT, decode_varint, put_varint, varint_len};

/// The largest packet MQTT can express: a 4-byte remaining length of 268,435,455 plus 5 header
/// bytes.
pub const MAX_PACKET_SIZE: u32 = MAX_VARINT + 5;

/// A whole frame located at the front of a buffer, not decoded yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// Packet type from the fixed header.
    pub packet_type: PacketType,
    /// The low nibble of the first byte.
    pub flags: u8,
    /// Length of the fixed header (2 to 5 bytes).
    pub header_len: usize,
    /// The whole frame, fixed header included.
    pub bytes: &'a [u8],
}

impl<'a> RawFrame<'a> {
    /// The frame's length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Frames are never empty; present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The variable header and payload.
    #[inline]
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[self.header_len..]
    }
}

/// An MQTT codec for one end of one connection.
#[derive(Debug, Clone)]
pub struct Codec {
    role: Role,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
    peer_max_packet_size: u32,
}

impl Codec {
    /// A codec for `role` speaking `version`.
    pub fn new(role: Role, version: ProtocolVersion) -> Self {
        Self {
            role,
            version: Some(version),
            max_packet_size: MAX_PACKET_SIZE,
            peer_max_packet_size: MAX_PACKET_SIZE,
        }
    }

    /// A server-side codec that learns the version from the client's CONNECT, which must be the
    /// first packet ([MQTT-3.1.0-1]).
    pub fn server_awaiting_connect() -> Self {
        Self {
            role: Role::Server,
            version: None,
            max_packet_size: MAX_PACKET_SIZE,
            peer_max_packet_size: MAX_PACKET_SIZE,
        }
    }

    /// Sets the largest packet this end accepts, in bytes (whole frame). Bigger packets are
    /// refused from their fixed header, before their body is buffered.
    pub fn with_max_packet_size(mut self, max: u32) -> Self {
        self.max_packet_size = max.clamp(2, MAX_PACKET_SIZE);
        self
    }

    /// Sets the largest packet the peer accepts (its Maximum Packet Size), checked on encode.
    pub fn set_peer_max_packet_size(&mut self, max: u32) {
        self.peer_max_packet_size = max.clamp(2, MAX_PACKET_SIZE);
    }

    /// The protocol version, once known.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Which end this codec decodes for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The largest packet accepted on decode.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Finds the frame at the front of `buf` and checks its fixed header: packet type, direction,
    /// flags, remaining length and size limit. Returns `Ok(None)` until the whole frame is in
    /// `buf`. The fixed header is checked as soon as its bytes are there, so a rogue length is
    /// refused before its body arrives.
    ///
    /// # Errors
    /// A [`DecodeError`] for a corrupt or oversized header.
    #[inline]
    pub fn next_frame<'a>(&self, buf: &'a [u8]) -> Result<Option<RawFrame<'a>>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let (packet_type, flags) =
            if first >> 4 == PacketType::Publish as u8 && self.version.is_some() {
                // Both ends receive PUBLISH and its flags are checked with its body.
                (PacketType::Publish, first & 0x0F)
            } else {
                self.check_first_byte(first)?
            };
        let (remaining, n) = match buf.get(1) {
            Some(&b) if b < 0x80 => (u32::from(b), 1),
            _ => match decode_varint(&buf[1..])? {
                Some(v) => v,
                None => return Ok(None),
            },
        };
        let header_len = 1 + n;
        let size = header_len + remaining as usize;
        if size > self.max_packet_size as usize {
            return Err(DecodeError::PacketTooLarge {
                size,
                max: self.max_packet_size,
            });
        }
        if buf.len() < size {
            return Ok(None);
        }
        Ok(Some(RawFrame {
            packet_type,
            flags,
            header_len,
            bytes: &buf[..size],
        }))
    }

    #[inline]
    fn check_first_byte(&self, first: u8) -> Result<(PacketType, u8), DecodeError> {
        let flags = first & 0x0F;
        let packet_type =
            PacketType::from_nibble(first >> 4).ok_or(DecodeError::ReservedPacketType)?;
        match self.version {
            Some(ProtocolVersion::V311) if packet_type == PacketType::Auth => {
                return Err(DecodeError::AuthInV311);
            }
            // MQTT 3.1.1 servers never send DISCONNECT.
            Some(ProtocolVersion::V311)
                if packet_type == PacketType::Disconnect && self.role == Role::Client =>
            {
                return Err(DecodeError::UnexpectedPacket {
                    packet: packet_type,
                    role: self.role,
                });
            }
            None if packet_type != PacketType::Connect => {
                return Err(DecodeError::FirstPacketNotConnect {
                    packet: packet_type,
                });
            }
            _ => {}
        }
        if !packet_type.sent_to(self.role) {
            return Err(DecodeError::UnexpectedPacket {
                packet: packet_type,
                role: self.role,
            });
        }
        if let Some(required) = packet_type.required_flags()
            && flags != required
        {
            return Err(DecodeError::InvalidFlags {
                packet: packet_type,
                flags,
            });
        }
        Ok((packet_type, flags))
    }

    /// Decodes a PUBLISH frame as a borrowed view: no allocation, no reference count. This is
    /// the data plane's hot path.
    ///
    /// # Errors
    /// A [`DecodeError`]; also when the frame is not a PUBLISH.
    #[inline]
    pub fn decode_publish<'a>(&self, frame: &RawFrame<'a>) -> Result<PublishRef<'a>, DecodeError> {
        let version = self.version.ok_or(DecodeError::FirstPacketNotConnect {
            packet: frame.packet_type,
        })?;
        if frame.packet_type != PacketType::Publish {
            return Err(DecodeError::UnexpectedPacket {
                packet: frame.packet_type,
                role: self.role,
            });
        }
        decode_publish(frame.flags, frame.body(), version, self.role)
    }

    /// Decodes the next packet from the front of `buf`, splitting its frame off without copying.
    /// Strings and binaries of the packet are slices of that frame.
    ///
    /// # Errors
    /// A [`DecodeError`]: the stream is corrupt and the connection must be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let (packet_type, flags, header_len, size) = match self.next_frame(buf)? {
            Some(f) => (f.packet_type, f.flags, f.header_len, f.len()),
            None => {
                self.reserve_frame(buf);
                return Ok(None);
            }
        };
        let frame = buf.split_to(size).freeze();
        self.decode_checked(packet_type, flags, frame, header_len)
            .map(Some)
    }

    /// Reserves in `buf` the room that the partial frame at its front still needs, as
    /// [`Codec::decode`] does when it returns `Ok(None)`: for a caller that frames with
    /// [`Codec::next_frame`] and splits whole frames off itself. Nothing is reserved while the
    /// remaining length is incomplete, nor for a frame over the maximum packet size (which
    /// [`Codec::next_frame`] refuses), so the room is bounded by that maximum.
    pub fn reserve_frame(&self, buf: &mut BytesMut) {
        if buf.len() < 2 {
            return;
        }
        if let Ok(Some((remaining, n))) = decode_varint(&buf[1..]) {
            let size = 1 + n + remaining as usize;
            if size > buf.len() && size <= self.max_packet_size as usize {
                buf.reserve(size - buf.len());
            }
        }
    }

    /// Decodes one whole frame (as returned by [`Codec::next_frame`], fixed header included,
    /// `header_len` long) held in `frame`.
    ///
    /// # Errors
    /// A [`DecodeError`].
    pub fn decode_frame(
        &mut self,
        frame: &Bytes,
        header_len: usize,
    ) -> Result<Packet, DecodeError> {
        let (packet_type, flags) = self.check_first_byte(frame[0])?;
        self.decode_checked(packet_type, flags, frame.clone(), header_len)
    }

    /// Decodes a frame whose fixed header was checked.
    fn decode_checked(
        &mut self,
        packet_type: PacketType,
        flags: u8,
        frame: Bytes,
        header_len: usize,
    ) -> Result<Packet, DecodeError> {
        if packet_type == PacketType::Publish {
            let version = self.version.ok_or(DecodeError::FirstPacketNotConnect {
                packet: packet_type,
            })?;
            return decode_publish_owned(flags, frame, header_len, version, self.role)
                .map(Packet::Publish);
        }
        let frame = &frame;
        let body = &frame[header_len..];
        if packet_type == PacketType::Connect {
            let connect = Connect::decode(frame, body)?;
            match self.version {
                Some(v) if v != connect.protocol => {
                    return Err(DecodeError::ProtocolVersionMismatch {
                        level: connect.protocol.level(),
                    });
                }
                _ => self.version = Some(connect.protocol),
            }
            return Ok(Packet::Connect(Box::new(connect)));
        }
        let Some(version) = self.version else {
            return Err(DecodeError::FirstPacketNotConnect {
                packet: packet_type,
            });
        };
        Ok(match packet_type {
            PacketType::Connect => unreachable!("handled above"),
            PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(frame, body, version)?),
            PacketType::Publish => unreachable!("handled above"),
            PacketType::PubAck => {
                Packet::PubAck(PubAck::decode(packet_type, frame, body, version)?)
            }
            PacketType::PubRec => {
                Packet::PubRec(PubAck::decode(packet_type, frame, body, version)?)
            }
            PacketType::PubRel => {
                Packet::PubRel(PubAck::decode(packet_type, frame, body, version)?)
            }
            PacketType::PubComp => {
                Packet::PubComp(PubAck::decode(packet_type, frame, body, version)?)
            }
            PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(frame, body, version)?),
            PacketType::SubAck => Packet::SubAck(SubAck::decode(frame, body, version)?),
            PacketType::Unsubscribe => {
                Packet::Unsubscribe(Unsubscribe::decode(frame, body, version)?)
            }
            PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(frame, body, version)?),
            PacketType::PingReq | PacketType::PingResp => {
                if !body.is_empty() {
                    return Err(DecodeError::TrailingBytes {
                        packet: packet_type,
                    });
                }
                if packet_type == PacketType::PingReq {
                    Packet::PingReq
                } else {
                    Packet::PingResp
                }
            }
            PacketType::Disconnect => {
                Packet::Disconnect(Disconnect::decode(frame, body, version, self.role)?)
            }
            PacketType::Auth => Packet::Auth(Auth::decode(frame, body)?),
        })
    }

    /// Encodes a PUBLISH without its payload at the end of `buf`: fixed header, topic, packet id
    /// and properties, announcing `publish.payload.len()` bytes of payload, which the caller
    /// sends right after (a vectored write). Checks everything [`Codec::encode`] checks.
    ///
    /// # Errors
    /// As [`Codec::encode`]. Nothing is written then.
    pub fn encode_publish_header(
        &self,
        publish: &Publish,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        encode_publish_header(
            self.version.ok_or(EncodeError::VersionUnknown)?,
            &publish.fields(),
            publish.payload.len(),
            self.peer_max_packet_size as usize,
            buf,
        )
    }

    /// Encodes `packet` at the end of `buf`.
    ///
    /// # Errors
    /// An [`EncodeError`] when the packet is one the decoder would reject, one a conforming
    /// sender must not send although a receiver accepts it (a 3.1.1 CONNECT with an empty client
    /// identifier and Clean Session 0, [MQTT-3.1.3-7]: the server answers it with CONNACK 0x02),
    /// does not exist in this version, or exceeds the peer's maximum packet size. Nothing is
    /// written then.
    pub fn encode(&self, packet: &Packet, buf: &mut BytesMut) -> Result<(), EncodeError> {
        // PUBLISH first: it is the packet sent by the million.
        if let Packet::Publish(p) = packet {
            return encode_publish(
                self.version.ok_or(EncodeError::VersionUnknown)?,
                &p.fields(),
                &p.payload,
                self.peer_max_packet_size as usize,
                buf,
            );
        }
        let version = match packet {
            Packet::Connect(c) => c.protocol,
            _ => self.version.ok_or(EncodeError::VersionUnknown)?,
        };
        let packet_type = packet.packet_type();
        if version == ProtocolVersion::V311 && packet_type == PacketType::Auth {
            return Err(EncodeError::NotInVersion {
                packet: packet_type,
            });
        }
        check_codes(packet, version)?;
        let body_len = match packet {
            Packet::Connect(p) => p.body_len()?,
            Packet::ConnAck(p) => p.body_len(version)?,
            Packet::Publish(_) => unreachable!("encoded above"),
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                p.body_len(version)?
            }
            Packet::Subscribe(p) => p.body_len(version)?,
            Packet::SubAck(p) => p.body_len(version)?,
            Packet::Unsubscribe(p) => p.body_len(version)?,
            Packet::UnsubAck(p) => p.body_len(version)?,
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(p) => p.body_len(version)?,
            Packet::Auth(p) => p.body_len()?,
        };
        let size = 1 + varint_len(body_len as u32) + body_len;
        if body_len > MAX_VARINT as usize || size > self.peer_max_packet_size as usize {
            return Err(EncodeError::PacketTooLarge {
                size,
                max: self.peer_max_packet_size as usize,
            });
        }
        buf.reserve(size);
        let flags = packet_type.required_flags().unwrap_or(0);
        buf.put_u8(((packet_type as u8) << 4) | flags);
        put_varint(buf, body_len as u32);
        match packet {
            Packet::Connect(p) => p.write_body(buf),
            Packet::ConnAck(p) => p.write_body(version, buf),
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                p.write_body(version, body_len, buf);
            }
            Packet::Subscribe(p) => p.write_body(version, buf),
            Packet::SubAck(p) => p.write_body(version, buf),
            Packet::Unsubscribe(p) => p.write_body(version, buf),
            Packet::UnsubAck(p) => p.write_body(version, buf),
            Packet::Disconnect(p) => p.write_body(body_len, buf),
            Packet::Auth(p) => p.write_body(body_len, buf),
            Packet::Publish(_) | Packet::PingReq | Packet::PingResp => {}
        }
        Ok(())
    }
}

/// Checks reason codes and the other cross-field rules the decoder applies, before encoding.
fn check_codes(packet: &Packet, version: ProtocolVersion) -> Result<(), EncodeError> {
    let packet_type = packet.packet_type();
    let v5 = version == ProtocolVersion::V5;
    let rejected = |error| Err(EncodeError::Rejected { error });
    let code_ok = |code: ReasonCode| {
        if v5 {
            if code.allowed_in(packet_type) {
                return Ok(());
            }
            return rejected(DecodeError::InvalidReasonCode {
                packet: packet_type,
                code: code.0,
            });
        }
        let ok = match packet_type {
            PacketType::ConnAck => code.0 <= 5,
            PacketType::SubAck => matches!(code.0, 0x00 | 0x01 | 0x02 | 0x80),
            // No other 3.1.1 packet carries a code: only success can be expressed.
            _ => code == ReasonCode::SUCCESS,
        };
        if ok {
            Ok(())
        } else if matches!(packet_type, PacketType::ConnAck | PacketType::SubAck) {
            rejected(DecodeError::InvalidReturnCode {
                packet: packet_type,
                code: code.0,
            })
        } else {
            Err(EncodeError::Invalid {
                packet: packet_type,
                reason: "MQTT 3.1.1 has no reason code for this packet; only success",
            })
        }
    };
    match packet {
        Packet::ConnAck(p) => code_ok(p.reason_code),
        Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
            code_ok(p.reason_code)
        }
        Packet::Disconnect(p) => code_ok(p.reason_code),
        Packet::Auth(p) => code_ok(p.reason_code),
        Packet::SubAck(p) => {
            if p.reason_codes.is_empty() {
                return rejected(DecodeError::AckWithoutReasonCodes {
                    packet: packet_type,
                });
            }
            p.reason_codes.iter().try_for_each(|c| code_ok(*c))
        }
        Packet::UnsubAck(p) if v5 => {
            if p.reason_codes.is_empty() {
                return rejected(DecodeError::AckWithoutReasonCodes {
                    packet: packet_type,
                });
            }
            p.reason_codes.iter().try_for_each(|c| code_ok(*c))
        }
        Packet::Subscribe(p) => {
            if p.filters
                .iter()
                .any(|s| s.options.no_local && crate::topic::is_shared(&s.filter))
            {
                return rejected(DecodeError::NoLocalOnSharedSubscription);
            }
            Ok(())
        }
        Packet::Connect(c)
            if c.protocol == ProtocolVersion::V311 && c.client_id.is_empty() && !c.clean_start =>
        {
            Err(EncodeError::Invalid {
                packet: packet_type,
                reason: "[MQTT-3.1.3-7] an empty client identifier needs Clean Session 1 in 3.1.1",
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use super::Codec;
    use crate::string::ByteStr;
    use crate::types::{PacketId, ProtocolVersion, QoS, Role};
    use crate::{EncodeError, Packet, Publish};

    #[test]
    fn publish_header_then_payload_is_the_whole_publish() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let codec = Codec::new(Role::Client, version);
            let mut p = Publish::new(ByteStr::from_static("a/b"), Bytes::from_static(&[7; 300]));
            p.qos = QoS::AtLeastOnce;
            p.packet_id = PacketId::new(9);
            let mut whole = BytesMut::new();
            codec
                .encode(&Packet::Publish(p.clone()), &mut whole)
                .expect("encodes");
            let mut split = BytesMut::new();
            codec
                .encode_publish_header(&p, &mut split)
                .expect("encodes");
            split.extend_from_slice(&p.payload);
            assert_eq!(whole, split);
        }
    }

    #[test]
    fn publish_header_checks_the_peer_maximum() {
        let mut codec = Codec::new(Role::Client, ProtocolVersion::V5);
        codec.set_peer_max_packet_size(100);
        let p = Publish::new(ByteStr::from_static("a"), Bytes::from_static(&[0; 200]));
        let mut buf = BytesMut::new();
        assert!(matches!(
            codec.encode_publish_header(&p, &mut buf),
            Err(EncodeError::PacketTooLarge { .. })
        ));
        assert!(buf.is_empty());
    }
}
