//! The fuzz targets' checks (see `checks.rs`), shared with the corpus
//! replay test in `tests/hostile_input.rs`.
#![forbid(unsafe_code)]

pub mod checks;
