//! The dataflow core: what is in flight between one [`Source`] and one [`Sink`], retries with
//! backoff, backpressure, drain, and acknowledgements. It does no I/O and reads no clock: the
//! task calls [`Core::process`] with `now` after every input it gave the source or the sink
//! (bytes read, a timeout, a connection change), and sleeps until [`Core::poll_timeout`].
//!
//! ```text
//!  source.poll_message ──> route ──> pending (FIFO) ──offer(ticket)──> sink
//!        ^                   │ drop: ack at once            │
//!        └──── ack ──────────┴───── held[ticket] <── poll_outcome: Delivered | Refused | Retry
//! ```
//!
//! - Every message is routed on arrival ([`Route`]); one that cannot be (an unresolvable topic,
//!   expired) is dropped and acknowledged. Routed messages are offered in arrival order: while
//!   any wait in `pending` (the sink was busy), later ones queue behind them.
//! - An accepted message is held by its [`Ticket`] until the sink reports its [`Outcome`], in
//!   any order; then the source is acknowledged (the MQTT source sends PUBACKs in receive order
//!   whatever order these come in).
//! - A refusal that may pass ([`Outcome::Retry`]) puts the message back at the front of
//!   `pending`, in ticket order, and nothing is offered until its backoff has passed:
//!   [`CoreSettings::retry_delay`] doubling per attempt of that message up to
//!   [`CoreSettings::retry_delay_max`]. A final refusal drops and acknowledges it.
//! - While a message waits in `pending` its Message Expiry Interval ages ([`Route::age`]).
//! - A source that holds what it has not yielded ([`Source::holds_upstream`], a Kafka consumer)
//!   is asked for messages only while nothing waits in `pending`: what the sink cannot take yet
//!   stays in the source's bounded buffer, not in the core's queue.
//! - Backpressure: the source is paused while `pending` holds [`CoreSettings::max_pending`]
//!   messages or the sink's unwritten bytes reach [`CoreSettings::max_backlog_bytes`], and for
//!   good once a drain started ([`Core::start_drain`]). A paused source keeps its connection
//!   alive (its own timers go on).
//! - Drained ([`Core::is_drained`]): nothing pending or held, every acknowledgement written.
//!
//! Memory: `pending` is bounded by `max_pending` plus what one read yields; `held` by the sink's
//! window. Each holds the message's slices (no copies) and a few words.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sluice_codec::ByteStr;

use crate::message::{DropReason, Message};
use crate::observe::metrics::DataflowMetrics;
use crate::sink::{Offer, Outcome, Sink, Ticket};
use crate::source::Source;
use crate::transform::route::Route;

/// Bounds and delays of a [`Core`]; [`Default`] gives the documented values.
#[derive(Debug, Clone)]
pub(crate) struct CoreSettings {
    /// Routed messages waiting for the sink before the source is paused. Default 4,096.
    pub(crate) max_pending: usize,
    /// The sink's unwritten bytes before the source is paused. Default 4 MiB.
    pub(crate) max_backlog_bytes: usize,
    /// First wait before a message the sink gave back is offered again. Default 1 s.
    pub(crate) retry_delay: Duration,
    /// Longest such wait (it doubles per attempt). Default 30 s.
    pub(crate) retry_delay_max: Duration,
}

impl Default for CoreSettings {
    fn default() -> Self {
        Self {
            max_pending: 4096,
            max_backlog_bytes: 4 << 20,
            retry_delay: Duration::from_secs(1),
            retry_delay_max: Duration::from_secs(30),
        }
    }
}

/// What the core reports for the task to log (everything is also counted in the metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CoreEvent {
    /// A message was dropped on purpose and acknowledged.
    Dropped {
        /// Why.
        reason: DropReason,
        /// Its topic (the source topic, or the destination topic once routed).
        topic: ByteStr,
    },
    /// The sink gave a message back; it is offered again after `delay`.
    Retrying {
        /// Messages given back so far on this core.
        total: u64,
        /// Times this message was given back.
        attempt: u32,
        /// The wait before it is offered again.
        delay: Duration,
    },
}

/// At most this many [`CoreEvent`]s wait for the task; further ones are only counted.
pub(crate) const MAX_EVENTS: usize = 64;

/// A message on its way: what acknowledges it at the source, and when it arrived.
#[derive(Debug)]
struct Held<A> {
    /// Arrival order on this core: pending keeps it, whatever comes back when.
    seq: u64,
    /// A message given back is not offered before then (its own backoff).
    not_before: Option<Instant>,
    ack: Option<A>,
    received: Instant,
    bytes: usize,
    /// Whole seconds already taken off the message's expiry while it waited.
    aged_secs: u64,
    /// Times the sink gave it back (a refusal that may pass).
    retries: u32,
}

