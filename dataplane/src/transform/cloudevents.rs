//! CloudEvents attributes of a message (`cloudEventAttributes`): which it has, and the ids and
//! times `CreateOrRemap` gives those it lacks.
//!
//!
//! The CloudEvents MQTT protocol binding, binary content mode, which exists for MQTT 5.0 only:
//! the context attributes are User Properties named as the attributes (`specversion`, `type`,
//! `source`, `id`, `subject`, `time`, `dataschema`), and `datacontenttype` is the Content Type
//! property. 3.1.1 has no place for them (its binding has only the structured mode, which would
//! rewrite the payload), so to a 3.1.1 destination both settings forward without attributes.
//!
//! Following the AIO documentation of the MQTT endpoint ("CloudEvents" in *Configure MQTT data
//! flow endpoints*):
//!
//! - `Propagate`: the attributes pass through as they are (`time` is not restamped), whether the
//!   message has the required ones or not. That is what carrying User Properties does, so it
//!   changes nothing here.
//! - `CreateOrRemap`: a message that has all the required attributes (`specversion`, `type`,
//!   `source`, `id`) passes through as it is. Otherwise the attributes it has are kept, in their
//!   place, and those missing are appended in this order: `specversion` = `1.0`, `type` =
//!   `ms.aio-dataflow.telemetry`, `source` = `aio://<dataflow>` (AIO writes `aio://<target-name>`;
//!   here the dataflow's name), `id` = a fresh UUID version 4, `subject` = the destination
//!   topic of this message, `time` = `now` in RFC 3339 (UTC, milliseconds,
//!   `2026-11-23T16:00:00.123Z`). An attribute counts as present when a User Property has its name,
//!   whatever its value. `datacontenttype` (Content Type) is kept as it is: there is no transform
//!   stage that would change it; `dataschema` is kept and never made up (no schema registry).
//!   The remapping AIO does for Kafka (`ce_` prefixed headers) has no MQTT counterpart.
//!
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_codec::UserProperties;

/// CloudEvents `type` given by `CreateOrRemap` when the message has none.
pub(crate) const CLOUD_EVENT_TYPE: &str = "ms.aio-dataflow.telemetry";

/// CloudEvents `specversion` given by `CreateOrRemap` when the message has none.
pub(crate) const CLOUD_EVENT_SPEC_VERSION: &str = "1.0";

/// Which CloudEvents attributes a message has as User Properties.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CePresent {
    pub(crate) specversion: bool,
    pub(crate) ty: bool,
    pub(crate) source: bool,
    pub(crate) id: bool,
    pub(crate) subject: bool,
    pub(crate) time: bool,
}

impl CePresent {
    pub(crate) fn of<B: AsRef<[u8]>>(user: &UserProperties<B>) -> Self {
        let mut p = Self::default();
        if user.is_empty() {
            return p;
        }
        for (name, _) in user.iter() {
            match name {
                "specversion" => p.specversion = true,
                "type" => p.ty = true,
                "source" => p.source = true,
                "id" => p.id = true,
                "subject" => p.subject = true,
                "time" => p.time = true,
                _ => {}
            }
        }
        p
    }

    pub(crate) fn has_required(&self) -> bool {
        self.specversion && self.ty && self.source && self.id
    }
}

/// A UUID in its 36-character text form (lowercase hex with hyphens).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct UuidText([u8; 36]);

impl UuidText {
    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII hex digits and hyphens are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for UuidText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for UuidText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A random UUID, version 4 (RFC 9562 §5.4): 122 random bits from `rng` (not a cryptographic
/// generator: these ids need to be unique, not unpredictable), formatted on the stack.
pub(crate) fn uuid_v4(rng: &mut fastrand::Rng) -> UuidText {
    let id = uuid::Builder::from_random_bytes(rng.u128(..).to_be_bytes()).into_uuid();
    let mut out = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut out);
    UuidText(out)
}

/// A UTC instant in RFC 3339 with milliseconds: `2026-11-23T16:00:00.123Z`, 24 characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rfc3339([u8; 24]);

/// Milliseconds from 1970 to 0000-01-01T00:00:00Z (719,528 days before the epoch).
const MIN_MILLIS: i64 = -719_528 * 86_400_000;
/// Milliseconds from 1970 to 9999-12-31T23:59:59.999Z (10000-01-01 is day 2,932,897).
const MAX_MILLIS: i64 = 2_932_897 * 86_400_000 - 1;

/// A civil date and time in RFC 3339 with exactly three fractional digits, cut rather than
/// rounded (the `Z` is ours).
const PRINTER: jiff::fmt::temporal::DateTimePrinter =
    jiff::fmt::temporal::DateTimePrinter::new().precision(Some(3));

/// A [`jiff::fmt::Write`] into a fixed buffer: the text of an [`Rfc3339`] without allocating.
struct Fixed<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl jiff::fmt::Write for Fixed<'_> {
    fn write_str(&mut self, s: &str) -> Result<(), jiff::Error> {
        let end = self.len + s.len();
        let Some(dst) = self.buf.get_mut(self.len..end) else {
            return Err(jiff::Error::from_args(format_args!(
                "RFC 3339 text longer than its buffer"
            )));
        };
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl Rfc3339 {
    /// Formats `t`, which is clamped to years 0000 to 9999 (what RFC 3339 can write).
    pub(crate) fn from_system_time(t: SystemTime) -> Self {
        let millis = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            // Before 1970: round down, to the millisecond that contains the instant.
            Err(e) => {
                let before = e.duration().as_nanos().div_ceil(1_000_000);
                i64::try_from(before).map_or(i64::MIN, |m| -m)
            }
        };
        Self::from_unix_millis(millis)
    }

    /// Formats an instant given in milliseconds since 1970-01-01T00:00:00Z, clamped to years
    /// 0000 to 9999.
    pub(crate) fn from_unix_millis(millis: i64) -> Self {
        let millis = millis.clamp(MIN_MILLIS, MAX_MILLIS);
        // jiff's instants end on 9999-12-30 (so that every offset's civil time fits in 9999);
        // what is later is the last millisecond of 9999, as a civil time.
        let utc = jiff::Timestamp::from_millisecond(millis)
            .map_or(jiff::civil::DateTime::MAX, |at| {
                jiff::tz::Offset::UTC.to_datetime(at)
            });
        let mut out = *b"1970-01-01T00:00:00.000Z";
        let mut w = Fixed {
            buf: &mut out[..23],
            len: 0,
        };
        // Years 0000 to 9999 always give 23 bytes; the epoch's text stays if they did not.
        if PRINTER.print_datetime(&utc, &mut w).is_err() || w.len != 23 {
            out = *b"1970-01-01T00:00:00.000Z";
        }
        Self(out)
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    pub(crate) fn is_uuid_v4(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 36
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
            })
            && b[14] == b'4'
            && matches!(b[19], b'8' | b'9' | b'a' | b'b')
    }

