//! Sluice's data plane: the per-core runtime, MQTT sessions, routing and sinks (issue 4), and the
//! control socket through which `config-agent` configures it. See ARCHITECTURE.md.

pub mod auth;
pub mod cli;
pub mod control;
pub mod credentials;
pub mod forward;
pub mod http;
pub mod iovec;
pub mod local;
pub mod logs;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod runtime;
pub mod session;
pub mod sink;
pub mod state;
pub mod transport;
