//! The rows of the file being filled, column by column: JSON payloads decoded straight into
//! typed column buffers as they arrive, so that nothing of the message is kept (its read buffer
//! is released at once), and turned into Arrow arrays when the file is written.
//!
//! # Why not arrow-json's `Decoder`
//!
//! arrow-json decodes in two passes: `decode` tokenises the text onto a tape (which keeps every
//! string of the batch) and `flush` turns the whole tape into arrays. A value of the wrong type is
//! found only by `flush`, and fails the whole batch, while a message that does not fit the schema
//! must be dropped (or dead-lettered) on its own and the rest acknowledged; and it cannot widen
//! an inferred column in an open batch. This module reads each payload once
//! ([`super::json::Cursor`]), appends each value to its column as it is read, and on a value
//! that does not fit truncates every column back to the row's start: one message fails, the
//! others stay. Fields are looked up in the order of the previous row first (payloads of one
//! device repeat their key order), so a row of N fields costs N compares in the common case.
//!
//! # Schemas
//!
//! - Given ([`Columns::with_schema`], from a Delta schema): the columns and types are fixed;
//!   fields the schema does not name are skipped; a missing or null value is a null where the
//!   field is nullable, a mismatch where it is not.
//! - Inferred ([`Columns::inferred`]): see [`Columns::inferred`] for the widening rule.
//!
//! Values that fit a column:
//!
//! | column | JSON |
//! |---|---|
//! | string | a string |
//! | long, integer, short, byte | an integer in range (`12`, `-3`, or `12.0`; not `12.5`) |
//! | double, float | a number |
//! | boolean | `true`, `false` |
//! | binary | a base64 string |
//! | date | `"YYYY-MM-DD"` |
//! | timestamp, timestamp_ntz | RFC 3339 text (`2026-12-02T08:15:00.123Z`, an offset, or none for `_ntz`) |
//! | struct | an object |
//! | array | an array |
//! | JSON text (inferred objects and arrays) | any value, kept as its JSON text |

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int8Array,
    Int16Array, Int32Array, Int64Array, ListArray, NullArray, RecordBatch, StringArray,
    StructArray, TimestampMicrosecondArray,
};
use arrow_buffer::{BooleanBufferBuilder, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use base64::Engine as _;
use sluice_config_agent::delta::{DeltaField, DeltaType};

use super::json::{Cursor, Kind, Number, Syntax, same, unescape_into};

/// The time zone written for `timestamp` columns.
pub(crate) const UTC: &str = "UTC";

/// Why a payload did not become a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RowError {
    /// Not a JSON text (or not UTF-8).
    NotJson(String),
    /// JSON that does not fit the schema.
    Mismatch(String),
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotJson(m) => write!(f, "not JSON: {m}"),
            Self::Mismatch(m) => write!(f, "does not fit the schema: {m}"),
        }
    }
}

fn syntax(e: Syntax) -> RowError {
    RowError::NotJson(format!("expected {} at byte {}", e.what, e.at))
}

type Row<T> = Result<T, RowError>;

/// A column's values.
#[derive(Debug)]
enum Data {
    Utf8 {
        offsets: Vec<i32>,
        bytes: Vec<u8>,
    },
    /// Inferred objects and arrays: their JSON text (a string column in the file).
    Json {
        offsets: Vec<i32>,
        bytes: Vec<u8>,
    },
    Binary {
        offsets: Vec<i32>,
        bytes: Vec<u8>,
    },
    Int64(Vec<i64>),
    Int32(Vec<i32>),
    Int16(Vec<i16>),
    Int8(Vec<i8>),
    Float64(Vec<f64>),
    Float32(Vec<f32>),
    Boolean(BooleanBufferBuilder),
    Date32(Vec<i32>),
    Timestamp {
        values: Vec<i64>,
        utc: bool,
    },
    Struct {
        fields: Vec<Column>,
        len: usize,
    },
    List {
        offsets: Vec<i32>,
        item: Box<Column>,
        item_nullable: bool,
    },
    /// Inferred, only nulls so far: how many.
    Null(usize),
}

/// One column (or a struct's field, or a list's item).
#[derive(Debug)]
pub(crate) struct Column {
    name: Arc<str>,
    /// The name has no `"` or `\\` (and no control character): JSON writes it as it is, so
    /// [`Cursor::key_is`] can compare it in place.
    plain: bool,
    nullable: bool,
    /// Validity, made at the first null (all valid before).
    nulls: Option<BooleanBufferBuilder>,
    data: Data,
}

fn offsets() -> Vec<i32> {
    vec![0]
}

impl Data {
    fn of(t: &DeltaType) -> Self {
        match t {
            DeltaType::String => Self::Utf8 {
                offsets: offsets(),
                bytes: Vec::new(),
            },
            DeltaType::Binary => Self::Binary {
                offsets: offsets(),
                bytes: Vec::new(),
            },
            DeltaType::Long => Self::Int64(Vec::new()),
            DeltaType::Integer => Self::Int32(Vec::new()),
            DeltaType::Short => Self::Int16(Vec::new()),
            DeltaType::Byte => Self::Int8(Vec::new()),
            DeltaType::Double => Self::Float64(Vec::new()),
            DeltaType::Float => Self::Float32(Vec::new()),
            DeltaType::Boolean => Self::Boolean(BooleanBufferBuilder::new(0)),
            DeltaType::Date => Self::Date32(Vec::new()),
            DeltaType::Timestamp => Self::Timestamp {
                values: Vec::new(),
                utc: true,
            },
            DeltaType::TimestampNtz => Self::Timestamp {
                values: Vec::new(),
                utc: false,
            },
            DeltaType::Struct(fields) => Self::Struct {
                fields: fields.iter().map(Column::of).collect(),
                len: 0,
            },
            DeltaType::Array {
                element,
                contains_null,
            } => Self::List {
                offsets: offsets(),
                item: Box::new(Column {
                    name: Arc::from("element"),
                    plain: true,
                    nullable: *contains_null,
                    nulls: None,
                    data: Self::of(element),
                }),
                item_nullable: *contains_null,
            },
        }
    }

