//! Leases: what was delivered to whom, and until when.
//!
//! **Invariant:** the table holds identities and deadlines, never values.

use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
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

#[derive(Debug, Default)]
pub struct LeaseTable {
    leases: Mutex<HashMap<String, LeaseRecord>>,
}

/// 128 random bits, hex.
pub fn new_lease_id() -> String {
    let mut raw = [0u8; 16];
    SystemRandom::new()
        .fill(&mut raw)
        .expect("the system random source works");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

impl LeaseTable {
    pub fn insert(&self, lease: LeaseRecord) {
        self.lock().insert(lease.id.clone(), lease);
    }

    /// The lease if it exists and has not expired.
    pub fn get(&self, id: &str, now: Instant) -> Option<LeaseRecord> {
        self.lock().get(id).filter(|l| l.expires_at > now).cloned()
    }

    /// Push the deadline out by a new ttl; false if the lease is gone.
    pub fn extend(&self, id: &str, ttl: Duration, now: Instant) -> bool {
        match self.lock().get_mut(id) {
            Some(l) if l.expires_at > now => {
                l.ttl = ttl;
                l.expires_at = now + ttl;
                true
            }
            _ => false,
        }
    }

    pub fn remove(&self, id: &str) -> Option<LeaseRecord> {
        self.lock().remove(id)
    }

    /// Remove and return every lease past its deadline.
    pub fn drain_expired(&self, now: Instant) -> Vec<LeaseRecord> {
        let mut leases = self.lock();
        let expired: Vec<String> = leases
            .values()
            .filter(|l| l.expires_at <= now)
            .map(|l| l.id.clone())
            .collect();
        expired.iter().filter_map(|id| leases.remove(id)).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LeaseRecord>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
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
        assert_eq!(new_lease_id().len(), 32);
    }
}
