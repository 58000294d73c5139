//! Checks over a whole configuration: values (ranges, topics, host names), references between
//! resources, AIO's rules for dataflows, and the files that references resolve to.
//!
//! The checks run on a [`Snapshot`], so the same code serves the agent (which knows files and
//! lines, through a [`Locate`]) and the data plane checking a snapshot on arrival (which does
//! not). Every problem is reported; nothing stops at the first.

use std::path::{Path, PathBuf};

use sluice_codec::topic::{validate_topic_filter, validate_topic_name};

use crate::address::{Address, parse_address};
use crate::decode::{LoadedResource, Origin};
use crate::diag::{Diagnostic, has_errors, one_of, suggestion};
use crate::files::Files;
use crate::model::*;
use crate::paths::is_single_segment;
use crate::snapshot::{Options, Snapshot};

/// Maps a resource of a snapshot back to where it was written, when known.
pub trait Locate {
    /// The origin of the `index`-th resource of `kind` in the snapshot's list of that kind.
    fn origin(&self, kind: Kind, index: usize) -> Option<&Origin>;
}

/// No origins: a snapshot received as JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nowhere;

impl Locate for Nowhere {
    fn origin(&self, _: Kind, _: usize) -> Option<&Origin> {
        None
    }
}

/// The outcome of validating a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The snapshot, when there is no error (warnings allowed).
    pub snapshot: Option<Snapshot>,
    /// Every problem, errors and warnings, in the order found.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        has_errors(&self.diagnostics)
    }
}

/// A resource (by kind, namespace and name) that was found but did not decode; references to
/// it are not reported as missing, since its own errors already are.
pub type Broken = (Kind, String, String);

struct Origins {
    endpoints: Vec<Option<Origin>>,
    dataflows: Vec<Option<Origin>>,
    profiles: Vec<Option<Origin>>,
}

impl Locate for Origins {
    fn origin(&self, kind: Kind, index: usize) -> Option<&Origin> {
        let list = match kind {
            Kind::DataflowEndpoint => &self.endpoints,
            Kind::Dataflow => &self.dataflows,
            Kind::DataflowProfile => &self.profiles,
        };
        list.get(index).and_then(Option::as_ref)
    }
}

/// Validates decoded resources as one configuration and builds the snapshot. `broken` lists
/// resources whose decoding failed (see [`Broken`]).
pub fn validate_resources(
    loaded: Vec<LoadedResource>,
    broken: &[Broken],
    options: &Options,
    files: &dyn Files,
) -> Report {
    let mut loaded = loaded;
    loaded.sort_by(|a, b| {
        let (ma, mb) = (a.resource.metadata(), b.resource.metadata());
        (&ma.namespace, &ma.name).cmp(&(&mb.namespace, &mb.name))
    });
    let (mut endpoints, mut dataflows, mut profiles) = (Vec::new(), Vec::new(), Vec::new());
    let mut origins = Origins {
        endpoints: Vec::new(),
        dataflows: Vec::new(),
        profiles: Vec::new(),
    };
    for l in loaded {
        match l.resource {
            Resource::DataflowEndpoint(e) => {
                endpoints.push(e);
                origins.endpoints.push(Some(l.origin));
            }
            Resource::Dataflow(d) => {
                dataflows.push(d);
                origins.dataflows.push(Some(l.origin));
            }
            Resource::DataflowProfile(p) => {
                profiles.push(p);
                origins.profiles.push(Some(l.origin));
            }
        }
    }
    let mut snapshot = Snapshot::resolve(endpoints, dataflows, profiles, options);
    snapshot.rehash();
    let mut diagnostics = Vec::new();
    check(
        &snapshot,
        options,
        files,
        &origins,
        broken,
        &mut diagnostics,
    );
    // Implicit profiles were appended after the loaded ones; sort for the final snapshot.
    let snapshot = (!has_errors(&diagnostics)).then(|| {
        Snapshot::assemble(
            snapshot.endpoints,
            snapshot.dataflows.into_iter().map(|d| d.dataflow).collect(),
            snapshot.profiles,
            options,
        )
    });
    Report {
        snapshot,
        diagnostics,
    }
}

/// Checks a snapshot received as JSON: everything that does not need the YAML (values,
/// references, AIO's rules, referenced files, content hashes). Diagnostics name the resource
/// instead of a file.
pub fn validate_snapshot(
    snapshot: &Snapshot,
    options: &Options,
    files: &dyn Files,
) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    if snapshot.local_broker_host != options.local_broker_host {
        diagnostics.push(Diagnostic::warning(
            "localBrokerHost",
            format!(
                "the snapshot was resolved with local broker \"{}\", this process is configured with \"{}\"",
                snapshot.local_broker_host, options.local_broker_host
            ),
        ));
    }
    check(snapshot, options, files, &Nowhere, &[], &mut diagnostics);
    for d in &snapshot.dataflows {
        if snapshot.content_hash(&d.dataflow) != d.content_hash {
            let mut diag = Diagnostic::error(
                "contentHash",
                "does not match the dataflow and what it uses (the snapshot was altered or built by another version)",
            );
            diag.resource = Some(label(Kind::Dataflow, &d.dataflow.metadata));
            diagnostics.push(diag);
        }
    }
    diagnostics
}

