//! The source side of a dataflow, as the dataflow core sees it: something that yields
//! [`Message`]s, each with what acknowledges it, and takes those acknowledgements back. An MQTT
//! source acknowledges with PUBACKs in receive order; a Kafka source commits, per partition, the
//! offset below which everything is acknowledged.
//!
//! A source does no I/O in these calls: its connection task feeds it bytes and writes what it
//! queues. It reads no clock: `now` comes from the caller.

use std::time::Instant;

use crate::message::Message;

/// A source of messages. See the module documentation.
pub(crate) trait Source {
    /// What acknowledges one message (an MQTT packet id on a connection, a Kafka offset).
    type Ack: Copy + std::fmt::Debug;

    /// The next message received, with its acknowledgement (`None`: nothing to acknowledge,
    /// such as MQTT QoS 0).
    fn poll_message(&mut self, now: Instant) -> Option<(Message, Option<Self::Ack>)>;

    /// The destination has the message (or it was dropped on purpose): acknowledge it. The
    /// source orders acknowledgements as its protocol needs (MQTT: receive order).
    fn ack(&mut self, ack: Self::Ack, now: Instant);

    /// Backpressure: stop reading new messages (`true`) or start again. A paused source keeps
    /// its connection alive (MQTT: PINGREQ every Keep Alive; Kafka: the consumer keeps polling
    /// with its partitions paused).
    fn set_paused(&mut self, paused: bool, now: Instant);

    /// Messages yielded and not yet acknowledged on the current connection.
    fn unacked(&self) -> usize;

    /// Bytes of acknowledgements (or other protocol output) queued and not yet written: a drain
    /// is complete only once these are out.
    fn backlog_bytes(&self) -> usize;

    /// Whether the source holds what it has not yielded, bounded (a Kafka consumer's
    /// prefetch): then the core takes messages only while none waits for the sink, rather than
    /// queueing them up to its bound and pausing. An MQTT source does not: the broker keeps
    /// sending, so the core reads on and pauses.
    fn holds_upstream(&self) -> bool {
        false
    }
}
