//! Whether the broker may trust a policy file: sshd's `StrictModes` for the
//! policies directory.
//!
//! A policy file decides who gets which secret, so whoever can change one
//! can grant themselves secrets. The broker therefore loads a file only if
//! nobody but root and the broker's own uid can have written it: the file,
//! the directory it is in and every directory above it, up to `/`, must be
//! owned by root or the broker's euid and not writable by group or others;
//! a symlink in the directory may only point at a file inside it.
//!
//! Files are opened with `O_NOFOLLOW` relative to the directory descriptor
//! the walk from `/` checked, and judged by `fstat` of the descriptor that is
//! then read: there is no window between the check and the read in which a
//! path could be swapped.
//!
//! The judgement itself ([`check_meta`]) is pure; the rest walks descriptors.

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Group- and other-write bits.
const WRITABLE_BY_OTHERS: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// What was refused, for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A policy file directly in the directory.
    File,
    /// The policies directory, one of its ancestors, or a directory a
    /// symlink's target path goes through.
    Directory,
    /// The file a symlink in the policies directory points at; `link` is
    /// the symlink.
    LinkTarget { link: PathBuf },
    /// A symlink in the policies directory.
    Link,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::File => f.write_str("the file"),
            Kind::Directory => f.write_str("the directory"),
            Kind::LinkTarget { link } => write!(f, "the file {} points at", link.display()),
            Kind::Link => f.write_str("the symlink"),
        }
    }
}

/// What is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("is owned by uid {owner}, not root or the broker's uid {euid}")]
    Owner { owner: u32, euid: u32 },
    #[error("is writable by {} (mode {:04o})", writers(*.mode), .mode & 0o7777)]
    Writable { mode: u32 },
    #[error("points at {}, which is outside the policy directory", .target.display())]
    LinkLeaves { target: PathBuf },
    #[error("points at {}, which is or goes through another symlink", .target.display())]
    LinkChain { target: PathBuf },
    #[error("is not a regular file")]
    NotAFile,
    #[error("is not a directory")]
    NotADirectory,
    #[error("cannot be opened: {0}")]
    Io(std::io::Error),
}

/// The broker refuses a policy file (or every file, when it is about a
/// directory): what, where, why, and the command that fixes it.
///
/// `Display` is one line: `policies/x.toml is writable by others (mode
/// 0666): chmod 0644 policies/x.toml`.
#[derive(Debug, thiserror::Error)]
#[error("{} {problem}: {}", .path.display(), fix(.path, .problem))]
pub struct Refused {
    /// The file or directory to fix.
    pub path: PathBuf,
    pub kind: Kind,
    pub problem: Problem,
}

impl Refused {
    pub(crate) fn new(path: impl Into<PathBuf>, kind: Kind, problem: Problem) -> Refused {
        Refused {
            path: path.into(),
            kind,
            problem,
        }
    }

    /// `the file is writable by others (mode 0666)`, for a diagnostic that
    /// already names the file.
    pub fn message(&self) -> String {
        format!("{} {}", self.kind, self.problem)
    }

    /// What to do, and why it matters.
    pub fn hint(&self) -> String {
        format!(
            "{}: policy files decide who gets secrets, so the broker loads them only if nobody but root and its own uid can change them",
            fix(&self.path, &self.problem)
        )
    }
}

fn writers(mode: u32) -> &'static str {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group and others",
        (true, false) => "group",
        _ => "others",
    }
}

fn fix(path: &Path, problem: &Problem) -> String {
    let path = path.display();
    match problem {
        Problem::Owner { .. } => format!("chown root {path}"),
        Problem::Writable { mode } => {
            format!("chmod {:04o} {path}", mode & 0o7777 & !WRITABLE_BY_OTHERS)
        }
        Problem::LinkLeaves { .. } => format!(
            "replace {path} with a copy of the file, or move the file into the policy directory and link to it with a relative path"
        ),
        Problem::LinkChain { .. } => format!("point {path} straight at the file"),
        Problem::NotAFile => format!("replace {path} with a regular file"),
        Problem::NotADirectory => format!("point the broker at a directory, not {path}"),
        Problem::Io(_) => format!("check that {path} exists and is readable"),
    }
}

