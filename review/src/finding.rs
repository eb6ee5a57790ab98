//! What a check finds ([`Finding`]) and the lints' thresholds
//! ([`Limits`]): the leaf every other module of this crate reads.
//!
//! A `Finding` is the policy crate's `Diagnostic` seen by a reviewer: it
//! adds the `info` level (lints only) and prints its rule id, so the two
//! stay distinct types, converted in one `From`.

use crate::rules::Level;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use unbaked_policy::{Diagnostic, Severity};

/// Thresholds of the lints. The defaults are what `unbaked policy check` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `long-ttl` fires above this.
    pub max_ttl: Duration,
    /// `shared-secret` fires when this many workloads or more share a secret.
    pub shared_secret: usize,
    /// `broad-match` fires when `[match]` lists more uids (or gids) than this.
    pub max_match_ids: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ttl: Duration::from_secs(60 * 60),
            shared_secret: 3,
            max_match_ids: 8,
        }
    }
}

/// One problem, from the parser (an error) or a lint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    /// A stable id from [`crate::rules::RULES`].
    pub rule: &'static str,
    #[serde(serialize_with = "lossy")]
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no position (an unreadable file).
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, e.g. `grant[1].env`; empty when unknown.
    pub field: String,
    /// Lowercase, no trailing period.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// Paths as text, even the rare one that is not UTF-8 (JSON cannot hold it).
pub(crate) fn lossy<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

impl From<Diagnostic> for Finding {
    fn from(d: Diagnostic) -> Self {
        Finding {
            level: match d.severity {
                Severity::Error => Level::Error,
                Severity::Warning => Level::Warning,
            },
            rule: d.rule,
            file: d.file,
            line: d.line,
            column: d.column,
            field: d.field,
            message: d.message,
            hint: d.hint,
        }
    }
}

impl fmt::Display for Finding {
    /// `policies/billing.toml:52:1: warning[env-delivery]: grant[1].env: message (hint: ...)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {}[{}]: ", self.level, self.rule)?;
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
