//! The invariants that the fuzz targets check. Each target in `fuzz_targets/` is a one-line call
//! into this library; it is not a test suite of its own. docs/fuzzing.md lists the targets, their
//! input layouts and what each checks.
//!
//! | Target             | Checks                  | What it feeds                                    |
//! |--------------------|-------------------------|--------------------------------------------------|
//! | `decode_to_server` | [`decode_stream`]       | the codec, what a server receives                |
//! | `decode_to_client` | [`decode_stream`]       | the codec, what a client receives                |
//! | `session_bytes`    | [`session::session_bytes`] | the data plane's MQTT client session        |
//! | `websocket_read`   | [`websocket::websocket_read`] | the WebSocket layer: handshake response, frames |
//! | `imds_response`    | [`imds::imds_read`]     | the IMDS client: HTTP response, token body       |
//! | `control_frames`   | [`control::control_frames`] | the control protocol, both directions        |
//! | `manifest_yaml`    | [`manifest::manifest_yaml`] | config-agent's YAML loading and validation   |
//! | `parquet_rows`     | [`parquet::parquet_rows`] | JSON payloads into the Parquet sink's columns   |
//!
//! The rest of this page is the codec's two targets.
//!
//! Input layout: the first byte chooses the codec (see [`codec_for`]) and, with its top bit
//! ([`FRAMED`]), whether the rest is framed input (see [`reframe`]). The rest is a byte stream as
//! it would arrive on one connection, decoded frame after frame until the codec asks for more
//! bytes (`Ok(None)`) or refuses the stream (`Err`).
//!
//! Checked for every frame (any failure is a panic, which libFuzzer reports as a crash):
//! - nothing panics, in the codec or here;
//! - the borrowed path ([`Codec::next_frame`], then [`Codec::decode_publish`] for a PUBLISH) and
//!   the owned path ([`Codec::decode`]) agree: the same frame boundary, the same error, and a
//!   PUBLISH that the borrowed path accepts is accepted by the owned path as an equal packet;
//! - `decode` consumes exactly the frame and nothing on `Ok(None)`;
//! - every decoded packet re-encodes with [`Codec::encode`] (except the few that a receiver must
//!   accept but a sender must not send: `sender_must_not_send`), and those bytes decode again, with
//!   the codec in the state it had before the original frame, to an equal [`Packet`] and leave no
//!   byte behind. Bytes are not compared with the input, since encoding normalises (it drops
//!   optional reason codes and property blocks that are empty, for example);
//! - a borrowed [`PublishRef`] re-encodes to the same bytes as its owned [`Packet::Publish`].
//!
//! [`PublishRef`]: sluice_codec::PublishRef

pub mod control;
pub mod imds;
pub mod manifest;
pub mod parquet;
pub mod session;
pub mod websocket;

use bytes::{Bytes, BytesMut};
use sluice_codec::{Codec, DecodeError, Packet, PacketType, ProtocolVersion, Role};

/// The codec that the selector byte (the first input byte) chooses for `role`; its top bit
/// ([`FRAMED`]) is not part of the choice.
///
/// - To a server (`Role::Server`): `sel % 3` is 0 for MQTT 3.1.1, 1 for 5.0, and 2 for
///   [`Codec::server_awaiting_connect`], which learns the version from the first CONNECT.
/// - To a client (`Role::Client`): `sel % 2` is 0 for MQTT 3.1.1 and 1 for 5.0.
pub fn codec_for(role: Role, sel: u8) -> Codec {
    let sel = sel & !FRAMED;
    match role {
        Role::Server => match sel % 3 {
            0 => Codec::new(role, ProtocolVersion::V311),
            1 => Codec::new(role, ProtocolVersion::V5),
            _ => Codec::server_awaiting_connect(),
        },
        Role::Client => match sel % 2 {
            0 => Codec::new(role, ProtocolVersion::V311),
            _ => Codec::new(role, ProtocolVersion::V5),
        },
    }
}

/// The selector bit for framed input: see [`reframe`].
pub const FRAMED: u8 = 0x80;

/// What separates the frames of framed input.
pub const SEPARATOR: &[u8] = b"\xff--\xff";

