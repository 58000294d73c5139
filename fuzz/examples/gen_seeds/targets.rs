//! Seeds of the targets beyond the codec: broker packet sequences for `session_bytes` (encoded
//! with the codec, with the packet ids the session really used), WebSocket handshakes and frames
//! for `websocket_read`, IMDS replies for `imds_response`, control frames for `control_frames`
//! (written with the protocol's own encoder, the snapshots built from config-agent's test
//! manifests) and the test manifests themselves for `manifest_yaml`.
//!
//! Each seed is small (under the smoke run's 4,096-byte `-max_len`) and passes its target's
//! checks; [`write`] replaces a target's `.bin` files but `regression-*.bin`.

use std::error::Error;
use std::num::{NonZeroU16, NonZeroU32};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use sluice_codec::{
    Auth, AuthProperties, ByteStr, Codec, ConnAck, Disconnect, Packet, PacketId, PayloadFormat,
    ProtocolVersion, PubAck, Publish, PublishPropertyValues, QoS, ReasonCode, Role, SubAck,
    SubscriptionIds, UnsubAck, UserProperties, decode_varint,
};
use sluice_config_agent::control::{
    AgentMessage, Changes, DataplaneMessage, NotRunning, Problem, encode_frame,
};
use sluice_config_agent::{Snapshot, load_and_validate};
use sluice_dataplane::bench_support::fuzz::{SessionHarness, WsHarness};
use sluice_fuzz::session::{
    ACK_EACH_READ, AUTHENTICATION, AWAIT_CONNACK, ENFORCE_RECEIVE_MAXIMUM, REAUTHENTICATING, V5,
    setup_for,
};
use sluice_fuzz::websocket::{HANDSHAKE, WRITE_EARLY};
use sluice_fuzz::{FRAMED, SEPARATOR, control, imds, manifest, parquet, session, websocket};

type Seeds = Vec<(String, Vec<u8>)>;

/// A target's name, its seeds and its checks.
type Target = (&'static str, Seeds, fn(&[u8]));

/// Writes every new target's seeds under `root` (`fuzz/seeds`), after running each through its
/// target's checks; returns (target, number of files).
pub(crate) fn write(root: &Path) -> Result<Vec<(&'static str, usize)>, Box<dyn Error>> {
    let repo = root.join("../..");
    let targets: [Target; 6] = [
        ("session_bytes", session_seeds()?, session::session_bytes),
        (
            "websocket_read",
            websocket_seeds(),
            websocket::websocket_read,
        ),
        ("imds_response", imds_seeds(), imds::imds_read),
        (
            "control_frames",
            control_seeds(&repo)?,
            control::control_frames,
        ),
        (
            "manifest_yaml",
            manifest_seeds(&repo)?,
            manifest::manifest_yaml,
        ),
        ("parquet_rows", parquet_seeds(), parquet::parquet_rows),
    ];
    let mut counts = Vec::new();
    for (target, seeds, check) in targets {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".bin") && !name.starts_with("regression-") {
                std::fs::remove_file(path)?;
            }
        }
        for (name, seed) in &seeds {
            if seed.len() > 4096 {
                return Err(format!("{target}/{name}: {} bytes, over -max_len", seed.len()).into());
            }
            check(seed);
            std::fs::write(dir.join(format!("{name}.bin")), seed)?;
        }
        counts.push((target, seeds.len()));
        if let Some(dict) = dictionary(target, &seeds) {
            std::fs::write(root.join("../dicts").join(format!("{target}.dict")), dict)?;
        }
    }
    Ok(counts)
}

