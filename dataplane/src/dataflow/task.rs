//! One dataflow on one worker: builds its source and sink from the plan, runs them with the
//! dataflow [`Core`] between them on the worker's event loop, and turns what they report into
//! logs and metrics. With [`super::ends`], the only place that names concrete sources and sinks.
//!
//! ```text
//!  source Connection ─bytes─> MqttSource ─Message─> Core ─Message─> MqttSink ─bytes─> Connection
//!        ^                        ^                  │        (or KafkaSink ─record─> librdkafka)
//!        └── PUBACK (in order) ───┴──── ack <────────┴──── Outcome <────┘
//! ```
//!
//! Each MQTT [`Connection`] calls [`Owner::process`] after every input; that runs the core and
//! wakes the writers that have bytes and a reader that may read again. A Kafka destination or
//! source has no connection of ours: the task's Kafka loops (`task/kafka.rs`) make the producer
//! or consumer, fetch managed identity tokens off the event loop, and poll without blocking.

use std::cell::{Cell, RefCell, RefMut};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sluice_codec::DecodeError;
use tracing::{debug, info, warn};

use sluice_config_agent::model::{FileCompression, MetadataColumn, OperationalMode};

use super::core::{Core, CoreEvent, CoreSettings};
use super::ends::{Destination, Origin};
use crate::config::kafka_endpoint::KafkaAuth;
use crate::config::plan::{DataflowPlan, SinkPlan, SourcePlan};
use crate::message::Side;
use crate::mqtt::connection::{Connection, ConnectionError, Owner};
use crate::mqtt::session::{CloseReason, ConfigError, Event, Session};
use crate::observe::logs::Escaped;
use crate::observe::metrics::DataflowMetrics;
use crate::runtime::sync::Notify;
use crate::secrets::tokens::TokenSource;
use crate::sink::Sink;
use crate::sinks::kafka::{KafkaSink, RecordSettings};
use crate::sinks::mqtt::{MqttSink, Notice, PublishSettings};
use crate::sinks::parquet::columns::Meta;
use crate::sinks::parquet::file::Codec;
use crate::sinks::parquet::{ParquetSink, StorageSettings};
use crate::source::Source;
use crate::sources::kafka::{KafkaSource, RecordMapping};
use crate::sources::mqtt::MqttSource;
use crate::transform::route::Route;

mod kafka;
mod parquet;

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

/// The I/O side of a source.
#[derive(Debug)]
enum SourceIo {
    /// The MQTT source's connection.
    Mqtt(Rc<Connection>),
    /// The Kafka source's poll loop ([`Task::kafka_source_loop`]) polls on its own.
    Kafka,
}

/// The I/O side of a destination.
#[derive(Debug)]
enum DestinationIo {
    /// The MQTT destination's connection.
    Mqtt(Rc<Connection>),
    /// Wakes the Kafka loop (a record was offered).
    Kafka(Notify),
    /// Wakes the Parquet loop (a file is due).
    Parquet(Notify),
}

