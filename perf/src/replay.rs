//! The replay broker: a minimal MQTT 3.1.1 / 5.0 server on 127.0.0.1 that streams pre-encoded
//! PUBLISH frames to its subscribers as fast as they read, and counts every PUBLISH that is sent
//! to it. It is a load source and a sink for benchmarks, not a broker: it keeps no sessions and
//! no retained messages, routes nothing from one client to another, and never sends QoS 2.
//!
//! - **Connections.** Every CONNECT is accepted (CONNACK success, no session present). The
//!   server's window towards a client is the client's Receive Maximum (5.0; 65,535 when absent)
//!   capped by [`ReplayConfig::max_inflight`], which is also the whole window of a 3.1.1 client.
//! - **The stream.** A subscription whose filter matches `<topic_prefix>/<k>` starts the stream
//!   on that connection at QoS min(requested, [`ReplayConfig::qos`]). A plain subscription gets
//!   all [`ReplayConfig::messages`] messages for itself; the subscribers of one shared group
//!   (`$share/<group>/<filter>`) split them: each claims blocks of sequence numbers from the
//!   group's counter as its socket drains. Message `seq` goes to topic `<topic_prefix>/<k>` where
//!   `k` is its position in the pre-encoded block modulo [`ReplayConfig::topics`], and its
//!   payload starts with `seq` ([`crate::payload`]). One stream per connection: further matching
//!   subscriptions are acknowledged and ignored.
//! - **Writes.** Each connection pre-encodes a block of frames (about
//!   [`ReplayConfig::chunk_bytes`]) once; for every block it patches the sequence numbers (and at
//!   QoS 1 the packet identifiers) in place and writes the block with one `writev`, control
//!   replies first. At QoS 1 a block holds only as many frames as the window has room for; each
//!   PUBACK frees one.
//! - **The gate.** With [`ReplayConfig::start_released`] false nothing is streamed until
//!   [`ReplayBroker::release`], so a harness can wait for its subscribers and sample CPU first.
//! - **The sink.** Every PUBLISH that arrives on any connection (either listener) is counted:
//!   messages, payload bytes, the time of the first and last read that held one, and, when the
//!   payload starts with a sequence number below [`ReplayConfig::messages`], which ones were seen
//!   (duplicates are counted). QoS 1 is PUBACKed at once, QoS 2 gets PUBREC / PUBCOMP.
//! - **Threads.** One acceptor thread per listener and one thread per connection, each running
//!   its own non-blocking socket with `poll(2)`. Counters are atomics updated once per read or
//!   per block, not per message.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroU16;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use sluice_codec::{
    Codec, ConnAck, Packet, PacketType, ProtocolVersion, PubAck, Publish, QoS, RawFrame,
    ReasonCode, SubAck, UnsubAck, topic,
};

use crate::payload;
use crate::readbuf::ReadBuf;

/// What the replay broker streams and how.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// TCP port of the source listener on 127.0.0.1; 0 picks a free one. Default 0.
    pub port: u16,
    /// A second listener (the sink), same behaviour, for a destination connection: `Some(0)`
    /// picks a free port, `None` (default) has none.
    pub sink_port: Option<u16>,
    /// Messages per stream (per plain subscription, or per shared group). Default 1,000,000.
    pub messages: u64,
    /// Payload size in bytes, at least [`payload::MIN_PAYLOAD_BYTES`]. Default 100.
    pub payload_bytes: usize,
    /// The stream's QoS, 0 or 1; a subscription with a lower QoS lowers it. Default 1.
    pub qos: QoS,
    /// Topics are `<topic_prefix>/<k>`. Default `bench/in`.
    pub topic_prefix: String,
    /// How many distinct topics (`k` from 0 to `topics - 1`). Default 8.
    pub topics: u32,
    /// Upper bound on the window towards each client, in messages (1 to 65,535). Default 65,535.
    pub max_inflight: u16,
    /// Size of the pre-encoded block written per `writev`, in bytes. Default 256 KiB.
    pub chunk_bytes: usize,
    /// Stream as soon as a client subscribes (`true`), or wait for [`ReplayBroker::release`]
    /// (`false`, default).
    pub start_released: bool,
    /// Payloads are [`payload::json_template`] records (the Parquet benchmark) instead of the
    /// plain sequence number and filler. Default `false`.
    pub json_payload: bool,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            port: 0,
            sink_port: None,
            messages: 1_000_000,
            payload_bytes: 100,
            qos: QoS::AtLeastOnce,
            topic_prefix: "bench/in".into(),
            topics: 8,
            max_inflight: u16::MAX,
            chunk_bytes: 256 * 1024,
            start_released: false,
            json_payload: false,
        }
    }
}

