//! The `manifest_yaml` target: a manifest file as `config-agent` reads it (YAML, decoded into
//! the dataflow resources with [`load_str`]) and validates it ([`validate_loaded`]) against a
//! fixed in-memory tree of secrets, ConfigMaps and volumes ([`files`]), then what the data plane
//! does with the snapshot it would be sent.
//!
//! Input: the manifest text (bytes that are not UTF-8 are replaced, as lossy decoding does),
//! optionally followed by [`SEPARATOR`] and the contents of two of the tree's PEM files (the CA
//! certificate of ConfigMap `ca` and the client certificate of secret `mqtt-cert`), so that the
//! PEM checks see hostile input too.
//!
//! Checked (any failure is a panic):
//! - nothing panics, in the YAML parser, the decoder or the validation;
//! - there is a snapshot exactly when there is no error;
//! - the diagnostics grow at most linearly with the input: at most four per input byte (plus a
//!   few); each, as shown, at most twice the input plus [`MESSAGE_SLACK`] (a message may quote
//!   input uncut: the names that `diag::shown` cuts are not the only text quoted); all together
//!   at most [`TOTAL_FACTOR`] bytes per input byte (plus a few slacks);
//! - a snapshot is sorted, survives JSON (the control protocol's form) unchanged, and passes the
//!   data plane's re-validation, with the agent's options and files and with the data plane's
//!   own (no folders to check, no local broker rule);
//! - against nothing its dataflows are all added, against itself all unchanged.

use std::path::PathBuf;

use sluice_config_agent::{
    Diagnostic, Loaded, MemFiles, Options, Snapshot, load_str, validate_loaded, validate_snapshot,
};

use crate::SEPARATOR;

/// What a diagnostic may hold beyond the input it quotes: its location, field path and text.
pub const MESSAGE_SLACK: usize = 4096;

/// Diagnostics, as shown, may add up to this many bytes per input byte (a short document with a
/// few problems, repeated).
pub const TOTAL_FACTOR: usize = 256;

/// The outline of a certificate (empty parts): what validation checks.
const CERT: &str = "-----BEGIN CERTIFICATE-----\nMAcwADAAAwEA\n-----END CERTIFICATE-----\n";
/// The outline of a PKCS #8 key (empty parts).
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMAcCAQAwAAQA\n-----END PRIVATE KEY-----\n";

/// The folders that `secretRef`, ConfigMap, volume and schema references resolve in.
pub fn options() -> Options {
    Options {
        secrets_dir: Some(PathBuf::from("/s")),
        configmaps_dir: Some(PathBuf::from("/c")),
        volumes_dir: Some(PathBuf::from("/v")),
        schemas_dir: Some(PathBuf::from("/schemas")),
        ..Options::default()
    }
}

/// The secrets (`/s/NAME/KEY`), ConfigMaps (`/c/NAME/KEY`) and volumes (`/v/NAME/`) that
/// manifests may refer to, laid out as config-agent's own manifest tests do; `pem`, when given,
/// replaces the CA certificate of ConfigMap `ca` and the client certificate of secret
/// `mqtt-cert`.
pub fn files(pem: Option<&[u8]>) -> MemFiles {
    let cert = pem.unwrap_or(CERT.as_bytes());
    let mut f = MemFiles::new();
    f.insert("/s/mqtt-cert/client_cert.pem", cert)
        .insert("/s/mqtt-cert/client_key.pem", KEY)
        .insert("/s/bad-cert/client_cert.pem", "this is not PEM\n")
        .insert("/s/bad-cert/client_key.pem", KEY)
        .insert("/s/half/username", "user")
        .insert("/c/ca/ca.crt", cert)
        .insert(
            "/c/bad-ca/ca.crt",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        );
    // The names the test manifests and AIO's documentation examples use.
    f.insert("/s/x509-secret/client_cert.pem", CERT)
        .insert("/s/x509-secret/client_key.pem", KEY);
    for secret in [
        "kafka-sasl",
        "kafka-secret",
        "kafka-token",
        "event-hubs-connection-string",
        "mosquitto",
    ] {
        f.insert(format!("/s/{secret}/username"), "$ConnectionString")
            .insert(format!("/s/{secret}/password"), "secret-value");
    }
    for config_map in [
        "azure-iot-operations-aio-ca-trust-bundle",
        "broker-ca",
        "client-ca-configmap",
    ] {
        f.insert(format!("/c/{config_map}/ca.crt"), CERT);
    }
    for volume in ["parquet", "my-pvc"] {
        f.insert(format!("/v/{volume}/.keep"), "");
    }
    // The output schema of the storage examples (`aio-sr://exampleNamespace/temperature:1.0.0`).
    f.insert(
        "/schemas/exampleNamespace/temperature-1.0.0.json",
        r#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[{"name":"temperature","type":"double","nullable":true,"metadata":{}}]}}"#,
    );
    f
}