/// A running dataflow on one core. See the module documentation.
#[derive(Debug)]
pub(crate) struct Task {
    key: Arc<str>,
    core_id: usize,
    metrics: Arc<DataflowMetrics>,
    core: RefCell<Core<Origin, Destination>>,
    src: SourceIo,
    dst: DestinationIo,
    /// The managed identity token source of a Kafka destination.
    kafka_tokens: Option<TokenSource>,
    /// The managed identity token source of a Kafka source.
    kafka_source_tokens: Option<TokenSource>,
    /// The Kafka loop has ended (after a stop), and the producer is gone.
    kafka_done: Cell<bool>,
    /// The Kafka source's loop has ended and its consumer is closed (offsets committed).
    kafka_source_done: Rc<Cell<bool>>,
    /// The Parquet loop has ended (no file is being written).
    parquet_done: Cell<bool>,
    /// The Kafka destination has been up once: a later "up" is a reconnection.
    kafka_was_up: Cell<bool>,
    /// The Kafka source has been up once.
    kafka_source_was_up: Cell<bool>,
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
        let route = Route::new(plan.route_settings().map_err(StartError::Route)?);
        let connection = |side, ep| {
            Connection::new(side, ep, Arc::clone(&key), core_id, Arc::clone(&metrics))
                .map(Rc::new)
                .map_err(|error| StartError::Connection { side, error })
        };
        let managed_identity = |auth: &KafkaAuth, side| match auth {
            KafkaAuth::ManagedIdentity {
                endpoint,
                resource,
                client_id,
            } => TokenSource::imds(endpoint, resource.clone(), client_id.clone())
                .map(Some)
                .map_err(|e| StartError::Connection {
                    side,
                    error: ConnectionError::Auth(e),
                }),
            _ => Ok(None),
        };
        let mut kafka_source_tokens = None;
        let (origin, src_io) = match &plan.source {
            SourcePlan::Mqtt(src_plan) => {
                let mut src_cfg = src_plan.endpoint.session_config(plan.client_id(
                    &src_plan.endpoint,
                    "src",
                    core_id,
                ));
                src_cfg.subscriptions = plan.subscriptions();
                src_cfg.unsubscribe_first = src_plan.previous_filters.clone();
                let src = Session::new(src_cfg, now).map_err(|error| StartError::Session {
                    side: Side::Source,
                    error,
                })?;
                let src_conn = connection(Side::Source, &src_plan.endpoint)?;
                (Origin::Mqtt(MqttSource::new(src)), SourceIo::Mqtt(src_conn))
            }
            SourcePlan::Kafka(src_plan) => {
                kafka_source_tokens = managed_identity(&src_plan.endpoint.auth, Side::Source)?;
                let mapping = RecordMapping {
                    copy_properties: src_plan.endpoint.settings.copy_mqtt_properties
                        == OperationalMode::Enabled,
                    cloud_events: matches!(&plan.sink, SinkPlan::Mqtt(dst) if dst.settings.cloud_event_attributes.is_some()),
                };
                let source = KafkaSource::new(
                    Arc::clone(src_plan),
                    plan.kafka_client_id("src", core_id),
                    format!("{key} core {core_id}"),
                    mapping,
                );
                (Origin::Kafka(source), SourceIo::Kafka)
            }
        };
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
                kafka_tokens = managed_identity(&dst_ep.auth, Side::Destination)?;
                let sink = KafkaSink::new(
                    Arc::clone(dst_ep),
                    plan.kafka_client_id("dst", core_id),
                    format!("{key} core {core_id}"),
                    RecordSettings::of(dst_ep, plan.instance_id.as_deref()),
                );
                (
                    Destination::Kafka(sink),
                    DestinationIo::Kafka(Notify::new()),
                )
            }
            SinkPlan::Local(dst_ep) => {
                // The source sends at most its window without acknowledgements: a file holds
                // half of it, so that the next one fills while one is written.
                let window = match &plan.source {
                    SourcePlan::Mqtt(src) => usize::from(src.endpoint.max_inflight().get()),
                    SourcePlan::Kafka(_) => usize::MAX,
                };
                let max_messages =
                    usize::try_from(dst_ep.batching.max_messages).unwrap_or(usize::MAX);
                let settings = StorageSettings {
                    folder: dst_ep.folder.clone(),
                    writer: crate::sinks::parquet::file::safe_writer_name(
                        &plan.kafka_client_id("dst", core_id),
                    ),
                    schema: dst_ep.schema.clone(),
                    meta: dst_ep
                        .meta
                        .iter()
                        .map(|c| match c {
                            MetadataColumn::Topic => Meta::Topic,
                            MetadataColumn::ReceivedTime => Meta::ReceivedTime,
                            MetadataColumn::UserProperties => Meta::UserProperties,
                        })
                        .collect(),
                    max_rows: max_messages.min((window / 2).max(1)),
                    max_bytes: usize::try_from(dst_ep.batching.max_bytes).unwrap_or(usize::MAX),
                    latency: Duration::from_secs(u64::from(dst_ep.batching.latency_seconds)),
                    dead_letter: dst_ep.dead_letter,
                    compression: match dst_ep.compression {
                        FileCompression::Zstd => Codec::Zstd,
                        FileCompression::Snappy => Codec::Snappy,
                        FileCompression::None => Codec::None,
                    },
                };
                if core_id == plan.cores.first().copied().unwrap_or(0) {
                    info!(
                        dataflow = %key,
                        endpoint = %dst_ep.name,
                        folder = %dst_ep.folder.display(),
                        schema = dst_ep.schema_ref.as_deref().unwrap_or("inferred from the messages"),
                        max_rows = settings.max_rows,
                        "LocalStorage destination"
                    );
                }
                let sink = ParquetSink::new(settings, fastrand::u32(..), now, SystemTime::now());
                (
                    Destination::Parquet(sink),
                    DestinationIo::Parquet(Notify::new()),
                )
            }
        };
        let core = Core::new(
            origin,
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
            src: src_io,
            dst: dst_io,
            kafka_tokens,
            kafka_source_tokens,
            kafka_done: Cell::new(false),
            kafka_source_done: Rc::new(Cell::new(false)),
            parquet_done: Cell::new(false),
            kafka_was_up: Cell::new(false),
            kafka_source_was_up: Cell::new(false),
            drop_logged: Cell::new(false),
            end_sessions: Cell::new(false),
            overruns_logged: Cell::new(0),
            stopped: Cell::new(false),
            processing: Cell::new(false),
            again: Cell::new(false),
        });
        info!(dataflow = %t.key, core = core_id, "starting");
        let owner: Rc<dyn Owner> = Rc::clone(&t) as Rc<dyn Owner>;
        match &t.src {
            SourceIo::Mqtt(src) => {
                monoio::spawn(Rc::clone(src).drive(Rc::clone(&owner)));
            }
            SourceIo::Kafka => {
                monoio::spawn(Rc::clone(&t).kafka_source_loop());
            }
        }
        match &t.dst {
            DestinationIo::Mqtt(dst) => {
                monoio::spawn(Rc::clone(dst).drive(owner));
            }
            DestinationIo::Kafka(_) => {
                monoio::spawn(Rc::clone(&t).kafka_sink_loop());
            }
            DestinationIo::Parquet(_) => {
                monoio::spawn(Rc::clone(&t).parquet_sink_loop());
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
        // A Parquet sink cuts its open file now: its loop takes it at once.
        if let DestinationIo::Parquet(wake) = &self.dst {
            wake.notify();
        }
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
            if let Origin::Mqtt(src) = core.source_mut() {
                let src = src.session_mut();
                if end {
                    src.disconnect_ending_session(now);
                } else {
                    src.disconnect(now);
                }
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
        // The writers flush the DISCONNECTs; then the readers are cancelled. The Kafka loops
        // see `stopped` and let the producer and the consumer go.
        if let SourceIo::Mqtt(src) = &self.src {
            src.stop();
        }
        if let DestinationIo::Mqtt(dst) = &self.dst {
            dst.stop();
        }
        if let DestinationIo::Kafka(wake) | DestinationIo::Parquet(wake) = &self.dst {
            wake.notify();
        }
        let flush_deadline = Instant::now() + Duration::from_secs(2);
        while !(self.src_done() && self.dst_done()) {
            if Instant::now() >= flush_deadline {
                if let SourceIo::Mqtt(src) = &self.src {
                    src.cancel_io();
                }
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

    fn src_done(&self) -> bool {
        match &self.src {
            SourceIo::Mqtt(src) => src.is_done(),
            SourceIo::Kafka => self.kafka_source_done.get(),
        }
    }

    fn dst_done(&self) -> bool {
        match &self.dst {
            DestinationIo::Mqtt(dst) => dst.is_done(),
            DestinationIo::Kafka(_) => self.kafka_done.get(),
            DestinationIo::Parquet(_) => self.parquet_done.get(),
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
        if let SourceIo::Mqtt(src) = &self.src
            && core.source().backlog_bytes() > 0
        {
            src.wake_writer();
        }
        match (&self.dst, core.sink()) {
            (DestinationIo::Mqtt(dst), sink) if sink.backlog_bytes() > 0 => dst.wake_writer(),
            (DestinationIo::Kafka(wake), Destination::Kafka(k)) if k.in_flight() > 0 => {
                wake.notify();
            }
            (DestinationIo::Parquet(wake), Destination::Parquet(p))
                if p.wants_loop(Instant::now()) =>
            {
                wake.notify();
            }
            _ => {}
        }
        if let SourceIo::Mqtt(src) = &self.src
            && !core.source().read_paused()
        {
            src.resume_reader();
        }
    }

    /// What the source session reported besides messages. Returns `false` (the sink did not
    /// change).
    fn source_notices(&self, core: &mut Core<Origin, Destination>) -> bool {
        let Origin::Mqtt(source) = core.source_mut() else {
            return false;
        };
        while let Some(ev) = source.poll_notice() {
            match ev {
                Event::Connected { session_present } => {
                    self.metrics.set_connected(Side::Source, true);
                    info!(dataflow = %self.key, core = self.core_id, session_present, "source connected");
                }
                Event::Subscribed { reason_codes } => {
                    let subs = &source.session().config().subscriptions;
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
                    if let SourceIo::Mqtt(src) = &self.src {
                        src.on_closed(&reason);
                    }
                }
                Event::Message { .. } | Event::Acked { .. } | Event::Refused { .. } => {}
            }
        }
        let overruns = source.session().receive_maximum_overruns();
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
    fn sink_notices(&self, core: &mut Core<Origin, Destination>) -> bool {
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
    fn log_events(&self, core: &mut Core<Origin, Destination>) {
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
            Side::Source => match c.source_mut() {
                Origin::Mqtt(source) => source.session_mut(),
                // Only an MQTT source has a connection that asks for its session.
                Origin::Kafka(_) => unreachable!("a Kafka source has no MQTT session"),
            },
            Side::Destination => match c.sink_mut() {
                Destination::Mqtt(sink) => sink.session_mut(),
                // Only an MQTT destination has a connection that asks for its session.
                Destination::Kafka(_) => unreachable!("a Kafka destination has no MQTT session"),
                Destination::Parquet(_) => {
                    unreachable!("a LocalStorage destination has no MQTT session")
                }
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
