//! `Transport` against a real mosquitto (scripts/mosquitto-start): TLS, mutual TLS, MQTT over
//! WebSocket and over WebSocket over TLS, driven over a blocking `TcpStream`. Each test starts
//! its own broker; every exchange is an MQTT 5 CONNECT/CONNACK, a SUBSCRIBE, and PUBLISHes (one
//! larger than a TLS record and than a socket read) that come back through the subscription.
//!
//! Skipped, with a message on stderr (shown even without `--nocapture`), when mosquitto is not
//! installed (scripts/setup installs it).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_codec::{
    ByteStr, Codec, Connect, Disconnect, DisconnectProperties, Packet, ProtocolVersion, Publish,
    QoS, ReasonCode, Role, Subscribe, SubscribeProperties, Subscription, SubscriptionOptions,
};
use sluice_dataplane::net::address::parse_host_port;
use sluice_dataplane::net::transport::{
    ClientAuthFiles, PeerClose, Transport, TransportError, WsSettings, client_config,
};

const WAIT: Duration = Duration::from_secs(10);
const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts");

/// A mosquitto started for one test, stopped on drop.
struct Broker {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Broker {
    /// Starts one. A missing mosquitto fails the test (scripts/setup installs it): tests in
    /// this project fail rather than skip when a tool is missing.
    fn start(test: &str) -> Self {
        let found = Command::new("sh")
            .args(["-c", "command -v mosquitto"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{test}: mosquitto is not installed (scripts/setup installs the Debian package)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(format!("{SCRIPTS}/mosquitto-start"))
            .arg(dir.path())
            .output()
            .expect("run scripts/mosquitto-start");
        assert!(
            out.status.success(),
            "scripts/mosquitto-start failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let env = std::fs::read_to_string(dir.path().join("env"))
            .expect("DIR/env")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { dir, env }
    }

    fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from DIR/env"))
    }

    fn port(&self, key: &str) -> u16 {
        self.get(key).parse().expect("a port")
    }

    fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.get(key))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new(format!("{SCRIPTS}/stop"))
            .arg(self.dir.path())
            .status();
    }
}

/// How a connection ended, or why a packet did not come.
#[derive(Debug)]
enum Ended {
    Transport(TransportError),
    Eof,
}

/// One MQTT connection through a `Transport` over a blocking socket.
struct Conn {
    sock: TcpStream,
    t: Transport,
    codec: Codec,
    socket_in: BytesMut,
    app: BytesMut,
}

impl Conn {
    fn open(port: u16, t: Transport) -> Self {
        let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let mut c = Self {
            sock,
            t,
            codec: Codec::new(Role::Client, ProtocolVersion::V5),
            socket_in: BytesMut::new(),
            app: BytesMut::new(),
        };
        c.flush();
        c
    }

    fn flush(&mut self) {
        let mut out = BytesMut::new();
        if self.t.poll_write(&mut out) {
            // The peer may have gone after refusing us; the read that follows says why.
            let _ = self.sock.write_all(&out);
        }
    }

