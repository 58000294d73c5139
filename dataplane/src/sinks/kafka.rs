//! The Kafka destination: one librdkafka `BaseProducer` per dataflow and core, as a [`Sink`].
//! One ticket per record, ended by its delivery report: Kafka has it (with the endpoint's
//! `kafkaAcks`), or the error's class ([`crate::kafka::errors`]) decides: given back to be
//! offered again after the core's backoff, or dropped with its reason.
//!
//! The sink does no I/O in the [`Sink`] calls: `offer` hands the record to librdkafka's queue
//! (which copies payload, key and headers into its batch: the one copy of the design), and the
//! task's poll loop calls [`KafkaSink::poll`], which runs librdkafka's callbacks without
//! blocking (`poll(0)`) and turns their reports into outcomes.
//!
//! # The record
//!
//! - Topic: the routed destination topic.
//! - Key, by `partitionStrategy`: `Default` none (librdkafka spreads keyless records over
//!   partitions); `Static` the instance's name (`--instance-id`, else `0`), so every record of an
//!   instance hashes to one fixed partition; `Topic` the MQTT topic the message arrived on;
//!   `Property` the value of the User Property named by `partitionKeyProperty` (none when the
//!   message lacks it).
//! - Headers with `copyMqttProperties: Enabled` (AIO's mapping): `Payload Format Indicator`
//!   (`0`/`1`), `Response Topic`, `Correlation Data` (bytes unchanged), `Content Type`,
//!   `Message Expiry Interval` (seconds left, after the time held), then each User Property as a
//!   header of the same name, in order, repeated names kept. Topic Alias and Subscription
//!   Identifiers never.
//! - CloudEvents (`cloudEventAttributes`), the Kafka protocol binding's binary mode: the
//!   attributes the route created or kept as User Properties (`specversion`, `type`, `source`,
//!   `id`, `subject`, `time`, `dataschema`) become `ce_<name>` headers (and not plain ones), and
//!   the Content Type becomes `content-type`.
//!
//! # Memory
//!
//! Each record in flight keeps its [`Message`] (slices of the source's read buffer, no copy) in
//! a slot until its report, so that one given back can be offered again as it was. Slots are
//! reused; their number is bounded by the window, which also bounds librdkafka's queue
//! (`queue.buffering.max.messages`; its bytes are bounded too, see [`crate::kafka::config`]).
//! A send refused with "queue full" makes the sink not ready until a report frees room.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use sluice_codec::PayloadFormat;
use sluice_config_agent::model::{OperationalMode, PartitionStrategy};

use crate::config::kafka_endpoint::KafkaEndpointPlan;
use crate::kafka::config::producer_settings;
use crate::kafka::context::SinkContext;
use crate::kafka::errors::{ErrorClass, classify};
use crate::message::{DropReason, Message};
use crate::secrets::tokens::Token;
use crate::sink::{Offer, Outcome, Sink, Ticket};

/// Records in flight per producer, and the bound of librdkafka's queue.
pub(crate) const WINDOW: usize = 65_536;

/// How many times one [`KafkaSink::poll`] asks librdkafka for an event (each may carry many
/// delivery reports).
const POLLS_PER_CALL: usize = 64;

/// The CloudEvents attributes that the Kafka binding writes as `ce_` headers.
const CE_ATTRIBUTES: [&str; 7] = [
    "specversion",
    "type",
    "source",
    "id",
    "subject",
    "time",
    "dataschema",
];

/// How messages become records: the endpoint's settings that act per record.
#[derive(Debug, Clone)]
pub(crate) struct RecordSettings {
    /// `partitionStrategy`.
    pub(crate) strategy: PartitionStrategy,
    /// `partitionKeyProperty`.
    pub(crate) key_property: Option<String>,
    /// The key of `Static`: this instance's name.
    pub(crate) static_key: Bytes,
    /// `copyMqttProperties`.
    pub(crate) copy_properties: bool,
    /// `cloudEventAttributes` is set.
    pub(crate) cloud_events: bool,
}

