//! `unbaked compose`: the Compose wrapper. Every service labelled
//! `io.unbaked.workload: NAME` gets what `unbaked run` gives one container:
//! the broker's launch checks (same rule ids), the hardening, the
//! workload's ICC-off network, the exec shim around the image's command,
//! and `/run/secrets` on a per-container tmpfs the shim fills. The real
//! compose CLI then runs with the user's arguments plus one override file,
//! so every compose command and flag keeps working.
//!
//! 1. The project is read as compose reads it: by unbaked itself for the
//!    common case (`native.rs`: the files, `.env`, interpolation, the
//!    override merge), else by compose (`compose config` with the user's
//!    global options and environment, every profile on). Whatever
//!    `native.rs` does not implement exactly falls back to compose.
//! 2. Each workload service is converted to `docker run` arguments
//!    (`service.rs`) and planned by the broker (`compose: true`; a real
//!    run also makes the broker create the ICC-off network). A refusal
//!    stops everything before compose runs, naming the service, the rule
//!    and `file:line` in the user's files (`locate.rs`).
//! 3. The plan's additions become the override (`overlay.rs`), handed to
//!    compose as a sealed memfd (`/proc/<pid>/fd/N`): never a file in the
//!    project, never a value in it.

mod args;
pub mod check;
mod command;
mod locate;
mod native;
mod overlay;
mod service;

use crate::run::{find_shim, RunError};
use locate::{key, Located, Step};
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use unbaked_api::exit;
use unbaked_api::wire::{ErrorCode, LaunchRequest};
use unbaked_sidecar::client::{Client, ClientError};
use yaml_rust2::{Yaml, YamlLoader};

/// Overrides the compose CLI (a command line: `docker compose`, a path...).
pub const ENV_COMPOSE: &str = "UNBAKED_COMPOSE";

#[derive(Debug)]
pub struct ComposeConfig {
    pub socket: PathBuf,
    pub dry_run: bool,
    pub args: Vec<OsString>,
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("argument {0:?} is not valid UTF-8: compose arguments must be text")]
    NotText(OsString),
    #[error("{0}")]
    Usage(String),
    #[error("{0}: the compose CLI was not found: install docker-compose (scripts/install-docker-deps) or the docker compose plugin, or set {ENV_COMPOSE}")]
    ComposeNotFound(String),
    #[error("`{cli} config` failed ({status}), so the project cannot be read:\n{stderr}")]
    Config {
        cli: String,
        status: String,
        stderr: String,
    },
    #[error("cannot read the output of `compose config`: {0}")]
    ConfigYaml(String),
    #[error("cannot turn the broker's plan into a compose override: {0}")]
    Plan(String),
    #[error("refused before anything started:\n{0}")]
    Refused(String),
    #[error(transparent)]
    Shim(#[from] RunError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot hand the override to compose (memfd)")]
    Override(#[source] std::io::Error),
    #[error("{program}: cannot execute the compose CLI")]
    Exec {
        program: String,
        source: std::io::Error,
    },
}

impl ComposeError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ComposeError::NotText(_) | ComposeError::Usage(_) => exit::USAGE,
            ComposeError::ComposeNotFound(_) => exit::COMMAND_NOT_FOUND,
            ComposeError::Exec { .. } => exit::CANNOT_EXECUTE,
            ComposeError::Refused(_) => exit::DENIED,
            ComposeError::Shim(e) => e.exit_code(),
            ComposeError::Client(e) => e.exit_code(),
            _ => exit::FAILURE,
        }
    }
}

/// What to run once the project is planned.
enum Decision {
    /// `--dry-run`: the override was printed.
    DryRun,
    /// No workload service (or the broker is away for a teardown): compose
    /// as the user asked, with no override.
    Plain,
    /// Compose with this override and these compose arguments (`run
    /// SERVICE CMD` of a workload service: without CMD, which the
    /// override's command carries).
    Override(String, Vec<String>),
}

