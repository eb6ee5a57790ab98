//! The broker's HTTP/1.1 + JSON API over its unix socket.
//!
//! | method | path | body | answer |
//! | --- | --- | --- | --- |
//! | POST | [`FETCH`] | [`FetchRequest`] | 200 [`Lease`] |
//! | POST | [`RENEW`] | [`RenewRequest`] | 200 [`Lease`] (re-evaluated) |
//! | POST | [`REVOKE`] | [`RevokeRequest`] | 204 |
//! | PUT | [`ADMIN_SECRETS`]`/{path}` | [`PutSecret`] | 200 [`SecretMeta`] |
//! | GET | [`ADMIN_SECRETS`]`/{path}` | | 200 [`SecretData`] |
//! | DELETE | [`ADMIN_SECRETS`]`/{path}` | | 204 |
//! | GET | [`ADMIN_LIST`]`?prefix=P` | | 200 [`SecretList`] |
//! | GET | [`HEALTH`] | | 200 [`Health`] |
//! | POST | [`LAUNCH`] | [`LaunchRequest`] | 200 [`LaunchPlan`] |
//! | POST | [`ACTION`] | [`ActionRequest`] | 200 [`ActionDone`] |
//!
//! Every error is a non-2xx status with an [`ApiError`] body.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub const FETCH: &str = "/v1/fetch";
pub const RENEW: &str = "/v1/renew";
pub const REVOKE: &str = "/v1/revoke";
pub const ADMIN_SECRETS: &str = "/v1/admin/secrets";
pub const ADMIN_LIST: &str = "/v1/admin/list";
pub const HEALTH: &str = "/v1/health";
pub const LAUNCH: &str = "/v1/launch";
pub const ACTION: &str = "/v1/action";

/// Largest request body the broker reads.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// How a grant reaches the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    File,
    Env,
    Fd,
}

impl fmt::Display for DeliveryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeliveryKind::File => "file",
            DeliveryKind::Env => "env",
            DeliveryKind::Fd => "fd",
        })
    }
}

/// Ask for the grants of a workload. The broker attests the caller from the
/// socket's peer credentials; nothing in the body is trusted for identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    pub workload: String,
    /// Only grants of these kinds; empty means every kind.
    #[serde(default)]
    pub kinds: Vec<DeliveryKind>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub lease_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub lease_id: String,
}

/// A delivery and its lease. Renewal answers with the grants as the current
/// policy and store have them: an item missing from a renewal was withdrawn.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    pub lease_id: String,
    pub workload: String,
    /// Renew before this many seconds have passed (the shortest item ttl).
    pub ttl_secs: u64,
    pub items: Vec<Item>,
    /// What the client does when an item's content changes, by the id of
    /// the grant or template with `on_change` (a directory grant's id
    /// covers every item under it: `file:tls` for `file:tls/cert.pem`);
    /// absent items do nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<String, ChangeAction>,
}

/// A grant's or template's `on_change`, as the client carries it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeAction {
    pub on_change: OnChange,
    /// Changes closer together than this are coalesced into one action.
    pub debounce_ms: u64,
}

/// What to do when delivered content changes (by content, not version: a
/// renewal that renders identical bytes does nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum OnChange {
    /// Send this signal (a name like `SIGHUP`) to the app; with
    /// `container`, to that container beside a sidecar, through the
    /// broker ([`ACTION`]): the policy names it, never the client.
    Signal {
        signal: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<String>,
    },
    /// Run this command (argv, no shell), not holding any value.
    Command { command: Vec<String> },
    /// Stop the app (SIGTERM, then SIGKILL after a grace) and start it again.
    Restart,
}

/// A lease holder's change action the broker carries out: the signal to
/// the container the policy names for `item` (`signal_container`), never
/// one the request names. The versions and counts are the client's
/// account of the change, audited as such.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    pub lease_id: String,
    /// The grant's or template's id, a key of [`Lease::actions`].
    pub item: String,
    #[serde(default)]
    pub from_version: u64,
    #[serde(default)]
    pub to_version: u64,
    #[serde(default)]
    pub changes: u32,
    #[serde(default)]
    pub attempt: u32,
}

/// What the broker did for an [`ActionRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionDone {
    /// The id of the container signalled.
    pub container: String,
    pub signal: String,
}

