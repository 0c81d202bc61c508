//! Webhooks on the plugin side: the delivery a webhook call carries ([`WebhookDelivery`], an
//! extractor).
//!
//! The core answers the sender (`POST /hooks/{plugin}/{name}`) once the delivery is durable and
//! its signature checked, then calls `POST endpoints.basePath + path` at least once with a call
//! token of kind `webhook` and the sender's body as it was sent: its `Content-Type`, the headers
//! the core keeps (see docs/webhooks.md), `Tessera-Webhook`, `Tessera-Delivery-Id`, and the
//! CloudEvents attributes in binary mode (`ce-id`, `ce-type: <plugin>.webhook.<name>`,
//! `ce-source`, `ce-time`, `ce-specversion`). A 2xx answer acks; anything else is retried like
//! an event. A delivery id is the same on every attempt, so a handler can make its work
//! idempotent by it.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Caller;

/// Headers of the delivery's own connection and call, not the sender's.
const CONNECTION_HEADERS: [&str; 7] = [
    "authorization",
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "accept",
    "accept-encoding",
];

/// One webhook delivery. Taking it as a handler argument refuses (403) any call that is not a
/// webhook delivery from the core.
///
/// ```ignore
/// Router::new().route("/hooks/github", post(|d: WebhookDelivery| async move {
///     let event = d.headers.get("x-github-event").cloned().unwrap_or_default();
///     tracing::info!(delivery = %d.delivery_id, %event, "github");
///     StatusCode::NO_CONTENT
/// }))
/// ```
#[derive(Clone, Debug)]
pub struct WebhookDelivery {
    /// The webhook's name in `plugin.yaml` (`Tessera-Webhook`).
    pub webhook: String,
    /// The delivery's id (`Tessera-Delivery-Id`): the sender's delivery id when the webhook
    /// names its header, else derived from the signature; the same on every attempt.
    pub delivery_id: String,
    /// `<plugin>.webhook.<name>` (`ce-type`).
    pub event_type: String,
    /// The sender's headers the core passed on (its `Content-Type`, `User-Agent`, `X-` headers
    /// and the headers the webhook names, such as `Stripe-Signature`), lowercase names.
    pub headers: BTreeMap<String, String>,
    /// The sender's body, byte for byte.
    pub body: Bytes,
    /// The verified caller (`sub: core`, `kind: webhook`).
    pub caller: Caller,
}

fn refuse(message: String) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({"error": {"code": "not_a_webhook_delivery", "message": message}})),
    )
        .into_response()
}

impl<S: Send + Sync> FromRequest<S> for WebhookDelivery {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let caller = Caller::from_request_parts(&mut parts, state).await?;
        if caller.kind != "webhook" || caller.sub != "core" {
            return Err(refuse(format!(
                "this route takes webhook deliveries from the core, not calls of kind \"{}\"",
                caller.kind
            )));
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (Some(webhook), Some(delivery_id), Some(event_type)) = (
            header("tessera-webhook"),
            header("tessera-delivery-id"),
            header("ce-type"),
        ) else {
            return Err(refuse(
                "a webhook delivery carries Tessera-Webhook, Tessera-Delivery-Id and ce-type"
                    .into(),
            ));
        };
        // The core passed on only the sender's headers it keeps; leave out its own and the
        // connection's.
        let headers = parts
            .headers
            .iter()
            .filter(|(k, _)| {
                let k = k.as_str();
                !k.starts_with("ce-")
                    && !k.starts_with("tessera-")
                    && !CONNECTION_HEADERS.contains(&k)
            })
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(WebhookDelivery {
            webhook,
            delivery_id,
            event_type,
            headers,
            body,
            caller,
        })
    }
}