/// Returns only on failure, or after a dry run.
pub fn run(cfg: ComposeConfig) -> Result<(), ComposeError> {
    let argv = cfg
        .args
        .iter()
        .map(|a| a.clone().into_string().map_err(ComposeError::NotText))
        .collect::<Result<Vec<String>, _>>()?;
    let split = args::split(&argv).map_err(ComposeError::Usage)?;
    let cli = compose_cli();
    if split.files.iter().any(|f| f == "-") {
        return Err(ComposeError::Usage(
            "-f - (the project on stdin) cannot be read twice (once to check it, once by compose): write it to a file".into(),
        ));
    }
    let files = args::files(&split, |k| std::env::var(k).ok()).map_err(ComposeError::Usage)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ComposeError::Runtime)?;
    args::compose_settings_in_env_files(&split, &files).map_err(ComposeError::Usage)?;
    let named = named_files(&files);
    let decided = decide(&cfg, &cli, &split, &files, &named, &rt);
    match decided? {
        Decision::DryRun => Ok(()),
        // The files named as for `config`: compose's own lookup could
        // find others than `args::files` did.
        Decision::Plain => exec(&cli, &split.globals, &named, None, &split.rest),
        Decision::Override(text, rest) => {
            let fd =
                unbaked_secretsdir::sys::sealed_memfd("unbaked-compose-override", text.as_bytes())
                    .map_err(ComposeError::Override)?;
            unbaked_secretsdir::sys::clear_cloexec(fd.as_fd()).map_err(ComposeError::Override)?;
            // Through our pid, not `self`: `docker compose` runs its plugin
            // as a child of the docker CLI (this process after the exec).
            let path = format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                std::os::fd::AsRawFd::as_raw_fd(&fd)
            );
            let e = exec(&cli, &split.globals, &named, Some(&path), &rest);
            drop(fd);
            e
        }
    }
}

/// `-f` for each file `args::files` found when the user named none: the
/// override's `-f` turns compose's own lookup off, and `compose config`
/// must read the very files the run reads.
fn named_files(files: &args::Files) -> Vec<String> {
    let mut named = Vec::new();
    if !files.explicit {
        for p in &files.paths {
            named.push("-f".to_string());
            named.push(p.display().to_string());
        }
    }
    named
}

/// Resolve the project, plan every workload service, and say what to run.
fn decide(
    cfg: &ComposeConfig,
    cli: &[String],
    split: &args::Split,
    files: &args::Files,
    named: &[String],
    rt: &tokio::runtime::Runtime,
) -> Result<Decision, ComposeError> {
    let v2 = is_v2(cli);
    let (config, base) = read_project(cli, split, files, named, v2)?;
    let located = locate_files(files);
    let project_name = project_name(&config, base.is_none(), split, files, &|k| {
        std::env::var(k).ok()
    });
    let project = service::Project {
        name: &project_name,
        config: &config,
        files: &located,
        base: base.as_deref(),
    };
    let asked = command::parse(&split.rest);
    let (workloads, mut refused) =
        convert_services(project, asked.as_ref().ok().and_then(Option::as_ref));
    if workloads.is_empty() && refused.is_empty() {
        if cfg.dry_run {
            eprintln!("unbaked compose: no service is labelled {}: compose runs unchanged, without an override", service::LABEL);
            return Ok(Decision::DryRun);
        }
        return Ok(Decision::Plain);
    }
    if let Err(e) = &asked {
        refused.push(e.clone());
    }
    let rest = compose_rest(&asked, &workloads, &split.rest);
    let (shim, shim_static) = find_shim()?;
    let planner = Planner {
        rt,
        client: Client::new(&cfg.socket),
        shim: shim.display().to_string(),
        located: &located,
        rest: &split.rest,
        version: service::scalar(&config["version"]),
        v2: v2 || config["name"].as_str().is_some(),
    };
    // Every service is planned as a dry run first, so a refusal of any one
    // leaves nothing behind; then, for real, the broker creates each
    // workload's ICC-off network (the plans are the same).
    let real = !cfg.dry_run && shim_static && refused.is_empty();
    let mut overlay = overlay::Overlay::default();
    for dry_run in [true, false] {
        if !dry_run && (!real || !refused.is_empty()) {
            break;
        }
        match planner.pass(&workloads, dry_run, &mut refused)? {
            Some(o) => overlay = o,
            None => return Ok(Decision::Plain),
        }
    }
    if !refused.is_empty() {
        return Err(ComposeError::Refused(refused.join("\n")));
    }
    if !shim_static && !cfg.dry_run {
        return Err(RunError::NotStatic(shim).into());
    }
    if !shim_static {
        eprintln!("unbaked: warning: {}", RunError::NotStatic(shim.clone()));
    }
    let text = overlay.render();
    if cfg.dry_run {
        print!("{text}");
        return Ok(Decision::DryRun);
    }
    Ok(Decision::Override(text, rest))
}

