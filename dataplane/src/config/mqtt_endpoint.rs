//! An MQTT `DataflowEndpoint`, resolved for the data plane: host and port, TLS files, credentials
//! and the session settings ([`MqttEndpointPlan`]). Secrets are read once here, so that one that
//! cannot be read shows at once as a [`SkipReason`], and again before every connection.

use std::num::{NonZeroU16, NonZeroU32};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use sluice_codec::{ByteStr, ProtocolVersion, QoS};
use sluice_config_agent::Snapshot;
use sluice_config_agent::model::{
    DataflowEndpoint, EndpointSpec, MqttAuthentication, MqttProtocol, MqttSettings, MqttVersion,
    OperationalMode,
};
use sluice_config_agent::paths::{is_single_segment, token_file_name};
use sluice_config_agent::validate::is_event_grid;

use super::environment::Environment;
use super::skip::SkipReason;
use crate::mqtt::session::SessionConfig;
use crate::net::address::parse_endpoint_address;
use crate::net::transport::{ClientAuthFiles, ca_files_in, client_config};
use crate::secrets::files::{read_login, read_service_account_token};
use crate::secrets::imds::ImdsClient;
use crate::secrets::tokens::{K8S_SAT, OAUTH2_JWT};

/// The audience (resource) asked of IMDS when a system-assigned managed identity names none, as
/// Azure IoT Operations defaults it: an Event Hubs namespace
/// (`<namespace>.servicebus.windows.net`) for its own host, Event Grid for everything else.
pub(crate) fn default_audience(host: &str) -> String {
    match event_hubs_namespace(host) {
        Some(ns) => format!("https://{ns}.servicebus.windows.net"),
        None => "https://eventgrid.azure.net".into(),
    }
}

/// The scope asked of IMDS when a user-assigned managed identity names none: the
/// [`default_audience`] with `/.default`.
pub(crate) fn default_scope(host: &str) -> String {
    format!("{}/.default", default_audience(host))
}

/// The namespace of an Event Hubs host, `<namespace>.servicebus.windows.net`.
fn event_hubs_namespace(host: &str) -> Option<&str> {
    let lower = host.len().checked_sub(".servicebus.windows.net".len())?;
    let (ns, suffix) = host.split_at_checked(lower)?;
    (suffix.eq_ignore_ascii_case(".servicebus.windows.net") && !ns.is_empty() && !ns.contains('.'))
        .then_some(ns)
}

/// How to authenticate to a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// Nothing (or a client certificate, which is part of TLS).
    None,
    /// User Name and Password: read from the secret when the plan is made (so that a missing
    /// file shows at once), and again before every connection (a rotated secret is used from
    /// the next connection on).
    UsernamePassword {
        /// User Name.
        username: ByteStr,
        /// Password.
        password: Bytes,
        /// `<secrets-dir>/<secret>/username`.
        username_file: PathBuf,
        /// `<secrets-dir>/<secret>/password`.
        password_file: PathBuf,
    },
    /// A Kubernetes service account token, read from `<token-dir>/<audience>` before every
    /// connection and sent as MQTT 5.0 enhanced authentication `K8S-SAT`.
    ServiceAccountToken {
        /// The token file.
        path: PathBuf,
    },
    /// A managed identity token from the IMDS endpoint, sent as enhanced authentication
    /// `OAUTH2-JWT`.
    ManagedIdentity {
        /// The IMDS endpoint (`--imds-endpoint`).
        endpoint: String,
        /// The resource / scope asked for.
        resource: String,
        /// A user-assigned identity's client ID.
        client_id: Option<String>,
    },
}

/// TLS settings of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsPlan {
    /// CA certificates from the ConfigMap; `None`: the system trust store.
    pub(crate) ca_files: Option<Vec<PathBuf>>,
    /// Client certificate chain and key for mutual TLS.
    pub(crate) client_cert: Option<ClientCert>,
}

