//! The `unbaked` binary: parse the command line, set up logging and process
//! hardening, dispatch to the crates, and turn the outcome into an exit code.
#![forbid(unsafe_code)]

mod cli;
mod compose;
mod import;
mod logging;
mod man;
mod policy_cmd;
mod run;
mod secret_args;
mod transfer;

use clap::Parser;
use cli::{
    AuditCommand, Cli, Command, ImportCommand, LogFormat, SecretCommand, SidecarCli, SidecarOnly,
    StoreCommand,
};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use unbaked_api::exit;
use unbaked_broker::config::{BrokerConfig, BrokerOptions, DEFAULT_SOCKET, ENV_SOCKET};
use unbaked_sidecar::client::Client;

/// A failure to report: the message (with its causes) and the exit code.
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn new(code: i32, e: impl std::error::Error) -> Failure {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        Failure { code, message }
    }

    fn msg(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = parse(std::env::args_os().collect());
    // Before anything can hold a secret: no core dumps, no ptrace by peers.
    if let Err(e) = unbaked_secretsdir::sys::disable_core_dumps() {
        eprintln!("unbaked: cannot disable core dumps: {e}");
        return ExitCode::from(exit::FAILURE as u8);
    }
    init_logging(&cli);
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("unbaked: {}", f.message);
            ExitCode::from(f.code as u8)
        }
    }
}

/// The command line. `unbaked sidecar` is parsed by [`SidecarCli`] first,
/// so the long-running sidecar never builds the whole command tree;
/// anything it refuses gets the full parser's answer (help, errors).
fn parse(args: Vec<std::ffi::OsString>) -> Cli {
    if args.iter().skip(1).any(|a| a == "sidecar") {
        if let Ok(SidecarCli {
            globals,
            command: SidecarOnly::Sidecar(args),
        }) = SidecarCli::try_parse_from(&args)
        {
            return Cli {
                globals,
                command: Command::Sidecar(args),
            };
        }
    }
    Cli::parse_from(args)
}

fn init_logging(cli: &Cli) {
    let default = match cli.command {
        // vaultrs logs every error answer (a 404 too); the broker reports
        // store errors itself, with their context.
        Command::Broker(_) | Command::Sidecar(_) => "info,vaultrs=off,rustify=off",
        _ => "warn",
    };
    let json = match cli.globals.log_format {
        Some(f) => f == LogFormat::Json,
        None => std::env::var("UNBAKED_LOG_FORMAT").is_ok_and(|v| v == "json"),
    };
    logging::init(json, default);
}

/// Client commands: flag, then UNBAKED_SOCKET, then the default.
fn client_socket(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(ENV_SOCKET).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::FAILURE, e))
}

fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Broker(args) => broker(args, cli.globals.socket),
        Command::Secret(cmd) => secret(client_socket(cli.globals.socket), cmd),
        Command::Sidecar(args) => {
            let cfg = unbaked_sidecar::sidecar::SidecarConfig {
                socket: client_socket(cli.globals.socket),
                workload: args.workload,
                dir: args.dir,
                once: args.once,
                tmpfs_size: args.tmpfs_size,
                token_file: args.token_file,
            };
            runtime()?
                .block_on(unbaked_sidecar::sidecar::run(cfg))
                .map_err(|e| Failure::new(e.exit_code(), e))
        }
        Command::Run(args) => {
            let cfg = run::RunConfig {
                socket: client_socket(cli.globals.socket),
                workload: args.workload,
                dry_run: args.dry_run,
                args: args.docker_args,
            };
            run::run(cfg).map_err(|e| Failure::new(e.exit_code(), e))
        }
        Command::Compose(args) => {
            let cfg = compose::ComposeConfig {
                socket: client_socket(cli.globals.socket),
                dry_run: args.dry_run,
                args: args.compose_args,
            };
            compose::run(cfg).map_err(|e| Failure::new(e.exit_code(), e))
        }
        Command::Exec(args) => exec(args, cli.globals.socket),
        Command::Policy(cmd) => policy_cmd::run(cmd),
        Command::Audit(AuditCommand::Verify { file }) => audit_verify(&file),
        Command::Store(StoreCommand::InitKey { file }) => {
            unbaked_broker::store::key::init(&file).map_err(|e| Failure::new(exit::FAILURE, e))?;
            println!(
                "{}: a new store key (mode 0400); keep a copy apart from the store: without it the store cannot be opened",
                file.display()
            );
            Ok(())
        }
        Command::Import(ImportCommand::VaultAgent {
            config,
            out,
            workload,
            uid,
        }) => {
            let cfg = import::ImportConfig {
                agent: config,
                out,
                workload,
                uid: uid.unwrap_or_else(|| nix::unistd::getuid().as_raw()),
            };
            let done = import::run(&cfg).map_err(|e| Failure::new(exit::FAILURE, e))?;
            for line in done
                .report
                .iter()
                .map(|l| format!("import: {l}"))
                .chain(done.next)
            {
                println!("{line}");
            }
            Ok(())
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "unbaked", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out } => man_pages(out),
    }
}