/// Owner and permission bits of a file or directory, as `fstat` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub uid: u32,
    /// The whole `st_mode`, type bits included.
    pub mode: u32,
}

impl From<&FileStat> for Meta {
    fn from(st: &FileStat) -> Meta {
        Meta {
            uid: st.st_uid,
            // `st_mode` is u32 on Linux and u16 on some BSDs.
            #[allow(clippy::useless_conversion)]
            mode: u32::from(st.st_mode),
        }
    }
}

impl Meta {
    fn is(&self, kind: SFlag) -> bool {
        self.mode & SFlag::S_IFMT.bits() == kind.bits()
    }
}

/// Where in the walk a directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// `/` up to the parent of the policies directory.
    Ancestor,
    /// The policies directory, a directory inside it, or a policy file.
    Inside,
}

/// The owner and mode rules, sshd-style (OpenSSH's `safe_path`): owned by
/// root or `euid`, not writable by group or others. Every problem is
/// returned, so an operator fixes them in one round.
///
/// One exception, for ancestors only: a directory owned by root with the
/// sticky bit (`/tmp`, `/dev/shm`, mode 1777) may be writable by others.
/// In a sticky directory only an entry's owner and the directory's owner
/// (root) can rename or remove the entry, and the walk checks the next
/// component by the same rules, so it is owned by root or the broker's
/// uid: nobody else can swap it for a directory of their own. A name
/// another user created first would be theirs, and refused as such. sshd
/// refuses even this; we accept it because a policies directory made by
/// root inside root's own private temporary directory (what `tempfile`
/// gives the tests under /tmp) is as safe as one under /etc. The policies
/// directory itself is never allowed to be writable by others, sticky or
/// not: anyone could add a file to it.
pub(crate) fn check_meta(
    path: &Path,
    kind: &Kind,
    meta: Meta,
    place: Place,
    euid: u32,
) -> Vec<Refused> {
    let mut refused = Vec::new();
    if meta.uid != 0 && meta.uid != euid {
        refused.push(Refused::new(
            path,
            kind.clone(),
            Problem::Owner {
                owner: meta.uid,
                euid,
            },
        ));
    }
    let sticky_root_ancestor = place == Place::Ancestor && meta.mode & STICKY != 0 && meta.uid == 0;
    if meta.mode & WRITABLE_BY_OTHERS != 0 && !sticky_root_ancestor {
        refused.push(Refused::new(
            path,
            kind.clone(),
            Problem::Writable { mode: meta.mode },
        ));
    }
    refused
}

fn io(path: &Path, kind: Kind, e: Errno) -> Refused {
    Refused::new(path, kind, Problem::Io(std::io::Error::from(e)))
}

fn meta_of(fd: impl AsFd, path: &Path, kind: &Kind) -> Result<Meta, Refused> {
    fstat(fd)
        .map(|st| Meta::from(&st))
        .map_err(|e| io(path, kind.clone(), e))
}

/// `O_PATH` where the kernel has it: a directory on the way only needs to
/// be searched (a non-root broker may not be able to list `/home`).
#[cfg(any(target_os = "linux", target_os = "android"))]
const WALK: OFlag = OFlag::O_PATH;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const WALK: OFlag = OFlag::O_RDONLY;

/// The policies directory, opened through a walk from `/` that checked
/// every component, ready to list and to open files in.
#[derive(Debug)]
pub(crate) struct TrustedDir {
    /// As the caller named it: the prefix of every file's path in messages.
    pub path: PathBuf,
    /// After `realpath`: what the walk followed, component by component.
    pub real: PathBuf,
    pub fd: OwnedFd,
    pub euid: u32,
}

