//! Hostile input on the broker socket and in the policies directory: size
//! limits, slow and idle connections, malformed JSON. Each is refused on
//! its own, and costs the other callers nothing.
mod util;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use util::daemon::{http, read_answer, Answer};
use util::*;

const VALUE: &[u8] = b"hostile-value-5a5a17";
const GRANT: &str = "[[grant]]\nsecret = \"app/h\"\nkey = \"k\"\nenv = \"H\"\n";

fn broker() -> Broker {
    let b = Broker::start(&[("h.toml", &host_policy("h", GRANT))]);
    b.put("app/h", "k", VALUE);
    b
}

/// A fetch through the real client still works; how long it took (a
/// figure for the log, never judged) and the client's debug log, which
/// records every overloaded answer it was given and retried.
fn fetch_works(b: &Broker) -> (Duration, String) {
    let t = Instant::now();
    let out = output(b.cmd().env("UNBAKED_LOG", "debug").args([
        "exec",
        "--workload",
        "h",
        "--",
        "sh",
        "-c",
        "printf %s \"$H\"",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, VALUE);
    (t.elapsed(), text(&out.stderr))
}

fn fetch(socket: &Path, body: &[u8]) -> Answer {
    http(
        socket,
        "POST /v1/fetch HTTP/1.1\r\nContent-Type: application/json",
        body,
    )
    .unwrap()
}

fn assert_bad_request(a: &Answer, needle: &str) {
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.body.contains("\"code\":\"bad_request\""), "{}", a.body);
    assert!(a.body.contains(needle), "{needle:?} not in {}", a.body);
}

#[test]
fn malformed_json_gets_a_clear_400_naming_the_problem() {
    let b = broker();
    let cases: &[(&[u8], &str)] = &[
        (
            b"{\"workload\": ",
            "malformed request body: EOF while parsing",
        ),
        (b"{\"workload\":\"h\",\"uid\":0}", "unknown field `uid`"),
        (
            b"{\"workload\": 5}",
            "invalid type: integer `5`, expected a string",
        ),
        (
            b"{\"workload\":\"h\",\"kinds\":[\"disk\"]}",
            "unknown variant `disk`",
        ),
        (b"\xff\xfe\x00garbage", "malformed request body"),
        (b"", "malformed request body: EOF while parsing"),
        (b"[1,2,3]", "malformed request body"),
    ];
    for (body, needle) in cases {
        assert_bad_request(&fetch(&b.socket, body), needle);
    }
    // The error never echoes the body back (it may hold anything).
    let a = fetch(
        &b.socket,
        b"{\"workload\":\"h\",\"secret-ish\":\"zz-echo-me-zz\"}",
    );
    assert_bad_request(&a, "unknown field");
    assert!(!a.body.contains("zz-echo-me-zz"), "{}", a.body);
    let a = http(&b.socket, "GET /v1/nowhere HTTP/1.1", b"").unwrap();
    assert_eq!(a.status, 404, "{a:?}");
    assert!(a.body.contains("no such endpoint"));
    fetch_works(&b);
}

#[test]
fn oversized_requests_are_refused_by_the_size_limits() {
    let b = broker();
    // A declared length over 1 MiB: refused before a byte of it is read.
    // No byte of the body is ever sent: an answer at all shows it was
    // judged unread, and its reason that the limit (not the 5 s body
    // timeout, "request body not received") refused it.
    let mut s = UnixStream::connect(&b.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /v1/fetch HTTP/1.1\r\nHost: u\r\nContent-Length: 2000000\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let a = read_answer(&mut s).unwrap_or_else(|e| panic!("{e}:\n{}", b.log_text()));
    assert_bad_request(&a, "request body over 1048576 bytes");

    // Chunked, so no length up front: cut off at the limit while reading.
    let mut s = UnixStream::connect(&b.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = write!(
            w,
            "PUT /v1/admin/secrets/app/big HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..20 {
            // The broker stops reading at 1 MiB: later writes may fail.
            if write!(w, "{:x}\r\n", chunk.len()).is_err()
                || w.write_all(&chunk).is_err()
                || w.write_all(b"\r\n").is_err()
            {
                return;
            }
        }
        let _ = w.write_all(b"0\r\n\r\n");
    });
    let a = read_answer(&mut s).unwrap();
    writer.join().unwrap();
    assert_bad_request(&a, "request body over 1048576 bytes");

    // Headers over 64 KiB: 431.
    let a = http(
        &b.socket,
        &format!(
            "GET /v1/health HTTP/1.1\r\nX-Pad: {}",
            "p".repeat(100 * 1024)
        ),
        b"",
    );
    match a {
        Ok(a) => assert_eq!(a.status, 431, "{a:?}"),
        // Or the broker closed the connection while we were still writing.
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{e}"
        ),
    }
    // Exactly at the limit is still read (and then judged as JSON).
    let mut body = b"{\"workload\":\"h\"}".to_vec();
    body.resize(1 << 20, b' ');
    let a = fetch(&b.socket, &body);
    assert_eq!(a.status, 200, "{}", a.body);
    fetch_works(&b);
    assert!(!b.log_text().contains(std::str::from_utf8(VALUE).unwrap()));
}

