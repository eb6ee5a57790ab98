//! Change detection for `on_change` (templates whose content changes), the
//! one state machine behind the sidecar, the exec shim and the broker's
//! actions on `unbaked run` containers; each carries the action out its
//! own way ([`Due`] says what and when).
//!
//! - By content, not by version: each item's bytes are hashed (SHA-256,
//!   kept in memory only); a renewal that renders identical bytes does
//!   nothing, and the first delivery is not a change.
//! - Debounced: the first change opens a window of `debounce`; further
//!   changes inside it are folded in, and the action runs once at its end.
//! - Retried: a failed action is tried again with capped, jittered backoff
//!   until it succeeds or a newer change replaces it.
//! - Logged: every run logs (target `unbaked::action`) the item, the
//!   versions it went from and to, the action and the outcome, never a
//!   value, and counts it in [`Counters`].

use crate::jitter::Backoff;
use std::collections::BTreeMap;
use std::time::Duration;
use std::time::Instant;
use unbaked_api::wire::{ChangeAction, Item, Lease, OnChange};

/// Longest retry step after failed actions.
const RETRY_CAP: Duration = Duration::from_secs(60);

/// One change waiting for its window to close (or for a retry).
#[derive(Debug)]
pub struct Due {
    pub id: String,
    pub action: OnChange,
    /// The version the window opened from and the latest one folded in.
    pub from_version: u64,
    pub to_version: u64,
    /// Changes folded into this run.
    pub changes: u32,
    pub attempts: u32,
}

#[derive(Debug)]
struct Pending {
    due: Due,
    at: Instant,
    backoff: Backoff,
    /// Why the last attempt failed (no value: the action's own words).
    error: Option<String>,
}

/// A pending action that failed at least once, for health detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub id: String,
    pub action: OnChange,
    pub attempts: u32,
    pub error: String,
}

/// Counts for metrics and `/readyz`-style detail.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    pub changes: u64,
    pub coalesced: u64,
    pub runs: u64,
    pub failures: u64,
}

/// Content hashes, versions and pending actions by item id.
#[derive(Debug, Default)]
pub struct Watch {
    seen: BTreeMap<String, ([u8; 32], u64)>,
    pending: BTreeMap<String, Pending>,
    pub counters: Counters,
}

