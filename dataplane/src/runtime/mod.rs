//! The per-core runtime: worker threads with their event loops ([`workers`]), the commands the
//! control thread sends them ([`commands`]), the per-core ordering of those commands
//! ([`supervisor`]), and the small synchronisation pieces of the event loops ([`sync`]).

pub(crate) mod commands;
pub(crate) mod supervisor;
pub(crate) mod sync;
pub(crate) mod workers;
