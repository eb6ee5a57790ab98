//! The one deny path: whatever refused a request (the name check, a
//! token, `[match]`, `[isolation]`, `[launch]`, a lease, the admin API), it
//! ends in [`Broker::deny`], which audits, logs and counts the denial and
//! makes the caller's error.
//!
//! Caller-chosen names are bounded before anything records them: a name no
//! policy declares is counted as `workload="unknown"`, and one that is not
//! a valid name at all is audited and logged as [`bounded_name`]: an
//! escaped prefix, its length and a hash.
//!
//! Identical denials (same uid, container, workload, rule and reason: a
//! token that expired and one with a bad signature are two) repeated within
//! [`REPEAT_WINDOW`] are written once; the repeats are counted and flushed
//! as one `deny` record with `count` when the window ends (or at stop). A
//! denial whose audit record cannot be written is still a denial; it is
//! then not taken as the first of a window, so the next one is written.

use super::{Broker, Ctx, ServiceError};
use crate::audit::{Event, Record};
use crate::metrics::UNKNOWN_WORKLOAD;
use crate::names::{bounded_name, valid_workload};
use crate::request::Refusal;
use crate::rules::DenyRule;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use unbaked_policy::PolicySet;

/// Repeats of a denial within this window go out as one record.
pub(crate) const REPEAT_WINDOW: Duration = Duration::from_secs(10);
/// Distinct denials aggregated at once; past this each is written alone.
const MAX_AGGREGATED: usize = 1024;
/// Longest reason kept in a record, a log line or an answer.
const MAX_REASON_BYTES: usize = 2048;

