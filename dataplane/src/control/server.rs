//! The data plane's end of the control socket (docs/control-protocol.md): a Unix stream socket,
//! mode 0600, that accepts only peers running as the same user (checked with SO_PEERCRED), speaks
//! the handshake, and hands each `Apply` to an [`Applier`].
//!
//! One thread accepts; each connection gets its own thread, so a stranger that connects and says
//! nothing cannot block the agent. Applies are serialised by the applier's mutex. A connection
//! that sends an oversized or malformed frame gets an `Error` message and is closed; the process
//! goes on.

use std::io;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use sluice_config_agent::control::{
    AgentMessage, Changes, ControlError, DataplaneMessage, FrameDecoder, MAX_GENERATION,
    NotRunning, PROTOCOL_VERSION, Problem, SocketFolderError, check_socket_folder, choose_version,
    write_message,
};
use tracing::{debug, info, warn};

use crate::observe::logs::Escaped;

/// How long a new connection may take to say hello.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Applies snapshots: the data plane's configuration state.
pub(crate) trait Applier: Send + 'static {
    /// The snapshot type carried by `Apply`.
    type Snapshot: DeserializeOwned;

    /// The generation in force, if any.
    fn generation(&self) -> Option<u64>;

    /// Validates `snapshot` again and puts it in force, or refuses it and keeps the previous one.
    ///
    /// # Errors
    /// The problems that make it unacceptable.
    fn apply(&mut self, generation: u64, snapshot: Self::Snapshot)
    -> Result<Changes, Vec<Problem>>;

    /// The dataflows of the snapshot in force that do not run, and why.
    fn not_running(&self) -> Vec<NotRunningEntry> {
        Vec::new()
    }
}

/// A dataflow of the snapshot in force that the data plane does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotRunningEntry {
    /// `namespace/name`.
    pub(crate) dataflow: String,
    /// The kind of reason ([`crate::config::skip::SkipReason::code`]).
    pub(crate) code: &'static str,
    /// Why, for people.
    pub(crate) reason: String,
    /// Whether the data plane tries again (the reason can pass).
    pub(crate) retrying: bool,
}

impl NotRunningEntry {
    /// The control protocol's form.
    fn into_wire(self) -> NotRunning {
        NotRunning {
            dataflow: self.dataflow,
            code: self.code.to_owned(),
            reason: self.reason,
            retrying: self.retrying,
        }
    }
}

/// Errors that stop the control server from starting.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// Another process answers on the socket path.
    #[error("{0} is in use by a running process")]
    InUse(PathBuf),
    /// Others may write the socket's folder (or it cannot be read).
    #[error(transparent)]
    Folder(#[from] SocketFolderError),
    /// Something that is not a socket is at the socket path: it is not removed.
    #[error("{0} exists and is not a socket; it is left alone (choose another --control-socket)")]
    NotASocket(PathBuf),
    /// Creating or securing the socket failed.
    #[error("control socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Binds the control socket at `path` with mode 0600. A stale socket file left by a dead process
/// is replaced; a live one is an error. The socket is created under a temporary name, secured,
/// then renamed into place, so it is never reachable with looser permissions.
///
/// # Errors
/// See [`ServeError`].
pub(crate) fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Socket {
        path: path.to_owned(),
        source,
    };
    check_socket_folder(path)?;
    remove_stale_socket(path)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    remove_stale_socket(&tmp)?;
    let listener = UnixListener::bind(&tmp).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    // Never over something that appeared at `path` meanwhile.
    if let Err(e) = rustix::fs::renameat_with(
        rustix::fs::CWD,
        &tmp,
        rustix::fs::CWD,
        path,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e.into()));
    }
    Ok(listener)
}

/// Removes the socket at `path` at shutdown, if a socket is what is there.
pub(crate) fn remove_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt as _;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Makes room at `path` for our socket: nothing there is fine; a socket that no process
/// answers on (left by a dead one) is removed; a live socket, or anything that is not a socket
/// (a file, a folder, a symbolic link), is left alone and refused.
fn remove_stale_socket(path: &Path) -> Result<(), ServeError> {
    use std::os::unix::fs::FileTypeExt as _;
    let err = |source| ServeError::Socket {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e)),
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(ServeError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(err)
        }
        Ok(_) => Err(ServeError::NotASocket(path.to_owned())),
    }
}

