//! One dataflow on one worker: builds its source and sink from the plan, runs them with the
//! dataflow [`Core`] between them on the worker's event loop, and turns what they report into
//! logs and metrics. The only place that names concrete sources and sinks.
//!
//! ```text
//!  source Connection ─bytes─> MqttSource ─Message─> Core ─Message─> MqttSink ─bytes─> Connection
//!        ^                        ^                  │        (or KafkaSink ─record─> librdkafka)
//!        └── PUBACK (in order) ───┴──── ack <────────┴──── Outcome <────┘
//! ```
//!
//! Each MQTT [`Connection`] calls [`Owner::process`] after every input; that runs the core and
//! wakes the writers that have bytes and a reader that may read again. A Kafka destination has
//! no connection of ours: the task's Kafka loop ([`Task::kafka_loop`]) makes the producer (and
//! makes a new one after a fatal error or a refused login, reading the secrets again), fetches
//! managed identity tokens off the event loop, and polls the producer without blocking: every
//! [`KAFKA_POLL`] while records are in flight, else when an offer wakes it or every
//! [`IDLE_TICK`].

use std::cell::{Cell, RefCell, RefMut};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sluice_codec::DecodeError;
use tracing::{debug, info, warn};

use super::core::{Core, CoreEvent, CoreSettings};
use crate::config::kafka_endpoint::KafkaAuth;
use crate::config::plan::{DataflowPlan, SinkPlan, SourcePlan};
use crate::message::{Message, Side};
use crate::mqtt::connection::{Connection, ConnectionError, Owner};
use crate::mqtt::session::{CloseReason, ConfigError, Event, Session};
use crate::net::connect::Backoff;
use crate::observe::logs::Escaped;
use crate::observe::metrics::DataflowMetrics;
use crate::runtime::sync::Notify;
use crate::secrets::tokens::TokenSource;
use crate::sink::{Offer, Outcome, Sink, Ticket};
use crate::sinks::kafka::{KafkaSink, Notice as KafkaNotice, RecordSettings};
use crate::sinks::mqtt::{MqttSink, Notice, PublishSettings};
use crate::source::Source;
use crate::sources::mqtt::MqttSource;
use crate::transform::route::Route;

/// How often the task's timer looks at the core when it has no deadline.
const IDLE_TICK: Duration = Duration::from_millis(500);

/// How often a Kafka producer is polled while records are in flight.
const KAFKA_POLL: Duration = Duration::from_millis(1);

/// Kafka client errors logged at warn at most this often per producer (the rest at debug).
const KAFKA_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Starting a dataflow failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// A session configuration was refused.
    #[error("{side} session: {error}")]
    Session {
        /// Which one.
        side: Side,
        /// Why.
        error: ConfigError,
    },
    /// The routing rules are invalid.
    #[error("destination topic: {0}")]
    Route(String),
    /// A side's connections cannot be set up.
    #[error("{side}: {error}")]
    Connection {
        /// Which one.
        side: Side,
        /// Why.
        error: ConnectionError,
    },
}

/// A dataflow's destination: the concrete sinks behind one [`Sink`].
#[derive(Debug)]
// One per task, in place in its core for the task's life: never moved per message.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Destination {
    /// An MQTT broker.
    Mqtt(MqttSink),
    /// A Kafka cluster.
    Kafka(KafkaSink),
}

impl Sink for Destination {
    fn ready(&self) -> bool {
        match self {
            Self::Mqtt(s) => s.ready(),
            Self::Kafka(s) => s.ready(),
        }
    }

    fn offer(&mut self, message: Message, ticket: Ticket, now: Instant) -> Offer {
        match self {
            Self::Mqtt(s) => s.offer(message, ticket, now),
            Self::Kafka(s) => s.offer(message, ticket, now),
        }
    }