/// What the sink holds, by ticket. Tickets are handed out in order and come back in any order,
/// so a ring indexed by `ticket - first` does what a hash map would without hashing or random
/// access: the front advances past every ticket that came back. Its length is the span from the
/// oldest ticket held to the newest, which the sink's window bounds (a ticket handed out while an
/// older one is held is one more message in the sink).
#[derive(Debug)]
struct Tickets<T> {
    /// The ticket of `slots[0]`.
    first: Ticket,
    slots: VecDeque<Option<T>>,
    /// Slots that hold something.
    len: usize,
}

impl<T> Tickets<T> {
    fn new() -> Self {
        Self {
            first: 0,
            slots: VecDeque::new(),
            len: 0,
        }
    }

    /// Holds `value` under `ticket`, which is newer than every ticket held (the core hands them
    /// out in order).
    fn insert(&mut self, ticket: Ticket, value: T) {
        if self.slots.is_empty() {
            self.first = ticket;
        }
        let Some(at) = ticket
            .checked_sub(self.first)
            .and_then(|d| usize::try_from(d).ok())
        else {
            debug_assert!(false, "ticket {ticket} older than the ring");
            return;
        };
        while self.slots.len() < at {
            self.slots.push_back(None);
        }
        if at < self.slots.len() {
            debug_assert!(self.slots[at].is_none(), "ticket {ticket} held twice");
            if self.slots[at].replace(value).is_none() {
                self.len += 1;
            }
        } else {
            self.slots.push_back(Some(value));
            self.len += 1;
        }
    }

    /// Takes what `ticket` holds.
    fn remove(&mut self, ticket: Ticket) -> Option<T> {
        let at = usize::try_from(ticket.checked_sub(self.first)?).ok()?;
        let value = self.slots.get_mut(at)?.take()?;
        self.len -= 1;
        while self.slots.front().is_some_and(Option::is_none) {
            self.slots.pop_front();
            self.first += 1;
        }
        Some(value)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One dataflow's core on one worker. See the module documentation.
#[derive(Debug)]
pub(crate) struct Core<S: Source, K: Sink> {
    source: S,
    sink: K,
    route: Route,
    settings: CoreSettings,
    metrics: Arc<DataflowMetrics>,
    /// Routed, waiting for the sink.
    pending: VecDeque<(Message, Held<S::Ack>)>,
    /// Accepted by the sink, by ticket.
    held: Tickets<Held<S::Ack>>,
    next_ticket: Ticket,
    /// The next arrival's [`Held::seq`].
    next_seq: u64,
    /// Messages given back so far.
    retries: u64,
    /// Messages held or pending that were given back at least once.
    retrying: usize,
    draining: bool,
    /// What the source was last told.
    paused: bool,
    events: VecDeque<CoreEvent>,
}

impl<S: Source, K: Sink> Core<S, K> {
    /// A core between `source` and `sink`, routing with `route`, counting into `metrics`.
    pub(crate) fn new(
        source: S,
        sink: K,
        route: Route,
        settings: CoreSettings,
        metrics: Arc<DataflowMetrics>,
    ) -> Self {
        Self {
            source,
            sink,
            route,
            settings,
            metrics,
            pending: VecDeque::new(),
            held: Tickets::new(),
            next_ticket: 0,
            next_seq: 0,
            retries: 0,
            retrying: 0,
            draining: false,
            paused: false,
            events: VecDeque::new(),
        }
    }

    /// The source.
    pub(crate) fn source(&self) -> &S {
        &self.source
    }

    /// The source, for its connection task.
    pub(crate) fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// The sink.
    pub(crate) fn sink(&self) -> &K {
        &self.sink
    }

    /// The sink, for its connection task.
    pub(crate) fn sink_mut(&mut self) -> &mut K {
        &mut self.sink
    }

    /// Messages received and not yet acknowledged to the source.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len() + self.held.len()
    }

    /// Whether the source is paused now.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused
    }

