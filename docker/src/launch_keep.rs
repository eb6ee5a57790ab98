//! `unbaked run` launches across a broker restart.
//!
//! With a store directory and key, the launches are part of the sealed
//! record `lease_keep` keeps (`Platform::keep`, saved within a second of a
//! change and at a clean stop): ids, workload, the tmpfs root's device,
//! inode and birth time, the claiming container with its init's identity (pid, start time,
//! pid/mnt/net namespaces), the file lease id, the files' names. Never a
//! value: the files' content stays on the tmpfs only.
//!
//! A restarted broker takes each one back ([`Containers::take_back`]):
//! - its tmpfs is opened again in the host's mount namespace and must be
//!   the very one it mounted (device, inode and birth time, tmpfs magic,
//!   owner and mode);
//!   one that is not is never written, zeroed or unmounted: it is left
//!   alone, its lease ends and both are said in the log and the audit;
//! - a claimed launch renews at once; the renewal first checks that the
//!   engine's container is the same one (same id, same init by pid, start
//!   time and namespaces: [`InitId`]), and one that is gone or changed is
//!   ended like a dead container (lease revoked, tmpfs zeroed, unmounted,
//!   removed; audited);
//! - an unclaimed launch keeps the rest of its time to be claimed; one whose
//!   tmpfs holds files was claimed after the last save, so nobody knows
//!   its lease: it is zeroed and released at once.
//!
//! Directories of launches the record does not name are what a broker
//! that kept nothing left: zeroed and removed as before.
//!
//! **Invariant:** nothing is written through a tmpfs the kernel does not
//! confirm is the one the broker mounted; the record holds no value.

use crate::containers::{Bound, Containers, LaunchEntry};
use crate::engine::live;
use crate::isolation::LiveContainer;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use unbaked_api::wire::Delivery;
use unbaked_broker::attest::container::Evidence;
use unbaked_broker::attest::kernel::{self, CONTAINER_NAMESPACES};
use unbaked_broker::audit::{ContainerRef, Event, Record};
use unbaked_broker::platform::Core;
use unbaked_policy::Caller;
use unbaked_secretsdir::apply::Delivered;

/// The record's format, for upgrades.
const FORMAT: u32 = 1;
/// Launches kept in the record (each at most a few KiB: names only);
/// past it the newest are not kept, and their tmpfs is zeroed at the
/// next start like any a broker left without a record.
const MAX_KEPT_LAUNCHES: usize = 1024;
/// Followed lease ids kept in the record, all containers together;
/// past it a container's leases end with their ttl after a restart.
const MAX_KEPT_FOLLOWED: usize = 32 * 1024;
/// Launches left alone remembered (each a launch id and a sentence).
const MAX_QUARANTINED: usize = 256;
/// A restored file is written again at the first renewal: no version is
/// this high, so the plan rewrites it (and the writer tracks it again).
const REWRITE: u64 = u64::MAX;

/// A tmpfs root as the kernel names it: device and inode, and its birth
/// time (statx), since a tmpfs mounted after another was unmounted may get
/// the same anonymous device and root inode (per-superblock inode numbers)
/// but not the same nanosecond of birth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TmpfsId {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    /// Seconds and nanoseconds since the epoch; `None`: the kernel gives
    /// no birth time, and such a tmpfs is never taken back.
    pub(crate) born: Option<(u64, u32)>,
}

impl TmpfsId {
    pub(crate) fn of(fd: BorrowedFd) -> Result<TmpfsId, String> {
        let file = std::fs::File::from(
            fd.try_clone_to_owned()
                .map_err(|e| format!("cannot duplicate a descriptor: {e}"))?,
        );
        let m = file
            .metadata()
            .map_err(|e| format!("cannot stat the tmpfs: {e}"))?;
        let born = m
            .created()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| (d.as_secs(), d.subsec_nanos()));
        Ok(TmpfsId {
            dev: m.dev(),
            ino: m.ino(),
            born,
        })
    }

    /// Whether `found` (the directory at the path now) is this very tmpfs.
    pub(crate) fn check(&self, found: &TmpfsId) -> Result<(), String> {
        if self.born.is_none() {
            return Err("the kernel gave no birth time for it when it was mounted, so it cannot be told from a replacement".into());
        }
        if found != self {
            return Err(format!(
                "it is not the tmpfs this broker mounted (device {} inode {} born {:?} now; {} {} {:?} when mounted): the path was replaced",
                found.dev, found.ino, found.born, self.dev, self.ino, self.born
            ));
        }
        Ok(())
    }
}

