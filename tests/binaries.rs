//! What every binary shares: `--version` names the package version and the commit it was
//! built from (build-support/version.rs): `<name> 0.1.0 (<12 hex digits>)`, or `(unknown)`
//! outside a git checkout; and `--log-format json` writes one JSON object per log line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn every_binary_names_its_version_and_commit() {
    for (name, exe) in [
        ("dataplane", env!("CARGO_BIN_EXE_dataplane")),
        ("config-agent", env!("CARGO_BIN_EXE_config-agent")),
        ("mqtt-inspect", env!("CARGO_BIN_EXE_mqtt-inspect")),
    ] {
        let out = Command::new(exe).arg("--version").output().expect("runs");
        assert!(out.status.success(), "{name} --version");
        let text = String::from_utf8(out.stdout).expect("UTF-8");
        let rest = text
            .trim()
            .strip_prefix(&format!("{name} {} (", env!("CARGO_PKG_VERSION")))
            .unwrap_or_else(|| panic!("{name}: {text}"));
        let hash = rest.strip_suffix(')').expect("closing parenthesis");
        assert!(
            hash == "unknown" || (hash.len() == 12 && hash.chars().all(|c| c.is_ascii_hexdigit())),
            "{name}: {text}"
        );
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The data plane logs its start-up; the agent logs that the socket is not there yet.
    let socket = dir.path().join("control.sock");
    let runs: [(&str, Vec<std::ffi::OsString>); 2] = [
        (
            env!("CARGO_BIN_EXE_dataplane"),
            vec![
                "--control-socket".into(),
                socket.clone().into(),
                "--metrics-addr".into(),
                "127.0.0.1:0".into(),
                "--cores".into(),
                "1".into(),
                "--log-format".into(),
                "json".into(),
            ],
        ),
        (
            env!("CARGO_BIN_EXE_config-agent"),
            vec![
                "run".into(),
                "--config-dir".into(),
                dir.path().into(),
                "--control-socket".into(),
                dir.path().join("nobody.sock").into(),
                "--log-format".into(),
                "json".into(),
            ],
        ),
    ];
    for (exe, args) in runs {
        let mut child = Command::new(exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let mut line = String::new();
        BufReader::new(child.stderr.take().expect("stderr"))
            .read_line(&mut line)
            .expect("a log line");
        let _ = child.kill();
        let _ = child.wait();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{exe}: {e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
        assert!(v["timestamp"].is_string(), "{line}");
    }
}

#[test]
fn the_metrics_say_what_the_data_plane_is() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .arg("--control-socket")
        .arg(dir.path().join("control.sock"))
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--cores",
            "1",
            "--pin",
            "never",
        ])
        .args(["--io-driver", "epoll", "--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l).ok()?;
            (v["fields"]["message"] == "metrics listening")
                .then(|| v["fields"]["addr"].as_str().map(str::to_owned))?
        })
        .expect("the metrics address is logged");
    let want = format!(
        "sluice_build_info{{version=\"{}\",commit=\"",
        env!("CARGO_PKG_VERSION")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let body = loop {
        let mut s = std::net::TcpStream::connect(&addr).expect("connects");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("request");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        // The build info once the workers started, and a worker's CPU time once its thread
        // has named itself.
        let worker = "sluice_worker_cpu_seconds_total{core=\"0\"} ";
        if (body.contains(&want) && body.contains(worker)) || std::time::Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = body
        .lines()
        .find(|l| l.starts_with("sluice_build_info{"))
        .unwrap_or_else(|| panic!("no sluice_build_info in\n{body}"));
    assert!(line.starts_with(&want), "{line}");
    assert!(
        line.ends_with(",io_driver=\"epoll\",cores=\"1\",pinned=\"false\"} 1"),
        "{line}"
    );
    // Every family is documented in docs/operations.md, and the Grafana dashboard uses only
    // families that exist.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let families: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.len() > 20, "{body}");
    let ops = std::fs::read_to_string(root.join("docs/operations.md")).expect("operations.md");
    for f in &families {
        assert!(
            ops.contains(&format!("`{f}`")),
            "{f} is not in docs/operations.md's table"
        );
    }
    let dashboard =
        std::fs::read_to_string(root.join("deploy/grafana-dashboard.json")).expect("dashboard");
    let v: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    for p in v["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("sluice_") || word.starts_with("process_") {
                    let family = word.strip_suffix("_bucket").unwrap_or(word);
                    assert!(
                        families.contains(&family),
                        "the dashboard uses {word}, not served"
                    );
                }
            }
        }
    }
    // The process's own figures and the one worker's CPU time.
    for name in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
        "sluice_worker_cpu_seconds_total{core=\"0\"} ",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(name)),
            "{name} in\n{body}"
        );
    }
}

#[test]
fn completions_and_man_pages_are_generated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-gen"))
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("sluice-gen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["dataplane", "config-agent", "mqtt-inspect"] {
        let bash = dir.path().join(format!("completions/bash/{name}.bash"));
        let text = std::fs::read_to_string(&bash).expect("bash completion");
        assert!(text.contains("--version"), "{name}");
        let check = Command::new("bash")
            .arg("-n")
            .arg(&bash)
            .status()
            .expect("bash");
        assert!(check.success(), "{name}: bash -n");
        for f in [
            format!("completions/zsh/_{name}"),
            format!("completions/fish/{name}.fish"),
        ] {
            assert!(dir.path().join(&f).is_file(), "{f}");
        }
        let man = std::fs::read_to_string(dir.path().join(format!("man/man1/{name}.1")))
            .expect("man page");
        assert!(man.contains(&format!(".TH {name} 1")), "{name}: {man}");
    }
    let dataplane = std::fs::read_to_string(dir.path().join("man/man1/dataplane.1")).expect("page");
    assert!(dataplane.contains("control\\-socket"), "options are listed");
    assert!(dir.path().join("man/man1/config-agent-run.1").is_file());
}
