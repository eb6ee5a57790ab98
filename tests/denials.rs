//! Denials: every kind that can be made without Docker is counted in
//! `unbaked_denials_total{rule=...}`; caller-chosen names stay bounded in
//! metrics, audit and log, and repeats are aggregated; admin writes fail
//! closed on a failing audit sink; a refused caller learns its rule and its
//! own identity, not the policy's expected values or its file; a chain left
//! without its stop record is reported.
mod util;
use nix::sys::signal::Signal;
use util::daemon::{http, Answer};
use util::k8s::Issuer;
use util::*;

const VALUE: &[u8] = b"denials-value-91c2";
/// A uid no test process runs as, and that no pid or request id contains.
const OTHER_UID: &str = "2999999999";

/// `unbaked_denials_total` of `rule` (over every workload label).
fn denials(text: &str, rule: &str) -> u64 {
    counter(
        text,
        "unbaked_denials_total",
        &[&format!("rule=\"{rule}\"")],
    )
}

fn post(b: &Broker, path: &str, body: &str) -> Answer {
    http(
        &b.socket,
        &format!("POST {path} HTTP/1.1\r\nContent-Type: application/json"),
        body.as_bytes(),
    )
    .expect("the broker answers")
}

fn fetch_body(workload: &str) -> String {
    serde_json::json!({ "workload": workload, "kinds": [] }).to_string()
}

const GRANT: &str = "[[grant]]\nsecret = \"app/x\"\nkey = \"k\"\nenv = \"X\"\n";

/// A broker with `[kubernetes]` (so a bad token is rule `token`), an admin
/// listener, workload `mine` for this uid (launchable by it), `payroll`
/// for another uid.
fn broker() -> Broker {
    let mine = format!(
        "{}\n[launch]\nuids = [{}]\n",
        host_policy("mine", GRANT),
        uid()
    );
    let payroll = format!(
        "workload = \"payroll\"\n[match]\nuids = [{OTHER_UID}]\n[launch]\nuids = [{OTHER_UID}]\n{GRANT}"
    );
    let b = Broker::builder()
        .policy("mine.toml", &mine)
        .policy("payroll.toml", &payroll)
        .kubernetes(&Issuer::new("k1").jwks)
        .admin()
        .start();
    b.put("app/x", "k", VALUE);
    b
}

fn exec(b: &Broker, workload: &str, token: Option<&str>) -> std::process::Output {
    let shm = shm_dir("denials");
    let mut cmd = b.cmd();
    cmd.args(["exec", "--workload", workload]);
    if let Some(t) = token {
        let f = shm.path().join("token");
        std::fs::write(&f, t).unwrap();
        cmd.arg("--token-file").arg(f);
    }
    output(cmd.args(["--", "true"]))
}

