//! An HTTP response from an IMDS endpoint to the data plane's managed identity client, and its
//! token body; checked by `sluice_fuzz::imds::imds_read`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::imds::imds_read(data));
