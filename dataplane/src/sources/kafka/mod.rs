//! The Kafka source: one librdkafka `BaseConsumer` per dataflow and core, all in the endpoint's
//! consumer group (`consumerGroupId`), so that the topics' partitions spread over the cores and
//! over data planes (`--instance-id`); as a [`Source`].
//!
//! The source does no I/O of its own: the task's poll loop makes the consumer and calls
//! [`KafkaSource::service`] and the core's `process`, which takes records through
//! [`Source::poll_message`] (librdkafka's `poll(0)`, never blocking), at most
//! [`BATCH`] per round so that one busy consumer cannot hold the worker.
//!
//! # Records to messages
//!
//! The payload is copied once, into an arena (see Memory), with the properties that
//! [`record`] maps from the key, timestamp and headers; the topic is the Kafka topic (which the
//! destination topic template sees as `${inputTopic}`); RETAIN is never set.
//!
//! # Offsets (at least once)
//!
//! Each record carries a [`KafkaAck`]; [`offsets`] keeps a watermark per partition, and the
//! source stores (`store_offset`) only a watermark, before every round of polls, so that the
//! commits librdkafka makes (every `COMMIT_INTERVAL_MS`, on a rebalance and on close) never pass
//! a record the destination has not acknowledged. A revoked partition stops taking records at
//! once; what is in flight for it is finished by the destination but left uncommitted (the new
//! owner reads it again). kill -9 loses nothing; what is delivered twice is bounded by what was
//! in flight plus one commit interval.
//!
//! # Backpressure
//!
//! The core asks for records only while nothing waits for the sink ([`Source::holds_upstream`]):
//! what the MQTT destination cannot take yet stays in librdkafka's bounded prefetch. When the
//! core pauses the source (its drain), or has not asked for [`IDLE_PAUSE_AFTER`] (the
//! destination is down or slow), the consumer's assigned partitions are paused
//! (librdkafka's `pause`: it stops fetching and drops what it had fetched, to fetch it again on
//! `resume`). The consumer is still polled, for rebalances, errors and the group's liveness. A
//! partition is paused only once a record came from it since it was assigned (librdkafka loses
//! a partition paused while it still looks up its committed offset: the lookup's answer is
//! discarded and the partition never fetches again); until then its records are kept as they
//! come (at most [`MAX_STASH`] in all; past it the consumer is not polled until resumed), and
//! the partition is paused at its first.
//!
//! # Memory
//!
//! Payloads and property blocks are written into an arena of [`ARENA_CHUNK`] bytes and split off
//! it (`BytesMut::split`): no allocation per record; a chunk is freed when the last message in
//! it is dropped. librdkafka's prefetch is bounded (`kafka::config`).

pub(crate) mod offsets;
pub(crate) mod record;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{BorrowedMessage, Message as _, Timestamp};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_codec::ByteStr;
use tracing::debug;

use crate::config::plan::KafkaSourcePlan;
use crate::kafka::config::consumer_settings;
use crate::kafka::context::{Rebalance, SourceContext};
use crate::kafka::headers::for_each_header;
use crate::message::Message;
use crate::secrets::tokens::Token;
use crate::source::Source;

pub(crate) use offsets::KafkaAck;
use offsets::Offsets;
pub(crate) use record::RecordMapping;
use record::RecordMeta;

/// Most records taken from the consumer in one round (one `process` of the core).
pub(crate) const BATCH: usize = 1024;

/// Most records kept that came out of a paused consumer.
pub(crate) const MAX_STASH: usize = 1024;

/// The arena's chunk: a new one is allocated when the records of the last filled it.
pub(crate) const ARENA_CHUNK: usize = 128 * 1024;

/// How long the core may not ask for records (its queue for the sink is not empty) before the
/// partitions are paused in librdkafka, so that polling for the group's events takes no records.
pub(crate) const IDLE_PAUSE_AFTER: Duration = Duration::from_secs(1);