/// A snapshot of the broker's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReplayStats {
    /// Connections accepted so far, on both listeners.
    pub connections: u64,
    /// Connections accepted on the sink listener.
    pub sink_connections: u64,
    /// Subscriptions that started a stream.
    pub stream_subscriptions: u64,
    /// Stream messages written (or queued in a block being written).
    pub sent: u64,
    /// PUBACKs received for stream messages.
    pub acked: u64,
    /// PUBACKs for packet identifiers that were not in flight.
    pub unknown_acks: u64,
    /// PUBLISHes received (the sink side).
    pub received: u64,
    /// Payload bytes of the PUBLISHes received.
    pub received_bytes: u64,
    /// Distinct sequence numbers received (below `messages`).
    pub distinct: u64,
    /// Sequence numbers received more than once.
    pub duplicates: u64,
    /// PUBLISHes received whose payload carries no sequence number below `messages`.
    pub unsequenced: u64,
    /// Time of the first read that held a received PUBLISH, since the broker started.
    pub first_received: Option<Duration>,
    /// Time of the last read that held a received PUBLISH, since the broker started.
    pub last_received: Option<Duration>,
    /// Connections closed because of a protocol or I/O error.
    pub errors: u64,
}

impl ReplayStats {
    /// Messages per second at the sink: `received / (last - first)`; `None` until two reads
    /// apart in time held messages.
    pub fn received_per_sec(&self) -> Option<f64> {
        let secs = self.last_received?.checked_sub(self.first_received?)?;
        (!secs.is_zero()).then(|| self.received as f64 / secs.as_secs_f64())
    }
}

/// A running replay broker. Dropping it stops its threads.
#[derive(Debug)]
pub struct ReplayBroker {
    source_addr: SocketAddr,
    sink_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    acceptors: Vec<JoinHandle<()>>,
}

impl ReplayBroker {
    /// Binds the listener(s) on 127.0.0.1 and starts accepting.
    ///
    /// # Errors
    /// An invalid configuration, or when a port cannot be bound.
    pub fn start(config: ReplayConfig) -> anyhow::Result<Self> {
        if config.payload_bytes < payload::MIN_PAYLOAD_BYTES {
            bail!(
                "payload size {} is below the minimum of {} bytes (the sequence number)",
                config.payload_bytes,
                payload::MIN_PAYLOAD_BYTES
            );
        }
        if config.messages > payload::MAX_SEQ {
            bail!("at most {} messages per stream", payload::MAX_SEQ);
        }
        if config.qos == QoS::ExactlyOnce {
            bail!("the replay broker streams at QoS 0 or 1");
        }
        if config.topics == 0 || config.max_inflight == 0 {
            bail!("topics and max_inflight must be at least 1");
        }
        topic::validate_topic_name(&format!("{}/0", config.topic_prefix))
            .map_err(|e| anyhow::anyhow!("topic prefix {:?}: {e}", config.topic_prefix))?;
        let bind = |port: u16| -> anyhow::Result<TcpListener> {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
                .with_context(|| format!("binding 127.0.0.1:{port}"))?;
            l.set_nonblocking(true)?;
            Ok(l)
        };
        let source = bind(config.port)?;
        let sink = config.sink_port.map(bind).transpose()?;
        let source_addr = source.local_addr()?;
        let sink_addr = sink.as_ref().map(TcpListener::local_addr).transpose()?;
        let seen_words = config.messages.div_ceil(64) as usize;
        let shared = Arc::new(Shared {
            released: AtomicBool::new(config.start_released),
            config,
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
            streams: Mutex::new(HashMap::new()),
            private_streams: AtomicU64::new(0),
            c: Counters::default(),
            seen: (0..seen_words).map(|_| AtomicU64::new(0)).collect(),
            conns: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
        });
        let mut acceptors = Vec::new();
        for (name, listener) in [("source", Some(source)), ("sink", sink)] {
            let Some(listener) = listener else { continue };
            let shared = Arc::clone(&shared);
            acceptors.push(
                std::thread::Builder::new()
                    .name(format!("replay-accept-{name}"))
                    .spawn(move || accept_loop(&shared, &listener, name == "sink"))?,
            );
        }
        Ok(Self {
            source_addr,
            sink_addr,
            shared,
            acceptors,
        })
    }

