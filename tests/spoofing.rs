//! Spoofing: callers that pretend to be someone else, each denied or made
//! harmless. (A secrets directory on a disk-backed file system:
//! `tests/sidecar.rs`; a container that joins an ICC network after it was
//! attested: `tests/docker.rs`; an expired token: `tests/ops.rs`.)
//!
//! Some tests place a process in a cgroup by hand (as root), which is what
//! the kernel then reports for it: the same evidence the broker reads.
mod util;
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use util::docker::{docker_ok, test_image, unique, Cleanup};
use util::k8s::{Issuer, ISS};
use util::*;

const VALUE: &[u8] = b"spoof-value-4b1d0e";

/// A workload for containers labelled `app=<label>`; `isolation` relaxes
/// what a plain `docker run` breaks.
fn container_policy(label: &str) -> String {
    format!(
        "workload = \"{label}\"\n[match]\ndocker_labels = {{ app = \"{label}\" }}\n\
         [isolation]\ninter_container_traffic = true\nread_only_rootfs = false\n\
         [[grant]]\nsecret = \"app/x\"\nkey = \"k\"\nenv = \"X\"\n"
    )
}

/// A cgroup directory (v1 `pids` hierarchy, or v2), removed on drop when
/// we created it.
struct Cgroup(PathBuf, bool);

impl Cgroup {
    fn path(rel: &str) -> PathBuf {
        let base = if Path::new("/sys/fs/cgroup/pids").is_dir() {
            "/sys/fs/cgroup/pids"
        } else {
            "/sys/fs/cgroup"
        };
        Path::new(base).join(rel.trim_start_matches('/'))
    }

    fn new(rel: &str) -> Cgroup {
        let p = Cgroup::path(rel);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        Cgroup(p, true)
    }

    /// One that exists already (a container's own): left alone on drop.
    fn existing(rel: &str) -> Cgroup {
        let p = Cgroup::path(rel);
        assert!(p.is_dir(), "{} is missing", p.display());
        Cgroup(p, false)
    }

    /// `sh -c` that moves itself here, then execs `unbaked ARGS`.
    fn run(&self, socket: &Path, args: &[&str]) -> std::process::Output {
        let procs = self.0.join("cgroup.procs");
        output(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "echo $$ > '{}' && exec \"$0\" \"$@\"",
                    procs.display()
                ))
                .arg(BIN)
                .args(args)
                .env("UNBAKED_SOCKET", socket),
        )
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once its processes are gone, which may take a moment.
        if self.1 {
            wait_for(DEADLINE, || std::fs::remove_dir(&self.0).is_ok());
        }
    }
}

