//! Checks on single values, independent of where they sit in a file. The
//! parser attaches the location; these only say what is wrong and how to fix
//! it. User text is quoted with `{:?}` so control characters cannot reach a
//! terminal or log line unescaped.

use crate::diagnostic::rule;
use std::time::Duration;

/// Longest file name most Linux filesystems accept (and tmpfs enforces).
const MAX_FILE_PATH: usize = 255;
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Capability names of Linux 6.x, `capabilities(7)`, without `CAP_`.
pub(crate) const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// What is wrong with a value; the parser turns it into a `Diagnostic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub rule: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

fn problem(rule: &'static str, message: String, hint: &str) -> Problem {
    Problem {
        rule,
        message,
        hint: Some(hint.to_owned()),
    }
}

/// `[a-z0-9][a-z0-9_.-]{0,62}`: safe in file names, labels, URLs and logs.
pub(crate) fn workload_name(name: &str) -> Result<(), Problem> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if first_ok && rest_ok && name.len() <= 63 {
        return Ok(());
    }
    Err(problem(
        rule::BAD_WORKLOAD,
        format!("workload name {name:?} is not valid"),
        "use 1 to 63 lowercase letters, digits, `_`, `.` or `-`, starting with a letter or digit",
    ))
}

/// A store path: `/`-separated segments of `[A-Za-z0-9_.-]`, none empty,
/// `.` or `..`, so it names one secret and cannot walk the store's tree.
pub(crate) fn secret_path(path: &str) -> Result<(), Problem> {
    let bad = |message: String, hint: &str| Err(problem(rule::BAD_SECRET, message, hint));
    if path.is_empty() {
        return bad(
            "secret path is empty".into(),
            "name a path in the store, e.g. \"app/db\"",
        );
    }
    if path.starts_with('/') || path.ends_with('/') {
        return bad(
            format!("secret path {path:?} starts or ends with `/`"),
            "store paths are relative to the store's mount: write e.g. \"app/db\"",
        );
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return bad(
                format!("secret path {path:?} has an empty segment"),
                "remove the doubled `/`",
            );
        }
        if segment == "." || segment == ".." {
            return bad(
                format!("secret path {path:?} has a `{segment}` segment"),
                "name the secret directly, without `.` or `..` segments",
            );
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c)))
        {
            return bad(
                format!("secret path {path:?} contains {c:?}"),
                "use letters, digits, `_`, `.` and `-` in segments separated by `/`",
            );
        }
    }
    Ok(())
}

/// `MOUNT/issue/ROLE`, the mount possibly nested: (mount, role).
pub(crate) fn pki_path(path: &str) -> Result<(String, String), Problem> {
    let hint = "write the PKI issue endpoint as MOUNT/issue/ROLE, e.g. \"pki/issue/web\"";
    let not_store_path = secret_path(path).err().map(|p| p.message);
    match (not_store_path, path.rsplit_once("/issue/")) {
        (None, Some((mount, role))) if !role.contains('/') => Ok((mount.into(), role.into())),
        (Some(why), _) => Err(problem(
            rule::BAD_PKI,
            why.replacen("secret path", "pki path", 1),
            hint,
        )),
        _ => Err(problem(
            rule::BAD_PKI,
            format!("pki path {path:?} is not MOUNT/issue/ROLE"),
            hint,
        )),
    }
}

/// A Vault path read for a leased credential, e.g. `database/creds/ROLE`:
/// a store path of at least two segments (a mount and what is under it).
pub(crate) fn dynamic_path(path: &str) -> Result<(), Problem> {
    let hint =
        "name the Vault endpoint that issues the credential, e.g. \"database/creds/billing\"";
    if let Err(p) = secret_path(path) {
        return Err(problem(
            rule::BAD_FIELD,
            p.message.replacen("secret path", "dynamic path", 1),
            hint,
        ));
    }
    if !path.contains('/') {
        return Err(problem(
            rule::BAD_FIELD,
            format!("dynamic path {path:?} names a mount but no endpoint under it"),
            hint,
        ));
    }
    Ok(())
}

