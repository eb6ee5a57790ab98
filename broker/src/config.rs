//! Broker configuration in two stages: what the flags, the file and the
//! environment say ([`BrokerOptions`], [`FileConfig`]), then one validated
//! [`BrokerConfig`]. Flags override the file, which overrides the environment.

use crate::store::crypt::{CryptConfig, EtcdApi};
use crate::store::file::FileStoreConfig;
use crate::store::vault::{VaultAuth, VaultConfig, VaultTls};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use unbaked_api::Secret;

pub const ENV_SOCKET: &str = "UNBAKED_SOCKET";
/// `--dev` falls back to `$XDG_RUNTIME_DIR/unbaked/broker.sock` when the
/// default socket's directory is not writable.
pub const ENV_XDG_RUNTIME_DIR: &str = "XDG_RUNTIME_DIR";
/// Connections served at once (default 256).
pub const ENV_MAX_CONNECTIONS: &str = "UNBAKED_MAX_CONNECTIONS";
/// `procfs` forces the peer-pinning fallback of kernels before 6.5 (tests).
pub const ENV_PEER_PIN: &str = "UNBAKED_PEER_PIN";
/// The Vault conventions; each `BAO_*` name wins over its `VAULT_*` twin.
/// An address variable may list several nodes, comma-separated.
pub const ENV_VAULT_ADDR: [&str; 2] = ["BAO_ADDR", "VAULT_ADDR"];
pub const ENV_VAULT_TOKEN: [&str; 2] = ["BAO_TOKEN", "VAULT_TOKEN"];
pub const ENV_VAULT_CACERT: [&str; 2] = ["BAO_CACERT", "VAULT_CACERT"];
pub const ENV_VAULT_NAMESPACE: [&str; 2] = ["BAO_NAMESPACE", "VAULT_NAMESPACE"];
pub const ENV_VAULT_CAPATH: [&str; 2] = ["BAO_CAPATH", "VAULT_CAPATH"];
pub const ENV_VAULT_CLIENT_CERT: [&str; 2] = ["BAO_CLIENT_CERT", "VAULT_CLIENT_CERT"];
pub const ENV_VAULT_CLIENT_KEY: [&str; 2] = ["BAO_CLIENT_KEY", "VAULT_CLIENT_KEY"];
pub const ENV_VAULT_TLS_SERVER_NAME: [&str; 2] = ["BAO_TLS_SERVER_NAME", "VAULT_TLS_SERVER_NAME"];
pub const ENV_VAULT_SKIP_VERIFY: [&str; 2] = ["BAO_SKIP_VERIFY", "VAULT_SKIP_VERIFY"];
pub const ENV_VAULT_MAX_RETRIES: [&str; 2] = ["BAO_MAX_RETRIES", "VAULT_MAX_RETRIES"];
pub const ENV_VAULT_CLIENT_TIMEOUT: [&str; 2] = ["BAO_CLIENT_TIMEOUT", "VAULT_CLIENT_TIMEOUT"];
/// The CLI's token file, read when no token is given (`$HOME/.vault-token`;
/// OpenBao's CLI keeps the name).
pub const VAULT_TOKEN_FILE: &str = ".vault-token";
pub const DEFAULT_CERT_MOUNT: &str = "cert";
pub const DEFAULT_KV_MOUNT: &str = "secret";
pub const DEFAULT_APPROLE_MOUNT: &str = "approle";
pub const DEFAULT_SOCKET: &str = "/run/unbaked/broker.sock";
pub const DEFAULT_POLICIES: &str = "/etc/unbaked/policies";
/// The file store's key file, when neither a flag nor the config file names one.
pub const ENV_STORE_KEY_FILE: &str = "UNBAKED_STORE_KEY_FILE";
/// Set by systemd for a unit with `LoadCredential*=`.
pub const ENV_CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";
/// The store key's credential name in `$CREDENTIALS_DIRECTORY`.
pub const STORE_KEY_CREDENTIAL: &str = "unbaked-store-key";
pub const DEFAULT_STORE_DIR: &str = crate::store::file::DEFAULT_DIR;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Memory,
    /// The sealed persistent store in `store_dir`.
    File,
    Vault,
    /// Crypt's OpenPGP-encrypted values in etcd (`[crypt]`).
    Crypt,
}

impl FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "memory" => Ok(StoreKind::Memory),
            "file" => Ok(StoreKind::File),
            "vault" => Ok(StoreKind::Vault),
            "crypt" => Ok(StoreKind::Crypt),
            other => Err(format!(
                "unknown store {other:?}: use memory, file, vault or crypt"
            )),
        }
    }
}

/// What the command line said; `None` means "not given".
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    pub config: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub policies: Option<PathBuf>,
    pub store: Option<StoreKind>,
    pub audit: Option<PathBuf>,
    pub dev: bool,
    pub admin_addr: Option<std::net::SocketAddr>,
    pub socket_mode: Option<String>,
    pub socket_group: Option<String>,
    pub store_dir: Option<PathBuf>,
    pub store_key_file: Option<PathBuf>,
    /// `--vault-max-stale`, over `[vault] max_stale`.
    pub vault_max_stale: Option<String>,
    /// `--workers`, over `[broker] workers`.
    pub workers: Option<usize>,
}

/// The `--config FILE` format.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub broker: BrokerSection,
    pub vault: Option<VaultSection>,
    pub crypt: Option<CryptSection>,
    pub kubernetes: Option<KubernetesConfig>,
}

