//! MQTT to Kafka in the bench harness: the data plane's manifests are valid, a short run of the
//! naive bridge (`mosquitto_sub | kcat -P`) into the blackhole counts every message (skipped with
//! the reason when mosquitto-clients, kcat or the venv's librdkafka are missing), and the
//! producer layout benchmark delivers every record once in both layouts.

use std::io::Write;
use std::path::PathBuf;

use sluice_codec::QoS;
use sluice_config_agent::{MemFiles, Options, load_and_validate};
use sluice_perf::bench::{self, BenchArgs, Case, Destination, Implementation};
use sluice_perf::kafka_bench;
use sluice_perf::producers::{self, Layout, ProducersArgs};

#[test]
fn kafka_manifests_are_valid() {
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let src = "127.0.0.1:41883".parse().unwrap();
        let kafka = "127.0.0.1:49092".parse().unwrap();
        let yaml = kafka_bench::manifests(src, kafka, qos, 65535);
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

#[test]
fn kcat_gets_the_data_planes_producer_settings() {
    let a = kafka_bench::kcat_args("127.0.0.1:9092");
    assert_eq!(
        &a[..5],
        ["-P", "-b", "127.0.0.1:9092", "-t", kafka_bench::TOPIC]
    );
    for (k, v) in kafka_bench::PRODUCER_SETTINGS {
        assert!(a.contains(&format!("{k}={v}")), "{k} missing from {a:?}");
    }
    assert!(a.contains(&"enable.idempotence=true".to_owned()));
}

#[test]
fn naive_kafka_bridge_short_run() {
    let args = BenchArgs {
        destination: vec![Destination::Kafka],
        max_inflight: 1000,
        ready_timeout_secs: 5,
        first_message_timeout_secs: 10,
        idle_timeout_secs: 3,
        ..BenchArgs::default()
    };
    if let Err(reason) = kafka_bench::naive_available(&args) {
        let _ = writeln!(std::io::stderr(), "skipped: {reason:#}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let case = Case {
            implementation: Implementation::Naive,
            payload_bytes: 100,
            qos,
            messages: 3_000,
        };
        let r = bench::run_case_to(&args, case, Destination::Kafka, work.path());
        assert_eq!(r.error, None, "{r:?}");
        assert_eq!(r.received(), 3_000, "{r:?}");
        assert_eq!(r.missing(), 0, "{r:?}");
        assert_eq!(r.duplicates(), 0, "{r:?}");
        assert_eq!(r.kafka_anomalies(), 0, "{r:?}");
        let k = r.kafka.as_ref().expect("blackhole stats");
        assert_eq!(k.producer_ids, 1, "kcat is one idempotent producer: {k:?}");
        assert!(r.msgs_per_sec.is_some_and(|m| m > 0.0), "{r:?}");
        assert!(r.peak_rss_kib > 0, "{r:?}");
        let json = r.to_json();
        assert_eq!(json["destination"], "kafka");
        assert_eq!(json["blackhole"]["records"], 3_000);
        assert!(r.kafka_line().is_some());
    }
}

#[test]
fn both_producer_layouts_deliver_every_record_once() {
    let args = ProducersArgs {
        records: 20_000,
        ..ProducersArgs::default()
    };
    for layout in [Layout::PerThread, Layout::Shared] {
        let r = producers::run_once(&args, layout, 1).expect("run");
        let warmup = match layout {
            Layout::PerThread => 2,
            Layout::Shared => 1,
        };
        assert_eq!(r.records, 40_000);
        assert!(r.clean(warmup), "{:?}: {:?}", layout, r.blackhole);
        assert_eq!(r.blackhole.producer_ids, warmup, "{:?}", r.blackhole);
        assert!(r.records_per_sec() > 0.0);
        assert_eq!(r.to_json()["layout"], layout.name());
    }
}
