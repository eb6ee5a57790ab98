//! `unbaked policy diff`: what a change to the policies does, per workload.
//!
//! Each [`Change`] has a stable `kind` and an [`Effect`]: who gains or
//! loses a secret, and whether access or isolation got weaker or stronger.
//! Grants are matched by secret and key, so moving a secret from a file to
//! an environment variable is one `delivery-changed` (flagged weaker), not
//! a loss and a gain.

use crate::output::pretty;
use crate::text::{human_duration, md_cell, md_code, plural};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use unbaked_api::wire::OnChange;
use unbaked_policy::{
    Dynamic, Grant, GrantDelivery, Isolation, Match, Policy, PolicySet, Template, TemplateSource,
};

/// Change kinds: stable ids for JSON consumers and CI filters.
pub mod kind {
    pub const WORKLOAD_ADDED: &str = "workload-added";
    pub const WORKLOAD_REMOVED: &str = "workload-removed";
    pub const SECRET_GAINED: &str = "secret-gained";
    pub const SECRET_LOST: &str = "secret-lost";
    pub const DELIVERY_CHANGED: &str = "delivery-changed";
    pub const DELIVERY_ADDED: &str = "delivery-added";
    pub const DELIVERY_REMOVED: &str = "delivery-removed";
    pub const TTL_RAISED: &str = "ttl-raised";
    pub const TTL_LOWERED: &str = "ttl-lowered";
    pub const MODE_WIDENED: &str = "mode-widened";
    pub const MODE_NARROWED: &str = "mode-narrowed";
    pub const OWNER_CHANGED: &str = "owner-changed";
    pub const CERTIFICATE_CHANGED: &str = "certificate-changed";
    pub const ISOLATION_WEAKENED: &str = "isolation-weakened";
    pub const ISOLATION_STRENGTHENED: &str = "isolation-strengthened";
    pub const MATCH_WIDENED: &str = "match-widened";
    pub const MATCH_NARROWED: &str = "match-narrowed";
    pub const MATCH_CHANGED: &str = "match-changed";
    pub const LAUNCH_WIDENED: &str = "launch-widened";
    pub const LAUNCH_NARROWED: &str = "launch-narrowed";
    pub const ON_CHANGE_CHANGED: &str = "on-change-changed";
}

/// What a change does to security, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Isolation, delivery, ttl, mode or who may claim or launch got weaker.
    Weaker,
    /// A workload gains a secret (or a new workload appears).
    Gain,
    /// A workload loses a secret.
    Loss,
    /// Something got stricter.
    Stronger,
    /// Different, neither weaker nor stronger (e.g. a new image pin).
    Changed,
}

impl Effect {
    fn label(self) -> &'static str {
        match self {
            Effect::Weaker => "weaker",
            Effect::Gain => "gain",
            Effect::Loss => "loss",
            Effect::Stronger => "stronger",
            Effect::Changed => "changed",
        }
    }

    fn badge(self) -> &'static str {
        match self {
            Effect::Weaker => "⚠️ **weaker**",
            Effect::Gain => "➕ gain",
            Effect::Loss => "➖ loss",
            Effect::Stronger => "🔒 stronger",
            Effect::Changed => "✏️ changed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub workload: String,
    pub effect: Effect,
    /// A stable id from [`kind`].
    pub kind: &'static str,
    /// What changed: `app/db#password`, `isolation.privileged`, `match.uids`.
    pub subject: String,
    pub before: Option<String>,
    pub after: Option<String>,
    /// Why it matters, when that is not obvious.
    pub note: Option<String>,
}

/// What `--fail-on` gates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    /// Any weaker change.
    Weaken,
    /// Any weaker change or any secret gained.
    Gain,
    /// Any change at all.
    Any,
}

/// The changes from `old` to `new`, labelled for output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDiff {
    /// How the old side was named on the command line, e.g. `main:policies`.
    pub old: String,
    pub new: String,
    /// By workload, then effect (worst first), then discovery order.
    pub changes: Vec<Change>,
}

impl PolicyDiff {
    pub fn new(old_label: &str, old: &PolicySet, new_label: &str, new: &PolicySet) -> Self {
        PolicyDiff {
            old: old_label.to_owned(),
            new: new_label.to_owned(),
            changes: diff(old, new),
        }
    }

    pub fn count(&self, effect: Effect) -> usize {
        self.changes.iter().filter(|c| c.effect == effect).count()
    }

    fn count_kind(&self, kind: &str) -> usize {
        self.changes.iter().filter(|c| c.kind == kind).count()
    }

    fn workloads(&self) -> BTreeSet<&str> {
        self.changes.iter().map(|c| c.workload.as_str()).collect()
    }

    /// Whether the gate trips.
    pub fn fails(&self, on: FailOn) -> bool {
        self.changes.iter().any(|c| match on {
            FailOn::Weaken => c.effect == Effect::Weaker,
            FailOn::Gain => matches!(c.effect, Effect::Weaker | Effect::Gain),
            FailOn::Any => true,
        })
    }

