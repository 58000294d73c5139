//! What every load-test payload starts with: which publisher sent it, its sequence number, and
//! the time it was scheduled to be sent (not the time it went out: the receiving side measures
//! latency from the schedule, so a publisher that falls behind shows up as latency instead of
//! hiding it: coordinated omission corrected, as wrk2 does).
//!
//! Two formats, both printable ASCII without `\n`, so line-based tools carry them unchanged:
//!
//! - text (the default): `SSSSSSSSSSSS PPPPPP TTTTTTTTTTTTTTTTTTT AAAAAAAAAAAAAAAAAAA ` then
//!   filler: the sequence number in 12 digits (so the replay broker's sink counts it as a
//!   distinct message, see [`crate::payload`]), the publisher in 6, the scheduled time and the
//!   time it was actually handed to the connection in 19 each (nanoseconds since the Unix
//!   epoch), [`TEXT_LEN`] bytes in all;
//! - JSON, for dataflows whose destination reads the payload (Parquet, a schema):
//!   `{"seq":42,"pub":3,"sent_ns":1733140000000000000,"at_ns":1733140000000051000,"pad":"abc…"}`,
//!   the padding sized to the requested length. Read back by finding the keys, in any order
//!   and with any spacing a JSON writer may give them (`at_ns` may be missing).
//!
//! The second time lets the receiver also show latency from the actual send (what tools that
//! do not correct for coordinated omission show), beside the latency from the schedule.

use memchr::memmem;

/// Length of the text stamp, and so the smallest text payload.
pub const TEXT_LEN: usize = 12 + 1 + 6 + 1 + 19 + 1 + 19 + 1;
/// The largest sequence number (12 digits).
pub const MAX_SEQ: u64 = 999_999_999_999;
/// The largest publisher number (6 digits).
pub const MAX_PUBLISHER: u32 = 999_999;
/// The smallest JSON payload: the longest numbers and an empty pad.
pub const JSON_MIN_LEN: usize = JSON_MAX_HEAD + JSON_TAIL.len();

const JSON_MAX_HEAD: usize =
    r#"{"seq":,"pub":,"sent_ns":,"at_ns":,"pad":""#.len() + 12 + 6 + 20 + 20;
const JSON_TAIL: &[u8] = b"\"}";

/// The payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Fixed-width decimal fields, then filler.
    #[default]
    Text,
    /// A JSON object with `seq`, `pub`, `sent_ns` and a `pad` string.
    Json,
}

impl Format {
    /// The smallest payload of this format.
    pub const fn min_len(self) -> usize {
        match self {
            Self::Text => TEXT_LEN,
            Self::Json => JSON_MIN_LEN,
        }
    }
}

/// What a payload's stamp says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The publisher's number.
    pub publisher: u32,
    /// Its sequence number, from 0.
    pub seq: u64,
    /// When it was scheduled to be sent, nanoseconds since the Unix epoch.
    pub sent_ns: u64,
    /// When it was handed to the connection (0: not known).
    pub actual_ns: u64,
}

/// Appends a payload of exactly `len` bytes (at least [`Format::min_len`]) to `out`; the filler
/// comes from `filler`, which must hold at least `len` printable bytes other than `"` and `\`.
pub fn write(format: Format, stamp: Stamp, len: usize, filler: &[u8], out: &mut bytes::BytesMut) {
    debug_assert!(len >= format.min_len() && filler.len() >= len);
    match format {
        Format::Text => {
            let start = out.len();
            out.extend_from_slice(&filler[..len]);
            let p = &mut out[start..];
            digits(&mut p[..12], stamp.seq);
            p[12] = b' ';
            digits(&mut p[13..19], u64::from(stamp.publisher));
            p[19] = b' ';
            digits(&mut p[20..39], stamp.sent_ns);
            p[39] = b' ';
            digits(&mut p[40..59], stamp.actual_ns);
            p[59] = b' ';
        }
        Format::Json => {
            let mut seq = itoa::Buffer::new();
            let mut publisher = itoa::Buffer::new();
            let mut sent = itoa::Buffer::new();
            let mut actual = itoa::Buffer::new();
            let seq = seq.format(stamp.seq).as_bytes();
            let publisher = publisher.format(stamp.publisher).as_bytes();
            let sent = sent.format(stamp.sent_ns).as_bytes();
            let actual = actual.format(stamp.actual_ns).as_bytes();
            let start = out.len();
            out.extend_from_slice(b"{\"seq\":");
            out.extend_from_slice(seq);
            out.extend_from_slice(b",\"pub\":");
            out.extend_from_slice(publisher);
            out.extend_from_slice(b",\"sent_ns\":");
            out.extend_from_slice(sent);
            out.extend_from_slice(b",\"at_ns\":");
            out.extend_from_slice(actual);
            out.extend_from_slice(b",\"pad\":\"");
            let pad = len.saturating_sub(out.len() - start + JSON_TAIL.len());
            out.extend_from_slice(&filler[..pad]);
            out.extend_from_slice(JSON_TAIL);
        }
    }
}

