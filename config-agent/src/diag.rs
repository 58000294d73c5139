//! Diagnostics: what loading and validation found, where, and how bad.
//!
//! Validation never stops at the first problem: every stage appends [`Diagnostic`]s to a list and
//! goes on. A diagnostic names the file and line when the YAML parser gave one, the field path
//! (`spec.operations[2].destinationSettings.endpointRef`) and the message, which lists the accepted
//! values and a did-you-mean where that helps. Errors block a snapshot; warnings do not.
//!
//! Messages never contain a secret: validation reads secret files only to check that they exist
//! (and, for PEM files, that they parse), and never copies their contents into a message.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Reported, but the configuration is still applied.
    Warning,
    /// The configuration is refused.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

/// One problem found in the configuration.
///
/// Displayed as `file:line: path: message` (errors) or `file:line: warning: path: message`;
/// without a file (a snapshot checked on arrival) the resource stands in its place:
/// `Dataflow azure-iot-operations/to-kafka: spec.profileRef: ...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file the problem is in, as it was given to the loader; `None` for problems found in a
    /// snapshot (which has no files) or across files.
    pub file: Option<String>,
    /// The line in `file`, 1-based, when known.
    pub line: Option<u32>,
    /// The column in `file`, 1-based, when known.
    pub column: Option<u32>,
    /// The resource, as `Kind namespace/name`, when the problem belongs to one.
    pub resource: Option<String>,
    /// The field path inside the resource, e.g. `spec.operations[2].destinationSettings.endpointRef`;
    /// empty for a problem with the whole document or file.
    pub path: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl Diagnostic {
    /// An error at `path` with no location yet.
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, path, message)
    }

    /// A warning at `path` with no location yet.
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, path, message)
    }

    fn new(severity: Severity, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity,
            file: None,
            line: None,
            column: None,
            resource: None,
            path: path.into(),
            message: message.into(),
        }
    }

    /// Whether this diagnostic blocks the configuration.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line, &self.resource) {
            (Some(file), Some(line), _) => write!(f, "{file}:{line}: ")?,
            (Some(file), None, _) => write!(f, "{file}: ")?,
            (None, _, Some(resource)) => write!(f, "{resource}: ")?,
            (None, _, None) => {}
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Whether any diagnostic in `diagnostics` is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

/// Longest input, in bytes, that a did-you-mean is looked for (a longer one is no misspelling of
/// a field or resource name, and comparing it would cost its length times every candidate's).
pub const MAX_SUGGESTION_INPUT: usize = 256;

/// Longest text of an input shown in a message; a longer one is cut, with its length.
pub const MAX_SHOWN: usize = 80;

/// `s` as a message shows it: whole up to [`MAX_SHOWN`] bytes, else its start and its length.
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_SHOWN {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = MAX_SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}... ({} bytes)", &s[..end], s.len()))
}

/// The closest of `candidates` to `input`, if it is close enough to be a likely misspelling:
/// equal ignoring case, or within an edit distance of about a third of the length (at least 1,
/// at most 3). The work is bounded: no suggestion for an input over [`MAX_SUGGESTION_INPUT`]
/// bytes, and a candidate whose length differs by more than the limit is not compared.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if input.len() > MAX_SUGGESTION_INPUT {
        return None;
    }
    let lower = input.to_ascii_lowercase();
    let chars = input.chars().count();
    let limit = (chars / 3).clamp(1, 3);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate == input || candidate.len() > MAX_SUGGESTION_INPUT {
            continue;
        }
        // The length difference is a lower bound on the edit distance.
        if candidate.chars().count().abs_diff(chars) > limit {
            continue;
        }
        let distance = if candidate.eq_ignore_ascii_case(input) {
            0
        } else {
            edit_distance(&lower, &candidate.to_ascii_lowercase())
        };
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// `" (did you mean \"x\"?)"` when there is a suggestion, else empty.
pub(crate) fn suggestion<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(input, candidates)
        .map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default()
}

/// Quotes and joins accepted values: `"A", "B" or "C"`.
pub(crate) fn one_of<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = values.into_iter().map(|v| format!("\"{v}\"")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

/// Edit distance over characters, counting a swap of two neighbours as one edit (optimal string
/// alignment), so `hots` is one edit from `host`.
fn edit_distance(a: &str, b: &str) -> usize {
    strsim::osa_distance(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("kafak-out", "kafka-out"), 1);
        assert_eq!(edit_distance("hots", "host"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("qos", "qos"), 0);
    }

    #[test]
    fn huge_inputs_cost_little_and_are_cut_in_messages() {
        let huge = "k".repeat(16 << 20);
        let start = std::time::Instant::now();
        assert_eq!(
            did_you_mean(&huge, ["host", "tls", "k".repeat(100).as_str()]),
            None
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        let s = shown(&huge);
        assert!(s.len() < 120, "{}", s.len());
        assert!(s.ends_with(&format!("... ({} bytes)", 16 << 20)));
        assert_eq!(shown("host"), "host");
        assert_eq!(shown(&"é".repeat(60)).chars().take(40).count(), 40);
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("kafak-out", ["kafka-out", "mqtt-in"]),
            Some("kafka-out")
        );
        assert_eq!(
            did_you_mean("enabled", ["Enabled", "Disabled"]),
            Some("Enabled")
        );
        assert_eq!(did_you_mean("hostname", ["host", "tls"]), None);
        assert_eq!(
            did_you_mean("keepAliveSecond", ["keepAliveSeconds"]),
            Some("keepAliveSeconds")
        );
        assert_eq!(did_you_mean("x", ["y"]), Some("y"));
        assert_eq!(did_you_mean("zzzzzz", ["Anonymous"]), None);
    }

    #[test]
    fn display_forms() {
        let mut d = Diagnostic::error(
            "spec.operations[2].destinationSettings.endpointRef",
            "no DataflowEndpoint named \"kafak-out\" (did you mean \"kafka-out\"?)",
        );
        d.file = Some("dataflows.yaml".into());
        d.line = Some(14);
        assert_eq!(
            d.to_string(),
            "dataflows.yaml:14: spec.operations[2].destinationSettings.endpointRef: no DataflowEndpoint named \"kafak-out\" (did you mean \"kafka-out\"?)"
        );
        let mut w = Diagnostic::warning("spec.mqttSettings.retain", "x");
        w.resource = Some("DataflowEndpoint ns/eg".into());
        assert_eq!(
            w.to_string(),
            "DataflowEndpoint ns/eg: warning: spec.mqttSettings.retain: x"
        );
        assert_eq!(one_of(["A", "B", "C"]), "\"A\", \"B\" or \"C\"");
    }
}