/// `[crypt]`: used with `store = "crypt"`. Each field is checked as it is
/// read, so a bad one is reported with its file, line and column.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptSection {
    /// etcd's client URLs.
    pub endpoints: Option<Vec<EtcdEndpoint>>,
    /// The armored secret keyring values are decrypted with.
    pub secret_keyring: Option<PathBuf>,
    /// "v3" (the default) or "v2".
    pub api: Option<EtcdApi>,
    /// Put before a grant's `secret` to make the etcd key (default "/").
    pub prefix: Option<String>,
    /// One read's budget, failover included ("1500ms", "3s").
    pub timeout: Option<CryptTimeout>,
}

/// An etcd client URL: `http://` or `https://`, a host, no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdEndpoint(pub String);

impl<'de> Deserialize<'de> for EtcdEndpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let trimmed = text.trim_end_matches('/');
        let rest = trimmed
            .strip_prefix("http://")
            .or_else(|| trimmed.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() && !host.contains('/') && !host.contains('?') => {
                Ok(EtcdEndpoint(trimmed.to_string()))
            }
            _ => Err(serde::de::Error::custom(format!(
                "{text:?} is not an etcd client URL: write e.g. \"http://127.0.0.1:2379\" (http:// or https://, no path)"
            ))),
        }
    }
}

/// A positive duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptTimeout(pub std::time::Duration);

impl<'de> Deserialize<'de> for CryptTimeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        go_duration(&text).map(CryptTimeout).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a positive duration: write e.g. \"1500ms\" or \"3s\""
            ))
        })
    }
}

/// `[kubernetes]`: verify pods' projected service-account tokens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The cluster's service-account issuer (`iss`).
    pub issuer: String,
    /// The audience the projected token must carry.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// The issuer's JWKS, from `kubectl get --raw /openid/v1/jwks`...
    pub jwks_file: Option<PathBuf>,
    /// ...or fetched at start from this URL.
    pub jwks_url: Option<String>,
    /// CA bundle for `jwks_url` (the cluster CA).
    pub jwks_ca_cert: Option<PathBuf>,
}

fn default_audience() -> String {
    "unbaked".into()
}

/// `[vault]`: used with `store = "vault"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSection {
    /// One address, or a list for an HA cluster.
    pub address: Option<OneOrMany>,
    pub kv_mount: Option<String>,
    pub namespace: Option<String>,
    pub ca_cert: Option<PathBuf>,
    /// A directory of PEM CA files (`VAULT_CAPATH`).
    pub ca_path: Option<PathBuf>,
    /// The CLI's meaning of a CA: it replaces the system roots (default:
    /// added to them).
    pub ca_only: Option<bool>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    /// Never in production: no check of the server's certificate.
    pub skip_verify: Option<bool>,
    pub max_retries: Option<u32>,
    /// A duration ("5s") or a number of seconds, as VAULT_CLIENT_TIMEOUT.
    pub client_timeout: Option<String>,
    /// Serve sealed copies younger than this while Vault is unreachable
    /// ("1h"; off when absent). Needs the store directory and key.
    pub max_stale: Option<String>,
    pub auth: Option<VaultAuthSection>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    Token,
    Approle,
    Cert,
}

/// `[vault.auth]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultAuthSection {
    pub method: AuthMethod,
    #[serde(default, deserialize_with = "secret_string")]
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub role_id_file: Option<PathBuf>,
    pub secret_id_file: Option<PathBuf>,
    /// Where the approle or cert auth method is mounted (default
    /// "approle", "cert").
    pub mount: Option<String>,
    /// method = "cert": the role (`auth/cert/certs/NAME`) to log in as;
    /// without it Vault picks any role the certificate matches.
    pub name: Option<String>,
}

/// A string that becomes a [`Secret`] at once, never a plain `String` field.
fn secret_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    let s = String::deserialize(d)?;
    Ok(Some(Secret::new(s.into_bytes())))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    pub socket: Option<PathBuf>,
    pub policies: Option<PathBuf>,
    pub store: Option<StoreKind>,
    pub audit: Option<PathBuf>,
    /// `/healthz`, `/readyz` and `/metrics`; off unless set.
    pub admin_addr: Option<std::net::SocketAddr>,
    /// The socket's mode, octal (`"0666"`: any local process may connect
    /// and attestation decides, as SPIRE's workload API does).
    pub socket_mode: Option<String>,
    /// The socket's group (a name or a gid), for `socket_mode = "0660"`.
    pub socket_group: Option<String>,
    /// `store = "file"`: its directory (default /var/lib/unbaked/store).
    pub store_dir: Option<PathBuf>,
    /// The key the file store is sealed with (`unbaked store init-key`).
    pub store_key_file: Option<PathBuf>,
    /// Versions kept per secret; 0 (the default) keeps every version
    /// until the secret is removed.
    pub store_max_versions: Option<u32>,
    /// Threads serving requests ([`DEFAULT_WORKERS`] unless set).
    pub workers: Option<usize>,
}

/// Who may connect to the broker's socket. The default lets any local
/// process connect: every request is attested and judged by policy, and
/// each caller has its own connection limit, so reaching the socket grants
/// nothing by itself (SPIRE's workload API makes the same choice). A
/// dedicated group (`socket_mode = "0660"`, `socket_group = "unbaked"`)
/// narrows who can even ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketAccess {
    pub mode: u32,
    pub group: Option<String>,
}

