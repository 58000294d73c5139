//! `dataplane`: see `sluice_dataplane::cli`.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    sluice_dataplane::cli::run(sluice_dataplane::cli::Args::parse())
}
