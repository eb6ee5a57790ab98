//! The second Docker Engine (`scripts/engine2`): the installed `dockerd`
//! with `--icc=false` and `--userns-remap=default`, in a network namespace
//! of its own, on its own socket, data root and exec root. [`Engine2::start`]
//! sweeps a previous run's leftovers and starts it; dropping the guard
//! (pass or fail) stops it and removes everything it made. Tests reach it
//! through `DOCKER_HOST` ([`Engine2::docker`], and the broker's and
//! `unbaked run`'s environment); this machine's engine is left alone.

use super::{output, text};
use std::path::Path;
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/engine2");
const LOG: &str = "/run/unbaked-engine2/dockerd.log";

pub struct Engine2 {
    /// `unix:///run/unbaked-engine2/docker.sock`
    pub host: String,
}

impl Engine2 {
    /// Start it (a failure names the reason and shows the daemon's log)
    /// and load the busybox test image into it: no pull, built FROM scratch
    /// as [`super::docker::test_image`] does for the main engine.
    pub fn start() -> Engine2 {
        let out = output(Command::new(SCRIPT).arg("start"));
        assert!(
            out.status.success(),
            "scripts/engine2 start failed: {}",
            text(&out.stderr)
        );
        let e = Engine2 {
            host: text(&out.stdout).trim().to_string(),
        };
        let ctx = super::docker::busybox_context();
        e.docker_ok(&[
            "build",
            "-q",
            "-t",
            super::docker::IMAGE,
            &ctx.path().display().to_string(),
        ]);
        e
    }

    /// A `docker` CLI command talking to this engine.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", &self.host);
        c
    }

    /// `docker ARGS` on this engine, panicking with its stderr (and the
    /// daemon's log) on failure; stdout trimmed.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = output(self.docker().args(args));
        assert!(
            out.status.success(),
            "docker {args:?} (engine2) failed: {}\n-- dockerd log --\n{}",
            text(&out.stderr),
            self.log()
        );
        text(&out.stdout).trim().to_string()
    }

    /// The last lines of the daemon's log.
    pub fn log(&self) -> String {
        let all = std::fs::read_to_string(LOG).unwrap_or_default();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Whether the container runs, on this engine.
    pub fn running(&self, name: &str) -> bool {
        self.docker()
            .args(["inspect", "-f", "{{.State.Running}}", name])
            .output()
            .is_ok_and(|o| text(&o.stdout).trim() == "true")
    }

    /// Whether anything of the engine is left on the host: its roots, its
    /// network namespace, its mounts.
    pub fn leftovers() -> Vec<String> {
        let mut left = Vec::new();
        for p in ["/run/unbaked-engine2", "/var/lib/unbaked-engine2"] {
            if Path::new(p).exists() {
                left.push(p.to_string());
            }
        }
        if Path::new("/run/netns/unbaked-e2").exists() {
            left.push("network namespace unbaked-e2".into());
        }
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        left.extend(
            info.lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| m.contains("unbaked-engine2"))
                .map(str::to_string),
        );
        left
    }

    /// Stop it now (the guard's drop does the same).
    pub fn stop(&mut self) {
        if self.host.is_empty() {
            return;
        }
        self.host.clear();
        let out = output(Command::new(SCRIPT).arg("stop"));
        assert!(
            out.status.success() || std::thread::panicking(),
            "scripts/engine2 stop failed: {}",
            text(&out.stderr)
        );
    }
}

impl Drop for Engine2 {
    fn drop(&mut self) {
        if !self.host.is_empty() {
            self.host.clear();
            let _ = Command::new(SCRIPT).arg("stop").output();
        }
    }
}
