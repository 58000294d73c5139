// Shared by the build scripts of the root package (build.rs) and of sluice-perf
// (perf/build.rs), which `include!` it.

/// Sets `SLUICE_GIT_HASH` to the commit being built and `SLUICE_VERSION` to
/// `<package version> (<commit>)`, the `--version` of every binary. The commit comes from
/// `$SLUICE_GIT_HASH` when set (a container build has no `.git`: the Containerfile passes it),
/// else `git rev-parse --short=12 HEAD` in the repository, else `unknown`.
fn emit_version(git_dir: &str) {
    println!("cargo:rerun-if-env-changed=SLUICE_GIT_HASH");
    for f in ["HEAD", "refs/heads", "packed-refs"] {
        let p = format!("{git_dir}/{f}");
        // A path that does not exist would make cargo run the script on every build.
        if std::path::Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let hash = std::env::var("SLUICE_GIT_HASH")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            let out = std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .filter(|h| h.chars().all(|c| c.is_ascii_alphanumeric()) && !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=SLUICE_GIT_HASH={hash}");
    println!("cargo:rustc-env=SLUICE_VERSION={version} ({hash})");
}
