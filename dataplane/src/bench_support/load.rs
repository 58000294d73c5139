//! What `sluice-perf load` borrows from the data plane, so that its publishers and subscribers
//! run as the data plane does: the sans-IO MQTT client session (see `mqtt::session` for the
//! protocol and its bounds), driven by the load tool's own socket tasks; the per-task wake-up
//! flag of the per-core event loops; and the choice of I/O driver.

pub use crate::mqtt::session::{
    AckToken, CloseReason, ConfigError, DEFAULT_MAXIMUM_PACKET_SIZE, Event, PublishError,
    ReauthError, Session, SessionConfig, VECTORED_MIN_PAYLOAD,
};
pub use crate::mqtt::violation::SpecViolation;
pub use crate::runtime::sync::Notify;
pub use crate::runtime::workers::{IoDriver, allowed_cpus};
