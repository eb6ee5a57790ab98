//! The override file: what each workload service's launch plan adds to
//! the user's arguments (the hardening, the ICC-off network, the labels,
//! the shim and the broker socket bound read-only, the per-container
//! secrets tmpfs, the shim as entrypoint around the image's command),
//! written as compose fields. JSON, which compose reads as YAML.
//!
//! **Invariant:** names, paths and labels only, like the plan it comes
//! from: the shim fetches every value at run time.

use super::service::Converted;
use serde_json::{json, Map, Value};
use unbaked_docker::launch::{mount_fields, parse, Parsed};

/// The override of every workload service.
#[derive(Debug, Default)]
pub struct Overlay {
    services: Map<String, Value>,
    networks: Map<String, Value>,
    /// The project's file version (`compose config` of docker-compose 1.29
    /// prints it): an extension file must carry the same.
    pub version: Option<String>,
}

impl Overlay {
    /// Add service `name`: the plan's arguments (`run ...`) minus the user's
    /// own (`converted`), turned into compose fields. `v2`: the compose CLI
    /// knows `cgroup:` (docker-compose 1.29 does not; the engine's default
    /// cgroup namespace applies there).
    pub fn add(
        &mut self,
        name: &str,
        converted: &Converted,
        plan_args: &[String],
        v2: bool,
    ) -> Result<(), String> {
        let parsed = parse_plan(plan_args)?;
        let mut theirs = converted.options.clone();
        let mut additions = Additions::default();
        for o in &parsed.options {
            // The user's own: already in their files.
            if take_theirs(&mut theirs, &o.name, o.value.as_deref()) {
                continue;
            }
            let v = o.value.clone().unwrap_or_default();
            additions.option(&o.name, v, &mut self.networks)?;
        }
        let svc = additions.into_service(&parsed.command, v2)?;
        self.services.insert(name.to_string(), Value::Object(svc));
        Ok(())
    }

