//! Change actions on `unbaked run` containers, end to end on the real
//! Docker Engine and a real OpenBao: a long-running server whose PKI
//! certificate (a `pkiCert` template) rotates is told by the broker through
//! the engine (`docker kill --signal`), reloads it in place, and keeps
//! serving; a renewal that renders the same certificate sends nothing.
//!
//! The app is busybox: `sh` as the container's main process with a `trap`
//! on SIGHUP that copies the new certificate into `httpd`'s docroot and
//! appends a line to `/www/hups` (the signal count, served too).
//!
//! Timing is judged from the products' own records: OpenBao's audit log
//! says when each certificate was issued, the broker's audit log when each
//! signal was sent.
mod util;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use util::bao::*;
use util::docker::*;
use util::*;

/// The template's ttl: renewed at 2/3 of it, the certificate issued for
/// twice it and kept while it outlives the next period, so every other
/// renewal re-renders the same certificate and the next one rotates it
/// (about every 16 s).
const TTL: Duration = Duration::from_secs(12);

fn template(role: &str, on_change: &str) -> String {
    format!(
        r#"
[[template]]
file = "tls.pem"
ttl = "{}s"
contents = '''
{{{{- with pkiCert "pki/issue/{role}" "common_name={role}.internal" -}}}}
{{{{ .Data.Cert }}}}
{{{{- end }}}}
'''
{on_change}
"#,
        TTL.as_secs()
    )
}

/// The app: the certificate copied into the docroot at start and on every
/// SIGHUP (counted in /www/hups), httpd serving it, sh waiting as pid 1.
const APP: &str = r#"cp /run/secrets/tls.pem /www/cert.pem
echo $$ > /www/pid
: > /www/hups
trap 'cp /run/secrets/tls.pem /www/.new && mv /www/.new /www/cert.pem && echo hup >> /www/hups' HUP
httpd -f -p 8080 -h /www &
while :; do sleep 1 & wait $!; done"#;

/// GET http://ADDR/PATH: the body of a 200, else why not.
fn get(addr: &str, path: &str) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{e}"))?,
        Duration::from_secs(2),
    )
    .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: app\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no header end")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    Ok(body.to_string())
}

