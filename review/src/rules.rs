//! The rule catalogue: every id a finding can carry, its default level and
//! the help text SARIF consumers show next to an annotation.
//!
//! Ids are kebab-case and stable: the parser's come from
//! [`unbaked_policy::rule`], the lints' are the constants below. Tooling
//! (SARIF, CI filters, tests) keys on them, so they are never renamed.

use serde::Serialize;
use std::fmt;
use unbaked_policy::rule as parse;

/// The rule of a policy test file that cannot be read or parsed.
pub const CASE_FILE: &str = "case-file";

/// How bad a finding is. `check` exits 1 on errors, and on warnings with
/// `--strict`; infos never fail a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl Level {
    /// The SARIF 2.1.0 `level`.
    pub fn sarif(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info => "note",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info => "info",
        })
    }
}

/// Lint ids. A lint never rejects a policy set: the broker loads it; the
/// lints tell a reviewer where it is weaker than it could be.
pub mod lint {
    /// A grant delivered in an environment variable.
    pub const ENV_DELIVERY: &str = "env-delivery";
    /// A grant ttl above the limit (1h by default).
    pub const LONG_TTL: &str = "long-ttl";
    /// A container workload without an `[isolation]` table.
    pub const ISOLATION_MISSING: &str = "isolation-missing";
    /// An `[isolation]` field weaker than the default, or an added capability.
    pub const ISOLATION_WEAKENED: &str = "isolation-weakened";
    /// One secret granted to many workloads (3 or more by default).
    pub const SHARED_SECRET: &str = "shared-secret";
    /// A `[match]` selector that matches far more callers than one workload.
    pub const BROAD_MATCH: &str = "broad-match";
    /// A docker selector without an image pin.
    pub const UNPINNED_IMAGE: &str = "unpinned-image";
    /// A file mode that opens the file to other users.
    pub const FILE_MODE_OTHER: &str = "file-mode-other";
    /// A file mode that opens the file to its group.
    pub const FILE_MODE_GROUP: &str = "file-mode-group";
    /// A container workload that nobody may start with `unbaked run`.
    pub const LAUNCH_MISSING: &str = "launch-missing";
    /// A container workload that does not require a user namespace.
    pub const USER_NAMESPACE_OFF: &str = "user-namespace-off";
}

/// Findings about the checked directory as a whole.
pub mod check {
    /// A directory without any policy file.
    pub const NO_POLICIES: &str = "no-policies";
    /// `--compose FILE`: a workload service the broker would refuse.
    pub const COMPOSE_SERVICE: &str = "compose-service";
}

/// One rule's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub level: Level,
    /// One line: what the rule finds.
    pub summary: &'static str,
    /// Why it matters and how to fix it.
    pub help: &'static str,
}

