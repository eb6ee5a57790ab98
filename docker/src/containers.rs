//! The Docker side's state: the engine, the `unbaked run` launches with
//! their per-container host tmpfs, which leases each container holds, and
//! the end of everything a container held when it dies.
//!
//! How a secret reaches an `unbaked run` container:
//! 1. [`Broker::launch`] checks `[launch]`; [`crate::prepare`] plans the
//!    arguments ([`crate::launch`]), creates the workload's ICC-disabled network and
//!    mounts an empty tmpfs at `<socket dir>/containers/<launch id>`.
//! 2. `docker run` starts the container; its entrypoint is the exec shim,
//!    which fetches the env and fd grants over the bind-mounted socket.
//! 3. The broker attests the shim (pid → cgroup → container), checks the
//!    container's live configuration ([`crate::isolation`]) and `[match]`,
//!    and, because the container carries the launch's label and mounts its
//!    tmpfs at `/run/secrets`, first writes the file grants there (a lease
//!    of its own, audited like any fetch). Only then does the shim exec the
//!    image's command: the files are in place before it starts.
//! 4. [`crate::renewals`] renews that lease (re-inspecting the container, so a
//!    network connected later is caught) and rewrites rotated files; a file
//!    template whose content changed gets its `on_change` carried out by
//!    [`crate::actions`]; [`crate::events`] ends it all when the container
//!    dies (unless the broker is restarting it for an action).
//! 5. A broker with a store directory keeps the launches across its own
//!    restart ([`crate::launch_keep`]); one without wipes them at stop.
//!
//! **Invariant:** a file grant is written only after the same checks as a
//! fetch by the container itself (attestation, isolation, `[match]`, audit).

use crate::engine::Engine;
use crate::launch_keep::{Clock, InitId, TmpfsId};
use crate::tmpfs::release_dir;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use unbaked_api::wire::Lease;
use unbaked_broker::platform::Core;
use unbaked_policy::Caller;
use unbaked_secretsdir::change::Watch;
use unbaked_secretsdir::{apply_mapped, Applied, DirError, SecretsDir};

/// The kernel's default overflow uid and gid (`/proc/sys/kernel/overflowuid`).
const OVERFLOW_ID: u32 = 65534;
/// Lease ids followed per container: a few processes' worth of the
/// broker's own per-holder cap. Past it the oldest is dropped and ended
/// ([`Containers::end_dropped`]), as the lease table ends a holder's
/// oldest: a container fetching in a loop keeps this list (and the kept
/// record) bounded.
pub(crate) const MAX_FOLLOWED_PER_CONTAINER: usize =
    4 * unbaked_broker::lease::MAX_LEASES_PER_HOLDER;
/// Dropped lease ids waiting to be ended (drained every renewal tick);
/// past this they end with their ttl or their holder's cap.
const MAX_DROPPED: usize = 4096;

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
    pub(crate) base: PathBuf,
    /// The broker socket, bind-mounted into launched containers.
    pub(crate) socket: PathBuf,
    launches: Mutex<HashMap<String, LaunchEntry>>,
    /// Container id → lease ids (oldest first, at most
    /// [`MAX_FOLLOWED_PER_CONTAINER`]), to end them when it dies.
    leases: Mutex<HashMap<String, VecDeque<String>>>,
    /// Lease ids dropped from `leases` by its cap, to end.
    pub(crate) dropped: Mutex<Vec<String>>,
    /// Launch id → why its tmpfs is left alone: kept launches whose tmpfs
    /// could not be verified, never swept ([`crate::launch_keep`]).
    pub(crate) quarantined: Mutex<BTreeMap<String, String>>,
    /// The kept record was trimmed to its bounds, and the log said so.
    pub(crate) trimmed_said: AtomicBool,
    /// Wakes [`crate::actions::run`] when a change was noted.
    pub(crate) wake_actions: tokio::sync::Notify,
    /// The launches are kept across a restart ([`crate::launch_keep`]):
    /// a stop leaves their tmpfs mounts for the next start.
    pub(crate) keeping: AtomicBool,
    /// Instants as wall-clock times in the kept record.
    pub(crate) clock: Clock,
    /// What no container may mount, for the live isolation check.
    pub(crate) protected: crate::mount_identity::ProtectedCache,
}

#[derive(Debug)]
pub(crate) struct LaunchEntry {
    pub(crate) workload: String,
    /// Who asked for it, for the per-uid bound on unclaimed launches.
    pub(crate) uid: u32,
    pub(crate) created: Instant,
    /// The tmpfs, when the workload has file grants.
    pub(crate) dir: Option<SecretsDir>,
    /// Its root's device and inode, as mounted: a restarted broker
    /// reopens only this very tmpfs.
    pub(crate) dir_id: Option<TmpfsId>,
    /// Taken back from the kept record: its container is verified at its
    /// first renewal ([`Containers::verify_restored`]).
    pub(crate) restored: bool,
    /// What is in it.
    pub(crate) applied: Applied,
    pub(crate) bound: Option<Bound>,
    /// The claiming container's `uid_map` and `gid_map` (read from its
    /// process when it claimed the launch): a grant's own owner names a
    /// user inside the container, which is another id on the host when the
    /// engine remaps users.
    pub(crate) id_maps: Option<(String, String)>,
    /// The file templates' `on_change`: content hashes, pending actions.
    pub(crate) watch: Watch,
    /// Until then a death of the container is the broker's own restart
    /// (`on_change = "restart"`): the launch and its files stay.
    pub(crate) restarting_until: Option<Instant>,
}