/// Files of an X.509 client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientCert {
    /// `client_cert.pem`.
    pub(crate) cert: PathBuf,
    /// `client_key.pem`.
    pub(crate) key: PathBuf,
    /// `client_intermediate_certs.pem`, when the secret has it.
    pub(crate) intermediates: Option<PathBuf>,
}

/// An MQTT endpoint, resolved.
#[derive(Debug, Clone)]
pub(crate) struct MqttEndpointPlan {
    /// `namespace/name` of the `DataflowEndpoint`.
    pub(crate) name: String,
    /// Host name or address.
    pub(crate) host: String,
    /// TCP port.
    pub(crate) port: u16,
    /// `None` when `tls.mode` is `Disabled`.
    pub(crate) tls: Option<TlsPlan>,
    /// MQTT over WebSocket.
    pub(crate) websocket: bool,
    /// The WebSocket upgrade's request path: the path after the host's port (`host:443/mqtt`
    /// gives `/mqtt`), else `/`. Unused without [`websocket`](Self::websocket).
    pub(crate) ws_path: String,
    /// Authentication.
    pub(crate) credentials: Credentials,
    /// The endpoint's settings as written.
    pub(crate) settings: MqttSettings,
    /// Whether the broker offers shared subscriptions (not Azure Event Grid).
    pub(crate) can_share: bool,
    /// The largest packet accepted from the broker, bytes (`--max-packet-bytes`; AIO's
    /// `DataflowEndpoint` has no such setting).
    pub(crate) max_packet_bytes: NonZeroU32,
}

impl MqttEndpointPlan {
    /// MQTT version.
    pub(crate) fn protocol(&self) -> ProtocolVersion {
        match self.settings.mqtt_version {
            MqttVersion::V3 => ProtocolVersion::V311,
            MqttVersion::V5 => ProtocolVersion::V5,
        }
    }