/// The process that connects is gone, and what its pid names now is a
/// container's process: the broker would read that container's cgroup.
/// Also: a process in the cgroup of a stopped, then removed, container.
#[test]
fn a_pid_in_a_dead_containers_cgroup_or_a_reused_pid_gets_nothing() {
    let image = test_image();
    let label = unique("spoof-pid");
    let b = Broker::start(&[("w.toml", &container_policy(&label))]);
    b.put("app/x", "k", VALUE);
    let mut cleanup = Cleanup::default();

    // A created (never started) container, then a removed one.
    let stopped = cleanup.container(&unique("spoof-created"));
    let id = docker_ok(&[
        "create",
        "--name",
        &stopped,
        "--label",
        &format!("app={label}"),
        image,
        "sleep 300",
    ]);
    let cg = Cgroup::new(&format!("docker/{id}"));
    let args = ["exec", "--workload", &label, "--", "true"];
    let out = cg.run(&b.socket, &args);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot be verified") && err.contains("not running"),
        "{err}"
    );
    docker_ok(&["rm", &stopped]);
    let out = cg.run(&b.socket, &args);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("does not know this container"),
        "{}",
        text(&out.stderr)
    );
    drop(cg);

    // A running container. A host process that root moves into its cgroup
    // is still not in it (its namespaces are the host's): refused. The
    // container's own process (docker exec) is the control.
    let running = cleanup.container(&unique("spoof-running"));
    let shim = util::docker::static_binary().display().to_string();
    let socket = b.socket.display().to_string();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &running,
        "--label",
        &format!("app={label}"),
        "--mount",
        &format!("type=bind,src={shim},dst=/u,readonly"),
        "--mount",
        &format!("type=bind,src={socket},dst=/s.sock"),
        image,
        "sleep 300",
    ]);
    let cpid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &running]);
    let cgroup = std::fs::read_to_string(format!("/proc/{cpid}/cgroup")).unwrap();
    let rel = cgroup
        .lines()
        .find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_string()))
        .or_else(|| {
            cgroup
                .lines()
                .find_map(|l| l.strip_prefix("0::").map(String::from))
        })
        .expect("the container's cgroup");
    let inside = Cgroup::existing(&rel);
    let fetch = [
        "exec",
        "--workload",
        &label,
        "--",
        "sh",
        "-c",
        "printf %s \"$X\"",
    ];
    let out = inside.run(&b.socket, &fetch);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not in this container"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let served = docker_ok(
        &[
            &["exec", &running, "/u", "--socket", "/s.sock"][..],
            &fetch[..],
        ]
        .concat(),
    );
    assert_eq!(
        served.as_bytes(),
        VALUE,
        "control: the container's own process is served"
    );

    // The attack: A connects and exits, its child B keeps the connection;
    // A's pid is handed to a new process V, which then joins the container.
    // B's request would be judged by V's cgroup were it not for the pidfd.
    let body = format!("{{\"workload\":\"{label}\",\"kinds\":[\"env\"]}}");
    let mut helper = Command::new("perl")
        .args(["-e", PERL_FORK_AFTER_CONNECT])
        .arg(&b.socket)
        .arg(&body)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("perl (perl-base) runs the connect-then-exit helper");
    let mut stdout = BufReader::new(helper.stdout.take().unwrap());
    // Taken now: `wait` would close it, and B goes on at EOF.
    let mut go = helper.stdin.take().unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let old_pid: i32 = line.trim().parse().expect("the helper prints its pid");
    assert!(helper.wait().unwrap().success());
    let mut reused = reuse_pid(old_pid);
    std::fs::write(inside.0.join("cgroup.procs"), old_pid.to_string()).unwrap();
    let cg_now = std::fs::read_to_string(format!("/proc/{old_pid}/cgroup")).unwrap();
    assert!(
        cg_now.contains(&rel),
        "the reused pid is not in the container: {cg_now}"
    );
    go.write_all(b"go\n").unwrap();
    let mut answer = String::new();
    stdout.read_to_string(&mut answer).unwrap();
    let _ = reused.kill();
    let _ = reused.wait();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("has exited"), "{answer}");
    assert!(!answer.contains(std::str::from_utf8(VALUE).unwrap()));
    let audit = b.audit_text();
    assert!(audit.contains("\"rule\":\"attest.exited\""), "{audit}");
    assert_eq!(
        audit.matches("\"rule\":\"isolation.unverified\"").count(),
        3
    );
    drop(inside);
}

