//! Containers on the Docker Engine: the isolation gate at issuance, the
//! `unbaked run` launches, their file grants on a per-container host tmpfs,
//! and the end of everything a container held when it dies.
//!
//! How a secret reaches an `unbaked run` container:
//! 1. [`Broker::launch`] checks `[launch]`, plans the arguments
//!    ([`crate::launch`]), creates the workload's ICC-disabled network and
//!    mounts an empty tmpfs at `<socket dir>/containers/<launch id>`.
//! 2. `docker run` starts the container; its entrypoint is the exec shim,
//!    which fetches the env and fd grants over the bind-mounted socket.
//! 3. The broker attests the shim (pid → cgroup → container), checks the
//!    container's live configuration ([`crate::isolation`]) and `[match]`,
//!    and, because the container carries the launch's label and mounts its
//!    tmpfs at `/run/secrets`, first writes the file grants there (a lease
//!    of its own, audited like any fetch). Only then does the shim exec the
//!    image's command: the files are in place before it starts.
//! 4. [`renewals`] renews that lease (re-inspecting the container, so a
//!    network connected later is caught) and rewrites rotated files;
//!    [`crate::events`] ends it all when the container dies.
//!
//! **Invariant:** a file grant is written only after the same checks as a
//! fetch by the container itself (attestation, isolation, `[match]`, audit).

use crate::attest::docker::{Attestation, Engine};
use crate::launch::{self, Facts, LABEL_LAUNCH, SECRETS_PATH};
use crate::rules::DenyRule;
use crate::service::{policy_refusal, Broker, Ctx, Refusal, ServiceError};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use unbaked_api::wire::{
    Delivery, DeliveryKind, ErrorCode, FetchRequest, LaunchPlan, LaunchRequest, Lease,
};
use unbaked_policy::{Caller, Policy};
use unbaked_sidecar::writer::SecretsDir;

/// Size of a container's secrets tmpfs.
const TMPFS_BYTES: u64 = 1 << 20;
/// A launch whose container never showed up gives its (empty) tmpfs back.
const UNCLAIMED_AFTER: Duration = Duration::from_secs(600);
/// How often renewals, unclaimed launches and vanished containers are checked.
const TICK: Duration = Duration::from_millis(250);
/// Full reconciliation against the engine (in case an event was missed).
const RECONCILE_EVERY: Duration = Duration::from_secs(15);
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// `<socket dir>/containers` cannot be made private to the broker.
#[derive(Debug, thiserror::Error)]
pub enum BaseDirError {
    #[error("cannot create or open {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a directory (a symlink or a file?): remove it and the broker creates it, mode 0700")]
    NotADirectory { path: PathBuf },
    #[error("{path} is owned by uid {owner}, not by the broker's uid {euid}: whoever owns it could read launched containers' file grants; remove it and the broker creates it, mode 0700")]
    Owner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
}

/// The Docker side of the broker: the engine, the launches, and which
/// leases each container holds.
#[derive(Debug)]
pub struct Containers {
    pub engine: Engine,
    /// `<socket dir>/containers`: one tmpfs per launch below it.
    base: PathBuf,
    /// The broker socket, bind-mounted into launched containers.
    socket: PathBuf,
    launches: Mutex<HashMap<String, LaunchEntry>>,
    /// Container id → lease ids, to end them when it dies.
    leases: Mutex<HashMap<String, Vec<String>>>,
}

#[derive(Debug)]
struct LaunchEntry {
    workload: String,
    /// Who asked for it, for the per-uid bound on unclaimed launches.
    uid: u32,
    created: Instant,
    /// The tmpfs, when the workload has file grants.
    dir: Option<SecretsDir>,
    bound: Option<Bound>,
}

/// The container that claimed a launch, and the lease of its files.
#[derive(Debug)]
struct Bound {
    container: String,
    caller: Caller,
    lease_id: String,
    next_renew: Instant,
    /// After this, without a successful renewal, the files go.
    valid_until: Instant,
}

