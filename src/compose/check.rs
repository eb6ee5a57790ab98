//! `unbaked policy check DIR --compose FILE`: the services of a compose
//! file that `unbaked compose` would refuse, found before anyone runs it.
//! Each labelled service is converted and planned like the wrapper does,
//! with the launch plan's own checks (`unbaked_docker::launch`, pure), but
//! on the file as written: no `compose config` (so no `.env`
//! interpolation or merging), no engine (the image's command and the
//! host's mount identities are unknown, so mounts are judged by path).

use super::locate::{key, Located, Step};
use super::{origin, service, unescape};
use std::path::Path;
use unbaked_docker::launch::{self, Facts, HostFacts, Inputs};
use unbaked_policy::PolicySet;
use unbaked_review::rules::check::COMPOSE_SERVICE;
use unbaked_review::{Finding, Level};
use yaml_rust2::{Yaml, YamlLoader};

const HINT: &str = "unbaked compose refuses this service before anything starts: change the service, or the workload's [isolation] if it really needs this";

/// The findings of one compose file against `set`.
pub fn check_file(file: &Path, set: &PolicySet) -> Vec<Finding> {
    let finding = |line: usize, field: String, message: String| Finding {
        level: Level::Error,
        rule: COMPOSE_SERVICE,
        file: file.to_path_buf(),
        line,
        column: 1,
        field,
        message,
        hint: Some(HINT.into()),
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            return vec![finding(
                0,
                String::new(),
                format!("cannot read the compose file: {e}"),
            )]
        }
    };
    let mut doc = match YamlLoader::load_from_str(&text) {
        Ok(mut docs) if !docs.is_empty() => docs.swap_remove(0),
        Ok(_) => Yaml::Null,
        Err(e) => {
            return vec![finding(
                e.marker().line(),
                String::new(),
                format!("not YAML: {e}"),
            )]
        }
    };
    unescape(&mut doc);
    let located = [Located::parse(file, &text)];
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
    let line_of = |name: &str, field: &[Step]| {
        let mut path = vec![key("services"), key(name)];
        path.extend(field.iter().cloned());
        located[0].line(&path).map_or(0, |(l, _)| l)
    };
    let project = service::Project {
        name: "",
        config: &doc,
        files: &located,
        base: Some(&base),
    };
    let mut out = Vec::new();
    let Some(services) = doc["services"].as_hash() else {
        return out;
    };
    for (name, svc) in services {
        let (Some(name), Some(w)) = (name.as_str(), service::workload(svc)) else {
            continue;
        };
        let here = |field: &[Step]| (line_of(name, field), dotted(name, field));
        let Some(policy) = set.iter().find(|p| p.workload == w) else {
            let (line, field) = here(&[key("labels")]);
            out.push(finding(
                line,
                field,
                format!("service {name:?} names workload {w:?}, which no policy in the directory defines"),
            ));
            continue;
        };
        let converted = match service::convert(name, svc, project) {
            Ok(c) => c,
            Err(reason) => {
                let (line, field) = here(&[]);
                out.push(finding(line, field, format!("service {name:?}: {reason}")));
                continue;
            }
        };
        let has_files = policy
            .grants_of(&[unbaked_api::wire::DeliveryKind::File])
            .next()
            .is_some()
            || policy
                .templates_of(&[unbaked_api::wire::DeliveryKind::File])
                .next()
                .is_some();
        // What the engine would say, by default paths: the plan's checks
        // that need the image or the host judge these placeholders.
        let facts = Facts {
            image_cmd: vec!["(the image's command)".into()],
            shim: "/usr/local/lib/unbaked/unbaked-static".into(),
            broker_socket: "/run/unbaked/broker.sock".into(),
            containers_dir: "/run/unbaked/containers".into(),
            sockets: vec!["/var/run/docker.sock".into(), "/run/docker.sock".into()],
            launch_id: "check".into(),
            compose: true,
            container_files: has_files,
            ..Facts::default()
        };
        let refusals = match launch::parse(&converted.args) {
            Err(r) => r,
            Ok(parsed) => launch::plan_with(
                &parsed,
                &Inputs {
                    policy,
                    policies: set,
                    facts: &facts,
                    host: &HostFacts::default(),
                },
            )
            .err()
            .unwrap_or_default(),
        };
        for r in refusals {
            let field = origin(&converted, &r.reason);
            let (line, field) = here(&field);
            out.push(finding(
                line,
                field,
                format!(
                    "service {name:?} (workload {w:?}): {}: {}",
                    r.rule, r.reason
                ),
            ));
        }
    }
    out
}

/// `services.web.volumes[1]`
fn dotted(name: &str, field: &[Step]) -> String {
    let mut s = format!("services.{name}");
    for step in field {
        match step {
            Step::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Step::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}