    /// An empty column of the same type, with room for as many values as this one holds (the
    /// next file is likely the same size: no reallocation while it fills).
    fn emptied(&self) -> Self {
        let text = |offsets: &Vec<i32>, bytes: &Vec<u8>| {
            let mut o = Vec::with_capacity(offsets.len());
            o.push(0);
            (o, Vec::with_capacity(bytes.len()))
        };
        match self {
            Self::Utf8 { offsets, bytes } => {
                let (offsets, bytes) = text(offsets, bytes);
                Self::Utf8 { offsets, bytes }
            }
            Self::Json { offsets, bytes } => {
                let (offsets, bytes) = text(offsets, bytes);
                Self::Json { offsets, bytes }
            }
            Self::Binary { offsets, bytes } => {
                let (offsets, bytes) = text(offsets, bytes);
                Self::Binary { offsets, bytes }
            }
            Self::Int64(v) => Self::Int64(Vec::with_capacity(v.len())),
            Self::Int32(v) => Self::Int32(Vec::with_capacity(v.len())),
            Self::Int16(v) => Self::Int16(Vec::with_capacity(v.len())),
            Self::Int8(v) => Self::Int8(Vec::with_capacity(v.len())),
            Self::Float64(v) => Self::Float64(Vec::with_capacity(v.len())),
            Self::Float32(v) => Self::Float32(Vec::with_capacity(v.len())),
            Self::Boolean(b) => Self::Boolean(BooleanBufferBuilder::new(b.len())),
            Self::Date32(v) => Self::Date32(Vec::with_capacity(v.len())),
            Self::Timestamp { values, utc } => Self::Timestamp {
                values: Vec::with_capacity(values.len()),
                utc: *utc,
            },
            Self::Struct { fields, .. } => Self::Struct {
                fields: fields.iter().map(Column::emptied).collect(),
                len: 0,
            },
            Self::List {
                item,
                item_nullable,
                offsets,
            } => Self::List {
                offsets: {
                    let mut o = Vec::with_capacity(offsets.len());
                    o.push(0);
                    o
                },
                item: Box::new(item.emptied()),
                item_nullable: *item_nullable,
            },
            Self::Null(_) => Self::Null(0),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Utf8 { offsets, .. }
            | Self::Json { offsets, .. }
            | Self::Binary { offsets, .. }
            | Self::List { offsets, .. } => offsets.len() - 1,
            Self::Int64(v) | Self::Timestamp { values: v, .. } => v.len(),
            Self::Int32(v) | Self::Date32(v) => v.len(),
            Self::Int16(v) => v.len(),
            Self::Int8(v) => v.len(),
            Self::Float64(v) => v.len(),
            Self::Float32(v) => v.len(),
            Self::Boolean(b) => b.len(),
            Self::Struct { len, .. } => *len,
            Self::Null(n) => *n,
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            Self::Utf8 { .. } | Self::Json { .. } => DataType::Utf8,
            Self::Binary { .. } => DataType::Binary,
            Self::Int64(_) => DataType::Int64,
            Self::Int32(_) => DataType::Int32,
            Self::Int16(_) => DataType::Int16,
            Self::Int8(_) => DataType::Int8,
            Self::Float64(_) => DataType::Float64,
            Self::Float32(_) => DataType::Float32,
            Self::Boolean(_) => DataType::Boolean,
            Self::Date32(_) => DataType::Date32,
            Self::Timestamp { utc, .. } => {
                DataType::Timestamp(TimeUnit::Microsecond, utc.then(|| Arc::from(UTC)))
            }
            Self::Struct { fields, .. } => {
                DataType::Struct(fields.iter().map(Column::field).collect::<Fields>())
            }
            Self::List { item, .. } => DataType::List(Arc::new(item.field())),
            Self::Null(_) => DataType::Null,
        }
    }
}

impl Column {
    fn of(f: &DeltaField) -> Self {
        Self {
            name: Arc::from(f.name.as_str()),
            plain: plain(&f.name),
            nullable: f.nullable,
            nulls: None,
            data: Data::of(&f.data_type),
        }
    }

    fn new(name: &str, nullable: bool, data: Data) -> Self {
        Self {
            name: Arc::from(name),
            plain: plain(name),
            nullable,
            nulls: None,
            data,
        }
    }

    fn emptied(&self) -> Self {
        Self {
            name: Arc::clone(&self.name),
            plain: self.plain,
            nullable: self.nullable,
            nulls: None,
            data: self.data.emptied(),
        }
    }

    /// The Arrow field of this column.
    pub(crate) fn field(&self) -> Field {
        Field::new(self.name.as_ref(), self.data.data_type(), self.nullable)
    }

    fn len(&self) -> usize {
        self.data.len()
    }

    /// Marks the value just appended as valid.
    #[inline]
    fn valid(&mut self) {
        if let Some(n) = &mut self.nulls {
            n.append(true);
        }
    }

    /// Appends a null (the column must be nullable; a struct's fields and a list's item take
    /// one too when their parent is null).
    fn push_null(&mut self) {
        let len = self.len();
        let n = self.nulls.get_or_insert_with(|| {
            let mut b = BooleanBufferBuilder::new(len + 1);
            b.append_n(len, true);
            b
        });
        n.append(false);
        match &mut self.data {
            Data::Utf8 { offsets, .. }
            | Data::Json { offsets, .. }
            | Data::Binary { offsets, .. }
            | Data::List { offsets, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
            }
            Data::Int64(v) | Data::Timestamp { values: v, .. } => v.push(0),
            Data::Int32(v) | Data::Date32(v) => v.push(0),
            Data::Int16(v) => v.push(0),
            Data::Int8(v) => v.push(0),
            Data::Float64(v) => v.push(0.0),
            Data::Float32(v) => v.push(0.0),
            Data::Boolean(b) => b.append(false),
            Data::Struct { fields, len } => {
                for f in fields {
                    f.push_null();
                }
                *len += 1;
            }
            Data::Null(n) => *n += 1,
        }
    }

    /// A missing or `null` value.
    fn missing(&mut self) -> Row<()> {
        if self.nullable {
            self.push_null();
            Ok(())
        } else {
            Err(RowError::Mismatch(format!(
                "\"{}\" is missing or null, and not nullable",
                self.name
            )))
        }
    }

