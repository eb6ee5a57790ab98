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
use std::sync::OnceLock;
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

/// A change action: its kind (`signal`, `command`, `restart`) and result
/// (`ok`, `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub workload: String,
    pub action: &'static str,
    pub result: &'static str,
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
    /// Items answered from a stale copy while the store was unreachable.
    pub stale_served: Family<WorkloadLabels, Counter>,
    pub active_leases: Gauge,
    pub store_latency: Family<StoreLabels, Histogram>,
    pub cache_hits: Family<StoreLabels, Counter>,
    pub cache_misses: Family<StoreLabels, Counter>,
    pub reloads: Family<OutcomeLabels, Counter>,
    /// Change actions run on containers (`on_change`), by workload, kind
    /// and result; a retry counts again.
    pub actions: Family<ActionLabels, Counter>,
    /// 1 while the Vault store runs with VAULT_SKIP_VERIFY: never silently.
    pub vault_tls_verify_disabled: Gauge,
    /// Handles into `requests` for each endpoint's usual answers, taken
    /// at their first use ([`Metrics::request`]).
    kept_requests: [[OnceLock<Counter>; KEPT_STATUSES.len()]; ENDPOINTS.len()],
}

/// The endpoint labels of `requests` (a bounded set: admin paths, which
/// name secrets, are one label).
pub const ENDPOINTS: [&str; 7] = [
    "fetch", "renew", "revoke", "launch", "health", "admin", "other",
];
/// The answers whose request counters are kept at hand.
const KEPT_STATUSES: [u16; 2] = [200, 204];

/// A new metric of type `M`, registered under `name`.
fn register<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: Default + Clone + prometheus_client::registry::Metric,
{
    register_with(registry, name, help, M::default())
}

fn register_with<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: Clone + prometheus_client::registry::Metric,
{
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("unbaked");
        let store_latency = Family::<StoreLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(store_buckets())
        });
        Metrics {
            requests: register(&mut r, "requests", "API requests by endpoint and HTTP status"),
            grants: register(&mut r, "grants", "Deliveries (fetches) granted, by workload"),
            denials: register(&mut r, "denials", "Requests denied, by workload and rule"),
            renewals: register(&mut r, "renewals", "Leases renewed, by workload"),
            stale_served: register(
                &mut r,
                "stale_served",
                "Secrets answered from a stale copy while the vault store was unreachable ([vault] max_stale), by workload",
            ),
            active_leases: register(&mut r, "active_leases", "Leases currently held"),
            store_latency: register_with(
                &mut r,
                "store_read_seconds",
                "Latency of one store read",
                store_latency,
            ),
            cache_hits: register(&mut r, "cache_hits", "Store reads answered by the cache"),
            cache_misses: register(&mut r, "cache_misses", "Store reads that went to the store"),
            reloads: register(&mut r, "policy_reloads", "Policy reloads by outcome"),
            actions: register(
                &mut r,
                "actions",
                "Change actions (on_change) run on containers, by workload, action and result",
            ),
            vault_tls_verify_disabled: register(
                &mut r,
                "vault_tls_verify_disabled",
                "1 when the vault server's TLS certificate is not checked (VAULT_SKIP_VERIFY)",
            ),
            registry: r,
            kept_requests: Default::default(),
        }
    }

    /// Count a request to `endpoint` (one of [`ENDPOINTS`]) answered with
    /// `status`. A fetch answered 200 is one atomic add on a kept handle,
    /// not a label lookup (a hash, a lock and an allocation per request).
    pub fn request(&self, endpoint: &'static str, status: u16) {
        let kept = ENDPOINTS.iter().position(|e| *e == endpoint).and_then(|e| {
            let s = KEPT_STATUSES.iter().position(|s| *s == status)?;
            Some(&self.kept_requests[e][s])
        });
        let labels = || RequestLabels {
            endpoint: endpoint.into(),
            status,
        };
        match kept {
            Some(slot) => slot
                .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .inc(),
            None => self.requests.get_or_create(&labels()).inc(),
        };
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

    /// The OpenMetrics 1.0 text exposition (see [`Exposition`] for the
    /// classic format).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The two text formats a scraper may ask for, negotiated from `Accept`
/// as the Prometheus client libraries do (Python's `choose_encoder`,
/// client_golang's `Negotiate`): OpenMetrics when the scraper lists
/// `application/openmetrics-text` (Prometheus 2.5 on, with a q above 0),
/// else the classic text format 0.0.4, which `promtool check metrics` and
/// older scrapers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    OpenMetrics,
    Classic,
}

