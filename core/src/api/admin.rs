//! The admin API: plugins (list, view, disable, enable, accept-remote, delete), tokens (list,
//! mint, revoke) and the audit log. Every handler requires an admin token.

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tessera_sdk::manifest;

use super::views::{PluginList, PluginView};
use super::{AdminActor, ApiPath, AppState, json_body};
use crate::auth::{self};
use crate::error::{ApiError, Code};
use crate::model::PluginRecord;
use crate::store::AuditQuery;

pub(super) async fn list_plugins(
    State(state): State<AppState>,
    _admin: AdminActor,
) -> Result<Response, ApiError> {
    let index = state.registry.index();
    let items = index.records().map(|r| view(&state, r)).collect();
    Ok(Json(PluginList { items }).into_response())
}

pub(super) async fn get_plugin(
    State(state): State<AppState>,
    _admin: AdminActor,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let rec = state.registry.get(&name).ok_or_else(|| {
        ApiError::new(Code::PluginNotFound, format!("no plugin named \"{name}\""))
    })?;
    Ok(Json(view(&state, &rec)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisableBody {
    reason: String,
}

pub(super) async fn disable_plugin(
    State(state): State<AppState>,
    AdminActor(actor): AdminActor,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let b: DisableBody = json_body(&headers, body).await?;
    let reason = b.reason.trim();
    if reason.is_empty() || reason.len() > 1024 {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "a reason (1-1024 characters) is required to disable a plugin",
        ));
    }
    let rec = state.registry.disable(&name, reason, &actor).await?;
    Ok(Json(view(&state, &rec)).into_response())
}

pub(super) async fn enable_plugin(
    State(state): State<AppState>,
    AdminActor(actor): AdminActor,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let rec = state.registry.enable(&name, &actor).await?;
    Ok(Json(view(&state, &rec)).into_response())
}

pub(super) async fn accept_remote(
    State(state): State<AppState>,
    AdminActor(actor): AdminActor,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let rec = state.registry.accept_remote(&name, &actor).await?;
    state.assets.forget(&name);
    Ok(Json(view(&state, &rec)).into_response())
}

pub(super) async fn delete_plugin(
    State(state): State<AppState>,
    AdminActor(actor): AdminActor,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.registry.delete(&name, &actor).await?;
    state.assets.forget(&name);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MintBody {
    #[serde(default)]
    plugin: Option<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    ttl: Option<String>,
}

pub(super) async fn mint_token(
    State(state): State<AppState>,
    AdminActor(actor): AdminActor,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let raw: Value = json_body(&headers, body).await?;
    // A field given as null, or one that does not apply to the kind of token asked for, is an
    // error rather than silently ignored.
    if let Some(map) = raw.as_object() {
        if let Some((k, _)) = map.iter().find(|(_, v)| v.is_null()) {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!("\"{k}\" is null; leave it out instead"),
            ));
        }
        if map.get("admin") == Some(&json!(true))
            && let Some(k) = ["plugin", "capabilities", "namespace"]
                .into_iter()
                .find(|k| map.contains_key(*k))
        {
            return Err(ApiError::new(
                Code::InvalidRequest,
                format!("\"{k}\" does not apply to an admin token"),
            ));
        }
    }
    let b: MintBody = serde_json::from_value(raw).map_err(|e| {
        ApiError::new(
            Code::InvalidRequest,
            format!("the request body is not the expected JSON: {e}"),
        )
    })?;
    let ttl = b
        .ttl
        .as_deref()
        .map(auth::parse_ttl)
        .transpose()
        .map_err(|e| ApiError::new(Code::InvalidRequest, format!("ttl: {e}")))?;
    let signed = match (b.admin, b.plugin) {
        (true, None) => state
            .keys
            .issue_admin(ttl.unwrap_or(auth::ADMIN_TOKEN_TTL_SECS)),
        (false, Some(plugin)) => {
            let grant = auth::Grant::new(&plugin, &b.capabilities, b.namespace.as_deref())
                .map_err(|e| ApiError::new(Code::InvalidRequest, e.0))?;
            state.keys.issue_grant(&grant, ttl)
        }
        _ => {
            return Err(ApiError::new(
                Code::InvalidRequest,
                "give either \"plugin\" (with \"capabilities\") or \"admin\": true",
            ));
        }
    }
    .map_err(|e| ApiError::new(Code::Internal, format!("signing failed: {e}")))?;
    let (token, minted) = signed;
    state
        .registry
        .record_issued(minted.issued(&actor.who, auth::kid_of(&token)), &actor)
        .await?;
    tracing::info!(request_id = actor.request_id.as_deref().unwrap_or(""), actor = %actor.who, jti = %minted.jti, sub = %minted.sub, "token minted");
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "jti": minted.jti, "claims": minted})),
    )
        .into_response())
}

/// The token list: what was minted and whether it is revoked, never a token.
pub(super) async fn list_tokens(
    State(state): State<AppState>,
    _admin: AdminActor,
) -> Result<Json<Value>, ApiError> {
    let tokens: Vec<Value> = state
        .registry
        .tokens()
        .await?
        .into_iter()
        .map(|(t, revoked)| {
            let mut v = json!(t);
            v["revoked"] = json!(revoked);
            v
        })
        .collect();
    Ok(Json(Value::Array(tokens)))
}

pub(super) async fn revoke_token(
    State(state): State<AppState>,
    AdminActor(actor): AdminActor,
    ApiPath(jti): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    if jti.is_empty()
        || jti.len() > 128
        || !jti
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::new(Code::InvalidRequest, "not a token id"));
    }
    state.registry.revoke(&jti, &actor).await?;
    Ok(Json(json!({"jti": jti, "revoked": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    plugin: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

pub(super) async fn audit(
    State(state): State<AppState>,
    _admin: AdminActor,
    q: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text()))?;
    if let Some(p) = q.plugin.as_deref()
        && !manifest::is_plugin_name(p)
    {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "plugin must be a plugin name (lowercase letters, digits and '-', at most 63)",
        ));
    }
    if q.before.is_some_and(|b| b < 1) {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "before must be an event id (1 or more)",
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!("limit must be 1-1000, got {limit}; page with nextBefore"),
        ));
    }
    let items = state
        .registry
        .audit(AuditQuery {
            plugin: q.plugin,
            before: q.before,
            limit,
        })
        .await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|e| e.id))
        .flatten();
    Ok(Json(json!({"items": items, "nextBefore": next})))
}

/// The admin view of a plugin.
pub(super) fn view<'a>(state: &AppState, rec: &'a PluginRecord) -> PluginView<'a> {
    PluginView::new(rec, state.registry.stats(&rec.name))
}

/// The admin endpoints.
pub(super) fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/plugins", get(list_plugins))
        .route("/api/plugins/{name}", get(get_plugin).delete(delete_plugin))
        .route("/api/plugins/{name}/disable", post(disable_plugin))
        .route("/api/plugins/{name}/enable", post(enable_plugin))
        .route("/api/plugins/{name}/accept-remote", post(accept_remote))
        .route("/api/tokens", get(list_tokens).post(mint_token))
        .route("/api/tokens/{jti}/revoke", post(revoke_token))
        .route("/api/audit", get(audit))
}