/// One delivered secret value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// Stable id of the grant within its workload, e.g. `file:db_password`.
    pub id: String,
    pub secret: String,
    pub key: String,
    pub delivery: Delivery,
    /// The store's version of the secret; a change means rotation.
    pub version: u64,
    /// How long this copy may live unless renewed.
    pub ttl_secs: u64,
    #[serde(with = "crate::secret::base64")]
    pub value: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Delivery {
    /// A file relative to the secrets directory.
    File {
        path: String,
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    /// An environment variable.
    Env { name: String },
    /// A sealed memfd; the variable holds its `/proc/self/fd/N` path.
    Fd { name: String },
}

impl Delivery {
    pub fn kind(&self) -> DeliveryKind {
        match self {
            Delivery::File { .. } => DeliveryKind::File,
            Delivery::Env { .. } => DeliveryKind::Env,
            Delivery::Fd { .. } => DeliveryKind::Fd,
        }
    }
}

/// Admin: write a secret (a new version of every key at PATH).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    #[serde(with = "crate::secret::base64::map")]
    pub data: BTreeMap<String, Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMeta {
    pub path: String,
    pub version: u64,
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretData {
    pub path: String,
    pub version: u64,
    #[serde(with = "crate::secret::base64::map")]
    pub data: BTreeMap<String, Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretList {
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub store: String,
    pub workloads: usize,
    pub leases: usize,
    pub audit_ok: bool,
}

/// `unbaked run`: ask for the plan of one `docker run`. The broker checks
/// the caller against the workload's `[launch]`, refuses arguments that break
/// its `[isolation]`, and answers with the final argument list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    /// `None`: the one workload the caller may launch.
    #[serde(default)]
    pub workload: Option<String>,
    /// The `docker run` arguments as given after `--`: options, image, command.
    pub args: Vec<String>,
    /// Host path of the static `unbaked` binary, bind-mounted read-only into
    /// the container as the exec shim.
    pub shim: String,
    /// Plan only: create no network and no secrets mount.
    #[serde(default)]
    pub dry_run: bool,
    /// A Compose service (`unbaked compose`): its replicas are started by
    /// compose, not claimed through a launch, so the plan carries no launch
    /// label and no host tmpfs; the shim writes the file grants into a
    /// per-container engine tmpfs at `/run/secrets` (`exec --files`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compose: bool,
}

/// The answer to a [`LaunchRequest`]. Holds names and paths, never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchPlan {
    pub workload: String,
    /// Also the container's `io.unbaked.launch` label.
    pub launch_id: String,
    /// The `docker` arguments, starting with `run`.
    pub args: Vec<String>,
    /// Things the caller should know, each prefixed with its rule id.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The ICC-disabled network the container joins, if unbaked chose it.
    #[serde(default)]
    pub network: Option<String>,
    /// The host tmpfs mounted read-only at `/run/secrets`, if the workload has file grants.
    #[serde(default)]
    pub secrets_dir: Option<String>,
}

/// What went wrong, as a machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed (400).
    BadRequest,
    /// The caller is not allowed (policy, isolation, admin rights) (403).
    Denied,
    /// Unknown workload, lease or secret path (404).
    NotFound,
    /// The audit sink failed; nothing is released until it works (503).
    AuditUnavailable,
    /// The secret store could not be reached (503).
    StoreUnavailable,
    /// The broker is at its connection limit; retry after the answer's
    /// `Retry-After` seconds (503).
    Overloaded,
    /// A bug or an unexpected failure (500).
    Internal,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Denied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::AuditUnavailable | ErrorCode::StoreUnavailable | ErrorCode::Overloaded => {
                503
            }
            ErrorCode::Internal => 500,
        }
    }

    /// The `unbaked` exit code a client uses for this error.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::Denied | ErrorCode::AuditUnavailable => crate::exit::DENIED,
            ErrorCode::StoreUnavailable | ErrorCode::Overloaded => crate::exit::UNAVAILABLE,
            _ => crate::exit::FAILURE,
        }
    }
}

/// The body of every error answer. `message` says what was wrong and what to
/// do; it never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// Serialize a value that may hold secrets into a buffer zeroized on drop.
pub fn to_json_zeroizing<T: Serialize>(value: &T) -> zeroize::Zeroizing<Vec<u8>> {
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(512));
    // Writing to a Vec cannot fail, and our types have no fallible Serialize.
    serde_json::to_writer(&mut *buf, value).expect("wire types serialize");
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_round_trip_keeps_value_and_delivery() {
        let lease = Lease {
            lease_id: "l1".into(),
            workload: "w".into(),
            ttl_secs: 60,
            items: vec![Item {
                id: "file:db".into(),
                secret: "app/db".into(),
                key: "password".into(),
                delivery: Delivery::File {
                    path: "db".into(),
                    mode: 0o400,
                    uid: Some(1000),
                    gid: None,
                },
                version: 3,
                ttl_secs: 60,
                value: Secret::from_slice(b"s3cr3t"),
            }],
            actions: BTreeMap::new(),
        };
        let json = to_json_zeroizing(&lease);
        let back: Lease = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.items[0].value.expose_secret(), b"s3cr3t");
        assert_eq!(back.items[0].delivery, lease.items[0].delivery);
        assert_eq!(format!("{back:?}").matches("[redacted]").count(), 1);
        assert!(!format!("{back:?}").contains("s3cr3t"));
    }

    #[test]
    fn overload_is_a_retryable_503_and_exit_unavailable() {
        assert_eq!(ErrorCode::Overloaded.http_status(), 503);
        assert_eq!(ErrorCode::Overloaded.exit_code(), crate::exit::UNAVAILABLE);
        let e: ApiError =
            serde_json::from_str(r#"{"code":"overloaded","message":"busy"}"#).unwrap();
        assert_eq!(e.code, ErrorCode::Overloaded);
    }

    #[test]
    fn unknown_request_fields_are_refused() {
        let err = serde_json::from_str::<FetchRequest>(r#"{"workload":"w","uid":0}"#);
        assert!(err.is_err());
    }
}
