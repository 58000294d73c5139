//! JSON payloads into the LocalStorage destination's columns, a record batch and a Parquet file;
//! checked by `sluice_fuzz::parquet::parquet_rows`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::parquet::parquet_rows(data));
