//! Runs every record of the mqtt-packet 9.0.2 fixtures (`tests/vectors/mqtt-packet/`, MIT data,
//! see its README and LICENSE) through our codec. Each record's verdict matches mqtt-packet's, or
//! the record is listed in [`DIVERGENCES`] with the clause of the specification that makes our
//! verdict right. Anything else fails the test.
//!
//! Record kinds (see the vectors README):
//! - `parseGenerate`, `parseAndGenerate`, `parseGenerateDefaults`: the bytes decode to the object
//!   (to `generated` for `parseGenerateDefaults`) and the object encodes to the bytes;
//! - `parseOnly`: the bytes decode to the object; `generateOnly`: the object encodes to the bytes;
//! - `parseError`: the bytes are rejected;
//! - `generateError`, `generateErrorMultipleCmds`, `writeToStreamError`: encoding fails. An object
//!   that our typed API cannot represent (a `messageId` of `"a"`) counts as failing to encode.
//!
//! Bytes are decoded as a whole stream: bytes left over that do not make a whole frame are a
//! rejection. They are decoded by every end that may receive their packet type (a server for
//! CONNECT, a client for CONNACK, both for PUBLISH unless it carries Subscription Identifiers, and
//! so on), and every end must agree. Whatever our encoder writes must decode to what was encoded.
//!
//! One verdict line per record: `cargo test --test mqtt_packet_vectors -- --nocapture`.

// The verdict table is the point of this test.
#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;
use std::num::{NonZeroU16, NonZeroU32};
use std::panic::{self, AssertUnwindSafe};

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};
use sluice_codec::{
    AckProperties, Auth, AuthProperties, ByteStr, Codec, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, DecodeError, Disconnect, DisconnectProperties, EncodeError, LastWill,
    Packet, PacketId, PayloadFormat, ProtocolVersion, PubAck, Publish, PublishProperties,
    PublishPropertyValues, QoS, ReasonCode, RetainHandling, Role, SubAck, Subscribe,
    SubscribeProperties, Subscription, SubscriptionIds, SubscriptionOptions, UnsubAck, Unsubscribe,
    UnsubscribeProperties, UserProperties,
};

use ProtocolVersion::{V5, V311};
use Role::{Client, Server};

const FIXTURES: &str = include_str!("vectors/mqtt-packet/fixtures.json");

// ------------------------------------------------------------------------------------------------
// The allow-list.

/// What our codec does where its verdict differs from mqtt-packet's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ours {
    /// The decoder rejects bytes that mqtt-packet accepts, with this [`DecodeError::kind`].
    Rejects(&'static str),
    /// The object cannot be expressed in our typed API, so it cannot be encoded.
    CannotBuild,
    /// The encoder refuses the object with an [`EncodeError`].
    RefusesToEncode,
    /// The encoder writes a shorter form that the specification allows, which decodes to the same
    /// packet as mqtt-packet's bytes.
    EncodesShorter,
}

use Ours::{CannotBuild, EncodesShorter, RefusesToEncode, Rejects};

/// A record whose verdict differs from mqtt-packet's, for a reason the specification gives.
#[derive(Debug)]
struct Divergence {
    /// The record's name, or the hex of its bytes when it has none.
    record: &'static str,
    /// Every way our verdict differs, all of which must be observed.
    ours: &'static [Ours],
    /// The clause that makes our verdict right.
    clause: &'static str,
    /// Why, in a few words.
    why: &'static str,
}

/// MQTT 3.1 ("MQIsdp", level 3), and the bridge flag some brokers set in bit 7 of the level: 3.1.1
/// lets a server refuse a protocol name other than "MQTT" (MQTT-3.1.2-1) and requires CONNACK 0x01
/// and a disconnect for a level it does not support (MQTT-3.1.2-2). This codec speaks levels 4
/// and 5 only, and its `Connect` has no protocol name or level field to say otherwise.
const MQTT_31: &str = "MQTT-3.1.2-1, MQTT-3.1.2-2";
const MQTT_31_WHY: &str = "MQTT 3.1 (MQIsdp) is not supported";

