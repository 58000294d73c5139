//! `ByteStr`: an immutable UTF-8 string backed by [`Bytes`], checked once when it is decoded.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

use crate::error::DecodeError;

/// A UTF-8 string that shares the memory of the frame it was decoded from.
///
/// The bytes are checked once ([`validate_utf8`]): well-formed UTF-8 without U+0000. Cloning it
/// and slicing it never copy.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteStr(Bytes);

impl ByteStr {
    /// An empty string.
    pub const fn new() -> Self {
        Self(Bytes::new())
    }

    /// A string from static text.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// Checks `bytes` as an MQTT UTF-8 string and wraps it without copying.
    ///
    /// # Errors
    /// [`DecodeError::InvalidUtf8`] or [`DecodeError::NullCharacter`].
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, DecodeError> {
        validate_utf8(&bytes)?;
        Ok(Self(bytes))
    }

    /// Wraps bytes that were already checked with [`validate_utf8`], or that come from a `&str`.
    pub(crate) fn from_checked(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Self(bytes)
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        str_from_checked(&self.0)
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Gives back the underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for ByteStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ByteStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&'static str> for ByteStr {
    fn from(s: &'static str) -> Self {
        Self::from_static(s)
    }
}

impl From<String> for ByteStr {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl PartialEq<str> for ByteStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ByteStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks an MQTT UTF-8 Encoded String: well-formed UTF-8 ([MQTT-1.5.4-1]: no overlong forms, no
/// surrogates, no truncated sequences) without U+0000 ([MQTT-1.5.4-2]). U+FEFF is kept
/// ([MQTT-1.5.4-3]).
///
/// # Errors
/// [`DecodeError::InvalidUtf8`] or [`DecodeError::NullCharacter`].
pub fn validate_utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    if memchr::memchr(0, bytes).is_some() {
        return Err(DecodeError::NullCharacter);
    }
    std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)
}

/// Reinterprets bytes that were checked as UTF-8 before (by [`validate_utf8`] at decode time, or
/// because they were copied from a `&str`).
#[allow(unsafe_code)]
pub(crate) fn str_from_checked(bytes: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(bytes).is_ok());
    // SAFETY: every caller passes bytes that were validated as UTF-8 when they entered the codec
    // (ByteStr's constructors and the decoder's readers), and Bytes is immutable.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}
