//! The Prometheus text exposition format, version 0.0.4, of the data plane's metrics: what a
//! scrape of the [`Registry`] shows, one family after another with `# HELP` and `# TYPE`, label
//! values escaped. Served by [`super::http`]; the metric table is in [`super::metrics`].
//!
//! Written by hand rather than with a client crate: the counters are the per-core blocks of
//! [`super::metrics`] (one writer each, no atomics read-modify-write), which such crates do not
//! model, and the format is a few lines of text.

use std::fmt::{self, Write as _};

use super::metrics::{LATENCY_BUCKETS_SECONDS, Registry, Scrape, Totals};
use crate::message::{DropReason, Side};

/// Appends every metric to `out` in the Prometheus text exposition format, version 0.0.4
/// (served as `text/plain; version=0.0.4`), summed per dataflow over cores, dataflows sorted
/// by name.
pub(crate) fn render(registry: &Registry, out: &mut String) {
    let Scrape {
        snapshot_applied,
        dataflows,
        not_running,
        build,
    } = registry.scrape();

    family(out, &UP);
    sample(out, UP.name, &[], 1);
    process(out, &super::process::read());
    if let Some(b) = build {
        family(out, &BUILD_INFO);
        let cores = b.cores.to_string();
        let labels = [
            ("version", b.version),
            ("commit", b.commit),
            ("io_driver", b.io_driver),
            ("cores", cores.as_str()),
            ("pinned", if b.pinned { "true" } else { "false" }),
        ];
        sample(out, BUILD_INFO.name, &labels, 1);
    }
    family(out, &SNAPSHOT_APPLIED);
    sample(out, SNAPSHOT_APPLIED.name, &[], u8::from(snapshot_applied));

    family(out, &RUNNING);
    let mut running: Vec<(&str, u8)> = dataflows
        .iter()
        .map(|(df, _)| (df.as_str(), 1))
        .chain(not_running.iter().map(|(df, _, _)| (df.as_str(), 0)))
        .collect();
    running.sort_unstable();
    running.dedup_by_key(|(df, _)| *df);
    for (df, up) in running {
        sample(out, RUNNING.name, &[("dataflow", df)], up);
    }

    for (f, value) in PER_DATAFLOW {
        family(out, &f);
        for (df, t) in &dataflows {
            sample(out, f.name, &[("dataflow", df.as_str())], value(t));
        }
    }

    family(out, &DROPPED);
    for (df, t) in &dataflows {
        for &reason in DropReason::ALL {
            let n = t.dropped_for(reason);
            if n > 0 {
                let labels = [("dataflow", df.as_str()), ("reason", reason.as_str())];
                sample(out, DROPPED.name, &labels, n);
            }
        }
    }

    for (f, value) in PER_SIDE {
        family(out, &f);
        for (df, t) in &dataflows {
            for side in Side::ALL {
                let labels = [("dataflow", df.as_str()), ("side", side.as_str())];
                sample(out, f.name, &labels, value(t, side));
            }
        }
    }

    family(out, &ACK_LATENCY);
    for (df, t) in &dataflows {
        let mut cumulative = 0;
        for (i, n) in t.ack_latency_buckets.iter().enumerate() {
            cumulative += n;
            let le = match LATENCY_BUCKETS_SECONDS.get(i) {
                Some(bound) => bound.to_string(),
                None => "+Inf".to_owned(),
            };
            let labels = [("dataflow", df.as_str()), ("le", &le)];
            sample(
                out,
                "sluice_ack_latency_seconds_bucket",
                &labels,
                cumulative,
            );
        }
        let labels = [("dataflow", df.as_str())];
        let sum = t.ack_latency_sum_seconds;
        sample(out, "sluice_ack_latency_seconds_sum", &labels, sum);
        sample(out, "sluice_ack_latency_seconds_count", &labels, cumulative);
    }
}

/// A metric family's name, type and help text.
/// Prometheus' standard process metrics, and each worker thread's CPU time.
fn process(out: &mut String, p: &super::process::ProcessStats) {
    family(out, &PROCESS_CPU);
    sample(out, PROCESS_CPU.name, &[], p.cpu_seconds);
    family(out, &PROCESS_RSS);
    sample(out, PROCESS_RSS.name, &[], p.resident_bytes);
    family(out, &PROCESS_OPEN_FDS);
    sample(out, PROCESS_OPEN_FDS.name, &[], p.open_fds);
    if let Some(max) = p.max_fds {
        family(out, &PROCESS_MAX_FDS);
        sample(out, PROCESS_MAX_FDS.name, &[], max);
    }
    if let Some(start) = p.start_time_seconds {
        family(out, &PROCESS_START);
        sample(out, PROCESS_START.name, &[], start);
    }
    family(out, &WORKER_CPU);
    for (core, secs) in &p.workers {
        let core = core.to_string();
        sample(out, WORKER_CPU.name, &[("core", core.as_str())], secs);
    }
}

