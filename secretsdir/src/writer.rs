//! The secrets directory: a tmpfs holding one file per file grant, written
//! atomically and wiped (zeroed, then unlinked) when withdrawn.
//!
//! The root itself is checked once, through a descriptor opened with
//! `O_NOFOLLOW`: not a symlink, owned by this process's euid or root, not
//! writable by group or others, on tmpfs (or a tmpfs we mount on that very
//! directory). Everything after starts at that descriptor, and every path
//! below it is walked with `openat` and `O_NOFOLLOW`, so neither a path
//! swapped after the check nor a symlink planted in the directory redirects
//! a write, a wipe or a mount.
//!
//! A wipe always unlinks: zeroing is best effort (a failure is logged, never
//! a value) and reaches a 0400 file through `/proc/self/fd/N` after `u+w`,
//! so a sidecar that is not root zeroes its own read-only files too.
//!
//! Crash safety: a sidecar killed mid-write leaves at most a hidden
//! `.NAME.tmp-HEX` file (never a torn target); the next [`SecretsDir::open`]
//! zeroes and removes those. The sidecar records the files it wrote and
//! their deadlines in [`STATE_FILE`] (names and times, never a value), so a
//! successor wipes what a killed predecessor left, on time, even with the
//! broker away.

use crate::sys;
use crate::DirError;
use nix::errno::Errno;
use nix::fcntl::{open, openat, renameat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, geteuid, unlinkat, Gid, Uid, UnlinkatFlags};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a version replaced by a rotation stays readable through a
/// descriptor opened before the rename: an app mid-read of the old version
/// gets all of it, never a half-zeroed copy.
pub const RETIRE_GRACE: Duration = Duration::from_secs(1);

/// The sidecar's record of what it wrote, in the root of the directory:
/// hidden, mode 0600, removed by [`SecretsDir::wipe_all`].
pub const STATE_FILE: &str = ".unbaked-sidecar";
const MAX_STATE_BYTES: u64 = 256 * 1024;
/// How many entries [`SecretsDir::open`] looks at for leftover temp files.
const MAX_SWEEP_ENTRIES: usize = 10_000;

/// What [`STATE_FILE`] holds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct State {
    /// The sidecar mounted the tmpfs, so whoever wipes last unmounts it.
    mounted: bool,
    /// Relative path -> deadline (CLOCK_BOOTTIME milliseconds).
    files: BTreeMap<String, u64>,
}

/// Why a secrets directory is refused; [`DirProblem::explain`] says what to
/// do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirProblem {
    /// The last component is a symlink.
    Symlink,
    NotADirectory,
    /// Owned by neither this process's euid nor root.
    Owner {
        uid: u32,
        euid: u32,
    },
    /// Writable by group or others (`mode`: the permission bits).
    Writable {
        mode: u32,
    },
    /// After our mount, the path no longer led to the new tmpfs.
    MountMoved {
        euid: u32,
    },
}

impl DirProblem {
    /// The whole message: what is wrong with `dir`, why it matters, what to do.
    pub fn explain(&self, dir: &Path) -> String {
        let d = dir.display();
        match self {
            DirProblem::Symlink => format!(
                "{d} is a symlink, so whoever can change the link chooses where the secrets go \
                 (and what a tmpfs is mounted over): pass the real directory, or remove the link \
                 and let the sidecar create {d}"
            ),
            DirProblem::NotADirectory => {
                format!("{d} exists and is not a directory: remove it or pass another --dir")
            }
            DirProblem::Owner { uid, euid } => {
                let by = match euid {
                    0 => "root".to_string(),
                    _ => format!("this sidecar's uid {euid} or root"),
                };
                format!(
                    "{d} is owned by uid {uid}, not by {by}, so uid {uid} could replace the \
                     files the workload reads: `chown {euid} {d}` and `chmod 0711 {d}`, or \
                     remove it and let the sidecar create it"
                )
            }
            DirProblem::Writable { mode } => format!(
                "{d} is writable by its group or others (mode {mode:04o}), so they could replace \
                 the files the workload reads: `chmod 0711 {d}` (0700 if only this uid reads the \
                 files), or mount the tmpfs with mode=0711 (e.g. docker --tmpfs {d}:mode=0711, \
                 plus uid=N when the sidecar runs as uid N)"
            ),
            DirProblem::MountMoved { euid } => format!(
                "a tmpfs was mounted on {d}, but the path no longer leads to it (was {d} or a \
                 parent renamed meanwhile?); nothing was written and the empty tmpfs stays \
                 mounted: make sure only root and uid {euid} can write the parent directories"
            ),
        }
    }
}