struct Checker<'a> {
    snapshot: &'a Snapshot,
    options: &'a Options,
    files: &'a dyn Files,
    locate: &'a dyn Locate,
    broken: &'a [Broken],
    out: &'a mut Vec<Diagnostic>,
}

/// Who a diagnostic is about.
#[derive(Clone, Copy)]
struct At<'m> {
    kind: Kind,
    index: usize,
    metadata: &'m Metadata,
}

impl Checker<'_> {
    fn report(&mut self, at: At<'_>, mut d: Diagnostic) {
        d.resource = Some(label(at.kind, at.metadata));
        if let Some(origin) = self.locate.origin(at.kind, at.index) {
            let pos = origin.locate(&d.path);
            d.file = Some(origin.file.clone());
            d.line = Some(pos.line);
            d.column = Some(pos.column);
        }
        self.out.push(d);
    }

    fn error(&mut self, at: At<'_>, path: impl Into<String>, message: impl Into<String>) {
        self.report(at, Diagnostic::error(path, message));
    }

    fn warning(&mut self, at: At<'_>, path: impl Into<String>, message: impl Into<String>) {
        self.report(at, Diagnostic::warning(path, message));
    }

    fn is_broken(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        self.broken
            .iter()
            .any(|(k, ns, n)| *k == kind && ns == namespace && n == name)
    }
}

fn check(
    snapshot: &Snapshot,
    options: &Options,
    files: &dyn Files,
    locate: &dyn Locate,
    broken: &[Broken],
    out: &mut Vec<Diagnostic>,
) {
    let mut c = Checker {
        snapshot,
        options,
        files,
        locate,
        broken,
        out,
    };
    let endpoints: Vec<&Metadata> = snapshot.endpoints.iter().map(|e| &e.metadata).collect();
    let dataflows: Vec<&Metadata> = snapshot
        .dataflows
        .iter()
        .map(|d| &d.dataflow.metadata)
        .collect();
    let profiles: Vec<&Metadata> = snapshot.profiles.iter().map(|p| &p.metadata).collect();
    check_names(&mut c, Kind::DataflowEndpoint, &endpoints);
    check_names(&mut c, Kind::Dataflow, &dataflows);
    check_names(&mut c, Kind::DataflowProfile, &profiles);
    for (index, e) in snapshot.endpoints.iter().enumerate() {
        let at = At {
            kind: Kind::DataflowEndpoint,
            index,
            metadata: &e.metadata,
        };
        check_endpoint(&mut c, at, e);
    }
    for (index, p) in snapshot.profiles.iter().enumerate() {
        let at = At {
            kind: Kind::DataflowProfile,
            index,
            metadata: &p.metadata,
        };
        check_profile(&mut c, at, p);
    }
    for (index, d) in snapshot.dataflows.iter().enumerate() {
        let at = At {
            kind: Kind::Dataflow,
            index,
            metadata: &d.dataflow.metadata,
        };
        check_dataflow(&mut c, at, &d.dataflow);
    }
}

/// Whether `name` is a DNS label: 1 to 63 lower-case letters, digits and `-`, starting and ending
/// with a letter or digit.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn check_names(c: &mut Checker<'_>, kind: Kind, list: &[&Metadata]) {
    // The first index of each (namespace, name): one pass, not a scan of the earlier ones per
    // resource.
    let mut first_of: std::collections::HashMap<(&str, &str), usize> =
        std::collections::HashMap::with_capacity(list.len());
    for (index, m) in list.iter().enumerate() {
        let at = At {
            kind,
            index,
            metadata: m,
        };
        if !is_dns_label(&m.name) {
            c.error(
                at,
                "metadata.name",
                format!("\"{}\" is not a valid name: 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit", m.name),
            );
        }
        if !is_dns_label(&m.namespace) {
            c.error(
                at,
                "metadata.namespace",
                format!("\"{}\" is not a valid namespace", m.namespace),
            );
        }
        let first = *first_of
            .entry((m.namespace.as_str(), m.name.as_str()))
            .or_insert(index);
        if first != index {
            let also = c
                .locate
                .origin(kind, first)
                .map(|o| {
                    format!(
                        " (first defined at {}:{})",
                        o.file,
                        o.locate("metadata.name").line
                    )
                })
                .unwrap_or_default();
            c.error(
                at,
                "metadata.name",
                format!(
                    "duplicate {kind} \"{}\" in namespace \"{}\"{also}",
                    m.name, m.namespace
                ),
            );
        }
    }
}

