//! Destination topic templates (`dataDestination`): `${inputTopic}` and `${inputTopic.N}` in a topic
//! name, parsed once and resolved per message without allocating.
//!
//! # Rules
//!
//! `dataDestination` is a topic name in which `${inputTopic}` stands for the whole source topic
//! and `${inputTopic.N}` for its N-th level, counted from 1. Literal text and any number of
//! placeholders may be mixed (`factory/${inputTopic.2}/out`). As Azure IoT Operations documents
//! it ("Dynamic destination topics" in *Configure a data flow destination*):
//!
//! - levels are counted after leading and trailing slashes are ignored: in `/a/b/` level 1 is `a`
//!   and there is no level 3. Between them the topic is split on every `/`, as MQTT does, so an
//!   empty level counts: in `a//b` level 2 is empty and level 3 is `b`;
//! - a placeholder that cannot be resolved (`${inputTopic.5}` of a three-level topic) drops the
//!   message (`DropReason::UnresolvedTopic`), as does a result that is not a valid topic name
//!   (empty, longer than 65,535 bytes, or holding `+` or `#`) and a source topic that is empty
//!   (a 5.0 Topic Alias that the session did not resolve);
//! - `$inputTopic` without braces is literal text (`$`, `{` and `}` are valid in topic names).
//!
//! [`TopicTemplate::parse`] checks the rest of the syntax again (config validation already did).
//!
use std::fmt;
use std::num::NonZeroU32;

use bytes::BytesMut;
use sluice_codec::ByteStr;
use sluice_codec::topic::validate_topic_name;

/// The longest topic name: a UTF-8 string has a two-byte length (§1.5.4).
pub(crate) const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// How much the scratch buffer of a [`super::route::Route`] grows by when resolved topics have used it up.
pub(crate) const SCRATCH_CHUNK: usize = 64 * 1024;

/// What is wrong with a destination topic template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateError {
    /// The template is empty: a topic name has at least one character ([MQTT-4.7.3-1]).
    #[error("the destination topic is empty [MQTT-4.7.3-1]")]
    Empty,
    /// `${` without a closing `}`.
    #[error("\"${{\" at byte {at} has no closing '}}'")]
    Unclosed {
        /// Byte offset of the `$`.
        at: usize,
    },
    /// A variable other than `inputTopic` and `inputTopic.N`.
    #[error("unknown variable \"${{{name}}}\": expected ${{inputTopic}} or ${{inputTopic.N}}")]
    UnknownVariable {
        /// What stood between the braces.
        name: String,
    },
    /// `${inputTopic.N}` with an N that is not a number from 1 to 4,294,967,295.
    #[error("\"${{{name}}}\": topic levels are numbered from 1")]
    InvalidLevel {
        /// What stood between the braces.
        name: String,
    },
    /// The literal text holds `+` or `#` ([MQTT-3.3.2-2]).
    #[error("the destination topic contains a wildcard character ('+' or '#') [MQTT-3.3.2-2]")]
    Wildcard,
    /// The literal text holds U+0000 ([MQTT-4.7.3-2]).
    #[error("the destination topic contains U+0000 [MQTT-4.7.3-2]")]
    NullCharacter,
    /// The literal text alone is longer than a topic name can be.
    #[error("the destination topic is {len} bytes long; a topic name has at most 65535")]
    TooLong {
        /// Length of the literal text, in bytes.
        len: usize,
    },
}

/// One piece of a template with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<str>),
    /// `${inputTopic}`.
    Whole,
    /// `${inputTopic.N}`.
    Level(NonZeroU32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// No placeholder: the topic itself, cloned for each message.
    Static(ByteStr),
    /// Exactly `${inputTopic}`.
    Whole,
    /// Anything else.
    Mixed {
        parts: Box<[Part]>,
        /// Sum of the literal lengths, in bytes.
        literal_len: usize,
        /// How many placeholders.
        placeholders: usize,
    },
}

