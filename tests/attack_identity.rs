//! Attack: a host process claims a running container's identity by naming
//! the container in its cgroup path, from a subtree delegated to its user
//! (what every systemd user session and every rootless engine has). The
//! broker must ask the kernel (namespaces) and refuse, on every cgroup
//! hierarchy the host has; the container's own process is the control.
mod util;
use std::path::{Path, PathBuf};
use std::process::Command;
use util::docker::{docker_ok, static_binary, test_image, unique, Cleanup};
use util::*;

const VALUE: &[u8] = b"identity-value-7c31f0";
const ATTACKER: u32 = 2002;

/// Two workloads for containers labelled `app=<label>`: one by label only,
/// one by label and uid (a host process with the container's uid must not
/// pass it either).
fn policies(label: &str) -> [(String, String); 2] {
    let body = |sel: &str| {
        format!(
            "[match]\n{sel}docker_labels = {{ app = \"{label}\" }}\n\
             [isolation]\ninter_container_traffic = true\nread_only_rootfs = false\n\
             [[grant]]\nsecret = \"app/x\"\nkey = \"k\"\nenv = \"X\"\n"
        )
    };
    [
        (
            format!("{label}.toml"),
            format!("workload = \"{label}\"\n{}", body("")),
        ),
        (
            format!("{label}-uid.toml"),
            format!(
                "workload = \"{label}-uid\"\n{}",
                body(&format!("uids = [{ATTACKER}]\n"))
            ),
        ),
    ]
}

/// The cgroup hierarchies this host mounts that a user can be delegated:
/// v2 (unified) and the v1 `pids` and `name=systemd` ones.
fn hierarchies() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut found = Vec::new();
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or_default();
        let opts = post.nth(1).unwrap_or_default();
        let mount = pre.split(' ').nth(4).unwrap_or_default();
        let wanted = fstype == "cgroup2"
            || (fstype == "cgroup" && opts.split(',').any(|o| o == "pids" || o == "name=systemd"));
        if wanted && !found.iter().any(|p: &PathBuf| p == Path::new(mount)) {
            found.push(PathBuf::from(mount));
        }
    }
    assert!(!found.is_empty(), "no cgroup hierarchy mounted:\n{info}");
    found
}

/// A subtree of `hierarchy` delegated to the attacker, as systemd does
/// for a user session: the directory and its `cgroup.procs` are theirs.
struct Delegated(PathBuf);

impl Delegated {
    fn new(hierarchy: &Path) -> Delegated {
        let dir = hierarchy.join(unique("unbaked-attack.slice"));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        for p in [dir.clone(), dir.join("cgroup.procs")] {
            std::os::unix::fs::chown(&p, Some(ATTACKER), Some(ATTACKER)).unwrap();
        }
        Delegated(dir)
    }

    /// The attacker's shell, placed in the delegated subtree (by root, as
    /// the session manager does), makes `name` there, moves itself into
    /// it as uid 2002 and asks for `workload`'s secrets.
    fn claim(&self, name: &str, socket: &Path, workload: &str) -> std::process::Output {
        let d = self.0.display();
        let script = format!(
            "echo $$ > {d}/cgroup.procs && exec setpriv --reuid {ATTACKER} --regid {ATTACKER} --clear-groups \
             sh -c 'mkdir {d}/{name} && echo $$ > {d}/{name}/cgroup.procs && cat /proc/self/cgroup >&2 && \
             exec \"$0\" exec --workload {workload} -- sh -c \"printf %s \\\"\\$X\\\"\"' {BIN}"
        );
        output(
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("UNBAKED_SOCKET", socket),
        )
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        // Children first; each is empty once its process has exited.
        wait_for(DEADLINE, || {
            if let Ok(entries) = std::fs::read_dir(&self.0) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            std::fs::remove_dir(&self.0).is_ok()
        });
    }
}

#[test]
fn a_host_process_in_a_cgroup_named_after_a_container_gets_nothing() {
    let image = test_image();
    let label = unique("ident");
    let [(f1, p1), (f2, p2)] = policies(&label);
    let b = Broker::start(&[(&f1, &p1), (&f2, &p2)]);
    // The attacker must reach the socket as uid 2002: the directory is
    // the test's, the socket the broker's (connect-anyone by default).
    std::fs::set_permissions(
        b.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    b.put("app/x", "k", VALUE);

    let mut clean = Cleanup::default();
    let name = clean.container(&unique("ident-victim"));
    let shim = static_binary().display().to_string();
    let socket = b.socket.display().to_string();
    let id = docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--user",
        &format!("{ATTACKER}:{ATTACKER}"),
        "--label",
        &format!("app={label}"),
        "--mount",
        &format!("type=bind,src={shim},dst=/u,readonly"),
        "--mount",
        &format!("type=bind,src={socket},dst=/s.sock"),
        image,
        "sleep 300",
    ]);

    // Control: the container's own process is served, for both workloads.
    for w in [label.clone(), format!("{label}-uid")] {
        let out = docker_ok(&[
            "exec",
            &name,
            "/u",
            "--socket",
            "/s.sock",
            "exec",
            "--workload",
            &w,
            "--",
            "sh",
            "-c",
            "printf %s \"$X\"",
        ]);
        assert_eq!(
            out.as_bytes(),
            VALUE,
            "control: {w} from inside the container"
        );
    }

    for hierarchy in hierarchies() {
        let delegated = Delegated::new(&hierarchy);
        // systemd's driver names a scope `docker-<id>.scope`; cgroupfs a bare id.
        for claimed in [id.clone(), format!("docker-{id}.scope")] {
            for w in [label.clone(), format!("{label}-uid")] {
                let out = delegated.claim(&claimed, &b.socket, &w);
                let err = text(&out.stderr);
                assert!(
                    err.contains(&claimed),
                    "the attacker did not get into {claimed} under {}: {err}",
                    hierarchy.display()
                );
                assert_eq!(out.status.code(), Some(3), "{}: {err}", hierarchy.display());
                assert!(!out.stdout.windows(VALUE.len()).any(|w| w == VALUE));
                assert!(err.contains("isolation.unverified"), "{err}");
                let _ = std::fs::remove_dir(delegated.0.join(&claimed));
            }
        }
    }
    let audit = b.audit_text();
    assert!(
        audit.contains("not in this container"),
        "the spoof is audited: {audit}"
    );
    assert!(!audit.contains(std::str::from_utf8(VALUE).unwrap()));
    let log = b.log_text();
    assert!(log.contains(&id[..12]) || log.contains(&id), "{log}");
}
