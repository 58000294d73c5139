//! Routing: what a dataflow does to each [`Message`] between its source and its sink: the
//! destination topic from the template ([`super::template`]), the metadata carried, the Message
//! Expiry Interval aged by the time held, and CloudEvents attributes created
//! ([`super::cloudevents`]). Pure code (sans-IO): no sockets, no clock (the caller passes `held`
//! and the wall clock), no logging. What the carrier does with the result (MQTT QoS and RETAIN,
//! Kafka key and headers) is the sink's.
//!
//! # Properties
//!
//! To a 5.0 destination, the Payload Format Indicator, Content Type, Response Topic, Correlation
//! Data and User Properties (in order) pass unchanged; the Message Expiry Interval is reduced by
//! the whole seconds the message was `held` since it was received, and a message with no time
//! left is dropped ([`DropReason::Expired`]; checked for a 3.1.1 destination too). Never carried:
//! the Topic Alias (aliases belong to a connection) and Subscription Identifiers (a client must not
//! send them, [MQTT-3.3.4-6]). To a 3.1.1 destination no properties go at all
//! ([`RouteSettings::carry_properties`] off).
//!
//! # CloudEvents (`cloudEventAttributes`)
//!
//! `CreateOrRemap` adds the attributes a message lacks as User Properties (the MQTT binding's
//! binary mode; see [`super::cloudevents`] for the values); `Propagate` passes them as they are.
//! Without carried properties (a 3.1.1 destination) neither adds anything.
//!
//! # What is copied, what allocates
//!
//! | Part | Fast path | Otherwise |
//! |---|---|---|
//! | payload | the same `Bytes` (a reference count) | same |
//! | topic, static template | a clone of the template's `ByteStr` (a reference count) | |
//! | topic, exactly `${inputTopic}` | a clone of the source topic (a reference count) | |
//! | topic, other templates | written into the [`Route`]'s scratch buffer and split off (a copy of a few bytes, no allocation until the 64 KiB chunk is used up) | |
//! | properties | `source.properties` cloned: one reference count, no re-encoding | re-encoded (allocates) |
//!
//! The fast path for properties applies when the destination is 5.0 and the source block holds no
//! Topic Alias, no Subscription Identifier and no Message Expiry Interval, and CloudEvents need no
//! attribute created. Otherwise the values are taken from the block without copying
//! ([`PublishProperties::to_values`]) and encoded again ([`PublishPropertyValues::build`]), which
//! allocates the new block, plus one buffer for the User Properties when CloudEvents attributes
//! are created. Those are the rarer cases; they are still bounded by the message's own size.
//!
//! Memory: the scratch buffer holds at most one 64 KiB chunk (more only for a longer topic) plus
//! whatever chunks resolved topics still pin (a chunk is reused once every topic cut from it
//! has been dropped).

use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use sluice_codec::{PublishProperties, PublishPropertyValues, SubscriptionIds, UserProperties};
use sluice_config_agent::model::CloudEventAttributes;

use super::cloudevents::{CLOUD_EVENT_SPEC_VERSION, CLOUD_EVENT_TYPE, CePresent, Rfc3339, uuid_v4};
use super::template::TopicTemplate;
use crate::message::{DropReason, Message};

/// What a [`Route`] does to each message: the dataflow's destination settings.
#[derive(Debug, Clone)]
pub(crate) struct RouteSettings {
    /// The dataflow's name, for the CloudEvents `source` (`aio://<dataflow>`).
    pub(crate) dataflow: String,
    /// The destination topic (`dataDestination`).
    pub(crate) topic: TopicTemplate,
    /// CloudEvents handling (`cloudEventAttributes` of the destination endpoint).
    pub(crate) cloud_events: Option<CloudEventAttributes>,
    /// Whether the destination takes metadata at all (`false` for an MQTT 3.1.1 destination:
    /// the properties are cleared and no CloudEvents attribute is created).
    pub(crate) carry_properties: bool,
}