/// Records whose verdict differs from mqtt-packet's, each with the clause that makes ours right.
/// Every entry must be used, and must describe exactly what the record shows.
const DIVERGENCES: &[Divergence] = &[
    // MQTT 3.1: every CONNECT with protocol name MQIsdp. Decoding it fails on the protocol name;
    // the object (protocolId "MQIsdp", protocolVersion 3 or a bridge level) cannot be built.
    Divergence {
        record: "minimal connect",
        ours: &[Rejects("InvalidProtocolName"), CannotBuild],
        clause: MQTT_31,
        why: MQTT_31_WHY,
    },
    Divergence {
        record: "minimal connect with clientId as Buffer",
        ours: &[CannotBuild],
        clause: MQTT_31,
        why: MQTT_31_WHY,
    },
    Divergence {
        record: "connect MQTT bridge 131",
        ours: &[Rejects("InvalidProtocolName"), CannotBuild],
        clause: MQTT_31,
        why: "MQTT 3.1 (MQIsdp), with the non-standard bridge bit in the level",
    },
    Divergence {
        record: "connect MQTT bridge 132",
        ours: &[Rejects("InvalidProtocolName"), CannotBuild],
        clause: MQTT_31,
        why: "protocol name MQIsdp with level 0x84 (bridge bit): neither 3.1.1 nor 5.0",
    },
    Divergence {
        record: "empty will payload",
        ours: &[Rejects("InvalidProtocolName"), CannotBuild],
        clause: MQTT_31,
        why: MQTT_31_WHY,
    },
    Divergence {
        record: "empty buffer username payload",
        ours: &[Rejects("InvalidProtocolName"), CannotBuild],
        clause: MQTT_31,
        why: MQTT_31_WHY,
    },
    Divergence {
        record: "empty string username payload",
        ours: &[Rejects("InvalidProtocolName"), CannotBuild],
        clause: MQTT_31,
        why: MQTT_31_WHY,
    },
    Divergence {
        record: "empty buffer password payload",
        ours: &[Rejects("InvalidProtocolName"), CannotBuild],
        clause: MQTT_31,
        why: MQTT_31_WHY,
    },
    Divergence {
        record: "empty string password payload",
        ours: &[Rejects("InvalidProtocolName"), CannotBuild],
        clause: MQTT_31,
        why: MQTT_31_WHY,
    },
    Divergence {
        record: "empty string username and password payload",
        ours: &[Rejects("InvalidProtocolName"), CannotBuild],
        clause: MQTT_31,
        why: MQTT_31_WHY,
    },
    Divergence {
        record: "maximal connect",
        ours: &[Rejects("InvalidProtocolName"), CannotBuild],
        clause: MQTT_31,
        why: MQTT_31_WHY,
    },
    Divergence {
        record: "max connect with special chars",
        ours: &[Rejects("InvalidProtocolName"), CannotBuild],
        clause: MQTT_31,
        why: MQTT_31_WHY,
    },
    Divergence {
        record: "connect all strings generate",
        ours: &[CannotBuild],
        clause: MQTT_31,
        why: MQTT_31_WHY,
    },
    // A 3.1.1 CONNACK (return code 1, no property length) read as 5.0: 0x01 is not a Connect
    // Reason Code, and a 5.0 CONNACK must carry a Property Length (MQTT-2.2.2-1).
    Divergence {
        record: "Version 4 CONACK in Version 5 mode",
        ours: &[Rejects("InvalidReasonCode")],
        clause: "MQTT-3.2.2-8",
        why: "0x01 is not a 5.0 Connect Reason Code",
    },
    // 5.0 CONNACKs cut short. Unlike PUBACK (§3.4.2.1) and DISCONNECT (§3.14.2.1), the CONNACK
    // variable header has no omissible fields: flags, reason code and properties, in that order
    // (§3.2.2), and "if there are no properties, this MUST be indicated by including a Property
    // Length of zero" (MQTT-2.2.2-1).
    Divergence {
        record: "Version 5 CONNACK test 1",
        ours: &[Rejects("Truncated")],
        clause: "MQTT-5.0 §3.2.2, MQTT-2.2.2-1",
        why: "5.0 CONNACK without reason code and property length",
    },
    Divergence {
        record: "Version 5 CONNACK test 2",
        ours: &[Rejects("Truncated")],
        clause: "MQTT-2.2.2-1",
        why: "5.0 CONNACK without property length",
    },
    // Maximum QoS 2: "It is a Protocol Error to include Maximum QoS more than once, or to have a
    // value other than 0 or 1" (§3.2.2.3.4; absent means 2). The decoder rejects the bytes, and
    // the encoder must refuse to write them: it promises never to write what its decoder
    // rejects (`EncodeError`). Until it does, these two records fail.
    Divergence {
        record: "connack MQTT 5 with properties",
        ours: &[Rejects("InvalidBooleanProperty"), RefusesToEncode],
        clause: "MQTT-5.0 §3.2.2.3.4",
        why: "Maximum QoS 2 is a Protocol Error",
    },
    Divergence {
        record: "connack MQTT 5 with properties and doubled user properties",
        ours: &[Rejects("InvalidBooleanProperty"), RefusesToEncode],
        clause: "MQTT-5.0 §3.2.2.3.4",
        why: "Maximum QoS 2 is a Protocol Error",
    },
    // Optional fields that our encoder leaves out and mqtt-packet writes. Both forms are valid
    // and decode to the same packet.
    Divergence {
        record: "Version 5 DISCONNECT test 3",
        ours: &[EncodesShorter],
        clause: "MQTT-5.0 §3.14.2.1",
        why: "reason code 0x00 without properties may be omitted: we write e000",
    },
    Divergence {
        record: "disconnect MQTT 5 with no properties",
        ours: &[EncodesShorter],
        clause: "MQTT-5.0 §3.14.2.1",
        why: "reason code 0x00 without properties may be omitted: we write e000",
    },
    Divergence {
        record: "puback with reason and no MQTT 5 properties",
        ours: &[EncodesShorter],
        clause: "MQTT-5.0 §3.4.2.2.1",
        why: "a PUBACK with Remaining Length 3 has no Property Length: we write 4003000210",
    },
];

// ------------------------------------------------------------------------------------------------
// The test.

