//! The root package's build script: the version string with the git commit, for `--version`
//! (build-support/version.rs).
#![allow(clippy::print_stdout)]

include!("build-support/version.rs");

fn main() {
    emit_version(".git");
}
