//! The policy parser and evaluator (`unbaked_policy::from_sources`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| unbaked_fuzz::checks::policy_parse(data));