/// Checks `host:port[/path]` with [`crate::address::parse_address`], the parser the data plane
/// connects with; here the port is required (AIO writes it). `allow_path`: a WebSockets request
/// path after the port (`host:443/mqtt`).
fn check_host_port(host: &str, allow_path: bool, example_port: u16) -> Result<(), String> {
    let address = parse_address(host, allow_path).map_err(|e| e.to_string())?;
    if address.port.is_none() {
        return Err(format!(
            "\"{host}\" has no port: expected host:port, e.g. \"{}{}\"",
            Address::authority(address.host, example_port),
            address.path.unwrap_or_default()
        ));
    }
    Ok(())
}

/// The host name of `host:port[/path]`, lower-cased.
fn host_name(host: &str) -> String {
    parse_address(host, true)
        .map_or(host, |a| a.host)
        .to_ascii_lowercase()
}

/// Whether the endpoint is an Azure Event Grid MQTT broker (`*.eventgrid.azure.net`).
pub fn is_event_grid(endpoint: &DataflowEndpoint) -> bool {
    match &endpoint.spec {
        EndpointSpec::Mqtt { mqtt_settings } => mqtt_settings
            .host
            .as_deref()
            .is_some_and(|h| host_name(h).ends_with(".eventgrid.azure.net")),
        _ => false,
    }
}

fn check_endpoint(c: &mut Checker<'_>, at: At<'_>, e: &DataflowEndpoint) {
    for f in crate::unsupported::endpoint_findings(e) {
        c.warning(at, f.path, f.message);
    }
    match &e.spec {
        EndpointSpec::Mqtt { mqtt_settings: s } => {
            let p = "spec.mqttSettings";
            if let Some(host) = &s.host
                && let Err(m) = check_host_port(host, s.protocol == MqttProtocol::WebSockets, 1883)
            {
                c.error(at, format!("{p}.host"), m);
            }
            if s.qos > 1 {
                c.error(
                    at,
                    format!("{p}.qos"),
                    format!("{} is not a supported QoS: expected 0 or 1", s.qos),
                );
            }
            if s.keep_alive_seconds > u32::from(u16::MAX) {
                c.error(
                    at,
                    format!("{p}.keepAliveSeconds"),
                    format!(
                        "{} is out of range: expected 0 to 65535 seconds",
                        s.keep_alive_seconds
                    ),
                );
            }
            if !(1..=u32::from(u16::MAX)).contains(&s.max_inflight_messages) {
                c.error(
                    at,
                    format!("{p}.maxInflightMessages"),
                    format!(
                        "{} is out of range: expected 1 to 65535",
                        s.max_inflight_messages
                    ),
                );
            }
            if s.mqtt_version == MqttVersion::V3
                && s.session_expiry_seconds != DEFAULT_SESSION_EXPIRY_SECONDS
            {
                c.warning(at, format!("{p}.sessionExpirySeconds"), "MQTT 3.1.1 has no session expiry; the broker keeps the session by its own rules");
            }
            if let Some(prefix) = &s.client_id_prefix
                && !prefix
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                c.warning(at, format!("{p}.clientIdPrefix"), "brokers are only required to accept client identifiers of letters and digits; this prefix has other characters");
            }
            check_tls(
                c,
                at,
                p,
                &s.tls,
                matches!(s.authentication, MqttAuthentication::X509Certificate { .. }),
            );
            let auth = format!("{p}.authentication");
            match &s.authentication {
                MqttAuthentication::Anonymous => {}
                MqttAuthentication::X509Certificate {
                    x509_certificate_settings,
                } => {
                    check_x509(
                        c,
                        at,
                        &format!("{auth}.x509CertificateSettings.secretRef"),
                        &x509_certificate_settings.secret_ref,
                    );
                }
                MqttAuthentication::UsernamePassword {
                    username_password_settings,
                } => {
                    check_secret_keys(
                        c,
                        at,
                        &format!("{auth}.usernamePasswordSettings.secretRef"),
                        &username_password_settings.secret_ref,
                        &["username", "password"],
                    );
                }
                other => identity_auth(c, at, &auth, other.method()),
            }
            if is_event_grid(e)
                && s.protocol == MqttProtocol::WebSockets
                && !s.host.as_deref().unwrap_or("").ends_with("/mqtt")
            {
                c.warning(
                    at,
                    format!("{p}.host"),
                    "Event Grid over WebSockets needs \"/mqtt\" after the port",
                );
            }
        }
        EndpointSpec::Kafka { kafka_settings: s } => {
            let p = "spec.kafkaSettings";
            for server in s.bootstrap_servers() {
                if let Err(m) = check_host_port(server, false, 9092) {
                    c.error(at, format!("{p}.host"), m);
                }
            }
            if s.batching.latency_ms > u32::from(u16::MAX) {
                c.error(
                    at,
                    format!("{p}.batching.latencyMs"),
                    format!(
                        "{} is out of range: expected 0 to 65535 milliseconds",
                        s.batching.latency_ms
                    ),
                );
            }
            if s.batching.max_bytes == 0 {
                c.error(
                    at,
                    format!("{p}.batching.maxBytes"),
                    "must be at least 1 byte",
                );
            }
            if s.batching.max_messages == 0 {
                c.error(
                    at,
                    format!("{p}.batching.maxMessages"),
                    "must be at least 1",
                );
            }
            match (s.partition_strategy, &s.partition_key_property) {
                (PartitionStrategy::Property, None) => c.error(
                    at,
                    format!("{p}.partitionStrategy"),
                    "Property needs partitionKeyProperty: the MQTT user property to partition by",
                ),
                (other, Some(_)) if other != PartitionStrategy::Property => c.warning(
                    at,
                    format!("{p}.partitionKeyProperty"),
                    format!("ignored with partitionStrategy {other}"),
                ),
                _ => {}
            }
            let x509 = matches!(
                s.authentication,
                KafkaAuthentication::X509Certificate { .. }
            );
            check_tls(c, at, p, &s.tls, x509);
            let auth = format!("{p}.authentication");
            match &s.authentication {
                KafkaAuthentication::Anonymous => {}
                KafkaAuthentication::Sasl { sasl_settings } => {
                    if sasl_settings.sasl_type == SaslType::Plain
                        && s.tls.mode == OperationalMode::Disabled
                    {
                        c.warning(
                            at,
                            format!("{auth}.saslSettings.saslType"),
                            "SASL/PLAIN without TLS sends the password in clear text",
                        );
                    }
                    check_secret_keys(
                        c,
                        at,
                        &format!("{auth}.saslSettings.secretRef"),
                        &sasl_settings.secret_ref,
                        &["username", "password"],
                    );
                }
                KafkaAuthentication::X509Certificate {
                    x509_certificate_settings,
                } => {
                    check_x509(
                        c,
                        at,
                        &format!("{auth}.x509CertificateSettings.secretRef"),
                        &x509_certificate_settings.secret_ref,
                    );
                }
                other => unsupported_auth(c, at, &auth, other.method().as_str()),
            }
        }
        EndpointSpec::LocalStorage {
            local_storage_settings,
        } => {
            let path = "spec.localStorageSettings.persistentVolumeClaimRef";
            let name = &local_storage_settings.persistent_volume_claim_ref;
            if !is_single_segment(name) {
                c.error(
                    at,
                    path,
                    format!("\"{name}\" is not a volume name: one folder name, without '/'"),
                );
            } else if let Some(dir) = c.options.volumes_dir.clone() {
                let folder = dir.join(name);
                if !c.files.is_dir(&folder) {
                    c.error(
                        at,
                        path,
                        format!("volume folder {} does not exist", folder.display()),
                    );
                }
            }
        }
    }
}

