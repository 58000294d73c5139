//! One dataflow on one core: a source MQTT session, a destination MQTT session, and the
//! forwarding between them, on the core's single-threaded event loop.
//!
//! ```text
//!  source socket ─read─> source Session ─Message─> Forwarder ─> destination Session ─writev─> socket
//!        ^                     ^                                         │
//!        └── PUBACK (in order) ┴──── ack(token) <── Acked (PUBACK) <─────┘
//! ```
//!
//! Each side runs a driver task (connect with jittered exponential backoff, then a reader, a
//! writer and a timer task per connection). The sans-IO [`Session`]s hold all protocol state;
//! the tasks only move bytes and call them, and every call is followed by
//! [`Pipeline::process`], which routes the events both sessions produced.
//!
//! Delivery (principle 1): a QoS 1 source message is acknowledged with its [`AckToken`] only
//! when the destination has it: its PUBACK from the destination broker (QoS 1 destination), or
//! once it is queued for the socket (QoS 0 destination, which promises no more). The source
//! session sends the PUBACKs in receive order.
//!
//! Backpressure (principle 4): the source reader stops reading when messages wait for the
//! destination's window ([`MAX_PENDING`]) or when the destination's unsent bytes exceed
//! [`MAX_UNSENT_BYTES`]; it resumes when they drain. Memory per pipeline is bounded by those,
//! the source's Receive Maximum and the read buffer.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{
    AsyncWriteRent, CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller, OwnedReadHalf,
    OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use sluice_codec::Publish;
use tracing::{debug, info, warn};

use crate::credentials::{TokenSource, off_loop};
use crate::forward::Forwarder;
use crate::iovec::IoChunks;
use crate::local::Notify;
use crate::metrics::{DataflowMetrics, Side};
use crate::plan::{Credentials, DataflowPlan, MqttEndpointPlan, read_login};
use crate::session::{AckToken, CloseReason, Event, Session};
use crate::sink::{MqttSink, Notice, Offer, Outcome, Sink, Ticket};
use crate::transport::{ClientAuthFiles, Transport, TransportError, WsSettings, client_config};

/// Forwarded messages waiting for room in the destination's window before the source reader
/// pauses.
pub const MAX_PENDING: usize = 4096;
/// Destination bytes queued and not yet written before the source reader pauses.
pub const MAX_UNSENT_BYTES: usize = 4 << 20;
/// Read buffer size per connection.
pub const READ_BUFFER: usize = 256 << 10;
/// First reconnect delay; doubles per failure up to [`BACKOFF_MAX`], with full jitter.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a message the destination did not take for now (PUBACK 0x97 Quota exceeded, say)
/// waits before it is offered again.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
/// The longest wait before a message the destination gave back is offered again (the wait
/// doubles from [`RETRY_DELAY`] per attempt).
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(30);
/// A connection up at least this long resets the reconnect backoff.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// TCP connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A message on its way: what acknowledges it at the source, and when it arrived.
#[derive(Debug)]
struct Held {
    ack: Option<AckToken>,
    received: Instant,
    bytes: usize,
    /// Whole seconds already taken off the message's expiry while it waited.
    aged_secs: u64,
    /// Times the destination gave it back (a refusal that may pass).
    retries: u32,
}

/// One connection attempt of one side.
#[derive(Default)]
struct Conn {
    /// Wakes the writer.
    tx: Notify,
    /// The connection is ending: the writer flushes what is queued, then shuts the socket.
    closing: Cell<bool>,
    /// The writer has finished.
    writer_done: Cell<bool>,
    writer_done_notify: Notify,
    /// Cancels the reader's (and a stuck writer's) operation.
    canceller: RefCell<Option<Canceller>>,
    /// TLS and/or WebSocket between the socket and the session; `None`: plain TCP, written
    /// with vectored writes.
    transport: RefCell<Option<Transport>>,
    /// When to fetch a fresh token and re-authenticate (enhanced authentication only).
    reauth_at: Cell<Option<SystemTime>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("closing", &self.closing.get())
            .finish()
    }
}

impl Conn {
    fn close(&self) {
        self.closing.set(true);
        self.tx.notify();
    }

    fn cancel_io(&self) {
        if let Some(c) = self.canceller.borrow_mut().take() {
            c.cancel();
        }
    }
}

#[derive(Debug)]
struct State {
    src: Session,
    sink: MqttSink,
    fwd: Forwarder,
    /// Forwarded, waiting for the destination's window (or connection).
    pending: VecDeque<(Publish, Held)>,
    /// Accepted by the sink, by ticket.
    held: HashMap<Ticket, Held>,
    next_ticket: Ticket,
}

