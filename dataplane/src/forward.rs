//! Forwarding: the per-message transformation from a PUBLISH received on a dataflow's source to the
//! PUBLISH sent to its MQTT destination. Pure code (sans-IO): no sockets, no clock (the caller
//! passes `held` and `now`), no logging; the session assigns the packet identifier and sends.
//!
//! # Destination topic ([`TopicTemplate`])
//!
//! `dataDestination` is a topic name in which `${inputTopic}` stands for the whole source topic
//! and `${inputTopic.N}` for its N-th level, counted from 1. Literal text and any number of
//! placeholders may be mixed (`factory/${inputTopic.2}/out`). As Azure IoT Operations documents
//! it ("Dynamic destination topics" in *Configure a data flow destination*):
//!
//! - levels are counted after leading and trailing slashes are ignored: in `/a/b/` level 1 is `a`
//!   and there is no level 3. Between them the topic is split on every `/`, as MQTT does, so an
//!   empty level counts: in `a//b` level 2 is empty and level 3 is `b`;
//! - a placeholder that cannot be resolved (`${inputTopic.5}` of a three-level topic) drops the
//!   message ([`DropReason::UnresolvedTopic`]), as does a result that is not a valid topic name
//!   (empty, longer than 65,535 bytes, or holding `+` or `#`) and a source topic that is empty
//!   (a 5.0 Topic Alias that the session did not resolve);
//! - `$inputTopic` without braces is literal text (`$`, `{` and `}` are valid in topic names).
//!
//! [`TopicTemplate::parse`] checks the rest of the syntax again (config validation already did).
//!
//! # Properties
//!
//! To a 5.0 destination, the Payload Format Indicator, Content Type, Response Topic, Correlation
//! Data and User Properties (in order) pass unchanged; the Message Expiry Interval is reduced by
//! the whole seconds the message was `held` since it was received, and a message with no time
//! left is dropped ([`DropReason::Expired`]; checked for a 3.1.1 destination too). Never carried:
//! the Topic Alias (aliases belong to a connection) and Subscription Identifiers (a client must not
//! send them, [MQTT-3.3.4-6]). To a 3.1.1 destination no properties go at all.
//!
//! # CloudEvents (`cloudEventAttributes`)
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
//! # What is copied, what allocates
//!
//! | Part | Fast path | Otherwise |
//! |---|---|---|
//! | payload | the same `Bytes` (a reference count) | same |
//! | topic, static template | a clone of the template's `ByteStr` (a reference count) | |
//! | topic, exactly `${inputTopic}` | a clone of the source topic (a reference count) | |
//! | topic, other templates | written into the [`Forwarder`]'s scratch buffer and split off (a copy of a few bytes, no allocation until the 64 KiB chunk is used up) | |
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

use std::fmt;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use sluice_codec::topic::validate_topic_name;
use sluice_codec::{
    ByteStr, ProtocolVersion, Publish, PublishProperties, PublishPropertyValues, QoS,
    SubscriptionIds, UserProperties,
};
use sluice_config_agent::model::{CloudEventAttributes, Retain};

/// The longest topic name: a UTF-8 string has a two-byte length (§1.5.4).
pub const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// How much the scratch buffer of a [`Forwarder`] grows by when resolved topics have used it up.
pub const SCRATCH_CHUNK: usize = 64 * 1024;

/// CloudEvents `type` given by `CreateOrRemap` when the message has none.
pub const CLOUD_EVENT_TYPE: &str = "ms.aio-dataflow.telemetry";

/// CloudEvents `specversion` given by `CreateOrRemap` when the message has none.
pub const CLOUD_EVENT_SPEC_VERSION: &str = "1.0";