/// MQTT authentication with an identity the data plane gets from outside the manifests: a
/// service account token file (`--token-dir`) or a managed identity endpoint (`--imds-endpoint`).
fn identity_auth(c: &mut Checker<'_>, at: At<'_>, path: &str, method: MqttAuthMethod) {
    let needs = match method {
        MqttAuthMethod::ServiceAccountToken => {
            "the data plane's --token-dir (a token file named by the audience)"
        }
        _ => "the data plane's --imds-endpoint (an IMDS-compatible token endpoint)",
    };
    c.warning(
        at,
        format!("{path}.method"),
        format!("{method} authenticates with a token from {needs}; without it the dataflow does not start"),
    );
}

fn unsupported_auth(c: &mut Checker<'_>, at: At<'_>, path: &str, method: &str) {
    c.warning(
        at,
        format!("{path}.method"),
        format!("{method} needs Kubernetes or Azure identity, which Sluice does not have: a dataflow using this endpoint cannot authenticate"),
    );
}

fn check_tls(c: &mut Checker<'_>, at: At<'_>, p: &str, tls: &Tls, x509: bool) {
    if tls.mode == OperationalMode::Disabled {
        if x509 {
            c.error(
                at,
                format!("{p}.tls.mode"),
                "X509Certificate authentication needs TLS: set tls.mode to Enabled",
            );
        }
        if tls.trusted_ca_certificate_config_map_ref.is_some() {
            c.warning(
                at,
                format!("{p}.tls.trustedCaCertificateConfigMapRef"),
                "ignored: TLS is disabled",
            );
        }
        return;
    }
    let Some(name) = &tls.trusted_ca_certificate_config_map_ref else {
        return;
    };
    let path = format!("{p}.tls.trustedCaCertificateConfigMapRef");
    if !is_single_segment(name) {
        c.error(at, path, format!("\"{name}\" is not a ConfigMap name"));
        return;
    }
    let Some(dir) = c.options.configmaps_dir.clone() else {
        return;
    };
    let folder = dir.join(name);
    let listed = if c.files.is_dir(&folder) {
        c.files.list_files(&folder).ok()
    } else {
        None
    };
    let Some(list) = listed else {
        c.error(
            at,
            path,
            format!("ConfigMap folder {} does not exist", folder.display()),
        );
        return;
    };
    if list.is_empty() {
        c.error(
            at,
            path.clone(),
            format!("ConfigMap folder {} holds no file", folder.display()),
        );
    }
    for file in list {
        if let Err(m) = check_pem(c.files, &file, PemKind::Certificates) {
            c.error(at, path.clone(), m);
        }
    }
}

