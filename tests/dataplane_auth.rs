//! MQTT 5.0 enhanced authentication end to end: `config-agent` and `dataplane` as real processes
//! against a fake MQTT 5 broker (built on the codec; mosquitto cannot do enhanced
//! authentication) and a stand-in IMDS endpoint.
//!
//! - `ServiceAccountToken` on the source: CONNECT carries method `K8S-SAT` and the content of
//!   `<token-dir>/<audience>` (trailing newline trimmed), read again before every connection.
//! - `SystemAssignedManagedIdentity` on the destination: the data plane GETs a token from IMDS
//!   (`Metadata: true`), CONNECT carries method `OAUTH2-JWT` and the `access_token`; a reconnect
//!   reuses the cached token while it is far from expiry.
//! - Messages flow through the authenticated connections, before and after a reconnect.
//! - A refused service account token (CONNACK 0x87) is retried, and the rotated file is used.
//! - A refused managed identity token is fetched again: the next connection presents a new one.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use sluice_codec::{
    ByteStr, Codec, ConnAck, Packet, ProtocolVersion, PubAck, Publish, PublishProperties, QoS,
    ReasonCode, Role, SubAck,
};

/// How long any one expectation may take.
const WAIT: Duration = Duration::from_secs(10);
const RESOURCE: &str = "https://eventgrid.azure.net";

/// The token the IMDS stand-in hands out for its `n`th request (from 1).
fn imds_token(n: usize) -> String {
    format!("imds-access-token-{n}")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ------------------------------------------------------------------------------------------
// Fake MQTT 5 broker
// ------------------------------------------------------------------------------------------

/// What a client did, in arrival order. `conn` numbers the accepted connections.
#[derive(Debug, Clone)]
#[allow(
    dead_code,
    reason = "some fields are only shown by Debug, in failure messages"
)]
enum Seen {
    Connect {
        conn: usize,
        client_id: String,
        protocol: ProtocolVersion,
        method: Option<String>,
        data: Option<Bytes>,
        /// Answered with CONNACK Not authorized (0x87).
        refused: bool,
    },
    Subscribe {
        conn: usize,
        filters: Vec<String>,
    },
    Publish {
        conn: usize,
        topic: String,
        payload: Bytes,
        qos: QoS,
    },
    PubAck {
        conn: usize,
        packet_id: u16,
    },
    Other {
        conn: usize,
        packet: String,
    },
    Closed {
        conn: usize,
        why: String,
    },
}

/// A live connection: its writer (shared by its thread and the test), and who it is.
struct Live {
    conn: usize,
    client_id: String,
    writer: Arc<Mutex<TcpStream>>,
}

#[derive(Default)]
struct BrokerState {
    seen: Mutex<Vec<Seen>>,
    live: Mutex<Vec<Live>>,
    next_conn: AtomicUsize,
    /// Authentication data answered with CONNACK Not authorized (0x87).
    refuse: Mutex<Vec<Vec<u8>>>,
}

struct FakeBroker {
    addr: SocketAddr,
    state: Arc<BrokerState>,
}