/// Opens `dir` for [`TrustedDir::open_file`]. `Err` when it cannot be
/// opened at all; otherwise the directory and every problem the walk found
/// (empty when the directory and all its ancestors may be trusted).
///
/// The configured path may go through symlinks (`/etc/unbaked/policies` →
/// `/srv/policies`): it is resolved once, and then the real path is walked
/// with `O_NOFOLLOW` from `/`, each step opened relative to the last and
/// judged by `fstat`, so what is checked is what is read.
pub(crate) fn open_dir(dir: &Path, euid: u32) -> Result<(TrustedDir, Vec<Refused>), Refused> {
    let real = std::fs::canonicalize(dir)
        .map_err(|e| Refused::new(dir, Kind::Directory, Problem::Io(e)))?;
    let mut refused = Vec::new();
    let parts: Vec<&std::ffi::OsStr> = real
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let root = Path::new("/");
    let flags = |last: bool| {
        let how = if last { OFlag::O_RDONLY } else { WALK };
        how | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
    };
    let mut fd = nix::fcntl::open(root, flags(parts.is_empty()), Mode::empty())
        .map_err(|e| io(root, Kind::Directory, e))?;
    let mut here = root.to_path_buf();
    let mut check = |fd: &OwnedFd, here: &Path, last: bool| -> Result<(), Refused> {
        let meta = meta_of(fd, here, &Kind::Directory)?;
        let place = if last { Place::Inside } else { Place::Ancestor };
        refused.extend(check_meta(here, &Kind::Directory, meta, place, euid));
        Ok(())
    };
    check(&fd, &here, parts.is_empty())?;
    for (i, name) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        here.push(name);
        fd = openat(&fd, *name, flags(last), Mode::empty()).map_err(|e| match e {
            // Swapped for a symlink since `realpath`.
            Errno::ELOOP | Errno::ENOTDIR => {
                Refused::new(&here, Kind::Directory, Problem::NotADirectory)
            }
            e => io(&here, Kind::Directory, e),
        })?;
        check(&fd, &here, last)?;
    }
    let dir = TrustedDir {
        path: dir.to_path_buf(),
        real,
        fd,
        euid,
    };
    Ok((dir, refused))
}

/// What one directory entry turned out to be.
#[derive(Debug)]
pub(crate) enum Entry {
    /// A policy file that may be trusted, opened for reading.
    Trusted(File),
    /// Not a file (a directory named `x.toml`, a fifo, a socket): skipped,
    /// as the loader always has.
    Skip,
}

