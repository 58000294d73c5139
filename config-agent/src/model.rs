//! The resource model: `DataflowEndpoint`, `Dataflow` and `DataflowProfile` as Azure IoT
//! Operations writes them (apiVersion `connectivity.iotoperations.azure.com/v1` or `v1beta1`).
//!
//! Field names and values are exactly AIO's (camelCase fields, PascalCase values), both in YAML
//! and in the JSON of a snapshot. Defaults are applied here, in the typed model: a field AIO
//! gives a default to is a plain value (not an `Option`) filled by the decoder
//! ([`crate::decode`]) when the manifest omits it, and by serde (`#[serde(default)]`) when a JSON
//! snapshot omits it. Each field's doc says its unit, its default and gives an example; the
//! same table is in docs/configuration.md.
//!
//! References to Kubernetes objects stay names (`secretRef: my-secret`); they resolve to files
//! only when used ([`crate::Options`]). No secret value is ever part of the model.
//!
//! This module holds types only; decoding from YAML is [`crate::decode`], checks are
//! [`crate::validate`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// An enumeration whose values are written as AIO spells them.
pub trait AioEnum: Sized + Copy + 'static {
    /// The type's name in messages, e.g. `endpointType`.
    const WHAT: &'static str;
    /// Every value with its spelling.
    const VALUES: &'static [(&'static str, Self)];

    /// The spelling of this value.
    fn as_str(self) -> &'static str;

    /// The value spelt exactly `s`.
    fn parse(s: &str) -> Option<Self> {
        Self::VALUES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, v)| *v)
    }

    /// The value spelt `s` with its first letter in lower case (`enabled`, `localStorage`,
    /// `builtInTransformation`): the spelling of AIO's 2024 preview manifests.
    fn parse_legacy(s: &str) -> Option<Self> {
        Self::VALUES
            .iter()
            .find(|(name, _)| lower_first(name) == s)
            .map(|(_, v)| *v)
    }

    /// The value spelt `s` in any case (`PLAIN`, `LZ4`, `enabled`): spellings AIO's and Azure
    /// Stream Analytics' documentation use. No two values of an enumeration differ only in case.
    fn parse_any_case(s: &str) -> Option<Self> {
        Self::VALUES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, v)| *v)
    }
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

macro_rules! aio_enum {
    (
        $(#[$meta:meta])*
        $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $spelling:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $spelling)] $variant, )+
        }

        impl AioEnum for $name {
            const WHAT: &'static str = $what;
            const VALUES: &'static [(&'static str, Self)] = &[$( ($spelling, Self::$variant), )+];

            fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $spelling, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

aio_enum! {
    /// `apiVersion` of a resource.
    ApiVersion ("apiVersion") {
        /// `connectivity.iotoperations.azure.com/v1`: AIO's generally available version.
        V1 = "connectivity.iotoperations.azure.com/v1",
        /// `connectivity.iotoperations.azure.com/v1beta1`: the preview version of older manifests.
        V1Beta1 = "connectivity.iotoperations.azure.com/v1beta1",
    }
}

aio_enum! {
    /// The `kind` of a resource.
    Kind ("kind") {
        /// A connection to a broker, a Kafka cluster or local storage.
        DataflowEndpoint = "DataflowEndpoint",
        /// A source, an optional transformation and a destination.
        Dataflow = "Dataflow",
        /// Scaling and diagnostics shared by dataflows.
        DataflowProfile = "DataflowProfile",
    }
}

aio_enum! {
    /// `Enabled` or `Disabled` (AIO's `OperationalMode`).
    OperationalMode ("mode") {
        /// On.
        Enabled = "Enabled",
        /// Off.
        Disabled = "Disabled",
    }
}

aio_enum! {
    /// `spec.endpointType` of a `DataflowEndpoint`.
    EndpointType ("endpointType") {
        /// An MQTT broker (`mqttSettings`).
        Mqtt = "Mqtt",
        /// A Kafka cluster or Azure Event Hubs (`kafkaSettings`).
        Kafka = "Kafka",
        /// Files on a local volume (`localStorageSettings`); destinations only.
        LocalStorage = "LocalStorage",
    }
}

aio_enum! {
    /// `mqttSettings.authentication.method`.
    MqttAuthMethod ("authentication method") {
        /// No credentials.
        Anonymous = "Anonymous",
        /// A client certificate and key (`x509CertificateSettings.secretRef`).
        X509Certificate = "X509Certificate",
        /// A Kubernetes service account token (`serviceAccountTokenSettings.audience`).
        ServiceAccountToken = "ServiceAccountToken",
        /// The Azure Arc extension's managed identity.
        SystemAssignedManagedIdentity = "SystemAssignedManagedIdentity",
        /// A user-assigned managed identity.
        UserAssignedManagedIdentity = "UserAssignedManagedIdentity",
        /// MQTT CONNECT user name and password from a secret (Sluice's addition).
        UsernamePassword = "UsernamePassword",
    }
}

aio_enum! {
    /// `kafkaSettings.authentication.method`.
    KafkaAuthMethod ("authentication method") {
        /// SASL (`saslSettings`).
        Sasl = "Sasl",
        /// A client certificate and key (`x509CertificateSettings.secretRef`).
        X509Certificate = "X509Certificate",
        /// The Azure Arc extension's managed identity.
        SystemAssignedManagedIdentity = "SystemAssignedManagedIdentity",
        /// A user-assigned managed identity.
        UserAssignedManagedIdentity = "UserAssignedManagedIdentity",
        /// No credentials.
        Anonymous = "Anonymous",
    }
}

