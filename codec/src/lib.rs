//! `sluice-codec`: MQTT 3.1.1 and 5.0 control packets, both directions, sans-IO and zero-copy.
//!
//! The codec takes bytes and gives packets, and takes packets and gives bytes; it never touches a
//! socket or a clock. A decoded [`Publish`] holds its topic, properties and payload as [`Bytes`]
//! slices of the frame it came from; [`PublishRef`] is the borrowed view for the hot path, which
//! decodes with no allocation and no reference counting.
//!
//! The decoder is strict: everything the specifications call a malformed packet or a protocol
//! error that can be seen in one packet is refused with a [`DecodeError`] that cites its clause
//! and maps to the MQTT 5.0 reason code for the DISCONNECT that answers it.
//!
//! ```
//! use bytes::BytesMut;
//! use sluice_codec::{Codec, Packet, ProtocolVersion, Role};
//!
//! let mut codec = Codec::new(Role::Client, ProtocolVersion::V311);
//! let mut buf = BytesMut::from(&[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'][..]);
//! let Some(Packet::Publish(p)) = codec.decode(&mut buf)? else { panic!() };
//! assert_eq!(p.topic, "a/b");
//! assert_eq!(&p.payload[..], b"hi");
//! # Ok::<(), sluice_codec::DecodeError>(())
//! ```
//!
//! [`Bytes`]: bytes::Bytes

mod codec;
mod error;
pub mod packet;
pub mod properties;
mod reader;
mod reason;
mod string;
mod table;
pub mod topic;
mod types;
mod varint;

pub use codec::{Codec, MAX_PACKET_SIZE, RawFrame};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::{SubscriptionIds, UserProperties};
pub use reason::ReasonCode;
pub use string::{ByteStr, validate_utf8};
pub use topic::TopicError;
pub use types::{PacketId, PacketType, ProtocolVersion, QoS, Role};
pub use varint::{MAX_VARINT, decode_varint, put_varint, varint_len};
