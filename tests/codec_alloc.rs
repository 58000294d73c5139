//! Decoding a PUBLISH or a PUBACK allocates nothing: the frame is split off the read buffer and
//! the packet's fields are slices of it. Measured with a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::BytesMut;
use sluice_codec::{
    Codec, Packet, PacketId, ProtocolVersion, PubAck, Publish, PublishProperties,
    PublishPropertyValues, QoS, Role, UserProperties,
};

struct Counting;

thread_local! {
    // Counted per thread: the test harness's own threads allocate too.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn allocated() -> usize {
    ALLOCATIONS.with(Cell::get)
}

fn count() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

#[allow(unsafe_code)]
// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FRAMES: usize = 1000;

fn stream(version: ProtocolVersion) -> BytesMut {
    let codec = Codec::new(Role::Client, version);
    let mut buf = BytesMut::new();
    for i in 0..FRAMES {
        let id = PacketId::new(i as u16 % 1000 + 1).expect("non-zero");
        let mut properties = PublishProperties::new();
        if version == ProtocolVersion::V5 {
            properties = PublishPropertyValues {
                user_properties: UserProperties::from_pairs([
                    ("device", "d-17"),
                    ("seq", "42"),
                    ("seq", "43"),
                ])
                .expect("valid pairs"),
                content_type: Some("application/json".into()),
                correlation_data: Some(bytes::Bytes::from_static(b"corr")),
                ..PublishPropertyValues::default()
            }
            .build()
            .expect("valid properties");
        }
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "factory/line-1/sensor".into(),
            packet_id: Some(id),
            properties,
            payload: bytes::Bytes::from(vec![b'x'; 100]),
        };
        codec
            .encode(&Packet::Publish(publish), &mut buf)
            .expect("encode");
        codec
            .encode(&Packet::PubAck(PubAck::new(id)), &mut buf)
            .expect("encode");
    }
    buf
}

#[test]
fn decoding_publish_and_puback_does_not_allocate() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut buf = stream(version);
        let mut codec = Codec::new(Role::Client, version);
        let mut packets = 0;
        let mut user_properties = 0;
        let mut content_types = 0;
        let before = allocated();
        while let Some(p) = codec.decode(&mut buf).expect("decode") {
            if let Packet::Publish(p) = &p {
                // Reading the properties, borrowed or as shared slices, allocates nothing either.
                user_properties += p.properties.user_properties().iter().count();
                content_types += usize::from(p.properties.content_type_bytes().is_some());
                assert_eq!(
                    p.properties.correlation_data_bytes().as_deref(),
                    (version == ProtocolVersion::V5).then_some(&b"corr"[..])
                );
            }
            packets += 1;
        }
        let allocations = allocated() - before;
        assert_eq!(packets, 2 * FRAMES);
        if version == ProtocolVersion::V5 {
            assert_eq!(user_properties, 3 * FRAMES);
            assert_eq!(content_types, FRAMES);
        }
        // The first split turns the read buffer's Vec into a shared buffer: one allocation for
        // the whole stream, none per packet.
        assert!(
            allocations <= 1,
            "{version:?}: {allocations} allocations for {packets} packets"
        );

        // The borrowed path never allocates.
        let bytes = stream(version);
        let codec = Codec::new(Role::Client, version);
        let before = allocated();
        let mut rest = &bytes[..];
        let mut n = 0;
        while let Some(frame) = codec.next_frame(rest).expect("frame") {
            if frame.packet_type == sluice_codec::PacketType::Publish {
                let p = codec.decode_publish(&frame).expect("publish");
                n += p.payload.len() + p.properties.user_properties().iter().count();
            }
            rest = &rest[frame.len()..];
        }
        assert_eq!(allocated() - before, 0, "{version:?}");
        assert!(n > 0);
    }
}
