//! `unbaked import vault-agent AGENT.hcl --out DIR`: a Vault Agent
//! configuration as one unbaked workload policy, plus a report of what
//! could not be mapped (never a guess). The HCL is read with hcl-rs.
//!
//! | Vault Agent | unbaked |
//! | --- | --- |
//! | `template { source \| contents, destination, perms, command }` | `[[template]]`: file (the destination without its leading `/`, under the sidecar's `--dir`), contents (the template text, unchanged), mode, on_change = "command" (`sh -c COMMAND`) |
//! | `template { exec { command = [...] } }` | on_change = "command" with that argv |
//! | `env_template "NAME" { contents }` + `exec { command, restart_on_secret_changes }` | `[[template]] env = NAME`, on_change = "restart" unless `never`; run the app with `unbaked exec` |
//! | `auto_auth` | `[match] uids = [UID]`: the broker attests the process, no token or sink |
//! | anything else | listed in the report |

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ImportConfig {
    pub agent: PathBuf,
    pub out: PathBuf,
    pub workload: String,
    pub uid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a Vault Agent configuration: {message}", path.display())]
    Hcl { path: PathBuf, message: String },
    #[error("workload name: {0}")]
    Workload(String),
    #[error("cannot write {}: {source} (check that --out is a writable directory)", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the imported policy does not pass `unbaked policy check` (see {}):\n{diags}", report.display())]
    Invalid { report: PathBuf, diags: String },
}

/// What an import produced: the policy text and the report.
#[derive(Debug)]
pub struct Imported {
    pub policy: String,
    pub report: Vec<String>,
    /// How to run the app afterwards.
    pub next: Vec<String>,
}

type Obj = hcl::Map<String, hcl::Value>;

