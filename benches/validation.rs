//! Criterion benchmark of configuration validation: the agent's whole pipeline (YAML parsing with
//! positions, decoding, validation, the snapshot) over configurations of 10,000, 100,000 and
//! 1,000,000 resources. Validation must be linear in its input: the time per resource stays the
//! same from one size to the next (criterion prints it as a throughput in resources per second).
//!
//! `cargo bench --bench validation` runs it (about five minutes on 2 cores, most of it the
//! million); `SLUICE_BENCH_MAX_RESOURCES=100000 cargo bench --bench validation` stops at 100,000.
//! `cargo test --benches` runs each size once on 100 and 1,000 resources, as a smoke test.
//! Figures and their reading: docs/PERFORMANCE.md.
//!
//! The configuration is what a large site would write: folders of manifest files of 10,000
//! resources each, every ten resources being
//! - four `DataflowEndpoint`s: two MQTT brokers (anonymous; user name and password from a
//!   secret), two Kafka clusters (SASL Plain from a secret; anonymous with gzip and batching);
//! - four `Dataflow`s from the local broker to each of them (topic templates towards MQTT);
//! - the `DataflowProfile` the four dataflows name, and one more MQTT endpoint.
//!
//! The files live in a [`MemFiles`] tree (the secrets they reference too), so the figures are the
//! pipeline's own, without the file system. The bench binary uses mimalloc, as `config-agent` does.
//! Each iteration asserts that the snapshot holds every dataflow.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use sluice_config_agent::{MemFiles, Options, load_and_validate};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Configuration sizes under `cargo bench`, in resources.
const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
/// Sizes in criterion's test mode (`cargo test --benches`, unoptimised).
const SIZES_TEST: [usize; 2] = [100, 1_000];
/// Resources per manifest file.
const PER_FILE: usize = 10_000;
/// Resources per group (see the module doc); sizes are multiples of it.
const GROUP: usize = 10;
/// Dataflows per group.
const DATAFLOWS_PER_GROUP: usize = 4;

const HEADER: &str = "apiVersion: connectivity.iotoperations.azure.com/v1\n";

/// One group of [`GROUP`] resources, numbered `g`, appended to `out` as YAML documents.
fn group(out: &mut String, g: usize) {
    use std::fmt::Write as _;
    let doc = |out: &mut String, body: String| {
        out.push_str("---\n");
        out.push_str(HEADER);
        out.push_str(&body);
    };
    doc(
        out,
        format!(
            "kind: DataflowEndpoint\nmetadata:\n  name: mqtt-{g}\n  namespace: site\nspec:\n  \
             endpointType: Mqtt\n  mqttSettings:\n    host: broker-{g}.example.com:1883\n    \
             authentication:\n      method: Anonymous\n    tls:\n      mode: Disabled\n    \
             qos: 1\n    keepAliveSeconds: 60\n"
        ),
    );
    doc(
        out,
        format!(
            "kind: DataflowEndpoint\nmetadata:\n  name: mqtt-login-{g}\n  namespace: site\n\
             spec:\n  endpointType: Mqtt\n  mqttSettings:\n    host: broker-{g}.example.com:8883\n    \
             authentication:\n      method: UsernamePassword\n      usernamePasswordSettings:\n        \
             secretRef: mqtt-login\n"
        ),
    );
    doc(
        out,
        format!(
            "kind: DataflowEndpoint\nmetadata:\n  name: kafka-sasl-{g}\n  namespace: site\nspec:\n  \
             endpointType: Kafka\n  kafkaSettings:\n    host: kafka-{g}.example.com:9093\n    \
             authentication:\n      method: Sasl\n      saslSettings:\n        saslType: Plain\n        \
             secretRef: kafka-login\n    tls:\n      mode: Enabled\n"
        ),
    );
    doc(
        out,
        format!(
            "kind: DataflowEndpoint\nmetadata:\n  name: kafka-{g}\n  namespace: site\nspec:\n  \
             endpointType: Kafka\n  kafkaSettings:\n    host: kafka-{g}.example.com:9092\n    \
             authentication:\n      method: Anonymous\n    tls:\n      mode: Disabled\n    \
             compression: Gzip\n    batching:\n      mode: Enabled\n      latencyMs: 5\n      \
             maxMessages: 10000\n"
        ),
    );
    for (i, target) in ["mqtt", "mqtt-login", "kafka-sasl", "kafka"]
        .iter()
        .enumerate()
    {
        let mut body = format!(
            "kind: Dataflow\nmetadata:\n  name: flow-{target}-{g}\n  namespace: site\nspec:\n  \
             profileRef: profile-{g}\n"
        );
        // AIO's Kafka destinations take a static topic; MQTT ones a template.
        let topic = if i < 2 {
            format!("out/{g}/${{inputTopic.2}}")
        } else {
            format!("telemetry-{g}")
        };
        let _ = write!(
            body,
            "  operations:\n  - operationType: Source\n    sourceSettings:\n      \
             endpointRef: default\n      dataSources:\n      - sensors/{g}/+/telemetry\n  \
             - operationType: Destination\n    destinationSettings:\n      \
             endpointRef: {target}-{g}\n      dataDestination: {topic}\n"
        );
        doc(out, body);
    }
    doc(
        out,
        format!(
            "kind: DataflowProfile\nmetadata:\n  name: profile-{g}\n  namespace: site\nspec:\n  \
             instanceCount: 1\n"
        ),
    );
    doc(
        out,
        format!(
            "kind: DataflowEndpoint\nmetadata:\n  name: spare-{g}\n  namespace: site\nspec:\n  \
             endpointType: Mqtt\n  mqttSettings:\n    host: spare-{g}.example.com:1883\n"
        ),
    );
}

