//! From a snapshot to what runs: the data plane's environment ([`environment`]), each endpoint
//! kind resolved ([`mqtt_endpoint`], [`kafka_endpoint`], [`local_endpoint`]), and the plan of each dataflow or why it does not run
//! ([`plan`], [`skip`]). Built on the control thread, read by the workers.

pub(crate) mod environment;
pub(crate) mod kafka_endpoint;
pub(crate) mod local_endpoint;
pub(crate) mod mqtt_endpoint;
pub(crate) mod plan;
pub(crate) mod skip;
