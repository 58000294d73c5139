//! Control protocol frames, to the data plane or to the agent (the first byte picks); checked by
//! `sluice_fuzz::control::control_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::control::control_frames(data));