impl Containers {
    pub fn new(engine: Engine, socket: &Path) -> Containers {
        let base = socket
            .parent()
            .unwrap_or_else(|| Path::new("/run/unbaked"))
            .join("containers");
        Containers {
            engine,
            base,
            socket: socket.to_path_buf(),
            launches: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
        }
    }

    /// Make `<socket dir>/containers` what only root and the broker may
    /// enter: created 0700; an existing one is opened without following a
    /// link, must be a directory owned by the broker's euid, and a wider
    /// mode is narrowed to 0700 (through the open descriptor). Launched
    /// containers' file grants live below it, and a launch's id is public in
    /// `/proc/self/mountinfo`.
    pub fn secure_base(&self) -> Result<(), BaseDirError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
        let path = &self.base;
        let io = |source| BaseDirError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(e)),
            _ => {}
        }
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(nix::libc::ELOOP | nix::libc::ENOTDIR) => {
                    BaseDirError::NotADirectory { path: path.clone() }
                }
                _ => io(e),
            })?;
        let meta = dir.metadata().map_err(io)?;
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(BaseDirError::Owner {
                path: path.clone(),
                owner: meta.uid(),
                euid,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode != 0o700 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "narrowing the launches' directory to 0700: only root and the broker may enter it");
            dir.set_permissions(std::fs::Permissions::from_mode(0o700))
                .map_err(io)?;
        }
        Ok(())
    }

    /// Zero, unmount and remove what a previous broker left under the base
    /// directory (it crashed, or was killed): nobody renews those files,
    /// and their containers may still read them, so they are zeroed before
    /// the mount goes. Returns the launch ids, for the audit.
    pub fn sweep_leftovers(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.base) else {
            return Vec::new();
        };
        let mut swept = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                zero_tree(&path, 2);
                let removed = crate::host_mount::in_host(self.engine_socket(), move || {
                    let _ = unbaked_sidecar::sys::unmount(&path);
                    std::fs::remove_dir(&path).map_err(|e| e.to_string())
                });
                if removed.is_ok() {
                    swept.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        if !swept.is_empty() {
            tracing::warn!(dirs = swept.len(), base = %self.base.display(), "zeroed and removed the secrets mounts of a previous broker: their containers keep running without them");
        }
        swept
    }

    /// Where the launches' tmpfs mounts live.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The engine's socket, to find the host's mount namespace by.
    fn engine_socket(&self) -> &Path {
        Path::new(self.engine.socket())
    }

    fn launches(&self) -> std::sync::MutexGuard<'_, HashMap<String, LaunchEntry>> {
        self.launches.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn track(&self, container: &str, lease_id: &str) {
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(container.to_string())
            .or_default()
            .push(lease_id.to_string());
    }

    /// The launches still waiting for or serving a container.
    pub fn launch_count(&self) -> usize {
        self.launches().len()
    }

    /// Containers the broker follows (holding leases or a launch).
    fn followed(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        ids.extend(
            self.launches()
                .values()
                .filter_map(|l| l.bound.as_ref().map(|b| b.container.clone())),
        );
        ids.sort();
        ids.dedup();
        ids
    }

    /// Wipe and unmount every launch's tmpfs (broker shutdown).
    pub fn wipe_all(&self) {
        let all: Vec<(String, LaunchEntry)> = self.launches().drain().collect();
        for (id, entry) in all {
            release_dir(self, &id, entry.dir);
        }
    }
}

/// Zero every file, unmount the tmpfs, remove the directory.
/// Overwrite every regular file under `dir` (to `depth` levels: a PKI
/// grant is a directory) with zeros, in place: the bytes a container may
/// still map go, not only the names. Links are never followed.
fn zero_tree(dir: &Path, depth: u8) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() && depth > 0 {
            zero_tree(&e.path(), depth - 1);
        } else if t.is_file() {
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(e.path());
            if let (Ok(mut f), Ok(meta)) = (opened, e.metadata()) {
                let zeros = vec![0u8; usize::try_from(meta.len()).unwrap_or(0)];
                if f.write_all(&zeros).and_then(|()| f.sync_all()).is_err() {
                    tracing::warn!(file = %e.path().display(), "could not zero a leftover secrets file");
                }
            }
        }
    }
}

