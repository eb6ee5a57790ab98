//! The API request decoder: serde_json into the wire request types.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| unbaked_fuzz::checks::api_request(data));