/// The compose arguments of the real run: a `run SERVICE CMD` of a
/// workload service without CMD (the override's command carries it,
/// inside the shim's arguments).
fn compose_rest(
    asked: &Result<Option<command::Asked>, String>,
    workloads: &[Workload],
    rest: &[String],
) -> Vec<String> {
    match asked {
        Ok(Some(a))
            if !a.command.is_empty() && workloads.iter().any(|w| w.service == a.service) =>
        {
            a.rest_without_command.clone()
        }
        _ => rest.to_vec(),
    }
}

/// The project's files as the user wrote them, for pointing at
/// `file:line` (a file that cannot be read is left out: compose read it).
fn locate_files(files: &args::Files) -> Vec<Located> {
    files
        .paths
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            Some(Located::parse(p, &text))
        })
        .collect()
}

/// A service labelled for a workload, converted.
struct Workload {
    service: String,
    workload: String,
    converted: service::Converted,
}

/// Every labelled service converted (the one a `compose run`/`exec`
/// names with what its command line asks), and the refusal (`file:line:
/// service "NAME": why`) of each one that cannot be.
fn convert_services(
    project: service::Project<'_>,
    asked: Option<&command::Asked>,
) -> (Vec<Workload>, Vec<String>) {
    let mut workloads = Vec::new();
    let mut refused = Vec::new();
    let Some(services) = project.config["services"].as_hash() else {
        return (workloads, refused);
    };
    for (name, svc) in services {
        let Some(name) = name.as_str() else { continue };
        if !svc["label_file"].is_badvalue() {
            // Any service: the file could name a workload.
            refused.push(format!(
                "{}: service {name:?}: compose.label_file: unbaked compose cannot see the labels a file gives (io.unbaked.workload among them): write them under labels:",
                at(project.files, name, &[key("label_file")])
            ));
            continue;
        }
        let Some(w) = service::workload(svc) else {
            continue;
        };
        let asked = asked.filter(|a| a.service == name);
        let svc = &with_command(svc, asked);
        match service::convert(name, svc, project) {
            Ok(_) if asked.is_some_and(|a| a.entrypoint) => refused.push(format!(
                "{}: service {name:?} (workload {w:?}): compose.run_entrypoint: `compose run --entrypoint` replaces the exec shim, so the container would run without its secrets' guard: give the entrypoint in the service's file",
                at(project.files, name, &[])
            )),
            Ok(mut converted) => {
                add_asked(&mut converted, asked);
                workloads.push(Workload {
                service: name.to_string(),
                    workload: w,
                    converted,
                })
            }
            Err(u) => refused.push(format!(
                "{}: service {name:?}: {}",
                at(project.files, name, &u.at),
                u.reason
            )),
        }
    }
    let names: Vec<&str> = workloads.iter().map(|w| w.service.as_str()).collect();
    for (name, svc) in services {
        let Some(name) = name.as_str() else { continue };
        for (field, target) in shared_with(svc) {
            if target != name && names.contains(&target.as_str()) {
                refused.push(format!(
                    "{}: service {name:?}: {field} reaches into workload service {target:?} (its processes, memory or files): give it a network, pid and ipc of its own and no volumes_from or links to a workload service",
                    at(project.files, name, &[key(field)])
                ));
            }
        }
    }
    (workloads, refused)
}

