//! The LocalStorage destination: messages become rows of Parquet files in a folder of a local
//! volume, and a message is acknowledged once the file that holds it is durable.
//!
//! The sink does no I/O (like the others): [`ParquetSink::offer`] decodes the payload into the
//! open file's columns ([`columns`]; the message is not kept, so its read buffer is released),
//! and the task's loop takes a [`FileJob`] when a file is cut ([`ParquetSink::take_job`]),
//! writes it on a thread of its own ([`file`]), and reports back ([`ParquetSink::on_written`]);
//! then every ticket of the file ends at once.
//!
//! # When a file is cut
//!
//! At the first of: `batching.maxMessages` rows; `batching.maxBytes` of decoded rows; the first
//! row `batching.latencySeconds` old; half the source's window of unacknowledged messages (the
//! source sends no more than its window without acknowledgements, so a file waiting for more
//! would wait for the latency bound: half lets the next file fill while one is written); and a
//! drain (a stop or a restart), which cuts at once.
//!
//! # Backpressure and memory
//!
//! One file is written at a time per sink. While it is, the next one fills up to the row and
//! byte bounds, and then the sink is not ready: the core stops reading the source. So the
//! memory is at most two files' decoded rows (and the file being encoded), whatever the load.
//!
//! # Failures
//!
//! A file that cannot be written (a full disk, a read-only or missing folder) is kept, nothing
//! of it is acknowledged, and it is written again after a backoff (1 s, doubling to 30 s); the
//! destination counts as not connected meanwhile, with the reason ([`Notice::Down`]).
//!
//! # Rows that do not fit
//!
//! A payload that is not JSON, or does not fit the schema, is dropped with its reason
//! (`not_json`, `schema_mismatch`) and acknowledged at once; with `deadLetter: Enabled` it is
//! written instead to the file's dead-letter file (`<name>.deadletter.jsonl`, one JSON object per
//! line: `received`, `topic`, `reason`, and `payload` as text or `payloadBase64`), and
//! acknowledged with the file, counted as dropped with its reason.

pub(crate) mod columns;
pub(crate) mod file;
pub(crate) mod json;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use sluice_config_agent::delta::DeltaField;

use crate::message::{DropReason, Message};
use crate::sink::{Offer, Outcome, Sink, Ticket};
use columns::{Columns, Meta, RowError, RowMeta};
use file::FileJob;
pub(crate) use file::Written;

/// First wait before a file that could not be written is tried again.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest such wait.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Bytes of the open file are counted exactly every this many rows (an estimate between).
const BYTES_EVERY: usize = 256;

/// How a LocalStorage sink writes.
#[derive(Debug, Clone)]
pub(crate) struct StorageSettings {
    /// The folder files go to.
    pub(crate) folder: PathBuf,
    /// This sink's writer name (see [`file`]), unique per dataflow, core and instance.
    pub(crate) writer: Arc<str>,
    /// The schema's top-level fields; `None`: inferred.
    pub(crate) schema: Option<Arc<Vec<DeltaField>>>,
    /// Metadata columns after the payload's.
    pub(crate) meta: Vec<Meta>,
    /// Rows per file at most (`maxMessages`, and half the source's window).
    pub(crate) max_rows: usize,
    /// Decoded bytes per file at most.
    pub(crate) max_bytes: usize,
    /// Age of a file's first row at which it is cut.
    pub(crate) latency: Duration,
    /// Dead-letter files instead of drops.
    pub(crate) dead_letter: bool,
    /// The pages' codec.
    pub(crate) compression: file::Codec,
}

/// What the task logs and shows (the sink has no connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The folder takes files (at start, and once a failed file was written).
    Up {
        /// Temporary files of an earlier run that were removed.
        removed: usize,
    },
    /// A file, or the folder, could not be written: why.
    Down(String),
    /// A file is in place.
    Written(Written),
}

/// The open file's messages: tickets to end when it is in place.
#[derive(Debug, Default)]
struct Tickets {
    rows: Vec<Ticket>,
    /// Dead-lettered messages: they end as dropped, with their reason.
    refused: Vec<(Ticket, DropReason)>,
}

/// The file being written (or waiting to be written again).
#[derive(Debug)]
struct Out {
    tickets: Tickets,
    /// `None` while the task's thread has it.
    job: Option<FileJob>,
    retry_at: Option<Instant>,
    attempts: u32,
}

