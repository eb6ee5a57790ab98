//! What the kernel says a path is: device and inode after following links,
//! for the isolation check of mounts ([`crate::isolation::Protected`]).
//!
//! The I/O half of that check: `attest::docker` fills each live mount's
//! `source_id` with [`file_id`], the launch fills the plan's bind sources
//! the same way, and both build the [`Protected`] set with [`protected`].
//! The judging stays pure, in [`crate::isolation`].

use crate::isolation::{FileId, Protected, RUNTIME_SOCKETS};
use crate::launch::{HostFacts, Parsed, Volume};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The file `path` names, following every link (`stat`, not `lstat`), so a
/// symlink, a bind mount or `/proc/<pid>/root/...` all come out as what
/// they reach. `None` when it does not exist or cannot be read.
pub fn file_id(path: &Path) -> Option<FileId> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// Run `f` where the engine resolves paths: in the host's mount namespace
/// ([`crate::host_mount::in_host`]), so a broker in a private one (the
/// systemd unit's `ProtectSystem=`, `PrivateTmp=`; a container sharing the
/// engine's socket) compares the files the engine would mount, not its own
/// `/run` or `/tmp`. Links in a path resolve there too, against the host's
/// root. When that namespace is closed to the broker, `f` runs in the
/// broker's own view, as it did before, and the reason is logged.
pub fn as_engine_sees<T, F>(engine_socket: &Path, f: F) -> T
where
    T: Send + 'static,
    F: Fn() -> T + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let there = f.clone();
    match crate::host_mount::in_host(engine_socket, move || Ok(there())) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(reason = %e, "mount sources are judged in the broker's own mount namespace");
            f()
        }
    }
}

/// [`file_id`] of each mount source, as the engine sees it
/// ([`as_engine_sees`]).
pub fn host_file_ids(engine_socket: &Path, sources: Vec<String>) -> Vec<Option<FileId>> {
    as_engine_sees(engine_socket, move || {
        sources.iter().map(|s| file_id(Path::new(s))).collect()
    })
}

/// What no container may mount: the engine's socket (and the container
/// runtime sockets of [`RUNTIME_SOCKETS`] that exist here), every directory
/// above each, the engine's data root and every directory above it, each
/// resolved (`canonicalize`) before its ancestors are walked.
pub fn protected(engine_socket: &Path, data_root: Option<&Path>) -> Protected {
    let mut out = Protected::default();
    let roots = std::iter::once(engine_socket.to_path_buf())
        .chain(RUNTIME_SOCKETS.iter().map(PathBuf::from))
        .chain(data_root.map(Path::to_path_buf));
    for root in roots {
        for id in with_ancestors(&root) {
            if !out.contains(&id) {
                out.ids.push(id);
            }
        }
    }
    out
}

/// [`protected`] and the launches' directory (every `unbaked run`
/// container's files) with every directory above it: what the live
/// isolation check of a container compares its mounts against.
pub fn protected_with_launches(
    engine_socket: &Path,
    data_root: Option<&Path>,
    launches: &Path,
) -> Protected {
    let mut out = protected(engine_socket, data_root);
    for id in with_ancestors(launches) {
        if !out.contains(&id) {
            out.ids.push(id);
        }
    }
    out
}

/// [`protected_with_launches`], kept between requests while its roots
/// stay the same files. Each use stats the roots (the engine socket, the
/// runtime sockets, the data root, the launches' directory: one `stat`
/// each) and rebuilds the set when any of them names another file than
/// when it was built (a restarted engine's new socket), appeared or went
/// (a runtime socket), or the data root became known. A rebuild resolves
/// each root and stats every directory above it: about fifty system calls
/// that a container's request no longer makes each time.
#[derive(Debug, Default)]
pub struct ProtectedCache {
    kept: Mutex<Option<Kept>>,
}

/// The roots, each with the file it named, and the set built from them.
type Kept = (Vec<(PathBuf, Option<FileId>)>, Arc<Protected>);

impl ProtectedCache {
    pub fn get(
        &self,
        engine_socket: &Path,
        data_root: Option<&Path>,
        launches: &Path,
    ) -> Arc<Protected> {
        // Stated before a rebuild reads anything: a root that changes
        // meanwhile no longer matches at the next use.
        let roots: Vec<(PathBuf, Option<FileId>)> = std::iter::once(engine_socket)
            .chain(RUNTIME_SOCKETS.iter().map(Path::new))
            .chain(data_root)
            .chain(std::iter::once(launches))
            .map(|p| (p.to_path_buf(), file_id(p)))
            .collect();
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, set)) = kept.as_ref().filter(|(was, _)| *was == roots) {
            return set.clone();
        }
        let (sock, data, dir) = (
            engine_socket.to_path_buf(),
            data_root.map(Path::to_path_buf),
            launches.to_path_buf(),
        );
        let set = Arc::new(as_engine_sees(engine_socket, move || {
            protected_with_launches(&sock, data.as_deref(), &dir)
        }));
        *kept = Some((roots, set.clone()));
        set
    }
}

/// `path` (links resolved) and every directory above it, by identity;
/// empty when `path` does not exist (a runtime socket this host lacks).
pub fn with_ancestors(path: &Path) -> Vec<FileId> {
    let Ok(real) = std::fs::canonicalize(path) else {
        return Vec::new();
    };
    real.ancestors().filter_map(file_id).collect()
}

