//! `unbaked man [--out DIR]`: the manual pages, from the clap definitions
//! (so options never drift from the code) plus the sections clap does not
//! know: ENVIRONMENT, FILES, EXIT STATUS, EXAMPLES and SEE ALSO.
//!
//! Without `--out` the top page goes to stdout; with it, `unbaked.1` and one
//! `unbaked-SUB.1` per subcommand (and per sub-subcommand:
//! `unbaked-policy-check.1`) are written into DIR, which the install steps
//! put under `/usr/local/share/man/man1` so the unit's
//! `Documentation=man:unbaked(1)` resolves. Every page passes `mandoc -T lint`
//! (tests/ops_tools.rs).

use clap::CommandFactory;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The `.TH` date: the last non-trivial change to these pages (mandoc
/// wants a date there; clap_mangen leaves it empty, which shifted the
/// version into the date field).
const DATE: &str = "2026-11-30";

#[derive(Debug, thiserror::Error)]
pub enum ManError {
    #[error("cannot write the man page {}: {source}; check that the directory exists and is writable", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the man page to stdout: {0}")]
    Stdout(std::io::Error),
}

/// Print the top page.
pub fn print(out: &mut dyn Write) -> Result<(), ManError> {
    let mut cmd = crate::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    render(&cmd, true, out).map_err(ManError::Stdout)
}

/// Write every page into `dir`; returns the files written.
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>, ManError> {
    let mut cmd = crate::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_tree(&cmd, true, dir, &mut written)?;
    Ok(written)
}

fn write_tree(
    cmd: &clap::Command,
    top: bool,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), ManError> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    render(cmd, top, &mut page).map_err(|source| ManError::Write {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, page).map_err(|source| ManError::Write {
        path: path.clone(),
        source,
    })?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub, false, dir, written)?;
    }
    Ok(())
}

fn render(cmd: &clap::Command, top: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let mut page = Vec::new();
    render_raw(cmd, top, &mut page)?;
    out.write_all(tidy(&String::from_utf8_lossy(&page)).as_bytes())
}

fn render_raw(cmd: &clap::Command, top: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let man = clap_mangen::Man::new(cmd.clone())
        // Titles are upper case by convention (mandoc's style check).
        .title(name.to_uppercase())
        .date(DATE)
        .source(format!("unbaked {}", env!("CARGO_PKG_VERSION")))
        .manual("unbaked manual");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(out)?;
    }
    if top {
        out.write_all(ENVIRONMENT.as_bytes())?;
        out.write_all(FILES.as_bytes())?;
    }
    out.write_all(EXIT_STATUS.as_bytes())?;
    if top {
        out.write_all(EXAMPLES.as_bytes())?;
    }
    see_also(cmd, top, out)
}

/// Every other page of the tree, from the top page; the top page and the
/// page's own subpages, from the others.
fn see_also(cmd: &clap::Command, top: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let mut refs: Vec<String> = Vec::new();
    if !top {
        refs.push("unbaked".into());
    }
    fn collect(cmd: &clap::Command, refs: &mut Vec<String>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            refs.push(
                sub.get_display_name()
                    .unwrap_or_else(|| sub.get_name())
                    .into(),
            );
            collect(sub, refs);
        }
    }
    collect(cmd, &mut refs);
    if top {
        refs.extend(["docker-run".into(), "systemd.service".into()]);
    }
    out.write_all(b".SH \"SEE ALSO\"\n")?;
    let last = refs.len().saturating_sub(1);
    for (i, r) in refs.iter().enumerate() {
        let section = if r == "systemd.service" { 5 } else { 1 };
        let sep = if i == last { "" } else { " ," };
        writeln!(out, ".BR {} ({section}){sep}", r.replace('-', "\\-"))?;
    }
    Ok(())
}

/// clap_mangen's roff, made clean for `mandoc -T lint`: its string
/// definition once instead of before every section, no trailing
/// whitespace, no `.br` next to a blank line (a paragraph break already),
/// and text lines of at most 80 bytes (broken at spaces, in fill mode
/// only, which renders the same).
fn tidy(roff: &str) -> String {
    let lines: Vec<&str> = roff.lines().map(str::trim_end).collect();
    let mut kept: Vec<&str> = Vec::with_capacity(lines.len());
    let (mut seen_ie, mut seen_el) = (false, false);
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with(".ie \\n(.g .ds Aq") {
            if seen_ie {
                continue;
            }
            seen_ie = true;
        }
        if line.starts_with(".el .ds Aq") {
            if seen_el {
                continue;
            }
            seen_el = true;
        }
        let blank = |l: Option<&&str>| l.is_some_and(|l| l.is_empty() || *l == ".sp");
        if *line == ".br"
            && (blank(i.checked_sub(1).and_then(|j| lines.get(j))) || blank(lines.get(i + 1)))
        {
            continue;
        }
        kept.push(line);
    }
    let mut out = String::with_capacity(roff.len());
    let mut fill = true;
    for line in kept {
        if line.starts_with(".nf") {
            fill = false;
        } else if line.starts_with(".fi") {
            fill = true;
        }
        // A blank line is a paragraph break in roff, which mandoc flags.
        if line.is_empty() {
            out.push_str(".sp\n");
            continue;
        }
        let text = !line.starts_with('.') && !line.starts_with('\'');
        if !(text && fill) {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut rest = line;
        let mut first = true;
        while !rest.is_empty() {
            let (head, tail) = if rest.len() <= 80 {
                (rest, "")
            } else {
                // The last unescaped space that keeps the line at 80 bytes
                // or less, else the first one after.
                let breakable =
                    |&(i, c): &(usize, char)| c == ' ' && i > 0 && !rest[..i].ends_with('\\');
                let mut spaces = rest.char_indices().filter(breakable);
                let within = rest
                    .char_indices()
                    .filter(breakable)
                    .take_while(|(i, _)| *i <= 80)
                    .last();
                match within.or_else(|| spaces.find(|(i, _)| *i > 80)) {
                    Some((i, _)) => (&rest[..i], &rest[i + 1..]),
                    None => (rest, ""),
                }
            };
            if !first && (head.starts_with('.') || head.starts_with('\'')) {
                out.push_str("\\&");
            }
            out.push_str(head);
            out.push('\n');
            rest = tail.trim_start();
            first = false;
        }
    }
    out
}

