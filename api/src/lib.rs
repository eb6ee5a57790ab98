//! Wire types and the one secret type shared by the broker and its clients.
//!
//! This crate does no I/O. It is the only place where a secret may be
//! serialized, and only through [`wire`] types that opt in field by field.
#![forbid(unsafe_code)]
// Libraries report through `tracing` and errors; only the binary prints.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod exit;
pub mod secret;
pub mod wire;

pub use secret::Secret;