/// What a peer of the control socket may take; [`Default`] gives the documented values.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// From the accept to the end of the Hello frame. Default 10 s.
    pub(crate) hello_timeout: Duration,
    /// From a frame's first byte to its last, after Hello. Default 30 s.
    pub(crate) frame_timeout: Duration,
    /// How long one write of a reply may block. Default 5 s.
    pub(crate) write_timeout: Duration,
    /// Connections served at once; more are answered `Error` and closed. Default 16.
    pub(crate) max_connections: usize,
    /// Bytes of frames received and not yet complete, over all connections; a frame that would
    /// pass it closes its connection. Default 128 MiB.
    pub(crate) max_unfinished_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hello_timeout: HANDSHAKE_TIMEOUT,
            frame_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(5),
            max_connections: 16,
            max_unfinished_bytes: 128 << 20,
        }
    }
}

/// What the connections share: the limits, how many there are, and the bytes of their
/// unfinished frames.
#[derive(Debug)]
struct Shared {
    limits: Limits,
    connections: AtomicUsize,
    unfinished: AtomicUsize,
}

/// Counts a connection until dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connections forever, one thread each, with the default [`Limits`] (the total of
/// unfinished frames raised to one frame of `decoder`'s largest when that is more).
pub(crate) fn serve<A: Applier>(
    listener: UnixListener,
    applier: Arc<Mutex<A>>,
    decoder: FrameDecoder,
) {
    // One frame of the largest size must fit in the total of unfinished frames.
    let default = Limits::default();
    let limits = Limits {
        max_unfinished_bytes: default
            .max_unfinished_bytes
            .max(decoder.max_frame_bytes() as usize),
        ..default
    };
    serve_with(listener, applier, decoder, limits);
}

/// Accepts connections forever, one thread each, at most [`Limits::max_connections`] at once.
/// Accept errors (descriptors exhausted, say) are backed off (10 ms doubling to 1 s) and
/// logged at most once a second, with how many came meanwhile.
pub(crate) fn serve_with<A: Applier>(
    listener: UnixListener,
    applier: Arc<Mutex<A>>,
    decoder: FrameDecoder,
    limits: Limits,
) {
    let own_uid = rustix::process::geteuid().as_raw();
    let shared = Arc::new(Shared {
        limits,
        connections: AtomicUsize::new(0),
        unfinished: AtomicUsize::new(0),
    });
    let mut backoff = Duration::ZERO;
    let mut failures = 0u64;
    let mut last_logged: Option<Instant> = None;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(e) => {
                failures += 1;
                if last_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    warn!(error = %e, failures, "control: accept failed; backing off");
                    last_logged = Some(Instant::now());
                    failures = 0;
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                std::thread::sleep(backoff);
                continue;
            }
        };
        if shared.connections.fetch_add(1, Ordering::AcqRel) >= shared.limits.max_connections {
            let _slot = Slot(&shared.connections);
            refuse(stream, &shared.limits, "too many control connections");
            continue;
        }
        let (applier, shared) = (Arc::clone(&applier), Arc::clone(&shared));
        let spawned = std::thread::Builder::new()
            .name("control-conn".into())
            .spawn(move || {
                let _slot = Slot(&shared.connections);
                handle(stream, own_uid, &applier, decoder, &shared);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "control: cannot start a connection thread");
        }
    }
}

/// Answers `Error` without waiting for the peer, and closes.
fn refuse(mut stream: UnixStream, limits: &Limits, why: &str) {
    let _ = stream.set_nonblocking(true);
    let _ = stream.set_write_timeout(Some(limits.write_timeout));
    let _ = write_message(
        &mut stream,
        &DataplaneMessage::Error {
            message: why.to_owned(),
        },
    );
}

