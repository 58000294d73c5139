//! A LocalStorage endpoint and its dataflow's output schema, resolved to what the Parquet sink
//! needs ([`LocalEndpointPlan`]): the folder `<volumes-dir>/<claim>/<dataDestination>`, the
//! schema read from `--schemas-dir` (or none: inferred), the file bounds and the extra columns.

use std::path::PathBuf;
use std::sync::Arc;

use sluice_config_agent::RealFiles;
use sluice_config_agent::delta::{DeltaField, SchemaRef, load_schema};
use sluice_config_agent::model::{
    DataflowEndpoint, DataflowSpec, EndpointSpec, FileBatching, FileCompression, MetadataColumn,
    Operation, OperationalMode,
};

use super::environment::Environment;
use super::skip::SkipReason;

/// What a LocalStorage destination writes, and where.
#[derive(Debug, Clone)]
pub(crate) struct LocalEndpointPlan {
    /// `namespace/name` of the endpoint.
    pub(crate) name: String,
    /// The folder files go to: the volume's folder and the dataflow's `dataDestination` below it.
    pub(crate) folder: PathBuf,
    /// The output schema's fields (`schemaRef`); `None`: inferred from the messages.
    pub(crate) schema: Option<Arc<Vec<DeltaField>>>,
    /// The reference it came from, for the log.
    pub(crate) schema_ref: Option<String>,
    /// When files are cut.
    pub(crate) batching: FileBatching,
    /// Columns after the payload's.
    pub(crate) meta: Vec<MetadataColumn>,
    /// Dead-letter files.
    pub(crate) dead_letter: bool,
    /// The pages' codec.
    pub(crate) compression: FileCompression,
}

impl LocalEndpointPlan {
    /// Whether the rows have a User Properties column (the route must keep the properties).
    pub(crate) fn needs_properties(&self) -> bool {
        self.meta.contains(&MetadataColumn::UserProperties)
    }
}

/// Resolves `endpoint` (LocalStorage) as the destination of `spec`, writing to `destination`
/// (its `dataDestination`).
///
/// # Errors
/// [`SkipReason`]: `--volumes-dir` or `--schemas-dir` not given, the volume's folder missing, the
/// schema unreadable or invalid (retried: a volume or ConfigMap may be mounted later).
pub(crate) fn local_endpoint(
    endpoint: &DataflowEndpoint,
    spec: &DataflowSpec,
    destination: &str,
    env: &Environment,
) -> Result<LocalEndpointPlan, SkipReason> {
    let name = format!("{}/{}", endpoint.metadata.namespace, endpoint.metadata.name);
    let EndpointSpec::LocalStorage {
        local_storage_settings: s,
    } = &endpoint.spec
    else {
        return Err(SkipReason::Invalid {
            detail: format!("endpoint {name} is not LocalStorage"),
        });
    };
    let volumes = env
        .dirs
        .volumes
        .as_ref()
        .ok_or_else(|| SkipReason::SettingMissing {
            endpoint: name.clone(),
            setting: "--volumes-dir",
            needed_for: "a LocalStorage endpoint (its persistent volume claim)".into(),
        })?;
    let volume = volumes.join(&s.persistent_volume_claim_ref);
    if !volume.is_dir() {
        return Err(SkipReason::FileUnreadable {
            endpoint: name,
            detail: format!("the volume folder {} does not exist", volume.display()),
        });
    }
    // Validation refused anything but a relative path of plain segments.
    let folder = destination
        .split('/')
        .fold(volume, |p, segment| p.join(segment));
    let transformation = spec.operations.iter().find_map(|op| match op {
        Operation::BuiltInTransformation {
            built_in_transformation_settings: t,
            ..
        } => Some(t),
        _ => None,
    });
    let schema_ref = transformation.and_then(|t| t.schema_ref.clone());
    let schema = match &schema_ref {
        None => None,
        Some(reference) => {
            let parsed =
                SchemaRef::parse(reference).map_err(|detail| SkipReason::Invalid { detail })?;
            let dir = env
                .dirs
                .schemas
                .as_ref()
                .ok_or_else(|| SkipReason::SettingMissing {
                    endpoint: name.clone(),
                    setting: "--schemas-dir",
                    needed_for: format!("the output schema {reference}"),
                })?;
            let schema = load_schema(&RealFiles, dir, &parsed).map_err(|detail| {
                SkipReason::FileUnreadable {
                    endpoint: name.clone(),
                    detail,
                }
            })?;
            for column in &s.metadata_columns {
                if schema.field(column.column_name()).is_some() {
                    return Err(SkipReason::Invalid {
                        detail: format!(
                            "schema {reference} has a field \"{}\", which is also the column of metadataColumns {column}",
                            column.column_name()
                        ),
                    });
                }
            }
            Some(Arc::new(schema.fields))
        }
    };
    let meta = s.metadata_columns.clone();
    Ok(LocalEndpointPlan {
        name,
        folder,
        schema,
        schema_ref,
        batching: s.batching,
        meta,
        dead_letter: s.dead_letter == OperationalMode::Enabled,
        compression: s.compression,
    })
}