    fn poll_outcome(&mut self) -> Option<(Ticket, Outcome)> {
        match self {
            Self::Mqtt(s) => s.poll_outcome(),
            Self::Kafka(s) => s.poll_outcome(),
        }
    }

    fn backlog_bytes(&self) -> usize {
        match self {
            Self::Mqtt(s) => s.backlog_bytes(),
            Self::Kafka(s) => s.backlog_bytes(),
        }
    }
}

/// The I/O side of a destination.
#[derive(Debug)]
enum DestinationIo {
    /// The MQTT destination's connection.
    Mqtt(Rc<Connection>),
    /// Wakes the Kafka loop (a record was offered).
    Kafka(Notify),
}

/// A running dataflow on one core. See the module documentation.
#[derive(Debug)]
pub(crate) struct Task {
    key: Arc<str>,
    core_id: usize,
    metrics: Arc<DataflowMetrics>,
    core: RefCell<Core<MqttSource, Destination>>,
    src: Rc<Connection>,
    dst: DestinationIo,
    /// The managed identity token source of a Kafka destination.
    kafka_tokens: Option<TokenSource>,
    /// The Kafka loop has ended (after a stop), and the producer is gone.
    kafka_done: Cell<bool>,
    /// The Kafka destination has been up once: a later "up" is a reconnection.
    kafka_was_up: Cell<bool>,
    /// A drop was logged at warn level.
    drop_logged: Cell<bool>,
    /// A later Stop asked for this task's broker sessions to end (it was removed while it
    /// drained for a restart).
    end_sessions: Cell<bool>,
    /// Receive Maximum overruns of the source already logged.
    overruns_logged: Cell<u64>,
    /// Stopped: the timer and the Kafka loop end.
    stopped: Cell<bool>,
    /// Nested `process` calls are folded into the outer one.
    processing: Cell<bool>,
    again: Cell<bool>,
}

