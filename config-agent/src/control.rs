//! The control protocol between `config-agent` and `dataplane` (docs/control-protocol.md).
//!
//! A Unix stream socket owned by the data plane. Every message is a frame: a 4-byte big-endian
//! length, then that many bytes of one JSON document. The agent opens with [`AgentMessage::Hello`]
//! listing the protocol versions it speaks; the data plane answers [`DataplaneMessage::Welcome`]
//! with the version chosen and the generation it has applied, or [`DataplaneMessage::Error`] and
//! closes. Then the agent sends [`AgentMessage::Apply`] with a generation and the whole snapshot,
//! and the data plane answers [`DataplaneMessage::Applied`] or [`DataplaneMessage::Rejected`].
//!
//! The framing is sans-IO ([`FrameDecoder`], [`encode_frame`]); [`read_message`] and
//! [`write_message`] are the blocking helpers both binaries use. A frame longer than the limit is
//! refused from its length prefix, before anything is allocated for it.

use std::io::{self, Read, Write};

use bytes::{Buf, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The newest protocol version this build speaks.
///
/// Version 2 added [`DataplaneMessage::Applied`]'s `not_running`; an agent of version 1 refuses
/// unknown fields, so a data plane leaves `not_running` out on a version 1 connection.
pub const PROTOCOL_VERSION: u32 = 2;

/// Every protocol version this build speaks, oldest first: what the agent offers in
/// [`AgentMessage::Hello`] and what [`choose_version`] picks from.
pub const SUPPORTED_VERSIONS: &[u32] = &[1, 2];

/// The largest frame accepted by default, in bytes: 64 MiB, far above any real snapshot.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 64 << 20;

/// The largest generation a data plane accepts (`i64::MAX`, which every JSON reader holds
/// exactly enough to compare): generations never wrap, and one that would leave no room above
/// it is refused.
pub const MAX_GENERATION: u64 = i64::MAX as u64;

/// Why a control socket's folder is not safe to use.
#[derive(Debug, thiserror::Error)]
pub enum SocketFolderError {
    /// The folder cannot be read.
    #[error("the control socket's folder {folder}: {source}")]
    Io {
        /// The folder.
        folder: std::path::PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Others may write the folder: they could put their own socket there, or rename ours.
    #[error(
        "the control socket's folder {folder} is writable by others (mode {mode:o}, owner uid {owner}): use a folder only this user (or root) owns and writes, such as one made with mode 0700"
    )]
    Unsafe {
        /// The folder.
        folder: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        owner: u32,
    },
}

/// Checks that the folder of the control socket `path` is one where nobody but this user (and
/// root) can create, replace or rename entries: a folder owned by this effective uid or by
/// root, not writable by its group or by others. Both ends check it: the data plane before it
/// binds, the agent before it connects.
///
/// # Errors
/// [`SocketFolderError`] when the folder cannot be read or others may write it.
pub fn check_socket_folder(path: &std::path::Path) -> Result<(), SocketFolderError> {
    use std::os::unix::fs::MetadataExt as _;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let meta = std::fs::metadata(&folder).map_err(|source| SocketFolderError::Io {
        folder: folder.clone(),
        source,
    })?;
    let own = rustix::process::geteuid().as_raw();
    let (mode, owner) = (meta.mode() & 0o7777, meta.uid());
    if (owner != own && owner != 0) || mode & 0o022 != 0 {
        return Err(SocketFolderError::Unsafe {
            folder,
            mode,
            owner,
        });
    }
    Ok(())
}

/// The effective uid of the process at the other end of a Unix stream (`SO_PEERCRED`).
///
/// # Errors
/// When the kernel does not say.
pub fn peer_uid(stream: &std::os::unix::net::UnixStream) -> io::Result<u32> {
    rustix::net::sockopt::socket_peercred(stream)
        .map(|c| c.uid.as_raw())
        .map_err(io::Error::from)
}

/// The generation to push after `current` (the one in force, if any), or `None` when there is
/// no room left below [`MAX_GENERATION`].
pub fn next_generation(current: Option<u64>) -> Option<u64> {
    current
        .unwrap_or(0)
        .checked_add(1)
        .filter(|g| *g <= MAX_GENERATION)
}

/// What the agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum AgentMessage<S> {
    /// The first message: the protocol versions the agent speaks.
    Hello {
        /// Versions, any order.
        versions: Vec<u32>,
        /// The agent's name and version, for logs (e.g. `config-agent 0.1.0`).
        agent: String,
    },
    /// Apply this snapshot. Generations only grow: the data plane refuses one that is not above
    /// the generation it has applied.
    Apply {
        /// The snapshot's generation.
        generation: u64,
        /// The whole validated configuration.
        snapshot: S,
    },
}

