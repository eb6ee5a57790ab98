//! `POST /v1/action`: a lease holder's `signal_container` action. A
//! sidecar beside an app container never holds the engine's socket: once
//! it has written the new content it asks here, and the broker signals the
//! container the policy names for that grant or template.
//!
//! Checked in order, each refusal through the one deny path:
//! 1. the lease is the caller's (uid and gid: `lease.owner`) and the caller
//!    is the very process that fetched it (pid, pinned at the connection:
//!    `action.holder`);
//! 2. the caller still matches the workload (`[match]`, the gate,
//!    `[isolation]`), as at a renewal;
//! 3. the current policy's `on_change` for the item is a signal with
//!    `signal_container` (`action.not_named`): the container and the
//!    signal come from the policy, never from the request;
//! 4. the same lease and item acted less than the item's debounce (at
//!    least 1 s) ago (`action.rate`): the broker, not only the sidecar,
//!    bounds how often a caller can signal an app;
//! 5. the platform inspects that container: it must be the workload's
//!    (`action.container`), and is signalled by the id it inspected.
//!
//! Done or failed, the action is audited (`action`) and counted
//! (`unbaked_actions_total`) like the platform's own.

use super::super::{Broker, Ctx, ServiceError};
use super::render;
use crate::audit::{ActionRef, ContainerRef};
use crate::lease::LeaseRecord;
use crate::names::bounded_name;
use crate::platform::{ActionReport, Core, SignalError};
use crate::request::{PlatformError, Refusal};
use crate::rules::DenyRule;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use unbaked_api::wire::{ActionDone, ActionRequest, OnChange};

/// The shortest window between two actions of one lease's item.
const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Past this many remembered (lease, item) pairs, the expired are dropped;
/// a live lease holds at most its policy's items, so the map stays small.
const PACE_SWEEP_ABOVE: usize = 4096;

/// When each (lease, item) last had an action carried out.
#[derive(Debug, Default)]
pub struct Pace(Mutex<HashMap<(String, String), (Instant, Duration)>>);

impl Pace {
    /// True, and the time noted, when `window` has passed since the last.
    fn allow(&self, lease: &str, item: &str, window: Duration) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() > PACE_SWEEP_ABOVE {
            map.retain(|_, (at, w)| now.duration_since(*at) < *w);
        }
        let key = (lease.to_string(), item.to_string());
        match map.get(&key) {
            Some((at, _)) if now.duration_since(*at) < window => false,
            _ => {
                map.insert(key, (now, window));
                true
            }
        }
    }

    /// An action that failed (the engine did not carry it out) does not
    /// count: the sidecar's retry, with its own backoff, may ask again.
    fn forget(&self, lease: &str, item: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&(lease.to_string(), item.to_string()));
    }
}

impl Broker {
    /// Carry out `req` for its lease's holder; see the module.
    pub async fn action(&self, ctx: &Ctx, req: ActionRequest) -> Result<ActionDone, ServiceError> {
        let lease = self.owned_lease(ctx, &req.lease_id)?;
        self.holder(ctx, &lease)?;
        let set = self.policies();
        let policy = self.authorize(ctx, &set, &lease.workload)?;
        // The caller's words until the policy is found to have that id.
        let asked = if req.item.len() <= 300 && !req.item.chars().any(char::is_control) {
            format!("{:?}", req.item)
        } else {
            bounded_name(&req.item)
        };
        let named = match render::actions(policy, &lease.kinds).get(&req.item) {
            Some(a) => match &a.on_change {
                OnChange::Signal {
                    signal,
                    container: Some(c),
                } => Some((signal.clone(), c.clone(), a.debounce_ms)),
                _ => None,
            },
            None => None,
        };
        let Some((signal, container, debounce_ms)) = named else {
            let reason = format!("workload {:?} names no container to signal for {asked}: only a grant or template with on_change = \"signal\" and signal_container may ask the broker", lease.workload);
            let detail = format!("{reason} (policy {})", policy.source.display());
            let refusal = Refusal::new(DenyRule::ActionNotNamed, reason).detail(detail);
            return Err(self.deny(ctx, &lease.workload, refusal));
        };
        // A key of the policy's actions: the grant's or template's own id.
        let item = req.item.clone();
        let window = Duration::from_millis(debounce_ms).max(MIN_WINDOW);
        if !self.action_pace.allow(&lease.id, &item, window) {
            let reason = format!(
                "lease {} asked for {asked}'s action again within {} ms: the broker acts at most once per window",
                lease.id,
                window.as_millis()
            );
            let refusal = Refusal::new(DenyRule::ActionRate, reason);
            return Err(self.deny(ctx, &lease.workload, refusal));
        }
        let report = |id: String, error: Option<String>| ActionReport {
            workload: lease.workload.clone(),
            lease: lease.id.clone(),
            container: ContainerRef {
                id,
                name: container.clone(),
                unverified: false,
            },
            kind: "signal",
            action: ActionRef {
                item: item.clone(),
                from_version: req.from_version,
                to_version: req.to_version,
                changes: req.changes,
                action: format!("signal {signal} to container {container}"),
                attempt: req.attempt,
                result: String::new(),
                error,
            },
            asked_by: Some(ctx.record()),
        };
        let signalled = self
            .platform
            .signal_container(&lease.workload, &container, &signal)
            .await;
        match signalled {
            Ok(id) => {
                self.action_done(report(id.clone(), None));
                Ok(ActionDone {
                    container: id,
                    signal,
                })
            }
            Err(SignalError::Refused(r)) => Err(self.deny(ctx, &lease.workload, r)),
            Err(SignalError::Failed(e)) => {
                self.action_pace.forget(&lease.id, &item);
                self.action_done(report(String::new(), Some(e.clone())));
                Err(ServiceError::Platform(PlatformError::Unreachable(e)))
            }
        }
    }

    /// The caller is the process that fetched `lease` (a lease id read
    /// elsewhere, even by the same uid, does not let another act).
    fn holder(&self, ctx: &Ctx, lease: &LeaseRecord) -> Result<(), ServiceError> {
        // pid 0: SO_PEERCRED's answer for a peer outside the broker's pid
        // namespace, which names nobody.
        if lease.pid.is_some_and(|p| p > 0) && lease.pid == ctx.caller.pid {
            return Ok(());
        }
        let reason = format!(
            "lease {} was fetched by another process: ask for its actions from the sidecar that holds it",
            lease.id
        );
        let detail = format!(
            "lease {} is held by pid {:?}, the caller is pid {:?}",
            lease.id, lease.pid, ctx.caller.pid
        );
        let refusal = Refusal::new(DenyRule::ActionHolder, reason).detail(detail);
        Err(self.deny(ctx, &lease.workload, refusal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_allows_once_per_window_per_lease_and_item_and_forgets_failures() {
        let pace = Pace::default();
        let w = Duration::from_secs(60);
        assert!(pace.allow("l1", "file:a", w));
        assert!(!pace.allow("l1", "file:a", w), "again within the window");
        assert!(pace.allow("l1", "file:b", w), "another item");
        assert!(pace.allow("l2", "file:a", w), "another lease");
        pace.forget("l1", "file:a");
        assert!(
            pace.allow("l1", "file:a", w),
            "a failed action does not count"
        );
        assert!(
            pace.allow("l1", "file:b", Duration::ZERO),
            "past the window"
        );
    }
}
