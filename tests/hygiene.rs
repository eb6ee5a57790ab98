//! Secret hygiene: one secret through every delivery path (sidecar file,
//! exec env and memfd, a container started by `unbaked run`), then a search
//! for its bytes everywhere they must not be: logs, the audit file,
//! `docker inspect`, the container's layer committed as an image, what the
//! test left under /var/lib/docker and /tmp. Core dumps are off in every
//! process that holds a secret, including the commands `exec` and the
//! `unbaked run` shim start.
//!
//! `scripts/hygiene` (run last by scripts/test) does the same search for
//! the secret bytes of the whole suite. Zeroization before free is checked
//! by `alloc-scan/tests/freed_buffers.rs`.
mod util;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};
use util::docker::*;
use util::*;

const SECRET: &[u8] = b"hygiene-secret-e5c0d1f7";

const GRANTS: &str = "[[grant]]\nsecret = \"app/h\"\nkey = \"k\"\nfile = \"h\"\n\
    [[grant]]\nsecret = \"app/h\"\nkey = \"k\"\nenv = \"H\"\n\
    [[grant]]\nsecret = \"app/h\"\nkey = \"k\"\nfd = \"H_FILE\"\n";

/// Two workloads with the same grants: `W-host` for host processes of this
/// uid, `W` for containers labelled `app=W` that this uid may launch.
fn broker(w: &str) -> Broker {
    let uid = uid();
    let host = format!("workload = \"{w}-host\"\n[match]\nuids = [{uid}]\n{GRANTS}");
    let container = format!(
        "workload = \"{w}\"\n[match]\ndocker_labels = {{ app = \"{w}\" }}\n[launch]\nuids = [{uid}]\n{GRANTS}"
    );
    let b = Broker::start(&[("host.toml", &host), ("container.toml", &container)]);
    b.put("app/h", "k", SECRET);
    b
}

fn core_limit(limits: &str) -> Vec<String> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_else(|| panic!("no core limit in {limits}"));
    line.split_whitespace()
        .skip(4)
        .take(2)
        .map(String::from)
        .collect()
}

