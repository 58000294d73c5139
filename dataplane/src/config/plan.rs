//! What to run for a snapshot: one [`DataflowPlan`] per enabled dataflow, with its source and
//! sink resolved ([`SourcePlan`], [`SinkPlan`]) and the cores it runs on, or the [`SkipReason`]
//! it does not run for. Built on the control thread; the workers only read it.

use sluice_codec::{ByteStr, ProtocolVersion, RetainHandling, Subscription, SubscriptionOptions};
use sluice_config_agent::model::{DEFAULT_NAMESPACE, OperationalMode};
use sluice_config_agent::{Snapshot, SnapshotDataflow};

use std::sync::Arc;

use sluice_config_agent::model::EndpointSpec;

use super::environment::Environment;
use super::kafka_endpoint::{KafkaEndpointPlan, kafka_endpoint};
use super::local_endpoint::{LocalEndpointPlan, local_endpoint};
use super::mqtt_endpoint::{MqttEndpointPlan, mqtt_endpoint};
use super::skip::SkipReason;
use crate::mqtt::session::Session;
use crate::transform::route::RouteSettings;
use crate::transform::template::TopicTemplate;

/// Where a dataflow reads from.
#[derive(Debug, Clone)]
// One per dataflow, built once and shared: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum SourcePlan {
    /// MQTT topic filters on a broker.
    Mqtt(MqttSourcePlan),
    /// Kafka topics, in a consumer group.
    Kafka(Arc<KafkaSourcePlan>),
}

/// What a Kafka source reads: the cluster, its topics and the consumer group.
#[derive(Debug, Clone)]
pub(crate) struct KafkaSourcePlan {
    /// The cluster.
    pub(crate) endpoint: Arc<KafkaEndpointPlan>,
    /// The topics (`dataSources`).
    pub(crate) topics: Vec<String>,
    /// `consumerGroupId`.
    pub(crate) group_id: String,
}

/// An MQTT source: the broker and what to subscribe to.
#[derive(Debug, Clone)]
pub(crate) struct MqttSourcePlan {
    /// The broker.
    pub(crate) endpoint: MqttEndpointPlan,
    /// Topic filters as written (`$share/` ones included).
    pub(crate) filters: Vec<String>,
    /// Whether each core subscribes with `$share/<group>/` (several connections share the load).
    pub(crate) shared: bool,
    /// Filters of the configuration this one replaces (a changed dataflow): those no longer
    /// wanted are unsubscribed, as the broker kept them in the session.
    pub(crate) previous_filters: Vec<ByteStr>,
}

/// Where a dataflow writes to.
#[derive(Debug, Clone)]
// One per dataflow, built once and shared: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum SinkPlan {
    /// An MQTT broker.
    Mqtt(MqttEndpointPlan),
    /// A Kafka cluster (or Azure Event Hubs).
    Kafka(Arc<KafkaEndpointPlan>),
    /// Parquet files in a folder of a local volume.
    Local(Arc<LocalEndpointPlan>),
}

/// One dataflow, ready to run.
#[derive(Debug, Clone)]
pub(crate) struct DataflowPlan {
    /// `namespace/name`: the key in [`sluice_config_agent::control::Changes`].
    pub(crate) key: String,
    /// The dataflow's name (for client ids, the shared subscription group, CloudEvents).
    pub(crate) name: String,
    /// The snapshot's content hash of this dataflow.
    pub(crate) content_hash: String,
    /// Where it reads.
    pub(crate) source: SourcePlan,
    /// Where it writes.
    pub(crate) sink: SinkPlan,
    /// The destination topic as written.
    pub(crate) destination_topic: String,
    /// Cores that run it.
    pub(crate) cores: Vec<usize>,
    /// `--instance-id`: this data plane among several running the same dataflows.
    pub(crate) instance_id: Option<String>,
}

impl DataflowPlan {
    /// The dataflow's name, preceded by `<namespace>.` outside the default namespace, so that
    /// same-named dataflows of two namespaces never share a session or a share group.
    fn qualified_name(&self) -> String {
        match self.key.split_once('/') {
            Some((ns, name)) if ns != DEFAULT_NAMESPACE => format!("{ns}.{name}"),
            _ => self.name.clone(),
        }
    }

