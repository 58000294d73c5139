//! A pull reader of one JSON text (RFC 8259) over a payload already checked to be UTF-8: what
//! [`super::columns`] decodes rows with. It yields tokens in place (spans of the payload, never
//! a copy unless a string has escapes), so that a row's values go from the payload straight into
//! their columns. No recursion: nesting is the caller's (bounded by the schema's depth), and
//! values that are skipped are walked with a counter, bounded by [`MAX_SKIP_DEPTH`].

/// Deepest nesting of a value the schema does not name (it is skipped).
pub(crate) const MAX_SKIP_DEPTH: usize = 256;

/// Why a payload is not JSON: what was expected, and at which byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Syntax {
    /// What was expected there.
    pub(crate) what: &'static str,
    /// Byte offset.
    pub(crate) at: usize,
}

/// A JSON number as written: its text, whether it is an integer literal (no fraction, no
/// exponent), and its digits read on the way (for the callers' fast paths).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Number<'a> {
    pub(crate) text: &'a str,
    pub(crate) integer: bool,
    /// The digits before and after the point as one integer (meaningful for at most 19).
    pub(crate) mantissa: u64,
    /// How many digits that is.
    pub(crate) digits: u32,
    /// How many of them follow the point.
    pub(crate) fraction: u32,
    /// Written with an exponent.
    pub(crate) exponent: bool,
    /// Written with a minus sign.
    pub(crate) negative: bool,
}

/// The kind of the next value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Object,
    Array,
    String,
    Number,
    True,
    False,
    Null,
}

impl Kind {
    /// For messages: "a string", "an object", ...
    pub(crate) fn described(self) -> &'static str {
        match self {
            Self::Object => "an object",
            Self::Array => "an array",
            Self::String => "a string",
            Self::Number => "a number",
            Self::True | Self::False => "a boolean",
            Self::Null => "null",
        }
    }
}

