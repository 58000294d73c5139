//! Output schemas of storage destinations, in the format of Azure IoT Operations' schema
//! registry for them (`"$schema": "Delta/1.0"`, the Delta Lake protocol's schema serialization),
//! and the `schemaRef` that names one (`aio-sr://<namespace>/<name>:<version>`).
//!
//! ```json
//! {
//!   "$schema": "Delta/1.0",
//!   "type": "object",
//!   "properties": {
//!     "type": "struct",
//!     "fields": [
//!       { "name": "asset_id", "type": "string", "nullable": true, "metadata": {} },
//!       { "name": "temperature", "type": "double", "nullable": true, "metadata": {} }
//!     ]
//!   }
//! }
//! ```
//!
//! Types: `string`, `long`, `integer`, `short`, `byte`, `double`, `float`, `boolean`, `binary`
//! (base64 in JSON), `date`, `timestamp` (UTC), `timestamp_ntz`, a nested
//! `{"type": "struct", "fields": [...]}` and `{"type": "array", "elementType": ..., "containsNull":
//! ...}`. `map` is refused, as in Azure IoT Operations, and so is `decimal`.
//!
//! Outside Kubernetes a schema is a file: `schemaRef: aio-sr://NS/NAME:VERSION` is
//! `<schemas-dir>/NS/NAME-VERSION.json` ([`SchemaRef::file_in`]), each part one plain path
//! segment, so that a reference never names a file outside the folder.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::paths::is_single_segment;

/// Nesting deeper than this is refused (a hostile schema cannot exhaust the stack).
pub const MAX_DEPTH: usize = 16;
/// More fields than this in one schema, nested ones included, are refused.
pub const MAX_FIELDS: usize = 1000;

/// A parsed `schemaRef`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaRef {
    /// The schema registry namespace.
    pub namespace: String,
    /// The schema's name.
    pub name: String,
    /// Its version (`1.0.0`).
    pub version: String,
}

impl SchemaRef {
    /// Parses `aio-sr://<namespace>/<name>:<version>`.
    ///
    /// # Errors
    /// What is wrong with it, for a diagnostic.
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some(rest) = s.strip_prefix("aio-sr://") else {
            return Err(format!(
                "\"{s}\" is not a schema reference: expected aio-sr://<namespace>/<name>:<version>"
            ));
        };
        let (namespace, tail) = rest.split_once('/').ok_or_else(|| {
            format!("\"{s}\" has no namespace: expected aio-sr://<namespace>/<name>:<version>")
        })?;
        let (name, version) = tail.rsplit_once(':').ok_or_else(|| {
            format!("\"{s}\" has no version: expected aio-sr://<namespace>/<name>:<version>")
        })?;
        for (what, part) in [
            ("namespace", namespace),
            ("name", name),
            ("version", version),
        ] {
            let plain = part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !plain || !is_single_segment(part) {
                return Err(format!(
                    "\"{s}\": the {what} \"{part}\" must be ASCII letters, digits, '.', '_' or '-'"
                ));
            }
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
        })
    }

    /// The schema's file in `dir` (`--schemas-dir`): `<dir>/<namespace>/<name>-<version>.json`.
    pub fn file_in(&self, dir: &Path) -> PathBuf {
        dir.join(&self.namespace)
            .join(format!("{}-{}.json", self.name, self.version))
    }
}

impl fmt::Display for SchemaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "aio-sr://{}/{}:{}",
            self.namespace, self.name, self.version
        )
    }
}

/// A Delta schema: the top-level struct's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaSchema {
    /// The columns, in order.
    pub fields: Vec<DeltaField>,
}

/// One field of a struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaField {
    /// Its name (the JSON key it is read from).
    pub name: String,
    /// Its type.
    pub data_type: DeltaType,
    /// Whether it may be null or missing. Default: `true`.
    pub nullable: bool,
}