/// A running dataflow on one core. See the module documentation.
#[derive(Debug)]
pub struct Pipeline {
    plan: Arc<DataflowPlan>,
    /// TLS client configurations of the source and destination, when they use TLS.
    src_tls: RefCell<TlsCache>,
    dst_tls: RefCell<TlsCache>,
    /// Enhanced authentication tokens of the source and destination.
    src_token: TokenSource,
    dst_token: TokenSource,
    core: usize,
    metrics: Arc<DataflowMetrics>,
    state: RefCell<State>,
    src_conn: RefCell<Option<Rc<Conn>>>,
    dst_conn: RefCell<Option<Rc<Conn>>>,
    /// The source reader may read again.
    resume: Notify,
    /// Draining: read nothing more from the source.
    stopping: Cell<bool>,
    /// A drop was logged at warn level.
    drop_logged: Cell<bool>,
    /// Messages the destination gave back so far (logged at warn on powers of two).
    retries: Cell<u64>,
    /// A later Stop asked for this pipeline's broker sessions to end (it was removed while it
    /// drained for a restart).
    end_sessions: Cell<bool>,
    /// A destination refusal that may pass: nothing is offered before then.
    retry_at: Cell<Option<Instant>>,
    /// Receive Maximum overruns of the source already logged.
    overruns_logged: Cell<u64>,
    /// Stopped: the side drivers end.
    stopped: Cell<bool>,
    src_done: Cell<bool>,
    dst_done: Cell<bool>,
    done: Notify,
}

/// Creating a pipeline failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A session configuration was refused.
    #[error("{side} session: {error}")]
    Session {
        /// `source` or `destination`.
        side: &'static str,
        /// Why.
        error: crate::session::ConfigError,
    },
    /// The forwarding rules are invalid.
    #[error("destination topic: {0}")]
    Forward(String),
    /// The token source is unusable (a bad IMDS endpoint).
    #[error("{side} authentication: {error}")]
    Auth {
        /// `source` or `destination`.
        side: &'static str,
        /// Why.
        error: crate::auth::AuthError,
    },
    /// The TLS configuration (CA or client certificate files) is unusable.
    #[error("{side} TLS: {error}")]
    Tls {
        /// `source` or `destination`.
        side: &'static str,
        /// Why.
        error: TransportError,
    },
}

impl Pipeline {
    /// Starts the dataflow's source and destination connections on the current core's event
    /// loop (spawns their tasks).
    ///
    /// # Errors
    /// [`StartError`] when the plan's sessions or topic template are refused.
    pub fn start(
        plan: Arc<DataflowPlan>,
        core: usize,
        metrics: Arc<DataflowMetrics>,
    ) -> Result<Rc<Self>, StartError> {
        let now = Instant::now();
        let mut src_cfg = plan
            .source
            .session_config(plan.client_id(&plan.source, "src", core));
        src_cfg.subscriptions = plan.subscriptions();
        src_cfg.unsubscribe_first = plan.previous_filters.clone();
        let dst_cfg =
            plan.destination
                .session_config(plan.client_id(&plan.destination, "dst", core));
        let src = Session::new(src_cfg, now).map_err(|error| StartError::Session {
            side: "source",
            error,
        })?;
        let dst = Session::new(dst_cfg, now).map_err(|error| StartError::Session {
            side: "destination",
            error,
        })?;
        let fwd = Forwarder::new(plan.forward_settings().map_err(StartError::Forward)?);
        let src_tls = tls_config(&plan.source).map_err(|error| StartError::Tls {
            side: "source",
            error,
        })?;
        let src_tls = RefCell::new(TlsCache::new(&plan.source, src_tls));
        let dst_tls = tls_config(&plan.destination).map_err(|error| StartError::Tls {
            side: "destination",
            error,
        })?;
        let dst_tls = RefCell::new(TlsCache::new(&plan.destination, dst_tls));
        let src_token =
            TokenSource::new(&plan.source.credentials).map_err(|error| StartError::Auth {
                side: "source",
                error,
            })?;
        let dst_token =
            TokenSource::new(&plan.destination.credentials).map_err(|error| StartError::Auth {
                side: "destination",
                error,
            })?;
        let p = Rc::new(Self {
            plan,
            src_tls,
            dst_tls,
            src_token,
            dst_token,
            core,
            metrics,
            state: RefCell::new(State {
                src,
                sink: MqttSink::new(dst),
                fwd,
                pending: VecDeque::new(),
                held: HashMap::new(),
                next_ticket: 0,
            }),
            src_conn: RefCell::new(None),
            dst_conn: RefCell::new(None),
            resume: Notify::new(),
            stopping: Cell::new(false),
            overruns_logged: Cell::new(0),
            retry_at: Cell::new(None),
            drop_logged: Cell::new(false),
            retries: Cell::new(0),
            end_sessions: Cell::new(false),
            stopped: Cell::new(false),
            src_done: Cell::new(false),
            dst_done: Cell::new(false),
            done: Notify::new(),
        });
        info!(dataflow = %p.plan.key, core, "starting");
        monoio::spawn(drive(Rc::clone(&p), Side::Source));
        monoio::spawn(drive(Rc::clone(&p), Side::Destination));
        Ok(p)
    }

    /// The plan it runs.
    pub fn plan(&self) -> &Arc<DataflowPlan> {
        &self.plan
    }