/// Wipe a launch's tmpfs (through its descriptor), then unmount and remove
/// it in the host's mount namespace, where it was mounted.
fn release_dir(containers: &Containers, launch_id: &str, dir: Option<SecretsDir>) {
    let Some(mut dir) = dir else { return };
    if let Err(e) = dir.wipe_all() {
        tracing::error!(launch = launch_id, error = %e, "could not wipe a container's secrets");
    }
    let root = dir.root().to_path_buf();
    drop(dir);
    if let Err(e) = unmount_secrets_dir(containers, root.clone()) {
        tracing::error!(launch = launch_id, dir = %root.display(), error = %e, "could not unmount a container's secrets tmpfs")
    }
}

/// Unmount a launch's tmpfs and remove its directory, in the host's mount
/// namespace ([`crate::host_mount`]).
fn unmount_secrets_dir(containers: &Containers, root: PathBuf) -> Result<(), String> {
    crate::host_mount::in_host(containers.engine_socket(), move || {
        let unmounted = unbaked_sidecar::sys::unmount(&root).map_err(|e| e.to_string());
        let _ = std::fs::remove_dir(&root);
        unmounted
    })
}

impl Broker {
    /// Before `[match]`: a caller in a container the engine cannot vouch for
    /// is released nothing, whatever its policy says.
    pub(crate) fn attestation_gate(&self, ctx: &Ctx, workload: &str) -> Result<(), ServiceError> {
        if let Attestation::Unverified { id, reason } = &ctx.attestation {
            let short = id.get(..12).unwrap_or(id);
            return Err(self.deny(
                ctx,
                workload,
                Refusal::new(
                    DenyRule::IsolationUnverified,
                    format!("the caller runs in container {short}, whose isolation cannot be verified: {reason}"),
                ),
            ));
        }
        self.launch_gate(ctx, workload)
    }

    /// A container that `unbaked run` started for workload X is X's and
    /// only X's, whatever labels it carries; one naming a launch this
    /// broker does not know (it restarted since) is served nothing.
    fn launch_gate(&self, ctx: &Ctx, workload: &str) -> Result<(), ServiceError> {
        let (Some(live), Some(containers)) = (ctx.attestation.live(), self.containers()) else {
            return Ok(());
        };
        let Some(launch_id) = live.labels.get(LABEL_LAUNCH) else {
            return Ok(());
        };
        let launched_for = containers
            .launches()
            .get(launch_id)
            .map(|e| e.workload.clone());
        let refusal = match launched_for {
            Some(w) if w == workload => return Ok(()),
            Some(w) => Refusal::new(
                DenyRule::LaunchWorkload,
                format!("this container was started by unbaked run for workload {w:?} (launch {launch_id}) and gets only its secrets"),
            ),
            None => Refusal::new(
                DenyRule::LaunchUnknown,
                format!("this container names launch {launch_id}, which this broker does not know (it restarted since the launch, or the label was set by hand): start it again with unbaked run"),
            ),
        };
        Err(self.deny(ctx, workload, refusal))
    }

    /// After `[match]`: the live container against `[isolation]`. Every
    /// violation is named; the first one's rule is the audited rule.
    pub(crate) fn check_isolation(&self, ctx: &Ctx, policy: &Policy) -> Result<(), ServiceError> {
        let Some(live) = ctx.attestation.live() else {
            return Ok(());
        };
        let sockets: Vec<String> = self
            .containers()
            .map(|c| vec![c.engine.socket().to_string()])
            .unwrap_or_default();
        let protected = self
            .containers()
            .map(|c| {
                crate::mount_identity::protected(
                    Path::new(c.engine.socket()),
                    c.engine.known_data_root().as_deref(),
                )
            })
            .unwrap_or_default();
        let violations =
            crate::isolation::check_protected(&policy.isolation, live, &sockets, &protected);
        let Some(first) = violations.first() else {
            return Ok(());
        };
        let reason = violations
            .iter()
            .map(|v| format!("{}: {}", v.rule, v.reason))
            .collect::<Vec<_>>()
            .join("; ");
        let told = format!(
            "workload {:?}: nothing is released to a container that breaks its [isolation]: {reason}",
            policy.workload
        );
        let detail = format!("{told} (policy {})", policy.source.display());
        Err(self.deny(
            ctx,
            &policy.workload,
            Refusal::new(DenyRule::of(first.rule), told).detail(detail),
        ))
    }