/// What happened to the consumer, for the task to log and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A broker connection is up (from librdkafka's statistics, or a record).
    Up,
    /// No broker connection is up.
    Down,
    /// A client error: all brokers down, authentication failed, a fatal error, a topic that
    /// does not exist.
    Error {
        /// librdkafka's code.
        code: RDKafkaErrorCode,
        /// librdkafka's text.
        reason: String,
    },
    /// The group gave this consumer partitions, or took them away.
    Rebalanced {
        /// Assigned (`true`) or revoked.
        assigned: bool,
        /// How many partitions.
        partitions: usize,
    },
    /// A rebalance failed.
    RebalanceFailed {
        /// librdkafka's text.
        reason: String,
    },
    /// Offset commits failed since the last notice.
    CommitFailed {
        /// How many.
        failures: u64,
        /// The last one's error.
        reason: String,
    },
    /// The consumer could not be made (a secret or certificate unreadable).
    CannotCreate {
        /// Why.
        reason: String,
    },
}

/// A Kafka source. See the module documentation.
pub(crate) struct KafkaSource {
    plan: Arc<KafkaSourcePlan>,
    client_id: String,
    label: String,
    mapping: RecordMapping,
    consumer: Option<BaseConsumer<SourceContext>>,
    offsets: Offsets,
    arena: BytesMut,
    /// Records that came out of a paused consumer, in order.
    stash: VecDeque<(Message, KafkaAck)>,
    /// The core asked for backpressure.
    paused: bool,
    /// When the core last asked for a record.
    asked_at: Option<Instant>,
    /// The partitions are paused in librdkafka (backpressure, or the core not asking for a
    /// while).
    lib_paused: bool,
    /// Records left to take in this round.
    budget: usize,
    /// The consumer must be replaced (fatal error, authentication failure).
    replace: bool,
    up: bool,
    token_wanted: bool,
    /// Headers left out since the task last took the count.
    headers_dropped: u64,
    notices: VecDeque<Notice>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("client_id", &self.client_id)
            .field("consumer", &self.consumer.is_some())
            .field("unacked", &self.offsets.unacked())
            .field("paused", &self.paused)
            .field("up", &self.up)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// A source for `plan`, with no consumer yet ([`KafkaSource::make_consumer`] makes it).
    /// `label` names it in log lines.
    pub(crate) fn new(
        plan: Arc<KafkaSourcePlan>,
        client_id: String,
        label: String,
        mapping: RecordMapping,
    ) -> Self {
        Self {
            plan,
            client_id,
            label,
            mapping,
            consumer: None,
            offsets: Offsets::new(),
            arena: BytesMut::new(),
            stash: VecDeque::new(),
            paused: false,
            asked_at: None,
            lib_paused: false,
            budget: 0,
            replace: false,
            up: false,
            token_wanted: false,
            headers_dropped: 0,
            notices: VecDeque::new(),
        }
    }

    /// Whether the consumer is to be (re)made (the poll loop does it).
    pub(crate) fn needs_new_consumer(&self) -> bool {
        self.consumer.is_none() || self.replace
    }

    /// Whether librdkafka asked for a token it did not have (the poll loop fetches one).
    pub(crate) fn take_token_wanted(&mut self) -> bool {
        std::mem::take(&mut self.token_wanted)
    }

