//! What the data plane shows of itself: per-core metric blocks ([`metrics`]), their Prometheus
//! text rendering, the HTTP server for `/metrics`, `/healthz` and `/readyz` ([`http`]), and log
//! setup ([`logs`]), and the process's own figures from `/proc` ([`process`]).

pub(crate) mod http;
pub(crate) mod logs;
pub(crate) mod metrics;
pub(crate) mod process;
pub(crate) mod prometheus;