/// The libFuzzer dictionary of a target whose input is text with names in it, from its seeds:
/// the YAML keys and the capitalised values of the manifests, the JSON keys and string values
/// of the control messages; with a header of how it was made. `None` for the others (their
/// dictionaries, where they have one, are written by hand).
fn dictionary(target: &str, seeds: &Seeds) -> Option<String> {
    let mut words = std::collections::BTreeSet::new();
    let word = |w: &str| {
        !w.is_empty()
            && w.len() <= 64
            && w.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    };
    match target {
        "manifest_yaml" => {
            for (_, seed) in seeds {
                for line in String::from_utf8_lossy(seed).lines() {
                    let line = line.trim_start().trim_start_matches("- ");
                    let Some((key, value)) = line.split_once(':') else {
                        continue;
                    };
                    if key.starts_with('#') || !word(key) {
                        continue;
                    }
                    words.insert(format!("{key}:"));
                    let value = value.trim();
                    if value.starts_with(|c: char| c.is_ascii_uppercase()) && word(value) {
                        words.insert(value.to_owned());
                    }
                }
            }
            for syntax in [
                "---", "- ", "? ", "&a ", "*a", "!!str ", "{}", "[]", "|-", ">-", "~", "null",
            ] {
                words.insert(syntax.to_owned());
            }
        }
        "control_frames" => {
            fn walk(
                v: &serde_json::Value,
                words: &mut std::collections::BTreeSet<String>,
                word: &dyn Fn(&str) -> bool,
            ) {
                match v {
                    serde_json::Value::Object(m) => {
                        for (k, v) in m {
                            if word(k) {
                                words.insert(format!("\\\"{k}\\\":"));
                            }
                            walk(v, words, word);
                        }
                    }
                    serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, words, word)),
                    serde_json::Value::String(s) if word(s) && s.len() <= 24 => {
                        words.insert(format!("\\\"{s}\\\""));
                    }
                    _ => {}
                }
            }
            for (_, seed) in seeds {
                let framed = seed[0] & FRAMED != 0;
                let stream = &seed[2..];
                let docs: Vec<&[u8]> = if framed {
                    split(stream)
                } else {
                    let mut docs = Vec::new();
                    let mut rest = stream;
                    while let [a, b, c, d, tail @ ..] = rest {
                        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
                        docs.push(&tail[..len]);
                        rest = &tail[len..];
                    }
                    docs
                };
                for doc in docs {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(doc) {
                        walk(&v, &mut words, &word);
                    }
                }
            }
        }
        _ => return None,
    }
    let mut dict = format!(
        "# libFuzzer dictionary for {target}, written by `cargo run --example gen_seeds` from the\n# target's seeds (fuzz/seeds/{target}/): regenerate rather than edit.\n"
    );
    for w in words {
        dict.push('"');
        dict.push_str(&w);
        dict.push_str("\"\n");
    }
    Some(dict)
}