impl TrustedDir {
    /// The names in the directory, in no particular order.
    pub fn names(&self) -> Result<Vec<OsString>, Refused> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| Refused::new(&self.path, Kind::Directory, Problem::Io(e)))?;
        let mut dir = Dir::from_fd(fd).map_err(|e| io(&self.path, Kind::Directory, e))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| io(&self.path, Kind::Directory, e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name)
                        .to_os_string(),
                );
            }
        }
        Ok(names)
    }

    /// Opens `name` for reading if it may be trusted: a regular file owned
    /// by root or the broker and not writable by others, or a symlink to
    /// such a file inside this directory (relative, no `..`, each directory
    /// on the way checked like this one, no further symlinks).
    pub fn open_file(&self, name: &std::ffi::OsStr) -> Result<Entry, Vec<Refused>> {
        let path = self.path.join(name);
        let st = fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| vec![io(&path, Kind::File, e)])?;
        let meta = Meta::from(&st);
        if meta.is(SFlag::S_IFLNK) {
            self.open_link(name, &path)
        } else if meta.is(SFlag::S_IFREG) {
            self.open_regular(&self.fd, name, &path, Kind::File)
                .map(Entry::Trusted)
        } else {
            Ok(Entry::Skip)
        }
    }

    /// `openat(O_NOFOLLOW)`, then the rules on `fstat` of what was opened.
    fn open_regular(
        &self,
        parent: &OwnedFd,
        name: &std::ffi::OsStr,
        path: &Path,
        kind: Kind,
    ) -> Result<File, Vec<Refused>> {
        // O_NONBLOCK: a fifo swapped in cannot hang the loader; O_NOCTTY:
        // nor can a terminal become the broker's.
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let fd = openat(parent, name, flags, Mode::empty()).map_err(|e| {
            let problem = match (e, &kind) {
                (Errno::ELOOP, Kind::LinkTarget { .. }) => Problem::LinkChain {
                    target: path.to_path_buf(),
                },
                (Errno::ELOOP, _) => Problem::NotAFile,
                (e, _) => Problem::Io(e.into()),
            };
            let at = match &kind {
                Kind::LinkTarget { link } => link.clone(),
                _ => path.to_path_buf(),
            };
            let kind = match kind.clone() {
                Kind::LinkTarget { .. } => Kind::Link,
                kind => kind,
            };
            vec![Refused::new(at, kind, problem)]
        })?;
        let meta = meta_of(&fd, path, &kind).map_err(|r| vec![r])?;
        if !meta.is(SFlag::S_IFREG) {
            return Err(vec![Refused::new(path, kind, Problem::NotAFile)]);
        }
        let refused = check_meta(path, &kind, meta, Place::Inside, self.euid);
        if refused.is_empty() {
            Ok(File::from(fd))
        } else {
            Err(refused)
        }
    }

    fn open_link(&self, name: &std::ffi::OsStr, link: &Path) -> Result<Entry, Vec<Refused>> {
        let target =
            PathBuf::from(readlinkat(&self.fd, name).map_err(|e| vec![io(link, Kind::Link, e)])?);
        let leaves = || {
            vec![Refused::new(
                link,
                Kind::Link,
                Problem::LinkLeaves {
                    target: target.clone(),
                },
            )]
        };
        let parts = inside(&target, &self.real).ok_or_else(leaves)?;
        let Some((file, dirs)) = parts.split_last() else {
            return Err(leaves());
        };
        // Each directory on the way: no symlink, owner and mode as for the
        // policies directory itself.
        let mut parent: Option<OwnedFd> = None;
        let mut at = self.path.clone();
        for dir in dirs {
            at.push(dir);
            let flags = WALK | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let from = parent.as_ref().unwrap_or(&self.fd);
            let fd = openat(from, dir.as_os_str(), flags, Mode::empty()).map_err(|e| {
                let problem = match e {
                    Errno::ELOOP | Errno::ENOTDIR => Problem::LinkChain {
                        target: target.clone(),
                    },
                    e => Problem::Io(e.into()),
                };
                vec![Refused::new(link, Kind::Link, problem)]
            })?;
            let meta = meta_of(&fd, &at, &Kind::Directory).map_err(|r| vec![r])?;
            let refused = check_meta(&at, &Kind::Directory, meta, Place::Inside, self.euid);
            if !refused.is_empty() {
                return Err(refused);
            }
            parent = Some(fd);
        }
        at.push(file);
        let kind = Kind::LinkTarget {
            link: link.to_path_buf(),
        };
        let from = parent.as_ref().unwrap_or(&self.fd);
        self.open_regular(from, file.as_os_str(), &at, kind)
            .map(Entry::Trusted)
    }
}

