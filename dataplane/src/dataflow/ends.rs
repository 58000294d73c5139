//! The two ends of a dataflow as the core holds them: the concrete sources behind one
//! [`Source`] ([`Origin`]) and the concrete sinks behind one [`Sink`] ([`Destination`]). An enum
//! rather than a trait object: one per task, in place in its core for the task's life, and a
//! `match` per call that the branch predictor learns (never moved per message).

use std::time::Instant;

use crate::message::Message;
use crate::mqtt::session::AckToken;
use crate::sink::{Offer, Outcome, Sink, Ticket};
use crate::sinks::kafka::KafkaSink;
use crate::sinks::mqtt::MqttSink;
use crate::sinks::parquet::ParquetSink;
use crate::source::Source;
use crate::sources::kafka::{KafkaAck, KafkaSource};
use crate::sources::mqtt::MqttSource;

/// A dataflow's source.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Origin {
    /// An MQTT subscription.
    Mqtt(MqttSource),
    /// A Kafka consumer.
    Kafka(KafkaSource),
}

/// What acknowledges a message of an [`Origin`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum OriginAck {
    /// A QoS 1 PUBLISH.
    Mqtt(AckToken),
    /// A Kafka record.
    Kafka(KafkaAck),
}

impl Origin {
    /// Whether the source's connection must stop reading (an MQTT source paused and
    /// connected; a Kafka source pauses its partitions instead).
    pub(crate) fn read_paused(&self) -> bool {
        match self {
            Self::Mqtt(s) => s.read_paused(),
            Self::Kafka(_) => false,
        }
    }
}

impl Source for Origin {
    type Ack = OriginAck;

    fn poll_message(&mut self, now: Instant) -> Option<(Message, Option<OriginAck>)> {
        match self {
            Self::Mqtt(s) => s
                .poll_message(now)
                .map(|(m, a)| (m, a.map(OriginAck::Mqtt))),
            Self::Kafka(s) => s
                .poll_message(now)
                .map(|(m, a)| (m, a.map(OriginAck::Kafka))),
        }
    }

    fn ack(&mut self, ack: OriginAck, now: Instant) {
        match (self, ack) {
            (Self::Mqtt(s), OriginAck::Mqtt(a)) => s.ack(a, now),
            (Self::Kafka(s), OriginAck::Kafka(a)) => s.ack(a, now),
            // An ack is only ever given back to the source that made it.
            _ => {}
        }
    }

    fn set_paused(&mut self, paused: bool, now: Instant) {
        match self {
            Self::Mqtt(s) => s.set_paused(paused, now),
            Self::Kafka(s) => s.set_paused(paused, now),
        }
    }

    fn unacked(&self) -> usize {
        match self {
            Self::Mqtt(s) => s.unacked(),
            Self::Kafka(s) => s.unacked(),
        }
    }

    fn backlog_bytes(&self) -> usize {
        match self {
            Self::Mqtt(s) => s.backlog_bytes(),
            Self::Kafka(s) => s.backlog_bytes(),
        }
    }

    fn holds_upstream(&self) -> bool {
        match self {
            Self::Mqtt(s) => s.holds_upstream(),
            Self::Kafka(s) => s.holds_upstream(),
        }
    }
}

/// A dataflow's destination.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Destination {
    /// An MQTT broker.
    Mqtt(MqttSink),
    /// A Kafka cluster.
    Kafka(KafkaSink),
    /// Parquet files on a local volume.
    Parquet(ParquetSink),
}

impl Sink for Destination {
    fn ready(&self) -> bool {
        match self {
            Self::Mqtt(s) => s.ready(),
            Self::Kafka(s) => s.ready(),
            Self::Parquet(s) => s.ready(),
        }
    }

    fn offer(&mut self, message: Message, ticket: Ticket, now: Instant) -> Offer {
        match self {
            Self::Mqtt(s) => s.offer(message, ticket, now),
            Self::Kafka(s) => s.offer(message, ticket, now),
            Self::Parquet(s) => s.offer(message, ticket, now),
        }
    }

    fn poll_outcome(&mut self) -> Option<(Ticket, Outcome)> {
        match self {
            Self::Mqtt(s) => s.poll_outcome(),
            Self::Kafka(s) => s.poll_outcome(),
            Self::Parquet(s) => s.poll_outcome(),
        }
    }

    fn backlog_bytes(&self) -> usize {
        match self {
            Self::Mqtt(s) => s.backlog_bytes(),
            Self::Kafka(s) => s.backlog_bytes(),
            Self::Parquet(s) => s.backlog_bytes(),
        }
    }

    fn flush(&mut self, now: Instant) {
        match self {
            Self::Mqtt(s) => s.flush(now),
            Self::Kafka(s) => s.flush(now),
            Self::Parquet(s) => s.flush(now),
        }
    }
}
