//! Prometheus metrics (prometheus-client), served by the admin listener.
//!
//! **Invariant:** labels are workload names, rule ids, endpoints and
//! outcomes: bounded sets that never carry a value, a token or a lease id.
//! A workload label is a name some policy declared; a name a caller chose
//! that no policy declares (or that is not a name at all) is counted as
//! [`UNKNOWN_WORKLOAD`], so no request can add a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The workload label of denials for a workload no policy declares.
pub const UNKNOWN_WORKLOAD: &str = "unknown";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub workload: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub workload: String,
    pub rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub store: &'static str,
}

fn store_buckets() -> impl Iterator<Item = f64> {
    // 50 µs to ~1.6 s: memory reads sit at the bottom, Vault round trips above.
    prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 16)
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub grants: Family<WorkloadLabels, Counter>,
    pub denials: Family<DenialLabels, Counter>,
    pub renewals: Family<WorkloadLabels, Counter>,
    pub active_leases: Gauge,
    pub store_latency: Family<StoreLabels, Histogram>,
    pub cache_hits: Family<StoreLabels, Counter>,
    pub cache_misses: Family<StoreLabels, Counter>,
    pub reloads: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("unbaked");
        let requests = Family::default();
        let grants = Family::default();
        let denials = Family::default();
        let renewals = Family::default();
        let active_leases = Gauge::default();
        let store_latency = Family::<StoreLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(store_buckets())
        });
        let cache_hits = Family::default();
        let cache_misses = Family::default();
        let reloads = Family::default();
        registry.register(
            "requests",
            "API requests by endpoint and HTTP status",
            requests.clone(),
        );
        registry.register(
            "grants",
            "Deliveries (fetches) granted, by workload",
            grants.clone(),
        );
        registry.register(
            "denials",
            "Requests denied, by workload and rule",
            denials.clone(),
        );
        registry.register("renewals", "Leases renewed, by workload", renewals.clone());
        registry.register(
            "active_leases",
            "Leases currently held",
            active_leases.clone(),
        );
        registry.register(
            "store_read_seconds",
            "Latency of one store read",
            store_latency.clone(),
        );
        registry.register(
            "cache_hits",
            "Store reads answered by the cache",
            cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Store reads that went to the store",
            cache_misses.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy reloads by outcome",
            reloads.clone(),
        );
        Metrics {
            registry,
            requests,
            grants,
            denials,
            renewals,
            active_leases,
            store_latency,
            cache_hits,
            cache_misses,
            reloads,
        }
    }

    /// Count a denial. `workload` is a declared workload's name, `""`
    /// (none asked for) or [`UNKNOWN_WORKLOAD`]: the deny path
    /// (`service::deny`) decides which, never the caller.
    pub fn denied(&self, workload: &str, rule: crate::rules::DenyRule) {
        self.denials
            .get_or_create(&DenialLabels {
                workload: workload.into(),
                rule: rule.id(),
            })
            .inc();
    }

    pub fn workload(&self, family: &Family<WorkloadLabels, Counter>, workload: &str) {
        family
            .get_or_create(&WorkloadLabels {
                workload: workload.into(),
            })
            .inc();
    }

    pub fn store_read(&self, store: &'static str, took: Duration) {
        self.store_latency
            .get_or_create(&StoreLabels { store })
            .observe(took.as_secs_f64());
    }

    /// Bring the cache counters up to the store's running totals.
    pub fn cache_counts(&self, store: &'static str, hits: u64, misses: u64) {
        for (family, total) in [(&self.cache_hits, hits), (&self.cache_misses, misses)] {
            let c = family.get_or_create(&StoreLabels { store });
            c.inc_by(total.saturating_sub(c.get()));
        }
    }

    pub fn reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "rejected" };
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_the_text_format() {
        let m = Metrics::new();
        m.workload(&m.grants, "billing");
        m.denied("billing", crate::rules::DenyRule::MatchUids);
        m.active_leases.set(3);
        m.store_read("memory", Duration::from_micros(70));
        m.reload(false);
        let text = m.render();
        assert!(
            text.contains("unbaked_grants_total{workload=\"billing\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("unbaked_denials_total{workload=\"billing\",rule=\"match.uids\"} 1"),
            "{text}"
        );
        assert!(text.contains("unbaked_active_leases 3"), "{text}");
        assert!(
            text.contains("unbaked_store_read_seconds_count{store=\"memory\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("unbaked_policy_reloads_total{outcome=\"rejected\"} 1"),
            "{text}"
        );
    }
}