#[derive(Debug)]
pub struct SecretsDir {
    root: PathBuf,
    /// The checked directory (the tmpfs root, if we mounted one): every
    /// operation starts here, never at `root` looked up again.
    root_fd: OwnedFd,
    mounted: bool,
    created_root: bool,
    /// Files we wrote (relative path -> length); only these are ever wiped.
    files: BTreeMap<String, u64>,
    /// Subdirectories we created, parents first.
    dirs: Vec<String>,
    /// Files a previous sidecar recorded, still within their ttl at open.
    inherited: BTreeMap<String, Duration>,
    /// Versions replaced by a rotation (`O_PATH` descriptors), with their
    /// relative path, until they are zeroed.
    retired: Vec<(OwnedFd, String, Instant)>,
}

impl SecretsDir {
    /// Create `dir` (0711) if missing, check it is safe to hold secrets
    /// ([`DirProblem`]) and make sure it is a tmpfs: use it if it is one,
    /// mount one on it if we may, refuse otherwise (writing nothing).
    pub fn open(dir: &Path, tmpfs_size: u64) -> Result<SecretsDir, DirError> {
        // Without a trailing `/` or `/.`, which would make the kernel follow
        // a symlink at the last component despite O_NOFOLLOW.
        let dir = &dir.components().collect::<PathBuf>();
        let io_err = |source| DirError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let created_root = create_missing(dir).map_err(io_err)?;
        let give_up = |e: DirError| {
            if created_root {
                let _ = std::fs::remove_dir(dir);
            }
            e
        };
        let refuse = |problem| {
            give_up(DirError::UnsafeDir {
                dir: dir.to_path_buf(),
                problem,
            })
        };
        // O_NOFOLLOW: a symlink as the last component is refused, not followed.
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match open(dir, flags, Mode::empty()) {
            Ok(fd) => fd,
            // ELOOP, or ENOTDIR when O_DIRECTORY is checked first.
            Err(Errno::ELOOP | Errno::ENOTDIR)
                if dir.symlink_metadata().is_ok_and(|m| m.is_symlink()) =>
            {
                return Err(refuse(DirProblem::Symlink))
            }
            Err(Errno::ENOTDIR) => return Err(refuse(DirProblem::NotADirectory)),
            Err(e) => return Err(give_up(io_err(e.into()))),
        };
        let st = fstat(&fd).map_err(|e| give_up(io_err(e.into())))?;
        match check_owner_and_mode(&st) {
            Ok(()) => {}
            Err(DirProblem::Writable { mode }) if adoptable(fd.as_fd(), mode) => {
                adopt(fd.as_fd()).map_err(|e| give_up(io_err(e)))?;
                tracing::info!(dir = %dir.display(), mode = format!("{mode:04o}"), "an empty directory others could write (a Kubernetes emptyDir) was made 0711 before use");
            }
            Err(p) => return Err(refuse(p)),
        }
        let tmpfs = sys::is_tmpfs_fd(fd.as_fd()).map_err(|e| give_up(io_err(e)))?;
        let (root_fd, mounted) = if tmpfs {
            (fd, false)
        } else {
            // On the checked directory itself, wherever its path leads now.
            if let Err(e) = sys::mount_tmpfs_fd(fd.as_fd(), tmpfs_size) {
                let fs_type = sys::fs_type_name_fd(fd.as_fd());
                return Err(give_up(if sys::refusal_for(e) {
                    DirError::NotTmpfs {
                        dir: dir.to_path_buf(),
                        fs_type,
                    }
                } else {
                    DirError::Mount {
                        dir: dir.to_path_buf(),
                        source: e,
                    }
                }));
            }
            match open_our_mount(dir, fd.as_fd()) {
                Ok(Some(root)) => (root, true),
                Ok(None) => {
                    return Err(DirError::UnsafeDir {
                        dir: dir.to_path_buf(),
                        problem: DirProblem::MountMoved {
                            euid: geteuid().as_raw(),
                        },
                    })
                }
                // /proc unreadable: what is mounted there cannot be told apart.
                Err(e) => return Err(io_err(e)),
            }
        };
        Ok(SecretsDir::checked(dir, root_fd, mounted, created_root))
    }