/// Loads and validates `data` (the manifest, then optionally [`SEPARATOR`] and PEM text) and
/// checks every invariant listed in the module documentation.
///
/// # Panics
/// When an invariant does not hold: that is the finding.
pub fn manifest_yaml(data: &[u8]) {
    let (text, pem) = match data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        Some(at) => (&data[..at], Some(&data[at + SEPARATOR.len()..])),
        None => (data, None),
    };
    let text = String::from_utf8_lossy(text);
    let files = files(pem);
    let options = options();
    let mut loaded = Loaded::default();
    load_str("fuzz.yaml", &text, &mut loaded);
    let report = validate_loaded(loaded, &options, &files);

    let errors = report.diagnostics.iter().any(Diagnostic::is_error);
    assert_eq!(
        report.snapshot.is_some(),
        !errors,
        "a snapshot and errors, or neither: {:#?}",
        report.diagnostics
    );
    assert!(
        report.diagnostics.len() <= 4 * text.len() + 16,
        "{} diagnostics for {} bytes",
        report.diagnostics.len(),
        text.len()
    );
    let mut total = 0;
    for d in &report.diagnostics {
        let shown = d.to_string();
        assert!(
            shown.len() <= 2 * data.len() + MESSAGE_SLACK,
            "a diagnostic of {} bytes for {} bytes of input: {}...",
            shown.len(),
            data.len(),
            &shown[..shown.floor_char_boundary(200)]
        );
        total += shown.len();
    }
    assert!(
        total <= TOTAL_FACTOR * data.len() + 16 * MESSAGE_SLACK,
        "{total} bytes of diagnostics for {} bytes of input",
        data.len()
    );
    let Some(snapshot) = report.snapshot else {
        return;
    };

    let mut sorted = snapshot.clone();
    sorted.sort();
    assert_eq!(sorted, snapshot, "the snapshot is not sorted");
    let json = serde_json::to_vec(&snapshot).expect("a snapshot serialises");
    let back: Snapshot = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "a snapshot does not read back: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(back, snapshot, "a snapshot changes through JSON");

    let agent = validate_snapshot(&back, &options, &files);
    let errors: Vec<String> = agent
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(
        errors.is_empty(),
        "the agent's snapshot fails its re-validation: {errors:#?}"
    );
    let data_plane = Options {
        local_broker_host: back.local_broker_host.clone(),
        require_local_broker: false,
        secrets_dir: None,
        configmaps_dir: None,
        volumes_dir: None,
        schemas_dir: None,
    };
    let errors: Vec<String> = validate_snapshot(&back, &data_plane, &MemFiles::new())
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(
        errors.is_empty(),
        "the data plane refuses the agent's snapshot: {errors:#?}"
    );

    let added = snapshot.changes(None);
    assert_eq!(
        added.added.len(),
        snapshot.dataflows.len(),
        "not every dataflow is added to nothing: {added:?}"
    );
    let same = snapshot.changes(Some(&snapshot));
    assert_eq!(
        same.unchanged.len(),
        snapshot.dataflows.len(),
        "a snapshot changes itself: {same:?}"
    );
}
