//! `mqttbytes` 0.6 (its `v4` and `v5` modules) as a differential oracle for our codec.
//!
//! Each case is a [`View`]: the fields that both codecs can express, for PUBLISH (with random
//! 5.0 properties), PUBACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, CONNECT, CONNACK, PINGREQ
//! and DISCONNECT. Two directions:
//! - ours to theirs: a valid view is built as our packet and encoded by our codec; mqttbytes must
//!   decode the bytes to the same view, unless it has one of the gaps listed in
//!   [`mqttbytes_gap`];
//! - theirs to ours: a view is built as an mqttbytes packet and encoded by mqttbytes; our decoder
//!   must decode it to the same view, or, when the view carries a [`Flaw`], reject it with the
//!   error that flaw calls for.
//!
//! Where mqttbytes accepts what we reject (it writes the bytes and reads them back), with the
//! clause that makes the bytes invalid:
//!
//! | flaw                                    | our error                   | clause                |
//! |-----------------------------------------|-----------------------------|-----------------------|
//! | `+` or `#` in a PUBLISH topic           | InvalidTopicName            | MQTT-3.3.2-2          |
//! | empty PUBLISH topic (3.1.1)             | InvalidTopicName            | MQTT-4.7.3-1          |
//! | empty topic, no Topic Alias (5.0)       | EmptyTopicWithoutAlias      | MQTT-5.0 §3.3.2.1     |
//! | U+0000 in a topic or client id          | NullCharacter               | MQTT-1.5.4-2          |
//! | Topic Alias 0                           | TopicAliasZero              | MQTT-3.3.2-8          |
//! | Payload Format Indicator 2              | InvalidPayloadFormat        | MQTT-5.0 §3.3.2.3.2   |
//! | Subscription Identifier 0               | SubscriptionIdZero          | MQTT-5.0 §3.8.2.1.2   |
//! | wildcard in a Response Topic            | InvalidResponseTopic        | MQTT-3.3.2-14         |
//! | packet identifier 0                     | ZeroPacketId                | MQTT-2.2.1-3          |
//! | SUBSCRIBE without topic filters         | SubscribeWithoutFilters     | MQTT-3.8.3-2          |
//! | UNSUBSCRIBE without topic filters       | UnsubscribeWithoutFilters   | MQTT-3.10.3-2         |
//! | `a/#/b` as a topic filter               | InvalidTopicFilter          | MQTT-4.7.1-1          |
//! | No Local on a shared subscription       | NoLocalOnSharedSubscription | MQTT-3.8.3-4          |
//! | wildcard in a Will Topic                | InvalidTopicName            | MQTT-3.3.2-2          |
//! | password without user name (3.1.1)      | PasswordWithoutUsername     | MQTT-3.1.2-22 (3.1.1) |
//! | Receive Maximum 0                       | ReceiveMaximumZero          | MQTT-5.0 §3.1.2.11.3  |
//! | Maximum Packet Size 0                   | MaximumPacketSizeZero       | MQTT-5.0 §3.1.2.11.4  |
//! | Request Problem Information 2           | InvalidBooleanProperty      | MQTT-5.0 §3.1.2.11.7  |
//! | Authentication Data without Method      | AuthDataWithoutMethod       | MQTT-5.0 §3.1.2.11.10 |
//! | CONNACK Session Present with a failure  | SessionPresentWithError     | MQTT-3.2.2-6          |
//! | CONNACK Maximum QoS 2                   | InvalidBooleanProperty      | MQTT-5.0 §3.2.2.3.4   |
//! | CONNACK Retain Available 2              | InvalidBooleanProperty      | MQTT-5.0 §3.2.2.3.5   |
//!
//! (Subscription Identifier 0 in a PUBLISH: §3.3.2.3.8; Session Present in 3.1.1: MQTT-3.2.2-4.)
//!
//! mqttbytes also writes two things from valid input that we reject ([`mqttbytes_writes_invalid`]):
//! a 5.0 CONNACK without properties has no Property Length (`Truncated`, MQTT-2.2.2-1; mqttbytes
//! cannot read it back either), and a 3.1.1 CONNECT with an empty user name and a password goes
//! out with the Password Flag alone, because mqttbytes drops an empty user name
//! (`PasswordWithoutUsername`, MQTT-3.1.2-22).

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use mqttbytes::{v4, v5};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use sluice_codec::{
    AckProperties, Codec, ConnAck, ConnAckProperties, Connect, ConnectProperties, DecodeError,
    Disconnect, DisconnectProperties, LastWill, Packet, PayloadFormat, ProtocolVersion, PubAck,
    Publish, PublishPropertyValues, QoS, ReasonCode, RetainHandling, Role, SubAck, Subscribe,
    SubscribeProperties, Subscription, SubscriptionIds, SubscriptionOptions, UnsubAck, Unsubscribe,
    UnsubscribeProperties, UserProperties, WillProperties,
};

use ProtocolVersion::{V5, V311};

/// The largest packet either codec is asked to read in these tests.
const MAX_SIZE: usize = 1 << 20;

const CASES: u32 = 256;

// ------------------------------------------------------------------------------------------------
// The view: what both codecs can express.

type Pairs = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq)]
enum View {
    Publish(PublishView),
    PubAck(AckView),
    Subscribe(SubscribeView),
    SubAck(CodesView),
    Unsubscribe(UnsubscribeView),
    UnsubAck(CodesView),
    Connect(ConnectView),
    ConnAck(ConnAckView),
    PingReq,
    Disconnect(DisconnectView),
}

