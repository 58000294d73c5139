//! Sluice's performance tooling: load generator, replay broker, verifier and the benchmark
//! harness. Nothing is implemented here yet; see ARCHITECTURE.md ("Where the time goes").
