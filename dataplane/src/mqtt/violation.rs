//! [`SpecViolation`]: the rules of MQTT a broker can break that depend on the session's state, one
//! variant per normative statement, each with its clause, its DISCONNECT reason code and its
//! message written once. What one packet shows on its own is the codec's
//! ([`sluice_codec::DecodeError`]).
//!
//! Clause ids are MQTT 5.0's numbered statements (OASIS Standard, 7 March 2019); where 5.0 has no
//! numbered statement for the rule the id is its section (`MQTT-5.0 §4.12`). Where the
//! specification answers something other than with a DISCONNECT (a PUBREC for an unknown packet
//! identifier is answered with PUBREL 0x92), the session closes all the same, because it cannot
//! trust the broker's view of the session any more; those rows say so.

sluice_codec::clause_enum! {
    /// A rule of MQTT that the broker broke, seen from the session's state. The session answers
    /// it with a 5.0 DISCONNECT with [`SpecViolation::reason_code`] and closes the connection.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum SpecViolation {
        /// The broker's first packet is neither CONNACK nor (5.0) AUTH or DISCONNECT.
        FirstPacketNotConnAck => "MQTT-3.2.0-1", PROTOCOL_ERROR,
            "the first packet from the server is not CONNACK";
        /// A CONNACK after the connection was accepted.
        SecondConnAck => "MQTT-3.2.0-2", PROTOCOL_ERROR,
            "a second CONNACK on the connection";
        /// A successful CONNACK with Session Present while CONNECT had Clean Start.
        SessionPresentWithCleanStart => "MQTT-3.2.2-2", PROTOCOL_ERROR,
            "CONNACK has Session Present, but CONNECT had Clean Start";
        /// A successful CONNACK whose Authentication Method is not the one CONNECT gave.
        ConnAckAuthenticationMethod => "MQTT-4.12.0-5", PROTOCOL_ERROR,
            "successful CONNACK without the Authentication Method of CONNECT";
        /// An Authentication Method in CONNACK, when CONNECT had none.
        ConnAckUnaskedAuthentication => "MQTT-4.12.0-6", PROTOCOL_ERROR,
            "CONNACK has an Authentication Method, but CONNECT had none";
        /// AUTH, when CONNECT had no Authentication Method.
        UnaskedAuth => "MQTT-4.12.0-6", PROTOCOL_ERROR,
            "AUTH, but CONNECT had no Authentication Method";
        /// AUTH whose Authentication Method is not the one CONNECT gave.
        AuthMethodMismatch => "MQTT-4.12.0-5", PROTOCOL_ERROR,
            "AUTH without the Authentication Method of CONNECT";
        /// AUTH Success (0x00) while no re-authentication is under way: before CONNACK the
        /// exchange ends with CONNACK, after it only a client starts one.
        UnexpectedAuthSuccess => "MQTT-5.0 §4.12", PROTOCOL_ERROR,
            "AUTH Success while no re-authentication is under way";
        /// AUTH Continue authentication (0x18): a challenge. The token methods this session
        /// speaks (`K8S-SAT`, `OAUTH2-JWT`) define none, so it does no challenge-response.
        AuthChallenge => "MQTT-5.0 §4.12", PROTOCOL_ERROR,
            "AUTH Continue authentication, but the Authentication Method defines no challenge";
        /// AUTH Re-authenticate (0x19) from the server: only a client sends it.
        ServerReauthenticate => "MQTT-3.15.2-1", PROTOCOL_ERROR,
            "AUTH Re-authenticate from the server, which only a client sends";
        /// A Topic Alias in a PUBLISH, while CONNECT announced no Topic Alias Maximum (0).
        TopicAliasAboveMaximum => "MQTT-3.1.2-26", TOPIC_ALIAS_INVALID,
            "PUBLISH has a Topic Alias, but our Topic Alias Maximum is 0";
        /// A QoS 1 PUBLISH whose packet identifier names a message not acknowledged yet.
        PacketIdInUse => "MQTT-2.2.1-4", PROTOCOL_ERROR,
            "PUBLISH with a packet identifier that is still in use";
        /// More unacknowledged QoS 1 PUBLISH packets than our Receive Maximum (enforced only
        /// with `SessionConfig::enforce_receive_maximum`).
        ReceiveMaximumExceeded => "MQTT-3.3.4-9", RECEIVE_MAXIMUM_EXCEEDED,
            "more unacknowledged QoS 1 PUBLISH packets than our Receive Maximum";
        /// A QoS 2 PUBLISH, while every subscription asked for QoS 1 at most.
        QosAboveSubscription => "MQTT-3.8.4-8", QOS_NOT_SUPPORTED,
            "QoS 2 PUBLISH, but every subscription asked for QoS 1 at most";
        /// PUBREC, PUBREL or PUBCOMP, while this session never sends or accepts QoS 2. The
        /// specification answers an unknown identifier with 0x92; the session closes instead.
        Qos2Acknowledgement => "MQTT-5.0 §4.3.3", PROTOCOL_ERROR,
            "QoS 2 acknowledgement, but this session never uses QoS 2";
        /// PUBACK for a packet identifier no message of ours is in flight with.
        PubAckUnknownId => "MQTT-2.2.1-5", PROTOCOL_ERROR,
            "PUBACK for a packet identifier not in flight";
        /// SUBACK whose packet identifier is not our SUBSCRIBE's.
        SubAckUnknownId => "MQTT-3.8.4-2", PROTOCOL_ERROR,
            "SUBACK for a packet identifier not in use";
        /// SUBACK with another number of reason codes than the SUBSCRIBE had filters.
        SubAckCodeCount => "MQTT-3.8.4-6", PROTOCOL_ERROR,
            "SUBACK with a reason code count other than the filter count";
        /// UNSUBACK whose packet identifier is not our UNSUBSCRIBE's.
        UnsubAckUnknownId => "MQTT-3.10.4-5", PROTOCOL_ERROR,
            "UNSUBACK for a packet identifier not in use";
        /// A packet type only clients send (the codec refuses these first).
        ClientPacket => "MQTT-5.0 §2.1.2", PROTOCOL_ERROR,
            "a packet type only clients send";
    }
}

impl std::error::Error for SpecViolation {}

#[cfg(test)]
mod tests {
    use sluice_codec::ReasonCode;

    use super::SpecViolation;

    #[test]
    fn display_starts_with_the_clause() {
        let v = SpecViolation::TopicAliasAboveMaximum;
        assert_eq!(v.clause(), "MQTT-3.1.2-26");
        assert_eq!(v.reason_code(), ReasonCode::TOPIC_ALIAS_INVALID);
        assert_eq!(v.kind(), "TopicAliasAboveMaximum");
        assert_eq!(
            v.to_string(),
            "[MQTT-3.1.2-26] PUBLISH has a Topic Alias, but our Topic Alias Maximum is 0"
        );
    }
}