/// A parsed `dataDestination`: see the [module](self) documentation for the rules. For
/// example `processed/${inputTopic.2}/${inputTopic.3}` gives `processed/1/data` for
/// `factory/1/data` and nothing (the message is dropped) for `factory/1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicTemplate {
    text: Box<str>,
    kind: Kind,
}

impl TopicTemplate {
    /// Parses a destination topic template.
    ///
    /// # Errors
    /// The [`TemplateError`] for the first problem found.
    pub(crate) fn parse(template: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut literal_len = 0;
        let mut placeholders = 0;
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            literal.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(TemplateError::Unclosed {
                    at: template.len() - rest.len() + start,
                });
            };
            let name = &after[..end];
            let part = match name.strip_prefix("inputTopic") {
                Some("") => Part::Whole,
                Some(index) => match index.strip_prefix('.').map(str::parse::<NonZeroU32>) {
                    Some(Ok(n)) => Part::Level(n),
                    _ => {
                        return Err(TemplateError::InvalidLevel {
                            name: name.to_owned(),
                        });
                    }
                },
                None => {
                    return Err(TemplateError::UnknownVariable {
                        name: name.to_owned(),
                    });
                }
            };
            if !literal.is_empty() {
                check_literal(&literal)?;
                literal_len += literal.len();
                parts.push(Part::Literal(std::mem::take(&mut literal).into_boxed_str()));
            }
            parts.push(part);
            placeholders += 1;
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            check_literal(&literal)?;
            literal_len += literal.len();
            parts.push(Part::Literal(literal.into_boxed_str()));
        }
        if literal_len > MAX_TOPIC_LEN {
            return Err(TemplateError::TooLong { len: literal_len });
        }
        let kind = match parts.as_slice() {
            [] => return Err(TemplateError::Empty),
            [Part::Literal(s)] => {
                let topic = ByteStr::from(String::from(&**s));
                // A `Bytes` made from a `Vec` allocates its shared header on the first clone;
                // do it now, so that every clone per message is a reference count only.
                drop(topic.clone());
                Kind::Static(topic)
            }
            [Part::Whole] => Kind::Whole,
            _ => Kind::Mixed {
                parts: parts.into_boxed_slice(),
                literal_len,
                placeholders,
            },
        };
        Ok(Self {
            text: template.into(),
            kind,
        })
    }

    /// The destination topic for a message received on `input_topic`, or `None` when the template
    /// cannot be resolved for it: a level it does not have (`${inputTopic.5}` of a three-level
    /// topic), an empty source topic, or a result that is not a valid topic name (empty, longer
    /// than 65,535 bytes, or containing `+` or `#`).
    ///
    /// A static template and exactly `${inputTopic}` return a reference-counted clone, without
    /// touching `scratch`. Other templates clear `scratch`, write the topic into it and split it
    /// off (`scratch.split().freeze()`): no allocation while the buffer has room, and it grows by
    /// [`SCRATCH_CHUNK`] bytes at a time. Whatever `scratch` held before is discarded; only its
    /// capacity is used.
    pub(crate) fn resolve(&self, input_topic: &ByteStr, scratch: &mut BytesMut) -> Option<ByteStr> {
        match &self.kind {
            Kind::Static(topic) => Some(topic.clone()),
            Kind::Whole => valid_topic(input_topic).then(|| input_topic.clone()),
            Kind::Mixed {
                parts,
                literal_len,
                placeholders,
            } => {
                if input_topic.is_empty() {
                    return None;
                }
                let bound = literal_len + placeholders * input_topic.len();
                scratch.clear();
                if scratch.capacity() < bound {
                    scratch.reserve(bound.max(SCRATCH_CHUNK));
                }
                for part in parts.iter() {
                    let piece = match part {
                        Part::Literal(s) => &**s,
                        Part::Whole => input_topic.as_str(),
                        Part::Level(n) => match level(input_topic, *n) {
                            Some(l) => l,
                            None => {
                                scratch.clear();
                                return None;
                            }
                        },
                    };
                    scratch.extend_from_slice(piece.as_bytes());
                }
                // Always UTF-8 without U+0000 (pieces of a template checked by `parse` and of a
                // topic name); checked again because `ByteStr` has no unchecked constructor
                // outside the codec. One pass over a short string.
                let topic = ByteStr::try_from_bytes(scratch.split().freeze()).ok()?;
                valid_topic(&topic).then_some(topic)
            }
        }
    }

    /// Whether the template has no placeholder: every message goes to the same topic.
    #[cfg(test)]
    pub(crate) fn is_static(&self) -> bool {
        matches!(self.kind, Kind::Static(_))
    }

    /// The template as it was written.
    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn check_literal(s: &str) -> Result<(), TemplateError> {
    if s.contains(['+', '#']) {
        Err(TemplateError::Wildcard)
    } else if s.contains('\0') {
        Err(TemplateError::NullCharacter)
    } else {
        Ok(())
    }
}

