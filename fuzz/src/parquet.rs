//! The `parquet_rows` target: hostile payloads into the LocalStorage destination's rows
//! ([`ParquetRows`](sluice_dataplane::bench_support::parquet::ParquetRows): the JSON reader, the
//! typed columns, type inference and widening, the metadata columns), then the record batch and
//! the Parquet file they make.
//!
//! Input: a selector byte (even: the columns of [`SCHEMA`], every Delta type including nested
//! structs and lists; odd: inferred columns), then payloads separated by `0xFF` (a byte that no
//! UTF-8 text holds, so a separator is never part of a valid payload).
//!
//! Checked (any failure is a panic):
//! - nothing panics;
//! - a payload's verdict is the same when it is offered again (with a given schema; inferred
//!   columns may have widened meanwhile, which can only let more through);
//! - a refused payload leaves no row behind: the rows taken are the payloads accepted;
//! - the rows always make a consistent record batch with that many rows, which encodes as a
//!   Parquet file; and after that, the columns take rows again (a second batch of what was
//!   accepted once more).

use sluice_dataplane::bench_support::parquet::ParquetRows;

/// Separates payloads in the input.
pub const PAYLOAD_SEPARATOR: u8 = 0xFF;

/// The schema of even selectors: one field of every type, nested ones included.
pub const SCHEMA: &str = r#"{"$schema":"Delta/1.0","type":"object","properties":{"type":"struct","fields":[
  {"name":"id","type":"string","nullable":false,"metadata":{}},
  {"name":"n","type":"long","nullable":true,"metadata":{}},
  {"name":"i","type":"integer","nullable":true,"metadata":{}},
  {"name":"s","type":"short","nullable":true,"metadata":{}},
  {"name":"b","type":"byte","nullable":true,"metadata":{}},
  {"name":"d","type":"double","nullable":true,"metadata":{}},
  {"name":"f","type":"float","nullable":true,"metadata":{}},
  {"name":"ok","type":"boolean","nullable":true,"metadata":{}},
  {"name":"raw","type":"binary","nullable":true,"metadata":{}},
  {"name":"day","type":"date","nullable":true,"metadata":{}},
  {"name":"ts","type":"timestamp","nullable":true,"metadata":{}},
  {"name":"local","type":"timestamp_ntz","nullable":true,"metadata":{}},
  {"name":"pos","type":{"type":"struct","fields":[
     {"name":"x","type":"double","nullable":false,"metadata":{}},
     {"name":"tags","type":{"type":"array","elementType":"string","containsNull":true},"nullable":true,"metadata":{}}]},
   "nullable":true,"metadata":{}},
  {"name":"list","type":{"type":"array","elementType":{"type":"struct","fields":[
     {"name":"k","type":"string","nullable":false,"metadata":{}}]},"containsNull":false},
   "nullable":true,"metadata":{}}]}}"#;

/// Runs the checks of the module documentation on `data`.
///
/// # Panics
/// When a check fails.
pub fn parquet_rows(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let given = sel % 2 == 0;
    let schema = given.then_some(SCHEMA.as_bytes());
    let mut rows = ParquetRows::new(schema).expect("the target's schema is valid");
    let mut accepted: Vec<&[u8]> = Vec::new();
    for payload in rest.split(|&b| b == PAYLOAD_SEPARATOR) {
        let before = rows.rows();
        match rows.push(payload) {
            Ok(()) => {
                assert_eq!(rows.rows(), before + 1);
                accepted.push(payload);
            }
            Err(why) => {
                assert_eq!(rows.rows(), before, "a refused payload left a row: {why}");
                assert!(!why.is_empty());
                if given {
                    assert!(
                        rows.push(payload).is_err(),
                        "the same payload, another verdict"
                    );
                }
            }
        }
    }
    let (n, _, _) = rows.finish().expect("the rows make a batch and a file");
    assert_eq!(n, accepted.len());
    // The columns go on after a file: what was accepted is accepted again.
    for payload in &accepted {
        rows.push(payload).expect("accepted before, accepted again");
    }
    let (n, _, _) = rows.finish().expect("a second batch");
    assert_eq!(n, accepted.len());
}
