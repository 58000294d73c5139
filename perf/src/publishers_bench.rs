//! `sluice-perf publishers`: how fast a publisher can go, side by side in one run. Each tool
//! publishes into a fresh replay broker's sink (which acknowledges at once and counts what it
//! gets, so the broker is not the limit): `sluice-perf load` (open loop at `--rate max`), the
//! `mqtt-benchmark` crate (installed into `.tools/` by `cargo install`) and `mosquitto_pub -l`.
//! For each: the rate at the sink (received over the time between its first and last PUBLISH),
//! the wall time including connecting, and the tool's CPU seconds per million messages (from
//! `/proc`, read when it has exited and before it is reaped).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use sluice_codec::QoS;

use crate::payload;
use crate::procstat::{clock_ticks_per_second, cpu_ticks};
use crate::replay::{ReplayBroker, ReplayConfig};

/// Options of `sluice-perf publishers`.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishersArgs {
    /// Messages per run of `sluice-perf load` and `mqtt-benchmark`.
    #[arg(long, default_value_t = 2_000_000)]
    pub messages: u64,
    /// Messages per run of `mosquitto_pub -l` (slower).
    #[arg(long, default_value_t = 200_000)]
    pub mosquitto_pub_messages: u64,
    /// Publisher connections (`mosquitto_pub` has one).
    #[arg(long, default_value_t = 2)]
    pub clients: u32,
    /// Payload bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// QoS (0 or 1).
    #[arg(long, default_value_t = 1)]
    pub qos: u8,
    /// Runs of each tool, alternating.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// `sluice-perf` worker threads.
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
    /// The `mqtt-benchmark` program (default: `.tools/bin/mqtt-benchmark`, then PATH).
    #[arg(long)]
    pub mqtt_benchmark: Option<PathBuf>,
    /// The `mosquitto_pub` program.
    #[arg(long, default_value = "mosquitto_pub")]
    pub mosquitto_pub: PathBuf,
    /// Only these tools (comma-separated: sluice-perf, mqtt-benchmark, mosquitto_pub).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Folder for the tools' logs and payload files (default: a temporary one).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// One run of one tool.
#[derive(Debug, Clone)]
pub struct PublisherRun {
    /// The tool.
    pub tool: String,
    /// Messages the sink received.
    pub received: u64,
    /// Received per second between the first and the last PUBLISH at the sink.
    pub sink_rate: f64,
    /// Seconds from the start of the tool to its exit.
    pub wall_secs: f64,
    /// CPU seconds of the tool per million messages received.
    pub cpu_per_million: f64,
}

const TOOLS: [&str; 3] = ["sluice-perf", "mqtt-benchmark", "mosquitto_pub"];