/// The reader: a position in `text`.
#[derive(Debug)]
pub(crate) struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn err(&self, what: &'static str) -> Syntax {
        Syntax { what, at: self.pos }
    }

    /// Skips whitespace.
    #[inline]
    pub(crate) fn ws(&mut self) {
        let b = self.bytes();
        while let Some(c) = b.get(self.pos) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// The text from here on (after whitespace).
    pub(crate) fn rest(&mut self) -> &'a str {
        self.ws();
        &self.text[self.pos..]
    }

    /// Whitespace, then the end of the text.
    pub(crate) fn end(&mut self) -> Result<(), Syntax> {
        self.ws();
        if self.pos == self.text.len() {
            Ok(())
        } else {
            Err(self.err("the end of the payload after the value"))
        }
    }

    /// The kind of the value that starts here (after whitespace), without taking it.
    #[inline]
    pub(crate) fn peek_kind(&mut self) -> Result<Kind, Syntax> {
        self.ws();
        match self.bytes().get(self.pos) {
            Some(b'{') => Ok(Kind::Object),
            Some(b'[') => Ok(Kind::Array),
            Some(b'"') => Ok(Kind::String),
            Some(b'-' | b'0'..=b'9') => Ok(Kind::Number),
            Some(b't') => Ok(Kind::True),
            Some(b'f') => Ok(Kind::False),
            Some(b'n') => Ok(Kind::Null),
            _ => Err(self.err("a value")),
        }
    }

    /// Takes `c` (after whitespace).
    #[inline]
    pub(crate) fn expect(&mut self, c: u8, what: &'static str) -> Result<(), Syntax> {
        self.ws();
        if self.bytes().get(self.pos) == Some(&c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    /// After `{` or a member: `Ok(true)` when another member follows (its `,` taken, or the
    /// first one), `Ok(false)` at `}` (taken).
    #[inline]
    pub(crate) fn next_member(&mut self, first: bool) -> Result<bool, Syntax> {
        self.ws();
        match self.bytes().get(self.pos) {
            Some(b'}') => {
                self.pos += 1;
                Ok(false)
            }
            Some(b',') if !first => {
                self.pos += 1;
                self.ws();
                Ok(true)
            }
            Some(b'"') if first => Ok(true),
            _ => Err(self.err(if first { "a key or '}'" } else { "',' or '}'" })),
        }
    }

    /// After `[` or an element: `Ok(true)` when another element follows, `Ok(false)` at `]`.
    #[inline]
    pub(crate) fn next_element(&mut self, first: bool) -> Result<bool, Syntax> {
        self.ws();
        match self.bytes().get(self.pos) {
            Some(b']') => {
                self.pos += 1;
                Ok(false)
            }
            Some(b',') if !first => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) if first => Ok(true),
            _ => Err(self.err("',' or ']'")),
        }
    }

    /// A key and its `:`: the raw text between the quotes, and whether it has escapes.
    #[inline]
    pub(crate) fn key(&mut self) -> Result<(&'a str, bool), Syntax> {
        let k = self.string_raw()?;
        self.expect(b':', "':' after the key")?;
        Ok(k)
    }

    /// A string value: the raw text between the quotes (escapes not decoded) and whether it
    /// has any. The quote must be next (after whitespace). Eight bytes at a time ([`special`]):
    /// the first quote, backslash or control character is found in one pass.
    #[inline]
    pub(crate) fn string_raw(&mut self) -> Result<(&'a str, bool), Syntax> {
        self.expect(b'"', "'\"'")?;
        let start = self.pos;
        let b = self.bytes();
        let mut i = start;
        let mut escaped = false;
        loop {
            while let Some(word) = b.get(i..i + 8) {
                let mut w = [0u8; 8];
                w.copy_from_slice(word);
                let m = special(u64::from_le_bytes(w));
                if m != 0 {
                    i += (m.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            let Some(&c) = b.get(i) else {
                self.pos = i;
                return Err(self.err("the string's closing '\"'"));
            };
            match c {
                b'"' => {
                    self.pos = i + 1;
                    return Ok((&self.text[start..i], escaped));
                }
                b'\\' => {
                    escaped = true;
                    i += match b.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 2,
                        Some(b'u') => {
                            let hex = b.get(i + 2..i + 6);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                self.pos = i;
                                return Err(self.err("four hex digits after \\u"));
                            }
                            6
                        }
                        _ => {
                            self.pos = i;
                            return Err(self.err("a valid escape"));
                        }
                    };
                }
                0..=0x1f => {
                    self.pos = i;
                    return Err(self.err("no control characters in a string"));
                }
                _ => i += 1,
            }
        }
    }

    /// A number.
    #[inline]
    pub(crate) fn number(&mut self) -> Result<Number<'a>, Syntax> {
        self.ws();
        let b = self.bytes();
        let start = self.pos;
        let mut i = start;
        let negative = b.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let mut mantissa = 0u64;
        let mut digits = 0u32;
        let take_digits = |i: &mut usize, mantissa: &mut u64, digits: &mut u32| {
            while let Some(&c) = b.get(*i).filter(|c| c.is_ascii_digit()) {
                *mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                *digits += 1;
                *i += 1;
            }
        };
        match b.get(i) {
            Some(b'0') => {
                i += 1;
                digits = 1;
            }
            Some(b'1'..=b'9') => take_digits(&mut i, &mut mantissa, &mut digits),
            _ => {
                self.pos = i;
                return Err(self.err("a digit"));
            }
        }
        let mut integer = true;
        let mut fraction = 0;
        if b.get(i) == Some(&b'.') {
            integer = false;
            i += 1;
            if !b.get(i).is_some_and(u8::is_ascii_digit) {
                self.pos = i;
                return Err(self.err("a digit after '.'"));
            }
            let before = digits;
            take_digits(&mut i, &mut mantissa, &mut digits);
            fraction = digits - before;
        }
        let mut exponent = false;
        if matches!(b.get(i), Some(b'e' | b'E')) {
            integer = false;
            exponent = true;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !b.get(i).is_some_and(u8::is_ascii_digit) {
                self.pos = i;
                return Err(self.err("a digit in the exponent"));
            }
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        self.pos = i;
        Ok(Number {
            text: &self.text[start..i],
            integer,
            mantissa,
            digits,
            fraction,
            exponent,
            negative,
        })
    }

    /// Whether the key here (after whitespace) is `name` exactly, written without escapes: then
    /// it is taken, with its `:`. The common case of a row whose keys come in the order of the
    /// previous one: no scan of the key before the compare.
    #[inline]
    pub(crate) fn key_is(&mut self, name: &[u8]) -> Result<bool, Syntax> {
        self.ws();
        let b = self.bytes();
        let p = self.pos;
        let end = p + 1 + name.len();
        if b.get(p) == Some(&b'"') && b.get(end) == Some(&b'"') && same(&b[p + 1..end], name) {
            self.pos = end + 1;
            self.expect(b':', "':' after the key")?;
            return Ok(true);
        }
        Ok(false)
    }

    /// `true`, `false` or `null`, as [`Cursor::peek_kind`] said.
    pub(crate) fn literal(&mut self, kind: Kind) -> Result<(), Syntax> {
        let word: &[u8] = match kind {
            Kind::True => b"true",
            Kind::False => b"false",
            _ => b"null",
        };
        if self.bytes()[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.err("true, false or null"))
        }
    }

    /// Skips one value, checking its syntax; returns its text.
    pub(crate) fn skip_value(&mut self) -> Result<&'a str, Syntax> {
        self.ws();
        let start = self.pos;
        // Bit `d` set: the container at depth `d` is an object (else an array).
        let mut objects = [0u64; MAX_SKIP_DEPTH / 64];
        let mut depth = 0usize;
        'value: loop {
            match self.peek_kind()? {
                kind @ (Kind::Object | Kind::Array) => {
                    self.pos += 1;
                    if depth == MAX_SKIP_DEPTH {
                        return Err(self.err("less nesting"));
                    }
                    let object = kind == Kind::Object;
                    if object {
                        objects[depth / 64] |= 1 << (depth % 64);
                    } else {
                        objects[depth / 64] &= !(1 << (depth % 64));
                    }
                    depth += 1;
                    let more = if object {
                        self.next_member(true)?
                    } else {
                        self.next_element(true)?
                    };
                    if more {
                        if object {
                            self.key()?;
                        }
                        continue 'value;
                    }
                    depth -= 1;
                }
                Kind::String => {
                    self.string_raw()?;
                }
                Kind::Number => {
                    self.number()?;
                }
                k => self.literal(k)?,
            }
            // A value ended: the next member or element, or close containers.
            loop {
                if depth == 0 {
                    return Ok(&self.text[start..self.pos]);
                }
                let d = depth - 1;
                if objects[d / 64] & (1 << (d % 64)) != 0 {
                    if self.next_member(false)? {
                        self.key()?;
                        continue 'value;
                    }
                } else if self.next_element(false)? {
                    continue 'value;
                }
                depth -= 1;
            }
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// A mask with the high bit set in the lowest byte of `w` (little-endian) that is `"`, `\\` or
/// below 0x20, and maybe in bytes above it; zero when there is none. The usual "has zero byte"
/// trick: a byte is flagged when subtracting one (or 0x20) borrows out of it; a borrow only
/// reaches higher bytes, so the lowest flag is exact.
#[inline]
fn special(w: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = zero(w ^ (ONES * u64::from(b'"')));
    let backslash = zero(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    quote | backslash | control
}

/// Byte slices equal (short ones compared without a call).
#[inline]
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i + 8 <= a.len() {
        let (mut x, mut y) = ([0u8; 8], [0u8; 8]);
        x.copy_from_slice(&a[i..i + 8]);
        y.copy_from_slice(&b[i..i + 8]);
        if x != y {
            return false;
        }
        i += 8;
    }
    a[i..].iter().zip(&b[i..]).all(|(x, y)| x == y)
}

/// Decodes the escapes of a string's raw text (from [`Cursor::string_raw`]) onto `out`.
/// Unpaired surrogates become U+FFFD.
pub(crate) fn unescape_into(raw: &str, out: &mut Vec<u8>) {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let Some(off) = memchr::memchr(b'\\', &b[i..]) else {
            out.extend_from_slice(&b[i..]);
            return;
        };
        out.extend_from_slice(&b[i..i + off]);
        i += off;
        // `raw` was checked by `string_raw`: an escape is complete.
        let e = b.get(i + 1).copied().unwrap_or(b'\\');
        let simple = match e {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
            continue;
        }
        let hex = |at: usize| {
            raw.get(at..at + 4)
                .and_then(|h| u32::from_str_radix(h, 16).ok())
        };
        let Some(first) = hex(i + 2) else {
            out.extend_from_slice("\u{FFFD}".as_bytes());
            i += 2;
            continue;
        };
        i += 6;
        let code = if (0xD800..0xDC00).contains(&first) {
            match (b.get(i), b.get(i + 1), hex(i + 2)) {
                (Some(b'\\'), Some(b'u'), Some(low)) if (0xDC00..0xE000).contains(&low) => {
                    i += 6;
                    0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
                }
                _ => 0xFFFD,
            }
        } else if (0xDC00..0xE000).contains(&first) {
            0xFFFD
        } else {
            first
        };
        let c = char::from_u32(code).unwrap_or('\u{FFFD}');
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_what_it_is_given_and_refuses_what_is_not_json() {
        for ok in [
            "1",
            "-0.5e+3",
            "\"a\\\"b\"",
            "[]",
            "{}",
            "[1,[2,[3]],{\"a\":[{}]}]",
            "{\"a\":{\"b\":[1,\"x\",null,true,false]},\"c\":\"d\"}",
            "[\"a\",\"b\"]",
            "[\"k\", 1]",
        ] {
            let mut c = Cursor::new(ok);
            assert_eq!(c.skip_value(), Ok(ok), "{ok}");
            assert_eq!(c.end(), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "01",
            "1.",
            "-",
            "[1,]",
            "{\"a\"}",
            "{\"a\":}",
            "[1 2]",
            "\"\\x\"",
            "\"a",
            "tru",
            "{,}",
            "[",
            "{\"a\":1,}",
            "\"\u{1}\"",
        ] {
            let mut c = Cursor::new(bad);
            let r = c.skip_value().and_then(|_| c.end());
            assert!(r.is_err(), "{bad:?} is not JSON");
        }
    }

    #[test]
    fn nesting_past_the_bound_is_refused() {
        let deep = "[".repeat(MAX_SKIP_DEPTH + 1) + &"]".repeat(MAX_SKIP_DEPTH + 1);
        assert!(Cursor::new(&deep).skip_value().is_err());
        let fine = "[".repeat(MAX_SKIP_DEPTH) + &"]".repeat(MAX_SKIP_DEPTH);
        assert!(Cursor::new(&fine).skip_value().is_ok());
    }

    #[test]
    fn strings_are_found_eight_bytes_at_a_time() {
        for (text, raw) in [
            (r#""""#, ""),
            (
                r#""abcdefghijklmnopqrstuvwxyz""#,
                "abcdefghijklmnopqrstuvwxyz",
            ),
            (
                "\"d\u{e9}vice-\u{1F600}-0042 long enough\"",
                "d\u{e9}vice-\u{1F600}-0042 long enough",
            ),
            (r#""1234567\"8901234""#, r#"1234567\"8901234"#),
        ] {
            let mut c = Cursor::new(text);
            assert_eq!(c.string_raw().map(|(r, _)| r), Ok(raw), "{text}");
        }
        assert!(Cursor::new("\"abcdefgh\u{7}ijk\"").string_raw().is_err());
        assert!(Cursor::new("\"abcdefghijklmnop").string_raw().is_err());
        for w in 0..=255u8 {
            let word = u64::from_le_bytes([b'a', b'b', w, b'c', b'd', b'e', b'f', b'g']);
            let want = w == b'"' || w == b'\\' || w < 0x20;
            assert_eq!(special(word) != 0, want, "{w}");
            if want {
                assert_eq!(special(word).trailing_zeros() / 8, 2);
            }
        }
        assert!(same(b"temperature", b"temperature") && !same(b"temperaturE", b"temperature"));
    }

    #[test]
    fn escapes_are_decoded() {
        let mut out = Vec::new();
        unescape_into(r#"a\"b\\c\/d\n\u00e9\ud83d\ude00\udc00x"#, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "a\"b\\c/d\n\u{e9}\u{1F600}\u{FFFD}x"
        );
    }

    #[test]
    fn numbers_say_whether_they_are_integers() {
        let n = Cursor::new("-12").number().expect("number");
        assert!(n.integer && n.text == "-12");
        assert!(!Cursor::new("1.5").number().expect("number").integer);
        assert!(!Cursor::new("1e3").number().expect("number").integer);
    }
}
