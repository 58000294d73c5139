//! What to run for a snapshot: one [`DataflowPlan`] per enabled dataflow, with its endpoints
//! resolved to hosts, files and MQTT session settings, and the cores it runs on. Built on the
//! control thread; the workers only read it.
//!
//! Dataflows this data plane cannot run yet (a Kafka or LocalStorage endpoint on either side)
//! come back as [`Skipped`] with the reason, so that the caller can log it.

use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use sluice_codec::{
    ByteStr, ProtocolVersion, QoS, RetainHandling, Subscription, SubscriptionOptions,
};
use sluice_config_agent::Snapshot;
use sluice_config_agent::model::DEFAULT_NAMESPACE;
use sluice_config_agent::model::{
    DataflowEndpoint, EndpointSpec, MqttAuthentication, MqttProtocol, MqttSettings, MqttVersion,
    OperationalMode,
};
use sluice_config_agent::validate::is_event_grid;

use crate::forward::{ForwardSettings, TopicTemplate};
use crate::session::SessionConfig;
use crate::state::Dirs;

/// Where the data plane finds what it needs besides the snapshot.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// Secret, ConfigMap and volume folders.
    pub dirs: Dirs,
    /// `--token-dir`: service account tokens, one file per audience.
    pub token_dir: Option<PathBuf>,
    /// `--imds-endpoint`: where managed identity tokens come from.
    pub imds_endpoint: Option<String>,
    /// Worker threads (cores).
    pub cores: usize,
    /// `--instance-id`, part of every client id.
    pub instance_id: Option<String>,
}

/// How to authenticate to a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
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
pub struct TlsPlan {
    /// CA certificates from the ConfigMap; `None`: the system trust store.
    pub ca_files: Option<Vec<PathBuf>>,
    /// Client certificate chain and key for mutual TLS.
    pub client_cert: Option<ClientCert>,
}

/// Files of an X.509 client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// `client_cert.pem`.
    pub cert: PathBuf,
    /// `client_key.pem`.
    pub key: PathBuf,
    /// `client_intermediate_certs.pem`, when the secret has it.
    pub intermediates: Option<PathBuf>,
}

/// An MQTT endpoint, resolved.
#[derive(Debug, Clone)]
pub struct MqttEndpointPlan {
    /// `namespace/name` of the `DataflowEndpoint`.
    pub name: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `None` when `tls.mode` is `Disabled`.
    pub tls: Option<TlsPlan>,
    /// MQTT over WebSocket.
    pub websocket: bool,
    /// Authentication.
    pub credentials: Credentials,
    /// The endpoint's settings as written.
    pub settings: MqttSettings,
    /// Whether the broker offers shared subscriptions (not Azure Event Grid).
    pub can_share: bool,
}

impl MqttEndpointPlan {
    /// MQTT version.
    pub fn protocol(&self) -> ProtocolVersion {
        match self.settings.mqtt_version {
            MqttVersion::V3 => ProtocolVersion::V311,
            MqttVersion::V5 => ProtocolVersion::V5,
        }
    }

    /// QoS of subscriptions and publications.
    pub fn qos(&self) -> QoS {
        if self.settings.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    /// `maxInflightMessages`, clamped to what MQTT can say.
    pub fn max_inflight(&self) -> NonZeroU16 {
        let n = self
            .settings
            .max_inflight_messages
            .clamp(1, u32::from(u16::MAX));
        NonZeroU16::new(u16::try_from(n).unwrap_or(u16::MAX)).unwrap_or(NonZeroU16::MIN)
    }

    /// The session configuration for one connection of this endpoint.
    pub fn session_config(&self, client_id: String) -> SessionConfig {
        let mut c = SessionConfig::new(self.protocol(), ByteStr::from(client_id));
        c.keep_alive_secs = u16::try_from(self.settings.keep_alive_seconds).unwrap_or(u16::MAX);
        c.clean_start = self.settings.clean_session;
        c.session_expiry_secs = self.settings.session_expiry_seconds;
        c.receive_maximum = self.max_inflight();
        c.max_in_flight = self.max_inflight();
        match &self.credentials {
            Credentials::UsernamePassword {
                username, password, ..
            } => {
                c.username = Some(username.clone());
                c.password = Some(password.clone());
            }
            Credentials::ServiceAccountToken { .. } => {
                c.authentication_method = Some(ByteStr::from_static(crate::auth::K8S_SAT));
            }
            Credentials::ManagedIdentity { .. } => {
                c.authentication_method = Some(ByteStr::from_static(crate::auth::OAUTH2_JWT));
            }
            Credentials::None => {}
        }
        c.connect_timeout = Duration::from_secs(10);
        c
    }
}

/// One dataflow, ready to run.
#[derive(Debug, Clone)]
pub struct DataflowPlan {
    /// `namespace/name`: the key in [`sluice_config_agent::control::Changes`].
    pub key: String,
    /// The dataflow's name (for client ids, the shared subscription group, CloudEvents).
    pub name: String,
    /// The snapshot's content hash of this dataflow.
    pub content_hash: String,
    /// Source broker.
    pub source: MqttEndpointPlan,
    /// Topic filters as written (`$share/` ones included).
    pub filters: Vec<String>,
    /// Destination broker.
    pub destination: MqttEndpointPlan,
    /// The destination topic as written.
    pub destination_topic: String,
    /// Cores that run it.
    pub cores: Vec<usize>,
    /// Whether each core subscribes with `$share/<group>/` (several connections share the load).
    pub shared: bool,
    /// The profile's log level.
    pub log_level: Option<String>,
    /// `--instance-id`: this data plane among several running the same dataflows.
    pub instance_id: Option<String>,
    /// Source filters of the configuration this one replaces (a changed dataflow): those no
    /// longer wanted are unsubscribed, as the broker kept them in the session.
    pub previous_filters: Vec<ByteStr>,
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
    pub fn share_group(&self) -> String {
        self.qualified_name()
            .chars()
            .map(|c| if matches!(c, '/' | '+' | '#') { '_' } else { c })
            .collect()
    }

