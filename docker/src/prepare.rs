//! `unbaked run`, the engine's part: the facts a plan needs (the image's
//! command, volumes, labels, the host's identity of every mount source),
//! whether the engine remaps users and whether its default bridge already
//! has inter-container traffic off, the plan ([`crate::launch`]), and,
//! unless a dry run, the workload's isolated network (none when the default
//! bridge isolates) and the launch's secrets tmpfs.

use crate::containers::{Containers, LaunchEntry};
use crate::launch::{self, Facts, HostFacts, Parsed};
use std::collections::BTreeMap;
use std::path::Path;
use unbaked_api::wire::{DeliveryKind, LaunchPlan, LaunchRequest};
use unbaked_broker::platform::Core;
use unbaked_broker::request::{Ctx, Refusal, ServiceError};
use unbaked_broker::rules::DenyRule;
use unbaked_policy::Policy;

/// Unclaimed launches (each a mounted tmpfs) one uid may hold at once.
/// Above a start storm's size (100 at once), far below the mounts a loop
/// could make.
pub const MAX_UNCLAIMED_LAUNCHES_PER_UID: usize = 128;

/// Plan the launch of `policy`'s workload (its `[launch]` already checked
/// by the core) and, unless a dry run, prepare it.
pub(crate) async fn launch(
    containers: &Containers,
    core: &dyn Core,
    ctx: &Ctx,
    policy: &Policy,
    req: LaunchRequest,
) -> Result<LaunchPlan, ServiceError> {
    let w = policy.workload.clone();
    let refuse = |refusals| refused(core, ctx, &w, refusals);
    let parsed = launch::parse(&req.args).map_err(refuse)?;
    let launch_id = unbaked_broker::lease::new_lease_id()[..16].to_string();
    // File grants and file templates both land in /run/secrets.
    let has_files = policy.grants_of(&[DeliveryKind::File]).next().is_some()
        || policy.templates_of(&[DeliveryKind::File]).next().is_some();
    // A Compose service's files go to a per-container engine tmpfs that
    // its shim fills: no host tmpfs, no launch entry to claim.
    let secrets_dir = (has_files && !req.compose).then(|| containers.base.join(&launch_id));
    let mut facts = facts(
        containers,
        &parsed,
        &req,
        &launch_id,
        secrets_dir.as_deref(),
    )
    .await?;
    facts.compose = req.compose;
    facts.container_files = req.compose && has_files;
    let host = host_facts(containers, &parsed).await?;
    let set = core.policies();
    let inputs = launch::Inputs {
        policy,
        policies: &set,
        facts: &facts,
        host: &host,
    };
    let plan = launch::plan_with(&parsed, &inputs).map_err(refuse)?;
    if !req.dry_run && req.compose {
        if let Some(net) = &plan.network {
            containers.engine.ensure_isolated_network(net, &w).await?;
        }
    } else if !req.dry_run {
        check_limit(containers, core, ctx, &w)?;
        if let Some(net) = &plan.network {
            containers.engine.ensure_isolated_network(net, &w).await?;
        }
        let (dir, dir_id) = match &secrets_dir {
            Some(d) => {
                let (dir, id) = mount(containers, d)?;
                (Some(dir), Some(id))
            }
            None => (None, None),
        };
        let mut entry = LaunchEntry::new(w.clone(), ctx.caller.uid, dir);
        entry.dir_id = dir_id;
        containers.launches().insert(launch_id.clone(), entry);
    }
    tracing::info!(workload = %w, launch = %launch_id, dry_run = req.dry_run, compose = req.compose, uid = ctx.caller.uid, "launch planned");
    Ok(LaunchPlan {
        workload: w,
        launch_id,
        args: plan.args,
        warnings: plan.warnings,
        network: plan.network,
        secrets_dir: secrets_dir.map(|d| d.display().to_string()),
    })
}

/// What the plan needs to know of this broker and the image.
async fn facts(
    containers: &Containers,
    parsed: &Parsed,
    req: &LaunchRequest,
    launch_id: &str,
    secrets_dir: Option<&Path>,
) -> Result<Facts, ServiceError> {
    // Three questions to the engine, asked at once.
    let (command, remaps, bridge) = tokio::join!(
        containers.engine.image_command(&parsed.image),
        containers.engine.remaps_users(),
        containers.engine.default_bridge_isolates()
    );
    let (image_entrypoint, image_cmd) = command?;
    let socket_gid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&containers.socket).ok().map(|m| m.gid())
    };
    Ok(Facts {
        image_entrypoint,
        image_cmd,
        shim: req.shim.clone(),
        broker_socket: containers.socket.display().to_string(),
        socket_gid,
        secrets_dir: secrets_dir.map(|d| d.display().to_string()),
        launch_id: launch_id.to_string(),
        containers_dir: containers.base.display().to_string(),
        sockets: vec![containers.engine.socket().to_string()],
        resolved: resolve_sources(parsed, Path::new(containers.engine.socket())),
        compose: false,
        container_files: false,
        engine_remaps_users: remaps?,
        default_bridge_isolates: bridge?,
    })
}

