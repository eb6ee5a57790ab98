//! The broker's artifacts as operators' tools read them: `--log-format
//! json` lines as a log shipper parses them, `/metrics` through promtool
//! and the reference parsers of both exposition formats (prometheus_client),
//! the man pages through `mandoc -T lint` and `man`, the systemd unit through
//! `systemd-analyze verify`.
mod util;
use serde_json::Value;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use util::tools::{run, run_python, tool};
use util::*;

const VALUE: &[u8] = b"ops-tools-value-5e1f0a";

/// An HTTP/1.0 GET with an Accept header: (status, headers, body).
fn get(port: u16, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n{accept}\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn json_log_lines_are_flat_and_audit_records_are_objects() {
    // No --audit: records go to the log, as in a container that ships stderr.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("broker.sock");
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("a.toml"),
        host_policy(
            "a",
            "[[grant]]\nsecret = \"app/x\"\nkey = \"k\"\nenv = \"X\"\n",
        ),
    )
    .unwrap();
    let log = dir.path().join("broker.log");
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "broker", "--socket"])
        .arg(&socket)
        .arg("--policies")
        .arg(&policies)
        .env("UNBAKED_LOG", "debug")
        .env_remove("UNBAKED_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(15), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        }),
        "broker did not listen:\n{}",
        log_text()
    );
    let put = run_stdin(
        unbaked(&socket).args(["secret", "put", "app/x", "k=-"]),
        VALUE,
    );
    assert!(put.status.success(), "{}", text(&put.stderr));
    let exec = output(unbaked(&socket).args(["exec", "--workload", "a", "--", "true"]));
    assert!(exec.status.success(), "{}", text(&exec.stderr));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();

    let all = log_text();
    assert!(
        !all.contains(std::str::from_utf8(VALUE).unwrap()),
        "the value reached the log"
    );
    let lines: Vec<Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{all}");
    for (l, raw) in lines.iter().zip(all.lines()) {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(l[key].is_string(), "no top-level {key}: {raw}");
        }
        assert!(l.get("fields").is_none(), "nested fields: {raw}");
        assert!(
            humantime::parse_rfc3339(l["timestamp"].as_str().unwrap()).is_ok(),
            "{raw}"
        );
    }
    // Audit records: structured, not a string in a string.
    let audit: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "unbaked::audit")
        .collect();
    let grant = audit
        .iter()
        .find(|l| l["audit"]["event"] == "grant")
        .unwrap_or_else(|| panic!("no grant record as an object:\n{all}"));
    assert_eq!(grant["audit"]["workload"], "a", "{grant}");
    assert!(grant["audit"]["seq"].is_u64(), "{grant}");
    assert_eq!(grant["audit"]["secrets"][0]["secret"], "app/x", "{grant}");
    assert_eq!(grant["message"], "audit grant", "{grant}");
    // The request span's fields sit beside the event's.
    assert_eq!(grant["spans"][0], "request", "{grant}");
    assert_eq!(grant["path"], "/v1/fetch", "{grant}");
    assert!(grant["id"].is_string(), "{grant}");
    assert!(audit.iter().any(|l| l["audit"]["event"] == "stop"), "{all}");
    assert!(
        audit.iter().all(|l| l["audit"].is_object()),
        "every audit line carries its record as an object:\n{all}"
    );
}

const PARSE_BOTH: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families as classic
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
fmt, path = sys.argv[1], sys.argv[2]
text = open(path).read()
families = list((om if fmt == "openmetrics" else classic)(text))
for f in families:
    if not f.documentation:
        sys.exit("no HELP for " + f.name)
    for s in f.samples:
        print(f.type, s.name, sorted(s.labels.items()), float(s.value))
"#;

#[test]
fn metrics_negotiate_the_format_and_pass_promtool_and_the_reference_parsers() {
    let port = util::bao::free_port();
    let addr = format!("127.0.0.1:{port}");
    let b = Broker::start_with_args(
        &[
            (
                "a.toml",
                &host_policy(
                    "a",
                    "[[grant]]\nsecret = \"app/x\"\nkey = \"k\"\nenv = \"X\"\n",
                ),
            ),
            ("b.toml", "workload = \"b\"\n[match]\nuids = [4242]\n"),
        ],
        &[OsStr::new("--admin-addr"), OsStr::new(&addr)],
    );
    b.put("app/x", "k", VALUE);
    assert!(
        output(b.cmd().args(["exec", "--workload", "a", "--", "true"]))
            .status
            .success()
    );
    assert!(
        !output(b.cmd().args(["exec", "--workload", "b", "--", "true"]))
            .status
            .success()
    );

    let dir = tempfile::tempdir().unwrap();
    // Prometheus 2.x's scrape Accept, a plain scraper's, and none at all.
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    for (accept, want) in [
        (Some(prometheus), "openmetrics"),
        (Some("text/plain;version=0.0.4"), "classic"),
        (None, "classic"),
    ] {
        let (status, head, body) = get(port, "/metrics", accept);
        assert_eq!(status, 200, "{body}");
        let ct = head
            .lines()
            .find_map(|l| l.strip_prefix("content-type: "))
            .unwrap_or_else(|| panic!("no content-type: {head}"))
            .to_string();
        let file = dir.path().join(format!("{want}.txt"));
        std::fs::write(&file, &body).unwrap();
        if want == "openmetrics" {
            assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
            assert!(body.ends_with("# EOF\n"), "{body}");
        } else {
            assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
            assert!(!body.contains("# EOF"), "{body}");
            // promtool reads the classic format only; it lints too.
            let out = run(
                Command::new(tool("promtool", &[])).args(["check", "metrics"]),
                body.as_bytes(),
            );
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}\n{body}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        let out = run_python(PARSE_BOTH, &[Path::new(want), &file], b"");
        assert!(
            out.status.success(),
            "prometheus_client's {want} parser: {}\n{body}",
            text(&out.stderr)
        );
        let parsed = text(&out.stdout);
        for sample in [
            "counter unbaked_grants_total [('workload', 'a')] 1.0",
            "counter unbaked_denials_total [('rule', 'match.uids'), ('workload', 'b')] 1.0",
            "gauge unbaked_active_leases [] 1.0",
            "histogram unbaked_store_read_seconds_count [('store', 'memory')] 1.0",
        ] {
            assert!(
                parsed.contains(sample),
                "{want}: {sample} missing from the parse:\n{parsed}"
            );
        }
    }
}

