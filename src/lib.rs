//! The root package's library: what its binaries share, and what `sluice-gen` needs to write
//! the shell completions and man pages of `dataplane`, `config-agent` and `mqtt-inspect`.

pub mod generate;
pub mod inspect;