    /// The source listener's address (127.0.0.1 and the bound port).
    pub fn source_addr(&self) -> SocketAddr {
        self.source_addr
    }

    /// The sink listener's address, or the source's when there is no sink listener.
    pub fn sink_addr(&self) -> SocketAddr {
        self.sink_addr.unwrap_or(self.source_addr)
    }

    /// Opens the gate: streams start (see [`ReplayConfig::start_released`]).
    pub fn release(&self) {
        self.shared.released.store(true, Ordering::Release);
    }

    /// The time since the broker started (the clock of [`ReplayStats`]'s timestamps).
    pub fn elapsed(&self) -> Duration {
        self.shared.epoch.elapsed()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ReplayStats {
        let c = &self.shared.c;
        let at = |v: &AtomicU64| match v.load(Ordering::Acquire) {
            0 => None,
            ns => Some(Duration::from_nanos(ns - 1)),
        };
        ReplayStats {
            connections: c.connections.load(Ordering::Relaxed),
            sink_connections: c.sink_connections.load(Ordering::Relaxed),
            stream_subscriptions: c.subscriptions.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            acked: c.acked.load(Ordering::Relaxed),
            unknown_acks: c.unknown_acks.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Acquire),
            received_bytes: c.received_bytes.load(Ordering::Relaxed),
            distinct: c.distinct.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            unsequenced: c.unsequenced.load(Ordering::Relaxed),
            first_received: at(&c.first_rx_ns),
            last_received: at(&c.last_rx_ns),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    /// The last connection error, if any (for diagnostics).
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().ok()?.clone()
    }

    /// Stops accepting, closes every connection and joins the threads.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for t in self.acceptors.drain(..) {
            let _ = t.join();
        }
        let conns =
            std::mem::take(&mut *self.shared.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for t in conns {
            let _ = t.join();
        }
    }
}