/// A field of an issued credential. `pki` fields are fixed; a leased
/// credential's are whatever its engine answers, so only their form is
/// checked (a directory grant turns each into a file name).
pub(crate) fn field(field: &str, pki: bool) -> Result<(), Problem> {
    if pki {
        if crate::model::PKI_FIELDS.iter().any(|(f, _)| *f == field) {
            return Ok(());
        }
        return Err(problem(
            rule::BAD_FIELD,
            format!("field {field:?} is not a field of a PKI certificate"),
            "use \"certificate\", \"private_key\" or \"issuing_ca\"",
        ));
    }
    let ok = !field.is_empty()
        && !field.starts_with('.')
        && field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        return Ok(());
    }
    Err(problem(
        rule::BAD_FIELD,
        format!("field {field:?} is not a valid field name"),
        "name a field of the credential, e.g. \"username\" or \"password\"",
    ))
}

/// A certificate name: Vault joins `alt_names` with commas, so a comma
/// would smuggle in another name.
pub(crate) fn cert_name(name: &str, what: &str) -> Result<(), Problem> {
    let why = if name.is_empty() {
        "is empty"
    } else if name.contains(',') {
        "contains a comma, which Vault reads as a separator"
    } else if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        "contains whitespace or a control character"
    } else if name.len() > 253 {
        "is longer than 253 bytes"
    } else {
        return Ok(());
    };
    Err(problem(
        rule::BAD_PKI,
        format!("{what} {name:?} {why}"),
        "use a DNS name or email address the PKI role allows, e.g. \"billing.internal\"",
    ))
}

pub(crate) fn ip_san(ip: &str) -> Result<(), Problem> {
    match ip.parse::<std::net::IpAddr>() {
        Ok(_) => Ok(()),
        Err(_) => Err(problem(
            rule::BAD_PKI,
            format!("ip_sans entry {ip:?} is not an IP address"),
            "list IPv4 or IPv6 addresses, e.g. [\"10.0.0.5\"]; put DNS names in alt_names",
        )),
    }
}

pub(crate) fn secret_key(key: &str) -> Result<(), Problem> {
    if key.is_empty() {
        return Err(problem(
            rule::BAD_KEY,
            "key is empty".into(),
            "name the key inside the secret, e.g. \"password\"",
        ));
    }
    Ok(())
}

/// A path relative to the secrets directory that stays inside it and does
/// not collide with the sidecar's hidden temporary files.
pub(crate) fn file_path(path: &str) -> Result<(), Problem> {
    let bad = |message: String, hint: &str| Err(problem(rule::FILE_ESCAPES, message, hint));
    if path.is_empty() {
        return bad(
            "file path is empty".into(),
            "name a file relative to the secrets directory, e.g. \"db_password\"",
        );
    }
    if path.contains('\0') {
        return bad(
            format!("file path {path:?} contains a NUL byte"),
            "remove the NUL byte",
        );
    }
    if path.chars().any(char::is_control) {
        return bad(
            format!("file path {path:?} contains a control character"),
            "use printable characters only",
        );
    }
    if path.len() > MAX_FILE_PATH {
        return bad(
            format!(
                "file path is {} bytes long, more than {MAX_FILE_PATH}",
                path.len()
            ),
            "use a shorter path",
        );
    }
    if path.starts_with('/') {
        return bad(
            format!("file path {path:?} is absolute, so it escapes the secrets directory"),
            "use a path relative to the secrets directory, e.g. \"db_password\"",
        );
    }
    for segment in path.split('/') {
        if segment == ".." {
            return bad(
                format!("file path {path:?} escapes the secrets directory through `..`"),
                "use a relative path without `..`",
            );
        }
        if segment == "." {
            return bad(
                format!("file path {path:?} has a `.` segment"),
                "remove the `.` segment",
            );
        }
        if segment.is_empty() {
            return bad(
                format!("file path {path:?} has an empty segment"),
                "remove the doubled or trailing `/`",
            );
        }
        if segment.starts_with('.') {
            return bad(
                format!("file path {path:?} has a name starting with `.`"),
                "hidden names are reserved for the sidecar's temporary files: drop the leading `.`",
            );
        }
    }
    Ok(())
}