/// Each block of `name`: `template {}` twice is a list, once an object.
fn blocks(v: Option<&hcl::Value>) -> Vec<&Obj> {
    match v {
        Some(hcl::Value::Object(o)) => vec![o],
        Some(hcl::Value::Array(a)) => a
            .iter()
            .filter_map(|v| match v {
                hcl::Value::Object(o) => Some(o),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn string(o: &Obj, key: &str) -> Option<String> {
    match o.get(key)? {
        hcl::Value::String(s) => Some(s.clone()),
        hcl::Value::Number(n) => Some(n.to_string()),
        hcl::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(o: &Obj, key: &str) -> Option<Vec<String>> {
    match o.get(key)? {
        hcl::Value::Array(a) => a
            .iter()
            .map(|v| match v {
                hcl::Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        hcl::Value::String(s) => Some(vec!["sh".into(), "-c".into(), s.clone()]),
        _ => None,
    }
}

fn toml_str(s: &str) -> String {
    // Multi-line literal when possible: the template reads as written.
    if s.contains('\n') && !s.contains("'''") && !s.ends_with('\'') {
        format!("'''\n{s}'''")
    } else {
        toml::Value::String(s.to_string()).to_string()
    }
}

fn toml_list(v: &[String]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|s| toml::Value::String(s.clone()).to_string())
        .collect();
    format!("[{}]", items.join(", "))
}

/// Convert the agent configuration `text` (read from `path`, whose
/// directory `source` paths are relative to).
pub fn convert(path: &Path, text: &str, workload: &str, uid: u32) -> Result<Imported, ImportError> {
    let root: hcl::Value = hcl::from_str(text).map_err(|e| ImportError::Hcl {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let hcl::Value::Object(root) = root else {
        return Err(ImportError::Hcl {
            path: path.to_path_buf(),
            message: "the top level is not a body".into(),
        });
    };
    let mut imported = Imported {
        policy: String::new(),
        report: Vec::new(),
        next: Vec::new(),
    };
    let _ = writeln!(
        imported.policy,
        "# Imported from {} by `unbaked import vault-agent`: review before use.\nworkload = {}\n\n[match]\nuids = [{uid}]",
        path.display(),
        toml::Value::String(workload.to_string())
    );
    imported.unmapped(&root, uid);
    let base = path.parent().unwrap_or(Path::new("."));
    for (i, t) in blocks(root.get("template")).into_iter().enumerate() {
        imported.file_template(i, t, base)?;
    }
    let exec = blocks(root.get("exec")).first().copied();
    imported.env_templates(&root, exec);
    if let Some(e) = exec {
        let cmd = strings(e, "command").unwrap_or_default();
        imported.next.push(format!(
            "run the app with: unbaked exec --workload {workload} -- {}",
            cmd.join(" ")
        ));
        if let Some(sig) = string(e, "restart_stop_signal") {
            imported.report.push(format!("exec.restart_stop_signal = {sig}: not mapped: a restart stops the app with SIGTERM"));
        }
    }
    if !blocks(root.get("template")).is_empty() {
        imported.next.push(format!(
            "run the sidecar with: unbaked sidecar --workload {workload} --dir DIR"
        ));
    }
    Ok(imported)
}

impl Imported {
    /// The top-level blocks that have no `[[template]]`: each reported.
    fn unmapped(&mut self, root: &Obj, uid: u32) {
        for (key, value) in root {
            match key.as_str() {
                "template" | "env_template" | "exec" => {}
                "auto_auth" => {
                    let methods: Vec<String> = blocks(Some(value))
                        .iter()
                        .flat_map(|a| blocks(a.get("method")))
                        .flat_map(|m| m.keys().cloned().chain(string(m, "type")))
                        .collect();
                    self.report.push(format!(
                        "auto_auth ({}): not needed: the broker attests the calling process; the workload matches uid {uid} (change [match] for containers or pods)",
                        if methods.is_empty() { "no method".into() } else { methods.join(", ") }
                    ));
                }
                "vault" => self.report.push("vault: the broker's [vault] configuration (address, TLS, auth) replaces it".into()),
                "template_config" => self.report.push("template_config: not mapped: templates re-render at each lease renewal (the template's ttl)".into()),
                other => self.report.push(format!("{other}: not mapped")),
            }
        }
    }

    /// A `template` block: a file `[[template]]`, its command an `on_change`.
    fn file_template(&mut self, i: usize, t: &Obj, base: &Path) -> Result<(), ImportError> {
        let what = format!("template[{i}]");
        let contents = match (string(t, "contents"), string(t, "source")) {
            (Some(c), _) => c,
            (None, Some(src)) => {
                let p = base.join(&src);
                std::fs::read_to_string(&p)
                    .map_err(|source| ImportError::Read { path: p, source })?
            }
            (None, None) => {
                self.report
                    .push(format!("{what}: no contents or source: skipped"));
                return Ok(());
            }
        };
        let Some(dest) = string(t, "destination") else {
            self.report.push(format!("{what}: no destination: skipped"));
            return Ok(());
        };
        let out = &mut self.policy;
        let file = dest.trim_start_matches('/').to_string();
        let _ = writeln!(
            out,
            "\n[[template]]\nfile = {}",
            toml::Value::String(file.clone())
        );
        self.report.push(format!("{what}: destination {dest} is written as {file} under the sidecar's --dir (point the app there, or bind-mount it)"));
        if let Some(perms) = string(t, "perms") {
            let _ = writeln!(out, "mode = {}", toml::Value::String(perms));
        }
        let exec_cmd = blocks(t.get("exec"))
            .first()
            .and_then(|e| strings(e, "command"));
        if let Some(cmd) = exec_cmd.or_else(|| strings(t, "command")) {
            let _ = writeln!(
                out,
                "on_change = \"command\"\ncommand = {}",
                toml_list(&cmd)
            );
        }
        let _ = writeln!(out, "contents = {}", toml_str(&contents));
        const KNOWN: [&str; 7] = [
            "contents",
            "source",
            "destination",
            "perms",
            "command",
            "exec",
            "create_dest_dirs",
        ];
        for (k, v) in t {
            if !KNOWN.contains(&k.as_str()) {
                self.report
                    .push(format!("{what}.{k} = {}: not mapped", short(v)));
            }
        }
        Ok(())
    }

    /// `env_template` blocks: env `[[template]]`s, restarting the app on a
    /// change unless `exec` says never (the agent's default restarts).
    fn env_templates(&mut self, root: &Obj, exec: Option<&Obj>) {
        let env_templates = match root.get("env_template") {
            Some(hcl::Value::Object(o)) => o.iter().collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        let restart = exec
            .and_then(|e| string(e, "restart_on_secret_changes"))
            .is_none_or(|r| r != "never");
        for (name, body) in env_templates {
            let hcl::Value::Object(body) = body else {
                continue;
            };
            let Some(contents) = string(body, "contents") else {
                self.report
                    .push(format!("env_template {name}: no contents: skipped"));
                continue;
            };
            let out = &mut self.policy;
            let _ = writeln!(
                out,
                "\n[[template]]\nenv = {}",
                toml::Value::String(name.clone())
            );
            if restart {
                let _ = writeln!(out, "on_change = \"restart\"");
            }
            let _ = writeln!(out, "contents = {}", toml_str(&contents));
            for k in body.keys().filter(|k| k.as_str() != "contents") {
                self.report
                    .push(format!("env_template {name}.{k}: not mapped"));
            }
        }
    }
}

fn short(v: &hcl::Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(57).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

/// Read, convert, check with the policy parser, write `DIR/WORKLOAD.toml`
/// and `DIR/import-report.md`; the report's lines.
pub fn run(cfg: &ImportConfig) -> Result<Imported, ImportError> {
    unbaked_policy::check_workload_name(&cfg.workload).map_err(ImportError::Workload)?;
    let text = std::fs::read_to_string(&cfg.agent).map_err(|source| ImportError::Read {
        path: cfg.agent.clone(),
        source,
    })?;
    let imported = convert(&cfg.agent, &text, &cfg.workload, cfg.uid)?;
    let write = |path: PathBuf, text: &str| {
        std::fs::write(&path, text).map_err(|source| ImportError::Write { path, source })
    };
    std::fs::create_dir_all(&cfg.out).map_err(|source| ImportError::Write {
        path: cfg.out.clone(),
        source,
    })?;
    let policy_path = cfg.out.join(format!("{}.toml", cfg.workload));
    let report_path = cfg.out.join("import-report.md");
    let checked = unbaked_policy::from_sources(&[(policy_path.clone(), imported.policy.clone())]);
    let mut md = format!("# Import of {}\n\n## Not mapped\n\n", cfg.agent.display());
    for line in &imported.report {
        let _ = writeln!(md, "- {line}");
    }
    if let Err(d) = &checked {
        let _ = writeln!(md, "\n## Policy check\n\n```\n{d}\n```");
    }
    md.push_str("\n## Next\n\n");
    for line in &imported.next {
        let _ = writeln!(md, "- {line}");
    }
    write(policy_path, &imported.policy)?;
    write(report_path.clone(), &md)?;
    match checked {
        Ok(_) => Ok(imported),
        Err(d) => Err(ImportError::Invalid {
            report: report_path,
            diags: d.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_documented_agent_config_converts() {
        let hcl = r#"
pid_file = "./pidfile"
vault { address = "http://127.0.0.1:8200" }
auto_auth {
  method "approle" {
    config = { role_id_file_path = "roleid", secret_id_file_path = "secretid" }
  }
  sink "file" { config = { path = "/tmp/token" } }
}
template {
  contents    = "{{ with secret \"secret/data/app/db\" }}{{ .Data.data.password }}{{ end }}"
  destination = "/etc/app/db_password"
  perms       = "0640"
  command     = "systemctl reload app"
  error_on_missing_key = true
}
template {
  contents    = <<EOT
{{ with pkiCert "pki/issue/web" "common_name=web.internal" }}{{ .Data.Cert }}{{ end }}
EOT
  destination = "/etc/app/cert.pem"
}
env_template "API_TOKEN" {
  contents = "{{ with secret \"secret/data/app/api\" }}{{ .Data.data.token }}{{ end }}"
}
exec {
  command = ["/usr/bin/app", "--serve"]
  restart_on_secret_changes = "always"
}
"#;
        let got = convert(Path::new("agent.hcl"), hcl, "imported", 1000).unwrap();
        let set =
            unbaked_policy::from_sources(&[(PathBuf::from("imported.toml"), got.policy.clone())])
                .unwrap_or_else(|d| panic!("{d}\n{}", got.policy));
        let p = set.get("imported").unwrap();
        assert_eq!(p.matcher.uids, [1000]);
        let ids: Vec<String> = p.templates.iter().map(|t| t.id()).collect();
        assert_eq!(
            ids,
            [
                "file:etc/app/db_password",
                "file:etc/app/cert.pem",
                "env:API_TOKEN"
            ]
        );
        assert_eq!(p.templates[0].mode, 0o640);
        assert_eq!(
            p.templates[0].on_change,
            Some(unbaked_api::wire::OnChange::Command {
                command: vec!["sh".into(), "-c".into(), "systemctl reload app".into()]
            })
        );
        assert_eq!(
            p.templates[2].on_change,
            Some(unbaked_api::wire::OnChange::Restart)
        );
        let report = got.report.join("\n");
        for want in [
            "auto_auth (approle)",
            "template[0].error_on_missing_key",
            "pid_file: not mapped",
            "vault:",
        ] {
            assert!(report.contains(want), "{want}: {report}");
        }
        assert!(got
            .next
            .iter()
            .any(|n| n.contains("unbaked exec --workload imported -- /usr/bin/app --serve")));
    }

    #[test]
    fn not_hcl_is_an_error_naming_the_file() {
        let e = convert(Path::new("a.hcl"), "template {", "w", 1).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("a.hcl: not a Vault Agent configuration"),
            "{e}"
        );
    }
}