#[test]
fn every_kind_of_denial_is_counted_with_its_rule() {
    let b = broker();
    assert!(exec(&b, "mine", None).status.success());
    // [match]: this uid is not payroll's.
    assert_eq!(exec(&b, "payroll", None).status.code(), Some(3));
    // A token that does not verify.
    assert_eq!(exec(&b, "mine", Some("not-a-jwt")).status.code(), Some(3));
    // No such workload; not a workload name at all.
    assert_eq!(exec(&b, "nope", None).status.code(), Some(1));
    let bad = post(&b, "/v1/fetch", &fetch_body("Not A Name!"));
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("workload.invalid"), "{}", bad.body);
    // The admin API as another uid.
    std::fs::set_permissions(
        &b.socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = output(unbaked_as(65534, &b.socket).args(["secret", "list"]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    // `unbaked run`, decided before the engine is asked: [launch] of
    // payroll, and arguments that do not parse (no image).
    let launch = |w: &str, args: &[&str]| {
        let body = serde_json::json!({"workload": w, "args": args, "shim": BIN, "dry_run": true});
        post(&b, "/v1/launch", &body.to_string())
    };
    let a = launch("payroll", &["img"]);
    assert_eq!(a.status, 403, "{}", a.body);
    let a = launch("mine", &["--rm"]);
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body.contains("launch.args"), "{}", a.body);

    let m = b.metrics();
    for (rule, n) in [
        ("match.uids", 1),
        ("token", 1),
        ("workload.unknown", 1),
        ("workload.invalid", 1),
        ("admin", 1),
        ("launch.uids", 1),
        ("launch.args", 1),
    ] {
        assert_eq!(denials(&m, rule), n, "{rule}:\n{m}");
    }
    assert!(
        m.contains("unbaked_denials_total{workload=\"payroll\",rule=\"match.uids\"} 1"),
        "{m}"
    );
    // Names no policy declares share one label.
    assert!(!m.contains("workload=\"nope\""), "{m}");
    assert!(
        m.contains("unbaked_denials_total{workload=\"unknown\",rule=\"workload.unknown\"} 1"),
        "{m}"
    );
    let audit = b.audit_text();
    for rule in [
        "match.uids",
        "token",
        "workload.unknown",
        "admin",
        "launch.args",
    ] {
        assert!(
            audit.contains(&format!("\"rule\":\"{rule}\"")),
            "{rule}:\n{audit}"
        );
    }
}

#[test]
fn a_megabyte_workload_name_stays_bounded_and_repeats_aggregate() {
    let mut b = broker();
    let huge = "x".repeat(1_000_000);
    let body = fetch_body(&huge);
    let rss_before = util::daemon::rss_kib(b.pid());
    for _ in 0..100 {
        let a = post(&b, "/v1/fetch", &body);
        assert_eq!(a.status, 400);
        assert!(a.body.len() < 2048, "answer of {} bytes", a.body.len());
        assert!(a.body.contains("1000000 bytes"), "{}", a.body);
    }
    // Different huge names: each its own record, each bounded.
    for i in 0..10 {
        let a = post(&b, "/v1/fetch", &fetch_body(&format!("{i}{huge}")));
        assert_eq!(a.status, 400);
    }
    let rss_after = util::daemon::rss_kib(b.pid());
    let m = b.metrics();
    assert_eq!(denials(&m, "workload.invalid"), 110, "{m}");
    assert!(m.len() < 16 * 1024, "metrics of {} bytes", m.len());
    assert!(
        !m.contains("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
        "{m}"
    );
    // Before 100 such requests grew the broker by 132 MB.
    assert!(
        rss_after.saturating_sub(rss_before) < 48 * 1024,
        "the broker grew from {rss_before} to {rss_after} KiB"
    );

    // Stopping flushes the aggregated repeats.
    b.stop();
    let audit = b.audit_text();
    let invalid: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"rule\":\"workload.invalid\""))
        .collect();
    // Each of the 11 names written once, the repeats of the first counted
    // in a record of their own (one per 10 s window: one on a quick run).
    let count = |l: &&str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["count"].as_u64().unwrap_or(1)
    };
    assert_eq!(invalid.iter().map(count).sum::<u64>(), 110, "{audit}");
    // How many 10 s windows the run spanned, by the broker's own clock (a
    // loaded machine makes more of them, not a wrong count).
    let stamps: Vec<std::time::SystemTime> = b
        .audit_records()
        .into_iter()
        .filter(|r| r.json["rule"] == "workload.invalid")
        .map(|r| r.ts)
        .collect();
    let span = stamps
        .iter()
        .max()
        .unwrap()
        .duration_since(*stamps.iter().min().unwrap())
        .unwrap_or_default();
    // A window that ends writes its repeats and the next denial anew.
    let windows = span.as_secs() as usize / 10 + 1;
    assert!(
        (12..=11 + 2 * windows).contains(&invalid.len()),
        "{} records over {span:?}:\n{audit}",
        invalid.len()
    );
    assert!(
        audit.len() < 64 * 1024,
        "audit log of {} bytes",
        audit.len()
    );
    let log = b.log_text();
    assert!(log.len() < 512 * 1024, "broker log of {} bytes", log.len());
    let run = "x".repeat(100);
    assert!(!audit.contains(&run) && !log.contains(&run));
    let out = output(b.cmd().args(["audit", "verify"]).arg(&b.audit));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_refused_caller_learns_its_rule_and_identity_not_the_policy() {
    let b = broker();
    let out = exec(&b, "payroll", None);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.contains("match.uids"), "{err}");
    assert!(err.contains(&format!("uid {}", uid())), "{err}");
    // Not payroll's expected uid, not where its policy lives.
    assert!(!err.contains(OTHER_UID), "{err}");
    assert!(!err.contains("payroll.toml"), "{err}");
    assert!(!err.contains(&b.policies.display().to_string()), "{err}");
    // Control: the operator's audit log and log hold both.
    let audit = b.audit_text();
    assert!(
        audit.contains(OTHER_UID) && audit.contains("payroll.toml"),
        "{audit}"
    );
    assert!(b.log_text().contains(OTHER_UID));

    // [launch] the same way.
    let body =
        serde_json::json!({"workload": "payroll", "args": ["img"], "shim": BIN, "dry_run": true});
    let a = post(&b, "/v1/launch", &body.to_string());
    assert_eq!(a.status, 403);
    assert!(
        a.body.contains("launch.uids") && !a.body.contains(OTHER_UID),
        "{}",
        a.body
    );
}

