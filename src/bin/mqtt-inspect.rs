//! `mqtt-inspect`: decodes MQTT 3.1.1 / 5.0 frames and prints one JSON object per frame.
//!
//! Input is hex (one or more frames per line; whitespace and `#` comments ignored) or, with
//! `--raw`, a raw byte stream such as one direction of a TCP capture. A frame that fails to decode
//! prints an object with the error, the clause it breaks and the MQTT 5.0 reason code; the exit
//! status is then 1. A raw stream stops at its first error (the rest of a corrupt stream cannot be
//! framed); in hex input each line is its own stream.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use serde_json::{Map, Value, json};
use sluice::inspect::Options;
use sluice_codec::{
    AckProperties, ByteStr, Codec, DecodeError, Packet, ProtocolVersion, ReasonCode, UserProperties,
};

fn main() -> ExitCode {
    // Usage errors exit with status 2, --help and --version with 0 (clap's own statuses).
    let opts = Options::parse();
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "mqtt-inspect: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(opts: &Options) -> Result<bool> {
    let mut input = Vec::new();
    match opts.input.as_deref() {
        None | Some("-") => {
            std::io::stdin().read_to_end(&mut input)?;
        }
        Some(path) => {
            input = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        }
    }
    let mut codec = Codec::new(opts.role(), opts.version());
    if let Some(max) = opts.max_packet_size {
        codec = codec.with_max_packet_size(max);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut ok = true;
    if opts.raw {
        ok &= inspect_stream(&mut codec, opts, &input, None, &mut out)?;
    } else {
        let text = String::from_utf8_lossy(&input);
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("");
            let hex: String = line
                .split(|c: char| c.is_whitespace() || c == ',' || c == ':')
                .map(|t| t.strip_prefix("0x").or(t.strip_prefix("0X")).unwrap_or(t))
                .collect();
            if hex.is_empty() {
                continue;
            }
            match decode_hex(&hex) {
                Ok(bytes) => ok &= inspect_stream(&mut codec, opts, &bytes, Some(n + 1), &mut out)?,
                Err(e) => {
                    ok = false;
                    emit(&mut out, json!({"line": n + 1, "error": e}))?;
                }
            }
        }
    }
    out.flush()?;
    Ok(ok)
}

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", s.len()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| format!("invalid hex {:?} at column {}", &s[i..i + 2], i + 1))
        })
        .collect()
}