/// Serves one connection until it closes or breaks the protocol.
fn handle<A: Applier>(
    mut stream: UnixStream,
    own_uid: u32,
    applier: &Mutex<A>,
    decoder: FrameDecoder,
    shared: &Shared,
) {
    let _ = stream.set_write_timeout(Some(shared.limits.write_timeout));
    let peer = match rustix::net::sockopt::socket_peercred(&stream) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "control: cannot read the peer's credentials; closing");
            return;
        }
    };
    let (uid, pid) = (peer.uid.as_raw(), peer.pid.as_raw_nonzero().get());
    if uid != own_uid {
        warn!(
            peer_uid = uid,
            peer_pid = pid,
            own_uid,
            "control: refused a peer running as another user"
        );
        let _ = write_message(
            &mut stream,
            &DataplaneMessage::Error {
                message: format!("uid {uid} may not configure this data plane"),
            },
        );
        return;
    }
    debug!(peer_pid = pid, "control: connection");
    if let Err(e) = converse(&mut stream, applier, decoder, shared) {
        warn!(peer_pid = pid, error = %Escaped(&e.to_string()), "control: closing the connection");
        let _ = write_message(
            &mut stream,
            &DataplaneMessage::Error {
                message: e.to_string(),
            },
        );
    }
}

fn version_string() -> String {
    format!("dataplane {}", env!("CARGO_PKG_VERSION"))
}

fn converse<A: Applier>(
    stream: &mut UnixStream,
    applier: &Mutex<A>,
    decoder: FrameDecoder,
    shared: &Shared,
) -> Result<(), ControlError> {
    // The whole Hello within its deadline, counted from the accept (not per read).
    let hello_by = Instant::now() + shared.limits.hello_timeout;
    let hello: Option<AgentMessage<serde_json::Value>> =
        read_frame(stream, &decoder, shared, Some(hello_by))?;
    let (versions, agent) = match hello {
        None => return Ok(()),
        Some(AgentMessage::Hello { versions, agent }) => (versions, agent),
        Some(AgentMessage::Apply { .. }) => {
            return Err(protocol_error("the first message must be Hello"));
        }
    };
    let Some(version) = choose_version(&versions) else {
        return Err(protocol_error(&format!(
            "no common protocol version: the agent speaks {versions:?}, this data plane {PROTOCOL_VERSION}"
        )));
    };
    let generation = lock(applier).generation();
    write_message(
        stream,
        &DataplaneMessage::Welcome {
            version,
            dataplane: version_string(),
            generation,
        },
    )?;
    info!(agent = %Escaped(&agent), version, "control: agent connected");
    loop {
        // An agent may stay connected and quiet; once a frame starts, it has its deadline.
        let message: Option<AgentMessage<A::Snapshot>> =
            read_frame(stream, &decoder, shared, None)?;
        let (generation, snapshot) = match message {
            None => {
                info!(agent = %Escaped(&agent), "control: agent disconnected");
                return Ok(());
            }
            Some(AgentMessage::Apply {
                generation,
                snapshot,
            }) => (generation, snapshot),
            Some(AgentMessage::Hello { .. }) => return Err(protocol_error("Hello sent twice")),
        };
        let reply = {
            let mut a = lock(applier);
            match a.generation() {
                _ if generation > MAX_GENERATION => DataplaneMessage::Rejected {
                    generation,
                    errors: vec![Problem {
                        path: "generation".into(),
                        message: format!(
                            "generation {generation} is above the largest accepted ({MAX_GENERATION}): generations never wrap"
                        ),
                    }],
                },
                Some(current) if generation <= current => DataplaneMessage::Rejected {
                    generation,
                    errors: vec![Problem {
                        path: "generation".into(),
                        message: format!(
                            "generation {generation} is not above the generation in force ({current})"
                        ),
                    }],
                },
                _ => match a.apply(generation, snapshot) {
                    Ok(changes) => {
                        let not_running = a.not_running();
                        for n in &not_running {
                            warn!(generation, dataflow = %n.dataflow, code = n.code, retrying = n.retrying, reason = %n.reason, "applied, but the dataflow does not run");
                        }
                        // Version 1 agents refuse fields they do not know.
                        let not_running = if version >= 2 {
                            not_running
                                .into_iter()
                                .map(NotRunningEntry::into_wire)
                                .collect()
                        } else {
                            Vec::new()
                        };
                        DataplaneMessage::Applied {
                            generation,
                            changes,
                            not_running,
                        }
                    }
                    Err(errors) => DataplaneMessage::Rejected { generation, errors },
                },
            }
        };
        write_message(stream, &reply)?;
    }
}

