//! The HTTP metric families the core and every plugin expose, defined once: requests by
//! method, route template and status, and their durations by method and route template, with
//! the same buckets (0.5 ms doubling to about 16 s), so a dashboard reads both alike.

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

/// `<prefix>http_requests_total` and `<prefix>http_request_duration_seconds`.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl HttpMetrics {
    /// The two families, registered in `registry` with names starting with `prefix` (the
    /// registry's own prefix, if any, comes first).
    pub fn register(registry: &mut Registry, prefix: &str) -> HttpMetrics {
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            format!("{prefix}http_requests"),
            "HTTP requests by method, route template and status",
            requests.clone(),
        );
        let duration = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register(
            format!("{prefix}http_request_duration_seconds"),
            "HTTP request durations by method and route template",
            duration.clone(),
        );
        HttpMetrics { requests, duration }
    }

    /// Counts one request and its duration. `route` is a route template, never a raw path.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.into(),
                route: route.into(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels {
                method: method.into(),
                route: route.into(),
            })
            .observe(seconds);
    }
}
