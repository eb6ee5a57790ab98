//! The mounts concern of the plan: `-v`, `--mount`, `--tmpfs`,
//! `--volumes-from`, `--volume-driver`, `--use-api-socket`. A host path is
//! judged by what it is (device and inode, [`super::HostFacts::sources`]),
//! and by its text as a second net.

use super::flags::Flag;
use super::parse::{mount_fields, Opt, Parsed};
use super::plan::{spelled, switched_on, Planner};
use super::{Volume, SECRETS_PATH};
use crate::isolation::{lexical_path, Setting};
use std::collections::BTreeMap;

/// Targets inside the container that belong to unbaked.
const RESERVED_TARGETS: [&str; 2] = [SECRETS_PATH, "/run/unbaked"];

/// `--mount` keys docker knows; any other is refused (a newer docker's key
/// might mount something this plan cannot see).
const MOUNT_KEYS: &[&str] = &[
    "type",
    "source",
    "src",
    "target",
    "destination",
    "dst",
    "readonly",
    "ro",
    "consistency",
    "bind-propagation",
    "bind-nonrecursive",
    "bind-recursive",
    "volume-driver",
    "volume-label",
    "volume-nocopy",
    "volume-opt",
    "volume-subpath",
    "tmpfs-size",
    "tmpfs-mode",
];

/// What one `-v` or `--mount` value asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Spec {
    /// `bind`, `volume` or `tmpfs`.
    kind: String,
    /// Host paths (bind) or volume names (volume).
    sources: Vec<String>,
    targets: Vec<String>,
    /// `volume-driver=`.
    driver: Option<String>,
    /// `volume-opt=device=PATH`: what a new local volume binds.
    devices: Vec<String>,
}

/// `[SOURCE:]TARGET[:MODE]`, as docker's Linux parser reads it.
fn volume_spec(v: &str) -> Result<Spec, String> {
    let parts: Vec<&str> = v.split(':').collect();
    if parts.len() > 3 {
        return Err("more than SOURCE:TARGET:MODE".into());
    }
    let Some((target, source)) = parts.get(1).map(|t| (*t, parts[0])) else {
        return Ok(Spec {
            kind: "volume".into(),
            targets: vec![parts[0].into()],
            ..Spec::default()
        });
    };
    let kind = if source.starts_with('/') {
        "bind"
    } else if source.is_empty() || source.contains('/') || source.starts_with(['.', '~']) {
        // The docker CLI resolves `./x` against its own working directory,
        // which the broker does not know.
        return Err(format!(
            "{source:?} is neither an absolute path nor a volume name: give the absolute path"
        ));
    } else {
        "volume"
    };
    Ok(Spec {
        kind: kind.into(),
        sources: vec![source.into()],
        targets: vec![target.into()],
        ..Spec::default()
    })
}

/// `type=bind,source=/x,target=/y,...` (any key case, quoted CSV fields).
fn mount_spec(v: &str) -> Result<Spec, String> {
    let mut s = Spec {
        kind: "volume".into(),
        ..Spec::default()
    };
    for (k, val) in mount_fields(v)? {
        match k.as_str() {
            "type" => s.kind = val.to_ascii_lowercase(),
            "source" | "src" => s.sources.push(val),
            "target" | "destination" | "dst" => s.targets.push(val),
            "volume-driver" => s.driver = Some(val),
            "volume-opt" => {
                if let Some((ok, ov)) = val.split_once('=') {
                    if ok.trim().eq_ignore_ascii_case("device") {
                        s.devices.push(ov.to_string());
                    }
                }
            }
            k if MOUNT_KEYS.contains(&k) => {}
            k => return Err(format!("unknown key {k:?}")),
        }
    }
    match s.kind.as_str() {
        "bind" if s.sources.iter().any(|p| !p.starts_with('/')) => {
            Err("a bind source must be an absolute path".into())
        }
        "bind" | "volume" | "tmpfs" => Ok(s),
        other => Err(format!("mount type {other:?} is not one unbaked run starts containers with (bind, volume, tmpfs)")),
    }
}

fn spec_of(o: &Opt) -> Option<Result<Spec, String>> {
    let v = o.value.as_deref().unwrap_or("");
    match o.flag? {
        Flag::Volume => Some(volume_spec(v)),
        Flag::Mount => Some(mount_spec(v)),
        _ => None,
    }
}