/// A portable shell variable name that the loader and shell do not act on.
/// `kind` is `env` or `fd`, for the message.
pub(crate) fn variable_name(name: &str, kind: &str) -> Result<(), Problem> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(problem(
            rule::BAD_VARIABLE,
            format!("`{kind}` variable name {name:?} is not a valid name"),
            "use letters, digits and `_`, not starting with a digit, e.g. \"API_TOKEN\"",
        ));
    }
    let why = if name.starts_with("LD_") {
        // Every LD_* is the dynamic loader's, not only LD_PRELOAD/LIBRARY_PATH/AUDIT.
        "the dynamic loader acts on LD_* variables before the program starts, so a value there can load code"
    } else if name == "PATH" || name == "HOME" {
        "programs find commands and configuration through PATH and HOME, so a value there redirects them"
    } else if name == "BASH_ENV" {
        "bash runs the file named by BASH_ENV when it starts"
    } else {
        return Ok(());
    };
    Err(problem(
        rule::DANGEROUS_VARIABLE,
        format!("`{kind}` variable {name:?} is refused"),
        &format!("{why}: pick another name"),
    ))
}

/// A full image id as `docker image inspect` prints it.
/// A DNS-1123 label: what Kubernetes allows for a namespace.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: what Kubernetes allows for a service account.
fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

pub(crate) fn k8s_namespace(ns: &str) -> Result<(), Problem> {
    if dns_label(ns) {
        return Ok(());
    }
    Err(problem(
        rule::BAD_SERVICE_ACCOUNT,
        format!("{ns:?} is not a Kubernetes namespace name"),
        "use lowercase letters, digits and `-`, at most 63, e.g. \"payments\"",
    ))
}

pub(crate) fn k8s_service_account(sa: &str) -> Result<(), Problem> {
    let ok = sa
        .split_once('/')
        .is_some_and(|(ns, name)| dns_label(ns) && dns_subdomain(name));
    if ok {
        return Ok(());
    }
    Err(problem(
        rule::BAD_SERVICE_ACCOUNT,
        format!("{sa:?} is not a service account as \"namespace/name\""),
        "write the namespace and the service account name, e.g. \"payments/billing\"",
    ))
}

pub(crate) fn image_id(image: &str) -> Result<(), Problem> {
    let ok = image.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        return Ok(());
    }
    Err(problem(
        rule::BAD_IMAGE,
        format!("image {image:?} is not a full image id"),
        "pin the id from `docker image inspect --format '{{.Id}}' IMAGE`: \"sha256:\" and 64 lowercase hex digits",
    ))
}

pub(crate) fn capability(cap: &str) -> Result<(), Problem> {
    if CAPABILITIES.contains(&cap) {
        return Ok(());
    }
    let bad = |message: String, hint: String| {
        Err(Problem {
            rule: rule::BAD_CAP,
            message,
            hint: Some(hint),
        })
    };
    if cap.eq_ignore_ascii_case("ALL") {
        return bad(
            format!("capability {cap:?} would allow every capability"),
            "list only the capabilities the workload needs".into(),
        );
    }
    let upper = cap.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if CAPABILITIES.contains(&bare) {
        return bad(
            format!("capability {cap:?} is not written the way docker expects"),
            format!("write {bare:?}: uppercase, without `CAP_`"),
        );
    }
    bad(
        format!("unknown capability {cap:?}"),
        "use a Linux capability name from capabilities(7) without `CAP_`, e.g. \"NET_BIND_SERVICE\""
            .into(),
    )
}

