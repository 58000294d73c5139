//! The validated snapshot: every resource resolved, defaults applied, a content hash per
//! dataflow; what the agent pushes to the data plane as JSON.
//!
//! Resolution, done once by the agent: an MQTT endpoint without `host` gets the local broker's
//! host from [`Options::local_broker_host`] ([`local_broker_for`] its apiVersion); a dataflow naming the profile `default` when none is
//! loaded gets AIO's implicit default profile; AIO's shared subscription spelling
//! `$shared/<group>/<filter>` in an MQTT source becomes MQTT's `$share/<group>/<filter>`. Lists
//! are sorted by namespace and name, so equal configurations give equal snapshots.
//!
//! Each dataflow carries the SHA-256 of everything it depends on (its own spec, its source and
//! destination endpoints, its profile), so the data plane tells added, changed, removed and
//! unchanged dataflows apart by name and hash ([`Snapshot::changes`]) and restarts only what
//! changed. The snapshot carries secret *names* (`secretRef`), never secret values.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::control::Changes;
use crate::model::{
    ApiVersion, DEFAULT_ENDPOINT, DEFAULT_PROFILE, Dataflow, DataflowEndpoint, DataflowProfile,
    EndpointSpec, Operation,
};

/// How the agent and the data plane resolve and check a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Options {
    /// The local MQTT broker, `host:port`: the host of an MQTT endpoint that omits it. An MQTT
    /// endpoint is the local broker when its `host` is omitted or equal to this (compared as
    /// written), or when it is named `default`. Default: AIO's `aio-broker:18883`, which a
    /// `v1beta1` endpoint reaches as `aio-mq-dmqtt-frontend:8883` ([`local_broker_for`]).
    pub local_broker_host: String,
    /// AIO's rule that every dataflow has the local broker as its source or its destination.
    /// Default: `true`; `false` allows e.g. Kafka to Kafka.
    pub require_local_broker: bool,
    /// Where `secretRef: NAME` resolves: `<secrets_dir>/NAME/<key>`. `None`: secret files are not
    /// checked.
    pub secrets_dir: Option<PathBuf>,
    /// Where a ConfigMap reference resolves: `<configmaps_dir>/NAME/`. `None`: not checked.
    pub configmaps_dir: Option<PathBuf>,
    /// Where a persistent volume claim resolves: `<volumes_dir>/NAME/`. `None`: not checked.
    pub volumes_dir: Option<PathBuf>,
    /// Where a `schemaRef` resolves: `<schemas_dir>/<namespace>/<name>-<version>.json`.
    /// `None`: not checked.
    pub schemas_dir: Option<PathBuf>,
}

/// Default of [`Options::local_broker_host`]: the local broker of AIO's `v1` documentation (its
/// default endpoint's host, its default listener, TLS).
pub const DEFAULT_LOCAL_BROKER_HOST: &str = "aio-broker:18883";

/// The same broker as AIO's `v1beta1` documentation names it: the host of a `v1beta1` endpoint
/// without `host` while [`Options::local_broker_host`] is the default.
pub const V1BETA1_LOCAL_BROKER_HOST: &str = "aio-mq-dmqtt-frontend:8883";

/// The local broker's `host:port` for an endpoint written with `api_version`, given the
/// configured `local_broker_host`: the configured one, except that the default stands for AIO's
/// broker, whose address `v1beta1` manifests knew as [`V1BETA1_LOCAL_BROKER_HOST`].
pub fn local_broker_for(local_broker_host: &str, api_version: ApiVersion) -> &str {
    if api_version == ApiVersion::V1Beta1 && local_broker_host == DEFAULT_LOCAL_BROKER_HOST {
        V1BETA1_LOCAL_BROKER_HOST
    } else {
        local_broker_host
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            local_broker_host: DEFAULT_LOCAL_BROKER_HOST.to_owned(),
            require_local_broker: true,
            secrets_dir: None,
            configmaps_dir: None,
            volumes_dir: None,
            schemas_dir: None,
        }
    }
}