/// The service as `compose run SERVICE CMD` runs it: CMD as its command.
fn with_command(svc: &Yaml, asked: Option<&command::Asked>) -> Yaml {
    let mut svc = svc.clone();
    if let (Some(a), Yaml::Hash(h)) = (asked, &mut svc) {
        if !a.command.is_empty() {
            let cmd = a.command.iter().cloned().map(Yaml::String).collect();
            h.insert(Yaml::String("command".into()), Yaml::Array(cmd));
        }
    }
    svc
}

/// The options a `compose run`/`exec` line adds, before the image (each
/// converted option is one argument), judged where the service is.
fn add_asked(converted: &mut service::Converted, asked: Option<&command::Asked>) {
    let Some(a) = asked else { return };
    for (name, value) in &a.options {
        let at = converted.options.len();
        let (arg, spelled) = match value {
            Some(v) => (format!("--{name}={v}"), format!("--{name} {v}")),
            None => (format!("--{name}"), format!("--{name}")),
        };
        converted.args.insert(at, arg);
        converted.origins.push((spelled, Vec::new()));
        converted.options.push((name.clone(), value.clone()));
    }
}

/// The services whose namespaces, volumes or ports `svc` shares:
/// `network_mode`/`pid`/`ipc: service:X`, `volumes_from: [X]`, `links: [X]`.
fn shared_with(svc: &Yaml) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for field in ["network_mode", "pid", "ipc"] {
        if let Some(target) = svc[field].as_str().and_then(|v| v.strip_prefix("service:")) {
            out.push((field, target.to_string()));
        }
    }
    for field in ["volumes_from", "links"] {
        for item in svc[field].as_vec().map(Vec::as_slice).unwrap_or_default() {
            let Some(item) = item.as_str() else { continue };
            if item.starts_with("container:") {
                continue;
            }
            let item = item.strip_prefix("service:").unwrap_or(item);
            let target = item.split(':').next().unwrap_or(item);
            out.push((field, target.to_string()));
        }
    }
    out
}

/// What planning the workload services with the broker needs.
struct Planner<'a> {
    rt: &'a tokio::runtime::Runtime,
    client: Client,
    /// The static shim's path, for the plan's bind mount.
    shim: String,
    located: &'a [Located],
    /// The compose command and its arguments.
    rest: &'a [String],
    /// The project's file version, which the override repeats.
    version: Option<String>,
    /// The compose CLI is v2 (it prints the project's `name:`).
    v2: bool,
}

