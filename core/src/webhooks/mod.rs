//! Webhooks (`webhooks:ingest`): public `POST /hooks/{plugin}/{name}`. A request is checked
//! (the webhook exists on a registered plugin, the sender's rate, the size, the signature with
//! the plugin's secret, the timestamp), stored durably as an event for the webhook's own
//! subscription, answered 202, and delivered by the events machinery at least once
//! (`crate::events::hooks` has the wire format). A delivery id accepted in the last 24 h is
//! answered 202 again and not stored twice.
//!
//! ```text
//!  sender ─POST─▶ lookup ─▶ rate ─▶ verify (pure) ─▶ Events::ingest (durable) ─202─▶ sender
//!                                                          │
//!                                                          ▼ dispatch: call token kind webhook
//!                                                     plugin basePath + path
//! ```

pub mod metrics;
pub mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde::Deserialize;
use tessera_sdk::webhooks::Webhook;

use crate::config::WebhooksConfig;
use crate::error::{ApiError, Code};
use crate::events::Events;
use crate::events::subs::SubKey;
use crate::ratelimit::RateLimiter;
use crate::registry::Registry;
use crate::secrets::Secrets;
use crate::sync::lock;
use metrics::{Outcome, WebhooksMetrics};
use verify::Verdict;

/// Largest request body a webhook accepts.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How long a signing secret is reused before it is read again.
const KEY_TTL: Duration = Duration::from_secs(10);

/// What a sender is answered (202).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// Stored (or stored before: `duplicate`); delivered at least once.
    Accepted {
        /// The delivery id.
        id: String,
        /// Accepted before: not stored or delivered again.
        duplicate: bool,
    },
    /// Signed, but too old or too new: not delivered.
    Stale {
        /// Seconds off the core's clock.
        skew: i64,
    },
}

#[derive(Default, Deserialize)]
struct Fields {
    #[serde(default)]
    webhooks: Vec<Webhook>,
}

/// A signing key as read, and when (a key not set is not cached).
type CachedKey = (Instant, Option<String>);

/// The webhooks surface.
pub struct Webhooks {
    config: WebhooksConfig,
    secrets: Arc<Secrets>,
    events: Arc<Events>,
    limiter: RateLimiter,
    keys: Mutex<HashMap<(String, String), CachedKey>>,
    metrics: WebhooksMetrics,
}

impl Webhooks {
    /// The surface, storing through `events` and reading keys from `secrets`.
    pub fn new(
        config: WebhooksConfig,
        secrets: Arc<Secrets>,
        events: Arc<Events>,
        metrics: WebhooksMetrics,
    ) -> Webhooks {
        Webhooks {
            config,
            secrets,
            events,
            limiter: RateLimiter::default(),
            keys: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The signing key of `plugin`'s secret `name` (`None`: not set), cached briefly.
    async fn key(
        &self,
        plugin: &str,
        name: &str,
        record: &crate::model::PluginRecord,
    ) -> Result<Option<String>, ApiError> {
        let k = (plugin.to_string(), name.to_string());
        if let Some((at, v)) = lock(&self.keys).get(&k)
            && at.elapsed() < KEY_TTL
        {
            return Ok(v.clone());
        }
        let owner = self.secrets.owner(plugin, Some(record));
        let value = self
            .secrets
            .get(owner, name.to_string())
            .await
            .map_err(|e| {
                ApiError::new(
                    Code::StoreUnavailable,
                    format!("the webhook's signing secret cannot be read now: {e}"),
                )
            })?;
        // A secret not set yet is read again on the next request: an admin setting it is
        // heard at once.
        if value.is_some() {
            let mut keys = lock(&self.keys);
            if keys.len() > 10_000 {
                keys.clear();
            }
            keys.insert(k, (Instant::now(), value.clone()));
        }
        Ok(value)
    }

    /// Takes one request to `plugin`'s webhook `name`.
    pub async fn receive(
        &self,
        registry: &Registry,
        plugin: &str,
        name: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Received, ApiError> {
        let not_found = || {
            ApiError::new(
                Code::WebhookNotFound,
                format!("no webhook \"{name}\" is declared by a plugin named \"{plugin}\""),
            )
        };
        // The index's record, not a copy of it: this runs on every request a sender makes.
        let index = registry.index();
        let record = index.get(plugin).ok_or_else(not_found)?;
        // The version whose subscriptions the events machinery holds (see `events::subs::of`).
        let deployment = record.serving.as_ref().unwrap_or(&record.current);
        let hook = deployment
            .manifest
            .fields::<Fields>()
            .webhooks
            .into_iter()
            .find(|h| h.name == name)
            .ok_or_else(not_found)?;
        let count = |o: Outcome| self.metrics.count(plugin, name, o);
        if let Err(e) = self.limiter.check(
            &format!("{plugin}/{name}"),
            self.config.per_minute,
            "requests to this webhook",
        ) {
            count(Outcome::RateLimited);
            return Err(e);
        }
        if body.len() > MAX_BODY_BYTES {
            count(Outcome::TooLarge);
            return Err(ApiError::new(
                Code::PayloadTooLarge,
                format!(
                    "the body has {} bytes; a webhook takes at most {MAX_BODY_BYTES}",
                    body.len()
                ),
            ));
        }
        let key = match &hook.signature {
            Some(sig) => match self.key(plugin, &sig.secret, record).await? {
                Some(k) => Some(k),
                None => {
                    count(Outcome::NotConfigured);
                    return Err(ApiError::new(
                        Code::WebhookNotConfigured,
                        format!(
                            "webhook \"{name}\" of plugin \"{plugin}\" is signed with secret \"{}\", which is not set; an admin sets it",
                            sig.secret
                        ),
                    ));
                }
            },
            None if self.config.allows_unsigned(plugin, name) => None,
            None => {
                count(Outcome::Unsigned);
                return Err(ApiError::new(
                    Code::WebhookSignatureInvalid,
                    format!(
                        "webhook \"{name}\" of plugin \"{plugin}\" declares no signature and the core's config does not accept it unsigned (webhooks.unsigned)"
                    ),
                ));
            }
        };
        let now_ms = crate::model::now_ms();
        let delivery_id = match verify::check(
            &hook,
            key.as_deref().map(str::as_bytes),
            headers,
            body,
            now_ms.div_euclid(1000),
        ) {
            Verdict::Accept { delivery_id } => delivery_id,
            Verdict::Stale { skew } => {
                count(Outcome::Stale);
                return Ok(Received::Stale { skew });
            }
            Verdict::Refuse(why) => {
                count(Outcome::BadSignature);
                tracing::warn!(%plugin, webhook = %name, %why, "webhook request refused");
                return Err(ApiError::new(Code::WebhookSignatureInvalid, why));
            }
        };
        let named: Vec<&str> = hook
            .signature
            .iter()
            .map(|s| s.header.as_str())
            .chain(hook.delivery_id_header.as_deref())
            .chain(hook.timestamp_header.as_deref())
            .collect();
        let event =
            crate::events::hooks::event(plugin, name, &delivery_id, headers, &named, body, now_ms);
        let published = self
            .events
            .ingest(event, SubKey::webhook(plugin, name, &hook.path), registry)
            .await
            .map_err(|e| {
                count(Outcome::Failed);
                ApiError::new(
                    Code::StoreUnavailable,
                    format!("the request cannot be stored now; send it again: {e}"),
                )
            })?;
        count(if published.duplicate {
            Outcome::Duplicate
        } else {
            Outcome::Accepted
        });
        Ok(Received::Accepted {
            id: published.id,
            duplicate: published.duplicate,
        })
    }
}
