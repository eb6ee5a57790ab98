//! A lease's files brought in line with what is on disk: the one
//! implementation behind the sidecar's deliveries and the broker's writes
//! into an `unbaked run` container's tmpfs.

use crate::{DirError, SecretsDir};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use unbaked_api::wire::{Delivery, Item, Lease};

/// Item id -> what is on disk for it.
pub type Applied = BTreeMap<String, Delivered>;

/// What we delivered for one item.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub path: String,
    pub version: u64,
    pub delivery: Delivery,
    /// When the copy's ttl runs out unless a renewal confirms it.
    pub expires: Instant,
}

/// What a lease answer changes on disk: indices of the items to write, and
/// paths to wipe (no longer used by any item).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub write: Vec<usize>,
    pub wipe: Vec<String>,
}

/// Items new or changed (version or delivery) are written; unchanged ones are
/// left alone; paths no current item uses are wiped.
pub fn plan(current: &BTreeMap<String, Delivered>, items: &[Item]) -> Plan {
    let mut plan = Plan::default();
    let mut paths = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let Delivery::File { path, .. } = &item.delivery else {
            continue;
        };
        paths.insert(path.as_str());
        match current.get(&item.id) {
            Some(d) if d.version == item.version && d.delivery == item.delivery => {}
            _ => plan.write.push(i),
        }
    }
    let gone: BTreeSet<&str> = current
        .values()
        .map(|d| d.path.as_str())
        .filter(|p| !paths.contains(p))
        .collect();
    plan.wipe = gone.into_iter().map(String::from).collect();
    plan
}

/// What [`apply`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub written: usize,
    pub wiped: usize,
}

/// Bring `dir` in line with `lease`: wipe the paths no item uses any more,
/// write the items new or changed since `current`, and return what is on
/// disk now. A file's owner is the grant's, else `owner` (the broker writes
/// a container's files as the container's user), else this process's.
/// Expiry counts from `sent`, when the request left: the broker's clock
/// started no later.
pub fn apply(
    dir: &mut SecretsDir,
    current: &Applied,
    lease: &Lease,
    sent: Instant,
    owner: Option<(u32, u32)>,
) -> Result<(Applied, Changes), DirError> {
    apply_mapped(dir, current, lease, sent, owner, &|uid, gid| (uid, gid))
}

/// [`apply`], with a grant's own owner (`uid`, `gid`, as the workload
/// names them) turned into the host's ids by `map` first: a container in
/// a user namespace names its users through its `uid_map` and `gid_map`.
pub fn apply_mapped(
    dir: &mut SecretsDir,
    current: &Applied,
    lease: &Lease,
    sent: Instant,
    owner: Option<(u32, u32)>,
    map: &dyn Fn(Option<u32>, Option<u32>) -> (Option<u32>, Option<u32>),
) -> Result<(Applied, Changes), DirError> {
    let plan = plan(current, &lease.items);
    // Wipe first: a path freed by one item may be taken by another.
    for path in &plan.wipe {
        dir.wipe(path)?;
    }
    for &i in &plan.write {
        let item = &lease.items[i];
        if let Delivery::File {
            path,
            mode,
            uid,
            gid,
        } = &item.delivery
        {
            let (uid, gid) = map(*uid, *gid);
            let uid = uid.or(owner.map(|o| o.0));
            let gid = gid.or(owner.map(|o| o.1));
            dir.write(path, item.value.expose_secret(), *mode, uid, gid)?;
        }
    }
    let now_on_disk = lease
        .items
        .iter()
        .filter_map(|item| match &item.delivery {
            Delivery::File { path, .. } => Some((
                item.id.clone(),
                Delivered {
                    path: path.clone(),
                    version: item.version,
                    delivery: item.delivery.clone(),
                    expires: sent + Duration::from_secs(item.ttl_secs),
                },
            )),
            _ => None,
        })
        .collect();
    let changes = Changes {
        written: plan.write.len(),
        wiped: plan.wipe.len(),
    };
    Ok((now_on_disk, changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use unbaked_api::Secret;

    fn item(id: &str, path: &str, version: u64, mode: u32) -> Item {
        Item {
            id: id.into(),
            secret: "app/db".into(),
            key: "k".into(),
            delivery: Delivery::File {
                path: path.into(),
                mode,
                uid: None,
                gid: None,
            },
            version,
            ttl_secs: 60,
            value: Secret::from_slice(b"v"),
        }
    }

    fn state(items: &[Item]) -> BTreeMap<String, Delivered> {
        let now = Instant::now();
        items
            .iter()
            .map(|i| {
                let Delivery::File { path, .. } = &i.delivery else {
                    unreachable!()
                };
                let d = Delivered {
                    path: path.clone(),
                    version: i.version,
                    delivery: i.delivery.clone(),
                    expires: now,
                };
                (i.id.clone(), d)
            })
            .collect()
    }

    #[test]
    fn plan_writes_new_and_changed_wipes_removed_keeps_the_rest() {
        let old = state(&[
            item("a", "a", 1, 0o400),
            item("b", "b", 1, 0o400),
            item("c", "c", 1, 0o400),
            item("d", "d", 1, 0o400),
        ]);
        let new = [
            item("a", "a", 1, 0o400), // unchanged
            item("b", "b", 2, 0o400), // rotated
            item("c", "c", 1, 0o440), // delivery changed
            item("e", "e", 1, 0o400), // new
        ];
        assert_eq!(
            plan(&old, &new),
            Plan {
                write: vec![1, 2, 3],
                wipe: vec!["d".into()]
            }
        );
        assert_eq!(plan(&state(&new), &new), Plan::default());
        assert_eq!(plan(&BTreeMap::new(), &new).write, vec![0, 1, 2, 3]);
    }

    #[test]
    fn plan_wipes_a_moved_path_but_not_one_taken_over() {
        let old = state(&[item("a", "x", 1, 0o400), item("b", "y", 1, 0o400)]);
        // a moves to z; b is withdrawn and c takes over its path y.
        let new = [item("a", "z", 1, 0o400), item("c", "y", 1, 0o400)];
        assert_eq!(
            plan(&old, &new),
            Plan {
                write: vec![0, 1],
                wipe: vec!["x".into()]
            }
        );
    }

    #[test]
    fn plan_ignores_non_file_items() {
        let mut env = item("env:X", "", 1, 0);
        env.delivery = Delivery::Env { name: "X".into() };
        assert_eq!(plan(&BTreeMap::new(), &[env]), Plan::default());
    }
}