#[test]
fn admin_writes_fail_closed_when_the_audit_sink_fails() {
    let fs = TinyFs::mount("64k");
    let audit = fs.path().join("audit.log");
    let b = Broker::start_with_audit(&[], &audit);
    b.put("app/keep", "k", VALUE);
    let filler = fs.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 128 * 1024]);
    // Appends fit in the audit file's last page for a while; then none does.
    let put = |i: usize| {
        run_stdin(
            b.cmd().args(["secret", "put", &format!("app/p{i}"), "k=-"]),
            VALUE,
        )
    };
    let (refused, out) = (0..200)
        .map(|i| (i, put(i)))
        .find(|(_, out)| !out.status.success())
        .expect("the audit file never filled up");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot write audit file"),
        "{}",
        text(&out.stderr)
    );
    let rm = output(b.cmd().args(["secret", "rm", "app/keep"]));
    assert_eq!(rm.status.code(), Some(3), "{}", text(&rm.stderr));

    // Room again: the refused write is not in the store, the deletion was
    // not made, and the chain is whole.
    std::fs::remove_file(&filler).unwrap();
    let get = output(b.cmd().args(["secret", "get", &format!("app/p{refused}")]));
    assert_eq!(get.status.code(), Some(1), "{}", text(&get.stderr));
    let keep = output(b.cmd().args(["secret", "get", "app/keep", "k"]));
    assert_eq!(keep.stdout, VALUE, "{}", text(&keep.stderr));
    let text_now = std::fs::read_to_string(&audit).unwrap();
    assert!(text_now.contains("\"event\":\"admin_request\""));
    assert!(
        !text_now.contains(&format!("app/p{refused}\"")),
        "{text_now}"
    );
    let out = output(b.cmd().args(["audit", "verify"]).arg(&audit));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_chain_without_its_stop_record_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let verify = || {
        output(
            unbaked(&dir.path().join("none.sock"))
                .args(["audit", "verify"])
                .arg(&audit),
        )
    };
    let b = Broker::start_with_audit(&[], &audit);
    b.put("app/x", "k", VALUE);
    b.signal(Signal::SIGKILL);
    drop(b);
    let out = verify();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("unterminated"),
        "{}",
        text(&out.stdout)
    );

    let mut b = Broker::start_with_audit(&[], &audit);
    // Served: the broker is past its startup.
    assert!(output(b.cmd().args(["secret", "list"])).status.success());
    assert!(
        wait_for(DEADLINE, || b
            .log_text()
            .contains("previous run ended without stop")),
        "{}",
        b.log_text()
    );
    b.stop();
    let text_now = std::fs::read_to_string(&audit).unwrap();
    assert!(
        text_now.contains("\"event\":\"unterminated\""),
        "{text_now}"
    );
    // Intact, closed, and the crashed run named: exit 0.
    let out = verify();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("chain intact")
            && said.contains("1 earlier run(s) ended without a stop record"),
        "{said}"
    );
    assert!(!said.contains("unterminated:"), "{said}");
}