aio_enum! {
    /// `saslSettings.saslType`.
    SaslType ("saslType") {
        /// SASL/PLAIN (Azure Event Hubs: user name `$ConnectionString`).
        Plain = "Plain",
        /// SASL/SCRAM-SHA-256.
        ScramSha256 = "ScramSha256",
        /// SASL/SCRAM-SHA-512.
        ScramSha512 = "ScramSha512",
    }
}

aio_enum! {
    /// `mqttSettings.mqttVersion`.
    MqttVersion ("mqttVersion") {
        /// MQTT 3.1.1.
        V3 = "v3",
        /// MQTT 5.0.
        V5 = "v5",
    }
}

aio_enum! {
    /// `mqttSettings.retain`.
    Retain ("retain") {
        /// Forward the RETAIN flag as received.
        Keep = "Keep",
        /// Clear the RETAIN flag.
        Never = "Never",
    }
}

aio_enum! {
    /// `mqttSettings.protocol`.
    MqttProtocol ("protocol") {
        /// MQTT over TCP (or TLS).
        Mqtt = "Mqtt",
        /// MQTT over WebSockets.
        WebSockets = "WebSockets",
    }
}

aio_enum! {
    /// `cloudEventAttributes` of an MQTT or Kafka endpoint.
    CloudEventAttributes ("cloudEventAttributes") {
        /// Pass CloudEvents attributes through when the message has the required ones.
        Propagate = "Propagate",
        /// Pass them through, or create the missing required ones.
        CreateOrRemap = "CreateOrRemap",
    }
}

aio_enum! {
    /// `kafkaSettings.compression`.
    Compression ("compression") {
        /// No compression.
        None = "None",
        /// gzip (the only one Azure Event Hubs accepts, on premium and dedicated tiers).
        Gzip = "Gzip",
        /// Snappy.
        Snappy = "Snappy",
        /// LZ4.
        Lz4 = "Lz4",
        /// Zstandard (Sluice's addition; not in AIO's API).
        Zstd = "Zstd",
    }
}

aio_enum! {
    /// `kafkaSettings.partitionStrategy`.
    PartitionStrategy ("partitionStrategy") {
        /// Round robin over partitions.
        Default = "Default",
        /// A fixed partition per dataflow instance.
        Static = "Static",
        /// The source MQTT topic is the partition key.
        Topic = "Topic",
        /// The MQTT user property named by `partitionKeyProperty` is the partition key.
        Property = "Property",
    }
}

aio_enum! {
    /// `kafkaSettings.kafkaAcks`.
    KafkaAcks ("kafkaAcks") {
        /// acks=0: do not wait for the broker.
        Zero = "Zero",
        /// acks=1: the leader has it.
        One = "One",
        /// acks=all: every in-sync replica has it.
        All = "All",
    }
}

aio_enum! {
    /// `operations[].operationType` of a `Dataflow`.
    OperationType ("operationType") {
        /// Where messages come from (`sourceSettings`).
        Source = "Source",
        /// Datasets, filter and map stages (`builtInTransformationSettings`).
        BuiltInTransformation = "BuiltInTransformation",
        /// Where messages go (`destinationSettings`).
        Destination = "Destination",
    }
}

aio_enum! {
    /// `sourceSettings.serializationFormat`.
    SourceSerializationFormat ("serializationFormat") {
        /// JSON.
        Json = "Json",
    }
}

aio_enum! {
    /// `builtInTransformationSettings.serializationFormat`.
    TransformationSerializationFormat ("serializationFormat") {
        /// JSON.
        Json = "Json",
        /// Parquet.
        Parquet = "Parquet",
        /// Delta.
        Delta = "Delta",
    }
}

aio_enum! {
    /// `filter[].type`.
    FilterType ("type") {
        /// A filter.
        Filter = "Filter",
    }
}

aio_enum! {
    /// `map[].type`.
    MappingType ("type") {
        /// Adds new properties.
        NewProperties = "NewProperties",
        /// Renames a field.
        Rename = "Rename",
        /// Computes a field from an expression.
        Compute = "Compute",
        /// Copies fields unchanged.
        PassThrough = "PassThrough",
        /// Applies a built-in function.
        BuiltInFunction = "BuiltInFunction",
    }
}

aio_enum! {
    /// `destinationSettings.headers[].actionType`.
    HeaderActionType ("actionType") {
        /// Adds the header when the message does not have it.
        AddIfNotPresent = "AddIfNotPresent",
        /// Adds the header or replaces its value.
        AddOrReplace = "AddOrReplace",
        /// Removes the header.
        Remove = "Remove",
    }
}

/// The namespace of a resource that does not name one.
pub const DEFAULT_NAMESPACE: &str = "azure-iot-operations";

/// The name of the MQTT endpoint that AIO creates for its local broker; an MQTT endpoint of this
/// name is the local broker whatever its host (AIO's rule that a dataflow has the local broker
/// on one side).
pub const DEFAULT_ENDPOINT: &str = "default";

/// The profile a dataflow uses when it names `default` and no `DataflowProfile` of that name is
/// loaded: AIO creates one at deployment, so Sluice supplies it.
pub const DEFAULT_PROFILE: &str = "default";

/// `metadata` of a resource. Other Kubernetes metadata (`uid`, `resourceVersion`, ...) is
/// accepted in YAML and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The resource's name, unique per kind and namespace; a DNS label (lower-case letters,
    /// digits and `-`, at most 63). Required. Example: `to-kafka`.
    pub name: String,
    /// The namespace; references resolve within it. Default: `azure-iot-operations`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