/// A resolved, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Snapshot {
    /// The local broker's `host:port` the snapshot was resolved with; an MQTT endpoint whose host
    /// equals it is the local broker.
    pub local_broker_host: String,
    /// Endpoints, sorted by namespace and name; every MQTT host filled in.
    pub endpoints: Vec<DataflowEndpoint>,
    /// Dataflows with their content hash, sorted by namespace and name.
    pub dataflows: Vec<SnapshotDataflow>,
    /// Profiles, sorted by namespace and name, including implicit `default` profiles.
    pub profiles: Vec<DataflowProfile>,
}

/// A dataflow and the hash of everything it depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotDataflow {
    /// The dataflow, defaults applied.
    pub dataflow: Dataflow,
    /// Lower-case hex SHA-256 of the JSON of the dataflow, its source endpoint, its destination
    /// endpoint and its profile ([`Snapshot::content_hash`]).
    pub content_hash: String,
}

impl Snapshot {
    /// Builds a snapshot from decoded resources: resolves, sorts and hashes (see the module
    /// docs). Nothing is checked here; [`crate::validate_snapshot`] does that.
    pub fn assemble(
        endpoints: Vec<DataflowEndpoint>,
        dataflows: Vec<Dataflow>,
        profiles: Vec<DataflowProfile>,
        options: &Options,
    ) -> Self {
        let mut s = Self::resolve(endpoints, dataflows, profiles, options);
        s.sort();
        s.rehash();
        s
    }

    /// Resolution without sorting (the caller keeps its own order of origins).
    pub(crate) fn resolve(
        mut endpoints: Vec<DataflowEndpoint>,
        mut dataflows: Vec<Dataflow>,
        mut profiles: Vec<DataflowProfile>,
        options: &Options,
    ) -> Self {
        for e in &mut endpoints {
            if let EndpointSpec::Mqtt { mqtt_settings } = &mut e.spec
                && mqtt_settings.host.is_none()
            {
                let host = local_broker_for(&options.local_broker_host, e.api_version);
                mqtt_settings.host = Some(host.to_owned());
            }
        }
        // (namespace, name) of the MQTT endpoints: one lookup per source, not a scan.
        let mqtt: std::collections::HashSet<(String, String)> = endpoints
            .iter()
            .filter(|e| matches!(e.spec, EndpointSpec::Mqtt { .. }))
            .map(|e| (e.metadata.namespace.clone(), e.metadata.name.clone()))
            .collect();
        for d in &mut dataflows {
            let ns = d.metadata.namespace.clone();
            for op in &mut d.spec.operations {
                let Operation::Source {
                    source_settings, ..
                } = op
                else {
                    continue;
                };
                let is_mqtt = mqtt.contains(&(ns.clone(), source_settings.endpoint_ref.clone()));
                if is_mqtt {
                    for topic in &mut source_settings.data_sources {
                        if let Some(rest) = topic.strip_prefix("$shared/") {
                            *topic = format!("$share/{rest}");
                        }
                    }
                }
            }
        }
        let with_default: std::collections::HashSet<&str> = profiles
            .iter()
            .filter(|p| p.metadata.name == DEFAULT_PROFILE)
            .map(|p| p.metadata.namespace.as_str())
            .collect();
        let mut implicit: Vec<String> = Vec::new();
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for d in &dataflows {
            let ns = d.metadata.namespace.as_str();
            if d.spec.profile_ref == DEFAULT_PROFILE
                && !with_default.contains(ns)
                && seen.insert(ns)
            {
                implicit.push(ns.to_owned());
            }
        }
        profiles.extend(
            implicit
                .iter()
                .map(|ns| DataflowProfile::implicit_default(ns)),
        );
        Self {
            local_broker_host: options.local_broker_host.clone(),
            endpoints,
            dataflows: dataflows
                .into_iter()
                .map(|dataflow| SnapshotDataflow {
                    dataflow,
                    content_hash: String::new(),
                })
                .collect(),
            profiles,
        }
    }