    /// `2 workloads changed (1 added): 1 weaker, 2 secrets gained, 1 lost, 0 stronger, 1 other`
    pub fn summary(&self) -> String {
        if self.changes.is_empty() {
            return "no changes".into();
        }
        let mut workloads = plural(self.workloads().len(), "workload") + " changed";
        let (added, removed) = (
            self.count_kind(kind::WORKLOAD_ADDED),
            self.count_kind(kind::WORKLOAD_REMOVED),
        );
        match (added, removed) {
            (0, 0) => {}
            (a, 0) => workloads.push_str(&format!(" ({a} added)")),
            (0, r) => workloads.push_str(&format!(" ({r} removed)")),
            (a, r) => workloads.push_str(&format!(" ({a} added, {r} removed)")),
        }
        format!(
            "{workloads}: {} weaker, {} gained, {} lost, {} stronger, {} other",
            self.count(Effect::Weaker),
            plural(self.count_kind(kind::SECRET_GAINED), "secret"),
            self.count_kind(kind::SECRET_LOST),
            self.count(Effect::Stronger),
            self.count(Effect::Changed),
        )
    }

    /// An aligned table, one change per line; ends with a newline.
    pub fn human(&self) -> String {
        if self.changes.is_empty() {
            return format!("{} -> {}: no changes\n", self.old, self.new);
        }
        let mut rows: Vec<[String; 5]> = vec![[
            "WORKLOAD".into(),
            "EFFECT".into(),
            "CHANGE".into(),
            "SUBJECT".into(),
            "DETAIL".into(),
        ]];
        for c in &self.changes {
            rows.push([
                c.workload.clone(),
                c.effect.label().into(),
                c.kind.into(),
                c.subject.clone(),
                detail(c, "->", |s| s.to_owned()),
            ]);
        }
        let widths: Vec<usize> = (0..4)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for r in &rows {
            for (i, w) in widths.iter().enumerate() {
                let _ = write!(out, "{:<w$}  ", r[i]);
            }
            out.push_str(&r[4]);
            out.truncate(out.trim_end().len());
            out.push('\n');
        }
        out
    }

    /// For a pull-request comment: the headline, who gains and loses what
    /// per workload, then every change.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let weaker = self.count(Effect::Weaker);
        let icon = if weaker > 0 { "⚠️" } else { "✅" };
        let _ = writeln!(out, "### {icon} unbaked policy diff\n");
        let _ = writeln!(out, "{} → {}\n", md_code(&self.old), md_code(&self.new));
        if self.changes.is_empty() {
            out.push_str("No changes to workloads, grants, matching or isolation.\n");
            return out;
        }
        let _ = writeln!(
            out,
            "**{weaker} weaker** · {} gained · {} lost · {} changed\n",
            plural(self.count_kind(kind::SECRET_GAINED), "secret"),
            self.count_kind(kind::SECRET_LOST),
            plural(self.workloads().len(), "workload"),
        );
        out.push_str("| workload | gains | loses | weaker |\n| --- | --- | --- | --- |\n");
        for w in self.workloads() {
            let cell = |pick: &dyn Fn(&Change) -> bool| {
                let items: Vec<String> = self
                    .changes
                    .iter()
                    .filter(|c| c.workload == w && pick(c))
                    .map(|c| {
                        if c.effect == Effect::Weaker {
                            let what = c.kind.replace('-', " ");
                            let detail = detail(c, "→", md_code);
                            format!("{what}: {} {detail}", md_code(&c.subject))
                        } else {
                            let how = c.after.as_ref().or(c.before.as_ref());
                            let how = how.map(|d| format!(" ({})", md_cell(d)));
                            format!("{}{}", md_code(&c.subject), how.unwrap_or_default())
                        }
                    })
                    .collect();
                if items.is_empty() {
                    "–".to_owned()
                } else {
                    items.join("<br>")
                }
            };
            let whole = self
                .changes
                .iter()
                .find(|c| c.workload == w)
                .map(|c| c.kind);
            let status = match whole {
                Some(kind::WORKLOAD_ADDED) => " (new)",
                Some(kind::WORKLOAD_REMOVED) => " (removed)",
                _ => "",
            };
            let _ = writeln!(
                out,
                "| {}{status} | {} | {} | {} |",
                md_code(w),
                cell(&|c| c.kind == kind::SECRET_GAINED),
                cell(&|c| c.kind == kind::SECRET_LOST),
                cell(&|c| c.effect == Effect::Weaker),
            );
        }
        out.push_str("\n| workload | effect | change | subject | detail |\n| --- | --- | --- | --- | --- |\n");
        for c in &self.changes {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                md_code(&c.workload),
                c.effect.badge(),
                c.kind,
                md_code(&c.subject),
                detail(c, "→", md_code),
            );
        }
        out
    }

    /// Machine-readable: labels, counts and every change.
    pub fn json(&self) -> String {
        pretty(&json!({
            "old": self.old,
            "new": self.new,
            "summary": {
                "workloads": self.workloads().len(),
                "weaker": self.count(Effect::Weaker),
                "gained": self.count_kind(kind::SECRET_GAINED),
                "lost": self.count_kind(kind::SECRET_LOST),
                "stronger": self.count(Effect::Stronger),
            },
            "changes": self.changes,
        }))
    }
}

