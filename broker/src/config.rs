//! Broker configuration in two stages: what the flags, the file and the
//! environment say ([`BrokerOptions`], [`FileConfig`]), then one validated
//! [`BrokerConfig`]. Flags override the file, which overrides the environment.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub const ENV_SOCKET: &str = "UNBAKED_SOCKET";
pub const DEFAULT_SOCKET: &str = "/run/unbaked/broker.sock";
pub const DEFAULT_POLICIES: &str = "/etc/unbaked/policies";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Memory,
    Vault,
}

impl FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "memory" => Ok(StoreKind::Memory),
            "vault" => Ok(StoreKind::Vault),
            other => Err(format!("unknown store {other:?}: use memory or vault")),
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
}

/// The `--config FILE` format.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub broker: BrokerSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    pub socket: Option<PathBuf>,
    pub policies: Option<PathBuf>,
    pub store: Option<StoreKind>,
    pub audit: Option<PathBuf>,
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
        Ok(BrokerConfig {
            socket,
            policies,
            store: opts
                .store
                .or(file.broker.store)
                .unwrap_or(StoreKind::Memory),
            audit: opts.audit.or(file.broker.audit),
            dev: opts.dev,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_bad_config_file_names_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(&file, "[broker]\nsocket = \"/s\"\nsockett = 1\n").unwrap();
        let err = FileConfig::load(&file).unwrap_err().to_string();
        assert!(err.contains("broker.toml:3:1"), "{err}");
        assert!(err.contains("sockett"), "{err}");
    }
}
