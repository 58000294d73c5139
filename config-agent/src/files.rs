//! The only I/O of this crate: reading manifests and the files that references resolve to,
//! through [`Files`] so that tests (and the data plane's checks) can substitute their own.
//!
//! [`RealFiles`] reads the file system; [`MemFiles`] is an in-memory fake for tests.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Read access to files.
pub trait Files {
    /// The whole content of a file.
    ///
    /// # Errors
    /// Whatever reading the file gives.
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
        std::fs::read(path)
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
