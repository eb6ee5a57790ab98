//! Leases: what was delivered to whom, and until when.
//!
//! **Invariant:** the table holds identities and deadlines, never values.

use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use unbaked_api::wire::DeliveryKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: String,
    pub workload: String,
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    pub kinds: Vec<DeliveryKind>,
    pub ttl: Duration,
    pub expires_at: Instant,
}

/// The leases by id, and their deadlines in order, so the sweep each
/// second takes only what is due: a scan of every lease under the lock
/// stalled every request for milliseconds once a busy broker held
/// hundreds of thousands.
#[derive(Debug, Default)]
pub struct LeaseTable {
    inner: Mutex<Inner>,
    /// Bumped by every change, so the lease keeper saves only after one.
    changes: std::sync::atomic::AtomicU64,
}

/// Live leases one process may hold for one workload. A sidecar holds
/// one and renews it; a caller that fetches in a loop would otherwise grow
/// the table by its rate times the ttl: past this its oldest lease ends.
pub const MAX_LEASES_PER_HOLDER: usize = 64;

/// Who holds a lease: pid (uid when there is none), uid, workload.
type Holder = (Option<i32>, u32, String);

#[derive(Debug, Default)]
struct Inner {
    leases: HashMap<String, LeaseRecord>,
    deadlines: BTreeSet<(Instant, String)>,
    /// Each holder's lease ids, oldest first.
    held: HashMap<Holder, VecDeque<String>>,
}

fn holder(lease: &LeaseRecord) -> Holder {
    (lease.pid, lease.uid, lease.workload.clone())
}

impl Inner {
    /// Take `lease` out of the deadline and holder indexes.
    fn forget(&mut self, lease: &LeaseRecord) {
        self.deadlines.remove(&(lease.expires_at, lease.id.clone()));
        let key = holder(lease);
        if let Some(ids) = self.held.get_mut(&key) {
            ids.retain(|id| *id != lease.id);
            if ids.is_empty() {
                self.held.remove(&key);
            }
        }
    }
}

/// 128 random bits, hex.
pub fn new_lease_id() -> String {
    let mut raw = [0u8; 16];
    SystemRandom::new()
        .fill(&mut raw)
        .expect("the system random source works");
    crate::audit::to_hex(&raw)
}

impl LeaseTable {
    /// Add a lease; the leases its holder held past
    /// [`MAX_LEASES_PER_HOLDER`], oldest first, are removed and returned
    /// for the caller to end.
    pub fn insert(&self, lease: LeaseRecord) -> Vec<LeaseRecord> {
        self.changed();
        let mut t = self.lock();
        let deadline = (lease.expires_at, lease.id.clone());
        let (key, id) = (holder(&lease), lease.id.clone());
        if let Some(old) = t.leases.insert(lease.id.clone(), lease) {
            t.forget(&old);
        }
        t.deadlines.insert(deadline);
        let ids = t.held.entry(key).or_default();
        ids.push_back(id);
        let over = ids.len().saturating_sub(MAX_LEASES_PER_HOLDER);
        let evicted: Vec<String> = ids.drain(..over).collect();
        evicted
            .iter()
            .filter_map(|id| {
                let lease = t.leases.remove(id)?;
                t.deadlines.remove(&(lease.expires_at, lease.id.clone()));
                Some(lease)
            })
            .collect()
    }

    /// The lease if it exists and has not expired.
    pub fn get(&self, id: &str, now: Instant) -> Option<LeaseRecord> {
        self.lock()
            .leases
            .get(id)
            .filter(|l| l.expires_at > now)
            .cloned()
    }

    /// Push the deadline out by a new ttl; false if the lease is gone.
    pub fn extend(&self, id: &str, ttl: Duration, now: Instant) -> bool {
        self.changed();
        let mut t = self.lock();
        let Inner {
            leases, deadlines, ..
        } = &mut *t;
        match leases.get_mut(id) {
            Some(l) if l.expires_at > now => {
                deadlines.remove(&(l.expires_at, l.id.clone()));
                l.ttl = ttl;
                l.expires_at = now + ttl;
                deadlines.insert((l.expires_at, l.id.clone()));
                true
            }
            _ => false,
        }
    }

    pub fn remove(&self, id: &str) -> Option<LeaseRecord> {
        self.changed();
        let mut t = self.lock();
        let lease = t.leases.remove(id)?;
        t.forget(&lease);
        Some(lease)
    }