/// Runs the comparison and prints a table.
///
/// # Errors
/// When a tool cannot be started or fails, or the sink misses messages.
pub fn run(a: &PublishersArgs, out: &mut dyn Write) -> anyhow::Result<Vec<PublisherRun>> {
    let qos = match a.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        q => bail!("--qos {q}: 0 or 1"),
    };
    let tmp = tempfile::tempdir()?;
    let dir = a.work_dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let me = std::env::current_exe().context("finding sluice-perf")?;
    let mqtt_benchmark = a.mqtt_benchmark.clone().unwrap_or_else(|| {
        let local = PathBuf::from(".tools/bin/mqtt-benchmark");
        if local.exists() {
            local
        } else {
            PathBuf::from("mqtt-benchmark")
        }
    });
    let tools: Vec<&str> = TOOLS
        .into_iter()
        .filter(|t| a.only.is_empty() || a.only.iter().any(|o| o == t))
        .collect();
    // mosquitto_pub -l reads one message per line: sequence-numbered payloads.
    let lines = dir.join("payloads.txt");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&lines)?);
        let mut p = payload::template(a.payload_bytes.max(payload::MIN_PAYLOAD_BYTES))
            .context("payload size")?;
        for seq in 0..a.mosquitto_pub_messages {
            payload::write_seq(&mut p, seq);
            f.write_all(&p)?;
            f.write_all(b"\n")?;
        }
    }
    let filler = "x".repeat(a.payload_bytes);
    let mut results = Vec::new();
    writeln!(
        out,
        "| tool | run | messages | rate at the sink (msg/s) | wall (s) | CPU s per million |\n|---|---:|---:|---:|---:|---:|"
    )?;
    for run in 1..=a.runs {
        for &tool in &tools {
            let n = if tool == "mosquitto_pub" {
                a.mosquitto_pub_messages
            } else {
                a.messages
            };
            let broker = ReplayBroker::start(ReplayConfig {
                port: 0,
                sink_port: Some(0),
                messages: n.max(1),
                payload_bytes: a.payload_bytes.max(payload::MIN_PAYLOAD_BYTES),
                qos,
                start_released: true,
                ..ReplayConfig::default()
            })?;
            let sink = broker.sink_addr();
            let log = dir.join(format!("{tool}-{run}.log"));
            let mut cmd;
            let mut feed = None;
            match tool {
                "sluice-perf" => {
                    cmd = Command::new(&me);
                    cmd.args(["load", "--quiet", "--url"])
                        .arg(format!("mqtt://{sink}"))
                        .args([
                            "-s",
                            "0",
                            "-r",
                            "max",
                            "-d",
                            "120s",
                            "--max-inflight",
                            "65535",
                        ])
                        .arg("-c")
                        .arg(a.clients.to_string())
                        .arg("-n")
                        .arg(n.to_string())
                        .arg("-q")
                        .arg(a.qos.to_string())
                        .arg("--cores")
                        .arg(a.cores.to_string())
                        .arg("--payload-bytes")
                        .arg(
                            a.payload_bytes
                                .max(crate::load::stamp::TEXT_LEN)
                                .to_string(),
                        );
                }
                "mqtt-benchmark" => {
                    cmd = Command::new(&mqtt_benchmark);
                    let per_client = n / u64::from(a.clients.max(1));
                    cmd.arg("-b")
                        .arg(sink.to_string())
                        .arg("-C")
                        .arg(a.clients.to_string())
                        .arg("-s")
                        .arg(per_client.to_string())
                        .arg("-q")
                        .arg(a.qos.to_string())
                        .arg("-P")
                        .arg(&filler);
                }
                _ => {
                    cmd = Command::new(&a.mosquitto_pub);
                    cmd.args(["-h", "127.0.0.1", "-p"])
                        .arg(sink.port().to_string())
                        .args(["-t", "bench/pub", "-l", "-V", "mqttv5", "-q"])
                        .arg(a.qos.to_string());
                    feed = Some(lines.clone());
                }
            }
            let r = measure(tool, &mut cmd, feed.as_deref(), &log, &broker, n)
                .with_context(|| format!("{tool}, run {run}; log {}", log.display()))?;
            writeln!(
                out,
                "| {} | {run} | {} | {:.0} | {:.2} | {:.2} |",
                r.tool, r.received, r.sink_rate, r.wall_secs, r.cpu_per_million
            )?;
            out.flush()?;
            broker.shutdown();
            results.push(r);
        }
    }
    if let Some(p) = &a.json {
        let v: Vec<_> = results
            .iter()
            .map(|r| {
                json!({"tool": r.tool, "received": r.received, "sink_rate": r.sink_rate,
                    "wall_secs": r.wall_secs, "cpu_secs_per_million": r.cpu_per_million})
            })
            .collect();
        std::fs::write(p, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(results)
}

/// Runs `cmd` until it exits. With `feed`, the file is written to its stdin, which is closed
/// only once the sink has every message: `mosquitto_pub -l` ends at the end of its input and
/// drops what it has not sent by then.
fn measure(
    tool: &str,
    cmd: &mut Command,
    feed: Option<&Path>,
    log: &Path,
    broker: &ReplayBroker,
    n: u64,
) -> anyhow::Result<PublisherRun> {
    let logf = std::fs::File::create(log)?;
    let started = Instant::now();
    let mut child = cmd
        .stdin(if feed.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let pid = child.id();
    let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
    if let (Some(path), Some(mut stdin)) = (feed, child.stdin.take()) {
        let mut file = std::fs::File::open(path)?;
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut file, &mut stdin);
            let _ = close_rx.recv();
        });
    }
    let mut close = Some(close_tx);
    let deadline = started + Duration::from_secs(300);
    // Wait for it to exit (a zombie keeps its CPU times in /proc until reaped).
    loop {
        if close.is_some() && broker.stats().received >= n {
            close = None; // ends the feeding thread: stdin closes
        }
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if zombie {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("still running after 300 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall_secs = started.elapsed().as_secs_f64();
    let ticks = cpu_ticks(pid)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("{tool} exited with {status}");
    }
    // What is still under way reaches the sink within a moment.
    let settle = Instant::now() + Duration::from_secs(5);
    while broker.stats().received < n && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = broker.stats();
    if st.received < n {
        bail!("the sink received {} of {n}", st.received);
    }
    let cpu = ticks as f64 / clock_ticks_per_second() as f64;
    Ok(PublisherRun {
        tool: tool.to_owned(),
        received: st.received,
        sink_rate: st.received_per_sec().unwrap_or(0.0),
        wall_secs,
        cpu_per_million: cpu / st.received as f64 * 1e6,
    })
}