/// The components of a symlink's `target` below the policies directory
/// (whose real path is `real`), or `None` when it leaves it. A relative
/// target may not use `..` at all (even `sub/../x.toml`: simpler to refuse
/// than to reason about); an absolute one must start with `real`. `.`
/// components are dropped.
pub(crate) fn inside(target: &Path, real: &Path) -> Option<Vec<PathBuf>> {
    let rest = if target.is_absolute() {
        target.strip_prefix(real).ok()?
    } else {
        target
    };
    let mut parts = Vec::new();
    for c in rest.components() {
        match c {
            Component::Normal(name) => parts.push(PathBuf::from(name)),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: u32 = 0;
    const BROKER: u32 = 999;
    const OTHER: u32 = 2002;
    const DIR: u32 = 0o040000;
    const REG: u32 = 0o100000;

    fn problems(meta: Meta, place: Place, euid: u32) -> Vec<String> {
        check_meta(Path::new("p/x.toml"), &Kind::File, meta, place, euid)
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    fn meta(uid: u32, mode: u32) -> Meta {
        Meta { uid, mode }
    }

    #[test]
    fn owned_by_root_or_the_broker_and_not_writable_by_others_is_trusted() {
        for uid in [ROOT, BROKER] {
            for mode in [0o644, 0o600, 0o444, 0o755, 0o4755] {
                assert!(problems(meta(uid, REG | mode), Place::Inside, BROKER).is_empty());
            }
        }
        // A broker running as root trusts root only.
        assert!(problems(meta(ROOT, REG | 0o644), Place::Inside, ROOT).is_empty());
    }

    #[test]
    fn every_problem_is_named_with_its_fix() {
        assert_eq!(
            problems(meta(ROOT, REG | 0o666), Place::Inside, ROOT),
            ["p/x.toml is writable by group and others (mode 0666): chmod 0644 p/x.toml"]
        );
        assert_eq!(
            problems(meta(ROOT, REG | 0o664), Place::Inside, ROOT),
            ["p/x.toml is writable by group (mode 0664): chmod 0644 p/x.toml"]
        );
        assert_eq!(
            problems(meta(OTHER, REG | 0o646), Place::Inside, ROOT),
            [
                "p/x.toml is owned by uid 2002, not root or the broker's uid 0: chown root p/x.toml",
                "p/x.toml is writable by others (mode 0646): chmod 0644 p/x.toml",
            ]
        );
        // Special bits are kept in the suggested mode.
        assert_eq!(
            problems(meta(ROOT, DIR | 0o1777), Place::Inside, ROOT),
            ["p/x.toml is writable by group and others (mode 1777): chmod 1755 p/x.toml"]
        );
    }

    #[test]
    fn a_sticky_root_owned_ancestor_may_be_world_writable_and_nothing_else() {
        // /tmp, /dev/shm: the next component is checked by the same rules.
        assert!(problems(meta(ROOT, DIR | 0o1777), Place::Ancestor, BROKER).is_empty());
        // Not sticky: anyone can rename the next component away.
        assert_eq!(
            problems(meta(ROOT, DIR | 0o777), Place::Ancestor, BROKER).len(),
            1
        );
        // Sticky but owned by someone else: they can rename anything in it.
        assert_eq!(
            problems(meta(OTHER, DIR | 0o1777), Place::Ancestor, BROKER).len(),
            2
        );
        // Sticky and owned by the (non-root) broker: root only, as sshd
        // would not allow even that.
        assert_eq!(
            problems(meta(BROKER, DIR | 0o1777), Place::Ancestor, BROKER).len(),
            1
        );
        // The policies directory itself: never, sticky or not.
        assert_eq!(
            problems(meta(ROOT, DIR | 0o1777), Place::Inside, BROKER).len(),
            1
        );
    }

    #[test]
    fn link_targets_must_stay_inside() {
        let real = Path::new("/etc/unbaked/policies");
        let got = |t: &str| inside(Path::new(t), real);
        assert_eq!(got("b.toml"), Some(vec![PathBuf::from("b.toml")]));
        assert_eq!(
            got("./available/b.toml"),
            Some(vec![PathBuf::from("available"), PathBuf::from("b.toml")])
        );
        assert_eq!(
            got("/etc/unbaked/policies/available/b.toml"),
            Some(vec![PathBuf::from("available"), PathBuf::from("b.toml")])
        );
        for leaves in [
            "../b.toml",
            "available/../../b.toml",
            "available/../b.toml",
            "/etc/unbaked/b.toml",
            "/etc/unbaked/policies-evil/b.toml",
            "/home/mallory/b.toml",
            "/etc/unbaked/policies",
            ".",
            "",
        ] {
            assert_eq!(got(leaves), None, "{leaves}");
        }
    }

    #[test]
    fn kinds_read_as_sentences() {
        let r = Refused::new(
            "p/a.toml",
            Kind::LinkTarget {
                link: "p/x.toml".into(),
            },
            Problem::Owner {
                owner: OTHER,
                euid: ROOT,
            },
        );
        assert_eq!(
            r.message(),
            "the file p/x.toml points at is owned by uid 2002, not root or the broker's uid 0"
        );
        assert!(r.hint().starts_with("chown root p/a.toml: "));
    }
}