/// A `DataflowEndpoint`: how to reach a broker, a Kafka cluster or a local volume.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataflowEndpoint {
    /// The `apiVersion` it was written with.
    pub api_version: ApiVersion,
    /// Name and namespace.
    pub metadata: Metadata,
    /// The endpoint's type and settings.
    pub spec: EndpointSpec,
}

/// `spec` of a `DataflowEndpoint`: `endpointType` and the settings of that type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    tag = "endpointType",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum EndpointSpec {
    /// `endpointType: Mqtt`.
    Mqtt {
        /// `mqttSettings`.
        mqtt_settings: MqttSettings,
    },
    /// `endpointType: Kafka`.
    Kafka {
        /// `kafkaSettings`.
        kafka_settings: KafkaSettings,
    },
    /// `endpointType: LocalStorage` (older manifests: `localStorage`).
    LocalStorage {
        /// `localStorageSettings`.
        local_storage_settings: LocalStorageSettings,
    },
}

impl EndpointSpec {
    /// The endpoint type.
    pub fn endpoint_type(&self) -> EndpointType {
        match self {
            Self::Mqtt { .. } => EndpointType::Mqtt,
            Self::Kafka { .. } => EndpointType::Kafka,
            Self::LocalStorage { .. } => EndpointType::LocalStorage,
        }
    }
}

/// `tls` of an MQTT or Kafka endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tls {
    /// Whether to connect with TLS. Default: `Enabled`. Example: `Disabled` for a plain
    /// `localhost:1883` broker.
    #[serde(default = "enabled")]
    pub mode: OperationalMode,
    /// ConfigMap holding the CA certificates (PEM) that the server's certificate must chain to;
    /// resolves to `<configmaps-dir>/NAME/`. Default: none (the system's trust store). Example:
    /// `broker-ca`. (`v1beta1` manifests write `trustedCaCertificateConfigMap`; the decoder
    /// takes either and the snapshot has this name.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_ca_certificate_config_map_ref: Option<String>,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            mode: OperationalMode::Enabled,
            trusted_ca_certificate_config_map_ref: None,
        }
    }
}

fn enabled() -> OperationalMode {
    OperationalMode::Enabled
}

/// A reference to a secret: the folder `<secrets-dir>/NAME/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// The secret's name. Required. Example: `mqtt-client-cert`.
    pub secret_ref: String,
}

/// `serviceAccountTokenSettings`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountTokenSettings {
    /// The token's audience. Required. Example: `aio-internal`.
    pub audience: String,
}

/// `systemAssignedManagedIdentitySettings`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SystemAssignedManagedIdentitySettings {
    /// The audience to request a token for. Default: the service's own (derived from the host).
    /// Example: `https://eventgrid.azure.net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// `userAssignedManagedIdentitySettings`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserAssignedManagedIdentitySettings {
    /// The identity's client ID. Required. Example: `00000000-0000-0000-0000-000000000000`.
    pub client_id: String,
    /// The Microsoft Entra tenant ID. Required.
    pub tenant_id: String,
    /// The scope to request. Default: the service's (`https://eventgrid.azure.net/.default` for
    /// Event Grid). Example: `https://contoso.servicebus.windows.net/.default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// `saslSettings` of a Kafka endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaslSettings {
    /// The SASL mechanism. Required. Example: `ScramSha512`.
    pub sasl_type: SaslType,
    /// The secret with the keys `username` and `password`. Required. Example: `kafka-sasl`.
    pub secret_ref: String,
}

/// `mqttSettings.authentication`: `method` and the settings of that method.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "method", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum MqttAuthentication {
    /// `method: Anonymous` (`anonymousSettings: {}` is accepted and dropped).
    Anonymous,
    /// `method: X509Certificate`; the secret has `client_cert.pem`, `client_key.pem` and
    /// optionally `client_intermediate_certs.pem`.
    X509Certificate {
        /// `x509CertificateSettings`.
        x509_certificate_settings: SecretRef,
    },
    /// `method: ServiceAccountToken`.
    ServiceAccountToken {
        /// `serviceAccountTokenSettings`.
        service_account_token_settings: ServiceAccountTokenSettings,
    },
    /// `method: SystemAssignedManagedIdentity`.
    SystemAssignedManagedIdentity {
        /// `systemAssignedManagedIdentitySettings`.
        #[serde(default)]
        system_assigned_managed_identity_settings: SystemAssignedManagedIdentitySettings,
    },
    /// `method: UserAssignedManagedIdentity`.
    UserAssignedManagedIdentity {
        /// `userAssignedManagedIdentitySettings`.
        user_assigned_managed_identity_settings: UserAssignedManagedIdentitySettings,
    },
    /// `method: UsernamePassword` (Sluice's addition); the secret has `username` and `password`.
    UsernamePassword {
        /// `usernamePasswordSettings`.
        username_password_settings: SecretRef,
    },
}

/// The audience of AIO's default authentication: its local broker's service account tokens.
pub const DEFAULT_SAT_AUDIENCE: &str = "aio-internal";

impl MqttAuthentication {
    /// What an MQTT endpoint without `authentication` uses: AIO's default, a service account
    /// token for the audience `aio-internal`.
    pub fn aio_default() -> Self {
        Self::ServiceAccountToken {
            service_account_token_settings: ServiceAccountTokenSettings {
                audience: DEFAULT_SAT_AUDIENCE.to_owned(),
            },
        }
    }

