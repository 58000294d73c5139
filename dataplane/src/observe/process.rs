//! The process's own figures for `/metrics`, read from `/proc` at each scrape (nothing is kept):
//! Prometheus' standard `process_*` metrics (CPU seconds, resident memory, open and maximum
//! file descriptors, start time) and the CPU time of each worker thread (`sluice-core-N`),
//! which shows how busy each core's event loop is.

use std::path::Path;

/// What `/proc` says of this process.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProcessStats {
    /// User and system CPU seconds.
    pub(crate) cpu_seconds: f64,
    /// Resident memory, bytes.
    pub(crate) resident_bytes: u64,
    /// Open file descriptors.
    pub(crate) open_fds: u64,
    /// The soft limit on file descriptors.
    pub(crate) max_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub(crate) start_time_seconds: Option<f64>,
    /// CPU seconds of each worker thread, by core.
    pub(crate) workers: Vec<(usize, f64)>,
}

/// Reads the figures; those that cannot be read are left out (zero or `None`).
pub(crate) fn read() -> ProcessStats {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let mut s = ProcessStats::default();
    if let Some((cpu, start)) = read_stat(Path::new("/proc/self/stat")) {
        s.cpu_seconds = cpu as f64 / ticks;
        s.start_time_seconds = boot_time().map(|b| b as f64 + start as f64 / ticks);
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        s.resident_bytes = status_kib(&status, "VmRSS:").map_or(0, |k| k * 1024);
    }
    s.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    s.max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let Some(core) = comm
                .trim()
                .strip_prefix("sluice-core-")
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            if let Some((cpu, _)) = read_stat(&t.path().join("stat")) {
                s.workers.push((core, cpu as f64 / ticks));
            }
        }
    }
    s.workers.sort_by_key(|w| w.0);
    s
}

/// utime + stime and starttime, in clock ticks, from a `stat` file.
fn read_stat(path: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_stat(&text)
}

/// Fields are counted after the command name's closing parenthesis (the name may hold spaces
/// and parentheses): state is field 3, utime 14, stime 15, starttime 22.
fn parse_stat(text: &str) -> Option<(u64, u64)> {
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)? + field(15)?, field(22)?))
}

/// A `Name:   1234 kB` line of `/proc/self/status`, in KiB.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The boot time, seconds since the epoch (`btime` in `/proc/stat`).
fn boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let line = "42 (sluice (core) 0) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 9876 1000 200 18446744073709551615";
        assert_eq!(parse_stat(line), Some((300, 9876)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(status_kib("VmRSS:\t  2048 kB\n", "VmRSS:"), Some(2048));
    }

    #[test]
    fn this_process_has_figures() {
        let s = read();
        assert!(s.resident_bytes > 0);
        assert!(s.open_fds > 0);
        assert!(s.start_time_seconds.is_some_and(|t| t > 1.6e9));
    }
}
