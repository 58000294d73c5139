//! The sinks: each destination kind as a [`crate::sink::Sink`]: an MQTT broker ([`mqtt`]) and a
//! Kafka cluster ([`kafka`]); Parquet comes with its connector.

pub(crate) mod kafka;
pub(crate) mod mqtt;
