//! The webhooks surface's settings (`webhooks:`; the same keys in Helm values).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `webhooks:` — which hooks may go unsigned, and how often a sender may call one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Requests one webhook accepts a minute, in bursts of as many (429 `rate_limited` past
    /// it).
    pub per_minute: u32,
    /// Webhooks declared without `signature` that the core accepts anyway, as
    /// `<plugin>/<webhook>`; every other unsigned one is refused (401).
    pub unsigned: Vec<String>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            per_minute: 600,
            unsigned: Vec::new(),
        }
    }
}

impl WebhooksConfig {
    /// Whether the admin lets `plugin`'s webhook `name` go unsigned.
    pub fn allows_unsigned(&self, plugin: &str, name: &str) -> bool {
        self.unsigned
            .iter()
            .any(|u| u.split_once('/') == Some((plugin, name)))
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.per_minute == 0 {
            return Err(ConfigError::Invalid(
                "webhooks.perMinute must be at least 1".into(),
            ));
        }
        for u in &self.unsigned {
            let ok = u.split_once('/').is_some_and(|(p, n)| {
                tessera_sdk::manifest::is_plugin_name(p) && tessera_sdk::names::is_dns_label(n)
            });
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "webhooks.unsigned: \"{u}\" is not <plugin>/<webhook>"
                )));
            }
        }
        Ok(())
    }
}
