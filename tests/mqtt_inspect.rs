//! `mqtt-inspect` from the outside: arguments, JSON per frame, errors with their clause, exit
//! status.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

fn inspect(args: &[&str], stdin: &[u8]) -> (i32, Vec<Value>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mqtt-inspect"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mqtt-inspect runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let lines = String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sample(name: &str) -> String {
    format!("{}/samples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn decodes_the_shipped_captures() {
    let (code, frames, _) = inspect(
        &[
            "--raw",
            "--protocol",
            "5",
            "--direction",
            "to-server",
            &sample("paho-v5.to-server.bin"),
        ],
        b"",
    );
    assert_eq!(code, 0);
    assert_eq!(frames[0]["type"], "CONNECT");
    assert_eq!(frames[0]["protocol_level"], 5);
    assert_eq!(frames.last().expect("frames")["type"], "DISCONNECT");
    let publish = frames
        .iter()
        .find(|f| f["type"] == "PUBLISH" && f["properties"]["user_properties"].is_array())
        .expect("a PUBLISH with user properties");
    assert!(publish["payload_length"].as_u64().expect("length") > 0);

    let (code, frames, _) = inspect(
        &[
            "--raw",
            "--protocol",
            "4",
            "--direction",
            "to-client",
            &sample("paho-v311.to-client.bin"),
        ],
        b"",
    );
    assert_eq!(code, 0);
    assert_eq!(frames[0]["type"], "CONNACK");
    assert_eq!(frames[0]["reason"], "Connection Accepted");
}

#[test]
fn hex_lines_hold_one_or_more_frames() {
    let input = b"# a comment line\n\
        30 07 00 03 61 2f 62 68 69   # QoS 0 PUBLISH a/b \"hi\"\n\
        \n\
        4002000140020002\n";
    let (code, frames, _) = inspect(&["--protocol", "4", "--direction", "to-client"], input);
    assert_eq!(code, 0);
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0]["type"], "PUBLISH");
    assert_eq!(frames[0]["topic"], "a/b");
    assert_eq!(frames[0]["payload_length"], 2);
    assert_eq!(frames[0]["line"], 2);
    assert_eq!(frames[2]["type"], "PUBACK");
    assert_eq!(frames[2]["packet_id"], 2);
    assert_eq!(frames[2]["frame"], 1);
    assert_eq!(frames[2]["offset"], 4);
}

#[test]
fn a_bad_frame_reports_its_clause_and_reason_code() {
    let input = b"30 07 00 03 61 2f 62 68 69\n36 05 00 01 61 00 01\n";
    let (code, frames, _) = inspect(&["--protocol", "5", "--direction", "to-server"], input);
    assert_eq!(code, 1);
    assert_eq!(frames.len(), 2, "the good line still decodes");
    let e = &frames[1];
    assert_eq!(e["kind"], "PublishQos3");
    assert_eq!(e["clause"], "MQTT-3.3.1-4");
    assert_eq!(e["reason_code"], 0x81);
    assert_eq!(e["reason"], "Malformed Packet");
    assert!(
        e["error"]
            .as_str()
            .expect("message")
            .starts_with("[MQTT-3.3.1-4]")
    );
}

#[test]
fn direction_and_size_limits_apply() {
    let (code, frames, _) = inspect(&["--direction", "to-server"], b"20 03 00 00 00\n");
    assert_eq!(code, 1);
    assert_eq!(frames[0]["kind"], "UnexpectedPacket");
    let (code, frames, _) = inspect(&["--direction", "to-client"], b"20 03 00 00 00\n");
    assert_eq!(code, 0);
    assert_eq!(frames[0]["type"], "CONNACK");
    let (code, frames, _) = inspect(
        &["--max-packet-size", "8", "--protocol", "4"],
        b"30 07 00 03 61 2f 62 68 69\n",
    );
    assert_eq!(code, 1);
    assert_eq!(frames[0]["kind"], "PacketTooLarge");
    assert_eq!(frames[0]["reason_code"], 0x95);
}

#[test]
fn truncated_input_and_bad_hex_fail() {
    let (code, frames, _) = inspect(&["--raw", "--protocol", "4"], &[0x30, 0x07, 0x00]);
    assert_eq!(code, 1);
    assert_eq!(frames[0]["kind"], "Incomplete");
    let (code, frames, _) = inspect(&[], b"30 0\n");
    assert_eq!(code, 1);
    assert!(
        frames[0]["error"]
            .as_str()
            .expect("error")
            .contains("odd number")
    );
    let (code, frames, _) = inspect(&[], b"zz\n");
    assert_eq!(code, 1);
    assert!(
        frames[0]["error"]
            .as_str()
            .expect("error")
            .contains("invalid hex")
    );
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, err) = inspect(&["--protocol", "3"], b"");
    assert_eq!(code, 2);
    assert!(err.contains("invalid value '3' for '--protocol"), "{err}");
    assert!(
        err.contains("must be 4 (MQTT 3.1.1) or 5 (MQTT 5.0)"),
        "{err}"
    );
    let (code, _, err) = inspect(&["--bogus"], b"");
    assert_eq!(code, 2);
    assert!(err.contains("unexpected argument '--bogus'"), "{err}");
    let (code, _, err) = inspect(&["--direction", "sideways"], b"");
    assert_eq!(code, 2);
    assert!(
        err.contains("to-server") && err.contains("to-client"),
        "{err}"
    );
    let (code, _, err) = inspect(&["--max-packet-size", "big"], b"");
    assert_eq!(code, 2);
    assert!(err.contains("--max-packet-size"), "{err}");
    let (code, _, err) = inspect(&["a.bin", "b.bin"], b"");
    assert_eq!(code, 2);
    assert!(err.contains("unexpected argument 'b.bin'"), "{err}");
    let (code, _, _) = inspect(&["/nonexistent/capture.bin"], b"");
    assert_eq!(code, 2);
}

#[test]
fn help_and_version_exit_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt-inspect"))
        .arg("--version")
        .output()
        .expect("mqtt-inspect runs");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    // The commit after the version: tests/versions.rs checks its form.
    assert!(
        text.trim()
            .starts_with(&format!("mqtt-inspect {} (", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    for flag in ["--help", "-h"] {
        let out = Command::new(env!("CARGO_BIN_EXE_mqtt-inspect"))
            .arg(flag)
            .output()
            .expect("mqtt-inspect runs");
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        for option in [
            "--protocol",
            "--direction",
            "--raw",
            "--max-packet-size",
            "[FILE]",
        ] {
            assert!(text.contains(option), "{flag}: {option} in {text}");
        }
    }
}

#[test]
fn a_connect_sets_the_version_unless_protocol_is_given() {
    // A 3.1.1 CONNECT then a 3.1.1 PUBLISH, in wireshark-style and 0x-prefixed hex.
    let input = b"0x10,0x0c,0x00,0x04,0x4d,0x51,0x54,0x54,0x04,0x02,0x00,0x3c,0x00,0x00\n\
        30:07:00:03:61:2F:62:68:69\n";
    let (code, frames, _) = inspect(&[], input);
    assert_eq!(code, 0, "{frames:?}");
    assert_eq!(frames[0]["protocol_level"], 4);
    assert_eq!(frames[1]["payload_length"], 2);
    // With --protocol 5 the 3.1.1 CONNECT is refused: the connection was set to 5.0.
    let (code, frames, _) = inspect(&["--protocol", "5"], input);
    assert_eq!(code, 1);
    assert_eq!(frames[0]["kind"], "ProtocolVersionMismatch");
}