pub(crate) fn ttl(text: &str) -> Result<Duration, Problem> {
    let hint = "grants are renewed before they expire, so keep ttl short: between \"1s\" and \"24h\", e.g. \"10m\"";
    let ttl = humantime::parse_duration(text).map_err(|e| {
        problem(
            rule::BAD_TTL,
            format!("ttl {text:?} is not a duration ({e})"),
            "write a number and a unit, e.g. \"90s\", \"10m\" or \"1h\"",
        )
    })?;
    if ttl < MIN_TTL {
        return Err(problem(
            rule::BAD_TTL,
            format!("ttl {text:?} is shorter than 1s"),
            hint,
        ));
    }
    if ttl > MAX_TTL {
        return Err(problem(
            rule::BAD_TTL,
            format!("ttl {text:?} is longer than 24h"),
            hint,
        ));
    }
    Ok(ttl)
}

/// A mode written as a string of octal digits, e.g. "0440" or "0o440".
pub(crate) fn mode_str(text: &str) -> Result<u32, Problem> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let parsed = if !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        u32::from_str_radix(digits, 8).ok()
    } else {
        None
    };
    match parsed {
        Some(mode) => mode_value(mode),
        None => Err(problem(
            rule::BAD_MODE,
            format!("mode {text:?} is not an octal number"),
            "write octal digits, e.g. \"0440\" or 0o440",
        )),
    }
}

