//! Fixture tests: AIO documentation examples that load and validate, a corpus of invalid
//! manifests with the exact error each must give, round trips through JSON, and the data plane's
//! re-validation of a snapshot.

use std::path::{Path, PathBuf};

use sluice_config_agent::model::{
    ApiVersion, Compression, EndpointSpec, MqttAuthentication, MqttProtocol, MqttSettings,
    Operation, OperationalMode, ServiceAccountTokenSettings,
};
use sluice_config_agent::snapshot::{DEFAULT_LOCAL_BROKER_HOST, V1BETA1_LOCAL_BROKER_HOST};
use sluice_config_agent::{
    Diagnostic, MemFiles, Options, RealFiles, Severity, Snapshot, load_and_validate,
    validate_snapshot,
};

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests")
}

/// The outline of a certificate and of a PKCS #8 key (empty parts): what validation checks.
const CERT: &str = "-----BEGIN CERTIFICATE-----\nMAcwADAAAwEA\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMAcCAQAwAAQA\n-----END PRIVATE KEY-----\n";

/// The secrets, ConfigMaps and volumes the invalid corpus refers to, in memory, with the
/// manifests themselves read from disk.
fn fake_files(manifest: &Path) -> MemFiles {
    let mut f = MemFiles::new();
    f.insert(manifest, std::fs::read(manifest).unwrap());
    f.insert("/s/mqtt-cert/client_cert.pem", CERT)
        .insert("/s/mqtt-cert/client_key.pem", KEY)
        .insert("/s/bad-cert/client_cert.pem", "this is not PEM\n")
        .insert("/s/bad-cert/client_key.pem", KEY)
        .insert("/s/kafka-sasl/username", "$ConnectionString")
        .insert("/s/kafka-sasl/password", "secret-value-never-printed")
        .insert("/s/half/username", "user")
        .insert("/s/mosquitto/username", "user")
        .insert("/s/mosquitto/password", "secret-value-never-printed")
        .insert("/c/ca/ca.crt", CERT)
        .insert(
            "/c/bad-ca/ca.crt",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .insert("/v/parquet/.keep", "");
    f
}

fn corpus_options() -> Options {
    Options {
        // Sluice's own use: a mosquitto beside the data plane.
        local_broker_host: "localhost:1883".into(),
        secrets_dir: Some("/s".into()),
        configmaps_dir: Some("/c".into()),
        volumes_dir: Some("/v".into()),
        ..Options::default()
    }
}

fn run_invalid(name: &str) -> Vec<Diagnostic> {
    let path = manifests().join("invalid").join(name);
    let files = fake_files(&path);
    let report = load_and_validate(&files, &[path], &corpus_options());
    assert!(report.snapshot.is_none(), "{name}: a snapshot was built");
    report.diagnostics
}

/// Every invalid manifest and the errors it must give, exactly: (field path, message substring).
/// Warnings are not listed (they do not block).
const INVALID: &[(&str, &[(&str, &str)])] = &[
    (
        "auth-missing-settings.yaml",
        &[(
            "spec.mqttSettings.authentication.x509CertificateSettings",
            "required field is missing",
        )],
    ),
    (
        "auth-unknown-method.yaml",
        &[(
            "spec.mqttSettings.authentication.method",
            "\"Password\" is not a valid authentication method: expected \"Anonymous\", \"X509Certificate\"",
        )],
    ),
    (
        "auth-wrong-settings.yaml",
        &[(
            "spec.mqttSettings.authentication.x509CertificateSettings",
            "does not apply to method Anonymous",
        )],
    ),
    (
        "bad-api-version.yaml",
        &[(
            "apiVersion",
            "is not a valid apiVersion: expected \"connectivity.iotoperations.azure.com/v1\" or \"connectivity.iotoperations.azure.com/v1beta1\"",
        )],
    ),
    (
        "bad-mode.yaml",
        &[(
            "spec.mode",
            "\"On\" is not a valid mode: expected \"Enabled\" or \"Disabled\"",
        )],
    ),
    (
        "bad-mqtt-version.yaml",
        &[(
            "spec.mqttSettings.mqttVersion",
            "expected one of \"v3\" or \"v5\", found the integer 5",
        )],
    ),
    (
        "bad-operation-type.yaml",
        &[(
            "spec.operations[0].operationType",
            "\"Sink\" is not a valid operationType",
        )],
    ),
    (
        "bad-retain.yaml",
        &[(
            "spec.mqttSettings.retain",
            "\"Kept\" is not a valid retain: expected \"Keep\" or \"Never\"",
        )],
    ),
    (
        "bad-shared-subscription.yaml",
        &[(
            "spec.operations[0].sourceSettings.dataSources[0]",
            "has no '/' and topic filter after it [MQTT-4.8.2-2]",
        )],
    ),
    (
        "bad-topic-filter.yaml",
        &[(
            "spec.operations[0].sourceSettings.dataSources[0]",
            "\"sensors/#/temperature\" is not a valid MQTT topic filter: '#' is not the last character [MQTT-4.7.1-1]",
        )],
    ),
    (
        "ca-config-map-missing.yaml",
        &[(
            "spec.mqttSettings.tls.trustedCaCertificateConfigMapRef",
            "ConfigMap folder /c/nope does not exist",
        )],
    ),
    (
        "ca-config-map-not-pem.yaml",
        &[(
            "spec.mqttSettings.tls.trustedCaCertificateConfigMapRef",
            "/c/bad-ca/ca.crt is not valid PEM",
        )],
    ),
    (
        "data-sources-not-list.yaml",
        &[(
            "spec.operations[0].sourceSettings.dataSources",
            "expected a list of strings, found the string \"sensors/#\"",
        )],
    ),
    (
        "destination-bad-template.yaml",
        &[(
            "spec.operations[1].destinationSettings.dataDestination",
            "\"${inputTopic.0}\": topic segments are numbered from 1",
        )],
    ),
    (
        "destination-unknown-variable.yaml",
        &[(
            "spec.operations[1].destinationSettings.dataDestination",
            "unknown variable \"${outputTopic}\"",
        )],
    ),
    (
        "destination-wildcard.yaml",
        &[(
            "spec.operations[1].destinationSettings.dataDestination",
            "\"out/+\" is not a valid MQTT topic name",
        )],
    ),
    (
        "duplicate-endpoint.yaml",
        &[(
            "metadata.name",
            "duplicate DataflowEndpoint \"local\" in namespace \"azure-iot-operations\" (first defined at",
        )],
    ),
    (
        "duplicate-key.yaml",
        &[("", "not valid YAML: duplicated key")],
    ),
    (
        "empty-data-sources.yaml",
        &[(
            "spec.operations[0].sourceSettings.dataSources",
            "at least one topic is needed",
        )],
    ),
    (
        "endpoint-ref-typo.yaml",
        &[(
            "spec.operations[2].destinationSettings.endpointRef",
            "no DataflowEndpoint named \"kafak-out\" in namespace \"azure-iot-operations\" (did you mean \"kafka-out\"?)",
        )],
    ),
    (
        "event-grid-instance-count.yaml",
        &[(
            "spec.operations[0].sourceSettings.endpointRef",
            "Event Grid has no shared subscriptions, so the instance count must be 1",
        )],
    ),
    (
        "host-bad-port.yaml",
        &[(
            "spec.mqttSettings.host",
            "address \"mosquitto:99999\": the port is not a number from 1 to 65535",
        )],
    ),
    (
        "host-no-port.yaml",
        &[(
            "spec.mqttSettings.host",
            "\"mosquitto\" has no port: expected host:port",
        )],
    ),
    (
        "inflight-zero.yaml",
        &[(
            "spec.mqttSettings.maxInflightMessages",
            "0 is out of range: expected 1 to 65535",
        )],
    ),
    (
        "instance-count-range.yaml",
        &[("spec.instanceCount", "0 is out of range: expected 1 to 20")],
    ),
    (
        "invalid-name.yaml",
        &[("metadata.name", "\"Local_Broker\" is not a valid name")],
    ),
    (
        "kafka-bad-bootstrap.yaml",
        &[(
            "spec.kafkaSettings.host",
            "\"kafka2\" has no port: expected host:port, e.g. \"kafka2:9092\"",
        )],
    ),
    (
        "kafka-bad-compression.yaml",
        &[(
            "spec.kafkaSettings.compression",
            "\"Zip\" is not a valid compression: expected \"None\", \"Gzip\", \"Snappy\", \"Lz4\" or \"Zstd\" (did you mean \"Gzip\"?)",
        )],
    ),
    (
        "kafka-destination-bad-topic.yaml",
        &[(
            "spec.operations[1].destinationSettings.dataDestination",
            "\"tele/metry\" is not a Kafka topic",
        )],
    ),
    (
        "kafka-destination-template.yaml",
        &[(
            "spec.operations[1].destinationSettings.dataDestination",
            "a Kafka destination takes a static topic",
        )],
    ),
    (
        "kafka-max-messages-zero.yaml",
        &[(
            "spec.kafkaSettings.batching.maxMessages",
            "must be at least 1",
        )],
    ),
    (
        "kafka-no-host.yaml",
        &[("spec.kafkaSettings.host", "required field is missing")],
    ),
    (
        "kafka-property-no-key.yaml",
        &[(
            "spec.kafkaSettings.partitionStrategy",
            "Property needs partitionKeyProperty",
        )],
    ),
    (
        "kafka-source-no-consumer-group.yaml",
        &[(
            "spec.operations[0].sourceSettings.endpointRef",
            "Kafka source endpoint \"kafka-out\" has no kafkaSettings.consumerGroupId",
        )],
    ),
    (
        "kafka-source-wildcard.yaml",
        &[(
            "spec.operations[0].sourceSettings.dataSources[0]",
            "\"telemetry.*\" is not a Kafka topic: Kafka topics take no wildcards",
        )],
    ),
    (
        "keep-alive-too-large.yaml",
        &[(
            "spec.mqttSettings.keepAliveSeconds",
            "70000 is out of range: expected 0 to 65535 seconds",
        )],
    ),
    (
        "legacy-spec-authentication.yaml",
        &[(
            "spec.authentication",
            "spec-level authentication is not supported; put it under mqttSettings or kafkaSettings",
        )],
    ),
    (
        "local-storage-as-source.yaml",
        &[(
            "spec.operations[0].sourceSettings.endpointRef",
            "DataflowEndpoint \"parquet\" is LocalStorage, which can only be a destination",
        )],
    ),
    (
        "local-storage-bad-folder.yaml",
        &[(
            "spec.operations[1].destinationSettings.dataDestination",
            "\"../up\" is not a folder inside the volume",
        )],
    ),
    (
        "local-storage-both-claims.yaml",
        &[(
            "spec.localStorageSettings.persistentVolumeClaimName",
            "not both",
        )],
    ),
    (
        "local-storage-missing-volume.yaml",
        &[(
            "spec.localStorageSettings.persistentVolumeClaimRef",
            "volume folder /v/nope does not exist",
        )],
    ),
    (
        "missing-api-version.yaml",
        &[("apiVersion", "required field is missing")],
    ),
    (
        "missing-name.yaml",
        &[("metadata.name", "required field is missing")],
    ),
    (
        "mqtt-unknown-field.yaml",
        &[(
            "spec.mqttSettings.keepAliveSecond",
            "unknown field \"keepAliveSecond\" (did you mean \"keepAliveSeconds\"?)",
        )],
    ),
    (
        "multiple-problems.yaml",
        &[
            (
                "spec.mqttSettings.qos",
                "3 is not a supported QoS: expected 0 or 1",
            ),
            (
                "spec.mqttSettings.retian",
                "unknown field \"retian\" (did you mean \"retain\"?)",
            ),
            (
                "spec.operations[0].sourceSettings.dataSources[0]",
                "\"a/#/b\" is not a valid MQTT topic filter",
            ),
            (
                "spec.operations[1].destinationSettings.endpointRef",
                "no DataflowEndpoint named \"kafak-out\"",
            ),
        ],
    ),
    (
        "negative-keep-alive.yaml",
        &[("spec.mqttSettings.keepAliveSeconds", "-1 is out of range")],
    ),
    (
        "no-local-broker.yaml",
        &[(
            "spec.operations",
            "neither the source endpoint \"kafka-in\" nor the destination endpoint \"kafka-out\" is the local MQTT broker",
        )],
    ),
    (
        "no-source.yaml",
        &[(
            "spec.operations",
            "a dataflow needs exactly one Source operation, found 0",
        )],
    ),
    (
        "operation-settings-mismatch.yaml",
        &[
            (
                "spec.operations[0].sourceSettings",
                "required field is missing",
            ),
            (
                "spec.operations[0].destinationSettings",
                "does not apply to operationType Source",
            ),
        ],
    ),
    (
        "pem-invalid.yaml",
        &[(
            "spec.mqttSettings.authentication.x509CertificateSettings.secretRef",
            "/s/bad-cert/client_cert.pem holds no PEM CERTIFICATE",
        )],
    ),
    (
        "profile-legacy-field.yaml",
        &[(
            "spec.logLevel",
            "the 2024 preview's logLevel is now diagnostics.logs.level",
        )],
    ),
    (
        "profile-ref-missing.yaml",
        &[(
            "spec.profileRef",
            "no DataflowProfile named \"fast\" in namespace \"azure-iot-operations\"",
        )],
    ),
    (
        "qos-out-of-range.yaml",
        &[(
            "spec.mqttSettings.qos",
            "2 is not a supported QoS: expected 0 or 1",
        )],
    ),
    (
        "qos-wrong-type.yaml",
        &[(
            "spec.mqttSettings.qos",
            "expected an integer, found the string \"1\"",
        )],
    ),
    (
        "secret-key-missing.yaml",
        &[(
            "spec.mqttSettings.authentication.usernamePasswordSettings.secretRef",
            "secret file /s/half/password does not exist",
        )],
    ),
    (
        "secret-missing.yaml",
        &[(
            "spec.mqttSettings.authentication.usernamePasswordSettings.secretRef",
            "secret folder /s/nope does not exist",
        )],
    ),
    (
        "settings-mismatch.yaml",
        &[
            ("spec.kafkaSettings", "required field is missing"),
            (
                "spec.mqttSettings",
                "does not apply to endpointType Kafka; Kafka takes kafkaSettings",
            ),
        ],
    ),
    ("syntax-error.yaml", &[("", "not valid YAML")]),
    (
        "two-destinations.yaml",
        &[(
            "spec.operations",
            "a dataflow needs exactly one Destination operation, found 2",
        )],
    ),
    (
        "unknown-endpoint-type.yaml",
        &[(
            "spec.endpointType",
            "\"Mqt\" is not a valid endpointType: expected \"Mqtt\", \"Kafka\" or \"LocalStorage\" (did you mean \"Mqtt\"?)",
        )],
    ),
    (
        "unknown-kind.yaml",
        &[("kind", "(did you mean \"DataflowEndpoint\"?)")],
    ),
    (
        "unknown-top-field.yaml",
        &[
            ("spec", "required field is missing"),
            ("specs", "unknown field \"specs\" (did you mean \"spec\"?)"),
        ],
    ),
    (
        "unsupported-endpoint-type.yaml",
        &[(
            "spec.endpointType",
            "endpointType \"DataLakeStorage\" is not supported by Sluice",
        )],
    ),
    (
        "x509-without-tls.yaml",
        &[(
            "spec.mqttSettings.tls.mode",
            "X509Certificate authentication needs TLS",
        )],
    ),
];

#[test]
fn invalid_corpus_gives_exactly_the_expected_errors() {
    let mut on_disk: Vec<String> = std::fs::read_dir(manifests().join("invalid"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let listed: Vec<String> = INVALID.iter().map(|(f, _)| (*f).to_owned()).collect();
    assert_eq!(
        on_disk, listed,
        "every invalid manifest is in the table, in name order"
    );
    assert!(INVALID.len() >= 40);
    let mut failures = Vec::new();
    for (file, expected) in INVALID {
        let diagnostics = run_invalid(file);
        let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
        for (path, message) in *expected {
            if !errors
                .iter()
                .any(|d| d.path == *path && d.message.contains(message))
            {
                failures.push(format!(
                    "{file}: missing error at {path:?} containing {message:?}; got {errors:#?}"
                ));
            }
        }
        for d in &errors {
            if !expected
                .iter()
                .any(|(path, message)| d.path == *path && d.message.contains(message))
            {
                failures.push(format!("{file}: unexpected error {d}"));
            }
            assert!(
                d.file.as_deref().is_some_and(|f| f.ends_with(file)),
                "{file}: {d:?} names its file"
            );
            assert!(d.line.is_some(), "{file}: {d} has a line");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn diagnostics_display_file_line_path_message() {
    let diagnostics = run_invalid("endpoint-ref-typo.yaml");
    let error = diagnostics.iter().find(|d| d.is_error()).unwrap();
    let shown = error.to_string();
    assert!(
        shown.ends_with("endpoint-ref-typo.yaml:49: spec.operations[2].destinationSettings.endpointRef: no DataflowEndpoint named \"kafak-out\" in namespace \"azure-iot-operations\" (did you mean \"kafka-out\"?)"),
        "{shown}"
    );
}

#[test]
fn multiple_problems_in_one_file_are_reported_in_one_pass() {
    let diagnostics = run_invalid("multiple-problems.yaml");
    let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    let mut lines: Vec<u32> = errors.iter().map(|d| d.line.unwrap()).collect();
    let sorted = {
        let mut l = lines.clone();
        l.sort_unstable();
        l
    };
    assert_eq!(lines, sorted, "diagnostics come in line order");
    lines.dedup();
    assert_eq!(lines.len(), 4, "four different lines");
}

fn aio_options() -> Options {
    Options {
        // AIO's default endpoint is the local broker in the documentation examples.
        local_broker_host: "aio-broker:18883".into(),
        ..Options::default()
    }
}

fn valid_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests().join("valid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// YAML -> snapshot -> JSON -> snapshot is the identity, and the data plane's check of the
/// snapshot finds no error.
fn round_trip(snapshot: &Snapshot, options: &Options, name: &str) {
    let json = serde_json::to_string_pretty(snapshot).unwrap();
    let back: Snapshot =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}: {e}\n{json}"));
    assert_eq!(&back, snapshot, "{name}: JSON round trip");
    let again = validate_snapshot(&back, options, &MemFiles::new());
    assert!(
        !again.iter().any(Diagnostic::is_error),
        "{name}: {again:#?}"
    );
}

#[test]
fn aio_documentation_examples_load_and_validate() {
    let files = valid_files();
    assert!(files.len() >= 18, "{files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let report = load_and_validate(&RealFiles, std::slice::from_ref(&file), &aio_options());
        let errors: Vec<String> = report
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        let snapshot = report
            .snapshot
            .unwrap_or_else(|| panic!("{name}: no snapshot"));
        assert!(
            !snapshot.endpoints.is_empty() || !snapshot.profiles.is_empty(),
            "{name}: nothing loaded"
        );
        round_trip(&snapshot, &aio_options(), &name);
    }
}

#[test]
fn legacy_and_current_spellings_give_the_same_model() {
    let report = load_and_validate(
        &RealFiles,
        &[manifests().join("valid/dataflow-preview-lowercase.yaml")],
        &aio_options(),
    );
    assert!(
        report
            .diagnostics
            .iter()
            .all(|d| d.severity == Severity::Warning),
        "{:#?}",
        report.diagnostics
    );
    let snapshot = report.snapshot.unwrap();
    let json = serde_json::to_string(&snapshot).unwrap();
    assert!(
        json.contains("\"operationType\":\"BuiltInTransformation\""),
        "{json}"
    );
    assert!(json.contains("\"mode\":\"Enabled\""), "{json}");
    assert!(!json.contains("\"source\""), "{json}");
}

fn sluice_files() -> MemFiles {
    let mut f = MemFiles::new();
    for name in ["endpoints.yaml", "dataflows.yaml"] {
        let path = manifests().join("sluice").join(name);
        f.insert(path.clone(), std::fs::read(&path).unwrap());
    }
    f.insert("/s/mosquitto/username", "user")
        .insert("/s/mosquitto/password", "secret-value-never-printed")
        .insert("/s/kafka-sasl/username", "user")
        .insert("/s/kafka-sasl/password", "secret-value-never-printed")
        .insert("/s/mqtt-cert/client_cert.pem", CERT)
        .insert("/s/mqtt-cert/client_key.pem", KEY)
        .insert("/c/ca/ca.crt", CERT)
        .insert("/v/parquet/.keep", "");
    f
}

fn sluice_snapshot(options: &Options) -> Snapshot {
    let files = sluice_files();
    let report = load_and_validate(&files, &[manifests().join("sluice")], options);
    let errors: Vec<String> = report
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    report.snapshot.unwrap()
}

#[test]
fn sluice_configuration_resolves_and_checks_files() {
    let options = corpus_options();
    let snapshot = sluice_snapshot(&options);
    assert_eq!(snapshot.endpoints.len(), 5);
    assert_eq!(snapshot.dataflows.len(), 4);
    // The implicit default profile, in the default namespace.
    assert_eq!(snapshot.profiles.len(), 1);
    assert_eq!(snapshot.profiles[0].metadata.name, "default");
    assert_eq!(
        snapshot.profiles[0].metadata.namespace,
        "azure-iot-operations"
    );
    // Host resolved, local broker recognised.
    let local = snapshot.endpoint("azure-iot-operations", "local").unwrap();
    let EndpointSpec::Mqtt { mqtt_settings } = &local.spec else {
        panic!()
    };
    assert_eq!(mqtt_settings.host.as_deref(), Some("localhost:1883"));
    assert!(snapshot.is_local_broker(local));
    // AIO's $shared/ becomes MQTT's $share/.
    let to_kafka = &snapshot
        .dataflows
        .iter()
        .find(|d| d.dataflow.metadata.name == "to-kafka")
        .unwrap()
        .dataflow;
    let Operation::Source {
        source_settings, ..
    } = &to_kafka.spec.operations[0]
    else {
        panic!()
    };
    assert_eq!(
        source_settings.data_sources[0],
        "$share/sluice/sensors/+/temperature"
    );
    // Sorted by name, hashes filled in.
    let names: Vec<&str> = snapshot
        .dataflows
        .iter()
        .map(|d| d.dataflow.metadata.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["from-kafka", "from-plant", "to-kafka", "to-parquet"]
    );
    assert!(
        snapshot
            .dataflows
            .iter()
            .all(|d| d.content_hash.len() == 64)
    );
    round_trip(&snapshot, &Options::default(), "sluice");
    // On arrival, with the same files, the data plane finds nothing either.
    let arrival = validate_snapshot(&snapshot, &options, &sluice_files());
    assert!(!arrival.iter().any(Diagnostic::is_error), "{arrival:#?}");
}

#[test]
fn secrets_are_never_printed() {
    let options = corpus_options();
    let snapshot = sluice_snapshot(&options);
    let json = serde_json::to_string(&snapshot).unwrap();
    assert!(!json.contains("secret-value-never-printed"));
    assert!(
        json.contains("\"secretRef\":\"kafka-sasl\""),
        "the snapshot carries the reference"
    );
    for (file, _) in INVALID {
        for d in run_invalid(file) {
            assert!(!d.to_string().contains("secret-value-never-printed"), "{d}");
            assert!(
                !format!("{d:?}").contains("secret-value-never-printed"),
                "{d:?}"
            );
        }
    }
}

#[test]
fn changes_tell_added_changed_removed_unchanged() {
    let options = corpus_options();
    let old = sluice_snapshot(&options);
    let first = old.changes(None);
    assert_eq!(first.added.len(), 4);
    assert!(first.changed.is_empty() && first.removed.is_empty() && first.unchanged.is_empty());
    // Change the Kafka endpoint (used by to-kafka and from-kafka) and drop to-parquet.
    let mut new = old.clone();
    let kafka = new
        .endpoints
        .iter_mut()
        .find(|e| e.metadata.name == "kafka")
        .unwrap();
    let EndpointSpec::Kafka { kafka_settings } = &mut kafka.spec else {
        panic!()
    };
    kafka_settings.batching.latency_ms = 50;
    new.dataflows
        .retain(|d| d.dataflow.metadata.name != "to-parquet");
    let mut new = Snapshot::assemble(
        new.endpoints,
        new.dataflows.into_iter().map(|d| d.dataflow).collect(),
        new.profiles,
        &options,
    );
    let changes = new.changes(Some(&old));
    assert_eq!(
        changes.changed,
        [
            "azure-iot-operations/from-kafka",
            "azure-iot-operations/to-kafka"
        ]
    );
    assert_eq!(changes.unchanged, ["azure-iot-operations/from-plant"]);
    assert_eq!(changes.removed, ["azure-iot-operations/to-parquet"]);
    assert!(changes.added.is_empty());
    // Reassembling an unchanged configuration changes nothing.
    new.dataflows
        .sort_by(|a, b| a.dataflow.metadata.name.cmp(&b.dataflow.metadata.name));
    assert_eq!(new.changes(Some(&new)).unchanged.len(), 3);
}

#[test]
fn validate_snapshot_rejects_a_tampered_snapshot() {
    let options = corpus_options();
    let snapshot = sluice_snapshot(&options);
    let mut json: serde_json::Value = serde_json::to_value(&snapshot).unwrap();
    // qos 5 on the local endpoint (endpoints sorted: kafka, local, mtls, parquet, plant-broker).
    json["endpoints"][1]["spec"]["mqttSettings"]["qos"] = 5.into();
    // A dangling reference.
    json["dataflows"][0]["dataflow"]["spec"]["operations"][1]["destinationSettings"]["endpointRef"] =
        "nowhere".into();
    let tampered: Snapshot = serde_json::from_value(json).unwrap();
    let diagnostics = validate_snapshot(&tampered, &options, &sluice_files());
    let shown: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(shown.iter().any(|s| s == "DataflowEndpoint azure-iot-operations/local: spec.mqttSettings.qos: 5 is not a supported QoS: expected 0 or 1"), "{shown:#?}");
    assert!(shown.iter().any(|s| s.starts_with("Dataflow azure-iot-operations/from-kafka: spec.operations[1].destinationSettings.endpointRef: no DataflowEndpoint named \"nowhere\"")), "{shown:#?}");
    assert!(
        shown.iter().any(|s| s.contains("contentHash")),
        "{shown:#?}"
    );
    // Unknown fields in the JSON are refused by serde.
    let mut json: serde_json::Value = serde_json::to_value(&snapshot).unwrap();
    json["endpoints"][0]["spec"]["kafkaSettings"]["extra"] = 1.into();
    assert!(serde_json::from_value::<Snapshot>(json).is_err());
}

#[test]
fn local_broker_rule_can_be_relaxed() {
    let path = manifests().join("invalid/no-local-broker.yaml");
    let files = fake_files(&path);
    let relaxed = Options {
        require_local_broker: false,
        ..corpus_options()
    };
    let report = load_and_validate(&files, &[path], &relaxed);
    assert!(!report.has_errors(), "{:#?}", report.diagnostics);
    assert!(report.snapshot.is_some());
}

fn docs_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Loads one documentation example with AIO's defaults; no error, and the snapshot survives the
/// data plane's check.
fn load_doc(name: &str) -> (Snapshot, Vec<Diagnostic>) {
    let path = manifests().join("docs").join(name);
    let report = load_and_validate(&RealFiles, std::slice::from_ref(&path), &Options::default());
    let errors: Vec<String> = report
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}");
    let snapshot = report
        .snapshot
        .unwrap_or_else(|| panic!("{name}: no snapshot"));
    assert_eq!(snapshot.endpoints.len(), 1, "{name}");
    round_trip(&snapshot, &Options::default(), name);
    (snapshot, report.diagnostics)
}

fn mqtt(snapshot: &Snapshot) -> &MqttSettings {
    match &snapshot.endpoints[0].spec {
        EndpointSpec::Mqtt { mqtt_settings } => mqtt_settings,
        other => panic!("not Mqtt: {other:?}"),
    }
}

#[test]
fn every_documentation_example_loads_unchanged() {
    let files = docs_files();
    assert!(files.len() >= 40, "{files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let (snapshot, diagnostics) = load_doc(&name);
        // Spelling warnings only under v1: the v1beta1 page's spellings are its own.
        let spelling = diagnostics
            .iter()
            .filter(|d| d.message.contains("the spelling of") || d.message.contains("v1beta1 name"))
            .count();
        let v1 = snapshot.endpoints[0].api_version == ApiVersion::V1;
        assert!(v1 || spelling == 0, "{name}: {diagnostics:#?}");
    }
}

#[test]
fn omitted_host_and_authentication_are_aio_local_broker_defaults() {
    // v1beta1: the broker's older address.
    let (s, _) = load_doc("endpoints-mqtt-built-in-broker.yaml");
    let m = mqtt(&s);
    assert_eq!(m.host.as_deref(), Some(V1BETA1_LOCAL_BROKER_HOST));
    assert_eq!(m.authentication, MqttAuthentication::aio_default());
    assert_eq!(
        m.authentication,
        MqttAuthentication::ServiceAccountToken {
            service_account_token_settings: ServiceAccountTokenSettings {
                audience: "aio-internal".into()
            }
        }
    );
    assert_eq!(m.tls.mode, OperationalMode::Enabled);
    assert!(s.is_local_broker(&s.endpoints[0]));
    // v1: aio-broker:18883.
    let (s, _) = load_doc("mqtt-websockets.yaml");
    let m = mqtt(&s);
    assert_eq!(m.host.as_deref(), Some(DEFAULT_LOCAL_BROKER_HOST));
    assert_eq!(m.host.as_deref(), Some("aio-broker:18883"));
    assert_eq!(m.protocol, MqttProtocol::WebSockets);
    assert!(s.is_local_broker(&s.endpoints[0]));
    // Authentication with only comments under it is omitted too.
    let (s, _) = load_doc("mqtt-event-grid.yaml");
    assert_eq!(mqtt(&s).authentication, MqttAuthentication::aio_default());
    assert!(!s.is_local_broker(&s.endpoints[0]));
    // --local-broker names the local broker for both versions.
    let options = Options {
        local_broker_host: "localhost:1883".into(),
        ..Options::default()
    };
    for name in ["endpoints-mqtt-built-in-broker.yaml", "mqtt-qos.yaml"] {
        let path = manifests().join("docs").join(name);
        let report = load_and_validate(&RealFiles, &[path], &options);
        let s = report.snapshot.unwrap();
        assert_eq!(mqtt(&s).host.as_deref(), Some("localhost:1883"), "{name}");
    }
}

#[test]
fn documentation_spellings_become_canonical_in_the_snapshot() {
    let (s, d) = load_doc("endpoints-mqtt-other-brokers.yaml");
    assert!(d.is_empty(), "{d:#?}");
    assert_eq!(
        mqtt(&s)
            .tls
            .trusted_ca_certificate_config_map_ref
            .as_deref(),
        Some("broker-ca")
    );
    let json = serde_json::to_string(&s).unwrap();
    assert!(
        json.contains("\"trustedCaCertificateConfigMapRef\":\"broker-ca\""),
        "{json}"
    );

    let (s, d) = load_doc("endpoints-kafka-authentication-sasl.yaml");
    assert!(d.iter().all(|d| !d.message.contains("PLAIN")), "{d:#?}");
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"saslType\":\"Plain\""), "{json}");

    let (s, _) = load_doc("endpoints-local-storage.yaml");
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"endpointType\":\"LocalStorage\""), "{json}");
    assert!(
        json.contains("\"persistentVolumeClaimRef\":\"my-pvc\""),
        "{json}"
    );

    // v1 with Stream Analytics' LZ4: accepted, canonical, and a warning that says so.
    let (s, d) = load_doc("asa-kafka-input-compression.yaml");
    let EndpointSpec::Kafka { kafka_settings } = &s.endpoints[0].spec else {
        panic!()
    };
    assert_eq!(kafka_settings.compression, Compression::Lz4);
    assert!(
        d.iter().any(|d| !d.is_error()
            && d.path == "spec.kafkaSettings.compression"
            && d.message.contains("\"LZ4\" is taken as \"Lz4\"")),
        "{d:#?}"
    );
}

#[test]
fn the_endpoint_named_default_is_the_local_broker_whatever_its_host() {
    let manifest = |endpoint: &str| {
        format!(
            "apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: {endpoint}
spec:
  endpointType: Mqtt
  mqttSettings:
    host: broker.example:8883
    authentication:
      method: Anonymous
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: remote
spec:
  endpointType: Mqtt
  mqttSettings:
    host: remote.example:8883
    authentication:
      method: Anonymous
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: Dataflow
metadata:
  name: bridge
spec:
  operations:
    - operationType: Source
      sourceSettings:
        endpointRef: {endpoint}
        dataSources: [a/#]
    - operationType: Destination
      destinationSettings:
        endpointRef: remote
        dataDestination: b/${{inputTopic}}
"
        )
    };
    let run = |endpoint: &str| {
        let mut files = MemFiles::new();
        files.insert("/m/flows.yaml", manifest(endpoint));
        load_and_validate(&files, &["/m/flows.yaml".into()], &Options::default())
    };
    assert!(!run("default").has_errors());
    let report = run("plant");
    let error = report.diagnostics.iter().find(|d| d.is_error()).unwrap();
    assert_eq!(error.path, "spec.operations");
    assert!(
        error.message.contains("--local-broker")
            && error.message.contains("--allow-no-local-broker"),
        "{error}"
    );
}

#[test]
fn settings_not_acted_on_are_warnings_in_validate_and_on_arrival() {
    let options = corpus_options();
    let files = sluice_files();
    let report = load_and_validate(&files, &[manifests().join("sluice")], &options);
    assert!(!report.has_errors(), "{:#?}", report.diagnostics);
    let not_run: Vec<String> = report
        .diagnostics
        .iter()
        .filter(|d| d.message.contains("is not run by this build"))
        .map(ToString::to_string)
        .collect();
    // from-kafka (a Kafka source) and to-kafka run; to-parquet (LocalStorage) is disabled, so
    // not run anyway.
    assert_eq!(not_run, Vec::<String>::new());
    let valid = manifests().join("valid/dataflow-to-local-storage.yaml");
    let local = load_and_validate(&RealFiles, &[valid], &aio_options());
    // LocalStorage runs: the dataflow is not named as one this build does not run.
    assert!(
        !local
            .diagnostics
            .iter()
            .any(|d| d.message.contains("is not run by this build")),
        "{:#?}",
        local.diagnostics
    );
    // The data plane's check of the snapshot says the same, naming the resource.
    let arrival = validate_snapshot(report.snapshot.as_ref().unwrap(), &options, &files);
    assert!(
        !arrival
            .iter()
            .any(|d| d.message.contains("is not run by this build")),
        "{arrival:#?}"
    );
    // A field path per setting: the tenant of a user-assigned identity.
    let (_, d) = load_doc("endpoints-mqtt-authentication-user-assigned.yaml");
    assert!(
        d.iter().any(|d| !d.is_error()
            && d.path
                == "spec.mqttSettings.authentication.userAssignedManagedIdentitySettings.tenantId"
            && d.message
                .starts_with("accepted but not acted on by this build")),
        "{d:#?}"
    );
}

/// A LocalStorage dataflow's output schema: `serializationFormat` and `schemaRef` as AIO writes
/// them, the Delta schema file in `--schemas-dir`, and each way they can be wrong.
#[test]
fn a_local_storage_dataflows_schema_is_checked() {
    let schema = r#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[
        {"name":"temperature","type":"double","nullable":true,"metadata":{}},
        {"name":"_topic","type":"string","nullable":true,"metadata":{}}]}}"#;
    let manifest = |format: &str, reference: &str, columns: &str| {
        format!(
            "apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: files
spec:
  endpointType: LocalStorage
  localStorageSettings:
    persistentVolumeClaimRef: parquet
    metadataColumns: [{columns}]
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: Dataflow
metadata:
  name: to-files
spec:
  operations:
    - operationType: Source
      sourceSettings:
        endpointRef: default
        dataSources: [a/#]
    - operationType: BuiltInTransformation
      builtInTransformationSettings:
        serializationFormat: {format}
        schemaRef: {reference}
    - operationType: Destination
      destinationSettings:
        endpointRef: files
        dataDestination: out
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: default
spec:
  endpointType: Mqtt
  mqttSettings:
    host: localhost:1883
    authentication:
      method: Anonymous
    tls:
      mode: Disabled
"
        )
    };
    let check = |text: String| -> Vec<Diagnostic> {
        let mut files = MemFiles::new();
        files
            .insert("/m/df.yaml", text)
            .insert("/v/parquet/.keep", "")
            .insert("/schemas/plant/telemetry-1.0.0.json", schema)
            .insert("/schemas/plant/broken-1.0.0.json", "{\"$schema\":\"Delta/1.0\"")
            .insert(
                "/schemas/plant/map-1.0.0.json",
                r#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[{"name":"m","type":"map"}]}}"#,
            );
        let options = Options {
            local_broker_host: "localhost:1883".into(),
            volumes_dir: Some("/v".into()),
            schemas_dir: Some("/schemas".into()),
            ..Options::default()
        };
        load_and_validate(&files, &["/m/df.yaml".into()], &options).diagnostics
    };
    let errors = |d: &[Diagnostic]| -> Vec<String> {
        d.iter()
            .filter(|d| d.is_error())
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect()
    };
    let ok = check(manifest(
        "Parquet",
        "aio-sr://plant/telemetry:1.0.0",
        "ReceivedTime",
    ));
    assert_eq!(errors(&ok), Vec::<String>::new());
    assert!(
        !ok.iter()
            .any(|d| d.path.contains("builtInTransformationSettings")),
        "a schema acted on is not warned about: {ok:#?}"
    );
    let path = "spec.operations[1].builtInTransformationSettings";
    let cases = [
        (
            manifest("Json", "aio-sr://plant/telemetry:1.0.0", ""),
            format!("{path}.serializationFormat"),
            "writes Parquet",
        ),
        (
            manifest("Parquet", "plant/telemetry", ""),
            format!("{path}.schemaRef"),
            "expected aio-sr://",
        ),
        (
            manifest("Parquet", "aio-sr://plant/../secrets:1", ""),
            format!("{path}.schemaRef"),
            "must be ASCII letters",
        ),
        (
            manifest("Parquet", "aio-sr://plant/missing:1.0.0", ""),
            format!("{path}.schemaRef"),
            "cannot read /schemas/plant/missing-1.0.0.json",
        ),
        (
            manifest("Parquet", "aio-sr://plant/broken:1.0.0", ""),
            format!("{path}.schemaRef"),
            "not JSON",
        ),
        (
            manifest("Parquet", "aio-sr://plant/map:1.0.0", ""),
            format!("{path}.schemaRef"),
            "properties.fields[0].type: maps are not supported",
        ),
        (
            manifest("Parquet", "aio-sr://plant/telemetry:1.0.0", "Topic"),
            format!("{path}.schemaRef"),
            "also the column of metadataColumns Topic",
        ),
    ];
    for (text, want_path, want) in cases {
        let e = errors(&check(text));
        assert!(
            e.iter()
                .any(|m| m.starts_with(&want_path) && m.contains(want)),
            "{want_path}: {want}: {e:#?}"
        );
    }
    // Delta is written as Parquet, with a warning.
    let delta = check(manifest("Delta", "aio-sr://plant/telemetry:1.0.0", ""));
    assert_eq!(errors(&delta), Vec::<String>::new());
    assert!(
        delta
            .iter()
            .any(|d| d.message.contains("no Delta transaction log"))
    );
}