    /// The method.
    pub fn method(&self) -> MqttAuthMethod {
        match self {
            Self::Anonymous => MqttAuthMethod::Anonymous,
            Self::X509Certificate { .. } => MqttAuthMethod::X509Certificate,
            Self::ServiceAccountToken { .. } => MqttAuthMethod::ServiceAccountToken,
            Self::SystemAssignedManagedIdentity { .. } => {
                MqttAuthMethod::SystemAssignedManagedIdentity
            }
            Self::UserAssignedManagedIdentity { .. } => MqttAuthMethod::UserAssignedManagedIdentity,
            Self::UsernamePassword { .. } => MqttAuthMethod::UsernamePassword,
        }
    }
}

/// `kafkaSettings.authentication`: `method` and the settings of that method.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "method", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum KafkaAuthentication {
    /// `method: Sasl`.
    Sasl {
        /// `saslSettings`.
        sasl_settings: SaslSettings,
    },
    /// `method: X509Certificate`.
    X509Certificate {
        /// `x509CertificateSettings`.
        x509_certificate_settings: SecretRef,
    },
    /// `method: SystemAssignedManagedIdentity`.
    SystemAssignedManagedIdentity {
        /// `systemAssignedManagedIdentitySettings`.
        #[serde(default)]
        system_assigned_managed_identity_settings: SystemAssignedManagedIdentitySettings,
    },
    /// `method: UserAssignedManagedIdentity`.
    UserAssignedManagedIdentity {
        /// `userAssignedManagedIdentitySettings`.
        user_assigned_managed_identity_settings: UserAssignedManagedIdentitySettings,
    },
    /// `method: Anonymous`.
    Anonymous,
}

impl KafkaAuthentication {
    /// The method.
    pub fn method(&self) -> KafkaAuthMethod {
        match self {
            Self::Sasl { .. } => KafkaAuthMethod::Sasl,
            Self::X509Certificate { .. } => KafkaAuthMethod::X509Certificate,
            Self::SystemAssignedManagedIdentity { .. } => {
                KafkaAuthMethod::SystemAssignedManagedIdentity
            }
            Self::UserAssignedManagedIdentity { .. } => {
                KafkaAuthMethod::UserAssignedManagedIdentity
            }
            Self::Anonymous => KafkaAuthMethod::Anonymous,
        }
    }
}

/// `mqttSettings` of an MQTT endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MqttSettings {
    /// The broker as `host:port`. Omitted: the local broker, [`crate::Options::local_broker_host`]
    /// (AIO's `aio-broker:18883` by default; `aio-mq-dmqtt-frontend:8883` for a `v1beta1`
    /// endpoint while that default is in force). In a snapshot the host is always filled in.
    /// Example: `mosquitto.local:8883`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// How to authenticate. Default (AIO's, for its local broker): `{method: ServiceAccountToken,
    /// serviceAccountTokenSettings: {audience: aio-internal}}`. Example: `{method: Anonymous}`.
    #[serde(default = "MqttAuthentication::aio_default")]
    pub authentication: MqttAuthentication,
    /// TLS. Default: `{mode: Enabled}`.
    #[serde(default)]
    pub tls: Tls,
    /// QoS of subscriptions and publications: 0 or 1. Default: 1.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// MQTT protocol version. Default: `v5`. Example: `v3` for a 3.1.1-only broker.
    #[serde(default = "default_mqtt_version")]
    pub mqtt_version: MqttVersion,
    /// Prefix of the client identifiers the dataflow uses. Default: none. Example: `sluice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_prefix: Option<String>,
    /// MQTT keep alive, in seconds (0 to 65535; 0 turns it off). Default: 60.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_seconds: u32,
    /// MQTT 5.0 Session Expiry Interval, in seconds. Default: 600. Example: 3600.
    #[serde(default = "default_session_expiry")]
    pub session_expiry_seconds: u32,
    /// Clean start / clean session on CONNECT. Default: `false` (persistent sessions: what a
    /// broker holds for the dataflow survives a restart).
    #[serde(default)]
    pub clean_session: bool,
    /// What to do with the RETAIN flag of forwarded messages. Default: `Keep`.
    #[serde(default = "default_retain")]
    pub retain: Retain,
    /// Messages in flight per connection (MQTT Receive Maximum for subscriptions, unacknowledged
    /// publications for a destination): 1 to 65535. Default: 100.
    #[serde(default = "default_max_inflight")]
    pub max_inflight_messages: u32,
    /// Transport. Default: `Mqtt`. Example: `WebSockets`.
    #[serde(default = "default_protocol")]
    pub protocol: MqttProtocol,
    /// CloudEvents handling. Default: none (messages pass as they are). Example: `Propagate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_event_attributes: Option<CloudEventAttributes>,
}

/// Default of `mqttSettings.qos`.
pub const DEFAULT_QOS: u8 = 1;
/// Default of `mqttSettings.keepAliveSeconds`, in seconds.
pub const DEFAULT_KEEP_ALIVE_SECONDS: u32 = 60;
/// Default of `mqttSettings.sessionExpirySeconds`, in seconds.
pub const DEFAULT_SESSION_EXPIRY_SECONDS: u32 = 600;
/// Default of `mqttSettings.maxInflightMessages`.
pub const DEFAULT_MAX_INFLIGHT_MESSAGES: u32 = 100;

