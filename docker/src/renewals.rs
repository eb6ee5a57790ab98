//! The launches' file leases kept current: renewed before they lapse
//! (re-inspecting the container, so a network connected later is caught),
//! rotated files rewritten (and a changed template's `on_change` handed to
//! [`crate::actions`]), everything wiped when a renewal is refused;
//! unclaimed launches given back; followed containers reconciled with the
//! engine now and then, in case an event was missed.

use crate::containers::{Containers, LaunchEntry};
use crate::launch_keep::InitId;
use crate::tmpfs::release_dir;
use std::sync::Arc;
use std::time::{Duration, Instant};
use unbaked_api::wire::{ErrorCode, Lease};
use unbaked_broker::attest::container::{Attestation, Evidence};
use unbaked_broker::platform::Core;
use unbaked_broker::request::{Ctx, ServiceError};
use unbaked_policy::Caller;

/// A launch whose container never showed up gives its (empty) tmpfs back.
const UNCLAIMED_AFTER: Duration = Duration::from_secs(600);
/// How often renewals, unclaimed launches and vanished containers are checked.
const TICK: Duration = Duration::from_millis(250);
/// Full reconciliation against the engine (in case an event was missed).
const RECONCILE_EVERY: Duration = Duration::from_secs(15);
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Renew the launches' file leases, give back unclaimed tmpfs mounts, and
/// now and then check that every followed container still runs.
pub async fn renewals(core: Arc<dyn Core>, containers: Arc<Containers>) {
    let mut tick = tokio::time::interval(TICK);
    let mut last_reconcile = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        give_back_unclaimed(&containers, now);
        containers.end_dropped(&*core);
        for (lid, container, caller, lease_id) in due(&containers, now) {
            renew_one(&*core, &containers, &lid, &container, caller, &lease_id).await;
        }
        if now.duration_since(last_reconcile) >= RECONCILE_EVERY {
            last_reconcile = now;
            reconcile(&*core, &containers).await;
        }
    }
}

/// Unclaimed launches: nothing was ever written; give the mount back.
fn give_back_unclaimed(containers: &Containers, now: Instant) {
    let unclaimed: Vec<(String, LaunchEntry)> = {
        let mut l = containers.launches();
        let ids: Vec<String> = l
            .iter()
            .filter(|(_, e)| e.bound.is_none() && now.duration_since(e.created) > UNCLAIMED_AFTER)
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| l.remove(&id).map(|e| (id, e)))
            .collect()
    };
    for (id, e) in unclaimed {
        release_dir(containers.engine_socket(), &id, e.dir);
    }
}

/// The bound launches whose file lease is due for renewal: (launch,
/// container, caller, lease).
fn due(containers: &Containers, now: Instant) -> Vec<(String, String, Caller, String)> {
    containers
        .launches()
        .iter()
        .filter_map(|(lid, e)| {
            let b = e.bound.as_ref()?;
            (b.next_renew <= now).then(|| {
                (
                    lid.clone(),
                    b.container.clone(),
                    b.caller.clone(),
                    b.lease_id.clone(),
                )
            })
        })
        .collect()
}

async fn renew_one(
    core: &dyn Core,
    containers: &Containers,
    launch_id: &str,
    container: &str,
    mut caller: Caller,
    lease_id: &str,
) {
    // The first process of the container inspected and attested now: kept
    // once the renewal passes, so that the broker's own restart of it
    // (`on_change = "restart"`) does not make the kept identity stale.
    let mut init = None;
    let attestation = match containers.engine.inspect(container).await {
        Ok(Some(c)) if c.running => {
            if let Err(why) = containers.verify_restored(launch_id, &c) {
                containers.container_gone(core, container, Some(launch_id), &why);
                return;
            }
            init = (c.id == container).then(|| InitId::of_live(&c));
            Attestation::Container(Arc::new(c) as Arc<dyn Evidence>)
        }
        Ok(_) => {
            containers.container_gone(core, container, Some(launch_id), "the container stopped");
            return;
        }
        Err(e) => Attestation::Unverified {
            id: container.to_string(),
            reason: e.to_string(),
        },
    };
    caller.container = attestation.container_info();
    let ctx = Ctx {
        caller,
        request_id: format!("renew-{launch_id}"),
        attestation,
    };
    let result = core.renew(&ctx, lease_id).await;
    renewed(containers, launch_id, result, init);
}

