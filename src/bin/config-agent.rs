//! `config-agent`: see `sluice_config_agent::cli`.

use std::process::ExitCode;

use clap::Parser;

/// The same allocator as the data plane: validating a large configuration allocates a tree per
/// document and frees it, which glibc's allocator spends most of its time consolidating.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    sluice_config_agent::cli::main(sluice_config_agent::cli::Cli::parse())
}
