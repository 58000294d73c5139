//! Loading manifests from paths (files and folders) through [`Files`], and the whole pipeline:
//! load, decode, validate, snapshot.

use std::path::{Path, PathBuf};

use crate::decode::{Loaded, load_str};
use crate::diag::Diagnostic;
use crate::files::{Files, bytes_shown, describe_read_error};
use crate::snapshot::Options;
use crate::validate::{Report, validate_resources};

/// Whether `path` names a manifest file: `*.yaml` or `*.yml`.
pub fn is_manifest(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// The most manifest text one configuration may hold, all files together (each file is also
/// bounded by [`crate::files::MAX_FILE_BYTES`]). Loading costs about ten times the text in
/// memory; a million resources of a few lines each fit.
pub const MAX_CONFIGURATION_BYTES: u64 = 512 * 1024 * 1024;

/// Loads every manifest of `paths`: a file is read whatever its name; a folder contributes its
/// `*.yaml` and `*.yml` files (not its subfolders), in name order. Unreadable paths, files that
/// are not UTF-8 and files past [`MAX_CONFIGURATION_BYTES`] in total are reported as diagnostics.
pub fn load_paths(files: &dyn Files, paths: &[PathBuf]) -> Loaded {
    load_paths_within(files, paths, MAX_CONFIGURATION_BYTES)
}

fn load_paths_within(files: &dyn Files, paths: &[PathBuf], budget: u64) -> Loaded {
    let mut loaded = Loaded::default();
    let mut total: u64 = 0;
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
                Ok(bytes) if total.saturating_add(bytes.len() as u64) > budget => {
                    loaded.diagnostics.push(file_error(
                        &file,
                        &format!(
                            "not loaded: the manifests together would pass {}, the most one \
                             configuration may hold",
                            bytes_shown(budget)
                        ),
                    ));
                }
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => {
                        total += text.len() as u64;
                        load_str(&file.display().to_string(), &text, &mut loaded);
                    }
                    Err(_) => loaded.diagnostics.push(file_error(&file, "not UTF-8 text")),
                },
                Err(e) => loaded.diagnostics.push(file_error(
                    &file,
                    &format!("cannot read: {}", describe_read_error(&e)),
                )),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{MemFiles, RealFiles, read_bounded};

    #[test]
    fn the_manifests_together_are_bounded() {
        let doc = "apiVersion: connectivity.iotoperations.azure.com/v1\nkind: DataflowProfile\n\
                   metadata: {name: p, namespace: ns}\nspec: {instanceCount: 1}\n";
        let mut files = MemFiles::new();
        files.insert("m/a.yaml", doc).insert("m/b.yaml", doc);
        let whole = load_paths_within(&files, &[PathBuf::from("m")], 2 * doc.len() as u64);
        assert_eq!(whole.resources.len(), 2);
        assert!(whole.diagnostics.is_empty(), "{:?}", whole.diagnostics);
        let cut = load_paths_within(&files, &[PathBuf::from("m")], 2 * doc.len() as u64 - 1);
        assert_eq!(
            cut.resources.len(),
            1,
            "the first file is loaded, the second refused"
        );
        let [d] = &cut.diagnostics[..] else {
            panic!("{:?}", cut.diagnostics)
        };
        assert!(d.is_error());
        assert_eq!(d.file.as_deref(), Some("m/b.yaml"));
        assert!(
            d.message.contains("the most one configuration may hold"),
            "{}",
            d.message
        );
    }

    #[test]
    fn a_file_past_the_limit_is_refused_with_the_limit_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, vec![b'#'; 1025]).unwrap();
        assert_eq!(read_bounded(&path, 1025).unwrap().len(), 1025);
        let e = read_bounded(&path, 1024).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge);
        assert_eq!(describe_read_error(&e), "larger than 1024 bytes");
        // Through the loader, with the real limit: a sparse file of 64 MiB + 1 is refused
        // after reading one byte past the limit, not loaded.
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(crate::files::MAX_FILE_BYTES + 1).unwrap();
        let loaded = load_paths(&RealFiles, std::slice::from_ref(&path));
        assert!(loaded.resources.is_empty());
        let [d] = &loaded.diagnostics[..] else {
            panic!("{:?}", loaded.diagnostics)
        };
        assert_eq!(d.message, "cannot read: larger than 64 MiB");
    }
}