impl Default for SocketAccess {
    fn default() -> Self {
        SocketAccess {
            mode: DEFAULT_SOCKET_MODE,
            group: None,
        }
    }
}

pub const DEFAULT_SOCKET_MODE: u32 = 0o666;

/// Threads serving requests by default: one. A request is a few tens of
/// microseconds of CPU between waits; with two or more, each request one
/// client sends at a time wakes a second thread that finds nothing to do
/// (tokio's work stealing), which cost more CPU per fetch than the request
/// itself, and one thread served more fetches per second than two on the
/// 2-core machine of BENCHMARKS.md (as linkerd2-proxy, which also runs on
/// every host, defaults to one). Raise it (`workers`, `--workers`) where
/// one core is not enough.
pub const DEFAULT_WORKERS: usize = 1;
/// More threads than this is a mistake, not a tuning.
const MAX_WORKERS: usize = 256;

fn check_workers(n: usize) -> Result<usize, ConfigError> {
    if (1..=MAX_WORKERS).contains(&n) {
        return Ok(n);
    }
    Err(ConfigError::Invalid {
        field: "workers",
        message: format!("{n} threads: use 1 to {MAX_WORKERS}"),
    })
}

/// `"0660"` (or `"660"`) as a mode: octal, permission bits only.
fn parse_mode(text: &str) -> Result<u32, ConfigError> {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(m) if m <= 0o777 && m & 0o600 == 0o600 => Ok(m),
        _ => Err(ConfigError::Invalid {
            field: "socket_mode",
            message: format!(
                "{text:?} is not an octal mode from 0600 to 0777 that lets the broker use its socket (e.g. \"0660\")"
            ),
        }),
    }
}

/// The validated configuration the broker runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub socket: PathBuf,
    /// `None` only in `--dev` when no policies directory exists.
    pub policies: Option<PathBuf>,
    pub store: StoreKind,
    pub audit: Option<PathBuf>,
    pub dev: bool,
    /// Set exactly when `store` is `Vault`.
    pub vault: Option<VaultConfig>,
    /// Set exactly when `store` is `File`, or `Vault` with `max_stale`
    /// (its copies' directory and key).
    pub file_store: Option<FileStoreConfig>,
    /// Set exactly when `store` is `Crypt`.
    pub crypt: Option<CryptConfig>,
    pub kubernetes: Option<KubernetesConfig>,
    pub admin_addr: Option<std::net::SocketAddr>,
    pub socket_access: SocketAccess,
    /// Threads serving requests (the runtime's workers).
    pub workers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the vault store is not configured: {0}")]
    Vault(String),
    #[error("the file store (or [vault] max_stale) has no key: give --store-key-file FILE, store_key_file in [broker], {ENV_STORE_KEY_FILE}, or a systemd credential named {STORE_KEY_CREDENTIAL} (LoadCredentialEncrypted=); `unbaked store init-key FILE` creates a key")]
    NoStoreKey,
    #[error("{}[crypt] {field}: {message}", .path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Crypt {
        path: Option<PathBuf>,
        field: &'static str,
        message: String,
    },
    #[error("[broker] {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| unbaked_policy::line_column(&text, s.start))
                .unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.into(),
                line,
                column,
                message: e.message().to_string(),
            }
        })
    }
}

impl BrokerConfig {
    /// `env` is the process environment, passed in so tests need not set it.
    pub fn resolve(
        opts: BrokerOptions,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<BrokerConfig, ConfigError> {
        let file = match &opts.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let socket = opts
            .socket
            .or(file.broker.socket)
            .or_else(|| env(ENV_SOCKET).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        let policies = opts.policies.or(file.broker.policies).or_else(|| {
            if opts.dev {
                // The repository's examples, when started from a checkout.
                Some(PathBuf::from("policies")).filter(|p| p.is_dir())
            } else {
                Some(PathBuf::from(DEFAULT_POLICIES))
            }
        });
        let store = opts
            .store
            .or(file.broker.store)
            .unwrap_or(StoreKind::Memory);
        let vault = match store {
            StoreKind::Vault => {
                let mut section = file.vault.unwrap_or_default();
                if let Some(m) = opts.vault_max_stale.clone() {
                    section.max_stale = Some(m);
                }
                Some(resolve_vault(section, &env)?)
            }
            StoreKind::Memory | StoreKind::File | StoreKind::Crypt => None,
        };
        let crypt = match store {
            StoreKind::Crypt => Some(resolve_crypt(
                file.crypt.unwrap_or_default(),
                opts.config.as_deref(),
            )?),
            StoreKind::Memory | StoreKind::File | StoreKind::Vault => None,
        };
        let stale = vault.as_ref().is_some_and(|v| v.max_stale.is_some());
        let versions = match store {
            StoreKind::File => Some(file.broker.store_max_versions.unwrap_or(0)),
            // The Vault store's stale copies: the same directory and key.
            StoreKind::Vault if stale => Some(1),
            StoreKind::Memory | StoreKind::Vault | StoreKind::Crypt => None,
        };
        let file_store = match versions {
            Some(n) => Some(file_store(
                opts.store_dir.or(file.broker.store_dir),
                opts.store_key_file,
                file.broker.store_key_file,
                &env,
                n,
            )?),
            None => None,
        };
        let workers = check_workers(
            opts.workers
                .or(file.broker.workers)
                .unwrap_or(DEFAULT_WORKERS),
        )?;
        let socket_access = SocketAccess {
            mode: match opts.socket_mode.or(file.broker.socket_mode) {
                Some(m) => parse_mode(&m)?,
                None => DEFAULT_SOCKET_MODE,
            },
            group: opts.socket_group.or(file.broker.socket_group),
        };
        Ok(BrokerConfig {
            socket_access,
            socket,
            policies,
            store,
            audit: opts.audit.or(file.broker.audit),
            dev: opts.dev,
            vault,
            file_store,
            crypt,
            kubernetes: file.kubernetes,
            admin_addr: opts.admin_addr.or(file.broker.admin_addr),
            workers,
        })
    }
}

/// The sealed store directory and its key (`--store file`, or the Vault
/// store's stale copies), keeping `max_versions` of each secret.
fn file_store(
    dir: Option<PathBuf>,
    key_flag: Option<PathBuf>,
    key_in_file: Option<PathBuf>,
    env: &impl Fn(&str) -> Option<String>,
    max_versions: u32,
) -> Result<FileStoreConfig, ConfigError> {
    let (key_file, key_from) =
        store_key_file(key_flag, key_in_file, env).ok_or(ConfigError::NoStoreKey)?;
    Ok(FileStoreConfig {
        dir: dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STORE_DIR)),
        key_file,
        key_from,
        max_versions,
    })
}