impl Drop for ReplayBroker {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// How long a thread waits in `poll` before it looks at the stop flag and the gate.
const POLL_IDLE: Duration = Duration::from_millis(50);
/// The same while a stream waits for the gate.
const POLL_GATED: Duration = Duration::from_millis(1);

#[derive(Debug)]
struct Shared {
    config: ReplayConfig,
    epoch: Instant,
    stop: AtomicBool,
    released: AtomicBool,
    /// Shared groups by name.
    streams: Mutex<HashMap<String, Arc<Stream>>>,
    private_streams: AtomicU64,
    c: Counters,
    /// One bit per sequence number received.
    seen: Vec<AtomicU64>,
    conns: Mutex<Vec<JoinHandle<()>>>,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    sink_connections: AtomicU64,
    subscriptions: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    unknown_acks: AtomicU64,
    received: AtomicU64,
    received_bytes: AtomicU64,
    distinct: AtomicU64,
    duplicates: AtomicU64,
    unsequenced: AtomicU64,
    /// Nanoseconds since the epoch plus one; 0 is "none yet".
    first_rx_ns: AtomicU64,
    last_rx_ns: AtomicU64,
    errors: AtomicU64,
}

/// The sequence numbers of one stream, claimed in blocks by its subscribers.
#[derive(Debug)]
struct Stream {
    next: AtomicU64,
    total: u64,
}

impl Stream {
    /// Claims up to `want` sequence numbers: `(first, count)`, or `None` when none are left.
    fn claim(&self, want: u64) -> Option<(u64, u64)> {
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            if cur >= self.total || want == 0 {
                return None;
            }
            let n = want.min(self.total - cur);
            match self.next.compare_exchange_weak(
                cur,
                cur + n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((cur, n)),
                Err(actual) => cur = actual,
            }
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, sink: bool) {
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((sock, _)) => {
                n += 1;
                shared.c.connections.fetch_add(1, Ordering::Relaxed);
                if sink {
                    shared.c.sink_connections.fetch_add(1, Ordering::Relaxed);
                }
                let s = Arc::clone(shared);
                let spawned = std::thread::Builder::new()
                    .name(format!("replay-conn-{n}"))
                    .spawn(move || {
                        if let Err(e) = Conn::new(Arc::clone(&s), sock).and_then(|mut c| c.run()) {
                            s.c.errors.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut last) = s.last_error.lock() {
                                *last = Some(format!("{e:#}"));
                            }
                        }
                    });
                if let Ok(handle) = spawned
                    && let Ok(mut conns) = shared.conns.lock()
                {
                    conns.push(handle);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let _ = poll_one(listener, PollFlags::IN, POLL_IDLE);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(POLL_IDLE),
        }
    }
}

pub(crate) fn poll_one(
    fd: &impl std::os::fd::AsFd,
    flags: PollFlags,
    timeout: Duration,
) -> io::Result<()> {
    let ts = Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let mut fds = [PollFd::new(fd, flags)];
    match poll(&mut fds, Some(&ts)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What one frame of the read buffer asks for, extracted so the buffer borrow ends before the
/// connection acts on it.
enum Inbound {
    Publish {
        qos: QoS,
        packet_id: Option<NonZeroU16>,
        seq: Option<u64>,
        payload_len: usize,
    },
    PubAck(u16),
    Other(Bytes, usize),
}

/// What a read did.
enum ReadOutcome {
    Progress,
    Idle,
    Closed,
}

/// One client connection.
struct Conn {
    shared: Arc<Shared>,
    sock: TcpStream,
    codec: Codec,
    rbuf: ReadBuf,
    /// Control replies being written (with `ctrl_pos`), and those queued behind them.
    ctrl: BytesMut,
    ctrl_pos: usize,
    ctrl_next: BytesMut,
    /// The window towards this client.
    window: u16,
    connected: bool,
    closing: bool,
    sender: Option<Sender>,
}

/// Initial read buffer; it grows to hold a frame bigger than itself.
const READ_BUF_BYTES: usize = 256 * 1024;
/// The largest packet accepted from a client.
const MAX_INBOUND_PACKET: u32 = 64 * 1024 * 1024;

impl Conn {
    fn new(shared: Arc<Shared>, sock: TcpStream) -> anyhow::Result<Self> {
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        Ok(Self {
            shared,
            sock,
            codec: Codec::server_awaiting_connect().with_max_packet_size(MAX_INBOUND_PACKET),
            rbuf: ReadBuf::new(READ_BUF_BYTES),
            ctrl: BytesMut::new(),
            ctrl_pos: 0,
            ctrl_next: BytesMut::new(),
            window: 1,
            connected: false,
            closing: false,
            sender: None,
        })
    }

    fn run(&mut self) -> anyhow::Result<()> {
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let read = self.read()?;
            if matches!(read, ReadOutcome::Closed) {
                return Ok(());
            }
            let wrote = match self.flush() {
                Ok(wrote) => wrote,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            if self.closing && !self.has_output() {
                return Ok(());
            }
            if matches!(read, ReadOutcome::Progress) || wrote {
                continue;
            }
            let mut flags = PollFlags::IN;
            if self.has_output() {
                flags |= PollFlags::OUT;
            }
            let gated = self.sender.as_ref().is_some_and(|s| !s.exhausted)
                && !self.shared.released.load(Ordering::Acquire);
            poll_one(
                &self.sock,
                flags,
                if gated { POLL_GATED } else { POLL_IDLE },
            )?;
        }
    }

    fn has_output(&self) -> bool {
        self.ctrl_pos < self.ctrl.len()
            || !self.ctrl_next.is_empty()
            || self.sender.as_ref().is_some_and(|s| !s.chunk.is_empty())
    }

    /// Reads once and handles every whole frame.
    fn read(&mut self) -> anyhow::Result<ReadOutcome> {
        let n = match (&self.sock).read(self.rbuf.spare()) {
            Ok(0) => return Ok(ReadOutcome::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Idle),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(ReadOutcome::Idle),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Ok(ReadOutcome::Closed);
            }
            Err(e) => return Err(e.into()),
        };
        self.rbuf.filled(n);
        self.process()?;
        Ok(ReadOutcome::Progress)
    }

    fn process(&mut self) -> anyhow::Result<()> {
        let mut rx = 0u64;
        let mut rx_bytes = 0u64;
        let mut acked = 0u64;
        let mut unknown = 0u64;
        let mut distinct = 0u64;
        let mut dups = 0u64;
        let mut unsequenced = 0u64;
        while !self.rbuf.is_empty() && !self.closing {
            let data = self.rbuf.data();
            let Some(frame) = self.codec.next_frame(data)? else {
                break;
            };
            let len = frame.len();
            let item = classify(&self.codec, &frame)?;
            self.rbuf.consume(len);
            match item {
                Inbound::Publish {
                    qos,
                    packet_id,
                    seq,
                    payload_len,
                } => {
                    rx += 1;
                    rx_bytes += payload_len as u64;
                    match seq.and_then(|s| self.shared.seen.get((s / 64) as usize).map(|w| (s, w)))
                    {
                        Some((s, word)) if s < self.shared.config.messages => {
                            let bit = 1u64 << (s % 64);
                            if word.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
                                distinct += 1;
                            } else {
                                dups += 1;
                            }
                        }
                        _ => unsequenced += 1,
                    }
                    if let Some(id) = packet_id {
                        let ack = PubAck::new(id);
                        let reply = if qos == QoS::ExactlyOnce {
                            Packet::PubRec(ack)
                        } else {
                            Packet::PubAck(ack)
                        };
                        self.codec.encode(&reply, &mut self.ctrl_next)?;
                    }
                }
                Inbound::PubAck(id) => {
                    if self.sender.as_mut().is_some_and(|s| s.ack(id)) {
                        acked += 1;
                    } else {
                        unknown += 1;
                    }
                }
                Inbound::Other(frame, header_len) => {
                    let packet = self.codec.decode_frame(&frame, header_len)?;
                    self.handle(packet)?;
                }
            }
        }
        let c = &self.shared.c;
        if acked > 0 {
            c.acked.fetch_add(acked, Ordering::Relaxed);
        }
        if unknown > 0 {
            c.unknown_acks.fetch_add(unknown, Ordering::Relaxed);
        }
        if rx > 0 {
            let now = self.shared.now_ns() + 1;
            let _ = c
                .first_rx_ns
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed);
            c.last_rx_ns.fetch_max(now, Ordering::AcqRel);
            c.received_bytes.fetch_add(rx_bytes, Ordering::Relaxed);
            c.distinct.fetch_add(distinct, Ordering::Relaxed);
            c.duplicates.fetch_add(dups, Ordering::Relaxed);
            c.unsequenced.fetch_add(unsequenced, Ordering::Relaxed);
            c.received.fetch_add(rx, Ordering::Release);
        }
        Ok(())
    }

