//! What a process costs, read from `/proc` (Linux only): CPU time from `/proc/<pid>/stat`
//! (`utime + stime`, in clock ticks of `sysconf(_SC_CLK_TCK)`), peak resident memory from
//! `VmHWM` in `/proc/<pid>/status`. And [`Children`]: child processes with their logs, stopped
//! (SIGTERM, then SIGKILL after a grace period) when dropped, so an error or a panic leaves no
//! process behind.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, kill_process};

/// Clock ticks per second of the `utime` / `stime` fields (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// CPU time (user + system) of process `pid` so far, in clock ticks.
///
/// # Errors
/// When `/proc/<pid>/stat` cannot be read or parsed (the process is gone).
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: fields are counted
    // after the last ')'. Field 3 (state) is the first after it; utime and stime are 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/<pid>/stat")?;
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let mut next =
        || -> anyhow::Result<u64> { Ok(fields.next().context("short /proc/<pid>/stat")?.parse()?) };
    Ok(next()? + next()?)
}

/// CPU time of this process so far, in seconds.
///
/// # Errors
/// See [`cpu_ticks`].
pub fn self_cpu_secs() -> anyhow::Result<f64> {
    Ok(cpu_ticks(std::process::id())? as f64 / clock_ticks_per_second() as f64)
}

/// Peak resident set size (`VmHWM`) of process `pid`, in KiB.
///
/// # Errors
/// When `/proc/<pid>/status` cannot be read or has no `VmHWM` line.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc/<pid>/status")?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// One child process and the file its stderr (and, unless piped, stdout) goes to.
#[derive(Debug)]
pub struct Proc {
    /// A short name for messages (`dataplane`, `mosquitto_sub`, ...).
    pub name: String,
    /// The process.
    pub child: Child,
    /// Its log file.
    pub log: PathBuf,
    /// CPU ticks and peak RSS (KiB) read just before [`Children::end`] stopped it.
    ended: Option<(u64, u64)>,
}

