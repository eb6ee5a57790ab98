//! Deciding whether a caller may claim or launch a workload.
//!
//! **Invariant:** no I/O here. The broker attests the caller (peer
//! credentials, docker inspect) and hands the facts in as a [`Caller`].

use crate::model::{Grant, Policy};
use std::collections::BTreeMap;
use unbaked_api::wire::DeliveryKind;

/// What the broker knows about whoever is on the other end of the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// The container the caller runs in, if any.
    pub container: Option<ContainerInfo>,
    /// The pod's service account, from a verified projected token.
    pub service_account: Option<ServiceAccount>,
}

/// A Kubernetes service account, as a verified token names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

/// The live container, as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// `sha256:...`
    pub image_id: String,
}

/// Why a caller was refused. `Display` prints `reason`, a sentence for the
/// person who was refused, saying what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Denial {
    /// Stable id of the rule that refused: `match`, `match.uids`,
    /// `match.gids`, `match.docker_labels`, `match.image`, `launch`,
    /// `launch.uids`, `launch.gids`.
    pub rule: &'static str,
    pub reason: String,
}

fn deny(rule: &'static str, reason: String) -> Result<(), Denial> {
    Err(Denial { rule, reason })
}

impl Policy {
    /// Every `[match]` selector that is set must hold. A docker selector
    /// never holds for a caller outside a container. A policy without
    /// selectors matches nobody (and cannot be loaded from a file).
    pub fn authorize(&self, caller: &Caller) -> Result<(), Denial> {
        let m = &self.matcher;
        let whose = self.whose();
        if !m.has_selector() {
            return deny(
                "match",
                format!("[match] of {whose} has no selector, so it matches nobody: add uids, gids, docker_labels or image"),
            );
        }
        if !m.uids.is_empty() && !m.uids.contains(&caller.uid) {
            return deny(
                "match.uids",
                format!(
                    "caller uid {} is not in [match] uids {:?} of {whose}: run as one of those uids or add this uid to the policy",
                    caller.uid, m.uids
                ),
            );
        }
        if !m.gids.is_empty() && !m.gids.contains(&caller.gid) {
            return deny(
                "match.gids",
                format!(
                    "caller gid {} is not in [match] gids {:?} of {whose}: run with one of those gids or add this gid to the policy",
                    caller.gid, m.gids
                ),
            );
        }
        self.match_container(caller)?;
        self.match_pod(caller)
    }

    /// `docker_labels` and `image`: hold only for a caller in a container.
    fn match_container(&self, caller: &Caller) -> Result<(), Denial> {
        let m = &self.matcher;
        let whose = self.whose();
        if !m.docker_labels.is_empty() {
            let flags = m
                .docker_labels
                .iter()
                .map(|(k, v)| format!("--label {k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let Some(c) = &caller.container else {
                return deny(
                    "match.docker_labels",
                    format!("the caller does not run in a container, but [match] docker_labels of {whose} only matches containers: run it in a container started with {flags}"),
                );
            };
            for (name, want) in &m.docker_labels {
                // The actual value is not echoed: labels are not ours to print.
                let problem = match c.labels.get(name) {
                    Some(have) if have == want => continue,
                    Some(_) => format!("has label {name:?} set to another value than [match] docker_labels of {whose} requires"),
                    None => format!("lacks label {name:?} that [match] docker_labels of {whose} requires"),
                };
                return deny(
                    "match.docker_labels",
                    format!(
                        "container {} {problem}: start it with {flags} or change the policy",
                        short(&c.id)
                    ),
                );
            }
        }
        if let Some(want) = &m.image {
            let Some(c) = &caller.container else {
                return deny(
                    "match.image",
                    format!("the caller does not run in a container, but [match] image of {whose} only matches containers: run it in a container of image {want}"),
                );
            };
            if &c.image_id != want {
                return deny(
                    "match.image",
                    format!(
                        "container {} runs image {}, but [match] image of {whose} pins {want}: run the pinned image or update the pin",
                        short(&c.id),
                        c.image_id
                    ),
                );
            }
        }
        Ok(())
    }

    /// `k8s_service_accounts` and `k8s_namespaces`: hold only for a caller
    /// with a verified service-account token.
    fn match_pod(&self, caller: &Caller) -> Result<(), Denial> {
        let m = &self.matcher;
        let whose = self.whose();
        if !m.k8s_service_accounts.is_empty() || !m.k8s_namespaces.is_empty() {
            let Some(sa) = &caller.service_account else {
                return deny(
                    "match.k8s",
                    format!("the caller presented no verified service-account token, but [match] of {whose} only matches pods: run the client with --token-file pointing at a projected token with audience unbaked"),
                );
            };
            let full = format!("{}/{}", sa.namespace, sa.name);
            if !m.k8s_service_accounts.is_empty() && !m.k8s_service_accounts.contains(&full) {
                return deny(
                    "match.k8s_service_accounts",
                    format!(
                        "service account {full} is not in [match] k8s_service_accounts {:?} of {whose}: run the pod as one of those or add it to the policy",
                        m.k8s_service_accounts
                    ),
                );
            }
            if !m.k8s_namespaces.is_empty() && !m.k8s_namespaces.contains(&sa.namespace) {
                return deny(
                    "match.k8s_namespaces",
                    format!(
                        "namespace {} is not in [match] k8s_namespaces {:?} of {whose}",
                        sa.namespace, m.k8s_namespaces
                    ),
                );
            }
        }
        Ok(())
    }

    /// `[launch]`: the caller's uid is in `uids` or its gid in `gids`; an
    /// empty `[launch]` lets nobody launch.
    pub fn may_launch(&self, caller: &Caller) -> Result<(), Denial> {
        let l = &self.launch;
        let whose = self.whose();
        if l.uids.is_empty() && l.gids.is_empty() {
            return deny(
                "launch",
                format!("{whose} lists no [launch] uids or gids, so nobody may launch it: add your uid or gid under [launch]"),
            );
        }
        if l.uids.contains(&caller.uid) || l.gids.contains(&caller.gid) {
            return Ok(());
        }
        let mut allowed = Vec::new();
        if !l.uids.is_empty() {
            allowed.push(format!("uids {:?}", l.uids));
        }
        if !l.gids.is_empty() {
            allowed.push(format!("gids {:?}", l.gids));
        }
        let rule = if l.uids.is_empty() {
            "launch.gids"
        } else {
            "launch.uids"
        };
        deny(
            rule,
            format!(
                "caller uid {} (gid {}) is not in [launch] {} of {whose}: launch it as one of those or add this uid to [launch]",
                caller.uid,
                caller.gid,
                allowed.join(" or ")
            ),
        )
    }

    /// Grants of the given kinds, in file order; an empty slice means all.
    pub fn grants_of<'a>(
        &'a self,
        kinds: &'a [DeliveryKind],
    ) -> impl Iterator<Item = &'a Grant> + 'a {
        self.grants
            .iter()
            .filter(move |g| kinds.is_empty() || kinds.contains(&g.delivery.kind()))
    }