/// How long until the broker closes `s` (EOF, reset, or an answer then
/// EOF), and what it sent; the deadline only catches a broker that never does.
fn closed_after(mut s: UnixStream, t: Instant) -> (Duration, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the broker never closed the connection (60 s)")
            }
            Ok(0) | Err(_) => return (t.elapsed(), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn slow_and_idle_connections_time_out_and_others_are_served_meanwhile() {
    let _heavy = heavy();
    let b = broker();
    let socket = b.socket.clone();
    // Not cut before the 5 s timeouts (a late cut is the machine's load,
    // and the broker's own reasons below say which timeout cut it).
    let within = |d: Duration| d >= Duration::from_millis(4500);

    // Idle: connects and sends nothing.
    let idle = {
        let s = UnixStream::connect(&socket).unwrap();
        std::thread::spawn(move || closed_after(s, Instant::now()))
    };
    // Slowloris: a header line every 300 ms, never the blank line.
    let slow_head = {
        let s = UnixStream::connect(&socket).unwrap();
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let t = Instant::now();
            let trickle = std::thread::spawn(move || {
                let _ = w.write_all(b"GET /v1/health HTTP/1.1\r\nHost: u\r\n");
                for i in 0..40 {
                    std::thread::sleep(Duration::from_millis(300));
                    if write!(w, "X-Slow-{i}: y\r\n").is_err() {
                        return;
                    }
                }
            });
            let r = closed_after(s, t);
            trickle.join().unwrap();
            r
        })
    };
    // Slow body: the headers promise 100 bytes, 10 arrive.
    let slow_body = {
        let mut s = UnixStream::connect(&socket).unwrap();
        std::thread::spawn(move || {
            let t = Instant::now();
            s.write_all(
                b"POST /v1/fetch HTTP/1.1\r\nHost: u\r\nContent-Length: 100\r\n\r\n{\"workload",
            )
            .unwrap();
            closed_after(s, t)
        })
    };

    // Meanwhile everyone else is served as usual: fetches complete while
    // all three stalled connections are still open (a broker blocked by
    // them would serve nobody until it cut them).
    std::thread::sleep(Duration::from_millis(200));
    let stalled = [&idle, &slow_head, &slow_body];
    let mut slowest = Duration::ZERO;
    let mut served_during_stall = 0;
    for _ in 0..10 {
        let (took, _) = fetch_works(&b);
        slowest = slowest.max(took);
        if stalled.iter().all(|t| !t.is_finished()) {
            served_during_stall += 1;
        }
    }
    assert!(
        served_during_stall > 0,
        "no fetch was served while the stalled connections were open:\n{}",
        b.log_text()
    );

    let (t, got) = idle.join().unwrap();
    assert!(
        within(t) && got.is_empty(),
        "idle connection closed after {t:?}: {got:?}"
    );
    let (t, _) = slow_head.join().unwrap();
    assert!(within(t), "slow headers cut after {t:?}");
    let (t, got) = slow_body.join().unwrap();
    assert!(within(t), "slow body cut after {t:?}");
    let a = util::daemon::parse_answer(&got).expect("an answer to the slow body");
    assert_bad_request(&a, "request body not received within 5s");
    // Cut by the header and body timeouts, not by the 30 s cap on a
    // connection (the only other cut, which the broker logs).
    assert!(
        !b.log_text().contains("connection closed after 30s"),
        "{}",
        b.log_text()
    );
    eprintln!("slowest fetch during the stalls: {slowest:?} ({served_during_stall} of 10 while all three were open)");
}

#[test]
fn an_oversized_policy_file_is_refused_and_the_old_set_keeps_serving() {
    let b = broker();
    let huge = format!(
        "{}\n# {}\n",
        host_policy("other", GRANT),
        "x".repeat(300 * 1024)
    );
    b.write_policy("huge.toml", &huge);
    assert!(
        wait_for(DEADLINE, || b
            .log_text()
            .contains("over the 256 KiB limit for a policy file")),
        "{}",
        b.log_text()
    );
    fetch_works(&b);
    let out = output(b.cmd().args(["policy", "check"]).arg(&b.policies));
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains("huge.toml") && all.contains("256 KiB limit"),
        "{all}"
    );
}

