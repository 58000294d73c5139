//! A Kafka record's metadata as MQTT 5 properties, as Azure IoT Operations maps it when a Kafka
//! endpoint is a dataflow's source (with `copyMqttProperties: Enabled`, the default):
//!
//! | Kafka | MQTT |
//! |---|---|
//! | the key | User Property `Key` (when UTF-8) |
//! | the timestamp | User Property `Timestamp`: milliseconds since the Unix epoch, in decimal |
//! | a header `Payload Format Indicator` (`0`/`1`), `Response Topic`, `Correlation Data`, `Content Type`, `Message Expiry Interval` (seconds) | that property (what the Kafka destination writes for it, so MQTT -> Kafka -> MQTT keeps them) |
//! | any other header | a User Property of the same name and value, in order, repeated names kept |
//!
//! MQTT properties are UTF-8 and shorter than 64 KiB: a header (or key) whose name or value is
//! not UTF-8, holds U+0000, or is 64 KiB or more together is left out and counted (Correlation
//! Data is binary, and may be anything up to 65,535 bytes). A header that names a property
//! given already, or holds a value the property cannot take (a Response Topic with wildcards),
//! becomes a plain User Property instead.
//!
//! CloudEvents: when the MQTT destination asks for CloudEvents attributes
//! (`cloudEventAttributes`), the Kafka binding's headers become the MQTT binding's: each
//! `ce_<name>` header the User Property `<name>` (`ce_specversion` -> `specversion`), and
//! `content-type` the Content Type. Without it they are plain headers like any other.
//!
//! Everything is written into the source's arena ([`PublishPropertiesWriter`]): no allocation
//! per record.

use bytes::BytesMut;
use sluice_codec::{PayloadFormat, PublishProperties, PublishPropertiesWriter};

/// How records become messages: the settings that act per record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordMapping {
    /// `copyMqttProperties` of the Kafka endpoint: key, timestamp and headers are copied.
    pub(crate) copy_properties: bool,
    /// The MQTT destination asks for CloudEvents attributes: `ce_` headers become them.
    pub(crate) cloud_events: bool,
}

/// The parts of a record the mapping reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordMeta<'a> {
    /// The key, if any.
    pub(crate) key: Option<&'a [u8]>,
    /// The timestamp, milliseconds since the Unix epoch, if the record has one.
    pub(crate) timestamp_ms: Option<i64>,
}

/// The largest name plus value an MQTT User Property may carry here: less than 64 KiB.
const MAX_PROPERTY_BYTES: usize = 64 * 1024;

/// The properties of a record whose key and timestamp are `meta` and whose headers `headers`
/// hands over (name, value) one after the other, written into `arena`; and how many headers
/// (the key included) were left out.
pub(crate) fn properties(
    mapping: RecordMapping,
    meta: RecordMeta<'_>,
    arena: &mut BytesMut,
    headers: impl FnOnce(&mut dyn FnMut(&[u8], Option<&[u8]>)),
) -> (PublishProperties, u32) {
    let mut w = PublishPropertiesWriter::new(arena);
    let mut dropped = 0u32;
    if !mapping.copy_properties && !mapping.cloud_events {
        return (w.finish(), 0);
    }
    if mapping.copy_properties {
        if let Some(key) = meta.key {
            match std::str::from_utf8(key) {
                Ok(k) if k.len() + 3 < MAX_PROPERTY_BYTES && w.user_property("Key", k).is_ok() => {}
                _ => dropped += 1,
            }
        }
        if let Some(ms) = meta.timestamp_ms.filter(|ms| *ms >= 0) {
            let mut digits = itoa::Buffer::new();
            // A decimal number is a valid value.
            let _ = w.user_property("Timestamp", digits.format(ms));
        }
    }
    headers(&mut |name, value| {
        let value = value.unwrap_or_default();
        if !header(mapping, &mut w, name, value) {
            dropped += 1;
        }
    });
    (w.finish(), dropped)
}

