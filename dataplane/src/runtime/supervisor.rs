//! One worker's dataflows, in the order the control thread asked for them: a start waits for the
//! drain of the same dataflow, a later command supersedes a start still waiting, and a shutdown
//! drains everything before the worker ends.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, warn};

use super::commands::Command;
use super::sync::Mailbox;
use crate::config::skip::SkipReason;

/// First wait before a failed start is tried again; it doubles up to [`START_RETRY_MAX`].
const START_RETRY: Duration = Duration::from_secs(5);
/// Longest wait between two tries of a failed start.
const START_RETRY_MAX: Duration = Duration::from_secs(60);
use crate::dataflow::task::Task;
use crate::observe::metrics::Registry;

/// A drain in progress: a later start of the same dataflow waits for it (any number of
/// waiters: they poll the flag, as drains are rare and short).
#[derive(Debug)]
struct Drain {
    done: Cell<bool>,
    /// The task draining, so that a later Stop can still ask it to end its sessions.
    task: Rc<Task>,
}

impl Drain {
    async fn wait(&self) {
        while !self.done.get() {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

type Running = Rc<RefCell<HashMap<String, Rc<Task>>>>;
type Draining = Rc<RefCell<HashMap<String, Rc<Drain>>>>;

pub(super) async fn worker_main(core: usize, mailbox: Mailbox<Command>, registry: Arc<Registry>) {
    let running: Running = Rc::default();
    let draining: Draining = Rc::default();
    // The start each dataflow should end up with: a Start waiting for a drain runs only if no
    // later Start, Stop or Shutdown of the same dataflow came meanwhile.
    let wanted: Rc<RefCell<HashMap<String, u64>>> = Rc::default();
    let mut next_start = 0u64;
    loop {
        match mailbox.recv().await {
            Command::Start(plan) => {
                next_start += 1;
                let seq = next_start;
                wanted.borrow_mut().insert(plan.key.clone(), seq);
                let (running, draining, registry, wanted) = (
                    Rc::clone(&running),
                    Rc::clone(&draining),
                    Arc::clone(&registry),
                    Rc::clone(&wanted),
                );
                monoio::spawn(async move {
                    let key = plan.key.clone();
                    loop {
                        let drain = draining.borrow().get(&key).cloned();
                        match drain {
                            Some(d) => d.wait().await,
                            None => break,
                        }
                    }
                    if wanted.borrow().get(&key) != Some(&seq) {
                        return; // superseded by a later command for this dataflow
                    }
                    if running.borrow().contains_key(&key) {
                        warn!(dataflow = %key, core, "already running; start ignored");
                        return;
                    }
                    // A start that fails is tried again (what it needs may be there later: a
                    // TLS file rewritten between the plan and the start), until a later
                    // command for the dataflow supersedes it.
                    let mut delay = START_RETRY;
                    loop {
                        let metrics = registry.register(&key, core);
                        match Task::start(Arc::clone(&plan), core, metrics) {
                            Ok(p) => {
                                registry.clear_start_failed(&key, core);
                                running.borrow_mut().insert(key, p);
                                return;
                            }
                            Err(e) => {
                                registry.unregister(&key, core);
                                error!(dataflow = %key, core, error = %e, retry_in = ?delay, "cannot start");
                                let reason = SkipReason::StartFailed {
                                    detail: e.to_string(),
                                };
                                registry.set_start_failed(
                                    &key,
                                    core,
                                    reason.code(),
                                    reason.to_string(),
                                );
                            }
                        }
                        monoio::time::sleep(delay).await;
                        delay = (delay * 2).min(START_RETRY_MAX);
                        if wanted.borrow().get(&key) != Some(&seq) {
                            return; // superseded meanwhile (its failure was cleared then)
                        }
                    }
                });
            }
            Command::Stop {
                key,
                timeout,
                end_sessions,
            } => {
                registry.clear_start_failed(&key, core);
                wanted.borrow_mut().remove(&key);
                stop_one(
                    core,
                    &running,
                    &draining,
                    &registry,
                    key,
                    timeout,
                    end_sessions,
                );
            }
            Command::Shutdown { timeout, done } => {
                wanted.borrow_mut().clear();
                let keys: Vec<String> = running.borrow().keys().cloned().collect();
                for key in keys {
                    // A shutdown keeps the sessions: the broker holds what arrives meanwhile.
                    stop_one(core, &running, &draining, &registry, key, timeout, false);
                }
                loop {
                    let pending: Vec<Rc<Drain>> = draining.borrow().values().cloned().collect();
                    if pending.is_empty() {
                        break;
                    }
                    for d in pending {
                        d.wait().await;
                    }
                }
                let _ = done.send(());
                return;
            }
        }
    }
}

fn stop_one(
    core: usize,
    running: &Running,
    draining: &Draining,
    registry: &Arc<Registry>,
    key: String,
    timeout: Duration,
    end_sessions: bool,
) {
    let Some(p) = running.borrow_mut().remove(&key) else {
        // Already draining (for a restart): a removal still ends its broker sessions.
        if end_sessions && let Some(d) = draining.borrow().get(&key) {
            d.task.end_sessions_when_stopped();
        }
        return;
    };
    let drain = Rc::new(Drain {
        done: Cell::new(false),
        task: Rc::clone(&p),
    });
    draining.borrow_mut().insert(key.clone(), Rc::clone(&drain));
    let (draining, registry) = (Rc::clone(draining), Arc::clone(registry));
    monoio::spawn(async move {
        p.stop(timeout, end_sessions).await;
        registry.unregister(&key, core);
        draining.borrow_mut().remove(&key);
        drain.done.set(true);
    });
}