impl RecordSettings {
    /// The settings of `plan`, for the instance `instance_id`.
    pub(crate) fn of(plan: &KafkaEndpointPlan, instance_id: Option<&str>) -> Self {
        let s = &plan.settings;
        Self {
            strategy: s.partition_strategy,
            key_property: s.partition_key_property.clone(),
            static_key: Bytes::copy_from_slice(instance_id.unwrap_or("0").as_bytes()),
            copy_properties: s.copy_mqtt_properties == OperationalMode::Enabled,
            cloud_events: s.cloud_event_attributes.is_some(),
        }
    }

    /// The record key of `message`.
    pub(crate) fn key<'a>(&'a self, message: &'a Message) -> Option<&'a [u8]> {
        match self.strategy {
            PartitionStrategy::Default => None,
            PartitionStrategy::Static => Some(&self.static_key),
            PartitionStrategy::Topic => Some(message.source_topic().as_str().as_bytes()),
            PartitionStrategy::Property => {
                let name = self.key_property.as_deref()?;
                message
                    .properties
                    .view()
                    .user_properties()
                    .pairs()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.as_bytes())
            }
        }
    }

    /// Calls `header` with each header of `message`, in order.
    pub(crate) fn headers(&self, message: &Message, mut header: impl FnMut(&str, &[u8])) {
        let p = message.properties.view();
        if p.is_empty() {
            return;
        }
        let mut digits = itoa_buf();
        if self.copy_properties {
            if let Some(f) = p.payload_format_indicator() {
                let v: &[u8] = match f {
                    PayloadFormat::Unspecified => b"0",
                    PayloadFormat::Utf8 => b"1",
                };
                header("Payload Format Indicator", v);
            }
            if let Some(t) = p.response_topic() {
                header("Response Topic", t.as_bytes());
            }
            if let Some(c) = p.correlation_data() {
                header("Correlation Data", c);
            }
            if let Some(c) = p.content_type() {
                header("Content Type", c.as_bytes());
            }
            if let Some(secs) = p.message_expiry_interval_secs() {
                header("Message Expiry Interval", decimal(&mut digits, secs));
            }
        }
        if self.cloud_events
            && let Some(c) = p.content_type()
        {
            header("content-type", c.as_bytes());
        }
        let mut ce_name = String::new();
        for (k, v) in p.user_properties().iter() {
            if self.cloud_events && CE_ATTRIBUTES.contains(&k) {
                ce_name.clear();
                ce_name.push_str("ce_");
                ce_name.push_str(k);
                header(&ce_name, v.as_bytes());
            } else if self.copy_properties {
                header(k, v.as_bytes());
            }
        }
    }
}

fn itoa_buf() -> [u8; 10] {
    [0; 10]
}

/// `n` in decimal, written into `buf`.
fn decimal(buf: &mut [u8; 10], mut n: u32) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// What happened to the producer, for the task to log and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A broker connection is up (from librdkafka's statistics, or a delivery).
    Up,
    /// No broker connection is up.
    Down,
    /// A client error: all brokers down, authentication failed, a fatal error.
    Error {
        /// librdkafka's code.
        code: RDKafkaErrorCode,
        /// librdkafka's text.
        reason: String,
    },
    /// Records fail with this code (reported when the code changes, not per record; a delivery
    /// in between resets it).
    RecordError {
        /// librdkafka's code.
        code: RDKafkaErrorCode,
        /// What the sink does with such records.
        class: ErrorClass,
    },
    /// The producer could not be made (a secret or certificate unreadable).
    CannotCreate {
        /// Why.
        reason: String,
    },
}

enum Slot {
    Free,
    Held(Ticket, Message),
}

