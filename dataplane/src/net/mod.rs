//! Networking below the protocols: endpoint addresses ([`address`]), opening TCP connections with
//! a deadline and backoff ([`connect`]), vectored writes ([`iovec`]) and the transport layers
//! between a socket and a session, TLS and WebSocket ([`transport`]).

pub mod address;
pub(crate) mod connect;
pub(crate) mod iovec;
pub mod transport;
