//! The Parquet loop of a [`Task`] with a LocalStorage destination: it runs what the sink asks
//! for ([`Job`]: prepare the folder, write a file) on a thread of its own, one at a time, and
//! hands the result back; otherwise it waits until an offer makes a file due, the open file's
//! age bound, a retry, or [`IDLE_TICK`].
//!
//! A job goes to its thread through a shared slot, and comes back through it whatever happens
//! there (a panic included): a file's rows are never lost between the loop and the thread, and
//! a file that could not be written is tried again.

use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use tracing::{debug, info, warn};

use super::{DestinationIo, IDLE_TICK, Task};
use crate::dataflow::ends::Destination;
use crate::message::Side;
use crate::mqtt::connection::Owner as _;
use crate::observe::logs::Escaped;
use crate::runtime::sync::off_loop;
use crate::sinks::parquet::file::{FileJob, prepare};
use crate::sinks::parquet::{Job, Notice, ParquetSink, Written};

/// What a write job's thread gives back.
type Slot = Arc<Mutex<Option<FileJob>>>;

impl Task {
    /// The Parquet loop: see the module documentation.
    pub(super) async fn parquet_sink_loop(self: Rc<Self>) {
        let mut was_up = false;
        loop {
            let out = self.with_parquet(|p| p.has_file_out()) == Some(true);
            if self.stopped.get() && !out {
                break;
            }
            let job = self
                .with_parquet(|p| p.take_job(Instant::now(), SystemTime::now()))
                .flatten();
            match job {
                Some(Job::Prepare { folder, writer }) => {
                    let result = off_loop(move || prepare(&folder, &writer)).await;
                    self.with_parquet(|p| p.on_prepared(result, Instant::now()));
                }
                Some(Job::Write(job)) => {
                    let slot: Slot = Arc::new(Mutex::new(Some(job)));
                    let theirs = Arc::clone(&slot);
                    let result = off_loop(move || {
                        let mut guard = theirs.lock().unwrap_or_else(PoisonError::into_inner);
                        match guard.as_mut() {
                            Some(job) => job.run(),
                            None => Err(std::io::Error::other("no job")),
                        }
                    })
                    .await;
                    let job = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                    match job {
                        Some(job) => {
                            self.with_parquet(|p| p.on_written(job, result, Instant::now()));
                        }
                        None => {
                            warn!(dataflow = %self.key, core = self.core_id, "a Parquet file's job was lost; its messages stay unacknowledged and are delivered again after a restart")
                        }
                    }
                }
                None => {
                    self.parquet_notices(&mut was_up);
                    self.process();
                    if self.stopped.get() && self.with_parquet(|p| p.has_file_out()) != Some(true) {
                        break;
                    }
                    let wait = self
                        .with_parquet(|p| p.poll_timeout())
                        .flatten()
                        .map_or(IDLE_TICK, |at| at.saturating_duration_since(Instant::now()))
                        .min(IDLE_TICK);
                    let DestinationIo::Parquet(wake) = &self.dst else {
                        break;
                    };
                    if !wait.is_zero() {
                        let _ = monoio::time::timeout(wait, wake.notified()).await;
                    }
                    continue;
                }
            }
            self.parquet_notices(&mut was_up);
            self.process();
        }
        self.parquet_done.set(true);
    }

    /// Runs `f` on the Parquet sink; `None` for another destination.
    fn with_parquet<T>(&self, f: impl FnOnce(&mut ParquetSink) -> T) -> Option<T> {
        match self.core.borrow_mut().sink_mut() {
            Destination::Parquet(p) => Some(f(p)),
            _ => None,
        }
    }

    /// Logs and shows what the Parquet sink reported.
    fn parquet_notices(&self, was_up: &mut bool) {
        while let Some(notice) = self.with_parquet(ParquetSink::poll_notice).flatten() {
            match notice {
                Notice::Up { removed } => {
                    if *was_up {
                        self.metrics.on_reconnect(Side::Destination);
                        info!(dataflow = %self.key, core = self.core_id, "the LocalStorage folder takes files again");
                    } else {
                        let folder = self
                            .with_parquet(|p| p.folder().display().to_string())
                            .unwrap_or_default();
                        info!(dataflow = %self.key, core = self.core_id, folder = %Escaped(&folder), removed_temporary_files = removed, "destination ready (LocalStorage)");
                    }
                    *was_up = true;
                    self.metrics.set_destination_problem(None);
                    self.metrics.set_connected(Side::Destination, true);
                }
                Notice::Down(reason) => {
                    self.metrics.set_connected(Side::Destination, false);
                    warn!(dataflow = %self.key, core = self.core_id, reason = %Escaped(&reason), "LocalStorage: nothing of the file is acknowledged; it is written again after a backoff");
                    self.metrics.set_destination_problem(Some(reason));
                }
                Notice::Written(Written { path, rows, bytes }) => {
                    let path = path.map(|p| p.display().to_string()).unwrap_or_default();
                    debug!(dataflow = %self.key, core = self.core_id, file = %Escaped(&path), rows, bytes, "Parquet file written");
                }
            }
        }
    }
}
