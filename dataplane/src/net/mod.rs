//! Networking below the protocols: endpoint addresses ([`address`]), opening TCP connections with
//! a deadline and backoff (`connect`), vectored writes (`iovec`), HTTP/1.x heads ([`http1`])
//! and the transport layers between a socket and a session, TLS and WebSocket ([`transport`]).

pub mod address;
pub(crate) mod connect;
pub mod http1;
pub(crate) mod iovec;
pub mod transport;
