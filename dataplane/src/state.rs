//! The configuration in force: the last snapshot the data plane accepted, and how a new one is
//! checked and compared with it. Running the dataflows is the runtime's business (issue 4); this
//! module decides what is in force and reports what changed.

use std::path::PathBuf;

use sluice_config_agent::control::{Changes, Problem};
use sluice_config_agent::{Options, RealFiles, Snapshot, validate_snapshot};
use tracing::{info, warn};

use crate::control::Applier;

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

/// The snapshot in force and its generation.
#[derive(Debug)]
pub struct ConfigState {
    dirs: Dirs,
    generation: Option<u64>,
    snapshot: Option<Snapshot>,
}

impl ConfigState {
    /// No configuration yet.
    pub fn new(dirs: Dirs) -> Self {
        Self {
            dirs,
            generation: None,
            snapshot: None,
        }
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
        self.generation = Some(generation);
        self.snapshot = Some(snapshot);
        Ok(changes)
    }
}
