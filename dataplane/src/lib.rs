//! Sluice's data plane: the per-core runtime, MQTT sessions, routing and sinks. Nothing is
//! implemented here yet; it builds on `sluice-codec`. See ARCHITECTURE.md.
