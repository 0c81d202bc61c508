//! The webhooks surface's metric family (`tessera_webhooks_requests_total`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// What became of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored for delivery.
    Accepted,
    /// A delivery id accepted before.
    Duplicate,
    /// A timestamp outside the tolerance.
    Stale,
    /// A missing or wrong signature.
    BadSignature,
    /// Unsigned, and not allowed so.
    Unsigned,
    /// The signing secret is not set.
    NotConfigured,
    /// Over the webhook's rate.
    RateLimited,
    /// Over 1 MiB.
    TooLarge,
    /// The store did not take it.
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
            Outcome::BadSignature => "bad_signature",
            Outcome::Unsigned => "unsigned",
            Outcome::NotConfigured => "not_configured",
            Outcome::RateLimited => "rate_limited",
            Outcome::TooLarge => "too_large",
            Outcome::Failed => "failed",
        }
    }
}

/// A request's plugin, webhook and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Plugin name.
    pub plugin: String,
    /// Webhook name.
    pub webhook: String,
    /// What became of it.
    pub outcome: String,
}

/// Webhook metrics.
#[derive(Clone, Debug, Default)]
pub struct WebhooksMetrics {
    /// Requests, by plugin, webhook and outcome.
    pub requests: Family<RequestLabels, Counter>,
}

impl WebhooksMetrics {
    /// Registers the family in `registry`.
    pub fn register(registry: &mut Registry) -> WebhooksMetrics {
        let m = WebhooksMetrics::default();
        registry.register(
            "webhooks_requests",
            "Requests to webhooks, by plugin, webhook and outcome (accepted, duplicate, stale, bad_signature, unsigned, not_configured, rate_limited, too_large, failed)",
            m.requests.clone(),
        );
        m
    }

    /// Counts one request.
    pub fn count(&self, plugin: &str, webhook: &str, outcome: Outcome) {
        self.requests
            .get_or_create(&RequestLabels {
                plugin: plugin.to_string(),
                webhook: webhook.to_string(),
                outcome: outcome.as_str().to_string(),
            })
            .inc();
    }
}
