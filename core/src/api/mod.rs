//! The HTTP API (axum). Handlers are thin: they authenticate, parse, and call the registry;
//! every error is an [`ApiError`] in the one envelope, with the request id added by middleware.
//!
//! One file a concern: `middleware` (request ids, security headers, metrics, header limits),
//! `register` (plugin registration), `admin` (plugins, tokens, audit), `shell` (the shell's list,
//! events and page), `assets` (remote files). The ordered registration checks are `crate::admit`.

mod admin;
mod assets;
mod auth;
mod events;
mod jobs;
mod middleware;
mod plugin_v1;
mod proxy;
mod register;
mod reports;
mod secrets;
mod shell;
mod views;
mod webhooks;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::assets::AssetCache;
use crate::auth::{AUD_ADMIN, Claims, Keys};
use crate::config::Config;
use crate::error::{ApiError, Code};
use crate::ratelimit::RateLimiter;
use crate::registry::{Actor, Registry};
use crate::telemetry::Metrics;

/// Largest request body accepted (registration carries a manifest of at most 1 MiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Everything handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The index and the only writer of state.
    pub registry: Arc<Registry>,
    /// The shell list's bytes, fed by the registry's commits.
    pub shell: Arc<crate::shell::list::ShellList>,
    /// Token authority.
    pub keys: Arc<Keys>,
    /// The plugin API proxy.
    pub proxy: Arc<crate::proxy::Proxy>,
    /// Events between plugins.
    pub events: Arc<crate::events::Events>,
    /// Plugins' scheduled jobs.
    pub jobs: Arc<crate::jobs::Jobs>,
    /// Plugin secrets.
    pub secrets: Arc<crate::secrets::Secrets>,
    /// Webhooks.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// ServiceAccounts that may register their plugin, and who checks their tokens.
    pub service_accounts: Arc<crate::auth::service_account::ServiceAccounts>,
    /// Who signs in (OpenID Connect), or everyone is `anonymous`.
    pub users: Arc<crate::users::Users>,
    /// Configuration in force.
    pub config: Arc<Config>,
    /// True once the first probe round after start has finished.
    pub probed: watch::Receiver<bool>,
    /// Rate limits.
    pub limiter: Arc<RateLimiter>,
    /// Remote file cache.
    pub assets: Arc<AssetCache>,
    /// Client for fetching remote files (no redirects, guarded DNS).
    pub http: reqwest::Client,
    /// Turns true when the server is shutting down (ends live streams).
    pub shutdown: watch::Receiver<bool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Path parameters; a path that cannot be decoded (invalid percent-encoding, not UTF-8) is
/// answered in the error envelope like every other refusal.
pub(crate) struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for ApiPath<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| ApiPath(t))
            .map_err(|e| {
                ApiError::new(
                    Code::InvalidRequest,
                    format!("the URL path cannot be read: {}", e.body_text()),
                )
            })
    }
}

/// The request id of the current request.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Every route, as (method, path template in OpenAPI form). `schemas/openapi.yaml` documents
/// exactly these; a test checks the two agree and that each is really routed.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/readyz"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/api/plugins/register"),
    ("GET", "/api/plugins"),
    ("GET", "/api/plugins/{name}"),
    ("DELETE", "/api/plugins/{name}"),
    ("POST", "/api/plugins/{name}/disable"),
    ("POST", "/api/plugins/{name}/enable"),
    ("POST", "/api/plugins/{name}/accept-remote"),
    ("GET", "/api/tokens"),
    ("POST", "/api/tokens"),
    ("POST", "/api/tokens/{jti}/revoke"),
    ("GET", "/api/audit"),
    ("GET", "/api/plugin/v1/whoami"),
    ("POST", "/api/plugin/v1/events"),
    ("GET", "/api/events/dead-letters"),
    ("POST", "/api/events/dead-letters/{id}/redrive"),
    ("DELETE", "/api/events/dead-letters/{id}"),
    ("GET", "/api/events/subscriptions"),
    ("PUT", "/api/plugin/v1/jobs/{name}"),
    ("DELETE", "/api/plugin/v1/jobs/{name}"),
    ("GET", "/api/plugins/{name}/jobs"),
    ("POST", "/api/plugins/{name}/jobs/{job}/run"),
    ("GET", "/api/plugin/v1/secrets/{name}"),
    ("GET", "/api/plugins/{name}/secrets"),
    ("PUT", "/api/plugins/{name}/secrets/{secret}"),
    ("DELETE", "/api/plugins/{name}/secrets/{secret}"),
    ("POST", "/hooks/{plugin}/{name}"),
    ("GET", "/auth/login"),
    ("GET", "/auth/callback"),
    ("POST", "/auth/logout"),
    ("GET", "/api/me"),
    ("GET", "/api/shell/remotes"),
    ("GET", "/api/shell/events"),
    ("POST", "/api/shell/reports"),
    ("GET", "/plugins/{name}/{version}/{path}"),
    ("GET", "/"),
    ("GET", "/shell/shell.js"),
    ("GET", "/shell/shell.css"),
    ("POST", "/api/shell/csp-reports"),
    ("GET", "/api/proxy/{name}/{path}"),
    ("POST", "/api/proxy/{name}/{path}"),
    ("PUT", "/api/proxy/{name}/{path}"),
    ("PATCH", "/api/proxy/{name}/{path}"),
    ("DELETE", "/api/proxy/{name}/{path}"),
];

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/.well-known/jwks.json", get(jwks))
        .merge(auth::routes())
        .merge(register::routes())
        .merge(admin::routes())
        .merge(shell::routes())
        .merge(reports::routes())
        .merge(assets::routes())
        .merge(plugin_v1::routes())
        .merge(proxy::routes())
        .merge(events::routes())
        .merge(jobs::routes())
        .merge(secrets::routes())
        .merge(webhooks::routes())
        // A new surface adds its module's `routes()` here, one line (see ARCHITECTURE.md).
        .fallback(|| async { ApiError::new(Code::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "this endpoint does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_id,
        ))
        .with_state(state)
}

