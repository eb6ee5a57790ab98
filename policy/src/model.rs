//! Validated policy types. A value of these types only comes out of the
//! parser after every check passed (or is built by hand, e.g. `--dev`), so
//! the broker never re-validates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use unbaked_api::wire::{ChangeAction, Delivery, DeliveryKind, OnChange};
pub use unbaked_template::format::Format;

/// How long a delivered copy lives unless renewed, when `ttl` is absent.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10 * 60);
/// File mode when `mode` is absent: the owner may read, nobody else.
pub const DEFAULT_MODE: u32 = 0o400;

/// Every loaded policy, by workload name.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: BTreeMap<String, Policy>,
}

impl PolicySet {
    pub fn get(&self, workload: &str) -> Option<&Policy> {
        self.policies.get(workload)
    }

    /// Sorted by workload.
    pub fn iter(&self) -> impl Iterator<Item = &Policy> + '_ {
        self.policies.values()
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Adds or replaces the policy of `policy.workload`, returning the old one.
    pub fn insert(&mut self, policy: Policy) -> Option<Policy> {
        self.policies.insert(policy.workload.clone(), policy)
    }
}

/// One workload: who it is, who may start it, how it must be isolated, and
/// what it receives.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub workload: String,
    /// The file it came from, for messages.
    pub source: PathBuf,
    /// The `[match]` table.
    pub matcher: Match,
    pub launch: Launch,
    pub isolation: Isolation,
    /// `[[grant]]` tables in file order.
    pub grants: Vec<Grant>,
    /// `[[template]]` tables in file order.
    pub templates: Vec<Template>,
}

/// Who may claim the workload: every non-empty selector must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Match {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub docker_labels: BTreeMap<String, String>,
    /// A full image id, `sha256:` and 64 lowercase hex digits.
    pub image: Option<String>,
    /// Pods, by the service account (`namespace/name`) their projected
    /// token proves.
    pub k8s_service_accounts: Vec<String>,
    /// Pods, by the namespace their projected token proves.
    pub k8s_namespaces: Vec<String>,
}

impl Match {
    /// Whether any selector is set; a matcher without one matches nobody.
    pub fn has_selector(&self) -> bool {
        !self.uids.is_empty()
            || !self.gids.is_empty()
            || !self.docker_labels.is_empty()
            || self.image.is_some()
            || !self.k8s_service_accounts.is_empty()
            || !self.k8s_namespaces.is_empty()
    }
}

/// Who may start the workload with `unbaked run`; empty lets nobody.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Launch {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

/// What the live container must look like before anything is released.
/// Each `bool` except `read_only_rootfs` and `user_namespace` *allows* a
/// weakening; those two *require* a strength.
#[derive(Debug, Clone, PartialEq)]
pub struct Isolation {
    pub inter_container_traffic: bool,
    pub privileged: bool,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub docker_socket: bool,
    pub read_only_rootfs: bool,
    /// Root in the container must not be the host's root: the engine remaps
    /// users (`userns-remap`, or rootless) and the container does not opt
    /// out (`--userns host`). Off by default (most engines do not remap).
    pub user_namespace: bool,
    /// Capability names without `CAP_`, e.g. `NET_BIND_SERVICE`.
    pub cap_add: Vec<String>,
}

impl Default for Isolation {
    /// The safe defaults: nothing weakened, root filesystem read-only.
    fn default() -> Self {
        Isolation {
            inter_container_traffic: false,
            privileged: false,
            host_network: false,
            host_pid: false,
            host_ipc: false,
            docker_socket: false,
            read_only_rootfs: true,
            user_namespace: false,
            cap_add: Vec::new(),
        }
    }
}

/// One secret value delivered to the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// Store path, e.g. `app/db`; for a dynamic grant the Vault path it
    /// issues from, e.g. `pki/issue/web` or `database/creds/billing`.
    pub secret: String,
    /// The key inside the secret; for a dynamic grant the `field` of the
    /// issued credential, or empty when a directory receives every field.
    pub key: String,
    /// `None` for a stored (KV) secret; set for `pki` and `dynamic` grants,
    /// whose credential is issued per lease and revoked when it ends.
    pub dynamic: Option<Dynamic>,
    pub delivery: GrantDelivery,
    pub ttl: Duration,
    /// File mode; always [`DEFAULT_MODE`] for env and fd grants.
    pub mode: u32,
    /// File owner; always `None` for env and fd grants.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `None`: a change is delivered and nothing else happens.
    pub on_change: Option<OnChange>,
    pub debounce: Duration,
}

impl Grant {
    /// Stable id within the workload: `file:db_password`, `env:API_TOKEN`,
    /// `fd:TOKEN_FILE`. Unique because targets are unique per workload.
    pub fn id(&self) -> String {
        self.delivery.id()
    }