/// `stream` cut into the reads it arrives in, `size` bytes each (the last may be shorter); one
/// read of all of it for a `size` of 0. An empty stream is one empty read.
pub fn reads(stream: &[u8], size: u8) -> impl Iterator<Item = &[u8]> {
    let size = match size {
        0 => stream.len().max(1),
        n => usize::from(n),
    };
    let empty: &[u8] = &[];
    let once = stream.is_empty().then_some(empty);
    stream.chunks(size).chain(once)
}

/// Framed input: the stream is frames without their remaining length, separated by
/// [`SEPARATOR`] (the session target reads it the same way); this writes each as a whole frame, its remaining length counted. A mutation that
/// grows or shrinks a body (one more topic filter, a longer property) then needs no second
/// mutation of the fixed header to stay a frame, which plain mutation rarely finds.
pub fn reframe(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream.len() + 8);
    let mut rest = stream;
    loop {
        let (chunk, next) = match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => (&rest[..at], Some(&rest[at + SEPARATOR.len()..])),
            None => (rest, None),
        };
        if let Some((&first, body)) = chunk.split_first() {
            out.push(first);
            let mut len = body.len();
            loop {
                let byte = (len % 128) as u8;
                len /= 128;
                if len == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
            out.extend_from_slice(body);
        }
        match next {
            Some(next) => rest = next,
            None => return out,
        }
    }
}

