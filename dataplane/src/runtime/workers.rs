//! The per-core runtime: one worker thread per core (pinned as `--pin` says), each with its own monoio event loop
//! (io_uring, or epoll where io_uring is unavailable) running that core's share of every
//! dataflow. Nothing is shared between workers on the per-message path; the control thread talks
//! to a worker through its [`Mailbox`], for configuration changes only.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{error, info, warn};

use super::commands::{Command, RuntimeHandle};
use super::supervisor::worker_main;
use super::sync::Mailbox;
use crate::observe::metrics::Registry;

/// Starting the workers failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RuntimeError {
    /// `--io-driver io-uring`, and the kernel does not allow io_uring.
    #[error("io_uring is not available on this kernel (or is blocked); use --io-driver epoll")]
    IoUringUnavailable,
    /// A worker thread could not be started.
    #[error("cannot start a worker thread: {0}")]
    Spawn(#[from] std::io::Error),
}

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

/// Whether workers are pinned to CPUs (`--pin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Pin {
    /// Only when this process was given a CPU set smaller than the machine's (a Kubernetes
    /// CPU manager `static` policy, `taskset`, a cgroup cpuset): on a shared node every
    /// unpinned pod would otherwise pin its workers to the same first CPUs.
    #[default]
    Auto,
    /// Always (a dedicated machine, benchmarks).
    Always,
    /// Never.
    Never,
}

/// The worker threads.
#[derive(Debug)]
pub(crate) struct Runtime {
    handle: RuntimeHandle,
    threads: Vec<JoinHandle<()>>,
    uring: bool,
    pinned: bool,
}

impl Runtime {
    /// Starts `cores` workers, pinned to the CPUs this process may run on (in order, wrapping
    /// around when there are more workers than CPUs).
    ///
    /// # Errors
    /// When a thread cannot be spawned or (with [`IoDriver::IoUring`]) io_uring is unavailable.
    pub(crate) fn start(
        cores: usize,
        driver: IoDriver,
        pin: Pin,
        registry: Arc<Registry>,
    ) -> Result<Self, RuntimeError> {
        let cores = cores.max(1);
        let uring = match driver {
            IoDriver::Epoll => false,
            IoDriver::Auto => monoio::utils::detect_uring(),
            IoDriver::IoUring => {
                if !monoio::utils::detect_uring() {
                    return Err(RuntimeError::IoUringUnavailable);
                }
                true
            }
        };
        let cpus = allowed_cpus();
        let pinned = match pin {
            Pin::Always => true,
            Pin::Never => false,
            Pin::Auto => !cpus.is_empty() && online_cpus().is_some_and(|n| cpus.len() < n),
        };
        if driver == IoDriver::Auto && !uring {
            warn!(
                "io_uring is not available (the default seccomp profile of common container runtimes blocks it): the workers run on epoll; see docs/operations.md"
            );
        }
        info!(
            cores,
            driver = if uring { "io_uring" } else { "epoll" },
            pinned,
            "starting workers"
        );
        let cpus = if pinned { cpus } else { Vec::new() };
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
            uring,
            pinned,
        })
    }

    /// The I/O driver in use: `io_uring` or `epoll`.
    pub(crate) fn driver_name(&self) -> &'static str {
        if self.uring { "io_uring" } else { "epoll" }
    }

    /// Whether the workers are pinned.
    pub(crate) fn pinned(&self) -> bool {
        self.pinned
    }

    /// A handle for sending commands.
    pub(crate) fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// Drains and ends every worker, and waits for their threads.
    pub(crate) fn shutdown(self, timeout: Duration) {
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

/// CPUs online on the machine (`/sys/devices/system/cpu/online`, such as `0-3,6`).
fn online_cpus() -> Option<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    count_cpu_list(s.trim())
}

/// The number of CPUs in a kernel CPU list (`0-3,6`).
fn count_cpu_list(s: &str) -> Option<usize> {
    s.split(',').try_fold(0usize, |n, part| {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        Some(n + b.checked_sub(a)? + 1)
    })
}

/// CPUs in this process's affinity mask.
pub fn allowed_cpus() -> Vec<usize> {
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

#[cfg(test)]
mod tests {
    use sluice_config_agent::model::{MqttAuthentication, MqttSettings};

    use super::*;
    use crate::config::mqtt_endpoint::{Credentials, MqttEndpointPlan};
    use crate::config::plan::{DataflowPlan, MqttSourcePlan, SinkPlan, SourcePlan};
    use crate::runtime::commands::Command;

    /// A dataflow whose brokers do not exist (port 1 refuses): its task starts, registers its
    /// metrics and keeps trying to connect.
    fn plan(hash: &str) -> Arc<DataflowPlan> {
        let endpoint = MqttEndpointPlan {
            name: "ns/nowhere".into(),
            host: "127.0.0.1".into(),
            port: 1,
            tls: None,
            websocket: false,
            ws_path: "/".into(),
            credentials: Credentials::None,
            settings: MqttSettings::with_authentication(MqttAuthentication::Anonymous),
            can_share: true,
            max_packet_bytes: crate::mqtt::session::DEFAULT_MAXIMUM_PACKET_SIZE,
        };
        Arc::new(DataflowPlan {
            key: "ns/df".into(),
            name: "df".into(),
            content_hash: hash.into(),
            source: SourcePlan::Mqtt(MqttSourcePlan {
                endpoint: endpoint.clone(),
                filters: vec!["a/#".into()],
                shared: false,
                previous_filters: Vec::new(),
            }),
            sink: SinkPlan::Mqtt(endpoint),
            destination_topic: "b/${inputTopic}".into(),
            cores: vec![0],
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
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-3"), Some(4));
        assert_eq!(count_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn commands_for_one_dataflow_apply_in_order() {
        let registry = Arc::new(Registry::new());
        let runtime =
            Runtime::start(1, IoDriver::Epoll, Pin::Auto, Arc::clone(&registry)).expect("runtime");
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
