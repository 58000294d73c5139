//! Decoding YAML [`Node`]s into the typed model, collecting every problem in one pass.
//!
//! What is checked here is the shape: unknown fields (with a did-you-mean against the fields
//! accepted at that place), types, required fields, enum values (accepted values listed, with a
//! did-you-mean), and settings that do not belong to the chosen type or method. Defaults are
//! applied as each struct is built. What depends on values or on other resources (ranges, topic
//! syntax, references, files) is [`crate::validate`], which also runs on a snapshot received as
//! JSON.
//!
//! A document whose `apiVersion` is not `connectivity.iotoperations.azure.com/...` is skipped
//! with a warning, so a folder may also hold other Kubernetes objects.

use std::collections::BTreeMap;

use crate::diag::{Diagnostic, one_of, shown, suggestion};
use crate::model::*;
use crate::validate::Broken;
use crate::yaml::{Key, Node, Pos, SyntaxError, Value, for_each_document};

/// Field path -> where its value starts, for one resource.
pub type Positions = BTreeMap<String, Pos>;

/// Where a loaded resource came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The file, as given to the loader.
    pub file: String,
    /// Where the document starts.
    pub pos: Pos,
    /// Where each field path's value starts.
    pub positions: Positions,
}

impl Origin {
    /// The position of `path`, or of its nearest recorded parent, or of the document.
    pub fn locate(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.pos,
            }
        }
    }
}

/// A resource decoded from a file, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedResource {
    /// The resource, defaults applied.
    pub resource: Resource,
    /// File and positions.
    pub origin: Origin,
}

/// The apiVersion group of the resources Sluice reads.
pub const API_GROUP: &str = "connectivity.iotoperations.azure.com/";

/// What loading manifests produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The resources that could be built, defaults applied. One may have had problems (an
    /// unknown field, say): they are in `diagnostics`.
    pub resources: Vec<LoadedResource>,
    /// Resources that were found (kind and name readable) but did not decode.
    pub broken: Vec<Broken>,
    /// Every problem found while parsing and decoding.
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses and decodes every document of one file, adding to `loaded`. A resource that cannot be
/// built (a required field missing, a value of the wrong type) is left out of `loaded.resources`
/// and named in `loaded.broken`; every problem goes to `loaded.diagnostics`.
pub fn load_str(file: &str, text: &str, loaded: &mut Loaded) {
    // Each document is decoded as soon as it is parsed and its tree dropped; what it gave waits
    // here, because a syntax error later in the file means nothing of the file is kept.
    let mut from_file = Loaded::default();
    let parsed = for_each_document(text, |doc| decode_into(file, &doc, &mut from_file));
    if let Err(SyntaxError { pos, message }) = parsed {
        let mut d = Diagnostic::error("", format!("not valid YAML: {message}"));
        d.file = Some(file.to_owned());
        d.line = Some(pos.line);
        d.column = Some(pos.column);
        loaded.diagnostics.push(d);
        return;
    }
    loaded.resources.append(&mut from_file.resources);
    loaded.broken.append(&mut from_file.broken);
    loaded.diagnostics.append(&mut from_file.diagnostics);
}

/// Decodes one document of `file` into `loaded`.
fn decode_into(file: &str, doc: &Node, loaded: &mut Loaded) {
    let mut cx = Cx {
        file,
        diags: Vec::new(),
        positions: Positions::new(),
        legacy: false,
        identity: None,
    };
    let resource = decode_document(&mut cx, doc);
    let failed = cx.diags.iter().any(Diagnostic::is_error);
    let label = cx.identity.as_ref().map(|(k, m)| label(*k, m));
    cx.diags.sort_by_key(|d| (d.line, d.column));
    for mut d in cx.diags {
        d.resource = d.resource.or_else(|| label.clone());
        loaded.diagnostics.push(d);
    }
    match resource {
        // A resource with only problems that still let it be built (an unknown field, settings
        // of another method) is kept, so that the later checks report their problems too; the
        // error above already keeps it out of any snapshot.
        Some(resource) => loaded.resources.push(LoadedResource {
            resource,
            origin: Origin {
                file: file.to_owned(),
                pos: doc.pos,
                positions: cx.positions,
            },
        }),
        None => {
            if let (Some((kind, m)), true) = (cx.identity, failed) {
                loaded.broken.push((kind, m.namespace, m.name));
            }
        }
    }
}

struct Cx<'a> {
    file: &'a str,
    diags: Vec<Diagnostic>,
    positions: Positions,
    /// `apiVersion: v1beta1`: the 2024 preview's lower-case spellings pass without a warning.
    legacy: bool,
    /// Kind and metadata, once decoded.
    identity: Option<(Kind, Metadata)>,
}

impl Cx<'_> {
    fn push(&mut self, mut d: Diagnostic, pos: Pos) {
        d.file = Some(self.file.to_owned());
        d.line = Some(pos.line);
        d.column = Some(pos.column);
        self.diags.push(d);
    }

    fn error(&mut self, path: &str, pos: Pos, message: impl Into<String>) {
        self.push(Diagnostic::error(path, message), pos);
    }

    fn warning(&mut self, path: &str, pos: Pos, message: impl Into<String>) {
        self.push(Diagnostic::warning(path, message), pos);
    }

    fn wrong_type(&mut self, path: &str, node: &Node, expected: &str) {
        self.error(
            path,
            node.pos,
            format!("expected {expected}, found {}", describe(&node.value)),
        );
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Str(s) => format!("the string \"{s}\""),
        Value::Int(i) => format!("the integer {i}"),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Float(f) => format!("the number {f}"),
        other => other.kind().to_owned(),
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// A mapping being decoded: tracks which keys were read, to report the others.
struct Obj<'n> {
    path: String,
    pos: Pos,
    entries: &'n [(Key, Node)],
    used: Vec<bool>,
    known: Vec<&'static str>,
}

impl<'n> Obj<'n> {
    fn new(cx: &mut Cx<'_>, node: &'n Node, path: String) -> Option<Self> {
        match &node.value {
            Value::Map(entries) => Some(Self {
                path,
                pos: node.pos,
                entries,
                used: vec![false; entries.len()],
                known: Vec::new(),
            }),
            _ => {
                cx.wrong_type(&path, node, "a mapping");
                None
            }
        }
    }

