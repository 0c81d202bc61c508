//! Webhooks, the contract: what `plugin.yaml`'s `webhooks` declares. A sender POSTs to
//! `/hooks/<plugin>/<name>` on the core; the core checks the signature with the value of one of
//! the plugin's secrets, stores the request, answers 202, and delivers it to
//! `endpoints.basePath + path` at least once as event type `<plugin>.webhook.<name>`.

use serde::{Deserialize, Serialize};

/// At most this many webhooks a plugin.
pub const MAX_WEBHOOKS: usize = 32;
/// `toleranceSeconds` when a `timestampHeader` is named and no tolerance is.
pub const DEFAULT_TOLERANCE_SECS: u32 = 300;

/// One webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhook {
    /// Unique within the plugin (`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`).
    pub name: String,
    /// Delivered as `POST endpoints.basePath + path`.
    pub path: String,
    /// How senders sign (absent: unsigned, accepted only where the admin allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    /// A header naming each delivery (`X-GitHub-Delivery`): seen within 24 h, not delivered
    /// twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id_header: Option<String>,
    /// A header with the send time in Unix seconds (or a `t=` part), signed with the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_header: Option<String>,
    /// How far the timestamp may be from the core's clock; filled in (300) when a
    /// `timestampHeader` is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance_seconds: Option<u32>,
}

/// `signature`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Signature {
    /// `hmac-sha256`.
    pub scheme: Scheme,
    /// The header carrying the signature.
    pub header: String,
    /// The secret (one of the manifest's `secrets`) whose value is the key.
    pub secret: String,
    /// What precedes the signature in the header (`sha256=`, `v1=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A signature scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scheme {
    /// HMAC with SHA-256, hex or base64.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

impl Webhook {
    /// The event type deliveries carry: `<plugin>.webhook.<name>`.
    pub fn event_type(&self, plugin: &str) -> String {
        format!("{plugin}.webhook.{}", self.name)
    }

    /// Fills in defaults (idempotent).
    pub fn normalize(&mut self) {
        if self.timestamp_header.is_some() && self.tolerance_seconds.is_none() {
            self.tolerance_seconds = Some(DEFAULT_TOLERANCE_SECS);
        }
    }
}
