//! Sluice's data plane: the per-core runtime, the dataflows it runs (sources, the dataflow core,
//! sinks), and the control socket through which `config-agent` configures it. The design is in
//! docs/architecture.md.
//!
//! Where a message goes, MQTT in, MQTT out:
//!
//! | stage | module | what happens |
//! |---|---|---|
//! | bytes off the socket | `mqtt::connection` | read into the connection's buffer (through TLS, WebSocket) |
//! | frames | `mqtt::session` | decoded in place; a PUBLISH and its `AckToken` |
//! | message | `sources::mqtt` | a carrier-neutral `message::Message` of the frame's slices |
//! | hold | `dataflow::core` | routed, held by ticket, backpressure |
//! | route | `transform::route` | destination topic, properties, expiry, CloudEvents |
//! | publish | `sinks::mqtt` | a PUBLISH to the destination session, written with vectored writes |
//! | outcome | `sinks::mqtt` | PUBACK from the destination: `Delivered`, `Refused`, `Retry` |
//! | acknowledge | `dataflow::core` then `sources::mqtt` | PUBACK to the source, in receive order |
//!
//! Modules import only those below them in docs/architecture.md's layer table
//! (`tests/layers.rs` checks it).

#[doc(hidden)]
pub mod bench_support;
pub mod cli;
pub(crate) mod config;
pub(crate) mod control;
pub(crate) mod dataflow;
pub(crate) mod kafka;
pub(crate) mod message;
pub(crate) mod mqtt;
pub mod net;
pub(crate) mod observe;
pub(crate) mod runtime;
pub mod secrets;
pub(crate) mod sink;
pub(crate) mod sinks;
pub(crate) mod source;
pub(crate) mod sources;
pub(crate) mod transform;
