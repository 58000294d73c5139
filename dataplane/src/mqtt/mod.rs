//! MQTT, client side: the sans-IO session state machine ([`session`]) and the socket tasks that
//! move its bytes ([`connection`]).

pub(crate) mod connection;
pub(crate) mod session;
pub(crate) mod violation;
