//! Events: `POST /api/plugin/v1/events` (a plugin publishes, plugin token with
//! `events:publish`) and the admin's view of deliveries (`/api/events/...`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tessera_sdk::Capability;

use super::plugin_v1::PluginCaller;
use super::{AdminActor, ApiPath, AppState, read_body};
use crate::error::{ApiError, Code};
use crate::events::envelope::{self, Refused};
use crate::events::outbox::DeadQuery;

fn unavailable(e: String) -> ApiError {
    ApiError::new(
        Code::StoreUnavailable,
        format!("the event store cannot be written: {e}"),
    )
}

/// `POST /api/plugin/v1/events`: 202 once the event is durable.
async fn publish(
    State(state): State<AppState>,
    caller: PluginCaller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(Capability::EventsPublish)?;
    state.limiter.check(
        &format!("publish:{}", caller.plugin),
        state.config.events.publish_per_minute,
        "events published by this plugin",
    )?;
    let bytes = read_body(&headers, body).await?;
    let event = envelope::accept(
        &bytes,
        &caller.plugin,
        crate::events::now_ms(),
        crate::auth::new_jti,
    )
    .map_err(|r| match r {
        Refused::Invalid(why) => ApiError::new(Code::InvalidEvent, why),
        Refused::TooLarge(n) => ApiError::new(
            Code::PayloadTooLarge,
            format!(
                "\"data\" is {n} bytes; an event's data may be at most {} bytes (256 KiB)",
                envelope::MAX_DATA_BYTES
            ),
        ),
        Refused::NotOwned(why) => ApiError::new(Code::EventTypeNotOwned, why),
    })?;
    let (source, ty) = (format!("/plugins/{}", caller.plugin), event.ty.clone());
    let published = state
        .events
        .publish(event, &state.registry)
        .await
        .map_err(unavailable)?;
    let time = tessera_sdk::time::rfc3339_ms(published.accepted_ms);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "id": published.id,
            "source": source,
            "type": ty,
            "time": time,
            "duplicate": published.duplicate,
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadParams {
    plugin: Option<String>,
    #[serde(rename = "type")]
    ty: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/events/dead-letters`.
async fn dead_letters(
    State(state): State<AppState>,
    _admin: AdminActor,
    q: Result<Query<DeadParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!("limit must be 1-1000, got {limit}"),
        ));
    }
    let items = state
        .events
        .dead_letters(DeadQuery {
            plugin: q.plugin,
            ty: q.ty,
            limit,
        })
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({ "items": items })).into_response())
}

fn no_dead_letter(id: &str) -> ApiError {
    ApiError::new(
        Code::DeadLetterNotFound,
        format!("no dead letter has the id \"{id}\""),
    )
}

/// Acts on dead letter `id` with `act` (false: there is none), then audits `action`.
async fn on_dead_letter<F, Fut>(
    state: &AppState,
    actor: &crate::registry::Actor,
    id: &str,
    action: &str,
    done: &str,
    act: F,
) -> Result<(), ApiError>
where
    F: FnOnce(i64) -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let n = id
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| no_dead_letter(id))?;
    if !act(n).await.map_err(unavailable)? {
        return Err(no_dead_letter(id));
    }
    state
        .registry
        .note(action, None, format!("dead letter {id} {done}"), actor)
        .await
}

/// `POST /api/events/dead-letters/{id}/redrive`: delivered again from a first attempt.
async fn redrive(
    State(state): State<AppState>,
    AdminActor(actor): AdminActor,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    on_dead_letter(&state, &actor, &id, "redrive-event", "redriven", |n| {
        state.events.redrive(n)
    })
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "redriven": true})),
    )
        .into_response())
}

/// `DELETE /api/events/dead-letters/{id}`.
async fn discard(
    State(state): State<AppState>,
    AdminActor(actor): AdminActor,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    on_dead_letter(&state, &actor, &id, "delete-dead-letter", "deleted", |n| {
        state.events.discard(n)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/events/subscriptions`.
async fn subscriptions(
    State(state): State<AppState>,
    _admin: AdminActor,
) -> Result<Response, ApiError> {
    let items = state
        .events
        .subscriptions(&state.registry)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({
        "durable": state.events.is_durable(),
        "engine": state.events.engine(),
        "items": items,
    }))
    .into_response())
}

/// The events endpoints.
pub(super) fn routes() -> axum::Router<AppState> {
    use axum::routing::{delete, get, post};
    axum::Router::new()
        .route("/api/plugin/v1/events", post(publish))
        .route("/api/events/dead-letters", get(dead_letters))
        .route("/api/events/dead-letters/{id}/redrive", post(redrive))
        .route("/api/events/dead-letters/{id}", delete(discard))
        .route("/api/events/subscriptions", get(subscriptions))
}