/// A Delta type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaType {
    /// UTF-8 text.
    String,
    /// 64-bit integer.
    Long,
    /// 32-bit integer.
    Integer,
    /// 16-bit integer.
    Short,
    /// 8-bit integer.
    Byte,
    /// 64-bit floating point.
    Double,
    /// 32-bit floating point.
    Float,
    /// `true` or `false`.
    Boolean,
    /// Bytes (base64 text in JSON).
    Binary,
    /// A calendar date (`YYYY-MM-DD` in JSON).
    Date,
    /// An instant, microseconds, UTC (RFC 3339 text in JSON).
    Timestamp,
    /// A wall-clock date and time without a time zone, microseconds.
    TimestampNtz,
    /// A nested struct.
    Struct(Vec<DeltaField>),
    /// A list.
    Array {
        /// The elements' type.
        element: Box<DeltaType>,
        /// Whether an element may be null.
        contains_null: bool,
    },
}

impl DeltaType {
    /// The name Delta writes for a primitive type; `struct` and `array` otherwise.
    pub fn name(&self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Long => "long",
            Self::Integer => "integer",
            Self::Short => "short",
            Self::Byte => "byte",
            Self::Double => "double",
            Self::Float => "float",
            Self::Boolean => "boolean",
            Self::Binary => "binary",
            Self::Date => "date",
            Self::Timestamp => "timestamp",
            Self::TimestampNtz => "timestamp_ntz",
            Self::Struct(_) => "struct",
            Self::Array { .. } => "array",
        }
    }

    fn primitive(name: &str) -> Option<Self> {
        Some(match name {
            "string" => Self::String,
            "long" => Self::Long,
            "integer" => Self::Integer,
            "short" => Self::Short,
            "byte" => Self::Byte,
            "double" => Self::Double,
            "float" => Self::Float,
            "boolean" => Self::Boolean,
            "binary" => Self::Binary,
            "date" => Self::Date,
            "timestamp" => Self::Timestamp,
            "timestamp_ntz" => Self::TimestampNtz,
            _ => return None,
        })
    }
}

/// Why a schema file was refused: where in its JSON, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// A JSON path such as `properties.fields[2].type`; empty for the whole document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for SchemaError {}

fn err(path: &str, message: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl DeltaSchema {
    /// Parses a schema file's content.
    ///
    /// # Errors
    /// [`SchemaError`] with the JSON path of the first problem.
    pub fn parse(bytes: &[u8]) -> Result<Self, SchemaError> {
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| err("", format!("not JSON: {e}")))?;
        let Value::Object(top) = &doc else {
            return Err(err("", "expected a JSON object"));
        };
        match top.get("$schema") {
            Some(Value::String(s)) if s == "Delta/1.0" => {}
            Some(Value::String(s))
                if s.contains("json-schema.org") || s.starts_with("JsonSchema") =>
            {
                return Err(err(
                    "$schema",
                    format!(
                        "\"{s}\" is a JSON Schema, which describes sources; a storage destination needs a Delta schema (\"$schema\": \"Delta/1.0\")"
                    ),
                ));
            }
            Some(other) => {
                return Err(err(
                    "$schema",
                    format!("expected \"Delta/1.0\", found {other}"),
                ));
            }
            None => return Err(err("$schema", "required field is missing: \"Delta/1.0\"")),
        }
        match top.get("type") {
            Some(Value::String(s)) if s == "object" => {}
            Some(other) => return Err(err("type", format!("expected \"object\", found {other}"))),
            None => return Err(err("type", "required field is missing: \"object\"")),
        }
        let props = top
            .get("properties")
            .ok_or_else(|| err("properties", "required field is missing"))?;
        let mut count = 0;
        let fields = struct_fields(props, "properties", 0, &mut count)?;
        Ok(Self { fields })
    }

    /// The field named `name` at the top level.
    pub fn field(&self, name: &str) -> Option<&DeltaField> {
        self.fields.iter().find(|f| f.name == name)
    }
}

