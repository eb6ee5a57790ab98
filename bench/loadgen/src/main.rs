//! Load generator for the broker's unix socket (wrk speaks TCP only).
//!
//! Sustained mode: N connections each post `/v1/fetch` for T seconds
//! (HTTP/1.1 keep-alive, or `--new-conn` for a fresh connection per
//! request as the sidecar makes), then one `key=value` line with throughput
//! and latency percentiles. Back to back by default (closed loop: the most
//! the broker serves, latency = N / throughput); with `--rate R` the N
//! connections together offer R requests/s on a schedule (open loop: the
//! latency at that load). Burst mode (`--burst N`): N connections, every
//! request written before the first answer is read (single-flight).
//!
//! The answers carry the benchmark's (dummy) secret: only their status
//! line and length are looked at, nothing of a body is printed.
//!
//! `--serve-floor SOCKET` is the other end of a comparison: the floor of a
//! unix-socket round trip, one blocking thread answering each request with
//! a fixed answer of the broker's size and doing nothing else, so its CPU
//! per request is what the kernel and the machine charge for the wake-up,
//! the read and the write (bench/run's one-client row sets the broker
//! against it).
#![forbid(unsafe_code)]

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const USAGE: &str = "usage: unbaked-loadgen --socket PATH --workload NAME [--kinds file,env]
  [--connections N] [--duration SECS] [--warmup SECS] [--new-conn] [--threads K]
  [--rate REQUESTS_PER_SEC] [--pid BROKER_PID] [--burst N]
       unbaked-loadgen --serve-floor SOCKET";

#[derive(Debug, Clone)]
struct Args {
    socket: PathBuf,
    workload: String,
    kinds: Vec<String>,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    new_conn: bool,
    threads: usize,
    pid: Option<u32>,
    burst: Option<usize>,
    rate: Option<f64>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        socket: PathBuf::new(),
        workload: String::new(),
        kinds: Vec::new(),
        connections: 1,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        new_conn: false,
        threads: 1,
        pid: None,
        burst: None,
        rate: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--new-conn" {
            a.new_conn = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|n| *n >= 0.0)
                .ok_or_else(|| format!("{flag} {v}: not a number\n{USAGE}"))
        };
        match flag.as_str() {
            "--socket" => a.socket = value.into(),
            "--workload" => a.workload = value,
            "--kinds" => a.kinds = value.split(',').map(str::to_string).collect(),
            "--connections" => a.connections = num(&value)?.max(1.0) as usize,
            "--duration" => a.duration = Duration::from_secs_f64(num(&value)?),
            "--warmup" => a.warmup = Duration::from_secs_f64(num(&value)?),
            "--threads" => a.threads = num(&value)?.max(1.0) as usize,
            "--pid" => a.pid = Some(num(&value)? as u32),
            "--burst" => a.burst = Some(num(&value)?.max(1.0) as usize),
            "--rate" => a.rate = Some(num(&value)?.max(1.0)),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if a.socket.as_os_str().is_empty() || a.workload.is_empty() {
        return Err(format!("--socket and --workload are required\n{USAGE}"));
    }
    Ok(a)
}