    /// After a fetch by a container: remember the lease (it ends with the
    /// container) and, for the shim of an `unbaked run` container, write the
    /// file grants into its secrets tmpfs first.
    ///
    /// Boxed, with `Send` spelled out: it calls [`Broker::fetch`], which
    /// calls it, and the compiler cannot infer auto traits through a cycle.
    pub(crate) fn container_fetched<'a>(
        &'a self,
        ctx: &'a Ctx,
        workload: &'a str,
        kinds: &'a [DeliveryKind],
        lease_id: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ServiceError>> + Send + 'a>>
    {
        Box::pin(self.container_fetched_inner(ctx, workload, kinds, lease_id))
    }

    async fn container_fetched_inner(
        &self,
        ctx: &Ctx,
        workload: &str,
        kinds: &[DeliveryKind],
        lease_id: &str,
    ) -> Result<(), ServiceError> {
        let (Some(live), Some(containers)) = (ctx.attestation.live(), self.containers()) else {
            return Ok(());
        };
        containers.track(&live.id, lease_id);
        // Only the shim's fetch (env and fd) triggers the files; the files'
        // own fetch asks for `file` and so does not come back here.
        if kinds.is_empty() || kinds.contains(&DeliveryKind::File) {
            return Ok(());
        }
        let Some(launch_id) = live.labels.get(LABEL_LAUNCH) else {
            return Ok(());
        };
        let root = {
            let launches = containers.launches();
            let Some(entry) = launches.get(launch_id) else {
                return Ok(());
            };
            let Some(dir) = &entry.dir else { return Ok(()) };
            if entry.workload != workload {
                return Ok(());
            }
            if let Some(b) = &entry.bound {
                if b.container != live.id {
                    return Err(self.deny(
                        ctx,
                        workload,
                        Refusal::new(
                            DenyRule::LaunchClaimed,
                            format!("launch {launch_id} already belongs to container {}: start every container with its own unbaked run", b.container.get(..12).unwrap_or(&b.container)),
                        ),
                    ));
                }
            }
            dir.root().to_path_buf()
        };
        // The container must mount this very tmpfs at /run/secrets.
        let mounted = live.mounts.iter().any(|m| {
            m.kind == "bind"
                && Path::new(&m.source) == root
                && crate::isolation::lexical_path(&m.destination) == SECRETS_PATH
        });
        if !mounted {
            return Ok(());
        }
        let files = FetchRequest {
            workload: workload.into(),
            kinds: vec![DeliveryKind::File],
        };
        let lease = match self.fetch(ctx, files).await {
            Ok(l) => l,
            Err(e) => {
                self.end_lease(lease_id, "the container's file grants were refused");
                return Err(e);
            }
        };
        let now = Instant::now();
        let mut launches = containers.launches();
        let Some(entry) = launches.get_mut(launch_id) else {
            self.end_lease(
                &lease.lease_id,
                "the launch ended while its files were fetched",
            );
            return Err(ServiceError::NotFound(format!(
                "launch {launch_id} ended meanwhile: start the container again"
            )));
        };
        if let Some(old) = entry.bound.take() {
            if old.lease_id != lease.lease_id {
                self.end_lease(
                    &old.lease_id,
                    "replaced by a new fetch of the same container",
                );
            }
        }
        let result = write_files(entry.dir.as_mut(), &lease, &ctx.caller);
        let ttl = Duration::from_secs(lease.ttl_secs.max(1));
        entry.bound = Some(Bound {
            container: live.id.clone(),
            caller: ctx.caller.clone(),
            lease_id: lease.lease_id.clone(),
            next_renew: now + ttl * 2 / 3,
            valid_until: now + ttl,
        });
        drop(launches);
        if let Err(e) = result {
            self.end_lease(lease_id, "the container's file grants could not be written");
            return Err(ServiceError::Internal(e));
        }
        tracing::info!(workload, launch = %launch_id, container = %live.id.get(..12).unwrap_or(&live.id), files = lease.items.len(), "file grants written to the container's secrets tmpfs");
        Ok(())
    }

