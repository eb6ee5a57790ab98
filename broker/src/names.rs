//! Names a caller chose (a workload, a secret path), bounded before
//! anything records them: a refused request may carry any bytes.

use ring::digest::{digest, SHA256};

/// Characters of an invalid name kept (escaped) in audit and log.
const NAME_PREFIX_CHARS: usize = 32;

/// The policy crate's rule for workload names (`[a-z0-9][a-z0-9_.-]{0,62}`).
pub fn valid_workload(name: &str) -> bool {
    name.len() <= 63 && unbaked_policy::check_workload_name(name).is_ok()
}

/// A caller-chosen string as audit records and logs may hold it: itself
/// when it is a short plain name, else `invalid:` with an escaped prefix,
/// its length and the start of its SHA-256 (so repeats can be matched).
pub fn bounded_name(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_.-/".contains(c);
    if !s.is_empty() && s.len() <= 64 && s.chars().all(plain) {
        return s.to_string();
    }
    let prefix: String = s
        .chars()
        .take(NAME_PREFIX_CHARS)
        .flat_map(char::escape_default)
        .collect();
    let more = if s.chars().nth(NAME_PREFIX_CHARS).is_some() {
        "..."
    } else {
        ""
    };
    let hash = crate::audit::to_hex(&digest(&SHA256, s.as_bytes()).as_ref()[..8]);
    format!(
        "invalid:\"{prefix}{more}\" ({} bytes, sha256 {hash})",
        s.len()
    )
}

/// A workload name for a log span: itself if valid, else `invalid`.
pub fn log_name(name: &str) -> &str {
    if valid_workload(name) {
        name
    } else {
        "invalid"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_escaped() {
        assert_eq!(bounded_name("billing"), "billing");
        assert_eq!(bounded_name("app/db"), "app/db");
        let huge = "x\n\u{1b}".repeat(400_000);
        let b = bounded_name(&huge);
        assert!(b.len() < 200, "{b}");
        assert!(b.starts_with("invalid:\"x\\n\\u{1b}x"), "{b}");
        assert!(b.contains("1200000 bytes") && b.contains("sha256 "), "{b}");
        assert!(!b.contains('\n') && !b.contains('\u{1b}'));
        assert_ne!(bounded_name(&huge), bounded_name(&huge[1..]));
        assert_eq!(log_name("billing"), "billing");
        assert_eq!(log_name(&huge), "invalid");
        assert_eq!(log_name("Billing"), "invalid");
    }
}
