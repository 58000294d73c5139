//! Criterion benchmark of the LocalStorage destination's batch path against arrow-json and
//! `ArrowWriter` used the plain way, on the same input in the same run: 100,000 JSON payloads of
//! 7 fields (a device id, an RFC 3339 time, two floating-point readings, an integer, a boolean and
//! a sequence number; about 150 bytes each, values varying from row to row) into one Parquet
//! file in memory.
//!
//! - `sluice`: `sluice_dataplane::bench_support::parquet::ParquetBatch::file`: each payload decoded
//!   straight into the file's typed columns (as the sink's `offer` does), then the columns turned
//!   into a record batch and encoded with the writer's properties (zstd level 1, no dictionary
//!   for floating-point columns).
//! - `arrow_json_plain`: arrow-json's `Decoder` fed one payload at a time, flushed into record
//!   batches of its default size (1,024 rows), each written by an `ArrowWriter` with its default
//!   properties (no compression).
//! - `arrow_json_zstd`: the same with zstd level 1, the compression Sluice writes with.
//!
//! - `sluice_decode_only`, `arrow_json_decode_only`: the decoding half of each alone (payloads into
//!   record batches, no Parquet), to show where the difference comes from.
//!
//! Each iteration builds a whole file; the output buffer is reused. Before timing, the three
//! files are read back and must hold the same rows (`check_same_rows`).
//!
//! `cargo bench --bench parquet` runs it (about a minute); `cargo test --benches` runs each
//! routine once on 1,000 payloads. Figures: docs/PERFORMANCE.md.

use std::hint::black_box;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sluice_dataplane::bench_support::parquet::ParquetBatch;

const DELTA: &str = r#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[
    {"name":"deviceId","type":"string","nullable":false,"metadata":{}},
    {"name":"timestamp","type":"timestamp","nullable":false,"metadata":{}},
    {"name":"temperature","type":"double","nullable":true,"metadata":{}},
    {"name":"humidity","type":"double","nullable":true,"metadata":{}},
    {"name":"pressure","type":"long","nullable":true,"metadata":{}},
    {"name":"online","type":"boolean","nullable":true,"metadata":{}},
    {"name":"seq","type":"long","nullable":false,"metadata":{}}]}}"#;

/// The same columns for arrow-json. Its timestamp parser takes offset time zones only without
/// the `chrono-tz` feature, hence `+00:00` for UTC.
fn arrow_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("deviceId", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            false,
        ),
        Field::new("temperature", DataType::Float64, true),
        Field::new("humidity", DataType::Float64, true),
        Field::new("pressure", DataType::Int64, true),
        Field::new("online", DataType::Boolean, true),
        Field::new("seq", DataType::Int64, false),
    ]))
}

fn payloads(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"deviceId":"dev-{:04}","timestamp":"2026-12-02T08:{:02}:{:02}.{:03}Z","temperature":{:.2},"humidity":{:.1},"pressure":{},"online":{},"seq":{}}}"#,
                i % 1000,
                (i / 60_000) % 60,
                (i / 1000) % 60,
                i % 1000,
                20.0 + (i % 977) as f64 * 0.013,
                40.0 + (i % 311) as f64 * 0.1,
                1000 + i % 50,
                i % 3 != 0,
                i
            )
            .into_bytes()
        })
        .collect()
}

/// arrow-json and `ArrowWriter` the plain way; returns the rows written.
fn arrow_json(payloads: &[Vec<u8>], props: Option<WriterProperties>, out: &mut Vec<u8>) -> usize {
    let schema = arrow_schema();
    let mut decoder = arrow_json::ReaderBuilder::new(Arc::clone(&schema))
        .build_decoder()
        .expect("decoder");
    out.clear();
    let mut writer = ArrowWriter::try_new(out, schema, props).expect("writer");
    let mut rows = 0;
    let mut write = |batch: RecordBatch, rows: &mut usize| {
        *rows += batch.num_rows();
        writer.write(&batch).expect("written");
    };
    for p in payloads {
        let mut at = 0;
        while at < p.len() {
            at += decoder.decode(&p[at..]).expect("decoded");
            if at < p.len() {
                // The decoder's batch is full: flush it and go on with the rest.
                if let Some(batch) = decoder.flush().expect("flushed") {
                    write(batch, &mut rows);
                }
            }
        }
    }
    if let Some(batch) = decoder.flush().expect("flushed") {
        write(batch, &mut rows);
    }
    writer.close().expect("closed");
    rows
}