fn default_qos() -> u8 {
    DEFAULT_QOS
}
fn default_mqtt_version() -> MqttVersion {
    MqttVersion::V5
}
fn default_keep_alive() -> u32 {
    DEFAULT_KEEP_ALIVE_SECONDS
}
fn default_session_expiry() -> u32 {
    DEFAULT_SESSION_EXPIRY_SECONDS
}
fn default_retain() -> Retain {
    Retain::Keep
}
fn default_max_inflight() -> u32 {
    DEFAULT_MAX_INFLIGHT_MESSAGES
}
fn default_protocol() -> MqttProtocol {
    MqttProtocol::Mqtt
}

impl MqttSettings {
    /// Settings with every default applied and the given authentication.
    pub fn with_authentication(authentication: MqttAuthentication) -> Self {
        Self {
            host: None,
            authentication,
            tls: Tls::default(),
            qos: DEFAULT_QOS,
            mqtt_version: MqttVersion::V5,
            client_id_prefix: None,
            keep_alive_seconds: DEFAULT_KEEP_ALIVE_SECONDS,
            session_expiry_seconds: DEFAULT_SESSION_EXPIRY_SECONDS,
            clean_session: false,
            retain: Retain::Keep,
            max_inflight_messages: DEFAULT_MAX_INFLIGHT_MESSAGES,
            protocol: MqttProtocol::Mqtt,
            cloud_event_attributes: None,
        }
    }
}

/// `kafkaSettings.batching`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Batching {
    /// Whether to batch. Default: `Enabled`; `Disabled` sends one message per batch.
    #[serde(default = "enabled")]
    pub mode: OperationalMode,
    /// How long a batch may wait for more messages, in milliseconds (0 to 65535). Default: 5.
    #[serde(default = "default_latency_ms")]
    pub latency_ms: u32,
    /// Largest batch, in bytes (at least 1). Default: 1000000.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u32,
    /// Most messages in a batch (at least 1). Default: 100000.
    #[serde(default = "default_max_messages")]
    pub max_messages: u32,
}

/// Default of `batching.latencyMs`, in milliseconds.
pub const DEFAULT_LATENCY_MS: u32 = 5;
/// Default of `batching.maxBytes`, in bytes.
pub const DEFAULT_MAX_BYTES: u32 = 1_000_000;
/// Default of `batching.maxMessages`.
pub const DEFAULT_MAX_MESSAGES: u32 = 100_000;

fn default_latency_ms() -> u32 {
    DEFAULT_LATENCY_MS
}
fn default_max_bytes() -> u32 {
    DEFAULT_MAX_BYTES
}
fn default_max_messages() -> u32 {
    DEFAULT_MAX_MESSAGES
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            mode: OperationalMode::Enabled,
            latency_ms: DEFAULT_LATENCY_MS,
            max_bytes: DEFAULT_MAX_BYTES,
            max_messages: DEFAULT_MAX_MESSAGES,
        }
    }
}

/// `kafkaSettings` of a Kafka endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port`, several separated by commas. Required. Example:
    /// `contoso.servicebus.windows.net:9093` or `k1:9092,k2:9092`.
    pub host: String,
    /// How to authenticate. Required. Example: `{method: Sasl, saslSettings: {...}}`.
    pub authentication: KafkaAuthentication,
    /// TLS. Default: `{mode: Enabled}`.
    #[serde(default)]
    pub tls: Tls,
    /// Consumer group of a Kafka source; required when the endpoint is a source. Default: none.
    /// Example: `sluice-from-kafka`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group_id: Option<String>,
    /// Compression of produced batches. Default: `None`. Example: `Gzip`.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// Producer batching. Default: `{mode: Enabled, latencyMs: 5, maxBytes: 1000000,
    /// maxMessages: 100000}`.
    #[serde(default)]
    pub batching: Batching,
    /// How produced messages are spread over partitions. Default: `Default`.
    #[serde(default = "default_partition_strategy")]
    pub partition_strategy: PartitionStrategy,
    /// The MQTT user property used as the key with `partitionStrategy: Property`. Default: none.
    /// Example: `device-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_key_property: Option<String>,
    /// Acknowledgements a produced message waits for. Default: `All`.
    #[serde(default = "default_acks")]
    pub kafka_acks: KafkaAcks,
    /// Whether MQTT properties become Kafka headers (and back). Default: `Enabled`.
    #[serde(default = "enabled")]
    pub copy_mqtt_properties: OperationalMode,
    /// CloudEvents handling. Default: none. Example: `CreateOrRemap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_event_attributes: Option<CloudEventAttributes>,
}

fn default_compression() -> Compression {
    Compression::None
}
fn default_partition_strategy() -> PartitionStrategy {
    PartitionStrategy::Default
}
fn default_acks() -> KafkaAcks {
    KafkaAcks::All
}

impl KafkaSettings {
    /// Settings with every default applied and the given host and authentication.
    pub fn new(host: String, authentication: KafkaAuthentication) -> Self {
        Self {
            host,
            authentication,
            tls: Tls::default(),
            consumer_group_id: None,
            compression: Compression::None,
            batching: Batching::default(),
            partition_strategy: PartitionStrategy::Default,
            partition_key_property: None,
            kafka_acks: KafkaAcks::All,
            copy_mqtt_properties: OperationalMode::Enabled,
            cloud_event_attributes: None,
        }
    }

    /// The bootstrap servers, trimmed, in order.
    pub fn bootstrap_servers(&self) -> impl Iterator<Item = &str> {
        self.host.split(',').map(str::trim)
    }
}