impl FakeBroker {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake broker");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(BrokerState::default());
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let conn = st.next_conn.fetch_add(1, Ordering::SeqCst);
                let st = Arc::clone(&st);
                std::thread::spawn(move || serve_mqtt(&st, conn, stream));
            }
        });
        Self { addr, state }
    }

    /// Refuses CONNECTs whose authentication data is `token` from now on.
    fn refuse(&self, token: &str) {
        lock(&self.state.refuse).push(token.as_bytes().to_vec());
    }

    fn seen(&self) -> Vec<Seen> {
        lock(&self.state.seen).clone()
    }

    /// Closes every live connection (the data plane must reconnect).
    fn drop_all(&self) {
        for l in lock(&self.state.live).drain(..) {
            let _ = lock(&l.writer).shutdown(Shutdown::Both);
        }
    }

    /// Sends a QoS 1 PUBLISH to the live connection whose client id ends with `suffix`.
    fn publish_to(&self, suffix: &str, topic: &str, payload: &[u8], packet_id: u16) {
        let live = lock(&self.state.live);
        let l = live
            .iter()
            .rev()
            .find(|l| l.client_id.ends_with(suffix))
            .unwrap_or_else(|| panic!("no live connection of a client *{suffix}"));
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: ByteStr::from(topic.to_owned()),
            packet_id: NonZeroU16::new(packet_id),
            properties: PublishProperties::new(),
            payload: Bytes::copy_from_slice(payload),
        };
        let mut buf = BytesMut::new();
        Codec::new(Role::Server, ProtocolVersion::V5)
            .encode(&Packet::Publish(publish), &mut buf)
            .expect("encode PUBLISH");
        lock(&l.writer)
            .write_all(&buf)
            .expect("write PUBLISH to the data plane");
    }
}

fn serve_mqtt(st: &BrokerState, conn: usize, mut stream: TcpStream) {
    let writer = Arc::new(Mutex::new(stream.try_clone().expect("clone the stream")));
    let mut codec = Codec::server_awaiting_connect();
    let mut buf = BytesMut::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let record = |s: Seen| lock(&st.seen).push(s);
    let why = 'outer: loop {
        loop {
            let packet = match codec.decode(&mut buf) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => break 'outer format!("decode error: {e}"),
            };
            let mut out = BytesMut::new();
            let reply = match packet {
                Packet::Connect(c) => {
                    let method = c
                        .properties
                        .authentication_method
                        .as_ref()
                        .map(|m| m.as_str().to_owned());
                    let client_id = c.client_id.as_str().to_owned();
                    let data = c.properties.authentication_data.clone();
                    let refused = data
                        .as_ref()
                        .is_some_and(|d| lock(&st.refuse).iter().any(|r| r[..] == d[..]));
                    record(Seen::Connect {
                        conn,
                        client_id: client_id.clone(),
                        protocol: c.protocol,
                        method,
                        data,
                        refused,
                    });
                    if refused {
                        let mut nack = ConnAck::new(false);
                        nack.reason_code = ReasonCode::NOT_AUTHORIZED;
                        if let Err(e) = codec.encode(&Packet::ConnAck(nack), &mut out) {
                            break 'outer format!("encode error: {e}");
                        }
                        let _ = lock(&writer).write_all(&out);
                        break 'outer "refused".to_owned();
                    }
                    lock(&st.live).push(Live {
                        conn,
                        client_id,
                        writer: Arc::clone(&writer),
                    });
                    let mut ack = ConnAck::new(false);
                    // [MQTT-4.12.0-5]: the CONNACK of an enhanced authentication carries the
                    // same method.
                    ack.properties.authentication_method = c.properties.authentication_method;
                    Some(Packet::ConnAck(ack))
                }
                Packet::Subscribe(s) => {
                    record(Seen::Subscribe {
                        conn,
                        filters: s
                            .filters
                            .iter()
                            .map(|f| f.filter.as_str().to_owned())
                            .collect(),
                    });
                    Some(Packet::SubAck(SubAck {
                        packet_id: s.packet_id,
                        properties: Default::default(),
                        reason_codes: vec![ReasonCode::GRANTED_QOS_1; s.filters.len()],
                    }))
                }
                Packet::Publish(p) => {
                    let ack = p.packet_id.map(|id| Packet::PubAck(PubAck::new(id)));
                    record(Seen::Publish {
                        conn,
                        topic: p.topic.as_str().to_owned(),
                        payload: p.payload,
                        qos: p.qos,
                    });
                    ack
                }
                Packet::PubAck(a) => {
                    record(Seen::PubAck {
                        conn,
                        packet_id: a.packet_id.get(),
                    });
                    None
                }
                Packet::PingReq => Some(Packet::PingResp),
                Packet::Disconnect(_) => break 'outer "DISCONNECT".to_owned(),
                other => {
                    record(Seen::Other {
                        conn,
                        packet: format!("{other:?}"),
                    });
                    None
                }
            };
            if let Some(reply) = reply {
                if let Err(e) = codec.encode(&reply, &mut out) {
                    break 'outer format!("encode error: {e}");
                }
                if let Err(e) = lock(&writer).write_all(&out) {
                    break 'outer format!("write error: {e}");
                }
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => break "end of stream".to_owned(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break format!("read error: {e}"),
        }
    };
    lock(&st.live).retain(|l| l.conn != conn);
    let _ = stream.shutdown(Shutdown::Both);
    record(Seen::Closed { conn, why });
}