#[derive(Debug, Clone, PartialEq, Default)]
struct PublishView {
    dup: bool,
    qos: u8,
    retain: bool,
    topic: String,
    /// 0 at QoS 0.
    pkid: u16,
    payload: Vec<u8>,
    payload_format: Option<u8>,
    expiry: Option<u32>,
    alias: Option<u16>,
    response_topic: Option<String>,
    correlation: Option<Vec<u8>>,
    user: Pairs,
    sub_ids: Vec<u32>,
    content_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct AckView {
    pkid: u16,
    reason: u8,
    reason_string: Option<String>,
    user: Pairs,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct FilterView {
    filter: String,
    qos: u8,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: u8,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct SubscribeView {
    pkid: u16,
    sub_id: Option<u32>,
    user: Pairs,
    filters: Vec<FilterView>,
}

/// SUBACK and UNSUBACK.
#[derive(Debug, Clone, PartialEq, Default)]
struct CodesView {
    pkid: u16,
    codes: Vec<u8>,
    reason_string: Option<String>,
    user: Pairs,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct UnsubscribeView {
    pkid: u16,
    user: Pairs,
    filters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct WillView {
    topic: String,
    payload: Vec<u8>,
    qos: u8,
    retain: bool,
    delay: Option<u32>,
    payload_format: Option<u8>,
    expiry: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation: Option<Vec<u8>>,
    user: Pairs,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct ConnectView {
    v5: bool,
    clean: bool,
    keep_alive: u16,
    client_id: String,
    will: Option<WillView>,
    username: Option<String>,
    password: Option<Vec<u8>>,
    session_expiry: Option<u32>,
    receive_max: Option<u16>,
    max_packet_size: Option<u32>,
    topic_alias_max: Option<u16>,
    request_response_info: Option<u8>,
    request_problem_info: Option<u8>,
    user: Pairs,
    auth_method: Option<String>,
    auth_data: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct ConnAckView {
    session_present: bool,
    code: u8,
    session_expiry: Option<u32>,
    receive_max: Option<u16>,
    max_qos: Option<u8>,
    retain_available: Option<u8>,
    max_packet_size: Option<u32>,
    assigned_client_id: Option<String>,
    topic_alias_max: Option<u16>,
    reason_string: Option<String>,
    user: Pairs,
    wildcard_available: Option<u8>,
    sub_ids_available: Option<u8>,
    shared_available: Option<u8>,
    server_keep_alive: Option<u16>,
    response_info: Option<String>,
    server_reference: Option<String>,
    auth_method: Option<String>,
    auth_data: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct DisconnectView {
    reason: u8,
    session_expiry: Option<u32>,
    reason_string: Option<String>,
    user: Pairs,
    server_reference: Option<String>,
}

impl View {
    /// The end that receives this packet (MQTT 5.0 §2.1.2).
    fn receiver(&self) -> Role {
        match self {
            Self::Publish(p) if !p.sub_ids.is_empty() => Role::Client,
            Self::ConnAck(_) | Self::SubAck(_) | Self::UnsubAck(_) => Role::Client,
            _ => Role::Server,
        }
    }

    /// The view as mqttbytes can hold it: its `Login` reads an empty user name or password as
    /// absent.
    fn folded(mut self) -> Self {
        if let Self::Connect(c) = &mut self {
            c.username = c.username.take().filter(|u| !u.is_empty());
            c.password = c.password.take().filter(|p| !p.is_empty());
        }
        self
    }
}

// ------------------------------------------------------------------------------------------------
// Flaws: values the specification forbids and mqttbytes does not check.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    WildcardInTopic,
    EmptyTopic,
    NulInTopic,
    TopicAliasZero,
    PayloadFormat2,
    SubscriptionIdZero,
    WildcardInResponseTopic,
    PacketIdZero,
    NoFilters,
    InvalidFilter,
    NoLocalShared,
    NulInClientId,
    WildcardInWillTopic,
    PasswordWithoutUsername,
    ReceiveMaximumZero,
    MaximumPacketSizeZero,
    RequestProblemInfo2,
    AuthDataWithoutMethod,
    SessionPresentWithError,
    MaximumQos2,
    RetainAvailable2,
}

impl Flaw {
    /// The error our decoder must give ([`DecodeError::kind`]) and the clause behind it.
    fn expected(self, view: &View, version: ProtocolVersion) -> (&'static str, &'static str) {
        match self {
            Self::WildcardInTopic | Self::WildcardInWillTopic => {
                ("InvalidTopicName", "MQTT-3.3.2-2")
            }
            Self::EmptyTopic if version == V311 => ("InvalidTopicName", "MQTT-4.7.3-1"),
            Self::EmptyTopic => ("EmptyTopicWithoutAlias", "MQTT-5.0 §3.3.2.1"),
            Self::NulInTopic | Self::NulInClientId => ("NullCharacter", "MQTT-1.5.4-2"),
            Self::TopicAliasZero => ("TopicAliasZero", "MQTT-3.3.2-8"),
            Self::PayloadFormat2 => ("InvalidPayloadFormat", "MQTT-5.0 §3.3.2.3.2"),
            Self::SubscriptionIdZero => ("SubscriptionIdZero", "MQTT-5.0 §3.3.2.3.8, §3.8.2.1.2"),
            Self::WildcardInResponseTopic => ("InvalidResponseTopic", "MQTT-3.3.2-14"),
            Self::PacketIdZero => ("ZeroPacketId", "MQTT-2.2.1-3"),
            Self::NoFilters if matches!(view, View::Subscribe(_)) => {
                ("SubscribeWithoutFilters", "MQTT-3.8.3-2")
            }
            Self::NoFilters => ("UnsubscribeWithoutFilters", "MQTT-3.10.3-2"),
            Self::InvalidFilter => ("InvalidTopicFilter", "MQTT-4.7.1-1"),
            Self::NoLocalShared => ("NoLocalOnSharedSubscription", "MQTT-3.8.3-4"),
            Self::PasswordWithoutUsername => ("PasswordWithoutUsername", "MQTT-3.1.2-22 (3.1.1)"),
            Self::ReceiveMaximumZero => ("ReceiveMaximumZero", "MQTT-5.0 §3.1.2.11.3"),
            Self::MaximumPacketSizeZero => ("MaximumPacketSizeZero", "MQTT-5.0 §3.1.2.11.4"),
            Self::RequestProblemInfo2 => ("InvalidBooleanProperty", "MQTT-5.0 §3.1.2.11.7"),
            Self::AuthDataWithoutMethod => ("AuthDataWithoutMethod", "MQTT-5.0 §3.1.2.11.10"),
            Self::SessionPresentWithError if version == V311 => {
                ("SessionPresentWithError", "MQTT-3.2.2-4 (3.1.1)")
            }
            Self::SessionPresentWithError => ("SessionPresentWithError", "MQTT-3.2.2-6"),
            Self::MaximumQos2 => ("InvalidBooleanProperty", "MQTT-5.0 §3.2.2.3.4"),
            Self::RetainAvailable2 => ("InvalidBooleanProperty", "MQTT-5.0 §3.2.2.3.5"),
        }
    }

    /// Puts the flaw into a valid view of that version.
    fn apply(self, view: &mut View, v5: bool) {
        match (self, view) {
            (Self::WildcardInTopic, View::Publish(p)) => {
                let w = if p.topic.len() % 2 == 0 { "/+" } else { "/#" };
                p.topic.push_str(w);
            }
            (Self::EmptyTopic, View::Publish(p)) => {
                p.topic.clear();
                p.alias = None;
            }
            (Self::NulInTopic, View::Publish(p)) => p.topic.push('\0'),
            (Self::TopicAliasZero, View::Publish(p)) => p.alias = Some(0),
            (Self::PayloadFormat2, View::Publish(p)) => p.payload_format = Some(2),
            (Self::SubscriptionIdZero, View::Publish(p)) => p.sub_ids.push(0),
            (Self::WildcardInResponseTopic, View::Publish(p)) => {
                p.response_topic = Some("reply/+".into());
            }
            (Self::PacketIdZero, View::PubAck(a)) => a.pkid = 0,
            (Self::PacketIdZero, View::Subscribe(s)) => s.pkid = 0,
            (Self::PacketIdZero, View::Unsubscribe(u)) => u.pkid = 0,
            (Self::PacketIdZero, View::SubAck(c) | View::UnsubAck(c)) => c.pkid = 0,
            (Self::NoFilters, View::Subscribe(s)) => s.filters.clear(),
            (Self::NoFilters, View::Unsubscribe(u)) => u.filters.clear(),
            (Self::InvalidFilter, View::Subscribe(s)) => s.filters[0].filter = "a/#/b".into(),
            (Self::InvalidFilter, View::Unsubscribe(u)) => u.filters[0] = "a/#/b".into(),
            (Self::NoLocalShared, View::Subscribe(s)) => {
                s.filters[0].filter = "$share/g/a/+".into();
                s.filters[0].no_local = true;
            }
            (Self::SubscriptionIdZero, View::Subscribe(s)) => s.sub_id = Some(0),
            (Self::NulInClientId, View::Connect(c)) => c.client_id.push('\0'),
            (Self::WildcardInWillTopic, View::Connect(c)) => {
                c.will.get_or_insert_with(WillView::default).topic = "will/#".into();
            }
            (Self::PasswordWithoutUsername, View::Connect(c)) => {
                c.username = None;
                c.password = Some(b"secret".to_vec());
            }
            (Self::ReceiveMaximumZero, View::Connect(c)) => c.receive_max = Some(0),
            (Self::MaximumPacketSizeZero, View::Connect(c)) => c.max_packet_size = Some(0),
            (Self::RequestProblemInfo2, View::Connect(c)) => c.request_problem_info = Some(2),
            (Self::AuthDataWithoutMethod, View::Connect(c)) => {
                c.auth_method = None;
                c.auth_data = Some(vec![1, 2, 3]);
            }
            (Self::SessionPresentWithError, View::ConnAck(c)) => {
                c.session_present = true;
                if c.code == 0 {
                    c.code = if v5 { 0x87 } else { 5 };
                }
            }
            (Self::MaximumQos2, View::ConnAck(c)) => c.max_qos = Some(2),
            (Self::RetainAvailable2, View::ConnAck(c)) => c.retain_available = Some(2),
            (flaw, view) => panic!("{flaw:?} does not apply to {view:?}"),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Strategies.

fn text(max: usize) -> BoxedStrategy<String> {
    proptest::string::string_regex(&format!("[a-z0-9 _.é€😀-]{{0,{max}}}"))
        .expect("regex")
        .boxed()
}

fn pairs() -> BoxedStrategy<Pairs> {
    vec((text(6), text(6)), 0..3).boxed()
}

fn bytes(max: usize) -> BoxedStrategy<Vec<u8>> {
    vec(any::<u8>(), 0..max).boxed()
}

/// A topic name: levels without wildcards, possibly empty levels, never empty as a whole.
fn topic() -> BoxedStrategy<String> {
    (
        proptest::string::string_regex("[$]?[a-z0-9 _.é€😀-]{0,6}").expect("regex"),
        vec(text(6), 0..3),
    )
        .prop_map(|(first, rest)| {
            let mut t = first;
            for level in rest {
                t.push('/');
                t.push_str(&level);
            }
            if t.is_empty() { "t".to_owned() } else { t }
        })
        .boxed()
}

/// A topic filter: levels of text or `+`, maybe ending in `#`; in 5.0 maybe shared.
fn filter(v5: bool) -> BoxedStrategy<String> {
    let level = prop_oneof![3 => text(5), 1 => Just("+".to_owned())];
    let share = if v5 {
        proptest::option::weighted(0.2, "[a-z0-9]{1,4}").boxed()
    } else {
        Just(None).boxed()
    };
    (vec(level, 1..4), any::<bool>(), share)
        .prop_map(|(levels, hash, share)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str(if f.is_empty() { "#" } else { "/#" });
            }
            if f.is_empty() {
                f.push('#');
            }
            match share {
                Some(name) => format!("$share/{name}/{f}"),
                None => f,
            }
        })
        .boxed()
}

fn pkid() -> BoxedStrategy<u16> {
    (1..=u16::MAX).boxed()
}

fn qos() -> BoxedStrategy<u8> {
    (0u8..=2).boxed()
}

fn opt<T: std::fmt::Debug + Clone + 'static>(s: BoxedStrategy<T>) -> BoxedStrategy<Option<T>> {
    proptest::option::of(s).boxed()
}

fn publish(v5: bool) -> BoxedStrategy<View> {
    let props = if v5 {
        (
            opt((0u8..=1).boxed()),
            opt(any::<u32>().boxed()),
            opt((1..=u16::MAX).boxed()),
            opt(topic()),
            opt(bytes(16)),
            pairs(),
            vec(1..=268_435_455u32, 0..3),
            opt(text(8)),
            any::<bool>(),
        )
            .boxed()
    } else {
        Just((
            None,
            None,
            None,
            None,
            None,
            Vec::new(),
            Vec::new(),
            None,
            false,
        ))
        .boxed()
    };
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic(),
        pkid(),
        bytes(64),
        props,
    )
        .prop_map(|(dup, qos, retain, topic, pkid, payload, props)| {
            let (
                payload_format,
                expiry,
                alias,
                response_topic,
                correlation,
                user,
                sub_ids,
                content_type,
                alias_only,
            ) = props;
            let at_least_once = qos > 0;
            View::Publish(PublishView {
                dup: dup && at_least_once,
                qos,
                retain,
                // With a Topic Alias, 5.0 lets the topic be empty.
                topic: if alias.is_some() && alias_only {
                    String::new()
                } else {
                    topic
                },
                pkid: if at_least_once { pkid } else { 0 },
                payload,
                payload_format,
                expiry,
                alias,
                response_topic,
                correlation,
                user,
                sub_ids,
                content_type,
            })
        })
        .boxed()
}

const PUBACK_V5: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const SUBACK_V4: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const SUBACK_V5: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_V5: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const CONNACK_V5: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const DISCONNECT_V5: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

/// Reason string and user properties in 5.0; nothing in 3.1.1.
fn ack_props(v5: bool) -> BoxedStrategy<(Option<String>, Pairs)> {
    if v5 {
        (opt(text(8)), pairs()).boxed()
    } else {
        Just((None, Vec::new())).boxed()
    }
}

fn puback(v5: bool) -> BoxedStrategy<View> {
    let reason = if v5 {
        select(PUBACK_V5).boxed()
    } else {
        Just(0).boxed()
    };
    (pkid(), reason, ack_props(v5))
        .prop_map(|(pkid, reason, (reason_string, user))| {
            View::PubAck(AckView {
                pkid,
                reason,
                reason_string,
                user,
            })
        })
        .boxed()
}

fn subscribe(v5: bool) -> BoxedStrategy<View> {
    let options = if v5 {
        (qos(), any::<bool>(), any::<bool>(), 0u8..=2).boxed()
    } else {
        (qos(), Just(false), Just(false), Just(0u8)).boxed()
    };
    let one = (filter(v5), options).prop_map(|(filter, (qos, nl, rap, rh))| FilterView {
        // No Local on a shared subscription is a Protocol Error (MQTT-3.8.3-4).
        no_local: nl && !filter.starts_with("$share/"),
        filter,
        qos,
        retain_as_published: rap,
        retain_handling: rh,
    });
    let props = if v5 {
        (opt((1..=268_435_455u32).boxed()), pairs()).boxed()
    } else {
        Just((None, Vec::new())).boxed()
    };
    (pkid(), props, vec(one, 1..4))
        .prop_map(|(pkid, (sub_id, user), filters)| {
            View::Subscribe(SubscribeView {
                pkid,
                sub_id,
                user,
                filters,
            })
        })
        .boxed()
}

fn suback(v5: bool) -> BoxedStrategy<View> {
    let codes = select(if v5 { SUBACK_V5 } else { SUBACK_V4 });
    (pkid(), vec(codes, 1..4), ack_props(v5))
        .prop_map(|(pkid, codes, (reason_string, user))| {
            View::SubAck(CodesView {
                pkid,
                codes,
                reason_string,
                user,
            })
        })
        .boxed()
}

fn unsubscribe(v5: bool) -> BoxedStrategy<View> {
    (pkid(), ack_props(v5), vec(filter(v5), 1..4))
        .prop_map(|(pkid, (_, user), filters)| {
            View::Unsubscribe(UnsubscribeView {
                pkid,
                user,
                filters,
            })
        })
        .boxed()
}

fn unsuback(v5: bool) -> BoxedStrategy<View> {
    let codes = if v5 {
        vec(select(UNSUBACK_V5), 1..4).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (pkid(), codes, ack_props(v5))
        .prop_map(|(pkid, codes, (reason_string, user))| {
            View::UnsubAck(CodesView {
                pkid,
                codes,
                reason_string,
                user,
            })
        })
        .boxed()
}

fn will(v5: bool) -> BoxedStrategy<WillView> {
    let props = if v5 {
        (
            opt(any::<u32>().boxed()),
            opt((0u8..=1).boxed()),
            opt(any::<u32>().boxed()),
            opt(text(8)),
            opt(topic()),
            opt(bytes(8)),
            pairs(),
        )
            .boxed()
    } else {
        Just((None, None, None, None, None, None, Vec::new())).boxed()
    };
    (topic(), bytes(16), qos(), any::<bool>(), props)
        .prop_map(|(topic, payload, qos, retain, props)| {
            let (delay, payload_format, expiry, content_type, response_topic, correlation, user) =
                props;
            WillView {
                topic,
                payload,
                qos,
                retain,
                delay,
                payload_format,
                expiry,
                content_type,
                response_topic,
                correlation,
                user,
            }
        })
        .boxed()
}

fn connect(v5: bool) -> BoxedStrategy<View> {
    // Passwords are binary data (§3.1.3.5); mostly text here, sometimes not UTF-8.
    let password = prop_oneof![
        3 => text(8).prop_map(String::into_bytes),
        1 => bytes(8),
    ];
    let props = if v5 {
        (
            opt(any::<u32>().boxed()),
            opt((1..=u16::MAX).boxed()),
            opt((1..=u32::MAX).boxed()),
            opt(any::<u16>().boxed()),
            opt((0u8..=1).boxed()),
            opt((0u8..=1).boxed()),
            pairs(),
            opt(text(8)),
            opt(bytes(8)),
        )
            .boxed()
    } else {
        Just((None, None, None, None, None, None, Vec::new(), None, None)).boxed()
    };
    (
        any::<bool>(),
        any::<u16>(),
        proptest::string::string_regex("[a-zA-Z0-9é-]{0,23}").expect("regex"),
        opt(will(v5)),
        opt(text(8)),
        proptest::option::of(password),
        props,
    )
        .prop_map(
            move |(clean, keep_alive, client_id, will, username, password, props)| {
                let (
                    session_expiry,
                    receive_max,
                    max_packet_size,
                    topic_alias_max,
                    rri,
                    rpi,
                    user,
                    auth_method,
                    auth_data,
                ) = props;
                // 3.1.1 has no empty client id without Clean Session (MQTT-3.1.3-7).
                let clean = clean || (!v5 && client_id.is_empty());
                // 3.1.1 has no password without a user name (MQTT-3.1.2-22).
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                View::Connect(ConnectView {
                    v5,
                    clean,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    session_expiry,
                    receive_max,
                    max_packet_size,
                    topic_alias_max,
                    request_response_info: rri,
                    request_problem_info: rpi,
                    user,
                    // Authentication Data needs an Authentication Method (§3.1.2.11.10).
                    auth_data: if auth_method.is_some() {
                        auth_data
                    } else {
                        None
                    },
                    auth_method,
                })
            },
        )
        .boxed()
}

fn connack(v5: bool) -> BoxedStrategy<View> {
    let code = if v5 {
        select(CONNACK_V5).boxed()
    } else {
        (0u8..=5).boxed()
    };
    let bools = (
        opt((0u8..=1).boxed()),
        opt((0u8..=1).boxed()),
        opt((0u8..=1).boxed()),
        opt((0u8..=1).boxed()),
        opt((0u8..=1).boxed()),
    );
    let props = if v5 {
        (
            opt(any::<u32>().boxed()),
            opt((1..=u16::MAX).boxed()),
            opt((1..=u32::MAX).boxed()),
            opt(text(8)),
            opt(any::<u16>().boxed()),
            opt(text(8)),
            pairs(),
            bools,
            opt(any::<u16>().boxed()),
            (opt(text(8)), opt(text(8)), opt(text(8)), opt(bytes(8))),
        )
            .boxed()
    } else {
        Just((
            None,
            None,
            None,
            None,
            None,
            None,
            Vec::new(),
            (None, None, None, None, None),
            None,
            (None, None, None, None),
        ))
        .boxed()
    };
    (any::<bool>(), code, props)
        .prop_map(|(session_present, code, props)| {
            let (
                session_expiry,
                receive_max,
                max_packet_size,
                assigned_client_id,
                topic_alias_max,
                reason_string,
                user,
                (
                    max_qos,
                    retain_available,
                    wildcard_available,
                    sub_ids_available,
                    shared_available,
                ),
                server_keep_alive,
                (response_info, server_reference, auth_method, auth_data),
            ) = props;
            View::ConnAck(ConnAckView {
                // Session Present only with success (MQTT-3.2.2-6; 3.1.1: MQTT-3.2.2-4).
                session_present: session_present && code == 0,
                code,
                session_expiry,
                receive_max,
                max_qos,
                retain_available,
                max_packet_size,
                assigned_client_id,
                topic_alias_max,
                reason_string,
                user,
                wildcard_available,
                sub_ids_available,
                shared_available,
                server_keep_alive,
                response_info,
                server_reference,
                auth_data: if auth_method.is_some() {
                    auth_data
                } else {
                    None
                },
                auth_method,
            })
        })
        .boxed()
}

fn disconnect(v5: bool) -> BoxedStrategy<View> {
    if !v5 {
        return Just(View::Disconnect(DisconnectView::default())).boxed();
    }
    (
        select(DISCONNECT_V5),
        opt(any::<u32>().boxed()),
        opt(text(8)),
        pairs(),
        opt(text(8)),
    )
        .prop_map(
            |(reason, session_expiry, reason_string, user, server_reference)| {
                View::Disconnect(DisconnectView {
                    reason,
                    session_expiry,
                    reason_string,
                    user,
                    server_reference,
                })
            },
        )
        .boxed()
}

/// The flaws that apply to a view in a version.
fn flaws_for(view: &View, v5: bool) -> Vec<Flaw> {
    use Flaw::*;
    match view {
        View::Publish(_) if v5 => vec![
            WildcardInTopic,
            EmptyTopic,
            NulInTopic,
            TopicAliasZero,
            PayloadFormat2,
            SubscriptionIdZero,
            WildcardInResponseTopic,
        ],
        View::Publish(_) => vec![WildcardInTopic, EmptyTopic, NulInTopic],
        View::PubAck(_) | View::SubAck(_) | View::UnsubAck(_) => vec![PacketIdZero],
        View::Subscribe(_) if v5 => vec![
            PacketIdZero,
            NoFilters,
            InvalidFilter,
            NoLocalShared,
            SubscriptionIdZero,
        ],
        View::Subscribe(_) | View::Unsubscribe(_) => vec![PacketIdZero, NoFilters, InvalidFilter],
        View::Connect(_) if v5 => vec![
            NulInClientId,
            WildcardInWillTopic,
            ReceiveMaximumZero,
            MaximumPacketSizeZero,
            RequestProblemInfo2,
            AuthDataWithoutMethod,
        ],
        View::Connect(_) => vec![NulInClientId, WildcardInWillTopic, PasswordWithoutUsername],
        View::ConnAck(_) if v5 => vec![SessionPresentWithError, MaximumQos2, RetainAvailable2],
        View::ConnAck(_) => vec![SessionPresentWithError],
        View::PingReq | View::Disconnect(_) => Vec::new(),
    }
}

/// Any packet of the version, valid.
fn any_view(v5: bool) -> BoxedStrategy<View> {
    prop_oneof![
        4 => publish(v5),
        1 => puback(v5),
        1 => subscribe(v5),
        1 => suback(v5),
        1 => unsubscribe(v5),
        1 => unsuback(v5),
        1 => connect(v5),
        1 => connack(v5),
        1 => Just(View::PingReq),
        1 => disconnect(v5),
    ]
    .boxed()
}

/// Any packet of the version, with a flaw one time in four where one applies.
fn flawed_view(v5: bool) -> BoxedStrategy<(View, Option<Flaw>)> {
    (any_view(v5), any::<u8>(), any::<usize>())
        .prop_map(move |(mut view, roll, pick)| {
            let flaws = flaws_for(&view, v5);
            if roll % 4 != 0 || flaws.is_empty() {
                return (view, None);
            }
            let flaw = flaws[pick % flaws.len()];
            flaw.apply(&mut view, v5);
            (view, Some(flaw))
        })
        .boxed()
}

// ------------------------------------------------------------------------------------------------
// Our side.

fn version_of(v5: bool) -> ProtocolVersion {
    if v5 { V5 } else { V311 }
}

fn user_props(pairs: &Pairs) -> UserProperties {
    UserProperties::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .expect("generated user properties are valid")
}

fn pairs_of<B: AsRef<[u8]>>(u: &UserProperties<B>) -> Pairs {
    u.iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn qos_of(q: u8) -> QoS {
    QoS::from_u8(q).expect("generated QoS is 0 to 2")
}

fn nz16(v: u16) -> NonZeroU16 {
    NonZeroU16::new(v).expect("generated value is not 0")
}

fn bool_of(v: u8) -> bool {
    assert!(v <= 1, "a 0/1 property holds {v}");
    v == 1
}

fn format_of(v: u8) -> PayloadFormat {
    if bool_of(v) {
        PayloadFormat::Utf8
    } else {
        PayloadFormat::Unspecified
    }
}

fn ack_properties(reason_string: &Option<String>, user: &Pairs) -> AckProperties {
    AckProperties {
        reason_string: reason_string.clone().map(Into::into),
        user_properties: user_props(user),
    }
}

/// Our packet for a valid view.
fn build_ours(view: &View) -> Packet {
    match view {
        View::Publish(p) => Packet::Publish(Publish {
            dup: p.dup,
            qos: qos_of(p.qos),
            retain: p.retain,
            topic: p.topic.clone().into(),
            packet_id: NonZeroU16::new(p.pkid),
            properties: PublishPropertyValues {
                payload_format_indicator: p.payload_format.map(format_of),
                message_expiry_interval_secs: p.expiry,
                topic_alias: p.alias.map(nz16),
                response_topic: p.response_topic.clone().map(Into::into),
                correlation_data: p.correlation.clone().map(Bytes::from),
                user_properties: user_props(&p.user),
                subscription_identifiers: SubscriptionIds::from_ids(p.sub_ids.iter().copied())
                    .expect("generated identifiers are valid"),
                content_type: p.content_type.clone().map(Into::into),
            }
            .build()
            .expect("a valid view's properties build"),
            payload: Bytes::from(p.payload.clone()),
        }),
        View::PubAck(a) => Packet::PubAck(PubAck {
            packet_id: nz16(a.pkid),
            reason_code: ReasonCode(a.reason),
            properties: ack_properties(&a.reason_string, &a.user),
        }),
        View::Subscribe(s) => Packet::Subscribe(Subscribe {
            packet_id: nz16(s.pkid),
            properties: SubscribeProperties {
                subscription_identifier: s.sub_id.and_then(NonZeroU32::new),
                user_properties: user_props(&s.user),
            },
            filters: s
                .filters
                .iter()
                .map(|f| Subscription {
                    filter: f.filter.clone().into(),
                    options: SubscriptionOptions {
                        qos: qos_of(f.qos),
                        no_local: f.no_local,
                        retain_as_published: f.retain_as_published,
                        retain_handling: match f.retain_handling {
                            0 => RetainHandling::SendAtSubscribe,
                            1 => RetainHandling::SendAtSubscribeIfNew,
                            _ => RetainHandling::DoNotSend,
                        },
                    },
                })
                .collect(),
        }),
        View::SubAck(c) => Packet::SubAck(SubAck {
            packet_id: nz16(c.pkid),
            properties: ack_properties(&c.reason_string, &c.user),
            reason_codes: c.codes.iter().copied().map(ReasonCode).collect(),
        }),
        View::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            packet_id: nz16(u.pkid),
            properties: UnsubscribeProperties {
                user_properties: user_props(&u.user),
            },
            filters: u.filters.iter().cloned().map(Into::into).collect(),
        }),
        View::UnsubAck(c) => Packet::UnsubAck(UnsubAck {
            packet_id: nz16(c.pkid),
            properties: ack_properties(&c.reason_string, &c.user),
            reason_codes: c.codes.iter().copied().map(ReasonCode).collect(),
        }),
        View::Connect(c) => Packet::Connect(Box::new(Connect {
            protocol: version_of(c.v5),
            clean_start: c.clean,
            keep_alive_secs: c.keep_alive,
            properties: ConnectProperties {
                session_expiry_interval_secs: c.session_expiry,
                receive_maximum: c.receive_max.map(nz16),
                maximum_packet_size: c.max_packet_size.and_then(NonZeroU32::new),
                topic_alias_maximum: c.topic_alias_max,
                request_response_information: c.request_response_info.map(bool_of),
                request_problem_information: c.request_problem_info.map(bool_of),
                user_properties: user_props(&c.user),
                authentication_method: c.auth_method.clone().map(Into::into),
                authentication_data: c.auth_data.clone().map(Bytes::from),
            },
            client_id: c.client_id.clone().into(),
            will: c.will.as_ref().map(|w| LastWill {
                qos: qos_of(w.qos),
                retain: w.retain,
                topic: w.topic.clone().into(),
                payload: Bytes::from(w.payload.clone()),
                properties: WillProperties {
                    will_delay_interval_secs: w.delay,
                    payload_format_indicator: w.payload_format.map(format_of),
                    message_expiry_interval_secs: w.expiry,
                    content_type: w.content_type.clone().map(Into::into),
                    response_topic: w.response_topic.clone().map(Into::into),
                    correlation_data: w.correlation.clone().map(Bytes::from),
                    user_properties: user_props(&w.user),
                },
            }),
            username: c.username.clone().map(Into::into),
            password: c.password.clone().map(Bytes::from),
        })),
        View::ConnAck(c) => Packet::ConnAck(ConnAck {
            session_present: c.session_present,
            reason_code: ReasonCode(c.code),
            properties: Box::new(ConnAckProperties {
                session_expiry_interval_secs: c.session_expiry,
                receive_maximum: c.receive_max.map(nz16),
                maximum_qos: c.max_qos.map(qos_of),
                retain_available: c.retain_available.map(bool_of),
                maximum_packet_size: c.max_packet_size.and_then(NonZeroU32::new),
                assigned_client_identifier: c.assigned_client_id.clone().map(Into::into),
                topic_alias_maximum: c.topic_alias_max,
                reason_string: c.reason_string.clone().map(Into::into),
                user_properties: user_props(&c.user),
                wildcard_subscription_available: c.wildcard_available.map(bool_of),
                subscription_identifiers_available: c.sub_ids_available.map(bool_of),
                shared_subscription_available: c.shared_available.map(bool_of),
                server_keep_alive_secs: c.server_keep_alive,
                response_information: c.response_info.clone().map(Into::into),
                server_reference: c.server_reference.clone().map(Into::into),
                authentication_method: c.auth_method.clone().map(Into::into),
                authentication_data: c.auth_data.clone().map(Bytes::from),
            }),
        }),
        View::PingReq => Packet::PingReq,
        View::Disconnect(d) => Packet::Disconnect(Disconnect {
            reason_code: ReasonCode(d.reason),
            properties: DisconnectProperties {
                session_expiry_interval_secs: d.session_expiry,
                reason_string: d.reason_string.clone().map(Into::into),
                user_properties: user_props(&d.user),
                server_reference: d.server_reference.clone().map(Into::into),
            },
        }),
    }
}

fn string_of(s: &Option<sluice_codec::ByteStr>) -> Option<String> {
    s.as_ref().map(|s| s.as_str().to_owned())
}

fn vec_of(b: &Option<Bytes>) -> Option<Vec<u8>> {
    b.as_ref().map(|b| b.to_vec())
}

/// The view of one of our packets.
fn view_of_ours(packet: &Packet) -> View {
    match packet {
        Packet::Publish(p) => View::Publish(PublishView {
            dup: p.dup,
            qos: p.qos as u8,
            retain: p.retain,
            topic: p.topic.as_str().to_owned(),
            pkid: p.packet_id.map_or(0, NonZeroU16::get),
            payload: p.payload.to_vec(),
            payload_format: p.properties.payload_format_indicator().map(|f| f as u8),
            expiry: p.properties.message_expiry_interval_secs(),
            alias: p.properties.topic_alias().map(NonZeroU16::get),
            response_topic: p.properties.response_topic().map(str::to_owned),
            correlation: p.properties.correlation_data().map(<[u8]>::to_vec),
            user: pairs_of(&p.properties.user_properties()),
            sub_ids: p.properties.subscription_identifiers().iter().collect(),
            content_type: p.properties.content_type().map(str::to_owned),
        }),
        Packet::PubAck(a) => View::PubAck(AckView {
            pkid: a.packet_id.get(),
            reason: a.reason_code.0,
            reason_string: string_of(&a.properties.reason_string),
            user: pairs_of(&a.properties.user_properties),
        }),
        Packet::Subscribe(s) => View::Subscribe(SubscribeView {
            pkid: s.packet_id.get(),
            sub_id: s.properties.subscription_identifier.map(NonZeroU32::get),
            user: pairs_of(&s.properties.user_properties),
            filters: s
                .filters
                .iter()
                .map(|f| FilterView {
                    filter: f.filter.as_str().to_owned(),
                    qos: f.options.qos as u8,
                    no_local: f.options.no_local,
                    retain_as_published: f.options.retain_as_published,
                    retain_handling: f.options.retain_handling as u8,
                })
                .collect(),
        }),
        Packet::SubAck(c) => View::SubAck(CodesView {
            pkid: c.packet_id.get(),
            codes: c.reason_codes.iter().map(|c| c.0).collect(),
            reason_string: string_of(&c.properties.reason_string),
            user: pairs_of(&c.properties.user_properties),
        }),
        Packet::Unsubscribe(u) => View::Unsubscribe(UnsubscribeView {
            pkid: u.packet_id.get(),
            user: pairs_of(&u.properties.user_properties),
            filters: u.filters.iter().map(|f| f.as_str().to_owned()).collect(),
        }),
        Packet::UnsubAck(c) => View::UnsubAck(CodesView {
            pkid: c.packet_id.get(),
            codes: c.reason_codes.iter().map(|c| c.0).collect(),
            reason_string: string_of(&c.properties.reason_string),
            user: pairs_of(&c.properties.user_properties),
        }),
        Packet::Connect(c) => {
            let p = &c.properties;
            View::Connect(ConnectView {
                v5: c.protocol == V5,
                clean: c.clean_start,
                keep_alive: c.keep_alive_secs,
                client_id: c.client_id.as_str().to_owned(),
                will: c.will.as_ref().map(|w| WillView {
                    topic: w.topic.as_str().to_owned(),
                    payload: w.payload.to_vec(),
                    qos: w.qos as u8,
                    retain: w.retain,
                    delay: w.properties.will_delay_interval_secs,
                    payload_format: w.properties.payload_format_indicator.map(|f| f as u8),
                    expiry: w.properties.message_expiry_interval_secs,
                    content_type: string_of(&w.properties.content_type),
                    response_topic: string_of(&w.properties.response_topic),
                    correlation: vec_of(&w.properties.correlation_data),
                    user: pairs_of(&w.properties.user_properties),
                }),
                username: string_of(&c.username),
                password: vec_of(&c.password),
                session_expiry: p.session_expiry_interval_secs,
                receive_max: p.receive_maximum.map(NonZeroU16::get),
                max_packet_size: p.maximum_packet_size.map(NonZeroU32::get),
                topic_alias_max: p.topic_alias_maximum,
                request_response_info: p.request_response_information.map(u8::from),
                request_problem_info: p.request_problem_information.map(u8::from),
                user: pairs_of(&p.user_properties),
                auth_method: string_of(&p.authentication_method),
                auth_data: vec_of(&p.authentication_data),
            })
        }
        Packet::ConnAck(c) => {
            let p = &c.properties;
            View::ConnAck(ConnAckView {
                session_present: c.session_present,
                code: c.reason_code.0,
                session_expiry: p.session_expiry_interval_secs,
                receive_max: p.receive_maximum.map(NonZeroU16::get),
                max_qos: p.maximum_qos.map(|q| q as u8),
                retain_available: p.retain_available.map(u8::from),
                max_packet_size: p.maximum_packet_size.map(NonZeroU32::get),
                assigned_client_id: string_of(&p.assigned_client_identifier),
                topic_alias_max: p.topic_alias_maximum,
                reason_string: string_of(&p.reason_string),
                user: pairs_of(&p.user_properties),
                wildcard_available: p.wildcard_subscription_available.map(u8::from),
                sub_ids_available: p.subscription_identifiers_available.map(u8::from),
                shared_available: p.shared_subscription_available.map(u8::from),
                server_keep_alive: p.server_keep_alive_secs,
                response_info: string_of(&p.response_information),
                server_reference: string_of(&p.server_reference),
                auth_method: string_of(&p.authentication_method),
                auth_data: vec_of(&p.authentication_data),
            })
        }
        Packet::PingReq => View::PingReq,
        Packet::Disconnect(d) => View::Disconnect(DisconnectView {
            reason: d.reason_code.0,
            session_expiry: d.properties.session_expiry_interval_secs,
            reason_string: string_of(&d.properties.reason_string),
            user: pairs_of(&d.properties.user_properties),
            server_reference: string_of(&d.properties.server_reference),
        }),
        other => panic!("no view for {other:?}"),
    }
}

/// Encodes with our codec.
fn encode_ours(view: &View, version: ProtocolVersion) -> Result<BytesMut, String> {
    let packet = build_ours(view);
    let mut buf = BytesMut::new();
    Codec::new(Role::Client, version)
        .encode(&packet, &mut buf)
        .map_err(|e| format!("our encoder refuses {packet:?}: {e}"))?;
    Ok(buf)
}

/// Decodes one whole packet with our codec, as the end that receives it.
fn decode_ours(bytes: &[u8], role: Role, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut codec = if bytes.first().is_some_and(|b| b >> 4 == 1) {
        Codec::server_awaiting_connect()
    } else {
        Codec::new(role, version)
    };
    let mut buf = BytesMut::from(bytes);
    let packet = codec.decode(&mut buf)?;
    assert!(buf.is_empty(), "{} bytes left after one packet", buf.len());
    Ok(packet.expect("a whole frame"))
}

// ------------------------------------------------------------------------------------------------
// mqttbytes' side.

fn their_qos(q: u8) -> mqttbytes::QoS {
    mqttbytes::qos(q).expect("QoS 0 to 2")
}

fn opt_str(s: &Option<String>) -> Option<String> {
    s.clone()
}

fn opt_bytes(b: &Option<Vec<u8>>) -> Option<Bytes> {
    b.clone().map(Bytes::from)
}

/// mqttbytes keeps a `Login` of two strings: a password that is not UTF-8 has no place in it.
fn login(username: &Option<String>, password: &Option<Vec<u8>>) -> Option<(String, String)> {
    if username.is_none() && password.is_none() {
        return None;
    }
    let password = match password {
        Some(p) => String::from_utf8(p.clone()).ok()?,
        None => String::new(),
    };
    Some((username.clone().unwrap_or_default(), password))
}

/// The mqttbytes 3.1.1 packet for a view; `None` where mqttbytes cannot hold it.
fn build_v4(view: &View) -> Option<v4::Packet> {
    Some(match view {
        View::Publish(p) => v4::Packet::Publish(v4::Publish {
            dup: p.dup,
            qos: their_qos(p.qos),
            retain: p.retain,
            topic: p.topic.clone(),
            pkid: p.pkid,
            payload: Bytes::from(p.payload.clone()),
        }),
        View::PubAck(a) => v4::Packet::PubAck(v4::PubAck { pkid: a.pkid }),
        View::Subscribe(s) => v4::Packet::Subscribe(v4::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .iter()
                .map(|f| v4::SubscribeFilter::new(f.filter.clone(), their_qos(f.qos)))
                .collect(),
        }),
        View::SubAck(c) => v4::Packet::SubAck(v4::SubAck {
            pkid: c.pkid,
            return_codes: c
                .codes
                .iter()
                .map(|&c| v4::SubscribeReasonCode::try_from(c).expect("a 3.1.1 SUBACK code"))
                .collect(),
        }),
        View::Unsubscribe(u) => v4::Packet::Unsubscribe(v4::Unsubscribe {
            pkid: u.pkid,
            topics: u.filters.clone(),
        }),
        View::UnsubAck(c) => v4::Packet::UnsubAck(v4::UnsubAck { pkid: c.pkid }),
        View::Connect(c) => {
            let login = match (&c.username, &c.password) {
                (None, None) => None,
                (u, p) => {
                    let (username, password) = login(u, p)?;
                    Some(v4::Login { username, password })
                }
            };
            v4::Packet::Connect(v4::Connect {
                protocol: mqttbytes::Protocol::V4,
                keep_alive: c.keep_alive,
                client_id: c.client_id.clone(),
                clean_session: c.clean,
                last_will: c.will.as_ref().map(|w| v4::LastWill {
                    topic: w.topic.clone(),
                    message: Bytes::from(w.payload.clone()),
                    qos: their_qos(w.qos),
                    retain: w.retain,
                }),
                login,
            })
        }
        View::ConnAck(c) => v4::Packet::ConnAck(v4::ConnAck {
            session_present: c.session_present,
            code: match c.code {
                0 => v4::ConnectReturnCode::Success,
                1 => v4::ConnectReturnCode::RefusedProtocolVersion,
                2 => v4::ConnectReturnCode::BadClientId,
                3 => v4::ConnectReturnCode::ServiceUnavailable,
                4 => v4::ConnectReturnCode::BadUserNamePassword,
                5 => v4::ConnectReturnCode::NotAuthorized,
                other => panic!("3.1.1 CONNACK code {other}"),
            },
        }),
        View::PingReq => v4::Packet::PingReq,
        View::Disconnect(_) => v4::Packet::Disconnect,
    })
}

fn write_v4(packet: &v4::Packet, buf: &mut BytesMut) -> Result<usize, mqttbytes::Error> {
    match packet {
        v4::Packet::Publish(p) => p.write(buf),
        v4::Packet::PubAck(p) => p.write(buf),
        v4::Packet::Subscribe(p) => p.write(buf),
        v4::Packet::SubAck(p) => p.write(buf),
        v4::Packet::Unsubscribe(p) => p.write(buf),
        v4::Packet::UnsubAck(p) => p.write(buf),
        v4::Packet::Connect(p) => p.write(buf),
        v4::Packet::ConnAck(p) => p.write(buf),
        v4::Packet::PingReq => v4::PingReq.write(buf),
        v4::Packet::Disconnect => v4::Disconnect.write(buf),
        other => panic!("not generated: {other:?}"),
    }
}

/// The view of an mqttbytes 3.1.1 packet.
fn view_of_v4(packet: &v4::Packet) -> View {
    match packet {
        v4::Packet::Publish(p) => View::Publish(PublishView {
            dup: p.dup,
            qos: p.qos as u8,
            retain: p.retain,
            topic: p.topic.clone(),
            pkid: p.pkid,
            payload: p.payload.to_vec(),
            ..Default::default()
        }),
        v4::Packet::PubAck(a) => View::PubAck(AckView {
            pkid: a.pkid,
            ..Default::default()
        }),
        v4::Packet::Subscribe(s) => View::Subscribe(SubscribeView {
            pkid: s.pkid,
            filters: s
                .filters
                .iter()
                .map(|f| FilterView {
                    filter: f.path.clone(),
                    qos: f.qos as u8,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        v4::Packet::SubAck(c) => View::SubAck(CodesView {
            pkid: c.pkid,
            codes: c
                .return_codes
                .iter()
                .map(|c| match c {
                    v4::SubscribeReasonCode::Success(q) => *q as u8,
                    v4::SubscribeReasonCode::Failure => 0x80,
                })
                .collect(),
            ..Default::default()
        }),
        v4::Packet::Unsubscribe(u) => View::Unsubscribe(UnsubscribeView {
            pkid: u.pkid,
            filters: u.topics.clone(),
            ..Default::default()
        }),
        v4::Packet::UnsubAck(c) => View::UnsubAck(CodesView {
            pkid: c.pkid,
            ..Default::default()
        }),
        v4::Packet::Connect(c) => View::Connect(ConnectView {
            v5: c.protocol == mqttbytes::Protocol::V5,
            clean: c.clean_session,
            keep_alive: c.keep_alive,
            client_id: c.client_id.clone(),
            will: c.last_will.as_ref().map(|w| WillView {
                topic: w.topic.clone(),
                payload: w.message.to_vec(),
                qos: w.qos as u8,
                retain: w.retain,
                ..Default::default()
            }),
            username: c.login.as_ref().map(|l| l.username.clone()),
            password: c.login.as_ref().map(|l| l.password.clone().into_bytes()),
            ..Default::default()
        }),
        v4::Packet::ConnAck(c) => View::ConnAck(ConnAckView {
            session_present: c.session_present,
            code: c.code as u8,
            ..Default::default()
        }),
        v4::Packet::PingReq => View::PingReq,
        v4::Packet::Disconnect => View::Disconnect(DisconnectView::default()),
        other => panic!("not generated: {other:?}"),
    }
}

fn puback_reason_v5(code: u8) -> v5::PubAckReason {
    use v5::PubAckReason as R;
    match code {
        0x00 => R::Success,
        0x10 => R::NoMatchingSubscribers,
        0x80 => R::UnspecifiedError,
        0x83 => R::ImplementationSpecificError,
        0x87 => R::NotAuthorized,
        0x90 => R::TopicNameInvalid,
        0x91 => R::PacketIdentifierInUse,
        0x97 => R::QuotaExceeded,
        0x99 => R::PayloadFormatInvalid,
        other => panic!("PUBACK reason {other:#04x}"),
    }
}

fn unsuback_reason_v5(code: u8) -> v5::UnsubAckReason {
    use v5::UnsubAckReason as R;
    match code {
        0x00 => R::Success,
        0x11 => R::NoSubscriptionExisted,
        0x80 => R::UnspecifiedError,
        0x83 => R::ImplementationSpecificError,
        0x87 => R::NotAuthorized,
        0x8F => R::TopicFilterInvalid,
        0x91 => R::PacketIdentifierInUse,
        other => panic!("UNSUBACK reason {other:#04x}"),
    }
}

fn connack_code_v5(code: u8) -> v5::ConnectReturnCode {
    use v5::ConnectReturnCode as R;
    match code {
        0 => R::Success,
        128 => R::UnspecifiedError,
        129 => R::MalformedPacket,
        130 => R::ProtocolError,
        131 => R::ImplementationSpecificError,
        132 => R::UnsupportedProtocolVersion,
        133 => R::ClientIdentifierNotValid,
        134 => R::BadUserNamePassword,
        135 => R::NotAuthorized,
        136 => R::ServerUnavailable,
        137 => R::ServerBusy,
        138 => R::Banned,
        140 => R::BadAuthenticationMethod,
        144 => R::TopicNameInvalid,
        149 => R::PacketTooLarge,
        151 => R::QuotaExceeded,
        153 => R::PayloadFormatInvalid,
        154 => R::RetainNotSupported,
        155 => R::QoSNotSupported,
        156 => R::UseAnotherServer,
        157 => R::ServerMoved,
        159 => R::ConnectionRateExceeded,
        other => panic!("CONNACK code {other:#04x}"),
    }
}

/// `Some` properties when any is set: mqttbytes writes `None` as an empty property block, except
/// in CONNACK (see [`mqttbytes_writes_invalid`]).
fn some_if<T>(any: bool, props: T) -> Option<T> {
    any.then_some(props)
}

/// The mqttbytes 5.0 packet for a view; `None` where mqttbytes cannot hold it.
fn build_v5(view: &View) -> Option<v5::Packet> {
    Some(match view {
        View::Publish(p) => {
            let props = v5::PublishProperties {
                payload_format_indicator: p.payload_format,
                message_expiry_interval: p.expiry,
                topic_alias: p.alias,
                response_topic: opt_str(&p.response_topic),
                correlation_data: opt_bytes(&p.correlation),
                user_properties: p.user.clone(),
                subscription_identifiers: p.sub_ids.iter().map(|&i| i as usize).collect(),
                content_type: opt_str(&p.content_type),
            };
            let any = props != v5_publish_props_empty();
            v5::Packet::Publish(v5::Publish {
                dup: p.dup,
                qos: their_qos(p.qos),
                retain: p.retain,
                topic: p.topic.clone(),
                pkid: p.pkid,
                properties: some_if(any, props),
                payload: Bytes::from(p.payload.clone()),
            })
        }
        View::PubAck(a) => v5::Packet::PubAck(v5::PubAck {
            pkid: a.pkid,
            reason: puback_reason_v5(a.reason),
            properties: some_if(
                a.reason_string.is_some() || !a.user.is_empty(),
                v5::PubAckProperties {
                    reason_string: opt_str(&a.reason_string),
                    user_properties: a.user.clone(),
                },
            ),
        }),
        View::Subscribe(s) => v5::Packet::Subscribe(v5::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .iter()
                .map(|f| v5::SubscribeFilter {
                    path: f.filter.clone(),
                    qos: their_qos(f.qos),
                    nolocal: f.no_local,
                    preserve_retain: f.retain_as_published,
                    retain_forward_rule: match f.retain_handling {
                        0 => v5::RetainForwardRule::OnEverySubscribe,
                        1 => v5::RetainForwardRule::OnNewSubscribe,
                        _ => v5::RetainForwardRule::Never,
                    },
                })
                .collect(),
            properties: some_if(
                s.sub_id.is_some() || !s.user.is_empty(),
                v5::SubscribeProperties {
                    id: s.sub_id.map(|i| i as usize),
                    user_properties: s.user.clone(),
                },
            ),
        }),
        View::SubAck(c) => v5::Packet::SubAck(v5::SubAck {
            pkid: c.pkid,
            return_codes: c
                .codes
                .iter()
                .map(|&c| v5::SubscribeReasonCode::try_from(c).expect("a SUBACK code"))
                .collect(),
            properties: some_if(
                c.reason_string.is_some() || !c.user.is_empty(),
                v5::SubAckProperties {
                    reason_string: opt_str(&c.reason_string),
                    user_properties: c.user.clone(),
                },
            ),
        }),
        View::Unsubscribe(u) => v5::Packet::Unsubscribe(v5::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters.clone(),
            properties: some_if(
                !u.user.is_empty(),
                v5::UnsubscribeProperties {
                    user_properties: u.user.clone(),
                },
            ),
        }),
        View::UnsubAck(c) => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid: c.pkid,
            reasons: c.codes.iter().map(|&c| unsuback_reason_v5(c)).collect(),
            properties: some_if(
                c.reason_string.is_some() || !c.user.is_empty(),
                v5::UnsubAckProperties {
                    reason_string: opt_str(&c.reason_string),
                    user_properties: c.user.clone(),
                },
            ),
        }),
        View::Connect(c) => {
            let login = match (&c.username, &c.password) {
                (None, None) => None,
                (u, p) => {
                    let (username, password) = login(u, p)?;
                    Some(v5::Login { username, password })
                }
            };
            let props = v5::ConnectProperties {
                session_expiry_interval: c.session_expiry,
                receive_maximum: c.receive_max,
                max_packet_size: c.max_packet_size,
                topic_alias_max: c.topic_alias_max,
                request_response_info: c.request_response_info,
                request_problem_info: c.request_problem_info,
                user_properties: c.user.clone(),
                authentication_method: opt_str(&c.auth_method),
                authentication_data: opt_bytes(&c.auth_data),
            };
            let any = props.session_expiry_interval.is_some()
                || props.receive_maximum.is_some()
                || props.max_packet_size.is_some()
                || props.topic_alias_max.is_some()
                || props.request_response_info.is_some()
                || props.request_problem_info.is_some()
                || !props.user_properties.is_empty()
                || props.authentication_method.is_some()
                || props.authentication_data.is_some();
            v5::Packet::Connect(v5::Connect {
                protocol: mqttbytes::Protocol::V5,
                keep_alive: c.keep_alive,
                client_id: c.client_id.clone(),
                clean_session: c.clean,
                last_will: c.will.as_ref().map(|w| {
                    let any = w.delay.is_some()
                        || w.payload_format.is_some()
                        || w.expiry.is_some()
                        || w.content_type.is_some()
                        || w.response_topic.is_some()
                        || w.correlation.is_some()
                        || !w.user.is_empty();
                    v5::LastWill {
                        topic: w.topic.clone(),
                        message: Bytes::from(w.payload.clone()),
                        qos: their_qos(w.qos),
                        retain: w.retain,
                        properties: some_if(
                            any,
                            v5::WillProperties {
                                delay_interval: w.delay,
                                payload_format_indicator: w.payload_format,
                                message_expiry_interval: w.expiry,
                                content_type: opt_str(&w.content_type),
                                response_topic: opt_str(&w.response_topic),
                                correlation_data: opt_bytes(&w.correlation),
                                user_properties: w.user.clone(),
                            },
                        ),
                    }
                }),
                login,
                properties: some_if(any, props),
            })
        }
        View::ConnAck(c) => {
            let props = v5::ConnAckProperties {
                session_expiry_interval: c.session_expiry,
                receive_max: c.receive_max,
                max_qos: c.max_qos,
                retain_available: c.retain_available,
                max_packet_size: c.max_packet_size,
                assigned_client_identifier: opt_str(&c.assigned_client_id),
                topic_alias_max: c.topic_alias_max,
                reason_string: opt_str(&c.reason_string),
                user_properties: c.user.clone(),
                wildcard_subscription_available: c.wildcard_available,
                subscription_identifiers_available: c.sub_ids_available,
                shared_subscription_available: c.shared_available,
                server_keep_alive: c.server_keep_alive,
                response_information: opt_str(&c.response_info),
                server_reference: opt_str(&c.server_reference),
                authentication_method: opt_str(&c.auth_method),
                authentication_data: opt_bytes(&c.auth_data),
            };
            let any = props != v5::ConnAckProperties::new();
            v5::Packet::ConnAck(v5::ConnAck {
                session_present: c.session_present,
                code: connack_code_v5(c.code),
                properties: some_if(any, props),
            })
        }
        View::PingReq => v5::Packet::PingReq,
        View::Disconnect(d) => {
            let props = v5::DisconnectProperties {
                session_expiry_interval: d.session_expiry,
                reason_string: opt_str(&d.reason_string),
                user_properties: d.user.clone(),
                server_reference: opt_str(&d.server_reference),
            };
            let any = props != v5::DisconnectProperties::new();
            v5::Packet::Disconnect(v5::Disconnect {
                reason_code: v5::DisconnectReasonCode::try_from(d.reason)
                    .expect("a DISCONNECT reason"),
                properties: some_if(any, props),
            })
        }
    })
}

fn v5_publish_props_empty() -> v5::PublishProperties {
    v5::PublishProperties {
        payload_format_indicator: None,
        message_expiry_interval: None,
        topic_alias: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
        subscription_identifiers: Vec::new(),
        content_type: None,
    }
}

fn write_v5(packet: &v5::Packet, buf: &mut BytesMut) -> Result<usize, mqttbytes::Error> {
    match packet {
        v5::Packet::Publish(p) => p.write(buf),
        v5::Packet::PubAck(p) => p.write(buf),
        v5::Packet::Subscribe(p) => p.write(buf),
        v5::Packet::SubAck(p) => p.write(buf),
        v5::Packet::Unsubscribe(p) => p.write(buf),
        v5::Packet::UnsubAck(p) => p.write(buf),
        v5::Packet::Connect(p) => p.write(buf),
        v5::Packet::ConnAck(p) => p.write(buf),
        v5::Packet::PingReq => v5::PingReq.write(buf),
        v5::Packet::Disconnect(p) => p.write(buf),
        other => panic!("not generated: {other:?}"),
    }
}

/// The view of an mqttbytes 5.0 packet.
fn view_of_v5(packet: &v5::Packet) -> View {
    match packet {
        v5::Packet::Publish(p) => {
            let props = p.properties.clone().unwrap_or_else(v5_publish_props_empty);
            View::Publish(PublishView {
                dup: p.dup,
                qos: p.qos as u8,
                retain: p.retain,
                topic: p.topic.clone(),
                pkid: p.pkid,
                payload: p.payload.to_vec(),
                payload_format: props.payload_format_indicator,
                expiry: props.message_expiry_interval,
                alias: props.topic_alias,
                response_topic: props.response_topic,
                correlation: props.correlation_data.map(|b| b.to_vec()),
                user: props.user_properties,
                sub_ids: props
                    .subscription_identifiers
                    .iter()
                    .map(|&i| u32::try_from(i).expect("a varint fits u32"))
                    .collect(),
                content_type: props.content_type,
            })
        }
        v5::Packet::PubAck(a) => View::PubAck(AckView {
            pkid: a.pkid,
            reason: a.reason as u8,
            reason_string: a.properties.as_ref().and_then(|p| p.reason_string.clone()),
            user: a
                .properties
                .as_ref()
                .map(|p| p.user_properties.clone())
                .unwrap_or_default(),
        }),
        v5::Packet::Subscribe(s) => View::Subscribe(SubscribeView {
            pkid: s.pkid,
            sub_id: s
                .properties
                .as_ref()
                .and_then(|p| p.id)
                .map(|i| u32::try_from(i).expect("a varint fits u32")),
            user: s
                .properties
                .as_ref()
                .map(|p| p.user_properties.clone())
                .unwrap_or_default(),
            filters: s
                .filters
                .iter()
                .map(|f| FilterView {
                    filter: f.path.clone(),
                    qos: f.qos as u8,
                    no_local: f.nolocal,
                    retain_as_published: f.preserve_retain,
                    retain_handling: match f.retain_forward_rule {
                        v5::RetainForwardRule::OnEverySubscribe => 0,
                        v5::RetainForwardRule::OnNewSubscribe => 1,
                        v5::RetainForwardRule::Never => 2,
                    },
                })
                .collect(),
        }),
        v5::Packet::SubAck(c) => View::SubAck(CodesView {
            pkid: c.pkid,
            codes: c.return_codes.iter().map(|&c| c as u8).collect(),
            reason_string: c.properties.as_ref().and_then(|p| p.reason_string.clone()),
            user: c
                .properties
                .as_ref()
                .map(|p| p.user_properties.clone())
                .unwrap_or_default(),
        }),
        v5::Packet::Unsubscribe(u) => View::Unsubscribe(UnsubscribeView {
            pkid: u.pkid,
            user: u
                .properties
                .as_ref()
                .map(|p| p.user_properties.clone())
                .unwrap_or_default(),
            filters: u.filters.clone(),
        }),
        v5::Packet::UnsubAck(c) => View::UnsubAck(CodesView {
            pkid: c.pkid,
            codes: c.reasons.iter().map(|&c| c as u8).collect(),
            reason_string: c.properties.as_ref().and_then(|p| p.reason_string.clone()),
            user: c
                .properties
                .as_ref()
                .map(|p| p.user_properties.clone())
                .unwrap_or_default(),
        }),
        v5::Packet::Connect(c) => {
            let p = c.properties.as_ref();
            View::Connect(ConnectView {
                v5: c.protocol == mqttbytes::Protocol::V5,
                clean: c.clean_session,
                keep_alive: c.keep_alive,
                client_id: c.client_id.clone(),
                will: c.last_will.as_ref().map(|w| {
                    let wp = w.properties.as_ref();
                    WillView {
                        topic: w.topic.clone(),
                        payload: w.message.to_vec(),
                        qos: w.qos as u8,
                        retain: w.retain,
                        delay: wp.and_then(|p| p.delay_interval),
                        payload_format: wp.and_then(|p| p.payload_format_indicator),
                        expiry: wp.and_then(|p| p.message_expiry_interval),
                        content_type: wp.and_then(|p| p.content_type.clone()),
                        response_topic: wp.and_then(|p| p.response_topic.clone()),
                        correlation: wp
                            .and_then(|p| p.correlation_data.as_ref().map(|b| b.to_vec())),
                        user: wp.map(|p| p.user_properties.clone()).unwrap_or_default(),
                    }
                }),
                username: c.login.as_ref().map(|l| l.username.clone()),
                password: c.login.as_ref().map(|l| l.password.clone().into_bytes()),
                session_expiry: p.and_then(|p| p.session_expiry_interval),
                receive_max: p.and_then(|p| p.receive_maximum),
                max_packet_size: p.and_then(|p| p.max_packet_size),
                topic_alias_max: p.and_then(|p| p.topic_alias_max),
                request_response_info: p.and_then(|p| p.request_response_info),
                request_problem_info: p.and_then(|p| p.request_problem_info),
                user: p.map(|p| p.user_properties.clone()).unwrap_or_default(),
                auth_method: p.and_then(|p| p.authentication_method.clone()),
                auth_data: p.and_then(|p| p.authentication_data.as_ref().map(|b| b.to_vec())),
            })
        }
        v5::Packet::ConnAck(c) => {
            let p = c
                .properties
                .clone()
                .unwrap_or_else(v5::ConnAckProperties::new);
            View::ConnAck(ConnAckView {
                session_present: c.session_present,
                code: c.code as u8,
                session_expiry: p.session_expiry_interval,
                receive_max: p.receive_max,
                max_qos: p.max_qos,
                retain_available: p.retain_available,
                max_packet_size: p.max_packet_size,
                assigned_client_id: p.assigned_client_identifier,
                topic_alias_max: p.topic_alias_max,
                reason_string: p.reason_string,
                user: p.user_properties,
                wildcard_available: p.wildcard_subscription_available,
                sub_ids_available: p.subscription_identifiers_available,
                shared_available: p.shared_subscription_available,
                server_keep_alive: p.server_keep_alive,
                response_info: p.response_information,
                server_reference: p.server_reference,
                auth_method: p.authentication_method,
                auth_data: p.authentication_data.map(|b| b.to_vec()),
            })
        }
        v5::Packet::PingReq => View::PingReq,
        v5::Packet::Disconnect(d) => {
            let p = d
                .properties
                .clone()
                .unwrap_or_else(v5::DisconnectProperties::new);
            View::Disconnect(DisconnectView {
                reason: d.reason_code as u8,
                session_expiry: p.session_expiry_interval,
                reason_string: p.reason_string,
                user: p.user_properties,
                server_reference: p.server_reference,
            })
        }
        other => panic!("not generated: {other:?}"),
    }
}

/// Reads one packet with mqttbytes and gives its view.
fn read_theirs(bytes: &[u8], v5: bool) -> Result<View, mqttbytes::Error> {
    let mut buf = BytesMut::from(bytes);
    let view = if v5 {
        view_of_v5(&v5::read(&mut buf, MAX_SIZE)?)
    } else {
        view_of_v4(&v4::read(&mut buf, MAX_SIZE)?)
    };
    assert!(buf.is_empty(), "mqttbytes left {} bytes", buf.len());
    Ok(view)
}

/// Valid bytes of ours that mqttbytes 0.6 cannot read, and why they are valid.
fn mqttbytes_gap(view: &View, v5: bool, bytes: &[u8]) -> Option<&'static str> {
    match view {
        // mqttbytes' v5::read wants a body for every packet but PINGREQ and PINGRESP.
        View::Disconnect(_) if v5 && bytes.len() == 2 => Some(
            "5.0 DISCONNECT with Remaining Length 0: reason 0x00 and no properties may be omitted \
             (MQTT-5.0 §3.14.2.1)",
        ),
        // After the reason code it reads a Property Length that is not there.
        View::Disconnect(_) if v5 && bytes.len() == 3 => Some(
            "5.0 DISCONNECT with Remaining Length 1: the Property Length may be omitted \
             (MQTT-5.0 §3.14.2.2.1)",
        ),
        // Its Login holds the password as a String.
        View::Connect(c)
            if c.password
                .as_ref()
                .is_some_and(|p| std::str::from_utf8(p).is_err()) =>
        {
            Some("a password that is not UTF-8: the Password is Binary Data (MQTT-5.0 §3.1.3.5)")
        }
        _ => None,
    }
}

/// Bytes that mqttbytes writes for a view but that no decoder should accept, with our error and
/// the clause.
fn mqttbytes_writes_invalid(view: &View, v5: bool) -> Option<(&'static str, &'static str)> {
    match view {
        // mqttbytes drops an empty user name, so a 3.1.1 CONNECT with user name "" and a password
        // goes out with the Password Flag alone.
        View::Connect(c)
            if !v5
                && c.username.as_deref() == Some("")
                && c.password.as_ref().is_some_and(|p| !p.is_empty()) =>
        {
            Some(("PasswordWithoutUsername", "MQTT-3.1.2-22 (3.1.1)"))
        }
        // mqttbytes writes a 5.0 CONNACK without properties with no Property Length at all.
        View::ConnAck(c)
            if v5
                && *c
                    == ConnAckView {
                        session_present: c.session_present,
                        code: c.code,
                        ..Default::default()
                    } =>
        {
            Some(("Truncated", "MQTT-2.2.2-1"))
        }
        _ => None,
    }
}

// ------------------------------------------------------------------------------------------------
// The properties.

/// Ours to theirs: our encoding of a valid view decodes, with both codecs, to that view.
fn ours_to_theirs(view: &View, v5: bool) -> Result<(), TestCaseError> {
    let version = version_of(v5);
    let bytes = encode_ours(view, version).map_err(TestCaseError::fail)?;
    let back = decode_ours(&bytes, view.receiver(), version)
        .map_err(|e| TestCaseError::fail(format!("our decoder rejects our encoding: {e}")))?;
    prop_assert_eq!(&view_of_ours(&back), view);
    match read_theirs(&bytes, v5) {
        Ok(theirs) => prop_assert_eq!(theirs.folded(), view.clone().folded()),
        Err(e) => prop_assert!(
            mqttbytes_gap(view, v5, &bytes).is_some(),
            "mqttbytes rejects our {}: {e:?}",
            hex(&bytes)
        ),
    }
    Ok(())
}

/// Theirs to ours: mqttbytes' encoding decodes with ours to the view, or is rejected with the
/// error its flaw calls for.
fn theirs_to_ours(view: &View, flaw: Option<Flaw>, v5: bool) -> Result<(), TestCaseError> {
    let version = version_of(v5);
    let theirs = if v5 {
        build_v5(view).map(Err)
    } else {
        build_v4(view).map(Ok)
    };
    // A password that is not UTF-8 has no place in mqttbytes' Login.
    prop_assume!(theirs.is_some());
    let mut bytes = BytesMut::new();
    let written = match theirs.expect("assumed") {
        Ok(p) => write_v4(&p, &mut bytes),
        Err(p) => write_v5(&p, &mut bytes),
    };
    prop_assert!(
        written.is_ok(),
        "mqttbytes refuses to write {view:?}: {written:?}"
    );
    // What mqttbytes gets wrong on its own comes first: the decoder meets it first.
    let quirk = mqttbytes_writes_invalid(view, v5);
    let expected = quirk.or_else(|| flaw.map(|f| f.expected(view, version)));
    match (decode_ours(&bytes, view.receiver(), version), expected) {
        (Ok(ours), None) => prop_assert_eq!(view_of_ours(&ours).folded(), view.clone().folded()),
        (Ok(ours), Some((kind, clause))) => {
            return Err(TestCaseError::fail(format!(
                "we accept {} as {ours:?}, but [{clause}] calls for {kind}",
                hex(&bytes)
            )));
        }
        (Err(e), None) => {
            return Err(TestCaseError::fail(format!(
                "we reject mqttbytes' valid {}: {e}",
                hex(&bytes)
            )));
        }
        (Err(e), Some((kind, clause))) => {
            prop_assert_eq!(e.kind(), kind, "[{}] {}: {}", clause, hex(&bytes), e);
        }
    }
    if flaw.is_some() && quirk.is_none() {
        // mqttbytes accepts what we reject: it reads its own bytes back.
        let theirs = read_theirs(&bytes, v5);
        prop_assert!(
            theirs.is_ok(),
            "mqttbytes rejects its own {}: {theirs:?}",
            hex(&bytes)
        );
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn ours_to_mqttbytes_v4(view in any_view(false)) {
        ours_to_theirs(&view, false)?;
    }

    #[test]
    fn ours_to_mqttbytes_v5(view in any_view(true)) {
        ours_to_theirs(&view, true)?;
    }

    #[test]
    fn mqttbytes_to_ours_v4((view, flaw) in flawed_view(false)) {
        theirs_to_ours(&view, flaw, false)?;
    }

    #[test]
    fn mqttbytes_to_ours_v5((view, flaw) in flawed_view(true)) {
        theirs_to_ours(&view, flaw, true)?;
    }

    /// PUBLISH alone, the packet that matters most, with more cases of its own.
    #[test]
    fn publish_both_ways_v4((view, flaw) in publish(false).prop_flat_map(|v| {
        let flaws = flaws_for(&v, false);
        (Just(v), proptest::option::weighted(0.25, select(flaws)))
    })) {
        let mut view = view;
        if let Some(f) = flaw {
            f.apply(&mut view, false);
        } else {
            ours_to_theirs(&view, false)?;
        }
        theirs_to_ours(&view, flaw, false)?;
    }

    #[test]
    fn publish_both_ways_v5((view, flaw) in publish(true).prop_flat_map(|v| {
        let flaws = flaws_for(&v, true);
        (Just(v), proptest::option::weighted(0.25, select(flaws)))
    })) {
        let mut view = view;
        if let Some(f) = flaw {
            f.apply(&mut view, true);
        } else {
            ours_to_theirs(&view, true)?;
        }
        theirs_to_ours(&view, flaw, true)?;
    }
}

/// The gaps and flaws above are not hypothetical: one fixed case of each.
#[test]
fn documented_cases() {
    // mqttbytes cannot read a 5.0 DISCONNECT of Remaining Length 0 or 1.
    for bytes in [&[0xE0, 0x00][..], &[0xE0, 0x01, 0x04][..]] {
        assert!(decode_ours(bytes, Role::Server, V5).is_ok());
        assert!(read_theirs(bytes, true).is_err(), "{}", hex(bytes));
    }
    // mqttbytes writes a 5.0 CONNACK without properties with no Property Length.
    let mut buf = BytesMut::new();
    v5::ConnAck::new(v5::ConnectReturnCode::Success, false)
        .write(&mut buf)
        .expect("mqttbytes writes it");
    assert_eq!(&buf[..], &[0x20, 0x02, 0x00, 0x00]);
    assert_eq!(
        decode_ours(&buf, Role::Client, V5).map_err(|e| e.kind()),
        Err("Truncated")
    );
    assert!(read_theirs(&buf, true).is_err());
    // mqttbytes drops an empty user name: its 3.1.1 CONNECT then has a password without one.
    let mut buf = BytesMut::new();
    let mut connect = v4::Connect::new("c");
    connect.set_login("", "pw");
    connect.write(&mut buf).expect("mqttbytes writes it");
    assert_eq!(
        decode_ours(&buf, Role::Server, V311).map_err(|e| e.kind()),
        Err("PasswordWithoutUsername")
    );
    assert!(read_theirs(&buf, false).is_ok());
    // mqttbytes reads a password as a string: a binary one is refused.
    let mut buf = BytesMut::new();
    let mut connect = Connect::new(V5, "c".into(), 0);
    connect.password = Some(Bytes::from_static(&[0xFF]));
    Codec::new(Role::Client, V5)
        .encode(&Packet::Connect(Box::new(connect)), &mut buf)
        .expect("a binary password is valid");
    assert!(decode_ours(&buf, Role::Server, V5).is_ok());
    assert_eq!(read_theirs(&buf, true), Err(mqttbytes::Error::TopicNotUtf8));
    // mqttbytes accepts a wildcard in a PUBLISH topic; we refuse it (MQTT-3.3.2-2).
    let bytes = [0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#'];
    assert!(read_theirs(&bytes, false).is_ok());
    assert_eq!(
        decode_ours(&bytes, Role::Server, V311).map_err(|e| e.kind()),
        Err("InvalidTopicName")
    );
}