#[cfg(test)]
mod tests {
    use sluice_config_agent::model::{
        ApiVersion, LocalStorageSettings, Metadata, TransformationSettings,
    };

    use super::*;
    use crate::config::environment::Dirs;

    fn endpoint() -> DataflowEndpoint {
        DataflowEndpoint {
            api_version: ApiVersion::V1,
            metadata: Metadata {
                name: "files".into(),
                namespace: "ns".into(),
            },
            spec: EndpointSpec::LocalStorage {
                local_storage_settings: LocalStorageSettings::new("vol".into()),
            },
        }
    }

    fn spec(schema_ref: Option<&str>) -> DataflowSpec {
        DataflowSpec {
            profile_ref: "default".into(),
            mode: OperationalMode::Enabled,
            operations: vec![Operation::BuiltInTransformation {
                name: None,
                built_in_transformation_settings: TransformationSettings {
                    schema_ref: schema_ref.map(str::to_owned),
                    ..TransformationSettings::default()
                },
            }],
            request_disk_persistence: None,
        }
    }

    fn env(volumes: Option<&std::path::Path>, schemas: Option<&std::path::Path>) -> Environment {
        Environment {
            dirs: Dirs {
                volumes: volumes.map(std::path::Path::to_path_buf),
                schemas: schemas.map(std::path::Path::to_path_buf),
                ..Dirs::default()
            },
            ..Environment::default()
        }
    }

    #[test]
    fn the_folder_the_schema_and_what_is_missing() {
        let dir = tempfile::tempdir().expect("dir");
        let volumes = dir.path().join("volumes");
        let schemas = dir.path().join("schemas");
        std::fs::create_dir_all(volumes.join("vol")).expect("volume");
        std::fs::create_dir_all(schemas.join("plant")).expect("schemas");
        std::fs::write(
            schemas.join("plant/t-1.json"),
            r#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[{"name":"v","type":"long"}]}}"#,
        )
        .expect("schema");

        let plan = local_endpoint(&endpoint(), &spec(None), "a/b", &env(Some(&volumes), None))
            .expect("inferred");
        assert_eq!(plan.folder, volumes.join("vol").join("a").join("b"));
        assert!(plan.schema.is_none());
        let plan = local_endpoint(
            &endpoint(),
            &spec(Some("aio-sr://plant/t:1")),
            "out",
            &env(Some(&volumes), Some(&schemas)),
        )
        .expect("with a schema");
        assert_eq!(plan.schema.expect("schema")[0].name, "v");

        let missing = |e: &Environment, r: Option<&str>| {
            local_endpoint(&endpoint(), &spec(r), "out", e).expect_err("not planned")
        };
        assert!(matches!(
            missing(&env(None, None), None),
            SkipReason::SettingMissing {
                setting: "--volumes-dir",
                ..
            }
        ));
        assert!(matches!(
            missing(&env(Some(&volumes), None), Some("aio-sr://plant/t:1")),
            SkipReason::SettingMissing {
                setting: "--schemas-dir",
                ..
            }
        ));
        let r = missing(
            &env(Some(&volumes), Some(&schemas)),
            Some("aio-sr://plant/t:2"),
        );
        assert!(
            matches!(r, SkipReason::FileUnreadable { .. }) && r.retryable(),
            "{r}"
        );
        let r = missing(&env(Some(&dir.path().join("none")), None), None);
        assert!(r.to_string().contains("does not exist"), "{r}");
    }
}
