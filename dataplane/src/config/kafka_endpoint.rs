//! A Kafka `DataflowEndpoint`, resolved for the data plane: the bootstrap servers, TLS files,
//! credentials and the producer settings as written ([`KafkaEndpointPlan`]). Secrets are read
//! once here, so that one that cannot be read shows at once as a [`SkipReason`]; the producer
//! reads them again whenever it is made (`kafka::config`).

use std::path::PathBuf;

use sluice_config_agent::Snapshot;
use sluice_config_agent::model::{
    DataflowEndpoint, EndpointSpec, KafkaAuthentication, KafkaSettings, OperationalMode, SaslType,
};
use sluice_config_agent::paths::is_single_segment;
use sluice_config_agent::pem::{PemError, read_certificates_file, read_private_key_file};

use super::environment::Environment;
use super::mqtt_endpoint::{ClientCert, default_audience, default_scope, imds};
use super::skip::SkipReason;
use crate::net::address::parse_endpoint_address;
use crate::net::transport::ca_files_in;
use crate::secrets::files::read_login;

/// How the producer authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KafkaAuth {
    /// Nothing (or a client certificate, which is part of TLS).
    None,
    /// SASL PLAIN or SCRAM with the secret's `username` and `password` (for Azure Event Hubs:
    /// `$ConnectionString` and the connection string).
    Sasl {
        /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
        mechanism: &'static str,
        /// `<secrets-dir>/<secret>/username`.
        username_file: PathBuf,
        /// `<secrets-dir>/<secret>/password`.
        password_file: PathBuf,
    },
    /// SASL OAUTHBEARER with a managed identity token from the IMDS endpoint.
    ManagedIdentity {
        /// `--imds-endpoint`.
        endpoint: String,
        /// The resource (audience) or scope asked for.
        resource: String,
        /// A user-assigned identity's client ID.
        client_id: Option<String>,
    },
}

/// TLS of a Kafka endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KafkaTls {
    /// CA certificates from the ConfigMap; `None`: the system trust store.
    pub(crate) ca_files: Option<Vec<PathBuf>>,
    /// Client certificate and key (`X509Certificate` authentication).
    pub(crate) client_cert: Option<ClientCert>,
}

/// A Kafka endpoint, resolved.
#[derive(Debug, Clone)]
pub(crate) struct KafkaEndpointPlan {
    /// `namespace/name` of the `DataflowEndpoint`.
    pub(crate) name: String,
    /// `bootstrap.servers`: every `host:port` of `kafkaSettings.host`, a port added where none
    /// was written (9093 with TLS, 9092 without).
    pub(crate) bootstrap: String,
    /// `None` when `tls.mode` is `Disabled`.
    pub(crate) tls: Option<KafkaTls>,
    /// Authentication.
    pub(crate) auth: KafkaAuth,
    /// The settings as written (defaults applied).
    pub(crate) settings: KafkaSettings,
}

