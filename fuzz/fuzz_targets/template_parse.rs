//! The template parser and renderer (`unbaked_template`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| unbaked_fuzz::checks::template_parse(data));
