//! `sluice-perf load`'s options, and what they turn into: broker addresses, the steps of the
//! schedule, payload sizes, topic patterns and the CI gate's thresholds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sluice_dataplane::net::address::parse_host_port;
use sluice_dataplane::net::transport::{ClientAuthFiles, WsSettings, client_config};

use super::schedule::Step;
use super::stamp::Format;

/// Publishers and subscribers against an MQTT broker (or through Sluice: publish to its source
/// broker, subscribe at its destination or read its Kafka topic) at a set, open-loop rate;
/// latency, loss, duplicates and order; reports and a CI gate. See docs/load-testing.md.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Broker of the publishers (and of the subscribers unless --sub-url):
    /// `mqtt://HOST:PORT`, `mqtts://` (TLS), `ws://HOST:PORT/PATH`, `wss://`.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub url: String,
    /// Broker of the subscribers, when not --url (the destination of a dataflow).
    #[arg(long)]
    pub sub_url: Option<String>,
    /// Publisher connections.
    #[arg(long, short = 'c', default_value_t = 1)]
    pub publishers: u32,
    /// Subscriber connections (default 1, or 0 with --kafka-bootstrap).
    #[arg(long, short = 's')]
    pub subscribers: Option<u32>,
    /// Total messages per second over all publishers; several, comma-separated, make a ramp of
    /// steps of --step-secs each. `max`: as fast as each connection goes.
    #[arg(long, short = 'r', default_value = "1000", value_delimiter = ',')]
    pub rate: Vec<String>,
    /// How long to publish (one rate), e.g. `60s`, `2m`.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// How long each step of a ramp lasts.
    #[arg(long, value_parser = parse_duration)]
    pub step_secs: Option<Duration>,
    /// Stop after this many messages in all (split over the publishers), even before the end.
    #[arg(long, short = 'n')]
    pub messages: Option<u64>,
    /// QoS of the publishes (0 or 1).
    #[arg(long, short = 'q', default_value_t = 1)]
    pub qos: u8,
    /// QoS of the subscriptions (default: --qos).
    #[arg(long)]
    pub sub_qos: Option<u8>,
    /// Payload size in bytes: `100`, a uniform range `100..1000`, or weighted sizes
    /// `100*9,4096*1`. At least 60 (the stamp) for text, 102 for JSON.
    #[arg(long, short = 'S', default_value = "100")]
    pub payload_bytes: String,
    /// Payload format: `text` (the stamp, then filler) or `json` (for dataflows that read it).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub payload_format: Format,
    /// Topic of the publishes; `%c` the publisher's number, `%i` its client id, `%s` the
    /// message's sequence number, `%r` a random number below --topic-random, `%%` a `%`.
    #[arg(long, short = 't', default_value = "sluice-perf/%c")]
    pub topic: String,
    /// Bound of `%r` in --topic.
    #[arg(long, default_value_t = 16)]
    pub topic_random: u32,
    /// Topic filters of the subscribers (comma-separated); a `$share/GROUP/` filter makes
    /// them one group that splits the messages.
    #[arg(long, default_value = "sluice-perf/#", value_delimiter = ',')]
    pub sub_topic: Vec<String>,
    /// Set RETAIN on the publishes.
    #[arg(long)]
    pub retain: bool,
    /// MQTT version: 3.1.1 (`3`) or 5.0 (`5`).
    #[arg(long, short = 'V', default_value = "5", value_parser = ["3", "3.1.1", "5", "5.0"])]
    pub protocol: String,
    /// Client ids are `<prefix>-p<N>` and `<prefix>-s<N>` (default `sluice-perf-<random>`).
    #[arg(long)]
    pub client_id_prefix: Option<String>,
    /// User name for every connection.
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Password (visible to other local users in the process list: prefer --password-file).
    #[arg(long, short = 'P', conflicts_with = "password_file")]
    pub password: Option<String>,
    /// File holding the password (a trailing newline is dropped).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) for TLS; default: the system's.
    #[arg(long)]
    pub cafile: Option<PathBuf>,
    /// Client certificate (PEM) for TLS.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for TLS.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Publisher window: QoS 1 messages awaiting PUBACK per connection (the broker's Receive
    /// Maximum lowers it); also the subscribers' Receive Maximum.
    #[arg(long, default_value_t = 1000)]
    pub max_inflight: u16,
    /// Keep Alive, seconds.
    #[arg(long, default_value_t = 30)]
    pub keep_alive: u16,
    /// Read the end of an MQTT -> Kafka dataflow: the Kafka bootstrap servers.
    #[arg(long, requires = "kafka_topic")]
    pub kafka_bootstrap: Option<String>,
    /// The Kafka topic to read (from its end at the start of the run).
    #[arg(long)]
    pub kafka_topic: Option<String>,
    /// librdkafka settings for the Kafka reader, `key=value` (repeatable), e.g.
    /// `security.protocol=ssl`.
    #[arg(long = "kafka-set", value_name = "KEY=VALUE")]
    pub kafka_set: Vec<String>,
    /// Worker threads (one event loop each; connections spread over them).
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
    /// Pin each worker thread to one CPU of this process's set.
    #[arg(long)]
    pub pin: bool,
    /// I/O driver of the workers.
    #[arg(long, value_enum, default_value_t = sluice_dataplane::bench_support::load::IoDriver::Auto)]
    pub io_driver: sluice_dataplane::bench_support::load::IoDriver,
    /// How publishers wait for their next send time: `precise` (a timer thread per worker,
    /// tens of microseconds late; costs a thread wake-up per wait), `wheel` (the event loop's
    /// own 1 ms timer: much less CPU from a few thousand messages a second, and up to 2 ms
    /// late, which the latency then includes: see "publisher lateness" in the report), or
    /// `auto`: precise for a worker offered at most 2,000 messages a second.
    #[arg(long, value_enum, default_value_t = TimerChoice::Auto)]
    pub timer: TimerChoice,
    /// How long to wait after the last publish for messages still under way.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain: Duration,
    /// How long connecting and subscribing may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Write report.md, report.json and SVG charts into this folder (created).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Fail (exit status 1) when p50 latency is above this, e.g. `5ms`.
    #[arg(long, value_parser = parse_duration)]
    pub max_p50: Option<Duration>,
    /// Fail when p99 latency is above this.
    #[arg(long, value_parser = parse_duration)]
    pub max_p99: Option<Duration>,
    /// Fail when p99.9 latency is above this.
    #[arg(long, value_parser = parse_duration)]
    pub max_p999: Option<Duration>,
    /// Fail when the largest latency is above this.
    #[arg(long, value_parser = parse_duration)]
    pub max_latency: Option<Duration>,
    /// Fail when more messages are lost: a count (`0`) or a share of those sent (`0.1%`).
    #[arg(long)]
    pub max_loss: Option<String>,
    /// Fail when more messages arrive twice (a count or a share).
    #[arg(long)]
    pub max_duplicates: Option<String>,
    /// Fail when more messages arrive after a later one of their publisher (a count or a
    /// share).
    #[arg(long)]
    pub max_reordered: Option<String>,
    /// Fail when fewer messages a second were received (mean over the publishing time).
    #[arg(long)]
    pub min_rate: Option<f64>,
    /// Fail when the publishers sent less than this share of the offered load (e.g. `99%`):
    /// the load generator or the broker could not keep up.
    #[arg(long)]
    pub min_sent: Option<String>,
    /// Fail when any connection was lost during the run (it is always reported).
    #[arg(long)]
    pub fail_on_disconnect: bool,
}

