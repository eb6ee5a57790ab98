//! The HTTP client of each Vault node, built here rather than by vaultrs:
//! vaultrs reads some `VAULT_*` variables behind the caller's back (and
//! not others), and cannot present a client certificate on ring or check
//! the server under another name. What the Vault/OpenBao CLI reads from
//! `VAULT_CACERT`, `VAULT_CAPATH`, `VAULT_CLIENT_CERT`/`VAULT_CLIENT_KEY`,
//! `VAULT_TLS_SERVER_NAME` and `VAULT_SKIP_VERIFY` arrives here resolved
//! ([`crate::config`]), and is applied to the reqwest client vaultrs sends
//! through.
//!
//! **Invariant:** errors name files and variables, never key material;
//! the key file's bytes are zeroized once reqwest holds the identity.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vaultrs::api::EndpointMiddleware;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use zeroize::Zeroizing;

/// TLS towards Vault, as the CLI's variables or `[vault]` say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VaultTls {
    /// A PEM bundle of CAs (`VAULT_CACERT`, `ca_cert`).
    pub ca_cert: Option<PathBuf>,
    /// A directory of PEM CA files (`VAULT_CAPATH`, `ca_path`).
    pub ca_path: Option<PathBuf>,
    /// The CLI's meaning: the CAs above replace the system roots. By
    /// default unbaked adds them to the system roots instead.
    pub ca_only: bool,
    /// The client certificate and key, PEM (`VAULT_CLIENT_CERT`,
    /// `VAULT_CLIENT_KEY`): TLS client auth, and the `cert` auth method.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Check the server's certificate for this name, not the address's
    /// host (`VAULT_TLS_SERVER_NAME`).
    pub server_name: Option<String>,
    /// No check of the server's certificate at all (`VAULT_SKIP_VERIFY`).
    pub skip_verify: bool,
}

/// A vaultrs client for `address` with our own HTTP client inside.
pub(crate) fn client(
    address: &str,
    tls: &VaultTls,
    timeout: Duration,
    token: &str,
    namespace: Option<&str>,
) -> Result<VaultClient, String> {
    let mut url: reqwest::Url = address
        .parse()
        .map_err(|e| format!("vault address {address}: {e}"))?;
    let http = reqwest::ClientBuilder::new()
        .tls_backend_rustls()
        .timeout(timeout);
    let http = if url.scheme() == "http" {
        // No TLS: nothing to load (reqwest/rustls would still want roots).
        http.tls_certs_only(Vec::new())
    } else {
        with_tls(http, tls, &mut url, address)?
    };
    let http = http
        .build()
        .map_err(|e| format!("cannot set up the HTTP client for {address}: {e}"))?;
    let base = url.as_str().trim_end_matches('/').to_string();
    let mut settings = VaultClientSettingsBuilder::default();
    settings
        .address(base.as_str())
        .token(token)
        .timeout(Some(timeout))
        .verify(!tls.skip_verify)
        .ca_certs(Vec::new())
        .identity(None);
    if let Some(ns) = namespace {
        settings.set_namespace(ns.to_string());
    }
    let settings = settings
        .build()
        .map_err(|e| format!("vault address {address}: {e}"))?;
    let middle = EndpointMiddleware {
        token: token.to_string(),
        version: format!("v{}", settings.version),
        wrap: None,
        namespace: settings.namespace.clone(),
    };
    Ok(VaultClient {
        http: rustify::clients::reqwest::Client::new(&base, http),
        middle,
        settings,
    })
}

/// An https client: its CAs, client identity, verification and the name
/// the server's certificate is checked for (which may rewrite `url`).
fn with_tls(
    mut http: reqwest::ClientBuilder,
    tls: &VaultTls,
    url: &mut reqwest::Url,
    address: &str,
) -> Result<reqwest::ClientBuilder, String> {
    let mut certs = Vec::new();
    for file in ca_files(tls)? {
        let pem = std::fs::read(&file)
            .map_err(|e| format!("cannot read the CA file {}: {e}", file.display()))?;
        let found = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{} is not a PEM CA bundle: {e}", file.display()))?;
        if found.is_empty() {
            return Err(format!("{} holds no PEM certificate", file.display()));
        }
        certs.extend(found);
    }
    http = if tls.ca_only && !certs.is_empty() {
        http.tls_certs_only(certs)
    } else {
        http.tls_certs_merge(certs)
    };
    if let Some((cert, key)) = &tls.client_cert {
        http = http.identity(identity(cert, key)?);
    }
    if tls.skip_verify {
        http = http.tls_danger_accept_invalid_certs(true);
    }
    if let Some(name) = &tls.server_name {
        // Connect where the address points, check the certificate for
        // `name` (and send it as SNI): the URL names the server, the
        // resolver maps that name to the address's host.
        let port = url.port_or_known_default().unwrap_or(8200);
        let host = url.host_str().unwrap_or_default().to_string();
        let addrs: Vec<SocketAddr> = (host.trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host} (vault address {address}): {e}"))?
            .collect();
        url.set_host(Some(name))
            .map_err(|e| format!("VAULT_TLS_SERVER_NAME {name:?}: {e}"))?;
        http = http.resolve_to_addrs(name, &addrs);
    }
    Ok(http)
}

/// The client certificate and its key as one TLS identity; the key's
/// bytes are zeroized once reqwest holds it.
fn identity(cert: &Path, key: &Path) -> Result<reqwest::Identity, String> {
    let mut pem = Zeroizing::new(
        std::fs::read(cert)
            .map_err(|e| format!("cannot read the client certificate {}: {e}", cert.display()))?,
    );
    pem.push(b'\n');
    let key_pem = Zeroizing::new(
        std::fs::read(key)
            .map_err(|e| format!("cannot read the client key {}: {e}", key.display()))?,
    );
    pem.extend_from_slice(&key_pem);
    reqwest::Identity::from_pem(&pem).map_err(|e| {
        format!(
            "the client certificate {} and key {} do not make a TLS identity: {e}: both PEM, the key unencrypted",
            cert.display(),
            key.display()
        )
    })
}

/// `ca_cert`, then every regular file of `ca_path` in name order (what the
/// CLI loads from `VAULT_CAPATH`).
fn ca_files(tls: &VaultTls) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = tls.ca_cert.iter().cloned().collect();
    if let Some(dir) = &tls.ca_path {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read the CA directory {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        if found.is_empty() {
            return Err(format!("the CA directory {} holds no file", dir.display()));
        }
        files.extend(found);
    }
    Ok(files)
}

/// The warning logged once per start when certificate checks are off.
pub(crate) fn warn_skip_verify(tls: &VaultTls) {
    if tls.skip_verify {
        tracing::warn!(
            "VAULT_SKIP_VERIFY: the vault server's TLS certificate is NOT checked: anyone on the path can read every secret and the broker's token; set VAULT_CACERT instead (metric unbaked_vault_tls_verify_disabled)"
        );
    }
}
