//! Loading manifests from paths (files and folders) through [`Files`], and the whole pipeline:
//! load, decode, validate, snapshot.

use std::path::{Path, PathBuf};

use crate::decode::{Loaded, load_str};
use crate::diag::Diagnostic;
use crate::files::Files;
use crate::snapshot::Options;
use crate::validate::{Report, validate_resources};

/// Whether `path` names a manifest file: `*.yaml` or `*.yml`.
pub fn is_manifest(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// Loads every manifest of `paths`: a file is read whatever its name; a folder contributes its
/// `*.yaml` and `*.yml` files (not its subfolders), in name order. Unreadable paths and files that
/// are not UTF-8 are reported as diagnostics.
pub fn load_paths(files: &dyn Files, paths: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    for path in paths {
        let list = if files.is_dir(path) {
            match files.list_files(path) {
                Ok(list) => list.into_iter().filter(|p| is_manifest(p)).collect(),
                Err(e) => {
                    loaded.diagnostics.push(file_error(
                        path,
                        &format!("cannot list the folder: {}", e.kind()),
                    ));
                    continue;
                }
            }
        } else {
            vec![path.clone()]
        };
        for file in list {
            match files.read(&file) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => load_str(&file.display().to_string(), &text, &mut loaded),
                    Err(_) => loaded.diagnostics.push(file_error(&file, "not UTF-8 text")),
                },
                Err(e) => loaded
                    .diagnostics
                    .push(file_error(&file, &format!("cannot read: {}", e.kind()))),
            }
        }
    }
    loaded
}

fn file_error(path: &Path, message: &str) -> Diagnostic {
    let mut d = Diagnostic::error("", message);
    d.file = Some(path.display().to_string());
    d
}

/// Loads `paths` and validates them as one configuration. The report's snapshot is `Some` only
/// when nothing (loading included) is an error; its diagnostics hold every problem of both
/// stages.
pub fn load_and_validate(files: &dyn Files, paths: &[PathBuf], options: &Options) -> Report {
    let loaded = load_paths(files, paths);
    validate_loaded(loaded, options, files)
}

/// Validates what [`load_paths`] (or [`crate::decode::load_str`]) produced.
pub fn validate_loaded(loaded: Loaded, options: &Options, files: &dyn Files) -> Report {
    let Loaded {
        resources,
        broken,
        mut diagnostics,
    } = loaded;
    let load_failed = crate::diag::has_errors(&diagnostics);
    let mut report = validate_resources(resources, &broken, options, files);
    diagnostics.append(&mut report.diagnostics);
    diagnostics.sort_by(|a, b| {
        (a.file.is_none(), &a.file, a.line, a.column).cmp(&(
            b.file.is_none(),
            &b.file,
            b.line,
            b.column,
        ))
    });
    Report {
        snapshot: if load_failed { None } else { report.snapshot },
        diagnostics,
    }
}
