//! The Kafka client side shared by the Kafka sink and source: the librdkafka configuration from
//! an endpoint plan ([`config`]), what each error code means ([`errors`]), the clients' callback
//! contexts ([`context`]), and a consumed record's headers read safely ([`headers`]).

pub(crate) mod config;
pub(crate) mod context;
pub(crate) mod errors;
pub(crate) mod headers;