impl Planner<'_> {
    /// Ask the broker for every service's plan (`dry_run`: change nothing)
    /// and gather the override. A denial is added to `refused` and the
    /// other services are still planned, so every refusal shows at once.
    /// `None`: the broker is away and the command needs no plan (a
    /// teardown), so compose runs as the user asked.
    fn pass(
        &self,
        workloads: &[Workload],
        dry_run: bool,
        refused: &mut Vec<String>,
    ) -> Result<Option<overlay::Overlay>, ComposeError> {
        let mut overlay = overlay::Overlay::default();
        overlay.version = self.version.clone();
        for (wl, answer) in workloads.iter().zip(self.plans(workloads, dry_run)) {
            let Workload {
                service: name,
                workload: w,
                converted,
            } = wl;
            match answer {
                Ok(plan) => {
                    if dry_run {
                        for warning in &plan.warnings {
                            eprintln!("unbaked: warning: service {name:?}: {warning}");
                        }
                    }
                    overlay
                        .add(name, converted, &plan.args, self.v2)
                        .map_err(|e| ComposeError::Plan(format!("service {name:?}: {e}")))?;
                }
                Err(ClientError::Api(e)) if e.code == ErrorCode::Denied => {
                    refused.push(refusal_lines(self.located, name, w, converted, &e.message));
                }
                Err(e @ ClientError::Unavailable { .. }) if tears_down(self.rest) => {
                    // Stopping or reading a project needs no plan: compose
                    // finds its containers by label, and the workload
                    // networks are external, so it leaves them alone.
                    eprintln!("unbaked: warning: {e}: running compose without the override (enough for `{}`)", self.rest[0]);
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(overlay))
    }

    /// Every service's plan, in order, asked at once. For real (the broker
    /// creates a workload's network), the first service of each workload
    /// is planned before that workload's others, so one request creates it.
    fn plans(
        &self,
        workloads: &[Workload],
        dry_run: bool,
    ) -> Vec<Result<unbaked_api::wire::LaunchPlan, ClientError>> {
        let first = |i: usize| {
            dry_run
                || !workloads[..i]
                    .iter()
                    .any(|o| o.workload == workloads[i].workload)
        };
        let mut answers: Vec<Option<_>> = workloads.iter().map(|_| None).collect();
        for wave in [true, false] {
            let mut set = tokio::task::JoinSet::new();
            let _guard = self.rt.enter();
            for (i, wl) in workloads.iter().enumerate() {
                if first(i) != wave {
                    continue;
                }
                let client = self.client.clone();
                let req = LaunchRequest {
                    workload: Some(wl.workload.clone()),
                    args: wl.converted.args.clone(),
                    shim: self.shim.clone(),
                    dry_run,
                    compose: true,
                };
                set.spawn(async move { (i, client.launch(&req).await) });
            }
            self.rt.block_on(async {
                while let Some(joined) = set.join_next().await {
                    if let Ok((i, answer)) = joined {
                        answers[i] = Some(answer);
                    }
                }
            });
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(ClientError::Protocol(
                        "a plan request stopped before the broker answered".into(),
                    ))
                })
            })
            .collect()
    }
}

/// Compose commands that create or start nothing, so they may run without
/// the broker (a `down` must work while the broker is away).
fn tears_down(rest: &[String]) -> bool {
    const SAFE: &[&str] = &[
        "down", "stop", "kill", "rm", "ps", "logs", "top", "events", "port", "images", "pause",
    ];
    rest.first().is_some_and(|c| SAFE.contains(&c.as_str()))
}

/// `UNBAKED_COMPOSE`, else `docker-compose` when on PATH, else `docker compose`.
fn compose_cli() -> Vec<String> {
    if let Some(v) = std::env::var(ENV_COMPOSE)
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        return v.split_whitespace().map(str::to_string).collect();
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("docker-compose").is_file()));
    if on_path {
        vec!["docker-compose".into()]
    } else {
        vec!["docker".into(), "compose".into()]
    }
}

/// The project, read by unbaked (`native.rs`) or else by compose, and the
/// directory relative bind sources start from (`None`: compose made them
/// absolute).
fn read_project(
    cli: &[String],
    split: &args::Split,
    files: &args::Files,
    named: &[String],
    v2: bool,
) -> Result<(Yaml, Option<PathBuf>), ComposeError> {
    let why = match native::read(split, files, &|k| std::env::var(k).ok()) {
        Ok(n) if v2 || n.doc["name"].is_badvalue() => {
            tracing::debug!("the project is read by unbaked");
            return Ok((n.doc, Some(n.base)));
        }
        Ok(_) => "a top-level name: (docker-compose 1.29 refuses it)".to_string(),
        Err(native::Fallback(why)) => why,
    };
    tracing::debug!(%why, "the project is read by `compose config`");
    Ok((project_config(cli, &split.globals, named)?, None))
}

