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
    skipped: BTreeMap<String, Waiting>,
}

/// A dataflow that does not run, and the plan it replaces, if one ran before: when it starts,
/// it unsubscribes the filters that plan had.
#[derive(Debug)]
struct Waiting {
    skipped: Skipped,
    previous: Option<Arc<DataflowPlan>>,
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
        let mut new: HashMap<String, Arc<DataflowPlan>> = plans
            .run
            .into_iter()
            .map(|mut p| {
                if let Some(old) = self.replaced(&p.key) {
                    p.inherit_previous_filters(&old);
                }
                (p.key.clone(), Arc::new(p))
            })
            .collect();
        let mut waiting = BTreeMap::new();
        for s in plans.skipped {
            let running = self.running.get(&s.key);
            if s.reason.retryable()
                && let Some(old) = running
                && old.content_hash == s.content_hash
            {
                // Unchanged and running: a file it cannot read now does not stop it (it reads
                // its files again before each connection, and keeps its sessions).
                warn!(generation, dataflow = %s.key, reason = %s.reason, "a file of a running dataflow cannot be read now; it keeps running");
                new.insert(s.key.clone(), Arc::clone(old));
                continue;
            }
            warn!(generation, dataflow = %s.key, code = s.reason.code(), reason = %s.reason, "dataflow not run");
            let previous = self.replaced(&s.key);
            waiting.insert(
                s.key.clone(),
                Waiting {
                    skipped: s,
                    previous,
                },
            );
        }
        for (key, old) in &self.running {
            let keep = new
                .get(key)
                .is_some_and(|p| p.content_hash == old.content_hash);
            if !keep {
                // Removed, disabled or not runnable for good: its sessions end too. Changed, or
                // waiting for a file to start again: they stay, with what the broker queues.
                let comes_back = new.contains_key(key)
                    || waiting
                        .get(key)
                        .is_some_and(|w: &Waiting| w.skipped.reason.retryable());
                let end_sessions = !comes_back;
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
        self.skipped = waiting;
        self.publish_skipped();
        runner.registry.set_snapshot_applied(true);
    }

    /// Tells the registry (readiness, metrics) what does not run.
    fn publish_skipped(&self) {
        if let Some(runner) = &self.runner {
            runner.registry.set_skipped(
                self.skipped
                    .iter()
                    .map(|(k, w)| {
                        let r = &w.skipped.reason;
                        (k.clone(), (r.code(), r.to_string()))
                    })
                    .collect(),
            );
        }
    }

    /// The plan that a new plan of `key` replaces: the one running, or the one that ran before
    /// the dataflow had to wait.
    fn replaced(&self, key: &str) -> Option<Arc<DataflowPlan>> {
        self.running
            .get(key)
            .cloned()
            .or_else(|| self.skipped.get(key).and_then(|w| w.previous.clone()))
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
            if !self
                .skipped
                .get(&key)
                .is_some_and(|w| w.skipped.reason.retryable())
            {
                continue;
            }
            match plan_one(snapshot, d, &runner.env) {
                Ok(Some(mut p)) => {
                    info!(dataflow = %key, "dataflow can run now; starting");
                    if let Some(old) = self.replaced(&key) {
                        p.inherit_previous_filters(&old);
                    }
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
                    if let Some(w) = self.skipped.get_mut(&key) {
                        w.skipped.reason = reason;
                    }
                }
            }
        }
        self.publish_skipped();
        started
    }