    /// The shared subscription group: the (qualified) dataflow name, made safe for a share name
    /// (no `/`, `+`, `#`). The same on every core and every instance, which is what spreads the
    /// load over them.
    pub(crate) fn share_group(&self) -> String {
        self.qualified_name()
            .chars()
            .map(|c| if matches!(c, '/' | '+' | '#') { '_' } else { c })
            .collect()
    }

    /// The subscriptions of an MQTT source session on one core (none for other sources).
    /// Retain As Published, so that `retain: Keep` sees the publisher's flag; retained messages
    /// only for a new subscription, so that re-subscribing after a restart does not deliver them
    /// again.
    pub(crate) fn subscriptions(&self) -> Vec<Subscription> {
        let SourcePlan::Mqtt(src) = &self.source else {
            return Vec::new();
        };
        let qos = src.endpoint.qos();
        let options = match src.endpoint.protocol() {
            ProtocolVersion::V5 => SubscriptionOptions {
                retain_as_published: true,
                retain_handling: RetainHandling::SendAtSubscribeIfNew,
                ..SubscriptionOptions::qos(qos)
            },
            // 3.1.1 has QoS only; a live message arrives with RETAIN 0 there.
            ProtocolVersion::V311 => SubscriptionOptions::qos(qos),
        };
        src.filters
            .iter()
            .map(|f| {
                let filter = if src.shared && !f.starts_with("$share/") {
                    format!("$share/{}/{f}", self.share_group())
                } else {
                    f.clone()
                };
                Subscription {
                    filter: ByteStr::from(filter),
                    options,
                }
            })
            .collect()
    }

    /// The filters to unsubscribe when this plan replaces `old` (a changed dataflow): `old`'s,
    /// and those it was itself to remove (it may have been superseded before it ever ran).
    /// Unsubscribing one that is not there is harmless.
    pub(crate) fn inherit_previous_filters(&mut self, old: &DataflowPlan) {
        let mut previous: Vec<ByteStr> =
            old.subscriptions().into_iter().map(|s| s.filter).collect();
        if let SourcePlan::Mqtt(old_src) = &old.source {
            for f in &old_src.previous_filters {
                if !previous.contains(f) {
                    previous.push(f.clone());
                }
            }
        }
        if let SourcePlan::Mqtt(src) = &mut self.source {
            src.previous_filters = previous;
        }
    }

    /// Client id of the source (`side` = "src") or destination ("dst") connection on `core`:
    /// `<clientIdPrefix>-[<namespace>.]<dataflow>[-<instance>]-<side>-<core>`, stable across
    /// restarts so that the broker keeps the session; the namespace appears outside the default
    /// namespace, the instance with `--instance-id` (several data planes running one dataflow).
    pub(crate) fn client_id(&self, endpoint: &MqttEndpointPlan, side: &str, core: usize) -> String {
        let prefix = endpoint.settings.client_id_prefix.as_deref().unwrap_or("");
        let sep = if prefix.is_empty() || prefix.ends_with('-') {
            ""
        } else {
            "-"
        };
        let instance = self
            .instance_id
            .as_deref()
            .map(|i| format!("-{i}"))
            .unwrap_or_default();
        format!(
            "{prefix}{sep}{}{instance}-{side}-{core}",
            self.qualified_name()
        )
    }

    /// Client id of the Kafka producer (`side` = "dst") or consumer ("src") on `core`:
    /// `[<namespace>.]<dataflow>[-<instance>]-<side>-<core>`, the MQTT connections' without a
    /// prefix (Kafka endpoints have no `clientIdPrefix`).
    pub(crate) fn kafka_client_id(&self, side: &str, core: usize) -> String {
        let instance = self
            .instance_id
            .as_deref()
            .map(|i| format!("-{i}"))
            .unwrap_or_default();
        format!("{}{instance}-{side}-{core}", self.qualified_name())
    }

    /// Checks that the MQTT sessions take their configuration (subscriptions, login, enhanced
    /// authentication), so that a worker's start does not fail on it.
    ///
    /// # Errors
    /// Which session refuses what.
    fn check_sessions(&self) -> Result<(), String> {
        let now = std::time::Instant::now();
        if let SourcePlan::Mqtt(src) = &self.source {
            let mut src_cfg = src
                .endpoint
                .session_config(self.client_id(&src.endpoint, "src", 0));
            src_cfg.subscriptions = self.subscriptions();
            Session::new(src_cfg, now).map_err(|e| format!("source session: {e}"))?;
        }
        if let SinkPlan::Mqtt(dst) = &self.sink {
            let dst_cfg = dst.session_config(self.client_id(dst, "dst", 0));
            Session::new(dst_cfg, now).map_err(|e| format!("destination session: {e}"))?;
        }
        Ok(())
    }

