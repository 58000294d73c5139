//! The MQTT source: a [`Session`] that subscribes, as a [`Source`]. Each inbound PUBLISH becomes
//! a [`Message`] whose topic, payload and property block are the frame's slices; a QoS 1 one
//! carries its [`AckToken`], and the session PUBACKs in receive order ([MQTT-4.6.0-2]) whatever
//! order the acks come in. Pausing stops the connection's reads but not its keep-alive: the
//! session sends PINGREQ every Keep Alive while paused and gives no verdict on a PINGRESP it
//! cannot read.

use std::collections::VecDeque;
use std::time::Instant;

use sluice_codec::ByteStr;

use crate::message::Message;
use crate::mqtt::session::{AckToken, Event, Session};
use crate::source::Source;

/// An MQTT source. See the module documentation.
#[derive(Debug)]
pub(crate) struct MqttSource {
    session: Session,
    /// The core asked for backpressure.
    paused: bool,
    /// Session events other than messages, in order, for the task.
    notices: VecDeque<Event>,
}

impl MqttSource {
    /// A source over `session` (not connected yet).
    pub(crate) fn new(session: Session) -> Self {
        Self {
            session,
            paused: false,
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

    /// Whether the connection must stop reading: paused, and connected (CONNACK and SUBACK are
    /// read whatever the core's queues hold).
    pub(crate) fn read_paused(&self) -> bool {
        self.paused && self.session.is_connected()
    }

    /// The next session event that is not a message (connection changes, SUBACK,
    /// re-authentication), in order, for the task to log and count. They are set aside while
    /// [`Source::poll_message`] takes the messages.
    pub(crate) fn poll_notice(&mut self) -> Option<Event> {
        self.notices.pop_front()
    }
}

impl Source for MqttSource {
    type Ack = AckToken;

    fn poll_message(&mut self, now: Instant) -> Option<(Message, Option<AckToken>)> {
        while let Some(ev) = self.session.poll_event() {
            match ev {
                Event::Message { publish, ack } => {
                    let message = Message {
                        topic: publish.topic,
                        arrived_on: ByteStr::new(),
                        payload: publish.payload,
                        properties: publish.properties,
                        retain: publish.retain,
                        received: now,
                    };
                    return Some((message, ack));
                }
                Event::Connected { .. } => {
                    // A new connection reads until it is connected; from now on the pause
                    // applies to it.
                    let reading = !self.read_paused();
                    self.session.set_reading(reading, now);
                    self.notices.push_back(ev);
                }
                other => self.notices.push_back(other),
            }
        }
        None
    }

    fn ack(&mut self, ack: AckToken, now: Instant) {
        self.session.ack(ack, now);
    }

    fn set_paused(&mut self, paused: bool, now: Instant) {
        self.paused = paused;
        let reading = !self.read_paused();
        self.session.set_reading(reading, now);
    }

    fn unacked(&self) -> usize {
        self.session.inbound_unacked()
    }

    fn backlog_bytes(&self) -> usize {
        self.session.transmit_len()
    }
}
