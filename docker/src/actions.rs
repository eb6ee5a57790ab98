//! Change actions on `unbaked run` containers: when a file template with an
//! `on_change` renders different bytes at a renewal, the broker acts on the
//! container through the engine (no shared pid namespace, nothing in the
//! container but the app):
//!
//! - `signal`: `POST /containers/{id}/kill?signal=…`: the container's main
//!   process (the app: the shim `execve`d it; or the shim supervising the
//!   app for env/fd actions, which forwards it) gets the signal; with
//!   `signal_container`, the container the policy names instead, under
//!   the same check as a sidecar's request ([`signal_named`]);
//! - `restart`: `POST /containers/{id}/restart`: the engine's stop, then
//!   start; the launch is kept through it (see
//!   [`Containers::container_gone`]), and the shim's new fetch writes a
//!   fresh file lease, taken as the new baseline;
//! - `command`: an engine exec of the argv (no shell) as the container's
//!   user; ok when it exits 0 within [`COMMAND_TIMEOUT`].
//!
//! Detection is the one shared state machine ([`Watch`], per launch): by
//! content hash, debounced, retried with backoff. Every run is audited and
//! counted through [`Core::action_done`]; a failing one is a line of
//! `/readyz` ([`detail`]) until it succeeds or its item goes.

use crate::containers::Containers;
use bollard::query_parameters::{KillContainerOptions, RestartContainerOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use unbaked_api::wire::OnChange;
use unbaked_broker::audit::{ActionRef, ContainerRef};
use unbaked_broker::names::bounded_name;
use unbaked_broker::platform::{ActionReport, Core, SignalError};
use unbaked_broker::request::Refusal;
use unbaked_broker::rules::DenyRule;
use unbaked_secretsdir::change::{describe, Due};

/// How long a `command` action may run inside the container.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The engine's grace between SIGTERM and SIGKILL on `restart`.
pub const STOP_GRACE_SECS: i32 = 10;
/// Beyond a restart's grace or a command's run, for the engine's answer.
const ENGINE_SLACK: Duration = Duration::from_secs(20);
/// How long after a restart a `die` of the container keeps its launch.
pub const RESTART_HOLD: Duration = Duration::from_secs(60);
/// How long the hold lasts once the engine answered the restart.
const AFTER_RESTART: Duration = Duration::from_secs(5);

/// One due action with what it needs to run and be reported.
struct Job {
    launch: String,
    container: String,
    workload: String,
    lease: String,
    due: Due,
}

/// Run the launches' due change actions until the task is dropped.
pub async fn run(core: Arc<dyn Core>, containers: Arc<Containers>) {
    loop {
        let next = next_due(&containers);
        tokio::select! {
            _ = sleep_until(next) => {}
            _ = containers.wake_actions.notified() => {}
        }
        for job in take_due(&containers, Instant::now()) {
            let core = core.clone();
            let containers = containers.clone();
            tokio::spawn(async move { carry_out(&*core, &containers, job).await });
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

fn next_due(containers: &Containers) -> Option<Instant> {
    containers
        .launches()
        .values()
        .filter(|e| e.bound.is_some())
        .filter_map(|e| e.watch.next_due())
        .min()
}

fn take_due(containers: &Containers, now: Instant) -> Vec<Job> {
    let mut launches = containers.launches();
    let mut jobs = Vec::new();
    for (lid, e) in launches.iter_mut() {
        let Some(b) = e.bound.as_ref() else {
            continue;
        };
        let (container, lease) = (b.container.clone(), b.lease_id.clone());
        for due in e.watch.take_due(now) {
            jobs.push(Job {
                launch: lid.clone(),
                container: container.clone(),
                workload: e.workload.clone(),
                lease: lease.clone(),
                due,
            });
        }
    }
    jobs
}

async fn carry_out(core: &dyn Core, containers: &Containers, job: Job) {
    // `permanent`: no retry can succeed (a named container not the workload's).
    let (result, permanent) = match &job.due.action {
        OnChange::Signal {
            signal,
            container: None,
        } => (kill(containers, &job.container, signal).await, false),
        OnChange::Signal {
            signal,
            container: Some(name),
        } => match signal_named(containers, &job.workload, name, signal).await {
            Ok(_) => (Ok(()), false),
            Err(SignalError::Failed(e)) => (Err(e), false),
            Err(SignalError::Refused(r)) => (
                Err(format!("refused by rule {}: {}", r.rule, r.reason)),
                true,
            ),
        },
        OnChange::Restart => (
            restart(containers, &job.launch, &job.container).await,
            false,
        ),
        OnChange::Command { command } => (exec(containers, &job.container, command).await, false),
    };
    {
        let mut launches = containers.launches();
        if let Some(e) = launches.get_mut(&job.launch) {
            match (&result, permanent) {
                (Err(why), true) => e.watch.abandon(&job.due, why),
                _ => e.watch.done(&job.due, result.clone(), Instant::now()),
            }
        }
    }
    containers.wake_actions.notify_one();
    let kind = match job.due.action {
        OnChange::Signal { .. } => "signal",
        OnChange::Command { .. } => "command",
        OnChange::Restart => "restart",
    };
    core.action_done(ActionReport {
        workload: job.workload,
        lease: job.lease,
        container: ContainerRef {
            id: job.container,
            name: String::new(),
            unverified: false,
        },
        kind,
        action: ActionRef {
            item: job.due.id.clone(),
            from_version: job.due.from_version,
            to_version: job.due.to_version,
            changes: job.due.changes,
            action: describe(&job.due.action),
            attempt: job.due.attempts,
            result: String::new(),
            error: result.err(),
        },
        asked_by: None,
    });
}

/// `signal` to the container the policy names (`signal_container`), if it
/// is `workload`'s: labelled `io.unbaked.workload` = workload (the label
/// the gate already holds to: such a container gets no other workload's
/// secrets) and, if it names a launch, launched for that workload. The
/// signal goes to the id inspected, so a name taken over meanwhile does
/// not receive it. Ok: that id.
pub async fn signal_named(
    containers: &Containers,
    workload: &str,
    name: &str,
    signal: &str,
) -> Result<String, SignalError> {
    // The caller learns that the container is not the workload's; what it
    // is instead (another workload's name, a launch id) is the operator's.
    let refuse = |why: String, detail: Option<String>| {
        let reason =
            format!("container {name:?} may not be signalled for workload {workload:?}: {why}");
        let mut refusal = Refusal::new(DenyRule::ActionContainer, reason.clone());
        if let Some(d) = detail {
            refusal = refusal.detail(format!("{reason} ({d})"));
        }
        SignalError::Refused(refusal)
    };
    let found = containers
        .engine
        .inspect(name)
        .await
        .map_err(|e| SignalError::Failed(e.to_string()))?;
    // The engine resolves an unknown name as an id prefix too: only the
    // container of that very name (or full id) is the one the policy means.
    let Some(c) = found.filter(|c| c.name == name || c.id == name) else {
        return Err(refuse(
            "the Docker Engine knows no container of that name".into(),
            None,
        ));
    };
    let label = crate::launch::LABEL_WORKLOAD;
    match c.labels.get(label) {
        Some(w) if w == workload => {}
        Some(w) => {
            return Err(refuse(
                format!("it is not labelled {label}={workload:?}"),
                Some(format!("labelled {label}={}", bounded_name(w))),
            ))
        }
        None => return Err(refuse(format!("it carries no {label} label"), None)),
    }
    if let Some(launch) = c.labels.get(crate::launch::LABEL_LAUNCH) {
        let launched_for = containers
            .launches()
            .get(launch)
            .map(|e| e.workload.clone());
        if launched_for.as_deref() != Some(workload) {
            return Err(refuse(
                "it names a launch this broker did not start for the workload".into(),
                Some(format!("launch label {}", bounded_name(launch))),
            ));
        }
    }
    if !c.running {
        return Err(SignalError::Failed(format!(
            "container {name:?} ({}) is not running",
            short(&c.id)
        )));
    }
    kill(containers, &c.id, signal)
        .await
        .map_err(SignalError::Failed)?;
    Ok(c.id)
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn refused(what: &str, e: impl std::fmt::Display) -> String {
    format!("the Docker Engine refused {what}: {e}")
}

async fn kill(containers: &Containers, id: &str, signal: &str) -> Result<(), String> {
    let client = containers
        .engine
        .client()
        .await
        .map_err(|e| e.to_string())?;
    let options = KillContainerOptions {
        signal: signal.to_string(),
    };
    client
        .kill_container(id, Some(options))
        .await
        .map_err(|e| refused(&format!("{signal} to the container's main process"), e))
}

async fn restart(containers: &Containers, launch: &str, id: &str) -> Result<(), String> {
    let client = containers
        .engine
        .client()
        .await
        .map_err(|e| e.to_string())?
        // The engine answers once the container stopped (up to the grace)
        // and started again: longer than an ordinary request may take.
        .with_timeout(Duration::from_secs(STOP_GRACE_SECS as u64) + ENGINE_SLACK);
    containers.hold_through_restart(launch, Instant::now() + RESTART_HOLD);
    let options = RestartContainerOptions {
        signal: None,
        t: Some(STOP_GRACE_SECS),
    };
    let done = client
        .restart_container(id, Some(options))
        .await
        .map_err(|e| refused("a restart", e));
    // The restart is over (done or failed): the hold only outlives it by
    // the time its `die` event may take to arrive, so a container removed
    // meanwhile, or between retries, loses its files as usual.
    containers.hold_through_restart(launch, Instant::now() + AFTER_RESTART);
    done
}

async fn exec(containers: &Containers, id: &str, argv: &[String]) -> Result<(), String> {
    use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
    use futures_util::StreamExt;
    let client = containers
        .engine
        .client()
        .await
        .map_err(|e| e.to_string())?
        .with_timeout(COMMAND_TIMEOUT + ENGINE_SLACK);
    let created = client
        .create_exec(
            id,
            CreateExecOptions {
                cmd: Some(argv.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| refused("an exec", e))?;
    let ran = async {
        // The output is drained, never kept: a command may print a value.
        if let StartExecResults::Attached { mut output, .. } = client
            .start_exec(&created.id, Some(StartExecOptions::default()))
            .await
            .map_err(|e| refused("starting an exec", e))?
        {
            while let Some(chunk) = output.next().await {
                chunk.map_err(|e| refused("an exec's output", e))?;
            }
        }
        Ok::<(), String>(())
    };
    tokio::time::timeout(COMMAND_TIMEOUT, ran)
        .await
        .map_err(|_| format!("{:?} ran longer than {COMMAND_TIMEOUT:?}", argv[0]))??;
    let inspected = client
        .inspect_exec(&created.id)
        .await
        .map_err(|e| refused("inspecting an exec", e))?;
    match inspected.exit_code {
        Some(0) => Ok(()),
        Some(code) => Err(format!("{:?} exited with {code}", argv[0])),
        None => Err(format!("{:?}: the engine reported no exit code", argv[0])),
    }
}

/// `/readyz` lines: each launch's actions that failed and are being retried.
pub fn detail(containers: &Containers) -> Vec<String> {
    let launches = containers.launches();
    let mut lines = Vec::new();
    for e in launches.values() {
        let Some(b) = e.bound.as_ref() else {
            continue;
        };
        for f in e.watch.failing() {
            lines.push(format!(
                "action failing (retrying): workload {}, container {}, item {}, {}, {} attempt(s): {}",
                e.workload,
                b.container.get(..12).unwrap_or(&b.container),
                f.id,
                describe(&f.action),
                f.attempts,
                f.error
            ));
        }
    }
    lines.sort();
    lines
}
