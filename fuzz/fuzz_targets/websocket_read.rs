//! Bytes from a WebSocket server to the data plane's WebSocket layer (the handshake response,
//! then frames); checked by `sluice_fuzz::websocket::websocket_read`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::websocket::websocket_read(data));