/// A workload name as a denial may record it.
enum Named<'a> {
    /// No workload was asked for (tokens, admin).
    None,
    /// A workload some policy declares: its own label.
    Declared(&'a str),
    /// A valid name no policy declares: audited as is, counted as unknown.
    Undeclared(&'a str),
    /// Not a workload name at all: bounded everywhere.
    Invalid(String),
}

impl<'a> Named<'a> {
    fn of(set: &PolicySet, name: &'a str) -> Named<'a> {
        if name.is_empty() {
            Named::None
        } else if set.get(name).is_some() {
            Named::Declared(name)
        } else if valid_workload(name) {
            Named::Undeclared(name)
        } else {
            Named::Invalid(bounded_name(name))
        }
    }

    fn label(&self) -> &str {
        match self {
            Named::None => "",
            Named::Declared(n) => n,
            Named::Undeclared(_) | Named::Invalid(_) => UNKNOWN_WORKLOAD,
        }
    }

    fn audited(&self) -> Option<String> {
        match self {
            Named::None => None,
            Named::Declared(n) | Named::Undeclared(n) => Some((*n).to_string()),
            Named::Invalid(b) => Some(b.clone()),
        }
    }
}

/// Cut `s` to at most [`MAX_REASON_BYTES`], on a character boundary.
fn bounded_reason(s: &str) -> String {
    if s.len() <= MAX_REASON_BYTES {
        return s.to_string();
    }
    let mut end = MAX_REASON_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RepeatKey {
    uid: u32,
    container: Option<String>,
    workload: Option<String>,
    rule: DenyRule,
    /// The operator's reason, bounded ([`MAX_REASON_BYTES`]).
    reason: Option<String>,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    repeats: u64,
    /// The first denial's record, written; a flush repeats it with `count`.
    first: Record,
}

/// Denials written first in their window, and how often each repeated.
#[derive(Debug, Default)]
pub(crate) struct Repeats(Mutex<HashMap<RepeatKey, Window>>);

enum Seen {
    /// Counted in an open window: nothing to write.
    Repeat,
    /// Write it; `flush` is the ended window of the same denial, if it had
    /// repeats, to go out first.
    First { flush: Option<Box<Record>> },
}

impl Repeats {
    fn observe(&self, key: &RepeatKey, now: Instant) -> Seen {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(key) {
            Some(w) if now.duration_since(w.opened) < REPEAT_WINDOW => {
                w.repeats += 1;
                Seen::Repeat
            }
            Some(_) => {
                let ended = map.remove(key).and_then(Window::into_record);
                Seen::First {
                    flush: ended.map(Box::new),
                }
            }
            None => Seen::First { flush: None },
        }
    }

    fn open(&self, key: RepeatKey, first: Record, now: Instant) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() < MAX_AGGREGATED {
            map.insert(
                key,
                Window {
                    opened: now,
                    repeats: 0,
                    first,
                },
            );
        }
    }

    /// Close the windows that ended (all of them with `all`): the records
    /// of those that had repeats.
    fn drain(&self, now: Instant, all: bool) -> Vec<Record> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let ended: Vec<RepeatKey> = map
            .iter()
            .filter(|(_, w)| all || now.duration_since(w.opened) >= REPEAT_WINDOW)
            .map(|(k, _)| k.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|k| map.remove(&k).and_then(Window::into_record))
            .collect()
    }
}

impl Window {
    fn into_record(self) -> Option<Record> {
        (self.repeats > 0).then_some(Record {
            count: Some(self.repeats),
            ..self.first
        })
    }
}

impl Broker {
    /// Deny: audit (aggregating repeats), log, count, and make the error.
    pub fn deny(&self, ctx: &Ctx, workload: &str, refusal: Refusal) -> ServiceError {
        self.deny_after(ctx, &mut None, workload, refusal)
    }

    /// [`Broker::deny`], writing a fetch's deferred authenticate record
    /// first, in the same append (such a denial is never aggregated).
    pub(crate) fn deny_after(
        &self,
        ctx: &Ctx,
        auth: &mut Option<Record>,
        workload: &str,
        refusal: Refusal,
    ) -> ServiceError {
        let Refusal {
            rule,
            reason,
            detail,
        } = refusal;
        let reason = bounded_reason(&reason);
        let detail = detail.map(|d| bounded_reason(&d));
        let set = self.policies();
        let named = Named::of(&set, workload);
        let record = Record {
            workload: named.audited(),
            rule: Some(rule.id().into()),
            reason: Some(detail.clone().unwrap_or_else(|| reason.clone())),
            ..ctx.record()
        };
        let key = RepeatKey {
            uid: ctx.caller.uid,
            container: record.container.as_ref().map(|c| c.id.clone()),
            workload: record.workload.clone(),
            rule,
            reason: record.reason.clone(),
        };
        let now = Instant::now();
        let seen = match auth {
            Some(_) => Seen::First { flush: None },
            None => self.repeats.observe(&key, now),
        };
        let operator = detail.as_deref().unwrap_or(&reason);
        let shown = record.workload.clone().unwrap_or_default();
        match seen {
            Seen::Repeat => {
                tracing::debug!(workload = %shown, %rule, reason = operator, "denied again (aggregated in the audit log)");
            }
            Seen::First { flush } => {
                let flushed = flush.map(|r| (Event::Deny, *r));
                let authenticated = auth.take().map(|a| (Event::Authenticate, a));
                let records = flushed
                    .into_iter()
                    .chain(authenticated)
                    .chain([(Event::Deny, record.clone())]);
                match self.audit.record_all(records) {
                    Ok(()) => self.repeats.open(key, record, now),
                    Err(e) => tracing::error!(error = %e, "could not audit a denial"),
                }
                tracing::warn!(workload = %shown, %rule, reason = operator, caller = %ctx.identity(), "denied");
            }
        }
        self.metrics.denied(named.label(), rule);
        ServiceError::Denied {
            rule,
            reason,
            caller: ctx.identity(),
            request: ctx.request_id.clone(),
            code: rule.code(),
        }
    }

    /// Write the aggregated repeats of denials whose window ended (every
    /// window with `all`, at stop). Called by the expiry sweep.
    pub fn flush_denials(&self, all: bool) {
        let records = self.repeats.drain(Instant::now(), all);
        if records.is_empty() {
            return;
        }
        let n = records.len();
        if let Err(e) = self
            .audit
            .record_all(records.into_iter().map(|r| (Event::Deny, r)))
        {
            tracing::error!(error = %e, windows = n, "could not audit aggregated denials");
        }
    }
}

/// A `[match]` or `[launch]` refusal of the policy crate, made safe to tell
/// the caller: the rule and the caller's own facts, never the policy's
/// expected values or its file (those stay in `detail`, for the operator).
pub fn policy_refusal(d: unbaked_policy::Denial, ctx: &Ctx, workload: &str) -> Refusal {
    let rule = DenyRule::of(d.rule);
    let c = &ctx.caller;
    let w = format!("workload {workload:?}");
    let container = c
        .container
        .as_ref()
        .map(|k| k.id.get(..12).unwrap_or(&k.id));
    let not_in_container = |what: &str| {
        format!("the caller does not run in a container, but [match] {what} of {w} only matches containers: run it in a container started for that workload (unbaked run --workload {workload})")
    };
    let reason = match (rule, container) {
        (DenyRule::Match, _) => format!("[match] of {w} has no selector, so it matches nobody"),
        (DenyRule::MatchUids, _) => format!("caller uid {} is not in [match] uids of {w}: run as one of its uids, or ask the policy's owner to add uid {}", c.uid, c.uid),
        (DenyRule::MatchGids, _) => format!("caller gid {} is not in [match] gids of {w}: run with one of its gids, or ask the policy's owner to add gid {}", c.gid, c.gid),
        (DenyRule::MatchDockerLabels, None) => not_in_container("docker_labels"),
        (DenyRule::MatchDockerLabels, Some(id)) => format!("container {id} lacks a label, or a label value, that [match] docker_labels of {w} requires: start it with the workload's labels (unbaked run sets them)"),
        (DenyRule::MatchImage, None) => not_in_container("image"),
        (DenyRule::MatchImage, Some(id)) => format!(
            "container {id} runs image {}, which is not the image [match] of {w} pins: run the pinned image, or ask the policy's owner to update the pin",
            c.container.as_ref().map_or("", |k| k.image_id.as_str())
        ),
        (DenyRule::MatchK8s, _) => format!("the caller presented no verified service-account token, but [match] of {w} only matches pods: run the client with --token-file pointing at a projected token with audience unbaked"),
        (DenyRule::MatchK8sServiceAccounts, _) => format!("service account {} is not in [match] k8s_service_accounts of {w}: run the pod as one of those, or ask the policy's owner to add it", service_account(ctx)),
        (DenyRule::MatchK8sNamespaces, _) => format!("namespace {} is not in [match] k8s_namespaces of {w}", c.service_account.as_ref().map_or("", |s| s.namespace.as_str())),
        (DenyRule::Launch, _) => format!("{w} lists no [launch] uids or gids, so nobody may launch it: ask the policy's owner to add your uid or gid under [launch]"),
        (DenyRule::LaunchUids | DenyRule::LaunchGids, _) => format!("caller uid {} (gid {}) may not launch {w} by its [launch]: launch it as one of its uids or gids, or ask the policy's owner to add uid {}", c.uid, c.gid, c.uid),
        (rule, _) => format!("{w}: refused because {}: {}", rule.summary(), rule.action()),
    };
    Refusal::new(rule, reason).detail(d.reason)
}

fn service_account(ctx: &Ctx) -> String {
    ctx.caller
        .service_account
        .as_ref()
        .map_or_else(String::new, |s| format!("{}/{}", s.namespace, s.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::attest::container::tests::Fake;
    use crate::attest::container::{Attestation, ConnectionMemo, Evidence};
    use crate::platform::{BoxFuture, Core, FilesTarget, HostOnly, Platform};
    use crate::request::PlatformError;
    use std::sync::Arc;
    use unbaked_api::wire::{
        DeliveryKind, ErrorCode, FetchRequest, LaunchPlan, LaunchRequest, Lease,
    };
    use unbaked_policy::{Caller, Policy};

    const POLICY: &str = "workload = \"web\"\n[match]\nuids = [1000]\n";

    /// A platform whose every container breaks `[isolation]`.
    #[derive(Debug)]
    struct Strict;

    impl Platform for Strict {
        fn attest<'a>(
            &'a self,
            p: i32,
            pin: bool,
            m: &'a ConnectionMemo,
        ) -> BoxFuture<'a, Attestation> {
            HostOnly.attest(p, pin, m)
        }
        fn gate(&self, _: &dyn Evidence, _: &str) -> Result<(), Refusal> {
            Ok(())
        }
        fn isolation(&self, _: &dyn Evidence, _: &Policy) -> Result<(), Refusal> {
            Err(Refusal::new(
                DenyRule::IsolationPrivileged,
                "the container is privileged",
            ))
        }
        fn fetched(
            &self,
            e: &dyn Evidence,
            w: &str,
            k: &[DeliveryKind],
            l: &str,
        ) -> Result<Option<FilesTarget>, Refusal> {
            HostOnly.fetched(e, w, k, l)
        }
        fn deliver_files(
            &self,
            b: &dyn Core,
            c: &Ctx,
            t: &FilesTarget,
            l: &Lease,
        ) -> Result<(), ServiceError> {
            HostOnly.deliver_files(b, c, t, l)
        }
        fn launch<'a>(
            &'a self,
            b: &'a dyn Core,
            c: &'a Ctx,
            p: &'a Policy,
            r: LaunchRequest,
        ) -> BoxFuture<'a, Result<LaunchPlan, ServiceError>> {
            HostOnly.launch(b, c, p, r)
        }
        fn start(
            self: Arc<Self>,
            _: Arc<dyn Core>,
        ) -> Result<Vec<tokio::task::JoinHandle<()>>, PlatformError> {
            Ok(Vec::new())
        }
        fn stop(&self) {}
    }

    fn broker(audit: &std::path::Path) -> Broker {
        let policies = unbaked_policy::from_sources(&[("web.toml".into(), POLICY.into())]).unwrap();
        let store = Arc::new(crate::store::memory::MemoryStore::new().unwrap());
        Broker::new(
            policies,
            store,
            crate::audit::Audit::open(audit).unwrap(),
            0,
        )
        .with_platform(Arc::new(Strict))
    }

    fn in_container(attestation: Attestation) -> Ctx {
        Ctx {
            caller: Caller {
                uid: 1000,
                gid: 1000,
                pid: Some(42),
                container: attestation.container_info(),
                service_account: None,
            },
            request_id: "1".into(),
            attestation,
        }
    }

    /// Denials of the container side (issue 11: they were audited but not
    /// counted) go through the one deny path like any other.
    #[tokio::test]
    async fn platform_denials_are_audited_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        let b = broker(&audit);
        let fetch = || FetchRequest {
            workload: "web".into(),
            kinds: vec![],
        };
        let unverified = in_container(Attestation::Unverified {
            id: "ab".repeat(32),
            reason: "the engine is down".into(),
        });
        let e = b.fetch(&unverified, fetch()).await.unwrap_err();
        assert_eq!(e.rule(), Some(DenyRule::IsolationUnverified));
        let live = Fake {
            id: "cd".repeat(32),
            name: "web-1".into(),
        };
        let privileged = in_container(Attestation::Container(Arc::new(live)));
        let e = b.fetch(&privileged, fetch()).await.unwrap_err();
        assert_eq!(e.rule(), Some(DenyRule::IsolationPrivileged));
        assert_eq!(e.code(), ErrorCode::Denied);
        let message = unbaked_api::wire::ApiError::from(e).message;
        assert!(
            message.contains("in container cdcdcdcdcdcd (web-1)"),
            "{message}"
        );
        assert!(!message.contains("web.toml"), "{message}");
        // Control: the same caller on the host is served.
        let host = in_container(Attestation::Host);
        b.fetch(&host, fetch())
            .await
            .expect("a host caller is served");

        let m = b.render_metrics();
        for rule in ["isolation.unverified", "isolation.privileged"] {
            let line = format!("unbaked_denials_total{{workload=\"web\",rule=\"{rule}\"}} 1");
            assert!(m.contains(&line), "{line} missing:\n{m}");
        }
        let text = std::fs::read_to_string(&audit).unwrap();
        assert!(text.contains("\"rule\":\"isolation.privileged\""), "{text}");
        assert!(text.contains("\"name\":\"web-1\""), "{text}");
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let r = bounded_reason(&"é".repeat(5000));
        assert!(r.len() < MAX_REASON_BYTES + 32);
        assert!(r.ends_with("(10000 bytes)"));
    }

    #[test]
    fn repeats_in_a_window_are_counted_and_flushed_once() {
        let r = Repeats::default();
        let key = RepeatKey {
            uid: 7,
            container: None,
            workload: Some("w".into()),
            rule: DenyRule::MatchUids,
            reason: None,
        };
        let t0 = Instant::now();
        assert!(matches!(r.observe(&key, t0), Seen::First { flush: None }));
        r.open(key.clone(), Record::default(), t0);
        for _ in 0..5 {
            assert!(matches!(r.observe(&key, t0), Seen::Repeat));
        }
        // Another caller's identical denial is its own window.
        let other = RepeatKey {
            uid: 8,
            ..key.clone()
        };
        assert!(matches!(r.observe(&other, t0), Seen::First { .. }));
        assert!(r.drain(t0, false).is_empty());
        let later = t0 + REPEAT_WINDOW;
        match r.observe(&key, later) {
            Seen::First { flush: Some(rec) } => assert_eq!(rec.count, Some(5)),
            _ => panic!("the ended window is flushed before the next first"),
        }
        r.open(key.clone(), Record::default(), later);
        r.observe(&key, later);
        let flushed = r.drain(later, true);
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].count, Some(1));
    }
}
