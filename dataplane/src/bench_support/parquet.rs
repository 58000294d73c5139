//! The LocalStorage destination's batch path, for `benches/parquet.rs`: payloads decoded into
//! the columns of a file, then the file encoded, as the sink and its writer do (without the
//! disk: the bytes go to a buffer).

use sluice_config_agent::delta::DeltaSchema;

use crate::sinks::parquet::columns::{Columns, RowMeta};
use crate::sinks::parquet::file::encode;

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
            .num_rows()
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
        let meta = RowMeta {
            topic: b"bench/in/0",
            received_micros: 0,
            properties: None,
        };
        for p in payloads {
            self.columns.push(p, &meta).expect("a payload that fits");
        }
        let batch = self
            .columns
            .take()
            .into_batch()
            .expect("a consistent batch");
        let rows = batch.num_rows();
        out.clear();
        encode(&batch, out).expect("encoded");
        rows
    }
}