/// Everything the launch plan needs to know about this host by identity,
/// for `parsed` ([`crate::launch::HostFacts`]): `volumes` are the existing
/// volumes among [`crate::launch::named_volumes`] (from the engine), and
/// `image_labels` the image's `Config.Labels`.
pub fn host_facts(
    parsed: &Parsed,
    engine_socket: &Path,
    data_root: Option<&Path>,
    containers_dir: &Path,
    volumes: BTreeMap<String, Volume>,
    image_labels: BTreeMap<String, String>,
) -> HostFacts {
    let paths = crate::launch::host_paths(parsed, &volumes);
    let (sock, data, dir) = (
        engine_socket.to_path_buf(),
        data_root.map(Path::to_path_buf),
        containers_dir.to_path_buf(),
    );
    let (protected, secrets_dirs, sources) = as_engine_sees(engine_socket, move || {
        (
            protected(&sock, data.as_deref()),
            with_ancestors(&dir),
            ids_of(paths.iter().map(String::as_str)),
        )
    });
    HostFacts {
        protected,
        secrets_dirs,
        sources,
        volumes,
        image_labels,
    }
}

/// The identity of each absolute path in `paths` that exists, keyed by the
/// path as written (the launch plan's bind sources and volume devices).
pub fn ids_of<'a>(paths: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, FileId> {
    paths
        .into_iter()
        .filter(|p| p.starts_with('/'))
        .filter_map(|p| file_id(Path::new(p)).map(|id| (p.to_string(), id)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_id_sees_through_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("real");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&dir, t.path().join("link")).unwrap();
        let real = file_id(&dir).unwrap();
        assert_eq!(file_id(&t.path().join("link")), Some(real));
        assert_eq!(file_id(&t.path().join("link/.")), Some(real));
        assert_ne!(file_id(t.path()), Some(real));
        assert_eq!(file_id(&t.path().join("missing")), None);
        let ids = ids_of([
            t.path().join("link").to_str().unwrap(),
            "relative",
            "/nonexistent/x",
        ]);
        assert_eq!(ids.len(), 1);
        assert_eq!(ids.values().next(), Some(&real));
    }

    /// The kept set is the one a fresh build makes, and it is built again
    /// when a root names another file or the data root becomes known.
    #[test]
    fn the_kept_set_follows_its_roots() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("run/docker.sock");
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        std::fs::write(&sock, b"").unwrap();
        let launches = t.path().join("unbaked/containers");
        std::fs::create_dir_all(&launches).unwrap();
        let data = t.path().join("lib/docker");
        std::fs::create_dir_all(&data).unwrap();
        let cache = ProtectedCache::default();
        let first = cache.get(&sock, None, &launches);
        assert_eq!(*first, protected_with_launches(&sock, None, &launches));
        assert!(first.contains(&file_id(&launches).unwrap()));
        assert!(Arc::ptr_eq(&first, &cache.get(&sock, None, &launches)));
        // The data root becomes known: built again, with it.
        let known = cache.get(&sock, Some(&data), &launches);
        assert!(!Arc::ptr_eq(&first, &known));
        assert!(known.contains(&file_id(&data).unwrap()));
        assert!(!first.contains(&file_id(&data).unwrap()), "control");
        // The engine restarts and makes a new socket (a new inode; the old
        // one held open, so its inode is not reused): built again.
        let old = file_id(&sock).unwrap();
        let _held = std::fs::File::open(&sock).unwrap();
        std::fs::rename(&sock, t.path().join("run/old.sock")).unwrap();
        std::fs::write(&sock, b"").unwrap();
        let new = file_id(&sock).unwrap();
        assert_ne!(old, new);
        assert!(
            !known.contains(&new),
            "control: the kept set lacks the new socket"
        );
        let rebuilt = cache.get(&sock, Some(&data), &launches);
        assert!(rebuilt.contains(&new));
        assert_eq!(
            *rebuilt,
            protected_with_launches(&sock, Some(&data), &launches)
        );
    }

    #[test]
    fn protected_holds_the_socket_the_data_root_and_every_ancestor() {
        let t = tempfile::tempdir().unwrap();
        let run = t.path().join("run");
        std::fs::create_dir_all(run.join("engine")).unwrap();
        let sock = run.join("engine/docker.sock");
        std::fs::write(&sock, b"").unwrap();
        // The socket is named through a symlinked directory, as /var/run is.
        std::os::unix::fs::symlink(&run, t.path().join("varrun")).unwrap();
        let data = t.path().join("lib/docker");
        std::fs::create_dir_all(&data).unwrap();
        let p = protected(&t.path().join("varrun/engine/docker.sock"), Some(&data));
        for must in [
            sock.clone(),
            run.join("engine"),
            run.clone(),
            t.path().join("varrun"),
            data.clone(),
            t.path().join("lib"),
            t.path().to_path_buf(),
            PathBuf::from("/"),
        ] {
            let id = file_id(&must).unwrap();
            assert!(p.contains(&id), "{} is not protected", must.display());
        }
        // Beside the socket, below the data root: not protected.
        std::fs::create_dir(run.join("other")).unwrap();
        std::fs::create_dir(data.join("volumes")).unwrap();
        for free in [run.join("other"), data.join("volumes")] {
            assert!(!p.contains(&file_id(&free).unwrap()), "{}", free.display());
        }
        // The plan's view: a bind of the symlinked directory is the socket's.
        let args: Vec<String> = [
            "-v",
            &format!("{}:/x", t.path().join("varrun").display()),
            "img",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let parsed = crate::launch::parse(&args).unwrap();
        let h = host_facts(
            &parsed,
            &sock,
            None,
            &data.join("volumes"),
            BTreeMap::new(),
            BTreeMap::new(),
        );
        let src = h.sources.values().next().unwrap();
        assert!(h.protected.contains(src));
        assert!(h.secrets_dirs.contains(&file_id(&data).unwrap()));
        // No duplicates.
        let mut ids = p.ids.clone();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), p.ids.len());
    }
}
