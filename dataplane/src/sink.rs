//! The destination side of a dataflow, as the dataflow core sees it (docs/delivery.md has the
//! prose). The core hands each message to its [`Sink`] with a [`Ticket`]; the sink says whether
//! it took it ([`Offer`]) and later reports, per ticket and in any order, how it ended
//! ([`Outcome`]). The destinations fit the same shape:
//!
//! - MQTT: one ticket per PUBLISH, ended by the destination's PUBACK (QoS 1), or
//!   [`Offer::Done`] at once for QoS 0, which promises no more.
//! - Kafka: one ticket per record, ended by its delivery report.
//! - Parquet: tickets accumulate in the open file, and all of them end together once the file is
//!   fsynced and renamed into place; a drain cuts the open file ([`Sink::flush`]).
//!
//! A sink never blocks and does no I/O in these calls: it queues, and its connection (or
//! producer, or writer) task moves the bytes. [`Sink::ready`] and [`Sink::backlog_bytes`] are
//! what the core's backpressure looks at.

use std::time::Instant;

use crate::message::{DropReason, Message};

/// Names one message handed to a sink, for its outcome. Assigned by the core, increasing.
pub(crate) type Ticket = u64;

/// What a sink did with an offered message.
#[derive(Debug)]
pub(crate) enum Offer {
    /// Taken; [`Sink::poll_outcome`] reports it later.
    Accepted,
    /// Taken, and there is nothing more to wait for (MQTT QoS 0): acknowledge the source now.
    Done,
    /// Not taken now (window full, not connected): given back, to be offered again once
    /// [`Sink::ready`].
    Busy(Message),
    /// Never deliverable there (too large for the destination, say): dropped with this reason,
    /// and the source is acknowledged.
    Dropped(DropReason),
}

/// How an accepted message ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The destination has it.
    Delivered,
    /// The destination answered and refused it for good: sending it again cannot change the
    /// answer, so it counts as dropped with this reason.
    Refused(DropReason),
    /// The destination did not take it for a reason that may pass (MQTT PUBACK 0x97 Quota
    /// exceeded, say): the message comes back, to be offered again after a backoff, and the
    /// source is not acknowledged meanwhile.
    Retry(Message),
}

/// A destination. See the module documentation.
pub(crate) trait Sink {
    /// Whether [`Sink::offer`] would take a message now.
    fn ready(&self) -> bool;
    /// Hands over one message.
    fn offer(&mut self, message: Message, ticket: Ticket, now: Instant) -> Offer;
    /// The next ended ticket, in any order.
    fn poll_outcome(&mut self) -> Option<(Ticket, Outcome)>;
    /// Bytes queued and not yet written: past a bound, the core stops reading its source.
    fn backlog_bytes(&self) -> usize;
    /// A drain started: hand on at once what is held for a batch (a Parquet file is cut).
    fn flush(&mut self, _now: Instant) {}
}
