//! Every example is parsed and validated by its ecosystem's validator, and
//! holds what makes it work as written: Kubernetes manifests through
//! `kubernetes-validate --strict` for the two newest Kubernetes versions it
//! knows, the Nomad job and client configuration through python-hcl2, the
//! compose file through `docker-compose config` (tests/compose.rs runs it), the CI jobs through
//! check-jsonschema's GitHub workflow and GitLab CI schemas. Each validator
//! is shown to reject a broken copy, so a pass means something.
mod util;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use util::tools::{run, run_python, venv_bin};
use util::{output, text};

/// The Kubernetes versions checked: the two newest kubernetes-validate
/// 1.31.0 (scripts/install-tools) ships schemas for.
const K8S_VERSIONS: [&str; 2] = ["1.31.0", "1.30.0"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// YAML documents (PyYAML) or HCL (python-hcl2) as JSON.
const LOAD: &str = r#"
import json, sys
path = sys.argv[1]
if path.endswith(".hcl"):
    import hcl2
    print(json.dumps(hcl2.load(open(path))))
else:
    import yaml
    print(json.dumps(list(yaml.safe_load_all(open(path)))))
"#;

fn load(path: &Path) -> Value {
    let out = run_python(LOAD, &[path], b"");
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn kubernetes_validate(file: &Path, version: &str) -> std::process::Output {
    output(
        Command::new(venv_bin("kubernetes-validate"))
            .args(["--strict", "--quiet", "-k", version])
            .arg(file),
    )
}

fn check_jsonschema(schema: &str, file: &Path) -> std::process::Output {
    output(
        Command::new(venv_bin("check-jsonschema"))
            .args(["--builtin-schema", schema])
            .arg(file),
    )
}

#[test]
fn kubernetes_manifests_validate_strictly_and_the_broker_is_probed_and_scraped() {
    let dir = root().join("examples/kubernetes");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_some_and(|x| x == "yaml") {
            for version in K8S_VERSIONS {
                let out = kubernetes_validate(&file, version);
                assert!(
                    out.status.success(),
                    "{} against {version}: {}{}",
                    file.display(),
                    text(&out.stdout),
                    text(&out.stderr)
                );
            }
            files += 1;
        }
    }
    assert!(files >= 2);
    // Control: strict validation rejects a field Kubernetes does not know.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.yaml");
    let text_in = std::fs::read_to_string(dir.join("broker.yaml")).unwrap();
    std::fs::write(
        &broken,
        text_in.replace(
            "automountServiceAccountToken:",
            "automountServiceAcountToken:",
        ),
    )
    .unwrap();
    assert!(!kubernetes_validate(&broken, K8S_VERSIONS[0])
        .status
        .success());

    let docs = load(&dir.join("broker.yaml"));
    let ds = docs
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"];
    let c = &pod["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let addr = args[args.iter().position(|a| *a == "--admin-addr").unwrap() + 1];
    assert!(
        !addr.starts_with("127.") && addr.ends_with(":9464"),
        "kubelet and Prometheus cannot reach {addr}"
    );
    assert_eq!(c["ports"][0]["containerPort"], 9464);
    assert_eq!(c["ports"][0]["name"], "admin");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9464");
    assert_eq!(ann["prometheus.io/path"], "/metrics");
}

#[test]
fn the_nomad_job_mounts_the_socket_directory_and_a_tmpfs_outside_the_runtime_directory() {
    let dir = root().join("examples/nomad");
    let job = load(&dir.join("billing.nomad.hcl"));
    let client = load(&dir.join("client.hcl"));
    let volumes = &client["client"][0]["host_volume"];
    let host_path = |name: &str| -> String {
        volumes
            .as_array()
            .unwrap()
            .iter()
            .find_map(|v| v[name]["path"].as_str())
            .unwrap_or_else(|| panic!("no host_volume {name} in client.hcl"))
            .to_string()
    };
    // The directory, so a restarted broker's new socket is seen.
    assert_eq!(host_path("unbaked-socket"), "/run/unbaked");
    let secrets = host_path("unbaked-secrets");
    assert!(
        secrets.starts_with("/run/") && !secrets.starts_with("/run/unbaked/"),
        "{secrets}: inside the broker's RuntimeDirectory, emptied at every stop"
    );
    let group = &job["job"][0]["billing"]["group"][0]["billing"];
    let tasks = group["task"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    for t in tasks {
        let (name, task) = t.as_object().unwrap().iter().next().unwrap();
        assert_eq!(task["driver"], "exec", "{name}");
        let user = task["user"].as_str().unwrap_or("nobody");
        assert_ne!(user, "nobody", "{name}: the exec driver's default user");
        let mounts = task["volume_mount"].as_array().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m["volume"] == "unbaked-socket" && m["destination"] == "/run/unbaked"),
            "{name}: the chroot has no broker socket without it"
        );
        let socket = task["env"][0]["UNBAKED_SOCKET"].as_str().unwrap();
        assert!(socket.starts_with("/run/unbaked/"), "{name}: {socket}");
    }
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.contains("Nomad 1.9") && readme.contains("RuntimeDirectoryPreserve=yes"));
    // Control: python-hcl2 rejects what is not HCL.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.hcl");
    std::fs::write(&broken, "job \"x\" {\n  group \"g\" {\n").unwrap();
    assert!(!run_python(LOAD, &[&broken], b"").status.success());
}

#[test]
fn the_compose_example_parses_and_labels_two_workloads_and_one_plain_service() {
    let dir = root().join("examples/compose");
    let file = dir.join("docker-compose.yml");
    let out = output(
        Command::new("docker-compose")
            .arg("-f")
            .arg(&file)
            .args(["config", "-q"]),
    );
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        text(&out.stderr)
    );
    let doc = &load(&file)[0];
    let mut workloads = Vec::new();
    let mut plain = 0;
    for (name, service) in doc["services"].as_object().unwrap() {
        match service["labels"]["io.unbaked.workload"].as_str() {
            Some(w) => {
                // Its policy is in the example, and nothing secret is in the file.
                assert!(
                    dir.join("policies").join(format!("{w}.toml")).is_file(),
                    "{name}: no policy for workload {w}"
                );
                assert!(service.get("environment").is_none(), "{name}");
                workloads.push(w.to_string());
            }
            None => plain += 1,
        }
    }
    workloads.sort();
    assert_eq!(workloads, ["billing", "reports"]);
    assert_eq!(plain, 1);
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.contains("unbaked compose -- up -d"), "{readme}");
}

#[test]
fn the_ci_examples_fit_the_github_workflow_and_gitlab_ci_schemas() {
    let dir = root().join("examples/ci");
    for (schema, file) in [
        ("vendor.github-workflows", "github-actions.yml"),
        ("vendor.gitlab-ci", "gitlab-ci.yml"),
    ] {
        let out = check_jsonschema(schema, &dir.join(file));
        assert!(
            out.status.success(),
            "{file}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        // Control: the schema rejects a job without what it must have.
        let tmp = tempfile::tempdir().unwrap();
        let broken = tmp.path().join(file);
        let doc = std::fs::read_to_string(dir.join(file)).unwrap();
        let doc = match file {
            "github-actions.yml" => doc.replacen("runs-on:", "runs_on:", 1),
            _ => doc.replacen("script:", "scrip:", 1),
        };
        std::fs::write(&broken, doc).unwrap();
        let out = run(
            Command::new(venv_bin("check-jsonschema"))
                .args(["--builtin-schema", schema])
                .arg(&broken),
            b"",
        );
        assert!(!out.status.success(), "{file}: a broken copy passed");
    }
}
