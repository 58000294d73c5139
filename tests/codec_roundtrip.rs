//! Round trips of every packet type in both versions (proptest), and frame splitting: every
//! frame decodes identically when its bytes arrive split at any boundary.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use sluice_codec::*;

fn s(max: usize) -> impl Strategy<Value = ByteStr> {
    // Any characters but U+0000, including U+FEFF and multi-byte ones.
    proptest::string::string_regex(&format!("[^\u{0}]{{0,{max}}}"))
        .expect("regex")
        .prop_map(ByteStr::from)
}

fn topic() -> impl Strategy<Value = ByteStr> {
    "[a-z0-9$/é\u{feff} ]{1,24}".prop_map(ByteStr::from)
}

fn filter() -> impl Strategy<Value = ByteStr> {
    prop_oneof![
        topic(),
        "[a-z]{1,5}(/\\+)?(/[a-z]{1,5})?(/#)?".prop_map(ByteStr::from),
        Just(ByteStr::from("#")),
        "\\$share/[a-z]{1,4}/[a-z]{1,4}/#".prop_map(ByteStr::from),
    ]
}

fn bin(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn pid() -> impl Strategy<Value = PacketId> {
    (1u16..).prop_map(|v| NonZeroU16::new(v).expect("non-zero"))
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn users(v5: bool) -> BoxedStrategy<UserProperties> {
    if !v5 {
        return Just(UserProperties::new()).boxed();
    }
    vec((s(8), s(8)), 0..4)
        .prop_map(|pairs| {
            UserProperties::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .expect("valid pairs")
        })
        .boxed()
}

/// `Some` of the strategy's value in 5.0, `None` in 3.1.1 (where properties do not exist).
fn v5opt<T: std::fmt::Debug + Clone + 'static>(
    v5: bool,
    st: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    if v5 {
        option::of(st).boxed()
    } else {
        Just(None).boxed()
    }
}

fn reason(v5: bool, packet: PacketType) -> BoxedStrategy<ReasonCode> {
    if !v5 {
        return Just(ReasonCode::SUCCESS).boxed();
    }
    (0u8..=255)
        .prop_map(ReasonCode)
        .prop_filter("valid for the packet", move |c| c.allowed_in(packet))
        .boxed()
}

fn publish(v5: bool, to_client: bool) -> impl Strategy<Value = Packet> {
    let props = (
        v5opt(
            v5,
            prop_oneof![Just(PayloadFormat::Unspecified), Just(PayloadFormat::Utf8)],
        ),
        v5opt(v5, any::<u32>()),
        v5opt(
            v5,
            (1u16..).prop_map(|v| NonZeroU16::new(v).expect("non-zero")),
        ),
        v5opt(v5, topic()),
        v5opt(v5, bin(16)),
        users(v5),
        if v5 && to_client {
            vec(1u32..=268_435_455, 0..3).boxed()
        } else {
            Just(vec![]).boxed()
        },
        v5opt(v5, s(12)),
    )
        .prop_map(|(pfi, exp, alias, rt, cd, user, subs, ct)| {
            PublishPropertyValues {
                payload_format_indicator: pfi,
                message_expiry_interval_secs: exp,
                topic_alias: alias,
                response_topic: rt,
                correlation_data: cd,
                user_properties: user,
                subscription_identifiers: SubscriptionIds::from_ids(subs).expect("valid ids"),
                content_type: ct,
            }
            .build()
            .expect("valid properties")
        });
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(),
        pid(),
        props,
        bin(300),
        any::<bool>(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, id, properties, payload, empty_topic)| {
                let alias = properties.topic_alias().is_some();
                Packet::Publish(Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos,
                    retain,
                    topic: if v5 && alias && empty_topic {
                        ByteStr::new()
                    } else {
                        topic
                    },
                    packet_id: (qos != QoS::AtMostOnce).then_some(id),
                    properties,
                    payload,
                })
            },
        )
}

fn ack(v5: bool, packet: PacketType) -> impl Strategy<Value = Packet> {
    (pid(), reason(v5, packet), v5opt(v5, s(10)), users(v5)).prop_map(move |(id, rc, rs, up)| {
        let a = PubAck {
            packet_id: id,
            reason_code: rc,
            properties: AckProperties {
                reason_string: rs,
                user_properties: up,
            },
        };
        match packet {
            PacketType::PubAck => Packet::PubAck(a),
            PacketType::PubRec => Packet::PubRec(a),
            PacketType::PubRel => Packet::PubRel(a),
            _ => Packet::PubComp(a),
        }
    })
}

