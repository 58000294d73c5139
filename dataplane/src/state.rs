//! The configuration in force: the last snapshot the data plane accepted, how a new one is
//! checked and compared with it, and what the runtime is told to do about the difference: start
//! added dataflows, drain and restart changed ones, drain and stop removed (or disabled) ones,
//! and leave unchanged ones alone, with their sessions and in-flight messages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice_config_agent::control::{Changes, Problem};
use sluice_config_agent::{Options, RealFiles, Snapshot, validate_snapshot};
use tracing::{info, warn};

use crate::control::Applier;
use crate::logs::{LogLevel, most_verbose};
use crate::metrics::Registry;
use crate::plan::{DataflowPlan, Environment, plan};
use crate::runtime::{Command, RuntimeHandle};

/// Where the data plane finds the files that references resolve to.
#[derive(Debug, Clone, Default)]
pub struct Dirs {
    /// `<secrets-dir>/NAME/<key>`.
    pub secrets: Option<PathBuf>,
    /// `<configmaps-dir>/NAME/`.
    pub configmaps: Option<PathBuf>,
    /// `<volumes-dir>/NAME/`.
    pub volumes: Option<PathBuf>,
}

/// Where accepted snapshots go: the runtime, and what it needs to run them.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The workers.
    pub runtime: RuntimeHandle,
    /// Files, token dir, IMDS endpoint, cores.
    pub env: Environment,
    /// Readiness and metrics.
    pub registry: Arc<Registry>,
    /// How long a changed or removed dataflow may take to drain.
    pub drain_timeout: Duration,
    /// Follows the profiles' log level.
    pub log_level: Option<Arc<LogLevel>>,
}

/// The snapshot in force and its generation.
#[derive(Debug)]
pub struct ConfigState {
    dirs: Dirs,
    generation: Option<u64>,
    snapshot: Option<Snapshot>,
    runner: Option<Runner>,
    /// What runs, by `namespace/name`.
    running: HashMap<String, Arc<DataflowPlan>>,
}

impl ConfigState {
    /// No configuration yet; accepted snapshots are only recorded (no runtime).
    pub fn new(dirs: Dirs) -> Self {
        Self {
            dirs,
            generation: None,
            snapshot: None,
            runner: None,
            running: HashMap::new(),
        }
    }

    /// No configuration yet; accepted snapshots run on `runner`.
    pub fn with_runner(runner: Runner) -> Self {
        let mut s = Self::new(runner.env.dirs.clone());
        s.runner = Some(runner);
        s
    }

    /// Tells the runtime what changed between the plans in force and `snapshot`'s.
    fn run(&mut self, generation: u64, snapshot: &Snapshot) {
        let Some(runner) = &self.runner else {
            return;
        };
        let (plans, skipped) = plan(snapshot, &runner.env);
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
        for s in &skipped {
            warn!(generation, dataflow = %s.key, reason = %s.reason, "dataflow not run");
        }
        let new: HashMap<String, Arc<DataflowPlan>> = plans
            .into_iter()
            .map(|mut p| {
                if let Some(old) = self.running.get(&p.key) {
                    // The old plan's filters, and those it was itself to remove (it may have
                    // been superseded before it ever ran): unsubscribing one that is not there
                    // is harmless.
                    let mut previous: Vec<_> =
                        old.subscriptions().into_iter().map(|s| s.filter).collect();
                    for f in &old.previous_filters {
                        if !previous.contains(f) {
                            previous.push(f.clone());
                        }
                    }
                    p.previous_filters = previous;
                }
                (p.key.clone(), Arc::new(p))
            })
            .collect();
        for (key, old) in &self.running {
            let keep = new
                .get(key)
                .is_some_and(|p| p.content_hash == old.content_hash);
            if !keep {
                // Removed or disabled: its sessions end too. Changed: they stay for the restart.
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
                for &core in &p.cores {
                    runner.runtime.send(core, Command::Start(Arc::clone(p)));
                }
            }
        }
        self.running = new;
        runner.registry.set_snapshot_applied(true);
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The options a snapshot is checked with on arrival: the agent's policy (the local broker
    /// rule, which the agent may relax) was applied before sending, so it is not applied again;
    /// everything else is, against this process's own folders.
    fn options(&self, snapshot: &Snapshot) -> Options {
        Options {
            local_broker_host: snapshot.local_broker_host.clone(),
            require_local_broker: false,
            secrets_dir: self.dirs.secrets.clone(),
            configmaps_dir: self.dirs.configmaps.clone(),
            volumes_dir: self.dirs.volumes.clone(),
        }
    }
}

impl Applier for ConfigState {
    type Snapshot = Snapshot;

    fn generation(&self) -> Option<u64> {
        self.generation
    }

    fn apply(&mut self, generation: u64, snapshot: Snapshot) -> Result<Changes, Vec<Problem>> {
        let diagnostics = validate_snapshot(&snapshot, &self.options(&snapshot), &RealFiles);
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
}
