//! What a run found, and its reports: the markdown table printed at the end (and written as
//! `report.md`), the JSON file (`report.json`, every figure and the per-second series), and the
//! one-line progress shown while it runs.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latency percentiles, nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Messages measured.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// The percentiles of `h`; `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        })
    }

    fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_us": us(self.p50), "p90_us": us(self.p90), "p99_us": us(self.p99),
            "p999_us": us(self.p999), "max_us": us(self.max), "mean_us": self.mean / 1e3,
        })
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// Shows nanoseconds with a unit that keeps 3 or 4 digits: `87 µs`, `1.24 ms`, `2.1 s`.
pub fn fmt_ns(ns: u64) -> String {
    let v = ns as f64;
    if v < 1e3 {
        format!("{ns} ns")
    } else if v < 1e6 {
        format!("{:.0} µs", v / 1e3)
    } else if v < 1e9 {
        format!("{:.2} ms", v / 1e6)
    } else {
        format!("{:.2} s", v / 1e9)
    }
}

/// Shows a count with thousands separators.
pub fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_rate(r: f64) -> String {
    fmt_count(r.round() as u64)
}

/// One second of the run.
#[derive(Debug, Clone)]
pub struct Point {
    /// Seconds since the start (the end of the interval).
    pub t: f64,
    /// Messages sent in the interval, per second.
    pub sent_rate: f64,
    /// Messages received in the interval, per second.
    pub received_rate: f64,
    /// Latencies of the messages received in the interval.
    pub latency: Option<Latency>,
}

/// One step of the schedule.
#[derive(Debug, Clone)]
pub struct StepSummary {
    /// Offered messages per second; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Seconds.
    pub secs: f64,
    /// Messages scheduled in the step that were sent.
    pub sent: u64,
    /// Of those, copies received.
    pub received: u64,
    /// Their latencies.
    pub latency: Option<Latency>,
}

/// One receiver group (a subscriber, a shared subscription, the Kafka reader).
#[derive(Debug, Clone)]
pub struct GroupSummary {
    /// Its name.
    pub name: String,
    /// Distinct messages it got.
    pub distinct: u64,
    /// Messages sent that it did not get.
    pub lost: u64,
    /// Messages it got more than once.
    pub duplicates: u64,
    /// Messages it got after a later one of the same publisher.
    pub reordered: u64,
    /// The publishers it lost messages of, with how many (the first 100).
    pub lost_by_publisher: Vec<(u32, u64)>,
}

/// Everything a run found.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The options that describe the run, for the report's head.
    pub setup: Vec<(String, String)>,
    /// Seconds of publishing (the schedule's length).
    pub secs: f64,
    /// Messages offered by the schedule (`None` with an unlimited rate).
    pub offered: Option<u64>,
    /// Messages handed to the sessions.
    pub sent: u64,
    /// QoS 1 publishes acknowledged.
    pub acked: u64,
    /// QoS 1 publishes refused.
    pub refused: u64,
    /// Stamped copies received.
    pub received: u64,
    /// Copies expected: sent times the receiver groups.
    pub expected: u64,
    /// Lost, over the groups.
    pub lost: u64,
    /// Duplicates, over the groups.
    pub duplicates: u64,
    /// Reordered, over the groups.
    pub reordered: u64,
    /// Messages without this run's stamp.
    pub foreign: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Latency of everything received.
    pub latency: Option<Latency>,
    /// Latency from the actual send: what a tool without coordinated-omission correction
    /// shows.
    pub from_send: Option<Latency>,
    /// How late the publishers were on their schedule (the load tool's own delay, part of the
    /// latency).
    pub lateness: Option<Latency>,
    /// By step.
    pub steps: Vec<StepSummary>,
    /// By group.
    pub groups: Vec<GroupSummary>,
    /// Per second.
    pub series: Vec<Point>,
    /// CPU seconds of this process over the run.
    pub cpu_secs: f64,
    /// Errors (the first hundred per thread).
    pub errors: Vec<String>,
}

impl Summary {
    /// Messages sent per second.
    pub fn send_rate(&self) -> f64 {
        self.sent as f64 / self.secs.max(1e-9)
    }

