//! Policy review for pull requests and CI gates: `unbaked policy check`,
//! `test` and `diff` as a library.
//!
//! - [`check`]: every parser error plus lints with stable rule ids
//!   ([`rules`]), each located at file:line:column; rendered by [`output`]
//!   as human text, JSON, SARIF 2.1.0 or Markdown.
//! - [`cases`]: assertion files under `DIR/tests/*.toml` (`[[case]]`).
//! - [`diff`]: per workload, who gains or loses which secret and what got
//!   weaker, between two policy sets (directories, or one read from a git
//!   revision by [`git`]).
//!
//! **API boundary:** the broker does not link this crate; it only reads
//! policies through `unbaked-policy`. Nothing here holds a secret value:
//! policies name secrets, they never contain them.

#![forbid(unsafe_code)]
// Libraries report through `tracing` and errors; only the binary prints.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod cases;
pub mod check;
pub mod diff;
pub mod finding;
pub mod git;
mod lint;
mod locate;
pub mod output;
pub mod rules;
mod text;

pub use check::{check_dir, check_sources, Finding, Limits, Report};
pub use rules::{Level, Rule};