fn emit(out: &mut impl Write, v: Value) -> Result<()> {
    serde_json::to_writer(&mut *out, &v)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Decodes every frame of one stream; returns whether all decoded. The codec carries what it
/// learnt (the version) from one hex line to the next.
fn inspect_stream(
    codec: &mut Codec,
    opts: &Options,
    bytes: &[u8],
    line: Option<usize>,
    out: &mut impl Write,
) -> Result<bool> {
    let mut buf = BytesMut::from(bytes);
    let mut offset = 0usize;
    let mut index = 0usize;
    loop {
        let mut obj = Map::new();
        if let Some(l) = line {
            obj.insert("line".into(), json!(l));
        }
        obj.insert("frame".into(), json!(index));
        obj.insert("offset".into(), json!(offset));
        let header = match codec.next_frame(&buf) {
            Ok(Some(f)) => Ok(Some((f.packet_type, f.flags, f.header_len, f.len()))),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match header {
            Ok(None) if buf.is_empty() => return Ok(true),
            Ok(None) => {
                obj.insert(
                    "error".into(),
                    json!(format!(
                        "incomplete frame: {} bytes left at the end of the input",
                        buf.len()
                    )),
                );
                obj.insert("kind".into(), json!("Incomplete"));
                emit(out, Value::Object(obj))?;
                return Ok(false);
            }
            Err(e) => {
                error_fields(&mut obj, &e);
                emit(out, Value::Object(obj))?;
                return Ok(false);
            }
            Ok(Some((packet_type, flags, header_len, len))) => {
                let frame: Bytes = buf.split_to(len).freeze();
                obj.insert("type".into(), json!(packet_type.name()));
                obj.insert("flags".into(), json!(flags));
                obj.insert("remaining_length".into(), json!(len - header_len));
                obj.insert("length".into(), json!(len));
                if opts.protocol.is_none()
                    && let Some(version) = connect_level(&frame[header_len..])
                    && codec.version() != Some(version)
                {
                    *codec = Codec::new(opts.role(), version)
                        .with_max_packet_size(codec.max_packet_size());
                }
                match codec.decode_frame(&frame, header_len) {
                    Ok(p) => {
                        let version = codec.version().unwrap_or(ProtocolVersion::V5);
                        packet_fields(&mut obj, &p, version);
                        emit(out, Value::Object(obj))?;
                    }
                    Err(e) => {
                        error_fields(&mut obj, &e);
                        emit(out, Value::Object(obj))?;
                        return Ok(false);
                    }
                }
                offset += len;
                index += 1;
            }
        }
    }
}

/// The protocol version a CONNECT body declares, when it is one the codec speaks.
fn connect_level(body: &[u8]) -> Option<ProtocolVersion> {
    match body {
        [0, 4, b'M', b'Q', b'T', b'T', level, ..] => ProtocolVersion::from_level(*level),
        _ => None,
    }
}

fn error_fields(obj: &mut Map<String, Value>, e: &DecodeError) {
    obj.insert("error".into(), json!(e.to_string()));
    obj.insert("kind".into(), json!(e.kind()));
    obj.insert("clause".into(), json!(e.clause()));
    let rc = e.reason_code();
    obj.insert("reason_code".into(), json!(rc.0));
    obj.insert("reason".into(), json!(rc.name()));
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn s(v: &ByteStr) -> Value {
    json!(v.as_str())
}

fn user<B: AsRef<[u8]>>(u: &UserProperties<B>) -> Value {
    Value::Array(u.iter().map(|(k, v)| json!([k, v])).collect())
}

/// Builds a `properties` object from `(name, value)` pairs that are present.
fn props<B: AsRef<[u8]>>(
    pairs: impl IntoIterator<Item = (&'static str, Option<Value>)>,
    u: &UserProperties<B>,
) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    }
    if !u.is_empty() {
        m.insert("user_properties".into(), user(u));
    }
    Value::Object(m)
}

fn ack_props(p: &AckProperties) -> Value {
    props(
        [("reason_string", p.reason_string.as_ref().map(s))],
        &p.user_properties,
    )
}

fn reason_name(v: ProtocolVersion, code: ReasonCode, connack: bool) -> Value {
    json!(match v {
        ProtocolVersion::V311 if connack => code.name_v311_connack(),
        _ => code.name(),
    })
}

fn packet_fields(o: &mut Map<String, Value>, p: &Packet, version: ProtocolVersion) {
    let mut put = |k: &str, v: Value| {
        o.insert(k.into(), v);
    };
    match p {
        Packet::Connect(c) => {
            put("protocol_level", json!(c.protocol.level()));
            put("clean_start", json!(c.clean_start));
            put("keep_alive_secs", json!(c.keep_alive_secs));
            put("client_id", s(&c.client_id));
            let cp = &c.properties;
            put(
                "properties",
                props(
                    [
                        (
                            "session_expiry_interval_secs",
                            cp.session_expiry_interval_secs.map(|v| json!(v)),
                        ),
                        (
                            "receive_maximum",
                            cp.receive_maximum.map(|v| json!(v.get())),
                        ),
                        (
                            "maximum_packet_size",
                            cp.maximum_packet_size.map(|v| json!(v.get())),
                        ),
                        (
                            "topic_alias_maximum",
                            cp.topic_alias_maximum.map(|v| json!(v)),
                        ),
                        (
                            "request_response_information",
                            cp.request_response_information.map(|v| json!(v)),
                        ),
                        (
                            "request_problem_information",
                            cp.request_problem_information.map(|v| json!(v)),
                        ),
                        (
                            "authentication_method",
                            cp.authentication_method.as_ref().map(s),
                        ),
                        (
                            "authentication_data",
                            cp.authentication_data.as_ref().map(|b| json!(hex(b))),
                        ),
                    ],
                    &cp.user_properties,
                ),
            );
            put(
                "will",
                match &c.will {
                    None => Value::Null,
                    Some(w) => {
                        let wp = &w.properties;
                        json!({
                            "qos": w.qos as u8,
                            "retain": w.retain,
                            "topic": w.topic.as_str(),
                            "payload_length": w.payload.len(),
                            "payload_hex": hex(&w.payload),
                            "properties": props(
                                [
                                    ("will_delay_interval_secs", wp.will_delay_interval_secs.map(|v| json!(v))),
                                    ("payload_format_indicator", wp.payload_format_indicator.map(|v| json!(v as u8))),
                                    ("message_expiry_interval_secs", wp.message_expiry_interval_secs.map(|v| json!(v))),
                                    ("content_type", wp.content_type.as_ref().map(s)),
                                    ("response_topic", wp.response_topic.as_ref().map(s)),
                                    ("correlation_data", wp.correlation_data.as_ref().map(|b| json!(hex(b)))),
                                ],
                                &wp.user_properties,
                            ),
                        })
                    }
                },
            );
            put("username", c.username.as_ref().map_or(Value::Null, s));
            put(
                "password_length",
                c.password.as_ref().map_or(Value::Null, |p| json!(p.len())),
            );
        }
        Packet::ConnAck(c) => {
            put("session_present", json!(c.session_present));
            put("reason_code", json!(c.reason_code.0));
            put("reason", reason_name(version, c.reason_code, true));
            let cp = &c.properties;
            put(
                "properties",
                props(
                    [
                        (
                            "session_expiry_interval_secs",
                            cp.session_expiry_interval_secs.map(|v| json!(v)),
                        ),
                        (
                            "receive_maximum",
                            cp.receive_maximum.map(|v| json!(v.get())),
                        ),
                        ("maximum_qos", cp.maximum_qos.map(|v| json!(v as u8))),
                        ("retain_available", cp.retain_available.map(|v| json!(v))),
                        (
                            "maximum_packet_size",
                            cp.maximum_packet_size.map(|v| json!(v.get())),
                        ),
                        (
                            "assigned_client_identifier",
                            cp.assigned_client_identifier.as_ref().map(s),
                        ),
                        (
                            "topic_alias_maximum",
                            cp.topic_alias_maximum.map(|v| json!(v)),
                        ),
                        ("reason_string", cp.reason_string.as_ref().map(s)),
                        (
                            "wildcard_subscription_available",
                            cp.wildcard_subscription_available.map(|v| json!(v)),
                        ),
                        (
                            "subscription_identifiers_available",
                            cp.subscription_identifiers_available.map(|v| json!(v)),
                        ),
                        (
                            "shared_subscription_available",
                            cp.shared_subscription_available.map(|v| json!(v)),
                        ),
                        (
                            "server_keep_alive_secs",
                            cp.server_keep_alive_secs.map(|v| json!(v)),
                        ),
                        (
                            "response_information",
                            cp.response_information.as_ref().map(s),
                        ),
                        ("server_reference", cp.server_reference.as_ref().map(s)),
                        (
                            "authentication_method",
                            cp.authentication_method.as_ref().map(s),
                        ),
                        (
                            "authentication_data",
                            cp.authentication_data.as_ref().map(|b| json!(hex(b))),
                        ),
                    ],
                    &cp.user_properties,
                ),
            );
        }
        Packet::Publish(p) => {
            put("dup", json!(p.dup));
            put("qos", json!(p.qos as u8));
            put("retain", json!(p.retain));
            put("topic", s(&p.topic));
            put(
                "packet_id",
                p.packet_id.map_or(Value::Null, |i| json!(i.get())),
            );
            let pp = &p.properties;
            let mut m = props(
                [
                    (
                        "payload_format_indicator",
                        pp.payload_format_indicator().map(|v| json!(v as u8)),
                    ),
                    (
                        "message_expiry_interval_secs",
                        pp.message_expiry_interval_secs().map(|v| json!(v)),
                    ),
                    ("topic_alias", pp.topic_alias().map(|v| json!(v.get()))),
                    ("response_topic", pp.response_topic().map(|v| json!(v))),
                    (
                        "correlation_data",
                        pp.correlation_data().map(|b| json!(hex(b))),
                    ),
                    ("content_type", pp.content_type().map(|v| json!(v))),
                ],
                &pp.user_properties(),
            );
            let ids = pp.subscription_identifiers();
            if !ids.is_empty()
                && let Value::Object(m) = &mut m
            {
                m.insert(
                    "subscription_identifiers".into(),
                    json!(ids.iter().collect::<Vec<_>>()),
                );
            }
            put("properties", m);
            put("payload_length", json!(p.payload.len()));
            put("payload_hex", json!(hex(&p.payload)));
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            put("packet_id", json!(a.packet_id.get()));
            put("reason_code", json!(a.reason_code.0));
            put("reason", reason_name(version, a.reason_code, false));
            put("properties", ack_props(&a.properties));
        }
        Packet::Subscribe(sub) => {
            put("packet_id", json!(sub.packet_id.get()));
            let sp = &sub.properties;
            put(
                "properties",
                props(
                    [(
                        "subscription_identifier",
                        sp.subscription_identifier.map(|v| json!(v.get())),
                    )],
                    &sp.user_properties,
                ),
            );
            put(
                "subscriptions",
                Value::Array(
                    sub.filters
                        .iter()
                        .map(|f| {
                            json!({
                                "filter": f.filter.as_str(),
                                "qos": f.options.qos as u8,
                                "no_local": f.options.no_local,
                                "retain_as_published": f.options.retain_as_published,
                                "retain_handling": f.options.retain_handling as u8,
                            })
                        })
                        .collect(),
                ),
            );
        }
        Packet::SubAck(a) => {
            put("packet_id", json!(a.packet_id.get()));
            put("properties", ack_props(&a.properties));
            put(
                "reason_codes",
                json!(a.reason_codes.iter().map(|c| c.0).collect::<Vec<_>>()),
            );
        }
        Packet::Unsubscribe(u) => {
            put("packet_id", json!(u.packet_id.get()));
            put("properties", props([], &u.properties.user_properties));
            put(
                "filters",
                json!(u.filters.iter().map(|f| f.as_str()).collect::<Vec<_>>()),
            );
        }
        Packet::UnsubAck(a) => {
            put("packet_id", json!(a.packet_id.get()));
            put("properties", ack_props(&a.properties));
            put(
                "reason_codes",
                json!(a.reason_codes.iter().map(|c| c.0).collect::<Vec<_>>()),
            );
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            put("reason_code", json!(d.reason_code.0));
            put("reason", reason_name(version, d.reason_code, false));
            let dp = &d.properties;
            put(
                "properties",
                props(
                    [
                        (
                            "session_expiry_interval_secs",
                            dp.session_expiry_interval_secs.map(|v| json!(v)),
                        ),
                        ("reason_string", dp.reason_string.as_ref().map(s)),
                        ("server_reference", dp.server_reference.as_ref().map(s)),
                    ],
                    &dp.user_properties,
                ),
            );
        }
        Packet::Auth(a) => {
            put("reason_code", json!(a.reason_code.0));
            put("reason", reason_name(version, a.reason_code, false));
            let ap = &a.properties;
            put(
                "properties",
                props(
                    [
                        (
                            "authentication_method",
                            ap.authentication_method.as_ref().map(s),
                        ),
                        (
                            "authentication_data",
                            ap.authentication_data.as_ref().map(|b| json!(hex(b))),
                        ),
                        ("reason_string", ap.reason_string.as_ref().map(s)),
                    ],
                    &ap.user_properties,
                ),
            );
        }
    }
}