fn secret_folder(c: &mut Checker<'_>, at: At<'_>, path: &str, name: &str) -> Option<PathBuf> {
    if !is_single_segment(name) {
        c.error(at, path, format!("\"{name}\" is not a secret name"));
        return None;
    }
    let dir = c.options.secrets_dir.clone()?;
    let folder = dir.join(name);
    if !c.files.is_dir(&folder) {
        c.error(
            at,
            path,
            format!("secret folder {} does not exist", folder.display()),
        );
        return None;
    }
    Some(folder)
}

/// Checks that the secret's keys exist as files; their content is not read.
fn check_secret_keys(c: &mut Checker<'_>, at: At<'_>, path: &str, name: &str, keys: &[&str]) {
    let Some(folder) = secret_folder(c, at, path, name) else {
        return;
    };
    for key in keys {
        let file = folder.join(key);
        if !c.files.is_file(&file) {
            c.error(
                at,
                path,
                format!("secret file {} does not exist", file.display()),
            );
        }
    }
}

fn check_x509(c: &mut Checker<'_>, at: At<'_>, path: &str, name: &str) {
    let Some(folder) = secret_folder(c, at, path, name) else {
        return;
    };
    for (key, kind, required) in [
        ("client_cert.pem", PemKind::Certificates, true),
        ("client_key.pem", PemKind::PrivateKey, true),
        (
            "client_intermediate_certs.pem",
            PemKind::Certificates,
            false,
        ),
    ] {
        let file = folder.join(key);
        if !c.files.is_file(&file) {
            if required {
                c.error(
                    at,
                    path,
                    format!("secret file {} does not exist", file.display()),
                );
            }
            continue;
        }
        if let Err(m) = check_pem(c.files, &file, kind) {
            c.error(at, path, m);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PemKind {
    Certificates,
    PrivateKey,
}

/// Checks a PEM file with [`crate::pem`]. Messages name the file and the problem, never its
/// content.
fn check_pem(files: &dyn Files, file: &Path, kind: PemKind) -> Result<(), String> {
    let shown = file.display();
    let bytes = files.read(file).map_err(|e| {
        format!(
            "cannot read {shown}: {}",
            crate::files::describe_read_error(&e)
        )
    })?;
    let checked = match kind {
        PemKind::Certificates => crate::pem::check_certificates(&bytes).map(drop),
        PemKind::PrivateKey => crate::pem::check_private_key(&bytes),
    };
    checked.map_err(|e| format!("{shown} {e}"))
}

const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];

fn check_profile(c: &mut Checker<'_>, at: At<'_>, p: &DataflowProfile) {
    if !(1..=20).contains(&p.spec.instance_count) {
        c.error(
            at,
            "spec.instanceCount",
            format!(
                "{} is out of range: expected 1 to 20",
                p.spec.instance_count
            ),
        );
    }
    let level = &p.spec.diagnostics.logs.level;
    if !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        c.warning(
            at,
            "spec.diagnostics.logs.level",
            format!(
                "\"{level}\" is not a log level Sluice knows: expected {}{}",
                one_of(LOG_LEVELS.iter().copied()),
                suggestion(level, LOG_LEVELS.iter().copied())
            ),
        );
    }
    for f in crate::unsupported::profile_findings(p) {
        c.warning(at, f.path, f.message);
    }
}

fn check_dataflow(c: &mut Checker<'_>, at: At<'_>, d: &Dataflow) {
    let ns = d.metadata.namespace.as_str();
    let ops = &d.spec.operations;
    for (ty, exact) in [
        (OperationType::Source, true),
        (OperationType::Destination, true),
        (OperationType::BuiltInTransformation, false),
    ] {
        let n = ops.iter().filter(|o| o.operation_type() == ty).count();
        if exact && n != 1 {
            c.error(
                at,
                "spec.operations",
                format!("a dataflow needs exactly one {ty} operation, found {n}"),
            );
        } else if !exact && n > 1 {
            c.error(
                at,
                "spec.operations",
                format!("a dataflow takes at most one {ty} operation, found {n}"),
            );
        }
    }
    if c.snapshot.profile(ns, &d.spec.profile_ref).is_none()
        && !c.is_broken(Kind::DataflowProfile, ns, &d.spec.profile_ref)
    {
        let names = c
            .snapshot
            .profiles
            .iter()
            .filter(|p| p.metadata.namespace == ns)
            .map(|p| p.metadata.name.as_str());
        let hint = suggestion(&d.spec.profile_ref, names);
        c.error(
            at,
            "spec.profileRef",
            format!(
                "no DataflowProfile named \"{}\" in namespace \"{ns}\"{hint}",
                d.spec.profile_ref
            ),
        );
    }
    let mut source_endpoint = None;
    let mut destination_endpoint = None;
    for (i, op) in ops.iter().enumerate() {
        let base = format!("spec.operations[{i}]");
        match op {
            Operation::Source {
                source_settings: s, ..
            } => {
                let path = format!("{base}.sourceSettings");
                let endpoint =
                    resolve_endpoint(c, at, ns, &format!("{path}.endpointRef"), &s.endpoint_ref);
                if source_endpoint.is_none() {
                    source_endpoint = endpoint;
                }
                if s.data_sources.is_empty() {
                    c.error(
                        at,
                        format!("{path}.dataSources"),
                        "at least one topic is needed",
                    );
                }
                if let Some(e) = endpoint {
                    check_source(c, at, &path, s, e, &d.spec.profile_ref);
                }
            }
            Operation::BuiltInTransformation {
                built_in_transformation_settings: t,
                ..
            } => {
                let path = format!("{base}.builtInTransformationSettings");
                if t.datasets.len() > 1 {
                    c.error(
                        at,
                        format!("{path}.datasets"),
                        format!("at most one dataset, found {}", t.datasets.len()),
                    );
                }
            }
            Operation::Destination {
                destination_settings: s,
                ..
            } => {
                let path = format!("{base}.destinationSettings");
                let endpoint =
                    resolve_endpoint(c, at, ns, &format!("{path}.endpointRef"), &s.endpoint_ref);
                if destination_endpoint.is_none() {
                    destination_endpoint = endpoint;
                }
                if let Some(e) = endpoint {
                    check_destination(c, at, &path, s, e);
                }
            }
        }
    }
    if let Some(e) = destination_endpoint
        && let EndpointSpec::LocalStorage {
            local_storage_settings,
        } = &e.spec
    {
        check_storage_schema(c, at, ops, local_storage_settings);
    }
    for f in crate::unsupported::dataflow_findings(&d.metadata.name, ns, &d.spec, c.snapshot) {
        c.warning(at, f.path, f.message);
    }
    if c.options.require_local_broker
        && let (Some(src), Some(dst)) = (source_endpoint, destination_endpoint)
        && !c.snapshot.is_local_broker(src)
        && !c.snapshot.is_local_broker(dst)
    {
        c.error(
            at,
            "spec.operations",
            format!(
                "neither the source endpoint \"{}\" nor the destination endpoint \"{}\" is the local MQTT broker (the Mqtt endpoint named \"default\", or one whose host is omitted or \"{}\"); Azure IoT Operations requires one of them to be: name the local broker with --local-broker HOST:PORT, or allow such dataflows with --allow-no-local-broker",
                src.metadata.name, dst.metadata.name, c.snapshot.local_broker_host
            ),
        );
    }
}

fn resolve_endpoint<'s>(
    c: &mut Checker<'s>,
    at: At<'_>,
    ns: &str,
    path: &str,
    name: &str,
) -> Option<&'s DataflowEndpoint> {
    let snapshot = c.snapshot;
    if let Some(e) = snapshot.endpoint(ns, name) {
        return Some(e);
    }
    if !c.is_broken(Kind::DataflowEndpoint, ns, name) {
        let names = snapshot
            .endpoints
            .iter()
            .filter(|e| e.metadata.namespace == ns)
            .map(|e| e.metadata.name.as_str());
        let hint = suggestion(name, names);
        c.error(
            at,
            path,
            format!("no DataflowEndpoint named \"{name}\" in namespace \"{ns}\"{hint}"),
        );
    }
    None
}

