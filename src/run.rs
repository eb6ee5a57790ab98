//! `unbaked run`: ask the broker for the launch plan of a `docker run`, then
//! print it (`--dry-run`) or replace this process with the real `docker`
//! CLI, so every `docker run` flag, its output and its exit code stay
//! docker's own.
//!
//! The plan holds paths, names and labels only; the secrets are fetched
//! inside the container by the exec shim, over the broker socket.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use unbaked_api::exit;
use unbaked_api::wire::LaunchRequest;
use unbaked_sidecar::client::{Client, ClientError};

/// Overrides the exec shim: a statically linked `unbaked` on the host.
pub const ENV_SHIM: &str = "UNBAKED_SHIM";
/// Overrides the docker CLI to run.
pub const ENV_DOCKER: &str = "UNBAKED_DOCKER";

#[derive(Debug)]
pub struct RunConfig {
    pub socket: PathBuf,
    pub workload: Option<String>,
    pub dry_run: bool,
    pub args: Vec<OsString>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("argument {0:?} is not valid UTF-8: docker run arguments must be text")]
    NotText(OsString),
    #[error(
        "cannot find the exec shim binary ({0}): set {ENV_SHIM} to a statically linked unbaked"
    )]
    Shim(std::io::Error),
    #[error("{} is dynamically linked, so it cannot run inside a FROM-scratch container as the exec shim, and no static build was found beside it: run scripts/build-static once (unbaked run then finds it), install it as /usr/local/lib/unbaked/unbaked-static, or set {ENV_SHIM} to one", .0.display())]
    NotStatic(PathBuf),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("{}: docker CLI not found: install it, or set {ENV_DOCKER} to its path", .0.to_string_lossy())]
    DockerNotFound(OsString),
    #[error("{}: cannot execute the docker CLI", .program.to_string_lossy())]
    DockerExec {
        program: OsString,
        source: std::io::Error,
    },
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::NotText(_) => exit::USAGE,
            RunError::Client(e) => e.exit_code(),
            RunError::DockerNotFound(_) => exit::COMMAND_NOT_FOUND,
            RunError::DockerExec { .. } => exit::CANNOT_EXECUTE,
            _ => exit::FAILURE,
        }
    }
}

/// Returns only on failure, or after a dry run.
pub fn run(cfg: RunConfig) -> Result<(), RunError> {
    let args = cfg
        .args
        .into_iter()
        .map(|a| a.into_string().map_err(RunError::NotText))
        .collect::<Result<Vec<String>, _>>()?;
    let (shim, shim_static) = find_shim()?;
    // A refusal by policy names its rule whatever the shim: ask first (as
    // a dry run, so nothing is created), then complain about the shim.
    if !shim_static && !cfg.dry_run {
        let probe = LaunchRequest {
            workload: cfg.workload.clone(),
            args: args.clone(),
            shim: shim.display().to_string(),
            dry_run: true,
            compose: false,
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RunError::Runtime)?
            .block_on(Client::new(&cfg.socket).launch(&probe))?;
        return Err(RunError::NotStatic(shim));
    }
    if !shim_static {
        eprintln!("unbaked: warning: {}", RunError::NotStatic(shim.clone()));
    }
    let req = LaunchRequest {
        workload: cfg.workload,
        args,
        shim: shim.display().to_string(),
        dry_run: cfg.dry_run,
        compose: false,
    };
    let plan = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?
        .block_on(Client::new(&cfg.socket).launch(&req))?;
    for w in &plan.warnings {
        eprintln!("unbaked: warning: {w}");
    }
    let docker = std::env::var_os(ENV_DOCKER).unwrap_or_else(|| "docker".into());
    if cfg.dry_run {
        let mut words = vec![docker.to_string_lossy().into_owned()];
        words.extend(plan.args);
        println!("{}", unbaked_docker::launch::shell_quote(&words));
        return Ok(());
    }
    tracing::debug!(workload = %plan.workload, launch = %plan.launch_id, "exec docker");
    let err = std::process::Command::new(&docker).args(&plan.args).exec();
    Err(match err.kind() {
        std::io::ErrorKind::NotFound => RunError::DockerNotFound(docker),
        _ => RunError::DockerExec {
            program: docker,
            source: err,
        },
    })
}

/// The exec shim: `UNBAKED_SHIM`, else this binary if it is static, else
/// the static build beside it (`scripts/build-static` puts it in
/// `target/x86_64-unknown-linux-gnu/release/` next to `target/release/`)
/// or the packaged one, so the binary the README builds runs `unbaked run`
/// as it is. Returns the path and whether it is static.
pub(crate) fn find_shim() -> Result<(PathBuf, bool), RunError> {
    if let Some(p) = std::env::var_os(ENV_SHIM) {
        let p = std::fs::canonicalize(PathBuf::from(p)).map_err(RunError::Shim)?;
        let st = is_static(&p).map_err(RunError::Shim)?;
        return Ok((p, st));
    }
    let exe = std::fs::canonicalize(std::env::current_exe().map_err(RunError::Shim)?)
        .map_err(RunError::Shim)?;
    if is_static(&exe).map_err(RunError::Shim)? {
        return Ok((exe, true));
    }
    let mut candidates = Vec::new();
    if let Some(profile_dir) = exe.parent() {
        if let (Some(target), Some(profile)) = (profile_dir.parent(), profile_dir.file_name()) {
            candidates.push(
                target
                    .join("x86_64-unknown-linux-gnu")
                    .join(profile)
                    .join("unbaked"),
            );
            candidates.push(target.join("x86_64-unknown-linux-gnu/release/unbaked"));
        }
    }
    candidates.push(PathBuf::from("/usr/local/lib/unbaked/unbaked-static"));
    candidates.push(PathBuf::from("/usr/lib/unbaked/unbaked-static"));
    for c in candidates {
        if c.is_file() && is_static(&c).unwrap_or(false) {
            return Ok((c, true));
        }
    }
    Ok((exe, false))
}

/// Whether an ELF executable has no program interpreter (PT_INTERP), i.e.
/// runs without a dynamic loader in an empty image.
fn is_static(path: &Path) -> std::io::Result<bool> {
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take(64 * 1024)
        .read_to_end(&mut head)?;
    Ok(elf_interp(&head) == Some(false))
}

/// `Some(has_interp)` for a 64-bit little-endian ELF, else `None`.
fn elf_interp(b: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if b.get(..4)? != b"\x7fELF" || *b.get(4)? != 2 || *b.get(5)? != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let phoff = usize::try_from(u64::from_le_bytes(b.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?);
        if p_type == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_interpreter_is_found() {
        // This test binary is dynamically linked (the host build).
        let me = std::env::current_exe().unwrap();
        let head = std::fs::read(&me).unwrap();
        assert_eq!(elf_interp(&head), Some(true));
        assert_eq!(elf_interp(b"#!/bin/sh\n"), None);
        assert_eq!(elf_interp(b"\x7fELF\x02\x01"), None);
        // A minimal 64-bit ELF header with no program headers: static.
        let mut h = vec![0u8; 64];
        h[..6].copy_from_slice(b"\x7fELF\x02\x01");
        h[0x20] = 64;
        h[0x36] = 56;
        assert_eq!(elf_interp(&h), Some(false));
        // One PT_INTERP header.
        h[0x38] = 1;
        h.extend_from_slice(&[3, 0, 0, 0]);
        h.resize(64 + 56, 0);
        assert_eq!(elf_interp(&h), Some(true));
    }
}