    /// Handles a packet other than PUBLISH and PUBACK.
    fn handle(&mut self, packet: Packet) -> anyhow::Result<()> {
        let version = self.codec.version().unwrap_or(ProtocolVersion::V5);
        match packet {
            Packet::Connect(c) => {
                if self.connected {
                    bail!("[MQTT-3.1.0-2] a second CONNECT");
                }
                self.connected = true;
                let cap = self.shared.config.max_inflight;
                self.window = match c
                    .properties
                    .receive_maximum
                    .filter(|_| c.protocol == ProtocolVersion::V5)
                {
                    Some(rm) => rm.get().min(cap),
                    None => cap,
                };
                if let Some(max) = c.properties.maximum_packet_size {
                    self.codec.set_peer_max_packet_size(max.get());
                }
                self.codec
                    .encode(&Packet::ConnAck(ConnAck::new(false)), &mut self.ctrl_next)?;
            }
            Packet::Subscribe(s) => {
                let mut codes = Vec::with_capacity(s.filters.len());
                for sub in &s.filters {
                    let granted = sub.options.qos.min(QoS::AtLeastOnce);
                    codes.push(ReasonCode(granted as u8));
                    self.maybe_start_stream(&sub.filter, granted, version)?;
                }
                let ack = SubAck {
                    packet_id: s.packet_id,
                    properties: Default::default(),
                    reason_codes: codes,
                };
                self.codec
                    .encode(&Packet::SubAck(ack), &mut self.ctrl_next)?;
            }
            Packet::Unsubscribe(u) => {
                let codes = match version {
                    ProtocolVersion::V5 => vec![ReasonCode::SUCCESS; u.filters.len()],
                    ProtocolVersion::V311 => Vec::new(),
                };
                let ack = UnsubAck {
                    packet_id: u.packet_id,
                    properties: Default::default(),
                    reason_codes: codes,
                };
                self.codec
                    .encode(&Packet::UnsubAck(ack), &mut self.ctrl_next)?;
            }
            Packet::PubRel(r) => {
                self.codec.encode(
                    &Packet::PubComp(PubAck::new(r.packet_id)),
                    &mut self.ctrl_next,
                )?;
            }
            Packet::PingReq => self.codec.encode(&Packet::PingResp, &mut self.ctrl_next)?,
            Packet::Disconnect(_) => self.closing = true,
            Packet::PubRec(_) | Packet::PubComp(_) => {
                bail!("PUBREC/PUBCOMP: the replay broker never sends QoS 2")
            }
            other => bail!("unexpected {:?} from a client", other.packet_type()),
        }
        Ok(())
    }

