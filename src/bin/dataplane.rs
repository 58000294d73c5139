//! `dataplane`: see `sluice_dataplane::cli`.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    sluice_dataplane::cli::run(sluice_dataplane::cli::Args::parse())
}
