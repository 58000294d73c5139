//! Every example in `examples/` is valid for `config-agent validate`, without a warning, with
//! the secret, ConfigMap and schema folders laid out beside them (and a volume folder for the
//! LocalStorage example).

use std::path::Path;
use std::process::Command;

const DATA_FOLDERS: [&str; 3] = ["secrets", "configmaps", "schemas"];

#[test]
fn every_example_is_valid_without_warnings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let volumes = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(volumes.path().join("plant-data")).expect("volume folder");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).expect("examples/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !path.is_dir() || DATA_FOLDERS.contains(&name.as_str()) {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_config-agent"))
            .arg("validate")
            .arg(&path)
            .args(["--format", "json", "--local-broker", "localhost:1883"])
            .arg("--secrets-dir")
            .arg(root.join("secrets"))
            .arg("--configmaps-dir")
            .arg(root.join("configmaps"))
            .arg("--schemas-dir")
            .arg(root.join("schemas"))
            .arg("--volumes-dir")
            .arg(volumes.path())
            .output()
            .expect("config-agent runs");
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report["valid"], true, "{name}: {report:#}");
        assert_eq!(
            report["warnings"].as_array().map(Vec::len),
            Some(0),
            "{name}: {report:#}"
        );
        assert!(out.status.success(), "{name}");
        checked += 1;
    }
    assert_eq!(
        checked, 5,
        "one per dataflow folder listed in examples/README.md"
    );
}
