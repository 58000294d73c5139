//! Why the data plane does not run a dataflow of the snapshot ([`SkipReason`]): reported in the
//! control reply, on `/readyz`, in the `sluice_dataflow_running` metric and in the log. Some
//! reasons can pass (a secret that appears later) and are retried.

use std::fmt;

/// Why a dataflow is not run. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SkipReason {
    /// An endpoint kind this build does not run yet.
    EndpointKindNotBuilt {
        /// `namespace/name` of the endpoint.
        endpoint: String,
        /// `Kafka` or `LocalStorage`.
        kind: &'static str,
    },
    /// A secret, token, certificate or CA file that cannot be read now; retried, as it may
    /// appear later (a Secret mounted after the pod started, a token not yet projected).
    SecretUnreadable {
        /// `namespace/name` of the endpoint.
        endpoint: String,
        /// What could not be read, and why.
        detail: String,
    },
    /// A file or folder the endpoint needs, other than a secret (a LocalStorage volume's folder,
    /// an output schema), cannot be used now; retried, as it may be mounted later.
    FileUnreadable {
        /// `namespace/name` of the endpoint.
        endpoint: String,
        /// What, and why.
        detail: String,
    },
    /// A command-line setting that the endpoint needs was not given.
    SettingMissing {
        /// `namespace/name` of the endpoint.
        endpoint: String,
        /// The option, such as `--secrets-dir`.
        setting: &'static str,
        /// What needs it.
        needed_for: String,
    },
    /// The resources do not make a dataflow this data plane can run (validation refuses these,
    /// so it is not expected).
    Invalid {
        /// What is wrong.
        detail: String,
    },
    /// The dataflow's worker could not start it.
    StartFailed {
        /// Why.
        detail: String,
    },
}

impl SkipReason {
    /// A stable `snake_case` name of the kind of reason, for the control protocol and metrics.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::EndpointKindNotBuilt { .. } => "endpoint_kind_not_built",
            Self::SecretUnreadable { .. } => "secret_unreadable",
            Self::FileUnreadable { .. } => "file_unreadable",
            Self::SettingMissing { .. } => "setting_missing",
            Self::Invalid { .. } => "invalid",
            Self::StartFailed { .. } => "start_failed",
        }
    }

    /// Whether the reason can pass without a new snapshot, so that the data plane tries again.
    pub(crate) fn retryable(&self) -> bool {
        matches!(
            self,
            Self::SecretUnreadable { .. } | Self::FileUnreadable { .. }
        )
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EndpointKindNotBuilt { endpoint, kind } => write!(
                f,
                "endpoint {endpoint}: {kind} endpoints are not run by this build of the data plane yet"
            ),
            Self::SecretUnreadable { endpoint, detail }
            | Self::FileUnreadable { endpoint, detail } => {
                write!(f, "endpoint {endpoint}: {detail} (retried)")
            }
            Self::SettingMissing {
                endpoint,
                setting,
                needed_for,
            } => write!(f, "endpoint {endpoint}: {needed_for} needs {setting}"),
            Self::Invalid { detail } => f.write_str(detail),
            Self::StartFailed { detail } => write!(f, "cannot start: {detail}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_retries() {
        let secret = SkipReason::SecretUnreadable {
            endpoint: "ns/ep".into(),
            detail: "secret s: missing".into(),
        };
        assert_eq!(secret.code(), "secret_unreadable");
        assert!(secret.retryable());
        assert!(secret.to_string().ends_with("(retried)"));
        let kind = SkipReason::EndpointKindNotBuilt {
            endpoint: "ns/kafka".into(),
            kind: "Kafka",
        };
        assert!(!kind.retryable());
        assert_eq!(
            kind.to_string(),
            "endpoint ns/kafka: Kafka endpoints are not run by this build of the data plane yet"
        );
    }
}