fn digest(item: &Item) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, item.value.expose_secret());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Watch {
    pub fn new() -> Watch {
        Watch::default()
    }

    /// Take in a lease answer; how many actions' contents changed. Items
    /// without an action are not tracked.
    pub fn observe(&mut self, lease: &Lease, now: Instant) -> usize {
        self.observe_items(&lease.items, &lease.actions, now)
    }

    pub fn observe_items(
        &mut self,
        items: &[Item],
        actions: &BTreeMap<String, ChangeAction>,
        now: Instant,
    ) -> usize {
        for item in items {
            if action_key(&item.id, actions).is_none() {
                self.seen.remove(&item.id);
            }
        }
        let groups = groups(items, actions);
        let mut changed = 0;
        for (key, g) in &groups {
            let before = self.seen.insert(key.clone(), (g.hash, g.version));
            let Some((old, old_version)) = before else {
                continue; // the first delivery is not a change
            };
            if old == g.hash {
                continue;
            }
            changed += 1;
            self.counters.changes += 1;
            self.pend(key, g, old_version, now);
        }
        // Items no longer delivered have nothing left to act on.
        self.pending.retain(|id, _| groups.contains_key(id));
        changed
    }

    /// A change of `key`'s content: a new window, or folded into the open one.
    fn pend(&mut self, key: &str, g: &Group<'_>, old_version: u64, now: Instant) {
        if let Some(p) = self.pending.get_mut(key) {
            // Folded into the open window (or the pending retry).
            p.due.to_version = g.version;
            p.due.changes += 1;
            p.due.action = g.action.on_change.clone();
            self.counters.coalesced += 1;
            return;
        }
        let window = Duration::from_millis(g.action.debounce_ms);
        self.pending.insert(
            key.to_string(),
            Pending {
                due: Due {
                    id: key.to_string(),
                    action: g.action.on_change.clone(),
                    from_version: old_version,
                    to_version: g.version,
                    changes: 1,
                    attempts: 0,
                },
                at: now + window,
                backoff: Backoff::new(Duration::from_secs(1), RETRY_CAP),
                error: None,
            },
        );
    }

    /// When the next action is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.at).min()
    }

    /// Actions whose window closed, taken out; report each with [`Watch::done`].
    pub fn take_due(&mut self, now: Instant) -> Vec<Due> {
        let ids: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in ids {
            if let Some(p) = self.pending.get_mut(&id) {
                p.due.attempts += 1;
                out.push(Due {
                    id: p.due.id.clone(),
                    action: p.due.action.clone(),
                    from_version: p.due.from_version,
                    to_version: p.due.to_version,
                    changes: p.due.changes,
                    attempts: p.due.attempts,
                });
                // Not due again unless `done` reports a failure.
                p.at = now + Duration::from_secs(24 * 60 * 60);
            }
        }
        out
    }

    /// The outcome of a run: success clears it, failure schedules a retry.
    pub fn done(&mut self, due: &Due, result: Result<(), String>, now: Instant) {
        self.counters.runs += 1;
        match result {
            Ok(()) => {
                tracing::info!(target: "unbaked::action", item = %due.id, from_version = due.from_version, to_version = due.to_version, changes = due.changes, action = %describe(&due.action), attempt = due.attempts, "content changed: action done");
                self.pending.remove(&due.id);
            }
            Err(why) => {
                self.counters.failures += 1;
                if let Some(p) = self.pending.get_mut(&due.id) {
                    let wait = p.backoff.next_wait();
                    p.at = now + wait;
                    p.error = Some(why.clone());
                    tracing::warn!(target: "unbaked::action", item = %due.id, from_version = due.from_version, to_version = due.to_version, action = %describe(&due.action), attempt = due.attempts, error = %why, retry_in = ?wait, "content changed: action failed, retrying");
                }
            }
        }
    }

    /// An action this client cannot carry out: logged and dropped (a retry
    /// could not succeed).
    pub fn abandon(&mut self, due: &Due, why: &str) {
        self.counters.failures += 1;
        tracing::error!(target: "unbaked::action", item = %due.id, from_version = due.from_version, to_version = due.to_version, action = %describe(&due.action), error = why, "content changed: action not possible here");
        self.pending.remove(&due.id);
    }

    /// Pending actions whose last attempt failed: for health detail.
    pub fn failing(&self) -> Vec<Failing> {
        self.pending
            .values()
            .filter_map(|p| {
                Some(Failing {
                    id: p.due.id.clone(),
                    action: p.due.action.clone(),
                    attempts: p.due.attempts,
                    error: p.error.clone()?,
                })
            })
            .collect()
    }

    /// Take `items` as the new baseline, acting on nothing: a fresh lease
    /// for a restarted app (whose content it already started with, and
    /// whose certificates are new because the lease is) is not a change.
    pub fn rebase(&mut self, items: &[Item], actions: &BTreeMap<String, ChangeAction>) {
        self.seen.clear();
        self.pending.clear();
        for (key, g) in groups(items, actions) {
            self.seen.insert(key, (g.hash, g.version));
        }
    }
}

/// The content one action watches: one item, or every file of a
/// directory grant.
struct Group<'a> {
    hash: [u8; 32],
    /// The newest version among its items.
    version: u64,
    action: &'a ChangeAction,
}

/// The action an item falls under, with its key: its own id, or for a file
/// under a directory grant the directory's (`file:tls` for
/// `file:tls/cert.pem`), the nearest one first.
pub fn action_key<'a>(
    id: &str,
    actions: &'a BTreeMap<String, ChangeAction>,
) -> Option<(&'a String, &'a ChangeAction)> {
    if let Some(found) = actions.get_key_value(id) {
        return Some(found);
    }
    let path = id.strip_prefix("file:")?;
    let mut end = path.len();
    while let Some(slash) = path[..end].rfind('/') {
        if let Some(found) = actions.get_key_value(&format!("file:{}", &path[..slash])) {
            return Some(found);
        }
        end = slash;
    }
    None
}

