//! The sinks: each destination kind as a [`crate::sink::Sink`]. MQTT today; Kafka and Parquet
//! come with their connectors.

pub(crate) mod mqtt;