/// A valid topic name (not empty, no wildcard, no U+0000) that fits in a PUBLISH.
fn valid_topic(topic: &str) -> bool {
    topic.len() <= MAX_TOPIC_LEN && validate_topic_name(topic).is_ok()
}

/// Level `n` (from 1) of `topic`, with leading and trailing slashes ignored.
fn level(topic: &str, n: NonZeroU32) -> Option<&str> {
    let trimmed = topic.trim_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    trimmed.split('/').nth(n.get() as usize - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &'static str) -> ByteStr {
        ByteStr::from_static(s)
    }

    fn resolve(template: &str, input: &'static str) -> Option<String> {
        let t = TopicTemplate::parse(template).expect("valid template");
        t.resolve(&topic(input), &mut BytesMut::new())
            .map(|t| t.to_string())
    }

    #[test]
    fn the_documented_example() {
        let t = TopicTemplate::parse("processed/${inputTopic.2}/${inputTopic.3}").expect("valid");
        let mut scratch = BytesMut::new();
        let out = t.resolve(&topic("factory/1/data"), &mut scratch);
        assert_eq!(out.as_deref(), Some("processed/1/data"));
        assert_eq!(t.resolve(&topic("factory/1"), &mut scratch), None);
    }

    // ---- templates ----

    #[test]
    fn static_template() {
        let t = TopicTemplate::parse("processed/all").expect("valid");
        assert!(t.is_static());
        assert_eq!(t.as_str(), "processed/all");
        assert_eq!(t.to_string(), "processed/all");
        let mut scratch = BytesMut::new();
        let a = t.resolve(&topic("x/y"), &mut scratch).expect("resolves");
        let b = t.resolve(&topic("z"), &mut scratch).expect("resolves");
        assert_eq!(a, "processed/all");
        // The same buffer each time, and the scratch buffer untouched.
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
        assert_eq!(scratch.capacity(), 0);
        // Characters that look like a template but are not one stay literal.
        for s in [
            "$inputTopic.2",
            "a/{inputTopic}",
            "$",
            "a}b",
            "/",
            "$share/x",
        ] {
            let t = TopicTemplate::parse(s).expect("valid");
            assert!(t.is_static(), "{s}");
            assert_eq!(t.resolve(&topic("a/b"), &mut scratch).as_deref(), Some(s));
        }
    }

    #[test]
    fn whole_topic_is_the_source_topic() {
        let t = TopicTemplate::parse("${inputTopic}").expect("valid");
        assert!(!t.is_static());
        let mut scratch = BytesMut::new();
        let input = ByteStr::from(String::from("factory/1/data"));
        let out = t.resolve(&input, &mut scratch).expect("resolves");
        assert_eq!(out, "factory/1/data");
        assert_eq!(out.as_bytes().as_ptr(), input.as_bytes().as_ptr());
        assert_eq!(scratch.capacity(), 0);
        // An alias-only (empty) source topic cannot be forwarded.
        assert_eq!(t.resolve(&ByteStr::new(), &mut scratch), None);
        // Nor one that is not a topic name (a Publish built by hand).
        assert_eq!(t.resolve(&topic("a/+"), &mut scratch), None);
    }

    #[test]
    fn levels_and_mixed_templates() {
        assert_eq!(
            resolve("processed/factory/${inputTopic.2}", "factory/1/data").as_deref(),
            Some("processed/factory/1")
        );
        assert_eq!(
            resolve("${inputTopic.1}", "factory/1/data").as_deref(),
            Some("factory")
        );
        assert_eq!(
            resolve("${inputTopic.3}", "factory/1/data").as_deref(),
            Some("data")
        );
        assert_eq!(
            resolve("factory/${inputTopic.2}/out", "plant/line-7/temp").as_deref(),
            Some("factory/line-7/out")
        );
        assert_eq!(
            resolve("${inputTopic.3}/${inputTopic.1}-${inputTopic.3}", "a/b/c").as_deref(),
            Some("c/a-c")
        );
        assert_eq!(
            resolve("copy/${inputTopic}", "a/b").as_deref(),
            Some("copy/a/b")
        );
        assert_eq!(
            resolve("${inputTopic}/${inputTopic}", "a/b").as_deref(),
            Some("a/b/a/b")
        );
        assert_eq!(
            resolve("${inputTopic.1}", "single").as_deref(),
            Some("single")
        );
        // UTF-8 levels are cut on '/', never inside a character.
        assert_eq!(
            resolve("o/${inputTopic.2}", "caf\u{e9}/\u{1f600}/x").as_deref(),
            Some("o/\u{1f600}")
        );
        // `$` and braces around a placeholder are literal text.
        assert_eq!(resolve("$${inputTopic.1}}", "a/b").as_deref(), Some("$a}"));
    }

    #[test]
    fn out_of_range_levels_are_unresolved() {
        assert_eq!(resolve("x/${inputTopic.4}", "factory/1/data"), None);
        assert_eq!(resolve("${inputTopic.5}", "factory/1/data"), None);
        assert_eq!(
            resolve("x/${inputTopic.4294967295}", "factory/1/data"),
            None
        );
        assert_eq!(resolve("x/${inputTopic.2}", "single"), None);
        // An empty source topic resolves nothing.
        let t = TopicTemplate::parse("x/${inputTopic}").expect("valid");
        assert_eq!(t.resolve(&ByteStr::new(), &mut BytesMut::new()), None);
    }

    /// Leading and trailing slashes are ignored (AIO); in between, every `/` separates levels,
    /// so empty levels count (MQTT).
    #[test]
    fn slashes_and_empty_levels() {
        assert_eq!(resolve("${inputTopic.1}", "/a/b/").as_deref(), Some("a"));
        assert_eq!(resolve("${inputTopic.2}", "/a/b/").as_deref(), Some("b"));
        assert_eq!(resolve("${inputTopic.3}", "/a/b/"), None);
        assert_eq!(resolve("${inputTopic.1}", "//a//").as_deref(), Some("a"));
        // Interior empty levels count.
        assert_eq!(resolve("${inputTopic.3}", "a//b").as_deref(), Some("b"));
        assert_eq!(
            resolve("x/${inputTopic.2}/y", "a//b").as_deref(),
            Some("x//y")
        );
        // An empty level alone is not a topic name.
        assert_eq!(resolve("${inputTopic.2}", "a//b"), None);
        // A topic of slashes only has no level.
        assert_eq!(resolve("x/${inputTopic.1}", "/"), None);
        assert_eq!(resolve("x/${inputTopic.1}", "///"), None);
        // `${inputTopic}` is the whole topic, slashes included.
        assert_eq!(resolve("x${inputTopic}", "/a/").as_deref(), Some("x/a/"));
        assert_eq!(resolve("${inputTopic}", "/a/").as_deref(), Some("/a/"));
    }

    #[test]
    fn results_too_long_are_unresolved() {
        let long = format!("{}/b", "a".repeat(40_000));
        let long: &'static str = Box::leak(long.into_boxed_str());
        assert_eq!(
            resolve("${inputTopic}", long).map(|s| s.len()),
            Some(40_002)
        );
        assert_eq!(resolve("${inputTopic}/${inputTopic}", long), None);
        assert_eq!(
            resolve("x/${inputTopic.1}", long).map(|s| s.len()),
            Some(40_002)
        );
    }

    #[test]
    fn invalid_templates_are_rejected() {
        use TemplateError as E;
        let err = |s: &str| TopicTemplate::parse(s).expect_err(s);
        assert_eq!(err(""), E::Empty);
        assert_eq!(err("a/${inputTopic"), E::Unclosed { at: 2 });
        assert_eq!(err("${"), E::Unclosed { at: 0 });
        assert_eq!(
            err("a/${inputTopik}"),
            E::UnknownVariable {
                name: "inputTopik".into()
            }
        );
        assert_eq!(
            err("${}"),
            E::UnknownVariable {
                name: String::new()
            }
        );
        assert_eq!(
            err("${outputTopic}"),
            E::UnknownVariable {
                name: "outputTopic".into()
            }
        );
        for bad in [
            "inputTopic.0",
            "inputTopic.",
            "inputTopic.x",
            "inputTopic.-1",
            "inputTopic.4294967296",
            "inputTopic2",
            "inputTopic.1.2",
        ] {
            assert_eq!(
                err(&format!("a/${{{bad}}}")),
                E::InvalidLevel { name: bad.into() },
                "{bad}"
            );
        }
        assert_eq!(err("a/+/b"), E::Wildcard);
        assert_eq!(err("a/#"), E::Wildcard);
        assert_eq!(err("${inputTopic}/#"), E::Wildcard);
        assert_eq!(err("a\0b"), E::NullCharacter);
        assert_eq!(err(&"a".repeat(65_536)), E::TooLong { len: 65_536 });
        assert!(TopicTemplate::parse(&"a".repeat(65_535)).is_ok());
        // Messages name the problem.
        assert!(err("a/#").to_string().contains("MQTT-3.3.2-2"));
        assert!(err("${x}").to_string().contains("${x}"));
    }

    /// Resolved topics are cut from one chunk of the scratch buffer: no allocation per message.
    #[test]
    fn dynamic_topics_share_the_scratch_chunk() {
        let t = TopicTemplate::parse("out/${inputTopic.2}").expect("valid");
        let mut scratch = BytesMut::new();
        let a = t
            .resolve(&topic("a/first"), &mut scratch)
            .expect("resolves");
        let cap = scratch.capacity();
        assert!(cap >= SCRATCH_CHUNK - a.len(), "{cap}");
        let b = t
            .resolve(&topic("a/second"), &mut scratch)
            .expect("resolves");
        assert_eq!(a, "out/first");
        assert_eq!(b, "out/second");
        // `b` starts where `a` ended: the same allocation.
        assert_eq!(
            b.as_bytes().as_ptr(),
            a.as_bytes().as_ptr().wrapping_add(a.len())
        );
        assert_eq!(scratch.capacity(), cap - b.len());
        // A failed resolution leaves nothing behind.
        assert_eq!(t.resolve(&topic("only"), &mut scratch), None);
        assert!(scratch.is_empty());
        assert_eq!(scratch.capacity(), cap - b.len());
        // Leftovers in the scratch buffer are discarded, not prepended.
        scratch.extend_from_slice(b"junk");
        let c = t
            .resolve(&topic("a/third"), &mut scratch)
            .expect("resolves");
        assert_eq!(c, "out/third");
    }
}