    /// Cuts the column back to `len` values.
    fn truncate(&mut self, len: usize) {
        if let Some(n) = &mut self.nulls {
            n.truncate(len);
        }
        match &mut self.data {
            Data::Utf8 { offsets, bytes }
            | Data::Json { offsets, bytes }
            | Data::Binary { offsets, bytes } => {
                offsets.truncate(len + 1);
                bytes.truncate(offsets.last().copied().unwrap_or(0) as usize);
            }
            Data::List { offsets, item, .. } => {
                offsets.truncate(len + 1);
                item.truncate(offsets.last().copied().unwrap_or(0) as usize);
            }
            Data::Int64(v) | Data::Timestamp { values: v, .. } => v.truncate(len),
            Data::Int32(v) | Data::Date32(v) => v.truncate(len),
            Data::Int16(v) => v.truncate(len),
            Data::Int8(v) => v.truncate(len),
            Data::Float64(v) => v.truncate(len),
            Data::Float32(v) => v.truncate(len),
            Data::Boolean(b) => b.truncate(len),
            Data::Struct { fields, len: l } => {
                for f in fields {
                    f.truncate(len);
                }
                *l = (*l).min(len);
            }
            Data::Null(n) => *n = (*n).min(len),
        }
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        let nulls = self.nulls.as_ref().map_or(0, |n| n.capacity() / 8);
        nulls
            + match &self.data {
                Data::Utf8 { offsets, bytes }
                | Data::Json { offsets, bytes }
                | Data::Binary { offsets, bytes } => offsets.capacity() * 4 + bytes.capacity(),
                Data::List { offsets, item, .. } => offsets.capacity() * 4 + item.bytes(),
                Data::Int64(v) | Data::Timestamp { values: v, .. } => v.capacity() * 8,
                Data::Int32(v) | Data::Date32(v) => v.capacity() * 4,
                Data::Int16(v) => v.capacity() * 2,
                Data::Int8(v) => v.capacity(),
                Data::Float64(v) => v.capacity() * 8,
                Data::Float32(v) => v.capacity() * 4,
                Data::Boolean(b) => b.capacity() / 8,
                Data::Struct { fields, .. } => fields.iter().map(Column::bytes).sum(),
                Data::Null(_) => 0,
            }
    }

    /// Reads one value from `cur` into this column. `inferred`: types may widen.
    fn read(&mut self, cur: &mut Cursor<'_>, inferred: bool, scratch: &mut Fields2) -> Row<()> {
        let kind = cur.peek_kind().map_err(syntax)?;
        if kind == Kind::Null {
            cur.literal(kind).map_err(syntax)?;
            return self.missing();
        }
        if inferred {
            self.widen_for(kind, cur);
        }
        let Column {
            name, data, nulls, ..
        } = self;
        let name: &str = name;
        let mismatch = |expected: &str| {
            RowError::Mismatch(format!(
                "\"{name}\": expected {expected}, found {}",
                kind.described()
            ))
        };
        match data {
            Data::Utf8 { offsets, bytes } => {
                if kind != Kind::String {
                    return Err(mismatch("a string"));
                }
                let (raw, escaped) = cur.string_raw().map_err(syntax)?;
                if escaped {
                    unescape_into(raw, bytes);
                } else {
                    bytes.extend_from_slice(raw.as_bytes());
                }
                push_offset(offsets, bytes.len())?;
            }
            Data::Json { offsets, bytes } => {
                let text = cur.skip_value().map_err(syntax)?;
                bytes.extend_from_slice(text.as_bytes());
                push_offset(offsets, bytes.len())?;
            }
            Data::Binary { offsets, bytes } => {
                if kind != Kind::String {
                    return Err(mismatch("a base64 string"));
                }
                let (raw, escaped) = cur.string_raw().map_err(syntax)?;
                let mut text = Vec::new();
                let raw = if escaped {
                    unescape_into(raw, &mut text);
                    &text[..]
                } else {
                    raw.as_bytes()
                };
                // Decoded onto the column's bytes (a refused row is cut off them).
                base64::engine::general_purpose::STANDARD
                    .decode_vec(raw, bytes)
                    .map_err(|e| RowError::Mismatch(format!("\"{name}\": not base64: {e}")))?;
                push_offset(offsets, bytes.len())?;
            }
            Data::Int64(v) => v.push(integer(cur, kind, name)?),
            Data::Int32(v) => v.push(narrow(integer(cur, kind, name)?, name)?),
            Data::Int16(v) => v.push(narrow(integer(cur, kind, name)?, name)?),
            Data::Int8(v) => v.push(narrow(integer(cur, kind, name)?, name)?),
            Data::Float64(v) => v.push(float(cur, kind, name)?),
            Data::Float32(v) => {
                #[allow(clippy::cast_possible_truncation)]
                v.push(float(cur, kind, name)? as f32);
            }
            Data::Boolean(b) => match kind {
                Kind::True | Kind::False => {
                    cur.literal(kind).map_err(syntax)?;
                    b.append(kind == Kind::True);
                }
                _ => return Err(mismatch("true or false")),
            },
            Data::Date32(v) => {
                if kind != Kind::String {
                    return Err(mismatch("a date string"));
                }
                let (raw, _) = cur.string_raw().map_err(syntax)?;
                let days = parse_date(raw.as_bytes()).ok_or_else(|| {
                    RowError::Mismatch(format!("\"{name}\": \"{raw}\" is not a date"))
                })?;
                v.push(days);
            }
            Data::Timestamp { values, utc } => {
                if kind != Kind::String {
                    return Err(mismatch("an RFC 3339 time string"));
                }
                let (raw, _) = cur.string_raw().map_err(syntax)?;
                let micros = parse_timestamp(raw.as_bytes(), *utc).ok_or_else(|| {
                    RowError::Mismatch(format!("\"{name}\": \"{raw}\" is not an RFC 3339 time"))
                })?;
                values.push(micros);
            }
            Data::Struct { fields, len } => {
                if kind != Kind::Object {
                    return Err(mismatch("an object"));
                }
                read_object(cur, fields, None, scratch)?;
                *len += 1;
            }
            Data::List { offsets, item, .. } => {
                if kind != Kind::Array {
                    return Err(mismatch("an array"));
                }
                cur.expect(b'[', "'['").map_err(syntax)?;
                let mut first = true;
                while cur.next_element(first).map_err(syntax)? {
                    first = false;
                    item.read(cur, false, scratch)?;
                }
                push_offset(offsets, item.len())?;
            }
            // Typed by `widen_for` above; a null was taken before.
            Data::Null(_) => return Err(mismatch("null")),
        }
        if let Some(n) = nulls {
            n.append(true);
        }
        Ok(())
    }