    /// The workload to launch: the one asked for, or the only one the
    /// caller may launch; `[launch]` checked.
    fn launch_policy<'p>(
        &self,
        ctx: &Ctx,
        set: &'p unbaked_policy::PolicySet,
        asked: Option<&str>,
    ) -> Result<&'p Policy, ServiceError> {
        let policy = match asked {
            Some(w) => {
                self.check_name(ctx, w)?;
                set.get(w).ok_or_else(|| {
                    self.deny(
                        ctx,
                        w,
                        Refusal::new(DenyRule::WorkloadUnknown, format!("no policy for workload {w:?}: check the name, or add a policy file with workload = {w:?}")),
                    )
                })?
            }
            None => {
                let mine: Vec<&Policy> = set
                    .iter()
                    .filter(|p| p.may_launch(&ctx.caller).is_ok())
                    .collect();
                match mine.as_slice() {
                    [one] => *one,
                    [] => return Err(self.deny(ctx, "", Refusal::new(DenyRule::LaunchUids, format!("uid {} may launch no workload: give --workload NAME and add the uid to its [launch]", ctx.caller.uid)))),
                    many => return Err(ServiceError::BadRequest(format!(
                        "uid {} may launch several workloads ({}): choose one with --workload NAME",
                        ctx.caller.uid,
                        many.iter().map(|p| p.workload.as_str()).collect::<Vec<_>>().join(", ")
                    ))),
                }
            }
        };
        policy.may_launch(&ctx.caller).map_err(|d| {
            self.deny(
                ctx,
                &policy.workload,
                policy_refusal(d, ctx, &policy.workload),
            )
        })?;
        Ok(policy)
    }

    /// The plan's refusals, as one denial by the first one's rule.
    /// Each launch mounts a tmpfs until its container claims it (or
    /// [`UNCLAIMED_AFTER`] passes): one uid may hold only so many
    /// unclaimed ones, so a loop of launches cannot exhaust the host's
    /// mounts while the others' launches go on.
    fn check_launch_limit(
        &self,
        ctx: &Ctx,
        w: &str,
        containers: &Containers,
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
        Err(self.deny(
            ctx,
            w,
            Refusal::new(
                DenyRule::LaunchLimit,
                format!("uid {uid} already has {pending} launches no container has claimed yet (at most {MAX_UNCLAIMED_LAUNCHES_PER_UID}): start the containers of earlier launches, or wait for them to lapse"),
            ),
        ))
    }

    fn launch_refused(&self, ctx: &Ctx, w: &str, refusals: Vec<launch::Refusal>) -> ServiceError {
        let reason = refusals
            .iter()
            .map(|r| format!("{}: {}", r.rule, r.reason))
            .collect::<Vec<_>>()
            .join("\n");
        let rule = refusals
            .first()
            .map_or(DenyRule::LaunchArgs, |r| DenyRule::of(r.rule));
        self.deny(
            ctx,
            w,
            Refusal::new(
                rule,
                format!("unbaked run refused the arguments for workload {w:?}:\n{reason}"),
            ),
        )
    }

    /// `unbaked run`: check `[launch]`, plan the arguments, and (unless a
    /// dry run) create the network and the secrets tmpfs.
    pub async fn launch(&self, ctx: &Ctx, req: LaunchRequest) -> Result<LaunchPlan, ServiceError> {
        let containers = self.containers().ok_or_else(|| {
            // Only a broker embedded without its Docker side (a library
            // user, the fuzz harness): to the caller the endpoint is absent.
            ServiceError::NotFound(
                "this broker has no Docker side, so no launches: `unbaked run` needs a broker started by `unbaked broker`".into(),
            )
        })?;
        let set = self.policies();
        let policy = self.launch_policy(ctx, &set, req.workload.as_deref())?;
        let w = policy.workload.clone();
        let refuse = |refusals| self.launch_refused(ctx, &w, refusals);
        let parsed = launch::parse(&req.args).map_err(refuse)?;
        let (image_entrypoint, image_cmd) = containers.engine.image_command(&parsed.image).await?;
        let launch_id = crate::lease::new_lease_id()[..16].to_string();
        let has_files = policy.grants_of(&[DeliveryKind::File]).next().is_some();
        let secrets_dir = has_files.then(|| containers.base.join(&launch_id));
        let socket_gid = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&containers.socket).ok().map(|m| m.gid())
        };
        let facts = Facts {
            image_entrypoint,
            image_cmd,
            shim: req.shim.clone(),
            broker_socket: containers.socket.display().to_string(),
            socket_gid,
            secrets_dir: secrets_dir.as_ref().map(|d| d.display().to_string()),
            launch_id: launch_id.clone(),
            containers_dir: containers.base.display().to_string(),
            sockets: vec![containers.engine.socket().to_string()],
            resolved: resolve_sources(&parsed),
        };
        let mut volumes = BTreeMap::new();
        for name in launch::named_volumes(&parsed) {
            if let Some(v) = containers.engine.volume(&name).await? {
                volumes.insert(name, v);
            }
        }
        let image_labels = containers.engine.image_labels(&parsed.image).await?;
        let data_root = containers.engine.data_root().await;
        let host = crate::mount_identity::host_facts(
            &parsed,
            Path::new(containers.engine.socket()),
            data_root.as_deref(),
            &containers.base,
            volumes,
            image_labels,
        );
        let inputs = launch::Inputs {
            policy,
            policies: &set,
            facts: &facts,
            host: &host,
        };
        let plan = launch::plan_with(&parsed, &inputs).map_err(refuse)?;
        if !req.dry_run {
            self.check_launch_limit(ctx, &w, containers)?;
            if let Some(net) = &plan.network {
                containers.engine.ensure_isolated_network(net, &w).await?;
            }
            let dir = match &secrets_dir {
                Some(d) => {
                    containers
                        .secure_base()
                        .map_err(|e| ServiceError::Internal(e.to_string()))?;
                    Some(mount_secrets_dir(containers, d).map_err(ServiceError::Internal)?)
                }
                None => None,
            };
            containers.launches().insert(
                launch_id.clone(),
                LaunchEntry {
                    workload: w.clone(),
                    uid: ctx.caller.uid,
                    created: Instant::now(),
                    dir,
                    bound: None,
                },
            );
        }
        tracing::info!(workload = %w, launch = %launch_id, dry_run = req.dry_run, uid = ctx.caller.uid, "launch planned");
        Ok(LaunchPlan {
            workload: w,
            launch_id,
            args: plan.args,
            warnings: plan.warnings,
            network: plan.network,
            secrets_dir: secrets_dir.map(|d| d.display().to_string()),
        })
    }

    /// A container died or was removed: end its leases (audited), wipe and
    /// unmount its secrets tmpfs.
    pub fn container_gone(&self, id: &str, launch_label: Option<&str>, why: &str) {
        let Some(containers) = self.containers() else {
            return;
        };
        let leases = containers
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .unwrap_or_default();
        for lease in &leases {
            self.end_lease(lease, why);
        }
        let gone: Vec<(String, LaunchEntry)> = {
            let mut launches = containers.launches();
            let ids: Vec<String> = launches
                .iter()
                .filter(|(lid, e)| {
                    e.bound.as_ref().is_some_and(|b| b.container == id)
                        || launch_label == Some(lid.as_str())
                })
                .map(|(lid, _)| lid.clone())
                .collect();
            ids.into_iter()
                .filter_map(|lid| launches.remove(&lid).map(|e| (lid, e)))
                .collect()
        };
        for (lid, entry) in gone {
            if let Some(b) = &entry.bound {
                self.end_lease(&b.lease_id, why);
            }
            release_dir(containers, &lid, entry.dir);
            tracing::info!(launch = %lid, container = %id.get(..12).unwrap_or(id), "container gone: secrets wiped and unmounted");
        }
    }
}