/// A Kafka destination. See the module documentation.
pub(crate) struct KafkaSink {
    plan: Arc<KafkaEndpointPlan>,
    client_id: String,
    label: String,
    record: RecordSettings,
    producer: Option<BaseProducer<SinkContext>>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    in_flight: usize,
    /// A send was refused with "queue full"; cleared by the next report.
    full: bool,
    /// The producer must be replaced (fatal error, authentication failure).
    replace: bool,
    /// A delivery succeeded since the producer was made or reported down.
    up: bool,
    /// librdkafka asked for a token.
    token_wanted: bool,
    /// The last record error reported as a notice (cleared by a delivery).
    last_record_error: Option<RDKafkaErrorCode>,
    outcomes: VecDeque<(Ticket, Outcome)>,
    notices: VecDeque<Notice>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("client_id", &self.client_id)
            .field("producer", &self.producer.is_some())
            .field("in_flight", &self.in_flight)
            .field("full", &self.full)
            .field("up", &self.up)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// A sink for `plan`, with no producer yet ([`KafkaSink::make_producer`] makes it).
    /// `label` names it in log lines.
    pub(crate) fn new(
        plan: Arc<KafkaEndpointPlan>,
        client_id: String,
        label: String,
        record: RecordSettings,
    ) -> Self {
        Self {
            plan,
            client_id,
            label,
            record,
            producer: None,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            full: false,
            replace: false,
            up: false,
            token_wanted: false,
            last_record_error: None,
            outcomes: VecDeque::new(),
            notices: VecDeque::new(),
        }
    }

    /// Whether there is a producer that is not to be replaced.
    pub(crate) fn has_producer(&self) -> bool {
        self.producer.is_some() && !self.replace
    }

    /// Whether the producer is to be replaced (the poll loop does it).
    pub(crate) fn needs_new_producer(&self) -> bool {
        self.producer.is_none() || self.replace
    }

    /// Whether librdkafka asked for a token it did not have (the poll loop fetches one).
    pub(crate) fn take_token_wanted(&mut self) -> bool {
        std::mem::take(&mut self.token_wanted)
    }

    /// Records handed to librdkafka and not yet reported.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Makes the producer, reading the endpoint's secrets and certificates again; `token` is a
    /// managed identity's. The previous producer, if any, must have been taken away
    /// ([`KafkaSink::take_producer`]).
    ///
    /// # Errors
    /// A file that cannot be read, or librdkafka refusing the configuration.
    pub(crate) fn make_producer(&mut self, token: Option<Token>) -> Result<(), String> {
        let settings = producer_settings(&self.plan, &self.client_id, Some(WINDOW as u32))
            .map_err(|e| format!("endpoint {}: {e}", self.plan.name))?;
        let mut config = ClientConfig::new();
        for (k, v) in settings.pairs() {
            config.set(*k, v);
        }
        let context = SinkContext::new(self.label.clone());
        if let Some(t) = token {
            context.set_token(t);
        }
        let producer: BaseProducer<SinkContext> =
            config.create_with_context(context).map_err(|e| {
                format!(
                    "endpoint {}: librdkafka refused the configuration: {e}",
                    self.plan.name
                )
            })?;
        self.producer = Some(producer);
        self.replace = false;
        self.up = false;
        self.full = false;
        Ok(())
    }

    /// Hands librdkafka a new managed identity token (it asks for one before the old expires).
    pub(crate) fn set_token(&self, token: Token) {
        if let Some(p) = &self.producer {
            p.context().set_token(token);
        }
    }

    /// Takes the producer away to be replaced or stopped: what it still holds is purged, and
    /// every record in flight is given back to the core (offered again later, or left
    /// unacknowledged at the source when the dataflow stops). The producer is returned to be
    /// dropped off the event loop (dropping it waits for librdkafka's threads).
    pub(crate) fn take_producer(&mut self) -> Option<BaseProducer<SinkContext>> {
        let producer = self.producer.take()?;
        producer.purge(PurgeConfig::default().queue().inflight());
        // The purge's reports, and any others ready.
        for _ in 0..POLLS_PER_CALL {
            producer.poll(Duration::ZERO);
        }
        self.take_reports(&producer);
        for slot in 0..self.slots.len() {
            if let Slot::Held(ticket, message) =
                std::mem::replace(&mut self.slots[slot], Slot::Free)
            {
                self.free.push(slot);
                self.in_flight -= 1;
                self.outcomes.push_back((ticket, Outcome::Retry(message)));
            }
        }
        self.full = false;
        Some(producer)
    }