/// `--timer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimerChoice {
    /// Precise up to 2,000 messages a second per worker, the wheel above.
    Auto,
    /// Always the timer thread.
    Precise,
    /// Always the wheel.
    Wheel,
}

/// How a worker's publishers wait for their next send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// A timer thread per worker.
    Precise,
    /// The event loop's 1 ms timer wheel.
    Wheel,
}

/// Parses `250us`, `5ms`, `1.5s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("`{s}`: not a duration (e.g. 250us, 5ms, 1.5s, 2m)"))?;
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => return Err(format!("`{s}`: unknown unit `{u}` (ns, us, ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(n * scale).map_err(|e| format!("`{s}`: {e}"))
}

/// A threshold on a count: absolute or a share of a total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// At most this many.
    Count(u64),
    /// At most this fraction (0..=1) of the total.
    Share(f64),
}

impl Limit {
    /// Parses `5` or `0.1%`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .with_context(|| format!("`{s}`: not a share"))?;
            if !(0.0..=100.0).contains(&v) {
                bail!("`{s}`: a share is between 0% and 100%");
            }
            Ok(Self::Share(v / 100.0))
        } else {
            Ok(Self::Count(s.parse().with_context(|| {
                format!("`{s}`: not a count or a share such as 0.1%")
            })?))
        }
    }

    /// Whether `n` of `total` is within the limit.
    pub fn allows(self, n: u64, total: u64) -> bool {
        match self {
            Self::Count(c) => n <= c,
            Self::Share(f) => n as f64 <= f * total as f64,
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Count(c) => write!(f, "{c}"),
            Self::Share(s) => write!(f, "{}%", s * 100.0),
        }
    }
}

