//! Writing one file, off the event loop: the blocking half of the LocalStorage destination.
//!
//! A [`FileJob`] holds the rows of one file (and the dead letters of the same messages). It is
//! written under a temporary name that starts with `.` (which readers that list `*.parquet`
//! never see), fsynced, renamed into place without replacing anything (`RENAME_NOREPLACE`), and
//! then the folder is fsynced, so that the name is durable too. Only after that does the sink
//! acknowledge the file's messages. A failure (a full disk, a read-only folder) removes the
//! temporary file and leaves the job as it was, to be written again after a backoff.
//!
//! Names: `<first row's UTC time>-<writer>-<run>-<seq>.parquet`, for example
//! `20261202T081500.123Z-telemetry-dst-0-3f2a9c01-000017.parquet`: they sort by time; `<writer>`
//! is the dataflow's writer on one core (`[<namespace>.]<dataflow>[-<instance>]-dst-<core>`), so
//! names never collide across cores or data planes (with distinct `--instance-id`s); `<run>`
//! is drawn at each start, so they do not collide across restarts either. Temporary files are
//! `.<name>.tmp`; a start removes those of its own writer, left by a crash ([`prepare`]).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arrow_array::RecordBatch;
use arrow_schema::DataType;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::columns::Sealed;

/// The suffix of a file's dead letters (JSON Lines) beside it.
pub(crate) const DEAD_LETTER_SUFFIX: &str = ".deadletter.jsonl";

/// Tries with another name when the chosen one exists (a clock set back, say).
const RENAME_TRIES: u32 = 16;

/// One file to write.
#[derive(Debug)]
pub(crate) struct FileJob {
    /// The folder (created when missing).
    pub(crate) folder: PathBuf,
    /// The name without `.parquet`.
    pub(crate) name: String,
    /// The rows, until the first attempt turns them into a batch.
    pub(crate) sealed: Option<Sealed>,
    /// The rows as a record batch (kept for another attempt).
    pub(crate) batch: Option<RecordBatch>,
    /// Dead letters, one JSON object per line.
    pub(crate) dead_letters: Vec<u8>,
    /// The pages' codec.
    pub(crate) codec: Codec,
}

/// How a file's pages are compressed (`localStorageSettings.compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// Zstandard, level 1.
    Zstd,
    /// Snappy.
    Snappy,
    /// None.
    None,
}

/// A file in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    /// Its path (`None`: only dead letters were written).
    pub(crate) path: Option<PathBuf>,
    /// Rows in it.
    pub(crate) rows: usize,
    /// Its size.
    pub(crate) bytes: u64,
}

/// The writer properties of a file of `batch`: `codec` (zstd at level 1); dictionary encoding for text and
/// binary columns only (device ids and names repeat; numbers seldom do, and a dictionary that
/// overflows costs its hashing for nothing: zstd takes what repeats there); statistics per
/// column chunk (what readers prune row groups with); Sluice as the writer.
fn properties(batch: &RecordBatch, codec: Codec) -> io::Result<WriterProperties> {
    let compression = match codec {
        Codec::Zstd => Compression::ZSTD(ZstdLevel::try_new(1).map_err(io::Error::other)?),
        Codec::Snappy => Compression::SNAPPY,
        Codec::None => Compression::UNCOMPRESSED,
    };
    let mut b = WriterProperties::builder()
        .set_compression(compression)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")));
    for f in batch.schema().fields() {
        if matches!(f.data_type(), DataType::Utf8 | DataType::Binary) {
            b = b.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), true);
        }
    }
    Ok(b.build())
}

/// Encodes `batch` as a Parquet file into `out` (with [`properties`]); returns `out`.
///
/// # Errors
/// What encoding or writing gave.
pub(crate) fn encode<W: io::Write + Send>(
    batch: &RecordBatch,
    codec: Codec,
    out: W,
) -> io::Result<W> {
    let mut w = ArrowWriter::try_new(out, batch.schema(), Some(properties(batch, codec)?))
        .map_err(io::Error::other)?;
    w.write(batch).map_err(parquet_io)?;
    w.into_inner().map_err(parquet_io)
}

fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// `from` renamed to `to`, never replacing `to`.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(io::Error::from)
}

