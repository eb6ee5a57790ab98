//! unbaked policy files: strict parsing with locations, validation and
//! evaluation.
//!
//! One workload per TOML file. [`load_dir`] reads a directory and returns a
//! [`PolicySet`] or every problem of every file as [`Diagnostics`], each with
//! file, line, column, field, message, hint and a stable rule id.
//! [`Policy::authorize`] and [`Policy::may_launch`] decide for a [`Caller`].
//!
//! Code map: `parse` turns text into raw serde types with spans and then
//! into the validated `model`, using the value checks in `validate`; `eval`
//! decides; `load` reads files, through `trust` when the broker loads them
//! (who may have written them: sshd's `StrictModes`).
//!
//! **Invariant:** only `load` and `trust` do I/O; parsing and evaluation
//! are pure.

#![forbid(unsafe_code)]
// Libraries report through `tracing` and errors; only the binary prints.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod diagnostic;
mod eval;
mod load;
mod model;
mod parse;
mod schema;
pub mod trust;
mod validate;

pub use diagnostic::{rule, Diagnostic, Diagnostics, Severity};
pub use eval::{Caller, ContainerInfo, Denial, ServiceAccount};
pub use load::{
    from_sources, load_dir, load_dir_with, read_dir_sources, read_dir_sources_with, trust_warnings,
    Strictness, MAX_POLICY_BYTES, MAX_POLICY_FILES,
};
pub use model::{
    Dynamic, Format, Grant, GrantDelivery, Isolation, Launch, Match, PkiIssue, Policy, PolicySet,
    Template, TemplateBody, TemplateSource, TemplateValue, TextTemplate, DEFAULT_DEBOUNCE,
    DEFAULT_MODE, DEFAULT_TTL, PKI_FIELDS,
};
pub use schema::json_schema;

/// 1-based line and column of a byte offset, for other TOML files the
/// project reads (the broker's config) to report positions the same way.
pub use diagnostic::line_column;

/// Check a workload name by the rules a policy's `workload` follows
/// (`[a-z0-9][a-z0-9_.-]{0,62}`); the broker checks the names callers ask
/// for with it before it logs, audits or counts them. `Err` quotes the
/// name: bound its length before showing the message to anyone.
pub fn check_workload_name(name: &str) -> Result<(), String> {
    validate::workload_name(name).map_err(|p| match p.hint {
        Some(hint) => format!("{}: {hint}", p.message),
        None => p.message,
    })
}

/// Check a store path by the rules a grant's `secret` follows (the admin
/// API uses it for writes): `Err` says what is wrong and how to fix it.
pub fn check_secret_path(path: &str) -> Result<(), String> {
    validate::secret_path(path).map_err(|p| match p.hint {
        Some(hint) => format!("{}: {hint}", p.message),
        None => p.message,
    })
}