/// `localStorageSettings`. Azure IoT Operations has `persistentVolumeClaimRef` only; the
/// other fields are Sluice's (docs/configuration.md), with defaults that need none of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalStorageSettings {
    /// The volume: the folder `<volumes-dir>/NAME/`. Required (older manifests:
    /// `persistentVolumeClaimName`). Example: `parquet-out`.
    pub persistent_volume_claim_ref: String,
    /// When a file is cut (Sluice; the names of AIO's storage endpoints' `batching`, plus
    /// `maxBytes`). Default: 60 s, 100,000 rows, 64 MiB.
    #[serde(default)]
    pub batching: FileBatching,
    /// Columns added to every row beside the payload's fields (Sluice). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata_columns: Vec<MetadataColumn>,
    /// `Enabled`: a message that does not fit the schema is written to a dead-letter file
    /// beside the Parquet file (Sluice). Default: `Disabled` (dropped and counted).
    #[serde(default = "disabled")]
    pub dead_letter: OperationalMode,
    /// How the files' pages are compressed (Sluice). Default: `Zstd`.
    #[serde(default = "default_file_compression")]
    pub compression: FileCompression,
}

fn default_file_compression() -> FileCompression {
    FileCompression::Zstd
}

aio_enum! {
    /// `localStorageSettings.compression`: the Parquet pages' codec.
    FileCompression ("compression") {
        /// Zstandard, level 1 (the default: small files, fast).
        Zstd = "Zstd",
        /// Snappy (what AIO's own storage files use).
        Snappy = "Snappy",
        /// Uncompressed.
        None = "None",
    }
}

fn disabled() -> OperationalMode {
    OperationalMode::Disabled
}

impl LocalStorageSettings {
    /// The volume `claim`, with the defaults for everything else.
    pub fn new(claim: String) -> Self {
        Self {
            persistent_volume_claim_ref: claim,
            batching: FileBatching::default(),
            metadata_columns: Vec::new(),
            dead_letter: OperationalMode::Disabled,
            compression: FileCompression::Zstd,
        }
    }
}

/// `localStorageSettings.batching`: a file is cut at whichever bound comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileBatching {
    /// Longest time from a file's first row to its cut, in seconds (1 to 65535). Default: 60.
    #[serde(default = "default_file_latency")]
    pub latency_seconds: u32,
    /// Most rows in a file (at least 1). Default: 100000.
    #[serde(default = "default_file_messages")]
    pub max_messages: u32,
    /// Most bytes of decoded rows held for a file (at least 1 MiB... 1 GiB). Default: 67108864.
    #[serde(default = "default_file_bytes")]
    pub max_bytes: u64,
}

/// Default of `localStorageSettings.batching.latencySeconds` (AIO's storage endpoints' 60 s).
pub const DEFAULT_FILE_LATENCY_SECONDS: u32 = 60;
/// Default of `localStorageSettings.batching.maxMessages` (AIO's storage endpoints' 100,000).
pub const DEFAULT_FILE_MAX_MESSAGES: u32 = 100_000;
/// Default of `localStorageSettings.batching.maxBytes`: 64 MiB.
pub const DEFAULT_FILE_MAX_BYTES: u64 = 64 << 20;
/// Smallest `maxBytes`.
pub const MIN_FILE_MAX_BYTES: u64 = 1 << 20;
/// Largest `maxBytes`.
pub const MAX_FILE_MAX_BYTES: u64 = 1 << 30;

fn default_file_latency() -> u32 {
    DEFAULT_FILE_LATENCY_SECONDS
}
fn default_file_messages() -> u32 {
    DEFAULT_FILE_MAX_MESSAGES
}
fn default_file_bytes() -> u64 {
    DEFAULT_FILE_MAX_BYTES
}

impl Default for FileBatching {
    fn default() -> Self {
        Self {
            latency_seconds: DEFAULT_FILE_LATENCY_SECONDS,
            max_messages: DEFAULT_FILE_MAX_MESSAGES,
            max_bytes: DEFAULT_FILE_MAX_BYTES,
        }
    }
}

aio_enum! {
    /// `localStorageSettings.metadataColumns[]`: a column of what the message arrived with.
    MetadataColumn ("metadata column") {
        /// `_topic` (string): the topic it arrived on.
        Topic = "Topic",
        /// `_received_time` (timestamp, UTC, microseconds): when the data plane received it.
        ReceivedTime = "ReceivedTime",
        /// `_user_properties` (list of `{key, value}` strings, in order, repeats kept): its MQTT 5
        /// User Properties.
        UserProperties = "UserProperties",
    }
}

impl MetadataColumn {
    /// The column's name in the Parquet file.
    pub fn column_name(self) -> &'static str {
        match self {
            Self::Topic => "_topic",
            Self::ReceivedTime => "_received_time",
            Self::UserProperties => "_user_properties",
        }
    }
}

/// A `Dataflow`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dataflow {
    /// The `apiVersion` it was written with.
    pub api_version: ApiVersion,
    /// Name and namespace.
    pub metadata: Metadata,
    /// Profile, mode and operations.
    pub spec: DataflowSpec,
}

/// `spec` of a `Dataflow`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataflowSpec {
    /// The `DataflowProfile` (same namespace). Default: `default`.
    #[serde(default = "default_profile")]
    pub profile_ref: String,
    /// Whether the dataflow runs. Default: `Enabled`.
    #[serde(default = "enabled")]
    pub mode: OperationalMode,
    /// One `Source`, at most one `BuiltInTransformation`, one `Destination`. Required.
    pub operations: Vec<Operation>,
    /// AIO's disk persistence request (accepted and kept; Sluice does not act on it). Default:
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_disk_persistence: Option<OperationalMode>,
}

