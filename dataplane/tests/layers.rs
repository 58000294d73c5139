//! The layering of `dataplane/src`: every `crate::` path in a module (its `use` lines and paths
//! written inline, comments aside) must point to a module of a lower layer, or to a sibling in
//! the same folder. The table is docs/architecture.md's ("Layers"); keep the two the same.

use std::path::{Path, PathBuf};

/// Module path prefixes and their layer, lowest first. The longest matching prefix decides.
const LAYERS: &[(&str, u32)] = &[
    ("message", 1),
    ("runtime/sync", 2),
    ("net/address", 3),
    ("net/http1", 3),
    ("observe/metrics", 4),
    ("observe/logs", 4),
    ("observe/process", 4),
    ("observe/prometheus", 5),
    ("observe/http", 5),
    ("observe", 5),
    ("net", 6),
    ("net/connect", 7),
    ("secrets", 7),
    ("mqtt/session", 8),
    ("mqtt/violation", 8),
    ("bench_support", 9),
    ("transform", 9),
    ("source", 10),
    ("sink", 10),
    ("config", 11),
    ("kafka", 12),
    ("sources", 13),
    ("sinks", 13),
    ("bench_support/parquet", 14),
    ("bench_support/load", 20),
    ("mqtt/connection", 14),
    ("mqtt", 14),
    ("dataflow/core", 15),
    ("dataflow/ends", 15),
    ("dataflow/task", 16),
    ("dataflow", 16),
    ("runtime/commands", 17),
    ("runtime/supervisor", 18),
    ("runtime/workers", 19),
    ("runtime", 19),
    ("control/server", 20),
    ("control/apply", 21),
    ("control", 21),
    ("cli", 22),
    ("lib", 23),
];

/// The layer of a module path such as `config/plan` (longest prefix, on `/` boundaries).
fn layer(module: &str) -> Option<u32> {
    LAYERS
        .iter()
        .filter(|(prefix, _)| {
            module == *prefix
                || module
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|&(_, l)| l)
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `config/plan.rs` -> `config/plan`; `config/mod.rs` -> `config`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("under src");
    let s = rel.with_extension("").to_string_lossy().replace('\\', "/");
    s.strip_suffix("/mod").map(str::to_owned).unwrap_or(s)
}

/// Every `crate::a::b` path in `line` outside a comment, as `a/b` (module part only: the
/// segments that start with a lower-case letter).
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `sluice_crate::`, not ours
        }
        let segments: Vec<&str> = rest
            .split("::")
            .map(|s| {
                s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")
            })
            .take_while(|s| s.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
            .collect();
        if !segments.is_empty() {
            out.push(segments.join("/"));
        }
    }
    out
}

/// The folder a module belongs to (`config/plan` -> `config`; `message` -> ``).
fn folder(module: &str) -> &str {
    module.rsplit_once('/').map_or("", |(f, _)| f)
}

#[test]
fn every_module_has_a_layer() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for f in &files {
        let m = module_of(f);
        assert!(layer(&m).is_some(), "{m} has no layer in LAYERS");
    }
}

#[test]
fn imports_point_down_only() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for f in &files {
        let from = module_of(f);
        let from_layer = layer(&from).expect("a layer");
        let text = std::fs::read_to_string(f).expect("read");
        for (n, line) in text.lines().enumerate() {
            for to in crate_paths(line) {
                let Some(to_layer) = layer(&to) else {
                    wrong.push(format!("{from}:{}: {to} has no layer", n + 1));
                    continue;
                };
                let sibling = !folder(&from).is_empty()
                    && (to.starts_with(&format!("{}/", folder(&from))) || to == folder(&from));
                if to_layer >= from_layer && !sibling {
                    wrong.push(format!(
                        "{from}:{} (layer {from_layer}) uses {to} (layer {to_layer})",
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_what_it_must() {
    assert_eq!(
        crate_paths("use crate::config::plan::{DataflowPlan, Plans};"),
        ["config/plan"]
    );
    assert_eq!(
        crate_paths("    let x = crate::message::Side::Source; // crate::cli"),
        ["message"]
    );
    assert!(crate_paths("use sluice_crate::x;").is_empty());
    assert!(crate_paths("/// see [`crate::sink::Sink`]").is_empty());
    assert_eq!(layer("runtime/sync"), Some(2));
    assert_eq!(layer("runtime/workers"), Some(19));
    assert_eq!(layer("sinks/mqtt"), Some(13));
    assert_eq!(layer("kafka/errors"), Some(12));
    assert_eq!(layer("sink"), Some(10));
    assert_eq!(layer("nowhere"), None);
}