/// What every mount source is on the host (device and inode), the named
/// volumes and the image's labels: the plan judges mounts by these.
async fn host_facts(containers: &Containers, parsed: &Parsed) -> Result<HostFacts, ServiceError> {
    let mut volumes = BTreeMap::new();
    for name in launch::named_volumes(parsed) {
        if let Some(v) = containers.engine.volume(&name).await? {
            volumes.insert(name, v);
        }
    }
    let image_labels = containers.engine.image_labels(&parsed.image).await?;
    let data_root = containers.engine.data_root().await;
    Ok(crate::mount_identity::host_facts(
        parsed,
        Path::new(containers.engine.socket()),
        data_root.as_deref(),
        &containers.base,
        volumes,
        image_labels,
    ))
}

/// The launch's tmpfs, in the launches' private directory.
fn mount(
    containers: &Containers,
    dir: &Path,
) -> Result<(unbaked_secretsdir::SecretsDir, crate::launch_keep::TmpfsId), ServiceError> {
    containers
        .secure_base()
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    crate::tmpfs::mount_secrets_dir(containers.engine_socket(), dir).map_err(ServiceError::Internal)
}

/// Each launch mounts a tmpfs until its container claims it (or it
/// lapses): one uid may hold only so many unclaimed ones, so a loop of
/// launches cannot exhaust the host's mounts while the others' launches go
/// on.
fn check_limit(
    containers: &Containers,
    core: &dyn Core,
    ctx: &Ctx,
    w: &str,
) -> Result<(), ServiceError> {
    let uid = ctx.caller.uid;
    let pending = containers
        .launches()
        .values()
        .filter(|e| e.uid == uid && e.bound.is_none() && e.dir.is_some())
        .count();
    if pending < MAX_UNCLAIMED_LAUNCHES_PER_UID {
        return Ok(());
    }
    Err(core.deny(
        ctx,
        w,
        Refusal::new(
            DenyRule::LaunchLimit,
            format!("uid {uid} already has {pending} launches no container has claimed yet (at most {MAX_UNCLAIMED_LAUNCHES_PER_UID}): start the containers of earlier launches, or wait for them to lapse"),
        ),
    ))
}

/// The plan's refusals, as one denial by the first one's rule.
fn refused(core: &dyn Core, ctx: &Ctx, w: &str, refusals: Vec<launch::Refusal>) -> ServiceError {
    let reason = refusals
        .iter()
        .map(|r| format!("{}: {}", r.rule, r.reason))
        .collect::<Vec<_>>()
        .join("\n");
    let rule = refusals
        .first()
        .map_or(DenyRule::LaunchArgs, |r| DenyRule::of(r.rule));
    core.deny(
        ctx,
        w,
        Refusal::new(
            rule,
            format!("unbaked run refused the arguments for workload {w:?}:\n{reason}"),
        ),
    )
}

/// Bind sources as the host resolves them, for the docker-socket check.
fn resolve_sources(parsed: &Parsed, engine_socket: &Path) -> BTreeMap<String, String> {
    let mut sources = Vec::new();
    for o in &parsed.options {
        let v = o.value.as_deref().unwrap_or("");
        let src = match o.name.as_str() {
            "volume" => v.split(':').next().filter(|_| v.contains(':')),
            "mount" => v.split(',').find_map(|f| {
                let (k, val) = f.split_once('=')?;
                matches!(k.trim(), "source" | "src").then_some(val)
            }),
            _ => None,
        };
        if let Some(src) = src.filter(|s| s.starts_with('/')) {
            sources.push(src.to_string());
        }
    }
    // Links resolve where the engine resolves them.
    crate::mount_identity::as_engine_sees(engine_socket, move || {
        sources
            .iter()
            .filter_map(|src| {
                let real = std::fs::canonicalize(src).ok()?;
                Some((src.clone(), real.display().to_string()))
            })
            .collect()
    })
}
