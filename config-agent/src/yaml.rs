//! YAML loading with positions: a multi-document file becomes a list of [`Node`] trees, and
//! every node and every mapping key keeps its line and column.
//!
//! The parser is `saphyr` (YAML 1.2, core schema); this module turns its `MarkedYamlOwned` into
//! our own small tree so the rest of the crate does not depend on the parser's API. Scalars are
//! typed as the YAML 1.2 core schema says (`1` is an integer, `"1"` a string, `yes` a string),
//! duplicate keys are a syntax error, and alias expansion is bounded by the parser.
//! Empty documents (a stray `---`) are dropped, as kubectl does.

use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};

/// A position in a file, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// Line, 1-based.
    pub line: u32,
    /// Column, 1-based, in characters.
    pub column: u32,
}

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What it holds.
    pub value: Value,
}

/// The content of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating point number.
    Float(f64),
    /// A string (plain or quoted).
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order. Keys are strings (a scalar key such as `1` is kept as its
    /// text).
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The key's text.
    pub name: String,
    /// Where the key starts.
    pub pos: Pos,
}

impl Value {
    /// What kind of value this is, for messages: `a string`, `an integer`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a number",
            Self::Str(_) => "a string",
            Self::Seq(_) => "a list",
            Self::Map(_) => "a mapping",
        }
    }
}

/// A file that is not well-formed YAML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// The parser's description.
    pub message: String,
}

/// Parses every document of `text`.
///
/// # Errors
/// [`SyntaxError`] when the text is not well-formed YAML (including duplicate keys and a
/// complex, non-scalar mapping key); nothing of the file is returned then.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let docs = MarkedYamlOwned::load_from_str(text).map_err(|e| SyntaxError {
        pos: pos_of(e.marker().line(), e.marker().col()),
        message: e.info().to_owned(),
    })?;
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        let node = convert(doc)?;
        if node.value != Value::Null {
            out.push(node);
        }
    }
    Ok(out)
}

fn pos_of(line: usize, col: usize) -> Pos {
    Pos {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(col.saturating_add(1)).unwrap_or(u32::MAX),
    }
}

fn convert(node: MarkedYamlOwned) -> Result<Node, SyntaxError> {
    let pos = pos_of(node.span.start.line(), node.span.start.col());
    let value = match node.data {
        YamlDataOwned::Value(scalar) => scalar_value(scalar),
        YamlDataOwned::Representation(text, _, _) => Value::Str(text),
        YamlDataOwned::Sequence(items) => {
            Value::Seq(items.into_iter().map(convert).collect::<Result<_, _>>()?)
        }
        YamlDataOwned::Mapping(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (k, v) in map {
                let key_pos = pos_of(k.span.start.line(), k.span.start.col());
                let name = match convert(k)?.value {
                    Value::Str(s) => s,
                    Value::Int(i) => i.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Float(f) => f.to_string(),
                    Value::Null => "null".to_owned(),
                    other => {
                        return Err(SyntaxError {
                            pos: key_pos,
                            message: format!(
                                "a mapping key must be a scalar, not {}",
                                other.kind()
                            ),
                        });
                    }
                };
                entries.push((Key { name, pos: key_pos }, convert(v)?));
            }
            Value::Map(entries)
        }
        YamlDataOwned::Tagged(_, inner) => convert(*inner)?.value,
        YamlDataOwned::Alias(_) | YamlDataOwned::BadValue => {
            return Err(SyntaxError {
                pos,
                message: "unresolved alias or invalid value".to_owned(),
            });
        }
    };
    Ok(Node { pos, value })
}

fn scalar_value(scalar: ScalarOwned) -> Value {
    match scalar {
        ScalarOwned::Null => Value::Null,
        ScalarOwned::Boolean(b) => Value::Bool(b),
        ScalarOwned::Integer(i) => Value::Int(i),
        ScalarOwned::FloatingPoint(f) => Value::Float(f.into_inner()),
        ScalarOwned::String(s) => Value::Str(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_types() {
        let text = "a: 1\nb:\n  c: \"1\"\n  d: [x, true]\n---\n---\ne: yes\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2, "the empty document is dropped");
        let Value::Map(entries) = &docs[0].value else {
            panic!()
        };
        assert_eq!(entries[0].0.name, "a");
        assert_eq!(entries[0].0.pos, Pos { line: 1, column: 1 });
        assert_eq!(entries[0].1.value, Value::Int(1));
        let Value::Map(b) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(b[0].0.pos, Pos { line: 3, column: 3 });
        assert_eq!(b[0].1.value, Value::Str("1".into()));
        assert_eq!(b[0].1.pos.line, 3);
        let Value::Seq(d) = &b[1].1.value else {
            panic!()
        };
        assert_eq!(d[1].value, Value::Bool(true));
        let Value::Map(e) = &docs[1].value else {
            panic!()
        };
        assert_eq!(e[0].0.pos.line, 7);
        assert_eq!(e[0].1.value, Value::Str("yes".into()));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse_documents("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.pos.line, 2);
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1);
    }
}
