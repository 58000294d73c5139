//! The sinks: each destination kind as a [`crate::sink::Sink`]: an MQTT broker ([`mqtt`]), a
//! Kafka cluster ([`kafka`]) and Parquet files on a local volume ([`parquet`]).

pub(crate) mod kafka;
pub(crate) mod mqtt;
pub(crate) mod parquet;
