//! The configuration in force: the last snapshot the data plane accepted, how a new one is
//! checked and compared with it, and what the runtime is told to do about the difference: start
//! added dataflows, drain and restart changed ones, drain and stop removed (or disabled) ones,
//! and leave unchanged ones alone, with their sessions and in-flight messages.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sluice_config_agent::control::{Changes, Problem};
use sluice_config_agent::{Options, RealFiles, Snapshot, validate_snapshot};
use tracing::{info, warn};

use super::server::{Applier, NotRunningEntry};
use crate::config::environment::Environment;
use crate::config::plan::{DataflowPlan, Skipped, dataflow_key, plan, plan_one};
use crate::observe::http::MetricsEndpoint;
use crate::observe::logs::{LogLevel, most_verbose};
use crate::observe::metrics::Registry;
use crate::runtime::commands::{Command, RuntimeHandle};

/// Where accepted snapshots go: the runtime, and what it needs to run them.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    /// The workers.
    pub(crate) runtime: RuntimeHandle,
    /// Files, token dir, IMDS endpoint, cores.
    pub(crate) env: Environment,
    /// Readiness and metrics.
    pub(crate) registry: Arc<Registry>,
    /// How long a changed or removed dataflow may take to drain.
    pub(crate) drain_timeout: Duration,
    /// Follows the profiles' log level.
    pub(crate) log_level: Option<Arc<LogLevel>>,
    /// Follows the profiles' metrics port.
    pub(crate) metrics: Option<Arc<MetricsEndpoint>>,
}

/// The snapshot in force and its generation.
#[derive(Debug)]
pub(crate) struct ConfigState {
    generation: Option<u64>,
    snapshot: Option<Snapshot>,
    runner: Option<Runner>,
    /// What runs, by `namespace/name`.
    running: HashMap<String, Arc<DataflowPlan>>,
    /// What does not run, and why, by `namespace/name`.
    skipped: BTreeMap<String, Skipped>,
}

impl ConfigState {
    /// No configuration yet; accepted snapshots are only recorded (no runtime).
    pub(crate) fn new() -> Self {
        Self {
            generation: None,
            snapshot: None,
            runner: None,
            running: HashMap::new(),
            skipped: BTreeMap::new(),
        }
    }

    /// No configuration yet; accepted snapshots run on `runner`.
    pub(crate) fn with_runner(runner: Runner) -> Self {
        let mut s = Self::new();
        s.runner = Some(runner);
        s
    }

    /// Tells the runtime what changed between the plans in force and `snapshot`'s.
    fn run(&mut self, generation: u64, snapshot: &Snapshot) {
        let Some(runner) = &self.runner else {
            return;
        };
        let plans = plan(snapshot, &runner.env);
        if let Some(log) = &runner.log_level
            && let Some(level) = most_verbose(
                snapshot
                    .profiles
                    .iter()
                    .map(|p| p.spec.diagnostics.logs.level.as_str()),
            )
        {
            log.apply_profile(level);
        }
        // The profile named `default` (AIO's), else the first, names the metrics port.
        let profile = snapshot
            .profiles
            .iter()
            .find(|p| p.metadata.name == "default")
            .or_else(|| snapshot.profiles.first());
        if let (Some(m), Some(p)) = (&runner.metrics, profile) {
            m.follow_port(p.spec.diagnostics.metrics.prometheus_port);
        }
        for s in &plans.skipped {
            warn!(generation, dataflow = %s.key, code = s.reason.code(), reason = %s.reason, "dataflow not run");
        }
        let new: HashMap<String, Arc<DataflowPlan>> = plans
            .run
            .into_iter()
            .map(|mut p| {
                if let Some(old) = self.running.get(&p.key) {
                    p.inherit_previous_filters(old);
                }
                (p.key.clone(), Arc::new(p))
            })
            .collect();
        for (key, old) in &self.running {
            let keep = new
                .get(key)
                .is_some_and(|p| p.content_hash == old.content_hash);
            if !keep {
                // Removed, disabled or not runnable now: its sessions end too. Changed: they
                // stay for the restart.
                let end_sessions = !new.contains_key(key);
                for &core in &old.cores {
                    runner.runtime.send(
                        core,
                        Command::Stop {
                            key: key.clone(),
                            timeout: runner.drain_timeout,
                            end_sessions,
                        },
                    );
                }
            }
        }
        for (key, p) in &new {
            let same = self
                .running
                .get(key)
                .is_some_and(|old| old.content_hash == p.content_hash);
            if !same {
                start(runner, p);
            }
        }
        self.running = new;
        self.skipped = plans
            .skipped
            .into_iter()
            .map(|s| (s.key.clone(), s))
            .collect();
        self.publish_skipped();
        runner.registry.set_snapshot_applied(true);
    }