const PROCESS_CPU: Family = Family {
    name: "process_cpu_seconds_total",
    kind: "counter",
    help: "User and system CPU time of the data plane, seconds.",
};
const PROCESS_RSS: Family = Family {
    name: "process_resident_memory_bytes",
    kind: "gauge",
    help: "Resident memory of the data plane, bytes.",
};
const PROCESS_OPEN_FDS: Family = Family {
    name: "process_open_fds",
    kind: "gauge",
    help: "Open file descriptors.",
};
const PROCESS_MAX_FDS: Family = Family {
    name: "process_max_fds",
    kind: "gauge",
    help: "The soft limit on open file descriptors.",
};
const PROCESS_START: Family = Family {
    name: "process_start_time_seconds",
    kind: "gauge",
    help: "Start time of the data plane, seconds since the Unix epoch.",
};
const WORKER_CPU: Family = Family {
    name: "sluice_worker_cpu_seconds_total",
    kind: "counter",
    help: "CPU time of each worker thread (one event loop per core), seconds: how busy each core is.",
};

#[derive(Debug, Clone, Copy)]
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const UP: Family = Family {
    name: "sluice_up",
    kind: "gauge",
    help: "1 while the data plane runs.",
};
const BUILD_INFO: Family = Family {
    name: "sluice_build_info",
    kind: "gauge",
    help: "1, with the version, the commit, the I/O driver in use (io_uring or epoll), the worker threads and whether they are pinned.",
};
const SNAPSHOT_APPLIED: Family = Family {
    name: "sluice_snapshot_applied",
    kind: "gauge",
    help: "1 when the latest configuration snapshot from the agent is in force.",
};
const RUNNING: Family = Family {
    name: "sluice_dataflow_running",
    kind: "gauge",
    help: "1 while the dataflow runs on at least one core, 0 when it does not run (see /readyz for why).",
};
const DROPPED: Family = Family {
    name: "sluice_messages_dropped_total",
    kind: "counter",
    help: "Messages dropped on purpose, by reason.",
};
const ACK_LATENCY: Family = Family {
    name: "sluice_ack_latency_seconds",
    kind: "histogram",
    help: "Time from receiving a message to acknowledging it to the source.",
};

/// Reads one value of a dataflow's totals.
type Value = fn(&Totals) -> u64;
/// Reads one value of a dataflow's totals for a side.
type SideValue = fn(&Totals, Side) -> u64;

/// Families with one sample per dataflow.
const PER_DATAFLOW: [(Family, Value); 10] = [
    (
        Family {
            name: "sluice_dataflow_cores",
            kind: "gauge",
            help: "Cores the dataflow runs on.",
        },
        |t| t.cores,
    ),
    (
        Family {
            name: "sluice_messages_received_total",
            kind: "counter",
            help: "Messages received from the source.",
        },
        |t| t.messages_received,
    ),
    (
        Family {
            name: "sluice_bytes_received_total",
            kind: "counter",
            help: "Payload bytes received from the source.",
        },
        |t| t.bytes_received,
    ),
    (
        Family {
            name: "sluice_messages_forwarded_total",
            kind: "counter",
            help: "Messages acknowledged by the destination.",
        },
        |t| t.messages_forwarded,
    ),
    (
        Family {
            name: "sluice_bytes_forwarded_total",
            kind: "counter",
            help: "Payload bytes acknowledged by the destination.",
        },
        |t| t.bytes_forwarded,
    ),
    (
        Family {
            name: "sluice_messages_in_flight",
            kind: "gauge",
            help: "Messages received and not yet acknowledged to the source.",
        },
        |t| t.in_flight,
    ),
    (
        Family {
            name: "sluice_receive_maximum_overruns_total",
            kind: "counter",
            help: "QoS 1 messages the source broker sent beyond our Receive Maximum (accepted).",
        },
        |t| t.receive_maximum_overruns,
    ),
    (
        Family {
            name: "sluice_messages_retried_total",
            kind: "counter",
            help: "Messages the destination gave back to be offered again after a backoff.",
        },
        |t| t.retries,
    ),
    (
        Family {
            name: "sluice_kafka_headers_dropped_total",
            kind: "counter",
            help: "Kafka record headers left out of the MQTT message: not UTF-8, or 64 KiB or more.",
        },
        |t| t.kafka_headers_dropped,
    ),
    (
        Family {
            name: "sluice_kafka_commit_failures_total",
            kind: "counter",
            help: "Offset commits of a Kafka source that the group coordinator refused or that failed.",
        },
        |t| t.kafka_commit_failures,
    ),
];

/// Families with one sample per dataflow and side.
const PER_SIDE: [(Family, SideValue); 3] = [
    (
        Family {
            name: "sluice_reconnects_total",
            kind: "counter",
            help: "Reconnections after the first connection, by side.",
        },
        Totals::reconnects,
    ),
    (
        Family {
            name: "sluice_packets_too_large_total",
            kind: "counter",
            help: "Connections closed because the broker sent a packet larger than --max-packet-bytes, by side.",
        },
        Totals::packets_too_large,
    ),
    (
        Family {
            name: "sluice_session_connected",
            kind: "gauge",
            help: "Cores whose session to that side is up.",
        },
        Totals::connected_cores,
    ),
];

/// `# HELP` and `# TYPE` lines. Help texts hold no backslash or line feed, so need no escaping.
fn family(out: &mut String, f: &Family) {
    debug_assert!(!f.help.contains(['\\', '\n']));
    let Family { name, kind, help } = *f;
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// One sample line, label values escaped.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(out, value);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Appends `value` escaped as a label value of the text format: backslash, double quote and line
/// feed become `\\`, `\"` and `\n`.
pub(crate) fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}