    /// Distinct messages received per second, over the groups.
    pub fn receive_rate(&self) -> f64 {
        self.groups.iter().map(|g| g.distinct).sum::<u64>() as f64 / self.secs.max(1e-9)
    }

    /// CPU seconds of the load tool per million messages (sent plus received).
    pub fn cpu_per_million(&self) -> Option<f64> {
        let n = self.sent + self.received;
        (n > 0).then(|| self.cpu_secs / n as f64 * 1e6)
    }

    /// The progress-style one line of the end.
    pub fn line(&self) -> String {
        let mut s = format!(
            "sent {} ({}/s) received {} ({}/s) lost {} duplicates {} reordered {}",
            fmt_count(self.sent),
            fmt_rate(self.send_rate()),
            fmt_count(self.received),
            fmt_rate(self.receive_rate()),
            fmt_count(self.lost),
            fmt_count(self.duplicates),
            fmt_count(self.reordered),
        );
        if let Some(l) = &self.latency {
            let _ = write!(
                s,
                " p50 {} p99 {} p99.9 {} max {}",
                fmt_ns(l.p50),
                fmt_ns(l.p99),
                fmt_ns(l.p999),
                fmt_ns(l.max)
            );
        }
        s
    }

    /// The markdown report.
    pub fn markdown(&self) -> String {
        let mut m = String::from("# sluice-perf load\n\n");
        for (k, v) in &self.setup {
            let _ = writeln!(m, "- {k}: {v}");
        }
        m.push_str("\n| | |\n|---|---|\n");
        let mut row = |k: &str, v: String| {
            let _ = writeln!(m, "| {k} | {v} |");
        };
        row("publishing time", format!("{:.1} s", self.secs));
        if let Some(o) = self.offered {
            row(
                "offered",
                format!(
                    "{} ({}/s)",
                    fmt_count(o),
                    fmt_rate(o as f64 / self.secs.max(1e-9))
                ),
            );
        }
        row(
            "sent",
            format!(
                "{} ({}/s)",
                fmt_count(self.sent),
                fmt_rate(self.send_rate())
            ),
        );
        if self.acked + self.refused > 0 {
            row("acknowledged (QoS 1)", fmt_count(self.acked));
        }
        if self.refused > 0 {
            row("refused by the broker", fmt_count(self.refused));
        }
        if !self.groups.is_empty() {
            row(
                "received",
                format!(
                    "{} of {} expected ({}/s distinct)",
                    fmt_count(self.received),
                    fmt_count(self.expected),
                    fmt_rate(self.receive_rate())
                ),
            );
            row("lost", fmt_count(self.lost));
            row("duplicates", fmt_count(self.duplicates));
            row("out of order", fmt_count(self.reordered));
        }
        if self.foreign > 0 {
            row("messages without this run's stamp", fmt_count(self.foreign));
        }
        row("connections lost", fmt_count(self.disconnects));
        if let Some(l) = &self.latency {
            row(
                "latency p50 / p90 / p99",
                format!("{} / {} / {}", fmt_ns(l.p50), fmt_ns(l.p90), fmt_ns(l.p99)),
            );
            row(
                "latency p99.9 / max",
                format!("{} / {}", fmt_ns(l.p999), fmt_ns(l.max)),
            );
        }
        if let Some(l) = &self.from_send {
            row(
                "latency from the actual send p50 / p99 / p99.9 (uncorrected)",
                format!("{} / {} / {}", fmt_ns(l.p50), fmt_ns(l.p99), fmt_ns(l.p999)),
            );
        }
        if let Some(l) = &self.lateness {
            row(
                "publisher lateness p50 / p99 / max",
                format!("{} / {} / {}", fmt_ns(l.p50), fmt_ns(l.p99), fmt_ns(l.max)),
            );
        }
        if let Some(c) = self.cpu_per_million() {
            row(
                "load tool CPU",
                format!(
                    "{:.2} s ({c:.2} s per million messages sent + received)",
                    self.cpu_secs
                ),
            );
        }
        if self.steps.len() > 1 {
            m.push_str(
                "\n| offered/s | sent/s | received/s | p50 | p99 | p99.9 | max |\n|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            for s in &self.steps {
                let l = s.latency;
                let f = |v: Option<u64>| v.map_or_else(|| "-".into(), fmt_ns);
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    s.rate.map_or_else(|| "max".into(), fmt_rate),
                    fmt_rate(s.sent as f64 / s.secs.max(1e-9)),
                    fmt_rate(s.received as f64 / s.secs.max(1e-9)),
                    f(l.map(|l| l.p50)),
                    f(l.map(|l| l.p99)),
                    f(l.map(|l| l.p999)),
                    f(l.map(|l| l.max)),
                );
            }
        }
        for g in self
            .groups
            .iter()
            .filter(|g| !g.lost_by_publisher.is_empty())
        {
            let list: Vec<String> = g
                .lost_by_publisher
                .iter()
                .take(20)
                .map(|(p, n)| format!("p{p}: {}", fmt_count(*n)))
                .collect();
            let _ = writeln!(
                m,
                "\nLost by publisher at {}: {}{}",
                g.name,
                list.join(", "),
                if g.lost_by_publisher.len() > 20 {
                    ", ..."
                } else {
                    ""
                }
            );
        }
        if self.groups.len() > 1 {
            m.push_str(
                "\n| receiver | distinct | lost | duplicates | out of order |\n|---|---:|---:|---:|---:|\n",
            );
            for g in &self.groups {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {} |",
                    g.name,
                    fmt_count(g.distinct),
                    fmt_count(g.lost),
                    fmt_count(g.duplicates),
                    fmt_count(g.reordered)
                );
            }
        }
        if !self.errors.is_empty() {
            m.push_str("\nErrors:\n");
            for e in self.errors.iter().take(20) {
                let _ = writeln!(m, "- {e}");
            }
            if self.errors.len() > 20 {
                let _ = writeln!(m, "- ... {} more", self.errors.len() - 20);
            }
        }
        m
    }

    /// The JSON report.
    pub fn json(&self) -> Value {
        let lat = |l: &Option<Latency>| l.as_ref().map_or(Value::Null, Latency::json);
        json!({
            "setup": self.setup.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect::<serde_json::Map<_, _>>(),
            "secs": self.secs,
            "offered": self.offered,
            "sent": self.sent,
            "send_rate": self.send_rate(),
            "acked": self.acked,
            "refused": self.refused,
            "received": self.received,
            "receive_rate": self.receive_rate(),
            "expected": self.expected,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "foreign": self.foreign,
            "disconnects": self.disconnects,
            "latency": lat(&self.latency),
            "latency_from_send": lat(&self.from_send),
            "lateness": lat(&self.lateness),
            "cpu_secs": self.cpu_secs,
            "cpu_secs_per_million": self.cpu_per_million(),
            "steps": self.steps.iter().map(|s| json!({
                "rate": s.rate, "secs": s.secs, "sent": s.sent, "received": s.received,
                "latency": lat(&s.latency),
            })).collect::<Vec<_>>(),
            "groups": self.groups.iter().map(|g| json!({
                "name": g.name, "distinct": g.distinct, "lost": g.lost,
                "duplicates": g.duplicates, "reordered": g.reordered,
                "lost_by_publisher": g.lost_by_publisher.iter()
                    .map(|(p, n)| json!({"publisher": p, "lost": n})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "series": self.series.iter().map(|p| json!({
                "t": p.t, "sent_rate": p.sent_rate, "received_rate": p.received_rate,
                "latency": lat(&p.latency),
            })).collect::<Vec<_>>(),
            "errors": self.errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_shown_with_units_and_separators() {
        assert_eq!(fmt_ns(870), "870 ns");
        assert_eq!(fmt_ns(87_400), "87 µs");
        assert_eq!(fmt_ns(1_240_000), "1.24 ms");
        assert_eq!(fmt_ns(2_100_000_000), "2.10 s");
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(1234567), "1,234,567");
        assert_eq!(fmt_count(100), "100");
    }
}