    /// Headers left out since the last call.
    pub(crate) fn take_headers_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.headers_dropped)
    }

    /// Makes the consumer, reading the endpoint's secrets and certificates again, and subscribes
    /// to the topics; `token` is a managed identity's. The previous consumer, if any, must have
    /// been taken away ([`KafkaSource::take_consumer`]).
    ///
    /// # Errors
    /// A file that cannot be read, or librdkafka refusing the configuration or the topics.
    pub(crate) fn make_consumer(&mut self, token: Option<Token>) -> Result<(), String> {
        let name = &self.plan.endpoint.name;
        let settings = consumer_settings(&self.plan.endpoint, &self.client_id, &self.plan.group_id)
            .map_err(|e| format!("endpoint {name}: {e}"))?;
        let mut config = ClientConfig::new();
        for (k, v) in settings.pairs() {
            config.set(*k, v);
        }
        let context = SourceContext::new(self.label.clone());
        if let Some(t) = token {
            context.set_token(t);
        }
        let consumer: BaseConsumer<SourceContext> = config
            .create_with_context(context)
            .map_err(|e| format!("endpoint {name}: librdkafka refused the configuration: {e}"))?;
        let topics: Vec<&str> = self.plan.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| format!("endpoint {name}: cannot subscribe to {topics:?}: {e}"))?;
        self.consumer = Some(consumer);
        self.replace = false;
        self.up = false;
        self.lib_paused = false;
        Ok(())
    }

    /// Hands librdkafka a new managed identity token (it asks for one before the old expires).
    pub(crate) fn set_token(&self, token: Token) {
        if let Some(c) = &self.consumer {
            c.context().set_token(token);
        }
    }

    /// Takes the consumer away to be replaced or stopped, after storing the watermarks reached.
    /// What is in flight is forgotten (left uncommitted). The consumer is returned to be dropped
    /// off the event loop: dropping it commits what was stored, leaves the group and waits for
    /// librdkafka's threads.
    pub(crate) fn take_consumer(&mut self) -> Option<BaseConsumer<SourceContext>> {
        self.store_offsets();
        let consumer = self.consumer.take()?;
        self.offsets.revoke_all();
        self.stash.clear();
        Some(consumer)
    }

    /// Leaves the consumer group (a graceful stop): unsubscribes, so that the revocation is
    /// served by the next polls and librdkafka sends LeaveGroup (a static member does not on
    /// close). Returns `false` without a consumer.
    pub(crate) fn leave_group(&mut self) -> bool {
        self.store_offsets();
        match &self.consumer {
            Some(c) => {
                c.unsubscribe();
                true
            }
            None => false,
        }
    }

    /// Whether the consumer still has partitions assigned (librdkafka's view).
    pub(crate) fn has_assignment(&self) -> bool {
        self.consumer
            .as_ref()
            .and_then(|c| c.assignment().ok())
            .is_some_and(|a| a.count() > 0)
    }

    /// Polls once for the group's events only (what comes of records is kept, not delivered).
    pub(crate) fn serve_events(&mut self) {
        if self.stash.len() < MAX_STASH
            && let Some(record) = self.poll_one(Instant::now())
        {
            self.stash.push_back(record);
        }
        self.take_reports();
    }

    /// Starts a round: up to [`BATCH`] records may be taken until the next.
    pub(crate) fn begin_round(&mut self) {
        self.budget = BATCH;
    }

    /// Whether the last round took all it could (more records are likely waiting).
    pub(crate) fn round_was_full(&self) -> bool {
        self.budget == 0 && !self.lib_paused
    }

    /// Stores the watermarks reached, serves the consumer's events while it is paused (a paused
    /// source takes no records, so `poll_message` does not poll), and turns what the callbacks
    /// reported into [`Notice`]s.
    pub(crate) fn service(&mut self) {
        self.store_offsets();
        let now = Instant::now();
        let idle = self
            .asked_at
            .is_some_and(|at| now.saturating_duration_since(at) >= IDLE_PAUSE_AFTER);
        if idle && !self.lib_paused {
            self.lib_paused = true;
            self.apply_pause();
        }
        if self.lib_paused
            && self.stash.len() < MAX_STASH
            && let Some(record) = self.poll_one(now)
        {
            self.stash.push_back(record);
            // Its partition's first record since it was assigned: it may be paused now.
            self.apply_pause();
        }
        self.take_reports();
    }

    /// The next thing that happened to the consumer.
    pub(crate) fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// Reports that the consumer could not be made (for the task to log).
    pub(crate) fn cannot_create(&mut self, reason: String) {
        self.notices.push_back(Notice::CannotCreate { reason });
    }

    fn store_offsets(&mut self) {
        let Some(consumer) = &self.consumer else {
            return;
        };
        if !self.offsets.has_to_store() {
            return;
        }
        self.offsets.take_to_store(|topic, partition, offset| {
            // A partition revoked meanwhile is refused (not assigned): its new owner commits.
            let _ = consumer.store_offset(topic, partition, offset);
        });
    }

    /// One `poll(0)`: a record as a message, or `None` (nothing, or an event or error served).
    fn poll_one(&mut self, now: Instant) -> Option<(Message, KafkaAck)> {
        let consumer = self.consumer.as_ref()?;
        match consumer.poll(Duration::ZERO)? {
            Ok(m) => {
                // A rebalance served by this poll comes before its record.
                take_rebalances(consumer, &mut self.offsets, &mut self.notices);
                Some(Self::to_message(
                    &mut self.offsets,
                    &mut self.arena,
                    self.mapping,
                    &mut self.headers_dropped,
                    &m,
                    now,
                ))
            }
            Err(e) => {
                let code = e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Unknown);
                if code != RDKafkaErrorCode::PartitionEOF {
                    self.notices.push_back(Notice::Error {
                        code,
                        reason: e.to_string(),
                    });
                }
                None
            }
        }
    }

    fn to_message(
        offsets: &mut Offsets,
        arena: &mut BytesMut,
        mapping: RecordMapping,
        headers_dropped: &mut u64,
        m: &BorrowedMessage<'_>,
        now: Instant,
    ) -> (Message, KafkaAck) {
        let (slot, ack) = offsets.received(m.topic(), m.partition(), m.offset());
        let payload = m.payload().unwrap_or_default();
        if arena.capacity() < payload.len() {
            arena.reserve(payload.len().max(ARENA_CHUNK));
        }
        arena.extend_from_slice(payload);
        let payload = arena.split().freeze();
        if arena.capacity() < 1024 {
            arena.reserve(ARENA_CHUNK);
        }
        let meta = RecordMeta {
            key: m.key(),
            timestamp_ms: match m.timestamp() {
                Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => Some(ms),
                Timestamp::NotAvailable => None,
            },
        };
        let (properties, dropped) =
            record::properties(mapping, meta, arena, |f| for_each_header(m, f));
        *headers_dropped += u64::from(dropped);
        let message = Message {
            topic: offsets.topic(slot).clone(),
            arrived_on: ByteStr::new(),
            payload,
            properties,
            retain: false,
            received: now,
        };
        (message, ack)
    }

    fn take_rebalances(&mut self) {
        if let Some(consumer) = &self.consumer {
            take_rebalances(consumer, &mut self.offsets, &mut self.notices);
        }
    }

    fn take_reports(&mut self) {
        self.take_rebalances();
        let Some(consumer) = &self.consumer else {
            return;
        };
        let was_up = self.up;
        let mut reports = consumer.context().reports();
        for (code, reason) in reports.errors.drain(..) {
            match code {
                RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed => self.replace = true,
                RDKafkaErrorCode::AllBrokersDown => self.up = false,
                _ => {}
            }
            self.notices.push_back(Notice::Error { code, reason });
        }
        if reports.commit_failures > 0 {
            self.notices.push_back(Notice::CommitFailed {
                failures: std::mem::take(&mut reports.commit_failures),
                reason: reports.last_commit_error.take().unwrap_or_default(),
            });
        }
        self.token_wanted |= std::mem::take(&mut reports.token_wanted);
        if let Some(up) = reports.brokers_up.take() {
            self.up = up;
        }
        drop(reports);
        if self.up != was_up {
            self.notices
                .push_back(if self.up { Notice::Up } else { Notice::Down });
        }
    }

    /// Pauses (in librdkafka) the partitions that may be paused now, or resumes every one
    /// paused.
    fn apply_pause(&mut self) {
        let Some(consumer) = &self.consumer else {
            return;
        };
        let list = if self.lib_paused {
            self.offsets.mark_paused()
        } else {
            self.offsets.take_paused()
        };
        if list.is_empty() {
            return;
        }
        let list = tpl(list.iter().map(|(t, p)| (t.as_str(), *p)));
        let result = if self.lib_paused {
            consumer.pause(&list)
        } else {
            consumer.resume(&list)
        };
        if let Err(e) = result {
            debug!(client = %self.client_id, paused = self.lib_paused, error = %e, "Kafka partitions not paused or resumed");
        }
    }
}