    /// Inferred columns: a first value types a column of nulls; an integer column takes a
    /// fraction by becoming a double one. Anything else is left for `read` to refuse.
    fn widen_for(&mut self, kind: Kind, cur: &mut Cursor<'_>) {
        let mut fraction = || {
            let mut probe = Cursor::new(cur.rest());
            probe.number().is_ok_and(|num| !num.integer)
        };
        match &self.data {
            Data::Null(n) => {
                let n = *n;
                let data = match kind {
                    Kind::String => Data::Utf8 {
                        offsets: offsets(),
                        bytes: Vec::new(),
                    },
                    Kind::Number if fraction() => Data::Float64(Vec::new()),
                    Kind::Number => Data::Int64(Vec::new()),
                    Kind::True | Kind::False => Data::Boolean(BooleanBufferBuilder::new(0)),
                    Kind::Object | Kind::Array => Data::Json {
                        offsets: offsets(),
                        bytes: Vec::new(),
                    },
                    Kind::Null => return,
                };
                let mut col = Column::new(&self.name, true, data);
                for _ in 0..n {
                    col.push_null();
                }
                *self = col;
            }
            Data::Int64(v) if kind == Kind::Number && fraction() => {
                #[allow(clippy::cast_precision_loss)]
                let widened = v.iter().map(|&i| i as f64).collect();
                self.data = Data::Float64(widened);
            }
            _ => {}
        }
    }

    /// Moves the values out, leaving an empty column of the same type.
    fn take(&mut self) -> Self {
        let empty = self.emptied();
        std::mem::replace(self, empty)
    }

    /// The values as an Arrow array.
    fn finish(self) -> Result<ArrayRef, ArrowError> {
        let nulls = self.nulls.map(|mut b| NullBuffer::new(b.finish()));
        let nulls = nulls.filter(|n| n.null_count() > 0);
        Ok(match self.data {
            Data::Utf8 { offsets, bytes } | Data::Json { offsets, bytes } => Arc::new(
                StringArray::try_new(OffsetBuffer::new(offsets.into()), bytes.into(), nulls)?,
            ),
            Data::Binary { offsets, bytes } => Arc::new(BinaryArray::try_new(
                OffsetBuffer::new(offsets.into()),
                bytes.into(),
                nulls,
            )?),
            Data::Int64(v) => Arc::new(Int64Array::try_new(ScalarBuffer::from(v), nulls)?),
            Data::Int32(v) => Arc::new(Int32Array::try_new(ScalarBuffer::from(v), nulls)?),
            Data::Int16(v) => Arc::new(Int16Array::try_new(ScalarBuffer::from(v), nulls)?),
            Data::Int8(v) => Arc::new(Int8Array::try_new(ScalarBuffer::from(v), nulls)?),
            Data::Float64(v) => Arc::new(Float64Array::try_new(ScalarBuffer::from(v), nulls)?),
            Data::Float32(v) => Arc::new(Float32Array::try_new(ScalarBuffer::from(v), nulls)?),
            Data::Boolean(mut b) => Arc::new(BooleanArray::new(b.finish(), nulls)),
            Data::Date32(v) => Arc::new(Date32Array::try_new(ScalarBuffer::from(v), nulls)?),
            Data::Timestamp { values, utc } => {
                let a = TimestampMicrosecondArray::try_new(ScalarBuffer::from(values), nulls)?;
                Arc::new(if utc { a.with_timezone(UTC) } else { a })
            }
            Data::Struct { fields, len } => {
                if fields.is_empty() {
                    Arc::new(StructArray::new_empty_fields(len, nulls))
                } else {
                    let arrow_fields: Fields = fields.iter().map(Column::field).collect();
                    let arrays = fields
                        .into_iter()
                        .map(Column::finish)
                        .collect::<Result<Vec<_>, _>>()?;
                    Arc::new(StructArray::try_new(arrow_fields, arrays, nulls)?)
                }
            }
            Data::List { offsets, item, .. } => {
                let field = Arc::new(item.field());
                Arc::new(ListArray::try_new(
                    field,
                    OffsetBuffer::new(offsets.into()),
                    item.finish()?,
                    nulls,
                )?)
            }
            Data::Null(n) => Arc::new(NullArray::new(n)),
        })
    }

    /// Appends a string value (metadata columns).
    fn push_str(&mut self, s: &[u8]) -> Row<()> {
        if let Data::Utf8 { offsets, bytes } = &mut self.data {
            bytes.extend_from_slice(s);
            push_offset(offsets, bytes.len())?;
            self.valid();
        }
        Ok(())
    }
}

fn plain(name: &str) -> bool {
    name.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\')
}

fn push_offset(offsets: &mut Vec<i32>, len: usize) -> Row<()> {
    let o = i32::try_from(len)
        .map_err(|_| RowError::Mismatch("a column holds more than 2 GiB".into()))?;
    offsets.push(o);
    Ok(())
}

/// An integer value: an integer literal, or a number with no fraction (`12.0`).
fn integer(cur: &mut Cursor<'_>, kind: Kind, name: &str) -> Row<i64> {
    if kind != Kind::Number {
        return Err(RowError::Mismatch(format!(
            "\"{name}\": expected an integer, found {}",
            kind.described()
        )));
    }
    let Number {
        text,
        integer,
        mantissa,
        digits,
        negative,
        ..
    } = cur.number().map_err(syntax)?;
    if integer && digits <= 18 {
        // Below 10^18: no overflow either way.
        #[allow(clippy::cast_possible_wrap)]
        let v = mantissa as i64;
        return Ok(if negative { -v } else { v });
    }
    if integer {
        return text
            .parse::<i64>()
            .map_err(|_| RowError::Mismatch(format!("\"{name}\": {text} is out of range")));
    }
    let f: f64 = text
        .parse()
        .map_err(|_| RowError::Mismatch(format!("\"{name}\": {text} is not a number")))?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
        Ok(f as i64)
    } else {
        Err(RowError::Mismatch(format!(
            "\"{name}\": expected an integer, found {text}"
        )))
    }
}

