//! What this build accepts but does not act on: the endpoint kinds it does not run and the
//! settings it does not use, in one table each, so that a manifest that is valid AIO loads, and
//! its author is told, field by field, what Sluice leaves aside.
//!
//! Both tables shrink as connectors land: remove the row, and the warning goes. Validation
//! ([`crate::validate`], so both `config-agent validate` and the data plane's
//! [`crate::validate_snapshot`]) turns each finding into a warning; the data plane uses
//! [`endpoint_kind_not_built`] for the `endpoint_kind_not_built` reason of
//! [`crate::control::NotRunning`].
//!
//! This module decides nothing about validity: an error is [`crate::validate`]'s.

use crate::model::{
    DataflowEndpoint, DataflowProfile, DataflowSpec, EndpointSpec, EndpointType,
    KafkaAuthentication, MqttAuthentication, Operation, OperationalMode,
};
use crate::snapshot::Snapshot;

/// Which end of a dataflow an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The `Source` operation's endpoint.
    Source,
    /// The `Destination` operation's endpoint.
    Destination,
}

/// Endpoint kinds this build does not run, at which end (`None`: either), and why: a dataflow
/// with one there is accepted and not run.
/// Empty in this build: every kind runs (LocalStorage as a destination only, which validation
/// enforces).
pub const ENDPOINT_KINDS_NOT_BUILT: &[(EndpointType, Option<Role>, &str)] = &[];

/// Why this build does not run endpoints of kind `t` as the `role` end of a dataflow; `None`
/// when it does.
pub fn endpoint_kind_not_built(t: EndpointType, role: Role) -> Option<&'static str> {
    ENDPOINT_KINDS_NOT_BUILT
        .iter()
        .find(|(kind, at, _)| *kind == t && at.is_none_or(|at| at == role))
        .map(|(_, _, why)| *why)
}

/// Where a setting of [`NOT_ACTED_ON`] lives, and how to tell that a resource sets it.
#[derive(Clone, Copy)]
enum Find {
    /// A field of a `DataflowEndpoint`.
    Endpoint(fn(&DataflowEndpoint) -> bool),
    /// A field of a `Dataflow`'s spec.
    Dataflow(fn(&DataflowSpec) -> bool),
    /// A field of one operation; the path has `[]` where the operation's index goes.
    Operation(fn(&Operation) -> bool),
    /// A field of a `DataflowProfile`.
    Profile(fn(&DataflowProfile) -> bool),
}

/// A setting this build accepts and does not act on.
#[derive(Clone, Copy)]
pub struct NotActedOn {
    /// The field path as diagnostics write it; `[]` stands for an operation's index.
    pub path: &'static str,
    /// What happens instead, for the warning.
    pub reason: &'static str,
    find: Find,
}

impl std::fmt::Debug for NotActedOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotActedOn")
            .field("path", &self.path)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// Every setting accepted and not acted on by this build.
