//! The MQTT destination: a [`Session`] that only publishes, as a [`Sink`]. One ticket per
//! PUBLISH: QoS 1 ends with the destination's PUBACK (a refusal is final or retried as
//! [`refusal_is_final`] says), QoS 0 is [`Offer::Done`] once queued, which promises no more.
//! The message becomes a PUBLISH here: the endpoint's QoS, RETAIN kept or cleared
//! (`mqttSettings.retain`), the properties for a 5.0 broker (none for 3.1.1), the payload
//! shared, not copied.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use sluice_codec::{ByteStr, Publish, PublishProperties, QoS};
use sluice_config_agent::model::Retain;

use crate::message::{DropReason, Message};
use crate::mqtt::session::{CloseReason, Event, PublishError, Session};
use crate::sink::{Offer, Outcome, Sink, Ticket};

/// Whether a PUBACK refusal is final (re-sending the same message cannot change the answer):
/// 0x87 Not authorized, 0x90 Topic Name invalid, 0x99 Payload format invalid. Others (0x97
/// Quota exceeded, 0x80 Unspecified error, 0x83 Implementation specific error, 0x91 Packet
/// Identifier in use) may pass, and the message is offered again after a backoff.
pub(crate) fn refusal_is_final(reason_code: u8) -> bool {
    matches!(reason_code, 0x87 | 0x90 | 0x99)
}

/// What happened to an MQTT sink's connection, for the task to log and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
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

/// How messages become PUBLISH packets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishSettings {
    /// The endpoint's QoS (`mqttSettings.qos`).
    pub(crate) qos: QoS,
    /// What happens to the RETAIN flag (`mqttSettings.retain`).
    pub(crate) retain: Retain,
}

/// An MQTT destination. See the module documentation.
#[derive(Debug)]
pub(crate) struct MqttSink {
    session: Session,
    settings: PublishSettings,
    /// The ticket of each PUBLISH in flight, and when its message arrived.
    by_packet_id: HashMap<u16, (Ticket, Instant)>,
    outcomes: VecDeque<(Ticket, Outcome)>,
    notices: VecDeque<Notice>,
}

impl MqttSink {
    /// A sink over `session` (not connected yet).
    pub(crate) fn new(session: Session, settings: PublishSettings) -> Self {
        Self {
            session,
            settings,
            by_packet_id: HashMap::new(),
            outcomes: VecDeque::new(),
            notices: VecDeque::new(),
        }
    }

    /// The session, for the connection task (bytes in and out, timeouts).
    pub(crate) fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The session.
    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    /// The endpoint's QoS.
    pub(crate) fn qos(&self) -> QoS {
        self.settings.qos
    }