    /// Drains, then stops: reads nothing more from the source, waits (at most `timeout`) until
    /// every message already received is acknowledged at the destination and its PUBACK sent,
    /// then disconnects both sessions. What is still unacknowledged after the timeout is left to
    /// the source broker, which delivers it again (persistent session). With `end_sessions`
    /// (a removed dataflow, not a restart) both 5.0 sessions are ended on the brokers too.
    pub async fn stop(self: &Rc<Self>, timeout: Duration, end_sessions: bool) {
        self.stopping.set(true);
        let deadline = Instant::now() + timeout;
        while !self.drained() && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        let drained = self.drained();
        {
            let now = Instant::now();
            let mut st = self.state.borrow_mut();
            // Ending the sessions of an undrained dataflow would throw away what the source
            // broker still holds for it: then they stay, and expire on their own.
            if (end_sessions || self.end_sessions.get()) && drained {
                st.src.disconnect_ending_session(now);
                st.sink.session_mut().disconnect_ending_session(now);
            } else {
                st.src.disconnect(now);
                st.sink.session_mut().disconnect(now);
            }
        }
        self.process();
        self.stopped.set(true);
        for conn in [&self.src_conn, &self.dst_conn] {
            if let Some(c) = conn.borrow().as_ref() {
                c.close();
            }
        }
        self.resume.notify();
        // The writers flush the DISCONNECTs; then the readers are cancelled.
        let flush_deadline = Instant::now() + Duration::from_secs(2);
        while !(self.src_done.get() && self.dst_done.get()) {
            if Instant::now() >= flush_deadline {
                for conn in [&self.src_conn, &self.dst_conn] {
                    if let Some(c) = conn.borrow().as_ref() {
                        c.cancel_io();
                    }
                }
            }
            monoio::time::sleep(Duration::from_millis(5)).await;
            if Instant::now() >= flush_deadline + Duration::from_secs(3) {
                warn!(dataflow = %self.plan.key, core = self.core, "connections did not close in time");
                break;
            }
        }
        let st = self.state.borrow();
        info!(
            dataflow = %self.plan.key,
            core = self.core,
            drained,
            unacknowledged = st.src.inbound_unacked(),
            "stopped"
        );
    }

    /// An intentional drop: counted; the first of a pipeline logged at warn, the rest at debug
    /// (a template that does not fit a topic, or a destination that refuses everything, would
    /// otherwise log once per message).
    fn dropped(&self, reason: &'static str, topic: &str) {
        self.metrics.on_dropped(reason);
        if self.drop_logged.replace(true) {
            debug!(dataflow = %self.plan.key, topic, reason, "message dropped");
        } else {
            warn!(dataflow = %self.plan.key, core = self.core, topic, reason, "message dropped (and acknowledged); further drops are logged at debug level and counted in sluice_messages_dropped_total");
        }
    }

    /// A connection ended: a refused token is not presented again.
    fn on_closed(&self, side: Side, reason: &CloseReason) {
        if let CloseReason::Refused { reason_code } = reason
            && matches!(reason_code.0, 0x86 | 0x87 | 0x8C)
        {
            self.token_source(side).invalidate();
        }
    }

    /// Asks a pipeline that is already draining (for a restart) to end its broker sessions when
    /// it stops: the dataflow was removed meanwhile.
    pub fn end_sessions_when_stopped(&self) {
        self.end_sessions.set(true);
    }

    /// Everything received is acknowledged at the source, nothing waits for the destination.
    fn drained(&self) -> bool {
        let st = self.state.borrow();
        st.pending.is_empty()
            && st.held.is_empty()
            && st.sink.backlog_bytes() == 0
            && st.src.inbound_unacked() == 0
            && st.src.transmit_len() == 0
    }

    fn set_conn(&self, side: Side, conn: Option<Rc<Conn>>) {
        match side {
            Side::Source => *self.src_conn.borrow_mut() = conn,
            Side::Destination => *self.dst_conn.borrow_mut() = conn,
        }
    }

    /// The TLS/WebSocket layers for a new connection of `side`; `None` for plain TCP.
    fn transport(&self, side: Side) -> Result<Option<Transport>, TransportError> {
        let (ep, cache) = match side {
            Side::Source => (&self.plan.source, &self.src_tls),
            Side::Destination => (&self.plan.destination, &self.dst_tls),
        };
        // A rotated CA or client certificate is used from the next connection on: the files
        // are read again when their modification times changed (the configuration keeps its
        // TLS session cache otherwise).
        let fresh = {
            let mut cache = cache.borrow_mut();
            let stamps = tls_stamps(ep);
            if stamps != cache.stamps {
                match tls_config(ep) {
                    Ok(c) => {
                        cache.config = c;
                        cache.stamps = stamps;
                    }
                    Err(e) => {
                        warn!(dataflow = %self.plan.key, core = self.core, error = %e, "cannot read the changed TLS files; keeping those read before");
                    }
                }
            }
            cache.config.clone()
        };
        let tls = &fresh;
        if tls.is_none() && !ep.websocket {
            return Ok(None);
        }
        let tls = match tls {
            Some(config) => {
                let name = ServerName::try_from(ep.host.clone()).map_err(|_| {
                    TransportError::InvalidAddress {
                        input: ep.host.clone(),
                        reason: "not a DNS name or IP address",
                    }
                })?;
                Some((Arc::clone(config), name))
            }
            None => None,
        };
        let ws = ep
            .websocket
            .then(|| WsSettings::new(format!("{}:{}", ep.host, ep.port)));
        Transport::new(tls, ws).map(Some)
    }

