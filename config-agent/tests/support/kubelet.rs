//! A folder laid out as the kubelet mounts a ConfigMap or Secret, for the watch tests (the
//! library's unit tests and `tests/run_watch.rs` include this one file).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A kubelet-style mount: files are symlinks through `..data`, which points at a timestamped
/// folder; [`Mount::update`] is the kubelet's atomic swap.
pub(crate) struct Mount {
    dir: PathBuf,
    generation: u32,
}

impl Mount {
    pub(crate) fn new(dir: &Path, files: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut m = Self {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        m.update(files);
        for (name, _) in files {
            symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
        }
        m
    }

    /// The kubelet's atomic update: new timestamped folder, `..data_tmp` renamed over
    /// `..data`, old folder removed.
    pub(crate) fn update(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let stamp = format!("..2026_12_02_10_00_00.{:09}", self.generation);
        let new = self.dir.join(&stamp);
        std::fs::create_dir(&new).unwrap();
        for (name, content) in files {
            std::fs::write(new.join(name), content).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        symlink(&stamp, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if self.generation > 1 {
            let old = format!("..2026_12_02_10_00_00.{:09}", self.generation - 1);
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}
