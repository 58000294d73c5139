//! The contract between a pipeline and its destination (docs/delivery.md has the prose).
//!
//! A pipeline hands each forwarded message to its [`Sink`] with a [`Ticket`]; the sink says
//! whether it took it ([`Offer`]) and later reports, per ticket and in any order, that the
//! destination has it ([`Sink::poll_ack`]). The pipeline turns those reports into source
//! acknowledgements, which the source session sends in receive order. The three destinations
//! fit the same shape:
//!
//! - MQTT ([`MqttSink`]): one ticket per PUBLISH, acknowledged by the destination's PUBACK
//!   (QoS 1), or [`Offer::Done`] at once for QoS 0, which promises no more.
//! - Kafka: one ticket per record, acknowledged by its delivery report.
//! - Parquet: tickets accumulate in the open file, and all of them are acknowledged together
//!   once the file is fsynced and renamed into place.
//!
//! A sink never blocks and does no I/O of its own in these calls: it queues, and its
//! connection (or producer, or writer) task moves the bytes. [`Sink::ready`] and
//! [`Sink::backlog_bytes`] are what the pipeline's backpressure looks at.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use sluice_codec::{Publish, QoS};

use crate::session::{CloseReason, Event, PublishError, Session};

/// Names one message handed to a sink, for its acknowledgement. Assigned by the pipeline.
pub type Ticket = u64;

/// What a sink did with an offered message.
#[derive(Debug)]
pub enum Offer {
    /// Taken; [`Sink::poll_ack`] reports it later.
    Accepted,
    /// Taken, and there is nothing more to wait for (QoS 0): acknowledge the source now.
    Done,
    /// Not taken now (window full, not connected): offer it again after [`Sink::ready`].
    Busy(Publish),
    /// Never deliverable (too large for the destination, invalid there): the reason, for the
    /// drop counter. The source is acknowledged: it is an intentional drop.
    Dropped(&'static str),
}

/// How an accepted message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination has it.
    Delivered,
    /// The destination answered, and refused it for good (MQTT PUBACK 0x87 Not authorized,
    /// 0x90 Topic Name invalid, 0x99 Payload format invalid): it will not take it however often
    /// it is sent, so it counts as dropped with this reason.
    Refused(&'static str),
    /// The destination did not take it for a reason that may pass (0x97 Quota exceeded, 0x80
    /// Unspecified error, 0x83 Implementation specific error, 0x91 Packet Identifier in use):
    /// the message comes back to be offered again later, and the source is not acknowledged
    /// meanwhile.
    Retry(Box<Publish>),
}

/// Whether a PUBACK refusal is final (re-sending the same message cannot change the answer).
pub fn refusal_is_final(reason_code: u8) -> bool {
    matches!(reason_code, 0x87 | 0x90 | 0x99)
}

/// A destination, seen from the pipeline. See the module documentation.
pub trait Sink {
    /// Whether [`Sink::offer`] would take a message of this QoS now.
    fn ready(&self, qos: QoS) -> bool;
    /// Hands over one message.
    fn offer(&mut self, message: Publish, ticket: Ticket, now: Instant) -> Offer;
    /// The next acknowledged ticket, in any order.
    fn poll_ack(&mut self) -> Option<(Ticket, Outcome)>;
    /// Bytes queued and not yet written: past a bound, the pipeline stops reading its source.
    fn backlog_bytes(&self) -> usize;
    /// Messages accepted and not yet acknowledged.
    fn in_flight(&self) -> usize;
}

/// What happened to an MQTT sink's connection, for the pipeline to log and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// CONNACK accepted; in-flight messages were sent again.
    Connected {
        /// The broker kept the session.
        session_present: bool,
    },
    /// The connection ended; in-flight messages are kept for the next one.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

/// An MQTT destination: a [`Session`] that only publishes.
#[derive(Debug)]
pub struct MqttSink {
    session: Session,
    by_packet_id: HashMap<u16, Ticket>,
    acked: VecDeque<(Ticket, Outcome)>,
    notices: VecDeque<Notice>,
}

impl MqttSink {
    /// A sink over `session` (not connected yet).
    pub fn new(session: Session) -> Self {
        Self {
            session,
            by_packet_id: HashMap::new(),
            acked: VecDeque::new(),
            notices: VecDeque::new(),
        }
    }

    /// The session, for the connection task (bytes in and out, timeouts).
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Takes the session's events: PUBACKs become acknowledged tickets, connection changes
    /// become [`Notice`]s. Call after every call into the session.
    pub fn process_events(&mut self) {
        while let Some(ev) = self.session.poll_event() {
            match ev {
                Event::Acked { packet_id, .. } => {
                    if let Some(ticket) = self.by_packet_id.remove(&packet_id.get()) {
                        self.acked.push_back((ticket, Outcome::Delivered));
                    }
                }
                Event::Refused {
                    packet_id,
                    reason_code,
                    publish,
                } => {
                    if let Some(ticket) = self.by_packet_id.remove(&packet_id.get()) {
                        let outcome = if refusal_is_final(reason_code.0) {
                            Outcome::Refused("destination_refused")
                        } else {
                            Outcome::Retry(publish)
                        };
                        self.acked.push_back((ticket, outcome));
                    }
                }
                Event::Connected { session_present } => {
                    self.notices
                        .push_back(Notice::Connected { session_present });
                }
                Event::Closed { reason } => self.notices.push_back(Notice::Closed { reason }),
                // A destination session subscribes to nothing.
                Event::Message { .. } | Event::Subscribed { .. } | Event::Reauthenticated => {}
            }
        }
    }