    fn token_source(&self, side: Side) -> &TokenSource {
        match side {
            Side::Source => &self.src_token,
            Side::Destination => &self.dst_token,
        }
    }

    fn endpoint(&self, side: Side) -> &MqttEndpointPlan {
        match side {
            Side::Source => &self.plan.source,
            Side::Destination => &self.plan.destination,
        }
    }

    /// Whether the source reader must wait.
    fn should_pause(&self) -> bool {
        if self.stopping.get() {
            return true;
        }
        let st = self.state.borrow();
        st.pending.len() >= MAX_PENDING || st.sink.backlog_bytes() >= MAX_UNSENT_BYTES
    }

    /// Routes the events both sessions produced, then wakes the writers that have bytes.
    fn process(&self) {
        let now = Instant::now();
        let mut wall = None;
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        while let Some(ev) = st.src.poll_event() {
            match ev {
                Event::Message { publish, ack } => {
                    let wall = *wall.get_or_insert_with(SystemTime::now);
                    self.on_message(st, publish, ack, now, wall);
                }
                Event::Connected { session_present } => {
                    self.metrics.set_connected(Side::Source, true);
                    info!(dataflow = %self.plan.key, core = self.core, session_present, "source connected");
                }
                Event::Subscribed { reason_codes } => {
                    for (code, sub) in reason_codes.iter().zip(&st.src.config().subscriptions) {
                        if code.0 >= 0x80 {
                            warn!(dataflow = %self.plan.key, filter = %sub.filter, code = code.0, "subscription refused by the source broker");
                        } else if code.0 < sub.options.qos as u8 {
                            warn!(dataflow = %self.plan.key, filter = %sub.filter, granted = code.0, "the source broker granted a lower QoS than asked: its messages arrive at most once");
                        }
                    }
                }
                Event::Acked { .. } | Event::Refused { .. } => {}
                Event::Reauthenticated => {
                    debug!(dataflow = %self.plan.key, core = self.core, "source re-authenticated");
                }
                Event::Closed { reason } => {
                    self.metrics.set_connected(Side::Source, false);
                    // A reader paused for backpressure must see the close.
                    self.resume.notify();
                    self.on_closed(Side::Source, &reason);
                    if reason == CloseReason::Local {
                        debug!(dataflow = %self.plan.key, core = self.core, "source connection closed");
                    } else {
                        warn!(dataflow = %self.plan.key, core = self.core, %reason, "source connection closed");
                    }
                    if let Some(c) = self.src_conn.borrow().as_ref() {
                        c.close();
                        c.cancel_io_later();
                    }
                }
            }
        }
        let overruns = st.src.receive_maximum_overruns();
        self.metrics.set_receive_maximum_overruns(overruns);
        if overruns > self.overruns_logged.get()
            && (self.overruns_logged.get() == 0 || overruns >= 2 * self.overruns_logged.get())
        {
            self.overruns_logged.set(overruns);
            warn!(dataflow = %self.plan.key, core = self.core, overruns, "the source broker sent more unacknowledged QoS 1 messages than our Receive Maximum (accepted; see docs/delivery.md)");
        }
        let mut progressed = false;
        st.sink.process_events();
        while let Some(notice) = st.sink.poll_notice() {
            match notice {
                Notice::Connected { session_present } => {
                    let maximum = st.sink.session().maximum_qos();
                    if maximum < self.plan.destination.qos() {
                        // Not ready: QoS 1 messages wait rather than go out at QoS 0.
                        warn!(dataflow = %self.plan.key, core = self.core, ?maximum, "the destination broker accepts QoS 0 only, but the endpoint asks for QoS 1: nothing is forwarded (set qos: 0 on the destination endpoint to accept at most once)");
                        continue;
                    }
                    self.metrics.set_connected(Side::Destination, true);
                    info!(dataflow = %self.plan.key, core = self.core, session_present, "destination connected");
                    progressed = true;
                }
                Notice::Closed { reason } => {
                    self.metrics.set_connected(Side::Destination, false);
                    self.on_closed(Side::Destination, &reason);
                    if reason == CloseReason::Local {
                        debug!(dataflow = %self.plan.key, core = self.core, "destination connection closed");
                    } else {
                        warn!(dataflow = %self.plan.key, core = self.core, %reason, "destination connection closed");
                    }
                    if let Some(c) = self.dst_conn.borrow().as_ref() {
                        c.close();
                        c.cancel_io_later();
                    }
                }
            }
        }
        // Messages given back, re-queued in the order they were first offered (ticket order).
        let mut given_back: Vec<(Ticket, Publish, Held)> = Vec::new();
        while let Some((ticket, outcome)) = st.sink.poll_ack() {
            if let Some(held) = st.held.remove(&ticket) {
                match outcome {
                    Outcome::Retry(publish) => {
                        let mut held = held;
                        held.retries += 1;
                        let delay = RETRY_DELAY
                            .saturating_mul(1 << held.retries.saturating_sub(1).min(5))
                            .min(RETRY_DELAY_MAX);
                        let total = self.retries.get() + 1;
                        self.retries.set(total);
                        if total == 1 || total.is_power_of_two() {
                            warn!(dataflow = %self.plan.key, core = self.core, retries = total, attempt = held.retries, ?delay, "the destination did not take a message (a refusal that may pass); it is offered again, and later messages wait");
                        }
                        self.retry_at.set(Some(now + delay));
                        given_back.push((ticket, *publish, held));
                    }
                    Outcome::Delivered => self.complete(st, held, None, now),
                    Outcome::Refused(reason) => self.complete(st, held, Some(reason), now),
                }
            }
            progressed = true;
        }
        given_back.sort_unstable_by_key(|(ticket, _, _)| std::cmp::Reverse(*ticket));
        for (_, publish, held) in given_back {
            st.pending.push_front((publish, held));
        }
        let retry_due = self.retry_at.get().is_some_and(|at| now >= at);
        if retry_due {
            self.retry_at.set(None);
        }
        if (progressed || retry_due) && self.retry_at.get().is_none() {
            self.drain_pending(st, now);
        }
        self.metrics.set_in_flight(st.held.len() + st.pending.len());
        if st.src.transmit_len() > 0
            && let Some(c) = self.src_conn.borrow().as_ref()
        {
            c.tx.notify();
        }
        if st.sink.backlog_bytes() > 0
            && let Some(c) = self.dst_conn.borrow().as_ref()
        {
            c.tx.notify();
        }
        if st.pending.len() < MAX_PENDING / 2 {
            self.resume.notify();
        }
    }

