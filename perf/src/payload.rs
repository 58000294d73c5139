//! The benchmark payload: a fixed-width decimal sequence number, a space, then filler up to the
//! configured size. It never contains `\n` (nor any byte outside printable ASCII), so line-based
//! tools such as `mosquitto_sub | mosquitto_pub -l` carry it unchanged.
//!
//! ```
//! let mut p = sluice_perf::payload::template(20).unwrap();
//! sluice_perf::payload::write_seq(&mut p, 42);
//! assert_eq!(&p[..13], b"000000000042 ");
//! assert_eq!(sluice_perf::payload::parse_seq(&p), Some(42));
//! ```

/// Digits of the sequence number at the front of every payload.
pub const SEQ_DIGITS: usize = 12;

/// The smallest payload: the sequence number and the space after it.
pub const MIN_PAYLOAD_BYTES: usize = SEQ_DIGITS + 1;

/// The largest sequence number a payload can carry.
pub const MAX_SEQ: u64 = 999_999_999_999;

/// A payload of `size` bytes with sequence number 0, or `None` when `size` is below
/// [`MIN_PAYLOAD_BYTES`].
pub fn template(size: usize) -> Option<Vec<u8>> {
    if size < MIN_PAYLOAD_BYTES {
        return None;
    }
    let mut p = vec![b'0'; SEQ_DIGITS];
    p.push(b' ');
    p.extend((0..size - MIN_PAYLOAD_BYTES).map(|i| b'a' + (i % 26) as u8));
    Some(p)
}

/// Writes `seq` (at most [`MAX_SEQ`]) as [`SEQ_DIGITS`] decimal digits at the front of `payload`.
///
/// # Panics
/// When `payload` is shorter than [`SEQ_DIGITS`].
#[inline]
pub fn write_seq(payload: &mut [u8], mut seq: u64) {
    let digits = &mut payload[..SEQ_DIGITS];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (seq % 10) as u8;
        seq /= 10;
    }
}

/// The sequence number at the front of `payload`, if it has one.
#[inline]
pub fn parse_seq(payload: &[u8]) -> Option<u64> {
    let digits = payload.get(..SEQ_DIGITS)?;
    let mut seq = 0u64;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        seq = seq * 10 + u64::from(d - b'0');
    }
    Some(seq)
}

/// Where the sequence number starts in a [`json_template`] payload.
pub const JSON_SEQ_AT: usize = 8;

/// The JSON record of the Parquet benchmark, seven fields, with the sequence number as a
/// 12-digit string at [`JSON_SEQ_AT`] (so that [`write_seq`] on `&mut p[JSON_SEQ_AT..]` sets
/// it), padded with spaces before the closing brace to `size` bytes; `None` below the record's
/// own size.
///
/// ```
/// let mut p = sluice_perf::payload::json_template(200).unwrap();
/// sluice_perf::payload::write_seq(&mut p[sluice_perf::payload::JSON_SEQ_AT..], 7);
/// let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
/// assert_eq!(v["seq"], "000000000007");
/// assert_eq!(p.len(), 200);
/// ```
pub fn json_template(size: usize) -> Option<Vec<u8>> {
    let body = br#"{"seq":"000000000000","deviceId":"dev-0042","timestamp":"2026-12-02T08:15:00.123Z","temperature":21.53,"humidity":40.1,"pressure":1013,"online":true"#;
    if size < body.len() + 1 {
        return None;
    }
    let mut p = body.to_vec();
    p.resize(size - 1, b' ');
    p.push(b'}');
    Some(p)
}

/// The Delta schema of [`json_template`]'s records.
pub const JSON_DELTA_SCHEMA: &str = r#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[
  {"name":"seq","type":"string","nullable":false,"metadata":{}},
  {"name":"deviceId","type":"string","nullable":false,"metadata":{}},
  {"name":"timestamp","type":"timestamp","nullable":false,"metadata":{}},
  {"name":"temperature","type":"double","nullable":true,"metadata":{}},
  {"name":"humidity","type":"double","nullable":true,"metadata":{}},
  {"name":"pressure","type":"long","nullable":true,"metadata":{}},
  {"name":"online","type":"boolean","nullable":true,"metadata":{}}]}}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_newline() {
        assert!(template(MIN_PAYLOAD_BYTES - 1).is_none());
        for size in [MIN_PAYLOAD_BYTES, 100, 1024] {
            let mut p = template(size).unwrap();
            assert_eq!(p.len(), size);
            for seq in [0, 1, 9, 10, 123_456_789, MAX_SEQ] {
                write_seq(&mut p, seq);
                assert_eq!(parse_seq(&p), Some(seq));
                assert!(p.iter().all(|b| b.is_ascii_graphic() || *b == b' '));
            }
        }
        assert_eq!(parse_seq(b"12345"), None);
        assert_eq!(parse_seq(b"00000000000x "), None);
    }
}
