//! Webhooks: public `POST /hooks/{plugin}/{name}` (no token: the signature is the credential).
//! 202 `{"id", "duplicate"}` once the request is stored; 202 `{"queued": false, ...}` for a
//! signed request outside its timestamp tolerance; 401 `webhook_signature_invalid`; 404
//! `webhook_not_found`; 413; 429 `rate_limited`; 503 when it cannot be stored.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiPath, AppState, read_body};
use crate::error::ApiError;
use crate::webhooks::Received;

async fn receive(
    State(state): State<AppState>,
    ApiPath((plugin, name)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body).await?;
    let received = state
        .webhooks
        .receive(&state.registry, &plugin, &name, &headers, &bytes)
        .await?;
    let answer = match received {
        Received::Accepted { id, duplicate } => {
            json!({"id": id, "duplicate": duplicate, "queued": !duplicate})
        }
        Received::Stale { skew } => json!({
            "queued": false,
            "reason": format!("the timestamp is {skew} s off the core's clock, outside the webhook's tolerance; not delivered"),
        }),
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// The webhooks endpoint.
pub(super) fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/hooks/{plugin}/{name}", axum::routing::post(receive))
}