    /// Tells the registry (readiness, metrics) what does not run.
    fn publish_skipped(&self) {
        if let Some(runner) = &self.runner {
            runner.registry.set_skipped(
                self.skipped
                    .iter()
                    .map(|(k, s)| (k.clone(), (s.reason.code(), s.reason.to_string())))
                    .collect(),
            );
        }
    }

    /// Plans again the dataflows skipped for a reason that can pass (a secret not readable
    /// yet), and starts those that can run now. Returns how many started.
    pub(crate) fn retry_skipped(&mut self) -> usize {
        let (Some(runner), Some(snapshot)) = (&self.runner, &self.snapshot) else {
            return 0;
        };
        let mut started = 0;
        for d in &snapshot.dataflows {
            let key = dataflow_key(d);
            if !self.skipped.get(&key).is_some_and(|s| s.reason.retryable()) {
                continue;
            }
            match plan_one(snapshot, d, &runner.env) {
                Ok(Some(p)) => {
                    info!(dataflow = %key, "dataflow can run now; starting");
                    let p = Arc::new(p);
                    start(runner, &p);
                    self.running.insert(key.clone(), p);
                    self.skipped.remove(&key);
                    started += 1;
                }
                Ok(None) => {
                    self.skipped.remove(&key);
                }
                Err(reason) => {
                    if let Some(s) = self.skipped.get_mut(&key) {
                        s.reason = reason;
                    }
                }
            }
        }
        self.publish_skipped();
        started
    }

    /// Whether a skipped dataflow is waiting for a reason that can pass.
    pub(crate) fn has_retryable(&self) -> bool {
        self.skipped.values().any(|s| s.reason.retryable())
    }

    /// The options a snapshot is checked with on arrival: the agent's policy (the local broker
    /// rule, which the agent may relax) was applied before sending, so it is not applied again;
    /// everything else is, except the files that references resolve to: those are read when
    /// the dataflows are planned, and one that cannot be read keeps only its dataflow from
    /// running (retried, as it may appear later) instead of refusing the whole snapshot.
    fn options(snapshot: &Snapshot) -> Options {
        Options {
            local_broker_host: snapshot.local_broker_host.clone(),
            require_local_broker: false,
            secrets_dir: None,
            configmaps_dir: None,
            volumes_dir: None,
        }
    }
}

/// Starts `plan` on each of its cores.
fn start(runner: &Runner, plan: &Arc<DataflowPlan>) {
    for &core in &plan.cores {
        runner.runtime.send(core, Command::Start(Arc::clone(plan)));
    }
}

impl Applier for ConfigState {
    type Snapshot = Snapshot;

    fn generation(&self) -> Option<u64> {
        self.generation
    }

    fn apply(&mut self, generation: u64, snapshot: Snapshot) -> Result<Changes, Vec<Problem>> {
        let diagnostics = validate_snapshot(&snapshot, &Self::options(&snapshot), &RealFiles);
        let (errors, warnings): (Vec<_>, Vec<_>) = diagnostics.iter().partition(|d| d.is_error());
        for w in &warnings {
            warn!(generation, "snapshot: {w}");
        }
        if !errors.is_empty() {
            for e in &errors {
                warn!(generation, "snapshot rejected: {e}");
            }
            return Err(errors.into_iter().map(Problem::from).collect());
        }
        let changes = snapshot.changes(self.snapshot.as_ref());
        info!(
            generation,
            added = ?changes.added,
            changed = ?changes.changed,
            removed = ?changes.removed,
            unchanged = changes.unchanged.len(),
            "snapshot applied"
        );
        self.run(generation, &snapshot);
        self.generation = Some(generation);
        self.snapshot = Some(snapshot);
        Ok(changes)
    }

    fn not_running(&self) -> Vec<NotRunningEntry> {
        let mut entries: Vec<NotRunningEntry> = self
            .skipped
            .values()
            .map(|s| NotRunningEntry {
                dataflow: s.key.clone(),
                code: s.reason.code(),
                reason: s.reason.to_string(),
                retrying: s.reason.retryable(),
            })
            .collect();
        entries.sort_by(|a, b| a.dataflow.cmp(&b.dataflow));
        entries
    }
}