#[test]
fn every_mqtt_packet_record() {
    let records: Vec<Value> = serde_json::from_str(FIXTURES).expect("fixtures.json parses");
    assert_eq!(records.len(), 158, "fixtures.json holds 158 records");

    let mut used = BTreeSet::new();
    let mut failures = Vec::new();
    let (mut ok, mut stricter) = (0, 0);
    for (index, record) in records.iter().enumerate() {
        let kind = record["kind"].as_str().expect("every record has a kind");
        let key = record_key(record);
        let label = match record.get("name").and_then(Value::as_str) {
            Some(name) => format!("{name:?}"),
            None => match record.get("expected").and_then(Value::as_str) {
                Some(expected) => format!("{} (mqtt-packet: {expected:?})", short(&key, 40)),
                None => short(&key, 40),
            },
        };
        let listed = DIVERGENCES.iter().position(|d| d.record == key);
        let verdict = match (run_record(record), listed) {
            (Err(failure), _) => Err(failure),
            (Ok(Checked { divergences, note }), None) if divergences.is_empty() => {
                ok += 1;
                Ok(format!(
                    "ok{}",
                    note.map(|n| format!(" ({n})")).unwrap_or_default()
                ))
            }
            (Ok(Checked { divergences, .. }), Some(i)) if divergences.is_empty() => Err(format!(
                "matches mqtt-packet, but DIVERGENCES lists {:?}",
                DIVERGENCES[i].ours
            )),
            (Ok(Checked { divergences, .. }), None) => {
                Err(format!("unlisted divergence {divergences:?}"))
            }
            (Ok(Checked { divergences, .. }), Some(i)) => {
                let d = &DIVERGENCES[i];
                if same_set(d.ours, &divergences) {
                    used.insert(i);
                    stricter += 1;
                    Ok(format!("stricter [{}] {}", d.clause, d.why))
                } else {
                    Err(format!(
                        "diverges as {divergences:?}, but DIVERGENCES lists {:?}",
                        d.ours
                    ))
                }
            }
        };
        match verdict {
            Ok(v) => println!("{index:3} {kind:<26} {label}: {v}"),
            Err(f) => {
                println!("{index:3} {kind:<26} {label}: FAIL {f}");
                failures.push(format!("record {index} {label}: {f}"));
            }
        }
    }
    for (i, d) in DIVERGENCES.iter().enumerate() {
        if !used.contains(&i) && !failures.iter().any(|f| f.contains(d.record)) {
            failures.push(format!(
                "DIVERGENCES entry {:?} matches no record",
                d.record
            ));
        }
    }
    println!(
        "{} records: {ok} ok, {stricter} stricter (listed), {} failed",
        records.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn same_set(listed: &[Ours], seen: &[Ours]) -> bool {
    let a: BTreeSet<_> = listed.iter().collect();
    let b: BTreeSet<_> = seen.iter().collect();
    a == b && listed.len() == a.len()
}

/// A record's name, or the hex of its bytes, or its JSON.
fn record_key(record: &Value) -> String {
    if let Some(name) = record.get("name").and_then(Value::as_str) {
        return name.to_owned();
    }
    if let Some(hex) = record.pointer("/fixture/hex").and_then(Value::as_str) {
        return hex.to_owned();
    }
    record["fixture"].to_string()
}

/// What a record showed: the ways it diverged (none when it matched), and a note for the table.
#[derive(Debug, Default)]
struct Checked {
    divergences: Vec<Ours>,
    note: Option<String>,
}

/// Runs one record. `Err` is a failure that no allow-list entry can excuse: a wrong decode, an
/// accepted parse error, an encoding that a refused one should be, a panic, an encoder that writes
/// what its decoder rejects.
fn run_record(record: &Value) -> Result<Checked, String> {
    let kind = record["kind"].as_str().unwrap_or_default();
    let version = opts_version(record);
    match kind {
        "parseGenerate" | "parseAndGenerate" | "parseGenerateDefaults" => {
            let bytes = fixture_bytes(&record["bytes"])?;
            let object = &record["object"];
            let parsed = record.get("generated").unwrap_or(object);
            let mut checked = Checked::default();
            checked
                .divergences
                .extend(check_parse(&bytes, parsed, version)?);
            checked
                .divergences
                .extend(check_generate(object, version, &bytes)?);
            Ok(checked)
        }
        "parseOnly" => {
            let bytes = fixture_bytes(&record["bytes"])?;
            Ok(Checked {
                divergences: check_parse(&bytes, &record["object"], version)?
                    .into_iter()
                    .collect(),
                note: None,
            })
        }
        "generateOnly" => {
            let bytes = fixture_bytes(&record["bytes"])?;
            Ok(Checked {
                divergences: check_generate(&record["object"], version, &bytes)?
                    .into_iter()
                    .collect(),
                note: None,
            })
        }
        "parseError" => {
            let bytes = fixture_bytes(&record["fixture"])?;
            let reason = check_parse_error(&bytes, version)?;
            Ok(Checked {
                divergences: Vec::new(),
                note: Some(reason),
            })
        }
        "generateError" | "writeToStreamError" => {
            let reason = check_generate_error(&record["fixture"], version)?;
            Ok(Checked {
                divergences: Vec::new(),
                note: Some(reason),
            })
        }
        "generateErrorMultipleCmds" => {
            let cmds = record["cmds"].as_array().ok_or("cmds is not an array")?;
            let mut reasons = Vec::new();
            for cmd in cmds {
                let mut fixture = record["fixture"].clone();
                fixture
                    .as_object_mut()
                    .ok_or("fixture is not an object")?
                    .insert("cmd".into(), cmd.clone());
                let reason = check_generate_error(&fixture, version)
                    .map_err(|e| format!("cmd {cmd}: {e}"))?;
                reasons.push(format!("{}: {reason}", cmd.as_str().unwrap_or("?")));
            }
            Ok(Checked {
                divergences: Vec::new(),
                note: Some(reasons.join("; ")),
            })
        }
        other => Err(format!("unknown record kind {other:?}")),
    }
}

/// The connection's version from `opts.protocolVersion`: 5, or 4 when it is 4 or absent. Level 3
/// (MQTT 3.1) shares every packet but CONNECT with 3.1.1, so it decodes as 3.1.1; a CONNECT's own
/// level is read from the CONNECT.
fn opts_version(record: &Value) -> ProtocolVersion {
    match record
        .pointer("/opts/protocolVersion")
        .and_then(Value::as_u64)
    {
        Some(5) => V5,
        None | Some(3 | 4) => V311,
        Some(other) => panic!("opts.protocolVersion {other} in fixtures.json"),
    }
}

// ------------------------------------------------------------------------------------------------
// Decoding.

/// The ends that receive a packet type (MQTT 5.0 §2.1.2; 3.1.1 §2.2.1, where only a client sends
/// DISCONNECT). A PUBLISH with Subscription Identifiers only ever goes to a client (MQTT-3.3.4-6),
/// a DISCONNECT with a Session Expiry Interval only to a server (MQTT-3.14.2-2): `only` says so.
fn receivers(first_byte: u8, version: ProtocolVersion, only: Option<Role>) -> &'static [Role] {
    match (first_byte >> 4, only) {
        (1 | 8 | 10 | 12, _) => &[Server],
        (2 | 9 | 11 | 13, _) => &[Client],
        (14, _) if version == V311 => &[Server],
        (3 | 14, Some(Client)) => &[Client],
        (3 | 14, Some(Server)) => &[Server],
        // PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, 5.0 DISCONNECT, AUTH, and the reserved type 0.
        _ => &[Server, Client],
    }
}

/// Why a byte stream was refused.
#[derive(Debug)]
enum Refused {
    Error(DecodeError),
    /// Bytes left at the end that do not make a whole frame.
    Incomplete(usize),
}

impl Refused {
    fn kind(&self) -> &'static str {
        match self {
            Self::Error(e) => e.kind(),
            Self::Incomplete(_) => "Incomplete",
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Error(e) => e.to_string(),
            Self::Incomplete(n) => format!("{n} bytes left that make no whole frame"),
        }
    }
}