    /// The directory `root_fd`, already checked: what a killed writer or a
    /// predecessor left is swept or adopted before first use.
    fn checked(dir: &Path, root_fd: OwnedFd, mounted: bool, created_root: bool) -> SecretsDir {
        let mut opened = SecretsDir {
            root: dir.to_path_buf(),
            root_fd,
            mounted,
            created_root,
            files: BTreeMap::new(),
            dirs: Vec::new(),
            inherited: BTreeMap::new(),
            retired: Vec::new(),
        };
        opened.sweep_temp_files();
        opened.adopt_state();
        opened
    }

    /// A tmpfs directory someone else mounted and opened (`O_DIRECTORY |
    /// O_NOFOLLOW`), such as a launch's tmpfs that the broker mounts in
    /// the host's mount namespace: `fd` must be a directory on tmpfs, owned
    /// by this process's euid or root and not writable by group or others
    /// ([`DirProblem`]). `dir` only names it (messages, [`Self::root`]):
    /// every operation goes through `fd`, from whatever mount namespace.
    /// The caller unmounts it; [`Self::wipe_all`] neither unmounts nor
    /// removes it.
    pub fn adopt_fd(dir: &Path, fd: OwnedFd) -> Result<SecretsDir, DirError> {
        let io_err = |source| DirError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let refuse = |problem| DirError::UnsafeDir {
            dir: dir.to_path_buf(),
            problem,
        };
        let st = fstat(&fd).map_err(|e| io_err(e.into()))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
            return Err(refuse(DirProblem::NotADirectory));
        }
        check_owner_and_mode(&st).map_err(refuse)?;
        if !sys::is_tmpfs_fd(fd.as_fd()).map_err(io_err)? {
            return Err(DirError::NotTmpfs {
                dir: dir.to_path_buf(),
                fs_type: sys::fs_type_name_fd(fd.as_fd()),
            });
        }
        Ok(SecretsDir::checked(dir, fd, false, false))
    }

    /// Files a previous sidecar on this directory wrote (it crashed or was
    /// killed), with the time each may still live: the caller wipes them
    /// then unless a fresh delivery replaces them. Expired ones are already
    /// gone.
    pub fn inherited(&self) -> &BTreeMap<String, Duration> {
        &self.inherited
    }

    /// Record the files and how long each may live, for a successor.
    pub fn save_state(&mut self, ttls: &BTreeMap<String, Duration>) -> Result<(), DirError> {
        self.zero_retired(false);
        let now = sys::boottime_ms();
        let mut state = State {
            mounted: self.mounted,
            files: ttls
                .iter()
                .map(|(p, ttl)| {
                    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                    (p.clone(), now.saturating_add(ms))
                })
                .collect(),
        };
        // A file still here that the caller no longer tracks (its wipe
        // failed) stays listed, due now: an entry goes only once unlinked.
        for rel in self.files.keys() {
            state.files.entry(rel.clone()).or_insert(now);
        }
        // Names and times only: serializing cannot fail.
        let bytes = serde_json::to_vec(&state).unwrap_or_default();
        let root = self.dup_root().map_err(|e| self.io(STATE_FILE, e))?;
        self.replace(&root, STATE_FILE, STATE_FILE, &bytes, 0o600, None, None)
            .map(drop)
    }

    /// Remove [`STATE_FILE`]: what is in the directory now is nobody's to
    /// wipe (`sidecar --once`).
    pub fn forget_state(&mut self) {
        let _ = unlinkat(&self.root_fd, STATE_FILE, UnlinkatFlags::NoRemoveDir);
    }

    /// Zero and remove `.NAME.tmp-HEX` files a killed writer left behind.
    fn sweep_temp_files(&mut self) {
        let mut stack = vec![String::new()];
        let mut seen = 0;
        while let Some(sub) = stack.pop() {
            let comps: Vec<&str> = sub.split('/').filter(|c| !c.is_empty()).collect();
            // Listed through the descriptor, reached with O_NOFOLLOW.
            let Ok(Some(dir)) = self.walk(&sub, &comps, false) else {
                continue;
            };
            let Ok(entries) = std::fs::read_dir(sys::fd_path(dir.as_fd())) else {
                continue;
            };
            for entry in entries.flatten() {
                seen += 1;
                if seen > MAX_SWEEP_ENTRIES {
                    return;
                }
                let (Ok(kind), Some(name)) = (
                    entry.file_type(),
                    entry.file_name().to_str().map(String::from),
                ) else {
                    continue;
                };
                let rel = if sub.is_empty() {
                    name.clone()
                } else {
                    format!("{sub}/{name}")
                };
                if kind.is_dir() {
                    stack.push(rel);
                } else if is_temp_name(&name) {
                    // `wipe` walks with O_NOFOLLOW: a swapped-in symlink is refused.
                    if let Err(e) = self.wipe(&rel) {
                        tracing::warn!(error = %e, "could not remove a leftover temporary file");
                    } else {
                        tracing::info!(path = %rel, "removed a temporary file a killed sidecar left");
                    }
                }
            }
        }
    }

    /// Take over the files a previous sidecar recorded: wipe those past
    /// their deadline now, remember the others for [`Self::inherited`].
    fn adopt_state(&mut self) {
        let Some(state) = self.read_state() else {
            return;
        };
        if state.mounted && !self.mounted && sys::is_tmpfs_fd(self.root_fd.as_fd()).unwrap_or(false)
        {
            self.mounted = true; // ours to unmount now
        }
        let now = sys::boottime_ms();
        for (rel, deadline) in state.files {
            if split(&rel).is_err() {
                continue;
            }
            self.files.insert(rel.clone(), 0);
            if deadline <= now {
                match self.wipe(&rel) {
                    Ok(()) => {
                        tracing::warn!(path = %rel, "a previous sidecar's file outlived its ttl: wiped")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not wipe a previous sidecar's expired file")
                    }
                }
            } else {
                self.inherited
                    .insert(rel, Duration::from_millis(deadline - now));
            }
        }
    }

    fn read_state(&self) -> Option<State> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = openat(&self.root_fd, STATE_FILE, flags, Mode::empty()).ok()?;
        let file = File::from(fd);
        let st = fstat(&file).ok()?;
        let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
        if !regular || st.st_uid != nix::unistd::geteuid().as_raw() {
            return None; // not something we wrote
        }
        let mut text = Vec::new();
        file.take(MAX_STATE_BYTES).read_to_end(&mut text).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// The descriptor on the root checked at open or adoption.
    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root_fd.as_fd()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn mounted(&self) -> bool {
        self.mounted
    }

    /// The relative paths of the files written and not yet wiped.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Write `rel` atomically: a private temp file in the same directory,
    /// owned and moded as asked, renamed over the target. A previous copy we
    /// wrote is zeroed [`RETIRE_GRACE`] after no name reaches it (at a later
    /// write, wipe or [`Self::save_state`], or at once by [`Self::wipe_all`]),
    /// so a reader that opened it just before the rename reads it whole.
    pub fn write(
        &mut self,
        rel: &str,
        bytes: &[u8],
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), DirError> {
        self.zero_retired(false);
        let (parents, name) = split(rel)?;
        let Some(dir) = self.walk(rel, &parents, true)? else {
            return Err(self.io(rel, Errno::ENOENT));
        };
        let previous = if self.files.contains_key(rel) {
            open_path(&dir, name).ok()
        } else {
            None
        };
        self.replace(&dir, name, rel, bytes, mode, uid, gid)?;
        if let Some(old) = previous {
            // Unlinked by the rename: its pages are zeroed after the grace.
            self.retired.push((old, rel.to_owned(), Instant::now()));
        }
        self.files.insert(rel.to_owned(), bytes.len() as u64);
        Ok(())
    }

    /// Zero the replaced versions whose grace has passed (`all`: every one).
    fn zero_retired(&mut self, all: bool) {
        let now = Instant::now();
        self.retired.retain(|(file, rel, at)| {
            let due = all || now.duration_since(*at) >= RETIRE_GRACE;
            if due {
                // No name reaches it any more: zero links, or not ours.
                if let Err(e) = zero_through(file.as_fd(), 0) {
                    tracing::warn!(path = %rel, error = %e, "could not zero a replaced version of a secret file");
                }
            }
            !due
        });
    }

    /// Put `bytes` at `name` in `dir` atomically: a private temp file,
    /// owned and moded as asked, renamed over it.
    #[allow(clippy::too_many_arguments)]
    fn replace(
        &self,
        dir: &OwnedFd,
        name: &str,
        rel: &str,
        bytes: &[u8],
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), DirError> {
        let tmp = format!(
            ".{name}.tmp-{}",
            random_hex().map_err(|e| self.io_err(rel, e))?
        );
        let fd = openat(
            dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.io(rel, e))?;
        let mut file = File::from(fd);
        let done = file
            .write_all(bytes)
            .map_err(|e| self.io_err(rel, e))
            .and_then(|()| {
                if uid.is_some() || gid.is_some() {
                    fchown(&file, uid.map(Uid::from_raw), gid.map(Gid::from_raw))
                        .map_err(|e| self.io(rel, e))?;
                }
                // Permission bits only: setuid/setgid/sticky make no sense here.
                fchmod(&file, Mode::from_bits_truncate(mode & 0o777))
                    .map_err(|e| self.io(rel, e))?;
                renameat(dir, tmp.as_str(), dir, name).map_err(|e| self.io(rel, e))
            });
        if let Err(e) = done {
            let _ = zero_fill(&file, 1);
            let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        Ok(())
    }

    /// Zero `rel` and unlink it. A missing file is fine; a symlink is unlinked
    /// without touching what it points to. Zeroing is best effort: a file
    /// that cannot be zeroed is still unlinked (and the failure logged); an
    /// error means the name is still there, and `rel` stays in [`Self::files`].
    pub fn wipe(&mut self, rel: &str) -> Result<(), DirError> {
        self.zero_retired(false);
        let (parents, name) = split(rel)?;
        let Some(dir) = self.walk(rel, &parents, false)? else {
            self.files.remove(rel);
            return Ok(());
        };
        match open_path(&dir, name) {
            // A symlink: zero_through leaves it (and its target) alone.
            Ok(fd) => {
                if let Err(e) = zero_through(fd.as_fd(), 1) {
                    tracing::warn!(path = %rel, error = %e, "could not zero a secret file: unlinking it anyway");
                }
            }
            Err(Errno::ENOENT) => {
                self.files.remove(rel);
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(path = %rel, error = %e, "could not open a secret file to zero it: unlinking it anyway");
            }
        }
        match unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(self.io(rel, e)),
        }
        self.files.remove(rel);
        Ok(())
    }

    /// Wipe every file we wrote, remove the directories we created and
    /// unmount the tmpfs if we mounted it. Goes on after a failure and
    /// reports the first one.
    pub fn wipe_all(&mut self) -> Result<(), DirError> {
        self.zero_retired(true);
        let mut first = None;
        let files: Vec<String> = self.files.keys().cloned().collect();
        for rel in files {
            if let Err(e) = self.wipe(&rel) {
                first.get_or_insert(e);
            }
        }
        self.inherited.clear();
        // Last: a crash before this point leaves a successor the list.
        if self.files.is_empty() {
            let _ = unlinkat(&self.root_fd, STATE_FILE, UnlinkatFlags::NoRemoveDir);
        } else {
            // Only what is gone leaves the list; the rest is due at once.
            let left = self.files.len();
            match self.save_state(&BTreeMap::new()) {
                Ok(()) => tracing::warn!(files = left, "files left for the next sidecar to wipe"),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        for d in self.dirs.drain(..).rev() {
            // Not empty means someone else's file is there: leave it.
            let _ = unlinkat(&self.root_fd, d.as_str(), UnlinkatFlags::RemoveDir);
        }
        if self.mounted {
            match sys::unmount_fd(self.root_fd.as_fd()) {
                Ok(()) => self.mounted = false,
                Err(e) => {
                    first.get_or_insert(self.io("", e));
                }
            }
        }
        if self.created_root && !self.mounted {
            let _ = std::fs::remove_dir(&self.root);
        }
        first.map_or(Ok(()), Err)
    }

    /// Open the directory holding `rel`'s file, creating missing parents when
    /// `create`; `None` when a parent is missing and not `create`.
    fn walk(
        &mut self,
        rel: &str,
        parents: &[&str],
        create: bool,
    ) -> Result<Option<OwnedFd>, DirError> {
        let mut dir = self.dup_root().map_err(|e| self.io("", e))?;
        // Every directory on the way stays on the checked tmpfs: a volume
        // or a host directory mounted below it (`-v x:/run/secrets/tls`)
        // is disk, where no secret may land.
        let root_dev = fstat(&dir).map_err(|e| self.io("", e))?.st_dev;
        for (i, comp) in parents.iter().enumerate() {
            if create {
                match mkdirat(&dir, *comp, Mode::from_bits_truncate(0o711)) {
                    Ok(()) => self.dirs.push(parents[..=i].join("/")),
                    Err(Errno::EEXIST) => {}
                    Err(e) => return Err(self.io(rel, e)),
                }
            }
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            dir = match openat(&dir, *comp, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if !create => return Ok(None),
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    return Err(DirError::BadPath {
                        path: rel.into(),
                        reason: "a parent directory is a symlink or not a directory: remove it",
                    })
                }
                Err(e) => return Err(self.io(rel, e)),
            };
            if fstat(&dir).map_err(|e| self.io(rel, e))?.st_dev != root_dev {
                return Err(DirError::BadPath {
                    path: rel.into(),
                    reason: "a parent directory is another file system mounted inside the secrets directory: unmount it",
                });
            }
        }
        Ok(Some(dir))
    }

    /// Another descriptor on the checked root, for [`Self::walk`] to replace.
    fn dup_root(&self) -> nix::Result<OwnedFd> {
        self.root_fd
            .try_clone()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)))
    }

    fn io(&self, rel: &str, e: Errno) -> DirError {
        self.io_err(rel, io::Error::from(e))
    }

    fn io_err(&self, rel: &str, source: io::Error) -> DirError {
        DirError::Io {
            path: if rel.is_empty() {
                self.root.clone()
            } else {
                self.root.join(rel)
            },
            source,
        }
    }
}

