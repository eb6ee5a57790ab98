//! `unbaked policy check DIR --compose FILE`: the services of a compose
//! file that `unbaked compose` would refuse, found before anyone runs it.
//! Each labelled service is converted and planned like the wrapper does,
//! with the launch plan's own checks (`unbaked_docker::launch`, pure), but
//! on the file as written: no `compose config` (so no `.env`
//! interpolation or merging), no engine (the image's command and the
//! host's mount identities are unknown, so mounts are judged by path).

use super::locate::{key, Located, Step};
use super::service::{self, Converted};
use super::{origin, unescape};
use std::path::{Path, PathBuf};
use unbaked_docker::launch::{self, Facts, HostFacts, Inputs, Refusal};
use unbaked_policy::{Policy, PolicySet};
use unbaked_review::rules::check::COMPOSE_SERVICE;
use unbaked_review::{Finding, Level};
use yaml_rust2::{Yaml, YamlLoader};

const HINT: &str = "unbaked compose refuses this service before anything starts: change the service, or the workload's [isolation] if it really needs this";

/// The findings of one compose file against `set`.
pub fn check_file(file: &Path, set: &PolicySet) -> Vec<Finding> {
    let (text, doc) = match read(file) {
        Ok(read) => read,
        Err((line, message)) => return vec![finding(file, line, String::new(), message)],
    };
    let mut out = Vec::new();
    // Said, not skipped: a `privileged: True` this check reads as text is
    // `true` to compose, so its silence about that service proves nothing.
    if let Some((line, why)) = super::native::read_otherwise(&text) {
        let message = format!("{why}: this check reads the file with another YAML reading than compose's, so a setting there may be judged wrong or not at all; `unbaked compose` judges compose's own reading (it asks `compose config`)");
        out.push(Finding {
            level: Level::Warning,
            ..finding(file, line, String::new(), message)
        });
    }
    let located = [Located::parse(file, &text)];
    let base = base_dir(file);
    let checking = Checking {
        file,
        located: &located[0],
        set,
        project: service::Project {
            name: "",
            config: &doc,
            files: &located,
            base: Some(&base),
        },
    };
    let Some(services) = doc["services"].as_hash() else {
        return out;
    };
    for (name, svc) in services {
        let (Some(name), Some(w)) = (name.as_str(), service::workload(svc)) else {
            continue;
        };
        checking.service(name, &w, svc, &mut out);
    }
    out
}

/// A finding of rule `compose-service` at `file:line`, `field`.
fn finding(file: &Path, line: usize, field: String, message: String) -> Finding {
    Finding {
        level: Level::Error,
        rule: COMPOSE_SERVICE,
        file: file.to_path_buf(),
        line,
        column: 1,
        field,
        message,
        hint: Some(HINT.into()),
    }
}

/// The file's text and its first YAML document (with `$$` read as
/// compose reads it), or the line and reason it cannot be read.
fn read(file: &Path) -> Result<(String, Yaml), (usize, String)> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| (0, format!("cannot read the compose file: {e}")))?;
    let mut doc = match YamlLoader::load_from_str(&text) {
        Ok(mut docs) if !docs.is_empty() => docs.swap_remove(0),
        Ok(_) => Yaml::Null,
        Err(e) => return Err((e.marker().line(), format!("not YAML: {e}"))),
    };
    unescape(&mut doc);
    Ok((text, doc))
}

/// The directory relative bind sources start from, as compose takes it:
/// the file's own.
fn base_dir(file: &Path) -> PathBuf {
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

/// One compose file being checked.
struct Checking<'a> {
    file: &'a Path,
    located: &'a Located,
    set: &'a PolicySet,
    project: service::Project<'a>,
}

impl Checking<'_> {
    /// The findings of service `name`, labelled for workload `w`: a
    /// workload no policy defines, a service that does not convert, or
    /// each refusal of its launch plan at the field it came from.
    fn service(&self, name: &str, w: &str, svc: &Yaml, out: &mut Vec<Finding>) {
        let Some(policy) = self.set.iter().find(|p| p.workload == w) else {
            out.push(self.finding(
                name,
                &[key("labels")],
                format!("service {name:?} names workload {w:?}, which no policy in the directory defines"),
            ));
            return;
        };
        let converted = match service::convert(name, svc, self.project) {
            Ok(c) => c,
            Err(u) => {
                out.push(self.finding(name, &u.at, format!("service {name:?}: {}", u.reason)));
                return;
            }
        };
        for r in refusals(&converted, policy, self.set) {
            let field = origin(&converted, &r.reason);
            out.push(self.finding(
                name,
                &field,
                format!(
                    "service {name:?} (workload {w:?}): {}: {}",
                    r.rule, r.reason
                ),
            ));
        }
    }

    /// A finding at `services.NAME.<field>`: its line in the file (0 when
    /// not found) and its dotted path.
    fn finding(&self, name: &str, field: &[Step], message: String) -> Finding {
        let mut path = vec![key("services"), key(name)];
        path.extend(field.iter().cloned());
        let line = self.located.line(&path).map_or(0, |(l, _)| l);
        finding(self.file, line, dotted(name, field), message)
    }
}

/// What the launch plan refuses in a converted service: its arguments as
/// `docker run` would parse them, planned against `policy` with
/// placeholder facts.
pub(super) fn refusals(converted: &Converted, policy: &Policy, set: &PolicySet) -> Vec<Refusal> {
    let facts = placeholder_facts(delivers_files(policy));
    match launch::parse(&converted.args) {
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
    }
}

/// Whether the workload gets any secret as a file (a grant or a
/// template), so the plan adds the per-container secrets tmpfs.
fn delivers_files(policy: &Policy) -> bool {
    policy
        .grants_of(&[unbaked_api::wire::DeliveryKind::File])
        .next()
        .is_some()
        || policy
            .templates_of(&[unbaked_api::wire::DeliveryKind::File])
            .next()
            .is_some()
}

/// What the engine would say, by default paths: the plan's checks that
/// need the image or the host judge these placeholders.
fn placeholder_facts(container_files: bool) -> Facts {
    Facts {
        image_cmd: vec!["(the image's command)".into()],
        shim: "/usr/local/lib/unbaked/unbaked-static".into(),
        broker_socket: "/run/unbaked/broker.sock".into(),
        containers_dir: "/run/unbaked/containers".into(),
        sockets: vec!["/var/run/docker.sock".into(), "/run/docker.sock".into()],
        launch_id: "check".into(),
        compose: true,
        container_files,
        ..Facts::default()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `True` and `yes` are booleans to compose and text to this check's
    /// reader: the file gets a warning at that line. The control, written
    /// `true`, reads the same to both and gets none.
    #[test]
    fn a_spelling_compose_reads_otherwise_is_warned_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        let set = PolicySet::default();
        for (value, warned) in [("True", true), ("yes", true), ("true", false)] {
            let text = format!("services:\n  app:\n    image: x\n    privileged: {value}\n");
            std::fs::write(&file, text).unwrap();
            let found = check_file(&file, &set);
            let warnings: Vec<_> = found.iter().filter(|f| f.level == Level::Warning).collect();
            assert_eq!(!warnings.is_empty(), warned, "{value}: {found:?}");
            if warned {
                assert_eq!(warnings[0].line, 4, "{found:?}");
                assert!(warnings[0].message.contains("plain"), "{found:?}");
                // The value itself is never quoted: it may be a secret.
                assert!(
                    !warnings[0].message.contains(&format!("{value:?}")),
                    "{found:?}"
                );
            }
        }
    }
}
