//! One policy file: TOML text -> raw serde types with spans -> validated
//! [`Policy`], collecting every semantic error of the file.
//!
//! Raw fields are all `Option` so that a missing key becomes our own
//! diagnostic (with the others) rather than serde's first-error-wins.

use crate::diagnostic::{line_column, rule, Diagnostic, Severity};
use crate::model::{
    Dynamic, Grant, GrantDelivery, Isolation, Launch, Match, PkiIssue, Policy, DEFAULT_MODE,
    DEFAULT_TTL,
};
use crate::validate::{self, Problem};
use schemars::JsonSchema;
use serde::de;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

mod action;
mod template;
use template::RawTemplate;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a policy table")]
pub(crate) struct RawPolicy {
    #[schemars(with = "Option<String>")]
    workload: Option<Spanned<String>>,
    #[serde(rename = "match")]
    #[schemars(with = "Option<RawMatch>")]
    matcher: Option<Spanned<RawMatch>>,
    #[schemars(with = "Option<RawLaunch>")]
    launch: Option<Spanned<RawLaunch>>,
    #[schemars(with = "Option<RawIsolation>")]
    isolation: Option<Spanned<RawIsolation>>,
    #[serde(default)]
    #[schemars(with = "Vec<RawGrant>")]
    grant: Vec<Spanned<RawGrant>>,
    #[serde(default)]
    #[schemars(with = "Vec<RawTemplate>")]
    template: Vec<Spanned<RawTemplate>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawMatch {
    #[schemars(with = "Option<Vec<u32>>")]
    uids: Option<Spanned<Vec<u32>>>,
    #[schemars(with = "Option<Vec<u32>>")]
    gids: Option<Spanned<Vec<u32>>>,
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    docker_labels: Option<Spanned<BTreeMap<Spanned<String>, String>>>,
    #[schemars(with = "Option<String>")]
    image: Option<Spanned<String>>,
    #[schemars(with = "Option<Vec<String>>")]
    k8s_service_accounts: Option<Spanned<Vec<Spanned<String>>>>,
    #[schemars(with = "Option<Vec<String>>")]
    k8s_namespaces: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawLaunch {
    uids: Option<Vec<u32>>,
    gids: Option<Vec<u32>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawIsolation {
    inter_container_traffic: Option<bool>,
    privileged: Option<bool>,
    host_network: Option<bool>,
    host_pid: Option<bool>,
    host_ipc: Option<bool>,
    docker_socket: Option<bool>,
    read_only_rootfs: Option<bool>,
    user_namespace: Option<bool>,
    #[schemars(with = "Option<Vec<String>>")]
    cap_add: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawGrant {
    #[schemars(with = "Option<String>")]
    secret: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    key: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pki: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    dynamic: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    field: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    common_name: Option<Spanned<String>>,
    #[schemars(with = "Option<Vec<String>>")]
    alt_names: Option<Vec<Spanned<String>>>,
    #[schemars(with = "Option<Vec<String>>")]
    ip_sans: Option<Vec<Spanned<String>>>,
    #[schemars(with = "Option<String>")]
    file: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    env: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    fd: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    ttl: Option<Spanned<String>>,
    #[schemars(with = "Option<crate::schema::Mode>")]
    mode: Option<Spanned<RawMode>>,
    #[schemars(with = "Option<u32>")]
    uid: Option<Spanned<u32>>,
    #[schemars(with = "Option<u32>")]
    gid: Option<Spanned<u32>>,
    #[schemars(with = "Option<String>")]
    on_change: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    signal: Option<Spanned<String>>,
    #[schemars(with = "Option<Vec<String>>")]
    command: Option<Spanned<Vec<String>>>,
    #[schemars(with = "Option<String>")]
    signal_container: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    debounce: Option<Spanned<String>>,
}

impl RawGrant {
    fn action(&self, index: usize) -> action::RawAction<'_> {
        action::RawAction {
            table: format!("grant[{index}]"),
            on_change: self.on_change.as_ref(),
            signal: self.signal.as_ref(),
            command: self.command.as_ref(),
            signal_container: self.signal_container.as_ref(),
            debounce: self.debounce.as_ref(),
        }
    }
}

/// `mode = 0o440` or `mode = "0440"`; checked once we can see the literal.
#[derive(Debug)]
pub(crate) enum RawMode {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for RawMode {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = RawMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an octal integer like 0o440 or a string like \"0440\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawMode, E> {
                Ok(RawMode::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawMode, E> {
                Ok(RawMode::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawMode, E> {
                Ok(RawMode::Str(v.to_owned()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The outcome for one file. `workload` is set whenever the name itself is
/// valid, even if the file has other errors, so duplicates across files are
/// still reported.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub workload: Option<Spanned<String>>,
    pub result: Result<Policy, Vec<Diagnostic>>,
}

/// Locates problems in one file's text.
pub(crate) struct SourceFile<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl SourceFile<'_> {
    pub fn diagnostic(
        &self,
        offset: usize,
        field: impl Into<String>,
        rule: &'static str,
        message: String,
        hint: Option<String>,
    ) -> Diagnostic {
        let (line, column) = line_column(self.text, offset);
        Diagnostic {
            severity: Severity::Error,
            file: self.path.to_path_buf(),
            line,
            column,
            field: field.into(),
            message,
            hint,
            rule,
        }
    }
}

pub(crate) fn parse_policy(path: &Path, text: &str) -> Parsed {
    let src = SourceFile { path, text };
    let failed = |d| Parsed {
        workload: None,
        result: Err(vec![d]),
    };
    // The recovered tree still locates the field of a syntax error.
    let (tree, errors) = DeTable::parse_recoverable(text);
    if let Some(e) = errors.first() {
        let span = e.span().unwrap_or(0..0);
        let mut field = field_at(tree.get_ref(), span.start);
        if field.is_empty() {
            field = key_field(tree.get_ref(), text, span.clone());
        }
        let hint = (e.message() == "duplicate key")
            .then(|| "a key may appear once per table: remove one of them".to_owned());
        let message = e.message().to_owned();
        return failed(src.diagnostic(span.start, field, rule::PARSE, message, hint));
    }
    let raw = match RawPolicy::deserialize(toml::de::Deserializer::from(tree.clone())) {
        Ok(raw) => raw,
        Err(e) => return failed(serde_error(&src, tree.get_ref(), &e)),
    };
    Checker {
        src,
        diags: Vec::new(),
    }
    .policy(raw)
}

/// A deserialization error (unknown field, wrong type) as a diagnostic.
fn serde_error(src: &SourceFile<'_>, tree: &DeTable<'_>, e: &toml::de::Error) -> Diagnostic {
    let offset = e.span().map_or(0, |s| s.start);
    let field = field_at(tree, offset);
    let message = e.message().to_owned();
    let last = field.rsplit('.').next().unwrap_or_default();
    let (rule, hint) = if message.starts_with("unknown field") {
        let hint = match last {
            "k8s_service_accounts" => "kubernetes service-account matching is not supported yet",
            _ => "remove it or fix its spelling",
        };
        (rule::UNKNOWN_FIELD, Some(hint))
    } else {
        let hint = if last == "ttl" {
            Some("write a duration string, e.g. \"10m\" or \"1h\"")
        } else if field == "grant" {
            Some("write each grant as a [[grant]] table")
        } else if ["uids", "gids"].iter().any(|k| last.starts_with(k)) {
            Some("list numeric ids, e.g. [1000]")
        } else if last == "uid" || last == "gid" {
            Some("use a numeric id, e.g. 1000")
        } else {
            None
        };
        (rule::TYPE, hint)
    };
    src.diagnostic(offset, field, rule, message, hint.map(str::to_owned))
}

/// The dotted path of the deepest key or value whose span holds `offset`,
/// e.g. `grant[1].mode`; empty if none does.
fn field_at(table: &DeTable<'_>, offset: usize) -> String {
    let mut best = (0, String::new());
    walk(table, "", 1, &mut |path, depth, key, value| {
        let hit = key.is_some_and(|k| holds(k, offset)) || holds(value.span(), offset);
        if hit && depth > best.0 {
            best = (depth, path.to_owned());
        }
    });
    best.1
}

/// For a syntax error on a key that never made it into the recovered tree
/// (a duplicate key): the key, prefixed by the `[table]` it sits under.
fn key_field(table: &DeTable<'_>, text: &str, span: Range<usize>) -> String {
    let Some(key) = text.get(span.clone()).filter(|k| is_bare_key(k)) else {
        return String::new();
    };
    let mut header: Option<(usize, String)> = None;
    walk(table, "", 1, &mut |path, _, _, value| {
        let start = value.span().start;
        // Only `[table]` / `[[table]]` headers, not inline tables.
        let is_header = text.get(value.span()).is_some_and(|t| t.starts_with('['));
        let later = header.as_ref().is_none_or(|(s, _)| start >= *s);
        if matches!(value.get_ref(), DeValue::Table(_)) && is_header && start < span.start && later
        {
            header = Some((start, path.to_owned()));
        }
    });
    match header {
        Some((_, table)) => format!("{table}.{key}"),
        None => key.to_owned(),
    }
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn holds(span: Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

type Visit<'a, 'i> = dyn FnMut(&str, usize, Option<Range<usize>>, &Spanned<DeValue<'i>>) + 'a;

/// Calls `f(path, depth, key span, value)` for every key and array item.
fn walk<'i>(table: &DeTable<'i>, prefix: &str, depth: usize, f: &mut Visit<'_, 'i>) {
    for (key, value) in table.iter() {
        let name = key.get_ref();
        let name = if is_bare_key(name) {
            name.to_string()
        } else {
            format!("{name:?}")
        };
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        f(&path, depth, Some(key.span()), value);
        walk_value(value, &path, depth, f);
    }
}

fn walk_value<'i>(value: &Spanned<DeValue<'i>>, path: &str, depth: usize, f: &mut Visit<'_, 'i>) {
    match value.get_ref() {
        DeValue::Table(t) => walk(t, path, depth + 1, f),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                f(&path, depth + 1, None, item);
                walk_value(item, &path, depth + 1, f);
            }
        }
        _ => {}
    }
}

struct Checker<'a> {
    src: SourceFile<'a>,
    diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn report(&mut self, offset: usize, field: impl Into<String>, p: Problem) {
        let d = self
            .src
            .diagnostic(offset, field, p.rule, p.message, p.hint);
        self.diags.push(d);
    }

    fn error(
        &mut self,
        offset: usize,
        field: impl Into<String>,
        rule: &'static str,
        message: &str,
        hint: &str,
    ) {
        self.report(
            offset,
            field,
            Problem {
                rule,
                message: message.to_owned(),
                hint: Some(hint.to_owned()),
            },
        );
    }

    /// Runs `check` on a spanned value, reporting at its span.
    fn check<T>(
        &mut self,
        value: &Spanned<String>,
        field: &str,
        check: impl FnOnce(&str) -> Result<T, Problem>,
    ) -> Option<T> {
        match check(value.get_ref()) {
            Ok(v) => Some(v),
            Err(p) => {
                self.report(value.span().start, field, p);
                None
            }
        }
    }

    fn policy(mut self, raw: RawPolicy) -> Parsed {
        let workload = match &raw.workload {
            None => {
                self.error(
                    0,
                    "workload",
                    rule::MISSING_FIELD,
                    "missing `workload`",
                    "add `workload = \"NAME\"` at the top of the file",
                );
                None
            }
            Some(w) => self
                .check(w, "workload", validate::workload_name)
                .map(|()| w.clone()),
        };
        let matcher = self.matcher(raw.matcher);
        let launch = raw.launch.map_or_else(Launch::default, |l| {
            let l = l.into_inner();
            Launch {
                uids: l.uids.unwrap_or_default(),
                gids: l.gids.unwrap_or_default(),
            }
        });
        let isolation = raw
            .isolation
            .map_or_else(Isolation::default, |i| self.isolation(i.into_inner()));
        let (grants, targets): (Vec<Option<Grant>>, Vec<Option<GrantDelivery>>) = raw
            .grant
            .iter()
            .enumerate()
            .map(|(i, g)| self.grant(i, g))
            .unzip();
        self.duplicate_targets(&raw.grant, &targets);
        let templates = self.templates(&raw.template, &targets);

        let result = match (&workload, self.diags.is_empty()) {
            (Some(w), true) => Ok(Policy {
                workload: w.get_ref().clone(),
                source: self.src.path.to_path_buf(),
                matcher,
                launch,
                isolation,
                grants: grants.into_iter().flatten().collect(),
                templates,
            }),
            _ => Err(self.diags),
        };
        Parsed { workload, result }
    }

    fn matcher(&mut self, raw: Option<Spanned<RawMatch>>) -> Match {
        const HINT: &str =
            "add at least one of `uids`, `gids`, `docker_labels`, `image`, `k8s_service_accounts`, `k8s_namespaces` to [match]";
        let Some(raw) = raw else {
            self.error(
                0,
                "match",
                rule::NO_SELECTOR,
                "there is no [match] table, so the workload would match nobody",
                HINT,
            );
            return Match::default();
        };
        let at = raw.span().start;
        let raw = raw.into_inner();
        if raw.uids.is_none()
            && raw.gids.is_none()
            && raw.docker_labels.is_none()
            && raw.image.is_none()
            && raw.k8s_service_accounts.is_none()
            && raw.k8s_namespaces.is_none()
        {
            self.error(
                at,
                "match",
                rule::NO_SELECTOR,
                "[match] has no selector, so the workload would match nobody",
                HINT,
            );
        }
        let mut ids = |list: Option<Spanned<Vec<u32>>>, name: &str| -> Vec<u32> {
            let list = list.map(|l| (l.span().start, l.into_inner()));
            if let Some((at, ids)) = &list {
                if ids.is_empty() {
                    self.error(
                        *at,
                        format!("match.{name}"),
                        rule::EMPTY_SELECTOR,
                        &format!("an empty `{name}` list matches no caller"),
                        &format!("list the {name} to match, or remove `{name}`"),
                    );
                }
            }
            list.map(|(_, ids)| ids).unwrap_or_default()
        };
        let uids = ids(raw.uids, "uids");
        let gids = ids(raw.gids, "gids");
        let docker_labels = self.docker_labels(raw.docker_labels);
        let image = raw.image.and_then(|i| {
            self.check(&i, "match.image", validate::image_id)
                .map(|()| i.into_inner())
        });
        let k8s_service_accounts = self.names(
            raw.k8s_service_accounts,
            "k8s_service_accounts",
            validate::k8s_service_account,
        );
        let k8s_namespaces = self.names(
            raw.k8s_namespaces,
            "k8s_namespaces",
            validate::k8s_namespace,
        );
        Match {
            uids,
            gids,
            docker_labels,
            image,
            k8s_service_accounts,
            k8s_namespaces,
        }
    }

    /// `match.docker_labels`: neither the table nor a name may be empty.
    fn docker_labels(
        &mut self,
        labels: Option<Spanned<BTreeMap<Spanned<String>, String>>>,
    ) -> BTreeMap<String, String> {
        let mut docker_labels = BTreeMap::new();
        let Some(labels) = labels else {
            return docker_labels;
        };
        if labels.get_ref().is_empty() {
            self.error(
                labels.span().start,
                "match.docker_labels",
                rule::EMPTY_SELECTOR,
                "an empty `docker_labels` table matches no container",
                "add the labels to match, e.g. { app = \"billing\" }, or remove `docker_labels`",
            );
        }
        for (name, value) in labels.into_inner() {
            if name.get_ref().is_empty() {
                self.error(
                    name.span().start,
                    "match.docker_labels",
                    rule::BAD_LABEL,
                    "a docker label name is empty",
                    "name the label, e.g. app = \"billing\"",
                );
            }
            docker_labels.insert(name.into_inner(), value);
        }
        docker_labels
    }

    /// A list of names under [match], each checked; empty is an error.
    fn names(
        &mut self,
        list: Option<Spanned<Vec<Spanned<String>>>>,
        name: &str,
        rule_of: fn(&str) -> Result<(), Problem>,
    ) -> Vec<String> {
        let Some(list) = list else {
            return Vec::new();
        };
        if list.get_ref().is_empty() {
            self.error(
                list.span().start,
                format!("match.{name}"),
                rule::EMPTY_SELECTOR,
                &format!("an empty `{name}` list matches no pod"),
                &format!("list the {name} to match, or remove `{name}`"),
            );
        }
        let mut out = Vec::new();
        for (i, item) in list.into_inner().into_iter().enumerate() {
            if self
                .check(&item, &format!("match.{name}[{i}]"), rule_of)
                .is_some()
            {
                out.push(item.into_inner());
            }
        }
        out
    }

    fn isolation(&mut self, raw: RawIsolation) -> Isolation {
        let safe = Isolation::default();
        let cap_add = raw.cap_add.unwrap_or_default();
        for (i, cap) in cap_add.iter().enumerate() {
            self.check(
                cap,
                &format!("isolation.cap_add[{i}]"),
                validate::capability,
            );
        }
        Isolation {
            inter_container_traffic: raw
                .inter_container_traffic
                .unwrap_or(safe.inter_container_traffic),
            privileged: raw.privileged.unwrap_or(safe.privileged),
            host_network: raw.host_network.unwrap_or(safe.host_network),
            host_pid: raw.host_pid.unwrap_or(safe.host_pid),
            host_ipc: raw.host_ipc.unwrap_or(safe.host_ipc),
            docker_socket: raw.docker_socket.unwrap_or(safe.docker_socket),
            read_only_rootfs: raw.read_only_rootfs.unwrap_or(safe.read_only_rootfs),
            user_namespace: raw.user_namespace.unwrap_or(safe.user_namespace),
            cap_add: cap_add.into_iter().map(Spanned::into_inner).collect(),
        }
    }

    /// One delivery target (`file`, `env` or `fd`) checked, as a
    /// [`GrantDelivery`]; grants and templates share it.
    pub(crate) fn delivery(
        &mut self,
        kind: &str,
        target: &Spanned<String>,
        field: &str,
    ) -> Option<GrantDelivery> {
        let checked = if kind == "file" {
            self.check(target, field, validate::file_path)
        } else {
            self.check(target, field, |t| validate::variable_name(t, kind))
        };
        let t = target.get_ref().clone();
        checked.map(|()| match kind {
            "file" => GrantDelivery::File(t),
            "env" => GrantDelivery::Env(t),
            _ => GrantDelivery::Fd(t),
        })
    }

    /// The grant, `None` if it has errors (already reported), and its
    /// delivery if that alone is valid, for the duplicate check.
    fn grant(
        &mut self,
        index: usize,
        raw: &Spanned<RawGrant>,
    ) -> (Option<Grant>, Option<GrantDelivery>) {
        let before = self.diags.len();
        let at = raw.span().start;
        let field = |name: &str| format!("grant[{index}].{name}");
        let g = raw.get_ref();

        let source = self.source(index, raw);
        let mut deliveries: Vec<(&str, &Spanned<String>)> =
            [("file", &g.file), ("env", &g.env), ("fd", &g.fd)]
                .into_iter()
                .filter_map(|(kind, v)| v.as_ref().map(|v| (kind, v)))
                .collect();
        deliveries.sort_by_key(|(_, v)| v.span().start);
        let delivery = self.one_delivery(index, at, &deliveries);

        let ttl = match &g.ttl {
            Some(t) => self.check(t, &field("ttl"), validate::ttl),
            None => Some(DEFAULT_TTL),
        };

        let mode = g.mode.as_ref().and_then(|m| self.mode(m, field("mode")));

        if let [(kind @ ("env" | "fd"), target)] = deliveries.as_slice() {
            self.variable_delivery(index, g, kind, target, source.as_ref());
        }
        let action = self.change_action(&g.action(index), delivery.as_ref());

        let grant = match (source, delivery.clone(), ttl, action) {
            (
                Some((secret, key, dynamic)),
                Some(delivery),
                Some(ttl),
                Some((on_change, debounce)),
            ) if self.diags.len() == before => Some(Grant {
                secret,
                key,
                dynamic,
                delivery,
                ttl,
                mode: mode.unwrap_or(DEFAULT_MODE),
                uid: g.uid.as_ref().map(|u| *u.get_ref()),
                gid: g.gid.as_ref().map(|u| *u.get_ref()),
                on_change,
                debounce,
            }),
            _ => None,
        };
        (grant, delivery)
    }

    /// The one of `file`, `env`, `fd` a grant names (sorted by position).
    fn one_delivery(
        &mut self,
        index: usize,
        at: usize,
        deliveries: &[(&str, &Spanned<String>)],
    ) -> Option<GrantDelivery> {
        let field = |name: &str| format!("grant[{index}].{name}");
        match deliveries {
            [] => {
                self.error(at, format!("grant[{index}]"), rule::GRANT_DELIVERY, "a grant needs exactly one of `file`, `env`, `fd`", "add file = \"NAME\" for a file, env = \"NAME\" for an environment variable, or fd = \"NAME\" for a memfd");
                None
            }
            [(kind, target)] => self.delivery(kind, target, &field(kind)),
            [(first, _), (second, target), ..] => {
                let message = format!("a grant needs exactly one of `file`, `env`, `fd`, but this one has `{first}` and `{second}`");
                self.error(
                    target.span().start,
                    field(second),
                    rule::GRANT_DELIVERY,
                    &message,
                    "split it into one [[grant]] per delivery",
                );
                None
            }
        }
    }

    /// What an `env` or `fd` grant may not say: an owner or a mode mean
    /// nothing for a variable (refusing them avoids a policy that looks
    /// stricter than what is enforced), and a dynamic one delivers one
    /// value, so it names its `field`.
    fn variable_delivery(
        &mut self,
        index: usize,
        g: &RawGrant,
        kind: &str,
        target: &Spanned<String>,
        source: Option<&(String, String, Option<Dynamic>)>,
    ) {
        let field = |name: &str| format!("grant[{index}].{name}");
        let file_only = [
            ("mode", g.mode.as_ref().map(Spanned::span)),
            ("uid", g.uid.as_ref().map(Spanned::span)),
            ("gid", g.gid.as_ref().map(Spanned::span)),
        ];
        for (name, span) in file_only {
            if let Some(span) = span {
                let message = format!(
                    "`{name}` applies to file grants only, but this grant delivers through `{kind}`"
                );
                self.error(
                    span.start,
                    field(name),
                    rule::FILE_ONLY,
                    &message,
                    &format!("remove `{name}`: a variable has no owner or mode"),
                );
            }
        }
        if let (Some((_, _, Some(_))), None) = (source, &g.field) {
            let message =
                format!("a dynamic `{kind}` grant delivers one value, but names no `field`");
            let hint = if g.pki.is_some() {
                "add field = \"certificate\", \"private_key\" or \"issuing_ca\", or deliver the whole certificate as a directory with file = \"tls\""
            } else {
                "add the field to deliver, e.g. field = \"password\", or deliver every field as a directory with file = \"NAME\""
            };
            self.error(
                target.span().start,
                field("field"),
                rule::BAD_FIELD,
                &message,
                hint,
            );
        }
    }

    /// Where the grant's value comes from: (path, key or field, dynamic).
    /// Exactly one of `secret` (with `key`), `pki` (with `common_name`) or
    /// `dynamic`; keys of another kind of grant are refused, not ignored.
    fn source(
        &mut self,
        index: usize,
        raw: &Spanned<RawGrant>,
    ) -> Option<(String, String, Option<Dynamic>)> {
        let (kind, path) = self.source_kind(index, raw)?;
        let g = raw.get_ref();
        if !self.no_foreign_keys(index, g, kind) {
            return None;
        }
        let field = |name: &str| format!("grant[{index}].{name}");
        match kind {
            "secret" => self.kv_source(index, raw, path),
            "pki" => self.pki_source(index, g, path),
            _ => {
                let ok = self.check(path, &field("dynamic"), validate::dynamic_path);
                let value = self.field_value(g, &field("field"), false);
                ok?;
                Some((path.get_ref().clone(), value?, Some(Dynamic::Leased)))
            }
        }
    }

    /// The one of `secret`, `pki`, `dynamic` the grant names, with its path.
    fn source_kind<'g>(
        &mut self,
        index: usize,
        raw: &'g Spanned<RawGrant>,
    ) -> Option<(&'static str, &'g Spanned<String>)> {
        let at = raw.span().start;
        let field = |name: &str| format!("grant[{index}].{name}");
        let g = raw.get_ref();
        let mut sources: Vec<(&'static str, &Spanned<String>)> = [
            ("secret", &g.secret),
            ("pki", &g.pki),
            ("dynamic", &g.dynamic),
        ]
        .into_iter()
        .filter_map(|(kind, v)| v.as_ref().map(|v| (kind, v)))
        .collect();
        sources.sort_by_key(|(_, v)| v.span().start);
        match sources.as_slice() {
            [] => {
                self.error(
                    at,
                    field("secret"),
                    rule::MISSING_FIELD,
                    "missing `secret`",
                    "name the store path, e.g. secret = \"app/db\"; or issue a credential with pki = \"pki/issue/ROLE\" or dynamic = \"database/creds/ROLE\"",
                );
                if g.key.is_none() {
                    self.missing_key(at, index);
                }
                None
            }
            [(kind, path)] => Some((*kind, *path)),
            [(first, _), (second, path), ..] => {
                let message = format!("a grant names exactly one of `secret`, `pki`, `dynamic`, but this one has `{first}` and `{second}`");
                self.error(
                    path.span().start,
                    field(second),
                    rule::GRANT_SOURCE,
                    &message,
                    "split it into one [[grant]] per source",
                );
                None
            }
        }
    }

    fn missing_key(&mut self, at: usize, index: usize) {
        self.error(
            at,
            format!("grant[{index}].key"),
            rule::MISSING_FIELD,
            "missing `key`",
            "name the key inside the secret, e.g. key = \"password\"",
        );
    }

    /// Refuses keys that belong to another kind of grant; true when none.
    fn no_foreign_keys(&mut self, index: usize, g: &RawGrant, kind: &str) -> bool {
        let first = |v: &Option<Vec<Spanned<String>>>| {
            v.as_ref().and_then(|v| v.first()).map(Spanned::span)
        };
        let foreign: [(&str, Option<Range<usize>>, &str); 5] = [
            (
                "key",
                g.key.as_ref().map(Spanned::span),
                "a pki or dynamic grant picks its value with `field`",
            ),
            (
                "field",
                g.field.as_ref().map(Spanned::span),
                "a `secret` grant picks its value with `key`",
            ),
            (
                "common_name",
                g.common_name.as_ref().map(Spanned::span),
                "certificate names belong to `pki` grants",
            ),
            (
                "alt_names",
                first(&g.alt_names),
                "certificate names belong to `pki` grants",
            ),
            (
                "ip_sans",
                first(&g.ip_sans),
                "certificate names belong to `pki` grants",
            ),
        ];
        let allowed: &[&str] = match kind {
            "secret" => &["key"],
            "pki" => &["field", "common_name", "alt_names", "ip_sans"],
            _ => &["field"],
        };
        let before = self.diags.len();
        for (name, span, why) in foreign {
            if let (false, Some(span)) = (allowed.contains(&name), span) {
                let message = format!("`{name}` does not apply to a `{kind}` grant");
                let hint = format!("remove `{name}`: {why}");
                let field = format!("grant[{index}].{name}");
                self.error(span.start, field, rule::GRANT_SOURCE, &message, &hint);
            }
        }
        self.diags.len() == before
    }

    /// A KV grant: `secret` and `key`.
    fn kv_source(
        &mut self,
        index: usize,
        raw: &Spanned<RawGrant>,
        path: &Spanned<String>,
    ) -> Option<(String, String, Option<Dynamic>)> {
        let g = raw.get_ref();
        let secret = self.check(
            path,
            &format!("grant[{index}].secret"),
            validate::secret_path,
        );
        let key = match &g.key {
            Some(k) => self.check(k, &format!("grant[{index}].key"), validate::secret_key),
            None => {
                self.missing_key(raw.span().start, index);
                None
            }
        };
        secret?;
        key?;
        let key = g.key.as_ref().map(|k| k.get_ref().clone())?;
        Some((path.get_ref().clone(), key, None))
    }

    /// A PKI grant: `pki` (mount and role), `common_name`, optional names.
    fn pki_source(
        &mut self,
        index: usize,
        g: &RawGrant,
        path: &Spanned<String>,
    ) -> Option<(String, String, Option<Dynamic>)> {
        let field = |name: &str| format!("grant[{index}].{name}");
        let mount_role = self.check(path, &field("pki"), validate::pki_path);
        let value = self.field_value(g, &field("field"), true);
        let common_name = match &g.common_name {
            Some(cn) => self
                .check(cn, &field("common_name"), |c| {
                    validate::cert_name(c, "common_name")
                })
                .map(|()| cn.get_ref().clone()),
            None => {
                self.error(
                    path.span().start,
                    field("common_name"),
                    rule::MISSING_FIELD,
                    "a `pki` grant needs `common_name`",
                    "add the certificate's name, e.g. common_name = \"billing.internal\"",
                );
                None
            }
        };
        let alt_names = self.cert_names(index, &g.alt_names, "alt_names", |n| {
            validate::cert_name(n, "alt_names entry")
        });
        let ip_sans = self.cert_names(index, &g.ip_sans, "ip_sans", validate::ip_san);
        let (mount, role) = mount_role?;
        Some((
            path.get_ref().clone(),
            value?,
            Some(Dynamic::Pki(PkiIssue {
                mount,
                role,
                common_name: common_name?,
                alt_names: alt_names?,
                ip_sans: ip_sans?,
            })),
        ))
    }

    /// A list of certificate names, each checked; `None` if any fails.
    fn cert_names(
        &mut self,
        index: usize,
        list: &Option<Vec<Spanned<String>>>,
        name: &str,
        check: fn(&str) -> Result<(), Problem>,
    ) -> Option<Vec<String>> {
        let list = list.as_deref().unwrap_or_default();
        let ok = list.iter().enumerate().all(|(i, v)| {
            self.check(v, &format!("grant[{index}].{name}[{i}]"), check)
                .is_some()
        });
        ok.then(|| list.iter().map(|v| v.get_ref().clone()).collect())
    }

    /// The `field` of a dynamic grant, empty when absent (a directory).
    fn field_value(&mut self, g: &RawGrant, name: &str, pki: bool) -> Option<String> {
        match &g.field {
            Some(f) => self
                .check(f, name, |v| validate::field(v, pki))
                .map(|()| f.get_ref().clone()),
            None => Some(String::new()),
        }
    }

    /// A file mode, as a string ("0440") or an octal integer (0o440).
    pub(crate) fn mode(&mut self, m: &Spanned<RawMode>, field: String) -> Option<u32> {
        let checked = match m.get_ref() {
            RawMode::Str(s) => validate::mode_str(s),
            RawMode::Int(n) => self.int_mode(*n, m.span()),
        };
        checked
            .map_err(|p| self.report(m.span().start, field, p))
            .ok()
    }

    /// An integer mode must be written in octal: `mode = 440` is 0o670, a
    /// classic way to hand a secret to the group for writing.
    fn int_mode(&self, n: i64, span: Range<usize>) -> Result<u32, Problem> {
        let literal = self.src.text.get(span).unwrap_or_default();
        if !literal.starts_with("0o") {
            let why = if n >= 0 {
                format!("an integer without `0o` is read as decimal ({n} is {n:#o}): ")
            } else {
                String::new()
            };
            return Err(Problem {
                rule: rule::BAD_MODE,
                message: format!("mode {literal} is not written in octal"),
                hint: Some(format!(
                    "{why}write the mode in octal, e.g. 0o440 or \"0440\""
                )),
            });
        }
        let mode = u32::try_from(n).unwrap_or(u32::MAX);
        validate::mode_value(mode)
    }

    fn duplicate_targets(&mut self, raw: &[Spanned<RawGrant>], targets: &[Option<GrantDelivery>]) {
        let mut seen: Vec<(usize, &GrantDelivery)> = Vec::new();
        for (j, d) in targets.iter().enumerate() {
            let Some(d) = d else { continue };
            let kind = d.kind().to_string();
            let at = [
                &raw[j].get_ref().file,
                &raw[j].get_ref().env,
                &raw[j].get_ref().fd,
            ]
            .into_iter()
            .flatten()
            .next()
            .map_or(raw[j].span().start, |t| t.span().start);
            let field = format!("grant[{j}].{kind}");
            let hint = "give each grant its own target, or drop one of them";
            for (i, earlier) in &seen {
                let message = match (earlier, d) {
                    (GrantDelivery::File(a), GrantDelivery::File(b)) if a == b => {
                        format!("file {b:?} is already written by grant[{i}]")
                    }
                    (GrantDelivery::File(a), GrantDelivery::File(b)) if under(b, a) => {
                        format!("file {b:?} needs {a:?} to be a directory, but grant[{i}] writes a file there")
                    }
                    (GrantDelivery::File(a), GrantDelivery::File(b)) if under(a, b) => {
                        format!("file {b:?} is a directory of grant[{i}]'s file {a:?}")
                    }
                    (
                        GrantDelivery::Env(a) | GrantDelivery::Fd(a),
                        GrantDelivery::Env(b) | GrantDelivery::Fd(b),
                    ) if a == b => {
                        format!(
                            "variable {b:?} is already set by grant[{i}] ({})",
                            earlier.kind()
                        )
                    }
                    _ => continue,
                };
                self.error(at, field.clone(), rule::DUPLICATE_TARGET, &message, hint);
                break;
            }
            seen.push((j, d));
        }
    }
}

/// Whether file `path` lies under `dir` (as a directory).
fn under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}
