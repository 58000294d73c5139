//! What a server receives: the first byte picks 3.1.1, 5.0 or a server awaiting CONNECT; the rest
//! is decoded frame by frame with the checks of `sluice_fuzz::decode_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice_fuzz::decode_stream(sluice_codec::Role::Server, data);
});