pub const NOT_ACTED_ON: &[NotActedOn] = &[
    NotActedOn {
        path: "spec.mqttSettings.authentication.userAssignedManagedIdentitySettings.tenantId",
        reason: "the token is asked of the data plane's --imds-endpoint by client id alone",
        find: Find::Endpoint(|e| {
            matches!(
                &e.spec,
                EndpointSpec::Mqtt { mqtt_settings }
                    if matches!(mqtt_settings.authentication, MqttAuthentication::UserAssignedManagedIdentity { .. })
            )
        }),
    },
    NotActedOn {
        path: "spec.kafkaSettings.authentication.userAssignedManagedIdentitySettings.tenantId",
        reason: "the token is asked of the data plane's --imds-endpoint by client id alone",
        find: Find::Endpoint(|e| {
            matches!(
                &e.spec,
                EndpointSpec::Kafka { kafka_settings }
                    if matches!(kafka_settings.authentication, KafkaAuthentication::UserAssignedManagedIdentity { .. })
            )
        }),
    },
    NotActedOn {
        path: "spec.requestDiskPersistence",
        reason: "messages in flight are held in memory and by the brokers' sessions",
        find: Find::Dataflow(|s| s.request_disk_persistence.is_some()),
    },
    NotActedOn {
        path: "spec.operations[].sourceSettings.assetRef",
        reason: "assets are an Azure IoT Operations feature",
        find: Find::Operation(
            |op| matches!(op, Operation::Source { source_settings, .. } if source_settings.asset_ref.is_some()),
        ),
    },
    NotActedOn {
        path: "spec.operations[].sourceSettings.schemaRef",
        reason: "payloads are forwarded as they are, without a schema",
        find: Find::Operation(
            |op| matches!(op, Operation::Source { source_settings, .. } if source_settings.schema_ref.is_some()),
        ),
    },
    NotActedOn {
        path: "spec.operations[].builtInTransformationSettings.map",
        reason: "transformations are not executed: messages pass through unchanged",
        find: Find::Operation(|op| {
            matches!(op, Operation::BuiltInTransformation { built_in_transformation_settings: t, .. }
                if !t.map.iter().all(is_pass_through_all))
        }),
    },
    NotActedOn {
        path: "spec.operations[].builtInTransformationSettings.filter",
        reason: "filters are not executed: every message passes",
        find: Find::Operation(|op| {
            matches!(op, Operation::BuiltInTransformation { built_in_transformation_settings: t, .. }
                if !t.filter.is_empty())
        }),
    },
    NotActedOn {
        path: "spec.operations[].builtInTransformationSettings.datasets",
        reason: "enrichment from the state store is not executed",
        find: Find::Operation(|op| {
            matches!(op, Operation::BuiltInTransformation { built_in_transformation_settings: t, .. }
                if !t.datasets.is_empty())
        }),
    },
    NotActedOn {
        path: "spec.operations[].destinationSettings.headers",
        reason: "header actions are not executed: headers pass through unchanged",
        find: Find::Operation(
            |op| matches!(op, Operation::Destination { destination_settings, .. } if !destination_settings.headers.is_empty()),
        ),
    },
    NotActedOn {
        path: "spec.diagnostics.logs.opentelemetryExportConfig",
        reason: "Sluice does not export to OpenTelemetry; logs go to stderr",
        find: Find::Profile(|p| {
            p.spec
                .diagnostics
                .logs
                .opentelemetry_export_config
                .is_some()
        }),
    },
    NotActedOn {
        path: "spec.diagnostics.metrics.opentelemetryExportConfig",
        reason: "Sluice does not export to OpenTelemetry; metrics are served for Prometheus",
        find: Find::Profile(|p| {
            p.spec
                .diagnostics
                .metrics
                .opentelemetry_export_config
                .is_some()
        }),
    },
];

/// `{type: PassThrough, inputs: ['*'], output: '*'}`: what the data plane does anyway (the map
/// of Azure IoT Operations' storage examples).
fn is_pass_through_all(m: &crate::model::MapRule) -> bool {
    m.mapping_type
        .is_none_or(|t| t == crate::model::MappingType::PassThrough)
        && m.inputs == ["*"]
        && m.output == "*"
        && m.expression.is_none()
}

/// A setting found in a resource that this build does not act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The field path in the resource, e.g. `spec.operations[1].builtInTransformationSettings`.
    pub path: String,
    /// The warning's message.
    pub message: String,
}

fn finding(path: String, reason: &str) -> Finding {
    Finding {
        path,
        message: format!("accepted but not acted on by this build: {reason}"),
    }
}

/// The settings of `endpoint` that this build does not act on.
pub fn endpoint_findings(endpoint: &DataflowEndpoint) -> Vec<Finding> {
    NOT_ACTED_ON
        .iter()
        .filter(|n| matches!(n.find, Find::Endpoint(f) if f(endpoint)))
        .map(|n| finding(n.path.to_owned(), n.reason))
        .collect()
}