    /// The next event to log.
    pub(crate) fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    /// When [`Core::process`] must run again even if nothing else happens: when the message at
    /// the head of the queue, given back, may be offered again.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.pending.front().and_then(|(_, h)| h.not_before)
    }

    /// Reads nothing more from the source; what is in flight still completes.
    pub(crate) fn start_drain(&mut self, now: Instant) {
        self.draining = true;
        self.sink.flush(now);
        self.update_pause(now);
    }

    /// Everything received is acknowledged at the source, and nothing waits to be written.
    pub(crate) fn is_drained(&self) -> bool {
        self.pending.is_empty()
            && self.held.is_empty()
            && self.sink.backlog_bytes() == 0
            && self.source.unacked() == 0
            && self.source.backlog_bytes() == 0
    }

    /// Takes what the source and the sink have for it and moves messages on. Call after every
    /// input given to either; `wall` is the wall clock (for CloudEvents `time`).
    pub(crate) fn process(&mut self, now: Instant, wall: SystemTime) {
        self.take_outcomes(now, wall);
        self.drain_pending(now);
        let holds = self.source.holds_upstream();
        while !holds || self.pending.is_empty() {
            let Some((message, ack)) = self.source.poll_message(now) else {
                break;
            };
            self.on_message(message, ack, now, wall);
        }
        self.metrics.set_in_flight(self.in_flight());
        self.update_pause(now);
    }

    fn should_pause(&self) -> bool {
        self.draining
            || self.pending.len() >= self.settings.max_pending
            || self.sink.backlog_bytes() >= self.settings.max_backlog_bytes
    }

    fn update_pause(&mut self, now: Instant) {
        let pause = self.should_pause();
        if pause != self.paused {
            self.paused = pause;
            self.source.set_paused(pause, now);
        }
    }

    fn event(&mut self, event: CoreEvent) {
        if self.events.len() < MAX_EVENTS {
            self.events.push_back(event);
        }
    }

    /// Outcomes from the sink: acknowledge what ended, put back what is to be offered again.
    fn take_outcomes(&mut self, now: Instant, wall: SystemTime) {
        while let Some((ticket, outcome)) = self.sink.poll_outcome() {
            let Some(mut held) = self.held.remove(ticket) else {
                continue;
            };
            match outcome {
                Outcome::Delivered => self.complete(held, None, now),
                Outcome::Refused(reason) => {
                    self.dropped(reason, ByteStr::default());
                    self.complete(held, Some(reason), now);
                }
                Outcome::Retry(message) => {
                    if held.retries == 0 {
                        self.retrying += 1;
                        if self.retrying == 1 {
                            self.metrics.set_retrying_since(Some(wall));
                        }
                    }
                    self.metrics.on_retry();
                    held.retries += 1;
                    let delay = self
                        .settings
                        .retry_delay
                        .saturating_mul(1 << held.retries.saturating_sub(1).min(16))
                        .min(self.settings.retry_delay_max);
                    self.retries += 1;
                    self.event(CoreEvent::Retrying {
                        total: self.retries,
                        attempt: held.retries,
                        delay,
                    });
                    held.not_before = Some(now + delay);
                    // Back in arrival order: before everything that arrived after it, whenever
                    // it comes back.
                    let at = self.pending.partition_point(|(_, h)| h.seq < held.seq);
                    self.pending.insert(at, (message, held));
                }
            }
        }
    }

    fn on_message(
        &mut self,
        mut message: Message,
        ack: Option<S::Ack>,
        now: Instant,
        wall: SystemTime,
    ) {
        let bytes = message.payload.len();
        self.metrics.on_received(bytes);
        if let Err(reason) = self.route.route(&mut message, Duration::ZERO, wall) {
            self.dropped(reason, message.topic);
            if let Some(ack) = ack {
                self.source.ack(ack, now);
            }
            return;
        }
        let held = Held {
            seq: self.next_seq,
            not_before: None,
            ack,
            received: message.received,
            bytes,
            aged_secs: 0,
            retries: 0,
        };
        self.next_seq += 1;
        if self.pending.is_empty() {
            if let Some(back) = self.offer(message, held, now) {
                self.pending.push_back(back);
            }
        } else {
            self.pending.push_back((message, held));
        }
    }

    fn drain_pending(&mut self, now: Instant) {
        // The head waits for its backoff, and everything behind it waits too (order).
        while self
            .pending
            .front()
            .is_some_and(|(_, h)| h.not_before.is_none_or(|t| now >= t))
        {
            let Some((mut message, mut held)) = self.pending.pop_front() else {
                break;
            };
            // What waited here has less time to live at the destination (counted once per
            // whole second: a message offered again after a busy sink is not aged twice).
            let waited = now.saturating_duration_since(held.received).as_secs();
            let more = Duration::from_secs(waited.saturating_sub(held.aged_secs));
            held.aged_secs = waited;
            if let Err(reason) = Route::age(&mut message, more) {
                self.dropped(reason, message.topic);
                self.complete(held, Some(reason), now);
                continue;
            }
            if let Some(back) = self.offer(message, held, now) {
                self.pending.push_front(back);
                break;
            }
        }
    }

    /// Offers one message to the sink; gives it back when the sink is busy.
    fn offer(
        &mut self,
        message: Message,
        held: Held<S::Ack>,
        now: Instant,
    ) -> Option<(Message, Held<S::Ack>)> {
        // The sink checks its own readiness (`Offer::Busy` gives the message back).
        let ticket = self.next_ticket;
        match self.sink.offer(message, ticket, now) {
            Offer::Accepted => {
                self.next_ticket += 1;
                self.held.insert(ticket, held);
            }
            Offer::Done => self.complete(held, None, now),
            Offer::Busy(message) => return Some((message, held)),
            Offer::Dropped(reason) => {
                // The message is gone (no topic kept for the log: a copy per message would cost
                // on the hot path for a case that does not happen there).
                self.dropped(reason, ByteStr::default());
                self.complete(held, Some(reason), now);
            }
        }
        None
    }

    fn dropped(&mut self, reason: DropReason, topic: ByteStr) {
        self.metrics.on_dropped(reason);
        self.event(CoreEvent::Dropped { reason, topic });
    }

    /// The sink is done with a message (delivered, or dropped with a reason, already counted):
    /// acknowledge it at the source.
    fn complete(&mut self, held: Held<S::Ack>, dropped: Option<DropReason>, now: Instant) {
        if held.retries > 0 {
            self.retrying -= 1;
            if self.retrying == 0 {
                self.metrics.set_retrying_since(None);
            }
        }
        if dropped.is_none() {
            self.metrics.on_forwarded(held.bytes);
        }
        self.metrics
            .on_acked(now.saturating_duration_since(held.received));
        if let Some(ack) = held.ack {
            self.source.ack(ack, now);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The core between a fake source and a fake sink (or the real MQTT source session and a
    //! broker codec), stepped with a fake clock. Nothing sleeps.

    use std::num::NonZeroU16;
    use std::time::UNIX_EPOCH;

    use bytes::{Bytes, BytesMut};
    use sluice_codec::{
        ByteStr, Codec, Packet, PacketId, ProtocolVersion, Publish, PublishPropertyValues, QoS,
    };

    use super::*;
    use crate::mqtt::session::{SessionConfig, connected_to_test_broker};
    use crate::observe::metrics::{Registry, Totals};
    use crate::sources::mqtt::MqttSource;
    use crate::transform::route::RouteSettings;
    use crate::transform::template::TopicTemplate;

    #[test]
    fn tickets_come_back_in_any_order_and_the_ring_stays_short() {
        let mut t = Tickets::new();
        for ticket in 10..20 {
            t.insert(ticket, ticket * 2);
        }
        assert_eq!(t.len(), 10);
        assert_eq!(t.remove(15), Some(30));
        assert_eq!(t.remove(15), None, "once");
        assert_eq!(t.remove(9), None, "never held");
        assert_eq!(t.remove(25), None, "never held");
        assert_eq!(t.slots.len(), 10, "a hole in the middle stays");
        for ticket in [11, 10, 12] {
            assert_eq!(t.remove(ticket), Some(ticket * 2));
        }
        assert_eq!(t.first, 13, "the front advanced past what came back");
        assert_eq!(t.slots.len(), 7);
        for ticket in [19, 18, 17, 16, 14, 13] {
            assert_eq!(t.remove(ticket), Some(ticket * 2));
        }
        assert!(t.is_empty() && t.slots.is_empty());
        // Empty again: the next ticket starts the ring anew.
        t.insert(20, 40);
        assert_eq!((t.first, t.len()), (20, 1));
        assert_eq!(t.remove(20), Some(40));
    }

    /// A source fed by the test: messages with numbered acks; records acks and pauses.
    #[derive(Debug, Default)]
    struct FakeSource {
        inbox: VecDeque<(Message, Option<u32>)>,
        acked: Vec<u32>,
        paused: bool,
        /// Every change the core asked for, in order.
        pauses: Vec<bool>,
        unacked: usize,
    }

    impl Source for FakeSource {
        type Ack = u32;
        fn poll_message(&mut self, _now: Instant) -> Option<(Message, Option<u32>)> {
            if self.paused {
                return None; // a paused source reads nothing
            }
            let m = self.inbox.pop_front()?;
            if m.1.is_some() {
                self.unacked += 1;
            }
            Some(m)
        }
        fn ack(&mut self, ack: u32, _now: Instant) {
            self.unacked -= 1;
            self.acked.push(ack);
        }
        fn set_paused(&mut self, paused: bool, _now: Instant) {
            self.paused = paused;
            self.pauses.push(paused);
        }
        fn unacked(&self) -> usize {
            self.unacked
        }
        fn backlog_bytes(&self) -> usize {
            0
        }
    }

    /// A sink with a window: the test ends tickets with the outcome it wants.
    #[derive(Debug, Default)]
    struct FakeSink {
        window: usize,
        accepted: Vec<(Ticket, Message)>,
        outcomes: VecDeque<(Ticket, Outcome)>,
        backlog: usize,
    }

    impl FakeSink {
        fn end(&mut self, ticket: Ticket, outcome: Outcome) {
            let i = self
                .accepted
                .iter()
                .position(|(t, _)| *t == ticket)
                .expect("ticket in flight");
            self.accepted.remove(i);
            self.outcomes.push_back((ticket, outcome));
        }
        fn give_back(&mut self, ticket: Ticket) {
            let i = self
                .accepted
                .iter()
                .position(|(t, _)| *t == ticket)
                .expect("ticket in flight");
            let (_, m) = self.accepted.remove(i);
            self.outcomes.push_back((ticket, Outcome::Retry(m)));
        }
        fn tickets(&self) -> Vec<Ticket> {
            self.accepted.iter().map(|(t, _)| *t).collect()
        }
    }

    impl Sink for FakeSink {
        fn ready(&self) -> bool {
            self.accepted.len() < self.window
        }
        fn offer(&mut self, message: Message, ticket: Ticket, _now: Instant) -> Offer {
            if !self.ready() {
                return Offer::Busy(message);
            }
            self.accepted.push((ticket, message));
            Offer::Accepted
        }
        fn poll_outcome(&mut self) -> Option<(Ticket, Outcome)> {
            self.outcomes.pop_front()
        }
        fn backlog_bytes(&self) -> usize {
            self.backlog
        }
    }

    fn route(template: &str) -> Route {
        Route::new(RouteSettings {
            dataflow: "df".into(),
            topic: TopicTemplate::parse(template).expect("valid"),
            cloud_events: None,
            carry_properties: true,
        })
    }

    fn message(topic: &'static str, now: Instant) -> Message {
        Message {
            topic: ByteStr::from_static(topic),
            arrived_on: ByteStr::new(),
            payload: Bytes::from_static(b"payload"),
            properties: Default::default(),
            retain: false,
            received: now,
        }
    }

    /// One core, one clock.
    struct Harness<S: Source, K: Sink> {
        core: Core<S, K>,
        now: Instant,
        registry: Registry,
    }

    fn settings() -> CoreSettings {
        CoreSettings {
            max_pending: 4,
            max_backlog_bytes: 1000,
            ..CoreSettings::default()
        }
    }

    fn fake(window: usize, settings: CoreSettings) -> Harness<FakeSource, FakeSink> {
        let registry = Registry::new();
        let metrics = registry.register("df", 0);
        let sink = FakeSink {
            window,
            ..FakeSink::default()
        };
        let core = Core::new(
            FakeSource::default(),
            sink,
            route("out/${inputTopic}"),
            settings,
            metrics,
        );
        Harness {
            core,
            now: Instant::now(),
            registry,
        }
    }

    impl<S: Source, K: Sink> Harness<S, K> {
        fn step(&mut self) {
            self.core.process(self.now, UNIX_EPOCH);
        }
        fn advance(&mut self, d: Duration) {
            self.now += d;
            self.step();
        }
        /// Moves the clock to the core's next deadline, at most `bound` times, until `done`.
        fn drive_until(&mut self, bound: usize, done: impl Fn(&Core<S, K>) -> bool) {
            for _ in 0..bound {
                if done(&self.core) {
                    return;
                }
                let at = self.core.poll_timeout().expect("a deadline to wait for");
                self.now = self.now.max(at);
                self.step();
            }
            assert!(done(&self.core), "did not settle within {bound} steps");
        }
        fn totals(&self) -> Totals {
            self.registry.totals("df").expect("registered")
        }
    }

    impl Harness<FakeSource, FakeSink> {
        fn feed_ids(&mut self, ids: impl IntoIterator<Item = u32>) {
            for id in ids {
                let m = message("in", self.now);
                self.core.source_mut().inbox.push_back((m, Some(id)));
            }
        }
    }

    #[test]
    fn messages_flow_and_are_acknowledged_when_delivered() {
        let mut h = fake(10, settings());
        h.feed_ids([1, 2, 3]);
        h.step();
        assert_eq!(h.core.sink().tickets(), [0, 1, 2]);
        assert_eq!(h.core.sink().accepted[0].1.topic, "out/in", "routed");
        assert!(
            h.core.source().acked.is_empty(),
            "nothing acked before the sink has it"
        );
        for t in [0, 1, 2] {
            h.core.sink_mut().end(t, Outcome::Delivered);
        }
        h.step();
        assert_eq!(h.core.source().acked, [1, 2, 3]);
        assert!(h.core.is_drained());
        let t = h.totals();
        assert_eq!(
            (t.messages_received, t.messages_forwarded, t.acks()),
            (3, 3, 3)
        );
    }

    #[test]
    fn backpressure_stops_and_resumes_reads() {
        // The sink takes nothing: what one read gave waits, and past four the source is
        // paused; what it receives later stays with it.
        let mut h = fake(0, settings());
        h.feed_ids(1..=6);
        h.step();
        assert!(h.core.is_paused());
        assert_eq!(h.core.source().pauses, [true]);
        assert_eq!(h.core.in_flight(), 6);
        h.feed_ids(7..=10);
        h.step();
        assert_eq!(
            h.core.source().inbox.len(),
            4,
            "the rest stays with the source"
        );
        // Room again: what waited goes, then reading resumes.
        h.core.sink_mut().window = 100;
        h.step();
        assert!(!h.core.is_paused());
        assert_eq!(h.core.source().pauses, [true, false]);
        h.step();
        assert_eq!(
            h.core.sink().tickets().len(),
            10,
            "everything offered, in order"
        );
        assert_eq!(h.core.sink().tickets(), (0..10).collect::<Vec<_>>());
        // Unwritten sink bytes pause the source too.
        h.core.sink_mut().backlog = 1000;
        h.step();
        assert!(h.core.is_paused());
        h.core.sink_mut().backlog = 0;
        h.step();
        assert!(!h.core.is_paused());
    }

    #[test]
    fn a_message_given_back_is_offered_again_after_its_backoff_and_later_ones_wait() {
        let mut h = fake(10, settings());
        h.feed_ids([1, 2]);
        h.step();
        h.core.sink_mut().give_back(0);
        h.core.sink_mut().give_back(1);
        h.step();
        assert!(h.core.sink().tickets().is_empty());
        // Waiting since the wall clock of the step (the epoch here): long past the bound.
        let stalled = |h: &Harness<FakeSource, FakeSink>| {
            h.registry
                .not_ready_reasons()
                .iter()
                .any(|r| r.contains("the destination has not taken a message"))
        };
        assert!(stalled(&h), "{:?}", h.registry.not_ready_reasons());
        let event = h.core.poll_event();
        assert!(
            matches!(event, Some(CoreEvent::Retrying { attempt: 1, delay, .. }) if delay == Duration::from_secs(1)),
            "{event:?}"
        );
        // A later message waits behind them.
        h.feed_ids([3]);
        h.advance(Duration::from_millis(999));
        assert!(h.core.sink().tickets().is_empty(), "not before the backoff");
        assert_eq!(
            h.core.poll_timeout(),
            Some(h.now + Duration::from_millis(1))
        );
        h.drive_until(2, |c| !c.sink().tickets().is_empty());
        // Offered again in their first order, then the later one.
        let topics: Vec<u32> = h.core.sink().tickets().iter().map(|&t| t as u32).collect();
        assert_eq!(topics, [2, 3, 4]);
        assert!(h.core.source().acked.is_empty());
        // Given back again: the wait doubles for that message.
        h.core.sink_mut().give_back(2);
        h.step();
        let start = h.now;
        h.drive_until(3, |c| c.sink().tickets().len() == 3);
        assert_eq!(h.now - start, Duration::from_secs(2));
        for t in h.core.sink().tickets() {
            h.core.sink_mut().end(t, Outcome::Delivered);
        }
        h.step();
        let mut acked = h.core.source().acked.clone();
        acked.sort_unstable();
        assert_eq!(acked, [1, 2, 3]);
        assert_eq!(h.totals().retries, 3, "each give-back counted");
        assert!(!stalled(&h), "delivered: no longer stalled");
    }

    #[test]
    fn messages_given_back_at_different_times_keep_their_arrival_order() {
        let mut h = fake(10, settings());
        h.feed_ids([1, 2, 3]);
        h.step();
        assert_eq!(h.core.sink().tickets(), [0, 1, 2]);
        h.core.sink_mut().give_back(1); // message 2
        h.step();
        h.advance(Duration::from_millis(100));
        h.core.sink_mut().give_back(2); // message 3, given back later
        h.step();
        h.core.sink_mut().end(0, Outcome::Delivered);
        h.step();
        assert_eq!(h.core.source().acked, [1]);
        // Message 2 is offered first when its backoff has passed, then message 3 after its own.
        h.drive_until(3, |c| !c.sink().tickets().is_empty());
        h.drive_until(3, |c| c.sink().tickets().len() == 2);
        assert_eq!(h.core.sink().tickets(), [3, 4]);
        h.core.sink_mut().end(3, Outcome::Delivered);
        h.core.sink_mut().end(4, Outcome::Delivered);
        h.step();
        assert_eq!(h.core.source().acked, [1, 2, 3]);
    }

    #[test]
    fn each_message_waits_its_own_backoff() {
        let mut h = fake(10, settings());
        h.feed_ids([1, 2]);
        h.step();
        // Message 1 comes back three times (1 s, 2 s, 4 s), message 2 once (1 s).
        let start = h.now;
        h.core.sink_mut().give_back(0);
        h.core.sink_mut().give_back(1);
        h.step();
        h.drive_until(2, |c| c.sink().tickets().len() == 2);
        assert_eq!(h.now - start, Duration::from_secs(1));
        let t = h.core.sink().tickets();
        h.core.sink_mut().give_back(t[0]);
        h.step();
        let again = h.now;
        h.drive_until(2, |c| c.sink().tickets().len() == 2);
        assert_eq!(
            h.now - again,
            Duration::from_secs(2),
            "the second attempt waits 2 s"
        );
        assert_eq!(
            h.core.source().acked,
            Vec::<u32>::new(),
            "message 2 waited behind it"
        );
    }

    #[test]
    fn a_final_refusal_is_dropped_and_acknowledged() {
        let mut h = fake(10, settings());
        h.feed_ids([7, 8]);
        h.step();
        h.core
            .sink_mut()
            .end(1, Outcome::Refused(DropReason::DestinationRefused));
        h.step();
        assert_eq!(h.core.source().acked, [8]);
        assert!(matches!(
            h.core.poll_event(),
            Some(CoreEvent::Dropped {
                reason: DropReason::DestinationRefused,
                ..
            })
        ));
        let t = h.totals();
        assert_eq!(t.dropped_for(DropReason::DestinationRefused), 1);
        assert_eq!(t.messages_forwarded, 0);
    }

    #[test]
    fn an_unroutable_message_is_dropped_and_acknowledged_at_once() {
        let registry = Registry::new();
        let mut core = Core::new(
            FakeSource::default(),
            FakeSink {
                window: 10,
                ..FakeSink::default()
            },
            route("out/${inputTopic.3}"),
            settings(),
            registry.register("df", 0),
        );
        let now = Instant::now();
        core.source_mut()
            .inbox
            .push_back((message("a/b/c", now), Some(1)));
        core.source_mut()
            .inbox
            .push_back((message("a/b", now), Some(2)));
        core.process(now, UNIX_EPOCH);
        assert_eq!(core.source().acked, [2]);
        assert_eq!(core.sink().accepted.len(), 1);
        assert_eq!(
            core.poll_event(),
            Some(CoreEvent::Dropped {
                reason: DropReason::UnresolvedTopic,
                topic: ByteStr::from_static("a/b"),
            })
        );
    }

    #[test]
    fn expiry_ages_while_a_message_waits() {
        let mut h = fake(0, settings());
        let mut m = message("in", h.now);
        m.properties = PublishPropertyValues {
            message_expiry_interval_secs: Some(5),
            ..PublishPropertyValues::default()
        }
        .build()
        .expect("valid");
        let mut long = m.clone();
        long.properties = PublishPropertyValues {
            message_expiry_interval_secs: Some(60),
            ..PublishPropertyValues::default()
        }
        .build()
        .expect("valid");
        h.core.source_mut().inbox.push_back((m, Some(1)));
        h.core.source_mut().inbox.push_back((long, Some(2)));
        h.step();
        h.now += Duration::from_secs(6);
        h.core.sink_mut().window = 10;
        h.step();
        assert_eq!(h.core.source().acked, [1], "expired while waiting");
        let (_, sent) = &h.core.sink().accepted[0];
        assert_eq!(sent.properties.message_expiry_interval_secs(), Some(54));
        assert_eq!(h.totals().dropped_for(DropReason::Expired), 1);
    }

    #[test]
    fn a_drain_finishes_what_is_in_flight_and_reads_nothing_more() {
        let mut h = fake(10, settings());
        h.feed_ids([1, 2]);
        h.step();
        h.feed_ids([3]);
        h.core.start_drain(h.now);
        assert!(h.core.is_paused());
        h.step();
        assert_eq!(h.core.source().inbox.len(), 1, "nothing more is read");
        assert!(!h.core.is_drained());
        h.core.sink_mut().end(1, Outcome::Delivered);
        h.step();
        assert!(!h.core.is_drained(), "one still in flight");
        h.core.sink_mut().end(0, Outcome::Delivered);
        h.step();
        assert!(h.core.is_drained());
        assert_eq!(h.core.source().acked, [2, 1]);
    }

    #[test]
    fn events_are_bounded() {
        let registry = Registry::new();
        let mut core = Core::new(
            FakeSource::default(),
            FakeSink::default(),
            route("x/${inputTopic.9}"),
            CoreSettings::default(),
            registry.register("df", 0),
        );
        let now = Instant::now();
        for i in 0..200 {
            core.source_mut()
                .inbox
                .push_back((message("a", now), Some(i)));
        }
        core.process(now, UNIX_EPOCH);
        let mut n = 0;
        while core.poll_event().is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_EVENTS);
        assert_eq!(
            registry
                .totals("df")
                .expect("registered")
                .dropped_for(DropReason::UnresolvedTopic),
            200
        );
    }

    // ---- with the MQTT source session and a broker codec ----

    /// The source session, connected to `broker` (CONNACK read, SUBACK not asked for).
    fn mqtt_source(now: Instant, keep_alive_secs: u16) -> (MqttSource, Codec) {
        let mut config = SessionConfig::new(ProtocolVersion::V5, ByteStr::from_static("df-src-0"));
        config.keep_alive_secs = keep_alive_secs;
        config.receive_maximum = NonZeroU16::new(10).expect("non-zero");
        let (session, broker) = connected_to_test_broker(config, now);
        (MqttSource::new(session), broker)
    }

    /// Packets the source session wrote, as the broker reads them.
    fn written(core: &mut Core<MqttSource, FakeSink>, broker: &mut Codec) -> Vec<Packet> {
        let mut out = BytesMut::new();
        core.source_mut().session_mut().poll_transmit(&mut out);
        let mut got = Vec::new();
        while let Some(p) = broker.decode(&mut out).expect("decodes") {
            got.push(p);
        }
        got
    }

    fn publish_to(core: &mut Core<MqttSource, FakeSink>, broker: &Codec, id: u16, now: Instant) {
        let mut p = Publish::new(ByteStr::from_static("in/t"), Bytes::from_static(b"x"));
        p.qos = QoS::AtLeastOnce;
        p.packet_id = PacketId::new(id);
        let mut buf = BytesMut::new();
        broker
            .encode(&Packet::Publish(p), &mut buf)
            .expect("encode");
        core.source_mut().session_mut().handle_bytes(&mut buf, now);
    }

    fn puback_ids(packets: &[Packet]) -> Vec<u16> {
        packets
            .iter()
            .filter_map(|p| match p {
                Packet::PubAck(a) => Some(a.packet_id.get()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn pubacks_leave_in_receive_order_when_outcomes_arrive_out_of_order() {
        let now = Instant::now();
        let (source, mut broker) = mqtt_source(now, 60);
        let registry = Registry::new();
        let sink = FakeSink {
            window: 10,
            ..FakeSink::default()
        };
        let mut core = Core::new(
            source,
            sink,
            route("${inputTopic}"),
            settings(),
            registry.register("df", 0),
        );
        for id in [11, 12, 13] {
            publish_to(&mut core, &broker, id, now);
        }
        core.process(now, UNIX_EPOCH);
        let _ = written(&mut core, &mut broker);
        assert_eq!(core.sink().tickets(), [0, 1, 2]);
        core.sink_mut().end(2, Outcome::Delivered);
        core.process(now, UNIX_EPOCH);
        assert_eq!(
            puback_ids(&written(&mut core, &mut broker)),
            Vec::<u16>::new()
        );
        core.sink_mut().end(0, Outcome::Delivered);
        core.process(now, UNIX_EPOCH);
        assert_eq!(puback_ids(&written(&mut core, &mut broker)), [11]);
        core.sink_mut().end(1, Outcome::Delivered);
        core.process(now, UNIX_EPOCH);
        assert_eq!(puback_ids(&written(&mut core, &mut broker)), [12, 13]);
        assert!(core.is_drained());
    }

    #[test]
    fn a_paused_source_still_keeps_its_connection_alive() {
        let start = Instant::now();
        let (source, mut broker) = mqtt_source(start, 30);
        let registry = Registry::new();
        let sink = FakeSink::default(); // takes nothing
        let mut h = Harness {
            core: Core::new(
                source,
                sink,
                route("${inputTopic}"),
                settings(),
                registry.register("df", 0),
            ),
            now: start,
            registry,
        };
        for id in 1..=4 {
            publish_to(&mut h.core, &broker, id, h.now);
        }
        h.step();
        assert!(h.core.is_paused());
        assert!(h.core.source().read_paused());
        let _ = written(&mut h.core, &mut broker);
        // Three Keep Alive periods pass with no PINGRESP readable: a PINGREQ each time, and the
        // connection stays up (no verdict on a PINGRESP that cannot be read).
        for round in 1..=3 {
            h.now = start + Duration::from_secs(30 * round);
            h.core.source_mut().session_mut().handle_timeout(h.now);
            h.step();
            let sent = written(&mut h.core, &mut broker);
            assert!(
                sent.iter().any(|p| matches!(p, Packet::PingReq)),
                "round {round}: {sent:?}"
            );
            assert!(h.core.source().session().is_connected(), "round {round}");
        }
        assert!(h.core.source().read_paused());
        assert!(
            h.core
                .source_mut()
                .poll_notice()
                .is_some_and(|e| matches!(e, crate::mqtt::session::Event::Connected { .. }))
        );
        assert!(h.core.source_mut().poll_notice().is_none(), "no close");
    }
}