fn struct_fields(
    v: &Value,
    path: &str,
    depth: usize,
    count: &mut usize,
) -> Result<Vec<DeltaField>, SchemaError> {
    if depth > MAX_DEPTH {
        return Err(err(path, format!("nested deeper than {MAX_DEPTH} levels")));
    }
    let Value::Object(o) = v else {
        return Err(err(
            path,
            "expected an object {\"type\": \"struct\", \"fields\": [...]}",
        ));
    };
    match o.get("type") {
        Some(Value::String(s)) if s == "struct" => {}
        Some(other) => {
            return Err(err(
                &format!("{path}.type"),
                format!("expected \"struct\", found {other}"),
            ));
        }
        None => {
            return Err(err(
                &format!("{path}.type"),
                "required field is missing: \"struct\"",
            ));
        }
    }
    let fields_path = format!("{path}.fields");
    let Some(Value::Array(items)) = o.get("fields") else {
        return Err(err(&fields_path, "required: a list of fields"));
    };
    if items.is_empty() {
        return Err(err(&fields_path, "a struct needs at least one field"));
    }
    let mut out: Vec<DeltaField> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{fields_path}[{i}]");
        *count += 1;
        if *count > MAX_FIELDS {
            return Err(err(&at, format!("more than {MAX_FIELDS} fields")));
        }
        let Value::Object(f) = item else {
            return Err(err(&at, "expected an object with name, type and nullable"));
        };
        let name = match f.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(err(&format!("{at}.name"), "expected a non-empty string")),
            None => return Err(err(&format!("{at}.name"), "required field is missing")),
        };
        if out.iter().any(|o| o.name == name) {
            return Err(err(
                &format!("{at}.name"),
                format!("\"{name}\" is named twice in this struct"),
            ));
        }
        let nullable = match f.get("nullable") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(err(&format!("{at}.nullable"), "expected true or false")),
        };
        let ty = f
            .get("type")
            .ok_or_else(|| err(&format!("{at}.type"), "required field is missing"))?;
        let data_type = data_type(ty, &format!("{at}.type"), depth + 1, count)?;
        out.push(DeltaField {
            name,
            data_type,
            nullable,
        });
    }
    Ok(out)
}

fn data_type(
    v: &Value,
    path: &str,
    depth: usize,
    count: &mut usize,
) -> Result<DeltaType, SchemaError> {
    match v {
        Value::String(s) => DeltaType::primitive(s).ok_or_else(|| {
            if s.starts_with("decimal") {
                err(path, format!("\"{s}\": decimal columns are not supported; use double or string"))
            } else if s == "map" {
                err(path, "maps are not supported (as in Azure IoT Operations)")
            } else {
                err(
                    path,
                    format!("\"{s}\" is not a Delta type: expected string, long, integer, short, byte, double, float, boolean, binary, date, timestamp, timestamp_ntz, or a struct or array"),
                )
            }
        }),
        Value::Object(o) => match o.get("type") {
            Some(Value::String(t)) if t == "struct" => {
                Ok(DeltaType::Struct(struct_fields(v, path, depth, count)?))
            }
            Some(Value::String(t)) if t == "array" => {
                if depth > MAX_DEPTH {
                    return Err(err(path, format!("nested deeper than {MAX_DEPTH} levels")));
                }
                let element = o.get("elementType").ok_or_else(|| {
                    err(&format!("{path}.elementType"), "required field is missing")
                })?;
                let contains_null = match o.get("containsNull") {
                    None => true,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(err(&format!("{path}.containsNull"), "expected true or false"));
                    }
                };
                Ok(DeltaType::Array {
                    element: Box::new(data_type(
                        element,
                        &format!("{path}.elementType"),
                        depth + 1,
                        count,
                    )?),
                    contains_null,
                })
            }
            Some(Value::String(t)) if t == "map" => Err(err(
                path,
                "maps are not supported (as in Azure IoT Operations)",
            )),
            _ => Err(err(
                &format!("{path}.type"),
                "expected \"struct\" or \"array\"",
            )),
        },
        other => Err(err(path, format!("expected a type name or object, found {other}"))),
    }
}