/// The checks the fuzz targets run (`fuzz/src/checks.rs`), over the
/// checked-in corpora: every seed and every input a fuzzing run kept stays
/// a regression test here, without nightly or libFuzzer.
#[allow(dead_code)]
#[path = "../fuzz/src/checks.rs"]
mod checks;

#[test]
fn the_checked_in_fuzz_corpora_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut counts = vec![];
    for (target, check) in checks::TARGETS {
        let dir = root.join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            n += 1;
        }
        assert!(n >= 5, "{target}: only {n} inputs in {}", dir.display());
        counts.push(format!("{target}: {n}"));
    }
    eprintln!("replayed {}", counts.join(", "));
}

/// A process that fetches in a loop and never renews or revokes holds at
/// most 64 leases of a workload: each past that ends its oldest (audited),
/// so the lease table cannot grow with its rate. Others keep theirs.
#[test]
fn a_process_fetching_in_a_loop_holds_a_bounded_number_of_leases() {
    let b = broker();
    // Another process's lease, which the loop must not touch.
    fetch_works(&b);
    let leases = |b: &Broker| -> u64 {
        let h = http(&b.socket, "GET /v1/health HTTP/1.1", b"").unwrap();
        let v: serde_json::Value = serde_json::from_str(&h.body).unwrap();
        v["leases"].as_u64().unwrap()
    };
    let others = leases(&b);
    assert!(others >= 1, "the exec's lease is live: {others}");
    for i in 0..100 {
        let a = fetch(&b.socket, br#"{"workload":"h","kinds":["env"]}"#);
        assert_eq!(a.status, 200, "fetch {i}: {a:?}");
    }
    assert_eq!(leases(&b), others + 64);
    let audit = b.audit_text();
    let evicted = audit
        .lines()
        .filter(|l| {
            l.contains("\"event\":\"expire\"") && l.contains("more leases of this workload")
        })
        .count();
    assert_eq!(evicted, 36, "{audit}");
}

/// One uid holds connections open past its share: it alone is answered
/// 503, and another caller is served at once meanwhile. (Without the
/// per-caller limit its 40 connections take all 16 slots and the queue,
/// and the other caller waits 1 s for a 503.)
#[test]
fn one_callers_flood_leaves_the_others_served() {
    let _heavy = heavy();
    let b = Broker::start(&[("h.toml", &host_policy("h", GRANT))]);
    std::fs::set_permissions(
        b.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    b.put("app/h", "k", VALUE);
    // uid 2002 opens 300 connections (past 256/4 = 64 of its own) and
    // holds them, sending no complete request; it reports how many the
    // broker closed after 3 s (those past its share wait 1 s in the queue,
    // then 1 s for a request to answer 503; a served connection's idle
    // timeout is 5 s).
    let flood = as_user(2002, "perl")
        .arg("-e")
        .arg(PERL_HOLD)
        .arg(&b.socket)
        .arg("300")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("perl holds the flood");
    // Let the flood land, then fetch as another caller while it is held.
    std::thread::sleep(Duration::from_millis(700));
    let (took, client_log) = fetch_works(&b);
    let out = flood.wait_with_output().unwrap();
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report} {}", text(&out.stderr));
    let counts: Vec<usize> = report
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let (opened, rejected) = (counts[0], counts[1]);
    assert_eq!(opened, 300, "{report}");
    assert!(
        rejected >= 300 - 64,
        "the flood's connections past its share are answered 503 and closed: {report}"
    );
    // Served at once: never answered `overloaded` (a caller waiting in the
    // queue behind the flood is, after 1 s) nor closed unanswered, as its
    // client's own record of every retry shows.
    assert!(
        !client_log.contains("the broker is overloaded")
            && !client_log.contains("closed the connection unanswered"),
        "the other caller waited behind the flood ({took:?}):\n{client_log}"
    );
    eprintln!("the other caller was served in {took:?} during the flood");
}

/// Connects ARGV[1] sockets to ARGV[0], sends one request line on those
/// the broker closes (a reject answers only a request), and prints
/// "opened rejected".
const PERL_HOLD: &str = r#"
use strict; use IO::Socket::UNIX; use Socket; use IO::Select;
my ($path, $n) = @ARGV;
my @s;
for (1..$n) { my $c = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $path) or last; push @s, $c; }
for my $c (@s) { print $c "GET /v1/health HTTP/1.1\r\nHost: u\r\n"; $c->flush; }
select(undef, undef, undef, 3);
my $rejected = 0;
for my $c (@s) {
  my $sel = IO::Select->new($c);
  if ($sel->can_read(0)) { my $buf; my $r = sysread($c, $buf, 4096); $rejected++ if defined $r && ($r == 0 || $buf =~ /^HTTP\/1.1 503/); }
}
print scalar(@s), " $rejected\n";
"#;
