//! The tamper-evident audit trail: JSON lines, each carrying the SHA-256 of
//! the line before it, so an edit, deletion or reordering breaks the chain.
//!
//! A clean run ends with `stop`. A chain resumed without it (a crash, a
//! SIGKILL, a truncated file) gets an `unterminated` record at the next
//! start, and a warning in the log. `unbaked audit verify` names every run
//! that ended without `stop` and says when the chain itself is open; it
//! still exits 0 when every link holds (a running broker's chain is always
//! open), and 1 only for a broken chain.
//!
//! **Invariant:** a record never holds a secret value: [`Record`] has no
//! field that could take a [`unbaked_api::Secret`].
//! **Invariant:** when a record cannot be written, the caller must not
//! release the secret it describes (fail closed); [`Audit::healthy`] stays
//! false until a later write succeeds.

use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// `prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Start,
    Stop,
    Authenticate,
    Grant,
    Deny,
    Renew,
    Revoke,
    Expire,
    Reload,
    ReloadRejected,
    SecretWrite,
    SecretRead,
    SecretDelete,
    /// An admin write or deletion about to happen: written before the store
    /// is touched, so an audit sink that fails refuses the change (the
    /// `secret_write` / `secret_delete` record with its outcome follows).
    AdminRequest,
    /// A change action (`on_change`) the broker ran on a container: the
    /// item, its versions, the action and its result.
    Action,
    /// Written at start, before `start`, when the chain the broker resumes
    /// does not end with `stop`: the previous run crashed or was killed, or
    /// the file was truncated.
    Unterminated,
}

/// The caller, as the socket's peer credentials attest it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerRef {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// The container the caller runs in, as the engine reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub name: String,
    /// False when the engine could not vouch for the container.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub unverified: bool,
}

/// Which secret a record is about: its location and version, never its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    pub id: String,
    pub secret: String,
    pub key: String,
    pub version: u64,
    /// Answered from a stale copy while the store was unreachable
    /// (`[vault] max_stale`).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub stale: bool,
    /// The stale copy's age: since the store last confirmed it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub age_secs: Option<u64>,
}

/// The event-specific part of a record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub caller: Option<CallerRef>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub container: Option<ContainerRef>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lease: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub secrets: Vec<SecretRef>,
    /// A store path touched by the admin API.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// Identical denials this record stands for beyond the one written
    /// first (same caller, container, workload and rule within a window).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub count: Option<u64>,
    /// An [`Event::Action`]'s what and outcome.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub action: Option<ActionRef>,
}