    /// QoS of subscriptions and publications.
    pub(crate) fn qos(&self) -> QoS {
        if self.settings.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    /// `maxInflightMessages`, clamped to what MQTT can say.
    pub(crate) fn max_inflight(&self) -> NonZeroU16 {
        let n = self
            .settings
            .max_inflight_messages
            .clamp(1, u32::from(u16::MAX));
        NonZeroU16::new(u16::try_from(n).unwrap_or(u16::MAX)).unwrap_or(NonZeroU16::MIN)
    }

    /// The session configuration for one connection of this endpoint.
    pub(crate) fn session_config(&self, client_id: String) -> SessionConfig {
        let mut c = SessionConfig::new(self.protocol(), ByteStr::from(client_id));
        c.keep_alive_secs = u16::try_from(self.settings.keep_alive_seconds).unwrap_or(u16::MAX);
        c.clean_start = self.settings.clean_session;
        c.session_expiry_secs = self.settings.session_expiry_seconds;
        c.receive_maximum = self.max_inflight();
        c.max_in_flight = self.max_inflight();
        c.maximum_packet_size = self.max_packet_bytes;
        match &self.credentials {
            Credentials::UsernamePassword {
                username, password, ..
            } => {
                c.username = Some(username.clone());
                c.password = Some(password.clone());
            }
            Credentials::ServiceAccountToken { .. } => {
                c.authentication_method = Some(ByteStr::from_static(K8S_SAT));
            }
            Credentials::ManagedIdentity { .. } => {
                c.authentication_method = Some(ByteStr::from_static(OAUTH2_JWT));
            }
            Credentials::None => {}
        }
        c.connect_timeout = Duration::from_secs(10);
        c
    }
}

/// Resolves an MQTT endpoint: its address, TLS files, credentials, with the secrets read once.
///
/// # Errors
/// The [`SkipReason`] when the endpoint is not MQTT, a secret or CA cannot be read, or a
/// command-line setting it needs is missing.
pub(crate) fn mqtt_endpoint(
    snapshot: &Snapshot,
    endpoint: &DataflowEndpoint,
    env: &Environment,
) -> Result<MqttEndpointPlan, SkipReason> {
    let name = format!("{}/{}", endpoint.metadata.namespace, endpoint.metadata.name);
    let settings = match &endpoint.spec {
        EndpointSpec::Mqtt { mqtt_settings } => mqtt_settings.clone(),
        EndpointSpec::Kafka { .. } => return Err(not_built(&name, "Kafka")),
        EndpointSpec::LocalStorage { .. } => return Err(not_built(&name, "LocalStorage")),
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
    let host_port = settings
        .host
        .clone()
        .unwrap_or_else(|| snapshot.local_broker_host.clone());
    let default_port = match (settings.protocol, tls_on) {
        (MqttProtocol::Mqtt, false) => 1883,
        (MqttProtocol::Mqtt, true) => 8883,
        (MqttProtocol::WebSockets, false) => 80,
        (MqttProtocol::WebSockets, true) => 443,
    };
    let websocket = settings.protocol == MqttProtocol::WebSockets;
    let address = parse_endpoint_address(&host_port, default_port, websocket).map_err(|e| {
        SkipReason::Invalid {
            detail: format!("endpoint {name}: {e}"),
        }
    })?;
    let (host, port) = (address.host, address.port);
    let ws_path = address.path.unwrap_or_else(|| "/".to_owned());
    let secret = |secret: &str, key: &str| -> Result<PathBuf, SkipReason> {
        if !is_single_segment(secret) {
            return Err(SkipReason::Invalid {
                detail: format!("endpoint {name}: {secret:?} is not a secret name"),
            });
        }
        let dir = env
            .dirs
            .secrets
            .as_deref()
            .ok_or_else(|| missing("--secrets-dir", format!("secret {secret}")))?;
        Ok(dir.join(secret).join(key))
    };
    let mut client_cert = None;
    let credentials = match &settings.authentication {
        MqttAuthentication::Anonymous => Credentials::None,
        MqttAuthentication::UsernamePassword {
            username_password_settings,
        } => {
            let s = &username_password_settings.secret_ref;
            let (username_file, password_file) = (secret(s, "username")?, secret(s, "password")?);
            let (username, password) = read_login(&username_file, &password_file)
                .map_err(|e| unreadable(format!("secret {s}: {e}")))?;
            Credentials::UsernamePassword {
                username,
                password,
                username_file,
                password_file,
            }
        }
        MqttAuthentication::X509Certificate {
            x509_certificate_settings,
        } => {
            let s = &x509_certificate_settings.secret_ref;
            let intermediates = secret(s, "client_intermediate_certs.pem")?;
            client_cert = Some(ClientCert {
                cert: secret(s, "client_cert.pem")?,
                key: secret(s, "client_key.pem")?,
                intermediates: intermediates.exists().then_some(intermediates),
            });
            Credentials::None
        }
        MqttAuthentication::ServiceAccountToken {
            service_account_token_settings,
        } => {
            let dir = env
                .token_dir
                .as_deref()
                .ok_or_else(|| missing("--token-dir", "ServiceAccountToken".into()))?;
            // The audience names a file that cannot leave the folder (percent-encoded).
            let path = dir.join(&*token_file_name(&service_account_token_settings.audience));
            read_service_account_token(&path).map_err(|e| unreadable(e.to_string()))?;
            Credentials::ServiceAccountToken { path }
        }
        MqttAuthentication::SystemAssignedManagedIdentity {
            system_assigned_managed_identity_settings,
        } => Credentials::ManagedIdentity {
            endpoint: imds(env, &name)?,
            resource: system_assigned_managed_identity_settings
                .audience
                .clone()
                .unwrap_or_else(|| default_audience(&host)),
            client_id: None,
        },
        MqttAuthentication::UserAssignedManagedIdentity {
            user_assigned_managed_identity_settings: u,
        } => Credentials::ManagedIdentity {
            endpoint: imds(env, &name)?,
            resource: u.scope.clone().unwrap_or_else(|| default_scope(&host)),
            client_id: Some(u.client_id.clone()),
        },
    };
    let tls = if tls_on {
        let ca_files = match &settings.tls.trusted_ca_certificate_config_map_ref {
            None => None,
            Some(cm) => {
                if !is_single_segment(cm) {
                    return Err(SkipReason::Invalid {
                        detail: format!("endpoint {name}: {cm:?} is not a ConfigMap name"),
                    });
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
        let plan = TlsPlan {
            ca_files,
            client_cert,
        };
        // The files are read again for every connection; reading them now shows a missing or
        // unusable one before the dataflow is reported as running.
        plan.client_config()
            .map_err(|e| unreadable(format!("TLS: {e}")))?;
        Some(plan)
    } else {
        if client_cert.is_some() {
            return Err(SkipReason::Invalid {
                detail: format!(
                    "endpoint {name}: X509Certificate authentication needs tls.mode Enabled"
                ),
            });
        }
        None
    };
    Ok(MqttEndpointPlan {
        name,
        host,
        port,
        tls,
        websocket,
        ws_path,
        credentials,
        can_share: !is_event_grid(endpoint),
        settings,
        max_packet_bytes: env.max_packet_bytes,
    })
}

fn not_built(endpoint: &str, kind: &'static str) -> SkipReason {
    SkipReason::EndpointKindNotBuilt {
        endpoint: endpoint.to_owned(),
        kind,
    }
}

/// The IMDS endpoint, checked to be a usable URL.
pub(crate) fn imds(env: &Environment, name: &str) -> Result<String, SkipReason> {
    let endpoint = env
        .imds_endpoint
        .clone()
        .ok_or_else(|| SkipReason::SettingMissing {
            endpoint: name.to_owned(),
            setting: "--imds-endpoint",
            needed_for: "managed identity".into(),
        })?;
    ImdsClient::new(&endpoint).map_err(|e| SkipReason::Invalid {
        detail: format!("endpoint {name}: {e}"),
    })?;
    Ok(endpoint)
}

impl TlsPlan {
    /// The rustls client configuration from the files, read now.
    ///
    /// # Errors
    /// A file that cannot be read or holds no usable certificate or key.
    pub(crate) fn client_config(
        &self,
    ) -> Result<std::sync::Arc<rustls::ClientConfig>, crate::net::transport::TransportError> {
        let client_auth = self.client_cert.as_ref().map(|c| ClientAuthFiles {
            cert: c.cert.clone(),
            key: c.key.clone(),
            intermediates: c.intermediates.clone(),
        });
        client_config(self.ca_files.as_deref(), client_auth)
    }

    /// The files it is read from (for noticing that one changed).
    pub(crate) fn files(&self) -> Vec<&std::path::Path> {
        let mut files: Vec<&std::path::Path> = self
            .ca_files
            .iter()
            .flatten()
            .map(PathBuf::as_path)
            .collect();
        if let Some(c) = &self.client_cert {
            files.push(&c.cert);
            files.push(&c.key);
            files.extend(c.intermediates.as_deref());
        }
        files
    }
}

#[cfg(test)]
mod tests {
    use sluice_config_agent::model::{ApiVersion, Metadata};

    use super::*;

    fn endpoint(host: &str, protocol: MqttProtocol) -> DataflowEndpoint {
        let mut settings = MqttSettings::with_authentication(MqttAuthentication::Anonymous);
        settings.host = Some(host.to_owned());
        settings.protocol = protocol;
        settings.tls.mode = OperationalMode::Disabled;
        DataflowEndpoint {
            api_version: ApiVersion::V1,
            metadata: Metadata {
                name: "ep".into(),
                namespace: "ns".into(),
            },
            spec: EndpointSpec::Mqtt {
                mqtt_settings: settings,
            },
        }
    }

    fn plan(host: &str, protocol: MqttProtocol) -> Result<MqttEndpointPlan, SkipReason> {
        let snapshot = Snapshot::assemble(
            Vec::new(),
            Vec::new(),
            Vec::new(),
            &sluice_config_agent::Options::default(),
        );
        mqtt_endpoint(
            &snapshot,
            &endpoint(host, protocol),
            &Environment::default(),
        )
    }

    #[test]
    fn a_websocket_host_carries_its_path() {
        let p = plan("broker:8080/mqtt", MqttProtocol::WebSockets).unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.websocket, p.ws_path.as_str()),
            ("broker", 8080, true, "/mqtt")
        );
        let p = plan("broker", MqttProtocol::WebSockets).unwrap();
        assert_eq!((p.port, p.ws_path.as_str()), (80, "/"));
        match plan("broker:1883/mqtt", MqttProtocol::Mqtt) {
            Err(SkipReason::Invalid { detail }) => {
                assert!(detail.contains("mqttSettings.protocol"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_token_audience_never_names_a_file_outside_the_token_folder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tokens = tmp.path().join("tokens");
        std::fs::create_dir(&tokens).expect("mkdir");
        std::fs::write(tmp.path().join("password"), "secret").expect("write");
        let env = Environment {
            token_dir: Some(tokens.clone()),
            ..Environment::default()
        };
        for audience in ["../password", "/etc/hostname", ".."] {
            let snapshot = sat(audience);
            match mqtt_endpoint(&snapshot, &snapshot.endpoints[0], &env) {
                // The file it would read is in the folder (and does not exist).
                Err(SkipReason::SecretUnreadable { detail, .. }) => {
                    assert!(detail.contains(&tokens.display().to_string()), "{detail}");
                }
                other => panic!("{audience}: {other:?}"),
            }
        }
        std::fs::write(tokens.join("aio-internal"), "header.payload.sig").expect("write");
        let snapshot = sat("aio-internal");
        let plan = mqtt_endpoint(&snapshot, &snapshot.endpoints[0], &env).expect("resolves");
        assert_eq!(
            plan.credentials,
            Credentials::ServiceAccountToken {
                path: tokens.join("aio-internal")
            }
        );
    }

    fn sat(audience: &str) -> Snapshot {
        let yaml = format!(
            "apiVersion: connectivity.iotoperations.azure.com/v1\nkind: DataflowEndpoint\nmetadata: {{name: ep}}\nspec:\n  endpointType: Mqtt\n  mqttSettings:\n    host: 127.0.0.1:1883\n    tls: {{mode: Disabled}}\n    authentication:\n      method: ServiceAccountToken\n      serviceAccountTokenSettings: {{audience: {audience:?}}}\n"
        );
        let mut loaded = sluice_config_agent::Loaded::default();
        sluice_config_agent::load_str("ep.yaml", &yaml, &mut loaded);
        let report = sluice_config_agent::validate_loaded(
            loaded,
            &sluice_config_agent::Options::default(),
            &sluice_config_agent::RealFiles,
        );
        report.snapshot.expect("valid")
    }

    #[test]
    fn managed_identity_audiences_follow_the_host() {
        assert_eq!(
            default_audience("myhub.servicebus.windows.net"),
            "https://myhub.servicebus.windows.net"
        );
        assert_eq!(
            default_scope("MyHub.ServiceBus.Windows.Net"),
            "https://MyHub.servicebus.windows.net/.default"
        );
        for host in [
            "ns.westeurope-1.ts.eventgrid.azure.net",
            "servicebus.windows.net",
            ".servicebus.windows.net",
            "a.b.servicebus.windows.net",
            "broker",
        ] {
            assert_eq!(
                default_audience(host),
                "https://eventgrid.azure.net",
                "{host}"
            );
        }
        assert_eq!(
            default_scope("broker"),
            "https://eventgrid.azure.net/.default"
        );
    }
}