/// Decodes `bytes` as a whole stream, as `role`.
fn decode_stream(
    bytes: &[u8],
    role: Role,
    version: ProtocolVersion,
) -> Result<Vec<Packet>, Refused> {
    let mut codec = match bytes.first() {
        // A CONNECT is the first packet a server sees; its level fixes the version.
        Some(b) if b >> 4 == 1 => Codec::server_awaiting_connect(),
        _ => Codec::new(role, version),
    };
    let mut buf = BytesMut::from(bytes);
    let mut packets = Vec::new();
    while !buf.is_empty() {
        match codec.decode(&mut buf) {
            Ok(Some(p)) => packets.push(p),
            Ok(None) => return Err(Refused::Incomplete(buf.len())),
            Err(e) => return Err(Refused::Error(e)),
        }
    }
    Ok(packets)
}

/// Decodes `bytes` as every end that receives them and compares with `expected`. Returns the
/// rejection when every end rejects them.
fn decode_as_receivers(
    bytes: &[u8],
    version: ProtocolVersion,
    only: Option<Role>,
    expected: &Result<Packet, String>,
) -> Result<Option<Refused>, String> {
    let first = *bytes.first().ok_or("no bytes")?;
    let mut refused = None;
    let mut accepted = false;
    for &role in receivers(first, version, only) {
        match decode_stream(bytes, role, version) {
            Ok(packets) => {
                accepted = true;
                let [got] = packets.as_slice() else {
                    return Err(format!("{role}: decoded {} packets, not 1", packets.len()));
                };
                let expected = expected
                    .as_ref()
                    .map_err(|e| format!("{role}: decoded {}, but {e}", show(got)))?;
                if normalised(got) != normalised(expected) {
                    return Err(format!(
                        "{role}: decoded {}, expected {}",
                        show(got),
                        show(expected)
                    ));
                }
            }
            Err(r) => {
                if refused
                    .as_ref()
                    .is_some_and(|p: &Refused| p.kind() != r.kind())
                {
                    return Err(format!("the ends disagree: {refused:?} and {r:?}"));
                }
                refused = Some(r);
            }
        }
    }
    match (accepted, refused) {
        (true, Some(r)) => Err(format!(
            "one end accepts, another refuses: {}",
            r.describe()
        )),
        (_, r) => Ok(r),
    }
}

/// Checks that `bytes` decode to `object`. A rejection is a divergence.
fn check_parse(
    bytes: &[u8],
    object: &Value,
    version: ProtocolVersion,
) -> Result<Option<Ours>, String> {
    let expected = to_packet(object, version);
    let refused = decode_as_receivers(bytes, version, only_receiver(object), &expected)?;
    Ok(refused.map(|r| Rejects(r.kind())))
}

/// Checks that `bytes` are rejected, and says why.
fn check_parse_error(bytes: &[u8], version: ProtocolVersion) -> Result<String, String> {
    let first = *bytes.first().ok_or("no bytes")?;
    let mut reasons = Vec::new();
    for &role in receivers(first, version, None) {
        match decode_stream(bytes, role, version) {
            Ok(packets) => {
                let shown: Vec<_> = packets.iter().map(show).collect();
                return Err(format!("{role} accepts: {}", shown.join(", ")));
            }
            Err(r) => {
                let reason = r.describe();
                if !reasons.contains(&reason) {
                    reasons.push(reason);
                }
            }
        }
    }
    Ok(format!("rejected: {}", reasons.join(" / ")))
}

/// The only end that may receive the object's packet: a client for a PUBLISH carrying
/// Subscription Identifiers, a server for a DISCONNECT carrying a Session Expiry Interval.
fn only_receiver(object: &Value) -> Option<Role> {
    let has = |pointer: &str| object.pointer(pointer).is_some_and(|v| !v.is_null());
    if object["cmd"] == "publish" && has("/properties/subscriptionIdentifier") {
        Some(Client)
    } else if object["cmd"] == "disconnect" && has("/properties/sessionExpiryInterval") {
        Some(Server)
    } else {
        None
    }
}

// ------------------------------------------------------------------------------------------------
// Encoding.

/// What became of an object given to the encoder.
enum Generated {
    CannotBuild(String),
    /// The encoder, or a constructor of the API, refuses the values.
    Refused(String),
    Encoded(Box<Packet>, Bytes),
}

/// Builds and encodes `object`, catching panics (a panic is always a failure).
fn generate(object: &Value, version: ProtocolVersion) -> Result<Generated, String> {
    let attempt = panic::catch_unwind(AssertUnwindSafe(|| {
        let packet = match to_packet(object, version) {
            Ok(p) => p,
            Err(e) if e.contains(REFUSED) => return Generated::Refused(e),
            Err(e) => return Generated::CannotBuild(e),
        };
        let mut buf = BytesMut::new();
        match Codec::new(Client, version).encode(&packet, &mut buf) {
            Ok(()) => Generated::Encoded(Box::new(packet), buf.freeze()),
            Err(e) => Generated::Refused(e.to_string()),
        }
    }));
    attempt.map_err(|payload| {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        format!("building or encoding the object panicked: {msg}")
    })
}

/// Checks that our own encoding decodes to the packet that was encoded, as every receiving end.
fn check_round_trip(packet: &Packet, bytes: &[u8], version: ProtocolVersion) -> Result<(), String> {
    let only = match packet {
        Packet::Publish(p) if !p.properties.subscription_identifiers().is_empty() => Some(Client),
        Packet::Disconnect(d) if d.properties.session_expiry_interval_secs.is_some() => {
            Some(Server)
        }
        _ => None,
    };
    let version = match packet {
        Packet::Connect(c) => c.protocol,
        _ => version,
    };
    match decode_as_receivers(bytes, version, only, &Ok(packet.clone())) {
        Ok(None) => Ok(()),
        Ok(Some(r)) => Err(format!(
            "the encoder wrote {} which its own decoder rejects: {}",
            hex_short(bytes),
            r.describe()
        )),
        Err(e) => Err(format!(
            "our encoding {} does not decode back: {e}",
            hex_short(bytes)
        )),
    }
}

