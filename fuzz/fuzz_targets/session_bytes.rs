//! Bytes from a broker to the data plane's MQTT client session: a selector byte picks 3.1.1 or
//! 5.0 and the session's state, a second byte the read size; checked by
//! `sluice_fuzz::session::session_bytes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::session::session_bytes(data));
