//! `config-agent`: see `sluice_config_agent::cli`.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

/// The same allocator as the data plane: validating a large configuration allocates a tree per
/// document and frees it, which glibc's allocator spends most of its time consolidating.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    use sluice_config_agent::cli::Cli;
    let matches = Cli::command().version(env!("SLUICE_VERSION")).get_matches();
    sluice_config_agent::cli::main(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}
