//! The plugin API proxy's settings (`proxy:`; the same keys in Helm values).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `proxy:` — timeouts, body cap and concurrency of `/api/proxy/{plugin}/...`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Seconds to open a connection to a plugin.
    pub connect_timeout_seconds: f64,
    /// Seconds a plugin has to send its response headers.
    pub response_timeout_seconds: f64,
    /// Seconds a response body (or an upload) may go without a byte; a stream that keeps
    /// flowing has no total limit.
    pub idle_timeout_seconds: f64,
    /// Largest request body passed on (413 past it).
    pub max_body_bytes: u64,
    /// Most requests in flight to one plugin (503 `plugin_overloaded` past it).
    pub max_in_flight: u32,
    /// Overrides by plugin name.
    pub plugins: BTreeMap<String, ProxyPluginConfig>,
}

/// What one plugin may change of [`ProxyConfig`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyPluginConfig {
    /// Seconds the plugin has to send its response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout_seconds: Option<f64>,
    /// Largest request body passed on to the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Most requests in flight to the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout_seconds: 2.0,
            response_timeout_seconds: 30.0,
            idle_timeout_seconds: 60.0,
            max_body_bytes: 10 << 20,
            max_in_flight: 256,
            plugins: BTreeMap::new(),
        }
    }
}

/// The limits that apply to one plugin.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProxyLimits {
    /// Response-header timeout.
    pub response_timeout: Duration,
    /// Idle timeout of bodies.
    pub idle_timeout: Duration,
    /// Request body cap.
    pub max_body_bytes: u64,
    /// Concurrency cap.
    pub max_in_flight: u32,
}

impl ProxyConfig {
    /// The limits for `plugin` (its overrides over the defaults).
    pub fn limits(&self, plugin: &str) -> ProxyLimits {
        let o = self.plugins.get(plugin);
        ProxyLimits {
            response_timeout: Duration::from_secs_f64(
                o.and_then(|o| o.response_timeout_seconds)
                    .unwrap_or(self.response_timeout_seconds),
            ),
            idle_timeout: Duration::from_secs_f64(self.idle_timeout_seconds),
            max_body_bytes: o
                .and_then(|o| o.max_body_bytes)
                .unwrap_or(self.max_body_bytes),
            max_in_flight: o
                .and_then(|o| o.max_in_flight)
                .unwrap_or(self.max_in_flight),
        }
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout_seconds)
    }

    /// Every value in range; the message names the key.
    pub fn check(&self) -> Result<(), ConfigError> {
        let secs = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 86_400.0 {
                Ok(())
            } else {
                Err(ConfigError::Invalid(format!(
                    "{key}: {v} must be a number of seconds above 0 and at most 86400"
                )))
            }
        };
        secs("proxy.connectTimeoutSeconds", self.connect_timeout_seconds)?;
        secs(
            "proxy.responseTimeoutSeconds",
            self.response_timeout_seconds,
        )?;
        secs("proxy.idleTimeoutSeconds", self.idle_timeout_seconds)?;
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(ConfigError::Invalid(format!("{key} must be above 0")))
            } else {
                Ok(())
            }
        };
        positive("proxy.maxBodyBytes", self.max_body_bytes)?;
        positive("proxy.maxInFlight", u64::from(self.max_in_flight))?;
        for (name, o) in &self.plugins {
            if !tessera_sdk::manifest::is_plugin_name(name) {
                return Err(ConfigError::Invalid(format!(
                    "proxy.plugins: \"{name}\" is not a plugin name"
                )));
            }
            if let Some(v) = o.response_timeout_seconds {
                secs(&format!("proxy.plugins.{name}.responseTimeoutSeconds"), v)?;
            }
            if let Some(v) = o.max_body_bytes {
                positive(&format!("proxy.plugins.{name}.maxBodyBytes"), v)?;
            }
            if let Some(v) = o.max_in_flight {
                positive(&format!("proxy.plugins.{name}.maxInFlight"), u64::from(v))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn per_plugin_overrides_replace_only_what_they_name() {
        let c: ProxyConfig = serde_norway::from_str(
            "responseTimeoutSeconds: 5\nplugins:\n  slow:\n    responseTimeoutSeconds: 120\n    maxInFlight: 4\n",
        )
        .unwrap();
        c.check().unwrap();
        let slow = c.limits("slow");
        assert_eq!(slow.response_timeout, Duration::from_secs(120));
        assert_eq!(slow.max_in_flight, 4);
        assert_eq!(slow.max_body_bytes, 10 << 20);
        let other = c.limits("other");
        assert_eq!(other.response_timeout, Duration::from_secs(5));
        assert_eq!(other.max_in_flight, 256);
        assert_eq!(other.idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn impossible_values_are_refused_with_their_key() {
        for (yaml, key) in [
            ("connectTimeoutSeconds: 0", "proxy.connectTimeoutSeconds"),
            ("maxBodyBytes: 0", "proxy.maxBodyBytes"),
            (
                "plugins:\n  x:\n    maxInFlight: 0",
                "proxy.plugins.x.maxInFlight",
            ),
            ("plugins:\n  Bad_Name: {}", "proxy.plugins"),
        ] {
            let c: ProxyConfig = serde_norway::from_str(yaml).unwrap();
            let e = c.check().unwrap_err().to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }
}
