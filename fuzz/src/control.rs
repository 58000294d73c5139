//! The `control_frames` target: bytes on the control socket between `config-agent` and the data
//! plane, in either direction, read with the protocol's framing ([`FrameDecoder`], as bytes
//! arrive, and the blocking [`read_message`]) into the messages of that direction, and what the
//! data plane does next with a snapshot it is sent (sort, re-validate, diff).
//!
//! Input: a selector byte ([`TO_AGENT`], [`FRAMED`]), a read size (0: one read), then the bytes.
//! Framed input is JSON documents separated by [`SEPARATOR`], each given its length prefix here,
//! so that a mutation inside a document keeps the frame whole.
//!
//! Checked (any failure is a panic):
//! - nothing panics, in the framing, in serde's reading of the messages, or in the data plane's
//!   handling of a snapshot (`Snapshot::sort`, `validate_snapshot`, `Snapshot::changes`) and of
//!   the versions a Hello offers (`choose_version`);
//! - [`FrameDecoder`] fed read by read and [`read_message`] over all the bytes give the same
//!   messages and end the same way (the same error; an incomplete frame is `Truncated` for
//!   the reader);
//! - the decoder's buffer never holds room for more than one frame of the limit (a length prefix
//!   over the limit is refused before anything is reserved);
//! - every message read encodes ([`encode_frame`]) and reads back equal;
//! - a snapshot the data plane's validation accepts diffs sanely: each dataflow once in added,
//!   changed or unchanged, and against itself everything unchanged.

use std::fmt::Debug;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_config_agent::control::{
    AgentMessage, ControlError, DEFAULT_MAX_FRAME_BYTES, DataplaneMessage, FrameDecoder,
    SUPPORTED_VERSIONS, choose_version, encode_frame, read_message,
};
use sluice_config_agent::{MemFiles, Options, Snapshot, validate_snapshot};

use crate::{FRAMED, SEPARATOR};

/// Selector bit: the bytes go to the agent ([`DataplaneMessage`]); else to the data plane
/// ([`AgentMessage`] with a [`Snapshot`]).
pub const TO_AGENT: u8 = 0x01;

/// The frame limit of the decoders here: small, so that a length prefix over it is easy to find.
pub const MAX_FRAME_BYTES: u32 = 16 << 10;

/// How reading a stream of frames ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// At a frame boundary, all bytes used.
    Clean,
    /// Inside a frame (the decoder waits for more; the reader says `Truncated`).
    Partial,
    EmptyFrame,
    TooLarge {
        len: u32,
        max: u32,
    },
    Malformed(String),
}

impl End {
    fn of(e: &ControlError) -> Self {
        match e {
            ControlError::EmptyFrame => Self::EmptyFrame,
            ControlError::FrameTooLarge { len, max } => Self::TooLarge {
                len: *len,
                max: *max,
            },
            ControlError::Malformed(e) => Self::Malformed(e.to_string()),
            ControlError::Truncated => Self::Partial,
            e => panic!("reading from bytes gave {e:?}"),
        }
    }
}

/// Framed input: each document given its 4-byte length.
pub fn with_prefixes(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream.len() + 16);
    let mut rest = stream;
    loop {
        let (doc, next) = match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => (&rest[..at], Some(&rest[at + SEPARATOR.len()..])),
            None => (rest, None),
        };
        out.extend_from_slice(&(doc.len() as u32).to_be_bytes());
        out.extend_from_slice(doc);
        match next {
            Some(next) => rest = next,
            None => return out,
        }
    }
}