/// Bind sources as the host resolves them, for the docker-socket check.
fn resolve_sources(parsed: &launch::Parsed) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
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
            if let Ok(real) = std::fs::canonicalize(src) {
                out.insert(src.to_string(), real.display().to_string());
            }
        }
    }
    out
}

/// Unclaimed launches (each a mounted tmpfs) one uid may hold at once.
/// Above a start storm's size (100 at once), far below the mounts a loop
/// could make.
pub const MAX_UNCLAIMED_LAUNCHES_PER_UID: usize = 128;

/// A fresh, size-limited tmpfs of our own for one container's files, in
/// the 0700 base directory ([`Containers::secure_base`]), mounted in the
/// host's mount namespace, where the engine bind-mounts it from
/// ([`crate::host_mount`]); written through the descriptor opened there.
fn mount_secrets_dir(containers: &Containers, dir: &Path) -> Result<SecretsDir, String> {
    let path = dir.to_path_buf();
    let fd = crate::host_mount::in_host(containers.engine_socket(), move || {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = path.as_path();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        unbaked_sidecar::sys::mount_tmpfs(dir, TMPFS_BYTES).map_err(|e| {
            let _ = std::fs::remove_dir(dir);
            format!("cannot mount a tmpfs at {} for the container's file grants ({e}): run the broker as root (it needs CAP_SYS_ADMIN to mount)", dir.display())
        })?;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
            .open(dir)
            .map(std::os::fd::OwnedFd::from)
            .map_err(|e| {
                let _ = unbaked_sidecar::sys::unmount(dir);
                let _ = std::fs::remove_dir(dir);
                format!("cannot open the tmpfs mounted at {}: {e}", dir.display())
            })
    })?;
    SecretsDir::adopt_fd(dir, fd).map_err(|e| {
        let _ = unmount_secrets_dir(containers, dir.to_path_buf());
        e.to_string()
    })
}

