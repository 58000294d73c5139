//! A manifest file loaded and validated as config-agent does; checked by
//! `sluice_fuzz::manifest::manifest_yaml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::manifest::manifest_yaml(data));