/// Routes the messages of one dataflow on one core. It owns the scratch buffer that dynamic
/// topics are written into (see the [module](self) documentation for what it holds) and the
/// generator of CloudEvents ids.
#[derive(Debug)]
pub(crate) struct Route {
    settings: RouteSettings,
    /// `aio://<dataflow>`.
    ce_source: String,
    scratch: BytesMut,
    rng: fastrand::Rng,
}

impl Route {
    /// A route whose CloudEvents ids come from a generator seeded from the thread's.
    pub(crate) fn new(settings: RouteSettings) -> Self {
        Self::with_rng(settings, fastrand::Rng::new())
    }

    /// A route whose CloudEvents ids come from a generator with this seed (for tests).
    #[cfg(test)]
    pub(crate) fn with_seed(settings: RouteSettings, seed: u64) -> Self {
        Self::with_rng(settings, fastrand::Rng::with_seed(seed))
    }

    fn with_rng(settings: RouteSettings, rng: fastrand::Rng) -> Self {
        Self {
            ce_source: format!("aio://{}", settings.dataflow),
            settings,
            scratch: BytesMut::new(),
            rng,
        }
    }

    /// The settings.
    #[cfg(test)]
    pub(crate) fn settings(&self) -> &RouteSettings {
        &self.settings
    }

    /// Rewrites `message`, received `held` ago, for the destination: the resolved topic and the
    /// properties described in the [module](self) documentation; `wall` is the wall clock, for
    /// the CloudEvents `time`. The payload is untouched (the same `Bytes`).
    ///
    /// # Errors
    /// The [`DropReason`] when the message is not to be forwarded; `message` is then left as it
    /// was.
    pub(crate) fn route(
        &mut self,
        message: &mut Message,
        held: Duration,
        wall: SystemTime,
    ) -> Result<(), DropReason> {
        let props = &message.properties;
        let remaining_secs = match props.message_expiry_interval_secs() {
            None => None,
            Some(secs) => {
                let left = u64::from(secs).saturating_sub(held.as_secs());
                if left == 0 {
                    return Err(DropReason::Expired);
                }
                // Not more than `secs`, so it fits.
                Some(left as u32)
            }
        };
        let topic = self
            .settings
            .topic
            .resolve(&message.topic, &mut self.scratch)
            .ok_or(DropReason::UnresolvedTopic)?;
        let properties = if self.settings.carry_properties {
            self.properties(props, remaining_secs, &topic, wall)?
        } else {
            PublishProperties::new()
        };
        message.arrived_on = std::mem::replace(&mut message.topic, topic);
        message.properties = properties;
        Ok(())
    }

    /// Ages a message already routed that waited `held` more before the destination took it
    /// (in the core's queue while the destination's window was full or its connection down):
    /// its Message Expiry Interval loses the whole seconds held. Nothing changes (and nothing is
    /// allocated) when it has no expiry or waited less than a second.
    ///
    /// # Errors
    /// [`DropReason::Expired`] when no time is left; [`DropReason::InvalidProperties`] when the
    /// properties cannot be encoded again (they were valid, so this does not happen).
    pub(crate) fn age(message: &mut Message, held: Duration) -> Result<(), DropReason> {
        let Some(secs) = message.properties.message_expiry_interval_secs() else {
            return Ok(());
        };
        if held.as_secs() == 0 {
            return Ok(());
        }
        let left = u64::from(secs).saturating_sub(held.as_secs());
        if left == 0 {
            return Err(DropReason::Expired);
        }
        let mut values = message.properties.to_values();
        // Not more than `secs`, so it fits.
        values.message_expiry_interval_secs = Some(left as u32);
        message.properties = values.build().map_err(|_| DropReason::InvalidProperties)?;
        Ok(())
    }