/// What the data plane sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum DataplaneMessage {
    /// The handshake's answer.
    Welcome {
        /// The version chosen: the highest both sides speak.
        version: u32,
        /// The data plane's name and version, for logs.
        dataplane: String,
        /// The generation in force, if any: the agent continues above it.
        generation: Option<u64>,
    },
    /// The snapshot is in force.
    Applied {
        /// Its generation.
        generation: u64,
        /// What changed, by dataflow name.
        changes: Changes,
        /// Enabled dataflows of the snapshot that the data plane does not run, and why (version
        /// 2; never sent on a version 1 connection). Empty: every enabled dataflow runs.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        not_running: Vec<NotRunning>,
    },
    /// The snapshot was refused; the previous one stays in force.
    Rejected {
        /// Its generation.
        generation: u64,
        /// Why, one entry per problem.
        errors: Vec<Problem>,
    },
    /// A protocol error; the data plane closes the connection after sending it.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// One reason a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    /// Where: the resource and field path, e.g. `Dataflow/to-kafka: spec.operations[1]...`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// A dataflow of an applied snapshot that the data plane does not run (protocol version 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotRunning {
    /// The dataflow, `namespace/name`.
    pub dataflow: String,
    /// What kind of reason, stable `snake_case` for programs: `endpoint_kind_not_built` (a Kafka
    /// or LocalStorage endpoint, see [`crate::unsupported`]), `secret_unreadable`,
    /// `setting_missing` (e.g. a token folder the data plane was not given), `start_failed`;
    /// others may be added, so a reader treats an unknown code as "not running".
    pub code: String,
    /// One line for people.
    pub reason: String,
    /// Whether the data plane keeps trying, because the reason can pass (a secret that appears,
    /// a broker that comes back); `false`: it runs only once the configuration changes.
    pub retrying: bool,
}

/// Names in a log line: the first [`Names::SHOWN`], then how many more, so that a snapshot of
/// fifty thousand dataflows logs a line, not a megabyte.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a>(pub &'a [String]);

impl Names<'_> {
    /// How many names are shown.
    pub const SHOWN: usize = 10;
}

impl std::fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[")?;
        for (i, name) in self.0.iter().take(Self::SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        if let Some(more) = self.0.len().checked_sub(Self::SHOWN).filter(|&n| n > 0) {
            write!(f, ", and {more} more")?;
        }
        f.write_str("]")
    }
}

/// Dataflows added, changed, removed and unchanged by a snapshot, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    /// New dataflows.
    pub added: Vec<String>,
    /// Dataflows whose definition (or an endpoint or profile they use) changed.
    pub changed: Vec<String>,
    /// Dataflows no longer in the snapshot.
    pub removed: Vec<String>,
    /// Dataflows left exactly as they were.
    pub unchanged: Vec<String>,
}

/// Errors of the framing and of the blocking helpers.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The length prefix announces more than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// A frame of length 0.
    #[error("empty frame")]
    EmptyFrame,
    /// The frame is not the JSON document expected.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// A well-formed message out of place (e.g. `Apply` before `Hello`).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Socket I/O.
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
}

/// Appends one frame holding `message` to `buf`.
///
/// # Errors
/// [`ControlError::Malformed`] if the message cannot be serialised, and
/// [`ControlError::FrameTooLarge`] past 4 GiB.
pub fn encode_frame<T: Serialize>(message: &T, buf: &mut Vec<u8>) -> Result<(), ControlError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut *buf, message)?;
    let len = buf.len() - start - 4;
    let len = u32::try_from(len).map_err(|_| ControlError::FrameTooLarge {
        len: u32::MAX,
        max: u32::MAX,
    })?;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Splits frames off a byte buffer and parses them.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_bytes: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> Self {
        Self { max_frame_bytes }
    }

    /// The longest frame accepted.
    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    /// Checks a length prefix.
    ///
    /// # Errors
    /// [`ControlError::EmptyFrame`] or [`ControlError::FrameTooLarge`].
    pub fn check_len(&self, len: u32) -> Result<usize, ControlError> {
        match len {
            0 => Err(ControlError::EmptyFrame),
            len if len > self.max_frame_bytes => Err(ControlError::FrameTooLarge {
                len,
                max: self.max_frame_bytes,
            }),
            len => Ok(len as usize),
        }
    }

    /// Parses the next frame at the front of `buf`. `Ok(None)` means more bytes are needed;
    /// only the room the current frame still needs is reserved, and only once its length passed
    /// [`FrameDecoder::check_len`].
    ///
    /// # Errors
    /// A bad length or a frame that is not the expected message: the connection must be closed.
    pub fn decode<T: DeserializeOwned>(
        &self,
        buf: &mut BytesMut,
    ) -> Result<Option<T>, ControlError> {
        let Some(prefix) = buf.get(..4) else {
            return Ok(None);
        };
        let len = self.check_len(u32::from_be_bytes([
            prefix[0], prefix[1], prefix[2], prefix[3],
        ]))?;
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        let frame = buf.split_to(len);
        Ok(Some(serde_json::from_slice(&frame)?))
    }
}

