//! What a Kafka error means for the message it is about: one pure table ([`classify`]), so that
//! every error code takes a documented path and a table test shows it.
//!
//! | Class | Codes (librdkafka names) | What the sink does |
//! |---|---|---|
//! | [`ErrorClass::Backpressure`] | `QueueFull` | gives the message back at once (`Busy`); the core stops reading the source until the producer has room |
//! | [`ErrorClass::Retry`] | timeouts, transport and broker availability, leadership changes, throttling, `NotEnoughReplicas`, authentication (a rotated secret or token may fix it), and any code not listed | the message comes back to the core and is offered again after its backoff; nothing is acknowledged meanwhile |
//! | [`ErrorClass::Final`] | too large, topic authorization, unknown or invalid topic or partition, invalid record, policy violation, unsupported compression | the message is dropped with the reason, counted, logged, and acknowledged |
//! | [`ErrorClass::Fatal`] | `Fatal`, producer fenced, invalid producer epoch or id mapping, out-of-order sequence | the producer cannot go on: it is replaced, and the message comes back to be offered again |
//!
//! librdkafka retries retriable errors itself (until `delivery.timeout.ms`); what reaches a
//! delivery report has exhausted that, so "Retry" here is the dataflow's own, slower retry.
//! Unknown codes retry: losing a message to a code this table does not know would be worse than
//! retrying it.

use rdkafka::types::RDKafkaErrorCode as C;

use crate::message::DropReason;

/// What an error means for the message. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The producer is full: not an error of the message.
    Backpressure,
    /// May pass: offer the message again after a backoff.
    Retry,
    /// Never deliverable there: drop it with this reason.
    Final(DropReason),
    /// The producer is unusable: make a new one, offer the message again.
    Fatal,
}

/// The class of `code`. See the module documentation.
pub(crate) fn classify(code: C) -> ErrorClass {
    match code {
        C::QueueFull => ErrorClass::Backpressure,
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => {
            ErrorClass::Final(DropReason::DestinationEncode)
        }
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed => {
            ErrorClass::Final(DropReason::DestinationRefused)
        }
        C::UnknownTopic
        | C::UnknownTopicOrPartition
        | C::UnknownPartition
        | C::InvalidTopic
        | C::UnknownTopicId => ErrorClass::Final(DropReason::DestinationUnknownTopic),
        C::InvalidRecord
        | C::InvalidMessage
        | C::BadMessage
        | C::InvalidTimestamp
        | C::PolicyViolation
        | C::UnsupportedCompressionType
        | C::BadCompression
        | C::UnsupportedForMessageFormat
        | C::InvalidRequiredAcks
        | C::InvalidArgument => ErrorClass::Final(DropReason::DestinationRefused),
        C::Fatal
        | C::Fenced
        | C::ProducerFenced
        | C::InvalidProducerEpoch
        | C::InvalidProducerIdMapping
        | C::OutOfOrderSequenceNumber
        | C::UnknownProducerId
        | C::GaplessGuarantee => ErrorClass::Fatal,
        _ => ErrorClass::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of the module documentation, code by code.
    #[test]
    fn every_class_takes_its_codes() {
        let table: &[(C, ErrorClass)] = &[
            (C::QueueFull, ErrorClass::Backpressure),
            (C::MessageTimedOut, ErrorClass::Retry),
            (C::RequestTimedOut, ErrorClass::Retry),
            (C::BrokerTransportFailure, ErrorClass::Retry),
            (C::AllBrokersDown, ErrorClass::Retry),
            (C::NetworkException, ErrorClass::Retry),
            (C::LeaderNotAvailable, ErrorClass::Retry),
            (C::NotLeaderForPartition, ErrorClass::Retry),
            (C::NotEnoughReplicas, ErrorClass::Retry),
            (C::NotEnoughReplicasAfterAppend, ErrorClass::Retry),
            (C::ThrottlingQuotaExceeded, ErrorClass::Retry),
            (C::KafkaStorageError, ErrorClass::Retry),
            (C::Authentication, ErrorClass::Retry),
            (C::SaslAuthenticationFailed, ErrorClass::Retry),
            (C::SSL, ErrorClass::Retry),
            (C::PurgeQueue, ErrorClass::Retry),
            (C::PurgeInflight, ErrorClass::Retry),
            (C::Unknown, ErrorClass::Retry),
            (
                C::MessageSizeTooLarge,
                ErrorClass::Final(DropReason::DestinationEncode),
            ),
            (
                C::InvalidMessageSize,
                ErrorClass::Final(DropReason::DestinationEncode),
            ),
            (
                C::TopicAuthorizationFailed,
                ErrorClass::Final(DropReason::DestinationRefused),
            ),
            (
                C::UnknownTopicOrPartition,
                ErrorClass::Final(DropReason::DestinationUnknownTopic),
            ),
            (
                C::UnknownTopic,
                ErrorClass::Final(DropReason::DestinationUnknownTopic),
            ),
            (
                C::UnknownPartition,
                ErrorClass::Final(DropReason::DestinationUnknownTopic),
            ),
            (
                C::InvalidTopic,
                ErrorClass::Final(DropReason::DestinationUnknownTopic),
            ),
            (
                C::InvalidRecord,
                ErrorClass::Final(DropReason::DestinationRefused),
            ),
            (
                C::PolicyViolation,
                ErrorClass::Final(DropReason::DestinationRefused),
            ),
            (
                C::UnsupportedCompressionType,
                ErrorClass::Final(DropReason::DestinationRefused),
            ),
            (C::Fatal, ErrorClass::Fatal),
            (C::ProducerFenced, ErrorClass::Fatal),
            (C::InvalidProducerEpoch, ErrorClass::Fatal),
            (C::OutOfOrderSequenceNumber, ErrorClass::Fatal),
        ];
        for (code, class) in table {
            assert_eq!(classify(*code), *class, "{code:?}");
        }
    }
}
