//! The events surface's metric families (`tessera_events_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A plugin label (the publisher for `published`, the subscriber for the rest).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    /// Plugin name.
    pub plugin: String,
}

/// Event metrics.
#[derive(Clone, Debug)]
pub struct EventsMetrics {
    /// Events accepted, by publishing plugin.
    pub published: Family<PluginLabel, Counter>,
    /// Deliveries acknowledged, by subscribing plugin.
    pub delivered: Family<PluginLabel, Counter>,
    /// Attempts that failed and are tried again, by subscribing plugin.
    pub retried: Family<PluginLabel, Counter>,
    /// Deliveries given up, by subscribing plugin.
    pub dead_lettered: Family<PluginLabel, Counter>,
    /// Seconds from acceptance to an acknowledged delivery, by subscribing plugin.
    pub delivery_seconds: Family<PluginLabel, Histogram, fn() -> Histogram>,
    /// Age of the oldest undelivered event, by subscribing plugin (set at scrape time).
    pub lag_seconds: Family<PluginLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Undelivered events, by subscribing plugin (set at scrape time).
    pub pending: Family<PluginLabel, Gauge>,
    /// 1 when accepted events survive a crash (SQLite outbox), 0 when they live in memory.
    pub durable: Gauge,
}

fn delivery_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

impl EventsMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &mut Registry) -> EventsMetrics {
        let m = EventsMetrics {
            published: Family::default(),
            delivered: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            delivery_seconds: Family::new_with_constructor(delivery_histogram),
            lag_seconds: Family::default(),
            pending: Family::default(),
            durable: Gauge::default(),
        };
        let r = registry;
        r.register(
            "events_published",
            "Events accepted, by publishing plugin",
            m.published.clone(),
        );
        r.register(
            "events_delivered",
            "Event deliveries acknowledged (2xx), by subscribing plugin",
            m.delivered.clone(),
        );
        r.register(
            "events_retried",
            "Event delivery attempts that failed and will be tried again, by subscribing plugin",
            m.retried.clone(),
        );
        r.register(
            "events_dead_lettered",
            "Event deliveries given up (dead-lettered), by subscribing plugin",
            m.dead_lettered.clone(),
        );
        r.register("events_delivery_duration_seconds", "Seconds from an event's acceptance to its acknowledged delivery, by subscribing plugin", m.delivery_seconds.clone());
        r.register(
            "events_lag_seconds",
            "Age of the oldest undelivered event, by subscribing plugin",
            m.lag_seconds.clone(),
        );
        r.register(
            "events_pending",
            "Undelivered events (waiting, retrying or in flight), by subscribing plugin",
            m.pending.clone(),
        );
        r.register("events_durable", "1 when accepted events survive a crash of the core, 0 when delivery state is in memory", m.durable.clone());
        m
    }
}