impl Rule {
    /// `env-delivery` -> `EnvDelivery`, SARIF's `name`.
    pub fn name(&self) -> String {
        self.id
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Whether a parser error (as opposed to a lint).
    pub fn is_error(&self) -> bool {
        self.level == Level::Error
    }
}

const fn error(id: &'static str, summary: &'static str, help: &'static str) -> Rule {
    Rule {
        id,
        level: Level::Error,
        summary,
        help,
    }
}

/// Every rule, parser errors first, then lints.
pub const RULES: &[Rule] = &[
    error(parse::IO, "the file or directory cannot be read", "Check that the path exists, is readable and holds UTF-8 text."),
    error(check::COMPOSE_SERVICE, "a compose service that `unbaked compose` would refuse", "A service labelled `io.unbaked.workload: NAME` is checked like `unbaked run` checks its arguments: its declared settings (privileged, volumes, network_mode, pid, ipc, cap_add, devices, security_opt, labels...) must fit the workload's [isolation], and the workload must exist. The message names the runtime rule (docs/deny-rules.md); change the service, or, if the workload really needs it, its [isolation]."),
    error(check::NO_POLICIES, "the policy directory holds no policy file", "Name the directory that holds the `*.toml` policies (e.g. `policies/`); a broker started on an empty one serves no workload and denies every request."),
    error(parse::PARSE, "TOML syntax error", "Fix the TOML syntax at the location shown; a key may appear once per table."),
    error(parse::TYPE, "a value of the wrong type", "Write the type the field takes: a string for names and ttls, a list of numbers for uids and gids, a [[grant]] table per grant."),
    error(parse::UNKNOWN_FIELD, "a key the policy format does not know", "Remove the key or fix its spelling: policies are parsed strictly so a typo never silently weakens one."),
    error(parse::MISSING_FIELD, "a required key is absent", "Add the key: every file needs `workload`, every grant `secret` and `key`."),
    error(parse::BAD_WORKLOAD, "the workload name is not valid", "Use 1 to 63 lowercase letters, digits, `_`, `.` or `-`, starting with a letter or digit."),
    error(parse::DUPLICATE_WORKLOAD, "two files declare the same workload", "Keep one file per workload: rename one workload or merge the files."),
    error(parse::NO_SELECTOR, "[match] has no selector, so the workload matches nobody", "Add at least one of `uids`, `gids`, `docker_labels`, `image` to [match]."),
    error(parse::EMPTY_SELECTOR, "a [match] selector that can never hold", "List what to match, or remove the empty selector."),
    error(parse::BAD_LABEL, "a docker label selector with an empty name", "Name the label, e.g. `app = \"billing\"`."),
    error(parse::BAD_SERVICE_ACCOUNT, "a k8s_service_accounts or k8s_namespaces entry that is not a Kubernetes name", "Write service accounts as `namespace/name` and namespaces as DNS labels, e.g. `payments/billing`."),
    error(parse::BAD_IMAGE, "match.image is not a full image id", "Pin the id from `docker image inspect --format '{{.Id}}' IMAGE`: `sha256:` and 64 lowercase hex digits."),
    error(parse::BAD_CAP, "an unknown or disallowed capability in isolation.cap_add", "Use a capability name from capabilities(7) without `CAP_`, e.g. `NET_BIND_SERVICE`; `ALL` is refused."),
    error(parse::BAD_SECRET, "grant.secret is not a valid store path", "Use `/`-separated segments of letters, digits, `_`, `.` and `-`, e.g. `app/db`."),
    error(parse::BAD_KEY, "grant.key is empty", "Name the key inside the secret, e.g. `password`."),
    error(parse::GRANT_DELIVERY, "a grant without exactly one of file, env, fd", "Give each grant one delivery; split a grant that needs two."),
    error(parse::FILE_ESCAPES, "a file grant whose path leaves or misuses the secrets directory", "Use a relative path without `..`, `.` segments or hidden names."),
    error(parse::BAD_VARIABLE, "an env or fd variable name that is not a portable shell name", "Use letters, digits and `_`, not starting with a digit."),
    error(parse::DANGEROUS_VARIABLE, "an env or fd grant that would set a variable the loader or shell acts on", "Pick another name than LD_*, PATH, HOME or BASH_ENV."),
    error(parse::DUPLICATE_TARGET, "two grants write the same file or variable", "Give each grant its own target."),
    error(parse::FILE_ONLY, "mode, uid or gid on an env or fd grant", "Remove them: a variable has no owner or mode."),
    error(parse::BAD_TTL, "a ttl that does not parse or lies outside 1s..=24h", "Write a duration string between \"1s\" and \"24h\", e.g. \"10m\"."),
    error(CASE_FILE, "a policy test file that cannot be read or parsed", "Write each case as a [[case]] table with workload, secret and expect = \"allow\" or \"deny\"; key, delivery and caller are optional."),
    error(parse::BAD_MODE, "a file mode that is not octal, exceeds 0o777 or hides the file from its owner", "Write the mode in octal with owner read, e.g. 0o400 or \"0440\"."),
    error(parse::GRANT_SOURCE, "a grant without exactly one of secret, pki, dynamic, or with a key of another kind of grant", "Give each grant one source: `secret` and `key` for a stored secret, `pki` and `common_name` for a certificate, `dynamic` (with `field` for env and fd) for a leased credential."),
    error(parse::BAD_PKI, "a pki grant whose path, common_name, alt_names or ip_sans is not valid", "Write `pki = \"MOUNT/issue/ROLE\"` and DNS names or IP addresses the role may issue for."),
    error(parse::BAD_FIELD, "a dynamic grant whose path or field is not valid, or an env or fd dynamic grant without a field", "Name the credential field to deliver, e.g. `field = \"password\"`; only a file grant may receive every field as a directory."),
    error(parse::TEMPLATE_SYNTAX, "a template whose text does not parse, or that has both or neither of contents and values", "Write a text template in `contents` (the consul-template subset in README.md), or `values` with format env, json or yaml."),
    error(parse::TEMPLATE_SOURCE, "a template reference that is not a literal KV v2 or PKI issue path, or a value that is not PATH#KEY", "Write `secret \"MOUNT/data/PATH\"` or `pkiCert \"MOUNT/issue/ROLE\" \"common_name=NAME\"` with string literals, and values as \"app/db#password\"."),
    error(parse::TEMPLATE_FORMAT, "an unknown template format, or a JSON or YAML template delivered in an environment variable", "Use format env, json, yaml or text; deliver JSON and YAML as a file or fd."),
    error(parse::BAD_ON_CHANGE, "a grant's or template's on_change that is not none, signal, command or restart, lacks its signal or command, names a signal_container that is no container name (or for a variable), or a debounce over 60s", "Write on_change = \"signal\" with signal = \"SIGHUP\" (and signal_container = \"APP\" for a sidecar's file), on_change = \"command\" with command = [...], or on_change = \"restart\"."),
    Rule {
        id: lint::ENV_DELIVERY,
        level: Level::Warning,
        summary: "a secret delivered in an environment variable",
        help: "Environment variables are readable in /proc/PID/environ by every process of the same uid (and by root), are inherited by every child process, and end up in crash reports and debug dumps. Deliver the secret with `fd = \"NAME_FILE\"` (a sealed memfd, its path in the variable: the _FILE convention) or as a file on tmpfs.",
    },
    Rule {
        id: lint::LONG_TTL,
        level: Level::Warning,
        summary: "a grant ttl above the limit (1h)",
        help: "A delivered copy lives for its ttl unless renewed, and a withdrawn grant disappears only within one ttl. Renewal is automatic, so a short ttl costs little: keep it at 1h or less, e.g. \"10m\".",
    },
    Rule {
        id: lint::ISOLATION_MISSING,
        level: Level::Info,
        summary: "a container workload without an [isolation] table",
        help: "Without [isolation] the safe defaults apply, but a reviewer cannot see them in the file. Spell the table out (inter_container_traffic, privileged, host_network, host_pid, host_ipc, docker_socket, read_only_rootfs, cap_add).",
    },
    Rule {
        id: lint::USER_NAMESPACE_OFF,
        level: Level::Info,
        summary: "a container workload that does not require a user namespace",
        help: "Without a user namespace, root in the container is root on the host: a container escape hands over the host, and every secret on it. Where the engine runs with `userns-remap` (or rootless), set [isolation] user_namespace = true, so the broker releases secrets only to containers whose root is not the host's (checked on the live container, refused at launch for --userns host).",
    },
    Rule {
        id: lint::ISOLATION_WEAKENED,
        level: Level::Warning,
        summary: "an [isolation] field weaker than the default",
        help: "The broker releases secrets only to a container whose live configuration passes [isolation]. Each weakening (privileged, host namespaces, the Docker socket, a writable root filesystem, traffic between containers, added capabilities) widens who can read those secrets. Keep the defaults unless the workload cannot run without the weakening.",
    },
    Rule {
        id: lint::SHARED_SECRET,
        level: Level::Warning,
        summary: "one secret granted to many workloads (3 or more)",
        help: "A secret shared by many workloads leaks if any of them is compromised, and cannot be revoked from one without the others. Give each workload its own secret, e.g. `app/db/billing`.",
    },
    Rule {
        id: lint::BROAD_MATCH,
        level: Level::Warning,
        summary: "a [match] selector that matches far more callers than one workload",
        help: "uid or gid 0 matches every root process and every container running as root without a user namespace; a long uid list lets each of them claim the workload; docker labels alone can be set by anyone who may start a container; a Kubernetes namespace alone matches every pod in it. Match a dedicated uid or service account, and pin the image for containers.",
    },
    Rule {
        id: lint::UNPINNED_IMAGE,
        level: Level::Info,
        summary: "a docker selector without an image pin",
        help: "Any image started with the labels and uids matches. Pin `image = \"sha256:...\"` (from `docker image inspect --format '{{.Id}}' IMAGE`) once releases are reproducible.",
    },
    Rule {
        id: lint::FILE_MODE_OTHER,
        level: Level::Warning,
        summary: "a file mode that opens the secret file to other users",
        help: "Bits for others let every user in the container read the secret. Use 0o400, or 0o440 with a `gid` for a group that needs it.",
    },
    Rule {
        id: lint::FILE_MODE_GROUP,
        level: Level::Info,
        summary: "a file mode that opens the secret file to its group",
        help: "Every member of the file's group can read the secret. Set `gid` to a group that holds only the processes that need it, or use 0o400.",
    },
    Rule {
        id: lint::LAUNCH_MISSING,
        level: Level::Info,
        summary: "a container workload that nobody may start with `unbaked run`",
        help: "Without [launch] uids or gids nobody may start the workload with `unbaked run`. Add [launch] if it is started that way; ignore this if a sidecar or an orchestrator starts it.",
    },
];

/// `docs/policy-rules.md`: every rule with its level and help, the page
/// SARIF `helpUri`s point into (one heading per rule id).
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Policy rules\n\n\
         Every finding of `unbaked policy check` names one of these rules. Errors\n\
         come from the parser and make the broker refuse the whole policy set;\n\
         warnings and infos are lints: `--strict` fails on warnings, nothing fails\n\
         on infos. Generated from `review/src/rules.rs` by\n\
         `UPDATE_EXPECT=1 cargo test --test policy_review`.\n\n\
         | rule | level | finds |\n| --- | --- | --- |\n",
    );
    for r in RULES {
        out.push_str(&format!(
            "| [`{}`](#{}) | {} | {} |\n",
            r.id, r.id, r.level, r.summary
        ));
    }
    for r in RULES {
        out.push_str(&format!(
            "\n## {}\n\n{}: {}.\n\n{}\n",
            r.id, r.level, r.summary, r.help
        ));
    }
    out
}

/// The metadata of `id`, if the catalogue has it.
pub fn get(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_kebab_case_and_help_is_written() {
        let mut seen = std::collections::BTreeSet::new();
        for r in RULES {
            assert!(seen.insert(r.id), "duplicate rule id {}", r.id);
            assert!(
                r.id.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{}",
                r.id
            );
            assert!(
                !r.summary.is_empty() && !r.summary.ends_with('.'),
                "{}",
                r.id
            );
            assert!(r.help.ends_with('.'), "{}", r.id);
        }
    }

    #[test]
    fn sarif_names_and_levels() {
        assert_eq!(get("env-delivery").unwrap().name(), "EnvDelivery");
        assert_eq!(get("io").unwrap().name(), "Io");
        assert_eq!(Level::Info.sarif(), "note");
        assert!(get("parse").unwrap().is_error());
        assert!(get("nonexistent").is_none());
    }
}
