//! The docker-argument checker of `unbaked run` (`launch::parse` and `plan`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| unbaked_fuzz::checks::launch_args(data));