fn connect(v5: bool) -> impl Strategy<Value = Packet> {
    let props = (
        v5opt(v5, any::<u32>()),
        v5opt(
            v5,
            (1u16..).prop_map(|v| NonZeroU16::new(v).expect("non-zero")),
        ),
        v5opt(
            v5,
            (1u32..).prop_map(|v| NonZeroU32::new(v).expect("non-zero")),
        ),
        v5opt(v5, any::<u16>()),
        v5opt(v5, any::<bool>()),
        v5opt(v5, any::<bool>()),
        users(v5),
        v5opt(v5, (s(8), option::of(bin(8)))),
    )
        .prop_map(|(se, rm, mps, tam, rri, rpi, up, auth)| ConnectProperties {
            session_expiry_interval_secs: se,
            receive_maximum: rm,
            maximum_packet_size: mps,
            topic_alias_maximum: tam,
            request_response_information: rri,
            request_problem_information: rpi,
            user_properties: up,
            authentication_method: auth.as_ref().map(|(m, _)| m.clone()),
            authentication_data: auth.and_then(|(_, d)| d),
        });
    let will_props = (
        v5opt(v5, any::<u32>()),
        v5opt(v5, any::<u32>()),
        v5opt(v5, s(6)),
        v5opt(v5, topic()),
        v5opt(v5, bin(6)),
        users(v5),
    )
        .prop_map(|(wd, me, ct, rt, cd, up)| WillProperties {
            will_delay_interval_secs: wd,
            payload_format_indicator: None,
            message_expiry_interval_secs: me,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
        });
    let will = option::of((qos(), any::<bool>(), topic(), bin(20), will_props)).prop_map(|w| {
        w.map(|(qos, retain, topic, payload, properties)| LastWill {
            qos,
            retain,
            topic,
            payload,
            properties,
        })
    });
    (
        any::<bool>(),
        any::<u16>(),
        props,
        s(23),
        will,
        option::of(s(10)),
        option::of(bin(10)),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive_secs,
                properties,
                client_id,
                will,
                username,
                password,
            )| {
                // 3.1.1 has no empty client id without Clean Session ([MQTT-3.1.3-7]).
                let clean_start = clean_start || (!v5 && client_id.is_empty());
                // 3.1.1 has no password without a user name.
                let password = if !v5 && username.is_none() {
                    None
                } else {
                    password
                };
                Packet::Connect(Box::new(Connect {
                    protocol: if v5 {
                        ProtocolVersion::V5
                    } else {
                        ProtocolVersion::V311
                    },
                    clean_start,
                    keep_alive_secs,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                }))
            },
        )
}

fn connack(v5: bool) -> impl Strategy<Value = Packet> {
    let code = if v5 {
        reason(true, PacketType::ConnAck)
    } else {
        (0u8..=5).prop_map(ReasonCode).boxed()
    };
    let props = (
        (
            v5opt(v5, any::<u32>()),
            v5opt(v5, (1u16..).prop_map(|v| NonZeroU16::new(v).expect("nz"))),
            v5opt(
                v5,
                prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)],
            ),
            v5opt(v5, any::<bool>()),
            v5opt(v5, (1u32..).prop_map(|v| NonZeroU32::new(v).expect("nz"))),
        ),
        (
            v5opt(v5, s(10)),
            v5opt(v5, any::<u16>()),
            v5opt(v5, s(10)),
            users(v5),
            v5opt(v5, any::<bool>()),
            v5opt(v5, any::<bool>()),
        ),
        (
            v5opt(v5, any::<bool>()),
            v5opt(v5, any::<u16>()),
            v5opt(v5, s(6)),
            v5opt(v5, s(6)),
            v5opt(v5, s(6)),
            v5opt(v5, bin(6)),
        ),
    )
        .prop_map(
            |((se, rm, mq, ra, mps), (aci, tam, rs, up, wsa, sia), (ssa, ska, ri, sr, am, ad))| {
                ConnAckProperties {
                    session_expiry_interval_secs: se,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    user_properties: up,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive_secs: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am.clone(),
                    authentication_data: am.and(ad),
                }
            },
        );
    (any::<bool>(), code, props).prop_map(|(sp, code, properties)| {
        Packet::ConnAck(ConnAck {
            session_present: sp && code == ReasonCode::SUCCESS,
            reason_code: code,
            properties: Box::new(properties),
        })
    })
}