impl LaunchEntry {
    pub(crate) fn new(workload: String, uid: u32, dir: Option<SecretsDir>) -> LaunchEntry {
        LaunchEntry {
            workload,
            uid,
            created: Instant::now(),
            dir,
            dir_id: None,
            restored: false,
            applied: Applied::new(),
            bound: None,
            id_maps: None,
            watch: Watch::new(),
            restarting_until: None,
        }
    }

    /// Bring the tmpfs in line with the file lease: files owned by the
    /// container's user (`owner`) unless the grant names an owner; those
    /// the lease no longer has are wiped.
    pub(crate) fn write(
        &mut self,
        lease: &Lease,
        now: Instant,
        owner: (u32, u32),
    ) -> Result<(), DirError> {
        let Some(dir) = self.dir.as_mut() else {
            return Ok(());
        };
        let maps = self.id_maps.as_ref();
        let map = |uid: Option<u32>, gid: Option<u32>| match maps {
            None => (uid, gid),
            // An id the container does not map is what the kernel shows
            // for it, the overflow id (nobody), never the raw number, which
            // would name another host user (0: root).
            Some((u, g)) => (
                uid.map(|id| crate::engine::map_id(u, id).unwrap_or(OVERFLOW_ID)),
                gid.map(|id| crate::engine::map_id(g, id).unwrap_or(OVERFLOW_ID)),
            ),
        };
        let (applied, _) = apply_mapped(dir, &self.applied, lease, now, Some(owner), &map)?;
        self.applied = applied;
        Ok(())
    }

    /// Wipe every file (a renewal was refused, or the files outlived it).
    pub(crate) fn wipe(&mut self) {
        let Some(dir) = self.dir.as_mut() else {
            return;
        };
        for d in std::mem::take(&mut self.applied).into_values() {
            if let Err(e) = dir.wipe(&d.path) {
                tracing::error!(error = %e, "could not wipe a withdrawn file grant");
            }
        }
    }
}