    /// Templates of the given kinds, in file order; an empty slice means all.
    pub fn templates_of<'a>(
        &'a self,
        kinds: &'a [DeliveryKind],
    ) -> impl Iterator<Item = &'a crate::Template> + 'a {
        self.templates
            .iter()
            .filter(move |t| kinds.is_empty() || kinds.contains(&t.delivery.kind()))
    }

    fn whose(&self) -> String {
        format!("workload {:?} ({})", self.workload, self.source.display())
    }
}

/// Docker's short id, enough to find the container in `docker ps`.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GrantDelivery, Isolation, Launch, Match, DEFAULT_TTL};

    const IMAGE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn policy(matcher: Match) -> Policy {
        let grant = |d| Grant {
            secret: "app/db".into(),
            key: "password".into(),
            dynamic: None,
            delivery: d,
            ttl: DEFAULT_TTL,
            mode: 0o400,
            uid: None,
            gid: None,
            on_change: None,
            debounce: crate::model::DEFAULT_DEBOUNCE,
        };
        Policy {
            workload: "billing".into(),
            source: "policies/billing.toml".into(),
            matcher,
            launch: Launch::default(),
            isolation: Isolation::default(),
            grants: vec![
                grant(GrantDelivery::File("db".into())),
                grant(GrantDelivery::Env("A".into())),
                grant(GrantDelivery::Fd("B".into())),
            ],
            templates: vec![],
        }
    }

    fn host(uid: u32, gid: u32) -> Caller {
        Caller {
            uid,
            gid,
            pid: Some(42),
            container: None,
            service_account: None,
        }
    }

    fn in_container(uid: u32, labels: &[(&str, &str)], image: &str) -> Caller {
        Caller {
            container: Some(ContainerInfo {
                id: "0123456789abcdef0123".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                image_id: image.into(),
            }),
            ..host(uid, uid)
        }
    }

    fn rule(r: Result<(), Denial>) -> &'static str {
        r.err().map_or("ok", |d| d.rule)
    }

    #[test]
    fn uid_selector() {
        let p = policy(Match {
            uids: vec![1000],
            ..Match::default()
        });
        assert_eq!(rule(p.authorize(&host(1000, 5))), "ok");
        let d = p.authorize(&host(1001, 5)).unwrap_err();
        assert_eq!(d.rule, "match.uids");
        assert_eq!(
            d.to_string(),
            "caller uid 1001 is not in [match] uids [1000] of workload \"billing\" (policies/billing.toml): run as one of those uids or add this uid to the policy"
        );
    }

    #[test]
    fn gid_selector() {
        let p = policy(Match {
            gids: vec![10, 20],
            ..Match::default()
        });
        assert_eq!(rule(p.authorize(&host(0, 20))), "ok");
        assert_eq!(rule(p.authorize(&host(0, 30))), "match.gids");
    }

    #[test]
    fn every_selector_must_hold() {
        let p = policy(Match {
            uids: vec![1000],
            docker_labels: [("app".to_string(), "billing".to_string())].into(),
            image: Some(IMAGE.into()),
            ..Match::default()
        });
        let ok = in_container(1000, &[("app", "billing"), ("x", "y")], IMAGE);
        assert_eq!(rule(p.authorize(&ok)), "ok");
        let wrong_uid = in_container(1001, &[("app", "billing")], IMAGE);
        assert_eq!(rule(p.authorize(&wrong_uid)), "match.uids");
        let wrong_label = in_container(1000, &[("app", "reports")], IMAGE);
        let d = p.authorize(&wrong_label).unwrap_err();
        assert_eq!(d.rule, "match.docker_labels");
        assert!(
            d.reason
                .contains("container 0123456789ab has label \"app\""),
            "{d}"
        );
        assert!(!d.reason.contains("reports"), "{d}");
        let no_label = in_container(1000, &[], IMAGE);
        assert!(p
            .authorize(&no_label)
            .unwrap_err()
            .reason
            .contains("lacks label"));
        let wrong_image = in_container(1000, &[("app", "billing")], "sha256:beef");
        assert_eq!(rule(p.authorize(&wrong_image)), "match.image");
    }

    #[test]
    fn docker_selectors_never_match_host_processes() {
        let labels = policy(Match {
            docker_labels: [("app".to_string(), "billing".to_string())].into(),
            ..Match::default()
        });
        let d = labels.authorize(&host(1000, 1000)).unwrap_err();
        assert_eq!(d.rule, "match.docker_labels");
        assert!(d
            .reason
            .starts_with("the caller does not run in a container"));
        let image = policy(Match {
            image: Some(IMAGE.into()),
            ..Match::default()
        });
        let d = image.authorize(&host(1000, 1000)).unwrap_err();
        assert_eq!(d.rule, "match.image");
        assert!(d
            .reason
            .starts_with("the caller does not run in a container"));
    }

    #[test]
    fn no_selector_matches_nobody() {
        let p = policy(Match::default());
        assert_eq!(rule(p.authorize(&host(0, 0))), "match");
    }

    #[test]
    fn launch_by_uid_or_gid() {
        let mut p = policy(Match::default());
        assert_eq!(rule(p.may_launch(&host(0, 0))), "launch");
        p.launch = Launch {
            uids: vec![1000],
            gids: vec![50],
        };
        assert_eq!(rule(p.may_launch(&host(1000, 1))), "ok");
        assert_eq!(rule(p.may_launch(&host(1, 50))), "ok");
        let d = p.may_launch(&host(1, 1)).unwrap_err();
        assert_eq!(d.rule, "launch.uids");
        assert!(d.reason.contains("uids [1000] or gids [50]"), "{d}");
        p.launch.uids.clear();
        assert_eq!(rule(p.may_launch(&host(1000, 1))), "launch.gids");
    }

    #[test]
    fn grants_by_kind() {
        let p = policy(Match::default());
        let ids = |kinds: &[DeliveryKind]| p.grants_of(kinds).map(Grant::id).collect::<Vec<_>>();
        assert_eq!(ids(&[]), ["file:db", "env:A", "fd:B"]);
        assert_eq!(
            ids(&[DeliveryKind::Fd, DeliveryKind::Env]),
            ["env:A", "fd:B"]
        );
        assert_eq!(ids(&[DeliveryKind::File]), ["file:db"]);
    }

    #[test]
    fn pods_match_by_service_account_and_namespace() {
        let p = policy(Match {
            k8s_service_accounts: vec!["payments/billing".into()],
            k8s_namespaces: vec!["payments".into()],
            ..Match::default()
        });
        let pod = |ns: &str, name: &str| Caller {
            service_account: Some(ServiceAccount {
                namespace: ns.into(),
                name: name.into(),
            }),
            ..host(65534, 65534)
        };
        assert_eq!(p.authorize(&pod("payments", "billing")), Ok(()));
        assert_eq!(
            p.authorize(&pod("payments", "other")).unwrap_err().rule,
            "match.k8s_service_accounts"
        );
        assert_eq!(p.authorize(&host(0, 0)).unwrap_err().rule, "match.k8s");
        let ns_only = policy(Match {
            k8s_namespaces: vec!["payments".into()],
            ..Match::default()
        });
        assert_eq!(ns_only.authorize(&pod("payments", "any")), Ok(()));
        assert_eq!(
            ns_only.authorize(&pod("billing", "x")).unwrap_err().rule,
            "match.k8s_namespaces"
        );
    }
}
