//! Topic names, topic filters, shared subscriptions and matching (§4.7, §4.8.2).
//!
//! These functions check and compare `&str`; they never allocate.

use std::fmt;

/// What is wrong with a topic name or topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TopicError {
    /// Topic names and filters are at least one character long ([MQTT-4.7.3-1]).
    Empty,
    /// A topic name contains `+` or `#` ([MQTT-3.3.2-2]).
    WildcardInName,
    /// The character U+0000 ([MQTT-4.7.3-2]).
    NullCharacter,
    /// `#` is not the last character of the filter ([MQTT-4.7.1-1]).
    MultiLevelNotLast,
    /// `#` shares its level with other characters ([MQTT-4.7.1-1]).
    MultiLevelNotAlone,
    /// `+` shares its level with other characters ([MQTT-4.7.1-2]).
    SingleLevelNotAlone,
    /// `$share/` with an empty ShareName ([MQTT-4.8.2-1]).
    SharedNameEmpty,
    /// A ShareName containing `+` or `#` ([MQTT-4.8.2-2]).
    SharedNameInvalid,
    /// `$share/<name>` without `/` and a topic filter after it ([MQTT-4.8.2-2]).
    SharedFilterMissing,
}

impl TopicError {
    /// The clause this error cites.
    pub const fn clause(self) -> &'static str {
        match self {
            Self::Empty => "MQTT-4.7.3-1",
            Self::WildcardInName => "MQTT-3.3.2-2",
            Self::NullCharacter => "MQTT-4.7.3-2",
            Self::MultiLevelNotLast | Self::MultiLevelNotAlone => "MQTT-4.7.1-1",
            Self::SingleLevelNotAlone => "MQTT-4.7.1-2",
            Self::SharedNameEmpty => "MQTT-4.8.2-1",
            Self::SharedNameInvalid | Self::SharedFilterMissing => "MQTT-4.8.2-2",
        }
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty",
            Self::WildcardInName => "a topic name contains a wildcard character ('+' or '#')",
            Self::NullCharacter => "contains U+0000",
            Self::MultiLevelNotLast => "'#' is not the last character",
            Self::MultiLevelNotAlone => "'#' does not stand alone in its level",
            Self::SingleLevelNotAlone => "'+' does not stand alone in its level",
            Self::SharedNameEmpty => "the ShareName of a $share/ filter is empty",
            Self::SharedNameInvalid => "the ShareName of a $share/ filter contains '+' or '#'",
            Self::SharedFilterMissing => {
                "a $share/<ShareName> has no '/' and topic filter after it"
            }
        })
    }
}

impl std::error::Error for TopicError {}

/// The prefix of a shared subscription filter.
pub const SHARE_PREFIX: &str = "$share/";

/// Checks a topic name: not empty, no wildcards, no U+0000.
///
/// # Errors
/// The [`TopicError`] that applies.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    check_name_chars(name)
}

/// Checks the characters of a topic name that may be empty (an MQTT 5.0 PUBLISH that uses a Topic
/// Alias may carry a zero-length topic).
pub(crate) fn check_name_chars(name: &str) -> Result<(), TopicError> {
    match memchr::memchr3(b'+', b'#', 0, name.as_bytes()) {
        None => Ok(()),
        Some(i) if name.as_bytes()[i] == 0 => Err(TopicError::NullCharacter),
        Some(_) => Err(TopicError::WildcardInName),
    }
}

/// Checks a topic filter, including a shared subscription (`$share/<ShareName>/<filter>`).
///
/// # Errors
/// The [`TopicError`] that applies.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    match parse_shared(filter)? {
        Some((_, inner)) => check_filter(inner),
        None => check_filter(filter),
    }
}

/// Splits a shared subscription filter into its ShareName and topic filter. Returns `Ok(None)` for
/// a filter that is not shared.
///
/// # Errors
/// [`TopicError::SharedNameEmpty`], [`TopicError::SharedNameInvalid`] or
/// [`TopicError::SharedFilterMissing`]. The inner filter is not checked here.
pub fn parse_shared(filter: &str) -> Result<Option<(&str, &str)>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
        return Ok(None);
    };
    let Some((name, inner)) = rest.split_once('/') else {
        return Err(if rest.is_empty() {
            TopicError::SharedNameEmpty
        } else {
            TopicError::SharedFilterMissing
        });
    };
    if name.is_empty() {
        return Err(TopicError::SharedNameEmpty);
    }
    if name.contains(['+', '#']) {
        return Err(TopicError::SharedNameInvalid);
    }
    if inner.is_empty() {
        return Err(TopicError::SharedFilterMissing);
    }
    Ok(Some((name, inner)))
}

/// Whether `filter` is a shared subscription filter.
pub fn is_shared(filter: &str) -> bool {
    filter.starts_with(SHARE_PREFIX)
}

fn check_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let bytes = filter.as_bytes();
    if memchr::memchr(0, bytes).is_some() {
        return Err(TopicError::NullCharacter);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') {
            if level != "#" {
                return Err(TopicError::MultiLevelNotAlone);
            }
            if levels.peek().is_some() {
                return Err(TopicError::MultiLevelNotLast);
            }
        } else if level.contains('+') && level != "+" {
            return Err(TopicError::SingleLevelNotAlone);
        }
    }
    Ok(())
}

/// Whether the topic name `name` matches the topic filter `filter` (§4.7). Both must be valid.
///
/// A shared filter matches through its inner filter. Filters starting with a wildcard do not match
/// topic names starting with `$` ([MQTT-4.7.2-1]).
pub fn matches(filter: &str, name: &str) -> bool {
    let filter = match parse_shared(filter) {
        Ok(Some((_, inner))) => inner,
        _ => filter,
    };
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut n = name.split('/');
    loop {
        match (f.next(), n.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(nl)) if fl == nl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(validate_topic_name("a/b/c"), Ok(()));
        assert_eq!(validate_topic_name("/"), Ok(()));
        assert_eq!(validate_topic_name("$SYS/x"), Ok(()));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullCharacter));
    }

    #[test]
    fn filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "+/+",
            "/+",
            "a/+/c",
            "sport/tennis/#",
            "$share/g/a/#",
            "$SYS/#",
            "+/",
        ] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
        }
        let bad = [
            ("", TopicError::Empty),
            ("a#", TopicError::MultiLevelNotAlone),
            ("a/#/b", TopicError::MultiLevelNotLast),
            ("a/b+", TopicError::SingleLevelNotAlone),
            ("+a", TopicError::SingleLevelNotAlone),
            ("$share/", TopicError::SharedNameEmpty),
            ("$share//a", TopicError::SharedNameEmpty),
            ("$share/g", TopicError::SharedFilterMissing),
            ("$share/g/", TopicError::SharedFilterMissing),
            ("$share/g+/a", TopicError::SharedNameInvalid),
            ("$share/g/a#", TopicError::MultiLevelNotAlone),
        ];
        for (f, e) in bad {
            assert_eq!(validate_topic_filter(f), Err(e), "{f}");
        }
    }

    #[test]
    fn matching() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "a/b", true),
            ("+", "a", true),
            ("+", "a/b", false),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("sport/+", "sport/", true),
            ("sport/+", "sport", false),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("#", "$SYS/x", false),
            ("+/monitor", "$SYS/monitor", false),
            ("$SYS/#", "$SYS/monitor", true),
            ("$share/g/a/+", "a/b", true),
            ("$share/g/#", "$SYS/b", false),
        ];
        for (f, n, want) in cases {
            assert_eq!(matches(f, n), want, "{f} vs {n}");
        }
    }
}