fn subscribe(v5: bool) -> impl Strategy<Value = Packet> {
    let opts = (qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(move |(qos, nl, rap, rh)| {
        SubscriptionOptions {
            qos,
            no_local: v5 && nl,
            retain_as_published: v5 && rap,
            retain_handling: match (v5, rh) {
                (true, 1) => RetainHandling::SendAtSubscribeIfNew,
                (true, 2) => RetainHandling::DoNotSend,
                _ => RetainHandling::SendAtSubscribe,
            },
        }
    });
    let sub = (filter(), opts).prop_map(|(filter, mut options)| {
        if topic::is_shared(&filter) {
            options.no_local = false;
        }
        Subscription { filter, options }
    });
    (
        pid(),
        v5opt(
            v5,
            (1u32..=268_435_455).prop_map(|v| NonZeroU32::new(v).expect("nz")),
        ),
        users(v5),
        vec(sub, 1..4),
    )
        .prop_map(|(id, si, up, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id: id,
                properties: SubscribeProperties {
                    subscription_identifier: si,
                    user_properties: up,
                },
                filters,
            })
        })
}

fn suback(v5: bool) -> impl Strategy<Value = Packet> {
    let code = if v5 {
        reason(true, PacketType::SubAck)
    } else {
        prop_oneof![
            Just(ReasonCode(0)),
            Just(ReasonCode(1)),
            Just(ReasonCode(2)),
            Just(ReasonCode(0x80))
        ]
        .boxed()
    };
    (pid(), v5opt(v5, s(8)), users(v5), vec(code, 1..5)).prop_map(|(id, rs, up, codes)| {
        Packet::SubAck(SubAck {
            packet_id: id,
            properties: AckProperties {
                reason_string: rs,
                user_properties: up,
            },
            reason_codes: codes,
        })
    })
}

fn unsubscribe(v5: bool) -> impl Strategy<Value = Packet> {
    (pid(), users(v5), vec(filter(), 1..4)).prop_map(|(id, up, filters)| {
        Packet::Unsubscribe(Unsubscribe {
            packet_id: id,
            properties: UnsubscribeProperties {
                user_properties: up,
            },
            filters,
        })
    })
}

fn unsuback(v5: bool) -> impl Strategy<Value = Packet> {
    let codes = if v5 {
        vec(reason(true, PacketType::UnsubAck), 1..4).boxed()
    } else {
        Just(vec![]).boxed()
    };
    (pid(), v5opt(v5, s(8)), users(v5), codes).prop_map(|(id, rs, up, reason_codes)| {
        Packet::UnsubAck(UnsubAck {
            packet_id: id,
            properties: AckProperties {
                reason_string: rs,
                user_properties: up,
            },
            reason_codes,
        })
    })
}

fn disconnect(v5: bool, to_client: bool) -> impl Strategy<Value = Packet> {
    (
        reason(v5, PacketType::Disconnect),
        // A server never sends a Session Expiry Interval ([MQTT-3.14.2-2]).
        v5opt(v5 && !to_client, any::<u32>()),
        v5opt(v5, s(8)),
        users(v5),
        v5opt(v5, s(8)),
    )
        .prop_map(|(rc, se, rs, up, sr)| {
            Packet::Disconnect(Disconnect {
                reason_code: rc,
                properties: DisconnectProperties {
                    session_expiry_interval_secs: se,
                    reason_string: rs,
                    user_properties: up,
                    server_reference: sr,
                },
            })
        })
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        reason(true, PacketType::Auth),
        option::of((s(8), option::of(bin(8)))),
        option::of(s(8)),
        users(true),
    )
        .prop_map(|(rc, a, rs, up)| {
            Packet::Auth(Auth {
                reason_code: rc,
                properties: Box::new(AuthProperties {
                    authentication_method: a.as_ref().map(|(m, _)| m.clone()),
                    authentication_data: a.and_then(|(_, d)| d),
                    reason_string: rs,
                    user_properties: up,
                }),
            })
        })
}

/// Packets a client receives (`to_client`) or a server receives, in one version.
fn packets(v5: bool, to_client: bool) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        publish(v5, to_client),
        ack(v5, PacketType::PubAck),
        ack(v5, PacketType::PubRec),
        ack(v5, PacketType::PubRel),
        ack(v5, PacketType::PubComp),
    ];
    match (to_client, v5) {
        (true, false) => prop_oneof![
            common,
            connack(false),
            suback(false),
            unsuback(false),
            Just(Packet::PingResp)
        ]
        .boxed(),
        (true, true) => prop_oneof![
            common,
            connack(true),
            suback(true),
            unsuback(true),
            Just(Packet::PingResp),
            disconnect(true, true),
            auth()
        ]
        .boxed(),
        (false, _) => {
            let mut s = prop_oneof![
                common,
                connect(v5),
                subscribe(v5),
                unsubscribe(v5),
                Just(Packet::PingReq),
                disconnect(v5, false)
            ]
            .boxed();
            if v5 {
                s = prop_oneof![s, auth()].boxed();
            }
            s
        }
    }
}