/// The settings of `profile` that this build does not act on.
pub fn profile_findings(profile: &DataflowProfile) -> Vec<Finding> {
    NOT_ACTED_ON
        .iter()
        .filter(|n| matches!(n.find, Find::Profile(f) if f(profile)))
        .map(|n| finding(n.path.to_owned(), n.reason))
        .collect()
}

/// The settings of `spec` that this build does not act on, and, when the dataflow is enabled,
/// each of its endpoints whose kind this build does not run (`name` is the dataflow's, for the
/// message). Endpoints resolve in `namespace` of `snapshot`.
pub fn dataflow_findings(
    name: &str,
    namespace: &str,
    spec: &DataflowSpec,
    snapshot: &Snapshot,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for n in NOT_ACTED_ON {
        match n.find {
            Find::Dataflow(f) if f(spec) => out.push(finding(n.path.to_owned(), n.reason)),
            Find::Operation(f) => {
                for (i, op) in spec.operations.iter().enumerate() {
                    if f(op) {
                        let path = n.path.replacen("[]", &format!("[{i}]"), 1);
                        out.push(finding(path, n.reason));
                    }
                }
            }
            _ => {}
        }
    }
    let to_storage = spec.destination().is_some_and(|d| {
        snapshot
            .endpoint(namespace, &d.endpoint_ref)
            .is_some_and(|e| matches!(e.spec, EndpointSpec::LocalStorage { .. }))
    });
    if !to_storage {
        for (i, op) in spec.operations.iter().enumerate() {
            if let Operation::BuiltInTransformation {
                built_in_transformation_settings: t,
                ..
            } = op
            {
                let base = format!("spec.operations[{i}].builtInTransformationSettings");
                if t.schema_ref.is_some() {
                    out.push(finding(
                        format!("{base}.schemaRef"),
                        "an output schema is used by LocalStorage destinations only; messages are forwarded as they are",
                    ));
                }
                if t.serialization_format != crate::model::TransformationSerializationFormat::Json {
                    out.push(finding(
                        format!("{base}.serializationFormat"),
                        "only LocalStorage destinations write Parquet; messages are forwarded as they are",
                    ));
                }
            }
        }
    }
    if spec.mode == OperationalMode::Enabled {
        for (i, op) in spec.operations.iter().enumerate() {
            let (role, side, settings, endpoint_ref) = match op {
                Operation::Source {
                    source_settings, ..
                } => (
                    Role::Source,
                    "source",
                    "sourceSettings",
                    &source_settings.endpoint_ref,
                ),
                Operation::Destination {
                    destination_settings,
                    ..
                } => (
                    Role::Destination,
                    "destination",
                    "destinationSettings",
                    &destination_settings.endpoint_ref,
                ),
                Operation::BuiltInTransformation { .. } => continue,
            };
            let Some(endpoint) = snapshot.endpoint(namespace, endpoint_ref) else {
                continue;
            };
            if let Some(why) = endpoint_kind_not_built(endpoint.spec.endpoint_type(), role) {
                out.push(Finding {
                    path: format!("spec.operations[{i}].{settings}.endpointRef"),
                    message: format!(
                        "dataflow \"{name}\" is not run by this build: {why} ({side} endpoint \"{endpoint_ref}\")"
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::snapshot::Options;

    fn mqtt_endpoint(name: &str) -> DataflowEndpoint {
        DataflowEndpoint {
            api_version: ApiVersion::V1,
            metadata: Metadata {
                name: name.into(),
                namespace: DEFAULT_NAMESPACE.into(),
            },
            spec: EndpointSpec::Mqtt {
                mqtt_settings: MqttSettings::with_authentication(MqttAuthentication::Anonymous),
            },
        }
    }

    fn dataflow_spec(destination: &str) -> DataflowSpec {
        DataflowSpec {
            profile_ref: DEFAULT_PROFILE.into(),
            mode: OperationalMode::Enabled,
            operations: vec![
                Operation::Source {
                    name: None,
                    source_settings: SourceSettings {
                        endpoint_ref: "default".into(),
                        asset_ref: None,
                        data_sources: vec!["a/#".into()],
                        serialization_format: SourceSerializationFormat::Json,
                        schema_ref: None,
                    },
                },
                Operation::Destination {
                    name: None,
                    destination_settings: DestinationSettings {
                        endpoint_ref: destination.into(),
                        data_destination: "b".into(),
                        headers: Vec::new(),
                    },
                },
            ],
            request_disk_persistence: None,
        }
    }

    fn snapshot(extra: DataflowEndpoint) -> Snapshot {
        Snapshot::assemble(
            vec![mqtt_endpoint("default"), extra],
            Vec::new(),
            Vec::new(),
            &Options::default(),
        )
    }

    fn profile() -> DataflowProfile {
        DataflowProfile::implicit_default(DEFAULT_NAMESPACE)
    }

    fn all(
        endpoint: &DataflowEndpoint,
        spec: &DataflowSpec,
        profile: &DataflowProfile,
    ) -> Vec<Finding> {
        let s = snapshot(endpoint.clone());
        let mut out = endpoint_findings(endpoint);
        out.extend(dataflow_findings("flow", DEFAULT_NAMESPACE, spec, &s));
        out.extend(profile_findings(profile));
        out
    }

    /// Sets the setting of one table row in otherwise plain resources.
    fn set(path: &str, e: &mut DataflowEndpoint, d: &mut DataflowSpec, p: &mut DataflowProfile) {
        let otel = || OpenTelemetryExportConfig {
            otlp_grpc_endpoint: "http://otel:4317".into(),
            interval_seconds: 30,
            level: None,
        };
        match path {
            "spec.mqttSettings.authentication.userAssignedManagedIdentitySettings.tenantId" => {
                let EndpointSpec::Mqtt { mqtt_settings } = &mut e.spec else {
                    unreachable!()
                };
                mqtt_settings.authentication = MqttAuthentication::UserAssignedManagedIdentity {
                    user_assigned_managed_identity_settings: UserAssignedManagedIdentitySettings {
                        client_id: "c".into(),
                        tenant_id: "t".into(),
                        scope: None,
                    },
                };
            }
            "spec.kafkaSettings.authentication.userAssignedManagedIdentitySettings.tenantId" => {
                e.spec = EndpointSpec::Kafka {
                    kafka_settings: KafkaSettings::new(
                        "k:9093".into(),
                        KafkaAuthentication::UserAssignedManagedIdentity {
                            user_assigned_managed_identity_settings:
                                UserAssignedManagedIdentitySettings {
                                    client_id: "c".into(),
                                    tenant_id: "t".into(),
                                    scope: None,
                                },
                        },
                    ),
                };
            }
            "spec.requestDiskPersistence" => {
                d.request_disk_persistence = Some(OperationalMode::Enabled);
            }
            "spec.operations[].sourceSettings.assetRef"
            | "spec.operations[].sourceSettings.schemaRef" => {
                let Operation::Source {
                    source_settings, ..
                } = &mut d.operations[0]
                else {
                    unreachable!()
                };
                if path.ends_with("assetRef") {
                    source_settings.asset_ref = Some("asset".into());
                } else {
                    source_settings.schema_ref = Some("aio-sr://ns/s:1".into());
                }
            }
            "spec.operations[].builtInTransformationSettings.map"
            | "spec.operations[].builtInTransformationSettings.filter"
            | "spec.operations[].builtInTransformationSettings.datasets" => {
                let mut t = TransformationSettings::default();
                if path.ends_with("map") {
                    t.map.push(MapRule {
                        mapping_type: Some(MappingType::Rename),
                        description: None,
                        inputs: vec!["a".into()],
                        expression: None,
                        output: "b".into(),
                    });
                } else if path.ends_with("filter") {
                    t.filter.push(Filter {
                        filter_type: FilterType::Filter,
                        description: None,
                        inputs: vec!["a".into()],
                        expression: "$1 > 1".into(),
                    });
                } else {
                    t.datasets.push(Dataset {
                        key: "k".into(),
                        description: None,
                        schema_ref: None,
                        inputs: vec!["a".into()],
                        expression: None,
                    });
                }
                d.operations.insert(
                    0,
                    Operation::BuiltInTransformation {
                        name: None,
                        built_in_transformation_settings: t,
                    },
                );
            }
            "spec.operations[].destinationSettings.headers" => {
                let Operation::Destination {
                    destination_settings,
                    ..
                } = &mut d.operations[1]
                else {
                    unreachable!()
                };
                destination_settings.headers.push(HeaderAction {
                    action_type: HeaderActionType::AddOrReplace,
                    key: "site".into(),
                    value: Some("plant-1".into()),
                });
            }
            "spec.diagnostics.logs.opentelemetryExportConfig" => {
                p.spec.diagnostics.logs.opentelemetry_export_config = Some(otel());
            }
            "spec.diagnostics.metrics.opentelemetryExportConfig" => {
                p.spec.diagnostics.metrics.opentelemetry_export_config = Some(otel());
            }
            other => panic!("no test sets {other}: add it here"),
        }
    }

    #[test]
    fn every_row_fires_on_its_setting_and_only_then() {
        let (e, d, p) = (mqtt_endpoint("remote"), dataflow_spec("remote"), profile());
        assert_eq!(all(&e, &d, &p), Vec::new(), "plain resources: nothing");
        let mut paths: Vec<&str> = NOT_ACTED_ON.iter().map(|n| n.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), NOT_ACTED_ON.len(), "one row per path");
        for row in NOT_ACTED_ON {
            let (mut e, mut d, mut p) = (e.clone(), d.clone(), p.clone());
            set(row.path, &mut e, &mut d, &mut p);
            let found = all(&e, &d, &p);
            assert_eq!(found.len(), 1, "{}: {found:#?}", row.path);
            let expected = row.path.replacen("[]", "[0]", 1);
            let expected = if row.path.contains("destinationSettings") {
                row.path.replacen("[]", "[1]", 1)
            } else {
                expected
            };
            assert_eq!(found[0].path, expected);
            assert_eq!(
                found[0].message,
                format!("accepted but not acted on by this build: {}", row.reason)
            );
        }
    }

    #[test]
    fn dataflows_with_an_endpoint_kind_not_built_are_named() {
        let kafka = DataflowEndpoint {
            spec: EndpointSpec::Kafka {
                kafka_settings: KafkaSettings::new("k:9092".into(), KafkaAuthentication::Anonymous),
            },
            ..mqtt_endpoint("kafka")
        };
        // Kafka as the destination runs.
        let to_kafka = dataflow_spec("kafka");
        let found = dataflow_findings(
            "to-kafka",
            DEFAULT_NAMESPACE,
            &to_kafka,
            &snapshot(kafka.clone()),
        );
        assert_eq!(found, []);
        // Kafka as the source runs too.
        let mut spec = dataflow_spec("default");
        if let Operation::Source {
            source_settings, ..
        } = &mut spec.operations[0]
        {
            source_settings.endpoint_ref = "kafka".into();
        }
        let found = dataflow_findings(
            "from-kafka",
            DEFAULT_NAMESPACE,
            &spec,
            &snapshot(kafka.clone()),
        );
        assert_eq!(found, []);
        // A disabled dataflow is not run anyway.
        let disabled = DataflowSpec {
            mode: OperationalMode::Disabled,
            ..spec
        };
        assert!(
            dataflow_findings("from-kafka", DEFAULT_NAMESPACE, &disabled, &snapshot(kafka))
                .is_empty()
        );
        assert_eq!(
            endpoint_kind_not_built(EndpointType::LocalStorage, Role::Destination),
            None
        );
        assert_eq!(
            endpoint_kind_not_built(EndpointType::Mqtt, Role::Source),
            None
        );
        assert_eq!(
            endpoint_kind_not_built(EndpointType::Kafka, Role::Destination),
            None
        );
        assert_eq!(
            endpoint_kind_not_built(EndpointType::Kafka, Role::Source),
            None
        );
    }
}
