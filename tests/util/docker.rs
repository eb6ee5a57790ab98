//! The Docker side of the harness: the engine must be there (a missing
//! engine fails the test, it never skips it), test images built FROM
//! scratch out of Debian's static busybox, the static `unbaked` binary, and
//! guards that remove containers and networks a test created.

use super::{output, text, uid, Broker};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The image tests run: busybox (sh, nc, httpd, ...) and nothing else.
/// ENTRYPOINT `/bin/sh -c`, CMD `echo from-image-cmd`, so a command after
/// the image is a shell script.
pub const IMAGE: &str = "unbaked-test/busybox:1";
const BUSYBOX: &str = "/bin/busybox";

/// A `docker` CLI command.
pub fn docker() -> Command {
    let mut c = Command::new("docker");
    c.env_remove("DOCKER_HOST");
    c
}

/// Run `docker ARGS`, panicking with its stderr on failure; stdout trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = output(docker().args(args));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// The engine must answer: a test that needs it fails without it.
pub fn require_engine() {
    static OK: OnceLock<()> = OnceLock::new();
    OK.get_or_init(|| {
        let out = docker().args(["version", "--format", "{{.Server.Version}}"]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "the Docker Engine is not reachable ({}): start it (scripts/install-docker-deps checks it); these tests need a real engine",
                text(&o.stderr).trim()
            ),
            Err(e) => panic!("the docker CLI cannot run ({e}): install Docker (scripts/install-docker-deps)"),
        }
    });
}

/// Build the busybox test image once per test binary (cached by docker).
pub fn test_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        require_engine();
        let ctx = busybox_context();
        docker_ok(&[
            "build",
            "-q",
            "-t",
            IMAGE,
            &ctx.path().display().to_string(),
        ]);
    });
    IMAGE
}

/// The build context of [`IMAGE`]: Debian's static busybox and a
/// Dockerfile FROM scratch (no pull).
pub fn busybox_context() -> tempfile::TempDir {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: run scripts/install-docker-deps (apt-get install busybox-static)"
    );
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(BUSYBOX, ctx.path().join("busybox")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"echo from-image-cmd\"]\n",
    )
    .unwrap();
    ctx
}

/// The statically linked release `unbaked`, built before the tests by
/// scripts/test (scripts/build-static) and handed in as `UNBAKED_STATIC_BIN`.
/// A test never builds it: a release build hidden inside a test is slow,
/// its failure reads as a test failure, and parallel test binaries would
/// race on it.
pub fn static_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let Some(p) = std::env::var_os("UNBAKED_STATIC_BIN") else {
            panic!(
                "UNBAKED_STATIC_BIN is not set: run the suite with scripts/test, or build the static binary first: \
                 UNBAKED_STATIC_BIN=$(scripts/build-static) cargo test"
            )
        };
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "UNBAKED_STATIC_BIN={} is not a file: build it with scripts/build-static",
            p.display()
        );
        p
    })
}

/// The repository's Dockerfile (FROM scratch, the static binary), built
/// once per test binary from a context holding only that binary.
pub fn sidecar_image() -> &'static str {
    const TAG: &str = "unbaked-test/unbaked:1";
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        require_engine();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let ctx = tempfile::tempdir().unwrap();
        let rel = Path::new("target/x86_64-unknown-linux-gnu/release/unbaked");
        std::fs::create_dir_all(ctx.path().join(rel.parent().unwrap())).unwrap();
        std::fs::copy(static_binary(), ctx.path().join(rel)).unwrap();
        std::fs::copy(root.join("Dockerfile"), ctx.path().join("Dockerfile")).unwrap();
        docker_ok(&["build", "-q", "-t", TAG, &ctx.path().display().to_string()]);
    });
    TAG
}

/// A name no other test (or test run) uses: `prefix-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes containers and networks by name when the test ends, pass or fail.
#[derive(Default)]
pub struct Cleanup {
    containers: Vec<String>,
    networks: Vec<String>,
    volumes: Vec<String>,
}

impl Cleanup {
    pub fn container(&mut self, name: &str) -> String {
        self.containers.push(name.to_string());
        name.to_string()
    }

    pub fn network(&mut self, name: &str) -> String {
        self.networks.push(name.to_string());
        name.to_string()
    }

    pub fn volume(&mut self, name: &str) -> String {
        self.volumes.push(name.to_string());
        name.to_string()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker().args(["rm", "-f", c]).output();
        }
        for n in &self.networks {
            let _ = docker().args(["network", "rm", n]).output();
        }
        for v in &self.volumes {
            let _ = docker().args(["volume", "rm", "-f", v]).output();
        }
    }
}

/// The container's IP address on `network`.
pub fn ip_of(container: &str, network: &str) -> String {
    docker_ok(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        container,
    ])
}

/// Whether `container` is running.
pub fn running(container: &str) -> bool {
    docker()
        .args(["inspect", "-f", "{{.State.Running}}", container])
        .output()
        .is_ok_and(|o| text(&o.stdout).trim() == "true")
}

/// Mount points (from this process's mountinfo) under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// Wait up to `secs` for `f`.
pub fn eventually(secs: u64, f: impl FnMut() -> bool) -> bool {
    super::wait_for(Duration::from_secs(secs), f)
}

/// `b` reversed, as the tests print a secret inside a container: the real
/// bytes must reach no command line, log or file the tests search.
pub fn rev(b: &[u8]) -> String {
    String::from_utf8(b.iter().rev().copied().collect()).unwrap()
}

/// A workload matched by the label `app=W`, launchable by the test's uid;
/// `extra` (e.g. `[isolation]`) goes before `grants`.
pub fn label_policy(w: &str, extra: &str, grants: &str) -> String {
    format!(
        "workload = \"{w}\"\n\n[match]\ndocker_labels = {{ app = \"{w}\" }}\n\n[launch]\nuids = [{uid}]\n{extra}\n{grants}",
        uid = uid()
    )
}

/// app/db's `password` as the file `db_password`, for a minute.
pub const DB_FILE_GRANT: &str =
    "[[grant]]\nsecret = \"app/db\"\nkey = \"password\"\nfile = \"db_password\"\nttl = \"1m\"\n";

/// `unbaked run --workload W` with the static shim.
pub fn run(b: &Broker, w: &str) -> Command {
    let mut c = b.cmd();
    c.env("UNBAKED_SHIM", static_binary())
        .args(["run", "--workload", w]);
    c
}