fn round_trip(v5: bool, to_client: bool, packet: &Packet) -> Result<(), TestCaseError> {
    let version = if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let role = if to_client {
        Role::Client
    } else {
        Role::Server
    };
    let mut codec = Codec::new(role, version);
    let mut buf = BytesMut::new();
    codec
        .encode(packet, &mut buf)
        .map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    let bytes = buf.clone().freeze();
    let decoded = codec
        .decode(&mut buf)
        .map_err(|e| TestCaseError::fail(format!("decode: {e} of {bytes:02x?}")))?;
    prop_assert_eq!(decoded.as_ref(), Some(packet));
    prop_assert!(buf.is_empty());
    // The same bytes, arriving in two pieces at any boundary.
    for cut in 0..bytes.len() {
        let mut codec = Codec::new(role, version);
        let mut buf = BytesMut::from(&bytes[..cut]);
        prop_assert_eq!(codec.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&bytes[cut..]);
        let again = codec.decode(&mut buf).ok().flatten();
        prop_assert_eq!(again.as_ref(), Some(packet));
    }
    // The borrowed path agrees with the owned one.
    if let Packet::Publish(p) = packet {
        let codec = Codec::new(role, version);
        let frame = codec
            .next_frame(&bytes)
            .ok()
            .flatten()
            .expect("whole frame");
        let r = codec
            .decode_publish(&frame)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&r.to_owned_in(&bytes), p);
        // The values come back out of the block, and build the same block again.
        let values = p.properties.to_values();
        let rebuilt = values
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(rebuilt.as_bytes(), p.properties.as_bytes());
        prop_assert_eq!(&rebuilt, &p.properties);
        let mut again = BytesMut::new();
        r.encode(version, &mut again)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&again[..], &bytes[..]);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_v311_to_server(p in packets(false, false)) { round_trip(false, false, &p)?; }

    #[test]
    fn round_trip_v311_to_client(p in packets(false, true)) { round_trip(false, true, &p)?; }

    #[test]
    fn round_trip_v5_to_server(p in packets(true, false)) { round_trip(true, false, &p)?; }

    #[test]
    fn round_trip_v5_to_client(p in packets(true, true)) { round_trip(true, true, &p)?; }
}

/// The captures in samples/ decode identically whatever the read boundaries: byte by byte, and
/// split in two at every position.
#[test]
fn sample_captures_decode_identically_at_every_split() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/samples");
    let captures = [
        ("paho-v5.to-server.bin", ProtocolVersion::V5, Role::Server),
        ("paho-v5.to-client.bin", ProtocolVersion::V5, Role::Client),
        (
            "paho-v311.to-server.bin",
            ProtocolVersion::V311,
            Role::Server,
        ),
        (
            "paho-v311.to-client.bin",
            ProtocolVersion::V311,
            Role::Client,
        ),
    ];
    for (name, version, role) in captures {
        let bytes =
            std::fs::read(format!("{dir}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let decode_all = |chunks: &mut dyn Iterator<Item = &[u8]>| -> Vec<Packet> {
            let mut codec = Codec::new(role, version);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for chunk in chunks {
                buf.extend_from_slice(chunk);
                while let Some(p) = codec
                    .decode(&mut buf)
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
                {
                    out.push(p);
                }
            }
            assert!(buf.is_empty(), "{name}: trailing bytes");
            out
        };
        let whole = decode_all(&mut std::iter::once(&bytes[..]));
        assert!(whole.len() > 10, "{name}: {} packets", whole.len());
        assert_eq!(
            decode_all(&mut bytes.chunks(1)),
            whole,
            "{name} byte by byte"
        );
        for cut in 1..bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(
                decode_all(&mut [a, b].into_iter()),
                whole,
                "{name} split at {cut}"
            );
        }
        // Re-encoding every packet gives back a stream that decodes to the same packets.
        let codec = Codec::new(role, version);
        let mut re = BytesMut::new();
        for p in &whole {
            codec
                .encode(p, &mut re)
                .unwrap_or_else(|e| panic!("{name}: {e} for {p:?}"));
        }
        assert_eq!(
            decode_all(&mut std::iter::once(&re[..])),
            whole,
            "{name} re-encoded"
        );
    }
}
