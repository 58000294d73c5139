//! `dataplane`: see `sluice_dataplane::cli`.

use std::io::Write as _;

use clap::{CommandFactory, FromArgMatches};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    use sluice_dataplane::cli::Args;
    let matches = Args::command()
        .version(env!("SLUICE_VERSION"))
        .get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let build = sluice_dataplane::cli::Build {
        version: env!("CARGO_PKG_VERSION"),
        commit: env!("SLUICE_GIT_HASH"),
    };
    match sluice_dataplane::cli::run(args, build) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The logs may be what failed: say it on stderr directly.
            let _ = writeln!(std::io::stderr(), "dataplane: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