/// Reads and parses the schema `reference` names in `dir` (`--schemas-dir`).
///
/// # Errors
/// A message naming the file and, for a refused schema, the JSON path.
pub fn load_schema(
    files: &dyn crate::files::Files,
    dir: &Path,
    reference: &SchemaRef,
) -> Result<DeltaSchema, String> {
    let file = reference.file_in(dir);
    let bytes = files
        .read(&file)
        .map_err(|e| format!("schema {reference}: cannot read {}: {e}", file.display()))?;
    DeltaSchema::parse(&bytes).map_err(|e| format!("schema {reference} ({}): {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AIO_EXAMPLE: &str = r#"{
      "$schema": "Delta/1.0",
      "type": "object",
      "properties": {
        "type": "struct",
        "fields": [
          { "name": "asset_id", "type": "string", "nullable": true, "metadata": {} },
          { "name": "temperature", "type": "double", "nullable": true, "metadata": {} },
          { "name": "timestamp", "type": "string", "nullable": true, "metadata": {} }
        ]
      }
    }"#;

    #[test]
    fn the_documentation_example() {
        let s = DeltaSchema::parse(AIO_EXAMPLE.as_bytes()).expect("valid");
        assert_eq!(s.fields.len(), 3);
        assert_eq!(s.fields[1].data_type, DeltaType::Double);
        assert!(s.fields[0].nullable);
    }

    #[test]
    fn nested_structs_and_arrays() {
        let text = r#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[
            {"name":"Temperature","type":{"type":"struct","fields":[
                {"name":"SourceTimestamp","type":"timestamp","nullable":false,"metadata":{}},
                {"name":"Value","type":"integer","nullable":false,"metadata":{}}]},"nullable":false,"metadata":{}},
            {"name":"tags","type":{"type":"array","elementType":"string","containsNull":false},"nullable":true}]}}"#;
        let s = DeltaSchema::parse(text.as_bytes()).expect("valid");
        let DeltaType::Struct(inner) = &s.fields[0].data_type else {
            panic!("a struct");
        };
        assert_eq!(inner[0].data_type, DeltaType::Timestamp);
        assert!(!inner[1].nullable);
        assert_eq!(
            s.fields[1].data_type,
            DeltaType::Array {
                element: Box::new(DeltaType::String),
                contains_null: false
            }
        );
    }

    #[test]
    fn refusals_name_the_place() {
        let cases = [
            (r#"[]"#, "", "expected a JSON object"),
            (
                r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{}}"#,
                "$schema",
                "JSON Schema",
            ),
            (
                r#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[{"name":"m","type":"map"}]}}"#,
                "properties.fields[0].type",
                "maps are not supported",
            ),
            (
                r#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[{"name":"a","type":"long"},{"name":"a","type":"long"}]}}"#,
                "properties.fields[1].name",
                "named twice",
            ),
            (
                r#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[{"name":"a","type":"decimal(10,2)"}]}}"#,
                "properties.fields[0].type",
                "decimal",
            ),
            (
                r#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[{"name":"a","type":"lnog"}]}}"#,
                "properties.fields[0].type",
                "not a Delta type",
            ),
            (
                r#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[]}}"#,
                "properties.fields",
                "at least one",
            ),
        ];
        for (text, path, what) in cases {
            let e = DeltaSchema::parse(text.as_bytes()).expect_err(text);
            assert_eq!(e.path, path, "{text}: {e}");
            assert!(e.message.contains(what), "{text}: {e}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut ty = String::from("\"long\"");
        for _ in 0..40 {
            ty = format!(r#"{{"type":"struct","fields":[{{"name":"a","type":{ty}}}]}}"#);
        }
        let text = format!(
            r#"{{"$schema":"Delta/1.0","type":"object","properties":{{"type":"struct","fields":[{{"name":"a","type":{ty}}}]}}}}"#
        );
        let e = DeltaSchema::parse(text.as_bytes()).expect_err("too deep");
        assert!(e.message.contains("deeper"), "{e}");
    }

    #[test]
    fn references_are_files_inside_the_folder() {
        let r = SchemaRef::parse("aio-sr://exampleNamespace/exampleSchema:1.0.0").expect("ok");
        assert_eq!(
            r.file_in(Path::new("/s")),
            Path::new("/s/exampleNamespace/exampleSchema-1.0.0.json")
        );
        assert_eq!(
            r.to_string(),
            "aio-sr://exampleNamespace/exampleSchema:1.0.0"
        );
        for bad in [
            "exampleSchema:1",
            "aio-sr://ns/name",
            "aio-sr://name:1",
            "aio-sr://../x:1",
            "aio-sr://ns/../../etc/passwd:1",
            "aio-sr://ns/a b:1",
            "aio-sr://ns/..:1",
        ] {
            assert!(SchemaRef::parse(bad).is_err(), "{bad}");
        }
    }
}
