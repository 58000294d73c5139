//! Sluice's configuration side: the Azure IoT Operations dataflow resources (`DataflowEndpoint`,
//! `Dataflow`, `DataflowProfile`), their validation, and the control protocol spoken with the
//! data plane. See docs/architecture.md, docs/configuration.md and docs/control-protocol.md.
//!
//! The pipeline, all pure except for reading through [`Files`]:
//! [`load_paths`] (YAML with positions, [`yaml`]; decoding into the typed [`model`] with every
//! shape problem reported, [`decode`]) then [`validate_loaded`] (values, references, AIO's rules
//! and referenced files, [`validate`]) gives a [`Report`]: every [`Diagnostic`], and the
//! [`Snapshot`] when there is no error. [`load_and_validate`] does both. The data plane checks a
//! snapshot it receives with [`validate_snapshot`], and tells what changed with
//! [`Snapshot::changes`].

pub mod address;
pub mod cli;
pub mod control;
pub mod decode;
pub mod delta;
pub mod diag;
pub mod files;
mod load;
pub mod model;
pub mod paths;
pub mod pem;
pub mod snapshot;
pub mod unsupported;
pub mod validate;
pub mod watch;
pub mod yaml;

pub use decode::{Loaded, LoadedResource, Origin, load_str};
pub use diag::{Diagnostic, Severity};
pub use files::{Files, MemFiles, RealFiles};
pub use load::{
    MAX_CONFIGURATION_BYTES, is_manifest, load_and_validate, load_paths, validate_loaded,
};
pub use snapshot::{Options, Snapshot, SnapshotDataflow};
pub use validate::{Report, validate_snapshot};

impl From<&Diagnostic> for control::Problem {
    /// `path` is the location (`file:line: ` or `Kind namespace/name: `) and the field path;
    /// `message` the message (with a `warning: ` prefix for warnings).
    fn from(d: &Diagnostic) -> Self {
        let location = match (&d.file, d.line, &d.resource) {
            (Some(f), Some(l), _) => format!("{f}:{l}: "),
            (Some(f), None, _) => format!("{f}: "),
            (None, _, Some(r)) => format!("{r}: "),
            (None, _, None) => String::new(),
        };
        let prefix = if d.is_error() { "" } else { "warning: " };
        Self {
            path: format!("{location}{}", d.path),
            message: format!("{prefix}{}", d.message),
        }
    }
}
