//! `sluice-gen --out DIR`: writes the shell completions and man pages of `dataplane`,
//! `config-agent` and `mqtt-inspect` (see `sluice::generate`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Writes the shell completions (bash, zsh, fish) and man pages of Sluice's binaries.
#[derive(Debug, Parser)]
#[command(name = "sluice-gen", version = env!("SLUICE_VERSION"))]
struct Options {
    /// Folder to write `completions/<shell>/` and `man/man1/` into (created).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let opts = Options::parse();
    match sluice::generate::write_all(&opts.out) {
        Ok(files) => {
            let mut out = std::io::stdout().lock();
            for f in files {
                let _ = writeln!(out, "{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "sluice-gen: {e}");
            ExitCode::FAILURE
        }
    }
}
