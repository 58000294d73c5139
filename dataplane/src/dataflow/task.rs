//! One dataflow on one worker: builds its source and sink from the plan, runs them with the
//! dataflow [`Core`] between them on the worker's event loop, and turns what they report into
//! logs and metrics. The only place that names concrete sources and sinks.
//!
//! ```text
//!  source Connection ─bytes─> MqttSource ─Message─> Core ─Message─> MqttSink ─bytes─> Connection
//!        ^                        ^                  │                  │
//!        └── PUBACK (in order) ───┴──── ack <────────┴──── Outcome <────┘
//! ```
//!
//! Each side's [`Connection`] calls [`Owner::process`] after every input; that runs the core
//! and wakes the writers that have bytes and a reader that may read again.

use std::cell::{Cell, RefCell, RefMut};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use super::core::{Core, CoreEvent, CoreSettings};
use crate::config::plan::{DataflowPlan, SinkPlan, SourcePlan};
use crate::message::Side;
use crate::mqtt::connection::{Connection, ConnectionError, Owner};
use sluice_codec::DecodeError;

use crate::mqtt::session::{CloseReason, ConfigError, Event, Session};
use crate::observe::logs::Escaped;
use crate::observe::metrics::DataflowMetrics;
use crate::sink::Sink;
use crate::sinks::mqtt::{MqttSink, Notice, PublishSettings};
use crate::source::Source;
use crate::sources::mqtt::MqttSource;
use crate::transform::route::Route;

/// How often the task's timer looks at the core when it has no deadline.
const IDLE_TICK: Duration = Duration::from_millis(500);

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

/// A running dataflow on one core. See the module documentation.
#[derive(Debug)]
pub(crate) struct Task {
    key: Arc<str>,
    core_id: usize,
    metrics: Arc<DataflowMetrics>,
    core: RefCell<Core<MqttSource, MqttSink>>,
    src: Rc<Connection>,
    dst: Rc<Connection>,
    /// A drop was logged at warn level.
    drop_logged: Cell<bool>,
    /// A later Stop asked for this task's broker sessions to end (it was removed while it
    /// drained for a restart).
    end_sessions: Cell<bool>,
    /// Receive Maximum overruns of the source already logged.
    overruns_logged: Cell<u64>,
    /// Stopped: the timer ends.
    stopped: Cell<bool>,
    /// Nested `process` calls are folded into the outer one.
    processing: Cell<bool>,
    again: Cell<bool>,
}

impl Task {
    /// Starts the dataflow's source and destination connections on the current core's event
    /// loop (spawns their tasks).
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
        let SinkPlan::Mqtt(dst_ep) = &plan.sink;
        let mut src_cfg =
            src_plan
                .endpoint
                .session_config(plan.client_id(&src_plan.endpoint, "src", core_id));
        src_cfg.subscriptions = plan.subscriptions();
        src_cfg.unsubscribe_first = src_plan.previous_filters.clone();
        let dst_cfg = dst_ep.session_config(plan.client_id(dst_ep, "dst", core_id));
        let src = Session::new(src_cfg, now).map_err(|error| StartError::Session {
            side: Side::Source,
            error,
        })?;
        let dst = Session::new(dst_cfg, now).map_err(|error| StartError::Session {
            side: Side::Destination,
            error,
        })?;
        let route = Route::new(plan.route_settings().map_err(StartError::Route)?);
        let sink = MqttSink::new(
            dst,
            PublishSettings {
                qos: dst_ep.qos(),
                retain: dst_ep.settings.retain,
            },
        );
        let connection = |side, ep| {
            Connection::new(side, ep, Arc::clone(&key), core_id, Arc::clone(&metrics))
                .map(Rc::new)
                .map_err(|error| StartError::Connection { side, error })
        };
        let src_conn = connection(Side::Source, &src_plan.endpoint)?;
        let dst_conn = connection(Side::Destination, dst_ep)?;
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
            dst: dst_conn,
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
        monoio::spawn(Rc::clone(&t.dst).drive(owner));
        monoio::spawn(Rc::clone(&t).timer());
        Ok(t)
    }

    /// Drains, then stops: reads nothing more from the source, waits (at most `timeout`) until
    /// every message already received is acknowledged at the destination and its PUBACK sent,
    /// then disconnects both sessions. What is still unacknowledged after the timeout is left to
    /// the source broker, which delivers it again (persistent session). With `end_sessions`
    /// (a removed dataflow, not a restart) both 5.0 sessions are ended on the brokers too.
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
            if (end_sessions || self.end_sessions.get()) && drained {
                core.source_mut()
                    .session_mut()
                    .disconnect_ending_session(now);
                core.sink_mut().session_mut().disconnect_ending_session(now);
            } else {
                core.source_mut().session_mut().disconnect(now);
                core.sink_mut().session_mut().disconnect(now);
            }
        }
        self.process();
        self.stopped.set(true);
        // The writers flush the DISCONNECTs; then the readers are cancelled.
        self.src.stop();
        self.dst.stop();
        let flush_deadline = Instant::now() + Duration::from_secs(2);
        while !(self.src.is_done() && self.dst.is_done()) {
            if Instant::now() >= flush_deadline {
                self.src.cancel_io();
                self.dst.cancel_io();
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
        if core.source().backlog_bytes() > 0 {
            self.src.wake_writer();
        }
        if core.sink().backlog_bytes() > 0 {
            self.dst.wake_writer();
        }
        if !core.source().read_paused() {
            self.src.resume_reader();
        }
    }

    /// What the source session reported besides messages. Returns `false` (the sink did not
    /// change).
    fn source_notices(&self, core: &mut Core<MqttSource, MqttSink>) -> bool {
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

    /// What the sink reported about its connection. Returns whether it connected (the core
    /// may offer what waits).
    fn sink_notices(&self, core: &mut Core<MqttSource, MqttSink>) -> bool {
        let mut connected = false;
        while let Some(notice) = core.sink_mut().poll_notice() {
            match notice {
                Notice::Connected { session_present } => {
                    let maximum = core.sink().session().maximum_qos();
                    if maximum < core.sink().qos() {
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
                    self.dst.on_closed(&reason);
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
    fn log_events(&self, core: &mut Core<MqttSource, MqttSink>) {
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
            Side::Destination => c.sink_mut().session_mut(),
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