/// One action's items (id, content hash), newest version, and the action.
type Members<'i, 'a> = (Vec<(&'i str, [u8; 32])>, u64, &'a ChangeAction);

/// Items by the action they fall under, each group's content hashed as a
/// whole (item ids and their hashes, in id order), so a directory whose
/// files all rotate at once is one change.
fn groups<'a>(
    items: &[Item],
    actions: &'a BTreeMap<String, ChangeAction>,
) -> BTreeMap<String, Group<'a>> {
    let mut members: BTreeMap<&String, Members<'_, 'a>> = BTreeMap::new();
    for item in items {
        let Some((key, action)) = action_key(&item.id, actions) else {
            continue;
        };
        let m = members.entry(key).or_insert((Vec::new(), 0, action));
        m.0.push((item.id.as_str(), digest(item)));
        m.1 = m.1.max(item.version);
    }
    members
        .into_iter()
        .map(|(key, (mut parts, version, action))| {
            let hash = if parts.len() == 1 && parts[0].0 == key.as_str() {
                parts[0].1
            } else {
                parts.sort();
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                for (id, h) in &parts {
                    ctx.update(id.as_bytes());
                    ctx.update(&[0]);
                    ctx.update(h);
                }
                let mut out = [0u8; 32];
                out.copy_from_slice(ctx.finish().as_ref());
                out
            };
            (
                key.clone(),
                Group {
                    hash,
                    version,
                    action,
                },
            )
        })
        .collect()
}

