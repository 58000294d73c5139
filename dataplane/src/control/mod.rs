//! The control side: the Unix socket the agent configures the data plane through ([`server`]),
//! and what an accepted snapshot does to what runs ([`apply`]).

pub(crate) mod apply;
pub(crate) mod server;