/// Reads the stamp of a payload of either format; `None` when it has none (a message of
/// someone else's on the same topics).
pub fn read(payload: &[u8]) -> Option<Stamp> {
    match payload.first()? {
        b'0'..=b'9' => read_text(payload),
        _ => read_json(payload),
    }
}

fn read_text(p: &[u8]) -> Option<Stamp> {
    if p.len() < TEXT_LEN || p[12] != b' ' || p[19] != b' ' || p[39] != b' ' || p[59] != b' ' {
        return None;
    }
    Some(Stamp {
        seq: parse(&p[..12])?,
        publisher: u32::try_from(parse(&p[13..19])?).ok()?,
        sent_ns: parse(&p[20..39])?,
        actual_ns: parse(&p[40..59])?,
    })
}

fn read_json(p: &[u8]) -> Option<Stamp> {
    if p.first() != Some(&b'{') {
        return None;
    }
    Some(Stamp {
        seq: json_number(p, b"\"seq\"")?,
        publisher: u32::try_from(json_number(p, b"\"pub\"")?).ok()?,
        sent_ns: json_number(p, b"\"sent_ns\"")?,
        actual_ns: json_number(p, b"\"at_ns\"").unwrap_or(0),
    })
}

/// The unsigned integer after `key`, a colon and optional spaces.
fn json_number(p: &[u8], key: &[u8]) -> Option<u64> {
    let at = memmem::find(p, key)? + key.len();
    let rest = &p[at..];
    let rest = &rest[rest.iter().position(|&b| b != b' ')?..];
    let rest = rest.strip_prefix(b":")?;
    let rest = &rest[rest.iter().position(|&b| b != b' ')?..];
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 20 {
        return None;
    }
    parse(&rest[..n])
}

/// Decimal digits to a number; `None` for a non-digit or an overflow.
fn parse(d: &[u8]) -> Option<u64> {
    d.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Writes `n` as `d.len()` decimal digits, zero-padded (the high digits are cut if it is
/// longer; callers keep within the field's width).
fn digits(d: &mut [u8], mut n: u64) {
    for b in d.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// `len` printable filler bytes (`a` to `z` over and over).
pub fn filler(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    const S: Stamp = Stamp {
        publisher: 12,
        seq: 345,
        sent_ns: 1_733_140_000_123_456_789,
        actual_ns: 1_733_140_000_123_556_789,
    };

    #[test]
    fn text_stamps_read_back_and_keep_the_length() {
        let f = filler(1000);
        for len in [TEXT_LEN, TEXT_LEN + 1, 100, 1000] {
            let mut out = BytesMut::new();
            write(Format::Text, S, len, &f, &mut out);
            assert_eq!(out.len(), len);
            assert_eq!(read(&out), Some(S));
            assert_eq!(crate::payload::parse_seq(&out), Some(345));
            assert!(out.iter().all(|b| b.is_ascii_graphic() || *b == b' '));
        }
    }

    #[test]
    fn json_stamps_are_json_of_the_asked_length() {
        let f = filler(1000);
        for len in [JSON_MIN_LEN, 200, 1000] {
            let mut out = BytesMut::new();
            write(Format::Json, S, len, &f, &mut out);
            assert!(
                out.len() <= len && out.len() >= len - 20,
                "{len}: {}",
                out.len()
            );
            let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
            assert_eq!(v["seq"], 345);
            assert_eq!(v["pub"], 12);
            assert_eq!(read(&out), Some(S));
        }
        let max = Stamp {
            publisher: MAX_PUBLISHER,
            seq: MAX_SEQ,
            sent_ns: u64::MAX,
            actual_ns: u64::MAX,
        };
        let mut out = BytesMut::new();
        write(Format::Json, max, JSON_MIN_LEN, &f, &mut out);
        assert_eq!(out.len(), JSON_MIN_LEN);
        assert_eq!(read(&out), Some(max));
    }

    #[test]
    fn json_written_by_others_is_read_too() {
        let p = br#"{"pad": "x", "sent_ns" : 7, "pub":2, "seq": 3}"#;
        assert_eq!(
            read(p),
            Some(Stamp {
                publisher: 2,
                seq: 3,
                sent_ns: 7,
                actual_ns: 0
            })
        );
    }

    #[test]
    fn the_minimum_lengths_are_as_documented() {
        // `--payload-bytes` help and docs/load-testing.md give these.
        assert_eq!(TEXT_LEN, 60);
        assert_eq!(JSON_MIN_LEN, 102);
    }

    #[test]
    fn foreign_payloads_have_no_stamp() {
        for p in [
            &b""[..],
            b"hello",
            b"000000000001 x",
            b"{\"seq\":1}",
            b"{\"seq\":-1,\"pub\":1,\"sent_ns\":1}",
            b"{\"seq\":99999999999999999999999,\"pub\":1,\"sent_ns\":1}",
        ] {
            assert_eq!(read(p), None, "{}", String::from_utf8_lossy(p));
        }
    }
}
