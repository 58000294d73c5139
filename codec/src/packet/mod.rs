//! The control packets, one module each. Every packet decodes from the body of one frame (the
//! bytes after the fixed header) and encodes into a `BytesMut`.

mod auth;
mod connack;
mod connect;
mod disconnect;
mod puback;
mod publish;
mod suback;
mod subscribe;
mod unsubscribe;

pub use auth::{Auth, AuthProperties};
pub use connack::{ConnAck, ConnAckProperties};
pub use connect::{Connect, ConnectProperties, LastWill, WillProperties};
pub use disconnect::{Disconnect, DisconnectProperties};
pub use puback::{AckProperties, PubAck, PubComp, PubRec, PubRel};
pub use publish::{
    PayloadFormat, Publish, PublishProperties, PublishPropertiesRef, PublishPropertiesWriter,
    PublishPropertyValues, PublishRef,
};
pub use suback::{SubAck, UnsubAck};
pub use subscribe::{
    RetainHandling, Subscribe, SubscribeProperties, Subscription, SubscriptionOptions,
};
pub use unsubscribe::{Unsubscribe, UnsubscribeProperties};

pub(crate) use publish::{
    decode_publish, decode_publish_owned, encode_publish, encode_publish_header,
};

use bytes::{BufMut, Bytes};

use crate::error::EncodeError;
use crate::properties::slice_in;
use crate::string::ByteStr;
use crate::types::PacketType;

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (client to server).
    Connect(Box<Connect>),
    /// CONNACK (server to client).
    ConnAck(ConnAck),
    /// PUBLISH (both directions).
    Publish(Publish),
    /// PUBACK (both directions).
    PubAck(PubAck),
    /// PUBREC (both directions).
    PubRec(PubRec),
    /// PUBREL (both directions).
    PubRel(PubRel),
    /// PUBCOMP (both directions).
    PubComp(PubComp),
    /// SUBSCRIBE (client to server).
    Subscribe(Subscribe),
    /// SUBACK (server to client).
    SubAck(SubAck),
    /// UNSUBSCRIBE (client to server).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (server to client).
    UnsubAck(UnsubAck),
    /// PINGREQ (client to server).
    PingReq,
    /// PINGRESP (server to client).
    PingResp,
    /// DISCONNECT (client to server; both directions in 5.0).
    Disconnect(Disconnect),
    /// AUTH (both directions, 5.0 only).
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }
}

/// A string decoded from `frame`, shared without copying.
pub(crate) fn own_str(frame: &Bytes, s: &str) -> ByteStr {
    ByteStr::from_checked(slice_in(frame, s.as_bytes()))
}

/// A binary field decoded from `frame`, shared without copying.
pub(crate) fn own_bin(frame: &Bytes, b: &[u8]) -> Bytes {
    slice_in(frame, b)
}

/// Checks a string or binary field length for encoding.
pub(crate) fn check_len(field: &'static str, len: usize) -> Result<(), EncodeError> {
    if len > usize::from(u16::MAX) {
        Err(EncodeError::FieldTooLong { field, len })
    } else {
        Ok(())
    }
}

/// Checks a string field for encoding: its length, and no U+0000 ([MQTT-1.5.4-2]), which a
/// `ByteStr` built from a Rust string may hold.
pub(crate) fn check_str(field: &'static str, s: &str) -> Result<(), EncodeError> {
    check_len(field, s.len())?;
    if memchr::memchr(0, s.as_bytes()).is_some() {
        return Err(EncodeError::NullCharacter { field });
    }
    Ok(())
}

/// Writes a two-byte length and the bytes (length checked before).
pub(crate) fn put_bin(buf: &mut impl BufMut, b: &[u8]) {
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;

    /// Every decoded packet is moved a few times on its way out of `Codec::decode` (each move a
    /// copy of the whole enum), so its size is a cost per packet: PUBLISH must stay small, and
    /// no rare packet may make `Packet` bigger than PUBLISH does; box the large fields of rare
    /// packets instead (as CONNECT, CONNACK and AUTH do). Sizes on 64-bit targets, where `Bytes`
    /// is four words.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn packet_sizes() {
        assert!(
            size_of::<PublishProperties>() <= 48,
            "{}",
            size_of::<PublishProperties>()
        );
        assert!(size_of::<Publish>() <= 120, "{}", size_of::<Publish>());
        assert!(size_of::<Packet>() <= 128, "{}", size_of::<Packet>());
        // No variant but PUBLISH sets the size.
        for (name, size) in [
            ("ConnAck", size_of::<ConnAck>()),
            ("PubAck", size_of::<PubAck>()),
            ("Subscribe", size_of::<Subscribe>()),
            ("SubAck", size_of::<SubAck>()),
            ("Unsubscribe", size_of::<Unsubscribe>()),
            ("UnsubAck", size_of::<UnsubAck>()),
            ("Disconnect", size_of::<Disconnect>()),
            ("Auth", size_of::<Auth>()),
        ] {
            assert!(size <= size_of::<Publish>(), "{name} is {size} bytes");
        }
    }
}