/// The outcome of a renewal of `launch_id`'s file lease: files rewritten
/// and the kept identity of its container's first process brought up to
/// date (`init`: read from the container inspected and attested for it),
/// or the files wiped when it was refused.
pub(crate) fn renewed(
    containers: &Containers,
    launch_id: &str,
    result: Result<Lease, ServiceError>,
    init: Option<Result<InitId, String>>,
) {
    let now = Instant::now();
    let mut launches = containers.launches();
    let Some(entry) = launches.get_mut(launch_id) else {
        return;
    };
    let Some(bound) = entry.bound.as_mut() else {
        return;
    };
    match result {
        Ok(lease) => {
            match init {
                Some(Ok(init)) => bound.init = Some(init),
                Some(Err(why)) => {
                    tracing::warn!(launch = launch_id, reason = %why, "renewed, but its container's first process could not be identified: the identity kept for a broker restart stays as it was")
                }
                None => {}
            }
            let ttl = Duration::from_secs(lease.ttl_secs.max(1));
            bound.next_renew = now + ttl * 2 / 3;
            bound.valid_until = now + ttl;
            bound.ttl = ttl;
            let owner = (bound.caller.uid, bound.caller.gid);
            match entry.write(&lease, now, owner) {
                // Only content now on disk can be acted on.
                Ok(()) => {
                    if entry.watch.observe(&lease, now) > 0 {
                        containers.wake_actions.notify_one();
                    }
                }
                Err(e) => {
                    tracing::error!(launch = launch_id, error = %e, "could not rewrite a container's file grants")
                }
            }
        }
        Err(e) if matches!(e.code(), ErrorCode::Denied | ErrorCode::NotFound) => {
            // Denied now (policy, isolation) or the lease is gone: the files go.
            tracing::warn!(launch = launch_id, reason = %e, "renewal refused: wiping the container's file grants");
            bound.next_renew = now + Duration::from_secs(365 * 24 * 3600);
            entry.wipe();
        }
        Err(e) => {
            tracing::warn!(launch = launch_id, reason = %e, "renewal failed: retrying");
            bound.next_renew = now + RETRY_AFTER;
            if now >= bound.valid_until {
                entry.wipe();
            }
        }
    }
}

/// End what belongs to containers that are no longer running (an event
/// may have been missed while the engine was away).
pub(crate) async fn reconcile(core: &dyn Core, containers: &Containers) {
    for id in containers.followed() {
        match containers.engine.inspect(&id).await {
            Ok(Some(c)) if c.running => {}
            Ok(_) => {
                containers.container_gone(core, &id, None, "the container is no longer running")
            }
            Err(_) => return, // the engine is away: try again later
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::Bound;
    use crate::isolation::LiveContainer;

    const CONTAINER: &str = "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a";

    /// The broker restarted the container (`on_change = "restart"`): its
    /// first process is another one. The renewal that follows keeps the new
    /// one, so a broker restart after it resumes the launch.
    #[tokio::test]
    async fn a_renewal_keeps_the_identity_of_the_container_it_renewed_for() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Containers::new(crate::Engine::from_env().await, &tmp.path().join("b.sock"));
        // The first process at the claim, gone since (the restart).
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let before = InitId::of(child.id() as i32).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let mut e = LaunchEntry::new("web".into(), 0, None);
        e.bound = Some(Bound {
            container: CONTAINER.into(),
            caller: Caller {
                uid: 0,
                gid: 0,
                pid: None,
                container: None,
                service_account: None,
            },
            lease_id: "l-files".into(),
            next_renew: Instant::now(),
            valid_until: Instant::now() + Duration::from_secs(90),
            ttl: Duration::from_secs(90),
            init: Some(before),
        });
        c.launches().insert("00ff".into(), e);
        let now = LiveContainer {
            id: CONTAINER.into(),
            running: true,
            pid: Some(i64::from(std::process::id())),
            ..LiveContainer::default()
        };
        let restart_check = |c: &Containers| {
            c.launches().get_mut("00ff").unwrap().restored = true;
            c.verify_restored("00ff", &now)
        };
        // Control: the identity from the claim is stale after the restart.
        let why = restart_check(&c).unwrap_err();
        assert!(why.contains("restarted"), "{why}");
        let lease = Lease {
            lease_id: "l-files".into(),
            workload: "web".into(),
            ttl_secs: 60,
            items: Vec::new(),
            actions: Default::default(),
        };
        // A failed renewal changes nothing.
        renewed(
            &c,
            "00ff",
            Err(ServiceError::Internal("store away".into())),
            Some(InitId::of_live(&now)),
        );
        assert!(restart_check(&c).is_err());
        renewed(&c, "00ff", Ok(lease), Some(InitId::of_live(&now)));
        restart_check(&c).unwrap();
    }
}