/// Split a relative path into parents and file name, refusing anything that
/// could leave the root (the policy loader checks this too).
fn split(rel: &str) -> Result<(Vec<&str>, &str), DirError> {
    let parts: Vec<&str> = rel.split('/').collect();
    let bad = |c: &&str| c.is_empty() || *c == "." || *c == ".." || c.contains('\0');
    match parts.split_last() {
        Some((name, parents)) if !parts.iter().any(bad) => Ok((parents.to_vec(), name)),
        _ => Err(DirError::BadPath {
            path: rel.into(),
            reason: "not a plain relative path inside the secrets directory",
        }),
    }
}

/// Create `dir` (mode 0711, parents too) unless something is at its name
/// (even a dangling symlink); whether we created it.
fn create_missing(dir: &Path) -> io::Result<bool> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o711).create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Only our uid (or root) may change what is in the directory: another
/// owner, or a group or others with write permission, could replace the
/// files the workload reads (a sticky bit does not stop a new name).
fn check_owner_and_mode(st: &FileStat) -> Result<(), DirProblem> {
    let euid = geteuid().as_raw();
    if st.st_uid != euid && st.st_uid != 0 {
        return Err(DirProblem::Owner {
            uid: st.st_uid,
            euid,
        });
    }
    if st.st_mode & 0o022 != 0 {
        return Err(DirProblem::Writable {
            mode: st.st_mode & 0o7777,
        });
    }
    Ok(())
}