/// `before -> after (note)`, each value through `value`.
fn detail(c: &Change, arrow: &str, value: impl Fn(&str) -> String) -> String {
    let mut s = match (&c.before, &c.after) {
        (Some(b), Some(a)) => format!("{} {arrow} {}", value(b), value(a)),
        (None, Some(a)) => value(a),
        (Some(b), None) => format!("was {}", value(b)),
        (None, None) => String::new(),
    };
    if let Some(note) = &c.note {
        if !s.is_empty() {
            s.push(' ');
        }
        let _ = write!(s, "({})", md_cell(note));
    }
    s
}

/// Every change from `old` to `new`, sorted by workload then effect.
pub fn diff(old: &PolicySet, new: &PolicySet) -> Vec<Change> {
    let names: BTreeSet<&str> = old
        .iter()
        .chain(new.iter())
        .map(|p| p.workload.as_str())
        .collect();
    let mut out = Vec::new();
    for name in names {
        let mut d = Differ {
            workload: name,
            out: Vec::new(),
        };
        match (old.get(name), new.get(name)) {
            (Some(o), Some(n)) => d.policy(o, n),
            (None, Some(n)) => d.added(n),
            (Some(o), None) => d.removed(o),
            (None, None) => {}
        }
        // The workload itself first, then the worst.
        d.out.sort_by_key(|c| {
            let whole = [kind::WORKLOAD_ADDED, kind::WORKLOAD_REMOVED].contains(&c.kind);
            (!whole, c.effect)
        });
        out.extend(d.out);
    }
    out
}

struct Differ<'a> {
    workload: &'a str,
    out: Vec<Change>,
}