fn request(a: &Args) -> Vec<u8> {
    // Workload and kind names are [a-z0-9-]: no JSON escaping needed.
    let kinds: Vec<String> = a.kinds.iter().map(|k| format!("\"{k}\"")).collect();
    let body = format!(
        "{{\"workload\":\"{}\",\"kinds\":[{}]}}",
        a.workload,
        kinds.join(",")
    );
    format!(
        "POST /v1/fetch HTTP/1.1\r\nHost: unbaked\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Send one request and read its whole answer; the HTTP status.
async fn exchange(s: &mut UnixStream, req: &[u8], buf: &mut Vec<u8>) -> io::Result<u16> {
    s.write_all(req).await?;
    buf.clear();
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        read_more(s, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "answer head is not text"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status line"))?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        read_more(s, buf).await?;
    }
    Ok(status)
}

async fn read_more(s: &mut UnixStream, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.reserve(16 << 10);
    if s.read_buf(buf).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    /// Latencies of counted requests, nanoseconds.
    lat: Vec<u64>,
}

/// Wait until `at`, to the microsecond. tokio's timer fires on
/// millisecond ticks: every connection due within one millisecond would
/// send together, a burst of rate/1000 requests that the staggered
/// schedule is meant to avoid. So sleep to the tick before, then yield
/// until the instant (this busies the load generator's own core, which
/// `bench/run` pins it to for the open-loop run).
async fn send_at(at: Instant) {
    if let Some(coarse) = at.checked_sub(Duration::from_millis(2)) {
        if coarse > Instant::now() {
            tokio::time::sleep_until(coarse.into()).await;
        }
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

async fn worker(a: Args, req: Vec<u8>, start: Instant, index: usize) -> Tally {
    let count_from = start + a.warmup;
    let end = count_from + a.duration;
    let mut t = Tally::default();
    let mut buf = Vec::with_capacity(16 << 10);
    let mut conn: Option<UnixStream> = None;
    // Open loop: this connection's share of the rate, its start staggered
    // so the connections do not fire together. A request that is due while
    // the previous one is still out goes as soon as it returns (no catch-up
    // burst), so a saturated broker shows as a lower achieved rate.
    let interval = a
        .rate
        .map(|r| Duration::from_secs_f64(a.connections as f64 / r));
    let mut due = interval.map(|i| start + i.mul_f64(index as f64 / a.connections as f64));
    loop {
        if let (Some(at), Some(i)) = (due, interval) {
            send_at(at).await;
            due = Some((at + i).max(Instant::now()));
        }
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let result = async {
            let mut s = match conn.take() {
                Some(s) => s,
                None => UnixStream::connect(&a.socket).await?,
            };
            let status = exchange(&mut s, &req, &mut buf).await?;
            if !a.new_conn {
                conn = Some(s);
            }
            Ok::<u16, io::Error>(status)
        }
        .await;
        let done = Instant::now();
        let counted = sent >= count_from;
        match result {
            Ok(200) if counted => {
                t.ok += 1;
                t.lat.push((done - sent).as_nanos() as u64);
            }
            Ok(200) => {}
            Ok(status) => {
                t.errors += 1;
                t.first_error
                    .get_or_insert_with(|| format!("HTTP {status}"));
            }
            Err(e) => {
                t.errors += 1;
                t.first_error.get_or_insert_with(|| e.to_string());
                // Do not spin on a refused socket.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    t
}

/// utime + stime of a process, in microseconds (USER_HZ is 100 on Linux).
fn cpu_us(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime, stime are 14, 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

async fn sustained(a: Args) -> Result<String, String> {
    let req = request(&a);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..a.connections {
        tasks.push(tokio::spawn(worker(a.clone(), req.clone(), start, i)));
    }
    // CPU of the broker and of this process over the counted window only.
    tokio::time::sleep_until((start + a.warmup).into()).await;
    let broker = a.pid.map(|p| p.to_string());
    let cpu0 = (broker.as_deref().and_then(cpu_us), cpu_us("self"));
    tokio::time::sleep_until((start + a.warmup + a.duration).into()).await;
    let cpu1 = (broker.as_deref().and_then(cpu_us), cpu_us("self"));
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await.map_err(|e| format!("a worker failed: {e}"))?;
        all.ok += t.ok;
        all.errors += t.errors;
        all.first_error = all.first_error.or(t.first_error);
        all.lat.extend(t.lat);
    }
    all.lat.sort_unstable();
    let secs = a.duration.as_secs_f64();
    let mut line = format!(
        "clients={} mode={}{} seconds={secs:.1} ok={} errors={} rps={:.0} p50_us={:.0} p99_us={:.0} p999_us={:.0} max_us={:.0}",
        a.connections,
        if a.new_conn { "new-conn" } else { "keep-alive" },
        a.rate.map_or(String::new(), |r| format!(" offered_rps={r:.0}")),
        all.ok,
        all.errors,
        all.ok as f64 / secs,
        pct(&all.lat, 0.50),
        pct(&all.lat, 0.99),
        pct(&all.lat, 0.999),
        all.lat.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    let per_req = |c0: Option<u64>, c1: Option<u64>| match (c0, c1) {
        (Some(x), Some(y)) if all.ok > 0 => Some((y - x) as f64 / all.ok as f64),
        _ => None,
    };
    if let Some(us) = per_req(cpu0.0, cpu1.0) {
        line.push_str(&format!(" broker_cpu_us_per_req={us:.1}"));
    }
    if let Some(us) = per_req(cpu0.1, cpu1.1) {
        line.push_str(&format!(" loadgen_cpu_us_per_req={us:.1}"));
    }
    if let Some(e) = all.first_error {
        line.push_str(&format!(" first_error={:?}", e));
    }
    Ok(line)
}

async fn burst(a: Args, n: usize) -> Result<String, String> {
    let req = request(&a);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let s = UnixStream::connect(&a.socket)
            .await
            .map_err(|e| format!("connect {}: {e} (raise ulimit -n?)", a.socket.display()))?;
        conns.push(s);
    }
    let start = Instant::now();
    for s in &mut conns {
        s.write_all(&req).await.map_err(|e| format!("write: {e}"))?;
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                // The request is already out: read the answer only.
                exchange(&mut s, b"", &mut buf).await
            })
        })
        .collect();
    let mut ok = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(200)) => ok += 1,
            Ok(Ok(status)) => {
                first_error.get_or_insert(format!("HTTP {status}"));
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e.to_string());
            }
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let mut line = format!(
        "burst={n} ok={ok} errors={} wall_ms={:.1}",
        n - ok,
        start.elapsed().as_secs_f64() * 1000.0
    );
    if let Some(e) = first_error {
        line.push_str(&format!(" first_error={e:?}"));
    }
    Ok(line)
}

/// `--serve-floor SOCKET`: see the module's documentation. Connections
/// are served one after another (a sequential client's), until killed.
fn serve_floor(path: &std::path::Path) -> io::Result<()> {
    use std::io::{Read, Write};
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    // The size of the broker's answer to the bench's fetch.
    let body = [b'x'; 285];
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let answer = [head.as_bytes(), &body].concat();
    for conn in listener.incoming() {
        let mut s = conn?;
        let mut buf = Vec::with_capacity(8192);
        let mut chunk = [0u8; 8192];
        // One request: its head, then Content-Length bytes; then the answer.
        let served = (|| -> io::Result<()> {
            loop {
                let end = loop {
                    if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let len = std::str::from_utf8(&buf[..head_end])
                            .ok()
                            .and_then(|h| {
                                h.lines().find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                            })
                            .unwrap_or(0);
                        break head_end + 4 + len;
                    }
                    let n = s.read(&mut chunk)?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                };
                while buf.len() < end {
                    let n = s.read(&mut chunk)?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                buf.drain(..end);
                s.write_all(&answer)?;
            }
        })();
        if let Err(e) = served {
            eprintln!("unbaked-loadgen --serve-floor: a connection failed: {e}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--serve-floor") {
        let Some(path) = args.next() else {
            eprintln!("unbaked-loadgen: --serve-floor needs a socket path\n{USAGE}");
            return ExitCode::from(2);
        };
        return match serve_floor(std::path::Path::new(&path)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unbaked-loadgen --serve-floor {path}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("unbaked-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = if a.threads > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.threads)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unbaked-loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = match a.burst {
        Some(n) => rt.block_on(burst(a.clone(), n)),
        None => rt.block_on(sustained(a)),
    };
    match out {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unbaked-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
