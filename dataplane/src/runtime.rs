//! The per-core runtime: one worker thread per core, pinned, each with its own monoio event loop
//! (io_uring, or epoll where io_uring is unavailable) running that core's share of every
//! dataflow. Nothing is shared between workers on the per-message path; the control thread talks
//! to a worker through its [`Mailbox`], for configuration changes only.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::local::Mailbox;
use crate::metrics::Registry;
use crate::pipeline::Pipeline;
use crate::plan::DataflowPlan;

/// Which I/O driver the workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum IoDriver {
    /// io_uring when the kernel allows it, epoll otherwise.
    #[default]
    Auto,
    /// io_uring only (fails to start without it).
    IoUring,
    /// epoll only.
    Epoll,
}

/// What the control thread asks of a worker.
#[derive(Debug)]
pub enum Command {
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
pub struct RuntimeHandle {
    mailboxes: Vec<Mailbox<Command>>,
}

impl RuntimeHandle {
    /// Number of workers.
    pub fn cores(&self) -> usize {
        self.mailboxes.len()
    }

    /// Sends `command` to the worker of `core`; logs when the worker is gone.
    pub fn send(&self, core: usize, command: Command) {
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
    pub fn shutdown(&self, timeout: Duration) -> bool {
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

/// The worker threads.
#[derive(Debug)]
pub struct Runtime {
    handle: RuntimeHandle,
    threads: Vec<JoinHandle<()>>,
}

impl Runtime {
    /// Starts `cores` workers, pinned to the CPUs this process may run on (in order, wrapping
    /// around when there are more workers than CPUs).
    ///
    /// # Errors
    /// When a thread cannot be spawned or (with [`IoDriver::IoUring`]) io_uring is unavailable.
    pub fn start(cores: usize, driver: IoDriver, registry: Arc<Registry>) -> anyhow::Result<Self> {
        let cores = cores.max(1);
        let uring = match driver {
            IoDriver::Epoll => false,
            IoDriver::Auto => monoio::utils::detect_uring(),
            IoDriver::IoUring => {
                anyhow::ensure!(
                    monoio::utils::detect_uring(),
                    "io_uring is not available on this kernel (or is blocked); use --io-driver epoll"
                );
                true
            }
        };
        let cpus = allowed_cpus();
        info!(
            cores,
            driver = if uring { "io_uring" } else { "epoll" },
            "starting workers"
        );
        let mut mailboxes = Vec::with_capacity(cores);
        let mut threads = Vec::with_capacity(cores);
        for core in 0..cores {
            let mailbox = Mailbox::new();
            mailboxes.push(mailbox.clone());
            let registry = Arc::clone(&registry);
            let cpu = (!cpus.is_empty()).then(|| cpus[core % cpus.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("sluice-core-{core}"))
                .spawn(move || worker(core, cpu, uring, mailbox, registry))?;
            threads.push(thread);
        }
        Ok(Self {
            handle: RuntimeHandle { mailboxes },
            threads,
        })
    }

    /// A handle for sending commands.
    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// Drains and ends every worker, and waits for their threads.
    pub fn shutdown(self, timeout: Duration) {
        let all_done = self.handle.shutdown(timeout);
        for m in &self.handle.mailboxes {
            m.close();
        }
        // A worker that did not report back may be stuck: the process exits without it.
        if all_done {
            for t in self.threads {
                let _ = t.join();
            }
        }
    }
}

/// CPUs in this process's affinity mask.
fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&i| set.is_set(i))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn worker(
    core: usize,
    cpu: Option<usize>,
    uring: bool,
    mailbox: Mailbox<Command>,
    registry: Arc<Registry>,
) {
    if let Some(cpu) = cpu {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
            warn!(core, cpu, error = %e, "cannot pin worker");
        }
    }
    let main = worker_main(core, mailbox, registry);
    if uring {
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(1024)
            .enable_timer()
            .build()
        {
            Ok(mut rt) => return rt.block_on(main),
            Err(e) => error!(core, error = %e, "io_uring runtime failed; using epoll"),
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(main),
        Err(e) => error!(core, error = %e, "cannot start the worker's event loop"),
    }
}

/// A drain in progress: a later start of the same dataflow waits for it (any number of
/// waiters: they poll the flag, as drains are rare and short).
#[derive(Debug)]
struct Drain {
    done: Cell<bool>,
    /// The pipeline draining, so that a later Stop can still ask it to end its sessions.
    pipeline: Rc<Pipeline>,
}

impl Drain {
    async fn wait(&self) {
        while !self.done.get() {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

type Running = Rc<RefCell<HashMap<String, Rc<Pipeline>>>>;
type Draining = Rc<RefCell<HashMap<String, Rc<Drain>>>>;

async fn worker_main(core: usize, mailbox: Mailbox<Command>, registry: Arc<Registry>) {
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
                    let metrics = registry.register(&key, core);
                    match Pipeline::start(plan, core, metrics) {
                        Ok(p) => {
                            running.borrow_mut().insert(key, p);
                        }
                        Err(e) => {
                            registry.unregister(&key, core);
                            error!(dataflow = %key, core, error = %e, "cannot start");
                        }
                    }
                });
            }
            Command::Stop {
                key,
                timeout,
                end_sessions,
            } => {
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
            d.pipeline.end_sessions_when_stopped();
        }
        return;
    };
    let drain = Rc::new(Drain {
        done: Cell::new(false),
        pipeline: Rc::clone(&p),
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

#[cfg(test)]
mod tests {
    use sluice_config_agent::model::{MqttAuthentication, MqttSettings};

    use super::*;
    use crate::plan::{Credentials, DataflowPlan, MqttEndpointPlan};

    /// A dataflow whose brokers do not exist (port 1 refuses): its pipeline starts, registers its
    /// metrics and keeps trying to connect.
    fn plan(hash: &str) -> Arc<DataflowPlan> {
        let endpoint = MqttEndpointPlan {
            name: "ns/nowhere".into(),
            host: "127.0.0.1".into(),
            port: 1,
            tls: None,
            websocket: false,
            credentials: Credentials::None,
            settings: MqttSettings::with_authentication(MqttAuthentication::Anonymous),
            can_share: true,
        };
        Arc::new(DataflowPlan {
            key: "ns/df".into(),
            name: "df".into(),
            content_hash: hash.into(),
            source: endpoint.clone(),
            filters: vec!["a/#".into()],
            destination: endpoint,
            destination_topic: "b/${inputTopic}".into(),
            cores: vec![0],
            shared: false,
            log_level: None,
            previous_filters: Vec::new(),
            instance_id: None,
        })
    }

    fn running(registry: &Registry) -> bool {
        registry.totals("ns/df").is_some()
    }

    /// Polls until `running` is `want` (at most 10 s); then, for `false`, checks that it stays
    /// so for a while (a delayed Start would show within a drain's time).
    fn settle(registry: &Registry, want: bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while running(registry) != want && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !want {
            let until = std::time::Instant::now() + Duration::from_millis(300);
            while std::time::Instant::now() < until {
                if running(registry) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        running(registry)
    }

    #[test]
    fn commands_for_one_dataflow_apply_in_order() {
        let registry = Arc::new(Registry::new());
        let runtime = Runtime::start(1, IoDriver::Epoll, Arc::clone(&registry)).expect("runtime");
        let h = runtime.handle();
        let stop = || Command::Stop {
            key: "ns/df".into(),
            timeout: Duration::from_millis(50),
            end_sessions: false,
        };
        h.send(0, Command::Start(plan("1")));
        assert!(settle(&registry, true), "started");
        // A restart (Stop, Start) and then a removal (Stop) before the first drain is over: the
        // dataflow must end up stopped, not started by the delayed Start.
        h.send(0, stop());
        h.send(0, Command::Start(plan("2")));
        h.send(0, stop());
        assert!(!settle(&registry, false), "removed");
        // Stop then Start: running again.
        h.send(0, Command::Start(plan("3")));
        h.send(0, stop());
        h.send(0, Command::Start(plan("4")));
        assert!(settle(&registry, true), "restarted");
        runtime.shutdown(Duration::from_millis(100));
        assert!(registry.totals("ns/df").is_none(), "stopped at shutdown");
    }
}