/// `[crypt]`, once parsed: what is missing is named with the file.
fn resolve_crypt(c: CryptSection, file: Option<&Path>) -> Result<CryptConfig, ConfigError> {
    let missing = |field: &'static str, message: &str| ConfigError::Crypt {
        path: file.map(Path::to_path_buf),
        field,
        message: message.to_string(),
    };
    let endpoints: Vec<String> = c
        .endpoints
        .ok_or_else(|| missing("endpoints", "missing: --store crypt reads etcd; give its client URLs, e.g. endpoints = [\"http://127.0.0.1:2379\"]"))?
        .into_iter()
        .map(|e| e.0)
        .collect();
    if endpoints.is_empty() {
        return Err(missing(
            "endpoints",
            "is empty: give at least one etcd client URL",
        ));
    }
    let secret_keyring = c.secret_keyring.ok_or_else(|| {
        missing("secret_keyring", "missing: the armored OpenPGP secret keyring Crypt's values are decrypted with, e.g. secret_keyring = \"/etc/unbaked/secring.asc\" (mode 0400)")
    })?;
    Ok(CryptConfig {
        endpoints,
        secret_keyring,
        api: c.api.unwrap_or_default(),
        prefix: c.prefix.unwrap_or_else(|| "/".into()),
        timeout: c
            .timeout
            .map(|t| t.0)
            .unwrap_or(crate::store::crypt::BUDGET),
    })
}

/// The store key file and where its name came from: the flag, the config
/// file, `UNBAKED_STORE_KEY_FILE`, then a systemd credential.
fn store_key_file(
    flag: Option<PathBuf>,
    file: Option<PathBuf>,
    env: &impl Fn(&str) -> Option<String>,
) -> Option<(PathBuf, &'static str)> {
    flag.map(|p| (p, "--store-key-file"))
        .or_else(|| file.map(|p| (p, "store_key_file in [broker]")))
        .or_else(|| {
            env(ENV_STORE_KEY_FILE)
                .filter(|v| !v.is_empty())
                .map(|p| (PathBuf::from(p), ENV_STORE_KEY_FILE))
        })
        .or_else(|| {
            env(ENV_CREDENTIALS_DIRECTORY)
                .filter(|v| !v.is_empty())
                .map(|d| {
                    (
                        Path::new(&d).join(STORE_KEY_CREDENTIAL),
                        "the systemd credential unbaked-store-key",
                    )
                })
        })
}

/// `[vault]` over the environment. Messages name variables, never values.
fn resolve_vault(
    mut v: VaultSection,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<VaultConfig, ConfigError> {
    let bad = |m: &str| ConfigError::Vault(m.to_string());
    let first = |names: [&str; 2]| names.iter().find_map(|n| env(n).filter(|v| !v.is_empty()));
    let addresses = vault_addresses(v.address.take(), env)?;
    let auth = vault_credentials(v.auth.take(), env)?;
    let (skip_verify, max_retries, timeout) = vault_client_settings(&v, env)?;
    let path =
        |file: Option<PathBuf>, names: [&str; 2]| file.or_else(|| first(names).map(PathBuf::from));
    let client_cert = match (
        path(v.client_cert, ENV_VAULT_CLIENT_CERT),
        path(v.client_key, ENV_VAULT_CLIENT_KEY),
    ) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => return Err(bad("a client certificate without its key: set VAULT_CLIENT_KEY (or [vault] client_key) too")),
        (None, Some(_)) => return Err(bad("a client key without its certificate: set VAULT_CLIENT_CERT (or [vault] client_cert) too")),
    };
    if matches!(auth, VaultAuth::Cert { .. }) && client_cert.is_none() {
        return Err(bad("[vault.auth] method = \"cert\" needs a client certificate: set client_cert and client_key in [vault] (or VAULT_CLIENT_CERT and VAULT_CLIENT_KEY)"));
    }
    let max_stale = match v.max_stale {
        Some(text) => Some(
            humantime::parse_duration(&text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    bad("[vault] max_stale (--vault-max-stale) is not a positive duration: write e.g. \"1h\" or \"30m\" (leave it out to serve nothing stale)")
                })?,
        ),
        None => None,
    };
    Ok(VaultConfig {
        addresses,
        kv_mount: v.kv_mount.unwrap_or_else(|| DEFAULT_KV_MOUNT.into()),
        namespace: v.namespace.or_else(|| first(ENV_VAULT_NAMESPACE)),
        tls: VaultTls {
            ca_cert: path(v.ca_cert, ENV_VAULT_CACERT),
            ca_path: path(v.ca_path, ENV_VAULT_CAPATH),
            ca_only: v.ca_only.unwrap_or(false),
            client_cert,
            server_name: v
                .tls_server_name
                .or_else(|| first(ENV_VAULT_TLS_SERVER_NAME)),
            skip_verify,
        },
        max_retries,
        timeout,
        auth,
        max_stale,
    })
}