fn narrow<T: TryFrom<i64>>(v: i64, name: &str) -> Row<T> {
    T::try_from(v).map_err(|_| RowError::Mismatch(format!("\"{name}\": {v} is out of range")))
}

fn float(cur: &mut Cursor<'_>, kind: Kind, name: &str) -> Row<f64> {
    if kind != Kind::Number {
        return Err(RowError::Mismatch(format!(
            "\"{name}\": expected a number, found {}",
            kind.described()
        )));
    }
    let n = cur.number().map_err(syntax)?;
    if !n.exponent && n.digits <= 15 {
        // Clinger's fast path, as in `simple_decimal`.
        #[allow(clippy::cast_precision_loss)]
        let v = n.mantissa as f64 / POW10[n.fraction as usize];
        return Ok(if n.negative { -v } else { v });
    }
    n.text
        .parse()
        .map_err(|_| RowError::Mismatch(format!("\"{name}\": {} is not a number", n.text)))
}

/// Powers of ten that an `f64` holds exactly.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The fast path of [`float`] on its own, for its test: a plain decimal (`-12.345`: no exponent,
/// at most 15 digits) as the nearest `f64`, or `None`
/// for anything else (then the standard parser decides). Exact by Clinger's fast path: the
/// digits as an integer below 2^53 and a power of ten up to 10^15 are both exact in an `f64`,
/// so the one division is correctly rounded, as the standard parser's result is.
#[cfg(test)]
fn simple_decimal(b: &[u8]) -> Option<f64> {
    let (negative, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        _ => (false, b),
    };
    let mut mantissa = 0u64;
    let mut count = 0usize;
    let mut fraction = None;
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                count += 1;
            }
            b'.' if fraction.is_none() => fraction = Some(digits.len() - i - 1),
            _ => return None,
        }
    }
    if count == 0 || count > 15 {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let v = mantissa as f64 / POW10[fraction.unwrap_or(0)];
    Some(if negative { -v } else { v })
}

/// Reusable per-row state (which fields a row gave), so that a row allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Fields2 {
    seen: Vec<bool>,
    key: Vec<u8>,
}

/// Reads an object's members into `fields` (the cursor at `{`). `inferred` (top level only):
/// the rows before this one; an unknown key adds a column, null in those rows.
fn read_object(
    cur: &mut Cursor<'_>,
    fields: &mut Vec<Column>,
    inferred: Option<usize>,
    scratch: &mut Fields2,
) -> Row<()> {
    if inferred.is_none() && fields.len() <= 64 {
        return read_fixed_object(cur, fields, scratch);
    }
    cur.expect(b'{', "'{'").map_err(syntax)?;
    // `seen` is shared by the nesting levels: each level uses its own stretch past `base`.
    let base = scratch.seen.len();
    scratch.seen.resize(base + fields.len(), false);
    let mut guess = 0usize;
    let mut first = true;
    let result = (|| {
        while cur.next_member(first).map_err(syntax)? {
            first = false;
            let index = match member(cur, fields, guess, &mut scratch.key)? {
                Ok(i) => i,
                Err(key)
                    if inferred.is_some() && !META_NAMES.iter().any(|m| m.as_bytes() == key) =>
                {
                    let rows = inferred.unwrap_or(0);
                    let name = String::from_utf8_lossy(key);
                    fields.push(Column::new(&name, true, Data::Null(rows)));
                    scratch.seen.push(false);
                    fields.len() - 1
                }
                Err(_) => {
                    cur.skip_value().map_err(syntax)?;
                    continue;
                }
            };
            if scratch.seen[base + index] {
                return Err(RowError::Mismatch(format!(
                    "\"{}\" is given twice",
                    fields[index].name
                )));
            }
            scratch.seen[base + index] = true;
            fields[index].read(cur, inferred.is_some(), scratch)?;
            guess = index + 1;
        }
        for (i, f) in fields.iter_mut().enumerate() {
            if !scratch.seen[base + i] {
                f.missing()?;
            }
        }
        Ok(())
    })();
    scratch.seen.truncate(base);
    result
}

/// Takes the next member's key and its `:` (the cursor at the key): the index of the field of
/// that name, or the key itself (unescaped into `key_buf` when it has escapes) when no field has
/// it. The field after the previous one (`guess`) is compared in place first.
fn member<'a: 'k, 'k>(
    cur: &mut Cursor<'a>,
    fields: &[Column],
    guess: usize,
    key_buf: &'k mut Vec<u8>,
) -> Row<Result<usize, &'k [u8]>> {
    if let Some(f) = fields.get(guess)
        && f.plain
        && cur.key_is(f.name.as_bytes()).map_err(syntax)?
    {
        return Ok(Ok(guess));
    }
    let (raw, escaped) = cur.key().map_err(syntax)?;
    let key: &'k [u8] = if escaped {
        key_buf.clear();
        unescape_into(raw, key_buf);
        key_buf
    } else {
        raw.as_bytes()
    };
    Ok(fields
        .iter()
        .position(|f| same(f.name.as_bytes(), key))
        .ok_or(key))
}

/// [`read_object`] for a given struct of at most 64 fields: which fields a row gave is a bit
/// mask.
fn read_fixed_object(
    cur: &mut Cursor<'_>,
    fields: &mut [Column],
    scratch: &mut Fields2,
) -> Row<()> {
    cur.expect(b'{', "'{'").map_err(syntax)?;
    let mut seen = 0u64;
    let mut guess = 0usize;
    let mut first = true;
    while cur.next_member(first).map_err(syntax)? {
        first = false;
        let Ok(index) = member(cur, fields, guess, &mut scratch.key)? else {
            cur.skip_value().map_err(syntax)?;
            continue;
        };
        let bit = 1u64 << index;
        if seen & bit != 0 {
            return Err(RowError::Mismatch(format!(
                "\"{}\" is given twice",
                fields[index].name
            )));
        }
        seen |= bit;
        fields[index].read(cur, false, scratch)?;
        guess = index + 1;
    }
    let all = if fields.len() == 64 {
        u64::MAX
    } else {
        (1u64 << fields.len()) - 1
    };
    if seen != all {
        for (i, f) in fields.iter_mut().enumerate() {
            if seen & (1 << i) == 0 {
                f.missing()?;
            }
        }
    }
    Ok(())
}