impl Proc {
    /// The last `lines` lines of its log (for error messages).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

/// The last `lines` lines of a file, at most 8 KiB of it.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(8192)));
    let mut s = String::new();
    let mut bytes = Vec::new();
    if f.read_to_end(&mut bytes).is_ok() {
        s = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Child processes under test, stopped when dropped.
#[derive(Debug, Default)]
pub struct Children {
    procs: Vec<Proc>,
    /// How long a child gets between SIGTERM and SIGKILL.
    pub grace: Duration,
}

impl Children {
    /// No children yet; a grace period of 3 s.
    pub fn new() -> Self {
        Self {
            procs: Vec::new(),
            grace: Duration::from_secs(3),
        }
    }

    /// Spawns `cmd` with `stdin`, its stderr appended to `log`, and its stdout too when
    /// `stdout_to_log` (otherwise as `cmd` set it).
    ///
    /// # Errors
    /// When the log cannot be created or the program cannot be started.
    pub fn spawn(
        &mut self,
        name: &str,
        cmd: &mut Command,
        stdin: Stdio,
        log: &Path,
        stdout_to_log: bool,
    ) -> anyhow::Result<&mut Proc> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("creating {}", log.display()))?;
        if stdout_to_log {
            cmd.stdout(Stdio::from(file.try_clone()?));
        }
        cmd.stderr(Stdio::from(file)).stdin(stdin);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            ended: None,
        });
        let last = self.procs.len() - 1;
        Ok(&mut self.procs[last])
    }

    /// The children, in start order.
    pub fn procs(&self) -> &[Proc] {
        &self.procs
    }

    /// The child called `name`.
    pub fn get(&self, name: &str) -> Option<&Proc> {
        self.procs.iter().find(|p| p.name == name)
    }

    /// Errors when a child has exited, with its status and the end of its log.
    ///
    /// # Errors
    /// The first child found to have exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if p.ended.is_some() {
                continue;
            }
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "{} exited early ({status}); end of its log {}:\n{}",
                    p.name,
                    p.log.display(),
                    p.log_tail(20)
                );
            }
        }
        Ok(())
    }

    /// Sum of the CPU ticks of the named children (for one stopped by [`Children::end`], its
    /// ticks then).
    ///
    /// # Errors
    /// When a child is missing or its `/proc` entry cannot be read.
    pub fn cpu_ticks(&self, names: &[&str]) -> anyhow::Result<u64> {
        names.iter().try_fold(0, |sum, name| {
            let p = self.get(name).with_context(|| format!("no child {name}"))?;
            Ok(sum
                + match p.ended {
                    Some((ticks, _)) => ticks,
                    None => cpu_ticks(p.child.id())?,
                })
        })
    }

    /// Sum of the peak RSS of the named children, in KiB.
    ///
    /// # Errors
    /// As [`Children::cpu_ticks`].
    pub fn peak_rss_kib(&self, names: &[&str]) -> anyhow::Result<u64> {
        names.iter().try_fold(0, |sum, name| {
            let p = self.get(name).with_context(|| format!("no child {name}"))?;
            Ok(sum
                + match p.ended {
                    Some((_, rss)) => rss,
                    None => peak_rss_kib(p.child.id())?,
                })
        })
    }

    /// Stops the child `name` ahead of the others (SIGTERM), keeping its CPU ticks and peak RSS
    /// as they were just before; [`Children::check_running`] no longer looks at it.
    ///
    /// # Errors
    /// When there is no such child, or its `/proc` entry cannot be read.
    pub fn end(&mut self, name: &str) -> anyhow::Result<()> {
        self.freeze(name, true)
    }

    /// Lets the child `name` exit by itself (its input ended): as [`Children::end`], without
    /// the signal.
    ///
    /// # Errors
    /// As [`Children::end`].
    pub fn let_exit(&mut self, name: &str) -> anyhow::Result<()> {
        self.freeze(name, false)
    }

    fn freeze(&mut self, name: &str, terminate: bool) -> anyhow::Result<()> {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .with_context(|| format!("no child {name}"))?;
        if p.ended.is_none() {
            let pid = p.child.id();
            p.ended = Some((cpu_ticks(pid)?, peak_rss_kib(pid)?));
            if terminate {
                let _ = kill_process(Pid::from_child(&p.child), Signal::TERM);
            }
        }
        Ok(())
    }

    /// Stops every child: SIGTERM to all, then SIGKILL to those still running after the grace
    /// period; reaps them all. Returns each child's name and exit status.
    pub fn stop_all(&mut self) -> Vec<(String, Option<ExitStatus>)> {
        for p in &mut self.procs {
            if matches!(p.child.try_wait(), Ok(None)) {
                let _ = kill_process(Pid::from_child(&p.child), Signal::TERM);
            }
        }
        let deadline = Instant::now() + self.grace;
        let mut out = Vec::new();
        for mut p in self.procs.drain(..) {
            let status = loop {
                match p.child.try_wait() {
                    Ok(Some(s)) => break Some(s),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Ok(None) => {
                        let _ = p.child.kill();
                        break p.child.wait().ok();
                    }
                    Err(_) => break None,
                }
            };
            out.push((p.name, status));
        }
        out
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_figures() {
        assert!(clock_ticks_per_second() > 0);
        let pid = std::process::id();
        cpu_ticks(pid).unwrap();
        assert!(peak_rss_kib(pid).unwrap() > 0);
    }

    #[test]
    fn children_are_stopped_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let pid = {
            let mut children = Children::new();
            let p = children
                .spawn(
                    "sleep",
                    Command::new("sleep").arg("30"),
                    Stdio::null(),
                    &dir.path().join("sleep.log"),
                    true,
                )
                .unwrap();
            let pid = p.child.id();
            children.check_running().unwrap();
            pid
        };
        // Reaped: the entry is gone (unless the pid was reused at once, which is unlikely).
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