    /// Runs librdkafka's callbacks (without blocking) and turns delivery reports into outcomes
    /// and client errors into [`Notice`]s.
    pub(crate) fn poll(&mut self) {
        let Some(producer) = self.producer.take() else {
            return;
        };
        for _ in 0..POLLS_PER_CALL {
            let before = producer.context().reports().delivered.len();
            producer.poll(Duration::ZERO);
            if producer.context().reports().delivered.len() == before {
                break;
            }
        }
        self.take_reports(&producer);
        self.producer = Some(producer);
    }

    fn take_reports(&mut self, producer: &BaseProducer<SinkContext>) {
        // One Up or Down notice per call at most, for the state it ends in: an error queued
        // before the statistics that follow it must not make the destination flap.
        let was_up = self.up;
        let mut reports = producer.context().reports();
        if !reports.delivered.is_empty() {
            self.full = false;
        }
        for (slot, error) in reports.delivered.drain(..) {
            let Some(Slot::Held(ticket, message)) = self
                .slots
                .get_mut(slot)
                .map(|s| std::mem::replace(s, Slot::Free))
            else {
                continue;
            };
            self.free.push(slot);
            self.in_flight -= 1;
            if let Some(code) = error {
                self.record_error(code);
            } else {
                self.last_record_error = None;
            }
            let outcome = match error.map(classify) {
                None => {
                    self.up = true;
                    Outcome::Delivered
                }
                Some(ErrorClass::Final(reason)) => Outcome::Refused(reason),
                Some(ErrorClass::Fatal) => {
                    self.replace = true;
                    Outcome::Retry(message)
                }
                Some(ErrorClass::Retry | ErrorClass::Backpressure) => Outcome::Retry(message),
            };
            self.outcomes.push_back((ticket, outcome));
        }
        for (code, reason) in reports.errors.drain(..) {
            match code {
                RDKafkaErrorCode::Fatal => self.replace = true,
                RDKafkaErrorCode::AllBrokersDown => self.up = false,
                RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
                    // A rotated secret is read again by a new producer.
                    self.replace = true;
                }
                _ => {}
            }
            self.notices.push_back(Notice::Error { code, reason });
        }
        self.token_wanted |= std::mem::take(&mut reports.token_wanted);
        if let Some(up) = reports.brokers_up.take() {
            self.up = up;
        }
        if self.up != was_up {
            self.notices
                .push_back(if self.up { Notice::Up } else { Notice::Down });
        }
    }

    fn record_error(&mut self, code: RDKafkaErrorCode) {
        if self.last_record_error != Some(code) {
            self.last_record_error = Some(code);
            self.notices.push_back(Notice::RecordError {
                code,
                class: classify(code),
            });
        }
    }

    /// The next thing that happened to the producer.
    pub(crate) fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// Reports that the producer could not be made (for the task to log).
    pub(crate) fn cannot_create(&mut self, reason: String) {
        self.notices.push_back(Notice::CannotCreate { reason });
    }

    fn hold(&mut self, ticket: Ticket, message: Message) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Slot::Held(ticket, message);
                slot
            }
            None => {
                self.slots.push(Slot::Held(ticket, message));
                self.slots.len() - 1
            }
        }
    }

    fn release(&mut self, slot: usize) -> Option<Message> {
        match std::mem::replace(&mut self.slots[slot], Slot::Free) {
            Slot::Held(_, message) => {
                self.free.push(slot);
                Some(message)
            }
            Slot::Free => None,
        }
    }
}

impl Sink for KafkaSink {
    fn ready(&self) -> bool {
        self.has_producer() && !self.full && self.in_flight < WINDOW
    }