impl Differ<'_> {
    fn push(
        &mut self,
        effect: Effect,
        kind: &'static str,
        subject: impl Into<String>,
        before: Option<String>,
        after: Option<String>,
        note: Option<&str>,
    ) {
        self.out.push(Change {
            workload: self.workload.to_owned(),
            effect,
            kind,
            subject: subject.into(),
            before,
            after,
            note: note.map(str::to_owned),
        });
    }

    fn added(&mut self, p: &Policy) {
        self.push(
            Effect::Gain,
            kind::WORKLOAD_ADDED,
            p.workload.clone(),
            None,
            Some(format!("matches {}", selectors(&p.matcher))),
            None,
        );
        self.isolation(&Isolation::default(), &p.isolation);
        for g in &p.grants {
            self.grant_gained(g);
        }
        self.templates(&[], &p.templates);
    }

    fn removed(&mut self, p: &Policy) {
        self.push(
            Effect::Loss,
            kind::WORKLOAD_REMOVED,
            p.workload.clone(),
            Some(selectors(&p.matcher)),
            None,
            None,
        );
        for g in &p.grants {
            self.push(
                Effect::Loss,
                kind::SECRET_LOST,
                subject(g),
                Some(delivery(g)),
                None,
                None,
            );
        }
        self.templates(&p.templates, &[]);
    }

    fn policy(&mut self, o: &Policy, n: &Policy) {
        self.matcher(&o.matcher, &n.matcher);
        self.launch(&o.launch.uids, &n.launch.uids, "launch.uids");
        self.launch(&o.launch.gids, &n.launch.gids, "launch.gids");
        self.isolation(&o.isolation, &n.isolation);
        self.grants(&o.grants, &n.grants);
        self.templates(&o.templates, &n.templates);
    }

    /// Templates by target: each secret a template starts or stops reading
    /// is a gain or a loss (a template is how the workload receives it).
    fn templates(&mut self, o: &[Template], n: &[Template]) {
        let reads = |ts: &[Template]| -> BTreeSet<(String, TemplateSource)> {
            ts.iter()
                .flat_map(|t| t.sources().into_iter().map(move |s| (t.id(), s)))
                .collect()
        };
        let (before, after) = (reads(o), reads(n));
        let env = |id: &str| id.starts_with("env:");
        for (id, src) in after.difference(&before) {
            let subject = format!("{} (template {id})", src.describe());
            let note = env(id).then_some(ENV_NOTE);
            self.push(
                Effect::Gain,
                kind::SECRET_GAINED,
                subject,
                None,
                Some(id.clone()),
                note,
            );
        }
        for (id, src) in before.difference(&after) {
            let subject = format!("{} (template {id})", src.describe());
            self.push(
                Effect::Loss,
                kind::SECRET_LOST,
                subject,
                Some(id.clone()),
                None,
                None,
            );
        }
        for a in o {
            let Some(b) = n.iter().find(|b| b.id() == a.id()) else {
                continue;
            };
            if a.ttl != b.ttl {
                let (effect, k) = if b.ttl > a.ttl {
                    (Effect::Weaker, kind::TTL_RAISED)
                } else {
                    (Effect::Stronger, kind::TTL_LOWERED)
                };
                let subject = format!("template {}", a.id());
                self.push(
                    effect,
                    k,
                    subject,
                    Some(human_duration(a.ttl)),
                    Some(human_duration(b.ttl)),
                    None,
                );
            }
            self.on_change(
                &format!("template {}", a.id()),
                a.on_change.as_ref(),
                b.on_change.as_ref(),
            );
            if b.mode & !a.mode & 0o077 != 0 {
                let subject = format!("template {}", a.id());
                self.push(
                    Effect::Weaker,
                    kind::MODE_WIDENED,
                    subject,
                    Some(format!("{:#o}", a.mode)),
                    Some(format!("{:#o}", b.mode)),
                    None,
                );
            }
        }
    }

    fn grant_gained(&mut self, g: &Grant) {
        let note = matches!(g.delivery, GrantDelivery::Env(_)).then_some(ENV_NOTE);
        self.push(
            Effect::Gain,
            kind::SECRET_GAINED,
            subject(g),
            None,
            Some(delivery(g)),
            note,
        );
    }

    fn matcher(&mut self, o: &Match, n: &Match) {
        self.id_selector(&o.uids, &n.uids, "match.uids");
        self.id_selector(&o.gids, &n.gids, "match.gids");
        self.id_selector(
            &o.k8s_service_accounts,
            &n.k8s_service_accounts,
            "match.k8s_service_accounts",
        );
        self.id_selector(&o.k8s_namespaces, &n.k8s_namespaces, "match.k8s_namespaces");
        let keys: BTreeSet<&String> = o
            .docker_labels
            .keys()
            .chain(n.docker_labels.keys())
            .collect();
        for k in keys {
            let label = |v: &String| printable(&format!("{k}={v}"));
            let subject = printable(&format!("match.docker_labels.{k}"));
            match (o.docker_labels.get(k), n.docker_labels.get(k)) {
                (Some(a), None) => self.push(
                    Effect::Weaker,
                    kind::MATCH_WIDENED,
                    subject,
                    Some(label(a)),
                    None,
                    Some("containers without this label now match"),
                ),
                (None, Some(b)) => self.push(
                    Effect::Stronger,
                    kind::MATCH_NARROWED,
                    subject,
                    None,
                    Some(label(b)),
                    Some("containers must carry this label"),
                ),
                (Some(a), Some(b)) if a != b => self.push(
                    Effect::Changed,
                    kind::MATCH_CHANGED,
                    subject,
                    Some(label(a)),
                    Some(label(b)),
                    Some("other containers match now"),
                ),
                _ => {}
            }
        }
        match (&o.image, &n.image) {
            (Some(a), None) => self.push(
                Effect::Weaker,
                kind::MATCH_WIDENED,
                "match.image",
                Some(a.clone()),
                None,
                Some("any image matches now"),
            ),
            (None, Some(b)) => self.push(
                Effect::Stronger,
                kind::MATCH_NARROWED,
                "match.image",
                None,
                Some(b.clone()),
                Some("image pinned"),
            ),
            (Some(a), Some(b)) if a != b => self.push(
                Effect::Changed,
                kind::MATCH_CHANGED,
                "match.image",
                Some(a.clone()),
                Some(b.clone()),
                None,
            ),
            _ => {}
        }
    }

    /// An empty list does not constrain (`[match]`): dropping it widens.
    fn id_selector<T: PartialEq + Clone + fmt::Display>(
        &mut self,
        o: &[T],
        n: &[T],
        subject: &str,
    ) {
        let (added, removed) = set_delta(o, n);
        let (effect, kind, note) = match (o.is_empty(), n.is_empty()) {
            (false, true) => (
                Effect::Weaker,
                kind::MATCH_WIDENED,
                "no longer constrained".to_owned(),
            ),
            (true, false) => (
                Effect::Stronger,
                kind::MATCH_NARROWED,
                "now constrained".to_owned(),
            ),
            _ if !added.is_empty() => (
                Effect::Weaker,
                kind::MATCH_WIDENED,
                format!("adds {}", ids(&added)),
            ),
            _ if !removed.is_empty() => (
                Effect::Stronger,
                kind::MATCH_NARROWED,
                format!("removes {}", ids(&removed)),
            ),
            _ => return,
        };
        self.push(
            effect,
            kind,
            subject,
            Some(list(o, "any")),
            Some(list(n, "any")),
            Some(&note),
        );
    }

    /// An empty `[launch]` list lets nobody: adding ids widens.
    fn launch(&mut self, o: &[u32], n: &[u32], subject: &str) {
        let (added, removed) = set_delta(o, n);
        let noun = subject.rsplit('.').next().unwrap_or_default();
        let (effect, kind, note) = if !added.is_empty() {
            (
                Effect::Weaker,
                kind::LAUNCH_WIDENED,
                format!("{noun} {} may now launch it", ids(&added)),
            )
        } else if !removed.is_empty() {
            (
                Effect::Stronger,
                kind::LAUNCH_NARROWED,
                format!("{noun} {} may no longer launch it", ids(&removed)),
            )
        } else {
            return;
        };
        self.push(
            effect,
            kind,
            subject,
            Some(list(o, "nobody")),
            Some(list(n, "nobody")),
            Some(&note),
        );
    }

    fn isolation(&mut self, o: &Isolation, n: &Isolation) {
        // (field, old, new, the weak value)
        let flags = [
            (
                "inter_container_traffic",
                o.inter_container_traffic,
                n.inter_container_traffic,
                true,
            ),
            ("privileged", o.privileged, n.privileged, true),
            ("host_network", o.host_network, n.host_network, true),
            ("host_pid", o.host_pid, n.host_pid, true),
            ("host_ipc", o.host_ipc, n.host_ipc, true),
            ("docker_socket", o.docker_socket, n.docker_socket, true),
            (
                "read_only_rootfs",
                o.read_only_rootfs,
                n.read_only_rootfs,
                false,
            ),
            ("user_namespace", o.user_namespace, n.user_namespace, false),
        ];
        for (field, a, b, weak) in flags {
            if a == b {
                continue;
            }
            let (effect, kind) = if b == weak {
                (Effect::Weaker, kind::ISOLATION_WEAKENED)
            } else {
                (Effect::Stronger, kind::ISOLATION_STRENGTHENED)
            };
            self.push(
                effect,
                kind,
                format!("isolation.{field}"),
                Some(a.to_string()),
                Some(b.to_string()),
                None,
            );
        }
        for cap in &n.cap_add {
            if !o.cap_add.contains(cap) {
                self.push(
                    Effect::Weaker,
                    kind::ISOLATION_WEAKENED,
                    "isolation.cap_add",
                    None,
                    Some(cap.clone()),
                    Some("capability added"),
                );
            }
        }
        for cap in &o.cap_add {
            if !n.cap_add.contains(cap) {
                self.push(
                    Effect::Stronger,
                    kind::ISOLATION_STRENGTHENED,
                    "isolation.cap_add",
                    Some(cap.clone()),
                    None,
                    Some("capability dropped"),
                );
            }
        }
    }

    fn grants(&mut self, o: &[Grant], n: &[Grant]) {
        let (og, ng) = (by_secret(o), by_secret(n));
        let keys: BTreeSet<&(&str, &str)> = og.keys().chain(ng.keys()).collect();
        for key in keys {
            let mut olds: Vec<&Grant> = og.get(key).cloned().unwrap_or_default();
            let mut news: Vec<&Grant> = ng.get(key).cloned().unwrap_or_default();
            // Same delivery target first; what is left pairs up in file order.
            let mut pairs = Vec::new();
            olds.retain(
                |a| match news.iter().position(|b| b.delivery == a.delivery) {
                    Some(i) => {
                        pairs.push((*a, news.remove(i)));
                        false
                    }
                    None => true,
                },
            );
            let moved = olds.len().min(news.len());
            for (a, b) in olds.drain(..moved).zip(news.drain(..moved)) {
                self.delivery_changed(a, b);
                pairs.push((a, b));
            }
            for (a, b) in pairs {
                self.grant_attributes(a, b);
            }
            let had_key = og.contains_key(key) && ng.contains_key(key);
            for b in news {
                if had_key {
                    let weak = matches!(b.delivery, GrantDelivery::Env(_));
                    let effect = if weak {
                        Effect::Weaker
                    } else {
                        Effect::Changed
                    };
                    self.push(
                        effect,
                        kind::DELIVERY_ADDED,
                        subject(b),
                        None,
                        Some(delivery(b)),
                        weak.then_some(ENV_NOTE),
                    );
                } else {
                    self.grant_gained(b);
                }
            }
            for a in olds {
                if had_key {
                    let effect = if matches!(a.delivery, GrantDelivery::Env(_)) {
                        Effect::Stronger
                    } else {
                        Effect::Changed
                    };
                    self.push(
                        effect,
                        kind::DELIVERY_REMOVED,
                        subject(a),
                        Some(delivery(a)),
                        None,
                        None,
                    );
                } else {
                    self.push(
                        Effect::Loss,
                        kind::SECRET_LOST,
                        subject(a),
                        Some(delivery(a)),
                        None,
                        None,
                    );
                }
            }
        }
    }

    fn delivery_changed(&mut self, a: &Grant, b: &Grant) {
        let env = |g: &Grant| matches!(g.delivery, GrantDelivery::Env(_));
        let (effect, note) = match (env(a), env(b)) {
            (false, true) => (Effect::Weaker, Some(ENV_NOTE)),
            (true, false) => (Effect::Stronger, None),
            _ => (Effect::Changed, None),
        };
        self.push(
            effect,
            kind::DELIVERY_CHANGED,
            subject(b),
            Some(delivery(a)),
            Some(delivery(b)),
            note,
        );
    }

    fn grant_attributes(&mut self, a: &Grant, b: &Grant) {
        let s = subject(b);
        if b.ttl > a.ttl {
            self.push(
                Effect::Weaker,
                kind::TTL_RAISED,
                s.clone(),
                Some(human_duration(a.ttl)),
                Some(human_duration(b.ttl)),
                Some("a copy lives longer, and a withdrawn grant lingers longer"),
            );
        } else if b.ttl < a.ttl {
            self.push(
                Effect::Stronger,
                kind::TTL_LOWERED,
                s.clone(),
                Some(human_duration(a.ttl)),
                Some(human_duration(b.ttl)),
                None,
            );
        }
        let files = matches!(a.delivery, GrantDelivery::File(_))
            && matches!(b.delivery, GrantDelivery::File(_));
        if files {
            self.file_attributes(a, b, &s);
        }
        self.on_change(&s, a.on_change.as_ref(), b.on_change.as_ref());
        if let (Some(Dynamic::Pki(x)), Some(Dynamic::Pki(y))) = (&a.dynamic, &b.dynamic) {
            self.certificate_names(x, y, s);
        }
    }

    /// What happens on a change: naming a container to signal (or another
    /// one) is weaker, since the broker then acts on it for the workload.
    fn on_change(&mut self, s: &str, a: Option<&OnChange>, b: Option<&OnChange>) {
        if a == b {
            return;
        }
        let container = |o: Option<&OnChange>| match o {
            Some(OnChange::Signal { container, .. }) => container.clone(),
            _ => None,
        };
        let weaker = container(b).is_some() && container(a) != container(b);
        let effect = if weaker {
            Effect::Weaker
        } else {
            Effect::Changed
        };
        let note = weaker.then_some("the broker signals this container for the workload");
        self.push(
            effect,
            kind::ON_CHANGE_CHANGED,
            s,
            Some(describe_on_change(a)),
            Some(describe_on_change(b)),
            note,
        );
    }

    /// A file grant's mode and owner.
    fn file_attributes(&mut self, a: &Grant, b: &Grant, s: &str) {
        let mode = |m: u32| format!("0o{m:03o}");
        if b.mode & !a.mode != 0 {
            self.push(
                Effect::Weaker,
                kind::MODE_WIDENED,
                s,
                Some(mode(a.mode)),
                Some(mode(b.mode)),
                None,
            );
        } else if a.mode & !b.mode != 0 {
            self.push(
                Effect::Stronger,
                kind::MODE_NARROWED,
                s,
                Some(mode(a.mode)),
                Some(mode(b.mode)),
                None,
            );
        }
        if (a.uid, a.gid) != (b.uid, b.gid) {
            self.push(
                Effect::Changed,
                kind::OWNER_CHANGED,
                s,
                Some(owner(a)),
                Some(owner(b)),
                None,
            );
        }
    }

    /// A certificate's names, role and mount: more names is weaker.
    fn certificate_names(
        &mut self,
        x: &unbaked_policy::PkiIssue,
        y: &unbaked_policy::PkiIssue,
        s: String,
    ) {
        let names = |p: &unbaked_policy::PkiIssue| {
            let mut v = vec![p.common_name.clone()];
            v.extend(p.alt_names.iter().cloned());
            v.extend(p.ip_sans.iter().cloned());
            v
        };
        let (nx, ny) = (names(x), names(y));
        if nx != ny || x.role != y.role || x.mount != y.mount {
            let widened = ny.iter().any(|n| !nx.contains(n));
            let effect = if widened {
                Effect::Weaker
            } else {
                Effect::Changed
            };
            let note = widened.then_some("the certificate is valid for names it was not before");
            self.push(
                effect,
                kind::CERTIFICATE_CHANGED,
                s,
                Some(nx.join(", ")),
                Some(ny.join(", ")),
                note,
            );
        }
    }
}

