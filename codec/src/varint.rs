//! Variable Byte Integers (§1.5.5): the remaining length and some property values.

use bytes::BufMut;

use crate::error::DecodeError;

/// The largest value a Variable Byte Integer holds: 268,435,455.
pub const MAX_VARINT: u32 = 268_435_455;

/// Reads a Variable Byte Integer from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` ends before the integer does, or the value and the number of
/// bytes it took.
///
/// # Errors
/// [`DecodeError::VarIntTooLong`] when the 4th byte has its continuation bit set, and
/// [`DecodeError::VarIntNotMinimal`] when a longer form than needed is used.
#[inline]
pub fn decode_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &b) in buf.iter().enumerate().take(4) {
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            // A last byte of 0 in a multi-byte form means a shorter form existed.
            if i > 0 && b == 0 {
                return Err(DecodeError::VarIntNotMinimal);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::VarIntTooLong)
    } else {
        Ok(None)
    }
}

/// How many bytes `value` takes as a Variable Byte Integer.
#[inline]
pub const fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` (at most [`MAX_VARINT`]) as a Variable Byte Integer.
#[inline]
pub fn put_varint(buf: &mut impl BufMut, mut value: u32) {
    debug_assert!(value <= MAX_VARINT);
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_round_trip() {
        for v in [
            0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_VARINT,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(decode_varint(&b), Ok(Some((v, b.len()))));
            for cut in 0..b.len() {
                assert_eq!(decode_varint(&b[..cut]), Ok(None));
            }
        }
    }

    #[test]
    fn rejects_fifth_byte_and_long_forms() {
        assert_eq!(
            decode_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(
            decode_varint(&[0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(
            decode_varint(&[0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
        assert_eq!(
            decode_varint(&[0xFF, 0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
    }
}