/// The rows of one file. See the module documentation.
#[derive(Debug)]
pub(crate) struct Columns {
    fields: Vec<Column>,
    /// Columns after the payload's: `_topic`, `_received_time`, `_user_properties`.
    meta: Vec<(Meta, Column)>,
    inferred: bool,
    rows: usize,
    scratch: Fields2,
}

/// The metadata columns' names: an inferred schema never takes a payload field of one of these
/// names (it is skipped), so that the file has one column of each name.
pub(crate) const META_NAMES: [&str; 3] = ["_topic", "_received_time", "_user_properties"];

/// A metadata column's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Meta {
    /// The topic the message arrived on.
    Topic,
    /// When it was received, microseconds since the Unix epoch.
    ReceivedTime,
    /// Its User Properties.
    UserProperties,
}

impl Meta {
    fn column(self) -> Column {
        match self {
            Self::Topic => Column::new(
                "_topic",
                false,
                Data::Utf8 {
                    offsets: offsets(),
                    bytes: Vec::new(),
                },
            ),
            Self::ReceivedTime => Column::new(
                "_received_time",
                false,
                Data::Timestamp {
                    values: Vec::new(),
                    utc: true,
                },
            ),
            Self::UserProperties => {
                let pair = |n: &str| {
                    Column::new(
                        n,
                        false,
                        Data::Utf8 {
                            offsets: offsets(),
                            bytes: Vec::new(),
                        },
                    )
                };
                Column::new(
                    "_user_properties",
                    false,
                    Data::List {
                        offsets: offsets(),
                        item: Box::new(Column::new(
                            "element",
                            false,
                            Data::Struct {
                                fields: vec![pair("key"), pair("value")],
                                len: 0,
                            },
                        )),
                        item_nullable: false,
                    },
                )
            }
        }
    }
}

/// What a row's metadata columns take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowMeta<'a> {
    /// The topic it arrived on.
    pub(crate) topic: &'a [u8],
    /// Receive time, microseconds since the epoch.
    pub(crate) received_micros: i64,
    /// The message's properties (for its User Properties, in order).
    pub(crate) properties: Option<&'a sluice_codec::PublishProperties>,
}

impl Columns {
    /// Columns of a given schema.
    pub(crate) fn with_schema(fields: &[DeltaField], meta: &[Meta]) -> Self {
        Self {
            fields: fields.iter().map(Column::of).collect(),
            meta: meta.iter().map(|&m| (m, m.column())).collect(),
            inferred: false,
            rows: 0,
            scratch: Fields2::default(),
        }
    }

    /// Columns inferred from the payloads. The first message's fields make the first columns,
    /// in its order; a field seen later adds a column (null in earlier rows). A column's type is
    /// its first non-null value's: a string is `string`, an integer literal `long`, any other
    /// number `double`, `true`/`false` `boolean`, an object or array its JSON text (`string`).
    /// Widening: a `long` column that meets a fraction becomes `double`; nulls fit any column.
    /// Any other conflict (text in a number column, say) does not fit: the message is refused.
    /// Every inferred column is nullable, and the types carry over to the next file.
    pub(crate) fn inferred(meta: &[Meta]) -> Self {
        Self {
            fields: Vec::new(),
            meta: meta.iter().map(|&m| (m, m.column())).collect(),
            inferred: true,
            rows: 0,
            scratch: Fields2::default(),
        }
    }

    /// Bytes the columns hold (their buffers' capacity).
    pub(crate) fn bytes(&self) -> usize {
        self.fields.iter().map(Column::bytes).sum::<usize>()
            + self.meta.iter().map(|(_, c)| c.bytes()).sum::<usize>()
    }

    /// Appends one row from `payload`; on an error nothing of it stays.
    ///
    /// # Errors
    /// [`RowError`]: not JSON, or JSON that does not fit.
    pub(crate) fn push(&mut self, payload: &[u8], meta: &RowMeta<'_>) -> Result<(), RowError> {
        let text = std::str::from_utf8(payload)
            .map_err(|e| RowError::NotJson(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
        let mut cur = Cursor::new(text);
        let columns_before = self.fields.len();
        let result = match cur.peek_kind() {
            Ok(Kind::Object) => {
                let inferred = self.inferred.then_some(self.rows);
                read_object(&mut cur, &mut self.fields, inferred, &mut self.scratch)
                    .and_then(|()| cur.end().map_err(syntax))
            }
            Ok(kind) => {
                // Tell JSON of another kind from text that is not JSON.
                match cur.skip_value().and_then(|_| cur.end()) {
                    Ok(()) => Err(RowError::Mismatch(format!(
                        "expected an object, found {}",
                        kind.described()
                    ))),
                    Err(e) => Err(syntax(e)),
                }
            }
            Err(e) => Err(syntax(e)),
        };
        if let Err(e) = result {
            self.fields.truncate(columns_before);
            for f in &mut self.fields {
                f.truncate(self.rows);
            }
            return Err(e);
        }
        for (m, col) in &mut self.meta {
            match m {
                Meta::Topic => col.push_str(meta.topic)?,
                Meta::ReceivedTime => {
                    if let Data::Timestamp { values, .. } = &mut col.data {
                        values.push(meta.received_micros);
                    }
                }
                Meta::UserProperties => {
                    if let Data::List { offsets, item, .. } = &mut col.data
                        && let Data::Struct { fields, len } = &mut item.data
                    {
                        if let Some(p) = meta.properties {
                            for (k, v) in p.view().user_properties().pairs() {
                                fields[0].push_str(k.as_bytes())?;
                                fields[1].push_str(v.as_bytes())?;
                                *len += 1;
                            }
                        }
                        push_offset(offsets, *len)?;
                    }
                }
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// The Arrow schema of what is held now.
    pub(crate) fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.fields
                .iter()
                .chain(self.meta.iter().map(|(_, c)| c))
                .map(Column::field)
                .collect::<Vec<_>>(),
        ))
    }

    /// Moves the rows out (the columns stay, empty, with their types).
    pub(crate) fn take(&mut self) -> Sealed {
        let schema = self.schema();
        let columns = self
            .fields
            .iter_mut()
            .chain(self.meta.iter_mut().map(|(_, c)| c))
            .map(Column::take)
            .collect();
        let rows = std::mem::take(&mut self.rows);
        Sealed {
            schema,
            columns,
            rows,
        }
    }
}

/// Rows moved out of [`Columns`], to become a record batch where the file is written.
#[derive(Debug)]
pub(crate) struct Sealed {
    schema: SchemaRef,
    columns: Vec<Column>,
    rows: usize,
}

impl Sealed {
    /// How many rows.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// The rows as one Arrow record batch.
    ///
    /// # Errors
    /// An inconsistency between the columns (a bug, reported rather than written).
    pub(crate) fn into_batch(self) -> Result<RecordBatch, ArrowError> {
        let arrays = self
            .columns
            .into_iter()
            .map(Column::finish)
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new_with_options(
            self.schema,
            arrays,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(self.rows)),
        )
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |a, &c| a * 10 + i64::from(c - b'0')))
}