    /// The subscriptions of the source session on one core. Retain As Published, so that
    /// `retain: Keep` sees the publisher's flag; retained messages only for a new subscription,
    /// so that re-subscribing after a restart does not deliver them again.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        let options = match self.source.protocol() {
            ProtocolVersion::V5 => SubscriptionOptions {
                retain_as_published: true,
                retain_handling: RetainHandling::SendAtSubscribeIfNew,
                ..SubscriptionOptions::qos(self.source.qos())
            },
            // 3.1.1 has QoS only; a live message arrives with RETAIN 0 there.
            ProtocolVersion::V311 => SubscriptionOptions::qos(self.source.qos()),
        };
        self.filters
            .iter()
            .map(|f| {
                let filter = if self.shared && !f.starts_with("$share/") {
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

    /// Client id of the source (`side` = "src") or destination ("dst") connection on `core`:
    /// `<clientIdPrefix>-[<namespace>.]<dataflow>[-<instance>]-<side>-<core>`, stable across
    /// restarts so that the broker keeps the session; the namespace appears outside the default
    /// namespace, the instance with `--instance-id` (several data planes running one dataflow).
    pub fn client_id(&self, endpoint: &MqttEndpointPlan, side: &str, core: usize) -> String {
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

    /// The forwarding rules.
    ///
    /// # Errors
    /// When the destination topic is not a valid template (validation should have refused it).
    pub fn forward_settings(&self) -> Result<ForwardSettings, String> {
        Ok(ForwardSettings {
            dataflow: self.name.clone(),
            topic: TopicTemplate::parse(&self.destination_topic).map_err(|e| e.to_string())?,
            qos: self.destination.qos(),
            retain: self.destination.settings.retain,
            cloud_events: self.destination.settings.cloud_event_attributes,
            destination_version: self.destination.protocol(),
        })
    }
}

/// A dataflow of the snapshot that is not run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `namespace/name`.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// Plans for every dataflow of `snapshot`: those to run, and those skipped.
pub fn plan(snapshot: &Snapshot, env: &Environment) -> (Vec<DataflowPlan>, Vec<Skipped>) {
    let mut plans = Vec::new();
    let mut skipped = Vec::new();
    for d in &snapshot.dataflows {
        let df = &d.dataflow;
        let key = format!("{}/{}", df.metadata.namespace, df.metadata.name);
        match plan_one(snapshot, d, env) {
            Ok(Some(p)) => plans.push(p),
            Ok(None) => skipped.push(Skipped {
                key,
                reason: "mode: Disabled".into(),
            }),
            Err(reason) => skipped.push(Skipped { key, reason }),
        }
    }
    (plans, skipped)
}

fn plan_one(
    snapshot: &Snapshot,
    d: &sluice_config_agent::SnapshotDataflow,
    env: &Environment,
) -> Result<Option<DataflowPlan>, String> {
    let df = &d.dataflow;
    if df.spec.mode == OperationalMode::Disabled {
        return Ok(None);
    }
    let ns = &df.metadata.namespace;
    let source = df.spec.source().ok_or("no Source operation")?;
    let destination = df.spec.destination().ok_or("no Destination operation")?;
    let src_ep = snapshot
        .endpoint(ns, &source.endpoint_ref)
        .ok_or_else(|| format!("source endpoint {} not found", source.endpoint_ref))?;
    let dst_ep = snapshot
        .endpoint(ns, &destination.endpoint_ref)
        .ok_or_else(|| {
            format!(
                "destination endpoint {} not found",
                destination.endpoint_ref
            )
        })?;
    let source_plan = mqtt_endpoint(snapshot, src_ep, env)?;
    let destination_plan = mqtt_endpoint(snapshot, dst_ep, env)?;
    let profile = snapshot.profile(ns, &df.spec.profile_ref);
    let instances = profile.map_or(1, |p| p.spec.instance_count.max(1));
    // Every core subscribes with the same shared group, so the broker spreads the messages;
    // without shared subscriptions, one core holds the dataflow. (Filters written as
    // `$share/<group>/...` are kept as they are.)
    // With `--instance-id`, other data planes run the same dataflow: share with them too.
    let shared =
        source_plan.can_share && (env.cores > 1 || instances > 1 || env.instance_id.is_some());
    let cores = if shared {
        (0..env.cores.max(1)).collect()
    } else {
        vec![0]
    };
    Ok(Some(DataflowPlan {
        key: format!("{ns}/{}", df.metadata.name),
        name: df.metadata.name.clone(),
        content_hash: d.content_hash.clone(),
        source: source_plan,
        filters: source.data_sources.clone(),
        destination: destination_plan,
        destination_topic: destination.data_destination.clone(),
        cores,
        shared,
        log_level: profile.map(|p| p.spec.diagnostics.logs.level.clone()),
        previous_filters: Vec::new(),
        instance_id: env.instance_id.clone(),
    }))
}

fn mqtt_endpoint(
    snapshot: &Snapshot,
    endpoint: &DataflowEndpoint,
    env: &Environment,
) -> Result<MqttEndpointPlan, String> {
    let name = format!("{}/{}", endpoint.metadata.namespace, endpoint.metadata.name);
    let settings = match &endpoint.spec {
        EndpointSpec::Mqtt { mqtt_settings } => mqtt_settings.clone(),
        EndpointSpec::Kafka { .. } => {
            return Err(format!(
                "endpoint {name}: Kafka endpoints are not supported by this data plane yet"
            ));
        }
        EndpointSpec::LocalStorage { .. } => {
            return Err(format!(
                "endpoint {name}: LocalStorage endpoints are not supported by this data plane yet"
            ));
        }
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
    let (host, port, _) = crate::transport::parse_host_port(&host_port, default_port)
        .map_err(|e| format!("endpoint {name}: {e}"))?;
    let secret = |secret: &str, key: &str| -> Result<PathBuf, String> {
        let dir = env
            .dirs
            .secrets
            .as_deref()
            .ok_or_else(|| format!("endpoint {name}: secret {secret} needs --secrets-dir"))?;
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
                .map_err(|e| format!("endpoint {name}: secret {s}: {e}"))?;
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
                .ok_or_else(|| format!("endpoint {name}: ServiceAccountToken needs --token-dir"))?;
            Credentials::ServiceAccountToken {
                path: dir.join(&service_account_token_settings.audience),
            }
        }
        MqttAuthentication::SystemAssignedManagedIdentity {
            system_assigned_managed_identity_settings,
        } => Credentials::ManagedIdentity {
            endpoint: imds(env, &name)?,
            resource: system_assigned_managed_identity_settings
                .audience
                .clone()
                .unwrap_or_else(|| "https://eventgrid.azure.net".into()),
            client_id: None,
        },
        MqttAuthentication::UserAssignedManagedIdentity {
            user_assigned_managed_identity_settings: u,
        } => Credentials::ManagedIdentity {
            endpoint: imds(env, &name)?,
            resource: u
                .scope
                .clone()
                .unwrap_or_else(|| "https://eventgrid.azure.net/.default".into()),
            client_id: Some(u.client_id.clone()),
        },
    };
    let tls = if tls_on {
        let ca_files = match &settings.tls.trusted_ca_certificate_config_map_ref {
            None => None,
            Some(cm) => {
                let dir = env.dirs.configmaps.as_deref().ok_or_else(|| {
                    format!("endpoint {name}: ConfigMap {cm} needs --configmaps-dir")
                })?;
                Some(
                    crate::transport::ca_files_in(&dir.join(cm))
                        .map_err(|e| format!("endpoint {name}: {e}"))?,
                )
            }
        };
        Some(TlsPlan {
            ca_files,
            client_cert,
        })
    } else {
        if client_cert.is_some() {
            return Err(format!(
                "endpoint {name}: X509Certificate authentication needs tls.mode Enabled"
            ));
        }
        None
    };
    Ok(MqttEndpointPlan {
        name,
        host,
        port,
        tls,
        websocket: settings.protocol == MqttProtocol::WebSockets,
        credentials,
        can_share: !is_event_grid(endpoint),
        settings,
    })
}

fn imds(env: &Environment, name: &str) -> Result<String, String> {
    env.imds_endpoint
        .clone()
        .ok_or_else(|| format!("endpoint {name}: managed identity needs --imds-endpoint"))
}

/// Reads a user name and password secret (trailing line ends trimmed).
///
/// # Errors
/// A file that cannot be read, or a user name that is not UTF-8.
pub fn read_login(username_file: &Path, password_file: &Path) -> Result<(ByteStr, Bytes), String> {
    let username = read_trimmed(username_file)?;
    let password = read_trimmed(password_file)?;
    let username = String::from_utf8(username).map_err(|_| "username is not UTF-8".to_string())?;
    Ok((ByteStr::from(username), Bytes::from(password)))
}

fn read_trimmed(path: &Path) -> Result<Vec<u8>, String> {
    let mut v = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        v.pop();
    }
    Ok(v)
}