/// An empty directory we (or root) own, writable by others but not sticky,
/// is what a Kubernetes `emptyDir` is (always 0777): nobody has put
/// anything in it yet, so it is safe to take over by closing it first.
/// A sticky one is a shared directory (/tmp, /dev/shm) and is never taken.
fn adoptable(fd: BorrowedFd, mode: u32) -> bool {
    mode & 0o1000 == 0 && is_empty(fd).unwrap_or(false)
}

fn is_empty(fd: BorrowedFd) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    Ok(
        std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))?
            .next()
            .is_none(),
    )
}

/// Close the directory (0711), then make sure nobody slipped an entry in
/// before it closed: after the chmod, only its owner (and root) can.
fn adopt(fd: BorrowedFd) -> io::Result<()> {
    fchmod(fd, Mode::from_bits_truncate(0o711))?;
    if !is_empty(fd)? {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "an entry appeared in the directory while it was being closed to others: refused",
        ));
    }
    Ok(())
}

/// After mounting a tmpfs on the directory `under` is open on, open `dir`
/// again and make sure it is that new tmpfs: a tmpfs, on a mount whose
/// parent is `under`'s mount and whose mount point is where `under` is now,
/// its root ours and 0711 as mounted. `None`: the path leads elsewhere.
fn open_our_mount(dir: &Path, under: BorrowedFd) -> io::Result<Option<OwnedFd>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match open(dir, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let (old_mnt, new_mnt) = (sys::mount_id(under)?, sys::mount_id(fd.as_fd())?);
    let under_path = std::fs::read_link(sys::fd_path(under))?;
    let mounted_there = sys::mounts()?.iter().any(|m| {
        m.id == new_mnt
            && m.parent == old_mnt
            && m.fs_type == "tmpfs"
            && unescape_mountinfo(&m.mount_point) == under_path.as_os_str().as_encoded_bytes()
    });
    let st = fstat(&fd)?;
    let ours = st.st_uid == geteuid().as_raw() && st.st_mode & 0o7777 == 0o711;
    let tmpfs = sys::is_tmpfs_fd(fd.as_fd())?;
    Ok((new_mnt != old_mnt && mounted_there && ours && tmpfs).then_some(fd))
}