    /// One socket read through the transport.
    fn read_some(&mut self) -> Result<(), Ended> {
        let mut buf = [0u8; 16 * 1024];
        let n = match self.sock.read(&mut buf) {
            Ok(0) => return Err(Ended::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Err(Ended::Eof),
            Err(e) => panic!("socket read: {e} (timeout {WAIT:?})"),
        };
        self.socket_in.extend_from_slice(&buf[..n]);
        let r = self.t.read(&mut self.socket_in, &mut self.app);
        assert!(self.socket_in.is_empty(), "read consumes all of socket_in");
        self.flush();
        r.map_err(Ended::Transport)
    }

    fn wait_ready(&mut self) {
        while !self.t.is_ready() {
            self.read_some().expect("handshake");
        }
    }

    fn send(&mut self, packets: &[Packet]) {
        let mut buf = BytesMut::new();
        for p in packets {
            self.codec.encode(p, &mut buf).expect("encode");
        }
        self.t.write(&buf).expect("write");
        self.flush();
    }

    fn recv(&mut self) -> Result<Packet, Ended> {
        loop {
            if let Some(p) = self.codec.decode(&mut self.app).expect("decode") {
                return Ok(p);
            }
            self.read_some()?;
        }
    }
}

fn connect_packet(client_id: &str) -> Packet {
    Packet::Connect(Box::new(Connect::new(
        ProtocolVersion::V5,
        ByteStr::from(client_id.to_owned()),
        30,
    )))
}

/// The large PUBLISH: 300 kB, many TLS records, many socket reads.
const BIG: usize = 300_000;
/// Over WebSocket: mosquitto 2.0.11 (libwebsockets) sends about 4 KiB per 100 ms of its loop, so
/// a smaller large message (still a frame over many reads) keeps the test quick.
const BIG_WS: usize = 20_000;

/// CONNECT (written before or after the handshakes), SUBSCRIBE, PUBLISHes (one of `big` bytes)
/// that come back, then DISCONNECT and an orderly close.
fn exchange(mut c: Conn, client_id: &str, connect_before_ready: bool, big: usize) {
    if connect_before_ready {
        assert!(c.t.is_plain() || !c.t.is_ready());
        c.send(&[connect_packet(client_id)]);
    } else {
        c.wait_ready();
        c.send(&[connect_packet(client_id)]);
    }
    match c.recv() {
        Ok(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert!(c.t.is_ready());

    let topic = format!("sluice/transport/{client_id}");
    c.send(&[Packet::Subscribe(Subscribe {
        packet_id: 1.try_into().unwrap(),
        properties: SubscribeProperties::default(),
        filters: vec![Subscription {
            filter: ByteStr::from(topic.clone()),
            options: SubscriptionOptions::qos(QoS::AtMostOnce),
        }],
    })]);
    match c.recv() {
        Ok(Packet::SubAck(ack)) => assert_eq!(ack.reason_codes, [ReasonCode::SUCCESS]),
        other => panic!("expected SUBACK, got {other:?}"),
    }

    let big: Bytes = (0..big).map(|i| (i % 253) as u8).collect();
    let payloads = [
        Bytes::from_static(b"one"),
        big,
        Bytes::from_static(b"three"),
    ];
    let publishes: Vec<Packet> = payloads
        .iter()
        .map(|p| Packet::Publish(Publish::new(ByteStr::from(topic.clone()), p.clone())))
        .collect();
    // One write: the three packets in one frame / one run of records.
    c.send(&publishes);
    for expected in &payloads {
        match c.recv() {
            Ok(Packet::Publish(p)) => {
                assert_eq!(p.topic, topic.as_str());
                assert!(p.payload == expected, "payload of {} bytes", expected.len());
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    c.send(&[Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::SUCCESS,
        properties: DisconnectProperties::default(),
    })]);
    c.t.close();
    c.flush();
    assert!(matches!(
        c.t.write(b"x"),
        Err(TransportError::WriteAfterClose)
    ));
    // The broker closes: by TLS close_notify, WebSocket Close or plain EOF.
    loop {
        match c.read_some() {
            Ok(()) => assert!(c.app.is_empty(), "nothing after DISCONNECT"),
            Err(Ended::Eof | Ended::Transport(TransportError::Closed(_))) => break,
            Err(e) => panic!("closing: {e:?}"),
        }
    }
}

fn tls_transport(
    broker: &Broker,
    host: &str,
    port_key: &str,
    client_cert: bool,
    ws: bool,
) -> (u16, Transport) {
    let port = broker.port(port_key);
    let auth = client_cert.then(|| ClientAuthFiles {
        cert: broker.path("CLIENT_CERT"),
        key: broker.path("CLIENT_KEY"),
        intermediates: None,
    });
    let config = client_config(Some(&[broker.path("CA_FILE")]), auth).expect("client config");
    let (_, _, name) = parse_host_port(&format!("{host}:{port}"), 8883).expect("address");
    let ws = ws.then(|| WsSettings::new(format!("{host}:{port}")));
    (
        port,
        Transport::new(Some((config, name)), ws).expect("transport"),
    )
}

#[test]
fn plain_tcp() {
    let broker = Broker::start("plain_tcp");
    let c = Conn::open(broker.port("MQTT_PORT"), Transport::plain());
    exchange(c, "transport-plain", true, BIG);
}

#[test]
fn tls_with_a_dns_name_and_an_ip_address() {
    let broker = Broker::start("tls_with_a_dns_name_and_an_ip_address");
    let (port, t) = tls_transport(&broker, "localhost", "MQTT_TLS_PORT", false, false);
    exchange(Conn::open(port, t), "transport-tls-dns", true, BIG);
    let (port, t) = tls_transport(&broker, "127.0.0.1", "MQTT_TLS_PORT", false, false);
    exchange(Conn::open(port, t), "transport-tls-ip", false, BIG);
}

#[test]
fn mutual_tls() {
    let broker = Broker::start("mutual_tls");
    let (port, t) = tls_transport(&broker, "127.0.0.1", "MQTT_MTLS_PORT", true, false);
    exchange(Conn::open(port, t), "transport-mtls", true, BIG);
}

#[test]
fn mutual_tls_without_a_client_certificate_is_refused() {
    let broker = Broker::start("mutual_tls_without_a_client_certificate_is_refused");
    let (port, t) = tls_transport(&broker, "127.0.0.1", "MQTT_MTLS_PORT", false, false);
    let mut c = Conn::open(port, t);
    c.send(&[connect_packet("transport-mtls-refused")]);
    match c.recv() {
        // TLS 1.3: the client finishes first, then the server's alert arrives.
        Err(Ended::Transport(TransportError::Tls(rustls::Error::AlertReceived(alert)))) => {
            assert_eq!(alert, rustls::AlertDescription::CertificateRequired);
        }
        other => panic!(
            "expected the server's alert, got {other:?}\n{}",
            broker.log()
        ),
    }
}

#[test]
fn tls_refuses_a_broker_outside_the_trusted_cas() {
    let broker = Broker::start("tls_refuses_a_broker_outside_the_trusted_cas");
    // Trust a CA of another (throwaway) PKI.
    let other = tempfile::tempdir().unwrap();
    let status = Command::new(format!("{SCRIPTS}/gen-certs"))
        .arg(other.path())
        .status()
        .expect("gen-certs");
    assert!(status.success());
    let config = client_config(Some(&[other.path().join("ca.crt")]), None).unwrap();
    let port = broker.port("MQTT_TLS_PORT");
    let (_, _, name) = parse_host_port(&format!("127.0.0.1:{port}"), 8883).unwrap();
    let mut c = Conn::open(port, Transport::new(Some((config, name)), None).unwrap());
    match c.recv() {
        Err(Ended::Transport(TransportError::Tls(rustls::Error::InvalidCertificate(_)))) => {}
        other => panic!("expected a certificate error, got {other:?}"),
    }
}

#[test]
fn websocket() {
    let broker = Broker::start("websocket");
    let port = broker.port("MQTT_WS_PORT");
    let mut settings = WsSettings::new(format!("127.0.0.1:{port}"));
    settings.path = "/mqtt".to_owned();
    let t = Transport::new(None, Some(settings)).unwrap();
    exchange(Conn::open(port, t), "transport-ws", true, BIG_WS);
    let t = Transport::new(None, Some(WsSettings::new(format!("127.0.0.1:{port}")))).unwrap();
    exchange(Conn::open(port, t), "transport-ws-late", false, BIG_WS);
}

#[test]
fn websocket_over_tls() {
    let broker = Broker::start("websocket_over_tls");
    let (port, t) = tls_transport(&broker, "localhost", "MQTT_WSS_PORT", false, true);
    exchange(Conn::open(port, t), "transport-wss", true, BIG_WS);
    let (port, t) = tls_transport(&broker, "127.0.0.1", "MQTT_WSS_PORT", false, true);
    exchange(Conn::open(port, t), "transport-wss-late", false, BIG_WS);
}

#[test]
fn websocket_close_from_the_broker() {
    let broker = Broker::start("websocket_close_from_the_broker");
    let port = broker.port("MQTT_WS_PORT");
    let t = Transport::new(None, Some(WsSettings::new(format!("127.0.0.1:{port}")))).unwrap();
    let mut c = Conn::open(port, t);
    c.send(&[connect_packet("transport-ws-close")]);
    assert!(matches!(c.recv(), Ok(Packet::ConnAck(_))));
    // A second CONNECT is a protocol error: the broker drops the connection.
    c.send(&[connect_packet("transport-ws-close")]);
    match c.recv() {
        Err(Ended::Eof | Ended::Transport(TransportError::Closed(PeerClose::WebSocket { .. }))) => {
        }
        Ok(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::PROTOCOL_ERROR),
        other => panic!("{other:?}"),
    }
}