/// Whether the compose CLI is v2: the `docker compose` plugin, or a
/// `docker-compose` that is a program (Go) rather than a script
/// (docker-compose 1.29 is Python). Only the override's `cgroup:` depends
/// on it, and docker-compose 1.29 refuses that loudly.
fn is_v2(cli: &[String]) -> bool {
    if cli.len() > 1 || cli[0] == "docker" {
        return cli.get(1).is_some_and(|c| c == "compose");
    }
    let path = if cli[0].contains('/') {
        Some(PathBuf::from(&cli[0]))
    } else {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(&cli[0]))
                .find(|p| p.is_file())
        })
    };
    let mut head = [0u8; 2];
    path.and_then(|p| std::fs::File::open(p).ok())
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head).ok())
        .is_some_and(|_| &head != b"#!")
}

/// The project as compose resolves it: `compose <globals> config`, every
/// profile on (compose v2 leaves out a service of an inactive profile,
/// which `compose run` or a later `--profile` still starts). `named`: the
/// `-f` files the real run gets when the user named none, so both read
/// the same files.
fn project_config(
    cli: &[String],
    globals: &[String],
    named: &[String],
) -> Result<Yaml, ComposeError> {
    let mut all_profiles = Vec::new();
    let mut skip = false;
    for g in globals {
        if std::mem::take(&mut skip) {
            continue;
        }
        skip = g == "--profile";
        if !skip && !g.starts_with("--profile=") {
            all_profiles.push(g);
        }
    }
    let out = Command::new(&cli[0])
        .args(&cli[1..])
        .args(all_profiles)
        .args(named)
        .arg("config")
        .env("COMPOSE_PROFILES", "*")
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ComposeError::ComposeNotFound(cli.join(" ")),
            _ => ComposeError::Exec {
                program: cli.join(" "),
                source: e,
            },
        })?;
    if !out.status.success() {
        return Err(ComposeError::Config {
            cli: cli.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
        });
    }
    let text =
        String::from_utf8(out.stdout).map_err(|_| ComposeError::ConfigYaml("not UTF-8".into()))?;
    let mut docs =
        YamlLoader::load_from_str(&text).map_err(|e| ComposeError::ConfigYaml(e.to_string()))?;
    if docs.is_empty() {
        return Err(ComposeError::ConfigYaml("empty".into()));
    }
    let mut doc = docs.swap_remove(0);
    unescape(&mut doc);
    Ok(doc)
}

/// `compose config` prints a file compose could read again, so a literal
/// `$` comes out as `$$`: the values the container gets have single ones
/// (the override escapes them again).
fn unescape(y: &mut Yaml) {
    match y {
        Yaml::String(s) if s.contains("$$") => *s = s.replace("$$", "$"),
        Yaml::Array(a) => a.iter_mut().for_each(unescape),
        Yaml::Hash(h) => h.values_mut().for_each(unescape),
        _ => {}
    }
}

/// The project's name as compose gives it: `compose config`'s `name:`
/// when compose read the project (`from_config`: v2 prints it, having
/// weighed `-p` and the environment itself); else v2's order, which
/// docker-compose 1.29 (no `name:`) shares: `-p`, `COMPOSE_PROJECT_NAME`,
/// the file's `name:`, the project directory's name.
fn project_name(
    config: &Yaml,
    from_config: bool,
    split: &args::Split,
    files: &args::Files,
    env: &dyn Fn(&str) -> Option<String>,
) -> String {
    let file_name = config["name"].as_str().map(str::to_string);
    let given = split
        .project_name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| env("COMPOSE_PROJECT_NAME").filter(|n| !n.is_empty()));
    let chosen = match from_config {
        true => file_name.or(given),
        false => given.or(file_name),
    };
    if let Some(n) = chosen {
        return normalize_name(&n);
    }
    let dir = split
        .project_directory
        .as_ref()
        .map(PathBuf::from)
        .or_else(|| {
            files
                .paths
                .first()
                .and_then(|p| p.parent().map(Path::to_path_buf))
        })
        .unwrap_or_default();
    let dir = std::fs::canonicalize(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &dir
    })
    .unwrap_or(dir);
    normalize_name(&dir.file_name().unwrap_or_default().to_string_lossy())
}