    /// The wire delivery for this grant.
    pub fn wire_delivery(&self) -> Delivery {
        self.delivery.wire(self.mode, self.uid, self.gid)
    }

    /// The wire form of `on_change`, if any (keyed by [`Grant::id`]; a
    /// directory grant's covers every file under it).
    pub fn action(&self) -> Option<ChangeAction> {
        change_action(self.on_change.as_ref(), self.debounce)
    }
}

fn change_action(on_change: Option<&OnChange>, debounce: Duration) -> Option<ChangeAction> {
    on_change.map(|on_change| ChangeAction {
        on_change: on_change.clone(),
        debounce_ms: u64::try_from(debounce.as_millis()).unwrap_or(u64::MAX),
    })
}

/// How a dynamic grant's credential is issued. Each lease gets its own
/// credential, revoked in Vault when the lease ends; grants of one workload
/// naming the same issue share one credential per lease.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dynamic {
    /// `pki = "MOUNT/issue/ROLE"`: a fresh certificate per lease.
    Pki(PkiIssue),
    /// `dynamic = "PATH"`: a read of PATH answered with a Vault lease, e.g.
    /// `database/creds/ROLE` (fields `username`, `password`).
    Leased,
}

/// The parameters of a PKI issue request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PkiIssue {
    pub mount: String,
    pub role: String,
    pub common_name: String,
    pub alt_names: Vec<String>,
    pub ip_sans: Vec<String>,
}

/// The fields of a PKI certificate and the files a directory grant writes.
pub const PKI_FIELDS: [(&str, &str); 3] = [
    ("certificate", "cert.pem"),
    ("private_key", "key.pem"),
    ("issuing_ca", "ca.pem"),
];

impl Grant {
    /// A directory grant: a dynamic `file` grant without `field`, which
    /// receives one file per field of the credential.
    pub fn is_directory(&self) -> bool {
        self.dynamic.is_some()
            && self.key.is_empty()
            && matches!(self.delivery, GrantDelivery::File(_))
    }
}

/// Where a grant goes: a file relative to the secrets directory, an
/// environment variable, or a variable holding a sealed memfd's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantDelivery {
    File(String),
    Env(String),
    Fd(String),
}

impl GrantDelivery {
    /// Stable id within the workload (`file:db_password`, `env:API_TOKEN`):
    /// unique because targets are unique among grants and templates.
    pub fn id(&self) -> String {
        format!("{}:{}", self.kind(), self.target())
    }

    /// The wire delivery; `mode` and the owner apply to files only.
    pub fn wire(&self, mode: u32, uid: Option<u32>, gid: Option<u32>) -> Delivery {
        match self {
            GrantDelivery::File(path) => Delivery::File {
                path: path.clone(),
                mode,
                uid,
                gid,
            },
            GrantDelivery::Env(name) => Delivery::Env { name: name.clone() },
            GrantDelivery::Fd(name) => Delivery::Fd { name: name.clone() },
        }
    }

    pub fn kind(&self) -> DeliveryKind {
        match self {
            GrantDelivery::File(_) => DeliveryKind::File,
            GrantDelivery::Env(_) => DeliveryKind::Env,
            GrantDelivery::Fd(_) => DeliveryKind::Fd,
        }
    }

    /// The file path or variable name.
    pub fn target(&self) -> &str {
        match self {
            GrantDelivery::File(t) | GrantDelivery::Env(t) | GrantDelivery::Fd(t) => t,
        }
    }
}

/// How long changes are coalesced before an `on_change` runs
/// when `debounce` is absent: Vault Agent's exec mode settled on 2 s.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(2);

/// A `[[template]]`: one file or variable rendered from several secrets.
/// Every secret it reads is named in the policy ([`Template::sources`]),
/// so the workload is granted exactly those.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub delivery: GrantDelivery,
    pub body: TemplateBody,
    pub ttl: Duration,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `None`: a change is delivered and nothing else happens.
    pub on_change: Option<OnChange>,
    pub debounce: Duration,
}

/// What a template renders.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateBody {
    /// consul-template / Vault Agent syntax (`format = "text"`).
    Text(TextTemplate),
    /// `.env`, JSON or YAML of named values, sorted by name.
    Values {
        format: Format,
        values: Vec<TemplateValue>,
    },
}

/// A text template, parsed once when the policy loads.
#[derive(Debug, Clone)]
pub struct TextTemplate {
    pub contents: String,
    pub parsed: Arc<unbaked_template::Template>,
}

impl PartialEq for TextTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.contents == other.contents
    }
}

/// `NAME = "PATH#KEY"` in a template's `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateValue {
    pub name: String,
    pub secret: String,
    pub key: String,
}

/// One secret a template reads: what is authorized, fetched and reviewed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TemplateSource {
    /// A stored secret: one key, or every key (`key` empty) for a text
    /// template's `secret "MOUNT/data/PATH"`.
    Kv { secret: String, key: String },
    /// A certificate issued for the lease.
    Pki { path: String, issue: PkiIssue },
}