/// Write the lease's files, owned by the container's user unless the grant
/// names an owner; wipe the files the lease no longer has.
fn write_files(dir: Option<&mut SecretsDir>, lease: &Lease, caller: &Caller) -> Result<(), String> {
    let Some(dir) = dir else { return Ok(()) };
    let mut keep = Vec::new();
    for item in &lease.items {
        if let Delivery::File {
            path,
            mode,
            uid,
            gid,
        } = &item.delivery
        {
            dir.write(
                path,
                item.value.expose_secret(),
                *mode,
                Some(uid.unwrap_or(caller.uid)),
                Some(gid.unwrap_or(caller.gid)),
            )
            .map_err(|e| e.to_string())?;
            keep.push(path.clone());
        }
    }
    let stale: Vec<String> = dir
        .files()
        .filter(|f| !keep.iter().any(|k| k == f))
        .map(str::to_string)
        .collect();
    for f in stale {
        dir.wipe(&f).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn wipe_files(dir: Option<&mut SecretsDir>) {
    if let Some(dir) = dir {
        let files: Vec<String> = dir.files().map(str::to_string).collect();
        for f in files {
            if let Err(e) = dir.wipe(&f) {
                tracing::error!(error = %e, "could not wipe a withdrawn file grant");
            }
        }
    }
}

/// Renew the launches' file leases, give back unclaimed tmpfs mounts, and
/// now and then check that every followed container still runs.
pub async fn renewals(broker: Arc<Broker>) {
    let Some(containers) = broker.containers().cloned() else {
        return;
    };
    let mut tick = tokio::time::interval(TICK);
    let mut last_reconcile = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        // Unclaimed launches: nothing was ever written; give the mount back.
        let unclaimed: Vec<(String, LaunchEntry)> = {
            let mut l = containers.launches();
            let ids: Vec<String> = l
                .iter()
                .filter(|(_, e)| {
                    e.bound.is_none() && now.duration_since(e.created) > UNCLAIMED_AFTER
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| l.remove(&id).map(|e| (id, e)))
                .collect()
        };
        for (id, e) in unclaimed {
            release_dir(&containers, &id, e.dir);
        }
        let due: Vec<(String, String, Caller, String)> = containers
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
            .collect();
        for (lid, container, caller, lease_id) in due {
            renew_one(&broker, &containers, &lid, &container, caller, &lease_id).await;
        }
        if now.duration_since(last_reconcile) >= RECONCILE_EVERY {
            last_reconcile = now;
            reconcile(&broker, &containers).await;
        }
    }
}

async fn renew_one(
    broker: &Broker,
    containers: &Containers,
    launch_id: &str,
    container: &str,
    mut caller: Caller,
    lease_id: &str,
) {
    let attestation = match containers.engine.inspect(container).await {
        Ok(Some(c)) if c.running => Attestation::Container(Arc::new(c)),
        Ok(_) => {
            broker.container_gone(container, Some(launch_id), "the container stopped");
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
    let result = broker.renew(&ctx, lease_id).await;
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
            let ttl = Duration::from_secs(lease.ttl_secs.max(1));
            bound.next_renew = now + ttl * 2 / 3;
            bound.valid_until = now + ttl;
            let caller = bound.caller.clone();
            if let Err(e) = write_files(entry.dir.as_mut(), &lease, &caller) {
                tracing::error!(launch = launch_id, error = %e, "could not rewrite a container's file grants");
            }
        }
        Err(e) if matches!(e.code(), ErrorCode::Denied | ErrorCode::NotFound) => {
            // Denied now (policy, isolation) or the lease is gone: the files go.
            tracing::warn!(launch = launch_id, reason = %e, "renewal refused: wiping the container's file grants");
            wipe_files(entry.dir.as_mut());
            bound.next_renew = now + Duration::from_secs(365 * 24 * 3600);
        }
        Err(e) => {
            tracing::warn!(launch = launch_id, reason = %e, "renewal failed: retrying");
            bound.next_renew = now + RETRY_AFTER;
            if now >= bound.valid_until {
                wipe_files(entry.dir.as_mut());
            }
        }
    }
}

/// End what belongs to containers that are no longer running (an event
/// may have been missed while the engine was away).
pub(crate) async fn reconcile(broker: &Broker, containers: &Containers) {
    for id in containers.followed() {
        match containers.engine.inspect(&id).await {
            Ok(Some(c)) if c.running => {}
            Ok(_) => broker.container_gone(&id, None, "the container is no longer running"),
            Err(_) => return, // the engine is away: try again later
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    async fn containers(dir: &Path) -> Containers {
        Containers::new(Engine::from_env().await, &dir.join("broker.sock"))
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[tokio::test]
    async fn the_launches_directory_is_private_to_the_broker() {
        let dir = tempfile::tempdir().unwrap();
        let c = containers(dir.path()).await;
        c.secure_base().unwrap();
        assert_eq!(mode(c.base()), 0o700);
        // An existing one left 0711 by an older broker is narrowed.
        std::fs::set_permissions(c.base(), std::fs::Permissions::from_mode(0o711)).unwrap();
        c.secure_base().unwrap();
        assert_eq!(mode(c.base()), 0o700);
        // A symlink is refused, not followed.
        std::fs::remove_dir(c.base()).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, c.base()).unwrap();
        assert!(matches!(
            c.secure_base(),
            Err(BaseDirError::NotADirectory { .. })
        ));
        std::fs::remove_file(c.base()).unwrap();
        // One owned by another user is refused (the tests run as root).
        if nix::unistd::geteuid().is_root() {
            std::fs::create_dir(c.base()).unwrap();
            std::os::unix::fs::chown(c.base(), Some(65534), None).unwrap();
            assert!(matches!(
                c.secure_base(),
                Err(BaseDirError::Owner { owner: 65534, .. })
            ));
        }
    }
}
