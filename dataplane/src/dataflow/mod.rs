//! A dataflow between a source and a sink: the I/O-free core that holds what is in flight
//! ([`core`]), the concrete ends it holds ([`ends`]) and the task that runs one dataflow on one
//! worker ([`task`]).

pub(crate) mod core;
pub(crate) mod ends;
pub(crate) mod task;