/// Reads one message. `Ok(None)` when the peer closed the connection between frames.
///
/// # Errors
/// See [`ControlError`].
pub fn read_message<T: DeserializeOwned>(
    stream: &mut impl Read,
    decoder: &FrameDecoder,
) -> Result<Option<T>, ControlError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match stream.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ControlError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = decoder.check_len(u32::from_be_bytes(prefix))?;
    let mut frame = vec![0u8; len];
    stream.read_exact(&mut frame).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ControlError::Truncated,
        _ => ControlError::Io(e),
    })?;
    Ok(Some(serde_json::from_slice(&frame)?))
}

/// Writes one message as a frame and flushes.
///
/// # Errors
/// See [`ControlError`].
pub fn write_message<T: Serialize>(
    stream: &mut impl Write,
    message: &T,
) -> Result<(), ControlError> {
    let mut buf = Vec::new();
    encode_frame(message, &mut buf)?;
    stream.write_all(&buf)?;
    stream.flush()?;
    Ok(())
}

/// The version both sides speak, if any: the highest of `offered` that this build speaks
/// ([`SUPPORTED_VERSIONS`]).
pub fn choose_version(offered: &[u32]) -> Option<u32> {
    offered
        .iter()
        .copied()
        .filter(|v| SUPPORTED_VERSIONS.contains(v))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Msg = AgentMessage<serde_json::Value>;

    #[test]
    fn frames_round_trip_split_anywhere() {
        let messages = vec![
            Msg::Hello {
                versions: vec![1],
                agent: "config-agent test".into(),
            },
            Msg::Apply {
                generation: 7,
                snapshot: serde_json::json!({"dataflows": [{"name": "a"}]}),
            },
        ];
        let mut bytes = Vec::new();
        for m in &messages {
            encode_frame(m, &mut bytes).expect("encode");
        }
        let decoder = FrameDecoder::default();
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut out: Vec<Msg> = Vec::new();
            while let Some(m) = decoder.decode(&mut buf).expect("decode") {
                out.push(m);
            }
            buf.extend_from_slice(&bytes[cut..]);
            while let Some(m) = decoder.decode(&mut buf).expect("decode") {
                out.push(m);
            }
            assert_eq!(out, messages, "split at {cut}");
            assert!(buf.is_empty());
        }
        let mut reader = &bytes[..];
        let first: Msg = read_message(&mut reader, &decoder)
            .expect("read")
            .expect("message");
        assert_eq!(first, messages[0]);
    }

    #[test]
    fn the_wire_form_is_tagged_json() {
        let mut bytes = Vec::new();
        encode_frame(
            &DataplaneMessage::Applied {
                generation: 3,
                changes: Changes::default(),
                not_running: Vec::new(),
            },
            &mut bytes,
        )
        .expect("encode");
        // Without not_running, the version 1 form exactly.
        assert_eq!(
            &bytes[4..],
            br#"{"type":"Applied","generation":3,"changes":{"added":[],"changed":[],"removed":[],"unchanged":[]}}"#
        );
        assert_eq!(
            u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize,
            bytes.len() - 4
        );
    }

    #[test]
    fn bad_frames_are_refused_before_allocation() {
        let decoder = FrameDecoder::new(1024);
        let mut huge = BytesMut::from(&[0x40, 0, 0, 0][..]); // 1 GiB announced
        assert!(matches!(
            decoder.decode::<Msg>(&mut huge),
            Err(ControlError::FrameTooLarge {
                len: 0x4000_0000,
                max: 1024
            })
        ));
        assert!(huge.capacity() < 1024);
        let mut empty = BytesMut::from(&[0, 0, 0, 0][..]);
        assert!(matches!(
            decoder.decode::<Msg>(&mut empty),
            Err(ControlError::EmptyFrame)
        ));
        let mut garbage = BytesMut::from(&[0, 0, 0, 3, b'x', b'y', b'z'][..]);
        assert!(matches!(
            decoder.decode::<Msg>(&mut garbage),
            Err(ControlError::Malformed(_))
        ));
        let mut unknown = Vec::new();
        encode_frame(
            &serde_json::json!({"type": "Apply", "generation": 1}),
            &mut unknown,
        )
        .expect("encode");
        let mut unknown = BytesMut::from(&unknown[..]);
        assert!(matches!(
            decoder.decode::<Msg>(&mut unknown),
            Err(ControlError::Malformed(_))
        ));
        let mut reader: &[u8] = &[0x40, 0, 0, 0];
        assert!(matches!(
            read_message::<Msg>(&mut reader, &decoder),
            Err(ControlError::FrameTooLarge { .. })
        ));
        let mut reader: &[u8] = &[0, 0, 0, 9, b'{'];
        assert!(matches!(
            read_message::<Msg>(&mut reader, &decoder),
            Err(ControlError::Truncated)
        ));
    }

    #[test]
    fn versions_are_negotiated() {
        assert_eq!(choose_version(&[1]), Some(1));
        assert_eq!(choose_version(&[2]), Some(2));
        assert_eq!(choose_version(&[1, 2]), Some(2));
        assert_eq!(choose_version(&[3, 1, 2]), Some(2));
        assert_eq!(choose_version(&[3, 1]), Some(1));
        assert_eq!(choose_version(&[3]), None);
        assert_eq!(choose_version(&[]), None);
        assert_eq!(choose_version(SUPPORTED_VERSIONS), Some(PROTOCOL_VERSION));
    }

    #[test]
    fn not_running_is_version_2() {
        let applied = DataplaneMessage::Applied {
            generation: 4,
            changes: Changes::default(),
            not_running: vec![NotRunning {
                dataflow: "azure-iot-operations/to-kafka".into(),
                code: "endpoint_kind_not_built".into(),
                reason: "Kafka endpoints are not implemented yet".into(),
                retrying: false,
            }],
        };
        let json = serde_json::to_string(&applied).expect("encode");
        assert_eq!(
            json,
            r#"{"type":"Applied","generation":4,"changes":{"added":[],"changed":[],"removed":[],"unchanged":[]},"not_running":[{"dataflow":"azure-iot-operations/to-kafka","code":"endpoint_kind_not_built","reason":"Kafka endpoints are not implemented yet","retrying":false}]}"#
        );
        let back: DataplaneMessage = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, applied);
        // A version 1 Applied (no not_running) still reads.
        let v1: DataplaneMessage = serde_json::from_str(
            r#"{"type":"Applied","generation":1,"changes":{"added":[],"changed":[],"removed":[],"unchanged":[]}}"#,
        )
        .expect("decode");
        assert!(
            matches!(v1, DataplaneMessage::Applied { not_running, .. } if not_running.is_empty())
        );
        // Unknown fields in an entry are refused, like everywhere else.
        assert!(
            serde_json::from_str::<NotRunning>(
                r#"{"dataflow":"a/b","code":"x","reason":"y","retrying":true,"extra":1}"#
            )
            .is_err()
        );
    }
}

#[cfg(test)]
mod socket_folder_tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn only_a_folder_others_cannot_write_is_safe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("c.sock");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        assert!(check_socket_folder(&sock).is_ok());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        assert!(check_socket_folder(&sock).is_ok());
        for mode in [0o777, 0o1777, 0o770, 0o702] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode))
                .expect("chmod");
            assert!(
                matches!(
                    check_socket_folder(&sock),
                    Err(SocketFolderError::Unsafe { .. })
                ),
                "{mode:o}"
            );
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        assert!(matches!(
            check_socket_folder(&dir.path().join("missing/c.sock")),
            Err(SocketFolderError::Io { .. })
        ));
    }

    #[test]
    fn long_name_lists_are_cut_in_logs() {
        let names: Vec<String> = (0..12).map(|i| format!("ns/df{i}")).collect();
        assert_eq!(Names(&names[..2]).to_string(), "[ns/df0, ns/df1]");
        assert_eq!(Names(&[]).to_string(), "[]");
        assert_eq!(
            Names(&names).to_string(),
            "[ns/df0, ns/df1, ns/df2, ns/df3, ns/df4, ns/df5, ns/df6, ns/df7, ns/df8, ns/df9, \
             and 2 more]"
        );
    }
}