// ------------------------------------------------------------------------------------------
// IMDS stand-in
// ------------------------------------------------------------------------------------------

struct Imds {
    addr: SocketAddr,
    /// Every request head received (request line and headers).
    requests: Arc<Mutex<Vec<String>>>,
}

impl Imds {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the IMDS stand-in");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match stream.read(&mut byte) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&byte[..n]),
                    }
                }
                let n = {
                    let mut reqs = lock(&reqs);
                    reqs.push(String::from_utf8_lossy(&head).into_owned());
                    reqs.len()
                };
                let token = imds_token(n);
                let expires_on = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("clock")
                    .as_secs()
                    + 3600;
                let body = format!(
                    r#"{{"access_token": "{token}", "expires_in": "3600", "expires_on": "{expires_on}", "resource": "{RESOURCE}", "token_type": "Bearer"}}"#
                );
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
                let _ = stream.flush();
            }
        });
        Self { addr, requests }
    }

    fn requests(&self) -> Vec<String> {
        lock(&self.requests).clone()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8 query")
}

/// Checks one IMDS request head: method, path, query and the `Metadata: true` header.
fn check_imds_request(head: &str) {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    assert_eq!(parts.next(), Some("GET"), "{head}");
    let target = parts.next().unwrap_or_default();
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{head}");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    assert_eq!(path, "/metadata/identity/oauth2/token", "{head}");
    let params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(param("api-version"), Some("2018-02-01"), "{head}");
    assert_eq!(param("resource"), Some(RESOURCE), "{head}");
    assert_eq!(param("client_id"), None, "system-assigned: {head}");
    let metadata = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("metadata"))
        .map(|(_, v)| v.trim().to_owned());
    assert_eq!(metadata.as_deref(), Some("true"), "{head}");
}

// ------------------------------------------------------------------------------------------
// Processes
// ------------------------------------------------------------------------------------------

/// Both processes, killed on drop; their logs are printed when the test fails.
struct Procs {
    children: Vec<Child>,
    logs: Vec<PathBuf>,
}

impl Procs {
    fn spawn(&mut self, cmd: &mut Command, log: PathBuf) {
        let file = File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .env_remove("RUST_LOG")
            .spawn()
            .expect("the binary starts");
        self.children.push(child);
        self.logs.push(log);
    }
}