    /// Sorts the lists by namespace and name, as [`Snapshot::endpoint`] and
    /// [`Snapshot::profile`] look them up (a snapshot [`Snapshot::assemble`]s sorted; one read
    /// from elsewhere is sorted with this before it is used). Content hashes do not change.
    pub fn sort(&mut self) {
        self.endpoints.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        self.dataflows.sort_by(|a, b| {
            let (a, b) = (&a.dataflow.metadata, &b.dataflow.metadata);
            (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
        });
        self.profiles.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
    }

    pub(crate) fn rehash(&mut self) {
        let hashes: Vec<String> = self
            .dataflows
            .iter()
            .map(|d| self.content_hash(&d.dataflow))
            .collect();
        for (d, h) in self.dataflows.iter_mut().zip(hashes) {
            d.content_hash = h;
        }
    }

    /// The endpoint `name` in `namespace` (a binary search: the list is sorted, see
    /// [`Snapshot::sort`]).
    pub fn endpoint(&self, namespace: &str, name: &str) -> Option<&DataflowEndpoint> {
        let i = self
            .endpoints
            .binary_search_by(|e| {
                (e.metadata.namespace.as_str(), e.metadata.name.as_str()).cmp(&(namespace, name))
            })
            .ok()?;
        self.endpoints.get(i)
    }

    /// The profile `name` in `namespace` (a binary search: the list is sorted).
    pub fn profile(&self, namespace: &str, name: &str) -> Option<&DataflowProfile> {
        let i = self
            .profiles
            .binary_search_by(|p| {
                (p.metadata.namespace.as_str(), p.metadata.name.as_str()).cmp(&(namespace, name))
            })
            .ok()?;
        self.profiles.get(i)
    }

    /// Whether `endpoint` is the local MQTT broker: an MQTT endpoint named `default` (AIO's
    /// definition), or one whose (resolved) host is the local broker's ([`local_broker_for`]
    /// [`Snapshot::local_broker_host`]).
    pub fn is_local_broker(&self, endpoint: &DataflowEndpoint) -> bool {
        match &endpoint.spec {
            EndpointSpec::Mqtt { mqtt_settings } => {
                endpoint.metadata.name == DEFAULT_ENDPOINT
                    || mqtt_settings.host.as_deref().is_none_or(|h| {
                        h == local_broker_for(&self.local_broker_host, endpoint.api_version)
                    })
            }
            _ => false,
        }
    }

    /// SHA-256 (lower-case hex) of the JSON array `[dataflow, source endpoint, destination
    /// endpoint, profile]` (`null` for what does not resolve). Struct fields serialise in
    /// declaration order, so the hash is stable across processes.
    pub fn content_hash(&self, dataflow: &Dataflow) -> String {
        let ns = &dataflow.metadata.namespace;
        let source = dataflow
            .spec
            .source()
            .and_then(|s| self.endpoint(ns, &s.endpoint_ref));
        let destination = dataflow
            .spec
            .destination()
            .and_then(|d| self.endpoint(ns, &d.endpoint_ref));
        let profile = self.profile(ns, &dataflow.spec.profile_ref);
        let json =
            serde_json::to_vec(&(dataflow, source, destination, profile)).unwrap_or_default();
        let digest = Sha256::digest(&json);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// What `self` changes relative to `previous` (nothing applied yet: `None`), by dataflow
    /// `namespace/name` and content hash.
    pub fn changes(&self, previous: Option<&Snapshot>) -> Changes {
        let key = |d: &SnapshotDataflow| {
            format!(
                "{}/{}",
                d.dataflow.metadata.namespace, d.dataflow.metadata.name
            )
        };
        let mut changes = Changes::default();
        let old = previous.map(|p| p.dataflows.as_slice()).unwrap_or_default();
        for d in &self.dataflows {
            match old.iter().find(|o| key(o) == key(d)) {
                None => changes.added.push(key(d)),
                Some(o) if o.content_hash == d.content_hash => changes.unchanged.push(key(d)),
                Some(_) => changes.changed.push(key(d)),
            }
        }
        for o in old {
            if !self.dataflows.iter().any(|d| key(d) == key(o)) {
                changes.removed.push(key(o));
            }
        }
        changes
    }
}