/// A configuration of `resources` resources (plus the local broker's endpoint), as files of
/// [`PER_FILE`] resources under `manifests/`, and the secrets it references under `secrets/`.
fn configuration(resources: usize) -> MemFiles {
    let mut files = MemFiles::new();
    files
        .insert("secrets/mqtt-login/username", "sluice")
        .insert("secrets/mqtt-login/password", "secret")
        .insert("secrets/kafka-login/username", "sluice")
        .insert("secrets/kafka-login/password", "secret");
    let mut text = format!(
        "{HEADER}kind: DataflowEndpoint\nmetadata:\n  name: default\n  namespace: site\nspec:\n  \
         endpointType: Mqtt\n  mqttSettings:\n    host: aio-broker:18883\n    tls:\n      \
         mode: Disabled\n"
    );
    let groups = resources / GROUP;
    let mut file = 0;
    for g in 0..groups {
        group(&mut text, g);
        if ((g + 1) * GROUP).is_multiple_of(PER_FILE) || g + 1 == groups {
            files.insert(
                format!("manifests/{file:04}.yaml"),
                std::mem::take(&mut text),
            );
            file += 1;
        }
    }
    files
}

/// Whether criterion benchmarks (`cargo bench` passes `--bench`) or only tests each routine once
/// (`cargo test --benches`, or `cargo bench -- --test`); criterion decides the same way.
fn benchmarking() -> bool {
    let (mut bench, mut test) = (false, false);
    for a in std::env::args().skip(1) {
        bench |= a == "--bench";
        test |= a == "--test";
    }
    bench && !test
}

fn sizes() -> Vec<usize> {
    if !benchmarking() {
        return SIZES_TEST.to_vec();
    }
    let max = std::env::var("SLUICE_BENCH_MAX_RESOURCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    SIZES.into_iter().filter(|&n| n <= max).collect()
}

fn validation(c: &mut Criterion) {
    let options = Options {
        secrets_dir: Some(PathBuf::from("secrets")),
        ..Options::default()
    };
    let paths = [PathBuf::from("manifests")];
    let mut group = c.benchmark_group("validate");
    group.sampling_mode(SamplingMode::Flat);
    for resources in sizes() {
        let files = configuration(resources);
        // The expected snapshot, checked once before timing and then on every iteration.
        let report = load_and_validate(&files, &paths, &options);
        let errors: Vec<_> = report.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        let dataflows = resources / GROUP * DATAFLOWS_PER_GROUP;
        let snapshot = report
            .snapshot
            .expect("a valid configuration has a snapshot");
        assert_eq!(snapshot.dataflows.len(), dataflows);
        drop(snapshot);

        // Fewer samples for the larger sizes: criterion's minimum of 10 for a million.
        group.sample_size(if resources >= 100_000 { 10 } else { 20 });
        group.measurement_time(Duration::from_secs(if resources >= 100_000 {
            30
        } else {
            10
        }));
        group.throughput(Throughput::Elements(resources as u64 + 1));
        group.bench_function(format!("{resources}"), |b| {
            b.iter(|| {
                let report = load_and_validate(black_box(&files), &paths, &options);
                let snapshot = report.snapshot.expect("still valid");
                assert_eq!(snapshot.dataflows.len(), dataflows);
                snapshot
            });
        });
    }
    group.finish();
}

criterion_group!(benches, validation);
criterion_main!(benches);