/// `stream` split at each [`SEPARATOR`].
fn split(stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = stream;
    while let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        out.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

fn id(n: u16) -> PacketId {
    NonZeroU16::new(n).expect("non-zero")
}

/// Encodes `packets` as a broker of `protocol` sends them, one frame each.
fn broker_frames(protocol: ProtocolVersion, packets: &[Packet]) -> Vec<Vec<u8>> {
    let codec = Codec::new(Role::Server, protocol);
    packets
        .iter()
        .map(|p| {
            let mut buf = BytesMut::new();
            codec.encode(p, &mut buf).expect("a seed packet encodes");
            buf.to_vec()
        })
        .collect()
}

/// A session seed: the selector, the read size, the frames back to back.
fn plain(sel: u8, read_size: u8, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut seed = vec![sel, read_size];
    for f in frames {
        seed.extend_from_slice(f);
    }
    seed
}

/// A session seed as framed input: each frame without its remaining length.
fn framed(sel: u8, read_size: u8, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut seed = vec![sel | FRAMED, read_size];
    for (i, f) in frames.iter().enumerate() {
        let (_, n) = decode_varint(&f[1..])
            .expect("an encoded frame")
            .expect("a whole remaining length");
        if i > 0 {
            seed.extend_from_slice(SEPARATOR);
        }
        seed.push(f[0]);
        seed.extend_from_slice(&f[1 + n..]);
    }
    seed
}

fn publish(
    topic: &'static str,
    qos: QoS,
    packet_id: Option<u16>,
    payload: &'static [u8],
) -> Packet {
    let mut p = Publish::new(ByteStr::from_static(topic), Bytes::from_static(payload));
    p.qos = qos;
    p.packet_id = packet_id.map(id);
    Packet::Publish(p)
}

fn suback(packet_id: u16, codes: &[ReasonCode]) -> Packet {
    Packet::SubAck(SubAck {
        packet_id: id(packet_id),
        properties: Default::default(),
        reason_codes: codes.to_vec(),
    })
}

fn puback(packet_id: u16, reason_code: ReasonCode) -> Packet {
    let mut ack = PubAck::new(id(packet_id));
    ack.reason_code = reason_code;
    Packet::PubAck(ack)
}

/// The packet ids of the SUBSCRIBE and UNSUBSCRIBE that a session of `sel` sends in answer to a
/// CONNACK with Session Present.
fn ids_after_connack(sel: u8) -> (u16, Option<u16>) {
    let mut h = SessionHarness::new(setup_for(sel));
    let _ = h.take_transmit();
    let mut connack = h.connack(true);
    h.handle_bytes(&mut connack);
    let mut out = h.take_transmit();
    let mut server = Codec::new(Role::Server, setup_for(sel).protocol);
    let (mut subscribe, mut unsubscribe) = (None, None);
    while let Ok(Some(p)) = server.decode(&mut out) {
        match p {
            Packet::Subscribe(s) => subscribe = Some(s.packet_id.get()),
            Packet::Unsubscribe(u) => unsubscribe = Some(u.packet_id.get()),
            _ => {}
        }
    }
    (subscribe.expect("a SUBSCRIBE after CONNACK"), unsubscribe)
}

fn session_seeds() -> Result<Seeds, Box<dyn Error>> {
    let mut seeds = Seeds::new();
    let granted = [ReasonCode::GRANTED_QOS_1, ReasonCode::SUCCESS];
    for (protocol, v) in [(ProtocolVersion::V311, "v311"), (ProtocolVersion::V5, "v5")] {
        let sel = if protocol == ProtocolVersion::V5 {
            V5
        } else {
            0
        };
        let v5 = protocol == ProtocolVersion::V5;

        // Connected: SUBACK, messages at both QoS, the PUBACKs of the in-flight messages.
        let traffic = broker_frames(
            protocol,
            &[
                suback(1, &granted),
                publish("sensors/a/temperature", QoS::AtMostOnce, None, b"21.5"),
                publish(
                    "sensors/b/humidity",
                    QoS::AtLeastOnce,
                    Some(10),
                    b"{\"rh\":40}",
                ),
                publish("alerts/door", QoS::AtLeastOnce, Some(11), b"open"),
                puback(2, ReasonCode::SUCCESS),
                puback(3, ReasonCode::SUCCESS),
                Packet::PingResp,
            ],
        );
        seeds.push((format!("{v}-connected-traffic"), plain(sel, 0, &traffic)));
        seeds.push((
            format!("{v}-connected-traffic-acked-in-reads-of-7"),
            plain(sel | ACK_EACH_READ, 7, &traffic),
        ));
        seeds.push((
            format!("framed-{v}-connected-traffic"),
            framed(sel | ACK_EACH_READ, 0, &traffic),
        ));

        // The same packet id twice without an ack in between; QoS 2 traffic, which the session
        // never asked for.
        let reused = broker_frames(
            protocol,
            &[
                publish("sensors/a", QoS::AtLeastOnce, Some(5), b"1"),
                publish("sensors/a", QoS::AtLeastOnce, Some(5), b"2"),
            ],
        );
        seeds.push((format!("{v}-packet-id-in-use"), plain(sel, 0, &reused)));
        let qos2 = broker_frames(
            protocol,
            &[
                publish("sensors/a", QoS::ExactlyOnce, Some(6), b"x"),
                Packet::PubRel(PubAck::new(id(6))),
            ],
        );
        seeds.push((format!("framed-{v}-qos2"), framed(sel, 0, &qos2)));

        // Awaiting CONNACK: a CONNACK with Session Present, then the UNSUBACK and SUBACK for the
        // ids the session used, then the in-flight messages' PUBACKs.
        let await_sel = sel | AWAIT_CONNACK;
        let (subscribe, unsubscribe) = ids_after_connack(await_sel);
        let h = SessionHarness::new(setup_for(await_sel));
        let mut packets = Vec::new();
        let mut connack_frames = vec![h.connack(true).to_vec()];
        if let Some(u) = unsubscribe {
            packets.push(Packet::UnsubAck(UnsubAck {
                packet_id: id(u),
                properties: Default::default(),
                reason_codes: if v5 {
                    vec![ReasonCode::NO_SUBSCRIPTION_EXISTED]
                } else {
                    Vec::new()
                },
            }));
        }
        packets.push(suback(subscribe, &granted));
        packets.push(puback(2, ReasonCode::SUCCESS));
        packets.push(puback(3, ReasonCode::SUCCESS));
        packets.push(publish("sensors/c", QoS::AtLeastOnce, Some(1), b"after"));
        connack_frames.extend(broker_frames(protocol, &packets));
        seeds.push((
            format!("{v}-await-connack-session-present"),
            plain(await_sel | ACK_EACH_READ, 0, &connack_frames),
        ));
        seeds.push((
            format!("framed-{v}-await-connack-session-present"),
            framed(await_sel, 3, &connack_frames),
        ));
        let mut refused = ConnAck::new(false);
        refused.reason_code = if v5 {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode(5)
        };
        let refused = broker_frames(protocol, &[Packet::ConnAck(refused)]);
        seeds.push((
            format!("{v}-await-connack-refused"),
            plain(await_sel, 0, &refused),
        ));
    }

    // 5.0 only: properties, refusals, the broker's DISCONNECT, enhanced authentication, Receive
    // Maximum, a packet over the maximum size.
    let v5 = ProtocolVersion::V5;
    let mut values = PublishPropertyValues {
        payload_format_indicator: Some(PayloadFormat::Utf8),
        message_expiry_interval_secs: Some(60),
        response_topic: Some(ByteStr::from_static("replies/1")),
        correlation_data: Some(Bytes::from_static(b"corr-1")),
        user_properties: UserProperties::from_pairs([("site", "a"), ("site", "b")])?,
        content_type: Some(ByteStr::from_static("application/json")),
        ..PublishPropertyValues::default()
    };
    values.subscription_identifiers = SubscriptionIds::from_ids([7])?;
    let mut rich = Publish::new(
        ByteStr::from_static("sensors/rich"),
        Bytes::from_static(b"{\"t\":21.5}"),
    );
    rich.qos = QoS::AtLeastOnce;
    rich.packet_id = Some(id(20));
    rich.properties = values.build()?;
    let mut shutdown = Disconnect::new(ReasonCode::SERVER_SHUTTING_DOWN);
    shutdown.properties.reason_string = Some(ByteStr::from_static("maintenance"));
    shutdown.properties.server_reference = Some(ByteStr::from_static("other:1883"));
    let frames = broker_frames(
        v5,
        &[
            suback(1, &[ReasonCode::GRANTED_QOS_1, ReasonCode::NOT_AUTHORIZED]),
            Packet::Publish(rich),
            puback(2, ReasonCode::QUOTA_EXCEEDED),
            puback(3, ReasonCode::NO_MATCHING_SUBSCRIBERS),
            Packet::Disconnect(shutdown),
        ],
    );
    seeds.push((
        "v5-properties-refusal-disconnect".into(),
        plain(V5, 0, &frames),
    ));
    seeds.push((
        "framed-v5-properties-refusal-disconnect".into(),
        framed(V5 | ACK_EACH_READ, 0, &frames),
    ));

    let auth = |reason_code| {
        Packet::Auth(Auth {
            reason_code,
            properties: Box::new(AuthProperties {
                authentication_method: Some(ByteStr::from_static(
                    SessionHarness::AUTHENTICATION_METHOD,
                )),
                ..AuthProperties::default()
            }),
        })
    };
    let reauth = broker_frames(
        v5,
        &[
            auth(ReasonCode::SUCCESS),
            suback(1, &[ReasonCode::GRANTED_QOS_1; 2]),
        ],
    );
    seeds.push((
        "v5-reauthentication-success".into(),
        plain(V5 | AUTHENTICATION | REAUTHENTICATING, 0, &reauth),
    ));
    let challenge = broker_frames(v5, &[auth(ReasonCode::CONTINUE_AUTHENTICATION)]);
    seeds.push((
        "v5-await-connack-auth-challenge".into(),
        plain(V5 | AWAIT_CONNACK | AUTHENTICATION, 0, &challenge),
    ));
    let mut connack = ConnAck::new(false);
    connack.properties.authentication_method =
        Some(ByteStr::from_static(SessionHarness::AUTHENTICATION_METHOD));
    connack.properties.receive_maximum = NonZeroU16::new(1);
    connack.properties.maximum_packet_size = NonZeroU32::new(256);
    connack.properties.server_keep_alive_secs = Some(30);
    connack.properties.assigned_client_identifier = Some(ByteStr::from_static("assigned-1"));
    connack.properties.maximum_qos = Some(QoS::AtLeastOnce);
    let frames = broker_frames(
        v5,
        &[Packet::ConnAck(connack), puback(2, ReasonCode::SUCCESS)],
    );
    seeds.push((
        "v5-await-connack-authenticated-properties".into(),
        plain(V5 | AWAIT_CONNACK | AUTHENTICATION, 0, &frames),
    ));

    let over = (1..=5)
        .map(|i| publish("sensors/flood", QoS::AtLeastOnce, Some(100 + i), b"x"))
        .collect::<Vec<_>>();
    let over = broker_frames(v5, &over);
    seeds.push((
        "v5-receive-maximum-enforced".into(),
        plain(V5 | ENFORCE_RECEIVE_MAXIMUM, 0, &over),
    ));
    seeds.push(("v5-receive-maximum-counted".into(), plain(V5, 0, &over)));

    let big = broker_frames(
        v5,
        &[publish(
            "sensors/big",
            QoS::AtMostOnce,
            None,
            &[b'x'; SessionHarness::MAX_PACKET_SIZE as usize],
        )],
    );
    seeds.push(("v5-packet-too-large".into(), plain(V5, 0, &big)));

    // The sample captures: what mosquitto really sent a paho client (CONNACK first, and packet
    // ids the session did not use).
    for (file, sel) in [
        ("paho-v311.to-client.bin", 0),
        ("paho-v5.to-client.bin", V5),
    ] {
        let bytes = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../samples")
                .join(file),
        )?;
        let mut seed = vec![sel | AWAIT_CONNACK, 0];
        seed.extend_from_slice(&bytes);
        let stem = file.trim_end_matches(".bin").replace('.', "-");
        seeds.push((format!("await-capture-{stem}"), seed));
    }
    Ok(seeds)
}