fn broker(args: cli::BrokerArgs, socket: Option<PathBuf>) -> Result<(), Failure> {
    let store = match args.store {
        Some(s) => Some(
            s.parse()
                .map_err(|e: String| Failure::msg(exit::USAGE, e))?,
        ),
        None => None,
    };
    let opts = BrokerOptions {
        config: args.config,
        socket,
        policies: args.policies,
        store,
        audit: args.audit,
        dev: args.dev,
        admin_addr: args.admin_addr,
        socket_mode: args.socket_mode,
        socket_group: args.socket_group,
        store_dir: args.store_dir,
        store_key_file: args.store_key_file,
        vault_max_stale: args.vault_max_stale,
        workers: args.workers,
    };
    let cfg = BrokerConfig::resolve(opts, |k| std::env::var(k).ok())
        .map_err(|e| Failure::new(exit::FAILURE, e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.workers)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::FAILURE, e))?;
    rt.block_on(unbaked_broker::run(cfg, Box::new(unbaked_docker::open)))
        .map_err(|e| Failure::new(exit::FAILURE, e))
}

/// `unbaked exec`: env and fd grants, then execve; with `--files DIR` the
/// shim also fills DIR and stays the app's parent.
fn exec(args: cli::ExecArgs, socket: Option<PathBuf>) -> Result<(), Failure> {
    let cfg = unbaked_sidecar::exec::ExecConfig {
        socket: client_socket(socket),
        workload: args.workload,
        command: args.command,
        token_file: args.token_file,
    };
    if let Some(dir) = args.files {
        let files = unbaked_sidecar::sidecar::SidecarConfig {
            socket: cfg.socket.clone(),
            workload: cfg.workload.clone(),
            dir,
            once: false,
            tmpfs_size: unbaked_sidecar::sidecar::DEFAULT_TMPFS_SIZE,
            token_file: cfg.token_file.clone(),
        };
        let code = runtime()?
            .block_on(unbaked_sidecar::exec::run_with_files(&cfg, files))
            .map_err(|e| Failure::new(e.exit_code(), e))?;
        std::process::exit(code);
    }
    let prepared = runtime()?
        .block_on(unbaked_sidecar::exec::prepare(&cfg))
        .map_err(|e| Failure::new(e.exit_code(), e))?;
    let e = prepared.exec();
    Err(Failure::new(e.exit_code(), e))
}