    /// The file's text. Every `$` is doubled: compose interpolates the
    /// override like any file, and a command may hold a `$`.
    pub fn render(&self) -> String {
        let mut top = Map::new();
        if let Some(v) = &self.version {
            top.insert("version".into(), json!(v));
        }
        top.insert("services".into(), Value::Object(self.services.clone()));
        if !self.networks.is_empty() {
            top.insert("networks".into(), Value::Object(self.networks.clone()));
        }
        let mut v = Value::Object(top);
        escape(&mut v);
        let mut text = serde_json::to_string_pretty(&v).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// The broker's plan (`run OPTIONS IMAGE COMMAND`) split by the same
/// parser that checked it.
fn parse_plan(plan_args: &[String]) -> Result<Parsed, String> {
    let args = plan_args.get(1..).unwrap_or_default();
    parse(args).map_err(|r| {
        format!(
            "the broker's plan does not parse: {}",
            r.iter()
                .map(|r| r.reason.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })
}

/// Whether option `name`=`value` is one of the user's own (`theirs`); if
/// so it is used up, so a plan that repeats it adds the second copy.
fn take_theirs(
    theirs: &mut Vec<(String, Option<String>)>,
    name: &str,
    value: Option<&str>,
) -> bool {
    match theirs
        .iter()
        .position(|(n, v)| n == name && v.as_deref() == value)
    {
        Some(i) => {
            theirs.remove(i);
            true
        }
        None => false,
    }
}

/// What a plan adds to one service, gathered option by option, then
/// written as the service's override fields.
#[derive(Default)]
struct Additions {
    /// The list fields (`cap_drop`, `volumes`...), each in the plan's order.
    lists: Map<String, Value>,
    labels: Map<String, Value>,
    networks: Map<String, Value>,
    entrypoint: Option<String>,
    read_only: Option<bool>,
    cgroup: Option<String>,
    /// The daemon's default bridge (started with --icc=false): compose's
    /// `network_mode`, not a network it can attach by name.
    bridge: bool,
}

impl Additions {
    /// Append `v` to list field `field`.
    fn push(&mut self, field: &str, v: Value) {
        let e = self
            .lists
            .entry(field.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = e {
            a.push(v);
        }
    }

    /// One option the plan adds (`--name value`). A network also goes into
    /// `project_networks`, declared external: the broker created it. An
    /// option compose has no field for is an error, never dropped.
    fn option(
        &mut self,
        name: &str,
        v: String,
        project_networks: &mut Map<String, Value>,
    ) -> Result<(), String> {
        match name {
            "cap-drop" => self.push("cap_drop", json!(v)),
            "cap-add" => self.push("cap_add", json!(v)),
            "security-opt" => self.push("security_opt", json!(v)),
            "group-add" => self.push("group_add", json!(v)),
            "tmpfs" => self.push("tmpfs", json!(v)),
            "read-only" => self.read_only = Some(v.is_empty() || v == "true"),
            "cgroupns" => self.cgroup = Some(v),
            "network" if v == "bridge" => self.bridge = true,
            "network" => {
                self.networks.insert(v.clone(), json!({}));
                project_networks.insert(v.clone(), json!({"external": true, "name": v}));
            }
            "label" => {
                let (k, val) = v.split_once('=').unwrap_or((&v, ""));
                self.labels.insert(k.to_string(), json!(val));
            }
            "mount" => self.push("volumes", bind(&v)?),
            "entrypoint" => self.entrypoint = Some(v),
            other => {
                return Err(format!(
                    "the broker's plan adds --{other}, which unbaked compose cannot express in an override: upgrade both together"
                ))
            }
        }
        Ok(())
    }

    /// The service's override: the gathered fields, the shim as
    /// entrypoint and the plan's `command` (the shim's arguments around the
    /// image's command). `cgroup:` only for a compose CLI that knows it.
    fn into_service(self, command: &[String], v2: bool) -> Result<Map<String, Value>, String> {
        let Some(entrypoint) = self.entrypoint else {
            return Err("the broker's plan has no shim entrypoint".into());
        };
        let mut svc = self.lists;
        if let Some(ro) = self.read_only {
            svc.insert("read_only".into(), json!(ro));
        }
        if let (Some(c), true) = (self.cgroup, v2) {
            svc.insert("cgroup".into(), json!(c));
        }
        if !self.labels.is_empty() {
            svc.insert("labels".into(), Value::Object(self.labels));
        }
        if !self.networks.is_empty() {
            svc.insert("networks".into(), Value::Object(self.networks));
        }
        if self.bridge {
            svc.insert("network_mode".into(), json!("bridge"));
        }
        svc.insert("entrypoint".into(), json!([entrypoint]));
        svc.insert("command".into(), json!(command));
        Ok(svc)
    }
}

/// A plan's `--mount type=bind,src=..,dst=..,readonly` in compose's short
/// form (`SRC:DST:ro`), which every file version reads (the long form is
/// 3.2 and later only).
fn bind(v: &str) -> Result<Value, String> {
    let (mut src, mut dst, mut ro) = (None, None, false);
    for (k, val) in mount_fields(v)? {
        match k.as_str() {
            "type" if val == "bind" => {}
            "src" | "source" => src = Some(val),
            "dst" | "destination" | "target" => dst = Some(val),
            "readonly" | "ro" => ro = val != "false",
            other => {
                return Err(format!(
                "the broker's plan mounts with {other}={val}, which unbaked compose cannot express"
            ))
            }
        }
    }
    let (Some(src), Some(dst)) = (src, dst) else {
        return Err(format!(
            "the broker's plan mounts {v:?} without a source or target"
        ));
    };
    if src.contains(':') || dst.contains(':') {
        return Err(format!(
            "{src:?} or {dst:?} holds a colon, which compose's volume syntax cannot carry"
        ));
    }
    Ok(json!(format!(
        "{src}:{dst}:{}",
        if ro { "ro" } else { "rw" }
    )))
}

fn escape(v: &mut Value) {
    match v {
        Value::String(s) => *s = s.replace('$', "$$"),
        Value::Array(a) => a.iter_mut().for_each(escape),
        Value::Object(m) => m.values_mut().for_each(escape),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_plan_additions_become_compose_fields() {
        let converted = Converted {
            args: s(&["--user=1000", "img"]),
            origins: vec![],
            options: vec![("user".into(), Some("1000".into()))],
        };
        let plan = s(&[
            "run",
            "--user=1000",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
            "--cgroupns",
            "private",
            "--network",
            "unbaked-web",
            "--label",
            "io.unbaked.workload=web",
            "--label",
            "app=web",
            "--mount",
            "type=bind,src=/usr/lib/unbaked,dst=/run/unbaked/bin/unbaked,readonly",
            "--tmpfs",
            "/run/secrets:mode=0711,size=1m,uid=1000",
            "--entrypoint",
            "/run/unbaked/bin/unbaked",
            "img",
            "--socket",
            "/run/unbaked/broker.sock",
            "exec",
            "--workload",
            "web",
            "--files",
            "/run/secrets",
            "--",
            "sh",
            "-c",
            "echo $HOME",
        ]);
        let mut o = Overlay::default();
        o.add("web", &converted, &plan, false).unwrap();
        let v: Value = serde_json::from_str(&o.render()).unwrap();
        let web = &v["services"]["web"];
        assert_eq!(web["cap_drop"], json!(["ALL"]));
        assert_eq!(web["read_only"], json!(true));
        assert!(web.get("cgroup").is_none(), "not for docker-compose 1.29");
        assert!(web.get("user").is_none(), "the user's own stays theirs");
        assert_eq!(web["networks"], json!({"unbaked-web": {}}));
        assert_eq!(
            v["networks"]["unbaked-web"],
            json!({"external": true, "name": "unbaked-web"})
        );
        assert_eq!(web["labels"]["io.unbaked.workload"], json!("web"));
        assert_eq!(
            web["volumes"][0],
            json!("/usr/lib/unbaked:/run/unbaked/bin/unbaked:ro")
        );
        assert_eq!(web["entrypoint"], json!(["/run/unbaked/bin/unbaked"]));
        assert_eq!(web["command"][10], json!("echo $$HOME"));
        let mut o = Overlay::default();
        o.add("web", &converted, &plan, true).unwrap();
        assert!(o.render().contains("\"cgroup\": \"private\""));
    }

    /// On a daemon whose default bridge isolates, the plan's `--network
    /// bridge` is compose's `network_mode`, not a network to attach.
    #[test]
    fn the_default_bridge_is_a_network_mode() {
        let converted = Converted {
            args: s(&["img"]),
            origins: vec![],
            options: vec![],
        };
        let plan = s(&[
            "run",
            "--network",
            "bridge",
            "--entrypoint",
            "/run/unbaked/bin/unbaked",
            "img",
            "exec",
            "--",
            "sh",
        ]);
        let mut o = Overlay::default();
        o.add("web", &converted, &plan, false).unwrap();
        let v: Value = serde_json::from_str(&o.render()).unwrap();
        assert_eq!(v["services"]["web"]["network_mode"], json!("bridge"));
        assert!(v["services"]["web"].get("networks").is_none());
        assert!(v.get("networks").is_none());
    }
}