/// `/proc/self/mountinfo` writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// An `O_PATH` descriptor on `name` itself (a symlink is not followed, the
/// descriptor is on the link): it opens nothing, so a planted FIFO or
/// device cannot block or react, and it needs no permission on the file.
fn open_path(dir: &OwnedFd, name: &str) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(dir, name, flags, Mode::empty())
}

/// Zero the regular file `file` (an [`open_path`] descriptor) is on, when
/// exactly `links` names reach it (a file hard-linked from elsewhere is not
/// ours to zero); anything else is left alone.
///
/// Written through `/proc/self/fd/N`, which reaches that very inode even
/// once unlinked. Files are 0400 as delivered: a sidecar that is not root
/// gets EACCES opening its own file for writing, so it first gives itself
/// `u+w`, which the owner may always do.
fn zero_through(file: BorrowedFd, links: u64) -> io::Result<()> {
    let st = fstat(file)?;
    let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
    if !regular || st.st_nlink as u64 != links {
        return Ok(());
    }
    let path = sys::fd_path(file);
    // O_NONBLOCK and O_NOCTTY are moot on a regular file, kept for safety.
    let reopen = || {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
            .open(&path)
    };
    let writable = match reopen() {
        Err(e)
            if e.kind() == io::ErrorKind::PermissionDenied && st.st_uid == geteuid().as_raw() =>
        {
            let mode = (st.st_mode | 0o200) & 0o7777;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            reopen()?
        }
        other => other?,
    };
    zero_fill(&writable, links)?;
    writable.sync_data()
}

