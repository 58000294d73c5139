//! A short run of the naive bridge (`mosquitto_sub | mosquitto_pub -l`) through the bench
//! harness, when Debian's mosquitto-clients are installed; skipped with the reason otherwise.

use std::io::Write;
use std::path::PathBuf;

use sluice_codec::QoS;
use sluice_config_agent::{MemFiles, Options, load_and_validate};
use sluice_perf::bench::{self, BenchArgs, Case, Implementation};

#[test]
fn naive_bridge_short_run() {
    let args = BenchArgs {
        ready_timeout_secs: 5,
        first_message_timeout_secs: 5,
        idle_timeout_secs: 2,
        ..BenchArgs::default()
    };
    if let Err(reason) = bench::naive_available(&args) {
        let _ = writeln!(std::io::stderr(), "skipped: {reason}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let case = Case {
            implementation: Implementation::Naive,
            payload_bytes: 100,
            qos,
            messages: 2_000,
        };
        let r = bench::run_case(&args, case, work.path());
        assert_eq!(r.error, None);
        assert_eq!(r.stats.received, 2_000, "{r:?}");
        assert_eq!(r.missing(), 0, "{r:?}");
        assert_eq!(r.stats.duplicates, 0, "{r:?}");
        assert!(r.msgs_per_sec.is_some_and(|m| m > 0.0), "{r:?}");
        assert!(r.peak_rss_kib > 0, "{r:?}");
        let json = r.to_json();
        assert_eq!(json["implementation"], "naive");
        assert_eq!(json["received"], 2_000);
    }
}

#[test]
fn sluice_manifests_are_valid() {
    // The bench's manifests, checked with the agent's own library and the option the bench
    // passes (`--local-broker <source>`); the bench also runs `config-agent validate` before it
    // starts the processes.
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let src = "127.0.0.1:41883".parse().unwrap();
        let sink = "127.0.0.1:41884".parse().unwrap();
        let yaml = bench::manifests(src, sink, qos, 100);
        let mut files = MemFiles::new();
        files.insert("bench.yaml", yaml);
        let options = Options {
            local_broker_host: "127.0.0.1:41883".into(),
            ..Options::default()
        };
        let report = load_and_validate(&files, &[PathBuf::from("bench.yaml")], &options);
        assert!(report.diagnostics.is_empty(), "{:#?}", report.diagnostics);
        let snapshot = report.snapshot.expect("valid");
        assert_eq!(snapshot.dataflows.len(), 1);
    }
}