    fn offer(&mut self, message: Message, ticket: Ticket, _now: Instant) -> Offer {
        if self.producer.is_none() || self.replace {
            return Offer::Busy(message);
        }
        let slot = self.hold(ticket, message);
        let Self {
            producer,
            slots,
            record: settings,
            ..
        } = self;
        let (Some(producer), Slot::Held(_, m)) = (producer.as_ref(), &slots[slot]) else {
            return Offer::Dropped(DropReason::Internal);
        };
        let mut headers: Option<OwnedHeaders> = None;
        settings.headers(m, |key, value| {
            let h = headers
                .take()
                .unwrap_or_else(|| OwnedHeaders::new_with_capacity(8));
            headers = Some(h.insert(Header {
                key,
                value: Some(value),
            }));
        });
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(m.topic.as_str(), slot)
            .payload(&m.payload[..]);
        if let Some(key) = settings.key(m) {
            record = record.key(key);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        let refused = producer
            .send(record)
            .err()
            .map(|(e, _)| e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Unknown));
        match refused {
            None => {
                self.in_flight += 1;
                Offer::Accepted
            }
            Some(code) => {
                let Some(message) = self.release(slot) else {
                    return Offer::Dropped(DropReason::Internal);
                };
                if code != RDKafkaErrorCode::QueueFull {
                    self.record_error(code);
                }
                match classify(code) {
                    ErrorClass::Backpressure => {
                        self.full = true;
                        Offer::Busy(message)
                    }
                    ErrorClass::Final(reason) => Offer::Dropped(reason),
                    ErrorClass::Fatal => {
                        self.replace = true;
                        Offer::Busy(message)
                    }
                    ErrorClass::Retry => {
                        // Given back through the outcomes, so that the core's backoff applies.
                        self.outcomes.push_back((ticket, Outcome::Retry(message)));
                        Offer::Accepted
                    }
                }
            }
        }
    }

    fn poll_outcome(&mut self) -> Option<(Ticket, Outcome)> {
        self.outcomes.pop_front()
    }

    fn backlog_bytes(&self) -> usize {
        // librdkafka's queue is bounded by its own limits; nothing waits to be written here.
        0
    }
}

#[cfg(test)]
mod tests {
    //! The sink against librdkafka's mock cluster (an in-process Kafka): each error class takes
    //! its path. Waits are bounded; the sink is polled as the task's loop polls it.

    use std::time::Duration;

    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use sluice_codec::{ByteStr, PublishProperties, PublishPropertyValues, UserProperties};
    use sluice_config_agent::model::{KafkaAcks, KafkaAuthentication, KafkaSettings};

    use super::*;
    use crate::config::kafka_endpoint::KafkaAuth;

    const TOPIC: &str = "t";
    const DEADLINE: Duration = Duration::from_secs(30);

    fn plan(bootstrap: String, change: impl FnOnce(&mut KafkaSettings)) -> Arc<KafkaEndpointPlan> {
        let mut settings = KafkaSettings::new(bootstrap.clone(), KafkaAuthentication::Anonymous);
        settings.batching.latency_ms = 0;
        change(&mut settings);
        Arc::new(KafkaEndpointPlan {
            name: "ns/k".into(),
            bootstrap,
            tls: None,
            auth: KafkaAuth::None,
            settings,
        })
    }

    fn sink(plan: Arc<KafkaEndpointPlan>) -> KafkaSink {
        let record = RecordSettings::of(&plan, None);
        let mut s = KafkaSink::new(plan, "test-dst-0".into(), "test".into(), record);
        s.make_producer(None).expect("producer");
        s
    }

    fn message(topic: &str, payload: &'static [u8]) -> Message {
        Message {
            topic: ByteStr::from(topic.to_owned()),
            arrived_on: ByteStr::from_static("mqtt/in"),
            payload: Bytes::from_static(payload),
            properties: PublishProperties::new(),
            retain: false,
            received: Instant::now(),
        }
    }

