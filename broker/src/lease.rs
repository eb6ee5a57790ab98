//! Leases: what was delivered to whom, and until when.
//!
//! **Invariant:** the table holds identities and deadlines, never values.

use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{BTreeSet, HashMap};
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
}

#[derive(Debug, Default)]
struct Inner {
    leases: HashMap<String, LeaseRecord>,
    deadlines: BTreeSet<(Instant, String)>,
}

impl Inner {
    fn forget_deadline(&mut self, lease: &LeaseRecord) {
        self.deadlines.remove(&(lease.expires_at, lease.id.clone()));
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
    pub fn insert(&self, lease: LeaseRecord) {
        let mut t = self.lock();
        let deadline = (lease.expires_at, lease.id.clone());
        if let Some(old) = t.leases.insert(lease.id.clone(), lease) {
            t.forget_deadline(&old);
        }
        t.deadlines.insert(deadline);
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
        let mut t = self.lock();
        let Inner { leases, deadlines } = &mut *t;
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
        let mut t = self.lock();
        let lease = t.leases.remove(id)?;
        t.forget_deadline(&lease);
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
                expired.push(lease);
            }
        }
        expired
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
        for i in 0..100u64 {
            t.insert(lease(&format!("l{i}"), Duration::from_secs(i + 1), now));
        }
        // Same id again: one lease, one deadline (the new one).
        t.insert(lease("l0", Duration::from_secs(50), now));
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
