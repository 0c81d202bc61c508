//! A plugin's `/metrics`: request counts and durations by route template and status, server
//! errors, and a registry handle for the app's own metrics.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// The standard metrics plus the app's own, in one registry.
#[derive(Clone)]
pub struct AppMetrics {
    registry: Arc<Mutex<Registry>>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    errors: Counter,
}

impl std::fmt::Debug for AppMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppMetrics").finish_non_exhaustive()
    }
}

pub use crate::prometheus_text::REQUIRED_PLUGIN_FAMILIES as REQUIRED_FAMILIES;

impl AppMetrics {
    /// A registry with the standard families.
    pub fn new() -> AppMetrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "plugin_http_requests",
            "HTTP requests by method, route template and status",
            requests.clone(),
        );
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "plugin_http_request_duration_seconds",
            "HTTP request durations by method and route template",
            duration.clone(),
        );
        // A plain counter so the family is always exposed; by route, use
        // plugin_http_requests_total{status=~"5.."}.
        let errors = Counter::default();
        registry.register(
            "plugin_http_errors",
            "HTTP responses with a 5xx status",
            errors.clone(),
        );
        AppMetrics {
            registry: Arc::new(Mutex::new(registry)),
            requests,
            duration,
            errors,
        }
    }

    /// The registry, to register the app's own metrics in.
    pub fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.into(),
                route: route.into(),
                status,
            })
            .inc();
        let r = RouteLabels {
            method: method.into(),
            route: route.into(),
        };
        self.duration.get_or_create(&r).observe(seconds);
        if status >= 500 {
            self.errors.inc();
        }
    }

    /// Prometheus text format 0.0.4.
    pub fn encode(&self) -> String {
        let mut om = String::new();
        if prometheus_client::encoding::text::encode(&mut om, &self.registry()).is_err() {
            return String::new();
        }
        crate::prometheus_text::classic(&om)
    }
}

impl Default for AppMetrics {
    fn default() -> Self {
        AppMetrics::new()
    }
}