/// For logs: never a value (commands are from the policy).
pub fn describe(a: &OnChange) -> String {
    match a {
        OnChange::Signal {
            signal,
            container: None,
        } => format!("signal {signal}"),
        OnChange::Signal {
            signal,
            container: Some(c),
        } => format!("signal {signal} to container {c}"),
        OnChange::Command { command } => format!("command {command:?}"),
        OnChange::Restart => "restart".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unbaked_api::wire::Delivery;
    use unbaked_api::Secret;

    fn item(id: &str, version: u64, value: &[u8]) -> Item {
        Item {
            id: id.into(),
            secret: "app/db".into(),
            key: String::new(),
            delivery: Delivery::File {
                path: id.into(),
                mode: 0o400,
                uid: None,
                gid: None,
            },
            version,
            ttl_secs: 60,
            value: Secret::from_slice(value),
        }
    }

    fn actions(ids: &[&str], debounce_ms: u64) -> BTreeMap<String, ChangeAction> {
        ids.iter()
            .map(|id| {
                let a = ChangeAction {
                    on_change: OnChange::Signal {
                        signal: "SIGHUP".into(),
                        container: None,
                    },
                    debounce_ms,
                };
                (id.to_string(), a)
            })
            .collect()
    }

    #[test]
    fn first_delivery_and_identical_content_do_nothing() {
        let mut w = Watch::new();
        let t0 = Instant::now();
        let acts = actions(&["a"], 2000);
        assert_eq!(w.observe_items(&[item("a", 1, b"x")], &acts, t0), 0);
        // A new version with identical bytes (a re-render) is no change.
        assert_eq!(w.observe_items(&[item("a", 2, b"x")], &acts, t0), 0);
        assert_eq!(w.next_due(), None);
        // Items without an action are not watched.
        assert_eq!(
            w.observe_items(&[item("b", 1, b"x"), item("b", 2, b"y")], &acts, t0),
            0
        );
        assert_eq!(w.counters, Counters::default());
    }

    #[test]
    fn changes_within_the_window_coalesce_into_one_run() {
        let mut w = Watch::new();
        let t0 = Instant::now();
        let acts = actions(&["a"], 2000);
        w.observe_items(&[item("a", 1, b"v1")], &acts, t0);
        assert_eq!(w.observe_items(&[item("a", 2, b"v2")], &acts, t0), 1);
        let ms = Duration::from_millis;
        w.observe_items(&[item("a", 3, b"v3")], &acts, t0 + ms(500));
        w.observe_items(&[item("a", 4, b"v4")], &acts, t0 + ms(1500));
        assert_eq!(w.next_due(), Some(t0 + ms(2000)));
        assert!(w.take_due(t0 + ms(1999)).is_empty());
        let due = w.take_due(t0 + ms(2000));
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].from_version, due[0].to_version, due[0].changes),
            (1, 4, 3)
        );
        w.done(&due[0], Ok(()), t0 + ms(2000));
        assert_eq!(w.next_due(), None);
        assert_eq!(
            w.counters,
            Counters {
                changes: 3,
                coalesced: 2,
                runs: 1,
                failures: 0
            }
        );
        // A change after the window opens a new one.
        w.observe_items(&[item("a", 5, b"v5")], &acts, t0 + ms(3000));
        assert_eq!(w.next_due(), Some(t0 + ms(5000)));
    }

    #[test]
    fn a_failed_action_is_retried_with_backoff_until_it_succeeds() {
        let mut w = Watch::new();
        let t0 = Instant::now();
        let acts = actions(&["a"], 0);
        w.observe_items(&[item("a", 1, b"v1")], &acts, t0);
        w.observe_items(&[item("a", 2, b"v2")], &acts, t0);
        let due = w.take_due(t0);
        w.done(&due[0], Err("no such process".into()), t0);
        let failing = w.failing();
        assert_eq!(
            (
                failing[0].id.as_str(),
                failing[0].attempts,
                failing[0].error.as_str()
            ),
            ("a", 1, "no such process")
        );
        let retry = w.next_due().unwrap();
        assert!(
            retry > t0 && retry <= t0 + Duration::from_secs(1),
            "{retry:?}"
        );
        let again = w.take_due(retry);
        assert_eq!(again[0].attempts, 2);
        w.done(&again[0], Ok(()), retry);
        assert!(w.failing().is_empty() && w.next_due().is_none());
        assert_eq!((w.counters.runs, w.counters.failures), (2, 1));
    }

    #[test]
    fn a_withdrawn_item_drops_its_pending_action() {
        let mut w = Watch::new();
        let t0 = Instant::now();
        let acts = actions(&["a"], 1000);
        w.observe_items(&[item("a", 1, b"v1")], &acts, t0);
        w.observe_items(&[item("a", 2, b"v2")], &acts, t0);
        assert!(w.next_due().is_some());
        w.observe_items(&[], &acts, t0);
        assert_eq!(w.next_due(), None);
    }

    #[test]
    fn a_rebase_is_no_change_and_drops_what_was_pending() {
        let mut w = Watch::new();
        let t0 = Instant::now();
        let acts = actions(&["a"], 1000);
        w.observe_items(&[item("a", 1, b"v1")], &acts, t0);
        w.observe_items(&[item("a", 2, b"v2")], &acts, t0);
        w.rebase(&[item("a", 3, b"v3")], &acts);
        assert_eq!(w.next_due(), None);
        assert_eq!(w.observe_items(&[item("a", 3, b"v3")], &acts, t0), 0);
        assert_eq!(w.observe_items(&[item("a", 4, b"v4")], &acts, t0), 1);
    }

    #[test]
    fn a_directory_grant_is_one_action_for_all_its_files() {
        let mut w = Watch::new();
        let t0 = Instant::now();
        let acts = actions(&["file:tls"], 0);
        let dir = |v: u64, tag: &[u8]| {
            vec![
                item("file:tls/cert.pem", v, &[b"c", tag].concat()),
                item("file:tls/key.pem", v, &[b"k", tag].concat()),
                item("file:tlsx", v, tag),
            ]
        };
        assert_eq!(w.observe_items(&dir(1, b"1"), &acts, t0), 0);
        assert_eq!(w.observe_items(&dir(2, b"1"), &acts, t0), 0);
        // Both files rotate: one change, one action under the grant's id.
        assert_eq!(w.observe_items(&dir(3, b"2"), &acts, t0), 1);
        let due = w.take_due(t0);
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].id.as_str(), due[0].from_version, due[0].to_version),
            ("file:tls", 2, 3)
        );
        assert!(action_key("file:tlsx", &acts).is_none());
        assert!(action_key("env:tls/x", &acts).is_none());
        assert_eq!(
            action_key("file:tls/a/b", &acts).map(|(k, _)| k.as_str()),
            Some("file:tls")
        );
        // A file leaving the directory is a change too.
        w.done(&due[0], Ok(()), t0);
        let fewer = &dir(4, b"2")[..1];
        assert_eq!(w.observe_items(fewer, &acts, t0), 1);
    }
}