#[test]
fn exec_and_the_run_shim_start_commands_with_core_dumps_off() {
    let image = test_image();
    let w = unique("hyg-core");
    let mut clean = Cleanup::default();
    clean.network(&format!("unbaked-{w}"));
    let b = broker(&w);
    // What `unbaked exec` starts holds the env and the memfd.
    let out = output(b.cmd().args([
        "exec",
        "--workload",
        &format!("{w}-host"),
        "--",
        "cat",
        "/proc/self/limits",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(core_limit(&text(&out.stdout)), ["0", "0"]);
    // And what the shim starts in a container of `unbaked run`.
    let name = clean.container(&unique("hyg-core"));
    let out = output(b.cmd().env("UNBAKED_SHIM", static_binary()).args([
        "run",
        "--workload",
        &w,
        "--",
        "--rm",
        "--name",
        &name,
        image,
        "cat /proc/self/limits",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(core_limit(&text(&out.stdout)), ["0", "0"]);
}

/// Files under `root` (its own file system), modified since `since`,
/// holding `needle`; build output, checkouts and `skip` left out.
fn recent_files_containing(
    root: &Path,
    needle: &[u8],
    since: SystemTime,
    skip: &[PathBuf],
) -> Vec<PathBuf> {
    scan(needle)
        .since(since)
        .one_file_system()
        .skip_checkouts()
        .skip(skip)
        .under(root)
}

fn holds(hay: &[u8]) -> bool {
    hay.windows(SECRET.len()).any(|w| w == SECRET)
}

#[test]
fn a_secret_leaves_no_trace_in_logs_audit_inspect_layers_or_disk() {
    // File times have coarse granularity: start a little in the past.
    let since = SystemTime::now() - Duration::from_secs(2);
    let image = test_image();
    let w = unique("hyg-trace");
    let mut clean = Cleanup::default();
    clean.network(&format!("unbaked-{w}"));
    let b = broker(&w);
    let host = format!("{w}-host");

    // A sidecar on tmpfs, logging to disk.
    let secrets = shm_dir("hygiene");
    let sidecar_log = b.dir.path().join("sidecar.log");
    let mut sidecar = b
        .cmd()
        .args(["sidecar", "--workload", &host, "--dir"])
        .arg(secrets.path())
        .env("UNBAKED_LOG", "debug")
        .stderr(std::fs::File::create(&sidecar_log).unwrap())
        .spawn()
        .unwrap();
    assert!(
        wait_for(DEADLINE, || std::fs::read(secrets.path().join("h"))
            .is_ok_and(|v| v == SECRET)),
        "not within {DEADLINE:?}:\n{}",
        b.log_text()
    );

    // exec: env and memfd, used (compared) but never printed.
    let out = output(
        b.cmd()
            .env("UNBAKED_LOG", "debug")
            .args(["exec", "--workload", &host, "--", "sh", "-c"])
            .arg(format!(
                "[ \"$H\" = '{0}' ] && [ \"$(cat \"$H_FILE\")\" = '{0}' ] && echo same",
                std::str::from_utf8(SECRET).unwrap()
            )),
    );
    assert_eq!(text(&out.stdout), "same\n", "{}", text(&out.stderr));
    assert!(!holds(&out.stderr), "exec's debug log holds the secret");

    // A container of `unbaked run`, detached, using the file and env grants.
    let name = clean.container(&unique("hyg-trace"));
    let committed = format!("unbaked-test/hygiene-{}:1", std::process::id());
    let out = output(
        b.cmd()
            .env("UNBAKED_SHIM", static_binary())
            .env("UNBAKED_LOG", "debug")
            .args(["run", "--workload", &w, "--", "-d", "--name", &name, image])
            .arg("test -s /run/secrets/h && [ -n \"$H\" ] && echo ready; exec sleep 60"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!holds(&out.stdout) && !holds(&out.stderr));
    assert!(
        eventually(60, || docker_ok(&["logs", &name]).contains("ready")),
        "{}",
        b.log_text()
    );
    let inspect = output(docker().args(["inspect", &name]));
    assert!(
        inspect.status.success() && !holds(&inspect.stdout),
        "docker inspect"
    );
    let logs = output(docker().args(["logs", &name]));
    assert!(!holds(&logs.stdout) && !holds(&logs.stderr), "docker logs");
    // The container's layer, committed and saved as an image: no secret.
    docker_ok(&["commit", &name, &committed]);
    let saved = std::process::Command::new("docker")
        .args(["save", &committed])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = output(docker().args(["rmi", "-f", &committed]));
    assert!(saved.status.success() && saved.stdout.len() > 1024);
    assert!(
        !holds(&saved.stdout),
        "the committed layer holds the secret"
    );
    // While it runs, nothing of it under /var/lib/docker either.
    let hits = recent_files_containing(Path::new("/var/lib/docker"), SECRET, since, &[]);
    assert!(hits.is_empty(), "/var/lib/docker: {hits:?}");
    docker_ok(&["rm", "-f", &name]);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sidecar.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    assert!(sidecar.wait().unwrap().success());
    assert!(
        files_containing(secrets.path(), SECRET).is_empty(),
        "the sidecar's tmpfs"
    );
    assert!(
        eventually(60, || mounts_under(b.dir.path()).is_empty()),
        "not within {DEADLINE:?}:\n{}",
        b.log_text()
    );

    assert!(!holds(b.log_text().as_bytes()), "the broker log");
    assert!(!holds(b.audit_text().as_bytes()), "the audit file");
    assert!(
        !holds(&std::fs::read(&sidecar_log).unwrap()),
        "the sidecar log"
    );
    let build = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Not /dev/shm: other runs on this machine keep live secrets there (this
    // run's tmpfs directories are checked above).
    for root in ["/tmp", "/var/tmp", "/var/lib/docker"] {
        let hits = recent_files_containing(
            Path::new(root),
            SECRET,
            since,
            &[build.clone(), repo.clone()],
        );
        assert!(hits.is_empty(), "{root}: {hits:?}");
    }
}
