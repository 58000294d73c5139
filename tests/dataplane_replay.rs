//! The data plane under load, end to end: `dataplane` and `config-agent` (this package's
//! binaries) bridge the `sluice-perf` replay broker's stream back into its sink, at QoS 0 and
//! QoS 1, with small and large payloads and two cores (shared subscriptions). The replay broker
//! streams pre-encoded frames as fast as they are read, so reads end in the middle of frames all
//! the time: the test checks that every sequence number arrives, exactly once at QoS 0 and at
//! least once at QoS 1.
//!
//! This is a correctness test under load, not a benchmark: no figure is asserted (see
//! docs/PERFORMANCE.md for those).

use std::path::PathBuf;

use sluice_codec::QoS;
use sluice_perf::bench::{BenchArgs, Case, Implementation, run_case};

fn args() -> BenchArgs {
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_dataplane"))
        .parent()
        .expect("binary folder")
        .to_path_buf();
    BenchArgs {
        only: Some(Implementation::Sluice),
        cores: 2,
        bin_dir: Some(bin_dir),
        first_message_timeout_secs: 30,
        idle_timeout_secs: 10,
        ..BenchArgs::default()
    }
}

fn run(qos: QoS, payload_bytes: usize, messages: u64) {
    let args = args();
    let work = tempfile::tempdir().expect("tempdir");
    let case = Case {
        implementation: Implementation::Sluice,
        payload_bytes,
        qos,
        messages,
    };
    let result = run_case(&args, case, work.path());
    let dir = work
        .path()
        .join(format!("sluice-{payload_bytes}-q{}", qos as u8));
    let logs = || {
        let mut s = String::new();
        for name in ["dataplane.log", "config-agent.log"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
                s.push_str(&format!("--- {name} (last 40 lines)\n"));
                let lines: Vec<&str> = text.lines().collect();
                for l in &lines[lines.len().saturating_sub(40)..] {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        s
    };
    assert!(result.error.is_none(), "{:?}\n{}", result.error, logs());
    assert_eq!(
        result.missing(),
        0,
        "{} of {messages} sequence numbers never arrived: {:?}\n{}",
        result.missing(),
        result.stats,
        logs()
    );
    if qos == QoS::AtMostOnce {
        assert_eq!(result.stats.duplicates, 0, "{:?}", result.stats);
    }
}

#[test]
fn qos0_small_payloads() {
    run(QoS::AtMostOnce, 100, 200_000);
}

#[test]
fn qos0_large_payloads() {
    run(QoS::AtMostOnce, 1024, 100_000);
}

#[test]
fn qos1_small_payloads() {
    run(QoS::AtLeastOnce, 100, 200_000);
}

#[test]
fn qos1_large_payloads() {
    run(QoS::AtLeastOnce, 1024, 100_000);
}
