//! Resource values that become part of a file path, made safe: a secret, ConfigMap or volume
//! claim name is one path segment or refused ([`is_single_segment`]), and a service account
//! token's audience becomes a file name that cannot leave the token folder
//! ([`token_file_name`]). Both processes use these, so that what `validate` accepts is what the
//! data plane reads.

use std::borrow::Cow;

/// Whether `name` is one path segment: not empty, not `.` or `..`, no `/`, `\` or NUL.
pub fn is_single_segment(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// The file in `--token-dir` that holds the service account token for `audience`: the audience
/// itself when it is made of ASCII letters, digits, `.`, `_` and `-` (and is not `.` or `..`),
/// as a projected volume names it (`aio-internal`); otherwise every other byte, and the dots of
/// `.` and `..`, are percent-encoded (`https://example.net` is `https%3A%2F%2Fexample.net`).
/// The result is always one path segment: an audience never names a file outside the folder.
pub fn token_file_name(audience: &str) -> Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if audience.bytes().all(plain) && is_single_segment(audience) {
        return Cow::Borrowed(audience);
    }
    let dots_only = audience.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(audience.len() * 3);
    for b in audience.bytes() {
        if plain(b) && !(dots_only && b == b'.') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00"); // an empty audience still names a file of its own
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_stay_in_the_folder() {
        assert_eq!(token_file_name("aio-internal"), "aio-internal");
        assert_eq!(token_file_name("my.audience_1"), "my.audience_1");
        assert_eq!(
            token_file_name("../secrets/other/password"),
            "..%2Fsecrets%2Fother%2Fpassword"
        );
        assert_eq!(token_file_name("/etc/hostname"), "%2Fetc%2Fhostname");
        assert_eq!(token_file_name(".."), "%2E%2E");
        assert_eq!(token_file_name("."), "%2E");
        assert_eq!(token_file_name(""), "%00");
        assert_eq!(
            token_file_name("https://eventgrid.azure.net"),
            "https%3A%2F%2Feventgrid.azure.net"
        );
        for a in ["..", ".", "", "../x", "/x", "a\\b", "a\0b", "é/"] {
            assert!(is_single_segment(&token_file_name(a)), "{a:?}");
        }
    }

    #[test]
    fn names_are_one_segment() {
        assert!(is_single_segment("login"));
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b", "../x"] {
            assert!(!is_single_segment(bad), "{bad:?}");
        }
    }
}