    /// The routing rules.
    ///
    /// # Errors
    /// When the destination topic is not a valid template (validation refuses it first).
    pub(crate) fn route_settings(&self) -> Result<RouteSettings, String> {
        let (cloud_events, carry_properties) = match &self.sink {
            SinkPlan::Mqtt(dst) => (
                dst.settings.cloud_event_attributes,
                dst.protocol() == ProtocolVersion::V5,
            ),
            // Headers come from the properties (`copyMqttProperties`) and the CloudEvents
            // attributes; with neither, nothing of them is used.
            SinkPlan::Kafka(dst) => {
                let ce = dst.settings.cloud_event_attributes;
                let copy = dst.settings.copy_mqtt_properties == OperationalMode::Enabled;
                (ce, copy || ce.is_some())
            }
            SinkPlan::Local(dst) => (None, dst.needs_properties()),
        };
        Ok(RouteSettings {
            dataflow: self.name.clone(),
            topic: TopicTemplate::parse(&self.destination_topic).map_err(|e| e.to_string())?,
            cloud_events,
            carry_properties,
        })
    }
}

/// A dataflow of the snapshot that is not run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// `namespace/name`.
    pub(crate) key: String,
    /// The snapshot's content hash of this dataflow.
    pub(crate) content_hash: String,
    /// Why.
    pub(crate) reason: SkipReason,
}

/// What a snapshot comes to: the plans to run, and the dataflows not run. Disabled dataflows
/// (`mode: Disabled`) are in neither.
#[derive(Debug, Default)]
pub(crate) struct Plans {
    /// Dataflows to run.
    pub(crate) run: Vec<DataflowPlan>,
    /// Dataflows not run, with the reason.
    pub(crate) skipped: Vec<Skipped>,
}

/// Plans for every dataflow of `snapshot`.
pub(crate) fn plan(snapshot: &Snapshot, env: &Environment) -> Plans {
    let mut plans = Plans::default();
    for d in &snapshot.dataflows {
        let key = dataflow_key(d);
        match plan_one(snapshot, d, env) {
            Ok(Some(p)) => plans.run.push(p),
            Ok(None) => {}
            Err(reason) => plans.skipped.push(Skipped {
                key,
                content_hash: d.content_hash.clone(),
                reason,
            }),
        }
    }
    plans
}

/// `namespace/name` of a dataflow of the snapshot.
pub(crate) fn dataflow_key(d: &SnapshotDataflow) -> String {
    let m = &d.dataflow.metadata;
    format!("{}/{}", m.namespace, m.name)
}