/// Grants by (secret, key), in file order within each.
fn by_secret(gs: &[Grant]) -> BTreeMap<(&str, &str), Vec<&Grant>> {
    let mut m: BTreeMap<(&str, &str), Vec<&Grant>> = BTreeMap::new();
    for g in gs {
        m.entry((g.secret.as_str(), g.key.as_str()))
            .or_default()
            .push(g);
    }
    m
}

const ENV_NOTE: &str = "env: readable in /proc/PID/environ";

/// `app/db#password`, or the path alone for a grant without a key (a
/// certificate directory).
fn subject(g: &Grant) -> String {
    if g.key.is_empty() {
        g.secret.clone()
    } else {
        format!("{}#{}", g.secret, g.key)
    }
}

/// `file db_password`, `env API_TOKEN`, `fd KEY_FILE`.
fn delivery(g: &Grant) -> String {
    format!("{} {}", g.delivery.kind(), g.delivery.target())
}

fn owner(g: &Grant) -> String {
    let id = |v: Option<u32>| v.map_or_else(|| "default".to_owned(), |v| v.to_string());
    format!("uid {} gid {}", id(g.uid), id(g.gid))
}

fn set_delta<T: PartialEq + Clone>(o: &[T], n: &[T]) -> (Vec<T>, Vec<T>) {
    let added = n.iter().filter(|x| !o.contains(x)).cloned().collect();
    let removed = o.iter().filter(|x| !n.contains(x)).cloned().collect();
    (added, removed)
}