#[test]
fn man_pages_one_per_subcommand_pass_mandoc_lint_and_resolve_the_units_documentation() {
    let dir = tempfile::tempdir().unwrap();
    let man1 = dir.path().join("man1");
    std::fs::create_dir(&man1).unwrap();
    let out = output(Command::new(BIN).args(["man", "--out"]).arg(&man1));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut pages: Vec<String> = std::fs::read_dir(&man1)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    for want in [
        "unbaked.1",
        "unbaked-broker.1",
        "unbaked-sidecar.1",
        "unbaked-exec.1",
        "unbaked-run.1",
        "unbaked-compose.1",
        "unbaked-secret.1",
        "unbaked-secret-put.1",
        "unbaked-policy.1",
        "unbaked-policy-check.1",
        "unbaked-policy-diff.1",
        "unbaked-audit-verify.1",
        "unbaked-man.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} not in {pages:?}");
    }
    let mandoc = tool("mandoc", &[]);
    for page in &pages {
        let path = man1.join(page);
        let lint = output(
            Command::new(&mandoc)
                .args(["-T", "lint", "-W", "all"])
                .arg(&path),
        );
        assert!(
            lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
            "mandoc -T lint {page}:\n{}{}",
            text(&lint.stdout),
            text(&lint.stderr)
        );
        // Every page it refers to exists.
        let roff = std::fs::read_to_string(&path).unwrap();
        let refs = roff
            .lines()
            .filter_map(|l| l.strip_prefix(".BR unbaked"))
            .filter(|r| r.contains(" (1)"));
        for r in refs {
            let name = format!(
                "unbaked{}",
                r.split(' ').next().unwrap().replace("\\-", "-")
            );
            assert!(
                pages.contains(&format!("{name}.1")),
                "{page} refers to {name}(1), which was not written"
            );
        }
    }
    let top = std::fs::read_to_string(man1.join("unbaked.1")).unwrap();
    for section in [
        ".SH ENVIRONMENT",
        ".SH FILES",
        ".SH \"EXIT STATUS\"",
        ".SH EXAMPLES",
        "UNBAKED_LOG_FORMAT",
        "VAULT_ADDR",
    ] {
        assert!(top.contains(section), "{section} missing from unbaked.1");
    }
    // .TH title section date source manual: the date is a date.
    let th = top.lines().find(|l| l.starts_with(".TH ")).unwrap();
    // Arguments, double quotes grouping: .TH TITLE SECTION DATE SOURCE MANUAL
    let mut args: Vec<String> = Vec::new();
    let mut quoted = false;
    for c in th.trim_start_matches(".TH ").chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => args.push(String::new()),
            c => match args.last_mut() {
                Some(a) => a.push(c),
                None => args.push(c.to_string()),
            },
        }
    }
    let date = args.get(2).map_or("", String::as_str);
    assert!(
        date.len() == 10 && date.as_bytes()[4] == b'-' && !date.contains('.'),
        "the .TH date field is {date:?}: {th}"
    );
    // As a reader sees it (overstrike bold and underline taken out).
    let rendered = output(
        Command::new(&mandoc)
            .args(["-T", "ascii"])
            .arg(man1.join("unbaked-broker.1")),
    );
    let mut shown = String::new();
    for c in text(&rendered.stdout).chars() {
        if c == '\u{8}' {
            shown.pop();
        } else {
            shown.push(c);
        }
    }
    assert!(
        shown.contains("--admin-addr") && shown.contains("EXIT STATUS"),
        "{shown}"
    );

    // The shipped unit, as installed, with the binary under test: its
    // Documentation= resolves through man once the pages are on MANPATH,
    // and does not without them (the control).
    let unit_text = std::fs::read_to_string("dist/systemd/unbaked-broker.service")
        .unwrap()
        .replace("/usr/local/bin/unbaked", BIN);
    let units = tempfile::tempdir().unwrap();
    let unit = units.path().join("unbaked-broker.service");
    std::fs::write(&unit, unit_text).unwrap();
    let verify = |manpath: &Path| {
        output(
            Command::new(tool("systemd-analyze", &[]))
                .arg("verify")
                .arg(&unit)
                .env("MANPATH", manpath)
                .env("SYSTEMD_LOG_LEVEL", "warning"),
        )
    };
    let ok = verify(dir.path());
    assert!(
        ok.status.success(),
        "systemd-analyze verify with the pages installed:\n{}{}",
        text(&ok.stdout),
        text(&ok.stderr)
    );
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir(empty.path().join("man1")).unwrap();
    let missing = verify(empty.path());
    assert!(
        !missing.status.success() && text(&missing.stderr).contains("unbaked"),
        "without the pages, verify must complain about Documentation=:\n{}",
        text(&missing.stderr)
    );
}