fn check_source(
    c: &mut Checker<'_>,
    at: At<'_>,
    path: &str,
    s: &SourceSettings,
    e: &DataflowEndpoint,
    profile_ref: &str,
) {
    let reference = format!("{path}.endpointRef");
    match &e.spec {
        EndpointSpec::LocalStorage { .. } => {
            c.error(
                at,
                reference,
                format!(
                    "DataflowEndpoint \"{}\" is LocalStorage, which can only be a destination",
                    e.metadata.name
                ),
            );
        }
        EndpointSpec::Kafka { kafka_settings } => {
            if kafka_settings.consumer_group_id.is_none() {
                c.error(at, reference, format!("Kafka source endpoint \"{}\" has no kafkaSettings.consumerGroupId (required for a source)", e.metadata.name));
            }
            for (i, topic) in s.data_sources.iter().enumerate() {
                if let Err(m) = check_kafka_topic(topic) {
                    c.error(at, format!("{path}.dataSources[{i}]"), m);
                }
            }
        }
        EndpointSpec::Mqtt { .. } => {
            for (i, topic) in s.data_sources.iter().enumerate() {
                let normalised = topic
                    .strip_prefix("$shared/")
                    .map_or_else(|| topic.clone(), |rest| format!("$share/{rest}"));
                if let Err(err) = validate_topic_filter(&normalised) {
                    c.error(
                        at,
                        format!("{path}.dataSources[{i}]"),
                        format!(
                            "\"{topic}\" is not a valid MQTT topic filter: {err} [{}]",
                            err.clause()
                        ),
                    );
                }
            }
            let ns = &at.metadata.namespace;
            if is_event_grid(e)
                && let Some(p) = c.snapshot.profile(ns, profile_ref)
                && p.spec.instance_count > 1
            {
                c.error(at, reference, format!("Event Grid source \"{}\" with profile \"{profile_ref}\" of instanceCount {}: Event Grid has no shared subscriptions, so the instance count must be 1", e.metadata.name, p.spec.instance_count));
            }
        }
    }
}