/// Where Vault is: `[vault] address` (one or a list), else `VAULT_ADDR`
/// (comma-separated, as the CLI reads it); each checked.
fn vault_addresses(
    address: Option<OneOrMany>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ConfigError> {
    let addresses: Vec<String> = match address {
        Some(OneOrMany::One(a)) => vec![a],
        Some(OneOrMany::Many(list)) => list,
        None => first_set(env, ENV_VAULT_ADDR)
            .map(|a| a.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default(),
    };
    if addresses.is_empty() {
        return Err(ConfigError::Vault(
            "no address: set VAULT_ADDR (or BAO_ADDR), or address in [vault] of the config file"
                .into(),
        ));
    }
    for a in &addresses {
        crate::store::vault::check_address(a).map_err(|e| ConfigError::Vault(e.to_string()))?;
    }
    Ok(addresses)
}

/// How the broker logs in: `[vault.auth]`, else `VAULT_TOKEN`, else the
/// CLI's token helper file (`~/.vault-token`).
fn vault_credentials(
    auth: Option<VaultAuthSection>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<VaultAuth, ConfigError> {
    if let Some(a) = auth {
        return vault_auth(a);
    }
    let token_file = env("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| Path::new(&h).join(VAULT_TOKEN_FILE))
        .filter(|p| p.is_file());
    match (first_set(env, ENV_VAULT_TOKEN), token_file) {
        (Some(t), _) => Ok(VaultAuth::Token(Secret::new(t.into_bytes()))),
        (None, Some(f)) => Ok(VaultAuth::TokenFile(f)),
        (None, None) => Err(ConfigError::Vault(
            "no credentials: set VAULT_TOKEN (or BAO_TOKEN), write ~/.vault-token, or [vault.auth] with method = \"approle\" (role_id_file, secret_id_file), method = \"cert\" (client_cert, client_key) or method = \"token\" (token_file)".into(),
        )),
    }
}

/// The first of a variable and its OpenBao twin that is set and not empty.
fn first_set(env: &impl Fn(&str) -> Option<String>, names: [&str; 2]) -> Option<String> {
    names.iter().find_map(|n| env(n).filter(|v| !v.is_empty()))
}

/// `VAULT_SKIP_VERIFY`, `VAULT_MAX_RETRIES` and `VAULT_CLIENT_TIMEOUT`,
/// read as the CLI reads them; `[vault]` wins.
fn vault_client_settings(
    v: &VaultSection,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(bool, u32, std::time::Duration), ConfigError> {
    let bad = |m: &str| ConfigError::Vault(m.to_string());
    let first = |names: [&str; 2]| first_set(env, names);
    let skip_verify = match v.skip_verify {
        Some(b) => b,
        None => match first(ENV_VAULT_SKIP_VERIFY) {
            Some(text) => go_bool(&text).ok_or_else(|| {
                bad("VAULT_SKIP_VERIFY (or BAO_SKIP_VERIFY) is not a boolean: write true or false (1, t, T, TRUE, 0, f, F, FALSE, as the CLI reads it)")
            })?,
            None => false,
        },
    };
    let max_retries = match v.max_retries {
        Some(n) => n,
        None => match first(ENV_VAULT_MAX_RETRIES) {
            Some(text) => text.trim().parse().map_err(|_| {
                bad("VAULT_MAX_RETRIES (or BAO_MAX_RETRIES) is not a whole number: write e.g. 2 (0 for none)")
            })?,
            None => 0,
        },
    };
    let timeout = match v
        .client_timeout
        .clone()
        .or_else(|| first(ENV_VAULT_CLIENT_TIMEOUT))
    {
        Some(text) => go_duration(&text).ok_or_else(|| {
            bad("VAULT_CLIENT_TIMEOUT (or BAO_CLIENT_TIMEOUT, [vault] client_timeout) is not a positive duration: write seconds (5) or a duration (\"5s\", \"1m\")")
        })?,
        None => crate::store::vault::BUDGET,
    };
    Ok((skip_verify, max_retries, timeout))
}

/// Go's `strconv.ParseBool`, which the CLI reads VAULT_SKIP_VERIFY with.
fn go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The CLI's VAULT_CLIENT_TIMEOUT: whole seconds, or a duration.
fn go_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let d = match text.parse::<u64>() {
        Ok(secs) => std::time::Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text).ok()?,
    };
    (!d.is_zero()).then_some(d)
}

fn vault_auth(a: VaultAuthSection) -> Result<VaultAuth, ConfigError> {
    let bad = |m: &str| Err(ConfigError::Vault(m.to_string()));
    match a.method {
        AuthMethod::Cert => {
            if a.token.is_some()
                || a.token_file.is_some()
                || a.role_id_file.is_some()
                || a.secret_id_file.is_some()
            {
                return bad("[vault.auth] method = \"cert\" takes mount and name (the client certificate is client_cert / client_key in [vault]), not token, token_file, role_id_file or secret_id_file");
            }
            Ok(VaultAuth::Cert {
                mount: a.mount.unwrap_or_else(|| DEFAULT_CERT_MOUNT.into()),
                name: a.name,
            })
        }
        AuthMethod::Token => {
            if a.role_id_file.is_some()
                || a.secret_id_file.is_some()
                || a.mount.is_some()
                || a.name.is_some()
            {
                return bad("[vault.auth] method = \"token\" takes token or token_file; role_id_file, secret_id_file and mount are for method = \"approle\"");
            }
            match (a.token, a.token_file) {
                (Some(t), None) => Ok(VaultAuth::Token(t)),
                (None, Some(f)) => Ok(VaultAuth::TokenFile(f)),
                _ => bad("[vault.auth] method = \"token\" needs exactly one of token and token_file (prefer token_file: a file only the broker may read)"),
            }
        }
        AuthMethod::Approle => {
            if a.token.is_some() || a.token_file.is_some() || a.name.is_some() {
                return bad("[vault.auth] method = \"approle\" takes role_id_file and secret_id_file, not token or token_file");
            }
            match (a.role_id_file, a.secret_id_file) {
                (Some(role_id_file), Some(secret_id_file)) => Ok(VaultAuth::AppRole {
                    mount: a.mount.unwrap_or_else(|| DEFAULT_APPROLE_MOUNT.into()),
                    role_id_file,
                    secret_id_file,
                }),
                _ => bad("[vault.auth] method = \"approle\" needs role_id_file and secret_id_file"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_default_to_one_and_the_flag_beats_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(&file, "[broker]\nworkers = 4\n").unwrap();
        let none = |_: &str| None;
        let c = BrokerConfig::resolve(BrokerOptions::default(), none).unwrap();
        assert_eq!(c.workers, 1);
        let opts = BrokerOptions {
            config: Some(file.clone()),
            ..Default::default()
        };
        assert_eq!(
            BrokerConfig::resolve(opts.clone(), none).unwrap().workers,
            4
        );
        let flag = BrokerOptions {
            workers: Some(2),
            ..opts.clone()
        };
        assert_eq!(BrokerConfig::resolve(flag, none).unwrap().workers, 2);
        for bad in [0, 257] {
            let e = BrokerConfig::resolve(
                BrokerOptions {
                    workers: Some(bad),
                    ..opts.clone()
                },
                none,
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("[broker] workers") && e.contains("1 to 256"),
                "{e}"
            );
        }
    }

    #[test]
    fn flags_override_file_which_overrides_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(
            &file,
            "[broker]\nsocket = \"/file.sock\"\naudit = \"/a.log\"\n",
        )
        .unwrap();
        let env = |k: &str| (k == ENV_SOCKET).then(|| "/env.sock".to_string());
        let opts = BrokerOptions {
            config: Some(file.clone()),
            ..Default::default()
        };
        let c = BrokerConfig::resolve(opts.clone(), env).unwrap();
        assert_eq!(c.socket, PathBuf::from("/file.sock"));
        assert_eq!(c.audit, Some(PathBuf::from("/a.log")));
        let c = BrokerConfig::resolve(
            BrokerOptions {
                socket: Some("/flag.sock".into()),
                ..opts
            },
            env,
        )
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/flag.sock"));
        let c = BrokerConfig::resolve(BrokerOptions::default(), env).unwrap();
        assert_eq!(c.socket, PathBuf::from("/env.sock"));
        assert_eq!(c.store, StoreKind::Memory);
    }

    #[test]
    fn the_clis_tls_and_client_variables_with_their_bao_twins() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".vault-token"), "s.file\n").unwrap();
        let home_text = home.path().display().to_string();
        let vars = [
            ("VAULT_ADDR", "https://v:8200"),
            ("HOME", home_text.as_str()),
            ("VAULT_CAPATH", "/etc/vault-cas"),
            ("BAO_CAPATH", "/etc/bao-cas"),
            ("VAULT_CLIENT_CERT", "/c.pem"),
            ("VAULT_CLIENT_KEY", "/k.pem"),
            ("VAULT_TLS_SERVER_NAME", "vault.internal"),
            ("VAULT_SKIP_VERIFY", "T"),
            ("VAULT_MAX_RETRIES", "3"),
            ("VAULT_CLIENT_TIMEOUT", "5"),
        ];
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let opts = BrokerOptions {
            store: Some(StoreKind::Vault),
            ..Default::default()
        };
        let v = BrokerConfig::resolve(opts.clone(), env)
            .unwrap()
            .vault
            .unwrap();
        assert_eq!(
            v.tls.ca_path,
            Some(PathBuf::from("/etc/bao-cas")),
            "BAO_ wins"
        );
        assert_eq!(
            v.tls.client_cert,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
        );
        assert_eq!(v.tls.server_name.as_deref(), Some("vault.internal"));
        assert!(v.tls.skip_verify && !v.tls.ca_only);
        assert_eq!(v.max_retries, 3);
        assert_eq!(v.timeout, std::time::Duration::from_secs(5));
        // No VAULT_TOKEN: the CLI's token file, re-read when refused.
        assert_eq!(
            v.auth,
            VaultAuth::TokenFile(home.path().join(".vault-token"))
        );
        assert_eq!(
            go_duration("1m30s"),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(go_duration("0"), None);
        assert_eq!(go_bool("yes"), None);
        // Without a token anywhere, the error says where one may come from.
        let bare = |k: &str| (k == "VAULT_ADDR").then(|| "https://v:8200".to_string());
        let e = BrokerConfig::resolve(opts, bare).unwrap_err().to_string();
        assert!(e.contains("~/.vault-token") && e.contains("cert"), "{e}");
    }

    #[test]
    fn vault_from_the_environment_and_from_the_file() {
        let vars = [
            ("VAULT_ADDR", "http://v:8200"),
            ("BAO_ADDR", "http://a:8200, http://b:8200"),
            ("VAULT_TOKEN", "s.env-token"),
            ("VAULT_NAMESPACE", "team"),
        ];
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let opts = BrokerOptions {
            store: Some(StoreKind::Vault),
            ..Default::default()
        };
        let c = BrokerConfig::resolve(opts.clone(), env).unwrap();
        let v = c.vault.unwrap();
        assert_eq!(v.addresses, ["http://a:8200", "http://b:8200"], "BAO_ wins");
        assert_eq!(v.kv_mount, "secret");
        assert_eq!(v.namespace.as_deref(), Some("team"));
        assert_eq!(v.auth, VaultAuth::Token(Secret::from_slice(b"s.env-token")));
        assert!(!format!("{:?}", v.auth).contains("env-token"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(
            &file,
            "[broker]\nstore = \"vault\"\n[vault]\naddress = [\"https://n1:8200\", \"https://n2:8200\"]\nkv_mount = \"kv\"\n[vault.auth]\nmethod = \"approle\"\nrole_id_file = \"/r\"\nsecret_id_file = \"/s\"\n",
        )
        .unwrap();
        let c = BrokerConfig::resolve(
            BrokerOptions {
                config: Some(file.clone()),
                ..Default::default()
            },
            env,
        )
        .unwrap();
        let v = c.vault.unwrap();
        assert_eq!(v.addresses, ["https://n1:8200", "https://n2:8200"]);
        assert_eq!(v.kv_mount, "kv");
        assert_eq!(
            v.auth,
            VaultAuth::AppRole {
                mount: "approle".into(),
                role_id_file: "/r".into(),
                secret_id_file: "/s".into()
            }
        );

        // Nothing to log in with, a bad address, mixed methods: each refused.
        let none = |_: &str| None;
        let e = BrokerConfig::resolve(opts.clone(), none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("VAULT_ADDR"), "{e}");
        let addr_only = |k: &str| (k == "VAULT_ADDR").then(|| "http://v:8200".to_string());
        let e = BrokerConfig::resolve(opts.clone(), addr_only)
            .unwrap_err()
            .to_string();
        assert!(e.contains("VAULT_TOKEN"), "{e}");
        let bad_addr = |k: &str| (k == "VAULT_ADDR").then(|| "v:8200".to_string());
        assert!(BrokerConfig::resolve(opts, bad_addr).is_err());
        std::fs::write(
            &file,
            "[vault.auth]\nmethod = \"token\"\ntoken = \"s.file-token\"\nrole_id_file = \"/r\"\n",
        )
        .unwrap();
        let e = BrokerConfig::resolve(
            BrokerOptions {
                config: Some(file),
                store: Some(StoreKind::Vault),
                ..Default::default()
            },
            env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("role_id_file") && !e.contains("file-token"),
            "{e}"
        );
        // The memory store does not need any of it.
        assert!(BrokerConfig::resolve(BrokerOptions::default(), none)
            .unwrap()
            .vault
            .is_none());
    }

    #[test]
    fn the_file_store_key_from_flag_file_env_or_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(
            &file,
            "[broker]\nstore = \"file\"\nstore_dir = \"/d\"\nstore_key_file = \"/from-file\"\nstore_max_versions = 5\n",
        )
        .unwrap();
        let vars = [
            (ENV_STORE_KEY_FILE, "/from-env"),
            (ENV_CREDENTIALS_DIRECTORY, "/run/credentials/u"),
        ];
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let with_file = BrokerOptions {
            config: Some(file.clone()),
            ..Default::default()
        };
        let f = BrokerConfig::resolve(with_file.clone(), env)
            .unwrap()
            .file_store
            .unwrap();
        assert_eq!(
            (f.dir, f.key_file, f.max_versions),
            ("/d".into(), "/from-file".into(), 5)
        );
        let f = BrokerConfig::resolve(
            BrokerOptions {
                store_key_file: Some("/flag".into()),
                store_dir: Some("/flag-dir".into()),
                ..with_file
            },
            env,
        )
        .unwrap()
        .file_store
        .unwrap();
        assert_eq!((f.dir, f.key_file), ("/flag-dir".into(), "/flag".into()));
        let file_store = BrokerOptions {
            store: Some(StoreKind::File),
            ..Default::default()
        };
        let f = BrokerConfig::resolve(file_store.clone(), env)
            .unwrap()
            .file_store
            .unwrap();
        assert_eq!(
            (f.dir, f.key_file),
            (DEFAULT_STORE_DIR.into(), "/from-env".into())
        );
        let creds = |k: &str| (k == ENV_CREDENTIALS_DIRECTORY).then(|| "/run/c".to_string());
        let f = BrokerConfig::resolve(file_store.clone(), creds)
            .unwrap()
            .file_store
            .unwrap();
        assert_eq!(f.key_file, PathBuf::from("/run/c/unbaked-store-key"));
        let e = BrokerConfig::resolve(file_store, |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("init-key") && e.contains(ENV_STORE_KEY_FILE),
            "{e}"
        );
    }

    #[test]
    fn max_stale_needs_the_store_key_and_a_flag_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(
            &file,
            "[broker]\nstore = \"vault\"\nstore_dir = \"/d\"\n\n[vault]\naddress = \"http://127.0.0.1:8200\"\nmax_stale = \"1h\"\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "VAULT_TOKEN" => Some("t".to_string()),
            ENV_STORE_KEY_FILE => Some("/k".to_string()),
            _ => None,
        };
        let opts = BrokerOptions {
            config: Some(file.clone()),
            ..Default::default()
        };
        let c = BrokerConfig::resolve(opts.clone(), env).unwrap();
        assert_eq!(
            c.vault.unwrap().max_stale,
            Some(std::time::Duration::from_secs(3600))
        );
        let f = c.file_store.unwrap();
        assert_eq!((f.dir, f.key_file), ("/d".into(), "/k".into()));
        let c = BrokerConfig::resolve(
            BrokerOptions {
                vault_max_stale: Some("10m".into()),
                ..opts.clone()
            },
            env,
        )
        .unwrap();
        assert_eq!(
            c.vault.unwrap().max_stale,
            Some(std::time::Duration::from_secs(600))
        );
        let no_key = |k: &str| (k == "VAULT_TOKEN").then(|| "t".to_string());
        let e = BrokerConfig::resolve(opts.clone(), no_key).unwrap_err();
        assert!(e.to_string().contains("max_stale"), "{e}");
        let e = BrokerConfig::resolve(
            BrokerOptions {
                vault_max_stale: Some("soon".into()),
                ..opts
            },
            env,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--vault-max-stale"), "{e}");
        // Without max_stale the Vault store needs no key.
        std::fs::write(
            &file,
            "[broker]\nstore = \"vault\"\n\n[vault]\naddress = \"http://127.0.0.1:8200\"\n",
        )
        .unwrap();
        let c = BrokerConfig::resolve(
            BrokerOptions {
                config: Some(file),
                ..Default::default()
            },
            no_key,
        )
        .unwrap();
        assert!(c.file_store.is_none());
    }

    #[test]
    fn crypt_from_the_file_with_each_bad_field_named_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            BrokerConfig::resolve(
                BrokerOptions {
                    config: Some(file.clone()),
                    ..Default::default()
                },
                |_| None,
            )
        };
        let c = load("[broker]\nstore = \"crypt\"\n[crypt]\nendpoints = [\"http://127.0.0.1:2379/\", \"https://etcd-2:2379\"]\nsecret_keyring = \"/etc/unbaked/secring.asc\"\n")
            .unwrap();
        assert_eq!(c.store, StoreKind::Crypt);
        let crypt = c.crypt.unwrap();
        assert_eq!(
            crypt.endpoints,
            ["http://127.0.0.1:2379", "https://etcd-2:2379"]
        );
        assert_eq!(crypt.api, EtcdApi::V3, "v3 unless told");
        assert_eq!(crypt.prefix, "/");
        assert_eq!(crypt.timeout, crate::store::crypt::BUDGET);
        let c = load("[broker]\nstore = \"crypt\"\n[crypt]\nendpoints = [\"http://e:2379\"]\nsecret_keyring = \"/k\"\napi = \"v2\"\nprefix = \"\"\ntimeout = \"3s\"\n")
            .unwrap()
            .crypt
            .unwrap();
        assert_eq!(
            (c.api, c.prefix.as_str(), c.timeout),
            (EtcdApi::V2, "", std::time::Duration::from_secs(3))
        );

        let bad = [
            (
                "endpoints = [\"127.0.0.1:2379\"]\n",
                ":4:",
                "not an etcd client URL",
            ),
            ("endpoints = [\"http://e\"]\napi = \"v4\"\n", ":5:", "v4"),
            (
                "endpoints = [\"http://e\"]\ntimeout = \"soon\"\n",
                ":5:",
                "positive duration",
            ),
            (
                "endpoints = [\"http://e\"]\nsecret_keyrings = \"/k\"\n",
                ":5:",
                "secret_keyrings",
            ),
        ];
        for (body, line, what) in bad {
            let e = load(&format!("[broker]\nstore = \"crypt\"\n[crypt]\n{body}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("broker.toml{line}")) && e.contains(what),
                "{e}"
            );
        }
        let e = load("[broker]\nstore = \"crypt\"\n[crypt]\nendpoints = [\"http://e:2379\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("broker.toml: [crypt] secret_keyring: missing"),
            "{e}"
        );
        let e = load("[broker]\nstore = \"crypt\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[crypt] endpoints: missing"), "{e}");
        assert_eq!("crypt".parse::<StoreKind>(), Ok(StoreKind::Crypt));
    }

    #[test]
    fn a_bad_config_file_names_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(&file, "[broker]\nsocket = \"/s\"\nsockett = 1\n").unwrap();
        let err = FileConfig::load(&file).unwrap_err().to_string();
        assert!(err.contains("broker.toml:3:1"), "{err}");
        assert!(err.contains("sockett"), "{err}");
    }
}