/// Decodes `data` (selector byte, then the stream) for `role` and checks every invariant listed
/// in the module documentation.
///
/// # Panics
/// When an invariant does not hold: that is the finding.
pub fn decode_stream(role: Role, data: &[u8]) {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let framed;
    let stream = if sel & FRAMED != 0 {
        framed = reframe(stream);
        &framed[..]
    } else {
        stream
    };
    let mut codec = codec_for(role, sel);
    // The owned path eats `buf`; the borrowed path reads the same bytes from `all` at `offset`.
    // `all` is a `Bytes` so that a `PublishRef` into it can be turned into an owned `Publish`.
    let all = Bytes::copy_from_slice(stream);
    let mut buf = BytesMut::from(stream);
    let mut offset = 0;
    loop {
        let before = codec.clone();
        let borrowed = Borrowed::decode(&codec, &all, offset);
        let len_before = buf.len();
        let owned = codec.decode(&mut buf);
        borrowed.check_agrees(&owned, len_before - buf.len(), &all);
        match owned {
            Ok(Some(packet)) => {
                offset += len_before - buf.len();
                round_trip(&before, &codec, &packet);
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// What the borrowed path made of the frame at the front of the remaining bytes.
enum Borrowed<'a> {
    /// `next_frame` refused the fixed header.
    HeaderError(DecodeError),
    /// `next_frame` needs more bytes.
    Incomplete,
    /// A whole frame of `len` bytes that is not a PUBLISH.
    Frame { len: usize },
    /// A whole PUBLISH frame of `len` bytes and what `decode_publish` made of it.
    Publish {
        len: usize,
        decoded: Result<sluice_codec::PublishRef<'a>, DecodeError>,
    },
}

impl<'a> Borrowed<'a> {
    fn decode(codec: &Codec, all: &'a Bytes, offset: usize) -> Self {
        match codec.next_frame(&all[offset..]) {
            Err(e) => Self::HeaderError(e),
            Ok(None) => Self::Incomplete,
            Ok(Some(frame)) => {
                assert!(
                    frame.len() >= frame.header_len && frame.header_len >= 2,
                    "next_frame: frame of {} bytes with a {}-byte header",
                    frame.len(),
                    frame.header_len
                );
                if frame.packet_type == PacketType::Publish {
                    Self::Publish {
                        len: frame.len(),
                        decoded: codec.decode_publish(&frame),
                    }
                } else {
                    Self::Frame { len: frame.len() }
                }
            }
        }
    }

    /// Checks that the owned path, which consumed `consumed` bytes, agrees with this outcome.
    fn check_agrees(
        &self,
        owned: &Result<Option<Packet>, DecodeError>,
        consumed: usize,
        all: &Bytes,
    ) {
        match (self, owned) {
            (Self::HeaderError(b), Err(o)) => assert_eq!(
                b, o,
                "next_frame and decode refuse the same header with different errors"
            ),
            (Self::HeaderError(b), Ok(o)) => {
                panic!("next_frame refused the header ({b:?}) but decode gave {o:?}")
            }
            (Self::Incomplete, Ok(None)) => {
                assert_eq!(
                    consumed, 0,
                    "decode consumed {consumed} bytes but returned Ok(None)"
                );
            }
            (Self::Incomplete, o) => panic!("next_frame needs more bytes but decode gave {o:?}"),
            (Self::Frame { .. } | Self::Publish { .. }, Ok(None)) => {
                panic!("next_frame found a whole frame but decode returned Ok(None)")
            }
            (Self::Frame { len }, Ok(Some(_))) => assert_eq!(
                consumed, *len,
                "decode consumed a different length than next_frame's frame"
            ),
            (Self::Frame { .. }, Err(_)) => {}
            (Self::Publish { len, decoded }, owned) => match (decoded, owned) {
                (Ok(view), Ok(Some(Packet::Publish(p)))) => {
                    assert_eq!(
                        consumed, *len,
                        "decode consumed a different length than next_frame's frame"
                    );
                    let from_view = view.to_owned_in(all);
                    assert_eq!(
                        &from_view, p,
                        "borrowed and owned PUBLISH differ for the same frame"
                    );
                }
                (Ok(view), o) => panic!(
                    "the borrowed path accepts a PUBLISH ({view:?}) that decode gives as {o:?}"
                ),
                (Err(b), Err(o)) => assert_eq!(
                    b, o,
                    "decode_publish and decode refuse the same PUBLISH with different errors"
                ),
                (Err(b), Ok(o)) => {
                    panic!("decode_publish refuses a PUBLISH ({b:?}) that decode accepts as {o:?}")
                }
            },
        }
    }
}

/// Re-encodes `packet` (decoded by `after`, which was `before` until then) and decodes the bytes
/// again with a copy of `before`: the packet must come back equal, from all of the bytes.
fn round_trip(before: &Codec, after: &Codec, packet: &Packet) {
    let mut encoded = BytesMut::new();
    if let Err(e) = after.encode(packet, &mut encoded) {
        if sender_must_not_send(packet) {
            return;
        }
        panic!("a decoded packet does not re-encode: {e:?} ({e}); packet: {packet:?}");
    }
    let wire = encoded.clone().freeze();

    if let Packet::Publish(p) = packet {
        // The borrowed view of the re-encoded frame encodes to the same bytes again.
        let version = after
            .version()
            .expect("a PUBLISH decoded, so the version is known");
        let frame = match before.next_frame(&wire) {
            Ok(Some(frame)) => frame,
            other => panic!("re-encoded PUBLISH {wire:02x?} is not one frame: {other:?}"),
        };
        let view = match before.decode_publish(&frame) {
            Ok(view) => view,
            Err(e) => panic!("re-encoded PUBLISH {wire:02x?} refused: {e:?} ({e}); was {p:?}"),
        };
        let mut again = BytesMut::new();
        if let Err(e) = view.encode(version, &mut again) {
            panic!("PublishRef::encode failed: {e:?} ({e}); view: {view:?}");
        }
        assert_eq!(
            &again[..],
            &wire[..],
            "PublishRef::encode and Codec::encode give different bytes"
        );
    }

    let mut codec = before.clone();
    match codec.decode(&mut encoded) {
        Ok(Some(back)) => {
            assert_eq!(
                &back, packet,
                "re-encoded packet decodes to a different packet; bytes: {wire:02x?}"
            );
            assert!(
                encoded.is_empty(),
                "re-encoded packet leaves {} bytes undecoded; bytes: {wire:02x?}",
                encoded.len()
            );
        }
        other => panic!(
            "re-encoded packet does not decode: {other:?}; bytes: {wire:02x?}; packet: {packet:?}"
        ),
    }
}

/// The packets that a receiver must decode, because the specification tells it how to answer
/// them, but that a conforming sender never sends, so that `encode` may refuse them:
/// - a 3.1.1 CONNECT with an empty client identifier and Clean Session 0: the client must not send
///   it ([MQTT-3.1.3-7]) and the server answers it with CONNACK 0x02 ([MQTT-3.1.3-8]), so the
///   server-side decoder accepts it.
fn sender_must_not_send(packet: &Packet) -> bool {
    matches!(packet, Packet::Connect(c)
        if c.protocol == ProtocolVersion::V311 && c.client_id.is_empty() && !c.clean_start)
}