/// What the task runs for the sink.
#[derive(Debug)]
pub(crate) enum Job {
    /// Make the folder, check it takes files, remove old temporary files.
    Prepare {
        /// The folder.
        folder: PathBuf,
        /// The writer whose temporary files are removed.
        writer: Arc<str>,
    },
    /// Write a file.
    Write(FileJob),
}

/// The LocalStorage sink. See the module documentation.
#[derive(Debug)]
pub(crate) struct ParquetSink {
    settings: StorageSettings,
    columns: Columns,
    open: Tickets,
    dead_letters: Vec<u8>,
    /// When the open file's first row (or dead letter) came.
    opened: Option<(Instant, SystemTime)>,
    /// A drain asked for the open file to be cut now.
    cut_now: bool,
    /// Bytes of the open file at the last exact count, and payload bytes since.
    counted_bytes: usize,
    bytes_since: usize,
    rows_since: usize,
    out: Option<Out>,
    /// The folder was prepared; `None`: not yet asked, `Some(false)`: asked, not done.
    prepared: Option<bool>,
    prepare_retry_at: Option<Instant>,
    prepare_attempts: u32,
    /// Ended tickets of the last file written.
    done: VecDeque<(Ticket, Outcome)>,
    notices: VecDeque<Notice>,
    /// Wall clock of an instant, to turn receive instants into times.
    anchor: (Instant, SystemTime),
    run: u32,
    seq: u64,
}

impl ParquetSink {
    /// A sink writing by `settings`; `run` distinguishes this start's file names from
    /// earlier ones (random).
    pub(crate) fn new(settings: StorageSettings, run: u32, now: Instant, wall: SystemTime) -> Self {
        let columns = match &settings.schema {
            Some(fields) => Columns::with_schema(fields, &settings.meta),
            None => Columns::inferred(&settings.meta),
        };
        Self {
            settings,
            columns,
            open: Tickets::default(),
            dead_letters: Vec::new(),
            opened: None,
            cut_now: false,
            counted_bytes: 0,
            bytes_since: 0,
            rows_since: 0,
            out: None,
            prepared: None,
            prepare_retry_at: None,
            prepare_attempts: 0,
            done: VecDeque::new(),
            notices: VecDeque::new(),
            anchor: (now, wall),
            run,
            seq: 0,
        }
    }

    /// The folder files go to.
    pub(crate) fn folder(&self) -> &std::path::Path {
        &self.settings.folder
    }

    fn open_rows(&self) -> usize {
        self.open.rows.len() + self.open.refused.len()
    }

    fn open_bytes(&self) -> usize {
        self.counted_bytes + self.bytes_since + self.dead_letters.len()
    }

    fn full(&self) -> bool {
        self.open_rows() >= self.settings.max_rows || self.open_bytes() >= self.settings.max_bytes
    }

    /// Whether the open file is due to be cut at `now`.
    fn cut_due(&self, now: Instant) -> bool {
        let Some((since, _)) = self.opened else {
            return false;
        };
        self.cut_now || self.full() || now.saturating_duration_since(since) >= self.settings.latency
    }

    /// The receive time of `message`, by the wall clock.
    fn wall_of(&self, at: Instant) -> SystemTime {
        let (i, w) = self.anchor;
        if at >= i {
            w + (at - i)
        } else {
            w.checked_sub(i - at).unwrap_or(w)
        }
    }

    /// The next job for the task's loop, if any is due at `now`.
    pub(crate) fn take_job(&mut self, now: Instant, wall: SystemTime) -> Option<Job> {
        self.anchor = (now, wall);
        match self.prepared {
            None => {
                if self.prepare_retry_at.is_some_and(|at| now < at) {
                    return None;
                }
                self.prepared = Some(false);
                return Some(Job::Prepare {
                    folder: self.settings.folder.clone(),
                    writer: Arc::clone(&self.settings.writer),
                });
            }
            Some(false) => return None,
            Some(true) => {}
        }
        if let Some(out) = &mut self.out {
            if out.job.is_some() && out.retry_at.is_none_or(|at| now >= at) {
                out.retry_at = None;
                return out.job.take().map(Job::Write);
            }
            return None;
        }
        if !self.cut_due(now) {
            return None;
        }
        Some(Job::Write(self.cut()))
    }