impl FileJob {
    /// Writes the file (and its dead letters); see the module documentation. On an error
    /// nothing is left in the folder and the job can run again.
    ///
    /// # Errors
    /// Whatever creating, writing, syncing or renaming gave.
    pub(crate) fn run(&mut self) -> io::Result<Written> {
        std::fs::create_dir_all(&self.folder)?;
        if let Some(sealed) = self.sealed.take() {
            let batch = sealed.into_batch().map_err(io::Error::other)?;
            self.batch = Some(batch);
        }
        let rows = self.batch.as_ref().map_or(0, RecordBatch::num_rows);
        let mut temps: Vec<(PathBuf, &'static str)> = Vec::new();
        let result = self.write_temps(rows, &mut temps).and_then(|bytes| {
            let path = self.rename_into_place(&temps)?;
            File::open(&self.folder)?.sync_all()?;
            Ok(Written {
                path: (rows > 0).then_some(path).flatten(),
                rows,
                bytes,
            })
        });
        if result.is_err() {
            for (t, _) in &temps {
                remove_quietly(t);
            }
        }
        result
    }

    /// Writes and syncs the temporary files; returns the Parquet file's size.
    fn write_temps(
        &self,
        rows: usize,
        temps: &mut Vec<(PathBuf, &'static str)>,
    ) -> io::Result<u64> {
        let mut size = 0;
        if let Some(batch) = self.batch.as_ref().filter(|_| rows > 0) {
            let tmp = self.folder.join(format!(".{}.parquet.tmp", self.name));
            temps.push((tmp.clone(), ".parquet"));
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            let file = encode(batch, self.codec, BufWriter::with_capacity(1 << 20, file))?
                .into_inner()
                .map_err(|e| e.into_error())?;
            file.sync_all()?;
            size = file.metadata()?.len();
        }
        if !self.dead_letters.is_empty() {
            let tmp = self
                .folder
                .join(format!(".{}{DEAD_LETTER_SUFFIX}.tmp", self.name));
            temps.push((tmp.clone(), DEAD_LETTER_SUFFIX));
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            file.write_all(&self.dead_letters)?;
            file.sync_all()?;
        }
        Ok(size)
    }

    /// Renames the temporary files (dead letters first, so that a Parquet file in place always
    /// has its dead letters beside it); returns the Parquet file's path.
    fn rename_into_place(&self, temps: &[(PathBuf, &'static str)]) -> io::Result<Option<PathBuf>> {
        for attempt in 0..RENAME_TRIES {
            let name = if attempt == 0 {
                self.name.clone()
            } else {
                format!("{}-r{attempt}", self.name)
            };
            let mut placed: Vec<PathBuf> = Vec::new();
            let mut parquet = None;
            let mut clash = false;
            for (tmp, suffix) in temps.iter().rev() {
                let to = self.folder.join(format!("{name}{suffix}"));
                match rename_no_replace(tmp, &to) {
                    Ok(()) => {
                        if *suffix == ".parquet" {
                            parquet = Some(to.clone());
                        }
                        placed.push(to);
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        clash = true;
                        break;
                    }
                    Err(e) => {
                        undo(&placed, temps);
                        return Err(e);
                    }
                }
            }
            if !clash {
                return Ok(parquet);
            }
            undo(&placed, temps);
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists (and {RENAME_TRIES} other names)", self.name),
        ))
    }
}

/// Puts files renamed in this attempt back under their temporary names.
fn undo(placed: &[PathBuf], temps: &[(PathBuf, &'static str)]) {
    for (to, (tmp, _)) in placed.iter().zip(temps.iter().rev()) {
        let _ = std::fs::rename(to, tmp);
    }
}

fn parquet_io(e: parquet::errors::ParquetError) -> io::Error {
    match e {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<io::Error>() {
            Ok(io) => *io,
            Err(other) => io::Error::other(other),
        },
        other => io::Error::other(other),
    }
}

/// Makes the folder, checks that it takes files, and removes the temporary files `writer` left
/// there (a crash between writing and renaming). Returns how many were removed.
///
/// # Errors
/// When the folder cannot be made or written.
pub(crate) fn prepare(folder: &Path, writer: &str) -> io::Result<usize> {
    std::fs::create_dir_all(folder)?;
    let probe = folder.join(format!(".{writer}.probe.tmp"));
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)?;
    remove_quietly(&probe);
    let mut removed = 0;
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_temp_of(name, writer) {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether `name` is a temporary file of `writer`: `.<time>-<writer>-<run>-<seq>....tmp`.
fn is_temp_of(name: &str, writer: &str) -> bool {
    let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    // The time part is fixed width: 20261202T081500.123Z
    let Some(rest) = inner.get(TIME_LEN..) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix('-').and_then(|r| r.strip_prefix(writer)) else {
        return false;
    };
    // `-<run>-<seq>` follows: 8 hex digits, a dash and digits.
    let Some(rest) = rest.strip_prefix('-') else {
        return false;
    };
    rest.len() > 9
        && rest.as_bytes()[..8].iter().all(u8::is_ascii_hexdigit)
        && rest.as_bytes()[8] == b'-'
        && rest.as_bytes()[9].is_ascii_digit()
}

/// Length of [`file_time`]'s text.
pub(crate) const TIME_LEN: usize = 20;

/// `20261202T081500.123Z`: a UTC time to the millisecond, fixed width, that sorts.
pub(crate) fn file_time(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let secs = i64::try_from(ms / 1000).unwrap_or(0);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms % 1000
    )
}

/// (year, month, day) of days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A writer name made safe for a file name (`[A-Za-z0-9._-]`, others become `_`).
pub(crate) fn safe_writer_name(s: &str) -> Arc<str> {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_sort_and_have_a_fixed_width() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_199_300_123);
        assert_eq!(file_time(t), "20261202T081500.123Z");
        assert_eq!(file_time(SystemTime::UNIX_EPOCH).len(), TIME_LEN);
        assert_eq!(
            file_time(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229T000000.000Z"
        );
    }

    #[test]
    fn only_this_writers_temporary_files_are_its_own() {
        let w = "flow-dst-0";
        assert!(is_temp_of(
            ".20261202T081500.123Z-flow-dst-0-3f2a9c01-000017.parquet.tmp",
            w
        ));
        assert!(is_temp_of(
            ".20261202T081500.123Z-flow-dst-0-3f2a9c01-000017.deadletter.jsonl.tmp",
            w
        ));
        assert!(!is_temp_of(
            ".20261202T081500.123Z-flow-dst-1-3f2a9c01-000017.parquet.tmp",
            w
        ));
        assert!(!is_temp_of(
            ".20261202T081500.123Z-flow-dst-0-a-3f2a9c01-000017.parquet.tmp",
            w
        ));
        assert!(!is_temp_of(
            "20261202T081500.123Z-flow-dst-0-3f2a9c01-000017.parquet",
            w
        ));
        assert!(!is_temp_of(".x.tmp", w));
    }

    #[test]
    fn a_file_is_written_whole_and_never_replaces_another() {
        let dir = tempfile::tempdir().expect("dir");
        let fields = sluice_config_agent::delta::DeltaSchema::parse(
            br#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[{"name":"v","type":"long"}]}}"#,
        )
        .expect("schema")
        .fields;
        let mut cols = super::super::columns::Columns::with_schema(&fields, &[]);
        let meta = super::super::columns::RowMeta {
            topic: b"t",
            received_micros: 0,
            properties: None,
        };
        cols.push(br#"{"v":1}"#, &meta).expect("row");
        let mut job = FileJob {
            folder: dir.path().join("sub"),
            name: "20261202T081500.123Z-w-00000000-000001".into(),
            sealed: Some(cols.take()),
            batch: None,
            dead_letters: b"{\"reason\":\"x\"}\n".to_vec(),
            codec: Codec::Snappy,
        };
        let w = job.run().expect("written");
        assert_eq!(w.rows, 1);
        let first = w.path.expect("a file");
        assert!(first.ends_with("20261202T081500.123Z-w-00000000-000001.parquet"));
        assert!(
            dir.path()
                .join("sub/20261202T081500.123Z-w-00000000-000001.deadletter.jsonl")
                .exists()
        );
        // The same job again: another name, the first file untouched.
        let w2 = job.run().expect("written again");
        let second = w2.path.expect("a file");
        assert_ne!(first, second);
        assert!(second.to_string_lossy().ends_with("-r1.parquet"));
        let names: Vec<String> = std::fs::read_dir(dir.path().join("sub"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn prepare_removes_only_its_own_temporary_files() {
        let dir = tempfile::tempdir().expect("dir");
        let ours = dir
            .path()
            .join(".20261202T081500.123Z-w-0-00000001-000001.parquet.tmp");
        let theirs = dir
            .path()
            .join(".20261202T081500.123Z-v-0-00000001-000001.parquet.tmp");
        std::fs::write(&ours, b"partial").expect("write");
        std::fs::write(&theirs, b"partial").expect("write");
        assert_eq!(prepare(dir.path(), "w-0").expect("prepared"), 1);
        assert!(!ours.exists() && theirs.exists());
    }
}
