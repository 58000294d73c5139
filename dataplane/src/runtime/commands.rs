//! What the control thread asks of a worker ([`Command`]), and the handle through which it asks
//! ([`RuntimeHandle`]: one mailbox per core). Configuration changes only, never messages.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use tracing::warn;

use super::sync::Mailbox;
use crate::config::plan::DataflowPlan;

/// What the control thread asks of a worker.
#[derive(Debug)]
pub(crate) enum Command {
    /// Run this dataflow on the worker's core (after a drain of the same dataflow finished).
    Start(Arc<DataflowPlan>),
    /// Drain and stop a dataflow (at most `timeout` for the drain).
    Stop {
        /// `namespace/name`.
        key: String,
        /// Drain timeout.
        timeout: Duration,
        /// The dataflow is removed (or disabled), not restarted: end its broker sessions too.
        end_sessions: bool,
    },
    /// Drain and stop everything, report on `done`, and end the worker.
    Shutdown {
        /// Drain timeout.
        timeout: Duration,
        /// Told when done.
        done: mpsc::Sender<()>,
    },
}

/// The mailboxes of the workers: cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub(crate) struct RuntimeHandle {
    pub(super) mailboxes: Vec<Mailbox<Command>>,
}

impl RuntimeHandle {
    /// A handle whose workers are the test: it reads what was sent from the mailboxes.
    #[cfg(test)]
    pub(crate) fn for_test(cores: usize) -> (Self, Vec<Mailbox<Command>>) {
        let mailboxes: Vec<Mailbox<Command>> = (0..cores).map(|_| Mailbox::new()).collect();
        (
            Self {
                mailboxes: mailboxes.clone(),
            },
            mailboxes,
        )
    }

    /// Sends `command` to the worker of `core`; logs when the worker is gone.
    pub(crate) fn send(&self, core: usize, command: Command) {
        match self.mailboxes.get(core) {
            Some(m) => {
                if m.send(command).is_err() {
                    warn!(core, "worker has stopped; command dropped");
                }
            }
            None => warn!(core, "no such worker"),
        }
    }

    /// Drains every dataflow on every core (each at most `timeout`), then ends the workers.
    /// Returns whether every worker reported back in time.
    pub(crate) fn shutdown(&self, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        let mut asked = 0;
        for m in &self.mailboxes {
            if m.send(Command::Shutdown {
                timeout,
                done: tx.clone(),
            })
            .is_ok()
            {
                asked += 1;
            }
        }
        for _ in 0..asked {
            // Drains are bounded by `timeout`; the extra time covers closing the connections.
            if rx.recv_timeout(timeout + Duration::from_secs(10)).is_err() {
                warn!("a worker did not finish its shutdown in time");
                return false;
            }
        }
        asked == self.mailboxes.len()
    }
}
