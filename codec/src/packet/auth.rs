//! AUTH (§3.15, MQTT 5.0 only): extended authentication exchange.

use bytes::{BufMut, Bytes, BytesMut};

use super::connect::props_len;
use super::puback::reason_code;
use super::{own_bin, own_str};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{self, Allowed, Encode, PropValue, RepeatedCounts, UserProperties, id};
use crate::reader::Reader;
use crate::reason::ReasonCode;
use crate::string::ByteStr;
use crate::types::PacketType;

/// AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Authenticate Reason Code: Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Properties. Boxed: they are large and AUTH is rare, so that they do not set the size of
    /// every [`Packet`](super::Packet).
    pub properties: Box<AuthProperties>,
}

/// AUTH properties (§3.15.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthProperties {
    /// Authentication Method.
    pub authentication_method: Option<ByteStr>,
    /// Authentication Data.
    pub authentication_data: Option<Bytes>,
    /// Reason String.
    pub reason_string: Option<ByteStr>,
    /// User Properties.
    pub user_properties: UserProperties,
}

impl AuthProperties {
    fn is_empty(&self) -> bool {
        self.authentication_method.is_none()
            && self.authentication_data.is_none()
            && self.reason_string.is_none()
            && self.user_properties.is_empty()
    }
}

impl Auth {
    pub(crate) fn decode(frame: &Bytes, body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body, PacketType::Auth);
        let mut a = Self {
            reason_code: ReasonCode::SUCCESS,
            properties: Box::default(),
        };
        if r.is_empty() {
            return Ok(a);
        }
        a.reason_code = reason_code(&mut r)?;
        if !r.is_empty() {
            let mut counts = RepeatedCounts::default();
            let mut strs: [Option<&str>; 2] = [None; 2];
            let mut data = None;
            let block = properties::parse(&mut r, Allowed::AUTH, |property, v| {
                counts.count(property);
                match (property, v) {
                    (id::AUTHENTICATION_METHOD, PropValue::Utf8(s)) => strs[0] = Some(s),
                    (id::REASON_STRING, PropValue::Utf8(s)) => strs[1] = Some(s),
                    (id::AUTHENTICATION_DATA, PropValue::Binary(b)) => data = Some(b),
                    _ => {}
                }
            })?;
            *a.properties = AuthProperties {
                authentication_method: strs[0].map(|s| own_str(frame, s)),
                authentication_data: data.map(|b| own_bin(frame, b)),
                reason_string: strs[1].map(|s| own_str(frame, s)),
                user_properties: counts.user_properties(block).to_owned_in(frame),
            };
        }
        r.finish()?;
        Ok(a)
    }

    pub(crate) fn body_len(&self) -> Result<usize, EncodeError> {
        if self.properties.is_empty() && self.reason_code == ReasonCode::SUCCESS {
            return Ok(0);
        }
        Ok(1 + props_len(&*self.properties)?)
    }

    pub(crate) fn write_body(&self, len: usize, buf: &mut BytesMut) {
        if len > 0 {
            buf.put_u8(self.reason_code.0);
            let plen = properties::encoded_len(&*self.properties);
            properties::write(&*self.properties, plen, buf);
        }
    }
}

impl Encode for AuthProperties {
    fn visit<'s>(&'s self, f: &mut impl FnMut(u8, PropValue<'s>)) {
        if let Some(v) = &self.authentication_method {
            f(id::AUTHENTICATION_METHOD, PropValue::Utf8(v));
        }
        if let Some(v) = &self.authentication_data {
            f(id::AUTHENTICATION_DATA, PropValue::Binary(v));
        }
        if let Some(v) = &self.reason_string {
            f(id::REASON_STRING, PropValue::Utf8(v));
        }
        properties::visit_user(&self.user_properties, f);
    }
}
