//! The LocalStorage destination's batch path, for `benches/parquet.rs` ([`ParquetBatch`]) and the
//! `parquet_rows` fuzz target ([`ParquetRows`]): payloads decoded into the columns of a file, then
//! the file encoded, as the sink and its writer do (without the disk: the bytes go to a buffer).

use arrow_array::RecordBatch;
use sluice_config_agent::delta::DeltaSchema;

use crate::sinks::parquet::columns::{Columns, Meta, RowMeta};
use crate::sinks::parquet::file::{Codec, encode};

/// A file's columns for a Delta schema. See [`ParquetBatch::file`].
#[derive(Debug)]
pub struct ParquetBatch {
    columns: Columns,
}

impl ParquetBatch {
    /// The columns of `schema` (a Delta schema's JSON text), without metadata columns.
    ///
    /// # Panics
    /// When the schema is refused.
    pub fn new(schema: &[u8]) -> Self {
        let fields = DeltaSchema::parse(schema).expect("a valid schema").fields;
        Self {
            columns: Columns::with_schema(&fields, &[]),
        }
    }

    /// The decoding half of [`ParquetBatch::file`]: every payload into the columns, then the
    /// columns into a record batch; returns its rows.
    ///
    /// # Panics
    /// As [`ParquetBatch::file`].
    pub fn decode<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) -> usize {
        self.batch(payloads).num_rows()
    }

    /// Every payload into the columns (as `offer` does), then the columns as a record batch.
    fn batch<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) -> RecordBatch {
        let meta = RowMeta {
            topic: b"bench/in/0",
            received_micros: 0,
            properties: None,
        };
        for p in payloads {
            self.columns.push(p, &meta).expect("a payload that fits");
        }
        self.columns
            .take()
            .into_batch()
            .expect("a consistent batch")
    }

    /// Decodes every payload into the columns (as `offer` does), then encodes them as one
    /// Parquet file into `out` (as the writer's thread does). Returns the rows written.
    ///
    /// # Panics
    /// When a payload does not fit the schema or encoding fails (the benchmark's input fits).
    pub fn file<'a>(
        &mut self,
        payloads: impl IntoIterator<Item = &'a [u8]>,
        out: &mut Vec<u8>,
    ) -> usize {
        let batch = self.batch(payloads);
        let rows = batch.num_rows();
        out.clear();
        encode(&batch, Codec::Zstd, out).expect("encoded");
        rows
    }
}

/// The sink's row decoder for the `parquet_rows` fuzz target (`fuzz/`): JSON payloads into the
/// columns of a given Delta schema or of inferred ones, with the three metadata columns, then a
/// record batch and a Parquet file in memory.
#[derive(Debug)]
pub struct ParquetRows {
    columns: Columns,
    rows: usize,
    out: Vec<u8>,
}

impl ParquetRows {
    /// Columns of `schema` (a Delta schema's JSON text), or inferred with `None`.
    ///
    /// # Errors
    /// The schema's refusal.
    pub fn new(schema: Option<&[u8]>) -> Result<Self, String> {
        let meta = [Meta::Topic, Meta::ReceivedTime, Meta::UserProperties];
        let columns = match schema {
            Some(text) => {
                let fields = DeltaSchema::parse(text).map_err(|e| e.to_string())?.fields;
                Columns::with_schema(&fields, &meta)
            }
            None => Columns::inferred(&meta),
        };
        Ok(Self {
            columns,
            rows: 0,
            out: Vec::new(),
        })
    }

    /// One payload, as `offer` decodes it.
    ///
    /// # Errors
    /// Why it does not become a row.
    pub fn push(&mut self, payload: &[u8]) -> Result<(), String> {
        let meta = RowMeta {
            topic: b"plant/line1/temp",
            received_micros: 1_796_199_300_000_000,
            properties: None,
        };
        self.columns
            .push(payload, &meta)
            .map_err(|e| e.to_string())?;
        self.rows += 1;
        Ok(())
    }

    /// Rows taken since the last [`ParquetRows::finish`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The rows as a record batch, encoded as a Parquet file; returns the batch's rows and
    /// columns and the file's size. The columns stay (empty, with their types).
    ///
    /// # Errors
    /// An inconsistent batch or an encoding failure (bugs).
    pub fn finish(&mut self) -> Result<(usize, usize, usize), String> {
        let batch = self
            .columns
            .take()
            .into_batch()
            .map_err(|e| e.to_string())?;
        self.rows = 0;
        self.out.clear();
        encode(&batch, Codec::Zstd, &mut self.out).map_err(|e| e.to_string())?;
        Ok((batch.num_rows(), batch.num_columns(), self.out.len()))
    }
}