/// The named volumes the arguments use: the broker inspects those that
/// exist and hands them in as [`super::HostFacts::volumes`].
pub fn named_volumes(parsed: &Parsed) -> Vec<String> {
    let mut out: Vec<String> = parsed
        .options
        .iter()
        .filter_map(spec_of)
        .flatten()
        .filter(|s| s.kind == "volume")
        .flat_map(|s| s.sources)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every host path the arguments (and the existing `volumes` they name)
/// would mount: the broker resolves each to device and inode
/// ([`crate::mount_identity::ids_of`]) for
/// [`super::HostFacts::sources`].
pub fn host_paths(parsed: &Parsed, volumes: &BTreeMap<String, Volume>) -> Vec<String> {
    let mut out = Vec::new();
    for s in parsed.options.iter().filter_map(spec_of).flatten() {
        if s.kind == "bind" {
            out.extend(s.sources.iter().cloned());
        }
        if s.kind == "volume" {
            let existing = s.sources.iter().filter_map(|n| volumes.get(n));
            out.extend(existing.filter_map(|v| v.options.get("device").cloned()));
        }
        out.extend(s.devices);
    }
    out.retain(|p| p.starts_with('/'));
    out.sort();
    out.dedup();
    out
}

impl Planner<'_> {
    pub(super) fn mounts(&mut self, flag: Flag, o: &Opt, v: &str) -> bool {
        let spelled = spelled(o);
        match flag {
            Flag::Volume | Flag::Mount => match spec_of(o) {
                Some(Ok(spec)) => self.spec(&spec, &spelled),
                Some(Err(e)) => self.refuse("launch.args", format!("{spelled}: {e}")),
                None => {}
            },
            Flag::Tmpfs => self.target(v.split(':').next().unwrap_or(v), &spelled),
            Flag::VolumesFrom => self.refuse(
                "launch.volumes_from",
                format!("{spelled} inherits every mount of another container, which unbaked run cannot vet (it may hold the engine's socket or another workload's secrets): name the mounts with -v or --mount instead"),
            ),
            Flag::VolumeDriver => self.driver(v, &spelled),
            Flag::UseApiSocket if switched_on(o) => self.judge(&spelled, Setting::ApiSocket),
            _ => {}
        }
        true
    }

    fn spec(&mut self, spec: &Spec, spelled: &str) {
        for src in &spec.sources {
            match spec.kind.as_str() {
                "bind" => self.bind_source(src, spelled),
                "volume" => self.named_volume(src, spelled),
                _ => {}
            }
        }
        if let Some(d) = &spec.driver {
            self.driver(d, spelled);
        }
        for dev in spec.devices.iter().filter(|d| d.starts_with('/')) {
            self.bind_source(dev, spelled);
        }
        for t in &spec.targets {
            self.target(t, spelled);
        }
    }

    /// A volume driver other than `local` mounts whatever it likes.
    fn driver(&mut self, driver: &str, spelled: &str) {
        if !matches!(driver, "" | "local") {
            self.refuse(
                "launch.volume_driver",
                format!("{spelled}: volumes of driver {driver:?} mount what the driver chooses, which unbaked run cannot vet: use the local driver"),
            );
        }
    }

    /// An existing volume: a local one with a `device` binds that path.
    fn named_volume(&mut self, name: &str, spelled: &str) {
        let Some(vol) = self.inputs.host.volumes.get(name) else {
            return; // docker creates a fresh, empty local volume
        };
        let (driver, device) = (vol.driver.clone(), vol.options.get("device").cloned());
        self.driver(&driver, spelled);
        if let Some(dev) = device.filter(|d| d.starts_with('/')) {
            self.bind_source(&dev, &format!("{spelled} (volume {name} binds {dev})"));
        }
    }

    /// A host path mounted in: by identity, then by text (as written and as
    /// the host resolves it).
    fn bind_source(&mut self, src: &str, spelled: &str) {
        let (host, facts) = (self.inputs.host, self.inputs.facts);
        let id = host.sources.get(src).copied();
        let real = facts.resolved.get(src).map_or(src, String::as_str);
        let judged = [src, real].into_iter().find_map(|source| {
            self.judge.judge(&Setting::Mount {
                kind: "bind",
                source,
                id,
            })
        });
        if let Some(v) = judged {
            self.refuse(v.rule, format!("{spelled}: {}", v.reason));
        }
        let base = lexical_path(&facts.containers_dir);
        let real = lexical_path(real);
        let by_id = id.is_some_and(|id| host.secrets_dirs.contains(&id));
        if by_id
            || real == base
            || real.starts_with(&format!("{base}/"))
            || base.starts_with(&format!("{real}/"))
        {
            self.refuse(
                "launch.secrets_dir",
                format!("{spelled} mounts {src}, which holds the secrets of unbaked's containers: remove the mount"),
            );
        }
    }

    fn target(&mut self, dst: &str, spelled: &str) {
        let d = lexical_path(dst);
        let clash = RESERVED_TARGETS
            .iter()
            .any(|r| d == *r || d.starts_with(&format!("{r}/")) || r.starts_with(&format!("{d}/")));
        if clash {
            self.refuse(
                "launch.mount_target",
                format!("{spelled} mounts over {dst}, where unbaked puts the secrets and its shim: choose another path"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_read_every_spelling() {
        let m = mount_spec(r#""type=BIND","SRC=/var/run",Destination=/x,bind-propagation=rshared"#)
            .unwrap();
        assert_eq!(
            (
                m.kind.as_str(),
                m.sources[0].as_str(),
                m.targets[0].as_str()
            ),
            ("bind", "/var/run", "/x")
        );
        let m = mount_spec("type=volume,src=v,dst=/x,volume-opt=type=none,volume-opt=o=bind,volume-opt=device=/run").unwrap();
        assert_eq!(m.devices, ["/run"]);
        assert!(mount_spec("type=bind,src=./run,dst=/x").is_err());
        assert!(mount_spec("type=npipe,src=x,dst=/x").is_err());
        assert!(mount_spec("type=bind,src=/x,dst=/y,surprise=1").is_err());
        assert_eq!(volume_spec("/run:/x:ro").unwrap().kind, "bind");
        assert_eq!(volume_spec("data:/x").unwrap().kind, "volume");
        assert_eq!(volume_spec("/x").unwrap().targets, ["/x"]);
        assert!(volume_spec("./run:/x").is_err());
        assert!(volume_spec("a/b:/x").is_err());
        assert!(volume_spec("/a:/b:ro:x").is_err());
    }
}
