//! Log setup: `tracing` to stderr, as text or JSON lines (`--log-format`), with a level that follows the `DataflowProfile`
//! (`diagnostics.logs.level`) unless `--log` or `RUST_LOG` fixed it on the command line.

use std::sync::Mutex;

use sluice_config_agent::cli::LogFormat;
use tracing::{info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// A string a peer sent (a broker's topic, an agent's name, a client's request line), written
/// into a log line with its control characters and backslashes escaped (`\n`, `\u{1b}`), so
/// that it cannot forge lines or terminal escapes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            if c.is_control() || c == '\\' {
                write!(f, "{}", c.escape_default())?;
            } else {
                std::fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// The default level when neither the command line nor a profile says.
pub(crate) const DEFAULT_LEVEL: &str = "info";

/// Setting up the logs failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    /// `--log` or `RUST_LOG` is not a filter.
    #[error("{setting}: {error}")]
    InvalidFilter {
        /// `--log` or `RUST_LOG`.
        setting: &'static str,
        /// Why.
        error: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was installed already.
    #[error("log setup: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
}

/// Changes the log filter at run time.
#[derive(Debug)]
pub(crate) struct LogLevel {
    handle: reload::Handle<EnvFilter, Registry>,
    /// Set by `--log` or `RUST_LOG`: profiles do not change it.
    fixed: bool,
    current: Mutex<String>,
}

impl LogLevel {
    /// Installs the global subscriber. `cli` is `--log` when given.
    ///
    /// # Errors
    /// When `--log` or `RUST_LOG` is not a valid filter.
    pub(crate) fn init(cli: Option<&str>, format: LogFormat) -> Result<Self, LogError> {
        let invalid = |setting| move |error| LogError::InvalidFilter { setting, error };
        let (filter, fixed, current) = match (std::env::var("RUST_LOG"), cli) {
            (Ok(env), _) if !env.is_empty() => (
                EnvFilter::try_new(&env).map_err(invalid("RUST_LOG"))?,
                true,
                env,
            ),
            (_, Some(cli)) => (
                EnvFilter::try_new(cli).map_err(invalid("--log"))?,
                true,
                cli.into(),
            ),
            _ => (EnvFilter::new(DEFAULT_LEVEL), false, DEFAULT_LEVEL.into()),
        };
        let (layer, handle) = reload::Layer::new(filter);
        let text = (format == LogFormat::Text).then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        });
        let json = (format == LogFormat::Json).then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
        });
        tracing_subscriber::registry()
            .with(layer)
            .with(text)
            .with(json)
            .try_init()
            .map_err(LogError::Install)?;
        Ok(Self {
            handle,
            fixed,
            current: Mutex::new(current),
        })
    }

    /// Applies a profile's level (`info`, `debug`, or a `tracing` directive list), unless the
    /// command line fixed the level. An invalid level is logged and ignored.
    pub(crate) fn apply_profile(&self, level: &str) {
        if self.fixed {
            return;
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if *current == level {
            return;
        }
        match EnvFilter::try_new(level) {
            Ok(filter) => {
                if let Err(e) = self.handle.reload(filter) {
                    warn!(error = %e, "cannot change the log level");
                    return;
                }
                level.clone_into(&mut current);
                info!(level, "log level set by the profile");
            }
            Err(e) => warn!(level, error = %e, "profile log level is not a valid filter; ignored"),
        }
    }
}

/// The most verbose of several levels (`trace` > `debug` > `info` > `warn` > `error`); directive
/// lists and unknown words rank as `info`.
pub(crate) fn most_verbose<'a>(levels: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    fn rank(level: &str) -> u8 {
        match level.trim().to_ascii_lowercase().as_str() {
            "trace" => 5,
            "debug" => 4,
            "warn" | "warning" => 2,
            "error" => 1,
            "off" => 0,
            _ => 3,
        }
    }
    levels.into_iter().max_by_key(|l| rank(l))
}

#[cfg(test)]
mod tests {
    use super::most_verbose;

    #[test]
    fn peer_strings_are_escaped() {
        assert_eq!(
            super::Escaped("agent\n2026-12-02T00:00:00Z  INFO forged \u{1b}[31m\\").to_string(),
            "agent\\n2026-12-02T00:00:00Z  INFO forged \\u{1b}[31m\\\\"
        );
        assert_eq!(
            super::Escaped("plant/line 1/é").to_string(),
            "plant/line 1/é"
        );
    }

    #[test]
    fn picks_the_most_verbose() {
        assert_eq!(most_verbose(["info", "debug", "warn"]), Some("debug"));
        assert_eq!(most_verbose(["error"]), Some("error"));
        assert_eq!(most_verbose(Vec::<&str>::new()), None);
    }
}