/// Connects to ARGV[0], has one request answered on the connection (so
/// the broker has accepted it), forks, and exits at once (printing its
/// pid); the child keeps the connection and, after a line on stdin, sends
/// a fetch with the body ARGV[1] and prints the answer.
const PERL_FORK_AFTER_CONNECT: &str = r#"
use strict; use IO::Socket::UNIX; use Socket;
my ($path, $body) = @ARGV;
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $path) or die "connect: $!";
# One request answered first: the broker has accepted the connection (and
# pinned this process) before it exits. A pid reused between a connect and
# its accept is the pre-6.5 residual window (docs/threat-model.md).
$s->autoflush(1);
print $s "GET /v1/health HTTP/1.1\r\nHost: u\r\n\r\n";
my $head = "";
while ($head !~ /\r\n\r\n/) { sysread($s, my $c, 1) or die "health: $!"; $head .= $c; }
my ($len) = $head =~ /content-length:\s*(\d+)/i;
my $got = "";
while (length($got) < ($len // 0)) { sysread($s, my $c, $len - length($got)) or die "health: $!"; $got .= $c; }
$head =~ /^HTTP\/1\.1 200/ or die "health: $head";
$| = 1;
my $child = fork();
die "fork: $!" unless defined $child;
if ($child) { print "$$\n"; exit 0; }
my $go = <STDIN>;
my $n = length($body);
print $s "POST /v1/fetch HTTP/1.1\r\nHost: u\r\nContent-Type: application/json\r\nContent-Length: $n\r\nConnection: close\r\n\r\n$body";
$s->flush;
local $/;
my $answer = <$s>;
print $answer;
"#;

/// A `sleep` whose pid is `pid`: the kernel hands out `ns_last_pid + 1`.
fn reuse_pid(pid: i32) -> std::process::Child {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("root may set ns_last_pid");
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        if child.id() as i32 == pid {
            return child;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("could not get pid {pid} handed out again");
}

/// `unshare -U -r`: root inside a user namespace is an ordinary uid on the
/// host, and SO_PEERCRED reports that host uid to the broker.
#[test]
fn a_caller_in_a_user_namespace_is_judged_by_its_host_uid() {
    const OUTSIDER: u32 = 4242;
    let grant = "[[grant]]\nsecret = \"app/x\"\nkey = \"k\"\nenv = \"X\"\n";
    let b = Broker::start(&[
        (
            "root.toml",
            &format!("workload = \"rootonly\"\n[match]\nuids = [0]\n{grant}"),
        ),
        (
            "mapped.toml",
            &format!("workload = \"mapped\"\n[match]\nuids = [{OUTSIDER}]\n{grant}"),
        ),
    ]);
    b.put("app/x", "k", VALUE);
    // Let the outsider reach the socket (the test directory is 0700).
    std::fs::set_permissions(b.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&b.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let in_userns = |args: &[&str]| {
        output(
            Command::new("setpriv")
                .args([
                    "--reuid",
                    &OUTSIDER.to_string(),
                    "--regid",
                    &OUTSIDER.to_string(),
                ])
                .args([
                    "--clear-groups",
                    "--",
                    "unshare",
                    "-U",
                    "-r",
                    "--",
                    "sh",
                    "-c",
                ])
                .arg("id -u; exec \"$0\" \"$@\"")
                .arg(BIN)
                .args(args)
                .env("UNBAKED_SOCKET", &b.socket),
        )
    };
    let out = in_userns(&["exec", "--workload", "rootonly", "--", "true"]);
    assert!(
        text(&out.stdout).starts_with("0\n"),
        "uid 0 inside: {}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("caller uid 4242 is not in [match] uids"),
        "{}",
        text(&out.stderr)
    );

    let out = in_userns(&["secret", "get", "app/x"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("the caller is uid 4242"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains(std::str::from_utf8(VALUE).unwrap()));

    // Judged by the host uid both ways: a policy for 4242 serves it.
    let out = in_userns(&[
        "exec",
        "--workload",
        "mapped",
        "--",
        "sh",
        "-c",
        "printf %s \"$X\"",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.ends_with(VALUE));
    assert!(b.audit_text().contains("\"uid\":4242"));
}

const POD_A: &str = "0b6f4a52-8c3e-4d7a-9f11-2b5c6d7e8f90";
const POD_B: &str = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";

/// A still-valid token copied out of pod A and replayed from pod B is
/// refused: the token names its pod, the kernel names the caller's.
#[test]
fn a_service_account_token_replayed_from_another_pod_is_refused() {
    let issuer = Issuer::new("k1");
    let policy = "workload = \"billing\"\n[match]\nk8s_service_accounts = [\"payments/billing\"]\n\
                  [[grant]]\nsecret = \"app/x\"\nkey = \"k\"\nenv = \"X\"\n";
    let b = Broker::builder()
        .policy("billing.toml", policy)
        .kubernetes(&issuer.jwks)
        .start();
    b.put("app/x", "k", VALUE);
    let shm = shm_dir("token");
    let token = shm.path().join("token");
    std::fs::write(
        &token,
        issuer.pod_token(
            "k1",
            ISS,
            "unbaked",
            600,
            ("payments", "billing"),
            ("billing-a", POD_A),
        ),
    )
    .unwrap();
    let token_arg = token.display().to_string();
    let args = [
        "exec",
        "--workload",
        "billing",
        "--token-file",
        &token_arg,
        "--",
        "sh",
        "-c",
        "printf %s \"$X\"",
    ];
    let pod_a = Cgroup::new(&format!("kubepods/besteffort/pod{POD_A}"));
    let pod_b = Cgroup::new(&format!("kubepods/besteffort/pod{POD_B}"));

    let out = pod_b.run(&b.socket, &args);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("issued to pod billing-a") && err.contains(POD_B),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    assert!(b.audit_text().contains("\"rule\":\"token.pod\""));

    let out = pod_a.run(&b.socket, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, VALUE);

    // Documented: a host process (outside every pod) is judged by the token.
    let out = output(b.cmd().args(args));
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The token (its signature, which no other token shares) is logged nowhere.
    let sent = std::fs::read_to_string(&token).unwrap();
    let signature = sent.rsplit('.').next().unwrap();
    assert!(!b.log_text().contains(signature) && !b.audit_text().contains(signature));
    drop((pod_a, pod_b));
    // Leave no empty cgroup parents behind.
    for parent in ["kubepods/besteffort", "kubepods"] {
        let _ = std::fs::remove_dir(Cgroup::path(parent));
    }
}

/// Symlinks planted in the secrets directory redirect nothing: one at a
/// file's name is replaced, never followed; one in place of a parent
/// directory makes the sidecar refuse (and revoke) before writing.
#[test]
fn a_symlink_planted_in_the_secrets_directory_redirects_nothing() {
    let b = Broker::start(&[
        (
            "tok.toml",
            &host_policy(
                "tok",
                "[[grant]]\nsecret = \"app/x\"\nkey = \"k\"\nfile = \"token\"\n",
            ),
        ),
        (
            "db.toml",
            &host_policy(
                "db",
                "[[grant]]\nsecret = \"app/x\"\nkey = \"k\"\nfile = \"db/password\"\n",
            ),
        ),
    ]);
    b.put("app/x", "k", VALUE);
    let victim = shm_dir("victim");
    let victim_file = victim.path().join("passwd");
    std::fs::write(&victim_file, b"victim-content").unwrap();

    // At the file's own name.
    let secrets = shm_dir("planted");
    std::os::unix::fs::symlink(&victim_file, secrets.path().join("token")).unwrap();
    let mut child = b
        .cmd()
        .args(["sidecar", "--workload", "tok", "--dir"])
        .arg(secrets.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let token = secrets.path().join("token");
    assert!(
        wait_for(DEADLINE, || {
            std::fs::symlink_metadata(&token).is_ok_and(|m| m.file_type().is_file())
        }),
        "not within {DEADLINE:?}:\n{}",
        b.log_text()
    );
    assert_eq!(std::fs::read(&token).unwrap(), VALUE);
    assert_eq!(std::fs::read(&victim_file).unwrap(), b"victim-content");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read(&victim_file).unwrap(), b"victim-content");
    assert!(std::fs::read_dir(secrets.path()).unwrap().next().is_none());

    // In place of a parent directory.
    let secrets = shm_dir("planted-parent");
    std::os::unix::fs::symlink(victim.path(), secrets.path().join("db")).unwrap();
    let out = output(
        b.cmd()
            .args(["sidecar", "--workload", "db", "--dir"])
            .arg(secrets.path()),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("a parent directory is a symlink"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(names(victim.path()), ["passwd"]);
    assert!(files_containing(victim.path(), VALUE).is_empty());
    let audit = b.audit_text();
    assert!(
        audit.matches("\"event\":\"revoke\"").count() >= 2,
        "{audit}"
    );
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