/// Applies the rebalances the consumer's callbacks reported to the watermarks, pausing partitions assigned while `paused`.
fn take_rebalances(
    consumer: &BaseConsumer<SourceContext>,
    offsets: &mut Offsets,
    notices: &mut VecDeque<Notice>,
) {
    let rebalances = std::mem::take(&mut consumer.context().reports().rebalances);
    for r in rebalances {
        match r {
            Rebalance::Assigned(list) => {
                for (topic, partition) in &list {
                    offsets.assign(topic, *partition);
                }
                // Partitions assigned while paused are paused at their first record (see
                // `Offsets::mark_paused`).
                notices.push_back(Notice::Rebalanced {
                    assigned: true,
                    partitions: list.len(),
                });
            }
            Rebalance::Revoked(list) => {
                for (topic, partition) in &list {
                    offsets.revoke(topic, *partition);
                }
                // What the stash holds of them is still delivered; its acknowledgement is
                // ignored (the new owner reads it again).
                notices.push_back(Notice::Rebalanced {
                    assigned: false,
                    partitions: list.len(),
                });
            }
            Rebalance::Failed(reason) => notices.push_back(Notice::RebalanceFailed { reason }),
        }
    }
}

/// A partition list of `(topic, partition)`s.
fn tpl<'a>(partitions: impl Iterator<Item = (&'a str, i32)>) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        let _ = list.add_partition_offset(topic, partition, Offset::Invalid);
    }
    list
}