/// Reads one frame: `Ok(None)` when the peer closed before its first byte. The first byte is
/// awaited until `first_by` (for ever without it); from then on the whole frame must arrive
/// within [`Limits::frame_timeout`] (and by `first_by`, when given). The body grows as its bytes
/// arrive (never to the announced length at once), and counts against
/// [`Limits::max_unfinished_bytes`] with the other connections' until it is complete.
fn read_frame<T: serde::de::DeserializeOwned>(
    stream: &mut UnixStream,
    decoder: &FrameDecoder,
    shared: &Shared,
    first_by: Option<Instant>,
) -> Result<Option<T>, ControlError> {
    let timed_out = || ControlError::Protocol("the frame did not arrive in time".into());
    let wait = |stream: &UnixStream, by: Option<Instant>| -> Result<(), ControlError> {
        let left = match by {
            None => None,
            Some(by) => {
                let left = by.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timed_out());
                }
                Some(left)
            }
        };
        stream.set_read_timeout(left)?;
        Ok(())
    };
    let read = |stream: &mut UnixStream, buf: &mut [u8]| -> Result<usize, ControlError> {
        loop {
            match stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timed_out());
                }
                other => return other.map_err(ControlError::from),
            }
        }
    };
    let mut prefix = [0u8; 4];
    wait(stream, first_by)?;
    if read(stream, &mut prefix[..1])? == 0 {
        return Ok(None);
    }
    let by = Instant::now() + shared.limits.frame_timeout;
    let by = Some(first_by.map_or(by, |f| f.min(by)));
    let mut got = 1;
    while got < 4 {
        wait(stream, by)?;
        match read(stream, &mut prefix[got..])? {
            0 => return Err(ControlError::Truncated),
            n => got += n,
        }
    }
    let len = decoder.check_len(u32::from_be_bytes(prefix))?;
    let mut frame: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let mut counted = 0usize;
    let result = (|| {
        while frame.len() < len {
            wait(stream, by)?;
            let want = (len - frame.len()).min(chunk.len());
            let n = read(stream, &mut chunk[..want])?;
            if n == 0 {
                return Err(ControlError::Truncated);
            }
            let total = shared.unfinished.fetch_add(n, Ordering::AcqRel) + n;
            counted += n;
            if total > shared.limits.max_unfinished_bytes {
                return Err(ControlError::Protocol(format!(
                    "unfinished control frames exceed {} bytes in all",
                    shared.limits.max_unfinished_bytes
                )));
            }
            frame.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    })();
    shared.unfinished.fetch_sub(counted, Ordering::AcqRel);
    result?;
    Ok(Some(serde_json::from_slice(&frame)?))
}

fn lock<A>(m: &Mutex<A>) -> std::sync::MutexGuard<'_, A> {
    // A panic while applying leaves the previous state, which stays usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn protocol_error(message: &str) -> ControlError {
    ControlError::Protocol(message.to_owned())
}

#[cfg(test)]
mod tests {
    use sluice_config_agent::control::read_message;

    use super::*;

    /// Accepts every snapshot whose `ok` is true; reports names as added.
    #[derive(Default)]
    struct Fake {
        generation: Option<u64>,
    }

    impl Applier for Fake {
        type Snapshot = serde_json::Value;
        fn generation(&self) -> Option<u64> {
            self.generation
        }
        fn apply(
            &mut self,
            generation: u64,
            s: serde_json::Value,
        ) -> Result<Changes, Vec<Problem>> {
            if s["ok"] == true {
                self.generation = Some(generation);
                Ok(Changes {
                    added: vec!["df".into()],
                    ..Changes::default()
                })
            } else {
                Err(vec![Problem {
                    path: "ok".into(),
                    message: "not ok".into(),
                }])
            }
        }
        fn not_running(&self) -> Vec<NotRunningEntry> {
            vec![NotRunningEntry {
                dataflow: "ns/kafka".into(),
                code: "endpoint_kind_not_built",
                reason: "Kafka endpoints are not run".into(),
                retrying: false,
            }]
        }
    }

