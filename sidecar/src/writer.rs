//! The secrets directory: a tmpfs holding one file per file grant, written
//! atomically and wiped (zeroed, then unlinked) when withdrawn.
//!
//! Every path below the root is walked with `openat` and `O_NOFOLLOW`, so a
//! symlink planted in the directory never redirects a write or a wipe.

use crate::sidecar::SidecarError;
use crate::sys;
use nix::errno::Errno;
use nix::fcntl::{open, openat, renameat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode, SFlag};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct SecretsDir {
    root: PathBuf,
    mounted: bool,
    created_root: bool,
    /// Files we wrote (relative path -> length); only these are ever wiped.
    files: BTreeMap<String, u64>,
    /// Subdirectories we created, parents first.
    dirs: Vec<String>,
}

impl SecretsDir {
    /// Create `dir` (0711) if missing and make sure it is a tmpfs: use it if
    /// it is one, mount one if we may, refuse otherwise (writing nothing).
    pub fn open(dir: &Path, tmpfs_size: u64) -> Result<SecretsDir, SidecarError> {
        let io_err = |source| SidecarError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let created_root = !dir.try_exists().map_err(io_err)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .map_err(io_err)?;
        let mut mounted = false;
        if !sys::is_tmpfs(dir).map_err(io_err)? {
            if let Err(e) = sys::mount_tmpfs(dir, tmpfs_size) {
                let fs_type = sys::fs_type_name(dir);
                if created_root {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(if sys::refusal_for(e) {
                    SidecarError::NotTmpfs {
                        dir: dir.to_path_buf(),
                        fs_type,
                    }
                } else {
                    SidecarError::Mount {
                        dir: dir.to_path_buf(),
                        source: e,
                    }
                });
            }
            mounted = true;
        }
        Ok(SecretsDir {
            root: dir.to_path_buf(),
            mounted,
            created_root,
            files: BTreeMap::new(),
            dirs: Vec::new(),
        })
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
    /// wrote is zeroed once no name reaches it.
    pub fn write(
        &mut self,
        rel: &str,
        bytes: &[u8],
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), SidecarError> {
        let (parents, name) = split(rel)?;
        let Some(dir) = self.walk(rel, &parents, true)? else {
            return Err(self.io(rel, Errno::ENOENT));
        };
        let tmp = format!(
            ".{name}.tmp-{}",
            random_hex().map_err(|e| self.io_err(rel, e))?
        );
        let fd = openat(
            &dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.io(rel, e))?;
        let previous = if self.files.contains_key(rel) {
            open_no_follow(&dir, name).ok()
        } else {
            None
        };
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
                renameat(&dir, tmp.as_str(), &dir, name).map_err(|e| self.io(rel, e))
            });
        if let Err(e) = done {
            let _ = zero_fill(&file, 1);
            let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        if let Some(old) = previous {
            // Unlinked by the rename: zero the old version's pages.
            let _ = zero_fill(&File::from(old), 0);
        }
        self.files.insert(rel.to_owned(), bytes.len() as u64);
        Ok(())
    }

    /// Zero `rel` and unlink it. A missing file is fine; a symlink is unlinked
    /// without touching what it points to.
    pub fn wipe(&mut self, rel: &str) -> Result<(), SidecarError> {
        let (parents, name) = split(rel)?;
        let Some(dir) = self.walk(rel, &parents, false)? else {
            self.files.remove(rel);
            return Ok(());
        };
        match open_no_follow(&dir, name) {
            Ok(fd) => zero_fill(&File::from(fd), 1).map_err(|e| self.io_err(rel, e))?,
            Err(Errno::ENOENT) => {
                self.files.remove(rel);
                return Ok(());
            }
            Err(Errno::ELOOP) => {} // a symlink: only the link goes
            Err(e) => return Err(self.io(rel, e)),
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
    pub fn wipe_all(&mut self) -> Result<(), SidecarError> {
        let mut first = None;
        let files: Vec<String> = self.files.keys().cloned().collect();
        for rel in files {
            if let Err(e) = self.wipe(&rel) {
                first.get_or_insert(e);
            }
        }
        if let Ok(root) = open_dir(&self.root) {
            for d in self.dirs.drain(..).rev() {
                // Not empty means someone else's file is there: leave it.
                let _ = unlinkat(&root, d.as_str(), UnlinkatFlags::RemoveDir);
            }
        }
        if self.mounted {
            match sys::unmount(&self.root) {
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
    ) -> Result<Option<OwnedFd>, SidecarError> {
        let mut dir = open_dir(&self.root).map_err(|e| self.io("", e))?;
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
                    return Err(SidecarError::BadPath {
                        path: rel.into(),
                        reason: "a parent directory is a symlink or not a directory: remove it",
                    })
                }
                Err(e) => return Err(self.io(rel, e)),
            };
        }
        Ok(Some(dir))
    }

    fn io(&self, rel: &str, e: Errno) -> SidecarError {
        self.io_err(rel, io::Error::from(e))
    }

    fn io_err(&self, rel: &str, source: io::Error) -> SidecarError {
        SidecarError::Io {
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
fn split(rel: &str) -> Result<(Vec<&str>, &str), SidecarError> {
    let parts: Vec<&str> = rel.split('/').collect();
    let bad = |c: &&str| c.is_empty() || *c == "." || *c == ".." || c.contains('\0');
    match parts.split_last() {
        Some((name, parents)) if !parts.iter().any(bad) => Ok((parents.to_vec(), name)),
        _ => Err(SidecarError::BadPath {
            path: rel.into(),
            reason: "not a plain relative path inside the secrets directory",
        }),
    }
}

fn open_dir(path: &Path) -> nix::Result<OwnedFd> {
    open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn open_no_follow(dir: &OwnedFd, name: &str) -> nix::Result<OwnedFd> {
    // O_NONBLOCK: a planted FIFO must not hang us.
    let flags = OFlag::O_WRONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY;
    openat(dir, name, flags, Mode::empty())
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
                matches!(split(bad), Err(SidecarError::BadPath { .. })),
                "{bad:?}"
            );
        }
    }
}