impl Source for KafkaSource {
    type Ack = KafkaAck;

    fn poll_message(&mut self, now: Instant) -> Option<(Message, Option<KafkaAck>)> {
        self.asked_at = Some(now);
        if let Some((message, ack)) = self.stash.pop_front() {
            return Some((message, Some(ack)));
        }
        if self.paused || self.budget == 0 {
            return None;
        }
        if self.lib_paused {
            // Paused because the core had not asked for a while: it asks again.
            self.lib_paused = false;
            self.apply_pause();
        }
        if self.budget == BATCH {
            // Before the first poll of a round: librdkafka commits on a rebalance what was
            // stored, and a rebalance is served inside a poll.
            self.store_offsets();
        }
        let (message, ack) = self.poll_one(now)?;
        self.budget -= 1;
        if !self.up {
            self.up = true;
            self.notices.push_back(Notice::Up);
        }
        Some((message, Some(ack)))
    }

    fn ack(&mut self, ack: KafkaAck, _now: Instant) {
        self.offsets.ack(ack);
    }

    fn set_paused(&mut self, paused: bool, now: Instant) {
        if self.paused != paused {
            self.paused = paused;
            if paused && !self.lib_paused {
                self.lib_paused = true;
                self.apply_pause();
            } else if !paused {
                // Resumed at the next ask (`poll_message`), which comes now.
                self.asked_at = Some(now);
            }
        }
    }

    fn unacked(&self) -> usize {
        self.offsets.unacked()
    }

    fn backlog_bytes(&self) -> usize {
        0
    }

    fn holds_upstream(&self) -> bool {
        true
    }
}