    fn on_message(
        &self,
        st: &mut State,
        publish: Publish,
        ack: Option<AckToken>,
        now: Instant,
        wall: SystemTime,
    ) {
        let bytes = publish.payload.len();
        self.metrics.on_received(bytes);
        match st.fwd.forward(&publish, Duration::ZERO, wall) {
            Err(reason) => {
                self.dropped(reason.as_str(), &publish.topic);
                if let Some(token) = ack {
                    st.src.ack(token, now);
                }
            }
            Ok(out) => {
                let held = Held {
                    ack,
                    received: now,
                    bytes,
                    aged_secs: 0,
                    retries: 0,
                };
                if st.pending.is_empty() {
                    if let Some(back) = self.offer(st, out, held, now) {
                        st.pending.push_back(back);
                    }
                } else {
                    st.pending.push_back((out, held));
                }
            }
        }
    }

    fn drain_pending(&self, st: &mut State, now: Instant) {
        while let Some((mut out, mut held)) = st.pending.pop_front() {
            // What waited here has less time to live at the destination (counted once per
            // whole second: a message offered again after a busy sink is not aged twice).
            let waited = now.saturating_duration_since(held.received).as_secs();
            let more = Duration::from_secs(waited.saturating_sub(held.aged_secs));
            held.aged_secs = waited;
            if let Err(reason) = Forwarder::age(&mut out, more) {
                self.dropped(reason.as_str(), &out.topic);
                if let Some(token) = held.ack {
                    st.src.ack(token, now);
                }
                continue;
            }
            if let Some(back) = self.offer(st, out, held, now) {
                st.pending.push_front(back);
                break;
            }
        }
    }

    /// Offers one message to the sink; gives it back when the sink is busy.
    fn offer(
        &self,
        st: &mut State,
        out: Publish,
        held: Held,
        now: Instant,
    ) -> Option<(Publish, Held)> {
        let ticket = st.next_ticket;
        match st.sink.offer(out, ticket, now) {
            Offer::Accepted => {
                st.next_ticket += 1;
                st.held.insert(ticket, held);
            }
            Offer::Done => self.complete(st, held, None, now),
            Offer::Busy(out) => return Some((out, held)),
            Offer::Dropped(reason) => {
                self.dropped(reason, "");
                if let Some(token) = held.ack {
                    st.src.ack(token, now);
                }
            }
        }
        None
    }

    /// The sink is done with a message (delivered, or refused for good with a reason):
    /// acknowledge it at the source.
    fn complete(&self, st: &mut State, held: Held, refused: Option<&'static str>, now: Instant) {
        match refused {
            None => self.metrics.on_forwarded(held.bytes),
            Some(reason) => self.dropped(reason, ""),
        }
        self.metrics
            .on_acked(now.saturating_duration_since(held.received));
        if let Some(token) = held.ack {
            st.src.ack(token, now);
        }
    }
}