fn ids<T: fmt::Display>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
}

/// `[1000, 1001]`, or `empty` for an empty list (which means "any" in
/// `[match]` and "nobody" in `[launch]`).
fn list<T: fmt::Display>(v: &[T], empty: &str) -> String {
    if v.is_empty() {
        empty.into()
    } else {
        format!("[{}]", ids(v))
    }
}

/// Label names and values are the only free text in a policy: their control
/// characters are escaped before they reach a terminal or a CI log.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `uids [1000], docker_labels app=billing`
fn selectors(m: &Match) -> String {
    let mut parts = Vec::new();
    if !m.uids.is_empty() {
        parts.push(format!("uids {}", list(&m.uids, "any")));
    }
    if !m.gids.is_empty() {
        parts.push(format!("gids {}", list(&m.gids, "any")));
    }
    if !m.docker_labels.is_empty() {
        let labels: Vec<String> = m
            .docker_labels
            .iter()
            .map(|(k, v)| printable(&format!("{k}={v}")))
            .collect();
        parts.push(format!("docker_labels {}", labels.join(" ")));
    }
    if let Some(image) = &m.image {
        parts.push(format!("image {image}"));
    }
    if !m.k8s_service_accounts.is_empty() {
        parts.push(format!(
            "k8s_service_accounts {}",
            list(&m.k8s_service_accounts, "any")
        ));
    }
    if !m.k8s_namespaces.is_empty() {
        parts.push(format!("k8s_namespaces {}", list(&m.k8s_namespaces, "any")));
    }
    parts.join(", ")
}