impl Task {
    /// Starts the dataflow's source and destination on the current core's event loop (spawns
    /// their tasks).
    ///
    /// # Errors
    /// [`StartError`] when the plan's sessions, topic template, TLS files or token source are
    /// refused.
    pub(crate) fn start(
        plan: Arc<DataflowPlan>,
        core_id: usize,
        metrics: Arc<DataflowMetrics>,
    ) -> Result<Rc<Self>, StartError> {
        let now = Instant::now();
        let key: Arc<str> = Arc::from(plan.key.as_str());
        let SourcePlan::Mqtt(src_plan) = &plan.source;
        let mut src_cfg =
            src_plan
                .endpoint
                .session_config(plan.client_id(&src_plan.endpoint, "src", core_id));
        src_cfg.subscriptions = plan.subscriptions();
        src_cfg.unsubscribe_first = src_plan.previous_filters.clone();
        let src = Session::new(src_cfg, now).map_err(|error| StartError::Session {
            side: Side::Source,
            error,
        })?;
        let route = Route::new(plan.route_settings().map_err(StartError::Route)?);
        let connection = |side, ep| {
            Connection::new(side, ep, Arc::clone(&key), core_id, Arc::clone(&metrics))
                .map(Rc::new)
                .map_err(|error| StartError::Connection { side, error })
        };
        let src_conn = connection(Side::Source, &src_plan.endpoint)?;
        let mut kafka_tokens = None;
        let (sink, dst_io) = match &plan.sink {
            SinkPlan::Mqtt(dst_ep) => {
                let dst_cfg = dst_ep.session_config(plan.client_id(dst_ep, "dst", core_id));
                let dst = Session::new(dst_cfg, now).map_err(|error| StartError::Session {
                    side: Side::Destination,
                    error,
                })?;
                let sink = MqttSink::new(
                    dst,
                    PublishSettings {
                        qos: dst_ep.qos(),
                        retain: dst_ep.settings.retain,
                    },
                );
                let dst_conn = connection(Side::Destination, dst_ep)?;
                (Destination::Mqtt(sink), DestinationIo::Mqtt(dst_conn))
            }
            SinkPlan::Kafka(dst_ep) => {
                if let KafkaAuth::ManagedIdentity {
                    endpoint,
                    resource,
                    client_id,
                } = &dst_ep.auth
                {
                    kafka_tokens = Some(
                        TokenSource::imds(endpoint, resource.clone(), client_id.clone()).map_err(
                            |e| StartError::Connection {
                                side: Side::Destination,
                                error: ConnectionError::Auth(e),
                            },
                        )?,
                    );
                }
                let sink = KafkaSink::new(
                    Arc::clone(dst_ep),
                    plan.kafka_client_id(core_id),
                    format!("{key} core {core_id}"),
                    RecordSettings::of(dst_ep, plan.instance_id.as_deref()),
                );
                (
                    Destination::Kafka(sink),
                    DestinationIo::Kafka(Notify::new()),
                )
            }
        };
        let core = Core::new(
            MqttSource::new(src),
            sink,
            route,
            CoreSettings::default(),
            Arc::clone(&metrics),
        );
        let t = Rc::new(Self {
            key,
            core_id,
            metrics,
            core: RefCell::new(core),
            src: src_conn,
            dst: dst_io,
            kafka_tokens,
            kafka_done: Cell::new(false),
            kafka_was_up: Cell::new(false),
            drop_logged: Cell::new(false),
            end_sessions: Cell::new(false),
            overruns_logged: Cell::new(0),
            stopped: Cell::new(false),
            processing: Cell::new(false),
            again: Cell::new(false),
        });
        info!(dataflow = %t.key, core = core_id, "starting");
        let owner: Rc<dyn Owner> = Rc::clone(&t) as Rc<dyn Owner>;
        monoio::spawn(Rc::clone(&t.src).drive(Rc::clone(&owner)));
        match &t.dst {
            DestinationIo::Mqtt(dst) => {
                monoio::spawn(Rc::clone(dst).drive(owner));
            }
            DestinationIo::Kafka(_) => {
                monoio::spawn(Rc::clone(&t).kafka_loop());
            }
        }
        monoio::spawn(Rc::clone(&t).timer());
        Ok(t)
    }

    /// Drains, then stops: reads nothing more from the source, waits (at most `timeout`) until
    /// every message already received is acknowledged at the destination and its PUBACK sent,
    /// then disconnects. What is still unacknowledged after the timeout is left to the source
    /// broker, which delivers it again (persistent session). With `end_sessions` (a removed
    /// dataflow, not a restart) the 5.0 sessions are ended on the brokers too.
    pub(crate) async fn stop(self: &Rc<Self>, timeout: Duration, end_sessions: bool) {
        self.core.borrow_mut().start_drain(Instant::now());
        let deadline = Instant::now() + timeout;
        while !self.core.borrow().is_drained() && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        let drained = self.core.borrow().is_drained();
        let unacknowledged = self.core.borrow().source().unacked();
        {
            let now = Instant::now();
            let mut core = self.core.borrow_mut();
            // Ending the sessions of an undrained dataflow would throw away what the source
            // broker still holds for it: then they stay, and expire on their own.
            let end = (end_sessions || self.end_sessions.get()) && drained;
            let src = core.source_mut().session_mut();
            if end {
                src.disconnect_ending_session(now);
            } else {
                src.disconnect(now);
            }
            if let Destination::Mqtt(sink) = core.sink_mut() {
                if end {
                    sink.session_mut().disconnect_ending_session(now);
                } else {
                    sink.session_mut().disconnect(now);
                }
            }
        }
        self.process();
        self.stopped.set(true);
        // The writers flush the DISCONNECTs; then the readers are cancelled. The Kafka loop
        // sees `stopped` and lets the producer go.
        self.src.stop();
        if let DestinationIo::Mqtt(dst) = &self.dst {
            dst.stop();
        }
        if let DestinationIo::Kafka(wake) = &self.dst {
            wake.notify();
        }
        let flush_deadline = Instant::now() + Duration::from_secs(2);
        while !(self.src.is_done() && self.dst_done()) {
            if Instant::now() >= flush_deadline {
                self.src.cancel_io();
                if let DestinationIo::Mqtt(dst) = &self.dst {
                    dst.cancel_io();
                }
            }
            monoio::time::sleep(Duration::from_millis(5)).await;
            if Instant::now() >= flush_deadline + Duration::from_secs(3) {
                warn!(dataflow = %self.key, core = self.core_id, "connections did not close in time");
                break;
            }
        }
        info!(
            dataflow = %self.key,
            core = self.core_id,
            drained,
            unacknowledged,
            "stopped"
        );
    }