    fn server() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        let listener = bind(&path).expect("bind");
        let applier = Arc::new(Mutex::new(Fake::default()));
        std::thread::spawn(move || serve(listener, applier, FrameDecoder::new(1 << 20)));
        (dir, path)
    }

    fn send(stream: &mut UnixStream, m: &AgentMessage<serde_json::Value>) -> DataplaneMessage {
        write_message(stream, m).expect("write");
        read_message(stream, &FrameDecoder::default())
            .expect("read")
            .expect("reply")
    }

    fn hello() -> AgentMessage<serde_json::Value> {
        AgentMessage::Hello {
            versions: vec![PROTOCOL_VERSION],
            agent: "test".into(),
        }
    }

    #[test]
    fn handshake_apply_and_generations() {
        let (_dir, path) = server();
        let mode = std::fs::metadata(&path)
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut s = UnixStream::connect(&path).expect("connect");
        assert!(matches!(
            send(&mut s, &hello()),
            DataplaneMessage::Welcome {
                version: PROTOCOL_VERSION,
                generation: None,
                ..
            }
        ));
        let apply = |generation, ok| AgentMessage::Apply {
            generation,
            snapshot: serde_json::json!({ "ok": ok }),
        };
        let DataplaneMessage::Applied {
            generation: 1,
            not_running,
            ..
        } = send(&mut s, &apply(1, true))
        else {
            panic!("applied");
        };
        assert_eq!(not_running.len(), 1);
        assert_eq!(not_running[0].dataflow, "ns/kafka");
        assert_eq!(not_running[0].code, "endpoint_kind_not_built");
        assert!(matches!(
            send(&mut s, &apply(2, false)),
            DataplaneMessage::Rejected { generation: 2, .. }
        ));
        let DataplaneMessage::Rejected { errors, .. } = send(&mut s, &apply(1, true)) else {
            panic!("a stale generation is refused");
        };
        assert!(errors[0].message.contains("not above"), "{errors:?}");
        // A second connection learns the generation in force.
        let mut t = UnixStream::connect(&path).expect("connect");
        assert!(matches!(
            send(&mut t, &hello()),
            DataplaneMessage::Welcome {
                generation: Some(1),
                ..
            }
        ));
    }

    #[test]
    fn generations_never_wrap() {
        let (_dir, path) = server();
        let mut s = UnixStream::connect(&path).expect("connect");
        send(&mut s, &hello());
        let apply = |generation| AgentMessage::Apply {
            generation,
            snapshot: serde_json::json!({ "ok": true }),
        };
        let DataplaneMessage::Rejected { errors, .. } = send(&mut s, &apply(u64::MAX)) else {
            panic!("the last u64 is refused");
        };
        assert!(errors[0].message.contains("never wrap"), "{errors:?}");
        assert!(matches!(
            send(&mut s, &apply(MAX_GENERATION)),
            DataplaneMessage::Applied { .. }
        ));
        // An agent that connects learns it, and has no generation left to push.
        let mut t = UnixStream::connect(&path).expect("connect");
        let DataplaneMessage::Welcome { generation, .. } = send(&mut t, &hello()) else {
            panic!("welcome");
        };
        assert_eq!(generation, Some(MAX_GENERATION));
        assert_eq!(
            sluice_config_agent::control::next_generation(generation),
            None
        );
        assert_eq!(
            sluice_config_agent::control::next_generation(Some(7)),
            Some(8)
        );
        assert_eq!(sluice_config_agent::control::next_generation(None), Some(1));
    }

    #[test]
    fn a_version_1_agent_is_not_sent_what_it_does_not_know() {
        let (_dir, path) = server();
        let mut s = UnixStream::connect(&path).expect("connect");
        let hello = AgentMessage::Hello {
            versions: vec![1],
            agent: "old".into(),
        };
        assert!(matches!(
            send(&mut s, &hello),
            DataplaneMessage::Welcome { version: 1, .. }
        ));
        let apply = AgentMessage::Apply {
            generation: 1,
            snapshot: serde_json::json!({ "ok": true }),
        };
        write_message(&mut s, &apply).expect("write");
        let raw: serde_json::Value = read_message(&mut s, &FrameDecoder::default())
            .expect("read")
            .expect("reply");
        assert_eq!(raw["type"], "Applied");
        assert!(raw.get("not_running").is_none(), "{raw}");
    }

    #[test]
    fn bad_peers_are_closed_and_the_server_goes_on() {
        let (_dir, path) = server();
        // A 1 GiB length prefix.
        let mut s = UnixStream::connect(&path).expect("connect");
        std::io::Write::write_all(&mut s, &[0x40, 0, 0, 0]).expect("write");
        let reply: DataplaneMessage = read_message(&mut s, &FrameDecoder::default())
            .expect("read")
            .expect("reply");
        assert!(
            matches!(&reply, DataplaneMessage::Error { message } if message.contains("exceeds")),
            "{reply:?}"
        );
        assert!(
            read_message::<DataplaneMessage>(&mut s, &FrameDecoder::default())
                .expect("eof")
                .is_none()
        );
        // Garbage JSON.
        let mut s = UnixStream::connect(&path).expect("connect");
        std::io::Write::write_all(&mut s, &[0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'])
            .expect("write");
        let reply: DataplaneMessage = read_message(&mut s, &FrameDecoder::default())
            .expect("read")
            .expect("reply");
        assert!(matches!(reply, DataplaneMessage::Error { .. }));
        // Apply before Hello, and an unknown version.
        let mut s = UnixStream::connect(&path).expect("connect");
        let reply = send(
            &mut s,
            &AgentMessage::Apply {
                generation: 1,
                snapshot: serde_json::json!({}),
            },
        );
        assert!(matches!(reply, DataplaneMessage::Error { .. }));
        let mut s = UnixStream::connect(&path).expect("connect");
        let reply = send(
            &mut s,
            &AgentMessage::Hello {
                versions: vec![99],
                agent: "future".into(),
            },
        );
        assert!(
            matches!(&reply, DataplaneMessage::Error { message } if message.contains("no common protocol version"))
        );
        // The server still serves.
        let mut s = UnixStream::connect(&path).expect("connect");
        assert!(matches!(
            send(&mut s, &hello()),
            DataplaneMessage::Welcome { .. }
        ));
    }

    fn server_with(limits: Limits) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        let listener = bind(&path).expect("bind");
        let applier = Arc::new(Mutex::new(Fake::default()));
        std::thread::spawn(move || {
            serve_with(listener, applier, FrameDecoder::new(64 << 20), limits);
        });
        (dir, path)
    }

    /// Reads until the server closes (or `within` passes, which fails the test); returns what
    /// came and how long it took.
    fn until_closed(s: &mut UnixStream, within: Duration) -> (Vec<u8>, Duration) {
        let start = Instant::now();
        s.set_read_timeout(Some(within)).expect("timeout");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return (got, start.elapsed()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return (got, start.elapsed());
                }
                Err(e) => panic!("not closed within {within:?}: {e}"),
            }
        }
    }

    #[test]
    fn a_trickled_hello_is_cut_off_at_its_deadline() {
        let (_dir, path) = server_with(Limits {
            hello_timeout: Duration::from_millis(300),
            ..Limits::default()
        });
        let mut s = UnixStream::connect(&path).expect("connect");
        let mut frame = Vec::new();
        sluice_config_agent::control::encode_frame(&hello(), &mut frame).expect("encode");
        // One byte every 50 ms: each read is quick, the whole Hello is not.
        let start = Instant::now();
        for b in &frame[..8] {
            if std::io::Write::write_all(&mut s, &[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (_, _) = until_closed(&mut s, Duration::from_secs(5));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_partial_frame_after_hello_is_cut_off_and_a_quiet_agent_is_not() {
        let (_dir, path) = server_with(Limits {
            frame_timeout: Duration::from_millis(300),
            ..Limits::default()
        });
        let mut quiet = UnixStream::connect(&path).expect("connect");
        send(&mut quiet, &hello());
        let mut s = UnixStream::connect(&path).expect("connect");
        send(&mut s, &hello());
        std::io::Write::write_all(&mut s, &[0, 0, 1, 0, b'{']).expect("write");
        let (reply, took) = until_closed(&mut s, Duration::from_secs(5));
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(
            String::from_utf8_lossy(&reply).contains("in time"),
            "{reply:?}"
        );
        // The quiet one is still served.
        let apply = AgentMessage::Apply {
            generation: 1,
            snapshot: serde_json::json!({ "ok": true }),
        };
        assert!(matches!(
            send(&mut quiet, &apply),
            DataplaneMessage::Applied { .. }
        ));
    }

    #[test]
    fn connections_beyond_the_cap_are_refused_at_once() {
        let (_dir, path) = server_with(Limits {
            max_connections: 2,
            ..Limits::default()
        });
        let mut held: Vec<UnixStream> = (0..2)
            .map(|_| {
                let mut s = UnixStream::connect(&path).expect("connect");
                send(&mut s, &hello());
                s
            })
            .collect();
        let mut extra = UnixStream::connect(&path).expect("connect");
        let (reply, _) = until_closed(&mut extra, Duration::from_secs(5));
        assert!(
            String::from_utf8_lossy(&reply).contains("too many"),
            "{reply:?}"
        );
        // A slot frees when one leaves.
        drop(held.pop());
        let mut again = None;
        for _ in 0..100 {
            // Until the server has seen the drop, a new connection is still refused and
            // closed, so the write may fail with a broken pipe: that is one more try.
            let mut s = UnixStream::connect(&path).expect("connect");
            if write_message(&mut s, &hello()).is_ok()
                && let Ok(Some(DataplaneMessage::Welcome { .. })) =
                    read_message::<DataplaneMessage>(&mut s, &FrameDecoder::default())
            {
                again = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(again.is_some(), "a freed slot is used again");
    }

    #[test]
    fn unfinished_frames_are_bounded_in_total() {
        let (_dir, path) = server_with(Limits {
            max_unfinished_bytes: 1 << 20,
            ..Limits::default()
        });
        // Two peers each announce 60 MiB and send 600 KiB of it.
        let mut peers = Vec::new();
        for _ in 0..2 {
            let mut s = UnixStream::connect(&path).expect("connect");
            send(&mut s, &hello());
            std::io::Write::write_all(&mut s, &(60u32 << 20).to_be_bytes()).expect("prefix");
            let _ = std::io::Write::write_all(&mut s, &vec![b' '; 600 << 10]);
            peers.push(s);
        }
        let mut closed = 0;
        for s in &mut peers {
            s.set_read_timeout(Some(Duration::from_secs(3)))
                .expect("timeout");
            let mut buf = [0u8; 4096];
            if let Ok(n) = s.read(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).contains("in all")
            {
                closed += 1;
            }
        }
        assert!(closed >= 1, "one of them passes the total and is closed");
    }

    #[test]
    fn a_folder_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
            .expect("chmod");
        assert!(matches!(
            bind(&dir.path().join("control.sock")),
            Err(ServeError::Folder(SocketFolderError::Unsafe { .. }))
        ));
    }

    #[test]
    fn only_a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("precious.txt");
        std::fs::write(&file, "keep me").expect("write");
        assert!(matches!(bind(&file), Err(ServeError::NotASocket(_))));
        assert_eq!(
            std::fs::read_to_string(&file).expect("still there"),
            "keep me"
        );
        let folder = dir.path().join("folder");
        std::fs::create_dir(&folder).expect("mkdir");
        assert!(matches!(bind(&folder), Err(ServeError::NotASocket(_))));
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert!(matches!(bind(&link), Err(ServeError::NotASocket(_))));
        assert_eq!(
            std::fs::read_to_string(&file).expect("still there"),
            "keep me"
        );
        assert!(bind(&dir.path().join("fresh.sock")).is_ok());
    }

    #[test]
    fn a_live_socket_is_not_taken_over_but_a_stale_one_is() {
        let (dir, path) = server();
        assert!(matches!(bind(&path), Err(ServeError::InUse(_))));
        let stale = dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale).expect("bind"));
        assert!(stale.exists());
        assert!(bind(&stale).is_ok());
    }
}
