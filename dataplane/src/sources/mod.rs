//! The sources: each source kind as a [`crate::source::Source`]: an MQTT subscription
//! ([`mqtt`]) and a Kafka consumer ([`kafka`]).

pub(crate) mod kafka;
pub(crate) mod mqtt;