/// What is wrong with a destination topic template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template is empty: a topic name has at least one character ([MQTT-4.7.3-1]).
    #[error("the destination topic is empty [MQTT-4.7.3-1]")]
    Empty,
    /// `${` without a closing `}`.
    #[error("\"${{\" at byte {at} has no closing '}}'")]
    Unclosed {
        /// Byte offset of the `$`.
        at: usize,
    },
    /// A variable other than `inputTopic` and `inputTopic.N`.
    #[error("unknown variable \"${{{name}}}\": expected ${{inputTopic}} or ${{inputTopic.N}}")]
    UnknownVariable {
        /// What stood between the braces.
        name: String,
    },
    /// `${inputTopic.N}` with an N that is not a number from 1 to 4,294,967,295.
    #[error("\"${{{name}}}\": topic levels are numbered from 1")]
    InvalidLevel {
        /// What stood between the braces.
        name: String,
    },
    /// The literal text holds `+` or `#` ([MQTT-3.3.2-2]).
    #[error("the destination topic contains a wildcard character ('+' or '#') [MQTT-3.3.2-2]")]
    Wildcard,
    /// The literal text holds U+0000 ([MQTT-4.7.3-2]).
    #[error("the destination topic contains U+0000 [MQTT-4.7.3-2]")]
    NullCharacter,
    /// The literal text alone is longer than a topic name can be.
    #[error("the destination topic is {len} bytes long; a topic name has at most 65535")]
    TooLong {
        /// Length of the literal text, in bytes.
        len: usize,
    },
}

/// One piece of a template with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<str>),
    /// `${inputTopic}`.
    Whole,
    /// `${inputTopic.N}`.
    Level(NonZeroU32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// No placeholder: the topic itself, cloned for each message.
    Static(ByteStr),
    /// Exactly `${inputTopic}`.
    Whole,
    /// Anything else.
    Mixed {
        parts: Box<[Part]>,
        /// Sum of the literal lengths, in bytes.
        literal_len: usize,
        /// How many placeholders.
        placeholders: usize,
    },
}

/// A parsed `dataDestination` for an MQTT destination: see the [module](self) documentation for
/// the rules.
///
/// ```
/// use bytes::BytesMut;
/// use sluice_codec::ByteStr;
/// use sluice_dataplane::forward::TopicTemplate;
///
/// let t = TopicTemplate::parse("processed/${inputTopic.2}/${inputTopic.3}")?;
/// let mut scratch = BytesMut::new();
/// let out = t.resolve(&ByteStr::from_static("factory/1/data"), &mut scratch);
/// assert_eq!(out.as_deref(), Some("processed/1/data"));
/// assert_eq!(t.resolve(&ByteStr::from_static("factory/1"), &mut scratch), None);
/// # Ok::<(), sluice_dataplane::forward::TemplateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    text: Box<str>,
    kind: Kind,
}