    /// Seals the open file into a job, and holds its tickets as the file out.
    fn cut(&mut self) -> FileJob {
        let wall = self.opened.map_or(self.anchor.1, |(_, w)| w);
        self.seq += 1;
        let name = format!(
            "{}-{}-{:08x}-{:06}",
            file::file_time(wall),
            self.settings.writer,
            self.run,
            self.seq
        );
        let sealed = self.columns.take();
        let job = FileJob {
            folder: self.settings.folder.clone(),
            name,
            sealed: (sealed.rows() > 0).then_some(sealed),
            batch: None,
            dead_letters: std::mem::take(&mut self.dead_letters),
            codec: self.settings.compression,
        };
        self.out = Some(Out {
            tickets: std::mem::take(&mut self.open),
            job: None,
            retry_at: None,
            attempts: 0,
        });
        self.opened = None;
        self.cut_now = false;
        self.counted_bytes = 0;
        self.bytes_since = 0;
        self.rows_since = 0;
        job
    }

    /// The folder was prepared (`Ok`: how many old temporary files were removed) or not.
    pub(crate) fn on_prepared(&mut self, result: std::io::Result<usize>, now: Instant) {
        match result {
            Ok(removed) => {
                self.prepared = Some(true);
                self.prepare_attempts = 0;
                self.notices.push_back(Notice::Up { removed });
            }
            Err(e) => {
                self.prepared = None;
                self.prepare_attempts += 1;
                self.prepare_retry_at = Some(now + backoff(self.prepare_attempts));
                self.notices.push_back(Notice::Down(format!(
                    "cannot write to {}: {e}",
                    self.settings.folder.display()
                )));
            }
        }
    }

    /// The job taken by [`ParquetSink::take_job`] came back: written, or not (then it is kept
    /// and tried again after a backoff).
    pub(crate) fn on_written(
        &mut self,
        job: FileJob,
        result: std::io::Result<Written>,
        now: Instant,
    ) {
        let Some(out) = &mut self.out else {
            return;
        };
        match result {
            Ok(written) => {
                let failed_before = out.attempts > 0;
                let Some(out) = self.out.take() else { return };
                self.done.extend(
                    out.tickets
                        .rows
                        .into_iter()
                        .map(|t| (t, Outcome::Delivered)),
                );
                self.done.extend(
                    out.tickets
                        .refused
                        .into_iter()
                        .map(|(t, r)| (t, Outcome::Refused(r))),
                );
                if failed_before {
                    self.notices.push_back(Notice::Up { removed: 0 });
                }
                self.notices.push_back(Notice::Written(written));
            }
            Err(e) => {
                out.attempts += 1;
                out.retry_at = Some(now + backoff(out.attempts));
                let folder = job.folder.display().to_string();
                out.job = Some(job);
                self.notices.push_back(Notice::Down(format!(
                    "cannot write a file in {folder}: {e}"
                )));
            }
        }
    }

