//! `config-agent`: see `sluice_config_agent::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    sluice_config_agent::cli::main(sluice_config_agent::cli::Cli::parse())
}
