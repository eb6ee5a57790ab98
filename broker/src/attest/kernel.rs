//! What the kernel says about a process, read from `/proc`: the identity of
//! its namespaces (the nsfs device and inode behind `/proc/<pid>/ns/<kind>`)
//! and its cgroup membership as a whole.
//!
//! **Invariant:** a caller is a container's process only if the kernel puts
//! it in that container's pid, mount and network namespaces and inside its
//! cgroups, compared with the container's init (the engine's `State.Pid`).
//! A cgroup path is text that anyone with a delegated subtree can choose;
//! a namespace's inode is not.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The namespaces a container's processes share with its init. (`user` is
/// left out: it is the host's unless the engine remaps, and then still the
/// same for every container of that engine; `uts`/`ipc` add nothing the
/// mount and pid namespaces do not already pin.)
pub const CONTAINER_NAMESPACES: [&str; 3] = ["pid", "mnt", "net"];

/// A namespace, as the kernel names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

/// Why a process is not a container's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotInContainer {
    #[error("its {0} namespace is not the container's")]
    Namespace(&'static str),
    #[error("its cgroup ({0}) is not inside the container's")]
    Cgroup(String),
    #[error("cannot read /proc/{pid}/{what}: {detail}")]
    Unreadable {
        pid: i32,
        what: String,
        detail: String,
    },
}

/// The namespace `kind` (`pid`, `mnt`, ...) of `pid`.
pub fn namespace(proc_root: &Path, pid: i32, kind: &str) -> Result<NsId, NotInContainer> {
    let path = proc_root.join(pid.to_string()).join("ns").join(kind);
    std::fs::metadata(&path)
        .map(|m| NsId {
            dev: m.dev(),
            ino: m.ino(),
        })
        .map_err(|e| NotInContainer::Unreadable {
            pid,
            what: format!("ns/{kind}"),
            detail: e.to_string(),
        })
}

/// `/proc/<pid>/cgroup` as hierarchy (`id:controllers`) → path.
pub fn cgroups(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter_map(|line| {
            let (id, rest) = line.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            // `id:controllers` is the key: it is prefix of `line`.
            let key_len = id.len() + 1 + controllers.len();
            Some((&line[..key_len], path))
        })
        .collect()
}

/// Whether `path` is `root` or below it, by whole components.
fn within(path: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    path == root || root.is_empty() || path.strip_prefix(root).is_some_and(|r| r.starts_with('/'))
}

/// Every hierarchy the container's init is in, the caller is in too, at the
/// same path or below it (a container may make sub-cgroups of its own).
pub fn cgroups_within(caller: &str, init: &str) -> Result<(), NotInContainer> {
    let caller = cgroups(caller);
    let init = cgroups(init);
    if init.is_empty() {
        return Err(NotInContainer::Cgroup(
            "the container's init has none".into(),
        ));
    }
    for (hierarchy, root) in &init {
        match caller.get(hierarchy) {
            Some(path) if within(path, root) => {}
            other => {
                return Err(NotInContainer::Cgroup(format!(
                    "{hierarchy}:{}",
                    other.unwrap_or(&"none")
                )))
            }
        }
    }
    Ok(())
}

/// A small `/proc` file, read whole: open, read until the end, close.
/// `std::fs::read_to_string` would also `statx` it (for a size procfs
/// reports as 0) and start with a 32-byte probe read, so three or four
/// system calls more for the same text (a `/proc/<pid>/cgroup` read per
/// connection is the broker's cost of a connection per fetch).
pub fn read_proc(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    // Under 1 KiB: glibc consolidates its free lists before any larger
    // allocation. A host process's cgroup file is 20 to 300 bytes.
    let mut buf = vec![0u8; 512];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(2 * len, 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// `<proc_root>/<pid>/<file>`.
pub fn proc_path(proc_root: &Path, pid: i32, file: &str) -> std::path::PathBuf {
    proc_root.join(format!("{pid}/{file}"))
}

fn read_cgroup(proc_root: &Path, pid: i32) -> Result<String, NotInContainer> {
    read_proc(&proc_path(proc_root, pid, "cgroup")).map_err(|e| NotInContainer::Unreadable {
        pid,
        what: "cgroup".into(),
        detail: e.to_string(),
    })
}

/// Whether `caller` runs in the container whose init is `init`: the same
/// pid, mount and network namespaces, and inside its cgroups.
pub fn same_container(proc_root: &Path, caller: i32, init: i32) -> Result<(), NotInContainer> {
    for kind in CONTAINER_NAMESPACES {
        if namespace(proc_root, caller, kind)? != namespace(proc_root, init, kind)? {
            return Err(NotInContainer::Namespace(kind));
        }
    }
    cgroups_within(
        &read_cgroup(proc_root, caller)?,
        &read_cgroup(proc_root, init)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_lines_by_hierarchy() {
        let text = "12:pids:/docker/a\n1:name=systemd:/docker/a\n0::/x:y\n";
        let m = cgroups(text);
        assert_eq!(m["12:pids"], "/docker/a");
        assert_eq!(m["1:name=systemd"], "/docker/a");
        assert_eq!(m["0:"], "/x:y");
    }

    #[test]
    fn within_is_by_whole_components() {
        assert!(cgroups_within("0::/docker/a\n", "0::/docker/a\n").is_ok());
        assert!(cgroups_within("0::/docker/a/sub\n", "0::/docker/a\n").is_ok());
        // A sibling whose name starts with the container's is not inside it.
        assert!(cgroups_within("0::/docker/ab\n", "0::/docker/a\n").is_err());
        // A delegated subtree that names the container is not the container.
        assert!(cgroups_within("0::/user.slice/docker/a\n", "0::/docker/a\n").is_err());
        // Every hierarchy of the init must hold.
        let init = "4:pids:/docker/a\n1:name=systemd:/docker/a\n";
        let spoof = "4:pids:/docker/a\n1:name=systemd:/user.slice/user-2002.slice/a\n";
        assert!(matches!(
            cgroups_within(spoof, init),
            Err(NotInContainer::Cgroup(h)) if h.starts_with("1:name=systemd")
        ));
        assert!(cgroups_within("", init).is_err());
        assert!(cgroups_within(init, "").is_err());
    }

    /// The same text as `std::fs::read_to_string`, for a `/proc` file
    /// (size 0 to `stat`) and for one longer than the first buffer.
    #[test]
    fn read_proc_reads_the_whole_file() {
        let me = proc_path(Path::new("/proc"), std::process::id() as i32, "cgroup");
        assert_eq!(
            me,
            Path::new(&format!("/proc/{}/cgroup", std::process::id()))
        );
        let text = read_proc(&me).unwrap();
        assert!(
            text.lines().count() >= 1 && text.ends_with('\n'),
            "{text:?}"
        );
        assert_eq!(text, std::fs::read_to_string(&me).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("long");
        let body: String = (0..400).map(|i| format!("{i}:x:/{i}\n")).collect();
        assert!(body.len() > 2048);
        std::fs::write(&long, &body).unwrap();
        assert_eq!(read_proc(&long).unwrap(), body);
        assert!(read_proc(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn this_process_is_in_its_own_namespaces() {
        let me = std::process::id() as i32;
        let proc = Path::new("/proc");
        assert!(same_container(proc, me, me).is_ok());
        // pid 1 of this machine (or of the test's container) vs. a fresh
        // user+pid namespace is exercised end to end in tests/attack_identity.rs;
        // here: an unreadable pid is an error, not a match.
        assert!(matches!(
            same_container(proc, me, i32::MAX),
            Err(NotInContainer::Unreadable { .. })
        ));
    }
}