    fn maybe_start_stream(
        &mut self,
        filter: &str,
        granted: QoS,
        version: ProtocolVersion,
    ) -> anyhow::Result<()> {
        if self.sender.is_some() {
            return Ok(());
        }
        let (group, inner) = match topic::parse_shared(filter) {
            Ok(Some((g, f))) => (Some(g), f),
            _ => (None, filter),
        };
        let cfg = &self.shared.config;
        let sample = format!("{}/0", cfg.topic_prefix);
        if !topic::matches(inner, &sample) {
            return Ok(());
        }
        let new_stream = || {
            Arc::new(Stream {
                next: AtomicU64::new(0),
                total: cfg.messages,
            })
        };
        let stream = match group {
            Some(g) => {
                let mut streams = self
                    .shared
                    .streams
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                Arc::clone(streams.entry(g.to_owned()).or_insert_with(new_stream))
            }
            None => {
                self.shared.private_streams.fetch_add(1, Ordering::Relaxed);
                new_stream()
            }
        };
        let qos = granted.min(cfg.qos);
        self.sender = Some(Sender::new(
            cfg,
            &self.codec,
            version,
            qos,
            self.window,
            stream,
        )?);
        self.shared.c.subscriptions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes what is pending, preparing blocks of the stream as the socket takes them. Returns
    /// whether anything was written.
    fn flush(&mut self) -> io::Result<bool> {
        let mut progress = false;
        let released = self.shared.released.load(Ordering::Acquire);
        loop {
            let chunk_empty = self.sender.as_ref().is_none_or(|s| s.chunk.is_empty());
            if self.ctrl_pos == self.ctrl.len() && chunk_empty {
                self.ctrl.clear();
                self.ctrl_pos = 0;
                std::mem::swap(&mut self.ctrl, &mut self.ctrl_next);
                if released
                    && !self.closing
                    && let Some(s) = self.sender.as_mut()
                {
                    s.prepare(&self.shared);
                }
                let chunk_empty = self.sender.as_ref().is_none_or(|s| s.chunk.is_empty());
                if self.ctrl.is_empty() && chunk_empty {
                    return Ok(progress);
                }
            }
            let chunk: &[u8] = match &self.sender {
                Some(s) => &s.template[s.chunk.clone()],
                None => &[],
            };
            let bufs = [
                IoSlice::new(&self.ctrl[self.ctrl_pos..]),
                IoSlice::new(chunk),
            ];
            match (&self.sock).write_vectored(&bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut n) => {
                    progress = true;
                    let c = n.min(self.ctrl.len() - self.ctrl_pos);
                    self.ctrl_pos += c;
                    n -= c;
                    if let Some(s) = self.sender.as_mut() {
                        s.chunk.start += n;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Extracts what the connection needs from one frame.
fn classify(codec: &Codec, frame: &RawFrame<'_>) -> anyhow::Result<Inbound> {
    Ok(match frame.packet_type {
        PacketType::Publish if codec.version().is_some() => {
            let p = codec.decode_publish(frame)?;
            Inbound::Publish {
                qos: p.qos,
                packet_id: p.packet_id,
                seq: payload::parse_seq(p.payload),
                payload_len: p.payload.len(),
            }
        }
        PacketType::PubAck if frame.body().len() >= 2 => {
            let id = u16::from_be_bytes([frame.body()[0], frame.body()[1]]);
            if id == 0 {
                bail!("[MQTT-2.2.1-3] PUBACK with packet identifier 0");
            }
            Inbound::PubAck(id)
        }
        _ => Inbound::Other(Bytes::copy_from_slice(frame.bytes), frame.header_len),
    })
}

/// Where the variable parts of one pre-encoded frame are.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// End of the frame in the template (the next frame starts here).
    end: usize,
    /// Offset of the payload's sequence number.
    seq_at: usize,
    /// Offset of the packet identifier (QoS 1).
    pid_at: usize,
}

/// The stream of one connection: a pre-encoded block of frames, patched and written again and
/// again.
struct Sender {
    stream: Arc<Stream>,
    qos: QoS,
    template: Vec<u8>,
    slots: Vec<Slot>,
    /// The part of the template being written.
    chunk: Range<usize>,
    window: usize,
    inflight: usize,
    /// One bit per packet identifier in flight.
    ids: Vec<u64>,
    next_id: u16,
    exhausted: bool,
}

impl Sender {
    fn new(
        cfg: &ReplayConfig,
        codec: &Codec,
        version: ProtocolVersion,
        qos: QoS,
        window: u16,
        stream: Arc<Stream>,
    ) -> anyhow::Result<Self> {
        let (body, seq_offset) = if cfg.json_payload {
            let p = payload::json_template(cfg.payload_bytes)
                .context("payload size below the JSON record's")?;
            (p, payload::JSON_SEQ_AT)
        } else {
            (
                payload::template(cfg.payload_bytes).context("payload size")?,
                0,
            )
        };
        let body = Bytes::from(body);
        let mut template = BytesMut::new();
        let mut slots = Vec::new();
        let topics: Vec<String> = (0..cfg.topics.min(4096))
            .map(|k| format!("{}/{k}", cfg.topic_prefix))
            .collect();
        let mut count = usize::MAX;
        let mut i = 0;
        while i < count {
            let topic = &topics[i % topics.len()];
            let mut p = Publish::new(topic.clone().into(), body.clone());
            if qos == QoS::AtLeastOnce {
                p.qos = qos;
                p.packet_id = Some(NonZeroU16::MIN);
            }
            let start = template.len();
            codec
                .encode(&Packet::Publish(p), &mut template)
                .context("encoding the stream's PUBLISH")?;
            let end = template.len();
            let header_len = Codec::new(sluice_codec::Role::Client, version)
                .next_frame(&template[start..end])?
                .context("a whole frame")?
                .header_len;
            slots.push(Slot {
                end,
                seq_at: end - cfg.payload_bytes + seq_offset,
                pid_at: start + header_len + 2 + topic.len(),
            });
            if i == 0 {
                let per_chunk = (cfg.chunk_bytes / (end - start)).clamp(1, usize::from(u16::MAX));
                count = match qos {
                    QoS::AtMostOnce => per_chunk,
                    _ => per_chunk.min(usize::from(window)),
                };
            }
            i += 1;
        }
        Ok(Self {
            stream,
            qos,
            template: template.to_vec(),
            slots,
            chunk: 0..0,
            window: usize::from(window),
            inflight: 0,
            ids: vec![0; 65536 / 64],
            next_id: 0,
            exhausted: false,
        })
    }

    /// Prepares the next block in the template, if the window and the stream allow.
    fn prepare(&mut self, shared: &Shared) {
        if self.exhausted {
            return;
        }
        let room = match self.qos {
            QoS::AtMostOnce => self.slots.len(),
            _ => (self.window - self.inflight).min(self.slots.len()),
        };
        if room == 0 {
            return;
        }
        let Some((first, n)) = self.stream.claim(room as u64) else {
            self.exhausted = true;
            return;
        };
        let n = n as usize;
        for (i, slot) in self.slots[..n].iter().enumerate() {
            payload::write_seq(&mut self.template[slot.seq_at..], first + i as u64);
        }
        if self.qos == QoS::AtLeastOnce {
            for i in 0..n {
                let id = self.alloc_id();
                let at = self.slots[i].pid_at;
                self.template[at..at + 2].copy_from_slice(&id.to_be_bytes());
            }
            self.inflight += n;
        }
        let end = self.slots[n - 1].end;
        self.chunk = 0..end;
        shared.c.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A packet identifier not in flight (one exists: the window is at most 65,535).
    fn alloc_id(&mut self) -> u16 {
        loop {
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            let (w, b) = (usize::from(self.next_id) / 64, self.next_id % 64);
            if self.ids[w] & (1 << b) == 0 {
                self.ids[w] |= 1 << b;
                return self.next_id;
            }
        }
    }

    /// Frees `id`; false when it was not in flight.
    fn ack(&mut self, id: u16) -> bool {
        let (w, b) = (usize::from(id) / 64, id % 64);
        if self.ids[w] & (1 << b) == 0 {
            return false;
        }
        self.ids[w] &= !(1 << b);
        self.inflight -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_never_overshoot() {
        let s = Stream {
            next: AtomicU64::new(0),
            total: 10,
        };
        assert_eq!(s.claim(4), Some((0, 4)));
        assert_eq!(s.claim(4), Some((4, 4)));
        assert_eq!(s.claim(4), Some((8, 2)));
        assert_eq!(s.claim(4), None);
    }

    #[test]
    fn template_offsets_point_at_seq_and_packet_id() {
        let cfg = ReplayConfig {
            payload_bytes: 20,
            chunk_bytes: 200,
            ..ReplayConfig::default()
        };
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let codec = Codec::new(sluice_codec::Role::Server, version);
            let stream = Arc::new(Stream {
                next: AtomicU64::new(5),
                total: 100,
            });
            let mut s = Sender::new(&cfg, &codec, version, QoS::AtLeastOnce, 3, stream).unwrap();
            assert_eq!(s.slots.len(), 3, "the window bounds the block");
            let shared = Shared {
                config: cfg.clone(),
                epoch: Instant::now(),
                stop: AtomicBool::new(false),
                released: AtomicBool::new(true),
                streams: Mutex::new(HashMap::new()),
                private_streams: AtomicU64::new(0),
                c: Counters::default(),
                seen: Vec::new(),
                conns: Mutex::new(Vec::new()),
                last_error: Mutex::new(None),
            };
            s.prepare(&shared);
            let mut client = Codec::new(sluice_codec::Role::Client, version);
            let mut buf = BytesMut::from(&s.template[s.chunk.clone()]);
            for (i, seq) in (5..8).enumerate() {
                let Some(Packet::Publish(p)) = client.decode(&mut buf).unwrap() else {
                    panic!("a PUBLISH");
                };
                assert_eq!(payload::parse_seq(&p.payload), Some(seq));
                assert_eq!(p.packet_id.map(NonZeroU16::get), Some(i as u16 + 1));
                assert_eq!(p.topic, format!("bench/in/{i}").as_str());
            }
            assert!(buf.is_empty());
            assert_eq!(s.inflight, 3);
            s.chunk = 0..0;
            s.prepare(&shared);
            assert!(s.chunk.is_empty(), "the window is full");
            assert!(s.ack(2));
            assert!(!s.ack(2));
            s.prepare(&shared);
            let mut buf = BytesMut::from(&s.template[s.chunk.clone()]);
            let Some(Packet::Publish(p)) = client.decode(&mut buf).unwrap() else {
                panic!("a PUBLISH");
            };
            assert_eq!(payload::parse_seq(&p.payload), Some(8));
            assert_eq!(p.packet_id.map(NonZeroU16::get), Some(4));
            assert!(buf.is_empty());
        }
    }
}