    /// Remove and return every lease past its deadline.
    pub fn drain_expired(&self, now: Instant) -> Vec<LeaseRecord> {
        let mut t = self.lock();
        let mut expired = Vec::new();
        while t.deadlines.first().is_some_and(|(at, _)| *at <= now) {
            let Some((_, id)) = t.deadlines.pop_first() else {
                break;
            };
            if let Some(lease) = t.leases.remove(&id) {
                t.forget(&lease);
                expired.push(lease);
            }
        }
        if !expired.is_empty() {
            self.changed();
        }
        expired
    }

    /// A count that changes whenever the table does.
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn changed(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every lease (to keep across a restart).
    pub fn snapshot(&self) -> Vec<LeaseRecord> {
        self.lock().leases.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: &str, ttl: Duration, now: Instant) -> LeaseRecord {
        LeaseRecord {
            id: id.into(),
            workload: "w".into(),
            uid: 0,
            gid: 0,
            pid: None,
            kinds: vec![],
            ttl,
            expires_at: now + ttl,
        }
    }

    #[test]
    fn a_holder_past_the_limit_loses_its_oldest_leases() {
        let t = LeaseTable::default();
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        for i in 0..MAX_LEASES_PER_HOLDER {
            assert!(t.insert(lease(&format!("a{i}"), ttl, now)).is_empty());
        }
        // Another process's and another workload's leases count apart.
        let mut other = lease("other-pid", ttl, now);
        other.pid = Some(7);
        assert!(t.insert(other).is_empty());
        let mut other = lease("other-workload", ttl, now);
        other.workload = "v".into();
        assert!(t.insert(other).is_empty());
        let evicted = t.insert(lease("a-new", ttl, now));
        assert_eq!(
            evicted.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
            ["a0"]
        );
        assert!(t.get("a0", now).is_none());
        assert!(t.get("a1", now).is_some() && t.get("a-new", now).is_some());
        assert_eq!(t.len(), MAX_LEASES_PER_HOLDER + 2);
        // Ended leases leave the holder's count: room again, no eviction.
        assert!(t.remove("a1").is_some());
        assert!(t.insert(lease("a-after", ttl, now)).is_empty());
        assert_eq!(t.drain_expired(now + ttl).len(), MAX_LEASES_PER_HOLDER + 2);
        assert!(t.lock().held.is_empty() && t.lock().deadlines.is_empty());
    }

    #[test]
    fn leases_expire_extend_and_drain() {
        let t = LeaseTable::default();
        let now = Instant::now();
        t.insert(lease("a", Duration::from_secs(10), now));
        t.insert(lease("b", Duration::from_secs(1), now));
        let later = now + Duration::from_secs(2);
        assert!(t.get("b", later).is_none());
        assert!(!t.extend("b", Duration::from_secs(10), later));
        assert!(t.extend("a", Duration::from_secs(10), later));
        let drained = t.drain_expired(later);
        assert_eq!(
            drained.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(t.len(), 1);
        assert!(t.get("a", now + Duration::from_secs(11)).is_some());
        assert_ne!(new_lease_id(), new_lease_id());
        assert!(new_lease_id().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(new_lease_id().len(), 32);
    }

    #[test]
    fn the_sweep_takes_only_what_is_due_and_follows_extensions() {
        let t = LeaseTable::default();
        let now = Instant::now();
        // A process each, so no holder reaches its limit.
        let of = |i: u64, ttl: u64| LeaseRecord {
            pid: Some(i as i32),
            ..lease(&format!("l{i}"), Duration::from_secs(ttl), now)
        };
        for i in 0..100u64 {
            t.insert(of(i, i + 1));
        }
        // Same id again: one lease, one deadline (the new one).
        t.insert(of(0, 50));
        assert!(t.remove("l1").is_some());
        assert!(t.extend("l2", Duration::from_secs(1000), now));
        let drained = t.drain_expired(now + Duration::from_secs(10));
        let mut ids: Vec<_> = drained.iter().map(|l| l.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["l3", "l4", "l5", "l6", "l7", "l8", "l9"]);
        assert_eq!(t.len(), 100 - 1 - 7);
        let deadlines = t.lock().deadlines.len();
        assert_eq!(deadlines, 100 - 1 - 7);
        assert!(t.get("l2", now + Duration::from_secs(999)).is_some());
        assert!(t.drain_expired(now + Duration::from_secs(10)).is_empty());
        assert_eq!(t.drain_expired(now + Duration::from_secs(2000)).len(), 92);
        assert!(t.is_empty());
        assert!(t.lock().deadlines.is_empty());
    }
}