    /// Whether a skipped dataflow is waiting for a reason that can pass.
    pub(crate) fn has_retryable(&self) -> bool {
        self.skipped.values().any(|w| w.skipped.reason.retryable())
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
            schemas_dir: None,
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

    fn apply(&mut self, generation: u64, mut snapshot: Snapshot) -> Result<Changes, Vec<Problem>> {
        // Lookups are binary searches over sorted lists: a peer's order is not trusted.
        snapshot.sort();
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
            added = %sluice_config_agent::control::Names(&changes.added),
            changed = %sluice_config_agent::control::Names(&changes.changed),
            removed = %sluice_config_agent::control::Names(&changes.removed),
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
            .map(|w| NotRunningEntry {
                dataflow: w.skipped.key.clone(),
                code: w.skipped.reason.code(),
                reason: w.skipped.reason.to_string(),
                retrying: w.skipped.reason.retryable(),
            })
            .collect();
        entries.sort_by(|a, b| a.dataflow.cmp(&b.dataflow));
        entries
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sluice_config_agent::Options;

    use super::*;
    use crate::config::environment::Dirs;
    use crate::config::plan::SourcePlan;
    use crate::runtime::sync::Mailbox;

    fn manifests(filter: &str) -> String {
        format!(
            r#"
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata: {{name: local}}
spec:
  endpointType: Mqtt
  mqttSettings:
    host: 127.0.0.1:1883
    authentication: {{method: Anonymous}}
    tls: {{mode: Disabled}}
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata: {{name: remote}}
spec:
  endpointType: Mqtt
  mqttSettings:
    host: 127.0.0.1:1884
    authentication:
      method: UsernamePassword
      usernamePasswordSettings: {{secretRef: login}}
    tls: {{mode: Disabled}}
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: Dataflow
metadata: {{name: bridge}}
spec:
  operations:
    - operationType: Source
      sourceSettings: {{endpointRef: local, dataSources: ["{filter}"]}}
    - operationType: Destination
      destinationSettings: {{endpointRef: remote, dataDestination: "b/${{inputTopic}}"}}
"#
        )
    }

    fn snapshot(filter: &str) -> Snapshot {
        let mut loaded = sluice_config_agent::Loaded::default();
        sluice_config_agent::load_str("flows.yaml", &manifests(filter), &mut loaded);
        let options = Options {
            local_broker_host: "127.0.0.1:1883".into(),
            ..Options::default()
        };
        sluice_config_agent::validate_loaded(loaded, &options, &RealFiles)
            .snapshot
            .expect("valid")
    }

    fn login(dir: &Path, present: bool) {
        let folder = dir.join("login");
        if present {
            std::fs::create_dir_all(&folder).expect("mkdir");
            std::fs::write(folder.join("username"), "u").expect("write");
            std::fs::write(folder.join("password"), "p").expect("write");
        } else {
            let _ = std::fs::remove_dir_all(&folder);
        }
    }

    fn state(secrets: &Path) -> (ConfigState, Mailbox<Command>) {
        let (runtime, mut mailboxes) = RuntimeHandle::for_test(1);
        let runner = Runner {
            runtime,
            env: Environment {
                dirs: Dirs {
                    secrets: Some(secrets.to_owned()),
                    configmaps: None,
                    ..Dirs::default()
                },
                ..Environment::default()
            },
            registry: Arc::new(Registry::new()),
            drain_timeout: Duration::from_secs(1),
            log_level: None,
            metrics: None,
        };
        (ConfigState::with_runner(runner), mailboxes.remove(0))
    }

    /// What the worker was told, in short: `start <filters to unsubscribe first>` or
    /// `stop <end_sessions>`.
    fn told(m: &Mailbox<Command>) -> Vec<String> {
        m.take_all()
            .into_iter()
            .map(|c| match c {
                Command::Start(p) => {
                    let SourcePlan::Mqtt(src) = &p.source else {
                        return "start kafka".into();
                    };
                    let previous: Vec<&str> =
                        src.previous_filters.iter().map(|f| f.as_str()).collect();
                    format!("start {previous:?}")
                }
                Command::Stop { end_sessions, .. } => format!("stop {end_sessions}"),
                Command::Shutdown { .. } => "shutdown".into(),
            })
            .collect()
    }

    #[test]
    fn a_file_that_cannot_be_read_neither_stops_a_running_dataflow_nor_ends_its_sessions() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (mut s, worker) = state(tmp.path());
        login(tmp.path(), true);
        s.apply(1, snapshot("a/#")).expect("applied");
        assert_eq!(told(&worker), ["start []"]);

        // The secret is gone for a while; the same configuration again: it keeps running.
        login(tmp.path(), false);
        s.apply(2, snapshot("a/#")).expect("applied");
        assert!(told(&worker).is_empty(), "untouched");
        assert!(s.not_running().is_empty());

        // A changed configuration that cannot be planned now: drained with its sessions kept,
        // and reported as waiting.
        s.apply(3, snapshot("c/#")).expect("applied");
        assert_eq!(told(&worker), ["stop false"]);
        let waiting = s.not_running();
        assert_eq!(waiting.len(), 1);
        assert!(waiting[0].retrying, "{waiting:?}");
        assert_eq!(s.retry_skipped(), 0, "still unreadable");

        // The secret is back: it starts and unsubscribes the filter the old plan had.
        login(tmp.path(), true);
        assert_eq!(s.retry_skipped(), 1);
        assert_eq!(told(&worker), ["start [\"a/#\"]"]);
        assert!(s.not_running().is_empty());
    }
}
