//! What a dataflow does to each message between its source and its sink, without I/O: the
//! destination topic ([`template`]), the metadata carried and the expiry aged ([`route`]), and
//! CloudEvents attributes ([`cloudevents`]).

pub(crate) mod cloudevents;
pub(crate) mod route;
pub(crate) mod template;