    fn dst_done(&self) -> bool {
        match &self.dst {
            DestinationIo::Mqtt(dst) => dst.is_done(),
            DestinationIo::Kafka(_) => self.kafka_done.get(),
        }
    }

    /// Runs the core at its own deadline (a message given back is offered again), until the
    /// task stops.
    async fn timer(self: Rc<Self>) {
        while !self.stopped.get() {
            let wait = self
                .core
                .borrow()
                .poll_timeout()
                .map_or(IDLE_TICK, |at| at.saturating_duration_since(Instant::now()));
            monoio::time::sleep(wait.min(IDLE_TICK)).await;
            if self
                .core
                .borrow()
                .poll_timeout()
                .is_some_and(|at| Instant::now() >= at)
            {
                self.process();
            }
        }
    }

    /// The Kafka destination's loop: see the module documentation.
    async fn kafka_loop(self: Rc<Self>) {
        let mut backoff = Backoff::default();
        let mut refresh_at: Option<SystemTime> = None;
        let mut last_warn: Option<Instant> = None;
        while !self.stopped.get() {
            if self.with_kafka(|k| k.needs_new_producer()) == Some(true) {
                let old = self.with_kafka(KafkaSink::take_producer).flatten();
                if let Some(old) = old {
                    // What it held comes back to the core; dropping it waits for its threads.
                    self.process();
                    let _ = std::thread::Builder::new()
                        .name("sluice-kafka-drop".into())
                        .spawn(move || drop(old));
                    // A producer replaced after a fatal error or a refused login: not again at
                    // once (a wrong password would make one every few milliseconds).
                    monoio::time::sleep(backoff.next_delay()).await;
                    if self.stopped.get() {
                        break;
                    }
                }
                let token = match self.kafka_token(&mut refresh_at).await {
                    Ok(t) => t,
                    Err(e) => {
                        self.with_kafka(|k| k.cannot_create(format!("managed identity: {e}")));
                        self.process();
                        monoio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                };
                match self
                    .with_kafka(|k| k.make_producer(token))
                    .unwrap_or(Ok(()))
                {
                    Ok(()) => {
                        debug!(dataflow = %self.key, core = self.core_id, "Kafka producer made");
                        self.process();
                    }
                    Err(e) => {
                        self.with_kafka(|k| k.cannot_create(e));
                        self.process();
                        monoio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
            let token_wanted = self.with_kafka(KafkaSink::take_token_wanted) == Some(true);
            if self.kafka_tokens.is_some()
                && (token_wanted || refresh_at.is_some_and(|at| SystemTime::now() >= at))
            {
                match self.kafka_token(&mut refresh_at).await {
                    Ok(Some(token)) => {
                        self.with_kafka(|k| k.set_token(token));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(dataflow = %self.key, core = self.core_id, error = %Escaped(&e.to_string()), "cannot refresh the managed identity token");
                        refresh_at = Some(SystemTime::now() + backoff.next_delay());
                    }
                }
            }
            self.with_kafka(KafkaSink::poll);
            self.process();
            if last_warn.is_some_and(|t| t.elapsed() >= KAFKA_ERROR_LOG_EVERY) {
                last_warn = None;
            }
            if self.kafka_notices(&mut last_warn) {
                // Up: the next replacement starts its backoff over.
                backoff.reset();
            }
            let in_flight = self.with_kafka(|k| k.in_flight()).unwrap_or(0) > 0;
            let DestinationIo::Kafka(wake) = &self.dst else {
                break;
            };
            if in_flight {
                monoio::time::sleep(KAFKA_POLL).await;
            } else {
                let _ = monoio::time::timeout(IDLE_TICK, wake.notified()).await;
            }
        }
        // Stopped: what is still in flight is left unacknowledged at the source.
        if let Some(producer) = self.with_kafka(KafkaSink::take_producer).flatten() {
            let _ = std::thread::Builder::new()
                .name("sluice-kafka-drop".into())
                .spawn(move || drop(producer));
        }
        self.kafka_done.set(true);
    }

    /// A managed identity token for a new producer or a refresh (`None` without one), and when
    /// to refresh it.
    async fn kafka_token(
        &self,
        refresh_at: &mut Option<SystemTime>,
    ) -> Result<Option<crate::secrets::tokens::Token>, crate::secrets::AuthError> {
        let Some(tokens) = &self.kafka_tokens else {
            return Ok(None);
        };
        let answer = tokens.token().await?;
        *refresh_at = answer.as_ref().and_then(|(_, at)| *at);
        Ok(tokens.cached())
    }

    /// Runs `f` on the Kafka sink; `None` when the destination is not Kafka (the Kafka loop
    /// runs only for a Kafka destination).
    fn with_kafka<T>(&self, f: impl FnOnce(&mut KafkaSink) -> T) -> Option<T> {
        match self.core.borrow_mut().sink_mut() {
            Destination::Kafka(k) => Some(f(k)),
            Destination::Mqtt(_) => None,
        }
    }

    /// Logs and counts what the Kafka producer reported; returns whether it came up.
    fn kafka_notices(&self, last_warn: &mut Option<Instant>) -> bool {
        let mut up = false;
        while let Some(notice) = self.with_kafka(KafkaSink::poll_notice).flatten() {
            match notice {
                KafkaNotice::Up => {
                    up = true;
                    if self.kafka_was_up.replace(true) {
                        self.metrics.on_reconnect(Side::Destination);
                    }
                    self.metrics.set_connected(Side::Destination, true);
                    info!(dataflow = %self.key, core = self.core_id, "destination connected (Kafka)");
                }
                KafkaNotice::Down => {
                    self.metrics.set_connected(Side::Destination, false);
                    warn!(dataflow = %self.key, core = self.core_id, "destination disconnected (Kafka): no broker reachable; records wait in the producer and are retried");
                }
                KafkaNotice::Error { code, reason } => {
                    if last_warn.is_none() {
                        *last_warn = Some(Instant::now());
                        warn!(dataflow = %self.key, core = self.core_id, ?code, reason = %Escaped(&reason), "Kafka client error (further ones within 10 s are logged at debug level)");
                    } else {
                        debug!(dataflow = %self.key, core = self.core_id, ?code, reason = %Escaped(&reason), "Kafka client error");
                    }
                }
                KafkaNotice::RecordError { code, class } => {
                    let what = match class {
                        crate::kafka::errors::ErrorClass::Final(_) => "dropped (final)",
                        _ => "offered again after a backoff",
                    };
                    warn!(dataflow = %self.key, core = self.core_id, ?code, "Kafka did not take records: {what}");
                }
                KafkaNotice::CannotCreate { reason } => {
                    self.metrics.set_connected(Side::Destination, false);
                    warn!(dataflow = %self.key, core = self.core_id, reason = %Escaped(&reason), "cannot make the Kafka producer; retrying");
                }
            }
        }
        up
    }

    /// Asks a task that is already draining (for a restart) to end its broker sessions when
    /// it stops: the dataflow was removed meanwhile.
    pub(crate) fn end_sessions_when_stopped(&self) {
        self.end_sessions.set(true);
    }

    /// Runs the core, then handles what the sessions reported; repeats while something new
    /// came up (the destination connected).
    fn run(&self) {
        let mut core = self.core.borrow_mut();
        let mut rounds = 0;
        loop {
            let now = Instant::now();
            core.process(now, SystemTime::now());
            let sink_connected = self.source_notices(&mut core) | self.sink_notices(&mut core);
            self.log_events(&mut core);
            rounds += 1;
            if !sink_connected || rounds > 2 {
                break;
            }
        }
        if core.source().backlog_bytes() > 0 {
            self.src.wake_writer();
        }
        match (&self.dst, core.sink()) {
            (DestinationIo::Mqtt(dst), sink) if sink.backlog_bytes() > 0 => dst.wake_writer(),
            (DestinationIo::Kafka(wake), Destination::Kafka(k)) if k.in_flight() > 0 => {
                wake.notify();
            }
            _ => {}
        }
        if !core.source().read_paused() {
            self.src.resume_reader();
        }
    }

    /// What the source session reported besides messages. Returns `false` (the sink did not
    /// change).
    fn source_notices(&self, core: &mut Core<MqttSource, Destination>) -> bool {
        while let Some(ev) = core.source_mut().poll_notice() {
            match ev {
                Event::Connected { session_present } => {
                    self.metrics.set_connected(Side::Source, true);
                    info!(dataflow = %self.key, core = self.core_id, session_present, "source connected");
                }
                Event::Subscribed { reason_codes } => {
                    let subs = &core.source().session().config().subscriptions;
                    for (code, sub) in reason_codes.iter().zip(subs) {
                        if code.0 >= 0x80 {
                            warn!(dataflow = %self.key, filter = %sub.filter, code = code.0, "subscription refused by the source broker");
                        } else if code.0 < sub.options.qos as u8 {
                            warn!(dataflow = %self.key, filter = %sub.filter, granted = code.0, "the source broker granted a lower QoS than asked: its messages arrive at most once");
                        }
                    }
                }
                Event::Reauthenticated => {
                    debug!(dataflow = %self.key, core = self.core_id, "source re-authenticated");
                }
                Event::Closed { reason } => {
                    self.metrics.set_connected(Side::Source, false);
                    self.on_closed(Side::Source, &reason);
                    self.src.on_closed(&reason);
                }
                Event::Message { .. } | Event::Acked { .. } | Event::Refused { .. } => {}
            }
        }
        let overruns = core.source().session().receive_maximum_overruns();
        self.metrics.set_receive_maximum_overruns(overruns);
        let logged = self.overruns_logged.get();
        if overruns > logged && (logged == 0 || overruns >= 2 * logged) {
            self.overruns_logged.set(overruns);
            warn!(dataflow = %self.key, core = self.core_id, overruns, "the source broker sent more unacknowledged QoS 1 messages than our Receive Maximum (accepted; see docs/delivery.md)");
        }
        false
    }

    /// What an MQTT sink reported about its connection. Returns whether it connected (the core
    /// may offer what waits). A Kafka sink's notices are the Kafka loop's.
    fn sink_notices(&self, core: &mut Core<MqttSource, Destination>) -> bool {
        let mut connected = false;
        loop {
            let Destination::Mqtt(sink) = core.sink_mut() else {
                return false;
            };
            let Some(notice) = sink.poll_notice() else {
                break;
            };
            match notice {
                Notice::Connected { session_present } => {
                    let maximum = sink.session().maximum_qos();
                    if maximum < sink.qos() {
                        // Not ready: QoS 1 messages wait rather than go out at QoS 0.
                        warn!(dataflow = %self.key, core = self.core_id, ?maximum, "the destination broker accepts QoS 0 only, but the endpoint asks for QoS 1: nothing is forwarded (set qos: 0 on the destination endpoint to accept at most once)");
                        continue;
                    }
                    self.metrics.set_connected(Side::Destination, true);
                    info!(dataflow = %self.key, core = self.core_id, session_present, "destination connected");
                    connected = true;
                }
                Notice::Closed { reason } => {
                    self.metrics.set_connected(Side::Destination, false);
                    self.on_closed(Side::Destination, &reason);
                    if let DestinationIo::Mqtt(dst) = &self.dst {
                        dst.on_closed(&reason);
                    }
                }
            }
        }
        connected
    }

    /// Logs and counts why a connection of `side` closed.
    fn on_closed(&self, side: Side, reason: &CloseReason) {
        if let CloseReason::Decode(DecodeError::PacketTooLarge { .. }) = reason {
            self.metrics.on_packet_too_large(side);
            warn!(dataflow = %self.key, core = self.core_id, %side, %reason, "connection closed: the broker sent a packet over our maximum packet size (--max-packet-bytes)");
        } else {
            log_closed(&self.key, self.core_id, side, reason);
        }
    }

    /// Logs what the core reported: the first drop at warn, the rest at debug (a template that
    /// does not fit a topic, or a destination that refuses everything, would otherwise log once
    /// per message); retries at warn on powers of two.
    fn log_events(&self, core: &mut Core<MqttSource, Destination>) {
        while let Some(event) = core.poll_event() {
            match event {
                CoreEvent::Dropped { reason, topic } => {
                    if self.drop_logged.replace(true) {
                        debug!(dataflow = %self.key, topic = %Escaped(&topic), %reason, "message dropped");
                    } else {
                        warn!(dataflow = %self.key, core = self.core_id, topic = %Escaped(&topic), %reason, "message dropped (and acknowledged); further drops are logged at debug level and counted in sluice_messages_dropped_total");
                    }
                }
                CoreEvent::Retrying {
                    total,
                    attempt,
                    delay,
                } => {
                    if total == 1 || total.is_power_of_two() {
                        warn!(dataflow = %self.key, core = self.core_id, retries = total, attempt, ?delay, "the destination did not take a message (a refusal that may pass); it is offered again, and later messages wait");
                    }
                }
            }
        }
    }
}

fn log_closed(key: &str, core: usize, side: Side, reason: &CloseReason) {
    if *reason == CloseReason::Local {
        debug!(dataflow = %key, core, %side, "connection closed");
    } else {
        warn!(dataflow = %key, core, %side, %reason, "connection closed");
    }
}

impl Owner for Task {
    fn session(&self, side: Side) -> RefMut<'_, Session> {
        RefMut::map(self.core.borrow_mut(), |c| match side {
            Side::Source => c.source_mut().session_mut(),
            Side::Destination => match c.sink_mut() {
                Destination::Mqtt(sink) => sink.session_mut(),
                // Only an MQTT destination has a connection that asks for its session.
                Destination::Kafka(_) => unreachable!("a Kafka destination has no MQTT session"),
            },
        })
    }

    fn process(&self) {
        // A connection's call can come while another runs the core (a waker does not re-enter,
        // but a notify from inside may): run again once the outer call is done.
        if self.processing.replace(true) {
            self.again.set(true);
            return;
        }
        loop {
            self.again.set(false);
            self.run();
            if !self.again.get() {
                break;
            }
        }
        self.processing.set(false);
    }

    fn bytes_taken(&self, side: Side) {
        // Only the destination's unwritten bytes pause the source; run the core again only
        // when it is paused (a run per write would cost on the hot path for nothing).
        if side == Side::Destination && self.core.borrow().is_paused() {
            self.process();
        }
    }

    fn read_paused(&self, side: Side) -> bool {
        match side {
            Side::Source => self.core.borrow().source().read_paused(),
            Side::Destination => false,
        }
    }
}