/// Lower case, `[a-z0-9_-]` only (docker-compose 1.29's normalisation;
/// v2 refuses a name it would change).
fn normalize_name(n: &str) -> String {
    n.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// `file:line` of `services.NAME.<field>` in the user's files.
fn at(files: &[Located], service: &str, field: &[Step]) -> String {
    let mut path = vec![key("services"), key(service)];
    path.extend(field.iter().cloned());
    match locate::find(files, &path) {
        Some((p, line)) => format!("{}:{line}", p.display()),
        None => "(compose config)".to_string(),
    }
}

/// The broker's refusal of one service, one line per refused option, each
/// at the line of the field it came from.
fn refusal_lines(
    files: &[Located],
    name: &str,
    w: &str,
    converted: &service::Converted,
    message: &str,
) -> String {
    let (body, trailer) = match message.rfind(" (denied by rule ") {
        Some(i) => (&message[..i], Some(message[i + 1..].to_string())),
        None => (message, None),
    };
    let mut lines: Vec<&str> = body.lines().collect();
    if lines.len() > 1 && lines[0].starts_with("unbaked run refused") {
        lines.remove(0);
    }
    let mut out = Vec::new();
    for line in lines {
        // `rule: --option value: why`
        let reason = line.split_once(": ").map_or(line, |(_, r)| r);
        let field = origin(converted, reason);
        out.push(format!(
            "{}: service {name:?} (workload {w:?}): {line}",
            at(files, name, &field)
        ));
    }
    if let Some(t) = trailer {
        out.push(format!("  {t}"));
    }
    out.join("\n")
}

/// The field (under `services.NAME`) of the option a refusal's reason
/// starts with (`--option value: why`); empty when none does.
fn origin(converted: &service::Converted, reason: &str) -> Vec<Step> {
    converted
        .origins
        .iter()
        .filter(|(spelled, _)| {
            reason.strip_prefix(spelled.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with(':') || rest.starts_with(' ')
            })
        })
        .max_by_key(|(spelled, _)| spelled.len())
        .map(|(_, path)| path.clone())
        .unwrap_or_default()
}