    /// The next connection change.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }
}

impl Sink for MqttSink {
    fn ready(&self, qos: QoS) -> bool {
        // A QoS 1 message is never sent at QoS 0 because the broker's Maximum QoS is 0: that
        // would acknowledge at-least-once messages on a promise of at most once. It waits.
        if qos > self.session.maximum_qos() {
            return false;
        }
        if qos == QoS::AtMostOnce {
            self.session.is_connected()
        } else {
            self.session.can_publish()
        }
    }

    fn offer(&mut self, message: Publish, ticket: Ticket, now: Instant) -> Offer {
        if !self.ready(message.qos) {
            return Offer::Busy(message);
        }
        match self.session.publish(message, now) {
            Ok(Some(packet_id)) => {
                self.by_packet_id.insert(packet_id.get(), ticket);
                Offer::Accepted
            }
            Ok(None) => Offer::Done,
            // `ready` said yes; the message was consumed, so this is a bug if it happens.
            Err(PublishError::Full | PublishError::NotConnected) => Offer::Dropped("internal"),
            Err(PublishError::QosNotSupported(_)) => Offer::Dropped("destination_qos"),
            Err(PublishError::Encode(_)) => Offer::Dropped("destination_encode"),
        }
    }

    fn poll_ack(&mut self) -> Option<(Ticket, Outcome)> {
        self.acked.pop_front()
    }

    fn backlog_bytes(&self) -> usize {
        self.session.transmit_len()
    }

    fn in_flight(&self) -> usize {
        self.by_packet_id.len()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use bytes::{Bytes, BytesMut};
    use sluice_codec::{
        ByteStr, Codec, ConnAck, Packet, ProtocolVersion, PubAck, ReasonCode, Role,
    };

    use super::*;
    use crate::session::SessionConfig;

    fn connected_sink(window: u16) -> (MqttSink, Codec) {
        let now = Instant::now();
        let mut config = SessionConfig::new(ProtocolVersion::V5, ByteStr::from_static("df-dst-0"));
        config.max_in_flight = NonZeroU16::new(window).expect("non-zero");
        let mut sink = MqttSink::new(Session::new(config, now).expect("valid"));
        let mut broker = Codec::new(Role::Server, ProtocolVersion::V5);
        sink.session_mut().handle_connected(now);
        let mut out = BytesMut::new();
        sink.session_mut().poll_transmit(&mut out);
        assert!(matches!(
            broker.decode(&mut out),
            Ok(Some(Packet::Connect(_)))
        ));
        let mut buf = BytesMut::new();
        broker
            .encode(&Packet::ConnAck(ConnAck::new(false)), &mut buf)
            .expect("encode");
        sink.session_mut().handle_bytes(&mut buf, now);
        sink.process_events();
        assert_eq!(
            sink.poll_notice(),
            Some(Notice::Connected {
                session_present: false
            })
        );
        (sink, broker)
    }

    fn message(qos: QoS) -> Publish {
        let mut p = Publish::new(ByteStr::from_static("out/t"), Bytes::from_static(b"x"));
        p.qos = qos;
        p
    }

    fn puback(sink: &mut MqttSink, broker: &Codec, id: u16, code: ReasonCode) {
        let mut ack = PubAck::new(NonZeroU16::new(id).expect("non-zero"));
        ack.reason_code = code;
        let mut buf = BytesMut::new();
        broker
            .encode(&Packet::PubAck(ack), &mut buf)
            .expect("encode");
        sink.session_mut().handle_bytes(&mut buf, Instant::now());
        sink.process_events();
    }

    #[test]
    fn tickets_come_back_with_their_pubacks_in_any_order() {
        let (mut sink, broker) = connected_sink(2);
        let now = Instant::now();
        assert!(matches!(
            sink.offer(message(QoS::AtLeastOnce), 10, now),
            Offer::Accepted
        ));
        assert!(matches!(
            sink.offer(message(QoS::AtLeastOnce), 11, now),
            Offer::Accepted
        ));
        assert!(!sink.ready(QoS::AtLeastOnce));
        assert!(matches!(
            sink.offer(message(QoS::AtLeastOnce), 12, now),
            Offer::Busy(_)
        ));
        assert_eq!(sink.in_flight(), 2);
        assert!(sink.backlog_bytes() > 0);
        puback(&mut sink, &broker, 2, ReasonCode::SUCCESS);
        assert_eq!(sink.poll_ack(), Some((11, Outcome::Delivered)));
        puback(&mut sink, &broker, 1, ReasonCode(0x87));
        assert_eq!(
            sink.poll_ack(),
            Some((10, Outcome::Refused("destination_refused")))
        );
        // A passing refusal gives the message back.
        assert!(matches!(
            sink.offer(message(QoS::AtLeastOnce), 12, now),
            Offer::Accepted
        ));
        puback(&mut sink, &broker, 3, ReasonCode(0x97));
        assert!(matches!(sink.poll_ack(), Some((12, Outcome::Retry(p))) if p.topic == "out/t"));
        assert_eq!(sink.poll_ack(), None);
        assert!(sink.ready(QoS::AtLeastOnce));
    }

    #[test]
    fn qos0_is_done_at_once_and_busy_when_disconnected() {
        let (mut sink, _broker) = connected_sink(1);
        let now = Instant::now();
        assert!(matches!(
            sink.offer(message(QoS::AtMostOnce), 1, now),
            Offer::Done
        ));
        sink.session_mut().handle_disconnected(now);
        sink.process_events();
        assert!(matches!(sink.poll_notice(), Some(Notice::Closed { .. })));
        assert!(matches!(
            sink.offer(message(QoS::AtMostOnce), 2, now),
            Offer::Busy(_)
        ));
    }
}