impl TemplateSource {
    /// `app/db#password`, `app/db` (every key), `pki/issue/web (cn=..)`.
    pub fn describe(&self) -> String {
        match self {
            TemplateSource::Kv { secret, key } if key.is_empty() => secret.clone(),
            TemplateSource::Kv { secret, key } => format!("{secret}#{key}"),
            TemplateSource::Pki { path, issue } => {
                format!("{path} (common_name {})", issue.common_name)
            }
        }
    }
}

impl Template {
    /// `file:app.env`, like a grant's id; unique among grants and templates.
    pub fn id(&self) -> String {
        self.delivery.id()
    }

    pub fn wire_delivery(&self) -> Delivery {
        self.delivery.wire(self.mode, self.uid, self.gid)
    }

    /// Every secret it reads, sorted, without duplicates.
    pub fn sources(&self) -> Vec<TemplateSource> {
        let mut out: Vec<TemplateSource> = match &self.body {
            TemplateBody::Values { values, .. } => values
                .iter()
                .map(|v| TemplateSource::Kv {
                    secret: v.secret.clone(),
                    key: v.key.clone(),
                })
                .collect(),
            TemplateBody::Text(t) => t
                .parsed
                .references()
                .iter()
                .map(Template::source_of)
                .collect(),
        };
        out.sort();
        out.dedup();
        out
    }

    /// What a text template's `secret` / `pkiCert` call reads. The KV
    /// mount in `MOUNT/data/PATH` is the broker's (`[vault] kv_mount`);
    /// the store path is PATH.
    pub fn source_of(r: &unbaked_template::Reference) -> TemplateSource {
        match &r.kind {
            unbaked_template::ReferenceKind::Kv { path, .. } => TemplateSource::Kv {
                secret: path.clone(),
                key: String::new(),
            },
            unbaked_template::ReferenceKind::Pki {
                mount,
                role,
                common_name,
                alt_names,
                ip_sans,
            } => TemplateSource::Pki {
                path: r.path().to_string(),
                issue: PkiIssue {
                    mount: mount.clone(),
                    role: role.clone(),
                    common_name: common_name.clone(),
                    alt_names: alt_names.clone(),
                    ip_sans: ip_sans.clone(),
                },
            },
        }
    }

    /// The wire form of `on_change`, if any.
    pub fn action(&self) -> Option<ChangeAction> {
        change_action(self.on_change.as_ref(), self.debounce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_defaults_are_safe() {
        let i = Isolation::default();
        assert!(!i.inter_container_traffic && !i.privileged && !i.host_network);
        assert!(!i.host_pid && !i.host_ipc && !i.docker_socket);
        assert!(i.read_only_rootfs);
        assert!(i.cap_add.is_empty());
    }

    #[test]
    fn grant_id_and_wire_delivery() {
        let mut g = Grant {
            secret: "app/db".into(),
            key: "password".into(),
            dynamic: None,
            delivery: GrantDelivery::File("db_password".into()),
            ttl: DEFAULT_TTL,
            mode: 0o440,
            uid: Some(1000),
            gid: None,
            on_change: None,
            debounce: DEFAULT_DEBOUNCE,
        };
        assert_eq!(g.id(), "file:db_password");
        assert_eq!(g.action(), None);
        assert_eq!(
            g.wire_delivery(),
            Delivery::File {
                path: "db_password".into(),
                mode: 0o440,
                uid: Some(1000),
                gid: None
            }
        );
        g.delivery = GrantDelivery::Fd("TOKEN_FILE".into());
        assert_eq!(g.id(), "fd:TOKEN_FILE");
        assert_eq!(
            g.wire_delivery(),
            Delivery::Fd {
                name: "TOKEN_FILE".into()
            }
        );
        assert_eq!(g.wire_delivery().kind(), g.delivery.kind());
        g.delivery = GrantDelivery::Env("API_TOKEN".into());
        assert_eq!(g.id(), "env:API_TOKEN");
        assert_eq!(g.delivery.target(), "API_TOKEN");
    }

    #[test]
    fn set_is_sorted_and_insert_replaces() {
        let p = |w: &str| Policy {
            workload: w.into(),
            source: PathBuf::new(),
            matcher: Match::default(),
            launch: Launch::default(),
            isolation: Isolation::default(),
            grants: vec![],
            templates: vec![],
        };
        let mut set = PolicySet::default();
        assert!(set.is_empty());
        assert!(set.insert(p("b")).is_none());
        assert!(set.insert(p("a")).is_none());
        assert!(set.insert(p("b")).is_some());
        let names: Vec<_> = set.iter().map(|p| p.workload.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(set.len(), 2);
        assert!(set.get("a").is_some() && set.get("c").is_none());
    }
}