    /// The properties for a destination that carries them.
    fn properties(
        &mut self,
        props: &PublishProperties,
        remaining_secs: Option<u32>,
        topic: &sluice_codec::ByteStr,
        now: SystemTime,
    ) -> Result<PublishProperties, DropReason> {
        let missing = match self.settings.cloud_events {
            Some(CloudEventAttributes::CreateOrRemap) => {
                let present = CePresent::of(&props.user_properties());
                (!present.has_required()).then_some(present)
            }
            Some(CloudEventAttributes::Propagate) | None => None,
        };
        if remaining_secs.is_none()
            && props.topic_alias().is_none()
            && props.subscription_identifiers().is_empty()
            && missing.is_none()
        {
            return Ok(props.clone());
        }
        // The slow path: the values are slices of the block; encoding them allocates.
        let mut values: PublishPropertyValues = props.to_values();
        values.topic_alias = None;
        values.subscription_identifiers = SubscriptionIds::default();
        values.message_expiry_interval_secs = remaining_secs;
        if let Some(present) = missing {
            let id = uuid_v4(&mut self.rng);
            let time = Rfc3339::from_system_time(now);
            let created = [
                (!present.specversion).then_some(("specversion", CLOUD_EVENT_SPEC_VERSION)),
                (!present.ty).then_some(("type", CLOUD_EVENT_TYPE)),
                (!present.source).then_some(("source", self.ce_source.as_str())),
                (!present.id).then_some(("id", id.as_str())),
                (!present.subject).then_some(("subject", topic.as_str())),
                (!present.time).then_some(("time", time.as_str())),
            ];
            let user = props.user_properties();
            values.user_properties =
                UserProperties::from_pairs(user.iter().chain(created.into_iter().flatten()))
                    .map_err(|_| DropReason::InvalidProperties)?;
        }
        values.build().map_err(|_| DropReason::InvalidProperties)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use std::time::{Instant, UNIX_EPOCH};

    use bytes::Bytes;
    use sluice_codec::{
        ByteStr, Codec, Packet, PacketId, PayloadFormat, ProtocolVersion, Publish, QoS, Role,
    };

    use super::*;
    use crate::transform::cloudevents::tests::is_uuid_v4;

    const NOW: SystemTime = UNIX_EPOCH;

    fn topic(s: &'static str) -> ByteStr {
        ByteStr::from_static(s)
    }

    fn settings(template: &str) -> RouteSettings {
        RouteSettings {
            dataflow: "bridge-1".into(),
            topic: TopicTemplate::parse(template).expect("valid"),
            cloud_events: None,
            carry_properties: true,
        }
    }

    /// The message a source gives for `p`.
    fn message(p: &Publish) -> Message {
        Message {
            topic: p.topic.clone(),
            arrived_on: ByteStr::new(),
            payload: p.payload.clone(),
            properties: p.properties.clone(),
            retain: p.retain,
            received: Instant::now(),
        }
    }

    /// The PUBLISH a QoS 1 MQTT sink would send for a routed message.
    fn publish(m: Message) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: m.retain,
            topic: m.topic,
            packet_id: None,
            properties: m.properties,
            payload: m.payload,
        }
    }

    impl Route {
        /// Routes `p` as a source gives it and returns what an MQTT sink sends.
        fn forward(
            &mut self,
            p: &Publish,
            held: Duration,
            wall: SystemTime,
        ) -> Result<Publish, DropReason> {
            let mut m = message(p);
            self.route(&mut m, held, wall)?;
            Ok(publish(m))
        }
    }

    fn source(topic_name: &'static str, values: &PublishPropertyValues) -> Publish {
        Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: topic(topic_name),
            packet_id: PacketId::new(42),
            properties: values.build().expect("valid properties"),
            payload: Bytes::from(vec![1, 2, 3, 4]),
        }
    }

    fn full_values() -> PublishPropertyValues {
        PublishPropertyValues {
            payload_format_indicator: Some(PayloadFormat::Utf8),
            message_expiry_interval_secs: None,
            topic_alias: None,
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x00corr")),
            user_properties: UserProperties::from_pairs([("b", "2"), ("a", "1"), ("b", "3")])
                .expect("valid"),
            subscription_identifiers: SubscriptionIds::default(),
            content_type: Some("application/json".into()),
        }
    }

    fn pairs<B: AsRef<[u8]>>(u: &UserProperties<B>) -> Vec<(String, String)> {
        u.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    fn assert_carried(p: &PublishProperties) {
        assert_eq!(p.payload_format_indicator(), Some(PayloadFormat::Utf8));
        assert_eq!(p.response_topic(), Some("reply/here"));
        assert_eq!(p.correlation_data(), Some(&b"\x00corr"[..]));
        assert_eq!(p.content_type(), Some("application/json"));
        let user = p.user_properties();
        let got: Vec<_> = user.iter().collect();
        assert_eq!(got, [("b", "2"), ("a", "1"), ("b", "3")]);
        assert_eq!(p.topic_alias(), None);
        assert!(p.subscription_identifiers().is_empty());
    }

    /// The fast path: payload and property block are the source's buffers.
    #[test]
    fn fast_path_shares_payload_and_properties() {
        let mut f = Route::new(settings("${inputTopic}"));
        let src = source("factory/1/data", &full_values());
        let out = f
            .forward(&src, Duration::from_secs(5), NOW)
            .expect("forwarded");
        assert_eq!(out.payload.as_ptr(), src.payload.as_ptr());
        assert_eq!(out.payload, src.payload);
        assert_eq!(
            out.properties.as_bytes().as_ptr(),
            src.properties.as_bytes().as_ptr()
        );
        assert_eq!(
            out.properties.as_bytes().len(),
            src.properties.as_bytes().len()
        );
        assert_eq!(out.topic.as_bytes().as_ptr(), src.topic.as_bytes().as_ptr());
        assert_carried(&out.properties);
        // The packet-level fields.
        assert!(!out.dup);
        assert_eq!(out.packet_id, None);
        assert_eq!(out.qos, QoS::AtLeastOnce);
        assert!(out.retain);

        // Propagate changes nothing either.
        let mut s = settings("${inputTopic}");
        s.cloud_events = Some(CloudEventAttributes::Propagate);
        let out = Route::new(s)
            .forward(&src, Duration::ZERO, NOW)
            .expect("forwarded");
        assert_eq!(
            out.properties.as_bytes().as_ptr(),
            src.properties.as_bytes().as_ptr()
        );
    }

    /// A frame decoded by the codec, forwarded, encoded and decoded again.
    #[test]
    fn decoded_frame_round_trip() {
        let mut src = source("plant/7/temp", &full_values());
        src.dup = false;
        let mut wire = BytesMut::new();
        let server = Codec::new(Role::Server, ProtocolVersion::V5);
        server
            .encode(&Packet::Publish(src), &mut wire)
            .expect("encodes");
        let mut client = Codec::new(Role::Client, ProtocolVersion::V5);
        let Some(Packet::Publish(decoded)) = client.decode(&mut wire).expect("decodes") else {
            panic!("not a PUBLISH");
        };

        let mut f = Route::new(settings("out/${inputTopic.2}"));
        let mut out = f
            .forward(&decoded, Duration::from_millis(1), NOW)
            .expect("forwarded");
        assert_eq!(out.payload.as_ptr(), decoded.payload.as_ptr());
        assert_eq!(
            out.properties.as_bytes().as_ptr(),
            decoded.properties.as_bytes().as_ptr()
        );
        out.packet_id = PacketId::new(1);
        let mut wire = BytesMut::new();
        client
            .encode(&Packet::Publish(out), &mut wire)
            .expect("encodes");
        let Some(Packet::Publish(again)) = server_decoder().decode(&mut wire).expect("decodes")
        else {
            panic!("not a PUBLISH");
        };
        assert_eq!(again.topic, "out/7");
        assert_eq!(&again.payload[..], [1, 2, 3, 4]);
        assert_carried(&again.properties);
    }

    fn server_decoder() -> Codec {
        Codec::new(Role::Server, ProtocolVersion::V5)
    }

    #[test]
    fn expiry_is_reduced_by_whole_seconds_held() {
        let mut values = full_values();
        values.message_expiry_interval_secs = Some(60);
        let src = source("a/b", &values);
        let mut f = Route::new(settings("${inputTopic}"));
        for (held, left) in [
            (Duration::ZERO, 60),
            (Duration::from_millis(999), 60),
            (Duration::from_secs(1), 59),
            (Duration::from_millis(59_999), 1),
        ] {
            let out = f.forward(&src, held, NOW).expect("forwarded");
            assert_eq!(
                out.properties.message_expiry_interval_secs(),
                Some(left),
                "{held:?}"
            );
            assert_carried(&out.properties);
        }
        for held in [
            Duration::from_secs(60),
            Duration::from_millis(60_001),
            Duration::from_secs(3600),
            Duration::MAX,
        ] {
            assert_eq!(
                f.forward(&src, held, NOW),
                Err(DropReason::Expired),
                "{held:?}"
            );
        }
        // An interval of 0 has no time left.
        values.message_expiry_interval_secs = Some(0);
        assert_eq!(
            f.forward(&source("a/b", &values), Duration::ZERO, NOW),
            Err(DropReason::Expired)
        );
        // The largest interval.
        values.message_expiry_interval_secs = Some(u32::MAX);
        let out = f
            .forward(&source("a/b", &values), Duration::from_secs(1), NOW)
            .expect("forwarded");
        assert_eq!(
            out.properties.message_expiry_interval_secs(),
            Some(u32::MAX - 1)
        );
        // Expired messages are dropped for a 3.1.1 destination too.
        let mut s = settings("x");
        s.carry_properties = false;
        values.message_expiry_interval_secs = Some(5);
        assert_eq!(
            Route::new(s).forward(&source("a/b", &values), Duration::from_secs(5), NOW),
            Err(DropReason::Expired)
        );
    }

    #[test]
    fn waiting_ages_the_expiry() {
        let mut values = full_values();
        values.message_expiry_interval_secs = Some(10);
        let mut fwd = Route::new(settings("out/${inputTopic}"));
        let src = source("a/b", &values);
        let mut out = message(&src);
        fwd.route(&mut out, Duration::ZERO, SystemTime::UNIX_EPOCH)
            .expect("forwarded");
        let before = out.properties.as_bytes().clone();
        Route::age(&mut out, Duration::from_millis(900)).expect("not expired");
        assert_eq!(
            out.properties.as_bytes().as_ptr(),
            before.as_ptr(),
            "untouched"
        );
        Route::age(&mut out, Duration::from_secs(4)).expect("not expired");
        assert_eq!(out.properties.message_expiry_interval_secs(), Some(6));
        assert_carried(&out.properties);
        assert_eq!(
            Route::age(&mut out, Duration::from_secs(6)),
            Err(DropReason::Expired)
        );
    }

    #[test]
    fn topic_alias_and_subscription_ids_are_stripped() {
        let mut values = full_values();
        values.topic_alias = NonZeroU16::new(7);
        values.subscription_identifiers = SubscriptionIds::from_ids([12, 300]).expect("valid");
        let src = source("a/b", &values);
        let out = Route::new(settings("${inputTopic}"))
            .forward(&src, Duration::ZERO, NOW)
            .expect("forwarded");
        assert_carried(&out.properties);
        assert_eq!(out.properties.message_expiry_interval_secs(), None);
        // Each alone takes the slow path too.
        for values in [
            PublishPropertyValues {
                topic_alias: NonZeroU16::new(1),
                ..full_values()
            },
            PublishPropertyValues {
                subscription_identifiers: SubscriptionIds::from_ids([1]).expect("valid"),
                ..full_values()
            },
        ] {
            let out = Route::new(settings("${inputTopic}"))
                .forward(&source("a/b", &values), Duration::ZERO, NOW)
                .expect("forwarded");
            assert_carried(&out.properties);
            assert_eq!(out.properties, full_values().build().expect("valid"));
        }
    }

    #[test]
    fn v311_destination_gets_no_properties() {
        let mut values = full_values();
        values.topic_alias = NonZeroU16::new(7);
        values.message_expiry_interval_secs = Some(100);
        let src = source("a/b", &values);
        for ce in [
            None,
            Some(CloudEventAttributes::Propagate),
            Some(CloudEventAttributes::CreateOrRemap),
        ] {
            let mut s = settings("${inputTopic}");
            s.carry_properties = false;
            s.cloud_events = ce;
            let out = Route::new(s)
                .forward(&src, Duration::from_secs(1), NOW)
                .expect("forwarded");
            assert!(out.properties.is_empty(), "{ce:?}");
            assert_eq!(out.payload.as_ptr(), src.payload.as_ptr());
            let mut wire = BytesMut::new();
            let mut out = out;
            out.packet_id = PacketId::new(1);
            Codec::new(Role::Client, ProtocolVersion::V311)
                .encode(&Packet::Publish(out), &mut wire)
                .expect("encodes as 3.1.1");
        }
    }

    #[test]
    fn v311_source_to_v5_destination() {
        let src = Publish {
            qos: QoS::AtLeastOnce,
            packet_id: PacketId::new(1),
            ..Publish::new(topic("a/b"), Bytes::from_static(b"x"))
        };
        let out = Route::new(settings("${inputTopic}"))
            .forward(&src, Duration::from_secs(1000), NOW)
            .expect("forwarded");
        assert!(out.properties.is_empty());
        assert_eq!(out.topic, "a/b");
    }

    #[test]
    fn unresolved_topic_is_dropped() {
        let src = source("a/b", &full_values());
        let mut f = Route::new(settings("x/${inputTopic.3}"));
        assert_eq!(
            f.forward(&src, Duration::ZERO, NOW),
            Err(DropReason::UnresolvedTopic)
        );
        assert_eq!(DropReason::UnresolvedTopic.as_str(), "unresolved_topic");
        assert_eq!(DropReason::Expired.as_str(), "expired");
        assert_eq!(
            DropReason::InvalidProperties.to_string(),
            "invalid_properties"
        );
        assert_eq!(f.settings().topic.as_str(), "x/${inputTopic.3}");
        // A message that is not routed is left as it was.
        let mut m = message(&src);
        let before = m.clone();
        assert!(f.route(&mut m, Duration::ZERO, NOW).is_err());
        assert_eq!(m, before);
    }

    // ---- CloudEvents ----

    fn create_or_remap(template: &str) -> Route {
        let mut s = settings(template);
        s.cloud_events = Some(CloudEventAttributes::CreateOrRemap);
        Route::with_seed(s, 7)
    }

    #[test]
    fn create_or_remap_fills_in_a_plain_message() {
        let mut f = create_or_remap("out/${inputTopic.2}");
        let now = UNIX_EPOCH + Duration::from_millis(1_795_449_600_123);
        let src = source("factory/oven-1/temp", &full_values());
        let out = f.forward(&src, Duration::ZERO, now).expect("forwarded");
        let p = &out.properties;
        let got = pairs(&p.user_properties());
        assert_eq!(got.len(), 9, "{got:?}");
        // The message's own come first, unchanged.
        assert_eq!(
            got[..3],
            [("b", "2"), ("a", "1"), ("b", "3")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let names: Vec<_> = got[3..].iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["specversion", "type", "source", "id", "subject", "time"]
        );
        let user = p.user_properties();
        assert_eq!(user.get("specversion"), Some("1.0"));
        assert_eq!(user.get("type"), Some("ms.aio-dataflow.telemetry"));
        assert_eq!(user.get("source"), Some("aio://bridge-1"));
        assert!(
            is_uuid_v4(user.get("id").expect("id")),
            "{:?}",
            user.get("id")
        );
        assert_eq!(user.get("subject"), Some("out/oven-1"));
        assert_eq!(user.get("time"), Some("2026-11-23T16:00:00.123Z"));
        // The rest is carried; datacontenttype is the Content Type, unchanged.
        assert_eq!(p.content_type(), Some("application/json"));
        assert_eq!(p.response_topic(), Some("reply/here"));
        assert_eq!(p.correlation_data(), Some(&b"\x00corr"[..]));
        assert_eq!(p.payload_format_indicator(), Some(PayloadFormat::Utf8));
        assert_eq!(out.payload.as_ptr(), src.payload.as_ptr());

        // Each message gets its own id.
        let again = f.forward(&src, Duration::ZERO, now).expect("forwarded");
        assert_ne!(
            again.properties.user_properties().get("id"),
            p.user_properties().get("id")
        );
    }

    #[test]
    fn create_or_remap_keeps_present_attributes() {
        let values = PublishPropertyValues {
            user_properties: UserProperties::from_pairs([
                ("type", "com.example.reading"),
                ("unit", "C"),
                ("time", "2020-01-01T00:00:00Z"),
                ("dataschema", "sr://schemas/1"),
            ])
            .expect("valid"),
            message_expiry_interval_secs: Some(30),
            topic_alias: NonZeroU16::new(2),
            ..PublishPropertyValues::default()
        };
        let out = create_or_remap("${inputTopic}")
            .forward(&source("a/b", &values), Duration::from_secs(10), NOW)
            .expect("forwarded");
        let got = pairs(&out.properties.user_properties());
        let want = [
            ("type", "com.example.reading"),
            ("unit", "C"),
            ("time", "2020-01-01T00:00:00Z"),
            ("dataschema", "sr://schemas/1"),
            ("specversion", "1.0"),
            ("source", "aio://bridge-1"),
        ];
        assert_eq!(got[..6], want.map(|(k, v)| (k.to_owned(), v.to_owned())));
        assert_eq!(got[6].0, "id");
        assert!(is_uuid_v4(&got[6].1));
        assert_eq!(got[7], ("subject".to_owned(), "a/b".to_owned()));
        assert_eq!(got.len(), 8);
        assert_eq!(out.properties.message_expiry_interval_secs(), Some(20));
        assert_eq!(out.properties.topic_alias(), None);
        assert_eq!(out.properties.content_type(), None);
    }

    /// A message that already is a CloudEvent passes as it is: nothing is added, nor restamped.
    #[test]
    fn create_or_remap_passes_a_complete_event() {
        let values = PublishPropertyValues {
            user_properties: UserProperties::from_pairs([
                ("specversion", "1.0"),
                ("type", "t"),
                ("source", "aio://elsewhere"),
                ("id", "A234-1234-1234"),
            ])
            .expect("valid"),
            content_type: Some("application/json".into()),
            ..PublishPropertyValues::default()
        };
        let src = source("a/b", &values);
        let out = create_or_remap("${inputTopic}")
            .forward(&src, Duration::ZERO, NOW)
            .expect("forwarded");
        assert_eq!(
            out.properties.as_bytes().as_ptr(),
            src.properties.as_bytes().as_ptr()
        );
        assert_eq!(out.properties, src.properties);
    }

    #[test]
    fn create_or_remap_on_a_message_without_properties() {
        let src = Publish::new(topic("a/b"), Bytes::from_static(b"{}"));
        let out = create_or_remap("static/topic")
            .forward(&src, Duration::ZERO, UNIX_EPOCH)
            .expect("forwarded");
        let user = out.properties.user_properties();
        assert_eq!(user.len(), 6);
        assert_eq!(user.get("subject"), Some("static/topic"));
        assert_eq!(user.get("time"), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(user.get("source"), Some("aio://bridge-1"));
    }
}
