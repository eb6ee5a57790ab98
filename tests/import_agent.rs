//! `unbaked import vault-agent` against the real `bao agent`: templates from
//! Vault Agent's documentation, rendered by the agent and by unbaked (the
//! imported policy, a broker on the same OpenBao, `unbaked sidecar --once`)
//! from the same data, must be byte-identical.
mod util;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use util::bao::*;
use util::*;

/// Hard characters for every escaping path (JSON's HTML escapes included).
const PW: &[u8] = b"agent-pw-\"q'<&>\\ $x\n2nd";

/// The KV v2 examples of Vault Agent's template documentation, the
/// range / toJSON / toJSONPretty patterns, comments and trim markers.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "kv.ctmpl",
        "{{ with secret \"secret/data/app/db\" }}\n{{ .Data.data.password }}\n{{ end }}\n",
    ),
    (
        "range.ctmpl",
        "{{- /* every key */ -}}\n{{ with secret \"secret/data/app/db\" }}\n{{- range $k, $v := .Data.data }}\n{{ $k }}={{ $v }}\n{{- end }}\n{{ end }}",
    ),
    (
        "json.ctmpl",
        "{{ with secret \"secret/data/app/db\" }}{{ .Data.data | toJSON }}\n{{ .Data.data | toJSONPretty }}{{ end }}\n",
    ),
    (
        "env.ctmpl",
        "{{ with secret \"secret/data/app/db\" -}}\nexport DB_USER=\"{{ .Data.data.user }}\"\nexport DB_VERSION={{ .Data.metadata.version }}\n{{- end }}\n{{ with secret \"secret/data/app/api\" }}{{ if .Data.data.token }}TOKEN={{ .Data.data.token | base64Encode }}{{ else }}none{{ end }}{{ end }}\n",
    ),
];

#[test]
fn imported_templates_render_byte_identical_to_bao_agent() {
    let dev = Dev::start();
    let values = shm_dir("agent-values");
    std::fs::write(values.path().join("pw"), PW).unwrap();
    let pw_arg = format!("password=@{}", values.path().join("pw").display());
    dev.must(&["kv", "put", "secret/app/db", &pw_arg, "user=app"]);
    dev.must(&["kv", "put", "secret/app/api", "token=agent-token-1f"]);

    // The agent's configuration, as a Vault Agent user has it.
    let work = tempfile::tempdir().unwrap();
    let agent_out = shm_dir("agent-out");
    let token_file = values.path().join("token");
    std::fs::write(&token_file, ROOT_TOKEN).unwrap();
    let mut hcl = format!(
        "exit_after_auth = true\nvault {{\n  address = \"{}\"\n}}\nauto_auth {{\n  method \"token_file\" {{\n    config = {{ token_file_path = \"{}\" }}\n  }}\n}}\n",
        dev.server.addr,
        token_file.display()
    );
    for (name, text) in TEMPLATES {
        std::fs::write(work.path().join(name), text).unwrap();
        hcl.push_str(&format!(
            "template {{\n  source = \"{name}\"\n  destination = \"{}/{name}.out\"\n  perms = \"0600\"\n}}\n",
            agent_out.path().display()
        ));
    }
    let agent_hcl = work.path().join("agent.hcl");
    std::fs::write(&agent_hcl, &hcl).unwrap();

    // bao agent renders once and exits (exit_after_auth).
    let mut agent = Command::new(bao_bin())
        .args(["agent", "-config"])
        .arg(&agent_hcl)
        .current_dir(work.path())
        .env_remove("VAULT_TOKEN")
        .env_remove("BAO_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bao agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = agent.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut agent_log = String::new();
    std::io::Read::read_to_string(agent.stderr.as_mut().unwrap(), &mut agent_log).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "bao agent: {agent_log}"
    );

    // The import: one policy, a report of what it did not map.
    let out_dir = work.path().join("imported");
    let imported = output(
        Command::new(BIN)
            .args(["import", "vault-agent"])
            .arg(&agent_hcl)
            .arg("--out")
            .arg(&out_dir),
    );
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let report = std::fs::read_to_string(out_dir.join("import-report.md")).unwrap();
    assert!(report.contains("auto_auth (token_file)"), "{report}");
    assert!(report.contains("exit_after_auth: not mapped"), "{report}");
    let policy = std::fs::read_to_string(out_dir.join("imported.toml")).unwrap();

    // A broker on the same OpenBao, the sidecar once.
    let b = vault_broker(
        &[("imported.toml", &policy)],
        "",
        &[
            ("VAULT_ADDR", &dev.server.addr),
            ("VAULT_TOKEN", ROOT_TOKEN),
        ],
    );
    let dir = shm_dir("agent-unbaked");
    let once = output(
        b.cmd()
            .args(["sidecar", "--workload", "imported", "--once", "--dir"])
            .arg(dir.path()),
    );
    assert!(
        once.status.success(),
        "{}\n{}",
        text(&once.stderr),
        b.log_text()
    );
    for (name, _) in TEMPLATES {
        let theirs = std::fs::read(agent_out.path().join(format!("{name}.out"))).unwrap();
        let rel = agent_out.path().join(format!("{name}.out"));
        let rel = rel.to_str().unwrap().trim_start_matches('/');
        let ours = std::fs::read(dir.path().join(rel)).unwrap();
        assert_eq!(text(&ours), text(&theirs), "{name} differs");
    }
    // The comparison is over real content: the agent rendered the values,
    // Go's HTML-safe JSON escapes and the metadata.
    let agent = |n: &str| text(&std::fs::read(agent_out.path().join(n)).unwrap());
    assert!(agent("range.ctmpl.out").contains("password=agent-pw-\"q'<&>"));
    assert!(agent("json.ctmpl.out").contains("\\u003c\\u0026\\u003e"));
    assert!(agent("env.ctmpl.out").contains("DB_VERSION=1\nTOKEN=YWdlbnQtdG9rZW4tMWY="));
    let pw = String::from_utf8_lossy(&PW[..9]).into_owned();
    assert!(
        !b.log_text().contains("agent-pw"),
        "value in the broker log ({pw})"
    );
}

