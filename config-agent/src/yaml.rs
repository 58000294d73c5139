//! YAML loading with positions: a multi-document file becomes a list of [`Node`] trees, and
//! every node and every mapping key keeps its line and column.
//!
//! The parser is `saphyr` (YAML 1.2, core schema); this module turns its `MarkedYamlOwned` into
//! our own small tree so the rest of the crate does not depend on the parser's API. Scalars are
//! typed as the YAML 1.2 core schema says (`1` is an integer, `"1"` a string, `yes` a string),
//! duplicate keys are a syntax error, and alias expansion is bounded by the parser.
//! Empty documents (a stray `---`) are dropped, as kubectl does.
//!
//! Documents are built one at a time ([`for_each_document`]): the parser's tree of a document is
//! dropped once it is converted, and the caller may drop ours once it is decoded, so a file of a
//! hundred thousand documents never holds more than one parser tree. Anchors are per document in
//! YAML, and so is the alias budget: at most [`ALIAS_NODES_PER_DOCUMENT`] nodes may come from
//! alias expansion in one document.

use saphyr::{MarkedYamlOwned, ScalarOwned, YamlDataOwned, YamlLoader};
use saphyr_parser::{Event, Parser, ScanError, Span, SpannedEventReceiver};

/// How many nodes alias expansion may produce in one document (a "billion laughs" document is
/// refused past it). Kubernetes manifests rarely use aliases at all.
pub const ALIAS_NODES_PER_DOCUMENT: usize = 10_000;

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
    let mut out = Vec::new();
    for_each_document(text, |node| out.push(node))?;
    Ok(out)
}

/// Parses `text` and hands each non-empty document to `each` as soon as it is complete, in file
/// order.
///
/// # Errors
/// [`SyntaxError`] as for [`parse_documents`]; the documents before the error have been handed
/// over already, and the caller decides what to keep of them.
pub fn for_each_document(text: &str, each: impl FnMut(Node)) -> Result<(), SyntaxError> {
    let mut documents = Documents {
        loader: document_loader(),
        each,
        error: None,
    };
    let parsed = Parser::new_from_str(text).load(&mut documents, true);
    if let Some(e) = documents.error {
        return Err(e);
    }
    parsed.map_err(|e| syntax_error(&e))
}

fn document_loader<'input>() -> YamlLoader<'input, MarkedYamlOwned> {
    let mut loader = YamlLoader::default();
    loader.alias_limit(ALIAS_NODES_PER_DOCUMENT);
    loader
}

fn syntax_error(e: &ScanError) -> SyntaxError {
    SyntaxError {
        pos: pos_of(e.marker().line(), e.marker().col()),
        message: e.info().to_owned(),
    }
}

/// The parser's event receiver: a fresh `saphyr` loader per document, converted and handed on at
/// the document's end.
struct Documents<'input, F> {
    loader: YamlLoader<'input, MarkedYamlOwned>,
    each: F,
    error: Option<SyntaxError>,
}

impl<'input, F: FnMut(Node)> SpannedEventReceiver<'input> for Documents<'input, F> {
    fn on_event(&mut self, event: Event<'input>, span: Span) {
        if self.error.is_some() {
            return;
        }
        let end = matches!(event, Event::DocumentEnd);
        self.loader.on_event(event, span);
        if let Some(e) = self.loader.error() {
            self.error = Some(syntax_error(e));
            return;
        }
        if !end {
            return;
        }
        let loader = std::mem::replace(&mut self.loader, document_loader());
        for doc in loader.into_documents() {
            match convert(doc) {
                Ok(node) if node.value == Value::Null => {}
                Ok(node) => (self.each)(node),
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        }
    }
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

    #[test]
    fn hostile_documents_are_refused_cheaply() {
        // A billion laughs: ten levels of ten aliases each.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = parse_documents(&text).unwrap_err();
        assert!(err.message.contains("billion-laughs"), "{err}");
        // Nesting past the parser's recursion limit.
        let deep = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let err = parse_documents(&deep).unwrap_err();
        assert!(err.message.contains("recursion limit"), "{err}");
    }

    #[test]
    fn the_alias_budget_is_per_document_and_anchors_stay_in_theirs() {
        // Each document may use the budget, so many documents with a few aliases each pass.
        let doc = "a: &a [1, 2, 3]\nb: [*a, *a, *a]\n";
        let text = vec![doc; 10_000].join("---\n");
        assert_eq!(parse_documents(&text).unwrap().len(), 10_000);
        // An alias to an anchor of an earlier document is an error, as YAML says.
        assert!(parse_documents("a: &a 1\n---\nb: *a\n").is_err());
    }

    #[test]
    fn documents_are_handed_over_in_order_as_they_complete() {
        let mut seen = Vec::new();
        let err = for_each_document("a: 1\n---\nb: 2\n---\nc: [\n", |n| seen.push(n.pos.line))
            .unwrap_err();
        assert_eq!(seen, [1, 3], "the documents before the error");
        assert!(err.pos.line >= 5);
    }
}