/// Checks that `object` encodes to `expected`.
fn check_generate(
    object: &Value,
    version: ProtocolVersion,
    expected: &Bytes,
) -> Result<Option<Ours>, String> {
    match generate(object, version)? {
        Generated::CannotBuild(_) => Ok(Some(CannotBuild)),
        Generated::Refused(_) => Ok(Some(RefusesToEncode)),
        Generated::Encoded(packet, bytes) => {
            check_round_trip(&packet, &bytes, version)?;
            if bytes == *expected {
                return Ok(None);
            }
            let differ = format!(
                "we encode {}, mqtt-packet {}",
                hex_short(&bytes),
                hex_short(expected)
            );
            if bytes.len() >= expected.len() {
                return Err(differ);
            }
            // Shorter: mqtt-packet's bytes must decode to the same packet as ours.
            let only = only_receiver(object);
            match decode_as_receivers(expected, version, only, &Ok(*packet)) {
                Ok(None) => Ok(Some(EncodesShorter)),
                Ok(Some(r)) => Err(format!(
                    "{differ}, and theirs is rejected: {}",
                    r.describe()
                )),
                Err(e) => Err(format!("{differ}, and theirs decodes differently: {e}")),
            }
        }
    }
}

/// Checks that encoding `object` fails, and says why.
fn check_generate_error(object: &Value, version: ProtocolVersion) -> Result<String, String> {
    match generate(object, version)? {
        Generated::CannotBuild(e) => Ok(format!("cannot build: {e}")),
        Generated::Refused(e) => Ok(format!("refused: {e}")),
        Generated::Encoded(_, bytes) => Err(format!(
            "encodes to {} where mqtt-packet refuses",
            hex_short(&bytes)
        )),
    }
}

// ------------------------------------------------------------------------------------------------
// Comparing.

/// The packet with its user properties sorted: mqtt-packet keeps them in an object, which loses
/// their order.
fn normalised(packet: &Packet) -> Packet {
    fn sort(u: &mut UserProperties) {
        let mut pairs: Vec<(String, String)> = u
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        pairs.sort();
        *u = UserProperties::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .expect("pairs from a packet are valid");
    }
    let mut p = packet.clone();
    match &mut p {
        Packet::Connect(c) => {
            sort(&mut c.properties.user_properties);
            if let Some(w) = &mut c.will {
                sort(&mut w.properties.user_properties);
            }
        }
        Packet::ConnAck(c) => sort(&mut c.properties.user_properties),
        Packet::Publish(x) => {
            // The properties are one encoded block: take the values out, sort, build it again.
            let mut values = x.properties.to_values();
            sort(&mut values.user_properties);
            x.properties = values.build().expect("properties from a packet are valid");
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            sort(&mut a.properties.user_properties);
        }
        Packet::Subscribe(s) => sort(&mut s.properties.user_properties),
        Packet::SubAck(s) => sort(&mut s.properties.user_properties),
        Packet::Unsubscribe(u) => sort(&mut u.properties.user_properties),
        Packet::UnsubAck(u) => sort(&mut u.properties.user_properties),
        Packet::Disconnect(d) => sort(&mut d.properties.user_properties),
        Packet::Auth(a) => sort(&mut a.properties.user_properties),
        Packet::PingReq | Packet::PingResp => {}
    }
    p
}

/// A packet for a message: a long payload is cut to its first bytes.
fn show(packet: &Packet) -> String {
    match packet {
        Packet::Publish(p) if p.payload.len() > 64 => {
            let mut cut = p.clone();
            cut.payload = p.payload.slice(..16);
            format!("{cut:?} (payload cut from {} bytes)", p.payload.len())
        }
        p => format!("{p:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex of the first 40 bytes, and the length when there are more.
fn hex_short(bytes: &[u8]) -> String {
    match bytes.get(..40) {
        Some(head) if bytes.len() > 40 => format!("{}…({} bytes)", hex(head), bytes.len()),
        _ => hex(bytes),
    }
}

fn short(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_owned()
    } else {
        format!("{}…({} chars)", &s[..max], s.len())
    }
}

// ------------------------------------------------------------------------------------------------
// Fixture values.

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd-length hex {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("hex {s:?}: {e}")))
        .collect()
}

/// `{"hex": ...}`, or `{"hexPrefix": ..., "length": n}` for a buffer of `n` bytes that starts with
/// the prefix and is zero after it (as mqtt-packet's test builds its 256 MiB PUBLISH).
fn fixture_bytes(v: &Value) -> Result<Bytes, String> {
    if let Some(h) = v.get("hex").and_then(Value::as_str) {
        return Ok(Bytes::from(unhex(h)?));
    }
    let prefix = v.get("hexPrefix").and_then(Value::as_str);
    let len = v.get("length").and_then(Value::as_u64);
    match (prefix, len) {
        (Some(prefix), Some(len)) => {
            let prefix = unhex(prefix)?;
            let len = usize::try_from(len).map_err(|e| e.to_string())?;
            if len < prefix.len() {
                return Err(format!("length {len} is shorter than the prefix"));
            }
            // Zeroed memory comes from the allocator untouched; only the prefix is written.
            let mut buf = vec![0u8; len];
            buf[..prefix.len()].copy_from_slice(&prefix);
            Ok(Bytes::from(buf))
        }
        _ => Err(format!("{v} is not a byte buffer")),
    }
}

// ------------------------------------------------------------------------------------------------
// The converter: mqtt-packet objects into our `Packet`. Anything our typed API cannot hold is an
// error (a build error), as is any field it does not know.

type Build<T> = Result<T, String>;

/// Marks a build error that is the API refusing a value (an [`EncodeError`] from a fallible
/// constructor) rather than a value it has no way to hold.
const REFUSED: &str = "the API refuses: ";

fn refused(e: EncodeError) -> String {
    format!("{REFUSED}{e}")
}

/// The fields of a JSON object, consumed one by one; `finish` refuses any field left over.
struct Fields<'a> {
    what: &'static str,
    map: &'a Map<String, Value>,
    seen: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn new(v: &'a Value, what: &'static str) -> Build<Self> {
        let map = v
            .as_object()
            .ok_or_else(|| format!("{what} {v} is not an object"))?;
        Ok(Self {
            what,
            map,
            seen: Vec::new(),
        })
    }

    /// The field, if present and not null.
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn opt<T>(&mut self, key: &'static str, conv: impl Fn(&Value) -> Build<T>) -> Build<Option<T>> {
        self.get(key)
            .map(|v| conv(v).map_err(|e| format!("{key}: {e}")))
            .transpose()
    }

    fn req<T>(&mut self, key: &'static str, conv: impl Fn(&Value) -> Build<T>) -> Build<T> {
        let what = self.what;
        self.opt(key, conv)?
            .ok_or_else(|| format!("{what} has no {key}"))
    }

    fn finish(self) -> Build<()> {
        for (k, v) in self.map {
            if !v.is_null() && !self.seen.contains(&k.as_str()) {
                return Err(format!(
                    "{} field {k} = {v} has no counterpart in our API",
                    self.what
                ));
            }
        }
        Ok(())
    }
}