/// Payload sizes.
#[derive(Debug, Clone, PartialEq)]
pub enum Sizes {
    /// Always this size.
    Fixed(usize),
    /// Uniform over `min..=max`.
    Uniform(usize, usize),
    /// Sizes with cumulative weights (the last is the total).
    Weighted(Vec<(usize, u32)>),
}

impl Sizes {
    /// Parses `100`, `100..1000` or `100*9,4096*1`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let num = |t: &str| -> anyhow::Result<usize> {
            t.trim()
                .parse()
                .with_context(|| format!("payload size `{t}`: not a number of bytes"))
        };
        if let Some((a, b)) = s.split_once("..") {
            let (a, b) = (num(a)?, num(b.trim_start_matches('='))?);
            if a > b {
                bail!("payload sizes `{s}`: the range is empty");
            }
            return Ok(Self::Uniform(a, b));
        }
        if s.contains('*') || s.contains(',') {
            let mut total = 0u32;
            let mut v = Vec::new();
            for part in s.split(',') {
                let (size, weight) = part.split_once('*').unwrap_or((part, "1"));
                let weight: u32 = weight
                    .trim()
                    .parse()
                    .with_context(|| format!("payload size weight `{weight}`"))?;
                total = total.checked_add(weight).context("weights too large")?;
                v.push((num(size)?, total));
            }
            if total == 0 {
                bail!("payload sizes `{s}`: the weights add up to 0");
            }
            return Ok(Self::Weighted(v));
        }
        Ok(Self::Fixed(num(s)?))
    }

    /// The smallest and largest sizes.
    pub fn bounds(&self) -> (usize, usize) {
        match self {
            Self::Fixed(n) => (*n, *n),
            Self::Uniform(a, b) => (*a, *b),
            Self::Weighted(v) => (
                v.iter().map(|p| p.0).min().unwrap_or(0),
                v.iter().map(|p| p.0).max().unwrap_or(0),
            ),
        }
    }

    /// A size drawn from the distribution.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        match self {
            Self::Fixed(n) => *n,
            Self::Uniform(a, b) => rng.usize(*a..=*b),
            Self::Weighted(v) => {
                let total = v.last().map_or(1, |p| p.1);
                let x = rng.u32(0..total);
                v.iter().find(|p| x < p.1).map_or(0, |p| p.0)
            }
        }
    }
}

/// One part of a topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPart {
    /// Literal text.
    Lit(String),
    /// `%c`: the publisher's number.
    Publisher,
    /// `%i`: its client id.
    ClientId,
    /// `%s`: the message's sequence number.
    Seq,
    /// `%r`: a random number.
    Random,
}

/// A topic pattern (see `--topic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern(pub Vec<TopicPart>);

impl TopicPattern {
    /// Parses a pattern.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                lit.push(c);
                continue;
            }
            let part = match chars.next() {
                Some('%') => {
                    lit.push('%');
                    continue;
                }
                Some('c') => TopicPart::Publisher,
                Some('i') => TopicPart::ClientId,
                Some('s') => TopicPart::Seq,
                Some('r') => TopicPart::Random,
                other => bail!(
                    "topic `{s}`: `%{}` is not a placeholder (%c, %i, %s, %r, %%)",
                    other.map(String::from).unwrap_or_default()
                ),
            };
            if !lit.is_empty() {
                parts.push(TopicPart::Lit(std::mem::take(&mut lit)));
            }
            parts.push(part);
        }
        if !lit.is_empty() {
            parts.push(TopicPart::Lit(lit));
        }
        if s.contains(['+', '#']) || s.is_empty() {
            bail!("topic `{s}`: a topic name is not empty and has no wildcards");
        }
        Ok(Self(parts))
    }

    /// Whether a message's own parts (`%s`, `%r`) appear, so that the topic is built per message.
    pub fn per_message(&self) -> bool {
        self.0
            .iter()
            .any(|p| matches!(p, TopicPart::Seq | TopicPart::Random))
    }

    /// The topic for a publisher's message.
    pub fn render(&self, publisher: u32, client_id: &str, seq: u64, random: u32, out: &mut String) {
        use std::fmt::Write;
        for p in &self.0 {
            let _ = match p {
                TopicPart::Lit(s) => {
                    out.push_str(s);
                    Ok(())
                }
                TopicPart::Publisher => write!(out, "{publisher}"),
                TopicPart::ClientId => {
                    out.push_str(client_id);
                    Ok(())
                }
                TopicPart::Seq => write!(out, "{seq}"),
                TopicPart::Random => write!(out, "{random}"),
            };
        }
    }
}

/// Where a side connects.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// As given.
    pub url: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS: the client configuration and the server's name.
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// WebSocket settings.
    pub ws: Option<WsSettings>,
}

