//! Shell completions (clap_complete: bash, zsh, fish) and man pages (clap_mangen) of the
//! binaries a deployment ships: `dataplane`, `config-agent`, `mqtt-inspect`. `sluice-gen --out
//! DIR` writes them as `DIR/completions/<shell>/...` and `DIR/man/man1/<name>.1`.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// The command lines, each with the version that `--version` prints.
pub fn commands() -> Vec<clap::Command> {
    let version = env!("SLUICE_VERSION");
    vec![
        sluice_dataplane::cli::Args::command().version(version),
        sluice_config_agent::cli::Cli::command().version(version),
        crate::inspect::Options::command().version(version),
    ]
}

/// Writes every completion script and man page under `out`; returns the files written.
///
/// # Errors
/// When a folder or file cannot be written.
pub fn write_all(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for mut cmd in commands() {
        let name = cmd.get_name().to_owned();
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let dir = out.join("completions").join(shell.to_string());
            std::fs::create_dir_all(&dir)?;
            written.push(clap_complete::generate_to(shell, &mut cmd, &name, &dir)?);
        }
        let dir = out.join("man").join("man1");
        std::fs::create_dir_all(&dir)?;
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        // Subcommands (config-agent's validate and run) get pages of their own.
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let sub_name = format!("{name}-{}", sub.get_name());
            let mut sub_page = Vec::new();
            clap_mangen::Man::new(sub.clone())
                .title(sub_name.clone())
                .render(&mut sub_page)?;
            let p = dir.join(format!("{sub_name}.1"));
            std::fs::write(&p, sub_page)?;
            written.push(p);
        }
        let p = dir.join(format!("{name}.1"));
        std::fs::write(&p, page)?;
        written.push(p);
    }
    Ok(written)
}
