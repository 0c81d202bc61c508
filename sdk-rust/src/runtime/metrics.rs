//! A plugin's `/metrics`: request counts and durations by route template and status, server
//! errors, and a registry handle for the app's own metrics.

use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// The standard metrics plus the app's own, in one registry.
#[derive(Clone)]
pub struct AppMetrics {
    registry: Arc<Mutex<Registry>>,
    http: crate::http_metrics::HttpMetrics,
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
        let http = crate::http_metrics::HttpMetrics::register(&mut registry, "plugin_");
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
            http,
            errors,
        }
    }

    /// The registry, to register the app's own metrics in.
    pub fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http.observe(method, route, status, seconds);
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