/// Overwrite a regular file with zeros, only when exactly `links` names reach
/// it: a file hard-linked from elsewhere is not ours to zero.
fn zero_fill(file: &File, links: u64) -> io::Result<()> {
    let st = fstat(file)?;
    let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
    if !regular || st.st_nlink as u64 != links {
        return Ok(());
    }
    const ZEROS: [u8; 8192] = [0; 8192];
    let len = u64::try_from(st.st_size).unwrap_or(0);
    let mut off = 0;
    while off < len {
        let n = (len - off).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..n as usize], off)?;
        off += n;
    }
    Ok(())
}

/// `.NAME.tmp-` and 16 hex digits: a temp file of [`SecretsDir::write`].
fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        && name
            .rsplit_once(".tmp-")
            .is_some_and(|(_, hex)| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn random_hex() -> io::Result<String> {
    let mut b = [0u8; 8];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| io::Error::other("the system random source failed"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shm() -> tempfile::TempDir {
        tempfile::tempdir_in("/dev/shm").unwrap()
    }

    #[test]
    fn open_removes_what_a_killed_writer_left_half_done() {
        let t = shm();
        std::fs::create_dir(t.path().join("db")).unwrap();
        let leftover = t.path().join("db/.password.tmp-00112233445566aa");
        std::fs::write(&leftover, b"half-written").unwrap();
        std::fs::write(t.path().join(".keep"), b"not ours").unwrap();
        let mut old = File::open(&leftover).unwrap();
        let dir = SecretsDir::open(t.path(), 1 << 20).unwrap();
        assert!(!leftover.exists());
        let mut seen = Vec::new();
        old.read_to_end(&mut seen).unwrap();
        assert_eq!(seen, vec![0; 12], "zeroed before unlinking");
        assert!(t.path().join(".keep").exists());
        assert!(dir.inherited().is_empty());
    }

    #[test]
    fn an_adopted_descriptor_is_written_through_and_checked_first() {
        let open = |p: &Path| {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            nix::fcntl::open(p, flags, Mode::empty()).unwrap()
        };
        let t = shm();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let named = Path::new("/nowhere/only/a/name");
        let mut dir = SecretsDir::adopt_fd(named, open(t.path())).unwrap();
        assert_eq!(dir.root(), named);
        dir.write("db/password", b"pw", 0o400, None, None).unwrap();
        assert_eq!(std::fs::read(t.path().join("db/password")).unwrap(), b"pw");
        dir.wipe_all().unwrap();
        assert!(!t.path().join("db").exists());
        assert!(t.path().exists(), "the caller removes what it mounted");
        // Writable by others: refused, not adopted.
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            SecretsDir::adopt_fd(t.path(), open(t.path())),
            Err(DirError::UnsafeDir { .. })
        ));
        // Not a tmpfs: refused.
        let disk = tempfile::tempdir().unwrap();
        if !sys::is_tmpfs(disk.path()).unwrap() {
            assert!(matches!(
                SecretsDir::adopt_fd(disk.path(), open(disk.path())),
                Err(DirError::NotTmpfs { .. })
            ));
        }
    }

    /// A file system mounted inside the secrets directory (a volume at
    /// /run/secrets/tls) is not written through; the control beside it is.
    #[test]
    fn a_mount_below_the_root_is_not_written_through() {
        let t = shm();
        std::fs::create_dir(t.path().join("tls")).unwrap();
        let below = t.path().join("tls");
        sys::mount_tmpfs(&below, 1 << 20).expect("mount a tmpfs (the suite runs as root)");
        let mut dir = SecretsDir::open(t.path(), 1 << 20).unwrap();
        let r = dir.write("tls/cert", b"crt", 0o400, None, None);
        assert!(matches!(r, Err(DirError::BadPath { .. })), "{r:?}");
        assert!(!below.join("cert").exists());
        dir.write("db/password", b"pw", 0o400, None, None).unwrap();
        assert_eq!(std::fs::read(t.path().join("db/password")).unwrap(), b"pw");
        dir.wipe_all().unwrap();
        nix::mount::umount(&below).unwrap();
    }

    #[test]
    fn a_successor_wipes_expired_files_and_inherits_the_rest() {
        let t = shm();
        let mut first = SecretsDir::open(t.path(), 1 << 20).unwrap();
        first.write("live", b"value-1", 0o400, None, None).unwrap();
        first.write("dead", b"value-2", 0o400, None, None).unwrap();
        let ttls = BTreeMap::from([
            ("live".to_string(), Duration::from_secs(60)),
            ("dead".to_string(), Duration::ZERO),
        ]);
        first.save_state(&ttls).unwrap();
        let state = std::fs::read_to_string(t.path().join(STATE_FILE)).unwrap();
        assert!(
            state.contains("\"live\"") && !state.contains("value-"),
            "{state}"
        );
        drop(first); // killed: no wipe

        let mut second = SecretsDir::open(t.path(), 1 << 20).unwrap();
        assert!(!t.path().join("dead").exists(), "expired file left");
        let left = second.inherited()["live"];
        assert!(left > Duration::from_secs(55) && left <= Duration::from_secs(60));
        assert_eq!(second.files().collect::<Vec<_>>(), ["live"]);
        second.wipe_all().unwrap();
        assert!(std::fs::read_dir(t.path()).unwrap().next().is_none());
    }

    #[test]
    fn temp_names_are_recognised() {
        assert!(is_temp_name(".db_password.tmp-0123456789abcdef"));
        assert!(is_temp_name(".unbaked-sidecar.tmp-0123456789abcdef"));
        for not in [
            "db_password",
            ".db.tmp-0123",
            "x.tmp-0123456789abcdef",
            ".db.tmp-0123456789abcdeg",
        ] {
            assert!(!is_temp_name(not), "{not}");
        }
    }

    #[test]
    fn split_refuses_escapes() {
        assert_eq!(
            split("a/b/c").ok().map(|(p, n)| (p, n.to_owned())),
            Some((vec!["a", "b"], "c".into()))
        );
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/",
            "a\0b",
        ] {
            assert!(
                matches!(split(bad), Err(DirError::BadPath { .. })),
                "{bad:?}"
            );
        }
    }
}
