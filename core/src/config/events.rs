//! The events surface's settings (`events:`; the same keys in Helm values).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `events:` — how deliveries are retried and how long one may take.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Seconds one delivery may take before it counts as failed (and is retried).
    pub delivery_timeout_seconds: f64,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// Hours after its acceptance past which a failed delivery is not retried.
    pub max_age_hours: f64,
    /// Events one plugin may publish a minute (a burst of as many; 429 `rate_limited` past
    /// it): what one plugin can make the core hold for a subscriber that is away.
    pub publish_per_minute: u32,
    /// NATS JetStream, shared by every replica, instead of the SQLite outbox.
    pub nats: Option<NatsConfig>,
}

/// `events.nats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:4222` (several, comma-separated, for a NATS cluster).
    pub url: String,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            delivery_timeout_seconds: 30.0,
            max_attempts: 10,
            max_age_hours: 24.0,
            publish_per_minute: 60_000,
            nats: None,
        }
    }
}

impl EventsConfig {
    /// Refuses values that cannot work.
    pub fn check(&self) -> Result<(), ConfigError> {
        let t = self.delivery_timeout_seconds;
        if !(t.is_finite() && (0.1..=600.0).contains(&t)) {
            return Err(ConfigError::Invalid(
                "events.deliveryTimeoutSeconds must be between 0.1 and 600".into(),
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(ConfigError::Invalid(
                "events.maxAttempts must be between 1 and 100".into(),
            ));
        }
        if let Some(n) = &self.nats {
            let ok = !n.url.trim().is_empty()
                && n.url.split(',').all(|u| {
                    let u = u.trim();
                    ["nats://", "tls://", "ws://", "wss://"]
                        .iter()
                        .any(|s| u.starts_with(s))
                        && u.len() > 7
                });
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "events.nats.url must be nats://host:port (or tls://, several comma-separated), got \"{}\"",
                    n.url
                )));
            }
        }
        if self.publish_per_minute == 0 {
            return Err(ConfigError::Invalid(
                "events.publishPerMinute must be at least 1".into(),
            ));
        }
        let h = self.max_age_hours;
        if !(h.is_finite() && (0.01..=720.0).contains(&h)) {
            return Err(ConfigError::Invalid(
                "events.maxAgeHours must be between 0.01 and 720".into(),
            ));
        }
        Ok(())
    }

    /// The delivery timeout.
    pub fn delivery_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.delivery_timeout_seconds)
    }
}