impl Conn {
    /// Cancels outstanding I/O from a fresh task, so that the caller (which may be the reader
    /// itself, inside its processing) is not re-entered.
    fn cancel_io_later(self: &Rc<Self>) {
        let c = Rc::clone(self);
        monoio::spawn(async move {
            // Let the writer flush a DISCONNECT first.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !c.writer_done.get() && Instant::now() < deadline {
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
            c.cancel_io();
        });
    }
}

/// An endpoint's TLS configuration and the modification times of the files it came from.
#[derive(Debug)]
struct TlsCache {
    config: Option<Arc<rustls::ClientConfig>>,
    stamps: Vec<Option<SystemTime>>,
}

impl TlsCache {
    fn new(ep: &MqttEndpointPlan, config: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self {
            config,
            stamps: tls_stamps(ep),
        }
    }
}

/// Modification times of an endpoint's CA and client certificate files (none without TLS, or
/// with the system trust store only).
fn tls_stamps(ep: &MqttEndpointPlan) -> Vec<Option<SystemTime>> {
    let Some(tls) = &ep.tls else {
        return Vec::new();
    };
    let mut files: Vec<&std::path::Path> = tls
        .ca_files
        .iter()
        .flatten()
        .map(std::path::PathBuf::as_path)
        .collect();
    if let Some(c) = &tls.client_cert {
        files.push(&c.cert);
        files.push(&c.key);
        files.extend(c.intermediates.as_deref());
    }
    files
        .into_iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// The TLS client configuration of an endpoint, when it uses TLS.
fn tls_config(ep: &MqttEndpointPlan) -> Result<Option<Arc<rustls::ClientConfig>>, TransportError> {
    let Some(tls) = &ep.tls else {
        return Ok(None);
    };
    let client_auth = tls.client_cert.as_ref().map(|c| ClientAuthFiles {
        cert: c.cert.clone(),
        key: c.key.clone(),
        intermediates: c.intermediates.clone(),
    });
    client_config(tls.ca_files.as_deref(), client_auth).map(Some)
}

/// Jittered exponential backoff.
#[derive(Debug)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let cap = BACKOFF_BASE
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(fastrand::u64(ms / 2..=ms))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Source => "source",
        Side::Destination => "destination",
    }
}

fn session(st: &mut State, side: Side) -> &mut Session {
    match side {
        Side::Source => &mut st.src,
        Side::Destination => st.sink.session_mut(),
    }
}

/// Connects, runs and reconnects one side until the pipeline stops.
async fn drive(p: Rc<Pipeline>, side: Side) {
    let mut backoff = Backoff { attempt: 0 };
    let mut first = true;
    while !p.stopped.get() {
        if !first {
            p.metrics.on_reconnect(side);
            let delay = backoff.next();
            debug!(dataflow = %p.plan.key, side = side_name(side), ?delay, "reconnecting");
            sleep_unless_stopped(&p, delay).await;
            if p.stopped.get() {
                break;
            }
        }
        first = false;
        // A fresh token for every connection (enhanced authentication).
        let token = match p.token_source(side).token().await {
            Ok(t) => t,
            Err(e) => {
                warn!(dataflow = %p.plan.key, core = p.core, side = side_name(side), error = %e, "cannot get an authentication token");
                continue;
            }
        };
        if p.stopped.get() {
            break;
        }
        let ep = p.endpoint(side);
        let stream = match connect(&ep.host, ep.port).await {
            Ok(s) => s,
            Err(e) => {
                warn!(dataflow = %p.plan.key, core = p.core, side = side_name(side), host = %ep.host, port = ep.port, error = %e, "cannot connect");
                continue;
            }
        };
        if p.stopped.get() {
            break; // stopped while connecting: this connection would outlive the pipeline
        }
        let _ = stream.set_nodelay(true);
        // Secrets are read again for every connection: a rotated password or certificate is
        // used from the next connection on.
        let login = match &p.endpoint(side).credentials {
            Credentials::UsernamePassword {
                username_file,
                password_file,
                ..
            } => match read_login(username_file, password_file) {
                Ok(login) => Some(login),
                Err(e) => {
                    warn!(dataflow = %p.plan.key, core = p.core, side = side_name(side), error = %e, "cannot read the login secret");
                    continue;
                }
            },
            _ => None,
        };
        let transport = match p.transport(side) {
            Ok(t) => t,
            Err(e) => {
                warn!(dataflow = %p.plan.key, core = p.core, side = side_name(side), error = %e, "cannot set up TLS/WebSocket");
                continue;
            }
        };
        let (rd, wr) = stream.into_split();
        let conn = Rc::new(Conn::default());
        *conn.canceller.borrow_mut() = Some(Canceller::new());
        *conn.transport.borrow_mut() = transport;
        p.set_conn(side, Some(Rc::clone(&conn)));
        {
            let mut st = p.state.borrow_mut();
            let s = session(&mut st, side);
            if let Some((data, refresh_at)) = token {
                s.set_authentication_data(Some(data));
                conn.reauth_at.set(refresh_at);
            }
            if let Some((username, password)) = login {
                s.set_login(Some(username), Some(password));
            }
            s.handle_connected(Instant::now());
        }
        monoio::spawn(write_loop(Rc::clone(&p), side, Rc::clone(&conn), wr));
        monoio::spawn(timer_loop(Rc::clone(&p), side, Rc::clone(&conn)));
        conn.tx.notify();
        let connected_at = read_loop(&p, side, &conn, rd).await;
        conn.close();
        // Let the writer flush (a DISCONNECT with the reason code, say), then make sure it ends.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !conn.writer_done.get() && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(2)).await;
        }
        conn.cancel_io();
        while !conn.writer_done.get() {
            conn.writer_done_notify.notified().await;
        }
        {
            let mut st = p.state.borrow_mut();
            session(&mut st, side).handle_disconnected(Instant::now());
        }
        p.set_conn(side, None);
        p.process();
        p.metrics.set_connected(side, false);
        // A connection that stayed up a while starts the backoff over; one that a broker
        // accepts and then breaks at once (a protocol error after CONNACK) keeps backing off.
        if connected_at.is_some_and(|at| at.elapsed() >= HEALTHY_AFTER) {
            backoff.reset();
        }
    }
    match side {
        Side::Source => p.src_done.set(true),
        Side::Destination => p.dst_done.set(true),
    }
    p.done.notify();
}