    /// Polls until `n` outcomes are there (or fails at the deadline).
    fn outcomes(s: &mut KafkaSink, n: usize) -> Vec<(Ticket, Outcome)> {
        let deadline = Instant::now() + DEADLINE;
        let mut out = Vec::new();
        while out.len() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} outcomes: {out:?}",
                out.len()
            );
            s.poll();
            while let Some(o) = s.poll_outcome() {
                out.push(o);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        out
    }

    fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
        let c = MockCluster::new(1).expect("mock cluster");
        c.create_topic(TOPIC, 2, 1).expect("topic");
        c
    }

    #[test]
    fn delivered_records_end_their_tickets_and_free_their_slots() {
        let c = cluster();
        let mut s = sink(plan(c.bootstrap_servers(), |_| {}));
        for t in 0..100 {
            assert!(s.ready());
            assert!(matches!(
                s.offer(message(TOPIC, b"x"), t, Instant::now()),
                Offer::Accepted
            ));
        }
        let mut got = outcomes(&mut s, 100);
        got.sort_by_key(|(t, _)| *t);
        assert!(got.iter().all(|(_, o)| *o == Outcome::Delivered));
        assert_eq!(
            got.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
        assert_eq!(s.in_flight(), 0);
        assert!(
            s.slots.len() <= 100 && s.free.len() == s.slots.len(),
            "slots reused"
        );
    }

    #[test]
    fn a_final_error_is_a_refusal_with_its_reason() {
        let c = cluster();
        c.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
        );
        let mut s = sink(plan(c.bootstrap_servers(), |k| {
            k.kafka_acks = KafkaAcks::One
        }));
        assert!(matches!(
            s.offer(message(TOPIC, b"x"), 7, Instant::now()),
            Offer::Accepted
        ));
        let got = outcomes(&mut s, 1);
        assert_eq!(got, [(7, Outcome::Refused(DropReason::DestinationRefused))]);
    }

    #[test]
    fn a_record_over_the_size_limit_is_dropped_at_once() {
        let c = cluster();
        let mut s = sink(plan(c.bootstrap_servers(), |_| {}));
        static BIG: [u8; 2_000_000] = [b'x'; 2_000_000];
        let m = Message {
            payload: Bytes::from_static(&BIG),
            ..message(TOPIC, b"")
        };
        assert!(matches!(
            s.offer(m, 1, Instant::now()),
            Offer::Dropped(DropReason::DestinationEncode)
        ));
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn a_retriable_error_past_librdkafkas_retries_gives_the_message_back() {
        let c = cluster();
        // More timeouts than librdkafka retries within a short delivery timeout.
        c.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 64],
        );
        let p = plan(c.bootstrap_servers(), |k| k.kafka_acks = KafkaAcks::One);
        let record = RecordSettings::of(&p, None);
        let mut s = KafkaSink::new(p, "test-dst-0".into(), "test".into(), record);
        s.make_producer(None).expect("producer");
        // A short delivery timeout for the test, on a producer made the same way.
        let mut config = rdkafka::ClientConfig::new();
        for (k, v) in producer_settings(&s.plan, "test", Some(16))
            .unwrap()
            .pairs()
        {
            config.set(*k, v);
        }
        config.set("delivery.timeout.ms", "300");
        config.set("retry.backoff.ms", "10");
        s.producer = Some(
            config
                .create_with_context(SinkContext::new("t".into()))
                .unwrap(),
        );
        assert!(matches!(
            s.offer(message(TOPIC, b"x"), 3, Instant::now()),
            Offer::Accepted
        ));
        let got = outcomes(&mut s, 1);
        match &got[..] {
            [(3, Outcome::Retry(m))] => assert_eq!(m.payload, Bytes::from_static(b"x")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn taking_the_producer_away_gives_back_what_it_held() {
        let c = cluster();
        // Every produce request times out: the records stay in flight.
        c.broker_down(1).expect("down");
        let mut s = sink(plan(c.bootstrap_servers(), |_| {}));
        for t in 0..5 {
            assert!(matches!(
                s.offer(message(TOPIC, b"x"), t, Instant::now()),
                Offer::Accepted
            ));
        }
        let producer = s.take_producer().expect("a producer");
        std::thread::spawn(move || drop(producer));
        let mut got: Vec<_> = std::iter::from_fn(|| s.poll_outcome()).collect();
        got.sort_by_key(|(t, _)| *t);
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|(_, o)| matches!(o, Outcome::Retry(_))));
        assert!(!s.ready() && s.needs_new_producer());
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn a_full_queue_is_backpressure_until_a_report_makes_room() {
        let c = cluster();
        c.broker_down(1).expect("down");
        let p = plan(c.bootstrap_servers(), |_| {});
        let record = RecordSettings::of(&p, None);
        let mut s = KafkaSink::new(p, "test-dst-0".into(), "test".into(), record);
        let mut config = rdkafka::ClientConfig::new();
        for (k, v) in producer_settings(&s.plan, "test", Some(3)).unwrap().pairs() {
            config.set(*k, v);
        }
        s.producer = Some(
            config
                .create_with_context(SinkContext::new("t".into()))
                .unwrap(),
        );
        for t in 0..3 {
            assert!(matches!(
                s.offer(message(TOPIC, b"x"), t, Instant::now()),
                Offer::Accepted
            ));
        }
        assert!(matches!(
            s.offer(message(TOPIC, b"x"), 3, Instant::now()),
            Offer::Busy(_)
        ));
        assert!(!s.ready(), "not ready while full");
        c.broker_up(1).expect("up");
        let got = outcomes(&mut s, 3);
        assert!(got.iter().all(|(_, o)| *o == Outcome::Delivered));
        assert!(s.ready(), "ready again once reports made room");
    }

    #[test]
    fn keys_and_headers_follow_the_settings() {
        let values = PublishPropertyValues {
            user_properties: UserProperties::from_pairs([
                ("device", "d1"),
                ("id", "abc"),
                ("tag", "a"),
                ("tag", "b"),
            ])
            .unwrap(),
            content_type: Some("text/plain".into()),
            message_expiry_interval_secs: Some(42),
            ..PublishPropertyValues::default()
        };
        let m = Message {
            properties: values.build().unwrap(),
            ..message("kafka-topic", b"p")
        };
        let mut r = RecordSettings {
            strategy: PartitionStrategy::Property,
            key_property: Some("device".into()),
            static_key: Bytes::from_static(b"i0"),
            copy_properties: true,
            cloud_events: false,
        };
        assert_eq!(r.key(&m), Some(&b"d1"[..]));
        r.key_property = Some("absent".into());
        assert_eq!(r.key(&m), None);
        r.strategy = PartitionStrategy::Topic;
        assert_eq!(r.key(&m), Some(&b"mqtt/in"[..]), "the topic it arrived on");
        r.strategy = PartitionStrategy::Static;
        assert_eq!(r.key(&m), Some(&b"i0"[..]));
        r.strategy = PartitionStrategy::Default;
        assert_eq!(r.key(&m), None);

        let headers = |r: &RecordSettings| {
            let mut h = Vec::new();
            r.headers(&m, |k, v| {
                h.push((k.to_owned(), String::from_utf8_lossy(v).into_owned()))
            });
            h
        };
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            headers(&r),
            pairs(&[
                ("Content Type", "text/plain"),
                ("Message Expiry Interval", "42"),
                ("device", "d1"),
                ("id", "abc"),
                ("tag", "a"),
                ("tag", "b"),
            ])
        );
        r.cloud_events = true;
        r.copy_properties = false;
        assert_eq!(
            headers(&r),
            pairs(&[("content-type", "text/plain"), ("ce_id", "abc")])
        );
        let mut digits = itoa_buf();
        assert_eq!(decimal(&mut digits, 0), b"0");
        assert_eq!(decimal(&mut digits, u32::MAX), b"4294967295");
    }
}