/// The plan of one dataflow; `Ok(None)` when it is disabled.
///
/// # Errors
/// Why it does not run.
pub(crate) fn plan_one(
    snapshot: &Snapshot,
    d: &SnapshotDataflow,
    env: &Environment,
) -> Result<Option<DataflowPlan>, SkipReason> {
    let df = &d.dataflow;
    if df.spec.mode == OperationalMode::Disabled {
        return Ok(None);
    }
    let invalid = |detail: String| SkipReason::Invalid { detail };
    let ns = &df.metadata.namespace;
    let source = df
        .spec
        .source()
        .ok_or_else(|| invalid("no Source operation".into()))?;
    let destination = df
        .spec
        .destination()
        .ok_or_else(|| invalid("no Destination operation".into()))?;
    let src_ep = snapshot
        .endpoint(ns, &source.endpoint_ref)
        .ok_or_else(|| invalid(format!("source endpoint {} not found", source.endpoint_ref)))?;
    let dst_ep = snapshot
        .endpoint(ns, &destination.endpoint_ref)
        .ok_or_else(|| {
            invalid(format!(
                "destination endpoint {} not found",
                destination.endpoint_ref
            ))
        })?;
    let sink = match &dst_ep.spec {
        EndpointSpec::Kafka { .. } => {
            SinkPlan::Kafka(Arc::new(kafka_endpoint(snapshot, dst_ep, env)?))
        }
        EndpointSpec::LocalStorage { .. } => SinkPlan::Local(Arc::new(local_endpoint(
            dst_ep,
            &df.spec,
            &destination.data_destination,
            env,
        )?)),
        EndpointSpec::Mqtt { .. } => SinkPlan::Mqtt(mqtt_endpoint(snapshot, dst_ep, env)?),
    };
    let (source_plan, cores) = match &src_ep.spec {
        EndpointSpec::Kafka { kafka_settings } => {
            let group_id = kafka_settings
                .consumer_group_id
                .clone()
                .ok_or_else(|| invalid("the Kafka source has no consumerGroupId".into()))?;
            let source = KafkaSourcePlan {
                endpoint: Arc::new(kafka_endpoint(snapshot, src_ep, env)?),
                topics: source.data_sources.clone(),
                group_id,
            };
            // A consumer per core, all in the group: the partitions spread over them (and over
            // other data planes in the same group).
            let cores = (0..env.cores.max(1)).collect();
            (SourcePlan::Kafka(Arc::new(source)), cores)
        }
        _ => {
            let source_ep = mqtt_endpoint(snapshot, src_ep, env)?;
            let profile = snapshot.profile(ns, &df.spec.profile_ref);
            let instances = profile.map_or(1, |p| p.spec.instance_count.max(1));
            // Every core subscribes with the same shared group, so the broker spreads the
            // messages; without shared subscriptions, one core holds the dataflow. (Filters
            // written as `$share/<group>/...` are kept as they are.) With `--instance-id`, other
            // data planes run the same dataflow: share with them too.
            let shared = env.shared_subscriptions
                && source_ep.can_share
                && (env.cores > 1 || instances > 1 || env.instance_id.is_some());
            let cores = if shared {
                (0..env.cores.max(1)).collect()
            } else {
                vec![0]
            };
            let source = SourcePlan::Mqtt(MqttSourcePlan {
                endpoint: source_ep,
                filters: source.data_sources.clone(),
                shared,
                previous_filters: Vec::new(),
            });
            (source, cores)
        }
    };
    let plan = DataflowPlan {
        key: format!("{ns}/{}", df.metadata.name),
        name: df.metadata.name.clone(),
        content_hash: d.content_hash.clone(),
        source: source_plan,
        sink,
        destination_topic: destination.data_destination.clone(),
        cores,
        instance_id: env.instance_id.clone(),
    };
    plan.route_settings().map_err(invalid)?;
    plan.check_sessions().map_err(invalid)?;
    Ok(Some(plan))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use sluice_config_agent::model::EndpointSpec;
    use sluice_config_agent::{Options, RealFiles, load_and_validate, validate_snapshot};

    use super::*;
    use crate::config::environment::Dirs;

    fn docs() -> Vec<PathBuf> {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../config-agent/tests/manifests/docs");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("the documentation examples")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        files
    }

    /// Every example from Azure IoT Operations' documentation that `config-agent validate`
    /// accepts is accepted by the data plane too: its check on arrival finds no error, and its
    /// endpoint resolves, or is not run for a reason that is not "invalid" (an endpoint kind this
    /// build does not run, a secret or token it cannot read here).
    #[test]
    fn the_data_plane_agrees_with_validate_on_every_documentation_example() {
        let files = docs();
        assert!(files.len() >= 40, "{files:?}");
        let tmp = tempfile::tempdir().expect("tempdir");
        let env = Environment {
            dirs: Dirs {
                secrets: Some(tmp.path().join("secrets")),
                configmaps: Some(tmp.path().join("configmaps")),
                ..Dirs::default()
            },
            token_dir: Some(tmp.path().join("tokens")),
            imds_endpoint: Some("http://127.0.0.1:1".into()),
            ..Environment::default()
        };
        for file in files {
            let name = file.display().to_string();
            let report =
                load_and_validate(&RealFiles, std::slice::from_ref(&file), &Options::default());
            let snapshot = report
                .snapshot
                .unwrap_or_else(|| panic!("{name}: validate refused it"));
            let on_arrival = validate_snapshot(
                &snapshot,
                &Options {
                    local_broker_host: snapshot.local_broker_host.clone(),
                    require_local_broker: false,
                    ..Options::default()
                },
                &RealFiles,
            );
            let errors: Vec<_> = on_arrival.iter().filter(|d| d.is_error()).collect();
            assert!(errors.is_empty(), "{name}: {errors:#?}");
            for endpoint in &snapshot.endpoints {
                match mqtt_endpoint(&snapshot, endpoint, &env) {
                    Ok(_) => {}
                    Err(SkipReason::EndpointKindNotBuilt { .. }) => {
                        assert!(
                            !matches!(endpoint.spec, EndpointSpec::Mqtt { .. }),
                            "{name}"
                        );
                    }
                    Err(
                        SkipReason::SecretUnreadable { .. } | SkipReason::SettingMissing { .. },
                    ) => {}
                    Err(other) => {
                        panic!("{name}: the data plane refuses what validate accepts: {other}")
                    }
                }
            }
        }
    }

    const FLOWS: &str = r#"
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata: {name: local}
spec:
  endpointType: Mqtt
  mqttSettings:
    host: 127.0.0.1:1883
    authentication: {method: Anonymous}
    tls: {mode: Disabled}
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata: {name: hub}
spec:
  endpointType: Kafka
  kafkaSettings:
    host: hub.servicebus.windows.net:9093
    authentication: {method: SystemAssignedManagedIdentity, systemAssignedManagedIdentitySettings: {}}
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata: {name: remote}
spec:
  endpointType: Mqtt
  mqttSettings:
    host: 127.0.0.1:1884
    authentication:
      method: UsernamePassword
      usernamePasswordSettings: {secretRef: login}
    tls: {mode: Disabled}
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: Dataflow
metadata: {name: bridge}
spec:
  operations:
    - operationType: Source
      sourceSettings: {endpointRef: local, dataSources: [a/#]}
    - operationType: Destination
      destinationSettings: {endpointRef: remote, dataDestination: "b/${inputTopic}"}
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: Dataflow
metadata: {name: to-hub}
spec:
  operations:
    - operationType: Source
      sourceSettings: {endpointRef: local, dataSources: [a/#]}
    - operationType: Destination
      destinationSettings: {endpointRef: hub, dataDestination: telemetry}
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: Dataflow
metadata: {name: off}
spec:
  mode: Disabled
  operations:
    - operationType: Source
      sourceSettings: {endpointRef: local, dataSources: [a/#]}
    - operationType: Destination
      destinationSettings: {endpointRef: hub, dataDestination: telemetry}
"#;

    fn flows() -> Snapshot {
        let mut loaded = sluice_config_agent::Loaded::default();
        sluice_config_agent::load_str("flows.yaml", FLOWS, &mut loaded);
        let options = Options {
            local_broker_host: "127.0.0.1:1883".into(),
            ..Options::default()
        };
        let report = sluice_config_agent::validate_loaded(loaded, &options, &RealFiles);
        report.snapshot.expect("valid")
    }

    #[test]
    fn what_does_not_run_says_why_and_a_disabled_dataflow_is_neither() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let env = Environment {
            dirs: Dirs {
                secrets: Some(tmp.path().to_owned()),
                configmaps: None,
                ..Dirs::default()
            },
            cores: 2,
            ..Environment::default()
        };
        let snapshot = flows();
        let plans = plan(&snapshot, &env);
        assert!(plans.run.is_empty());
        let mut skipped: Vec<(&str, &'static str, bool)> = plans
            .skipped
            .iter()
            .map(|s| (s.key.as_str(), s.reason.code(), s.reason.retryable()))
            .collect();
        skipped.sort_unstable();
        assert_eq!(
            skipped,
            [
                ("azure-iot-operations/bridge", "secret_unreadable", true),
                // A managed identity needs --imds-endpoint.
                ("azure-iot-operations/to-hub", "setting_missing", false),
            ]
        );
        // The secret appears: the bridge can run, on both cores with a shared subscription.
        std::fs::create_dir(tmp.path().join("login")).expect("mkdir");
        std::fs::write(tmp.path().join("login/username"), "u\n").expect("write");
        std::fs::write(tmp.path().join("login/password"), "p\n").expect("write");
        let plans = plan(&snapshot, &env);
        assert_eq!(plans.run.len(), 1);
        let p = &plans.run[0];
        assert_eq!(p.cores, [0, 1]);
        assert_eq!(p.subscriptions()[0].filter, "$share/bridge/a/#");
        // Without shared subscriptions, one core and a plain subscription.
        let env = Environment {
            shared_subscriptions: false,
            ..env
        };
        let plans = plan(&snapshot, &env);
        assert_eq!(plans.run[0].cores, [0]);
        assert_eq!(plans.run[0].subscriptions()[0].filter, "a/#");
    }
}