/// arrow-json's decoder alone, the plain way; returns the rows.
fn arrow_json_decode(payloads: &[Vec<u8>]) -> usize {
    let mut decoder = arrow_json::ReaderBuilder::new(arrow_schema())
        .build_decoder()
        .expect("decoder");
    let mut rows = 0;
    for p in payloads {
        let mut at = 0;
        while at < p.len() {
            at += decoder.decode(&p[at..]).expect("decoded");
            if at < p.len()
                && let Some(batch) = decoder.flush().expect("flushed")
            {
                rows += batch.num_rows();
            }
        }
    }
    if let Some(batch) = decoder.flush().expect("flushed") {
        rows += batch.num_rows();
    }
    rows
}

fn zstd() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level")))
        .build()
}

fn read_back(file: &[u8]) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(file))
        .expect("a Parquet file")
        .build()
        .expect("reader")
        .collect::<Result<Vec<_>, _>>()
        .expect("batches")
}

/// The three files hold the same values, column by column (time zone spelling aside).
fn check_same_rows(input: &[Vec<u8>]) {
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut c = Vec::new();
    let n = ParquetBatch::new(DELTA.as_bytes()).file(input.iter().map(Vec::as_slice), &mut a);
    assert_eq!(n, input.len());
    assert_eq!(arrow_json(input, None, &mut b), input.len());
    assert_eq!(arrow_json(input, Some(zstd()), &mut c), input.len());
    let concat = |batches: Vec<RecordBatch>| {
        let schema = batches[0].schema();
        arrow_select::concat::concat_batches(&schema, &batches).expect("concat")
    };
    let (a, b, c) = (
        concat(read_back(&a)),
        concat(read_back(&b)),
        concat(read_back(&c)),
    );
    for i in 0..a.num_columns() {
        let cast = |x: &RecordBatch| {
            arrow_cast::cast(x.column(i), a.column(i).data_type()).expect("same values")
        };
        assert_eq!(a.column(i).as_ref(), cast(&b).as_ref(), "column {i}");
        assert_eq!(a.column(i).as_ref(), cast(&c).as_ref(), "column {i}");
    }
}

fn bench(c: &mut Criterion) {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not (a smoke run).
    let n = if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        1000
    };
    let input = payloads(n);
    check_same_rows(&input);
    let bytes: usize = input.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group(format!("parquet/7_columns_{}_bytes_avg", bytes / n));
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(20);
    let mut out = Vec::with_capacity(bytes);
    let mut ours = ParquetBatch::new(DELTA.as_bytes());
    g.bench_function("sluice", |b| {
        b.iter(|| black_box(ours.file(input.iter().map(Vec::as_slice), &mut out)));
    });
    g.bench_function("arrow_json_plain", |b| {
        b.iter(|| black_box(arrow_json(&input, None, &mut out)));
    });
    g.bench_function("arrow_json_zstd", |b| {
        b.iter(|| black_box(arrow_json(&input, Some(zstd()), &mut out)));
    });
    // Where the difference comes from: the decoding half of each alone (payloads into a record
    // batch, no Parquet).
    g.bench_function("sluice_decode_only", |b| {
        b.iter(|| black_box(ours.decode(input.iter().map(Vec::as_slice))));
    });
    g.bench_function("arrow_json_decode_only", |b| {
        b.iter(|| black_box(arrow_json_decode(&input)));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
