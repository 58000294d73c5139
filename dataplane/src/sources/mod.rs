//! The sources: each source kind as a [`crate::source::Source`]. MQTT today; the Kafka consumer
//! comes with its connector.

pub(crate) mod mqtt;
