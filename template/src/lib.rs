//! Templates: one file (or variable) rendered from several secrets.
//!
//! - [`Template::parse`]: the subset of Go's `text/template` that
//!   consul-template and Vault Agent templates use (`secret`, `pkiCert`,
//!   `with`, `range`, `if`, variables, pipelines, `toJSON`, ...), so an
//!   existing `.ctmpl` works unchanged. Every `secret` / `pkiCert` argument
//!   must be a string literal: [`Template::references`] lists exactly what a
//!   template can read, before anything is fetched, so the policy (and its
//!   reviewer) sees every secret a template reaches.
//! - [`Template::render`]: pure, over the values the caller fetched for
//!   those references ([`Resolved`]); output in a zeroizing [`Buf`].
//! - [`format`]: `.env`, JSON and YAML from `(name, value)` pairs.
//!
//! Why not gtmpl (the Go-template crate): its values are plain `String`s
//! and `HashMap`s copied freely while it evaluates, so a rendered secret
//! would leave unzeroized copies on the heap; it has no notion of "every
//! argument of this function is a literal", which the policy needs; and it
//! has had no release since 2021. This subset is ~1000 lines, has no
//! dependency, and is fuzzed (`fuzz/fuzz_targets/template_parse.rs`).
//!
//! **Invariant:** no I/O; no secret byte reaches an error message (errors
//! name template positions, paths and field names, never values).

#![forbid(unsafe_code)]

mod buf;
mod eval;
pub mod format;
mod gojson;
mod parse;
mod value;

pub use buf::Buf;
pub use eval::{RenderError, Resolved};
pub use parse::{ParseError, Reference, ReferenceKind, Template, FUNCTIONS};
pub use value::Value;