impl Drop for Procs {
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for log in &self.logs {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                eprintln!("===== {} =====\n{text}", log.display());
            }
        }
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` (and the broker's view) after
/// [`WAIT`].
fn wait_for<T>(what: &str, broker: &FakeBroker, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the broker saw:\n{:#?}",
            broker.seen()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_file(path: &Path, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn manifests(port: u16) -> String {
    format!(
        r#"apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: src
spec:
  endpointType: Mqtt
  mqttSettings:
    host: 127.0.0.1:{port}
    authentication:
      method: ServiceAccountToken
      serviceAccountTokenSettings:
        audience: aio-internal
    tls:
      mode: Disabled
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: dst
spec:
  endpointType: Mqtt
  mqttSettings:
    host: 127.0.0.1:{port}
    authentication:
      method: SystemAssignedManagedIdentity
      systemAssignedManagedIdentitySettings:
        audience: "{RESOURCE}"
    tls:
      mode: Disabled
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowProfile
metadata:
  name: default
spec:
  instanceCount: 1
---
apiVersion: connectivity.iotoperations.azure.com/v1
kind: Dataflow
metadata:
  name: authflow
spec:
  profileRef: default
  operations:
    - operationType: Source
      sourceSettings:
        endpointRef: src
        dataSources:
          - t/#
    - operationType: Destination
      destinationSettings:
        endpointRef: dst
        dataDestination: out/${{inputTopic}}
"#
    )
}

// ------------------------------------------------------------------------------------------
// Queries on what the broker saw
// ------------------------------------------------------------------------------------------

/// One CONNECT the broker saw.
#[derive(Debug)]
struct Connected {
    /// Its index in [`FakeBroker::seen`].
    index: usize,
    conn: usize,
    method: Option<String>,
    data: Option<Bytes>,
    refused: bool,
}

/// The CONNECTs at index `from` or later of client ids ending with `suffix`.
fn connects(seen: &[Seen], from: usize, suffix: &str) -> Vec<Connected> {
    seen.iter()
        .enumerate()
        .skip(from)
        .filter_map(|(index, s)| match s {
            Seen::Connect {
                conn,
                client_id,
                protocol,
                method,
                data,
                refused,
            } if client_id.ends_with(suffix) => {
                assert_eq!(*protocol, ProtocolVersion::V5, "{client_id}");
                Some(Connected {
                    index,
                    conn: *conn,
                    method: method.clone(),
                    data: data.clone(),
                    refused: *refused,
                })
            }
            _ => None,
        })
        .collect()
}

/// The first CONNECT at index `from` or later of a client id ending with `suffix`.
fn connect_of(seen: &[Seen], from: usize, suffix: &str) -> Option<Connected> {
    connects(seen, from, suffix).into_iter().next()
}

fn subscribed(seen: &[Seen], on: usize) -> bool {
    seen.iter().any(|s| {
        matches!(s, Seen::Subscribe { conn, filters }
            if *conn == on && filters.iter().any(|f| f.ends_with("t/#")))
    })
}

fn published(seen: &[Seen], on: usize, topic: &str, payload: &[u8]) -> bool {
    seen.iter().any(|s| {
        matches!(s, Seen::Publish { conn, topic: t, payload: p, qos }
            if *conn == on && t == topic && &p[..] == payload && *qos == QoS::AtLeastOnce)
    })
}

fn acked(seen: &[Seen], on: usize, id: u16) -> bool {
    seen.iter()
        .any(|s| matches!(s, Seen::PubAck { conn, packet_id } if *conn == on && *packet_id == id))
}

/// Waits for the source's SUBSCRIBE on `src`, sends a PUBLISH there and waits for it on the
/// destination connection `dst` (topic `out/...`) and for the source's PUBACK.
fn check_flow(broker: &FakeBroker, src: usize, dst: usize, topic: &str, packet_id: u16) {
    wait_for("the source's SUBSCRIBE", broker, || {
        subscribed(&broker.seen(), src).then_some(())
    });
    let payload = format!("payload of {topic}");
    broker.publish_to("-src-0", topic, payload.as_bytes(), packet_id);
    let out = format!("out/{topic}");
    wait_for(
        &format!("{out} on the destination connection"),
        broker,
        || published(&broker.seen(), dst, &out, payload.as_bytes()).then_some(()),
    );
    wait_for(
        &format!("the source's PUBACK of packet {packet_id}"),
        broker,
        || acked(&broker.seen(), src, packet_id).then_some(()),
    );
}

// ------------------------------------------------------------------------------------------
// The tests
// ------------------------------------------------------------------------------------------

/// The fakes, the token file and both processes. Fields drop in order: the processes first
/// (printing their logs on failure), the temporary folder last.
struct Setup {
    _procs: Procs,
    broker: FakeBroker,
    imds: Imds,
    token_file: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Replaces the token file atomically, as the kubelet does, so that the data plane never reads
/// a half-written token.
fn rotate(token_file: &Path, content: &str) {
    let tmp = token_file.with_extension("new");
    std::fs::write(&tmp, content).expect("write the new token");
    std::fs::rename(&tmp, token_file).expect("rotate the token");
}

/// Starts everything, with `sat` in the service account token file.
fn setup(sat: &str, refuse: &[&str]) -> Setup {
    let broker = FakeBroker::start();
    for token in refuse {
        broker.refuse(token);
    }
    let imds = Imds::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = tmp.path().join("conf");
    let tokens = tmp.path().join("tokens");
    std::fs::create_dir(&conf).expect("conf dir");
    std::fs::create_dir(&tokens).expect("token dir");
    let token_file = tokens.join("aio-internal");
    std::fs::write(&token_file, sat).expect("write the token");
    std::fs::write(conf.join("flows.yaml"), manifests(broker.addr.port())).expect("manifests");
    let socket = tmp.path().join("control.sock");

    let mut procs = Procs {
        children: Vec::new(),
        logs: Vec::new(),
    };
    let dp_log = tmp.path().join("dataplane.log");
    procs.spawn(
        Command::new(env!("CARGO_BIN_EXE_dataplane"))
            .arg("--control-socket")
            .arg(&socket)
            .args(["--cores", "1", "--log", "debug"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .arg("--token-dir")
            .arg(&tokens)
            .arg("--imds-endpoint")
            .arg(format!("http://{}", imds.addr)),
        dp_log.clone(),
    );
    wait_for_file(&dp_log, "control socket ready");
    procs.spawn(
        Command::new(env!("CARGO_BIN_EXE_config-agent"))
            .args(["run", "--config-dir"])
            .arg(&conf)
            .arg("--control-socket")
            .arg(&socket)
            .args(["--debounce-ms", "50", "--poll-ms", "50"])
            .arg("--allow-no-local-broker"),
        tmp.path().join("config-agent.log"),
    );
    Setup {
        _procs: procs,
        broker,
        imds,
        token_file,
        _tmp: tmp,
    }
}

#[test]
fn service_account_token_and_managed_identity_on_connect_and_reconnect() {
    let s = setup("sat-token-one\n", &[]);
    let broker = &s.broker;

    // First connections: K8S-SAT with the file's token, OAUTH2-JWT with IMDS's.
    let src = wait_for("the source's CONNECT", broker, || {
        connect_of(&broker.seen(), 0, "-src-0")
    });
    assert_eq!(src.method.as_deref(), Some("K8S-SAT"));
    assert_eq!(
        src.data.as_deref(),
        Some(&b"sat-token-one"[..]),
        "the file's content, newline trimmed"
    );
    let dst = wait_for("the destination's CONNECT", broker, || {
        connect_of(&broker.seen(), 0, "-dst-0")
    });
    assert_eq!(dst.method.as_deref(), Some("OAUTH2-JWT"));
    assert_eq!(dst.data.as_deref(), Some(imds_token(1).as_bytes()));
    let requests = s.imds.requests();
    assert_eq!(requests.len(), 1, "one IMDS request: {requests:#?}");
    check_imds_request(&requests[0]);

    // The dataflow runs over the authenticated connections.
    check_flow(broker, src.conn, dst.conn, "t/a/1", 1);

    // The token rotates and the broker drops everyone: the source reconnects with the new
    // token, the destination with the cached IMDS token.
    rotate(&s.token_file, "sat-token-two\n");
    let from = broker.seen().len();
    broker.drop_all();
    let src2 = wait_for("the source's new CONNECT", broker, || {
        connect_of(&broker.seen(), from, "-src-0")
    });
    assert_eq!(src2.method.as_deref(), Some("K8S-SAT"));
    assert_eq!(
        src2.data.as_deref(),
        Some(&b"sat-token-two"[..]),
        "the token file is read again for the new connection"
    );
    let dst2 = wait_for("the destination's new CONNECT", broker, || {
        connect_of(&broker.seen(), from, "-dst-0")
    });
    assert_eq!(dst2.method.as_deref(), Some("OAUTH2-JWT"));
    assert_eq!(
        dst2.data.as_deref(),
        Some(imds_token(1).as_bytes()),
        "the cached IMDS token"
    );
    let requests = s.imds.requests();
    assert_eq!(
        requests.len(),
        1,
        "the IMDS token, an hour from expiry, is reused: {requests:#?}"
    );

    // And the dataflow runs again.
    check_flow(broker, src2.conn, dst2.conn, "t/b/2", 2);

    // No AUTH (nothing is near expiry), no other surprise packets, nothing refused.
    let seen = broker.seen();
    let others: Vec<&Seen> = seen
        .iter()
        .filter(|x| matches!(x, Seen::Other { .. }))
        .collect();
    assert!(others.is_empty(), "unexpected packets: {others:#?}");
    assert!(
        !connects(&seen, 0, "").iter().any(|c| c.refused),
        "{seen:#?}"
    );
    assert!(src2.index > dst.index && dst2.index > src.index);
}

/// A refused service account token is retried (with backoff), and the next connection after
/// the file rotates carries the new one.
#[test]
fn a_refused_service_account_token_is_replaced_when_the_file_rotates() {
    let s = setup("sat-stale\n", &["sat-stale"]);
    let broker = &s.broker;
    // Refused, and retried with the same (unchanged) file.
    wait_for("two refused source CONNECTs", broker, || {
        let c = connects(&broker.seen(), 0, "-src-0");
        (c.len() >= 2 && c.iter().all(|c| c.refused)).then_some(())
    });
    let dst = wait_for("the destination's CONNECT", broker, || {
        connect_of(&broker.seen(), 0, "-dst-0")
    });
    assert!(!dst.refused);
    rotate(&s.token_file, "sat-fresh\n");
    let src = wait_for("an accepted source CONNECT", broker, || {
        connects(&broker.seen(), 0, "-src-0")
            .into_iter()
            .find(|c| !c.refused)
    });
    assert_eq!(src.method.as_deref(), Some("K8S-SAT"));
    assert_eq!(src.data.as_deref(), Some(&b"sat-fresh"[..]));
    check_flow(broker, src.conn, dst.conn, "t/fresh", 7);
}

/// A managed identity token that the broker refuses is not offered again: the next connection
/// gets a new token from IMDS rather than the cached one (`TokenCache::clear` says it is for
/// this). Today the data plane reconnects with the refused token until its refresh time, most
/// of the token's lifetime.
#[test]
fn a_refused_managed_identity_token_is_fetched_again() {
    let first = imds_token(1);
    let s = setup("sat\n", &[&first]);
    let broker = &s.broker;
    let refused = wait_for("the refused destination CONNECT", broker, || {
        connect_of(&broker.seen(), 0, "-dst-0")
    });
    assert!(refused.refused);
    assert_eq!(refused.data.as_deref(), Some(first.as_bytes()));
    let dst = wait_for("an accepted destination CONNECT", broker, || {
        connects(&broker.seen(), 0, "-dst-0")
            .into_iter()
            .find(|c| !c.refused)
    });
    assert_eq!(dst.method.as_deref(), Some("OAUTH2-JWT"));
    assert_eq!(dst.data.as_deref(), Some(imds_token(2).as_bytes()));
    let requests = s.imds.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    for r in &requests {
        check_imds_request(r);
    }
    let src = wait_for("the source's CONNECT", broker, || {
        connect_of(&broker.seen(), 0, "-src-0")
    });
    check_flow(broker, src.conn, dst.conn, "t/again", 9);
}
