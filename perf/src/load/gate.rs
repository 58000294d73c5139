//! The CI gate: thresholds on a run's figures (`--max-p99`, `--max-loss`, `--min-rate`, ...).
//! A run that breaks any of them fails with every broken threshold on one line, so that a CI
//! job's log says why at a glance.

use std::time::Duration;

use super::args::{Limit, LoadArgs};
use super::report::{Summary, fmt_count, fmt_ns};

/// The thresholds of a run.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    max_p50: Option<Duration>,
    max_p99: Option<Duration>,
    max_p999: Option<Duration>,
    max_latency: Option<Duration>,
    max_loss: Option<Limit>,
    max_duplicates: Option<Limit>,
    max_reordered: Option<Limit>,
    min_rate: Option<f64>,
    /// A share of the offered messages, 0..=1.
    min_sent: Option<f64>,
    fail_on_disconnect: bool,
}

impl Gate {
    /// The thresholds given on the command line.
    ///
    /// # Errors
    /// For a limit that does not parse.
    pub fn from_args(a: &LoadArgs) -> anyhow::Result<Self> {
        let limit = |s: &Option<String>| s.as_deref().map(Limit::parse).transpose();
        Ok(Self {
            max_p50: a.max_p50,
            max_p99: a.max_p99,
            max_p999: a.max_p999,
            max_latency: a.max_latency,
            max_loss: limit(&a.max_loss)?,
            max_duplicates: limit(&a.max_duplicates)?,
            max_reordered: limit(&a.max_reordered)?,
            min_rate: a.min_rate,
            min_sent: a.min_sent.as_deref().map(share).transpose()?,
            fail_on_disconnect: a.fail_on_disconnect,
        })
    }

    /// Whether any threshold is set.
    pub fn is_set(&self) -> bool {
        self.max_p50.is_some()
            || self.max_p99.is_some()
            || self.max_p999.is_some()
            || self.max_latency.is_some()
            || self.max_loss.is_some()
            || self.max_duplicates.is_some()
            || self.max_reordered.is_some()
            || self.min_rate.is_some()
            || self.min_sent.is_some()
            || self.fail_on_disconnect
    }

    /// The broken thresholds, each as a short phrase; empty when the run passes.
    pub fn check(&self, s: &Summary) -> Vec<String> {
        let mut failed = Vec::new();
        let latency = s.latency.as_ref();
        for (name, limit, value) in [
            ("p50", self.max_p50, latency.map(|l| l.p50)),
            ("p99", self.max_p99, latency.map(|l| l.p99)),
            ("p99.9", self.max_p999, latency.map(|l| l.p999)),
            ("max latency", self.max_latency, latency.map(|l| l.max)),
        ] {
            let Some(limit) = limit else { continue };
            let limit_ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
            match value {
                Some(v) if v > limit_ns => {
                    failed.push(format!("{name} {} > {}", fmt_ns(v), fmt_ns(limit_ns)))
                }
                Some(_) => {}
                None => failed.push(format!("{name}: nothing was received")),
            }
        }
        for (name, limit, value) in [
            ("lost", self.max_loss, s.lost),
            ("duplicates", self.max_duplicates, s.duplicates),
            ("out of order", self.max_reordered, s.reordered),
        ] {
            if let Some(limit) = limit
                && !limit.allows(value, s.expected)
            {
                failed.push(format!(
                    "{name} {} of {} > {limit}",
                    fmt_count(value),
                    fmt_count(s.expected)
                ));
            }
        }
        if let Some(min) = self.min_rate
            && s.receive_rate() < min
        {
            failed.push(format!("received {:.0}/s < {min:.0}/s", s.receive_rate()));
        }
        if let Some(share) = self.min_sent
            && let Some(offered) = s.offered
            && (s.sent as f64) < share * offered as f64
        {
            failed.push(format!(
                "sent {} < {:.1}% of the {} offered",
                fmt_count(s.sent),
                share * 100.0,
                fmt_count(offered)
            ));
        }
        if self.fail_on_disconnect && s.disconnects > 0 {
            failed.push(format!("{} connection(s) lost", s.disconnects));
        }
        failed
    }
}

/// A share: `99%` or `0.99`.
fn share(s: &str) -> anyhow::Result<f64> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| anyhow::anyhow!("`{s}`: a share such as 99% or 0.99"))?;
    if !(0.0..=1.0).contains(&v) {
        anyhow::bail!("`{s}`: a share such as 99% or 0.99");
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::report::Latency;

    fn summary() -> Summary {
        Summary {
            setup: Vec::new(),
            secs: 10.0,
            offered: Some(10_000),
            sent: 9_000,
            acked: 9_000,
            refused: 0,
            received: 8_990,
            expected: 9_000,
            lost: 10,
            duplicates: 0,
            reordered: 0,
            foreign: 0,
            disconnects: 1,
            latency: Some(Latency {
                count: 8_990,
                p50: 1_000_000,
                p90: 2_000_000,
                p99: 12_000_000,
                p999: 20_000_000,
                max: 30_000_000,
                mean: 1.5e6,
            }),
            lateness: None,
            from_send: None,
            steps: Vec::new(),
            groups: vec![super::super::report::GroupSummary {
                name: "s0".into(),
                distinct: 8_990,
                lost: 10,
                duplicates: 0,
                reordered: 0,
                lost_by_publisher: vec![(0, 10)],
            }],
            series: Vec::new(),
            cpu_secs: 0.1,
            errors: Vec::new(),
        }
    }

    #[test]
    fn each_broken_threshold_is_named() {
        let g = Gate {
            max_p99: Some(Duration::from_millis(10)),
            max_p50: Some(Duration::from_millis(5)),
            max_loss: Some(Limit::Count(0)),
            min_rate: Some(1000.0),
            min_sent: Some(0.99),
            fail_on_disconnect: true,
            ..Gate::default()
        };
        assert!(g.is_set());
        let f = g.check(&summary());
        assert_eq!(
            f,
            [
                "p99 12.00 ms > 10.00 ms",
                "lost 10 of 9,000 > 0",
                "received 899/s < 1000/s",
                "sent 9,000 < 99.0% of the 10,000 offered",
                "1 connection(s) lost"
            ]
        );
        let lenient = Gate {
            max_loss: Some(Limit::Share(0.01)),
            max_p99: Some(Duration::from_millis(20)),
            ..Gate::default()
        };
        assert!(lenient.check(&summary()).is_empty());
        assert!(!Gate::default().is_set());
    }
}