/// A server frame (unmasked) with the shortest length.
fn ws_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b0];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xFFFF => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

fn websocket_seeds() -> Seeds {
    const FIN: u8 = 0x80;
    const BINARY: u8 = 0x2;
    let connack = b"\x20\x02\x00\x00";
    let publish = b"\x30\x0e\x00\x09sensors/a21.5";
    let mut frames = Vec::new();
    frames.extend(ws_frame(FIN | BINARY, connack));
    frames.extend(ws_frame(FIN | 0x9, b"ping-1"));
    frames.extend(ws_frame(BINARY, &publish[..6])); // a message in two fragments
    frames.extend(ws_frame(FIN | 0xA, b"")); // an unsolicited pong between them
    frames.extend(ws_frame(FIN, &publish[6..]));
    frames.extend(ws_frame(FIN | BINARY, &[0xd0, 0x00].repeat(70))); // 16-bit length
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    frames.extend(ws_frame(FIN | 0x8, &close));

    let response = WsHarness::accept_response().into_bytes();
    let handshake = [&response[..], &frames].concat();
    let mut seeds = vec![
        (
            "handshake-then-frames".into(),
            [&[HANDSHAKE, 0][..], &handshake].concat(),
        ),
        (
            "handshake-early-write-reads-of-5".into(),
            [&[HANDSHAKE | WRITE_EARLY, 5][..], &handshake].concat(),
        ),
        ("frames".into(), [&[0, 0][..], &frames].concat()),
        (
            "frames-max-16-reads-of-3".into(),
            [&[0x08, 3][..], &frames].concat(),
        ),
    ];
    let refusals: [(&str, String); 4] = [
        (
            "handshake-404",
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
        ),
        (
            "handshake-wrong-accept",
            response_with("Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
        ),
        (
            "handshake-no-subprotocol",
            String::from_utf8_lossy(&response).replace("Sec-WebSocket-Protocol: mqtt\r\n", ""),
        ),
        (
            "handshake-extension-bare-newlines",
            String::from_utf8_lossy(&response)
                .replace(
                    "\r\n\r\n",
                    "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                )
                .replace("\r\n", "\n"),
        ),
    ];
    for (name, head) in refusals {
        seeds.push((name.into(), [&[HANDSHAKE, 0][..], head.as_bytes()].concat()));
    }
    // Violations, each after a good frame.
    for (name, bad) in [
        ("text-frame", ws_frame(FIN | 0x1, b"hello")),
        (
            "masked-frame",
            vec![FIN | BINARY, 0x80 | 4, 1, 2, 3, 4, 0, 0, 0, 0],
        ),
        (
            "close-bad-code",
            ws_frame(FIN | 0x8, &1005u16.to_be_bytes()),
        ),
        (
            "ping-too-long",
            [&[FIN | 0x9, 126, 0, 126][..], &[0; 126]].concat(),
        ),
        ("continuation-without-start", ws_frame(FIN, b"x")),
    ] {
        let input = [&ws_frame(FIN | BINARY, connack)[..], &bad].concat();
        seeds.push((name.into(), [&[0, 0][..], &input].concat()));
    }
    // Framed input: descriptions (first byte, form, payload) of the frames above.
    let described: Vec<Vec<u8>> = vec![
        [&[FIN | BINARY, 0][..], connack].concat(),
        [&[FIN | 0x9, 0][..], b"ping-2"].concat(),
        [&[BINARY, 1][..], &publish[..6]].concat(), // 16-bit length, though short
        [&[FIN, 2][..], &publish[6..]].concat(),    // 64-bit length
        vec![FIN | 0x8, 0],
    ];
    seeds.push((
        "framed-frames".into(),
        [&[FRAMED, 0][..], &described.join(SEPARATOR)].concat(),
    ));
    seeds
}

/// The harness's accepting response with `line` in place of its `Sec-WebSocket-Accept`.
fn response_with(line: &str) -> String {
    WsHarness::accept_response()
        .split_inclusive("\r\n")
        .map(|l| {
            if l.starts_with("Sec-WebSocket-Accept:") {
                line
            } else {
                l
            }
        })
        .collect()
}

/// Payloads for the Parquet rows: rows of the target's schema (every type, nested ones, nulls,
/// escapes), ones that do not fit, text that is not JSON, and telemetry for inferred columns.
fn parquet_seeds() -> Seeds {
    let join = |sel: u8, payloads: &[&str]| {
        let mut v = vec![sel];
        for (i, p) in payloads.iter().enumerate() {
            if i > 0 {
                v.push(parquet::PAYLOAD_SEPARATOR);
            }
            v.extend_from_slice(p.as_bytes());
        }
        v
    };
    let full = r#"{"id":"dev-1","n":-12,"i":7,"s":300,"b":-5,"d":21.53,"f":1e3,"ok":true,"raw":"aGk=","day":"2026-12-02","ts":"2026-12-02T08:15:00.123456Z","local":"2026-12-02T08:15:00","pos":{"x":1.5,"tags":["a",null,"b"]},"list":[{"k":"x"},{"k":"y"}]}"#;
    let sparse = r#"{"id":"dév-"2"","n":null,"pos":null,"list":[]}"#;
    let reordered =
        r#"{"ts":"2026-12-02 09:15:00+01:00","id":"dev-3","extra":{"deep":[1,{"a":[]}]},"d":-0.0}"#;
    vec![
        (
            "schema-rows".into(),
            join(0, &[full, sparse, reordered, full]),
        ),
        (
            "schema-refused".into(),
            join(
                2,
                &[
                    r#"{"n":1}"#,
                    r#"{"id":"a","n":1.5}"#,
                    r#"{"id":"a","b":300}"#,
                    r#"{"id":"a","ts":"yesterday"}"#,
                    r#"{"id":"a","pos":{"tags":[]}}"#,
                    r#"{"id":"a","raw":"***"}"#,
                    r#"{"id":"a","id":"b"}"#,
                    "[1,2]",
                    "not json",
                    r#"{"id":"a"} trailing"#,
                    full,
                ],
            ),
        ),
        (
            "inferred-widening".into(),
            join(
                1,
                &[
                    r#"{"deviceId":"dev-1","t":21,"on":true,"meta":{"a":1}}"#,
                    r#"{"deviceId":"dev-2","t":21.5,"new":null}"#,
                    r#"{"deviceId":3}"#,
                    r#"{"new":"now typed","meta":[1,2]}"#,
                ],
            ),
        ),
    ]
}

fn imds_seeds() -> Seeds {
    // The body Azure IMDS sends (values shortened): expires_in and expires_on as strings.
    let token = r#"{"access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2V2ZW50Z3JpZC5henVyZS5uZXQvIn0.c2lnbmF0dXJl","client_id":"00000000-0000-0000-0000-000000000001","expires_in":"86399","expires_on":"1750086399","ext_expires_in":"86399","not_before":"1749999700","resource":"https://eventgrid.azure.net/","token_type":"Bearer"}"#;
    let with_length = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\nServer: IMDS/150.870.65.1544\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let chunked = {
        let (a, b) = token.split_at(100);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n{a}\r\n{:X}\r\n{b}\r\n0\r\nX-Trailer: 1\r\n\r\n",
            a.len(),
            b.len()
        )
    };
    // A short body in chunks of 8 bytes, without headers beyond the framing.
    let small = "{\"access_token\":\"a\",\"expires_in\":60}";
    let mut small_chunks = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned();
    for c in small.as_bytes().chunks(8) {
        small_chunks.push_str(&format!(
            "{:x}\r\n{}\r\n",
            c.len(),
            String::from_utf8_lossy(c)
        ));
    }
    small_chunks.push_str("0\r\n\r\n");
    // A stand-in (an identity sidecar) with numbers, and no framing: the body ends at the close.
    let stand_in = "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"access_token\":\"stand-in-token\",\"expires_in\":3600,\"token_type\":\"Bearer\"}";
    let interim = format!(
        "HTTP/1.1 100 Continue\r\n\r\n{}",
        with_length("200 OK", token)
    );
    let error = with_length(
        "400 Bad Request",
        r#"{"error":"invalid_request","error_description":"Identity not found"}"#,
    );
    let responses = [
        ("token-content-length", with_length("200 OK", token)),
        ("token-chunked", chunked),
        ("token-chunked-small", small_chunks),
        ("token-stand-in-until-close", stand_in.to_owned()),
        ("token-after-100-continue", interim),
        ("error-400-json", error),
        (
            "error-404-empty",
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
        ),
        (
            "error-500-text",
            with_length("500 Internal Server Error", "upstream timeout"),
        ),
        ("no-content-204", "HTTP/1.1 204 No Content\r\n\r\n".into()),
    ];
    let mut seeds = Seeds::new();
    for (name, response) in responses {
        seeds.push((name.to_owned(), [&[0][..], response.as_bytes()].concat()));
    }
    let (name, response) = seeds[1].clone();
    seeds.push((
        format!("{name}-reads-of-16"),
        [&[16][..], &response[1..]].concat(),
    ));
    seeds
}

/// A snapshot from one of config-agent's test manifests, as `config-agent` would send it.
fn snapshot_of(repo: &Path, manifest: &str) -> Result<Snapshot, Box<dyn Error>> {
    let path = repo.join("config-agent/tests/manifests").join(manifest);
    let report = load_and_validate(
        &sluice_config_agent::RealFiles,
        &[path],
        &sluice_config_agent::Options::default(),
    );
    report
        .snapshot
        .ok_or_else(|| format!("{manifest}: no snapshot: {:?}", report.diagnostics).into())
}

fn control_seeds(repo: &Path) -> Result<Seeds, Box<dyn Error>> {
    let frame = |m: &dyn erased::Message| -> Vec<u8> { m.frame() };
    let hello = AgentMessage::<Snapshot>::Hello {
        versions: vec![1, 2],
        agent: "config-agent 0.1.0".into(),
    };
    let apply = |generation, manifest| -> Result<AgentMessage<Snapshot>, Box<dyn Error>> {
        Ok(AgentMessage::Apply {
            generation,
            snapshot: snapshot_of(repo, manifest)?,
        })
    };
    let first = apply(1, "valid/mqtt-default-endpoint.yaml")?;
    let second = apply(2, "valid/dataflow-profile.yaml")?;
    let mut to_dp = frame(&hello);
    to_dp.extend(frame(&first));
    let mut seeds = vec![
        (
            "to-dataplane-hello-apply".to_owned(),
            [&[0, 0][..], &to_dp].concat(),
        ),
        (
            "to-dataplane-hello-apply-reads-of-9".to_owned(),
            [&[0, 9][..], &to_dp].concat(),
        ),
        (
            "to-dataplane-apply".to_owned(),
            [&[0, 0][..], &frame(&second)].concat(),
        ),
    ];
    let docs = |messages: &[&dyn erased::Message]| -> Vec<u8> {
        messages
            .iter()
            .map(|m| m.frame()[4..].to_vec())
            .collect::<Vec<_>>()
            .join(SEPARATOR)
    };
    seeds.push((
        "framed-to-dataplane-hello-apply-apply".to_owned(),
        [&[FRAMED, 0][..], &docs(&[&hello, &first, &second])].concat(),
    ));

    let welcome = DataplaneMessage::Welcome {
        version: 2,
        dataplane: "sluice-dataplane 0.1.0".into(),
        generation: Some(7),
    };
    let applied = DataplaneMessage::Applied {
        generation: 8,
        changes: Changes {
            added: vec!["azure-iot-operations/to-kafka".into()],
            changed: vec!["azure-iot-operations/from-plant".into()],
            removed: vec!["azure-iot-operations/old".into()],
            unchanged: vec!["azure-iot-operations/to-parquet".into()],
        },
        not_running: vec![NotRunning {
            dataflow: "azure-iot-operations/to-kafka".into(),
            code: "endpoint_kind_not_built".into(),
            reason: "Kafka endpoints are not implemented yet".into(),
            retrying: false,
        }],
    };
    let rejected = DataplaneMessage::Rejected {
        generation: 9,
        errors: vec![Problem {
            path: "Dataflow azure-iot-operations/to-kafka: spec.profileRef".into(),
            message: "no DataflowProfile \"fast\" in azure-iot-operations".into(),
        }],
    };
    let error = DataplaneMessage::Error {
        message: "the first message must be Hello".into(),
    };
    let mut to_agent = frame(&welcome);
    to_agent.extend(frame(&applied));
    to_agent.extend(frame(&rejected));
    seeds.push((
        "to-agent-welcome-applied-rejected".into(),
        [&[control::TO_AGENT, 0][..], &to_agent].concat(),
    ));
    seeds.push((
        "to-agent-error-reads-of-5".into(),
        [&[control::TO_AGENT, 5][..], &frame(&error)].concat(),
    ));
    seeds.push((
        "framed-to-agent-all".into(),
        [
            &[control::TO_AGENT | FRAMED, 0][..],
            &docs(&[&welcome, &applied, &rejected, &error]),
        ]
        .concat(),
    ));
    // A version 1 Applied, as an older data plane writes it (no not_running).
    let v1 = br#"{"type":"Applied","generation":3,"changes":{"added":[],"changed":[],"removed":[],"unchanged":["a/b"]}}"#;
    seeds.push((
        "framed-to-agent-applied-v1".into(),
        [&[control::TO_AGENT | FRAMED, 0][..], &v1[..]].concat(),
    ));
    Ok(seeds)
}

/// Frames of the messages of either direction, written with the protocol's encoder.
mod erased {
    use serde::Serialize;

    pub(super) trait Message {
        fn frame(&self) -> Vec<u8>;
    }

    impl<T: Serialize> Message for T {
        fn frame(&self) -> Vec<u8> {
            let mut buf = Vec::new();
            super::encode_frame(self, &mut buf).expect("a message encodes");
            buf
        }
    }
}

fn manifest_seeds(repo: &Path) -> Result<Seeds, Box<dyn Error>> {
    let mut seeds = Seeds::new();
    let manifests = repo.join("config-agent/tests/manifests");
    for folder in ["valid", "docs", "invalid"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(manifests.join(folder))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        paths.sort();
        for path in paths {
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            seeds.push((format!("{folder}-{stem}"), std::fs::read(&path)?));
        }
    }
    // Sluice's own configuration: its two files as one.
    let sluice = [
        std::fs::read(manifests.join("sluice/endpoints.yaml"))?,
        b"---\n".to_vec(),
        std::fs::read(manifests.join("sluice/dataflows.yaml"))?,
    ]
    .concat();
    seeds.push(("sluice-endpoints-and-dataflows".into(), sluice));
    // The demo's manifests without their comment lines (under -max_len).
    let demo = std::fs::read_to_string(repo.join("samples/demo/dataflow.yaml"))?;
    let demo: String = demo
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| [l, "\n"])
        .collect();
    seeds.push(("samples-demo-dataflow".into(), demo.into_bytes()));
    // With PEM files of the input's own (the CA of ConfigMap `ca`, the certificate of secret
    // `mqtt-cert`): a certificate chain, and text that is not PEM.
    let tls = "apiVersion: connectivity.iotoperations.azure.com/v1
kind: DataflowEndpoint
metadata:
  name: plant-broker
  namespace: azure-iot-operations
spec:
  endpointType: Mqtt
  mqttSettings:
    host: plant.example.com:8883
    authentication:
      method: X509Certificate
      x509CertificateSettings:
        secretRef: mqtt-cert
    tls:
      mode: Enabled
      trustedCaCertificateConfigMapRef: ca
";
    let chain = "-----BEGIN CERTIFICATE-----\nMAcwADAAAwEA\n-----END CERTIFICATE-----\n\
                 -----BEGIN CERTIFICATE-----\nMAcwADAAAwEA\n-----END CERTIFICATE-----\n";
    seeds.push((
        "pem-x509-chain".into(),
        [tls.as_bytes(), SEPARATOR, chain.as_bytes()].concat(),
    ));
    seeds.push((
        "pem-x509-not-pem".into(),
        [tls.as_bytes(), SEPARATOR, b"not a certificate\n"].concat(),
    ));
    Ok(seeds)
}