/// A text template's `pkiCert` issues through the broker on OpenBao, like
/// a `pki` grant: the certificate and key land in one file, and renewals
/// keep a certificate held for the lease (never revoked as withdrawn).
#[test]
fn a_pki_template_renders_a_certificate_and_keeps_it_across_renewals() {
    let dev = Dev::start();
    setup_pki(&dev.server, ROOT_TOKEN);
    let policy = host_policy(
        "web",
        r#"
[[template]]
file = "tls/bundle.pem"
ttl = "3s"
contents = '''
{{- with pkiCert "pki/issue/web" "common_name=web.internal" -}}
{{ .Data.Cert }}
{{ .Data.Key }}
{{- end }}
'''
"#,
    );
    let b = vault_broker(
        &[("web.toml", &policy)],
        "",
        &[
            ("VAULT_ADDR", &dev.server.addr),
            ("VAULT_TOKEN", ROOT_TOKEN),
        ],
    );
    let dir = shm_dir("pki-template");
    let mut sidecar = b
        .cmd()
        .args(["sidecar", "--workload", "web", "--dir"])
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bundle = dir.path().join("tls/bundle.pem");
    let read = || std::fs::read(&bundle).map(|b| text(&b)).unwrap_or_default();
    let issued = wait_for(Duration::from_secs(15), || {
        read().contains("PRIVATE KEY-----")
    });
    let first = read();
    let renewals = || b.audit_text().matches("\"event\":\"renew\"").count();
    let renewed = issued && wait_for(Duration::from_secs(15), || renewals() >= 2);
    let after_renewals = read();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sidecar.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = sidecar.wait();
    let mut log = String::new();
    std::io::Read::read_to_string(sidecar.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(
        issued && renewed,
        "sidecar: {log}\nbroker: {}",
        b.log_text()
    );
    assert!(first.starts_with("-----BEGIN CERTIFICATE-----"), "{first}");
    // Renewals keep delivering a certificate and never revoke the
    // template's as a withdrawn grant (a replacement near its expiry is
    // by design); the lease's end revokes it in OpenBao.
    assert!(
        after_renewals.contains("BEGIN CERTIFICATE"),
        "{after_renewals}"
    );
    let audit = b.audit_text();
    assert!(audit.contains("revoking dynamic credentials"), "{audit}");
    assert!(!audit.contains("grant withdrawn"), "{audit}");
    let revoked = wait_for(Duration::from_secs(10), || {
        dev.audited("update", "pki/revoke") >= 1
    });
    assert!(revoked, "broker: {}", b.log_text());
    assert!(!b.log_text().contains("PRIVATE KEY"));
}
