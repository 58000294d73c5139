//! `dataplane`: see `sluice_dataplane::cli`.

use std::io::Write as _;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match sluice_dataplane::cli::run(sluice_dataplane::cli::Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The logs may be what failed: say it on stderr directly.
            let _ = writeln!(std::io::stderr(), "dataplane: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