/// Permission bits only, and the owner (who the sidecar writes for) can read.
pub(crate) fn mode_value(mode: u32) -> Result<u32, Problem> {
    if mode > 0o777 {
        return Err(problem(
            rule::BAD_MODE,
            format!("mode 0o{mode:03o} has bits beyond 0o777"),
            "setuid, setgid and sticky bits have no place on a secret file: use e.g. 0o400",
        ));
    }
    if mode & 0o400 == 0 {
        return Err(problem(
            rule::BAD_MODE,
            format!("mode 0o{mode:03o} does not let the file's owner read it"),
            "include owner read, e.g. 0o400 or 0o440",
        ));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_of<T>(r: Result<T, Problem>) -> &'static str {
        r.err().map_or("ok", |p| p.rule)
    }

    #[test]
    fn workload_names() {
        for ok in ["billing", "a", "0", "web-1.api_v2", &"a".repeat(63)] {
            assert_eq!(rule_of(workload_name(ok)), "ok", "{ok}");
        }
        for bad in [
            "",
            "Billing",
            "-a",
            "_a",
            ".a",
            "a b",
            "a/b",
            &"a".repeat(64),
        ] {
            assert_eq!(rule_of(workload_name(bad)), rule::BAD_WORKLOAD, "{bad}");
        }
    }

    #[test]
    fn secret_paths() {
        for ok in ["app/db", "a", "A.b-c_d/e", "x/..y"] {
            assert_eq!(rule_of(secret_path(ok)), "ok", "{ok}");
        }
        for bad in [
            "", "/app", "app/", "a//b", "a/../b", "./a", "a b", "a\0b", "ü",
        ] {
            assert_eq!(rule_of(secret_path(bad)), rule::BAD_SECRET, "{bad}");
        }
    }

    #[test]
    fn file_paths() {
        for ok in ["db_password", "tls/cert.pem", "a..b", &"a".repeat(255)] {
            assert_eq!(rule_of(file_path(ok)), "ok", "{ok}");
        }
        let too_long = "a".repeat(256);
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "a/../../b",
            "./a",
            "a/.",
            "a//b",
            "a/",
            ".hidden",
            "d/.tmp",
            "a\0b",
            "a\nb",
            &too_long,
        ] {
            assert_eq!(rule_of(file_path(bad)), rule::FILE_ESCAPES, "{bad:?}");
        }
    }

    #[test]
    fn variable_names() {
        for ok in ["API_TOKEN", "_x", "a1", "LD", "PATHS", "ld_preload"] {
            assert_eq!(rule_of(variable_name(ok, "env")), "ok", "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "Ä"] {
            assert_eq!(
                rule_of(variable_name(bad, "env")),
                rule::BAD_VARIABLE,
                "{bad}"
            );
        }
        for bad in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LD_AUDIT",
            "LD_DEBUG_OUTPUT",
            "PATH",
            "HOME",
            "BASH_ENV",
        ] {
            assert_eq!(
                rule_of(variable_name(bad, "fd")),
                rule::DANGEROUS_VARIABLE,
                "{bad}"
            );
        }
    }

    #[test]
    fn image_ids() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(rule_of(image_id(&format!("sha256:{hex}"))), "ok");
        for bad in [
            hex.clone(),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{}", &hex[1..]),
            "billing:1.4".into(),
        ] {
            assert_eq!(rule_of(image_id(&bad)), rule::BAD_IMAGE, "{bad}");
        }
    }

    #[test]
    fn dynamic_values() {
        assert_eq!(
            pki_path("pki/issue/web").ok(),
            Some(("pki".to_string(), "web".to_string()))
        );
        assert_eq!(
            pki_path("pki/int/issue/web").ok(),
            Some(("pki/int".to_string(), "web".to_string()))
        );
        for bad in [
            "pki",
            "pki/web",
            "issue/web",
            "pki/issue/",
            "pki/issue/a/b",
            "/pki/issue/web",
        ] {
            assert_eq!(rule_of(pki_path(bad)), rule::BAD_PKI, "{bad}");
        }
        assert_eq!(rule_of(dynamic_path("database/creds/app")), "ok");
        for bad in ["database", "", "a/../b"] {
            assert_eq!(rule_of(dynamic_path(bad)), rule::BAD_FIELD, "{bad}");
        }
        assert_eq!(rule_of(field("private_key", true)), "ok");
        assert_eq!(rule_of(field("password", true)), rule::BAD_FIELD);
        assert_eq!(rule_of(field("password", false)), "ok");
        for bad in ["", ".x", "a/b", "a b"] {
            assert_eq!(rule_of(field(bad, false)), rule::BAD_FIELD, "{bad:?}");
        }
        assert_eq!(rule_of(cert_name("billing.internal", "common_name")), "ok");
        for bad in ["", "a,b", "a b", "a\nb"] {
            assert_eq!(
                rule_of(cert_name(bad, "alt_names entry")),
                rule::BAD_PKI,
                "{bad:?}"
            );
        }
        assert_eq!(rule_of(ip_san("::1")), "ok");
        assert_eq!(rule_of(ip_san("10.0.0.300")), rule::BAD_PKI);
    }

    #[test]
    fn capabilities() {
        assert_eq!(rule_of(capability("NET_BIND_SERVICE")), "ok");
        let hint = |c| capability(c).err().and_then(|p| p.hint).unwrap_or_default();
        assert!(hint("CAP_NET_ADMIN").contains("\"NET_ADMIN\""));
        assert!(hint("net_admin").contains("\"NET_ADMIN\""));
        for bad in ["ALL", "all", "NET_ADMINS", ""] {
            assert_eq!(rule_of(capability(bad)), rule::BAD_CAP, "{bad}");
        }
    }

    #[test]
    fn ttls() {
        assert_eq!(ttl("10m").ok(), Some(Duration::from_secs(600)));
        assert_eq!(ttl("1s").ok(), Some(MIN_TTL));
        assert_eq!(ttl("24h").ok(), Some(MAX_TTL));
        for bad in ["", "0", "999ms", "24h 1s", "2days", "ten minutes", "10"] {
            assert_eq!(rule_of(ttl(bad)), rule::BAD_TTL, "{bad}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(mode_str("0440").ok(), Some(0o440));
        assert_eq!(mode_str("0o600").ok(), Some(0o600));
        assert_eq!(mode_str("400").ok(), Some(0o400));
        for bad in [
            "",
            "0o",
            "0x1ff",
            "0448",
            "4755",
            "0040",
            "-400",
            "99999999999999",
        ] {
            assert_eq!(rule_of(mode_str(bad)), rule::BAD_MODE, "{bad}");
        }
        assert_eq!(mode_value(0o777).ok(), Some(0o777));
        assert_eq!(rule_of(mode_value(0o1400)), rule::BAD_MODE);
        assert_eq!(rule_of(mode_value(0o044)), rule::BAD_MODE);
    }
}
