//! Metrics (Prometheus text at `/metrics`, via prometheus-client). Labels are route templates,
//! error codes, states and reasons — never raw paths or plugin-chosen strings — so the number of
//! series stays bounded whatever clients send.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as PromRegistry;

use crate::model::State;

/// One label: an outcome, a state or a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `accepted`, `unchanged`, or the error code.
    pub outcome: String,
}

/// State label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// Lifecycle state.
    pub state: String,
}

/// Plugin label (only names of registered plugins, or `unknown`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// Plugin name.
    pub plugin: String,
}

/// Plugin and status-class labels (`2xx` ... `5xx`; the core's own refusals count too).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginClassLabels {
    /// Plugin name (registered plugins only).
    pub plugin: String,
    /// Status class of the answer.
    pub class: &'static str,
}

/// The proxy's figures, by plugin.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    /// Requests by plugin and status class.
    pub requests: Family<PluginClassLabels, Counter>,
    /// Seconds until the plugin's response headers, by plugin.
    pub duration: Family<PluginLabels, Histogram, fn() -> Histogram>,
    /// Requests in flight (until the response body ends), by plugin; set at scrape time.
    pub in_flight: Family<PluginLabels, Gauge>,
    /// 1 while a plugin's circuit refuses requests; set at scrape time.
    pub circuit_open: Family<PluginLabels, Gauge>,
}

fn proxy_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl ProxyMetrics {
    fn register(registry: &mut PromRegistry) -> ProxyMetrics {
        let m = ProxyMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(proxy_histogram),
            in_flight: Family::default(),
            circuit_open: Family::default(),
        };
        registry.register(
            "proxy_requests",
            "Requests through /api/proxy by plugin and status class",
            m.requests.clone(),
        );
        registry.register(
            "proxy_request_duration_seconds",
            "Seconds until a plugin's response headers, through /api/proxy",
            m.duration.clone(),
        );
        registry.register(
            "proxy_in_flight",
            "Proxied requests in flight (until their response body ends), by plugin",
            m.in_flight.clone(),
        );
        registry.register(
            "proxy_circuit_open",
            "1 while the proxy's circuit breaker refuses requests to a plugin",
            m.circuit_open.clone(),
        );
        m
    }
}

/// Reason label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Condition reason.
    pub reason: String,
}

/// Every metric the core exports.
pub struct Metrics {
    registry: PromRegistry,
    /// `tessera_http_requests_total` and `tessera_http_request_duration_seconds`.
    pub http: tessera_sdk::http_metrics::HttpMetrics,
    /// Registrations by outcome.
    pub registrations: Family<OutcomeLabels, Counter>,
    /// Plugins by state (set at scrape time from the index).
    pub plugins: Family<StateLabels, Gauge>,
    /// Probe round durations.
    pub probe_duration: Histogram,
    /// Failed probe rounds by reason.
    pub probe_failures: Family<ReasonLabels, Counter>,
    /// Asset cache hits.
    pub asset_hits: Counter,
    /// Asset cache misses (fetched from the plugin).
    pub asset_misses: Counter,
    /// Bytes served from the asset path.
    pub asset_bytes: Counter,
    /// Open `/api/shell/events` streams.
    pub sse_clients: Gauge,
    /// Content-Security-Policy violations reported by shells, by plugin.
    pub csp_violations: Family<PluginLabels, Counter>,
    /// Open connections on the API listener.
    pub connections_open: Gauge,
    /// Connections refused or failed at accept, by reason (`global`, `per_client`,
    /// `accept_error`).
    pub connections_shed: Family<ReasonLabels, Counter>,
    /// The plugin API proxy.
    pub proxy: ProxyMetrics,
    /// Events between plugins.
    pub events: crate::events::metrics::EventsMetrics,
    /// Job metrics.
    pub jobs: crate::jobs::metrics::JobsMetrics,
    /// Webhook metrics.
    pub webhooks: crate::webhooks::metrics::WebhooksMetrics,
    /// Egress proxy metrics.
    pub egress: crate::egress::metrics::EgressMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = PromRegistry::with_prefix("tessera");
        let http = tessera_sdk::http_metrics::HttpMetrics::register(&mut registry, "");
        let registrations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "registrations",
            "Registration attempts by outcome (accepted, unchanged, or the error code)",
            registrations.clone(),
        );
        let plugins = Family::<StateLabels, Gauge>::default();
        registry.register("plugins", "Plugins by lifecycle state", plugins.clone());
        let probe_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "probe_duration_seconds",
            "Duration of one probe round (readiness and remote entry)",
            probe_duration.clone(),
        );
        let probe_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "probe_failures",
            "Failed probe rounds by reason",
            probe_failures.clone(),
        );
        let asset_hits = Counter::default();
        registry.register(
            "asset_cache_hits",
            "Remote files served from the cache",
            asset_hits.clone(),
        );
        let asset_misses = Counter::default();
        registry.register(
            "asset_cache_misses",
            "Remote files fetched from the plugin",
            asset_misses.clone(),
        );
        let asset_bytes = Counter::default();
        registry.register(
            "asset_bytes",
            "Bytes of remote files served",
            asset_bytes.clone(),
        );
        let sse_clients = Gauge::default();
        registry.register(
            "sse_clients",
            "Open shell event streams",
            sse_clients.clone(),
        );
        let csp_violations = Family::<PluginLabels, Counter>::default();
        registry.register(
            "csp_violations",
            "Content-Security-Policy violations reported by shells, by plugin (unknown when the blocked URL names none)",
            csp_violations.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Open connections on the API listener (event streams included)",
            connections_open.clone(),
        );
        let connections_shed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_shed",
            "Connections refused over a cap (global, per_client) or failed at accept (accept_error)",
            connections_shed.clone(),
        );
        let proxy = ProxyMetrics::register(&mut registry);
        let events = crate::events::metrics::EventsMetrics::register(&mut registry);
        let jobs = crate::jobs::metrics::JobsMetrics::register(&mut registry);
        let webhooks = crate::webhooks::metrics::WebhooksMetrics::register(&mut registry);
        let egress = crate::egress::metrics::EgressMetrics::register(&mut registry);
        for s in State::ALL {
            plugins
                .get_or_create(&StateLabels {
                    state: s.as_str().to_string(),
                })
                .set(0);
        }
        Metrics {
            registry,
            http,
            registrations,
            plugins,
            probe_duration,
            probe_failures,
            asset_hits,
            asset_misses,
            asset_bytes,
            sse_clients,
            csp_violations,
            connections_open,
            connections_shed,
            proxy,
            events,
            jobs,
            webhooks,
            egress,
        }
    }

    /// Sets the plugins-by-state gauge.
    pub fn set_plugin_states(&self, counts: &[(State, i64)]) {
        for (s, n) in counts {
            self.plugins
                .get_or_create(&StateLabels {
                    state: s.as_str().to_string(),
                })
                .set(*n);
        }
    }

    /// The Prometheus text exposition (format 0.0.4, what `promtool check metrics` and every
    /// Prometheus version read).
    pub fn encode(&self) -> String {
        let mut om = String::new();
        if prometheus_client::encoding::text::encode(&mut om, &self.registry).is_err() {
            return String::new();
        }
        tessera_sdk::prometheus_text::classic(&om)
    }
}