fn default_profile() -> String {
    DEFAULT_PROFILE.to_owned()
}

impl DataflowSpec {
    /// The first `Source` operation's settings.
    pub fn source(&self) -> Option<&SourceSettings> {
        self.operations.iter().find_map(|op| match op {
            Operation::Source {
                source_settings, ..
            } => Some(source_settings),
            _ => None,
        })
    }

    /// The first `Destination` operation's settings.
    pub fn destination(&self) -> Option<&DestinationSettings> {
        self.operations.iter().find_map(|op| match op {
            Operation::Destination {
                destination_settings,
                ..
            } => Some(destination_settings),
            _ => None,
        })
    }

    /// The first `BuiltInTransformation` operation's settings.
    pub fn transformation(&self) -> Option<&TransformationSettings> {
        self.operations.iter().find_map(|op| match op {
            Operation::BuiltInTransformation {
                built_in_transformation_settings,
                ..
            } => Some(built_in_transformation_settings),
            _ => None,
        })
    }
}

/// One entry of `spec.operations`: `operationType` and the settings of that type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    tag = "operationType",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Operation {
    /// `operationType: Source`.
    Source {
        /// Optional name, at most 64 characters. Example: `source1`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// `sourceSettings`.
        source_settings: SourceSettings,
    },
    /// `operationType: BuiltInTransformation`.
    BuiltInTransformation {
        /// Optional name, at most 64 characters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// `builtInTransformationSettings`.
        #[serde(default)]
        built_in_transformation_settings: TransformationSettings,
    },
    /// `operationType: Destination`.
    Destination {
        /// Optional name, at most 64 characters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// `destinationSettings`.
        destination_settings: DestinationSettings,
    },
}

impl Operation {
    /// The operation type.
    pub fn operation_type(&self) -> OperationType {
        match self {
            Self::Source { .. } => OperationType::Source,
            Self::BuiltInTransformation { .. } => OperationType::BuiltInTransformation,
            Self::Destination { .. } => OperationType::Destination,
        }
    }
}

/// `sourceSettings`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSettings {
    /// The source `DataflowEndpoint` (Mqtt or Kafka, same namespace). Required. Example:
    /// `default`.
    pub endpoint_ref: String,
    /// An Azure Device Registry asset (AIO only; accepted and kept, not used). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_ref: Option<String>,
    /// MQTT topic filters (wildcards and shared subscriptions allowed; AIO's
    /// `$shared/<group>/<filter>` is kept as MQTT's `$share/<group>/<filter>` in a snapshot) or
    /// Kafka topics. At least one. Example: `[thermostats/+/telemetry/#]`.
    pub data_sources: Vec<String>,
    /// How payloads are read. Default: `Json`.
    #[serde(default = "default_source_format")]
    pub serialization_format: SourceSerializationFormat,
    /// Schema of the payloads (kept, not used yet). Default: none. Example:
    /// `aio-sr://exampleNamespace/exampleSchema:1.0.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_ref: Option<String>,
}

fn default_source_format() -> SourceSerializationFormat {
    SourceSerializationFormat::Json
}

/// `builtInTransformationSettings` (kept as written; executing them is a later issue).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransformationSettings {
    /// Output format. Default: `Json`. Example: `Parquet`.
    #[serde(default = "default_transformation_format")]
    pub serialization_format: TransformationSerializationFormat,
    /// Output schema. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_ref: Option<String>,
    /// Enrichment datasets (AIO allows at most one). Default: none.
    #[serde(default)]
    pub datasets: Vec<Dataset>,
    /// Filter stages. Default: none.
    #[serde(default)]
    pub filter: Vec<Filter>,
    /// Map stages. Default: none.
    #[serde(default)]
    pub map: Vec<MapRule>,
}

fn default_transformation_format() -> TransformationSerializationFormat {
    TransformationSerializationFormat::Json
}

impl Default for TransformationSettings {
    fn default() -> Self {
        Self {
            serialization_format: TransformationSerializationFormat::Json,
            schema_ref: None,
            datasets: Vec::new(),
            filter: Vec::new(),
            map: Vec::new(),
        }
    }
}

/// `datasets[]` of a transformation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dataset {
    /// The dataset's key in the state store. Required. Example: `assetDataset`.
    pub key: String,
    /// A description. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The dataset's schema. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_ref: Option<String>,
    /// Fields referenced by the expression as `$1`, `$2`, ... Required. Example:
    /// `[$source.deviceId, $context(assetDataset).asset]`.
    pub inputs: Vec<String>,
    /// The match condition. Default: none. Example: `$1 == $2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// `filter[]` of a transformation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    /// Always `Filter`. Default: `Filter`.
    #[serde(rename = "type", default = "default_filter_type")]
    pub filter_type: FilterType,
    /// A description. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Fields referenced by the expression. Required. Example: `[temperature]`.
    pub inputs: Vec<String>,
    /// The condition; messages for which it is true pass. Required. Example: `$1 > 20`.
    pub expression: String,
}

fn default_filter_type() -> FilterType {
    FilterType::Filter
}

/// `map[]` of a transformation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MapRule {
    /// The kind of rule. Default: none (inferred).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub mapping_type: Option<MappingType>,
    /// A description. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Input fields. Required. Example: `[temperature]`.
    pub inputs: Vec<String>,
    /// The conversion. Default: none (copy). Example: `($1 - 32) * 5/9`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// The output field. Required. Example: `temperatureCelsius`.
    pub output: String,
}

