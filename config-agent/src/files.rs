//! The only I/O of this crate: reading manifests and the files that references resolve to,
//! through [`Files`] so that tests (and the data plane's checks) can substitute their own.
//!
//! [`RealFiles`] reads the file system; [`MemFiles`] is an in-memory fake for tests. Every read
//! of a real file stops at [`MAX_FILE_BYTES`] ([`read_bounded`]), so a file cannot cost more
//! than that however it was made.

use std::collections::BTreeMap;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

/// The most that is read of any one file: a manifest, a certificate bundle, a private key.
/// Kubernetes keeps a whole ConfigMap or Secret under 1 MiB; local files get room to spare.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Reads `path` whole, or fails with [`io::ErrorKind::FileTooLarge`] when it holds more than
/// `limit` bytes (only `limit + 1` bytes are ever read).
///
/// # Errors
/// Whatever opening and reading give, or `FileTooLarge`.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {}", bytes_shown(limit)),
        ));
    }
    Ok(out)
}

/// A read error for a message: the kind (`not found`, `permission denied`), or for a file over
/// the limit, the limit.
pub fn describe_read_error(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::FileTooLarge && e.get_ref().is_some() {
        e.to_string()
    } else {
        e.kind().to_string()
    }
}

pub(crate) fn bytes_shown(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// Read access to files.
pub trait Files {
    /// The whole content of a file.
    ///
    /// # Errors
    /// Whatever reading the file gives; [`io::ErrorKind::FileTooLarge`] past [`MAX_FILE_BYTES`].
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Whether `path` is a regular file (following symbolic links).
    fn is_file(&self, path: &Path) -> bool;

    /// Whether `path` is a folder (following symbolic links).
    fn is_dir(&self, path: &Path) -> bool;

    /// The regular files directly in `dir`, sorted by name; names starting with `.` are left out
    /// (a mounted ConfigMap or Secret has `..data` entries).
    ///
    /// # Errors
    /// Whatever listing the folder gives.
    fn list_files(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFiles;

impl Files for RealFiles {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        read_bounded(path, MAX_FILE_BYTES)
    }

    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if !hidden && path.is_file() {
                out.push(path);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// An in-memory file tree: folders exist when a file is under them.
#[derive(Debug, Clone, Default)]
pub struct MemFiles {
    files: BTreeMap<PathBuf, Vec<u8>>,
}

impl MemFiles {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a file.
    pub fn insert(&mut self, path: impl Into<PathBuf>, content: impl Into<Vec<u8>>) -> &mut Self {
        self.files.insert(path.into(), content.into());
        self
    }
}

impl Files for MemFiles {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn is_file(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.files.keys().any(|f| f.starts_with(path) && f != path)
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        if !self.is_dir(dir) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(self
            .files
            .keys()
            .filter(|f| f.parent() == Some(dir))
            .filter(|f| {
                !f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            })
            .cloned()
            .collect())
    }
}