fn uint(v: &Value) -> Build<u64> {
    v.as_u64()
        .ok_or_else(|| format!("{v} is not an unsigned integer"))
}

fn u8_(v: &Value) -> Build<u8> {
    u8::try_from(uint(v)?).map_err(|_| format!("{v} does not fit a byte"))
}

fn u16_(v: &Value) -> Build<u16> {
    u16::try_from(uint(v)?).map_err(|_| format!("{v} does not fit two bytes"))
}

fn u32_(v: &Value) -> Build<u32> {
    u32::try_from(uint(v)?).map_err(|_| format!("{v} does not fit four bytes"))
}

fn nz16(v: &Value) -> Build<NonZeroU16> {
    NonZeroU16::new(u16_(v)?).ok_or_else(|| "0 is not allowed".to_owned())
}

fn nz32(v: &Value) -> Build<NonZeroU32> {
    NonZeroU32::new(u32_(v)?).ok_or_else(|| "0 is not allowed".to_owned())
}

fn boolean(v: &Value) -> Build<bool> {
    v.as_bool().ok_or_else(|| format!("{v} is not a boolean"))
}

fn qos(v: &Value) -> Build<QoS> {
    QoS::from_u8(u8_(v)?).ok_or_else(|| format!("{v} is not a QoS"))
}

fn reason(v: &Value) -> Build<ReasonCode> {
    u8_(v).map(ReasonCode)
}

fn payload_format(v: &Value) -> Build<PayloadFormat> {
    Ok(if boolean(v)? {
        PayloadFormat::Utf8
    } else {
        PayloadFormat::Unspecified
    })
}

/// Binary data: a string (its UTF-8 bytes) or a buffer.
fn binary(v: &Value) -> Build<Bytes> {
    match v {
        Value::String(s) => Ok(Bytes::from(s.clone().into_bytes())),
        Value::Object(_) => fixture_bytes(v),
        _ => Err(format!("{v} is neither a string nor a buffer")),
    }
}

/// A UTF-8 string: a string, or a buffer holding well-formed UTF-8 without U+0000.
fn string(v: &Value) -> Build<ByteStr> {
    ByteStr::try_from_bytes(binary(v)?).map_err(|e| format!("{v}: {e}"))
}

fn packet_id(v: &Value) -> Build<PacketId> {
    nz16(v)
}

/// `{name: value}` or `{name: [values]}`, in the object's order.
fn user_properties(f: &mut Fields<'_>) -> Build<UserProperties> {
    let Some(v) = f.get("userProperties") else {
        return Ok(UserProperties::new());
    };
    let map = v
        .as_object()
        .ok_or_else(|| format!("userProperties {v} is not an object"))?;
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (name, value) in map {
        let values = match value {
            Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for value in values {
            let value = value
                .as_str()
                .ok_or_else(|| format!("user property {name}: {value} is not a string"))?;
            pairs.push((name.clone(), value.to_owned()));
        }
    }
    UserProperties::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(refused)
}

/// The properties object of a 5.0 packet; in 3.1.1 there is none to hold them.
fn properties<'a>(f: &mut Fields<'a>, version: ProtocolVersion) -> Build<Option<Fields<'a>>> {
    match f.get("properties") {
        None => Ok(None),
        Some(v) if version == V311 => Err(format!("properties {v} in an MQTT 3.1.1 packet")),
        Some(v) => Fields::new(v, "properties").map(Some),
    }
}

fn ack_properties(f: &mut Fields<'_>, version: ProtocolVersion) -> Build<AckProperties> {
    let Some(mut p) = properties(f, version)? else {
        return Ok(AckProperties::default());
    };
    let props = AckProperties {
        reason_string: p.opt("reasonString", string)?,
        user_properties: user_properties(&mut p)?,
    };
    p.finish()?;
    Ok(props)
}

/// The reason code of a 5.0 packet that may omit it (0 when absent); a 3.1.1 packet has none.
fn reason_code(f: &mut Fields<'_>, version: ProtocolVersion) -> Build<ReasonCode> {
    let code = f.opt("reasonCode", reason)?;
    match (version, code) {
        (V311, Some(c)) if c != ReasonCode::SUCCESS => {
            Err(format!("reason code {c} in an MQTT 3.1.1 packet"))
        }
        (_, c) => Ok(c.unwrap_or(ReasonCode::SUCCESS)),
    }
}

/// The list of reason codes of a SUBACK or UNSUBACK (`granted`).
fn codes(v: &Value) -> Build<Vec<ReasonCode>> {
    v.as_array()
        .ok_or_else(|| format!("{v} is not an array"))?
        .iter()
        .map(reason)
        .collect()
}