impl Endpoint {
    /// Parses a `mqtt://`, `mqtts://`, `ws://` or `wss://` URL, reading the TLS files.
    pub fn parse(url: &str, a: &LoadArgs) -> anyhow::Result<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .with_context(|| format!("`{url}`: expected mqtt://, mqtts://, ws:// or wss://"))?;
        let (tls, ws, default_port) = match scheme {
            "mqtt" | "tcp" => (false, false, 1883),
            "mqtts" | "ssl" | "tls" => (true, false, 8883),
            "ws" => (false, true, 80),
            "wss" => (true, true, 443),
            s => bail!("`{url}`: unknown scheme `{s}` (mqtt, mqtts, ws, wss)"),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if !ws && path != "/" {
            bail!("`{url}`: a path is for WebSocket URLs only");
        }
        let (host, port, server_name) =
            parse_host_port(authority, default_port).with_context(|| format!("`{url}`"))?;
        let tls = if tls {
            let auth = match (&a.cert, &a.key) {
                (Some(cert), Some(key)) => Some(ClientAuthFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    intermediates: None,
                }),
                _ => None,
            };
            let cas = a.cafile.clone().map(|f| vec![f]);
            let config = client_config(cas.as_deref(), auth).context("TLS configuration")?;
            Some((config, server_name))
        } else {
            None
        };
        let ws = ws.then(|| {
            let mut s = WsSettings::new(format!(
                "{}:{port}",
                if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                }
            ));
            s.path = path.to_owned();
            s
        });
        Ok(Self {
            url: url.to_owned(),
            host,
            port,
            tls,
            ws,
        })
    }
}

/// The steps of the run from `--rate`, `--duration` and `--step-secs`.
pub fn steps(a: &LoadArgs) -> anyhow::Result<Vec<Step>> {
    if a.rate.is_empty() {
        bail!("--rate: at least one rate");
    }
    let each = match (a.rate.len(), a.step_secs) {
        (1, _) => a.duration,
        (_, Some(d)) => d,
        (n, None) => a.duration / n as u32,
    };
    if each.is_zero() {
        bail!("--duration: a step lasts more than 0 s");
    }
    a.rate
        .iter()
        .map(|r| {
            let rate = match r.trim() {
                "max" | "unlimited" => None,
                t => {
                    let v: f64 = t
                        .parse()
                        .with_context(|| format!("--rate `{t}`: messages per second, or max"))?;
                    if !(v > 0.0 && v.is_finite()) {
                        bail!("--rate `{t}`: more than 0");
                    }
                    Some(v)
                }
            };
            Ok(Step {
                rate,
                duration_ns: u64::try_from(each.as_nanos()).unwrap_or(u64::MAX),
            })
        })
        .collect()
}

/// The password from `--password` or `--password-file`.
pub fn password(a: &LoadArgs) -> anyhow::Result<Option<bytes::Bytes>> {
    if let Some(p) = &a.password {
        return Ok(Some(bytes::Bytes::from(p.clone().into_bytes())));
    }
    let Some(f) = &a.password_file else {
        return Ok(None);
    };
    let mut s = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
    while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        s.pop();
    }
    Ok(Some(bytes::Bytes::from(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_limits_and_sizes_parse() {
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(Limit::parse("0").unwrap(), Limit::Count(0));
        assert_eq!(Limit::parse("0.5%").unwrap(), Limit::Share(0.005));
        assert!(Limit::parse("101%").is_err());
        assert!(Limit::Share(0.01).allows(10, 1000));
        assert!(!Limit::Share(0.01).allows(11, 1000));
        assert_eq!(Sizes::parse("100").unwrap(), Sizes::Fixed(100));
        assert_eq!(Sizes::parse("10..20").unwrap(), Sizes::Uniform(10, 20));
        assert_eq!(
            Sizes::parse("100*9,4096*1").unwrap(),
            Sizes::Weighted(vec![(100, 9), (4096, 10)])
        );
        assert!(Sizes::parse("20..10").is_err());
        let mut rng = fastrand::Rng::with_seed(1);
        let w = Sizes::parse("100*9,4096*1").unwrap();
        let big = (0..10_000).filter(|_| w.sample(&mut rng) == 4096).count();
        assert!((700..1300).contains(&big), "{big}");
    }

    #[test]
    fn topic_patterns_render_their_parts() {
        let p = TopicPattern::parse("a/%c/%i/%s/%r/100%%").unwrap();
        assert!(p.per_message());
        let mut s = String::new();
        p.render(3, "id", 42, 7, &mut s);
        assert_eq!(s, "a/3/id/42/7/100%");
        assert!(!TopicPattern::parse("a/%c").unwrap().per_message());
        assert!(TopicPattern::parse("a/%x").is_err());
        assert!(TopicPattern::parse("a/#").is_err());
    }
}
