//! The command line, as clap types. The contract is ../shared/PRODUCT.md:
//! names and flags here are what scripts rely on.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "unbaked",
    version = env!("UNBAKED_BUILD"),
    about = "Credentials never baked into images",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,

    #[command(subcommand)]
    pub command: Command,
}

/// The flags every command takes, before or after its name.
#[derive(Debug, Args)]
pub struct Globals {
    /// The broker's socket [env: UNBAKED_SOCKET] [default: /run/unbaked/broker.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Log format on stderr [env: UNBAKED_LOG_FORMAT]
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// `unbaked sidecar` alone: the same global flags and the same
/// [`SidecarArgs`], without the rest of the command tree. The sidecar
/// lives as long as its workload, and building the whole tree (one
/// 200 KB function) would leave its pages mapped in every sidecar. A
/// command line this accepts means the same to [`Cli`]; whatever it
/// refuses (help, version, a mistake, another command) goes to [`Cli`],
/// which answers as always (`crate::parse`).
#[derive(Debug, Parser)]
#[command(name = "unbaked")]
pub struct SidecarCli {
    #[command(flatten)]
    pub globals: Globals,

    #[command(subcommand)]
    pub command: SidecarOnly,
}

#[derive(Debug, Subcommand)]
pub enum SidecarOnly {
    Sidecar(SidecarArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker daemon
    Broker(BrokerArgs),
    /// Write, read, list and remove secrets in the broker's memory store (root or the broker's uid)
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Write a workload's file grants into a tmpfs directory and keep them fresh
    Sidecar(SidecarArgs),
    /// Run a command with a workload's env and fd grants; nothing is written anywhere
    Exec(ExecArgs),
    /// `docker run` under the workload's isolation policy, with its secrets injected at start
    Run(RunArgs),
    /// Compose with every service labelled `io.unbaked.workload: NAME` run like `unbaked run`
    Compose(ComposeArgs),
    /// Review policy files: check (lint), test (assertions), diff (for pull requests)
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Work with the audit log
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Set up the persistent file store
    #[command(subcommand)]
    Store(StoreCommand),
    /// Turn another tool's configuration into unbaked policy
    #[command(subcommand)]
    Import(ImportCommand),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the top man page (roff), or with --out write every page into DIR
    Man {
        /// Write unbaked.1 and one unbaked-SUB.1 per subcommand into DIR
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Configuration file (TOML; flags override it, it overrides the environment)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of policy files [default: /etc/unbaked/policies]
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Where secrets come from [default: memory]; file: sealed on disk in --store-dir; vault: [vault]; crypt: Crypt's values in etcd, [crypt]
    #[arg(long, value_parser = ["memory", "file", "vault", "crypt"])]
    pub store: Option<String>,
    /// The file store's directory [default: /var/lib/unbaked/store]
    #[arg(long, value_name = "DIR")]
    pub store_dir: Option<PathBuf>,
    /// The key the file store is sealed with [env: UNBAKED_STORE_KEY_FILE, or $CREDENTIALS_DIRECTORY/unbaked-store-key]
    #[arg(long, value_name = "FILE")]
    pub store_key_file: Option<PathBuf>,
    /// With --store vault: serve sealed copies (kept in --store-dir) younger than DURATION while Vault is unreachable ([vault] max_stale)
    #[arg(long, value_name = "DURATION")]
    pub vault_max_stale: Option<String>,
    /// Append the hash-chained audit log to FILE (without it, audit records go to the log)
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    /// Start on the embedded store with the example policies and a demo secret
    #[arg(long)]
    pub dev: bool,
    /// Serve /healthz, /readyz and /metrics on ADDR (127.0.0.1:9464 when given without a value)
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    pub admin_addr: Option<std::net::SocketAddr>,
    /// The socket's mode, octal [default: 0666: any local process may ask, attestation decides]
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<String>,
    /// The socket's group (name or gid), with --socket-mode 0660 for a group-only socket
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Threads serving requests [default: 1; [broker] workers]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Write a new version of PATH. KEY=- reads the value from stdin, KEY=@FILE from a file
    Put {
        path: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<OsString>,
    },
    /// Print PATH's version and keys, or with KEY the value itself
    Get { path: String, key: Option<String> },
    /// List secret paths under PREFIX
    List {
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Remove PATH
    Rm { path: String },
    /// Write the current version of every secret under PREFIX to stdout, sealed under --key-file (backup, migration)
    Export {
        #[arg(default_value = "")]
        prefix: String,
        /// The key to seal the export with (64 hex digits, mode 0400: `unbaked store init-key FILE`)
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
    },
    /// Write every secret of an export (read from stdin) as a new version, to whichever store the broker runs
    Import {
        /// The key the export was sealed with
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct SidecarArgs {
    #[arg(long)]
    pub workload: String,
    /// The secrets directory; must be tmpfs (mounted here when allowed)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Write the files once and exit
    #[arg(long)]
    pub once: bool,
    /// Size limit of a tmpfs the sidecar mounts itself, in bytes
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub tmpfs_size: u64,
    /// Also prove identity with this projected service-account token (Kubernetes)
    #[arg(long, env = "UNBAKED_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[arg(long)]
    pub workload: String,
    /// Also prove identity with this projected service-account token (Kubernetes)
    #[arg(long, env = "UNBAKED_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Also write the file grants into DIR (a tmpfs) before starting CMD, and stay
    /// its parent: renew, rotate, and wipe them when CMD exits (a Compose service's shim)
    #[arg(long, value_name = "DIR")]
    pub files: Option<PathBuf>,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workload to launch [default: the one your uid may launch]
    #[arg(long)]
    pub workload: Option<String>,
    /// Print the final docker command (it never holds a secret) instead of running it
    #[arg(long)]
    pub dry_run: bool,
    /// The `docker run` options, image and command
    #[arg(
        last = true,
        required = true,
        allow_hyphen_values = true,
        value_name = "DOCKER_RUN_ARGS"
    )]
    pub docker_args: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct ComposeArgs {
    /// Print the override file (it never holds a secret) instead of running compose
    #[arg(long)]
    pub dry_run: bool,
    /// The compose arguments: global options (-f, -p, --project-directory,
    /// --env-file...), the compose command and its arguments
    #[arg(
        last = true,
        required = true,
        allow_hyphen_values = true,
        value_name = "COMPOSE_ARGS"
    )]
    pub compose_args: Vec<OsString>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate and lint every policy file of DIR; findings name file:line:column, field and rule
    Check {
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = CheckFormat::Human)]
        format: CheckFormat,
        /// Exit 1 on warnings too, not only on errors
        #[arg(long)]
        strict: bool,
        /// Also check this compose file: each service labelled io.unbaked.workload
        /// whose declared settings break its workload's [isolation] (repeatable)
        #[arg(long, value_name = "FILE")]
        compose: Vec<PathBuf>,
    },
    /// Run the assertion files DIR/tests/*.toml ([[case]] workload, secret, expect) against DIR
    Test { dir: PathBuf },
    /// Who gains or loses which secret and what got weaker, per workload, from OLD to NEW
    Diff {
        /// The old policy directory (with --git: its path, read at REV)
        old: PathBuf,
        /// The new policy directory [default with --git: OLD as it is on disk]
        #[arg(required_unless_present = "git")]
        new: Option<PathBuf>,
        /// Read OLD at this git revision (branch, tag or commit)
        #[arg(long, value_name = "REV")]
        git: Option<String>,
        #[arg(long, value_enum, default_value_t = DiffFormat::Human)]
        format: DiffFormat,
        /// Exit 1 when a change is weaker (weaken), also when a secret is gained (gain), or on any change (any)
        #[arg(long, value_enum, value_name = "WHAT")]
        fail_on: Option<FailOn>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    Human,
    Json,
    Sarif,
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    Human,
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Weaken,
    Gain,
    Any,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Write a new random store key to FILE (mode 0400; never over an existing file)
    InitKey { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// A Vault Agent configuration (templates, env templates, exec) as one workload's policy, plus a report of what could not be mapped
    VaultAgent {
        /// The agent's HCL configuration
        config: PathBuf,
        /// Directory to write WORKLOAD.toml and import-report.md into
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The workload's name
        #[arg(long, value_name = "NAME", default_value = "imported")]
        workload: String,
        /// The uid the workload matches [default: the uid running this command]
        #[arg(long, value_name = "UID")]
        uid: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain
    Verify { file: PathBuf },
}