/// Converts an mqtt-packet object into our packet. `version` is the connection's version; a
/// CONNECT carries its own.
fn to_packet(object: &Value, version: ProtocolVersion) -> Build<Packet> {
    let mut f = Fields::new(object, "packet")?;
    let cmd = f.req("cmd", |v| {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{v} is not a string"))
    })?;
    // The fixed header: mqtt-packet gives every packet qos, dup and retain; our packets other than
    // PUBLISH have no such fields, so they must hold the type's reserved flags. `length` is the
    // remaining length mqtt-packet computed.
    let qos_field = f.opt("qos", qos)?.unwrap_or(QoS::AtMostOnce);
    let dup = f.opt("dup", boolean)?.unwrap_or(false);
    let retain = f.opt("retain", boolean)?.unwrap_or(false);
    let _ = f.get("length");
    let packet = match cmd.as_str() {
        "connect" => Packet::Connect(Box::new(connect(&mut f)?)),
        "connack" => {
            let session_present = f.opt("sessionPresent", boolean)?.unwrap_or(false);
            let return_code = f.opt("returnCode", reason)?;
            let reason_code = f.opt("reasonCode", reason)?;
            let code = match (return_code, reason_code) {
                (Some(a), Some(b)) if a != b => {
                    return Err(format!("returnCode {a} and reasonCode {b} differ"));
                }
                (a, b) => a.or(b).unwrap_or(ReasonCode::SUCCESS),
            };
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code: code,
                properties: Box::new(connack_properties(&mut f, version)?),
            })
        }
        "publish" => {
            let topic = f.req("topic", string)?;
            let payload = f.opt("payload", binary)?.unwrap_or_default();
            let packet_id = match (qos_field, f.get("messageId")) {
                (QoS::AtMostOnce, None) => None,
                (QoS::AtMostOnce, Some(id)) => {
                    return Err(format!("messageId {id} on a QoS 0 PUBLISH"));
                }
                (_, id) => Some(
                    packet_id(id.ok_or("QoS > 0 PUBLISH has no messageId")?)
                        .map_err(|e| format!("messageId: {e}"))?,
                ),
            };
            Packet::Publish(Publish {
                dup,
                qos: qos_field,
                retain,
                topic,
                packet_id,
                properties: publish_properties(&mut f, version)?,
                payload,
            })
        }
        "puback" | "pubrec" | "pubrel" | "pubcomp" => {
            let ack = PubAck {
                packet_id: f.req("messageId", packet_id)?,
                reason_code: reason_code(&mut f, version)?,
                properties: ack_properties(&mut f, version)?,
            };
            match cmd.as_str() {
                "puback" => Packet::PubAck(ack),
                "pubrec" => Packet::PubRec(ack),
                "pubrel" => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        }
        "subscribe" => {
            let packet_id = f.req("messageId", packet_id)?;
            let subs = f.req("subscriptions", |v| {
                v.as_array()
                    .cloned()
                    .ok_or_else(|| format!("{v} is not an array"))
            })?;
            let filters = subs
                .iter()
                .map(|s| subscription(s, version))
                .collect::<Build<Vec<_>>>()?;
            let properties = match properties(&mut f, version)? {
                None => SubscribeProperties::default(),
                Some(mut p) => {
                    let props = SubscribeProperties {
                        subscription_identifier: p.opt("subscriptionIdentifier", nz32)?,
                        user_properties: user_properties(&mut p)?,
                    };
                    p.finish()?;
                    props
                }
            };
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        }
        "suback" => Packet::SubAck(SubAck {
            packet_id: f.req("messageId", packet_id)?,
            reason_codes: f.req("granted", codes)?,
            properties: ack_properties(&mut f, version)?,
        }),
        "unsubscribe" => {
            let packet_id = f.req("messageId", packet_id)?;
            let filters = f.req("unsubscriptions", |v| {
                v.as_array()
                    .ok_or_else(|| format!("{v} is not an array"))?
                    .iter()
                    .map(string)
                    .collect::<Build<Vec<_>>>()
            })?;
            let properties = match properties(&mut f, version)? {
                None => UnsubscribeProperties::default(),
                Some(mut p) => {
                    let props = UnsubscribeProperties {
                        user_properties: user_properties(&mut p)?,
                    };
                    p.finish()?;
                    props
                }
            };
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        }
        "unsuback" => {
            let packet_id = f.req("messageId", packet_id)?;
            let reason_codes = f.opt("granted", codes)?.unwrap_or_default();
            if version == V311 && !reason_codes.is_empty() {
                return Err("reason codes in an MQTT 3.1.1 UNSUBACK".to_owned());
            }
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties: ack_properties(&mut f, version)?,
                reason_codes,
            })
        }
        "pingreq" => Packet::PingReq,
        "pingresp" => Packet::PingResp,
        "disconnect" => {
            let reason_code = reason_code(&mut f, version)?;
            let properties = match properties(&mut f, version)? {
                None => DisconnectProperties::default(),
                Some(mut p) => {
                    let props = DisconnectProperties {
                        session_expiry_interval_secs: p.opt("sessionExpiryInterval", u32_)?,
                        reason_string: p.opt("reasonString", string)?,
                        user_properties: user_properties(&mut p)?,
                        server_reference: p.opt("serverReference", string)?,
                    };
                    p.finish()?;
                    props
                }
            };
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        }
        "auth" => {
            let reason_code = f.opt("reasonCode", reason)?.unwrap_or(ReasonCode::SUCCESS);
            let properties = match f.get("properties") {
                None => AuthProperties::default(),
                Some(v) => {
                    let mut p = Fields::new(v, "properties")?;
                    let props = AuthProperties {
                        authentication_method: p.opt("authenticationMethod", string)?,
                        authentication_data: p.opt("authenticationData", binary)?,
                        reason_string: p.opt("reasonString", string)?,
                        user_properties: user_properties(&mut p)?,
                    };
                    p.finish()?;
                    props
                }
            };
            Packet::Auth(Auth {
                reason_code,
                properties: Box::new(properties),
            })
        }
        other => return Err(format!("unknown cmd {other:?}")),
    };
    // Checked after the packet's own fields, so that an error names those first.
    let reserved_qos = match cmd.as_str() {
        "pubrel" | "subscribe" | "unsubscribe" => QoS::AtLeastOnce,
        _ => QoS::AtMostOnce,
    };
    if cmd != "publish" && (qos_field != reserved_qos || dup || retain) {
        return Err(format!(
            "{cmd} with qos {qos_field:?}, dup {dup}, retain {retain}: not its reserved flags"
        ));
    }
    f.finish()?;
    Ok(packet)
}

