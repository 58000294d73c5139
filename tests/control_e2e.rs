//! `config-agent` and `dataplane` as real processes over the control socket: push, change a file,
//! an invalid change leaves the old generation in force, a restarted data plane gets the
//! configuration again, strangers on the socket are refused, `--once` and `validate` exit codes,
//! a peer's strings are escaped in the log, and accept errors (descriptors exhausted) are backed
//! off.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn manifest(dest_topic: &str) -> String {
    format!(
        r#"apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: local
spec:
  endpointType: Mqtt
  mqttSettings:
    authentication:
      method: Anonymous
    tls:
      mode: Disabled
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: remote
spec:
  endpointType: Mqtt
  mqttSettings:
    host: 127.0.0.1:1884
    authentication:
      method: Anonymous
    tls:
      mode: Disabled
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: Dataflow
metadata:
  name: bridge
spec:
  profileRef: default
  operations:
    - operationType: Source
      sourceSettings:
        endpointRef: local
        dataSources:
          - sensors/#
    - operationType: Destination
      destinationSettings:
        endpointRef: remote
        dataDestination: {dest_topic}
"#
    )
}

/// A child process whose stderr lines arrive on a channel; killed on drop.
struct Proc {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn start(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing every one of `needles`; returns it.
    fn wait_for(&mut self, needles: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if needles.iter().all(|n| line.contains(n)) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needles:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dataplane(socket: &Path) -> Proc {
    let mut p = Proc::start(
        Command::new(env!("CARGO_BIN_EXE_dataplane"))
            .arg("--control-socket")
            .arg(socket)
            .args(["--metrics-addr", "127.0.0.1:0"]),
    );
    p.wait_for(&["control socket ready"]);
    p
}

fn agent(dir: &Path, socket: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_config-agent"));
    c.args(["run", "--config-dir"])
        .arg(dir)
        .arg("--control-socket")
        .arg(socket)
        .args(["--debounce-ms", "100", "--poll-ms", "50"])
        .args(extra);
    c
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = tmp.path().join("conf");
    std::fs::create_dir(&conf).expect("conf dir");
    std::fs::write(conf.join("flows.yaml"), manifest("out/${inputTopic}")).expect("write");
    let socket = tmp.path().join("control.sock");
    (tmp, conf, socket)
}

#[test]
fn push_change_invalid_change_and_restart() {
    let (_tmp, conf, socket) = setup();
    let mut dp = dataplane(&socket);
    let mut agent = Proc::start(&mut agent(&conf, &socket, &[]));
    dp.wait_for(&[
        "snapshot applied",
        "generation=1",
        "added=[azure-iot-operations/bridge]",
    ]);

    // A valid change: the dataflow changes.
    std::fs::write(conf.join("flows.yaml"), manifest("moved/${inputTopic.1}")).expect("write");
    dp.wait_for(&[
        "snapshot applied",
        "generation=2",
        "changed=[azure-iot-operations/bridge]",
    ]);

    // An invalid change: reported by the agent, nothing pushed.
    std::fs::write(conf.join("flows.yaml"), manifest("bad/+/topic")).expect("write");
    agent.wait_for(&["the last good snapshot stays in force"]);
    // A new valid change is generation 3: generation 2 stayed in force until then.
    std::fs::write(conf.join("flows.yaml"), manifest("fixed/${inputTopic}")).expect("write");
    dp.wait_for(&["snapshot applied", "generation=3"]);

    // The data plane restarts: the agent reconnects and pushes the last good snapshot again.
    drop(dp);
    let mut dp = dataplane(&socket);
    dp.wait_for(&[
        "snapshot applied",
        "generation=1",
        "added=[azure-iot-operations/bridge]",
    ]);
    drop(agent);
}

#[test]
#[allow(clippy::print_stderr)]
fn strangers_are_refused_and_the_data_plane_goes_on() {
    let (_tmp, conf, socket) = setup();
    let mut dp = dataplane(&socket);

    // A 1 GiB length prefix: refused from the prefix, connection closed.
    let mut s = UnixStream::connect(&socket).expect("connect");
    s.write_all(&[0x40, 0, 0, 0]).expect("write");
    let mut reply = Vec::new();
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.read_to_end(&mut reply)
        .expect("the data plane answers and closes");
    assert!(
        String::from_utf8_lossy(&reply).contains("exceeds the limit"),
        "{reply:?}"
    );
    dp.wait_for(&["closing the connection"]);

    // Garbage.
    let mut s = UnixStream::connect(&socket).expect("connect");
    s.write_all(b"\0\0\0\x05hello").expect("write");
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).expect("answer and close");
    assert!(
        String::from_utf8_lossy(&reply).contains("malformed message"),
        "{reply:?}"
    );

    // Another user: refused by uid (run as `nobody` when the tests run as root).
    if rustix::process::geteuid().is_root() {
        let dir = socket.parent().expect("dir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
            ])
            .arg(
                "import socket,sys\n\
                 s=socket.socket(socket.AF_UNIX)\n\
                 s.connect(sys.argv[1])\n\
                 s.settimeout(30)\n\
                 d=b''\n\
                 while True:\n\
                 \x20   c=s.recv(4096)\n\
                 \x20   if not c: break\n\
                 \x20   d+=c\n\
                 sys.stdout.write(d[4:].decode())\n",
            )
            .arg(&socket)
            .output()
            .expect("setpriv (util-linux) and Debian's /usr/bin/python3 run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("uid 65534 may not configure"),
            "{text} {:?}",
            out
        );
        dp.wait_for(&["refused a peer running as another user", "peer_uid=65534"]);
    } else {
        // The same-uid check needs a second user; without root the file mode (0600) is what a
        // stranger meets, which the unit tests of dataplane::control check.
        eprintln!("not root: the other-user case is covered by the socket's mode only");
    }

    // The data plane still serves the agent.
    let mut agent = Proc::start(&mut agent(&conf, &socket, &["--once"]));
    dp.wait_for(&["snapshot applied", "generation=1"]);
    let status = agent.child.wait().expect("agent exits");
    assert!(status.success(), "{status:?}: {}", agent.seen.join("\n"));
}

#[test]
fn once_and_validate_exit_codes() {
    let (_tmp, conf, socket) = setup();
    // Nothing listening: --once gives up with 2.
    let out = agent(&conf, &socket, &["--once", "--connect-timeout-ms", "300"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let _dp = dataplane(&socket);
    let out = agent(&conf, &socket, &["--once"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied generation 1"));

    std::fs::write(conf.join("flows.yaml"), manifest("bad/#")).expect("write");
    let out = agent(&conf, &socket, &["--once"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    let validate = |format: &str| {
        Command::new(env!("CARGO_BIN_EXE_config-agent"))
            .args(["validate", "--format", format])
            .arg(&conf)
            .output()
            .expect("runs")
    };
    let out = validate("json");
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["valid"], false);
    let err = &doc["errors"][0];
    assert_eq!(
        err["path"], "spec.operations[1].destinationSettings.dataDestination",
        "{doc:#}"
    );
    assert!(err["line"].as_u64().is_some());
    let out = validate("text");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("flows.yaml:"));

    std::fs::write(conf.join("flows.yaml"), manifest("ok/${inputTopic}")).expect("write");
    assert_eq!(validate("text").status.code(), Some(0));
}

/// A frame of the control protocol: its 4-byte length, then the JSON.
fn frame(json: &str) -> Vec<u8> {
    let mut f = u32::try_from(json.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    f.extend_from_slice(json.as_bytes());
    f
}

#[test]
fn what_a_peer_says_is_escaped_in_the_log() {
    let (_tmp, _conf, socket) = setup();
    let mut dp = dataplane(&socket);
    let mut s = UnixStream::connect(&socket).expect("connect");
    let agent = r#"evil\n2026-12-02T00:00:00.000000Z  INFO FORGED: snapshot applied generation=99\u001b[2J"#;
    s.write_all(&frame(&format!(
        r#"{{"type":"Hello","versions":[1,2],"agent":"{agent}"}}"#
    )))
    .expect("hello");
    let line = dp.wait_for(&["agent connected"]);
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("the data plane answers");
    let mut welcome = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut welcome).expect("Welcome");
    assert!(
        line.contains(r"evil\n2026-12-02T00:00:00.000000Z  INFO FORGED")
            && line.contains(r"\u{1b}[2J"),
        "the agent string, escaped on one line: {line}"
    );
    drop(s);
    dp.wait_for(&["agent disconnected"]);
    assert!(
        !dp.seen
            .iter()
            .any(|l| l.starts_with("2026-12-02T00:00:00.000000Z")),
        "no forged line: {:#?}",
        dp.seen
    );
}

/// CPU seconds (user + system) the process `pid` has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}

/// Out of descriptors, `accept` fails for as long as connections wait in the backlog: the data
/// plane backs off (it used to retry at once: most of a core and a log line per try), logs at
/// most once a second, and serves the agent again once descriptors are free.
#[test]
#[allow(clippy::print_stderr)]
fn accept_errors_are_backed_off_and_logged_at_a_bounded_rate() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("prlimit (util-linux) is needed: it lowers the data plane's descriptor limit");
    }
    let (_tmp, conf, socket) = setup();
    let mut dp = dataplane(&socket);
    let pid = dp.child.id();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count();
    // Room for three more descriptors: three connections, then accept fails. (The soft limit
    // only, so that it can be raised again.)
    let limit = open + 3;
    let status = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:"))
        .status()
        .expect("prlimit runs");
    assert!(status.success(), "prlimit --pid {pid}");
    // Connections that say nothing: the first take the descriptors, the rest wait in the
    // backlog, and every accept fails with EMFILE.
    let held: Vec<UnixStream> = (0..12)
        .map(|_| UnixStream::connect(&socket).expect("connect (backlog)"))
        .collect();
    dp.wait_for(&["accept failed"]);
    let before = cpu_seconds(pid);
    let window = Duration::from_secs(3);
    let started = Instant::now();
    let mut failures_logged = 1;
    while started.elapsed() < window {
        if let Ok(line) = dp.lines.recv_timeout(Duration::from_millis(100)) {
            if line.contains("accept failed") {
                failures_logged += 1;
            }
            dp.seen.push(line);
        }
    }
    let used = cpu_seconds(pid) - before;
    eprintln!("accept failures: {failures_logged} log lines and {used:.2} CPU s in {window:?}");
    assert!(
        failures_logged <= 5,
        "logged at most once a second: {failures_logged} lines in {window:?}"
    );
    assert!(
        used < 1.0,
        "backed off, not spinning: {used:.2} CPU s in {window:?} (a retry loop takes a core)"
    );
    // Descriptors come back (the held connections go; the data plane also closes silent ones
    // at the Hello deadline): the agent is served again.
    drop(held);
    let status = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg("--nofile=1024:")
        .status()
        .expect("prlimit runs");
    assert!(status.success());
    let mut agent = Proc::start(&mut agent(&conf, &socket, &["--once"]));
    dp.wait_for(&["snapshot applied", "generation=1"]);
    let status = agent.child.wait().expect("agent exits");
    assert!(status.success(), "{status:?}: {}", agent.seen.join("\n"));
}
