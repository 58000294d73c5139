//! Every binary's `--version` names the package version and the commit it was built from
//! (build-support/version.rs): `<name> 0.1.0 (<12 hex digits>)`, or `(unknown)` outside a
//! git checkout.

use std::process::Command;

#[test]
fn every_binary_names_its_version_and_commit() {
    for (name, exe) in [
        ("dataplane", env!("CARGO_BIN_EXE_dataplane")),
        ("config-agent", env!("CARGO_BIN_EXE_config-agent")),
        ("mqtt-inspect", env!("CARGO_BIN_EXE_mqtt-inspect")),
    ] {
        let out = Command::new(exe).arg("--version").output().expect("runs");
        assert!(out.status.success(), "{name} --version");
        let text = String::from_utf8(out.stdout).expect("UTF-8");
        let rest = text
            .trim()
            .strip_prefix(&format!("{name} {} (", env!("CARGO_PKG_VERSION")))
            .unwrap_or_else(|| panic!("{name}: {text}"));
        let hash = rest.strip_suffix(')').expect("closing parenthesis");
        assert!(
            hash == "unknown" || (hash.len() == 12 && hash.chars().all(|c| c.is_ascii_hexdigit())),
            "{name}: {text}"
        );
    }
}