fn check_destination(
    c: &mut Checker<'_>,
    at: At<'_>,
    path: &str,
    s: &DestinationSettings,
    e: &DataflowEndpoint,
) {
    let dest_path = format!("{path}.dataDestination");
    let topic = &s.data_destination;
    match &e.spec {
        EndpointSpec::Mqtt { mqtt_settings } => {
            for (severity_error, m) in check_mqtt_destination(topic) {
                if severity_error {
                    c.error(at, dest_path.clone(), m);
                } else {
                    c.warning(at, dest_path.clone(), m);
                }
            }
            if is_event_grid(e) && mqtt_settings.retain == Retain::Keep {
                c.warning(at, format!("{path}.endpointRef"), format!("Event Grid does not support retained messages and rejects them: set retain: Never on DataflowEndpoint \"{}\"", e.metadata.name));
            }
        }
        EndpointSpec::Kafka { .. } => {
            if topic.contains("${") {
                c.error(at, dest_path, "a Kafka destination takes a static topic (no ${...} variables), as in Azure IoT Operations");
            } else if let Err(m) = check_kafka_topic(topic) {
                c.error(at, dest_path, m);
            }
        }
        EndpointSpec::LocalStorage { .. } => {
            let ok = !topic.is_empty()
                && !topic.starts_with('/')
                && !topic.contains(['\\', '\0'])
                && !topic.contains("${")
                && topic
                    .split('/')
                    .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
            if !ok {
                c.error(at, dest_path, format!("\"{topic}\" is not a folder inside the volume: a relative path without '..', empty parts or variables"));
            }
        }
    }
}

/// The output schema of a dataflow whose destination is LocalStorage: the transformation's
/// `serializationFormat` (Parquet; Delta is written as Parquet files without a Delta log) and
/// its `schemaRef` (a readable, valid Delta schema in `--schemas-dir`, when that is given),
/// whose fields must not clash with the endpoint's metadata columns.
fn check_storage_schema(
    c: &mut Checker<'_>,
    at: At<'_>,
    ops: &[Operation],
    settings: &LocalStorageSettings,
) {
    let Some((i, t)) = ops.iter().enumerate().find_map(|(i, op)| match op {
        Operation::BuiltInTransformation {
            built_in_transformation_settings: t,
            ..
        } => Some((i, t)),
        _ => None,
    }) else {
        return;
    };
    let path = format!("spec.operations[{i}].builtInTransformationSettings");
    match t.serialization_format {
        TransformationSerializationFormat::Parquet => {}
        TransformationSerializationFormat::Delta => c.warning(
            at,
            format!("{path}.serializationFormat"),
            "LocalStorage is written as Parquet files; no Delta transaction log is kept",
        ),
        TransformationSerializationFormat::Json => c.error(
            at,
            format!("{path}.serializationFormat"),
            "a LocalStorage destination writes Parquet: set serializationFormat: Parquet (Json is the default)",
        ),
    }
    let Some(reference) = &t.schema_ref else {
        return;
    };
    let ref_path = format!("{path}.schemaRef");
    let parsed = match crate::delta::SchemaRef::parse(reference) {
        Ok(r) => r,
        Err(m) => {
            c.error(at, ref_path, m);
            return;
        }
    };
    let Some(dir) = c.options.schemas_dir.clone() else {
        return;
    };
    match crate::delta::load_schema(c.files, &dir, &parsed) {
        Ok(schema) => {
            for col in &settings.metadata_columns {
                if schema.field(col.column_name()).is_some() {
                    c.error(
                        at,
                        ref_path.clone(),
                        format!(
                            "the schema has a field \"{}\", which is also the column of metadataColumns {col} of the destination endpoint",
                            col.column_name()
                        ),
                    );
                }
            }
        }
        Err(m) => c.error(at, ref_path, m),
    }
}