/// Reads `stream` both ways as messages of type `T` and checks that they agree, that the buffer
/// stays bounded and that each message round-trips. Returns the messages.
fn read_all<T>(stream: &[u8], read_size: u8) -> Vec<T>
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let decoder = FrameDecoder::new(MAX_FRAME_BYTES);
    let bound = 2 * (4 + MAX_FRAME_BYTES as usize) + 2 * stream.len() + 64;
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    let mut end = None;
    'reads: for read in crate::reads(stream, read_size) {
        buf.extend_from_slice(read);
        loop {
            match decoder.decode::<T>(&mut buf) {
                Ok(Some(m)) => decoded.push(m),
                Ok(None) => break,
                Err(e) => {
                    end = Some(End::of(&e));
                    break 'reads;
                }
            }
        }
        assert!(
            buf.capacity() <= bound,
            "the decoder's buffer has room for {} bytes",
            buf.capacity()
        );
    }
    let end = end.unwrap_or(if buf.is_empty() {
        End::Clean
    } else {
        End::Partial
    });

    let mut reader = stream;
    let mut read = Vec::new();
    let read_end = loop {
        match read_message::<T>(&mut reader, &decoder) {
            Ok(Some(m)) => read.push(m),
            Ok(None) => break End::Clean,
            Err(e) => break End::of(&e),
        }
    };
    assert_eq!(
        decoded, read,
        "FrameDecoder and read_message read different messages"
    );
    assert_eq!(
        end, read_end,
        "FrameDecoder and read_message end differently"
    );

    let wide = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    for m in &decoded {
        let mut bytes = Vec::new();
        encode_frame(m, &mut bytes).expect("a message read encodes");
        let mut bytes = BytesMut::from(&bytes[..]);
        match wide.decode::<T>(&mut bytes) {
            Ok(Some(back)) => assert_eq!(&back, m, "a message reads back different"),
            other => panic!("a message encoded does not read back: {other:?}; was {m:?}"),
        }
        assert!(bytes.is_empty(), "bytes left after a re-encoded message");
    }
    decoded
}

/// What the data plane does with the messages an agent sends, after reading them.
fn data_plane_handles(messages: Vec<AgentMessage<Snapshot>>) {
    let mut previous: Option<Snapshot> = None;
    for m in messages {
        match m {
            AgentMessage::Hello { versions, .. } => {
                if let Some(v) = choose_version(&versions) {
                    assert!(
                        versions.contains(&v) && SUPPORTED_VERSIONS.contains(&v),
                        "chose version {v} from {versions:?}"
                    );
                }
            }
            AgentMessage::Apply { mut snapshot, .. } => {
                snapshot.sort();
                // As the data plane's applier: its own local broker, no folders to check.
                let options = Options {
                    local_broker_host: snapshot.local_broker_host.clone(),
                    require_local_broker: false,
                    secrets_dir: None,
                    configmaps_dir: None,
                    volumes_dir: None,
                    schemas_dir: None,
                };
                let diagnostics = validate_snapshot(&snapshot, &options, &MemFiles::new());
                let mut errors = false;
                for d in &diagnostics {
                    let _ = d.to_string();
                    errors |= d.is_error();
                }
                if errors {
                    continue;
                }
                let changes = snapshot.changes(previous.as_ref());
                assert_eq!(
                    changes.added.len() + changes.changed.len() + changes.unchanged.len(),
                    snapshot.dataflows.len(),
                    "a dataflow missing from the changes, or in them twice: {changes:?}"
                );
                let same = snapshot.changes(Some(&snapshot));
                assert!(
                    same.added.is_empty() && same.changed.is_empty() && same.removed.is_empty(),
                    "a snapshot changes itself: {same:?}"
                );
                previous = Some(snapshot);
            }
        }
    }
}

/// Reads `data` (selector byte, read size, the bytes) as the control protocol's side that the
/// selector chooses and checks every invariant listed in the module documentation.
///
/// # Panics
/// When an invariant does not hold: that is the finding.
pub fn control_frames(data: &[u8]) {
    let [sel, read_size, stream @ ..] = data else {
        return;
    };
    let framed;
    let stream = if sel & FRAMED != 0 {
        framed = with_prefixes(stream);
        &framed[..]
    } else {
        stream
    };
    if sel & TO_AGENT != 0 {
        read_all::<DataplaneMessage>(stream, *read_size);
    } else {
        data_plane_handles(read_all::<AgentMessage<Snapshot>>(stream, *read_size));
    }
}
