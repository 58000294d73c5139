//! The Kafka client side shared by the Kafka sink (and, later, source): the librdkafka
//! configuration from an endpoint plan ([`config`]), what each error code means ([`errors`]),
//! and the producer's callback context ([`context`]).

pub(crate) mod config;
pub(crate) mod context;
pub(crate) mod errors;