const ENVIRONMENT: &str = r#".SH ENVIRONMENT
.TP
.B UNBAKED_SOCKET
The broker's socket, for every command (default
.IR /run/unbaked/broker.sock );
.B \-\-socket
wins over it.
.TP
.B UNBAKED_LOG
Log filter, in tracing's EnvFilter syntax (default
.B info
for the broker and the sidecar,
.B warn
otherwise).
.TP
.B UNBAKED_LOG_FORMAT
.B text
or
.BR json ;
.B \-\-log\-format
wins over it.
JSON lines are flat: top\-level
.BR timestamp ,
.BR level ,
.BR target ,
.BR message ,
the span fields, and audit records as the object
.BR audit .
.TP
.B UNBAKED_TOKEN_FILE
A projected service\-account token the sidecar and exec present (Kubernetes).
.TP
.B UNBAKED_PEER_PIN
.B procfs
pins peers through /proc instead of pidfds (kernels before 6.5).
.TP
.B UNBAKED_MAX_CONNECTIONS
The broker's limit on concurrent API connections.
.TP
.B UNBAKED_DOCKER
The docker CLI
.B unbaked run
executes (default: docker on PATH).
.TP
.B UNBAKED_SHIM
The static unbaked binary
.B unbaked run
and
.B unbaked compose
mount into the container as its exec shim.
.TP
.B UNBAKED_COMPOSE
The compose CLI
.B unbaked compose
executes (default: docker\-compose on PATH, else docker compose).
.TP
.BR VAULT_ADDR ", " VAULT_TOKEN ", " VAULT_CACERT ", " VAULT_CAPATH ", " VAULT_NAMESPACE
Vault or OpenBao, for
.BR "broker \-\-store vault" ,
as the vault and bao CLIs read them; each also as
.BR BAO_ *,
which wins.
CA files are added to the system roots.
Without a token,
.I ~/.vault\-token
is read.
.TP
.BR VAULT_CLIENT_CERT ", " VAULT_CLIENT_KEY ", " VAULT_TLS_SERVER_NAME
TLS client authentication (and the
.B cert
auth method), and the name checked on the server's certificate.
.TP
.B VAULT_SKIP_VERIFY
Accepted with a warning at start and the metric
.BR unbaked_vault_tls_verify_disabled :
never in production.
.TP
.BR VAULT_MAX_RETRIES ", " VAULT_CLIENT_TIMEOUT
Further passes over the nodes (default 0) and the time one operation may
take (default 1.5s).
.TP
.B DOCKER_HOST
The Docker Engine the broker inspects and
.B unbaked run
starts containers on (default
.IR /var/run/docker.sock ).
"#;

const FILES: &str = r#".SH FILES
.TP
.I /run/unbaked/broker.sock
The broker's API socket.
.TP
.I /etc/unbaked/broker.toml
The broker's configuration, as the shipped systemd unit passes it.
.TP
.I /etc/unbaked/policies/*.toml
One workload's policy per file; tests in
.IR /etc/unbaked/policies/tests/*.toml .
.TP
.I /run/secrets
Where file grants appear in containers started by
.BR "unbaked run" .
"#;

const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
.B 0
Success.
.TP
.B 1
A failure: bad input, I/O, a policy check with errors (with
.BR \-\-strict ,
warnings too), a broken audit chain.
.TP
.B 2
The command line was wrong.
.TP
.B 3
The broker denied the request by policy, isolation, or a failing audit sink.
.TP
.B 4
The broker, or the store behind it, could not be reached.
.TP
.B 126
.BR "unbaked exec" :
the command was found but could not be executed.
.TP
.B 127
.BR "unbaked exec" :
the command was not found.
.PP
.B unbaked run
and
.B unbaked exec
otherwise exit with the status of what they run.
"#;

const EXAMPLES: &str = r#".SH EXAMPLES
Try it on the embedded store:
.PP
.RS
.nf
unbaked broker \-\-dev
.fi
.RE
.PP
Store a secret, the value from stdin (never on the command line):
.PP
.RS
.nf
printf %s "$DB_PASSWORD" | unbaked secret put app/db password=\-
.fi
.RE
.PP
Run a container with its workload's secrets:
.PP
.RS
.nf
unbaked run \-\-workload billing \-\- \-\-rm \-p 8080:8080 billing:1.4
.fi
.RE
.PP
Start a Compose project whose services are labelled io.unbaked.workload:
.PP
.RS
.nf
unbaked compose \-\- up \-d
.fi
.RE
.PP
Review a policy change in CI:
.PP
.RS
.nf
unbaked policy check policies \-\-format sarif > policy.sarif
unbaked policy diff policies \-\-git origin/main \-\-fail\-on weaken
.fi
.RE
.PP
Install the manual pages:
.PP
.RS
.nf
unbaked man \-\-out /usr/local/share/man/man1
.fi
.RE
"#;