impl TopicTemplate {
    /// Parses a destination topic template.
    ///
    /// # Errors
    /// The [`TemplateError`] for the first problem found.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut literal_len = 0;
        let mut placeholders = 0;
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            literal.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(TemplateError::Unclosed {
                    at: template.len() - rest.len() + start,
                });
            };
            let name = &after[..end];
            let part = match name.strip_prefix("inputTopic") {
                Some("") => Part::Whole,
                Some(index) => match index.strip_prefix('.').map(str::parse::<NonZeroU32>) {
                    Some(Ok(n)) => Part::Level(n),
                    _ => {
                        return Err(TemplateError::InvalidLevel {
                            name: name.to_owned(),
                        });
                    }
                },
                None => {
                    return Err(TemplateError::UnknownVariable {
                        name: name.to_owned(),
                    });
                }
            };
            if !literal.is_empty() {
                check_literal(&literal)?;
                literal_len += literal.len();
                parts.push(Part::Literal(std::mem::take(&mut literal).into_boxed_str()));
            }
            parts.push(part);
            placeholders += 1;
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            check_literal(&literal)?;
            literal_len += literal.len();
            parts.push(Part::Literal(literal.into_boxed_str()));
        }
        if literal_len > MAX_TOPIC_LEN {
            return Err(TemplateError::TooLong { len: literal_len });
        }
        let kind = match parts.as_slice() {
            [] => return Err(TemplateError::Empty),
            [Part::Literal(s)] => {
                let topic = ByteStr::from(String::from(&**s));
                // A `Bytes` made from a `Vec` allocates its shared header on the first clone;
                // do it now, so that every clone per message is a reference count only.
                drop(topic.clone());
                Kind::Static(topic)
            }
            [Part::Whole] => Kind::Whole,
            _ => Kind::Mixed {
                parts: parts.into_boxed_slice(),
                literal_len,
                placeholders,
            },
        };
        Ok(Self {
            text: template.into(),
            kind,
        })
    }

    /// The destination topic for a message received on `input_topic`, or `None` when the template
    /// cannot be resolved for it: a level it does not have (`${inputTopic.5}` of a three-level
    /// topic), an empty source topic, or a result that is not a valid topic name (empty, longer
    /// than 65,535 bytes, or containing `+` or `#`).
    ///
    /// A static template and exactly `${inputTopic}` return a reference-counted clone, without
    /// touching `scratch`. Other templates clear `scratch`, write the topic into it and split it
    /// off (`scratch.split().freeze()`): no allocation while the buffer has room, and it grows by
    /// [`SCRATCH_CHUNK`] bytes at a time. Whatever `scratch` held before is discarded; only its
    /// capacity is used.
    pub fn resolve(&self, input_topic: &ByteStr, scratch: &mut BytesMut) -> Option<ByteStr> {
        match &self.kind {
            Kind::Static(topic) => Some(topic.clone()),
            Kind::Whole => valid_topic(input_topic).then(|| input_topic.clone()),
            Kind::Mixed {
                parts,
                literal_len,
                placeholders,
            } => {
                if input_topic.is_empty() {
                    return None;
                }
                let bound = literal_len + placeholders * input_topic.len();
                scratch.clear();
                if scratch.capacity() < bound {
                    scratch.reserve(bound.max(SCRATCH_CHUNK));
                }
                for part in parts.iter() {
                    let piece = match part {
                        Part::Literal(s) => &**s,
                        Part::Whole => input_topic.as_str(),
                        Part::Level(n) => match level(input_topic, *n) {
                            Some(l) => l,
                            None => {
                                scratch.clear();
                                return None;
                            }
                        },
                    };
                    scratch.extend_from_slice(piece.as_bytes());
                }
                // Always UTF-8 without U+0000 (pieces of a template checked by `parse` and of a
                // topic name); checked again because `ByteStr` has no unchecked constructor
                // outside the codec. One pass over a short string.
                let topic = ByteStr::try_from_bytes(scratch.split().freeze()).ok()?;
                valid_topic(&topic).then_some(topic)
            }
        }
    }

    /// Whether the template has no placeholder: every message goes to the same topic.
    pub fn is_static(&self) -> bool {
        matches!(self.kind, Kind::Static(_))
    }

    /// The template as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn check_literal(s: &str) -> Result<(), TemplateError> {
    if s.contains(['+', '#']) {
        Err(TemplateError::Wildcard)
    } else if s.contains('\0') {
        Err(TemplateError::NullCharacter)
    } else {
        Ok(())
    }
}

/// A valid topic name (not empty, no wildcard, no U+0000) that fits in a PUBLISH.
fn valid_topic(topic: &str) -> bool {
    topic.len() <= MAX_TOPIC_LEN && validate_topic_name(topic).is_ok()
}

/// Level `n` (from 1) of `topic`, with leading and trailing slashes ignored.
fn level(topic: &str, n: NonZeroU32) -> Option<&str> {
    let trimmed = topic.trim_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    trimmed.split('/').nth(n.get() as usize - 1)
}

/// Why a message is not forwarded. Each one is counted, under the label [`DropReason::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The destination topic template could not be resolved for the source topic.
    UnresolvedTopic,
    /// The Message Expiry Interval ran out while the message was held.
    Expired,
    /// The property block for the destination could not be encoded (it would exceed what a
    /// packet can hold). Not expected: the source block was valid and little is added.
    InvalidProperties,
}

impl DropReason {
    /// The label for metrics.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::UnresolvedTopic => "unresolved_topic",
            Self::Expired => "expired",
            Self::InvalidProperties => "invalid_properties",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a [`Forwarder`] does to each message: the dataflow's destination settings.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    /// The dataflow's name, for the CloudEvents `source` (`aio://<dataflow>`).
    pub dataflow: String,
    /// The destination topic (`dataDestination`).
    pub topic: TopicTemplate,
    /// The destination endpoint's QoS (`mqttSettings.qos`).
    pub qos: QoS,
    /// What happens to the RETAIN flag (`mqttSettings.retain`).
    pub retain: Retain,
    /// CloudEvents handling (`mqttSettings.cloudEventAttributes`).
    pub cloud_events: Option<CloudEventAttributes>,
    /// The MQTT version spoken to the destination.
    pub destination_version: ProtocolVersion,
}

