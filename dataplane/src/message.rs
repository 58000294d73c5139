//! What moves through a dataflow, whatever carried it: a [`Message`], the reasons one is dropped
//! ([`DropReason`], which index a fixed array of counters), and the two ends of a dataflow
//! ([`Side`]). No I/O, no protocol state.

use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use sluice_codec::{ByteStr, PublishProperties};

/// One message on its way from a source to a sink, independent of the carrier.
///
/// Its parts are slices of what was read (a frame of the source's read buffer): nothing is
/// copied to make one. Metadata is held in the MQTT 5.0 property model, which every carrier maps
/// to and from: an MQTT 5.0 source gives its property block as received; a 3.1.1 source gives an
/// empty one; a Kafka source maps key, headers and timestamp into it. A sink maps it to what its
/// carrier has (MQTT properties, Kafka headers, Parquet metadata columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// The topic it was published on (MQTT) or read from (Kafka); once routed, the destination
    /// topic.
    pub(crate) topic: ByteStr,
    /// Once routed, the topic it arrived on (moved here from `topic`, not copied); empty before.
    /// See [`Message::source_topic`].
    pub(crate) arrived_on: ByteStr,
    /// The payload, unchanged.
    pub(crate) payload: Bytes,
    /// Metadata, as an MQTT 5.0 PUBLISH property block.
    pub(crate) properties: PublishProperties,
    /// MQTT's RETAIN flag as received (`false` from carriers without one).
    pub(crate) retain: bool,
    /// When it arrived (the caller's clock): what its acknowledgement latency and the ageing of
    /// its Message Expiry Interval count from.
    pub(crate) received: Instant,
}

impl Message {
    /// The topic the message arrived on, routed or not (a Kafka sink's key with
    /// `partitionStrategy: Topic`).
    pub(crate) fn source_topic(&self) -> &ByteStr {
        if self.arrived_on.is_empty() {
            &self.topic
        } else {
            &self.arrived_on
        }
    }
}

macro_rules! drop_reasons {
    ($($(#[$meta:meta])* $name:ident => $label:literal,)*) => {
        /// Why a message was dropped on purpose (and acknowledged to its source). Each reason
        /// has its own counter slot ([`DropReason::index`]) and a metric label
        /// ([`DropReason::as_str`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum DropReason {
            $($(#[$meta])* $name,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub(crate) const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// How many reasons there are: the size of a counter array.
            pub(crate) const COUNT: usize = Self::ALL.len();

            /// The `reason` label of `sluice_messages_dropped_total`.
            pub(crate) const fn as_str(self) -> &'static str {
                match self {
                    $(DropReason::$name => $label,)*
                }
            }

            /// This reason's slot in a `[_; DropReason::COUNT]` array.
            pub(crate) const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

drop_reasons! {
    /// The destination topic template could not be resolved for the source topic, or gave
    /// something that is not a topic name.
    UnresolvedTopic => "unresolved_topic",
    /// The Message Expiry Interval ran out while the message was held.
    Expired => "expired",
    /// The metadata for the destination could not be encoded (it would exceed what a packet can
    /// hold). Not expected: the source's was valid and little is added.
    InvalidProperties => "invalid_properties",
    /// The destination answered and refused the message for good (MQTT PUBACK 0x87 Not
    /// authorized, 0x90 Topic Name invalid, 0x99 Payload format invalid; Kafka topic
    /// authorization failed, invalid record, policy violation).
    DestinationRefused => "destination_refused",
    /// The destination does not take the message's QoS.
    DestinationQos => "destination_qos",
    /// The message cannot be encoded for the destination (larger than its Maximum Packet Size,
    /// or than the Kafka broker's message size limit).
    DestinationEncode => "destination_encode",
    /// The destination has no such topic (or partition) and will not create it (a Kafka broker
    /// with topic auto-creation off, or an invalid topic name).
    DestinationUnknownTopic => "destination_unknown_topic",
    /// The payload is not JSON (or not UTF-8), and the destination writes rows of JSON fields
    /// (LocalStorage).
    NotJson => "not_json",
    /// The payload is JSON that does not fit the destination's schema (a field of the wrong
    /// type, a missing field that is not nullable, not an object).
    SchemaMismatch => "schema_mismatch",
    /// A sink took a message it had said it could not take: a bug, counted rather than hidden.
    Internal => "internal",
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One end of a dataflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Side {
    /// Where messages come from (the MQTT subscription or the Kafka consumer).
    Source,
    /// Where they go (Kafka producer, MQTT bridge, Parquet files).
    Destination,
}

impl Side {
    /// Both sides, in label order.
    pub(crate) const ALL: [Side; 2] = [Side::Source, Side::Destination];

    /// The `side` label value: `source` or `destination`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }

    /// This side's slot in a `[_; 2]` array.
    pub(crate) fn index(self) -> usize {
        match self {
            Side::Source => 0,
            Side::Destination => 1,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_have_distinct_slots_and_labels() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::COUNT);
    }
}