fn civil(b: &[u8]) -> Option<i64> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let max = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (1..=max).contains(&d).then(|| days_from_civil(y, m, d))
}

/// `YYYY-MM-DD` as days since the epoch.
pub(crate) fn parse_date(b: &[u8]) -> Option<i32> {
    i32::try_from(civil(b)?).ok()
}

/// RFC 3339 (`T` or a space between date and time; fraction to any precision, truncated to
/// microseconds; `Z` or `±HH:MM`) as microseconds since the epoch. Without an offset only when
/// `!utc` (a `timestamp_ntz`), and then an offset is refused.
pub(crate) fn parse_timestamp(b: &[u8], utc: bool) -> Option<i64> {
    if b.len() < 19 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let days = civil(&b[..10])?;
    let (h, mi, s) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..6 {
            micros *= 10;
        }
    }
    let offset_secs = match &b[i..] {
        [] if !utc => 0,
        [b'Z' | b'z'] if utc => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] if utc => {
            let oh = digits(&[*oh1, *oh2])?;
            let om = digits(&[*om1, *om2])?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let secs = days * 86_400 + h * 3600 + mi * 60 + s.min(59) - offset_secs;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

#[cfg(test)]
mod tests {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
    use sluice_config_agent::delta::DeltaSchema;

    use super::*;

    fn meta() -> RowMeta<'static> {
        RowMeta {
            topic: b"t/1",
            received_micros: 1_000_000,
            properties: None,
        }
    }

    fn schema(fields: &str) -> Vec<DeltaField> {
        let text = format!(
            r#"{{"$schema":"Delta/1.0","type":"object","properties":{{"type":"struct","fields":[{fields}]}}}}"#
        );
        DeltaSchema::parse(text.as_bytes()).expect("schema").fields
    }

    const SEVEN: &str = r#"
        {"name":"deviceId","type":"string","nullable":false},
        {"name":"timestamp","type":"timestamp","nullable":false},
        {"name":"temperature","type":"double","nullable":true},
        {"name":"humidity","type":"float","nullable":true},
        {"name":"pressure","type":"integer","nullable":true},
        {"name":"online","type":"boolean","nullable":true},
        {"name":"seq","type":"long","nullable":false}"#;

    #[test]
    fn rows_of_a_given_schema_in_any_key_order() {
        let mut c = Columns::with_schema(&schema(SEVEN), &[Meta::Topic, Meta::ReceivedTime]);
        c.push(br#"{"deviceId":"d-1","timestamp":"2026-12-02T08:15:00.123456Z","temperature":21.5,"humidity":40,"pressure":1013,"online":true,"seq":1}"#, &meta()).expect("row 1");
        c.push(br#"{"seq":2,"online":null,"deviceId":"d\u00e9","timestamp":"2026-12-02T09:15:00+01:00","extra":{"a":[1,2]}}"#, &meta()).expect("row 2");
        let batch = c.take().into_batch().expect("batch");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.num_columns(), 9);
        let ids = batch.column(0).as_string::<i32>();
        assert_eq!(ids.value(1), "d\u{e9}");
        let ts = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_796_199_300_123_456);
        assert_eq!(ts.value(1), 1_796_199_300_000_000);
        let t = batch.column(2).as_primitive::<Float64Type>();
        assert!(t.is_null(1) && t.value(0) == 21.5);
        assert_eq!(batch.column(4).as_primitive::<Int32Type>().value(0), 1013);
        assert!(batch.column(5).is_null(1));
        assert_eq!(batch.column(6).as_primitive::<Int64Type>().value(1), 2);
        assert_eq!(batch.column(7).as_string::<i32>().value(0), "t/1");
        assert_eq!(
            batch.schema().field(1).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
        );
        assert!(!batch.schema().field(0).is_nullable());
    }

    #[test]
    fn a_row_that_does_not_fit_leaves_nothing() {
        let mut c = Columns::with_schema(&schema(SEVEN), &[Meta::Topic]);
        let good = br#"{"deviceId":"a","timestamp":"2026-01-01T00:00:00Z","seq":1}"#;
        c.push(good, &meta()).expect("good");
        let cases: [(&[u8], &str); 8] = [
            (br#"{"deviceId":"b","timestamp":"2026-01-01T00:00:00Z","temperature":"hot","seq":2}"#, "expected a number"),
            (br#"{"deviceId":"b","timestamp":"2026-01-01T00:00:00Z"}"#, "\"seq\" is missing"),
            (br#"{"deviceId":null,"timestamp":"2026-01-01T00:00:00Z","seq":2}"#, "\"deviceId\" is missing or null"),
            (br#"{"deviceId":"b","timestamp":"yesterday","seq":2}"#, "not an RFC 3339"),
            (br#"{"deviceId":"b","timestamp":"2026-01-01T00:00:00Z","seq":2.5}"#, "expected an integer"),
            (br#"{"deviceId":"b","timestamp":"2026-01-01T00:00:00Z","seq":2,"pressure":3000000000}"#, "out of range"),
            (br#"[1,2]"#, "expected an object"),
            (br#"{"deviceId":"b","timestamp":"2026-01-01T00:00:00Z","seq":2,"seq":3}"#, "given twice"),
        ];
        for (payload, why) in cases {
            let e = c.push(payload, &meta()).expect_err("refused");
            assert!(matches!(e, RowError::Mismatch(_)), "{e}");
            assert!(e.to_string().contains(why), "{e} / {why}");
        }
        for bad in [
            &b"not json"[..],
            b"{\"deviceId\":",
            b"\xff\xfe",
            br#"{"deviceId":"a","timestamp":"2026-01-01T00:00:00Z","seq":1} {}"#,
        ] {
            assert!(matches!(c.push(bad, &meta()), Err(RowError::NotJson(_))));
        }
        c.push(good, &meta()).expect("good again");
        let batch = c.take().into_batch().expect("consistent after refusals");
        assert_eq!(batch.num_rows(), 2);
    }

    #[test]
    fn nested_structs_and_lists() {
        let fields = schema(
            r#"{"name":"Temperature","type":{"type":"struct","fields":[
                {"name":"SourceTimestamp","type":"timestamp","nullable":false},
                {"name":"Value","type":"integer","nullable":false}]},"nullable":true},
               {"name":"tags","type":{"type":"array","elementType":"string","containsNull":false},"nullable":true},
               {"name":"day","type":"date"},{"name":"raw","type":"binary"}"#,
        );
        let mut c = Columns::with_schema(&fields, &[]);
        c.push(br#"{"Temperature":{"SourceTimestamp":"2026-12-02T00:00:00Z","Value":7},"tags":["a","b"],"day":"2026-12-02","raw":"aGk="}"#, &meta()).expect("row");
        c.push(br#"{"Temperature":null,"tags":[]}"#, &meta())
            .expect("nulls");
        assert!(c.push(br#"{"Temperature":{"Value":7}}"#, &meta()).is_err());
        assert!(c.push(br#"{"tags":["a",1]}"#, &meta()).is_err());
        let batch = c.take().into_batch().expect("batch");
        assert_eq!(batch.num_rows(), 2);
        let s = batch.column(0).as_struct();
        assert!(s.is_null(1));
        assert_eq!(s.column(1).as_primitive::<Int32Type>().value(0), 7);
        let l = batch.column(1).as_list::<i32>();
        assert_eq!(l.value(0).len(), 2);
        assert_eq!(l.value(1).len(), 0);
        assert_eq!(batch.column(3).as_binary::<i32>().value(0), b"hi");
    }

    #[test]
    fn inferred_columns_widen() {
        let mut c = Columns::inferred(&[]);
        c.push(br#"{"a":1,"b":"x","n":null}"#, &meta()).expect("1");
        c.push(br#"{"a":2.5,"c":true,"n":{"k":[1]}}"#, &meta())
            .expect("2");
        c.push(br#"{"_topic":"not a column"}"#, &meta())
            .expect("reserved names skipped");
        let e = c.push(br#"{"b":3}"#, &meta()).expect_err("text column");
        assert!(e.to_string().contains("expected a string"), "{e}");
        c.push(br#"{"a":3}"#, &meta()).expect("3");
        let batch = c.take().into_batch().expect("batch");
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["a", "b", "n", "c"]);
        assert_eq!(schema.field(0).data_type(), &DataType::Float64);
        assert_eq!(schema.field(2).data_type(), &DataType::Utf8);
        assert_eq!(batch.column(2).as_string::<i32>().value(1), r#"{"k":[1]}"#);
        assert!(batch.column(3).is_null(0) && !batch.column(3).is_null(1));
        assert_eq!(batch.column(0).as_primitive::<Float64Type>().value(3), 3.0);
        // The types carry over to the next file.
        c.push(br#"{"a":4}"#, &meta()).expect("next file");
        assert_eq!(
            c.take()
                .into_batch()
                .expect("batch")
                .schema()
                .field(0)
                .data_type(),
            &DataType::Float64
        );
    }

    #[test]
    fn user_properties_column() {
        let mut c = Columns::with_schema(
            &schema(r#"{"name":"v","type":"long"}"#),
            &[Meta::UserProperties],
        );
        let mut buf = bytes::BytesMut::new();
        let mut w = sluice_codec::PublishPropertiesWriter::new(&mut buf);
        w.user_property("site", "a").expect("fits");
        w.user_property("site", "b").expect("fits");
        let props = w.finish();
        let m = RowMeta {
            properties: Some(&props),
            ..meta()
        };
        c.push(br#"{"v":1}"#, &m).expect("row");
        c.push(br#"{"v":2}"#, &meta()).expect("row");
        let batch = c.take().into_batch().expect("batch");
        let l = batch.column(1).as_list::<i32>();
        assert_eq!(l.value(0).len(), 2);
        assert_eq!(l.value(1).len(), 0);
    }

    #[test]
    fn plain_decimals_parse_as_the_standard_parser_does() {
        for text in [
            "0",
            "-0",
            "21.53",
            "-3.25",
            "0.1",
            "123456789012345",
            "1.00000000000001",
            "0.00000000000001",
            "99999.99999",
            "40.1",
        ] {
            let ours = simple_decimal(text.as_bytes()).expect(text);
            let std: f64 = text.parse().expect(text);
            assert_eq!(ours.to_bits(), std.to_bits(), "{text}");
        }
        for text in [
            "1e3",
            "1234567890123456",
            "1.000000000000001",
            "1.2.3",
            "",
            "-",
            ".",
        ] {
            assert!(simple_decimal(text.as_bytes()).is_none(), "{text}");
        }
    }

    #[test]
    fn times_and_dates() {
        assert_eq!(parse_date(b"1970-01-01"), Some(0));
        assert_eq!(parse_date(b"2000-02-29"), Some(11_016));
        assert_eq!(parse_date(b"2001-02-29"), None);
        assert_eq!(
            parse_timestamp(b"1970-01-01T00:00:01.5Z", true),
            Some(1_500_000)
        );
        assert_eq!(parse_timestamp(b"1970-01-01 01:00:00+01:00", true), Some(0));
        assert_eq!(
            parse_timestamp(b"1969-12-31T23:59:59.9999999Z", true),
            Some(-1)
        );
        assert_eq!(parse_timestamp(b"1970-01-01T00:00:00", false), Some(0));
        assert_eq!(parse_timestamp(b"1970-01-01T00:00:00", true), None);
        assert_eq!(parse_timestamp(b"1970-01-01T00:00:00Z", false), None);
        assert_eq!(parse_timestamp(b"1970-01-01T24:00:00Z", true), None);
    }
}