impl Exposition {
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        let wants_openmetrics = accept.unwrap_or("").split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        });
        if wants_openmetrics {
            Exposition::OpenMetrics
        } else {
            Exposition::Classic
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// `openmetrics` (what [`Metrics::render`] writes) in this format.
    pub fn encode(self, openmetrics: String) -> String {
        match self {
            Exposition::OpenMetrics => openmetrics,
            Exposition::Classic => to_classic(&openmetrics),
        }
    }
}

/// OpenMetrics text to the classic 0.0.4 format. The differences that
/// matter to a 0.0.4 parser: a counter family is named with its `_total`
/// suffix (else its samples have no HELP or TYPE: promtool's "no help
/// text"), there is no `# UNIT`, no `# EOF`, no exemplar, the types `info`,
/// `stateset`, `gaugehistogram` and `unknown` do not exist, and HELP escapes
/// only `\\` and `\n`.
pub fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    let write_help = |out: &mut String, name: &str, text: &str| {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        out.push_str(&text.replace("\\\"", "\""));
        out.push('\n');
    };
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, text)) = help.take() {
                write_help(&mut out, name, text);
            }
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_string(), kind),
                _ => (name.to_string(), "untyped"),
            };
            if let Some((_, text)) = help.take() {
                write_help(&mut out, &name, text);
            }
            out.push_str("# TYPE ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        if let Some((name, text)) = help.take() {
            write_help(&mut out, name, text);
        }
        if line == "# EOF" || line.starts_with("# UNIT ") || line.is_empty() {
            continue;
        }
        let sample = line.split_once(" # {").map_or(line, |(s, _)| s);
        out.push_str(sample);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_follows_accept() {
        use Exposition::*;
        for (accept, want) in [
            (None, Classic),
            (Some("*/*"), Classic),
            (Some("text/plain;version=0.0.4;q=1,*/*;q=0.1"), Classic),
            // Prometheus 2.x's scrape header
            (Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"), OpenMetrics),
            (Some("Application/OpenMetrics-Text"), OpenMetrics),
            (Some("application/openmetrics-text;q=0, text/plain"), Classic),
        ] {
            assert_eq!(Exposition::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn classic_text_names_counters_with_total_and_has_no_openmetrics_lines() {
        let m = Metrics::new();
        m.workload(&m.grants, "billing");
        m.store_read("memory", Duration::from_micros(70));
        let classic = to_classic(&m.render());
        assert!(
            classic.contains("# HELP unbaked_grants_total ")
                && classic.contains("# TYPE unbaked_grants_total counter\n"),
            "{classic}"
        );
        assert!(classic.contains("unbaked_grants_total{workload=\"billing\"} 1\n"));
        assert!(classic.contains("# TYPE unbaked_store_read_seconds histogram\n"));
        assert!(
            !classic.contains("# EOF") && !classic.contains("# UNIT"),
            "{classic}"
        );
        // every TYPE has its HELP just before it
        let lines: Vec<&str> = classic.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(
                    i > 0 && lines[i - 1].starts_with(&format!("# HELP {name} ")),
                    "{classic}"
                );
            }
        }
    }

    /// A kept handle counts into the family's own series: the text shows
    /// one line per endpoint and status, kept or not.
    #[test]
    fn kept_request_counters_are_the_family_series() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.request("fetch", 200);
        }
        m.request("fetch", 403);
        m.request("other", 404);
        m.request("revoke", 204);
        let text = m.render();
        for line in [
            "unbaked_requests_total{endpoint=\"fetch\",status=\"200\"} 3",
            "unbaked_requests_total{endpoint=\"fetch\",status=\"403\"} 1",
            "unbaked_requests_total{endpoint=\"other\",status=\"404\"} 1",
            "unbaked_requests_total{endpoint=\"revoke\",status=\"204\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert_eq!(text.matches("endpoint=\"fetch\",status=\"200\"").count(), 1);
        // Nothing kept before its first use is shown.
        assert!(!text.contains("endpoint=\"renew\""), "{text}");
    }

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