    #[test]
    fn uuids_are_version_4() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = uuid_v4(&mut rng);
            assert!(is_uuid_v4(id.as_str()), "{id}");
            assert!(seen.insert(id.as_str().to_owned()));
        }
        // All bits but the fixed ones vary.
        let mut rng = fastrand::Rng::with_seed(2);
        let (mut and, mut or) = ([0xffu8; 16], [0u8; 16]);
        for _ in 0..256 {
            let id = uuid_v4(&mut rng);
            let hex: String = id.as_str().chars().filter(|c| *c != '-').collect();
            for i in 0..16 {
                let b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
                and[i] &= b;
                or[i] |= b;
            }
        }
        for i in 0..16 {
            let fixed = match i {
                6 => 0xf0,
                8 => 0xc0,
                _ => 0,
            };
            assert_eq!(!and[i] & or[i], !fixed, "byte {i}");
        }
    }

    // ---- RFC 3339 ----

    fn rfc(t: SystemTime) -> String {
        Rfc3339::from_system_time(t).to_string()
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc(UNIX_EPOCH + Duration::from_millis(1_795_449_600_123)),
            "2026-11-23T16:00:00.123Z"
        );
        // Sub-millisecond parts are cut, not rounded.
        assert_eq!(
            rfc(UNIX_EPOCH + Duration::from_nanos(1_795_449_600_123_999_999)),
            "2026-11-23T16:00:00.123Z"
        );
        assert_eq!(
            rfc(UNIX_EPOCH + Duration::from_secs(4_107_542_399)),
            "2100-02-28T23:59:59.000Z"
        );
        assert_eq!(
            rfc(UNIX_EPOCH + Duration::from_secs(4_107_542_400)),
            "2100-03-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc(UNIX_EPOCH + Duration::from_secs(1_709_164_800)),
            "2024-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc(UNIX_EPOCH + Duration::from_secs(1_735_689_599)),
            "2024-12-31T23:59:59.000Z"
        );
        // Before 1970, rounded down.
        assert_eq!(
            rfc(UNIX_EPOCH - Duration::from_millis(1)),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(
            rfc(UNIX_EPOCH - Duration::from_nanos(1)),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(
            rfc(UNIX_EPOCH - Duration::from_secs(2_208_988_800)),
            "1900-01-01T00:00:00.000Z"
        );
        // Clamped to what RFC 3339 can write.
        assert_eq!(
            Rfc3339::from_unix_millis(i64::MIN).as_str(),
            "0000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Rfc3339::from_unix_millis(i64::MAX).as_str(),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            Rfc3339::from_unix_millis(MAX_MILLIS + 1).as_str(),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            rfc(UNIX_EPOCH + Duration::from_secs(u64::MAX / 2)),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            format!("{:?}", Rfc3339::from_unix_millis(0)),
            "\"1970-01-01T00:00:00.000Z\""
        );
    }

    /// Every day from 1600 to 2400 against a count by hand.
    #[test]
    fn civil_dates_agree_with_counting() {
        fn leap(y: i64) -> bool {
            y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
        }
        fn month_len(y: i64, m: i64) -> i64 {
            match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            }
        }
        // Days from 1600-01-01 to 1970-01-01.
        let mut days = -(1600..1970)
            .map(|y| if leap(y) { 366 } else { 365 })
            .sum::<i64>();
        for y in 1600..=2400 {
            for m in 1..=12 {
                for d in 1..=month_len(y, m) {
                    let text = Rfc3339::from_unix_millis(days * 86_400_000 + 43_200_007);
                    assert_eq!(
                        text.as_str(),
                        format!("{y:04}-{m:02}-{d:02}T12:00:00.007Z"),
                        "day {days}"
                    );
                    days += 1;
                }
            }
        }
    }
}
