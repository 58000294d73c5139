//! Sluice's performance tooling (see docs/architecture.md, "Where the time goes", and
//! `perf/README.md`):
//!
//! - [`replay`]: the replay broker, a minimal MQTT server that streams pre-encoded PUBLISH
//!   frames as fast as a client reads and counts what is published back to it;
//! - [`client`]: a small blocking MQTT client, the trivial reader used to measure the replay
//!   broker alone, and the tests' client;
//! - [`ceiling`]: the replay broker alone with trivial readers: its own ceiling;
//! - [`bench`]: the harness that runs MQTT to MQTT through the data plane and through a naive
//!   `mosquitto_sub | mosquitto_pub` bridge against the replay broker;
//! - [`procstat`]: CPU time and peak memory of processes, from `/proc`, and child processes that
//!   are stopped when dropped;
//! - [`payload`]: the payload format (a sequence number, then filler);
//! - [`kafka_blackhole`]: a minimal Kafka broker that acknowledges every Produce request at once
//!   and counts what it received, the sink of MQTT-to-Kafka benchmarks;
//! - [`kafka_bench`]: MQTT to Kafka in [`bench`]: the data plane's manifests with a Kafka
//!   destination, and the naive `mosquitto_sub | kcat -P` bridge;
//! - [`producers`]: one librdkafka producer per thread against one shared, into the blackhole;
//! - [`publishers_bench`]: `sluice-perf load`, mqtt-benchmark and mosquitto_pub as publishers
//!   into the replay broker's sink, side by side;
//! - [`load`]: the load-test tool: open-loop publishers and subscribers against any broker or
//!   through Sluice, latency percentiles, loss, reports with charts and a CI gate.

pub mod bench;
pub mod ceiling;
pub mod client;
pub mod kafka_bench;
pub mod kafka_blackhole;
pub mod kafka_source_bench;
pub mod load;
pub mod payload;
pub mod procstat;
pub mod producers;
pub mod publishers_bench;
mod readbuf;
pub mod replay;