/// Writes one header; `false` when it is left out.
fn header(
    mapping: RecordMapping,
    w: &mut PublishPropertiesWriter<'_>,
    name: &[u8],
    value: &[u8],
) -> bool {
    let Ok(name) = std::str::from_utf8(name) else {
        return false;
    };
    if name.len() + value.len() >= MAX_PROPERTY_BYTES {
        return false;
    }
    if mapping.copy_properties && name == "Correlation Data" && w.correlation_data(value).is_ok() {
        return true;
    }
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    if mapping.cloud_events {
        if let Some(attribute) = name.strip_prefix("ce_").filter(|a| !a.is_empty()) {
            return w.user_property(attribute, value).is_ok();
        }
        if name == "content-type" && w.content_type(value).is_ok() {
            return true;
        }
    }
    if !mapping.copy_properties {
        // Only the CloudEvents headers are copied.
        return true;
    }
    let as_property = match name {
        "Payload Format Indicator" => match value {
            "0" => w
                .payload_format_indicator(PayloadFormat::Unspecified)
                .is_ok(),
            "1" => w.payload_format_indicator(PayloadFormat::Utf8).is_ok(),
            _ => false,
        },
        "Response Topic" => w.response_topic(value).is_ok(),
        "Content Type" => w.content_type(value).is_ok(),
        "Message Expiry Interval" => value
            .parse::<u32>()
            .is_ok_and(|secs| w.message_expiry_interval(secs).is_ok()),
        _ => false,
    };
    as_property || w.user_property(name, value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const COPY: RecordMapping = RecordMapping {
        copy_properties: true,
        cloud_events: false,
    };

    fn map(
        mapping: RecordMapping,
        key: Option<&[u8]>,
        ts: Option<i64>,
        hs: &[(&[u8], Option<&[u8]>)],
    ) -> (PublishProperties, u32) {
        let mut arena = BytesMut::with_capacity(1024);
        properties(
            mapping,
            RecordMeta {
                key,
                timestamp_ms: ts,
            },
            &mut arena,
            |f| {
                for (n, v) in hs {
                    f(n, *v);
                }
            },
        )
    }

    fn users(p: &PublishProperties) -> Vec<(String, String)> {
        p.to_values()
            .user_properties
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn key_timestamp_and_headers_as_aio_maps_them() {
        let (p, dropped) = map(
            COPY,
            Some(b"device-7"),
            Some(1_700_000_000_123),
            &[
                (b"site", Some(b"plant 1")),
                (b"tag", Some(b"a")),
                (b"tag", Some(b"b")),
                (b"empty", None),
            ],
        );
        assert_eq!(dropped, 0);
        assert_eq!(
            users(&p),
            [
                ("Key".into(), "device-7".into()),
                ("Timestamp".into(), "1700000000123".into()),
                ("site".into(), "plant 1".into()),
                ("tag".into(), "a".into()),
                ("tag".into(), "b".into()),
                ("empty".into(), String::new()),
            ]
        );
    }

    #[test]
    fn the_kafka_destinations_headers_become_properties_again() {
        let correlation: &[u8] = &[0, 0xff, 0xfe, 1];
        let (p, dropped) = map(
            COPY,
            None,
            None,
            &[
                (b"Payload Format Indicator", Some(b"1")),
                (b"Response Topic", Some(b"replies/x")),
                (b"Correlation Data", Some(correlation)),
                (b"Content Type", Some(b"application/json")),
                (b"Message Expiry Interval", Some(b"3599")),
                (b"seq", Some(b"1")),
                // A second one, and a value the property cannot take: plain user properties.
                (b"Content Type", Some(b"text/plain")),
                (b"Message Expiry Interval", Some(b"soon")),
            ],
        );
        assert_eq!(dropped, 0);
        let v = p.to_values();
        assert_eq!(v.payload_format_indicator, Some(PayloadFormat::Utf8));
        assert_eq!(v.response_topic.as_deref(), Some("replies/x"));
        assert_eq!(v.correlation_data.as_deref(), Some(correlation));
        assert_eq!(v.content_type.as_deref(), Some("application/json"));
        assert_eq!(v.message_expiry_interval_secs, Some(3599));
        assert_eq!(
            users(&p),
            [
                ("seq".into(), "1".into()),
                ("Content Type".into(), "text/plain".into()),
                ("Message Expiry Interval".into(), "soon".into()),
            ]
        );
    }

    #[test]
    fn what_mqtt_cannot_carry_is_left_out_and_counted() {
        let big = vec![b'x'; 64 * 1024];
        let (p, dropped) = map(
            COPY,
            Some(&[0xff, 0xfe]),
            Some(-1),
            &[
                (b"bin", Some(&[0xc3, 0x28])),
                (&[0xff], Some(b"v")),
                (b"big", Some(&big)),
                (b"nul", Some(b"a\0b")),
                (b"ok", Some(b"v")),
            ],
        );
        assert_eq!(dropped, 5, "key, binary value, binary name, 64 KiB, U+0000");
        assert_eq!(
            users(&p),
            [("ok".into(), "v".into())],
            "no timestamp before the epoch"
        );
    }

    #[test]
    fn cloud_events_headers_become_the_mqtt_bindings_attributes_when_asked() {
        let hs: &[(&[u8], Option<&[u8]>)] = &[
            (b"ce_specversion", Some(b"1.0")),
            (b"ce_type", Some(b"ms.aio.telemetry")),
            (b"ce_id", Some(b"A234")),
            (b"content-type", Some(b"application/json")),
            (b"other", Some(b"x")),
        ];
        let ce = RecordMapping {
            copy_properties: true,
            cloud_events: true,
        };
        let (p, _) = map(ce, None, None, hs);
        assert_eq!(
            p.to_values().content_type.as_deref(),
            Some("application/json")
        );
        assert_eq!(
            users(&p),
            [
                ("specversion".into(), "1.0".into()),
                ("type".into(), "ms.aio.telemetry".into()),
                ("id".into(), "A234".into()),
                ("other".into(), "x".into()),
            ]
        );
        let (p, _) = map(COPY, None, None, hs);
        assert_eq!(p.to_values().content_type, None);
        assert_eq!(
            users(&p)[0],
            ("ce_specversion".into(), "1.0".into()),
            "plain headers"
        );
        // CloudEvents only: nothing but the attributes.
        let only = RecordMapping {
            copy_properties: false,
            cloud_events: true,
        };
        let (p, _) = map(only, Some(b"k"), Some(5), hs);
        assert_eq!(users(&p).len(), 3);
        // Neither: no properties at all.
        let none = RecordMapping {
            copy_properties: false,
            cloud_events: false,
        };
        assert!(map(none, Some(b"k"), Some(5), hs).0.is_empty());
    }
}