/// Turns source PUBLISH packets into destination ones for one dataflow; one per dataflow per
/// core. It owns the scratch buffer that dynamic topics are written into (see the
/// [module](self) documentation for what it holds) and the generator of CloudEvents ids.
#[derive(Debug)]
pub struct Forwarder {
    settings: ForwardSettings,
    /// `aio://<dataflow>`.
    ce_source: String,
    scratch: BytesMut,
    rng: fastrand::Rng,
}

impl Forwarder {
    /// A forwarder whose CloudEvents ids come from a generator seeded from the thread's.
    pub fn new(settings: ForwardSettings) -> Self {
        Self::with_rng(settings, fastrand::Rng::new())
    }

    /// A forwarder whose CloudEvents ids come from a generator with this seed (for tests).
    pub fn with_seed(settings: ForwardSettings, seed: u64) -> Self {
        Self::with_rng(settings, fastrand::Rng::with_seed(seed))
    }

    fn with_rng(settings: ForwardSettings, rng: fastrand::Rng) -> Self {
        Self {
            ce_source: format!("aio://{}", settings.dataflow),
            settings,
            scratch: BytesMut::new(),
            rng,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ForwardSettings {
        &self.settings
    }

    /// The PUBLISH to send to the destination for `source`, received `held` ago; `now` is the
    /// wall clock, for the CloudEvents `time`.
    ///
    /// The result has DUP 0, no packet identifier (the session assigns one when the QoS is
    /// above 0), the destination's QoS, RETAIN as received (`Keep`) or cleared (`Never`), the
    /// resolved topic, the properties described in the [module](self) documentation, and the
    /// same payload `Bytes` (no copy).
    ///
    /// # Errors
    /// The [`DropReason`] when the message is not to be forwarded.
    pub fn forward(
        &mut self,
        source: &Publish,
        held: Duration,
        now: SystemTime,
    ) -> Result<Publish, DropReason> {
        let props = &source.properties;
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
            .resolve(&source.topic, &mut self.scratch)
            .ok_or(DropReason::UnresolvedTopic)?;
        let properties = match self.settings.destination_version {
            ProtocolVersion::V311 => PublishProperties::new(),
            ProtocolVersion::V5 => self.properties(props, remaining_secs, &topic, now)?,
        };
        Ok(Publish {
            dup: false,
            qos: self.settings.qos,
            retain: match self.settings.retain {
                Retain::Keep => source.retain,
                Retain::Never => false,
            },
            topic,
            packet_id: None,
            properties,
            payload: source.payload.clone(),
        })
    }

    /// Ages a message already forwarded that waited `held` more before the destination took it
    /// (in the pipeline's queue while the destination's window was full or its connection
    /// down): its Message Expiry Interval loses the whole seconds held. Nothing changes (and
    /// nothing is allocated) when it has no expiry or waited less than a second.
    ///
    /// # Errors
    /// [`DropReason::Expired`] when no time is left; [`DropReason::InvalidProperties`] when the
    /// properties cannot be encoded again (they were valid, so this does not happen).
    pub fn age(message: &mut Publish, held: Duration) -> Result<(), DropReason> {
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

    /// The properties for a 5.0 destination.
    fn properties(
        &mut self,
        props: &PublishProperties,
        remaining_secs: Option<u32>,
        topic: &ByteStr,
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

/// Which CloudEvents attributes a message has as User Properties.
#[derive(Debug, Clone, Copy, Default)]
struct CePresent {
    specversion: bool,
    ty: bool,
    source: bool,
    id: bool,
    subject: bool,
    time: bool,
}

impl CePresent {
    fn of<B: AsRef<[u8]>>(user: &UserProperties<B>) -> Self {
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

    fn has_required(&self) -> bool {
        self.specversion && self.ty && self.source && self.id
    }
}

/// A UUID in its 36-character text form (lowercase hex with hyphens).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UuidText([u8; 36]);

impl UuidText {
    /// The text.
    pub fn as_str(&self) -> &str {
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

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A random UUID, version 4 (RFC 9562 §5.4): 122 random bits from `rng` (not a cryptographic
/// generator: these ids need to be unique, not unpredictable).
pub fn uuid_v4(rng: &mut fastrand::Rng) -> UuidText {
    let mut b = rng.u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // variant 10
    let mut out = [b'-'; 36];
    let mut i = 0;
    for (n, byte) in b.iter().enumerate() {
        if matches!(n, 4 | 6 | 8 | 10) {
            i += 1; // the hyphen
        }
        out[i] = HEX[usize::from(byte >> 4)];
        out[i + 1] = HEX[usize::from(byte & 0x0f)];
        i += 2;
    }
    UuidText(out)
}

/// A UTC instant in RFC 3339 with milliseconds: `2026-11-23T16:00:00.123Z`, 24 characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339([u8; 24]);

/// Milliseconds from 1970 to 0000-01-01T00:00:00Z (719,528 days before the epoch).
const MIN_MILLIS: i64 = -719_528 * 86_400_000;
/// Milliseconds from 1970 to 9999-12-31T23:59:59.999Z (10000-01-01 is day 2,932,897).
const MAX_MILLIS: i64 = 2_932_897 * 86_400_000 - 1;

impl Rfc3339 {
    /// Formats `t`, which is clamped to years 0000 to 9999 (what RFC 3339 can write).
    pub fn from_system_time(t: SystemTime) -> Self {
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
    pub fn from_unix_millis(millis: i64) -> Self {
        let millis = millis.clamp(MIN_MILLIS, MAX_MILLIS);
        let days = millis.div_euclid(86_400_000);
        let ms_of_day = millis.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        let secs_of_day = ms_of_day / 1000;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        put_digits(&mut out[0..4], year);
        put_digits(&mut out[5..7], month);
        put_digits(&mut out[8..10], day);
        put_digits(&mut out[11..13], secs_of_day / 3600);
        put_digits(&mut out[14..16], secs_of_day / 60 % 60);
        put_digits(&mut out[17..19], secs_of_day % 60);
        put_digits(&mut out[20..23], ms_of_day % 1000);
        Self(out)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
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

/// Writes `v` (not negative) as decimal digits filling `out`, zero-padded.
fn put_digits(out: &mut [u8], mut v: i64) {
    for c in out.iter_mut().rev() {
        *c = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// The proleptic Gregorian date (year, month 1-12, day 1-31) of a day counted from 1970-01-01.
/// The usual era-based conversion: a 400-year era has 146,097 days, and years are counted from
/// March so that the leap day ends them.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use bytes::Bytes;
    use sluice_codec::{Codec, Packet, PacketId, PayloadFormat, Role};

    use super::*;

    fn topic(s: &'static str) -> ByteStr {
        ByteStr::from_static(s)
    }

    fn resolve(template: &str, input: &'static str) -> Option<String> {
        let t = TopicTemplate::parse(template).expect("valid template");
        t.resolve(&topic(input), &mut BytesMut::new())
            .map(|t| t.to_string())
    }

    // ---- templates ----

    #[test]
    fn static_template() {
        let t = TopicTemplate::parse("processed/all").expect("valid");
        assert!(t.is_static());
        assert_eq!(t.as_str(), "processed/all");
        assert_eq!(t.to_string(), "processed/all");
        let mut scratch = BytesMut::new();
        let a = t.resolve(&topic("x/y"), &mut scratch).expect("resolves");
        let b = t.resolve(&topic("z"), &mut scratch).expect("resolves");
        assert_eq!(a, "processed/all");
        // The same buffer each time, and the scratch buffer untouched.
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
        assert_eq!(scratch.capacity(), 0);
        // Characters that look like a template but are not one stay literal.
        for s in [
            "$inputTopic.2",
            "a/{inputTopic}",
            "$",
            "a}b",
            "/",
            "$share/x",
        ] {
            let t = TopicTemplate::parse(s).expect("valid");
            assert!(t.is_static(), "{s}");
            assert_eq!(t.resolve(&topic("a/b"), &mut scratch).as_deref(), Some(s));
        }
    }

    #[test]
    fn whole_topic_is_the_source_topic() {
        let t = TopicTemplate::parse("${inputTopic}").expect("valid");
        assert!(!t.is_static());
        let mut scratch = BytesMut::new();
        let input = ByteStr::from(String::from("factory/1/data"));
        let out = t.resolve(&input, &mut scratch).expect("resolves");
        assert_eq!(out, "factory/1/data");
        assert_eq!(out.as_bytes().as_ptr(), input.as_bytes().as_ptr());
        assert_eq!(scratch.capacity(), 0);
        // An alias-only (empty) source topic cannot be forwarded.
        assert_eq!(t.resolve(&ByteStr::new(), &mut scratch), None);
        // Nor one that is not a topic name (a Publish built by hand).
        assert_eq!(t.resolve(&topic("a/+"), &mut scratch), None);
    }

    #[test]
    fn levels_and_mixed_templates() {
        assert_eq!(
            resolve("processed/factory/${inputTopic.2}", "factory/1/data").as_deref(),
            Some("processed/factory/1")
        );
        assert_eq!(
            resolve("${inputTopic.1}", "factory/1/data").as_deref(),
            Some("factory")
        );
        assert_eq!(
            resolve("${inputTopic.3}", "factory/1/data").as_deref(),
            Some("data")
        );
        assert_eq!(
            resolve("factory/${inputTopic.2}/out", "plant/line-7/temp").as_deref(),
            Some("factory/line-7/out")
        );
        assert_eq!(
            resolve("${inputTopic.3}/${inputTopic.1}-${inputTopic.3}", "a/b/c").as_deref(),
            Some("c/a-c")
        );
        assert_eq!(
            resolve("copy/${inputTopic}", "a/b").as_deref(),
            Some("copy/a/b")
        );
        assert_eq!(
            resolve("${inputTopic}/${inputTopic}", "a/b").as_deref(),
            Some("a/b/a/b")
        );
        assert_eq!(
            resolve("${inputTopic.1}", "single").as_deref(),
            Some("single")
        );
        // UTF-8 levels are cut on '/', never inside a character.
        assert_eq!(
            resolve("o/${inputTopic.2}", "caf\u{e9}/\u{1f600}/x").as_deref(),
            Some("o/\u{1f600}")
        );
        // `$` and braces around a placeholder are literal text.
        assert_eq!(resolve("$${inputTopic.1}}", "a/b").as_deref(), Some("$a}"));
    }

    #[test]
    fn out_of_range_levels_are_unresolved() {
        assert_eq!(resolve("x/${inputTopic.4}", "factory/1/data"), None);
        assert_eq!(resolve("${inputTopic.5}", "factory/1/data"), None);
        assert_eq!(
            resolve("x/${inputTopic.4294967295}", "factory/1/data"),
            None
        );
        assert_eq!(resolve("x/${inputTopic.2}", "single"), None);
        // An empty source topic resolves nothing.
        let t = TopicTemplate::parse("x/${inputTopic}").expect("valid");
        assert_eq!(t.resolve(&ByteStr::new(), &mut BytesMut::new()), None);
    }

    /// Leading and trailing slashes are ignored (AIO); in between, every `/` separates levels,
    /// so empty levels count (MQTT).
    #[test]
    fn slashes_and_empty_levels() {
        assert_eq!(resolve("${inputTopic.1}", "/a/b/").as_deref(), Some("a"));
        assert_eq!(resolve("${inputTopic.2}", "/a/b/").as_deref(), Some("b"));
        assert_eq!(resolve("${inputTopic.3}", "/a/b/"), None);
        assert_eq!(resolve("${inputTopic.1}", "//a//").as_deref(), Some("a"));
        // Interior empty levels count.
        assert_eq!(resolve("${inputTopic.3}", "a//b").as_deref(), Some("b"));
        assert_eq!(
            resolve("x/${inputTopic.2}/y", "a//b").as_deref(),
            Some("x//y")
        );
        // An empty level alone is not a topic name.
        assert_eq!(resolve("${inputTopic.2}", "a//b"), None);
        // A topic of slashes only has no level.
        assert_eq!(resolve("x/${inputTopic.1}", "/"), None);
        assert_eq!(resolve("x/${inputTopic.1}", "///"), None);
        // `${inputTopic}` is the whole topic, slashes included.
        assert_eq!(resolve("x${inputTopic}", "/a/").as_deref(), Some("x/a/"));
        assert_eq!(resolve("${inputTopic}", "/a/").as_deref(), Some("/a/"));
    }

    #[test]
    fn results_too_long_are_unresolved() {
        let long = format!("{}/b", "a".repeat(40_000));
        let long: &'static str = Box::leak(long.into_boxed_str());
        assert_eq!(
            resolve("${inputTopic}", long).map(|s| s.len()),
            Some(40_002)
        );
        assert_eq!(resolve("${inputTopic}/${inputTopic}", long), None);
        assert_eq!(
            resolve("x/${inputTopic.1}", long).map(|s| s.len()),
            Some(40_002)
        );
    }

    #[test]
    fn invalid_templates_are_rejected() {
        use TemplateError as E;
        let err = |s: &str| TopicTemplate::parse(s).expect_err(s);
        assert_eq!(err(""), E::Empty);
        assert_eq!(err("a/${inputTopic"), E::Unclosed { at: 2 });
        assert_eq!(err("${"), E::Unclosed { at: 0 });
        assert_eq!(
            err("a/${inputTopik}"),
            E::UnknownVariable {
                name: "inputTopik".into()
            }
        );
        assert_eq!(
            err("${}"),
            E::UnknownVariable {
                name: String::new()
            }
        );
        assert_eq!(
            err("${outputTopic}"),
            E::UnknownVariable {
                name: "outputTopic".into()
            }
        );
        for bad in [
            "inputTopic.0",
            "inputTopic.",
            "inputTopic.x",
            "inputTopic.-1",
            "inputTopic.4294967296",
            "inputTopic2",
            "inputTopic.1.2",
        ] {
            assert_eq!(
                err(&format!("a/${{{bad}}}")),
                E::InvalidLevel { name: bad.into() },
                "{bad}"
            );
        }
        assert_eq!(err("a/+/b"), E::Wildcard);
        assert_eq!(err("a/#"), E::Wildcard);
        assert_eq!(err("${inputTopic}/#"), E::Wildcard);
        assert_eq!(err("a\0b"), E::NullCharacter);
        assert_eq!(err(&"a".repeat(65_536)), E::TooLong { len: 65_536 });
        assert!(TopicTemplate::parse(&"a".repeat(65_535)).is_ok());
        // Messages name the problem.
        assert!(err("a/#").to_string().contains("MQTT-3.3.2-2"));
        assert!(err("${x}").to_string().contains("${x}"));
    }

    /// Resolved topics are cut from one chunk of the scratch buffer: no allocation per message.
    #[test]
    fn dynamic_topics_share_the_scratch_chunk() {
        let t = TopicTemplate::parse("out/${inputTopic.2}").expect("valid");
        let mut scratch = BytesMut::new();
        let a = t
            .resolve(&topic("a/first"), &mut scratch)
            .expect("resolves");
        let cap = scratch.capacity();
        assert!(cap >= SCRATCH_CHUNK - a.len(), "{cap}");
        let b = t
            .resolve(&topic("a/second"), &mut scratch)
            .expect("resolves");
        assert_eq!(a, "out/first");
        assert_eq!(b, "out/second");
        // `b` starts where `a` ended: the same allocation.
        assert_eq!(
            b.as_bytes().as_ptr(),
            a.as_bytes().as_ptr().wrapping_add(a.len())
        );
        assert_eq!(scratch.capacity(), cap - b.len());
        // A failed resolution leaves nothing behind.
        assert_eq!(t.resolve(&topic("only"), &mut scratch), None);
        assert!(scratch.is_empty());
        assert_eq!(scratch.capacity(), cap - b.len());
        // Leftovers in the scratch buffer are discarded, not prepended.
        scratch.extend_from_slice(b"junk");
        let c = t
            .resolve(&topic("a/third"), &mut scratch)
            .expect("resolves");
        assert_eq!(c, "out/third");
    }

    // ---- forwarding ----

    const NOW: SystemTime = UNIX_EPOCH;

    fn settings(template: &str) -> ForwardSettings {
        ForwardSettings {
            dataflow: "bridge-1".into(),
            topic: TopicTemplate::parse(template).expect("valid"),
            qos: QoS::AtLeastOnce,
            retain: Retain::Keep,
            cloud_events: None,
            destination_version: ProtocolVersion::V5,
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
        let mut f = Forwarder::new(settings("${inputTopic}"));
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
        let out = Forwarder::new(s)
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

        let mut f = Forwarder::new(settings("out/${inputTopic.2}"));
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
    fn retain_keep_and_never() {
        let mut src = source("a/b", &PublishPropertyValues::default());
        let mut keep = Forwarder::new(settings("x"));
        let mut s = settings("x");
        s.retain = Retain::Never;
        let mut never = Forwarder::new(s);
        for retained in [true, false] {
            src.retain = retained;
            let k = keep.forward(&src, Duration::ZERO, NOW).expect("forwarded");
            assert_eq!(k.retain, retained);
            let n = never.forward(&src, Duration::ZERO, NOW).expect("forwarded");
            assert!(!n.retain);
        }
    }

    #[test]
    fn qos_is_the_destination_qos() {
        let mut src = source("a/b", &PublishPropertyValues::default());
        for (source_qos, dest_qos) in [
            (QoS::AtLeastOnce, QoS::AtMostOnce),
            (QoS::AtMostOnce, QoS::AtLeastOnce),
            (QoS::ExactlyOnce, QoS::AtLeastOnce),
        ] {
            src.qos = source_qos;
            src.packet_id = (source_qos != QoS::AtMostOnce)
                .then(|| PacketId::new(3))
                .flatten();
            src.dup = source_qos != QoS::AtMostOnce;
            let mut s = settings("x");
            s.qos = dest_qos;
            let out = Forwarder::new(s)
                .forward(&src, Duration::ZERO, NOW)
                .expect("forwarded");
            assert_eq!(out.qos, dest_qos);
            assert_eq!(out.packet_id, None);
            assert!(!out.dup);
        }
    }

    #[test]
    fn expiry_is_reduced_by_whole_seconds_held() {
        let mut values = full_values();
        values.message_expiry_interval_secs = Some(60);
        let src = source("a/b", &values);
        let mut f = Forwarder::new(settings("${inputTopic}"));
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
        s.destination_version = ProtocolVersion::V311;
        values.message_expiry_interval_secs = Some(5);
        assert_eq!(
            Forwarder::new(s).forward(&source("a/b", &values), Duration::from_secs(5), NOW),
            Err(DropReason::Expired)
        );
    }

    #[test]
    fn waiting_ages_the_expiry() {
        let mut values = full_values();
        values.message_expiry_interval_secs = Some(10);
        let mut fwd = Forwarder::new(settings("out/${inputTopic}"));
        let src = source("a/b", &values);
        let mut out = fwd
            .forward(&src, Duration::ZERO, SystemTime::UNIX_EPOCH)
            .expect("forwarded");
        let before = out.properties.as_bytes().clone();
        Forwarder::age(&mut out, Duration::from_millis(900)).expect("not expired");
        assert_eq!(
            out.properties.as_bytes().as_ptr(),
            before.as_ptr(),
            "untouched"
        );
        Forwarder::age(&mut out, Duration::from_secs(4)).expect("not expired");
        assert_eq!(out.properties.message_expiry_interval_secs(), Some(6));
        assert_carried(&out.properties);
        assert_eq!(
            Forwarder::age(&mut out, Duration::from_secs(6)),
            Err(DropReason::Expired)
        );
    }

    #[test]
    fn topic_alias_and_subscription_ids_are_stripped() {
        let mut values = full_values();
        values.topic_alias = NonZeroU16::new(7);
        values.subscription_identifiers = SubscriptionIds::from_ids([12, 300]).expect("valid");
        let src = source("a/b", &values);
        let out = Forwarder::new(settings("${inputTopic}"))
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
            let out = Forwarder::new(settings("${inputTopic}"))
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
            s.destination_version = ProtocolVersion::V311;
            s.cloud_events = ce;
            let out = Forwarder::new(s)
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
        let out = Forwarder::new(settings("${inputTopic}"))
            .forward(&src, Duration::from_secs(1000), NOW)
            .expect("forwarded");
        assert!(out.properties.is_empty());
        assert_eq!(out.topic, "a/b");
    }

    #[test]
    fn unresolved_topic_is_dropped() {
        let src = source("a/b", &full_values());
        let mut f = Forwarder::new(settings("x/${inputTopic.3}"));
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
    }

    // ---- CloudEvents ----

    fn create_or_remap(template: &str) -> Forwarder {
        let mut s = settings(template);
        s.cloud_events = Some(CloudEventAttributes::CreateOrRemap);
        Forwarder::with_seed(s, 7)
    }

    fn is_uuid_v4(s: &str) -> bool {
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
                    assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
                    days += 1;
                }
            }
        }
    }
}