async fn sleep_unless_stopped(p: &Pipeline, delay: Duration) {
    let deadline = Instant::now() + delay;
    while !p.stopped.get() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        monoio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
}

async fn connect(host: &str, port: u16) -> std::io::Result<TcpStream> {
    // Name resolution blocks (up to the resolver's timeouts): off the event loop, unless the
    // host is an address already.
    let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            let host = host.to_owned();
            off_loop(move || (host.as_str(), port).to_socket_addrs().map(Vec::from_iter)).await?
        }
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match monoio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect_addr(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
            }
        }
    }
    Err(last)
}

/// Reads until the connection ends. Returns when CONNACK was received, if it was.
async fn read_loop(
    p: &Rc<Pipeline>,
    side: Side,
    conn: &Rc<Conn>,
    mut rd: OwnedReadHalf<TcpStream>,
) -> Option<Instant> {
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let layered = conn.transport.borrow().is_some();
    // With TLS or WebSocket, `buf` holds what the socket gave and `app` the MQTT bytes.
    let mut app = if layered {
        BytesMut::with_capacity(READ_BUFFER)
    } else {
        BytesMut::new()
    };
    let mut connected_at: Option<Instant> = None;
    loop {
        // Only a connected source pauses: CONNACK must be read whatever the queues hold.
        if side == Side::Source && p.should_pause() && p.state.borrow().src.is_connected() {
            p.state.borrow_mut().src.set_reading(false, Instant::now());
            while p.should_pause() && !conn.closing.get() {
                p.resume.notified().await;
            }
            p.state.borrow_mut().src.set_reading(true, Instant::now());
        }
        if conn.closing.get() {
            break;
        }
        if buf.capacity() - buf.len() < READ_BUFFER / 4 {
            buf.reserve(READ_BUFFER);
        }
        let Some(handle) = conn.canceller.borrow().as_ref().map(Canceller::handle) else {
            break;
        };
        // monoio reads a `BytesMut` into its start: read into the spare capacity instead, so
        // that a partial frame at the front survives.
        let start = buf.len();
        let (res, slice) = rd.cancelable_read(buf.slice_mut(start..), handle).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                debug!(dataflow = %p.plan.key, side = side_name(side), "connection closed by the broker");
                break;
            }
            Ok(_) => {}
            Err(e) => {
                if !conn.closing.get() {
                    debug!(dataflow = %p.plan.key, side = side_name(side), error = %e, "read failed");
                }
                break;
            }
        }
        let input = if layered {
            let result = {
                let mut t = conn.transport.borrow_mut();
                t.as_mut().map(|t| t.read(&mut buf, &mut app))
            };
            // Handshake records, alerts or pongs may be waiting to go out.
            conn.tx.notify();
            if let Some(Err(e)) = result {
                if matches!(e, TransportError::Closed(_)) {
                    debug!(dataflow = %p.plan.key, side = side_name(side), error = %e, "transport closed by the broker");
                } else {
                    warn!(dataflow = %p.plan.key, core = p.core, side = side_name(side), error = %e, "transport error");
                }
                conn.close();
                break;
            }
            &mut app
        } else {
            &mut buf
        };
        {
            let mut st = p.state.borrow_mut();
            let s = session(&mut st, side);
            s.handle_bytes(input, Instant::now());
            if connected_at.is_none() && s.is_connected() {
                connected_at = Some(Instant::now());
            }
        }
        p.process();
    }
    connected_at
}