/// The container that claimed a launch, and the lease of its files.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) container: String,
    pub(crate) caller: Caller,
    pub(crate) lease_id: String,
    pub(crate) next_renew: Instant,
    /// After this, without a successful renewal, the files go.
    pub(crate) valid_until: Instant,
    /// The file lease's ttl at its last grant or renewal: a restarted
    /// broker never keeps the files longer than this without a renewal.
    pub(crate) ttl: Duration,
    /// The container's first process when it claimed the launch: a
    /// restarted broker serves only that one again.
    pub(crate) init: Option<InitId>,
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
            dropped: Mutex::new(Vec::new()),
            quarantined: Mutex::new(BTreeMap::new()),
            trimmed_said: AtomicBool::new(false),
            wake_actions: tokio::sync::Notify::new(),
            keeping: AtomicBool::new(false),
            clock: Clock::now(),
            protected: Default::default(),
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
    /// directory (it crashed, or was killed, and kept no record of it):
    /// nobody renews those files, and their containers may still read
    /// them, so they are zeroed (only on a tmpfs) before the mount goes.
    /// `kept`: launch ids taken back or left alone. Returns the launch
    /// ids, for the audit.
    pub fn sweep_leftovers(&self, kept: &BTreeSet<String>) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.base) else {
            return Vec::new();
        };
        let mut swept = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if kept.contains(&*e.file_name().to_string_lossy()) {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if unbaked_secretsdir::sys::is_tmpfs(&path).unwrap_or(false) {
                    crate::tmpfs::zero_tree(&path, 2);
                }
                let removed = crate::host_mount::in_host(self.engine_socket(), move || {
                    let _ = unbaked_secretsdir::sys::unmount(&path);
                    crate::tmpfs::remove_empty_dir(&path)
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
    pub(crate) fn engine_socket(&self) -> &Path {
        Path::new(self.engine.socket())
    }

    pub(crate) fn launches(&self) -> std::sync::MutexGuard<'_, HashMap<String, LaunchEntry>> {
        self.launches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Container id → the leases it holds, for the kept record.
    pub(crate) fn tracked(&self) -> BTreeMap<String, Vec<String>> {
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(c, l)| (c.clone(), l.iter().cloned().collect()))
            .collect()
    }

    /// Follow again the containers a previous run followed.
    pub(crate) fn follow_again(&self, kept: BTreeMap<String, Vec<String>>) {
        for (c, l) in kept {
            for id in l {
                self.track(&c, &id);
            }
        }
    }

    /// Follow `lease_id` as held by `container` (once); past
    /// [`MAX_FOLLOWED_PER_CONTAINER`] its oldest is dropped, to be ended.
    pub(crate) fn track(&self, container: &str, lease_id: &str) {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let ids = leases.entry(container.to_string()).or_default();
        if ids.iter().any(|l| l == lease_id) {
            return;
        }
        ids.push_back(lease_id.to_string());
        let over = ids.len().saturating_sub(MAX_FOLLOWED_PER_CONTAINER);
        let gone: Vec<String> = ids.drain(..over).collect();
        drop(leases);
        if !gone.is_empty() {
            let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
            let room = MAX_DROPPED.saturating_sub(dropped.len());
            dropped.extend(gone.into_iter().take(room));
        }
    }

    /// End the leases dropped by the per-container cap (most were already
    /// ended by the holder's own cap: those are no-ops).
    pub(crate) fn end_dropped(&self, core: &dyn Core) {
        let dropped = std::mem::take(&mut *self.dropped.lock().unwrap_or_else(|e| e.into_inner()));
        for id in dropped {
            core.end_lease(&id, &format!("its container holds more leases than the broker follows per container ({MAX_FOLLOWED_PER_CONTAINER}): its oldest ended"));
        }
    }

    /// The launches still waiting for or serving a container.
    pub fn launch_count(&self) -> usize {
        self.launches().len()
    }

    /// Containers the broker follows (holding leases or a launch).
    pub(crate) fn followed(&self) -> Vec<String> {
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

    /// The broker is about to restart `launch`'s container: until `until`,
    /// its death keeps the launch (see [`Containers::container_gone`]).
    pub(crate) fn hold_through_restart(&self, launch: &str, until: Instant) {
        if let Some(e) = self.launches().get_mut(launch) {
            e.restarting_until = Some(until);
        }
    }

    /// A container died or was removed: end its leases (audited), wipe and
    /// unmount its secrets tmpfs. A container the broker is restarting
    /// (`on_change = "restart"`) keeps its launch, its file lease and its
    /// files: only the leases of the process that died end.
    pub fn container_gone(&self, core: &dyn Core, id: &str, launch_label: Option<&str>, why: &str) {
        let leases: Vec<String> = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .unwrap_or_default()
            .into();
        for lease in &leases {
            core.end_lease(lease, why);
        }
        let now = Instant::now();
        let gone: Vec<(String, LaunchEntry)> = {
            let mut launches = self.launches();
            let ids: Vec<String> = launches
                .iter()
                .filter(|(lid, e)| {
                    e.bound.as_ref().is_some_and(|b| b.container == id)
                        || launch_label == Some(lid.as_str())
                })
                .filter(|(lid, e)| {
                    let held = e.restarting_until.is_some_and(|t| now < t);
                    if held {
                        tracing::info!(launch = %lid, container = %id.get(..12).unwrap_or(id), "container stopped for its on_change restart: its secrets stay");
                    }
                    !held
                })
                .map(|(lid, _)| lid.clone())
                .collect();
            ids.into_iter()
                .filter_map(|lid| launches.remove(&lid).map(|e| (lid, e)))
                .collect()
        };
        for (lid, mut entry) in gone {
            let reason = format!("launch {lid}: {why}");
            let ended = entry
                .bound
                .as_ref()
                .is_some_and(|b| core.end_lease(&b.lease_id, &reason));
            // Every file it names (a restored launch's are not yet the
            // writer's own), then the rest.
            entry.wipe();
            release_dir(self.engine_socket(), &lid, entry.dir);
            if !ended && entry.dir_id.is_some() {
                // No lease record says so: the tmpfs's end is audited.
                let lease = entry.bound.as_ref().map(|b| b.lease_id.clone());
                crate::launch_keep::audit_end(
                    core,
                    &entry.workload,
                    lease,
                    Some(id),
                    format!("{reason}; its secrets tmpfs was zeroed, unmounted and removed"),
                );
            }
            tracing::info!(launch = %lid, container = %id.get(..12).unwrap_or(id), "container gone: secrets wiped and unmounted");
        }
    }

    /// Broker shutdown: wipe and unmount every launch's tmpfs, unless the
    /// launches are kept for the next start (then they stay as they are,
    /// and the record saved after this names them).
    pub fn wipe_all(&self) {
        if self.keeping.load(Ordering::Relaxed) {
            let n = self.launch_count();
            if n > 0 {
                tracing::info!(
                    launches = n,
                    "launches kept for the next start: their secrets tmpfs mounts stay until then"
                );
            }
            return;
        }
        let all: Vec<(String, LaunchEntry)> = self.launches().drain().collect();
        for (id, entry) in all {
            release_dir(self.engine_socket(), &id, entry.dir);
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