/// Checks a Kafka topic name: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
fn check_kafka_topic(topic: &str) -> Result<(), String> {
    let valid = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else if topic.contains(['+', '#', '*']) {
        Err(format!(
            "\"{topic}\" is not a Kafka topic: Kafka topics take no wildcards"
        ))
    } else {
        Err(format!(
            "\"{topic}\" is not a Kafka topic: 1 to 249 letters, digits, '.', '_' and '-'"
        ))
    }
}

/// Checks an MQTT destination topic with `${inputTopic}` / `${inputTopic.N}` variables.
/// Returns `(is_error, message)` pairs.
pub fn check_mqtt_destination(topic: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut literal = String::with_capacity(topic.len());
    let mut rest = topic;
    while let Some(start) = rest.find("${") {
        literal.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push((true, format!("\"{topic}\": \"${{\" without a closing '}}'")));
            rest = "";
            break;
        };
        let var = &after[..end];
        match var.strip_prefix("inputTopic") {
            Some("") => {}
            Some(index) => match index.strip_prefix('.').map(str::parse::<u32>) {
                Some(Ok(n)) if n >= 1 => {}
                Some(Ok(_)) => out.push((true, format!("\"${{{var}}}\": topic segments are numbered from 1"))),
                _ => out.push((true, format!("\"${{{var}}}\" is not a valid variable: expected ${{inputTopic}} or ${{inputTopic.N}} with N from 1"))),
            },
            None => {
                let hint = suggestion(var, ["inputTopic"]);
                out.push((true, format!("unknown variable \"${{{var}}}\": expected ${{inputTopic}} or ${{inputTopic.N}}{hint}")));
            }
        }
        literal.push('x');
        rest = &after[end + 1..];
    }
    literal.push_str(rest);
    if let Err(err) = validate_topic_name(&literal) {
        out.push((
            true,
            format!(
                "\"{topic}\" is not a valid MQTT topic name: {err} [{}]",
                err.clause()
            ),
        ));
    }
    if literal.contains("$inputTopic") {
        out.push((false, "\"$inputTopic\" without braces is taken literally; write ${inputTopic} or ${inputTopic.N}".to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_templates() {
        assert!(check_mqtt_destination("a/${inputTopic}/b").is_empty());
        assert!(check_mqtt_destination("processed/${inputTopic.2}").is_empty());
        let e = check_mqtt_destination("a/${inputTopic.0}");
        assert!(e[0].1.contains("numbered from 1"), "{e:?}");
        let e = check_mqtt_destination("a/${inputTopik}");
        assert!(e[0].1.contains("did you mean \"inputTopic\""), "{e:?}");
        let e = check_mqtt_destination("a/${inputTopic");
        assert!(e[0].1.contains("without a closing"), "{e:?}");
        let e = check_mqtt_destination("a/+/b");
        assert!(e[0].1.contains("wildcard"), "{e:?}");
        let e = check_mqtt_destination("factory/$inputTopic.2");
        assert_eq!(e.len(), 1);
        assert!(!e[0].0);
    }

    #[test]
    fn hosts() {
        assert!(check_host_port("localhost:1883", false, 1883).is_ok());
        assert!(check_host_port("[::1]:1883", false, 1883).is_ok());
        assert!(check_host_port("localhost", false, 1883).is_err());
        assert!(check_host_port("h:0", false, 1883).is_err());
        assert!(check_host_port("h:70000", false, 1883).is_err());
        assert!(check_host_port("eg.eventgrid.azure.net:443/mqtt", true, 1883).is_ok());
        assert!(check_host_port("eg.eventgrid.azure.net:443/mqtt", false, 1883).is_err());
        // What the data plane cannot connect to does not validate.
        assert!(check_host_port("a:b:c", false, 1883).is_err());
        assert!(check_host_port("bad host:1", false, 1883).is_err());
        assert!(check_host_port("h:443/a b", true, 1883).is_err());
        assert_eq!(
            check_host_port("h/mqtt", true, 443).unwrap_err(),
            "\"h/mqtt\" has no port: expected host:port, e.g. \"h:443/mqtt\""
        );
        assert_eq!(
            host_name("EG.eventgrid.azure.net:443/mqtt"),
            "eg.eventgrid.azure.net"
        );
        assert_eq!(host_name("[::1]:443/mqtt"), "::1");
        assert!(is_dns_label("kafka-out"));
        assert!(!is_dns_label("Kafka"));
        assert!(!is_dns_label("-a"));
    }
}