fn connect(f: &mut Fields<'_>) -> Build<Connect> {
    // mqtt-packet's defaults: protocol MQTT level 4, clean session, keep alive 0, empty client id.
    match f.get("protocolId") {
        None => {}
        Some(Value::String(s)) if s == "MQTT" => {}
        Some(Value::String(s)) if s == "MQIsdp" => {
            return Err("protocol name MQIsdp: MQTT 3.1 is not supported".to_owned());
        }
        Some(v) => return Err(format!("protocolId {v} is not \"MQTT\"")),
    }
    let protocol = match f.opt("protocolVersion", u8_)?.unwrap_or(4) {
        4 => V311,
        5 => V5,
        3 => return Err("protocol level 3: MQTT 3.1 is not supported".to_owned()),
        other => return Err(format!("protocol level {other} is not 4 or 5")),
    };
    if f.opt("bridgeMode", boolean)? == Some(true) {
        return Err("bridge mode (bit 7 of the protocol level) is not MQTT".to_owned());
    }
    let clean_start = f.opt("clean", boolean)?.unwrap_or(true);
    let keep_alive_secs = f.opt("keepalive", u16_)?.unwrap_or(0);
    let client_id = f.opt("clientId", string)?.unwrap_or_default();
    let will = f.opt("will", |v| will(v, protocol))?;
    let username = f.opt("username", string)?;
    let password = f.opt("password", binary)?;
    let properties = match properties(f, protocol)? {
        None => ConnectProperties::default(),
        Some(mut p) => {
            let props = ConnectProperties {
                session_expiry_interval_secs: p.opt("sessionExpiryInterval", u32_)?,
                receive_maximum: p.opt("receiveMaximum", nz16)?,
                maximum_packet_size: p.opt("maximumPacketSize", nz32)?,
                topic_alias_maximum: p.opt("topicAliasMaximum", u16_)?,
                request_response_information: p.opt("requestResponseInformation", boolean)?,
                request_problem_information: p.opt("requestProblemInformation", boolean)?,
                user_properties: user_properties(&mut p)?,
                authentication_method: p.opt("authenticationMethod", string)?,
                authentication_data: p.opt("authenticationData", binary)?,
            };
            p.finish()?;
            props
        }
    };
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive_secs,
        properties,
        client_id,
        will,
        username,
        password,
    })
}

fn will(v: &Value, version: ProtocolVersion) -> Build<LastWill> {
    let mut f = Fields::new(v, "will")?;
    let mut w = LastWill {
        topic: f.req("topic", string)?,
        payload: f.opt("payload", binary)?.unwrap_or_default(),
        qos: f.opt("qos", qos)?.unwrap_or(QoS::AtMostOnce),
        retain: f.opt("retain", boolean)?.unwrap_or(false),
        properties: Default::default(),
    };
    if let Some(mut p) = properties(&mut f, version)? {
        w.properties.will_delay_interval_secs = p.opt("willDelayInterval", u32_)?;
        w.properties.payload_format_indicator = p.opt("payloadFormatIndicator", payload_format)?;
        w.properties.message_expiry_interval_secs = p.opt("messageExpiryInterval", u32_)?;
        w.properties.content_type = p.opt("contentType", string)?;
        w.properties.response_topic = p.opt("responseTopic", string)?;
        w.properties.correlation_data = p.opt("correlationData", binary)?;
        w.properties.user_properties = user_properties(&mut p)?;
        p.finish()?;
    }
    f.finish()?;
    Ok(w)
}

fn connack_properties(f: &mut Fields<'_>, version: ProtocolVersion) -> Build<ConnAckProperties> {
    let Some(mut p) = properties(f, version)? else {
        return Ok(ConnAckProperties::default());
    };
    let props = ConnAckProperties {
        session_expiry_interval_secs: p.opt("sessionExpiryInterval", u32_)?,
        receive_maximum: p.opt("receiveMaximum", nz16)?,
        maximum_qos: p.opt("maximumQoS", qos)?,
        retain_available: p.opt("retainAvailable", boolean)?,
        maximum_packet_size: p.opt("maximumPacketSize", nz32)?,
        assigned_client_identifier: p.opt("assignedClientIdentifier", string)?,
        topic_alias_maximum: p.opt("topicAliasMaximum", u16_)?,
        reason_string: p.opt("reasonString", string)?,
        user_properties: user_properties(&mut p)?,
        wildcard_subscription_available: p.opt("wildcardSubscriptionAvailable", boolean)?,
        subscription_identifiers_available: p.opt("subscriptionIdentifiersAvailable", boolean)?,
        shared_subscription_available: p.opt("sharedSubscriptionAvailable", boolean)?,
        server_keep_alive_secs: p.opt("serverKeepAlive", u16_)?,
        response_information: p.opt("responseInformation", string)?,
        server_reference: p.opt("serverReference", string)?,
        authentication_method: p.opt("authenticationMethod", string)?,
        authentication_data: p.opt("authenticationData", binary)?,
    };
    p.finish()?;
    Ok(props)
}

fn publish_properties(f: &mut Fields<'_>, version: ProtocolVersion) -> Build<PublishProperties> {
    let Some(mut p) = properties(f, version)? else {
        return Ok(PublishProperties::new());
    };
    let ids = p
        .opt("subscriptionIdentifier", |v| match v {
            Value::Array(a) => a.iter().map(u32_).collect(),
            v => u32_(v).map(|id| vec![id]),
        })?
        .unwrap_or_default();
    let values = PublishPropertyValues {
        payload_format_indicator: p.opt("payloadFormatIndicator", payload_format)?,
        message_expiry_interval_secs: p.opt("messageExpiryInterval", u32_)?,
        topic_alias: p.opt("topicAlias", nz16)?,
        response_topic: p.opt("responseTopic", string)?,
        correlation_data: p.opt("correlationData", binary)?,
        user_properties: user_properties(&mut p)?,
        // Handed to the API as given: an identifier out of range (0, or above 268,435,455) must
        // make encoding fail, not build a packet.
        subscription_identifiers: SubscriptionIds::from_ids(ids).map_err(refused)?,
        content_type: p.opt("contentType", string)?,
    };
    p.finish()?;
    // Built (checked and encoded) here: values the peer would refuse are refused by the API.
    values.build().map_err(refused)
}

fn subscription(v: &Value, version: ProtocolVersion) -> Build<Subscription> {
    let mut f = Fields::new(v, "subscription")?;
    let filter = f.req("topic", string)?;
    let mut options = SubscriptionOptions::qos(f.req("qos", qos)?);
    options.no_local = f.opt("nl", boolean)?.unwrap_or(false);
    options.retain_as_published = f.opt("rap", boolean)?.unwrap_or(false);
    options.retain_handling = match f.opt("rh", u8_)?.unwrap_or(0) {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendAtSubscribeIfNew,
        2 => RetainHandling::DoNotSend,
        other => return Err(format!("retain handling {other}")),
    };
    if version == V311 && options != SubscriptionOptions::qos(options.qos) {
        return Err("5.0 subscription options in an MQTT 3.1.1 SUBSCRIBE".to_owned());
    }
    f.finish()?;
    Ok(Subscription { filter, options })
}
