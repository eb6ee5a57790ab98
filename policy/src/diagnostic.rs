//! What is wrong with a policy file, and where.
//!
//! A [`Diagnostic`] names a file, a 1-based line and column, the dotted field
//! (`grant[0].file`, `match.uids`; grant indices count from 0 in file order),
//! a message and a hint. [`Diagnostics`] collects them for every file at once
//! so an author fixes everything in one round.

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// Stable rule ids: tooling (SARIF, CI annotations, tests) keys on these, so
/// they are never renamed.
pub mod rule {
    /// The file could not be read (or is not UTF-8).
    pub const IO: &str = "io";
    /// TOML syntax error.
    pub const PARSE: &str = "parse";
    /// A value of the wrong type, e.g. a string where a list of uids belongs.
    pub const TYPE: &str = "type";
    /// A key the format does not know (often a typo).
    pub const UNKNOWN_FIELD: &str = "unknown-field";
    /// A required key is absent.
    pub const MISSING_FIELD: &str = "missing-field";
    /// `workload` is not a valid workload name.
    pub const BAD_WORKLOAD: &str = "bad-workload";
    /// Two files declare the same workload.
    pub const DUPLICATE_WORKLOAD: &str = "duplicate-workload";
    /// `[match]` lists no selector, so the workload would match nobody.
    pub const NO_SELECTOR: &str = "no-selector";
    /// A `[match]` selector that can never hold (an empty list or table).
    pub const EMPTY_SELECTOR: &str = "empty-selector";
    /// A docker label selector with an empty name.
    pub const BAD_LABEL: &str = "bad-label";
    /// A `k8s_service_accounts` / `k8s_namespaces` entry that is not a
    /// Kubernetes name (`namespace/name`).
    pub const BAD_SERVICE_ACCOUNT: &str = "bad-service-account";
    /// `match.image` is not a `sha256:` image id.
    pub const BAD_IMAGE: &str = "bad-image";
    /// An unknown or disallowed capability in `isolation.cap_add`.
    pub const BAD_CAP: &str = "bad-cap";
    /// `grant.secret` is not a valid store path.
    pub const BAD_SECRET: &str = "bad-secret";
    /// `grant.key` is empty.
    pub const BAD_KEY: &str = "bad-key";
    /// A grant without exactly one of `file`, `env`, `fd`.
    pub const GRANT_DELIVERY: &str = "grant-delivery";
    /// A file grant whose path would leave (or misuse) the secrets directory.
    pub const FILE_ESCAPES: &str = "file-escapes";
    /// An env/fd grant whose variable name is not a portable shell name.
    pub const BAD_VARIABLE: &str = "bad-variable";
    /// An env/fd grant that would set a variable the loader or shell trusts.
    pub const DANGEROUS_VARIABLE: &str = "dangerous-variable";
    /// Two grants of one workload write the same file or variable.
    pub const DUPLICATE_TARGET: &str = "duplicate-target";
    /// `mode`, `uid` or `gid` on an env or fd grant.
    pub const FILE_ONLY: &str = "file-only";
    /// A ttl that does not parse or lies outside 1s..=24h.
    pub const BAD_TTL: &str = "bad-ttl";
    /// A file mode that is not octal, exceeds 0o777 or hides the file from its owner.
    pub const BAD_MODE: &str = "bad-mode";
    /// A grant without exactly one of `secret`, `pki`, `dynamic`, or with a
    /// key that belongs to another kind of grant (`key` on a pki grant).
    pub const GRANT_SOURCE: &str = "grant-source";
    /// A `pki` path that is not MOUNT/issue/ROLE, or a bad `common_name`,
    /// `alt_names` or `ip_sans` entry.
    pub const BAD_PKI: &str = "bad-pki";
    /// A `dynamic` path or `field` that is not valid, or an env/fd dynamic
    /// grant without the `field` it delivers.
    pub const BAD_FIELD: &str = "bad-field";
    /// A `[[template]]` whose text does not parse (consul-template syntax),
    /// or that mixes `contents` and `values`, or lacks both.
    pub const TEMPLATE_SYNTAX: &str = "template-syntax";
    /// A template reference that is not a literal KV v2 or PKI issue path,
    /// or a `values` entry that is not `PATH#KEY`.
    pub const TEMPLATE_SOURCE: &str = "template-source";
    /// An unknown `format`, or a format that cannot be delivered where the
    /// template says (a multi-line format into `env`).
    pub const TEMPLATE_FORMAT: &str = "template-format";
    /// An `on_change` that is not none, signal, command or restart, or
    /// lacks its `signal` / `command`, a bad `signal_container`, or a bad
    /// `debounce` (grants and templates alike).
    pub const BAD_ON_CHANGE: &str = "bad-on-change";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no position (the file could not be read).
    pub line: usize,
    /// 1-based, in characters; 0 when `line` is 0.
    pub column: usize,
    /// Dotted path of the offending key, e.g. `grant[0].file`; empty when unknown.
    pub field: String,
    /// Lowercase, no trailing period.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
    /// A stable id from [`rule`].
    pub rule: &'static str,
}

impl fmt::Display for Diagnostic {
    /// `policies/billing.toml:12:1: error: grant[2].file: message (hint: ...)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {}: ", self.severity)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Every problem found, sorted by file, line and column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Stable order for output and tests; ties keep the order of discovery.
    pub(crate) fn sort(&mut self) {
        self.0
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    }
}

impl fmt::Display for Diagnostics {
    /// One diagnostic per line, no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// 1-based line and column (in characters) of a byte offset in `text`.
/// Offsets past the end point just after the last character, and an offset
/// inside a multi-byte character counts as that character.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let text = "ab\ncd\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 1), (1, 2));
        assert_eq!(line_column(text, 2), (1, 3)); // the newline itself
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 6), (3, 1)); // end of input
        assert_eq!(line_column(text, 99), (3, 1)); // past the end
        assert_eq!(line_column("", 0), (1, 1));
    }

    #[test]
    fn line_column_counts_characters_not_bytes() {
        let text = "é = \"ü\"";
        assert_eq!(line_column(text, 2), (1, 2)); // after the two-byte 'é'
        assert_eq!(line_column(text, 7), (1, 6)); // inside 'ü' counts as 'ü'
    }

    #[test]
    fn display_is_one_line_per_diagnostic() {
        let d = Diagnostic {
            severity: Severity::Error,
            file: "policies/billing.toml".into(),
            line: 12,
            column: 1,
            field: "grant[2].file".into(),
            message: "file path escapes the secrets directory".into(),
            hint: Some("use a relative path without `..`".into()),
            rule: rule::FILE_ESCAPES,
        };
        let io = Diagnostic {
            line: 0,
            column: 0,
            field: String::new(),
            hint: None,
            rule: rule::IO,
            message: "cannot read file".into(),
            ..d.clone()
        };
        let all = Diagnostics(vec![d, io]);
        assert_eq!(
            all.to_string(),
            "policies/billing.toml:12:1: error: grant[2].file: file path escapes the secrets directory (hint: use a relative path without `..`)\n\
             policies/billing.toml: error: cannot read file"
        );
        assert!(all.has_errors());
    }
}