async fn write_loop(
    p: Rc<Pipeline>,
    side: Side,
    conn: Rc<Conn>,
    mut wr: OwnedWriteHalf<TcpStream>,
) {
    if conn.transport.borrow().is_some() {
        write_loop_layered(&p, side, &conn, &mut wr).await;
        let _ = wr.shutdown().await;
        conn.writer_done.set(true);
        conn.writer_done_notify.notify();
        return;
    }
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut chunks = IoChunks::new();
    'outer: loop {
        {
            let mut st = p.state.borrow_mut();
            session(&mut st, side).poll_transmit_vectored(&mut pieces);
        }
        if side == Side::Destination && !pieces.is_empty() {
            p.resume.notify();
        }
        chunks.extend(&mut pieces);
        if chunks.is_empty() {
            if conn.closing.get() {
                break;
            }
            conn.tx.notified().await;
            continue;
        }
        while !chunks.is_empty() {
            chunks.prepare();
            let Some(handle) = conn.canceller.borrow().as_ref().map(Canceller::handle) else {
                break 'outer;
            };
            let (res, c) = wr.cancelable_writev(chunks, handle).await;
            chunks = c;
            match res {
                Ok(0) => break 'outer,
                Ok(n) => chunks.advance(n),
                Err(e) => {
                    debug!(dataflow = %p.plan.key, side = side_name(side), error = %e, "write failed");
                    conn.close();
                    conn.cancel_io();
                    break 'outer;
                }
            }
        }
    }
    let _ = wr.shutdown().await;
    conn.writer_done.set(true);
    conn.writer_done_notify.notify();
}

/// The writer behind TLS and/or WebSocket: session bytes go through the transport, whose
/// output (records, frames) is written with plain writes.
async fn write_loop_layered(
    p: &Rc<Pipeline>,
    side: Side,
    conn: &Rc<Conn>,
    wr: &mut OwnedWriteHalf<TcpStream>,
) {
    let mut plain = BytesMut::new();
    let mut out = BytesMut::with_capacity(64 << 10);
    loop {
        {
            let mut st = p.state.borrow_mut();
            session(&mut st, side).poll_transmit(&mut plain);
        }
        if side == Side::Destination && !plain.is_empty() {
            p.resume.notify();
        }
        {
            let mut t = conn.transport.borrow_mut();
            let Some(t) = t.as_mut() else { return };
            if !plain.is_empty() {
                if let Err(e) = t.write(&plain) {
                    debug!(dataflow = %p.plan.key, side = side_name(side), error = %e, "transport refused a write");
                    conn.close();
                }
                plain.clear();
            }
            if conn.closing.get() && out.is_empty() {
                t.close();
            }
            t.poll_write(&mut out);
        }
        if out.is_empty() {
            if conn.closing.get() {
                return;
            }
            conn.tx.notified().await;
            continue;
        }
        let Some(handle) = conn.canceller.borrow().as_ref().map(Canceller::handle) else {
            return;
        };
        let (res, b) = wr.cancelable_write(out, handle).await;
        out = b;
        match res {
            Ok(n) if n > 0 => bytes::Buf::advance(&mut out, n),
            Ok(_) => return,
            Err(e) => {
                debug!(dataflow = %p.plan.key, side = side_name(side), error = %e, "write failed");
                conn.close();
                conn.cancel_io();
                return;
            }
        }
    }
}

async fn timer_loop(p: Rc<Pipeline>, side: Side, conn: Rc<Conn>) {
    loop {
        let wait = {
            let mut st = p.state.borrow_mut();
            let next = session(&mut st, side).poll_timeout();
            next.map_or(Duration::from_secs(1), |t| {
                t.saturating_duration_since(Instant::now())
            })
        };
        monoio::time::sleep(wait.min(Duration::from_secs(1))).await;
        if conn.closing.get() {
            break;
        }
        {
            let mut st = p.state.borrow_mut();
            session(&mut st, side).handle_timeout(Instant::now());
        }
        p.process();
        if conn
            .reauth_at
            .get()
            .is_some_and(|at| SystemTime::now() >= at)
        {
            conn.reauth_at.set(None);
            reauthenticate(&p, side, &conn).await;
        }
    }
}

/// Fetches a fresh token and re-authenticates the connection with it (MQTT 5.0 AUTH 0x19).
/// A failure leaves the connection as it is; the next connection tries again.
async fn reauthenticate(p: &Rc<Pipeline>, side: Side, conn: &Rc<Conn>) {
    match p.token_source(side).token().await {
        Ok(Some((data, refresh_at))) => {
            if conn.closing.get() {
                return;
            }
            conn.reauth_at.set(refresh_at);
            let result = {
                let mut st = p.state.borrow_mut();
                session(&mut st, side).reauthenticate(data, Instant::now())
            };
            match result {
                Ok(()) => {
                    debug!(dataflow = %p.plan.key, side = side_name(side), "re-authenticating")
                }
                Err(e) => {
                    debug!(dataflow = %p.plan.key, side = side_name(side), error = %e, "cannot re-authenticate now")
                }
            }
            p.process();
        }
        Ok(None) => {}
        Err(e) => {
            warn!(dataflow = %p.plan.key, core = p.core, side = side_name(side), error = %e, "cannot refresh the authentication token");
            conn.reauth_at
                .set(Some(SystemTime::now() + Duration::from_secs(30)));
        }
    }
}