/// Replace this process with the compose CLI.
fn exec(
    cli: &[String],
    globals: &[String],
    named: &[String],
    overlay: Option<&str>,
    rest: &[String],
) -> Result<(), ComposeError> {
    let mut cmd = Command::new(&cli[0]);
    cmd.args(&cli[1..]).args(globals).args(named);
    if let Some(p) = overlay {
        cmd.arg("-f").arg(p);
    }
    cmd.args(rest);
    tracing::debug!(compose = %cli.join(" "), "exec compose");
    let err = cmd.exec();
    Err(match err.kind() {
        std::io::ErrorKind::NotFound => ComposeError::ComposeNotFound(cli.join(" ")),
        _ => ComposeError::Exec {
            program: cli.join(" "),
            source: err,
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Compose v2 as a standalone `docker-compose` (scripts/install-docker-deps
    /// extracts Debian trixie's); missing is a failure, not a skip.
    pub(crate) fn compose_v2() -> String {
        let p = std::env::var("UNBAKED_COMPOSE_V2")
            .unwrap_or_else(|_| "/var/cache/unbaked/compose-v2/docker-compose".into());
        assert!(
            Path::new(&p).is_file(),
            "{p} missing: scripts/install-docker-deps fetches Compose v2"
        );
        p
    }

    /// Fallback mode reads the files the real run gets (a merge key,
    /// which `native.rs` leaves to compose, in each): here those
    /// `COMPOSE_FILE` chose, though compose's own lookup would find
    /// compose.yaml.
    #[test]
    fn compose_config_reads_the_files_the_run_gets() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, extra: &str| {
            let text = format!("x-b: &b {{image: busybox}}\nservices:\n  web:\n    <<: *b\n    labels: {{io.unbaked.workload: web}}\n{extra}");
            std::fs::write(dir.path().join(name), text).unwrap();
            dir.path().join(name).display().to_string()
        };
        file("compose.yaml", "    privileged: true\n");
        let safe = file("safe.yml", "");
        let d = dir.path().display().to_string();
        let split = args::split(&["--project-directory".into(), d, "up".into()]).unwrap();
        let env = |k: &str| (k == "COMPOSE_FILE").then(|| safe.clone());
        let files = args::files(&split, env).unwrap();
        let named = named_files(&files);
        assert_eq!(named, ["-f".to_string(), safe.clone()]);
        for cli in [vec!["docker-compose".to_string()], vec![compose_v2()]] {
            let v2 = cli[0] != "docker-compose";
            let (doc, base) = read_project(&cli, &split, &files, &named, v2).unwrap();
            assert!(base.is_none(), "read natively despite <<");
            let web = &doc["services"]["web"];
            assert!(web["privileged"].is_badvalue(), "{cli:?}: {web:?}");
        }
        // Control: compose left to its own lookup reads another file.
        let doc = project_config(&[compose_v2()], &split.globals, &[]).unwrap();
        assert_eq!(doc["services"]["web"]["privileged"].as_bool(), Some(true));
    }

    /// v2's order: `-p`, then `COMPOSE_PROJECT_NAME`, then `name:`; in
    /// fallback mode the name compose printed.
    #[test]
    fn project_name_in_compose_v2_order() {
        let config = YamlLoader::load_from_str("name: bar\nservices: {}\n")
            .unwrap()
            .remove(0);
        let files = args::Files {
            paths: vec![PathBuf::from("/srv/My.App/compose.yaml")],
            explicit: true,
        };
        let none = |_: &str| None;
        let env = |k: &str| (k == "COMPOSE_PROJECT_NAME").then(|| "envn".to_string());
        let p = args::split(&["-p".into(), "foo".into(), "up".into()]).unwrap();
        let no_p = args::Split::default();
        assert_eq!(project_name(&config, false, &p, &files, &env), "foo");
        assert_eq!(project_name(&config, false, &no_p, &files, &env), "envn");
        assert_eq!(project_name(&config, false, &no_p, &files, &none), "bar");
        assert_eq!(project_name(&config, true, &p, &files, &env), "bar");
        let unnamed = YamlLoader::load_from_str("services: {}\n")
            .unwrap()
            .remove(0);
        assert_eq!(project_name(&unnamed, true, &no_p, &files, &none), "myapp");
        // What v2 prints for the same inputs.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("compose.yaml");
        std::fs::write(&f, "name: bar\nservices:\n  web: {image: busybox}\n").unwrap();
        let globals = [
            "-p".to_string(),
            "foo".into(),
            "-f".into(),
            f.display().to_string(),
        ];
        let doc = project_config(&[compose_v2()], &globals, &[]).unwrap();
        assert_eq!(doc["name"].as_str(), Some("foo"));
    }

    /// What an unlabelled service could use to reach into a workload
    /// service: every form is seen; a container reference is not a service.
    #[test]
    fn shared_namespaces_volumes_and_links_are_found() {
        let svc = &YamlLoader::load_from_str(
            "network_mode: service:billing\npid: service:billing\nipc: host\nvolumes_from: [billing, 'reports:ro', 'container:x']\nlinks: ['billing:db']\n",
        )
        .unwrap()[0];
        let found = shared_with(svc);
        assert_eq!(
            found,
            [
                ("network_mode", "billing".to_string()),
                ("pid", "billing".to_string()),
                ("volumes_from", "billing".to_string()),
                ("volumes_from", "reports".to_string()),
                ("links", "billing".to_string()),
            ]
        );
        // Control: a service of its own shares nothing.
        let own = &YamlLoader::load_from_str("image: web\nnetwork_mode: bridge\n").unwrap()[0];
        assert!(shared_with(own).is_empty());
    }
}
