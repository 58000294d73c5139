//! DISCONNECT (§3.14). Empty in 3.1.1; in 5.0 a reason code and properties, both omissible.

use bytes::{BufMut, Bytes, BytesMut};

use super::connect::props_len;
use super::own_str;
use super::puback::reason_code;
use crate::error::{DecodeError, EncodeError};
use crate::properties::{self, Allowed, Encode, PropValue, RepeatedCounts, UserProperties, id};
use crate::reader::Reader;
use crate::reason::ReasonCode;
use crate::string::ByteStr;
use crate::types::{PacketType, ProtocolVersion, Role};

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Disconnect Reason Code (5.0); Normal disconnection (0x00) when omitted.
    pub reason_code: ReasonCode,
    /// Properties (5.0).
    pub properties: DisconnectProperties,
}

/// DISCONNECT properties (§3.14.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    /// Session Expiry Interval, seconds.
    pub session_expiry_interval_secs: Option<u32>,
    /// Reason String.
    pub reason_string: Option<ByteStr>,
    /// User Properties.
    pub user_properties: UserProperties,
    /// Server Reference.
    pub server_reference: Option<ByteStr>,
}

impl DisconnectProperties {
    fn is_empty(&self) -> bool {
        self.session_expiry_interval_secs.is_none()
            && self.reason_string.is_none()
            && self.user_properties.is_empty()
            && self.server_reference.is_none()
    }
}

const P: PacketType = PacketType::Disconnect;

impl Disconnect {
    /// A DISCONNECT with this reason code and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Self {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }

    pub(crate) fn decode(
        frame: &Bytes,
        body: &[u8],
        version: ProtocolVersion,
        role: Role,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body, P);
        let mut d = Self::new(ReasonCode::SUCCESS);
        if version == ProtocolVersion::V5 && !r.is_empty() {
            d.reason_code = reason_code(&mut r)?;
            if !r.is_empty() {
                let mut counts = RepeatedCounts::default();
                let mut strs: [Option<&str>; 2] = [None; 2];
                let mut expiry = None;
                let block = properties::parse(&mut r, Allowed::DISCONNECT, |property, v| {
                    counts.count(property);
                    match (property, v) {
                        (id::SESSION_EXPIRY_INTERVAL, PropValue::FourByte(v)) => expiry = Some(v),
                        (id::REASON_STRING, PropValue::Utf8(s)) => strs[0] = Some(s),
                        (id::SERVER_REFERENCE, PropValue::Utf8(s)) => strs[1] = Some(s),
                        _ => {}
                    }
                })?;
                if expiry.is_some() && role == Role::Client {
                    return Err(DecodeError::SessionExpiryFromServer);
                }
                d.properties = DisconnectProperties {
                    session_expiry_interval_secs: expiry,
                    reason_string: strs[0].map(|s| own_str(frame, s)),
                    user_properties: counts.user_properties(block).to_owned_in(frame),
                    server_reference: strs[1].map(|s| own_str(frame, s)),
                };
            }
        }
        r.finish()?;
        Ok(d)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        Ok(match version {
            ProtocolVersion::V311 => 0,
            ProtocolVersion::V5 if self.properties.is_empty() => {
                usize::from(self.reason_code != ReasonCode::SUCCESS)
            }
            ProtocolVersion::V5 => 1 + props_len(&self.properties)?,
        })
    }

    pub(crate) fn write_body(&self, len: usize, buf: &mut BytesMut) {
        if len > 0 {
            buf.put_u8(self.reason_code.0);
        }
        if len > 1 {
            let plen = properties::encoded_len(&self.properties);
            properties::write(&self.properties, plen, buf);
        }
    }
}

impl Encode for DisconnectProperties {
    fn visit<'s>(&'s self, f: &mut impl FnMut(u8, PropValue<'s>)) {
        if let Some(v) = self.session_expiry_interval_secs {
            f(id::SESSION_EXPIRY_INTERVAL, PropValue::FourByte(v));
        }
        if let Some(v) = &self.reason_string {
            f(id::REASON_STRING, PropValue::Utf8(v));
        }
        properties::visit_user(&self.user_properties, f);
        if let Some(v) = &self.server_reference {
            f(id::SERVER_REFERENCE, PropValue::Utf8(v));
        }
    }
}