// === helpers ===

pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::new(
            Code::TokenMissing,
            "an Authorization: Bearer <token> header is required",
        )
    })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::new(Code::TokenMalformed, "the Authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::new(
            Code::TokenMalformed,
            "the Authorization header must be \"Bearer <token>\"",
        )),
    }
}

pub(crate) async fn admin(state: &AppState, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let token = bearer(headers)?;
    state
        .keys
        .check(token, AUD_ADMIN, |j| state.registry.is_revoked(j))
        .await
}

/// The admin a request comes from: extracting it checks the admin bearer token (signature,
/// audience, expiry, revocation), so a handler that takes one cannot forget to. Audit events
/// name it `admin:<jti>` with the request id.
pub(crate) struct AdminActor(pub Actor);

impl axum::extract::FromRequestParts<AppState> for AdminActor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        // A signed-in user in adminGroups may use their session; bearer tokens stay for
        // automation (a request with an Authorization header is judged by its token alone).
        let has_session = state.users.signs_in()
            && crate::users::cookie_value(
                &auth::cookies(&parts.headers),
                crate::users::SESSION_COOKIE,
            )
            .is_some();
        if parts.headers.get(header::AUTHORIZATION).is_none() && has_session {
            let user = auth::user(state, &parts.headers)?;
            if !user.admin {
                return Err(ApiError::new(
                    Code::AdminRequired,
                    format!(
                        "user \"{}\" is not in one of auth.oidc.adminGroups",
                        user.sub
                    ),
                ));
            }
            // A cookie rides along with cross-site requests: changes need this origin.
            if !matches!(
                parts.method,
                axum::http::Method::GET | axum::http::Method::HEAD
            ) {
                reports::same_origin(&parts.headers, reports::Strictness::Required)?;
            }
            return Ok(AdminActor(Actor {
                who: format!("user:{}", user.sub),
                request_id,
            }));
        }
        let claims: Claims = admin(state, &parts.headers).await?;
        Ok(AdminActor(Actor {
            who: format!("admin:{}", claims.jti),
            request_id,
        }))
    }
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`].
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let bytes = read_body(headers, body).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            Code::InvalidRequest,
            format!("the request body is not the expected JSON: {e}"),
        )
    })
}

pub(crate) async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            Code::PayloadTooLarge,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes (1 MiB)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit")
            {
                too_large()
            } else {
                ApiError::new(
                    Code::InvalidRequest,
                    format!("the request body could not be read: {e}"),
                )
            }
        })
}

/// Most request headers the API reads (the listener lets up to 4x through, so the refusal is
/// this envelope rather than the HTTP parser's bare 431).
pub const MAX_HEADERS: usize = 100;
/// Most bytes of request headers the API reads.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

// === core endpoints ===

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut counts: Vec<(crate::model::State, i64)> =
        crate::model::State::ALL.iter().map(|s| (*s, 0)).collect();
    for rec in state.registry.list() {
        if let Some(c) = counts.iter_mut().find(|(s, _)| *s == rec.state) {
            c.1 += 1;
        }
    }
    state.metrics.set_plugin_states(&counts);
    state.proxy.export();
    state.events.export();
    let mut res = Response::new(Body::from(state.metrics.encode()));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if !state.registry.store_ok().await {
        return Err(ApiError::new(Code::NotReady, "the store does not answer"));
    }
    if !*state.probed.borrow() {
        return Err(ApiError::new(
            Code::NotReady,
            "the first probe round after start has not finished",
        ));
    }
    Ok(Json(json!({"status": "ready"})))
}

async fn jwks(State(state): State<AppState>) -> Response {
    let mut res = Json(state.keys.jwks()).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}