/// A change action as audited: which item changed (by id and version,
/// never its content), what was done and how it went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRef {
    /// The template's item id (its file path).
    pub item: String,
    pub from_version: u64,
    pub to_version: u64,
    /// Changes folded into this run (debounce).
    pub changes: u32,
    /// `signal SIGHUP`, `restart`, `command ["nginx", "-s", "reload"]`.
    pub action: String,
    pub attempt: u32,
    /// `ok` or `failed`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// One line as written: the chain fields around the record.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    seq: u64,
    ts: String,
    event: Event,
    #[serde(flatten)]
    record: Record,
    prev: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit file {path}: {source}: check the path and its permissions")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit file {path} line {line}: {reason}: the file was edited or is not an unbaked audit log; keep it for investigation and start a new file")]
    Resume {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot write audit file {path}: {source}: secrets are withheld until the audit file is writable again")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

struct Chain {
    sink: Sink,
    prev: String,
    seq: u64,
    /// Bytes of whole records in the file: a failed append is cut back to
    /// this, so a torn line never breaks the chain.
    len: u64,
}

enum Sink {
    File {
        file: File,
        path: PathBuf,
    },
    /// No `--audit FILE`: records go to the log (target `unbaked::audit`).
    Log,
}

pub struct Audit {
    chain: Mutex<Chain>,
    healthy: AtomicBool,
    /// The resumed chain did not end with `stop`: (its last seq, event).
    unterminated: Mutex<Option<(u64, Event)>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("healthy", &self.healthy())
            .finish_non_exhaustive()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(digest(&SHA256, bytes).as_ref())
}

/// Lowercase hex. By table: a `format!` per byte was a fifth of the
/// broker's instructions per fetch (two chain hashes, one lease id).
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

impl Audit {
    /// Open (or continue) the chain in `path`. An existing file is verified
    /// first: the broker refuses to extend a chain that is already broken.
    pub fn open(path: &Path) -> Result<Audit, AuditError> {
        let (prev, seq, last) = if path.exists() {
            match verify(path) {
                Ok(summary) => (summary.last_hash, summary.records, summary.last_event),
                Err(VerifyError::Io(source)) => {
                    return Err(AuditError::Open {
                        path: path.into(),
                        source,
                    })
                }
                Err(VerifyError::Broken { line, reason }) => {
                    return Err(AuditError::Resume {
                        path: path.into(),
                        line,
                        reason,
                    })
                }
            }
        } else {
            (GENESIS.to_string(), 0, None)
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| AuditError::Open {
                path: path.into(),
                source,
            })?;
        let len = file
            .metadata()
            .map_err(|source| AuditError::Open {
                path: path.into(),
                source,
            })?
            .len();
        Ok(Audit {
            chain: Mutex::new(Chain {
                sink: Sink::File {
                    file,
                    path: path.into(),
                },
                prev,
                seq,
                len,
            }),
            healthy: AtomicBool::new(true),
            unterminated: Mutex::new(last.filter(|e| *e != Event::Stop).map(|e| (seq, e))),
        })
    }

    /// Records go to the log only; there is no file to fail.
    pub fn to_log() -> Audit {
        Audit {
            chain: Mutex::new(Chain {
                sink: Sink::Log,
                prev: GENESIS.to_string(),
                seq: 0,
                len: 0,
            }),
            healthy: AtomicBool::new(true),
            unterminated: Mutex::new(None),
        }
    }

    /// At start: if the chain this broker resumes does not end with `stop`
    /// (a crash, a SIGKILL, a truncated file), say so in the log and in the
    /// chain itself. Returns the last seq of that run, if it was one.
    pub fn report_unterminated(&self) -> Result<Option<u64>, AuditError> {
        let Some((seq, event)) = *self.unterminated.lock().unwrap_or_else(|e| e.into_inner())
        else {
            return Ok(None);
        };
        let event = serde_json::to_value(event).unwrap_or_default();
        let reason = format!(
            "previous run ended without stop: its last record is seq {seq} ({}); the broker crashed or was killed, or the audit file was truncated",
            event.as_str().unwrap_or("?")
        );
        tracing::warn!(last_seq = seq, "{reason}");
        self.record(
            Event::Unterminated,
            Record {
                reason: Some(reason),
                ..Record::default()
            },
        )?;
        *self.unterminated.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(Some(seq))
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Append one record. The line is complete in the file (one `write`
    /// call, O_APPEND) before this returns Ok; on error the chain is not
    /// advanced, so a later success continues from the last good line.
    pub fn record(&self, event: Event, record: Record) -> Result<(), AuditError> {
        self.record_all([(event, record)])
    }

    /// Append records in order with one `write` call: all are in the file
    /// before this returns Ok, or none (a torn append is cut back and the
    /// chain is not advanced). A fetch writes its authenticate and grant
    /// records so: one append per record was a third of its cost.
    pub fn record_all(
        &self,
        records: impl IntoIterator<Item = (Event, Record)>,
    ) -> Result<(), AuditError> {
        let mut chain = self.chain.lock().unwrap_or_else(|e| e.into_inner());
        let ts = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        let (mut seq, mut prev) = (chain.seq, chain.prev.clone());
        let mut bytes = Vec::with_capacity(512);
        // Only the log sink names the events (in its message).
        let to_log = matches!(chain.sink, Sink::Log);
        let mut events = Vec::new();
        for (event, record) in records {
            if to_log {
                events.push(event);
            }
            let start = bytes.len();
            seq += 1;
            let line = Line {
                seq,
                ts: ts.clone(),
                event,
                record,
                prev,
            };
            serde_json::to_writer(&mut bytes, &line).expect("audit lines serialize");
            prev = sha256_hex(&bytes[start..]);
            bytes.push(b'\n');
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let len = chain.len;
        match &mut chain.sink {
            Sink::File { file, path } => {
                if let Err(source) = file.write_all(&bytes) {
                    self.healthy.store(false, Ordering::Relaxed);
                    if let Err(e) = file.set_len(len) {
                        tracing::error!(error = %e, path = %path.display(), "cannot cut a torn audit record: the chain will not verify past it");
                    }
                    return Err(AuditError::Write {
                        path: path.clone(),
                        source,
                    });
                }
            }
            Sink::Log => {
                // The line as a field of its own: `--log-format json` emits
                // it as the object `audit`, not a string inside the message.
                for (line, event) in bytes
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .zip(&events)
                {
                    let record = String::from_utf8_lossy(line);
                    tracing::info!(target: "unbaked::audit", record = &*record, "audit {}", event_name(*event));
                }
            }
        }
        chain.prev = prev;
        chain.seq = seq;
        chain.len += bytes.len() as u64;
        self.healthy.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// The event's name as records spell it (`grant`, `deny`, ...).
fn event_name(event: Event) -> String {
    match serde_json::to_value(event) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// What a good chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    pub records: u64,
    pub last_hash: String,
    /// The event of the last record (`None` for an empty file).
    pub last_event: Option<Event>,
    /// The seq of the last record of each earlier run that ended without
    /// `stop` (the next `start`, or the `unterminated` before it, follows).
    pub unterminated_runs: Vec<u64>,
}

impl VerifySummary {
    /// The chain ends with `stop`: its broker shut down cleanly. A chain
    /// of a running broker is open; one of a stopped broker that is open
    /// ended in a crash or was truncated.
    pub fn terminated(&self) -> bool {
        self.last_event.is_none_or(|e| e == Event::Stop)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("line {line}: {reason}")]
    Broken { line: usize, reason: String },
}

/// Check every link of the chain in `path`.
pub fn verify(path: &Path) -> Result<VerifySummary, VerifyError> {
    let file = File::open(path).map_err(VerifyError::Io)?;
    let mut prev = GENESIS.to_string();
    let mut records = 0u64;
    let mut last_event = None;
    let mut unterminated_runs = Vec::new();
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(VerifyError::Io)?;
        let n = i + 1;
        let broken = |reason: String| VerifyError::Broken { line: n, reason };
        let parsed: Line = serde_json::from_slice(&line)
            .map_err(|e| broken(format!("not an audit record ({e})")))?;
        if parsed.prev != prev {
            return Err(broken(format!(
                "chain broken: prev is {} but the record before hashes to {prev} (a record was edited, removed or moved)",
                parsed.prev
            )));
        }
        if parsed.seq != records + 1 {
            return Err(broken(format!(
                "sequence broken: seq {} follows {records} (a record was removed or moved)",
                parsed.seq
            )));
        }
        prev = sha256_hex(&line);
        records += 1;
        // A run starts with `start` (or the `unterminated` note before it);
        // the record before that must be the previous run's `stop`.
        let starts_run = matches!(parsed.event, Event::Start | Event::Unterminated)
            && last_event != Some(Event::Unterminated);
        if starts_run && last_event.is_some_and(|e| e != Event::Stop) {
            unterminated_runs.push(records - 1);
        }
        last_event = Some(parsed.event);
    }
    Ok(VerifySummary {
        records,
        last_hash: prev,
        last_event,
        unterminated_runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("audit.log");
        let audit = Audit::open(&path).unwrap();
        for w in ["a", "b", "c"] {
            audit
                .record(
                    Event::Grant,
                    Record {
                        workload: Some(w.into()),
                        ..Record::default()
                    },
                )
                .unwrap();
        }
        path
    }

    #[test]
    fn hashes_are_lowercase_hex_as_in_existing_logs() {
        let bytes: Vec<u8> = (0..=255).collect();
        let formatted: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(to_hex(&bytes), formatted);
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_written_chain_verifies_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        assert_eq!(verify(&path).unwrap().records, 3);
        let audit = Audit::open(&path).unwrap();
        audit.record(Event::Revoke, Record::default()).unwrap();
        assert_eq!(verify(&path).unwrap().records, 4);
    }

    #[test]
    fn edits_deletions_and_reordering_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();

        let edited = text.replacen("\"workload\":\"b\"", "\"workload\":\"x\"", 1);
        std::fs::write(&path, edited).unwrap();
        assert!(matches!(
            verify(&path),
            Err(VerifyError::Broken { line: 3, .. })
        ));

        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        assert!(matches!(
            verify(&path),
            Err(VerifyError::Broken { line: 2, .. })
        ));

        std::fs::write(&path, format!("{}\n{}\n{}\n", lines[1], lines[0], lines[2])).unwrap();
        assert!(matches!(
            verify(&path),
            Err(VerifyError::Broken { line: 1, .. })
        ));

        assert!(matches!(
            Audit::open(&path),
            Err(AuditError::Resume { line: 1, .. })
        ));
    }

    #[test]
    fn records_written_together_chain_like_single_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let audit = Audit::open(&path).unwrap();
        let rec = |w: &str| Record {
            workload: Some(w.into()),
            ..Record::default()
        };
        audit
            .record_all([(Event::Authenticate, rec("d")), (Event::Grant, rec("d"))])
            .unwrap();
        audit.record(Event::Revoke, rec("d")).unwrap();
        assert_eq!(verify(&path).unwrap().records, 6);
        let text = std::fs::read_to_string(&path).unwrap();
        let events: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str::<Line>(l).unwrap().event)
            .collect();
        assert_eq!(
            events[3..],
            [Event::Authenticate, Event::Grant, Event::Revoke]
        );
    }

    #[test]
    fn a_failed_batch_writes_nothing_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let audit = Audit::open(&path).unwrap();
        let good = std::fs::read(&path).unwrap();
        // The same chain state, on a sink that refuses every byte.
        {
            let mut chain = audit.chain.lock().unwrap();
            let file = OpenOptions::new().write(true).open("/dev/full").unwrap();
            let real = std::mem::replace(
                &mut chain.sink,
                Sink::File {
                    file,
                    path: "/dev/full".into(),
                },
            );
            drop(chain);
            let two = [
                (Event::Authenticate, Record::default()),
                (Event::Grant, Record::default()),
            ];
            assert!(audit.record_all(two).is_err());
            assert!(!audit.healthy());
            audit.chain.lock().unwrap().sink = real;
        }
        assert_eq!(std::fs::read(&path).unwrap(), good);
        audit.record(Event::Revoke, Record::default()).unwrap();
        assert!(audit.healthy());
        assert_eq!(verify(&path).unwrap().records, 4);
    }

    #[test]
    fn a_run_without_stop_is_reported_at_start_and_by_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let run = |stop: bool| {
            let audit = Audit::open(&path).unwrap();
            audit.report_unterminated().unwrap();
            audit.record(Event::Start, Record::default()).unwrap();
            audit.record(Event::Grant, Record::default()).unwrap();
            if stop {
                audit.record(Event::Stop, Record::default()).unwrap();
            }
        };
        run(true);
        let clean = verify(&path).unwrap();
        assert!(clean.terminated() && clean.unterminated_runs.is_empty());
        // Killed: no stop. Open, not yet noted as a past crash.
        run(false);
        let open = verify(&path).unwrap();
        assert!(!open.terminated());
        assert!(open.unterminated_runs.is_empty());
        // The next start notes it in the chain, and verify names the run.
        run(true);
        let s = verify(&path).unwrap();
        assert!(s.terminated());
        assert_eq!(s.unterminated_runs, [5]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("\"event\":\"unterminated\"").count(), 1);
        assert!(text.contains("previous run ended without stop: its last record is seq 5 (grant)"));

        // Truncated after a clean stop: the chain verifies but is open.
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n", lines[..lines.len() - 1].join("\n"))).unwrap();
        assert!(!verify(&path).unwrap().terminated());
        // A chain resumed without a noted crash (an older broker): still found.
        let audit = Audit::open(&path).unwrap();
        audit.record(Event::Start, Record::default()).unwrap();
        assert_eq!(
            verify(&path).unwrap().unterminated_runs,
            [5, lines.len() as u64 - 1]
        );
    }

    #[test]
    fn a_failed_write_marks_the_sink_unhealthy() {
        let audit = Audit {
            chain: Mutex::new(Chain {
                sink: Sink::File {
                    file: OpenOptions::new().write(true).open("/dev/full").unwrap(),
                    path: "/dev/full".into(),
                },
                prev: GENESIS.into(),
                seq: 0,
                len: 0,
            }),
            healthy: AtomicBool::new(true),
            unterminated: Mutex::new(None),
        };
        assert!(audit.record(Event::Start, Record::default()).is_err());
        assert!(!audit.healthy());
    }
}