/// `destinationSettings`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationSettings {
    /// The destination `DataflowEndpoint` (same namespace). Required. Example: `kafka-out`.
    pub endpoint_ref: String,
    /// MQTT topic (with `${inputTopic}` and `${inputTopic.N}`, N from 1), Kafka topic (static),
    /// or a folder of a local storage volume. Required. Example: `processed/${inputTopic.2}`.
    pub data_destination: String,
    /// Header actions (AIO 2025; kept, not executed yet). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderAction>,
}

/// `destinationSettings.headers[]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderAction {
    /// What to do. Required.
    pub action_type: HeaderActionType,
    /// The header's name. Required. Example: `site`.
    pub key: String,
    /// The value (not with `Remove`). Example: `plant-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A `DataflowProfile`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataflowProfile {
    /// The `apiVersion` it was written with.
    pub api_version: ApiVersion,
    /// Name and namespace.
    pub metadata: Metadata,
    /// Scaling and diagnostics.
    #[serde(default)]
    pub spec: ProfileSpec,
}

impl DataflowProfile {
    /// The profile AIO creates at deployment (`default`, every default applied).
    pub fn implicit_default(namespace: &str) -> Self {
        Self {
            api_version: ApiVersion::V1,
            metadata: Metadata {
                name: DEFAULT_PROFILE.to_owned(),
                namespace: namespace.to_owned(),
            },
            spec: ProfileSpec::default(),
        }
    }
}

/// `spec` of a `DataflowProfile`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSpec {
    /// How many instances run each dataflow of the profile: 1 to 20. Default: 1. (An Event Grid
    /// source needs 1: Event Grid has no shared subscriptions.)
    #[serde(default = "default_instance_count")]
    pub instance_count: u32,
    /// Logs and metrics. Default: `{logs: {level: info}, metrics: {prometheusPort: 9600}}`.
    #[serde(default)]
    pub diagnostics: ProfileDiagnostics,
}

fn default_instance_count() -> u32 {
    1
}

impl Default for ProfileSpec {
    fn default() -> Self {
        Self {
            instance_count: 1,
            diagnostics: ProfileDiagnostics::default(),
        }
    }
}

/// `spec.diagnostics` of a profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileDiagnostics {
    /// Logs. Default: `{level: info}`.
    #[serde(default)]
    pub logs: DiagnosticsLogs,
    /// Metrics. Default: `{prometheusPort: 9600}`.
    #[serde(default)]
    pub metrics: DiagnosticsMetrics,
}

/// `diagnostics.logs`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiagnosticsLogs {
    /// Log level: `trace`, `debug`, `info`, `warn` or `error`. Default: `info`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// OpenTelemetry export (accepted and kept; Sluice does not export). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opentelemetry_export_config: Option<OpenTelemetryExportConfig>,
}

fn default_log_level() -> String {
    "info".to_owned()
}

impl Default for DiagnosticsLogs {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            opentelemetry_export_config: None,
        }
    }
}

/// `diagnostics.metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiagnosticsMetrics {
    /// TCP port of the Prometheus endpoint. Default: 9600.
    #[serde(default = "default_prometheus_port")]
    pub prometheus_port: u16,
    /// OpenTelemetry export (accepted and kept; Sluice does not export). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opentelemetry_export_config: Option<OpenTelemetryExportConfig>,
}

/// Default of `diagnostics.metrics.prometheusPort`.
pub const DEFAULT_PROMETHEUS_PORT: u16 = 9600;

fn default_prometheus_port() -> u16 {
    DEFAULT_PROMETHEUS_PORT
}

impl Default for DiagnosticsMetrics {
    fn default() -> Self {
        Self {
            prometheus_port: DEFAULT_PROMETHEUS_PORT,
            opentelemetry_export_config: None,
        }
    }
}

/// `opentelemetryExportConfig` of logs or metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenTelemetryExportConfig {
    /// The collector, e.g. `http://otel-collector:4317`. Required.
    pub otlp_grpc_endpoint: String,
    /// Export interval, in seconds (1 to 300). Default: 30.
    #[serde(default = "default_otel_interval")]
    pub interval_seconds: u32,
    /// Level of exported logs (logs only). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

fn default_otel_interval() -> u32 {
    30
}

/// Any of the three resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "resource")]
pub enum Resource {
    /// A `DataflowEndpoint`.
    DataflowEndpoint(DataflowEndpoint),
    /// A `Dataflow`.
    Dataflow(Dataflow),
    /// A `DataflowProfile`.
    DataflowProfile(DataflowProfile),
}

impl Resource {
    /// The resource's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Self::DataflowEndpoint(_) => Kind::DataflowEndpoint,
            Self::Dataflow(_) => Kind::Dataflow,
            Self::DataflowProfile(_) => Kind::DataflowProfile,
        }
    }

    /// The resource's metadata.
    pub fn metadata(&self) -> &Metadata {
        match self {
            Self::DataflowEndpoint(r) => &r.metadata,
            Self::Dataflow(r) => &r.metadata,
            Self::DataflowProfile(r) => &r.metadata,
        }
    }

    /// `Kind namespace/name`, as diagnostics name a resource.
    pub fn label(&self) -> String {
        label(self.kind(), self.metadata())
    }
}

/// `Kind namespace/name`.
pub fn label(kind: Kind, metadata: &Metadata) -> String {
    format!("{kind} {}/{}", metadata.namespace, metadata.name)
}