/// A container's first process as the kernel names it: a pid alone could
/// be reused, with its start time and namespaces it cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InitId {
    pid: i32,
    /// Field 22 of `/proc/<pid>/stat`, in clock ticks since boot.
    start: u64,
    /// [`CONTAINER_NAMESPACES`]' (device, inode), in that order.
    ns: Vec<(u64, u64)>,
}

impl InitId {
    pub(crate) fn of(pid: i32) -> Result<InitId, String> {
        let proc = Path::new("/proc");
        let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat"))
            .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
        // `comm` may hold spaces and parentheses: count after the last ')'.
        let start = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_ascii_whitespace().nth(19))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat has no start time"))?;
        let mut ns = Vec::new();
        for kind in CONTAINER_NAMESPACES {
            let id = kernel::namespace(proc, pid, kind).map_err(|e| e.to_string())?;
            ns.push((id.dev, id.ino));
        }
        Ok(InitId { pid, start, ns })
    }

    /// The init of the container `evidence` attested, now; `None` (said
    /// in the log) when it cannot be read: a broker restart then ends the
    /// launch, since its container cannot be verified.
    pub(crate) fn of_evidence(evidence: &Arc<dyn Evidence>) -> Option<InitId> {
        let c = live(&**evidence)?;
        InitId::of_live(c)
            .inspect_err(|why| tracing::warn!(container = %c.id.get(..12).unwrap_or(&c.id), reason = %why, "launch claimed without an identity of its container's first process: it will not survive a broker restart"))
            .ok()
    }

    /// The init of `c`, inspected now.
    pub(crate) fn of_live(c: &LiveContainer) -> Result<InitId, String> {
        let pid = c
            .pid
            .and_then(|p| i32::try_from(p).ok())
            .ok_or("the engine gives no pid for its first process")?;
        InitId::of(pid)
    }

    /// Whether `c`, inspected now, still runs this very init.
    pub(crate) fn check(&self, c: &LiveContainer) -> Result<(), String> {
        let pid = c.pid.and_then(|p| i32::try_from(p).ok());
        if pid != Some(self.pid) {
            return Err(format!(
                "its first process is pid {pid:?} now, was {} (restarted)",
                self.pid
            ));
        }
        match InitId::of(self.pid) {
            Ok(now) if now == *self => Ok(()),
            Ok(_) => Err(format!(
                "pid {} is another process now (start time or namespaces differ)",
                self.pid
            )),
            Err(e) => Err(e),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct KeptRecord {
    format: u32,
    launches: Vec<KeptLaunch>,
    /// Container id → the lease ids it holds (ended when it dies).
    followed: BTreeMap<String, Vec<String>>,
    /// Launch id → why its tmpfs is left alone: never swept, until a start
    /// finds its directory gone.
    #[serde(default)]
    quarantined: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct KeptLaunch {
    id: String,
    workload: String,
    uid: u32,
    created_ms: u64,
    dir: Option<KeptDir>,
    bound: Option<KeptBound>,
    id_maps: Option<(String, String)>,
    /// Item id → its file (path, mode, owner): names only.
    files: BTreeMap<String, Delivery>,
}

#[derive(Serialize, Deserialize)]
struct KeptDir {
    path: PathBuf,
    root: TmpfsId,
}

#[derive(Serialize, Deserialize)]
struct KeptBound {
    container: String,
    uid: u32,
    gid: u32,
    pid: Option<i32>,
    lease: String,
    valid_until_ms: u64,
    /// The lease's ttl: a restored deadline is never further than this.
    /// Absent (a record of an older build): one hour.
    #[serde(default)]
    ttl_ms: Option<u64>,
    init: Option<InitId>,
}

/// Instants as wall-clock milliseconds, through one fixed pair of
/// readings, so the same state always gives the same record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    at: Instant,
    wall: SystemTime,
}

impl Clock {
    pub(crate) fn now() -> Clock {
        Clock {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        let wall = if t >= self.at {
            self.wall + (t - self.at)
        } else {
            self.wall.checked_sub(self.at - t).unwrap_or(UNIX_EPOCH)
        };
        wall.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// `ms` as an instant of this run (now, at the latest `now + cap`).
    fn instant(ms: u64, cap: Duration) -> Instant {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let t = UNIX_EPOCH + Duration::from_millis(ms);
        match t.duration_since(wall) {
            Ok(ahead) => now + ahead.min(cap),
            Err(behind) => now.checked_sub(behind.duration()).unwrap_or(now),
        }
    }
}

impl Containers {
    /// The launches and followed containers as the record keeps them,
    /// bounded ([`MAX_KEPT_LAUNCHES`], [`MAX_KEPT_FOLLOWED`],
    /// [`MAX_QUARANTINED`]): what is over is said once in the log.
    pub(crate) fn keep_record(&self) -> Vec<u8> {
        let clock = self.clock;
        let mut launches: Vec<KeptLaunch> = self
            .launches()
            .iter()
            .map(|(id, e)| kept_launch(&clock, id, e))
            .collect();
        // The oldest are kept: a burst of new launches cannot push them out.
        launches.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        let over_launches = launches.len().saturating_sub(MAX_KEPT_LAUNCHES);
        launches.truncate(MAX_KEPT_LAUNCHES);
        let mut budget = MAX_KEPT_FOLLOWED;
        let mut over_followed = 0;
        let mut followed = self.tracked();
        for ids in followed.values_mut() {
            let keep = ids.len().min(budget);
            // The newest: the oldest are the likeliest to have ended.
            over_followed += ids.len() - keep;
            ids.drain(..ids.len() - keep);
            budget -= keep;
        }
        followed.retain(|_, ids| !ids.is_empty());
        let over = over_launches + over_followed;
        if over > 0 && !self.trimmed_said.swap(true, Ordering::Relaxed) {
            tracing::error!(over_launches, over_followed, "more launches or followed leases than the kept record holds: those over are not kept across a restart (their tmpfs is zeroed, their leases end with their ttl)");
        } else if over == 0 {
            self.trimmed_said.store(false, Ordering::Relaxed);
        }
        let record = KeptRecord {
            format: FORMAT,
            launches,
            followed,
            quarantined: self.quarantined_now(),
        };
        // Plain data: serializing cannot fail.
        serde_json::to_vec(&record).unwrap_or_default()
    }

    fn quarantined_now(&self) -> BTreeMap<String, String> {
        self.quarantined
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Remember that launch `id`'s tmpfs is left alone (`why`): it is
    /// never swept, and [`Containers::quarantine_detail`] shows it.
    fn quarantine(&self, id: &str, why: &str) {
        if !launch_id(id) || self.base().join(id).symlink_metadata().is_err() {
            return; // nothing of that name in the launches' directory
        }
        let mut q = self.quarantined.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= MAX_QUARANTINED && !q.contains_key(id) {
            tracing::error!(launch = id, "too many launches left alone are remembered ({MAX_QUARANTINED}): this one is swept at the start after next unless removed by hand first");
            return;
        }
        q.insert(id.to_string(), why.to_string());
    }

    /// The launches left alone, for the operator (`/readyz` detail).
    pub(crate) fn quarantine_detail(&self) -> Vec<String> {
        self.quarantined_now()
            .into_iter()
            .map(|(id, why)| format!("launch {id} left alone (its tmpfs at {} is never written, zeroed or removed by the broker: check it and remove it by hand): {why}", self.base().join(&id).display()))
            .collect()
    }

    /// At start: take back what the previous run kept (`kept`: `None`
    /// when this broker keeps nothing), then zero and remove what else is
    /// under the launches' directory. Returns the launch ids swept, for
    /// the audit.
    pub fn take_back(&self, core: &dyn Core) -> Vec<String> {
        let mut accounted = BTreeSet::new();
        match core.kept_platform() {
            None => {
                tracing::info!(base = %self.base().display(), "no store directory and key: `unbaked run` launches are not kept across a restart (their secrets tmpfs is wiped at stop, or zeroed at the next start)")
            }
            Some(bytes) => {
                self.keeping
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                if !bytes.is_empty() {
                    accounted = self.restore(core, &bytes);
                }
            }
        }
        self.sweep_leftovers(&accounted)
    }

    /// Take back the record's launches; the launch ids whose directory
    /// is accounted for (taken back, or left alone as not ours).
    fn restore(&self, core: &dyn Core, bytes: &[u8]) -> BTreeSet<String> {
        let record: KeptRecord = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "the kept launches do not read: their tmpfs mounts are zeroed and removed as leftovers");
                return BTreeSet::new();
            }
        };
        if record.format != FORMAT {
            tracing::error!(format = record.format, "the kept launches are of an unknown format: their tmpfs mounts are zeroed and removed as leftovers");
            return BTreeSet::new();
        }
        self.follow_again(record.followed);
        let mut accounted = BTreeSet::new();
        for (id, why) in record.quarantined {
            // Still there: still left alone. Gone (removed by hand): forgotten.
            if self.base().join(&id).symlink_metadata().is_ok() {
                tracing::warn!(launch = %id, reason = %why, "a kept launch's tmpfs is still left alone: check it and remove it by hand");
                self.quarantine(&id, &why);
                accounted.insert(id);
            }
        }
        let (mut resumed, mut ended) = (0, 0);
        for k in record.launches {
            accounted.insert(k.id.clone());
            match self.restore_one(core, k) {
                true => resumed += 1,
                false => ended += 1,
            }
        }
        tracing::info!(
            resumed,
            ended,
            "kept launches taken back (claimed ones are checked against the engine at once)"
        );
        accounted
    }

    /// One kept launch: back into the table (true) or ended (false).
    fn restore_one(&self, core: &dyn Core, k: KeptLaunch) -> bool {
        let (dir, root) = match &k.dir {
            None => (None, None),
            Some(d) if !launch_id(&k.id) || d.path != self.base().join(&k.id) => {
                let why = format!("its secrets tmpfs is recorded at {}, not in the launches' directory {}: left alone", d.path.display(), self.base().display());
                self.end_kept(core, &k, &why);
                self.quarantine(&k.id, &why);
                return false;
            }
            Some(d) => {
                match crate::tmpfs::reopen_secrets_dir(self.engine_socket(), &d.path, d.root) {
                    Ok((dir, root)) => (Some(dir), Some(root)),
                    Err(why) => {
                        let why = format!("its secrets tmpfs failed verification, so it is left alone and never written: {why}");
                        self.end_kept(core, &k, &why);
                        self.quarantine(&k.id, &why);
                        return false;
                    }
                }
            }
        };
        if k.bound.is_none() && root.as_ref().is_some_and(|r| holds_files(r.as_fd())) {
            if let Some(r) = &root {
                crate::tmpfs::zero_tree(&unbaked_secretsdir::sys::fd_path(r.as_fd()), 2);
            }
            crate::tmpfs::release_dir(self.engine_socket(), &k.id, dir);
            self.end_kept(core, &k, "it was claimed after the last save, so its lease is unknown: its files were zeroed and its tmpfs unmounted and removed");
            return false;
        }
        let entry = entry_from(dir, &k);
        if entry.bound.is_some() {
            tracing::info!(launch = %k.id, workload = %k.workload, "kept launch taken back: renewing once its container is verified");
        }
        self.launches().insert(k.id, entry);
        true
    }

    /// A kept launch that does not come back: its file lease ends, and the
    /// end is audited (`revoke`, the lease's own record if it was still
    /// live) and logged with `why`.
    fn end_kept(&self, core: &dyn Core, k: &KeptLaunch, why: &str) {
        let reason = format!("launch {}: {why}", k.id);
        tracing::error!(launch = %k.id, workload = %k.workload, "kept launch not taken back: {why}");
        let lease = k.bound.as_ref().map(|b| b.lease.clone());
        if lease.as_ref().is_some_and(|l| core.end_lease(l, &reason)) {
            return; // audited as the lease's end
        }
        audit_end(
            core,
            &k.workload,
            lease,
            k.bound.as_ref().map(|b| b.container.as_str()),
            reason,
        );
    }

    /// Whether a restored launch's container, inspected now, is the one
    /// that claimed it before the restart; checked once, at its first
    /// renewal. `Err` says what changed.
    pub(crate) fn verify_restored(&self, launch: &str, c: &LiveContainer) -> Result<(), String> {
        let mut launches = self.launches();
        let Some(e) = launches.get_mut(launch).filter(|e| e.restored) else {
            return Ok(());
        };
        let checked = match e.bound.as_ref() {
            None => Ok(()),
            Some(b) if b.container != c.id => {
                Err("the engine answered for another container".to_string())
            }
            Some(b) => b.init.as_ref().map_or_else(
                || Err("no identity of its first process was kept".to_string()),
                |init| init.check(c),
            ),
        };
        match checked {
            Ok(()) => {
                e.restored = false;
                tracing::info!(launch, container = %c.id.get(..12).unwrap_or(&c.id), "kept launch resumed: same container, same first process");
                Ok(())
            }
            Err(why) => Err(format!(
                "launch {launch}: the container changed while the broker was down ({why})"
            )),
        }
    }
}

/// One launch as the record keeps it: names, never a value.
fn kept_launch(clock: &Clock, id: &str, e: &LaunchEntry) -> KeptLaunch {
    KeptLaunch {
        id: id.to_string(),
        workload: e.workload.clone(),
        uid: e.uid,
        created_ms: clock.ms(e.created),
        dir: e.dir.as_ref().zip(e.dir_id).map(|(d, root)| KeptDir {
            path: d.root().to_path_buf(),
            root,
        }),
        bound: e.bound.as_ref().map(|b| KeptBound {
            container: b.container.clone(),
            uid: b.caller.uid,
            gid: b.caller.gid,
            pid: b.caller.pid,
            lease: b.lease_id.clone(),
            valid_until_ms: clock.ms(b.valid_until),
            ttl_ms: Some(u64::try_from(b.ttl.as_millis()).unwrap_or(u64::MAX)),
            init: b.init.clone(),
        }),
        id_maps: e.id_maps.clone(),
        files: e
            .applied
            .iter()
            .map(|(item, d)| (item.clone(), d.delivery.clone()))
            .collect(),
    }
}

/// A kept launch as an entry of this run: claimed ones renew at once,
/// after their container is verified; their files are written again.
fn entry_from(dir: Option<unbaked_secretsdir::SecretsDir>, k: &KeptLaunch) -> LaunchEntry {
    let now = Instant::now();
    let mut e = LaunchEntry::new(k.workload.clone(), k.uid, dir);
    e.dir_id = k.dir.as_ref().map(|d| d.root);
    e.created = Clock::instant(k.created_ms, Duration::ZERO);
    e.id_maps = k.id_maps.clone();
    e.restored = true;
    // A clock set back while the broker was down must not stretch the
    // files' life: never past one ttl from now.
    let cap = |b: &KeptBound| Duration::from_millis(b.ttl_ms.unwrap_or(3_600_000));
    let valid_until = k
        .bound
        .as_ref()
        .map(|b| Clock::instant(b.valid_until_ms, cap(b)));
    e.bound = k.bound.as_ref().map(|b| Bound {
        container: b.container.clone(),
        caller: Caller {
            uid: b.uid,
            gid: b.gid,
            pid: b.pid,
            container: None,
            service_account: None,
        },
        lease_id: b.lease.clone(),
        next_renew: now,
        valid_until: Clock::instant(b.valid_until_ms, cap(b)),
        ttl: cap(b),
        init: b.init.clone(),
    });
    let expires = valid_until.unwrap_or(now);
    e.applied = k
        .files
        .iter()
        .filter_map(|(item, delivery)| match delivery {
            Delivery::File { path, .. } => Some((
                item.clone(),
                Delivered {
                    path: path.clone(),
                    version: REWRITE,
                    delivery: delivery.clone(),
                    expires,
                },
            )),
            _ => None,
        })
        .collect();
    e
}

/// A launch id as `prepare` makes them (hex): one path component.
fn launch_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether the directory `fd` is open on has any entry.
fn holds_files(fd: BorrowedFd) -> bool {
    std::fs::read_dir(unbaked_secretsdir::sys::fd_path(fd))
        .map(|mut d| d.next().is_some())
        .unwrap_or(true)
}

/// The audit record of a launch ended by the broker (`revoke`).
pub(crate) fn audit_end(
    core: &dyn Core,
    workload: &str,
    lease: Option<String>,
    container: Option<&str>,
    reason: String,
) {
    let record = Record {
        workload: Some(workload.to_string()),
        lease,
        container: container.map(|id| ContainerRef {
            id: id.to_string(),
            name: String::new(),
            unverified: false,
        }),
        reason: Some(reason),
        ..Record::default()
    };
    if let Err(e) = core.audit().record(Event::Revoke, record) {
        tracing::error!(error = %e, "could not audit the end of a launch");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use unbaked_broker::lease_keep::LeaseKeeper;
    use unbaked_broker::service::Broker;
    use unbaked_broker::store::file::FileStore;
    use unbaked_broker::store::key::StoreKey;

    const CONTAINER: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

    /// A broker that keeps leases (and so launches) in `dir/store`, as the
    /// platform's core.
    fn core(dir: &Path) -> Broker {
        let policies = unbaked_policy::PolicySet::default();
        let store = Arc::new(unbaked_broker::store::memory::MemoryStore::new().unwrap());
        let audit = unbaked_broker::audit::Audit::open(&dir.join("audit.log")).unwrap();
        let fs = FileStore::open_with_key(
            &dir.join("store").join(unbaked_broker::lease_keep::DIR),
            StoreKey::from_bytes([5; 32]),
            "test",
            1,
        )
        .unwrap();
        Broker::new(policies, store, audit, 0).with_keeper(LeaseKeeper::with(fs))
    }

    /// The platform of `b` (kept launches taken back), with `b` as its core.
    async fn platform(dir: &Path, b: Broker) -> (Arc<Containers>, Broker, Vec<String>) {
        let c = Arc::new(Containers::new(
            crate::Engine::from_env().await,
            &dir.join("broker.sock"),
        ));
        c.secure_base().unwrap();
        let swept = c.take_back(&b);
        (c.clone(), b.with_platform(c), swept)
    }

    /// One claimed launch with a file, as `prepare` and `deliver_files`
    /// leave it, claimed by this very process.
    fn launch(c: &Containers, id: &str) -> PathBuf {
        let path = c.base().join(id);
        let (mut dir, root) = crate::tmpfs::mount_secrets_dir(c.engine_socket(), &path).unwrap();
        dir.write("db_password", b"kept-launch-file-marker", 0o400, None, None)
            .unwrap();
        let mut e = LaunchEntry::new("web".into(), 1000, Some(dir));
        e.dir_id = Some(root);
        e.applied.insert(
            "db_password".into(),
            Delivered {
                path: "db_password".into(),
                version: 1,
                delivery: Delivery::File {
                    path: "db_password".into(),
                    mode: 0o400,
                    uid: None,
                    gid: None,
                },
                expires: Instant::now() + Duration::from_secs(90),
            },
        );
        e.bound = Some(Bound {
            container: CONTAINER.into(),
            caller: Caller {
                uid: 0,
                gid: 0,
                pid: Some(std::process::id() as i32),
                container: None,
                service_account: None,
            },
            lease_id: "l-files".into(),
            next_renew: Instant::now() + Duration::from_secs(60),
            valid_until: Instant::now() + Duration::from_secs(90),
            ttl: Duration::from_secs(90),
            init: Some(InitId::of(std::process::id() as i32).unwrap()),
        });
        c.launches().insert(id.into(), e);
        path
    }

    fn me() -> LiveContainer {
        LiveContainer {
            id: CONTAINER.into(),
            running: true,
            pid: Some(i64::from(std::process::id())),
            ..LiveContainer::default()
        }
    }

    /// Kept, reopened by device, inode and birth time, verified against the same
    /// container and init; a changed init is refused.
    #[tokio::test]
    async fn a_kept_launch_comes_back_only_to_its_own_tmpfs_and_container() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, b, _) = platform(tmp.path(), core(tmp.path())).await;
        let path = launch(&first, "00aa11bb22cc33dd");
        let record = first.keep_record();
        let text = String::from_utf8_lossy(&record);
        assert!(!text.contains("kept-launch-file-marker"), "{text}");
        assert!(
            text.contains("db_password") && text.contains(CONTAINER),
            "{text}"
        );
        // The broker saves it with the leases; a restarted one reads it back.
        assert!(b.save_leases().unwrap());
        // Killed: nothing wiped or unmounted.
        drop((first, b));
        assert!(path.join("db_password").exists());

        let (second, _b, swept) = platform(tmp.path(), core(tmp.path())).await;
        assert!(swept.is_empty(), "{swept:?}");
        assert!(second.keeping.load(std::sync::atomic::Ordering::Relaxed));
        {
            let l = second.launches();
            let e = &l["00aa11bb22cc33dd"];
            assert!(e.restored);
            assert_eq!(e.bound.as_ref().unwrap().lease_id, "l-files");
            assert_eq!(e.applied["db_password"].version, REWRITE);
        }
        // Another container, or the same id with another first process:
        // not resumed.
        let other = LiveContainer {
            id: "6f".repeat(32),
            ..me()
        };
        assert!(second.verify_restored("00aa11bb22cc33dd", &other).is_err());
        let restarted = LiveContainer {
            pid: Some(1),
            ..me()
        };
        let why = second
            .verify_restored("00aa11bb22cc33dd", &restarted)
            .unwrap_err();
        assert!(why.contains("restarted"), "{why}");
        second.verify_restored("00aa11bb22cc33dd", &me()).unwrap();
        assert!(!second.launches()["00aa11bb22cc33dd"].restored);
        crate::tmpfs::release_dir(
            second.engine_socket(),
            "00aa11bb22cc33dd",
            second.launches().remove("00aa11bb22cc33dd").unwrap().dir,
        );
        assert!(!path.exists());
    }

    /// A tmpfs replaced while the broker was down is never written,
    /// zeroed or removed; the launch ends, audited.
    #[tokio::test]
    async fn a_replaced_tmpfs_is_left_alone_and_the_launch_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, b, _) = platform(tmp.path(), core(tmp.path())).await;
        let path = launch(&first, "44ee55ff66aa77bb");
        assert!(b.save_leases().unwrap());
        drop((first, b));
        // Someone else's tmpfs in its place, holding a file of theirs.
        unbaked_secretsdir::sys::unmount(&path).unwrap();
        unbaked_secretsdir::sys::mount_tmpfs(&path, 1 << 16).unwrap();
        std::fs::write(path.join("theirs"), b"not the broker's").unwrap();

        let (second, _b, swept) = platform(tmp.path(), core(tmp.path())).await;
        assert!(swept.is_empty(), "swept: {swept:?}");
        assert_eq!(second.launch_count(), 0);
        assert_eq!(
            std::fs::read(path.join("theirs")).unwrap(),
            b"not the broker's"
        );
        let audit = std::fs::read_to_string(tmp.path().join("audit.log")).unwrap();
        assert!(
            audit.contains("failed verification")
                && audit.contains("is not the tmpfs this broker mounted"),
            "{audit}"
        );
        // Control: the same directory, not replaced, comes back (above).
        unbaked_secretsdir::sys::unmount(&path).unwrap();
        std::fs::remove_dir(&path).unwrap();
    }

    /// A container fetching in a loop: its followed ids, and so the kept
    /// record, stay bounded; the oldest are handed on to be ended.
    #[tokio::test]
    async fn many_fetches_by_one_container_keep_the_record_bounded() {
        use crate::containers::MAX_FOLLOWED_PER_CONTAINER;
        let tmp = tempfile::tempdir().unwrap();
        let (first, b, _) = platform(tmp.path(), core(tmp.path())).await;
        let fetch = |from: usize, to: usize| {
            for n in from..to {
                first.track(CONTAINER, &format!("{n:032x}"));
            }
        };
        fetch(0, 20_000);
        let ids = &first.tracked()[CONTAINER];
        assert_eq!(ids.len(), MAX_FOLLOWED_PER_CONTAINER);
        assert_eq!(ids.last().unwrap(), &format!("{:032x}", 19_999));
        assert!(first.dropped.lock().unwrap().len() <= 4096);
        // Unknown to this broker (ended by the holder's cap): no-ops.
        first.end_dropped(&b);
        assert!(first.dropped.lock().unwrap().is_empty());
        let size = first.keep_record().len();
        fetch(20_000, 60_000);
        assert_eq!(first.keep_record().len(), size, "the record does not grow");
        // The same id again is followed once.
        first.track(CONTAINER, &format!("{:032x}", 59_999));
        assert_eq!(first.tracked()[CONTAINER].len(), MAX_FOLLOWED_PER_CONTAINER);
        drop((first, b));
    }

    /// A record at its bounds (launches and followed ids over them) is
    /// under the platform record's limit, is saved, and comes back whole.
    #[tokio::test]
    async fn a_record_at_the_cap_still_restores() {
        use crate::containers::MAX_FOLLOWED_PER_CONTAINER;
        let tmp = tempfile::tempdir().unwrap();
        let (first, b, _) = platform(tmp.path(), core(tmp.path())).await;
        for i in 0..MAX_KEPT_LAUNCHES + 10 {
            let mut e = LaunchEntry::new("web".into(), 1000, None);
            e.created = Instant::now() - Duration::from_secs(100_000 - i as u64);
            e.bound = Some(Bound {
                container: format!("{i:064x}"),
                caller: Caller {
                    uid: 0,
                    gid: 0,
                    pid: Some(1),
                    container: None,
                    service_account: None,
                },
                lease_id: format!("{i:032x}"),
                next_renew: Instant::now() + Duration::from_secs(60),
                valid_until: Instant::now() + Duration::from_secs(90),
                ttl: Duration::from_secs(90),
                init: Some(InitId::of(std::process::id() as i32).unwrap()),
            });
            first.launches().insert(format!("{i:016x}"), e);
        }
        for c in 0..(MAX_KEPT_FOLLOWED / MAX_FOLLOWED_PER_CONTAINER + 10) {
            for n in 0..MAX_FOLLOWED_PER_CONTAINER {
                first.track(&format!("{c:064x}"), &format!("{c:016x}{n:016x}"));
            }
        }
        let record = first.keep_record();
        assert!(
            record.len() <= unbaked_broker::lease_keep::MAX_PLATFORM,
            "{}",
            record.len()
        );
        assert!(b.save_leases().unwrap());
        drop((first, b));
        let (second, _b, swept) = platform(tmp.path(), core(tmp.path())).await;
        assert!(swept.is_empty(), "{swept:?}");
        assert_eq!(second.launch_count(), MAX_KEPT_LAUNCHES);
        // The oldest launches are the ones kept.
        assert!(second.launches().contains_key(&format!("{:016x}", 0)));
        assert!(!second
            .launches()
            .contains_key(&format!("{:016x}", MAX_KEPT_LAUNCHES + 9)));
        let followed: usize = second.tracked().values().map(Vec::len).sum();
        assert_eq!(followed, MAX_KEPT_FOLLOWED);
    }

    /// A tmpfs left alone at one start stays alone at the next ones (never
    /// swept), is shown in the detail, and is forgotten once removed by hand.
    #[tokio::test]
    async fn a_tmpfs_left_alone_stays_alone_across_restarts() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, b, _) = platform(tmp.path(), core(tmp.path())).await;
        let path = launch(&first, "8899aabbccddeeff");
        assert!(b.save_leases().unwrap());
        drop((first, b));
        unbaked_secretsdir::sys::unmount(&path).unwrap();
        unbaked_secretsdir::sys::mount_tmpfs(&path, 1 << 16).unwrap();
        std::fs::write(path.join("theirs"), b"not the broker's").unwrap();

        let (second, b, swept) = platform(tmp.path(), core(tmp.path())).await;
        assert!(swept.is_empty(), "swept: {swept:?}");
        let detail = second.quarantine_detail();
        assert!(
            detail.len() == 1 && detail[0].contains("8899aabbccddeeff"),
            "{detail:?}"
        );
        assert!(b.save_leases().unwrap());
        drop((second, b));
        // Control: a directory the record does not name is swept.
        let stray = path.with_file_name("0123456789abcdef");
        std::fs::create_dir(&stray).unwrap();

        let (third, b, swept) = platform(tmp.path(), core(tmp.path())).await;
        assert_eq!(swept, vec!["0123456789abcdef".to_string()]);
        assert!(!stray.exists());
        assert_eq!(
            std::fs::read(path.join("theirs")).unwrap(),
            b"not the broker's",
            "left alone at the second restart too"
        );
        assert_eq!(third.quarantine_detail().len(), 1);
        b.save_leases().unwrap();
        drop((third, b));
        // Removed by hand: forgotten.
        unbaked_secretsdir::sys::unmount(&path).unwrap();
        std::fs::remove_dir(&path).unwrap();
        let (fourth, _b, swept) = platform(tmp.path(), core(tmp.path())).await;
        assert!(swept.is_empty(), "{swept:?}");
        assert!(fourth.quarantine_detail().is_empty());
        assert!(!fourth
            .keep_record()
            .windows(16)
            .any(|w| w == b"8899aabbccddeeff"));
    }

    /// A kept deadline ahead of now by more than the lease's ttl (the
    /// clock was set back while the broker was down) is cut to one ttl.
    #[test]
    fn a_restored_deadline_is_at_most_one_ttl_away() {
        let far = Clock::now().ms(Instant::now() + Duration::from_secs(10 * 3600));
        let kept = |ttl_ms| KeptLaunch {
            id: "00aa".into(),
            workload: "web".into(),
            uid: 0,
            created_ms: 0,
            dir: None,
            bound: Some(KeptBound {
                container: CONTAINER.into(),
                uid: 0,
                gid: 0,
                pid: None,
                lease: "l-files".into(),
                valid_until_ms: far,
                ttl_ms,
                init: None,
            }),
            id_maps: None,
            files: BTreeMap::new(),
        };
        let until = |k: &KeptLaunch| entry_from(None, k).bound.unwrap().valid_until;
        let cut = until(&kept(Some(90_000)));
        assert!(cut <= Instant::now() + Duration::from_secs(90), "{cut:?}");
        // An older record without the ttl: one hour, as before.
        let old = until(&kept(None));
        assert!(old <= Instant::now() + Duration::from_secs(3600));
        assert!(old > Instant::now() + Duration::from_secs(3000));
    }

    #[test]
    fn an_init_is_its_pid_start_time_and_namespaces() {
        let me_now = InitId::of(std::process::id() as i32).unwrap();
        assert_eq!(me_now, InitId::of(std::process::id() as i32).unwrap());
        me_now.check(&me()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let other = InitId::of(child.id() as i32).unwrap();
        assert_ne!(other, me_now);
        let mut forged = me_now.clone();
        forged.start += 1;
        assert!(forged.check(&me()).is_err(), "a reused pid is caught");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