    /// When the sink wants its loop to look again: the open file's age bound, or a retry.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let retry = self
            .out
            .as_ref()
            .and_then(|o| o.retry_at)
            .or(self.prepare_retry_at.filter(|_| self.prepared.is_none()));
        let age = self
            .opened
            .filter(|_| self.out.is_none())
            .map(|(at, _)| at + self.settings.latency);
        match (retry, age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the loop has a job to take now (a cut is due and no file is out, or a retry).
    pub(crate) fn wants_loop(&self, now: Instant) -> bool {
        match &self.out {
            Some(out) => out.job.is_some() && out.retry_at.is_none_or(|at| now >= at),
            None => self.prepared == Some(true) && self.cut_due(now),
        }
    }

    /// A file is out (being written, or waiting to be written again).
    pub(crate) fn has_file_out(&self) -> bool {
        self.out.is_some()
    }

    /// The next notice for the task.
    pub(crate) fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// Cuts the open file now (a drain).
    pub(crate) fn cut_soon(&mut self) {
        if self.opened.is_some() {
            self.cut_now = true;
        }
    }

    fn dead_letter(&mut self, message: &Message, reason: &RowError) {
        let received = self.wall_of(message.received);
        let line = match std::str::from_utf8(&message.payload) {
            Ok(text) => serde_json::json!({
                "received": file::file_time(received),
                "topic": message.source_topic().as_str(),
                "reason": reason.to_string(),
                "payload": text,
            }),
            Err(_) => serde_json::json!({
                "received": file::file_time(received),
                "topic": message.source_topic().as_str(),
                "reason": reason.to_string(),
                "payloadBase64": base64::engine::general_purpose::STANDARD.encode(&message.payload),
            }),
        };
        // A `Value` always serialises.
        if serde_json::to_writer(&mut self.dead_letters, &line).is_ok() {
            self.dead_letters.push(b'\n');
        }
    }
}

fn backoff(attempts: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

impl Sink for ParquetSink {
    fn ready(&self) -> bool {
        self.prepared == Some(true) && !self.full()
    }

    fn offer(&mut self, message: Message, ticket: Ticket, now: Instant) -> Offer {
        if !self.ready() {
            return Offer::Busy(message);
        }
        let received = self.wall_of(message.received);
        let micros = received
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let meta = RowMeta {
            topic: message.source_topic().as_str().as_bytes(),
            received_micros: micros,
            properties: Some(&message.properties),
        };
        let result = self.columns.push(&message.payload, &meta);
        match result {
            Ok(()) => {
                self.open.rows.push(ticket);
                self.rows_since += 1;
                self.bytes_since += message.payload.len();
                if self.rows_since >= BYTES_EVERY {
                    self.counted_bytes = self.columns.bytes();
                    self.bytes_since = 0;
                    self.rows_since = 0;
                }
            }
            Err(e) => {
                let reason = match e {
                    RowError::NotJson(_) => DropReason::NotJson,
                    RowError::Mismatch(_) => DropReason::SchemaMismatch,
                };
                if !self.settings.dead_letter {
                    return Offer::Dropped(reason);
                }
                self.dead_letter(&message, &e);
                self.open.refused.push((ticket, reason));
            }
        }
        if self.opened.is_none() {
            self.opened = Some((now, received));
        }
        Offer::Accepted
    }

    fn poll_outcome(&mut self) -> Option<(Ticket, Outcome)> {
        self.done.pop_front()
    }

    fn backlog_bytes(&self) -> usize {
        // Rows wait for their file, not for a socket: readiness is what holds the source back.
        0
    }

    fn flush(&mut self, _now: Instant) {
        self.cut_soon();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use sluice_codec::{ByteStr, PublishProperties};

    use super::*;

    fn settings(dir: &std::path::Path, max_rows: usize) -> StorageSettings {
        let fields = sluice_config_agent::delta::DeltaSchema::parse(
            br#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[{"name":"v","type":"long","nullable":false}]}}"#,
        )
        .expect("schema")
        .fields;
        StorageSettings {
            folder: dir.to_path_buf(),
            writer: "w-dst-0".into(),
            schema: Some(Arc::new(fields)),
            meta: vec![Meta::Topic],
            max_rows,
            max_bytes: 1 << 20,
            latency: Duration::from_secs(60),
            dead_letter: false,
            compression: file::Codec::Zstd,
        }
    }

    fn message(payload: &'static [u8], at: Instant) -> Message {
        Message {
            topic: ByteStr::from_static("out"),
            arrived_on: ByteStr::from_static("in/1"),
            payload: Bytes::from_static(payload),
            properties: PublishProperties::new(),
            retain: false,
            received: at,
        }
    }

    /// Runs the sink's jobs as the task would, synchronously.
    fn run_jobs(sink: &mut ParquetSink, now: Instant) -> usize {
        let mut n = 0;
        while let Some(job) = sink.take_job(now, SystemTime::now()) {
            n += 1;
            match job {
                Job::Prepare { folder, writer } => {
                    sink.on_prepared(file::prepare(&folder, &writer), now);
                }
                Job::Write(mut j) => {
                    let r = j.run();
                    sink.on_written(j, r, now);
                }
            }
        }
        n
    }

    #[test]
    fn tickets_end_when_their_file_is_in_place() {
        let dir = tempfile::tempdir().expect("dir");
        let t0 = Instant::now();
        let mut sink = ParquetSink::new(settings(dir.path(), 3), 1, t0, SystemTime::now());
        assert!(!sink.ready(), "not before the folder is prepared");
        run_jobs(&mut sink, t0);
        assert!(sink.ready());
        for t in 0..3 {
            assert!(matches!(
                sink.offer(message(b"{\"v\":1}", t0), t, t0),
                Offer::Accepted
            ));
        }
        assert!(!sink.ready(), "full");
        assert!(
            sink.poll_outcome().is_none(),
            "nothing ends before the file is written"
        );
        run_jobs(&mut sink, t0);
        let ended: Vec<_> = std::iter::from_fn(|| sink.poll_outcome()).collect();
        assert_eq!(ended.len(), 3);
        assert!(ended.iter().all(|(_, o)| *o == Outcome::Delivered));
        let written = std::iter::from_fn(|| sink.poll_notice())
            .find_map(|n| match n {
                Notice::Written(w) => Some(w),
                _ => None,
            })
            .expect("a file");
        assert_eq!(written.rows, 3);
    }

    #[test]
    fn a_file_is_cut_by_age_and_by_a_drain() {
        let dir = tempfile::tempdir().expect("dir");
        let t0 = Instant::now();
        let mut sink = ParquetSink::new(settings(dir.path(), 100), 1, t0, SystemTime::now());
        run_jobs(&mut sink, t0);
        sink.offer(message(b"{\"v\":1}", t0), 0, t0);
        assert_eq!(sink.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        assert_eq!(run_jobs(&mut sink, t0 + Duration::from_secs(59)), 0);
        assert_eq!(run_jobs(&mut sink, t0 + Duration::from_secs(60)), 1);
        assert_eq!(sink.poll_outcome().map(|(t, _)| t), Some(0));
        sink.offer(message(b"{\"v\":2}", t0), 1, t0);
        sink.flush(t0);
        assert_eq!(run_jobs(&mut sink, t0), 1);
        assert_eq!(sink.poll_outcome().map(|(t, _)| t), Some(1));
    }

    #[test]
    fn what_does_not_fit_is_dropped_or_dead_lettered() {
        let dir = tempfile::tempdir().expect("dir");
        let t0 = Instant::now();
        let mut sink = ParquetSink::new(settings(dir.path(), 100), 1, t0, SystemTime::now());
        run_jobs(&mut sink, t0);
        assert!(matches!(
            sink.offer(message(b"nope", t0), 0, t0),
            Offer::Dropped(DropReason::NotJson)
        ));
        assert!(matches!(
            sink.offer(message(b"{\"v\":\"x\"}", t0), 1, t0),
            Offer::Dropped(DropReason::SchemaMismatch)
        ));
        let mut s = settings(dir.path(), 100);
        s.dead_letter = true;
        let mut sink = ParquetSink::new(s, 2, t0, SystemTime::now());
        run_jobs(&mut sink, t0);
        assert!(matches!(
            sink.offer(message(b"\xff", t0), 0, t0),
            Offer::Accepted
        ));
        assert!(matches!(
            sink.offer(message(b"{\"v\":1}", t0), 1, t0),
            Offer::Accepted
        ));
        sink.flush(t0);
        run_jobs(&mut sink, t0);
        let ended: Vec<_> = std::iter::from_fn(|| sink.poll_outcome()).collect();
        assert_eq!(
            ended,
            [
                (1, Outcome::Delivered),
                (0, Outcome::Refused(DropReason::NotJson))
            ]
        );
        let letters: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| {
                let p = e.expect("entry").path();
                p.to_string_lossy()
                    .ends_with(file::DEAD_LETTER_SUFFIX)
                    .then_some(p)
            })
            .collect();
        assert_eq!(letters.len(), 1);
        let line: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&letters[0]).expect("read")).expect("json");
        assert_eq!(line["payloadBase64"], "/w==");
        assert_eq!(line["topic"], "in/1");
    }

    #[test]
    fn a_failed_write_keeps_everything_and_is_retried() {
        let dir = tempfile::tempdir().expect("dir");
        let t0 = Instant::now();
        let mut sink = ParquetSink::new(settings(dir.path(), 1), 1, t0, SystemTime::now());
        run_jobs(&mut sink, t0);
        sink.offer(message(b"{\"v\":1}", t0), 7, t0);
        // The folder goes away and a file is in its place: the write fails.
        std::fs::remove_dir_all(dir.path()).expect("remove");
        std::fs::write(dir.path(), b"not a folder").expect("file");
        run_jobs(&mut sink, t0);
        assert!(sink.poll_outcome().is_none());
        assert!(
            std::iter::from_fn(|| sink.poll_notice()).any(|n| matches!(n, Notice::Down(_))),
            "reported"
        );
        // The next file fills meanwhile, up to its bound.
        assert!(matches!(
            sink.offer(message(b"{\"v\":2}", t0), 8, t0),
            Offer::Accepted
        ));
        assert!(!sink.ready(), "one file out and the next one full");
        assert_eq!(sink.poll_timeout(), Some(t0 + RETRY_FIRST));
        std::fs::remove_file(dir.path()).expect("remove");
        run_jobs(&mut sink, t0 + RETRY_FIRST);
        assert_eq!(sink.poll_outcome(), Some((7, Outcome::Delivered)));
        assert_eq!(sink.poll_outcome(), Some((8, Outcome::Delivered)));
        assert!(std::iter::from_fn(|| sink.poll_notice()).any(|n| matches!(n, Notice::Up { .. })));
    }
}