fn man_pages(out: Option<PathBuf>) -> Result<(), Failure> {
    let Some(dir) = out else {
        return match man::print(&mut std::io::stdout().lock()) {
            // `unbaked man | head`: the reader had enough.
            Err(man::ManError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.map_err(|e| Failure::new(exit::FAILURE, e)),
        };
    };
    for page in man::write_all(&dir).map_err(|e| Failure::new(exit::FAILURE, e))? {
        println!("{}", page.display());
    }
    Ok(())
}

fn secret(socket: PathBuf, cmd: SecretCommand) -> Result<(), Failure> {
    let client = Client::new(socket);
    let rt = runtime()?;
    let api = |e: unbaked_sidecar::client::ClientError| Failure::new(e.exit_code(), e);
    let mut out = std::io::stdout().lock();
    match cmd {
        SecretCommand::Put { path, pairs } => {
            let data = secret_args::parse(&pairs, std::io::stdin().lock(), |w| {
                eprintln!("unbaked: warning: {w}")
            })
            .map_err(|e| Failure::new(exit::USAGE, e))?;
            let body = unbaked_api::wire::PutSecret { data };
            let meta = rt.block_on(client.put_secret(&path, &body)).map_err(api)?;
            let _ = writeln!(
                out,
                "{}: version {} ({})",
                meta.path,
                meta.version,
                meta.keys.join(", ")
            );
        }
        SecretCommand::Get { path, key } => {
            let data = rt.block_on(client.get_secret(&path)).map_err(api)?;
            match key {
                Some(key) => {
                    let value = data.data.get(&key).ok_or_else(|| {
                        Failure::msg(
                            exit::FAILURE,
                            format!("{path} (version {}) has no key {key:?}", data.version),
                        )
                    })?;
                    out.write_all(value.expose_secret())
                        .map_err(|e| Failure::new(exit::FAILURE, e))?;
                }
                None => {
                    let keys: Vec<&str> = data.data.keys().map(String::as_str).collect();
                    let _ = writeln!(
                        out,
                        "{}: version {} ({})",
                        data.path,
                        data.version,
                        keys.join(", ")
                    );
                }
            }
        }
        SecretCommand::List { prefix } => {
            for p in rt
                .block_on(client.list_secrets(&prefix))
                .map_err(api)?
                .paths
            {
                let _ = writeln!(out, "{p}");
            }
        }
        SecretCommand::Rm { path } => {
            rt.block_on(client.delete_secret(&path)).map_err(api)?;
        }
        SecretCommand::Export { prefix, key_file } => {
            transfer::export(&rt, &client, &prefix, &key_file)?;
        }
        SecretCommand::Import { key_file } => {
            transfer::import(&rt, &client, &key_file)?;
        }
    }
    Ok(())
}

fn audit_verify(file: &std::path::Path) -> Result<(), Failure> {
    use unbaked_broker::audit::{verify, VerifyError};
    match verify(file) {
        Ok(s) => {
            println!(
                "{}: {} records, chain intact (last record sha256 {})",
                file.display(),
                s.records,
                s.last_hash
            );
            // Intact but unterminated is still exit 0: a running broker's
            // chain is open, and a past crash is on record, not tampering.
            if !s.unterminated_runs.is_empty() {
                println!(
                    "warning: {} earlier run(s) ended without a stop record (a crash, a kill or a truncation): their last records are seq {}",
                    s.unterminated_runs.len(),
                    s.unterminated_runs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                );
            }
            if !s.terminated() {
                println!("unterminated: the last record is not a stop: the broker is running, or it crashed or was killed, or the file was truncated");
            }
            Ok(())
        }
        Err(VerifyError::Io(e)) => Err(Failure::msg(
            exit::FAILURE,
            format!("cannot read {}: {e}", file.display()),
        )),
        Err(VerifyError::Broken { line, reason }) => Err(Failure::msg(
            exit::FAILURE,
            format!("{}:{line}: {reason}", file.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(line: &[&str]) -> Vec<std::ffi::OsString> {
        line.iter().map(Into::into).collect()
    }

    /// A sidecar command line means the same through the narrow parser as
    /// through the full one: globals before or after the command, defaults.
    #[test]
    fn the_sidecar_parser_agrees_with_the_full_one() {
        for line in [
            &["unbaked", "sidecar", "--workload", "w", "--dir", "/d"][..],
            &[
                "unbaked",
                "--socket",
                "/s",
                "sidecar",
                "--workload",
                "w",
                "--dir",
                "/d",
                "--once",
            ],
            &[
                "unbaked",
                "sidecar",
                "--dir",
                "/d",
                "--workload",
                "w",
                "--log-format",
                "json",
                "--socket",
                "sidecar",
            ],
            &[
                "unbaked",
                "sidecar",
                "--workload",
                "w",
                "--dir",
                "/d",
                "--tmpfs-size",
                "4096",
                "--token-file",
                "/t",
            ],
        ] {
            let full = Cli::try_parse_from(args(line)).unwrap();
            assert!(SidecarCli::try_parse_from(args(line)).is_ok(), "{line:?}");
            assert_eq!(
                format!("{:?}", parse(args(line))),
                format!("{full:?}"),
                "{line:?}"
            );
        }
    }

    /// What the narrow parser refuses goes to the full parser: help,
    /// version, mistakes, and other commands (which it does not know).
    #[test]
    fn what_the_sidecar_parser_refuses_goes_to_the_full_one() {
        for line in [
            &["unbaked", "sidecar", "--help"][..],
            &["unbaked", "sidecar", "--version"],
            &["unbaked", "help", "sidecar"],
            &["unbaked", "sidecar", "--workload", "w"],
            &[
                "unbaked",
                "sidecar",
                "--workload",
                "w",
                "--dir",
                "/d",
                "--bogus",
            ],
        ] {
            assert!(SidecarCli::try_parse_from(args(line)).is_err(), "{line:?}");
        }
        // A command that names a file `sidecar`: the full parser's answer.
        let line = ["unbaked", "policy", "check", "sidecar"];
        assert!(SidecarCli::try_parse_from(args(&line)).is_err());
        let cli = parse(args(&line));
        assert!(matches!(cli.command, Command::Policy(_)), "{cli:?}");
        // Control: the full parser does take the sidecar's line.
        let sidecar = ["unbaked", "sidecar", "--workload", "w", "--dir", "/d"];
        assert!(matches!(parse(args(&sidecar)).command, Command::Sidecar(_)));
    }
}