/// `none`, `signal SIGHUP`, `signal SIGHUP to container app`, ...
fn describe_on_change(o: Option<&OnChange>) -> String {
    match o {
        None => "none".into(),
        Some(OnChange::Signal {
            signal,
            container: None,
        }) => format!("signal {signal}"),
        Some(OnChange::Signal {
            signal,
            container: Some(c),
        }) => format!("signal {signal} to container {c}"),
        Some(OnChange::Command { command }) => format!("command {command:?}"),
        Some(OnChange::Restart) => "restart".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn set(grants: &str, extra: &str) -> PolicySet {
        let text = format!("workload = \"w\"\n{extra}\n[match]\nuids = [1]\n{grants}");
        unbaked_policy::from_sources(&[(PathBuf::from("w.toml"), text)])
            .unwrap_or_else(|d| panic!("{d}"))
    }

    fn grant(delivery: &str) -> String {
        format!("[[grant]]\nsecret = \"s\"\nkey = \"k\"\n{delivery}\n")
    }

    fn kinds(old: &PolicySet, new: &PolicySet) -> Vec<(&'static str, Effect)> {
        diff(old, new)
            .into_iter()
            .map(|c| (c.kind, c.effect))
            .collect()
    }

    #[test]
    fn on_change_shows_and_naming_a_container_is_weaker() {
        let g = |action: &str| set(&grant(&format!("file = \"f\"\n{action}")), "");
        let none = g("");
        let hup = g("on_change = \"signal\"\nsignal = \"SIGHUP\"");
        let app = g("on_change = \"signal\"\nsignal = \"SIGHUP\"\nsignal_container = \"app\"");
        let cmd = g("on_change = \"command\"\ncommand = [\"reload\"]");
        let on_change = |c: Effect| vec![(kind::ON_CHANGE_CHANGED, c)];
        assert_eq!(kinds(&none, &hup), on_change(Effect::Changed));
        assert_eq!(kinds(&hup, &app), on_change(Effect::Weaker));
        assert_eq!(kinds(&app, &hup), on_change(Effect::Changed));
        assert_eq!(kinds(&app, &cmd), on_change(Effect::Changed));
        assert!(kinds(&app, &app).is_empty());
        let c = &diff(&hup, &app)[0];
        assert_eq!(
            (c.before.as_deref(), c.after.as_deref()),
            (
                Some("signal SIGHUP"),
                Some("signal SIGHUP to container app")
            )
        );
        // Templates too.
        let t = |action: &str| {
            set(
                &format!("[[template]]\nfile = \"a.env\"\nformat = \"env\"\nvalues = {{ A = \"s#k\" }}\n{action}\n"),
                "",
            )
        };
        assert_eq!(
            kinds(&t(""), &t("on_change = \"restart\"")),
            on_change(Effect::Changed)
        );
    }

    #[test]
    fn a_template_gaining_a_secret_is_a_gain() {
        let t = |contents: &str| {
            format!("[[template]]\nfile = \"db.conf\"\ncontents = '''{contents}'''\n")
        };
        let old = set(
            &t("{{ with secret \"secret/data/app/db\" }}{{ .Data.data.password }}{{ end }}"),
            "",
        );
        let new = set(
            &t("{{ with secret \"secret/data/app/db\" }}{{ .Data.data.password }}{{ end }}{{ with secret \"secret/data/app/admin\" }}{{ .Data.data.key }}{{ end }}"),
            "",
        );
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].kind, changes[0].effect),
            (kind::SECRET_GAINED, Effect::Gain)
        );
        assert_eq!(changes[0].subject, "app/admin (template file:db.conf)");
        assert_eq!(kinds(&new, &old), [(kind::SECRET_LOST, Effect::Loss)]);
        // A new workload's templates are gains too; a values template by key.
        let env = set(
            "[[template]]\nenv = \"DB\"\nformat = \"env\"\nvalues = { P = \"app/db#password\" }\n",
            "",
        );
        let none = PolicySet::default();
        let gained: Vec<_> = diff(&none, &env)
            .into_iter()
            .map(|c| (c.kind, c.subject, c.note.is_some()))
            .collect();
        assert_eq!(
            gained,
            [
                (kind::WORKLOAD_ADDED, "w".to_string(), false),
                (
                    kind::SECRET_GAINED,
                    "app/db#password (template env:DB)".to_string(),
                    true
                )
            ]
        );
    }

    #[test]
    fn one_key_in_two_deliveries_pairs_by_target_first() {
        let old = set(&(grant("file = \"a\"") + &grant("fd = \"B\"")), "");
        let new = set(&(grant("file = \"a\"") + &grant("env = \"B\"")), "");
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].kind, changes[0].effect),
            (kind::DELIVERY_CHANGED, Effect::Weaker)
        );
        assert_eq!(changes[0].before.as_deref(), Some("fd B"));
        assert_eq!(changes[0].after.as_deref(), Some("env B"));
        // Back to fd is stronger; a second delivery in env is weaker.
        assert_eq!(
            kinds(&new, &old),
            [(kind::DELIVERY_CHANGED, Effect::Stronger)]
        );
        let more = set(&(grant("file = \"a\"") + &grant("env = \"X\"")), "");
        let one = set(&grant("file = \"a\""), "");
        assert_eq!(kinds(&one, &more), [(kind::DELIVERY_ADDED, Effect::Weaker)]);
        assert_eq!(
            kinds(&more, &one),
            [(kind::DELIVERY_REMOVED, Effect::Stronger)]
        );
    }

    #[test]
    fn dropping_a_selector_widens_and_an_empty_launch_means_nobody() {
        let a = set("", "[launch]\nuids = [5]\n");
        let text = "workload = \"w\"\n[match]\ngids = [1]\n";
        let b = unbaked_policy::from_sources(&[(PathBuf::from("w.toml"), text.into())]).unwrap();
        let changes = diff(&a, &b);
        let find = |s: &str| changes.iter().find(|c| c.subject == s).unwrap();
        let uids = find("match.uids");
        assert_eq!(
            (uids.kind, uids.effect, uids.after.as_deref()),
            (kind::MATCH_WIDENED, Effect::Weaker, Some("any"))
        );
        assert_eq!(find("match.gids").effect, Effect::Stronger);
        let launch = find("launch.uids");
        assert_eq!(
            (launch.kind, launch.after.as_deref()),
            (kind::LAUNCH_NARROWED, Some("nobody"))
        );
    }

    #[test]
    fn kubernetes_selectors_widen_and_narrow() {
        let k8s = |m: &str| {
            let text = format!("workload = \"w\"\n[match]\n{m}\n");
            unbaked_policy::from_sources(&[(PathBuf::from("w.toml"), text)]).unwrap()
        };
        let sa = k8s("k8s_service_accounts = [\"pay/billing\"]");
        let ns = k8s("k8s_namespaces = [\"pay\"]");
        let both = k8s("k8s_service_accounts = [\"pay/billing\", \"pay/web\"]");
        let d = diff(&sa, &both);
        assert_eq!(
            (d[0].kind, d[0].subject.as_str(), d[0].note.as_deref()),
            (
                kind::MATCH_WIDENED,
                "match.k8s_service_accounts",
                Some("adds pay/web")
            )
        );
        let kinds: Vec<_> = diff(&sa, &ns)
            .into_iter()
            .map(|c| (c.subject, c.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("match.k8s_service_accounts".to_owned(), kind::MATCH_WIDENED),
                ("match.k8s_namespaces".to_owned(), kind::MATCH_NARROWED),
            ]
        );
    }

    #[test]
    fn unchanged_sets_and_renamed_files_have_no_changes() {
        let a = set(&grant("file = \"a\""), "");
        let text = format!(
            "workload = \"w\"\n[match]\nuids = [1]\n{}",
            grant("file = \"a\"")
        );
        let b = unbaked_policy::from_sources(&[(PathBuf::from("renamed.toml"), text)]).unwrap();
        let d = PolicyDiff::new("old", &a, "new", &b);
        assert!(d.changes.is_empty());
        assert!(!d.fails(FailOn::Any));
        assert_eq!(d.summary(), "no changes");
    }

    #[test]
    fn label_text_cannot_reach_a_terminal_raw() {
        let labels = |v: &str| {
            let text = format!("workload = \"w\"\n[match]\ndocker_labels = {{ app = \"{v}\" }}\n");
            unbaked_policy::from_sources(&[(PathBuf::from("w.toml"), text)]).unwrap()
        };
        let d = PolicyDiff::new("o", &labels("a"), "n", &labels("\\u001b[31mred"));
        let human = d.human();
        assert!(!human.contains('\u{1b}'), "{human}");
        assert!(human.contains("app=\\u{1b}[31mred"), "{human}");
    }

    #[test]
    fn gates() {
        let old = set(&grant("file = \"a\""), "");
        let gained = set(
            &(grant("file = \"a\"") + "[[grant]]\nsecret = \"t\"\nkey = \"k\"\nfd = \"T\"\n"),
            "",
        );
        let d = PolicyDiff::new("o", &old, "n", &gained);
        assert!(!d.fails(FailOn::Weaken) && d.fails(FailOn::Gain) && d.fails(FailOn::Any));
        let lost = PolicyDiff::new("o", &gained, "n", &old);
        assert!(!lost.fails(FailOn::Gain) && lost.fails(FailOn::Any));
        let ttl = set(&grant("file = \"a\"\nttl = \"2h\""), "");
        assert!(PolicyDiff::new("o", &old, "n", &ttl).fails(FailOn::Weaken));
    }
}