    /// Takes the session's events: PUBACKs become outcomes, connection changes become
    /// [`Notice`]s.
    fn pump(&mut self) {
        while let Some(ev) = self.session.poll_event() {
            match ev {
                Event::Acked { packet_id, .. } => {
                    if let Some((ticket, _)) = self.by_packet_id.remove(&packet_id.get()) {
                        self.outcomes.push_back((ticket, Outcome::Delivered));
                    }
                }
                Event::Refused {
                    packet_id,
                    reason_code,
                    publish,
                } => {
                    if let Some((ticket, received)) = self.by_packet_id.remove(&packet_id.get()) {
                        let outcome = if refusal_is_final(reason_code.0) {
                            Outcome::Refused(DropReason::DestinationRefused)
                        } else {
                            Outcome::Retry(message(*publish, received))
                        };
                        self.outcomes.push_back((ticket, outcome));
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
    pub(crate) fn poll_notice(&mut self) -> Option<Notice> {
        self.pump();
        self.notices.pop_front()
    }

    /// The PUBLISH for a routed message.
    fn publish(&self, m: Message) -> Publish {
        let properties = if self.session.config().protocol == sluice_codec::ProtocolVersion::V5 {
            m.properties
        } else {
            PublishProperties::new()
        };
        Publish {
            dup: false,
            qos: self.settings.qos,
            retain: match self.settings.retain {
                Retain::Keep => m.retain,
                Retain::Never => false,
            },
            topic: m.topic,
            packet_id: None,
            properties,
            payload: m.payload,
        }
    }
}

/// A PUBLISH given back, as the routed message it was made from.
fn message(p: Publish, received: Instant) -> Message {
    Message {
        topic: p.topic,
        arrived_on: ByteStr::new(),
        payload: p.payload,
        properties: p.properties,
        retain: p.retain,
        received,
    }
}

impl Sink for MqttSink {
    fn ready(&self) -> bool {
        let qos = self.settings.qos;
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

    fn offer(&mut self, message: Message, ticket: Ticket, now: Instant) -> Offer {
        if !self.ready() {
            return Offer::Busy(message);
        }
        let received = message.received;
        match self.session.publish(self.publish(message), now) {
            Ok(Some(packet_id)) => {
                self.by_packet_id
                    .insert(packet_id.get(), (ticket, received));
                Offer::Accepted
            }
            Ok(None) => Offer::Done,
            // `ready` said yes; the message was consumed, so this is a bug if it happens.
            Err(PublishError::Full | PublishError::NotConnected) => {
                Offer::Dropped(DropReason::Internal)
            }
            Err(PublishError::QosNotSupported(_)) => Offer::Dropped(DropReason::DestinationQos),
            Err(PublishError::Encode(_)) => Offer::Dropped(DropReason::DestinationEncode),
        }
    }

    fn poll_outcome(&mut self) -> Option<(Ticket, Outcome)> {
        self.pump();
        self.outcomes.pop_front()
    }

    fn backlog_bytes(&self) -> usize {
        self.session.transmit_len()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use bytes::{Bytes, BytesMut};
    use sluice_codec::{
        ByteStr, Codec, Packet, ProtocolVersion, PubAck, PublishPropertyValues, ReasonCode,
    };

    use super::*;
    use crate::mqtt::session::{SessionConfig, connected_to_test_broker};

    fn connected_sink(
        window: u16,
        version: ProtocolVersion,
        settings: PublishSettings,
    ) -> (MqttSink, Codec) {
        let now = Instant::now();
        let mut config = SessionConfig::new(version, ByteStr::from_static("df-dst-0"));
        config.max_in_flight = NonZeroU16::new(window).expect("non-zero");
        let (session, broker) = connected_to_test_broker(config, now);
        let mut sink = MqttSink::new(session, settings);
        assert_eq!(
            sink.poll_notice(),
            Some(Notice::Connected {
                session_present: false
            })
        );
        (sink, broker)
    }

    fn qos(qos: QoS) -> PublishSettings {
        PublishSettings {
            qos,
            retain: Retain::Keep,
        }
    }

    fn message() -> Message {
        Message {
            topic: ByteStr::from_static("out/t"),
            arrived_on: ByteStr::new(),
            payload: Bytes::from_static(b"x"),
            properties: PublishPropertyValues {
                content_type: Some("text/plain".into()),
                ..PublishPropertyValues::default()
            }
            .build()
            .expect("valid"),
            retain: true,
            received: Instant::now(),
        }
    }

    fn puback(sink: &mut MqttSink, broker: &Codec, id: u16, code: ReasonCode) {
        let mut ack = PubAck::new(NonZeroU16::new(id).expect("non-zero"));
        ack.reason_code = code;
        let mut buf = BytesMut::new();
        broker
            .encode(&Packet::PubAck(ack), &mut buf)
            .expect("encode");
        sink.session_mut().handle_bytes(&mut buf, Instant::now());
    }

    /// The PUBLISH packets the sink queued, as the broker decodes them.
    fn sent(sink: &mut MqttSink, broker: &mut Codec) -> Vec<Publish> {
        let mut out = BytesMut::new();
        sink.session_mut().poll_transmit(&mut out);
        let mut got = Vec::new();
        while let Some(p) = broker.decode(&mut out).expect("decodes") {
            if let Packet::Publish(p) = p {
                got.push(p);
            }
        }
        got
    }

    #[test]
    fn tickets_come_back_with_their_pubacks_in_any_order() {
        let (mut sink, broker) = connected_sink(2, ProtocolVersion::V5, qos(QoS::AtLeastOnce));
        let now = Instant::now();
        assert!(matches!(sink.offer(message(), 10, now), Offer::Accepted));
        assert!(matches!(sink.offer(message(), 11, now), Offer::Accepted));
        assert!(!sink.ready());
        assert!(matches!(sink.offer(message(), 12, now), Offer::Busy(_)));
        assert_eq!(sink.by_packet_id.len(), 2);
        assert!(sink.backlog_bytes() > 0);
        puback(&mut sink, &broker, 2, ReasonCode::SUCCESS);
        assert_eq!(sink.poll_outcome(), Some((11, Outcome::Delivered)));
        puback(&mut sink, &broker, 1, ReasonCode(0x87));
        assert_eq!(
            sink.poll_outcome(),
            Some((10, Outcome::Refused(DropReason::DestinationRefused)))
        );
        // A passing refusal gives the message back, as it was routed.
        let m = message();
        let received = m.received;
        assert!(matches!(sink.offer(m, 12, now), Offer::Accepted));
        puback(&mut sink, &broker, 3, ReasonCode(0x97));
        match sink.poll_outcome() {
            Some((12, Outcome::Retry(back))) => {
                assert_eq!(back.topic, "out/t");
                assert_eq!(back.received, received);
                assert_eq!(back.properties.content_type(), Some("text/plain"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(sink.poll_outcome(), None);
        assert!(sink.ready());
    }

    #[test]
    fn qos0_is_done_at_once_and_busy_when_disconnected() {
        let (mut sink, _broker) = connected_sink(1, ProtocolVersion::V5, qos(QoS::AtMostOnce));
        let now = Instant::now();
        assert!(matches!(sink.offer(message(), 1, now), Offer::Done));
        sink.session_mut().handle_disconnected(now);
        assert!(matches!(sink.poll_notice(), Some(Notice::Closed { .. })));
        assert!(matches!(sink.offer(message(), 2, now), Offer::Busy(_)));
    }

    #[test]
    fn publish_has_the_endpoint_qos_and_retain() {
        for (dest_qos, retain, retained) in [
            (QoS::AtLeastOnce, Retain::Keep, true),
            (QoS::AtMostOnce, Retain::Keep, true),
            (QoS::AtLeastOnce, Retain::Never, false),
        ] {
            let settings = PublishSettings {
                qos: dest_qos,
                retain,
            };
            let (mut sink, mut broker) = connected_sink(4, ProtocolVersion::V5, settings);
            let _ = sink.offer(message(), 1, Instant::now());
            let got = sent(&mut sink, &mut broker);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].qos, dest_qos);
            assert_eq!(got[0].retain, retained);
            assert!(!got[0].dup);
            assert_eq!(got[0].properties.content_type(), Some("text/plain"));
        }
    }

    #[test]
    fn a_v311_destination_gets_no_properties() {
        let (mut sink, mut broker) =
            connected_sink(4, ProtocolVersion::V311, qos(QoS::AtLeastOnce));
        assert!(matches!(
            sink.offer(message(), 1, Instant::now()),
            Offer::Accepted
        ));
        let got = sent(&mut sink, &mut broker);
        assert_eq!(got.len(), 1);
        assert!(got[0].properties.is_empty());
        assert_eq!(&got[0].payload[..], b"x");
    }
}