    fn child(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// The value of `name` (null counts as absent), marking it read.
    fn field(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<(&'n Node, String)> {
        self.known.push(name);
        let i = self.entries.iter().position(|(k, _)| k.name == name)?;
        self.used[i] = true;
        let node = &self.entries[i].1;
        let path = self.child(name);
        cx.positions.insert(path.clone(), node.pos);
        if node.value == Value::Null {
            return None;
        }
        Some((node, path))
    }

    /// Marks `name` as accepted and ignored.
    fn ignore(&mut self, name: &'static str) {
        self.known.push(name);
        if let Some(i) = self.entries.iter().position(|(k, _)| k.name == name) {
            self.used[i] = true;
        }
    }

    fn missing(&self, cx: &mut Cx<'_>, name: &str) {
        cx.error(&self.child(name), self.pos, "required field is missing");
    }

    fn req_str(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<String> {
        match self.field(cx, name) {
            Some((node, path)) => non_empty(cx, node, &path),
            None => {
                self.missing(cx, name);
                None
            }
        }
    }

    /// An optional string: `Ok(None)` when absent, `Err(())` when wrong.
    fn opt_str(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Result<Option<String>, ()> {
        match self.field(cx, name) {
            Some((node, path)) => non_empty(cx, node, &path).map(Some).ok_or(()),
            None => Ok(None),
        }
    }

    fn opt_uint<T: TryFrom<i64>>(
        &mut self,
        cx: &mut Cx<'_>,
        name: &'static str,
        default: T,
        max: i64,
    ) -> Result<T, ()> {
        let Some((node, path)) = self.field(cx, name) else {
            return Ok(default);
        };
        match node.value {
            Value::Int(i) if (0..=max).contains(&i) => T::try_from(i).map_err(|_| ()),
            Value::Int(i) => {
                cx.error(
                    &path,
                    node.pos,
                    format!("{i} is out of range: expected 0 to {max}"),
                );
                Err(())
            }
            _ => {
                cx.wrong_type(&path, node, "an integer");
                Err(())
            }
        }
    }

    fn opt_bool(&mut self, cx: &mut Cx<'_>, name: &'static str, default: bool) -> Result<bool, ()> {
        let Some((node, path)) = self.field(cx, name) else {
            return Ok(default);
        };
        match node.value {
            Value::Bool(b) => Ok(b),
            _ => {
                cx.wrong_type(&path, node, "true or false");
                Err(())
            }
        }
    }

    fn req_enum<E: AioEnum>(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<E> {
        match self.field(cx, name) {
            Some((node, path)) => enum_value(cx, node, &path),
            None => {
                self.missing(cx, name);
                None
            }
        }
    }

    fn opt_enum<E: AioEnum>(
        &mut self,
        cx: &mut Cx<'_>,
        name: &'static str,
    ) -> Result<Option<E>, ()> {
        match self.field(cx, name) {
            Some((node, path)) => enum_value(cx, node, &path).map(Some).ok_or(()),
            None => Ok(None),
        }
    }

    fn opt_obj(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Result<Option<Obj<'n>>, ()> {
        match self.field(cx, name) {
            Some((node, path)) => Obj::new(cx, node, path).map(Some).ok_or(()),
            None => Ok(None),
        }
    }

    fn req_obj(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<Obj<'n>> {
        match self.field(cx, name) {
            Some((node, path)) => Obj::new(cx, node, path),
            None => {
                self.missing(cx, name);
                None
            }
        }
    }

    fn req_strings(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<Vec<String>> {
        match self.field(cx, name) {
            Some((node, path)) => strings(cx, node, &path),
            None => {
                self.missing(cx, name);
                None
            }
        }
    }

    /// Reports every key not read, with a did-you-mean; `hints` adds a specific message for
    /// fields known from older AIO manifests.
    fn finish_with(self, cx: &mut Cx<'_>, hints: &[(&str, &str)]) {
        for (i, (key, _)) in self.entries.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            let path = self.child(&shown(&key.name));
            let message = match hints.iter().find(|(k, _)| *k == key.name) {
                Some((_, hint)) => format!("unknown field \"{}\": {hint}", key.name),
                None => format!(
                    "unknown field \"{}\"{}",
                    shown(&key.name),
                    suggestion(&key.name, self.known.iter().copied())
                ),
            };
            cx.error(&path, key.pos, message);
        }
    }

    fn finish(self, cx: &mut Cx<'_>) {
        self.finish_with(cx, &[]);
    }
}

fn non_empty(cx: &mut Cx<'_>, node: &Node, path: &str) -> Option<String> {
    match &node.value {
        Value::Str(s) if s.trim().is_empty() => {
            cx.error(path, node.pos, "must not be empty");
            None
        }
        Value::Str(s) => Some(s.clone()),
        _ => {
            cx.wrong_type(path, node, "a string");
            None
        }
    }
}

fn strings(cx: &mut Cx<'_>, node: &Node, path: &str) -> Option<Vec<String>> {
    let Value::Seq(items) = &node.value else {
        cx.wrong_type(path, node, "a list of strings");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        cx.positions.insert(item_path.clone(), item.pos);
        match &item.value {
            Value::Str(s) => out.push(s.clone()),
            _ => {
                cx.wrong_type(&item_path, item, "a string");
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn enum_value<E: AioEnum>(cx: &mut Cx<'_>, node: &Node, path: &str) -> Option<E> {
    enum_value_spelt(cx, node, path, true)
}

/// An enumeration value: its canonical spelling; the 2024 preview's lower-case first letter
/// (silent under `v1beta1`, a warning under `v1`); and, when `any_case`, the value in another
/// case (`PLAIN`, `LZ4`), with the same rule. The model always holds the canonical value.
fn enum_value_spelt<E: AioEnum>(
    cx: &mut Cx<'_>,
    node: &Node,
    path: &str,
    any_case: bool,
) -> Option<E> {
    let Value::Str(s) = &node.value else {
        cx.error(
            path,
            node.pos,
            format!(
                "expected one of {}, found {}",
                one_of(E::VALUES.iter().map(|(n, _)| *n)),
                describe(&node.value)
            ),
        );
        return None;
    };
    if let Some(v) = E::parse(s) {
        return Some(v);
    }
    if let Some(v) = E::parse_legacy(s) {
        if !cx.legacy {
            cx.warning(
                path,
                node.pos,
                format!(
                    "\"{s}\" is the spelling of Azure IoT Operations' 2024 preview; {} writes \"{}\"",
                    ApiVersion::V1,
                    v.as_str()
                ),
            );
        }
        return Some(v);
    }
    if any_case && let Some(v) = E::parse_any_case(s) {
        if !cx.legacy {
            cx.warning(
                path,
                node.pos,
                format!(
                    "\"{s}\" is taken as \"{}\", the spelling of {}",
                    v.as_str(),
                    ApiVersion::V1
                ),
            );
        }
        return Some(v);
    }
    let names = E::VALUES.iter().map(|(n, _)| *n);
    cx.error(
        path,
        node.pos,
        format!(
            "\"{s}\" is not a valid {}: expected {}{}",
            E::WHAT,
            one_of(names.clone()),
            suggestion(s, names)
        ),
    );
    None
}

/// Kubernetes `ObjectMeta` fields accepted (and dropped) besides `name` and `namespace`.
const OTHER_METADATA: &[&str] = &[
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "finalizers",
    "ownerReferences",
    "generateName",
    "selfLink",
];

fn decode_document(cx: &mut Cx<'_>, node: &Node) -> Option<Resource> {
    let mut top = Obj::new(cx, node, String::new())?;
    let api_version = match top.field(cx, "apiVersion") {
        Some((n, path)) => match &n.value {
            Value::Str(s) if !s.starts_with(API_GROUP) => {
                cx.warning(
                    &path,
                    n.pos,
                    format!("document ignored: \"{s}\" is not a {API_GROUP}v1 or v1beta1 resource"),
                );
                return None;
            }
            _ => enum_value_spelt::<ApiVersion>(cx, n, &path, false),
        },
        None => {
            top.missing(cx, "apiVersion");
            None
        }
    };
    cx.legacy = api_version == Some(ApiVersion::V1Beta1);
    let kind = match top.field(cx, "kind") {
        Some((n, path)) => match &n.value {
            Value::Str(s) if s == "DataflowGraph" => {
                cx.error(&path, n.pos, "kind \"DataflowGraph\" is not supported by Sluice: expected \"DataflowEndpoint\", \"Dataflow\" or \"DataflowProfile\"");
                None
            }
            _ => enum_value_spelt::<Kind>(cx, n, &path, false),
        },
        None => {
            top.missing(cx, "kind");
            None
        }
    };
    let metadata = top
        .req_obj(cx, "metadata")
        .and_then(|m| decode_metadata(cx, m));
    let spec = top.field(cx, "spec");
    top.ignore("status");
    top.finish(cx);
    if let (Some(k), Some(m)) = (kind, &metadata) {
        cx.identity = Some((k, m.clone()));
    }
    let (api_version, kind, metadata) = (api_version?, kind?, metadata?);
    match kind {
        Kind::DataflowEndpoint => {
            let Some((n, path)) = spec else {
                top_missing_spec(cx, node);
                return None;
            };
            let obj = Obj::new(cx, n, path)?;
            let spec = decode_endpoint_spec(cx, obj)?;
            Some(Resource::DataflowEndpoint(DataflowEndpoint {
                api_version,
                metadata,
                spec,
            }))
        }
        Kind::Dataflow => {
            let Some((n, path)) = spec else {
                top_missing_spec(cx, node);
                return None;
            };
            let obj = Obj::new(cx, n, path)?;
            let spec = decode_dataflow_spec(cx, obj)?;
            Some(Resource::Dataflow(Dataflow {
                api_version,
                metadata,
                spec,
            }))
        }
        Kind::DataflowProfile => {
            let spec = match spec {
                Some((n, path)) => {
                    let obj = Obj::new(cx, n, path)?;
                    decode_profile_spec(cx, obj)?
                }
                None => ProfileSpec::default(),
            };
            Some(Resource::DataflowProfile(DataflowProfile {
                api_version,
                metadata,
                spec,
            }))
        }
    }
}

fn top_missing_spec(cx: &mut Cx<'_>, node: &Node) {
    cx.error("spec", node.pos, "required field is missing");
}

fn decode_metadata(cx: &mut Cx<'_>, mut m: Obj<'_>) -> Option<Metadata> {
    let name = m.req_str(cx, "name");
    let namespace = m.opt_str(cx, "namespace");
    for field in OTHER_METADATA {
        m.ignore(field);
    }
    m.finish(cx);
    Some(Metadata {
        name: name?,
        namespace: namespace
            .ok()?
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
    })
}

/// AIO endpoint types Sluice does not implement.
const UNSUPPORTED_ENDPOINT_TYPES: &[&str] = &[
    "DataExplorer",
    "DataLakeStorage",
    "FabricOneLake",
    "OpenTelemetry",
];

const LEGACY_SPEC_AUTH_HINT: &str = "the August 2024 preview's spec-level authentication is not supported; put it under mqttSettings or kafkaSettings";

fn decode_endpoint_spec(cx: &mut Cx<'_>, mut spec: Obj<'_>) -> Option<EndpointSpec> {
    let endpoint_type = match spec.field(cx, "endpointType") {
        Some((n, path)) => match &n.value {
            Value::Str(s) if UNSUPPORTED_ENDPOINT_TYPES.contains(&s.as_str()) => {
                cx.error(
                    &path,
                    n.pos,
                    format!(
                        "endpointType \"{s}\" is not supported by Sluice: expected {}",
                        one_of(EndpointType::VALUES.iter().map(|(n, _)| *n))
                    ),
                );
                None
            }
            _ => enum_value::<EndpointType>(cx, n, &path),
        },
        None => {
            spec.missing(cx, "endpointType");
            None
        }
    };
    let settings_keys: [(&'static str, EndpointType); 3] = [
        ("mqttSettings", EndpointType::Mqtt),
        ("kafkaSettings", EndpointType::Kafka),
        ("localStorageSettings", EndpointType::LocalStorage),
    ];
    let mut result = None;
    for (key, ty) in settings_keys {
        let Some((node, path)) = spec.field(cx, key) else {
            if endpoint_type == Some(ty) {
                spec.missing(cx, key);
            }
            continue;
        };
        match endpoint_type {
            Some(t) if t == ty => {
                let Some(obj) = Obj::new(cx, node, path) else {
                    continue;
                };
                result = match ty {
                    EndpointType::Mqtt => decode_mqtt(cx, obj)
                        .map(|mqtt_settings| EndpointSpec::Mqtt { mqtt_settings }),
                    EndpointType::Kafka => decode_kafka(cx, obj)
                        .map(|kafka_settings| EndpointSpec::Kafka { kafka_settings }),
                    EndpointType::LocalStorage => {
                        decode_local_storage(cx, obj).map(|local_storage_settings| {
                            EndpointSpec::LocalStorage {
                                local_storage_settings,
                            }
                        })
                    }
                };
            }
            Some(t) => cx.error(
                &path,
                node.pos,
                format!(
                    "does not apply to endpointType {t}; {t} takes {}",
                    settings_key(t)
                ),
            ),
            None => {}
        }
    }
    for (key, _) in [
        ("dataExplorerSettings", ()),
        ("dataLakeStorageSettings", ()),
        ("fabricOneLakeSettings", ()),
        ("openTelemetrySettings", ()),
    ] {
        if let Some((node, path)) = spec.field(cx, key) {
            cx.error(&path, node.pos, "not supported by Sluice");
        }
    }
    spec.finish_with(cx, &[("authentication", LEGACY_SPEC_AUTH_HINT)]);
    result
}

fn settings_key(t: EndpointType) -> &'static str {
    match t {
        EndpointType::Mqtt => "mqttSettings",
        EndpointType::Kafka => "kafkaSettings",
        EndpointType::LocalStorage => "localStorageSettings",
    }
}

fn decode_tls(cx: &mut Cx<'_>, parent: &mut Obj<'_>) -> Result<Tls, ()> {
    let Some(mut tls) = parent.opt_obj(cx, "tls")? else {
        return Ok(Tls::default());
    };
    let mode = tls.opt_enum(cx, "mode");
    let current = tls.opt_str(cx, "trustedCaCertificateConfigMapRef");
    let older = tls.opt_str(cx, "trustedCaCertificateConfigMap");
    let ca = match (current?, older?) {
        (Some(_), Some(_)) => {
            let path = tls.child("trustedCaCertificateConfigMap");
            let pos = cx.positions.get(&path).copied().unwrap_or(tls.pos);
            cx.error(
                &path,
                pos,
                "give trustedCaCertificateConfigMapRef or the older trustedCaCertificateConfigMap, not both",
            );
            Err(())
        }
        (Some(name), None) => Ok(Some(name)),
        (None, Some(name)) => {
            if !cx.legacy {
                let path = tls.child("trustedCaCertificateConfigMap");
                let pos = cx.positions.get(&path).copied().unwrap_or(tls.pos);
                cx.warning(
                    &path,
                    pos,
                    format!(
                        "trustedCaCertificateConfigMap is the v1beta1 name; {} writes trustedCaCertificateConfigMapRef",
                        ApiVersion::V1
                    ),
                );
            }
            Ok(Some(name))
        }
        (None, None) => Ok(None),
    };
    tls.finish(cx);
    Ok(Tls {
        mode: mode?.unwrap_or(OperationalMode::Enabled),
        trusted_ca_certificate_config_map_ref: ca?,
    })
}

fn decode_mqtt(cx: &mut Cx<'_>, mut s: Obj<'_>) -> Option<MqttSettings> {
    let host = s.opt_str(cx, "host");
    // Omitted (or only comments, as in AIO's examples): AIO's default for its local broker.
    let authentication = match s.opt_obj(cx, "authentication") {
        Ok(Some(a)) => decode_mqtt_auth(cx, a),
        Ok(None) => Some(MqttAuthentication::aio_default()),
        Err(()) => None,
    };
    let tls = decode_tls(cx, &mut s);
    let qos = s.opt_uint(cx, "qos", DEFAULT_QOS, i64::from(u8::MAX));
    let mqtt_version = s.opt_enum(cx, "mqttVersion");
    let client_id_prefix = s.opt_str(cx, "clientIdPrefix");
    let keep_alive = s.opt_uint(
        cx,
        "keepAliveSeconds",
        DEFAULT_KEEP_ALIVE_SECONDS,
        u32_max(),
    );
    let session_expiry = s.opt_uint(
        cx,
        "sessionExpirySeconds",
        DEFAULT_SESSION_EXPIRY_SECONDS,
        u32_max(),
    );
    let clean_session = s.opt_bool(cx, "cleanSession", false);
    let retain = s.opt_enum(cx, "retain");
    let max_inflight = s.opt_uint(
        cx,
        "maxInflightMessages",
        DEFAULT_MAX_INFLIGHT_MESSAGES,
        u32_max(),
    );
    let protocol = s.opt_enum(cx, "protocol");
    let cloud = s.opt_enum(cx, "cloudEventAttributes");
    s.finish_with(
        cx,
        &[
            ("sharedSubscription", "the 2024 preview's sharedSubscription is not supported; write $shared/<group>/<filter> (or $share/...) in the dataflow's dataSources"),
            ("keepRetain", "the 2024 preview's keepRetain is now retain: Keep or Never"),
        ],
    );
    Some(MqttSettings {
        host: host.ok()?,
        authentication: authentication?,
        tls: tls.ok()?,
        qos: qos.ok()?,
        mqtt_version: mqtt_version.ok()?.unwrap_or(MqttVersion::V5),
        client_id_prefix: client_id_prefix.ok()?,
        keep_alive_seconds: keep_alive.ok()?,
        session_expiry_seconds: session_expiry.ok()?,
        clean_session: clean_session.ok()?,
        retain: retain.ok()?.unwrap_or(Retain::Keep),
        max_inflight_messages: max_inflight.ok()?,
        protocol: protocol.ok()?.unwrap_or(MqttProtocol::Mqtt),
        cloud_event_attributes: cloud.ok()?,
    })
}

fn u32_max() -> i64 {
    i64::from(u32::MAX)
}

/// The `*Settings` keys of `authentication` and the method each belongs to.
const AUTH_SETTINGS: &[(&str, &str)] = &[
    ("anonymousSettings", "Anonymous"),
    ("x509CertificateSettings", "X509Certificate"),
    ("serviceAccountTokenSettings", "ServiceAccountToken"),
    (
        "systemAssignedManagedIdentitySettings",
        "SystemAssignedManagedIdentity",
    ),
    (
        "userAssignedManagedIdentitySettings",
        "UserAssignedManagedIdentity",
    ),
    ("usernamePasswordSettings", "UsernamePassword"),
    ("saslSettings", "Sasl"),
];

const LEGACY_AUTH_HINTS: &[(&str, &str)] = &[(
    "x509CredentialsSettings",
    "the 2024 preview's x509CredentialsSettings is now x509CertificateSettings with secretRef",
)];

/// Reads `method`, then the settings of that method; settings of other methods are errors.
/// Returns the method and its settings object, if any.
fn auth_settings<'n, E: AioEnum>(
    cx: &mut Cx<'_>,
    a: &mut Obj<'n>,
    allowed: &[&'static str],
) -> Option<(E, Option<Obj<'n>>)> {
    let method: Option<E> = a.req_enum(cx, "method");
    let mut settings = None;
    let mut ok = true;
    for (key, owner) in AUTH_SETTINGS {
        if !allowed.contains(key) {
            continue;
        }
        let Some((node, path)) = a.field(cx, key) else {
            continue;
        };
        match method {
            Some(m) if m.as_str() == *owner => match Obj::new(cx, node, path) {
                Some(obj) => settings = Some(obj),
                None => ok = false,
            },
            Some(m) => cx.error(
                &path,
                node.pos,
                format!("does not apply to method {}", m.as_str()),
            ),
            None => {}
        }
    }
    let method = method?;
    ok.then_some((method, settings))
}

fn secret_ref(
    cx: &mut Cx<'_>,
    a: &Obj<'_>,
    settings: Option<Obj<'_>>,
    key: &str,
) -> Option<SecretRef> {
    let Some(mut s) = settings else {
        a.missing(cx, key);
        return None;
    };
    let secret_ref = s.req_str(cx, "secretRef");
    s.finish(cx);
    Some(SecretRef {
        secret_ref: secret_ref?,
    })
}

fn sami(
    cx: &mut Cx<'_>,
    settings: Option<Obj<'_>>,
) -> Option<SystemAssignedManagedIdentitySettings> {
    let Some(mut s) = settings else {
        return Some(SystemAssignedManagedIdentitySettings::default());
    };
    let audience = s.opt_str(cx, "audience");
    s.finish(cx);
    Some(SystemAssignedManagedIdentitySettings {
        audience: audience.ok()?,
    })
}

fn uami(
    cx: &mut Cx<'_>,
    a: &Obj<'_>,
    settings: Option<Obj<'_>>,
) -> Option<UserAssignedManagedIdentitySettings> {
    let Some(mut s) = settings else {
        a.missing(cx, "userAssignedManagedIdentitySettings");
        return None;
    };
    let client_id = s.req_str(cx, "clientId");
    let tenant_id = s.req_str(cx, "tenantId");
    let scope = s.opt_str(cx, "scope");
    s.finish(cx);
    Some(UserAssignedManagedIdentitySettings {
        client_id: client_id?,
        tenant_id: tenant_id?,
        scope: scope.ok()?,
    })
}

fn anonymous(cx: &mut Cx<'_>, settings: Option<Obj<'_>>) -> Option<()> {
    if let Some(s) = settings {
        s.finish(cx);
    }
    Some(())
}

fn decode_mqtt_auth(cx: &mut Cx<'_>, mut a: Obj<'_>) -> Option<MqttAuthentication> {
    let allowed = [
        "anonymousSettings",
        "x509CertificateSettings",
        "serviceAccountTokenSettings",
        "systemAssignedManagedIdentitySettings",
        "userAssignedManagedIdentitySettings",
        "usernamePasswordSettings",
    ];
    let parsed = auth_settings::<MqttAuthMethod>(cx, &mut a, &allowed);
    let auth = match parsed {
        None => None,
        Some((method, settings)) => match method {
            MqttAuthMethod::Anonymous => {
                anonymous(cx, settings).map(|()| MqttAuthentication::Anonymous)
            }
            MqttAuthMethod::X509Certificate => {
                secret_ref(cx, &a, settings, "x509CertificateSettings").map(
                    |x509_certificate_settings| MqttAuthentication::X509Certificate {
                        x509_certificate_settings,
                    },
                )
            }
            MqttAuthMethod::UsernamePassword => {
                secret_ref(cx, &a, settings, "usernamePasswordSettings").map(
                    |username_password_settings| MqttAuthentication::UsernamePassword {
                        username_password_settings,
                    },
                )
            }
            MqttAuthMethod::ServiceAccountToken => match settings {
                Some(mut s) => {
                    let audience = s.req_str(cx, "audience");
                    s.finish(cx);
                    audience.map(|audience| MqttAuthentication::ServiceAccountToken {
                        service_account_token_settings: ServiceAccountTokenSettings { audience },
                    })
                }
                None => {
                    a.missing(cx, "serviceAccountTokenSettings");
                    None
                }
            },
            MqttAuthMethod::SystemAssignedManagedIdentity => {
                sami(cx, settings).map(|system_assigned_managed_identity_settings| {
                    MqttAuthentication::SystemAssignedManagedIdentity {
                        system_assigned_managed_identity_settings,
                    }
                })
            }
            MqttAuthMethod::UserAssignedManagedIdentity => {
                uami(cx, &a, settings).map(|user_assigned_managed_identity_settings| {
                    MqttAuthentication::UserAssignedManagedIdentity {
                        user_assigned_managed_identity_settings,
                    }
                })
            }
        },
    };
    a.finish_with(cx, LEGACY_AUTH_HINTS);
    auth
}

fn decode_kafka_auth(cx: &mut Cx<'_>, mut a: Obj<'_>) -> Option<KafkaAuthentication> {
    let allowed = [
        "anonymousSettings",
        "x509CertificateSettings",
        "systemAssignedManagedIdentitySettings",
        "userAssignedManagedIdentitySettings",
        "saslSettings",
    ];
    let parsed = auth_settings::<KafkaAuthMethod>(cx, &mut a, &allowed);
    let auth = match parsed {
        None => None,
        Some((method, settings)) => match method {
            KafkaAuthMethod::Anonymous => {
                anonymous(cx, settings).map(|()| KafkaAuthentication::Anonymous)
            }
            KafkaAuthMethod::X509Certificate => {
                secret_ref(cx, &a, settings, "x509CertificateSettings").map(
                    |x509_certificate_settings| KafkaAuthentication::X509Certificate {
                        x509_certificate_settings,
                    },
                )
            }
            KafkaAuthMethod::Sasl => match settings {
                Some(mut s) => {
                    let sasl_type = s.req_enum(cx, "saslType");
                    let secret_ref = s.req_str(cx, "secretRef");
                    s.finish_with(
                        cx,
                        &[(
                            "tokenSecretName",
                            "the 2024 preview's tokenSecretName is now secretRef",
                        )],
                    );
                    Some(KafkaAuthentication::Sasl {
                        sasl_settings: SaslSettings {
                            sasl_type: sasl_type?,
                            secret_ref: secret_ref?,
                        },
                    })
                }
                None => {
                    a.missing(cx, "saslSettings");
                    None
                }
            },
            KafkaAuthMethod::SystemAssignedManagedIdentity => {
                sami(cx, settings).map(|system_assigned_managed_identity_settings| {
                    KafkaAuthentication::SystemAssignedManagedIdentity {
                        system_assigned_managed_identity_settings,
                    }
                })
            }
            KafkaAuthMethod::UserAssignedManagedIdentity => {
                uami(cx, &a, settings).map(|user_assigned_managed_identity_settings| {
                    KafkaAuthentication::UserAssignedManagedIdentity {
                        user_assigned_managed_identity_settings,
                    }
                })
            }
        },
    };
    a.finish_with(cx, LEGACY_AUTH_HINTS);
    auth
}

fn decode_kafka(cx: &mut Cx<'_>, mut s: Obj<'_>) -> Option<KafkaSettings> {
    let host = s.req_str(cx, "host");
    let authentication = s
        .req_obj(cx, "authentication")
        .and_then(|a| decode_kafka_auth(cx, a));
    let tls = decode_tls(cx, &mut s);
    let consumer_group_id = s.opt_str(cx, "consumerGroupId");
    let compression = s.opt_enum(cx, "compression");
    let batching = decode_batching(cx, &mut s);
    let partition_strategy = s.opt_enum(cx, "partitionStrategy");
    let partition_key_property = s.opt_str(cx, "partitionKeyProperty");
    let kafka_acks = s.opt_enum(cx, "kafkaAcks");
    let copy = s.opt_enum(cx, "copyMqttProperties");
    let cloud = s.opt_enum(cx, "cloudEventAttributes");
    s.finish(cx);
    Some(KafkaSettings {
        host: host?,
        authentication: authentication?,
        tls: tls.ok()?,
        consumer_group_id: consumer_group_id.ok()?,
        compression: compression.ok()?.unwrap_or(Compression::None),
        batching: batching.ok()?,
        partition_strategy: partition_strategy
            .ok()?
            .unwrap_or(PartitionStrategy::Default),
        partition_key_property: partition_key_property.ok()?,
        kafka_acks: kafka_acks.ok()?.unwrap_or(KafkaAcks::All),
        copy_mqtt_properties: copy.ok()?.unwrap_or(OperationalMode::Enabled),
        cloud_event_attributes: cloud.ok()?,
    })
}

fn decode_batching(cx: &mut Cx<'_>, parent: &mut Obj<'_>) -> Result<Batching, ()> {
    let Some(mut b) = parent.opt_obj(cx, "batching")? else {
        return Ok(Batching::default());
    };
    let mode = b.opt_enum(cx, "mode");
    let latency_ms = b.opt_uint(cx, "latencyMs", DEFAULT_LATENCY_MS, u32_max());
    let max_bytes = b.opt_uint(cx, "maxBytes", DEFAULT_MAX_BYTES, u32_max());
    let max_messages = b.opt_uint(cx, "maxMessages", DEFAULT_MAX_MESSAGES, u32_max());
    b.finish(cx);
    Ok(Batching {
        mode: mode?.unwrap_or(OperationalMode::Enabled),
        latency_ms: latency_ms?,
        max_bytes: max_bytes?,
        max_messages: max_messages?,
    })
}

fn decode_local_storage(cx: &mut Cx<'_>, mut s: Obj<'_>) -> Option<LocalStorageSettings> {
    let current = s.opt_str(cx, "persistentVolumeClaimRef");
    let legacy = s.opt_str(cx, "persistentVolumeClaimName");
    let result = match (current, legacy) {
        (Ok(Some(name)), Ok(None)) | (Ok(None), Ok(Some(name))) => Some(name),
        (Ok(Some(_)), Ok(Some(_))) => {
            cx.error(
                &s.child("persistentVolumeClaimName"),
                s.pos,
                "give persistentVolumeClaimRef or the older persistentVolumeClaimName, not both",
            );
            None
        }
        (Ok(None), Ok(None)) => {
            s.missing(cx, "persistentVolumeClaimRef");
            None
        }
        _ => None,
    };
    let batching = decode_file_batching(cx, &mut s);
    let columns = match s.field(cx, "metadataColumns") {
        Some((node, path)) => metadata_columns(cx, node, &path),
        None => Some(Vec::new()),
    };
    let dead_letter = s.opt_enum(cx, "deadLetter");
    let compression = s.opt_enum(cx, "compression");
    s.finish(cx);
    Some(LocalStorageSettings {
        persistent_volume_claim_ref: result?,
        batching: batching.ok()?,
        metadata_columns: columns?,
        dead_letter: dead_letter.ok()?.unwrap_or(OperationalMode::Disabled),
        compression: compression.ok()?.unwrap_or(FileCompression::Zstd),
    })
}

fn decode_file_batching(cx: &mut Cx<'_>, parent: &mut Obj<'_>) -> Result<FileBatching, ()> {
    let Some(mut b) = parent.opt_obj(cx, "batching")? else {
        return Ok(FileBatching::default());
    };
    let latency = b.opt_uint(cx, "latencySeconds", DEFAULT_FILE_LATENCY_SECONDS, 65_535);
    let messages = b.opt_uint(cx, "maxMessages", DEFAULT_FILE_MAX_MESSAGES, u32_max());
    let bytes = b.opt_uint(
        cx,
        "maxBytes",
        DEFAULT_FILE_MAX_BYTES,
        i64::try_from(MAX_FILE_MAX_BYTES).unwrap_or(i64::MAX),
    );
    let pos = b.pos;
    let path = b.path.clone();
    b.finish(cx);
    let batching = FileBatching {
        latency_seconds: latency?,
        max_messages: messages?,
        max_bytes: bytes?,
    };
    if batching.latency_seconds == 0 {
        cx.error(&format!("{path}.latencySeconds"), pos, "must be at least 1");
        return Err(());
    }
    if batching.max_messages == 0 {
        cx.error(&format!("{path}.maxMessages"), pos, "must be at least 1");
        return Err(());
    }
    if batching.max_bytes < MIN_FILE_MAX_BYTES {
        cx.error(
            &format!("{path}.maxBytes"),
            pos,
            format!(
                "{} is below the smallest, {MIN_FILE_MAX_BYTES} (1 MiB)",
                batching.max_bytes
            ),
        );
        return Err(());
    }
    Ok(batching)
}

fn metadata_columns(cx: &mut Cx<'_>, node: &Node, path: &str) -> Option<Vec<MetadataColumn>> {
    let Value::Seq(items) = &node.value else {
        cx.wrong_type(path, node, "a list of Topic, ReceivedTime, UserProperties");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        cx.positions.insert(item_path.clone(), item.pos);
        match enum_value::<MetadataColumn>(cx, item, &item_path) {
            Some(c) if out.contains(&c) => {
                cx.error(&item_path, item.pos, format!("{c} is listed twice"));
                ok = false;
            }
            Some(c) => out.push(c),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn decode_dataflow_spec(cx: &mut Cx<'_>, mut spec: Obj<'_>) -> Option<DataflowSpec> {
    let profile_ref = spec.opt_str(cx, "profileRef");
    let mode = spec.opt_enum(cx, "mode");
    let operations = match spec.field(cx, "operations") {
        Some((node, path)) => match &node.value {
            Value::Seq(items) => {
                let mut ops = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    cx.positions.insert(item_path.clone(), item.pos);
                    match Obj::new(cx, item, item_path).and_then(|o| decode_operation(cx, o)) {
                        Some(op) => ops.push(op),
                        None => ok = false,
                    }
                }
                ok.then_some(ops)
            }
            _ => {
                cx.wrong_type(&path, node, "a list of operations");
                None
            }
        },
        None => {
            spec.missing(cx, "operations");
            None
        }
    };
    let disk = spec.opt_enum(cx, "requestDiskPersistence");
    spec.finish(cx);
    Some(DataflowSpec {
        profile_ref: profile_ref
            .ok()?
            .unwrap_or_else(|| DEFAULT_PROFILE.to_owned()),
        mode: mode.ok()?.unwrap_or(OperationalMode::Enabled),
        operations: operations?,
        request_disk_persistence: disk.ok()?,
    })
}

fn decode_operation(cx: &mut Cx<'_>, mut op: Obj<'_>) -> Option<Operation> {
    let operation_type: Option<OperationType> = op.req_enum(cx, "operationType");
    let name = op.opt_str(cx, "name");
    if let Ok(Some(n)) = &name
        && n.chars().count() > 64
    {
        let path = op.child("name");
        let pos = cx.positions.get(&path).copied().unwrap_or(op.pos);
        cx.error(&path, pos, "longer than 64 characters");
    }
    let keys: [(&'static str, OperationType); 3] = [
        ("sourceSettings", OperationType::Source),
        (
            "builtInTransformationSettings",
            OperationType::BuiltInTransformation,
        ),
        ("destinationSettings", OperationType::Destination),
    ];
    let mut settings = None;
    let mut ok = true;
    for (key, ty) in keys {
        let Some((node, path)) = op.field(cx, key) else {
            continue;
        };
        match operation_type {
            Some(t) if t == ty => match Obj::new(cx, node, path) {
                Some(obj) => settings = Some(obj),
                None => ok = false,
            },
            Some(t) => cx.error(
                &path,
                node.pos,
                format!("does not apply to operationType {t}"),
            ),
            None => {}
        }
    }
    let result = match operation_type {
        None => None,
        Some(OperationType::Source) => match settings {
            Some(s) => decode_source(cx, s),
            None => {
                op.missing(cx, "sourceSettings");
                None
            }
        }
        .map(|source_settings| Operation::Source {
            name: name.clone().ok().flatten(),
            source_settings,
        }),
        Some(OperationType::BuiltInTransformation) => match settings {
            Some(s) => decode_transformation(cx, s),
            None => Some(TransformationSettings::default()),
        }
        .map(
            |built_in_transformation_settings| Operation::BuiltInTransformation {
                name: name.clone().ok().flatten(),
                built_in_transformation_settings,
            },
        ),
        Some(OperationType::Destination) => match settings {
            Some(s) => decode_destination(cx, s),
            None => {
                op.missing(cx, "destinationSettings");
                None
            }
        }
        .map(|destination_settings| Operation::Destination {
            name: name.clone().ok().flatten(),
            destination_settings,
        }),
    };
    op.finish(cx);
    name.ok()?;
    if !ok {
        return None;
    }
    result
}

fn decode_source(cx: &mut Cx<'_>, mut s: Obj<'_>) -> Option<SourceSettings> {
    let endpoint_ref = s.req_str(cx, "endpointRef");
    let asset_ref = s.opt_str(cx, "assetRef");
    let data_sources = s.req_strings(cx, "dataSources");
    let format = s.opt_enum(cx, "serializationFormat");
    let schema_ref = s.opt_str(cx, "schemaRef");
    s.finish(cx);
    Some(SourceSettings {
        endpoint_ref: endpoint_ref?,
        asset_ref: asset_ref.ok()?,
        data_sources: data_sources?,
        serialization_format: format.ok()?.unwrap_or(SourceSerializationFormat::Json),
        schema_ref: schema_ref.ok()?,
    })
}

fn decode_destination(cx: &mut Cx<'_>, mut s: Obj<'_>) -> Option<DestinationSettings> {
    let endpoint_ref = s.req_str(cx, "endpointRef");
    let data_destination = s.req_str(cx, "dataDestination");
    let headers = decode_list(cx, &mut s, "headers", decode_header);
    s.finish(cx);
    Some(DestinationSettings {
        endpoint_ref: endpoint_ref?,
        data_destination: data_destination?,
        headers: headers?,
    })
}

fn decode_header(cx: &mut Cx<'_>, mut h: Obj<'_>) -> Option<HeaderAction> {
    let action_type = h.req_enum(cx, "actionType");
    let key = h.req_str(cx, "key");
    let value = h.opt_str(cx, "value");
    h.finish(cx);
    Some(HeaderAction {
        action_type: action_type?,
        key: key?,
        value: value.ok()?,
    })
}

/// An optional list of mappings, each decoded by `item`; absent is empty.
fn decode_list<T>(
    cx: &mut Cx<'_>,
    parent: &mut Obj<'_>,
    name: &'static str,
    item: impl Fn(&mut Cx<'_>, Obj<'_>) -> Option<T>,
) -> Option<Vec<T>> {
    let Some((node, path)) = parent.field(cx, name) else {
        return Some(Vec::new());
    };
    let Value::Seq(items) = &node.value else {
        cx.wrong_type(&path, node, "a list");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, n) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        cx.positions.insert(item_path.clone(), n.pos);
        match Obj::new(cx, n, item_path).and_then(|o| item(cx, o)) {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn decode_transformation(cx: &mut Cx<'_>, mut s: Obj<'_>) -> Option<TransformationSettings> {
    let format = s.opt_enum(cx, "serializationFormat");
    let schema_ref = s.opt_str(cx, "schemaRef");
    let datasets = decode_list(cx, &mut s, "datasets", |cx, mut d| {
        let key = d.req_str(cx, "key");
        let description = d.opt_str(cx, "description");
        let schema_ref = d.opt_str(cx, "schemaRef");
        let inputs = d.req_strings(cx, "inputs");
        let expression = d.opt_str(cx, "expression");
        d.finish(cx);
        Some(Dataset {
            key: key?,
            description: description.ok()?,
            schema_ref: schema_ref.ok()?,
            inputs: inputs?,
            expression: expression.ok()?,
        })
    });
    let filter = decode_list(cx, &mut s, "filter", |cx, mut f| {
        let filter_type = f.opt_enum(cx, "type");
        let description = f.opt_str(cx, "description");
        let inputs = f.req_strings(cx, "inputs");
        let expression = f.req_str(cx, "expression");
        f.finish(cx);
        Some(Filter {
            filter_type: filter_type.ok()?.unwrap_or(FilterType::Filter),
            description: description.ok()?,
            inputs: inputs?,
            expression: expression?,
        })
    });
    let map = decode_list(cx, &mut s, "map", |cx, mut m| {
        let mapping_type = m.opt_enum(cx, "type");
        let description = m.opt_str(cx, "description");
        let inputs = m.req_strings(cx, "inputs");
        let expression = m.opt_str(cx, "expression");
        let output = m.req_str(cx, "output");
        m.finish(cx);
        Some(MapRule {
            mapping_type: mapping_type.ok()?,
            description: description.ok()?,
            inputs: inputs?,
            expression: expression.ok()?,
            output: output?,
        })
    });
    s.finish(cx);
    Some(TransformationSettings {
        serialization_format: format
            .ok()?
            .unwrap_or(TransformationSerializationFormat::Json),
        schema_ref: schema_ref.ok()?,
        datasets: datasets?,
        filter: filter?,
        map: map?,
    })
}

fn decode_profile_spec(cx: &mut Cx<'_>, mut s: Obj<'_>) -> Option<ProfileSpec> {
    let instance_count = s.opt_uint(cx, "instanceCount", 1u32, u32_max());
    let diagnostics = match s.opt_obj(cx, "diagnostics") {
        Ok(Some(mut d)) => {
            let logs = match d.opt_obj(cx, "logs") {
                Ok(Some(mut l)) => {
                    let level = l.opt_str(cx, "level");
                    let otel = otel(cx, &mut l);
                    l.finish(cx);
                    Some(DiagnosticsLogs {
                        level: level.ok().flatten().unwrap_or_else(|| "info".to_owned()),
                        opentelemetry_export_config: otel.ok()?,
                    })
                }
                Ok(None) => Some(DiagnosticsLogs::default()),
                Err(()) => None,
            };
            let metrics = match d.opt_obj(cx, "metrics") {
                Ok(Some(mut m)) => {
                    let port = m.opt_uint(
                        cx,
                        "prometheusPort",
                        DEFAULT_PROMETHEUS_PORT,
                        i64::from(u16::MAX),
                    );
                    let otel = otel(cx, &mut m);
                    m.finish(cx);
                    Some(DiagnosticsMetrics {
                        prometheus_port: port.ok()?,
                        opentelemetry_export_config: otel.ok()?,
                    })
                }
                Ok(None) => Some(DiagnosticsMetrics::default()),
                Err(()) => None,
            };
            d.finish(cx);
            logs.zip(metrics)
                .map(|(logs, metrics)| ProfileDiagnostics { logs, metrics })
        }
        Ok(None) => Some(ProfileDiagnostics::default()),
        Err(()) => None,
    };
    s.finish_with(
        cx,
        &[
            (
                "maxInstances",
                "the 2024 preview's maxInstances is now instanceCount",
            ),
            (
                "logLevel",
                "the 2024 preview's logLevel is now diagnostics.logs.level",
            ),
        ],
    );
    Some(ProfileSpec {
        instance_count: instance_count.ok()?,
        diagnostics: diagnostics?,
    })
}

fn otel(cx: &mut Cx<'_>, parent: &mut Obj<'_>) -> Result<Option<OpenTelemetryExportConfig>, ()> {
    let Some(mut o) = parent.opt_obj(cx, "opentelemetryExportConfig")? else {
        return Ok(None);
    };
    let endpoint = o.req_str(cx, "otlpGrpcEndpoint");
    let interval = o.opt_uint(cx, "intervalSeconds", 30u32, u32_max());
    let level = o.opt_str(cx, "level");
    o.finish(cx);
    Ok(Some(OpenTelemetryExportConfig {
        otlp_grpc_endpoint: endpoint.ok_or(())?,
        interval_seconds: interval?,
        level: level?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> (Vec<LoadedResource>, Vec<Diagnostic>) {
        let mut loaded = Loaded::default();
        load_str("t.yaml", text, &mut loaded);
        (loaded.resources, loaded.diagnostics)
    }

    #[test]
    fn minimal_endpoint_gets_defaults() {
        let (r, d) = load(
            "apiVersion: connectivity.iotoperations.azure.com/v1\nkind: DataflowEndpoint\nmetadata:\n  name: local\nspec:\n  endpointType: Mqtt\n  mqttSettings:\n    authentication:\n      method: Anonymous\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let Resource::DataflowEndpoint(e) = &r[0].resource else {
            panic!()
        };
        assert_eq!(e.metadata.namespace, DEFAULT_NAMESPACE);
        let EndpointSpec::Mqtt { mqtt_settings } = &e.spec else {
            panic!()
        };
        assert_eq!(
            mqtt_settings,
            &MqttSettings::with_authentication(MqttAuthentication::Anonymous)
        );
        assert_eq!(
            r[0].origin
                .locate("spec.mqttSettings.authentication.method")
                .line,
            9
        );
    }

    #[test]
    fn every_problem_in_one_pass() {
        let (r, d) = load(
            "apiVersion: connectivity.iotoperations.azure.com/v1\nkind: DataflowEndpoint\nmetadata:\n  name: x\nspec:\n  endpointType: Mqtt\n  mqttSettings:\n    hots: a:1\n    qos: one\n    retain: Keeps\n    authentication:\n      method: Anonymus\n",
        );
        assert!(r.is_empty());
        let text: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 4, "{text:#?}");
        assert!(
            text[1].contains(
                "t.yaml:9: spec.mqttSettings.qos: expected an integer, found the string \"one\""
            ),
            "{text:#?}"
        );
        assert!(
            text.iter().any(|t| t.contains(
                "t.yaml:8: spec.mqttSettings.hots: unknown field \"hots\" (did you mean \"host\"?)"
            )),
            "{text:#?}"
        );
        assert!(text.iter().any(|t| t.contains("\"Keeps\" is not a valid retain: expected \"Keep\" or \"Never\" (did you mean \"Keep\"?)")), "{text:#?}");
        assert!(
            text.iter()
                .any(|t| t.contains("authentication.method: \"Anonymus\"")),
            "{text:#?}"
        );
    }

    #[test]
    fn legacy_spellings() {
        let text = "apiVersion: connectivity.iotoperations.azure.com/v1beta1\nkind: DataflowEndpoint\nmetadata:\n  name: esa\nspec:\n  endpointType: localStorage\n  localStorageSettings:\n    persistentVolumeClaimName: pvc\n";
        let (r, d) = load(text);
        assert!(d.is_empty(), "{d:?}");
        let Resource::DataflowEndpoint(e) = &r[0].resource else {
            panic!()
        };
        assert_eq!(
            e.spec,
            EndpointSpec::LocalStorage {
                local_storage_settings: LocalStorageSettings::new("pvc".into())
            }
        );
        let (_, d) = load(&text.replace("v1beta1", "v1"));
        assert_eq!(d.len(), 1);
        assert!(d[0].message.contains("2024 preview"), "{d:?}");
        assert!(!d[0].is_error());
    }

    #[test]
    fn spellings_in_another_case_and_the_v1beta1_ca_name() {
        let endpoint = |api: &str, tls: &str| {
            format!(
                "apiVersion: connectivity.iotoperations.azure.com/{api}\nkind: DataflowEndpoint\nmetadata:\n  name: k\nspec:\n  endpointType: Kafka\n  kafkaSettings:\n    host: k:9093\n    compression: LZ4\n    authentication:\n      method: Sasl\n      saslSettings:\n        saslType: PLAIN\n        secretRef: s\n    tls:\n{tls}"
            )
        };
        let ca = "      trustedCaCertificateConfigMap: ca\n";
        let (r, d) = load(&endpoint("v1beta1", ca));
        assert!(d.is_empty(), "{d:?}");
        let Resource::DataflowEndpoint(e) = &r[0].resource else {
            panic!()
        };
        let EndpointSpec::Kafka { kafka_settings: k } = &e.spec else {
            panic!()
        };
        assert_eq!(k.compression, Compression::Lz4);
        assert!(matches!(
            &k.authentication,
            KafkaAuthentication::Sasl { sasl_settings } if sasl_settings.sasl_type == SaslType::Plain
        ));
        assert_eq!(
            k.tls.trusted_ca_certificate_config_map_ref.as_deref(),
            Some("ca")
        );
        // Under v1 each is accepted with a warning naming the canonical spelling.
        let (r, d) = load(&endpoint("v1", ca));
        assert_eq!(r.len(), 1);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d.iter().all(|d| !d.is_error()), "{d:?}");
        // Both CA names: an error.
        let both = format!("{ca}      trustedCaCertificateConfigMapRef: ca\n");
        let (_, d) = load(&endpoint("v1beta1", &both));
        assert!(
            d.iter()
                .any(|d| d.is_error() && d.message.contains("not both")),
            "{d:?}"
        );
        // Kinds and apiVersions are not taken in another case.
        let (r, d) = load(
            &endpoint("v1beta1", ca).replace("kind: DataflowEndpoint", "kind: DATAFLOWENDPOINT"),
        );
        assert!(r.is_empty() && d.iter().any(Diagnostic::is_error), "{d:?}");
    }

    #[test]
    fn other_api_groups_are_skipped() {
        let (r, d) = load("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\n");
        assert!(r.is_empty());
        assert_eq!(d.len(), 1);
        assert!(!d[0].is_error());
    }
}