/// A client hitting `/cert.pem` 10 times a second: every answer kept
/// (deduplicated), every failure counted.
struct Client {
    stop: Arc<AtomicBool>,
    served: Arc<Mutex<Vec<String>>>,
    failures: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(addr: String) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(Mutex::new(Vec::<String>::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let (s, sv, f, r) = (
            stop.clone(),
            served.clone(),
            failures.clone(),
            requests.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                *r.lock().unwrap() += 1;
                match get(&addr, "/cert.pem") {
                    Ok(pem) => {
                        let mut sv = sv.lock().unwrap();
                        if sv.last() != Some(&pem) {
                            sv.push(pem);
                        }
                    }
                    Err(e) => f.lock().unwrap().push(e),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Client {
            stop,
            served,
            failures,
            requests,
            thread: Some(thread),
        }
    }

    fn served(&self) -> Vec<String> {
        self.served.lock().unwrap().clone()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The certificates OpenBao issued on `role`, in issue order, each with
/// when OpenBao's audit log says it took the request (its own clock).
fn issued(dev: &Dev, role: &str) -> Vec<(SystemTime, String)> {
    let times = audited_times(&dev.audit, "update", &format!("pki/issue/{role}"));
    let mut certs: Vec<(String, String)> = Vec::new();
    let list = dev.json(&["list", "-format=json", "pki/certs"]);
    for serial in list.as_array().unwrap() {
        let c = dev.json(&[
            "read",
            "-format=json",
            &format!("pki/cert/{}", serial.as_str().unwrap()),
        ]);
        let pem = c["data"]["certificate"]
            .as_str()
            .unwrap()
            .trim()
            .to_string();
        let der = der_of(&pem);
        let cn = format!("{role}.internal");
        if der.windows(cn.len()).any(|w| w == cn.as_bytes()) {
            certs.push((not_before(&der), pem));
        }
    }
    certs.sort();
    assert_eq!(
        certs.len(),
        times.len(),
        "one certificate per issue request on {role}"
    );
    times
        .into_iter()
        .zip(certs.into_iter().map(|(_, pem)| pem))
        .collect()
}

/// The certificate's notBefore (its first UTCTime: `YYMMDDhhmmssZ`).
fn not_before(der: &[u8]) -> String {
    der.windows(15)
        .find(|w| w[0] == 0x17 && w[1] == 13 && w[14] == b'Z')
        .map(|w| String::from_utf8_lossy(&w[2..]).into_owned())
        .expect("a certificate has a validity")
}

fn der_of(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64_decode(&b64)
}

fn base64_decode(s: &str) -> Vec<u8> {
    // Not a `const ...: &[u8]`: scripts/hygiene takes those for test
    // secrets, and every binary holds the base64 alphabet.
    let alphabet: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let Some(v) = alphabet.iter().position(|a| *a == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The broker's `action` records for `workload`: (when, the record).
fn actions(b: &Broker, workload: &str) -> Vec<AuditLine> {
    b.audit_records()
        .into_iter()
        .filter(|r| r.event == "action" && r.json["workload"] == workload)
        .collect()
}

fn lines(text: &str) -> usize {
    text.lines().filter(|l| !l.is_empty()).count()
}

#[test]
fn a_rotated_certificate_reaches_the_running_server_by_signal_and_only_on_a_change() {
    let image = test_image();
    static_binary();
    let dev = Dev::start();
    setup_pki(&dev.server, ROOT_TOKEN);
    for role in ["ctl", "cmd"] {
        dev.must(&[
            "write",
            &format!("pki/roles/{role}"),
            "allowed_domains=internal",
            "allow_subdomains=true",
            "max_ttl=1h",
            "key_type=ec",
        ]);
    }
    let (w, ctl, cmd) = (unique("hup"), unique("hup-ctl"), unique("hup-cmd"));
    let mut clean = Cleanup::default();
    for x in [&w, &ctl, &cmd] {
        clean.network(&format!("unbaked-{x}"));
    }
    let signal = "on_change = \"signal\"\nsignal = \"SIGHUP\"\ndebounce = \"500ms\"";
    let failing =
        "on_change = \"command\"\ncommand = [\"sh\", \"-c\", \"exit 3\"]\ndebounce = \"0s\"";
    let b = Broker::builder()
        .policies(&[
            ("w.toml", &label_policy(&w, "", &template("web", signal))),
            // The control: the same server, no on_change.
            ("ctl.toml", &label_policy(&ctl, "", &template("ctl", ""))),
            // An action that always fails: retried, shown in /readyz.
            (
                "cmd.toml",
                &label_policy(&cmd, "", &template("cmd", failing)),
            ),
        ])
        .vault("")
        .envs([
            ("VAULT_ADDR", dev.server.addr.as_str()),
            ("VAULT_TOKEN", ROOT_TOKEN),
        ])
        .admin()
        .start();

    let start = |workload: &str, script: &str| {
        let name = clean_name(workload);
        let out = output(run(&b, workload).args([
            "--", "-d", "--rm", "--name", &name, "--tmpfs", "/www", image, script,
        ]));
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out.stderr),
            b.log_text()
        );
        name
    };
    let app = start(&w, APP);
    clean.container(&app);
    let app_ctl = start(&ctl, APP);
    clean.container(&app_ctl);
    let app_cmd = start(&cmd, "exec sleep 600");
    clean.container(&app_cmd);

    let addr = |name: &str, workload: &str| {
        format!("{}:8080", ip_of(name, &format!("unbaked-{workload}")))
    };
    let (addr_w, addr_ctl) = (addr(&app, &w), addr(&app_ctl, &ctl));
    for a in [&addr_w, &addr_ctl] {
        assert!(
            wait_for(DEADLINE, || get(a, "/cert.pem")
                .is_ok_and(|p| p.contains("BEGIN CERTIFICATE"))),
            "the server never served its certificate:\n{}",
            b.log_text()
        );
    }
    let pid_of =
        |name: &str| docker_ok(&["inspect", "-f", "{{.State.Pid}} {{.RestartCount}}", name]);
    let pid_before = pid_of(&app);
    let client = Client::start(addr_w.clone());
    let client_ctl = Client::start(addr_ctl.clone());

    // Two rotations reach the server, each by one signal.
    let ok_actions = || {
        actions(&b, &w)
            .into_iter()
            .filter(|r| r.json["action"]["result"] == "ok")
            .collect::<Vec<_>>()
    };
    for n in 1..=2 {
        assert!(
            wait_for(DEADLINE, || ok_actions().len() >= n),
            "rotation {n} sent no signal:\n{}",
            b.log_text()
        );
    }
    // The signals the app received are the signals sent (read both until
    // they agree: the trap runs just after the engine's answer).
    let mut settled = (0, 0, 0);
    assert!(
        wait_for(DEADLINE, || {
            let sent = ok_actions().len();
            let got = get(&addr_w, "/hups")
                .map(|h| lines(&h))
                .unwrap_or(usize::MAX);
            let counted = counter(
                &b.metrics(),
                "unbaked_actions_total",
                &[
                    &format!("workload=\"{w}\""),
                    "action=\"signal\"",
                    "result=\"ok\"",
                ],
            );
            settled = (sent, got, counted as usize);
            sent == got && got as u64 == counted && sent == ok_actions().len()
        }),
        "signals sent, received by the app, counted: {settled:?}\n{}",
        b.log_text()
    );
    let acted = ok_actions();
    let certs = issued(&dev, "web");

    // Each rotation (an issue after the first) was signalled once, within
    // one ttl of OpenBao issuing it; no signal without a rotation.
    assert!(
        certs.len() > acted.len(),
        "{} certificates, {} signals",
        certs.len(),
        acted.len()
    );
    for (k, a) in acted.iter().enumerate() {
        let issued_at = certs[k + 1].0;
        let late = a.ts.duration_since(issued_at).unwrap_or_else(|e| {
            panic!(
                "signal {k} at {:?} precedes its certificate by {:?}",
                a.ts,
                e.duration()
            )
        });
        eprintln!(
            "rotation {}: signalled {late:?} after OpenBao took the issue request",
            k + 1
        );
        assert!(
            late < TTL,
            "rotation {k}: signalled {late:?} after the issue, more than one ttl"
        );
        if let Some(next) = certs.get(k + 2) {
            assert!(a.ts < next.0, "signal {k} belongs to a later rotation");
        }
        assert_eq!(a.json["action"]["action"], "signal SIGHUP");
        assert_eq!(a.json["action"]["item"], "file:tls.pem");
        assert_ne!(
            a.json["action"]["from_version"],
            a.json["action"]["to_version"]
        );
    }
    // Renewals that rendered the same certificate sent nothing: the file
    // lease was renewed more often than it rotated.
    let lease = acted[0].json["lease"].as_str().unwrap().to_string();
    let renewals = b
        .audit_records()
        .iter()
        .filter(|r| {
            r.event == "renew" && r.lease() == Some(&lease) && r.ts <= acted[acted.len() - 1].ts
        })
        .count();
    assert!(
        renewals > acted.len(),
        "{renewals} renewals up to the last signal, {} signals: no identical re-render was seen",
        acted.len()
    );

    // What the server served: every issued certificate in order, each
    // after its signal; no failed request; the same process throughout.
    assert!(
        wait_for(DEADLINE, || client.served().len() > acted.len()),
        "the client never saw the last certificate"
    );
    let served = client.served();
    let expected: Vec<String> = certs.iter().map(|(_, p)| p.clone()).collect();
    let served: Vec<String> = served.iter().map(|s| s.trim().to_string()).collect();
    assert!(
        served.len() > acted.len() && expected.starts_with(&served),
        "the server served {} certificates, not the {} issued ones in order",
        served.len(),
        acted.len() + 1
    );
    let failures = client.failures.lock().unwrap().clone();
    let requests = *client.requests.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed: {failures:?}",
        failures.len()
    );
    assert_eq!(pid_of(&app), pid_before, "the server was restarted");
    assert_eq!(get(&addr_w, "/pid").unwrap().trim(), "1");

    // The control: its certificate rotated too (the file changed), but
    // without on_change it is never told: it serves the first one.
    let ctl_certs = issued(&dev, "ctl");
    assert!(
        ctl_certs.len() >= 2,
        "the control's certificate never rotated"
    );
    let file = docker_ok(&["exec", &app_ctl, "cat", "/run/secrets/tls.pem"]);
    assert_ne!(
        file.trim(),
        ctl_certs[0].1,
        "the control's file was never rewritten"
    );
    let served_ctl: Vec<String> = client_ctl
        .served()
        .iter()
        .map(|s| s.trim().to_string())
        .collect();
    assert_eq!(
        served_ctl,
        [ctl_certs[0].1.clone()],
        "the control served a new certificate without a signal"
    );
    assert_eq!(lines(&get(&addr_ctl, "/hups").unwrap()), 0);
    assert!(actions(&b, &ctl).is_empty());
    assert!(client_ctl.failures.lock().unwrap().is_empty());

    // A failing action: audited as failed, retried with backoff, a line of
    // /readyz while it fails (the broker stays ready), counted.
    assert!(
        wait_for(DEADLINE, || actions(&b, &cmd).len() >= 2),
        "the failing command was not retried:\n{}",
        b.log_text()
    );
    let failed = actions(&b, &cmd);
    assert_eq!(failed[0].json["action"]["result"], "failed");
    assert_eq!(failed[0].json["action"]["attempt"], 1);
    assert_eq!(failed[1].json["action"]["attempt"], 2);
    assert!(failed[0].json["action"]["error"]
        .as_str()
        .unwrap()
        .contains("exited with 3"));
    let port = b.admin_port.unwrap();
    let (status, body) = http(&format!("127.0.0.1:{port}"), "GET", "/readyz", None).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("ready\n")
            && body.contains(&format!("action failing (retrying): workload {cmd},"))
            && body.contains("item file:tls.pem, command"),
        "{body}"
    );
    assert!(!body.contains(&format!("workload {w},")), "{body}");
    assert!(
        counter(
            &b.metrics(),
            "unbaked_actions_total",
            &[&format!("workload=\"{cmd}\""), "result=\"failed\""]
        ) >= 2
    );

    // No certificate key or value reached a log: only certificates (public)
    // were rendered, and no PEM reached the broker's log or audit.
    for (_, pem) in &certs {
        let body = pem.lines().nth(1).unwrap();
        assert!(!b.log_text().contains(body) && !b.audit_text().contains(body));
    }
}

fn clean_name(workload: &str) -> String {
    format!("{workload}-app")
}

/// `restart` and `command` on KV changes: the engine restarts the container
/// (it keeps its launch and gets the new value from a fresh lease), and a
/// command runs inside the container after the file was rewritten.
#[test]
fn restart_and_command_actions_reach_the_container() {
    let image = test_image();
    static_binary();
    let (wr, wc) = (unique("act-restart"), unique("act-cmd"));
    let mut clean = Cleanup::default();
    for x in [&wr, &wc] {
        clean.network(&format!("unbaked-{x}"));
    }
    let tpl = |action: &str| {
        format!(
            "[[template]]\nfile = \"app.env\"\nformat = \"env\"\nvalues = {{ PW = \"app/db#password\" }}\nttl = \"2s\"\ndebounce = \"0s\"\n{action}\n"
        )
    };
    let b = Broker::builder()
        .policies(&[
            ("r.toml", &label_policy(&wr, "", &tpl("on_change = \"restart\""))),
            (
                "c.toml",
                &label_policy(
                    &wc,
                    "",
                    &tpl("on_change = \"command\"\ncommand = [\"cp\", \"/run/secrets/app.env\", \"/tmp/seen\"]"),
                ),
            ),
        ])
        .admin()
        .start();
    const V1: &[u8] = b"act-pw-1-5d2e";
    const V2: &[u8] = b"act-pw-2-9b7c";
    b.put("app/db", "password", V1);
    let mut names = Vec::new();
    for w in [&wr, &wc] {
        let name = clean.container(&format!("{w}-app"));
        let out = output(run(&b, w).args([
            "--",
            "-d",
            "--name",
            &name,
            "--tmpfs",
            "/tmp",
            image,
            "exec sleep 600",
        ]));
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out.stderr),
            b.log_text()
        );
        names.push(name);
    }
    let env_of = |name: &str| {
        text(&output(docker().args(["exec", name, "rev", "/run/secrets/app.env"])).stdout)
    };
    for n in &names {
        assert!(
            wait_for(DEADLINE, || env_of(n).contains(&rev(V1))),
            "{}",
            b.log_text()
        );
    }
    let restarts = |name: &str| docker_ok(&["inspect", "-f", "{{.RestartCount}}", name]);
    let started = |name: &str| docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", name]);
    let first_start = started(&names[0]);
    b.put("app/db", "password", V2);

    // restart: the engine restarted it; it runs, with the new value, and
    // keeps being served (the launch survived its own restart).
    let ok = |w: &str| {
        actions(&b, w)
            .iter()
            .any(|r| r.json["action"]["result"] == "ok")
    };
    assert!(wait_for(DEADLINE, || ok(&wr)), "{}", b.log_text());
    assert!(
        wait_for(DEADLINE, || started(&names[0]) != first_start
            && running(&names[0])),
        "the container was not restarted:\n{}",
        b.log_text()
    );
    assert_eq!(
        restarts(&names[0]),
        "0",
        "docker restart does not count as a restart policy's"
    );
    assert!(
        wait_for(DEADLINE, || env_of(&names[0]).contains(&rev(V2))),
        "the restarted container lost its files:\n{}",
        b.log_text()
    );
    let rec = &actions(&b, &wr)[0];
    assert_eq!(rec.json["action"]["action"], "restart");
    // Its fresh lease is the new baseline: no second restart follows.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        actions(&b, &wr).len(),
        1,
        "restarted again:\n{}",
        b.log_text()
    );

    // command: ran inside the container after the new file was written.
    assert!(wait_for(DEADLINE, || ok(&wc)), "{}", b.log_text());
    let seen = text(&output(docker().args(["exec", &names[1], "rev", "/tmp/seen"])).stdout);
    assert!(
        seen.contains(&rev(V2)),
        "the command did not see the new file"
    );
    assert!(
        counter(
            &b.metrics(),
            "unbaked_actions_total",
            &[
                &format!("workload=\"{wc}\""),
                "action=\"command\"",
                "result=\"ok\""
            ]
        ) == 1
    );
    for v in [V1, V2] {
        let v = String::from_utf8_lossy(v);
        assert!(!b.log_text().contains(&*v) && !b.audit_text().contains(&*v));
    }
}