/// Resolves a Kafka endpoint: its servers, TLS files and credentials, with the secrets read
/// once.
///
/// # Errors
/// The [`SkipReason`] when a secret or CA cannot be read or a command-line setting it needs is
/// missing.
pub(crate) fn kafka_endpoint(
    _snapshot: &Snapshot,
    endpoint: &DataflowEndpoint,
    env: &Environment,
) -> Result<KafkaEndpointPlan, SkipReason> {
    let name = format!("{}/{}", endpoint.metadata.namespace, endpoint.metadata.name);
    let EndpointSpec::Kafka { kafka_settings } = &endpoint.spec else {
        return Err(SkipReason::Invalid {
            detail: format!("endpoint {name} is not a Kafka endpoint"),
        });
    };
    let settings = kafka_settings.clone();
    let invalid = |detail: String| SkipReason::Invalid {
        detail: format!("endpoint {name}: {detail}"),
    };
    let unreadable = |detail: String| SkipReason::SecretUnreadable {
        endpoint: name.clone(),
        detail,
    };
    let missing = |setting: &'static str, needed_for: String| SkipReason::SettingMissing {
        endpoint: name.clone(),
        setting,
        needed_for,
    };
    let tls_on = settings.tls.mode == OperationalMode::Enabled;
    let default_port = if tls_on { 9093 } else { 9092 };
    let mut servers = Vec::new();
    let mut first_host = String::new();
    for server in settings.bootstrap_servers() {
        let address = parse_endpoint_address(server, default_port, false)
            .map_err(|e| invalid(format!("host {server:?}: {e}")))?;
        if first_host.is_empty() {
            first_host.clone_from(&address.host);
        }
        // librdkafka wants IPv6 literals in brackets, as written in a URL.
        if address.host.contains(':') {
            servers.push(format!("[{}]:{}", address.host, address.port));
        } else {
            servers.push(format!("{}:{}", address.host, address.port));
        }
    }
    if servers.is_empty() {
        return Err(invalid("no host".into()));
    }
    let secret = |secret: &str, key: &str| -> Result<PathBuf, SkipReason> {
        if !is_single_segment(secret) {
            return Err(invalid(format!("{secret:?} is not a secret name")));
        }
        let dir = env
            .dirs
            .secrets
            .as_deref()
            .ok_or_else(|| missing("--secrets-dir", format!("secret {secret}")))?;
        Ok(dir.join(secret).join(key))
    };
    let mut client_cert = None;
    let auth = match &settings.authentication {
        KafkaAuthentication::Anonymous => KafkaAuth::None,
        KafkaAuthentication::Sasl { sasl_settings } => {
            let s = &sasl_settings.secret_ref;
            let (username_file, password_file) = (secret(s, "username")?, secret(s, "password")?);
            read_login(&username_file, &password_file)
                .map_err(|e| unreadable(format!("secret {s}: {e}")))?;
            KafkaAuth::Sasl {
                mechanism: match sasl_settings.sasl_type {
                    SaslType::Plain => "PLAIN",
                    SaslType::ScramSha256 => "SCRAM-SHA-256",
                    SaslType::ScramSha512 => "SCRAM-SHA-512",
                },
                username_file,
                password_file,
            }
        }
        KafkaAuthentication::X509Certificate {
            x509_certificate_settings,
        } => {
            let s = &x509_certificate_settings.secret_ref;
            let intermediates = secret(s, "client_intermediate_certs.pem")?;
            client_cert = Some(ClientCert {
                cert: secret(s, "client_cert.pem")?,
                key: secret(s, "client_key.pem")?,
                intermediates: intermediates.exists().then_some(intermediates),
            });
            KafkaAuth::None
        }
        KafkaAuthentication::SystemAssignedManagedIdentity {
            system_assigned_managed_identity_settings,
        } => KafkaAuth::ManagedIdentity {
            endpoint: imds(env, &name)?,
            resource: system_assigned_managed_identity_settings
                .audience
                .clone()
                .unwrap_or_else(|| default_audience(&first_host)),
            client_id: None,
        },
        KafkaAuthentication::UserAssignedManagedIdentity {
            user_assigned_managed_identity_settings: u,
        } => KafkaAuth::ManagedIdentity {
            endpoint: imds(env, &name)?,
            resource: u
                .scope
                .clone()
                .unwrap_or_else(|| default_scope(&first_host)),
            client_id: Some(u.client_id.clone()),
        },
    };
    let tls = if tls_on {
        let ca_files = match &settings.tls.trusted_ca_certificate_config_map_ref {
            None => None,
            Some(cm) => {
                if !is_single_segment(cm) {
                    return Err(invalid(format!("{cm:?} is not a ConfigMap name")));
                }
                let dir = env
                    .dirs
                    .configmaps
                    .as_deref()
                    .ok_or_else(|| missing("--configmaps-dir", format!("ConfigMap {cm}")))?;
                Some(
                    ca_files_in(&dir.join(cm))
                        .map_err(|e| unreadable(format!("ConfigMap {cm}: {e}")))?,
                )
            }
        };
        Some(KafkaTls {
            ca_files,
            client_cert,
        })
    } else {
        if client_cert.is_some() {
            return Err(invalid(
                "X509Certificate authentication needs tls.mode Enabled".into(),
            ));
        }
        None
    };
    // The files are read again whenever a producer is made; reading them now shows a missing
    // or unusable one before the dataflow is reported as running.
    if let Some(cert) = tls.as_ref().and_then(|t| t.client_cert.as_ref()) {
        let shown = |p: &PathBuf, e: PemError| unreadable(format!("{}: {e}", p.display()));
        read_certificates_file(&cert.cert).map_err(|e| shown(&cert.cert, e))?;
        read_private_key_file(&cert.key).map_err(|e| shown(&cert.key, e))?;
        if let Some(i) = &cert.intermediates {
            read_certificates_file(i).map_err(|e| shown(i, e))?;
        }
    }
    for ca in tls.iter().flat_map(|t| t.ca_files.iter().flatten()) {
        read_certificates_file(ca).map_err(|e| unreadable(format!("{}: {e}", ca.display())))?;
    }
    Ok(KafkaEndpointPlan {
        name,
        bootstrap: servers.join(","),
        tls,
        auth,
        settings,
    })
}
