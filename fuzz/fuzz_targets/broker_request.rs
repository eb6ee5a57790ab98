//! The broker's request path, raw bytes on a connection to the real server.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| unbaked_fuzz::checks::broker_request(data));
