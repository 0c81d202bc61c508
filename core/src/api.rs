//! The HTTP API (axum). Handlers are thin: they authenticate, parse, and call the registry;
//! every error is an [`ApiError`] in the one envelope, with the request id added by middleware.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tessera_sdk::capability::{self, Capability};
use tessera_sdk::compat::{self, Versions};
use tessera_sdk::manifest;
use tokio::sync::watch;

use crate::assets::{self, AssetCache};
use crate::auth::{self, AUD_ADMIN, AUD_REGISTER, Claims, Keys};
use crate::config::Config;
use crate::error::{ApiError, Code, ErrorBody};
use crate::model::{ManifestJson, PluginRecord};
use crate::policy;
use crate::ratelimit::RateLimiter;
use crate::registry::{Actor, Registration, Registry};
use crate::shell;
use crate::store::AuditQuery;
use crate::telemetry::{HttpLabels, Metrics, OutcomeLabels, RouteLabels};

/// Largest request body accepted (registration carries a manifest of at most 1 MiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Everything handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The index and the only writer of state.
    pub registry: Arc<Registry>,
    /// Token authority.
    pub keys: Arc<Keys>,
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
    ("GET", "/api/shell/remotes"),
    ("GET", "/api/shell/events"),
    ("POST", "/api/shell/reports"),
    ("GET", "/plugins/{name}/{version}/{path}"),
    ("GET", "/"),
    ("GET", "/shell/shell.js"),
    ("GET", "/shell/shell.css"),
    ("POST", "/api/shell/csp-reports"),
];

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/api/plugins/register", post(register))
        .route("/api/plugins", get(list_plugins))
        .route("/api/plugins/{name}", get(get_plugin).delete(delete_plugin))
        .route("/api/plugins/{name}/disable", post(disable_plugin))
        .route("/api/plugins/{name}/enable", post(enable_plugin))
        .route("/api/plugins/{name}/accept-remote", post(accept_remote))
        .route("/api/tokens", get(list_tokens).post(mint_token))
        .route("/api/tokens/{jti}/revoke", post(revoke_token))
        .route("/api/audit", get(audit))
        .route("/api/shell/remotes", get(shell_remotes))
        .route("/api/shell/events", get(shell_events))
        .route("/api/shell/reports", post(crate::reports::shell_report))
        .route("/plugins/{name}/{version}/{*path}", get(asset))
        .route("/", get(shell_page))
        .route(
            "/shell/shell.js",
            get(|| async { shell::asset(shell::SHELL_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/shell/shell.css",
            get(|| async { shell::asset(shell::SHELL_CSS, "text/css; charset=utf-8") }),
        )
        .route("/api/shell/csp-reports", post(crate::reports::csp_report))
        .fallback(|| async { ApiError::new(Code::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "this endpoint does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

// === middleware ===

/// Gives every request an id (the caller's `X-Request-Id` when it is sane), echoes it, puts it
/// in error envelopes, logs the request, and sets the security headers every response carries.
async fn request_id(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(String::from)
        .unwrap_or_else(auth::new_jti);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    // The plugin a request is about, when its route names one.
    let plugin = route
        .split('/')
        .position(|seg| seg == "{name}")
        .and_then(|i| req.uri().path().split('/').nth(i))
        .map(String::from)
        .unwrap_or_default();
    let started = std::time::Instant::now();
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let mut res = if req.headers().len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        ApiError::new(
            Code::HeadersTooLarge,
            format!(
                "the request has {} headers of {header_bytes} bytes; the core reads at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes",
                req.headers().len()
            ),
        )
        .into_response()
    } else {
        next.run(req).await
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    if let Some(ErrorBody(code, body)) = res.extensions_mut().remove::<ErrorBody>() {
        let mut body = body;
        body["error"]["requestId"] = json!(id);
        let status = res.status();
        let retry = res.headers().get(header::RETRY_AFTER).cloned();
        tracing::info!(request_id = %id, %method, route, plugin, status = status.as_u16(), latency_ms, error_code = code.as_str(), "request failed");
        res = (status, Json(body)).into_response();
        if let Some(r) = retry {
            res.headers_mut().insert(header::RETRY_AFTER, r);
        }
    } else {
        tracing::debug!(request_id = %id, %method, route, plugin, status = res.status().as_u16(), latency_ms, "request");
    }
    let route_label = if route.starts_with('/') {
        route
    } else {
        "unmatched".to_string()
    };
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method: method.to_string(),
            route: route_label.clone(),
            status: res.status().as_u16(),
        })
        .inc();
    state
        .metrics
        .http_duration
        .get_or_create(&RouteLabels {
            method: method.to_string(),
            route: route_label,
        })
        .observe(started.elapsed().as_secs_f64());
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-request-id", v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

// === helpers ===

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
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

fn admin(state: &AppState, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let token = bearer(headers)?;
    state
        .keys
        .validate(token, AUD_ADMIN, |j| state.registry.is_revoked(j))
}

fn admin_actor(claims: &Claims, rid: &RequestId) -> Actor {
    Actor {
        who: format!("admin:{}", claims.jti),
        request_id: Some(rid.0.clone()),
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

/// Most problems an `invalid_manifest` answer lists (the message counts them all).
const MAX_PROBLEMS: usize = 100;

/// What a registration is allowed: by its token, or by the admin's config (static plugins).
pub(crate) struct Grant<'a> {
    /// The plugin it registers.
    pub plugin: &'a str,
    /// Capabilities granted.
    pub capabilities: &'a [Capability],
    /// Namespace its URLs must live in (cluster mode).
    pub namespace: Option<&'a str>,
}

/// Registration checks 3 to 7, in order, each with its own code: the manifest's schema and
/// rules (every problem), the grant's plugin, capabilities, compatibility, URL policy.
pub(crate) fn admit(
    config: &Config,
    manifest: &Value,
    grant: &Grant<'_>,
    backend_url: &str,
    remote_url: &str,
) -> Result<tessera_sdk::Manifest, ApiError> {
    // 3. schema and rules, every problem
    let report = manifest::validate(manifest);
    let m = report.into_result().map_err(|problems| {
        // Messages quote the offending values: bounded, so a huge value is not echoed back.
        let clip = |t: &str, max: usize| -> String {
            if t.len() <= max {
                return t.to_string();
            }
            let mut end = max;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}... ({} bytes)", &t[..end], t.len())
        };
        ApiError::new(
            Code::InvalidManifest,
            format!("the manifest is invalid: {} problem(s)", problems.len()),
        )
        .with_details(
            problems
                .iter()
                .take(MAX_PROBLEMS)
                .map(|p| json!({"path": clip(&p.path, 300), "message": clip(&p.message, 500)}))
                .collect(),
        )
    })?;
    // 4. the token is for this plugin
    if grant.plugin != m.name {
        return Err(ApiError::new(
            Code::TokenPluginMismatch,
            format!(
                "this token registers plugin \"{}\", not \"{}\"",
                grant.plugin, m.name
            ),
        )
        .with_details(vec![
            json!({"tokenPlugin": grant.plugin, "manifestName": m.name}),
        ]));
    }
    // 5. capabilities
    // Declaring panels or routes requests ui:panel / ui:route, listed or not.
    let check = capability::check_granted(&m.requested_capabilities(), grant.capabilities);
    if !check.is_satisfied() {
        let names = |v: &[Capability]| v.iter().map(|c| c.name()).collect::<Vec<_>>();
        return Err(ApiError::new(
            Code::CapabilityNotGranted,
            format!(
                "capabilities requested but not granted by the token: {}",
                names(&check.missing).join(", ")
            ),
        )
        .with_details(vec![json!({
            "requested": names(&check.requested),
            "granted": names(&check.granted),
            "missing": names(&check.missing),
        })]));
    }
    // 6. compatibility
    let misses = compat::check(&m.compat, &Versions::default());
    if !misses.is_empty() {
        return Err(ApiError::new(
            Code::IncompatibleCore,
            misses.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        )
        .with_details(
            misses
                .iter()
                .map(|x| json!({"field": x.field.field(), "range": x.range, "version": x.version.to_string(), "message": x.to_string()}))
                .collect(),
        ));
    }
    // 7. URL policy
    for (field, url) in [("backendUrl", backend_url), ("remoteUrl", remote_url)] {
        let cluster =
            (config.store == crate::config::StoreKind::Kubernetes).then_some(policy::Cluster {
                namespace: grant.namespace,
            });
        if let Err(r) = policy::check(url, &config.url_policy, cluster) {
            return Err(ApiError::new(
                Code::UrlNotAllowed,
                format!("{field} \"{}\" is not allowed: {}", r.url, r.message),
            )
            .with_details(vec![
                json!({"field": field, "url": r.url, "rule": r.rule, "message": r.message}),
            ]));
        }
    }
    Ok(m)
}

/// The admin view of a plugin.
fn view(state: &AppState, rec: &PluginRecord) -> Value {
    json!({
        "name": rec.name,
        "state": rec.state.as_str(),
        // An `Installed` plugin has no version yet.
        "version": (!rec.current.version.is_empty()).then_some(&rec.current.version),
        "servingVersion": rec.exposed().map(|d| d.version.clone()),
        "enabled": rec.disabled.is_none(),
        "disabled": rec.disabled,
        "conditions": rec.conditions,
        "probe": state.registry.stats(&rec.name),
        "backendUrl": rec.current.backend_url,
        "remoteUrl": rec.current.remote_url,
        "integrity": rec.current.integrity,
        "registeredAt": rec.current.registered_at,
        "updatedAt": rec.updated_at,
        "manifest": rec.current.manifest,
    })
}

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

// === registration ===

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterBody {
    manifest: Value,
    backend_url: String,
    remote_url: String,
}

async fn register(
    State(state): State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    rid: axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let result = register_inner(state.clone(), peer, rid, headers, body).await;
    let outcome = match &result {
        Ok(res) if res.status() == StatusCode::CREATED => "accepted".to_string(),
        Ok(_) => "unchanged".to_string(),
        Err(e) => e.code.as_str().to_string(),
    };
    state
        .metrics
        .registrations
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
    result
}

async fn register_inner(
    state: AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(rid): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limits = &state.config.rate_limit;
    state.limiter.check(
        &format!("addr:{}", peer.ip()),
        limits.per_address_per_minute,
        "registrations from this address",
    )?;
    // 1. token
    let claims = state.keys.validate(bearer(&headers)?, AUD_REGISTER, |j| {
        state.registry.is_revoked(j)
    })?;
    state.limiter.check(
        &format!("token:{}", claims.jti),
        limits.per_token_per_minute,
        "registrations with this token",
    )?;
    // 2. size
    let req: RegisterBody = json_body(&headers, body).await?;
    // 3.-7. schema and rules, the token's plugin, capabilities, compatibility, URL policy
    let m = admit(
        &state.config,
        &req.manifest,
        &Grant {
            plugin: &claims.sub,
            capabilities: &claims.capabilities(),
            namespace: claims.ns.as_deref(),
        },
        &req.backend_url,
        &req.remote_url,
    )?;
    // 8. collisions (inside the registry, under its write lock)
    let actor = Actor {
        who: format!("plugin:{}", m.name),
        request_id: Some(rid.0.clone()),
    };
    let out = state
        .registry
        .register(
            Registration {
                name: m.name.clone(),
                version: m.version.to_string(),
                manifest: ManifestJson::new(&m.to_json()).map_err(|e| {
                    ApiError::new(Code::Internal, format!("the manifest cannot be kept: {e}"))
                })?,
                backend_url: req.backend_url,
                remote_url: req.remote_url,
                token_id: claims.jti,
            },
            &actor,
        )
        .await?;
    if out.changed {
        state.assets.forget(&m.name);
    }
    let status = if out.changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&state, &out.record))).into_response())
}

// === admin ===

async fn list_plugins(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers)?;
    let items: Vec<Value> = state
        .registry
        .list()
        .iter()
        .map(|r| view(&state, r))
        .collect();
    Ok(Json(json!({"items": items})))
}

async fn get_plugin(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers)?;
    let rec = state.registry.get(&name).ok_or_else(|| {
        ApiError::new(Code::PluginNotFound, format!("no plugin named \"{name}\""))
    })?;
    Ok(Json(view(&state, &rec)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisableBody {
    reason: String,
}

async fn disable_plugin(
    State(state): State<AppState>,
    axum::Extension(rid): axum::Extension<RequestId>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let claims = admin(&state, &headers)?;
    let b: DisableBody = json_body(&headers, body).await?;
    let reason = b.reason.trim();
    if reason.is_empty() || reason.len() > 1024 {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "a reason (1-1024 characters) is required to disable a plugin",
        ));
    }
    let rec = state
        .registry
        .disable(&name, reason, &admin_actor(&claims, &rid))
        .await?;
    Ok(Json(view(&state, &rec)))
}

async fn enable_plugin(
    State(state): State<AppState>,
    axum::Extension(rid): axum::Extension<RequestId>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let claims = admin(&state, &headers)?;
    let rec = state
        .registry
        .enable(&name, &admin_actor(&claims, &rid))
        .await?;
    Ok(Json(view(&state, &rec)))
}

async fn accept_remote(
    State(state): State<AppState>,
    axum::Extension(rid): axum::Extension<RequestId>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let claims = admin(&state, &headers)?;
    let rec = state
        .registry
        .accept_remote(&name, &admin_actor(&claims, &rid))
        .await?;
    state.assets.forget(&name);
    Ok(Json(view(&state, &rec)))
}

async fn delete_plugin(
    State(state): State<AppState>,
    axum::Extension(rid): axum::Extension<RequestId>,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let claims = admin(&state, &headers)?;
    state
        .registry
        .delete(&name, &admin_actor(&claims, &rid))
        .await?;
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

async fn mint_token(
    State(state): State<AppState>,
    axum::Extension(rid): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let claims = admin(&state, &headers)?;
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
        (true, None) => state.keys.issue_admin(ttl.unwrap_or(12 * 3600)),
        (false, Some(plugin)) => {
            if !manifest::is_plugin_name(&plugin) {
                return Err(ApiError::new(
                    Code::InvalidRequest,
                    format!("plugin \"{plugin}\" is not a valid plugin name"),
                ));
            }
            if let Some(ns) = b.namespace.as_deref()
                && !manifest::is_plugin_name(ns)
            {
                return Err(ApiError::new(
                    Code::InvalidRequest,
                    format!("namespace \"{ns}\" is not a Kubernetes namespace name"),
                ));
            }
            let caps = b
                .capabilities
                .iter()
                .map(|c| Capability::parse(c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::new(Code::InvalidRequest, e.to_string()))?;
            state
                .keys
                .issue_registration(&plugin, &caps, b.namespace, ttl)
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
    let actor = admin_actor(&claims, &rid);
    state
        .registry
        .record_issued(minted.issued(&actor.who), &actor)
        .await?;
    tracing::info!(request_id = %rid.0, actor = %actor.who, jti = %minted.jti, sub = %minted.sub, "token minted");
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "jti": minted.jti, "claims": minted})),
    )
        .into_response())
}

/// The token list: what was minted and whether it is revoked, never a token.
async fn list_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers)?;
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

async fn revoke_token(
    State(state): State<AppState>,
    axum::Extension(rid): axum::Extension<RequestId>,
    headers: HeaderMap,
    ApiPath(jti): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let claims = admin(&state, &headers)?;
    if jti.is_empty()
        || jti.len() > 128
        || !jti
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::new(Code::InvalidRequest, "not a token id"));
    }
    state
        .registry
        .revoke(&jti, &admin_actor(&claims, &rid))
        .await?;
    Ok(Json(json!({"jti": jti, "revoked": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    plugin: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers)?;
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

// === shell ===

async fn shell_remotes(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let snap = state.registry.shell();
    // Browsers send Accept-Encoding: gzip; the compressed bytes were built with the list.
    let gzip = accepts_gzip(&headers);
    let etag_text = if gzip {
        format!("{}-gzip\"", snap.etag.trim_end_matches('"'))
    } else {
        snap.etag.clone()
    };
    let etag = HeaderValue::from_str(&etag_text).unwrap_or(HeaderValue::from_static("\"0\""));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').map(str::trim).any(|t| {
                let t = t.strip_prefix("W/").unwrap_or(t);
                t == snap.etag || t == etag_text || t == "*"
            })
        });
    let mut res = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = if gzip { snap.gzip() } else { snap.body.clone() };
        let mut r = Response::new(Body::from(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if gzip {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    res
}

/// Whether the client accepts gzip (and has not refused it with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let q_zero =
                parts.any(|p| p.replace(' ', "") == "q=0" || p.replace(' ', "") == "q=0.0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q_zero
        })
}

async fn shell_events(State(state): State<AppState>) -> Response {
    let mut rx = state.registry.subscribe();
    let mut shutdown = state.shutdown.clone();
    let metrics = state.metrics.clone();
    // Every stream sends the snapshot's prebuilt event bytes by reference: a change costs one
    // copy of the list, not one per open shell.
    let stream = async_stream(move |tx| async move {
        metrics.sse_clients.inc();
        let _open = OnDrop(move || {
            metrics.sse_clients.dec();
        });
        let first = rx.borrow_and_update().clone();
        if tx.send(Ok(first.event())).await.is_err() {
            return;
        }
        let every = Duration::from_secs(15);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            let next = tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() { return; }
                    let snap = rx.borrow_and_update().clone();
                    snap.event()
                }
                _ = heartbeat.tick() => bytes::Bytes::from_static(b":heartbeat\n\n"),
                _ = shutdown.changed() => return,
            };
            if tx.send(Ok(next)).await.is_err() {
                return;
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// Runs a closure when dropped (however the stream ends).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<bytes::Bytes, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<bytes::Bytes, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn shell_page(State(state): State<AppState>) -> Response {
    shell::page(&state.config.shell.remote_origins)
}

// === assets ===

async fn asset(
    State(state): State<AppState>,
    ApiPath((name, version, path)): ApiPath<(String, String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The path as sent: an encoded character (`sub%2fx.js`) would otherwise reach the checks
    // below already decoded.
    // (Only the file path: a version's `+` may arrive as `%2B`.)
    if uri
        .path()
        .splitn(5, '/')
        .nth(4)
        .is_some_and(|p| p.contains('%'))
    {
        return Err(ApiError::new(
            Code::PathNotAllowed,
            "encoded characters are not allowed in remote file paths",
        ));
    }
    let content_type = assets::allowed_type(&path).ok_or_else(|| {
        ApiError::new(
            Code::FileTypeNotAllowed,
            format!(
                "\"{}\" is not a file type a remote needs; the core serves only {}",
                path.chars().take(200).collect::<String>(),
                assets::ALLOWED_EXTENSIONS
            ),
        )
    })?;
    let path = assets::safe_path(&path)
        .ok_or_else(|| {
            ApiError::new(
                Code::PathNotAllowed,
                format!("\"{path}\" is not a file path under the remote's directory"),
            )
        })?
        .to_string();
    let (remote_url, integrity) = match state.registry.serving(&name, &version) {
        None => {
            return Err(ApiError::new(
                Code::PluginNotFound,
                format!("no plugin named \"{name}\""),
            ));
        }
        Some(Err(st)) => {
            return Err(ApiError::new(
                Code::PluginNotReady,
                format!(
                    "plugin \"{name}\" version {version} is not being served (state {})",
                    st.as_str()
                ),
            ));
        }
        Some(Ok(found)) => found,
    };
    let Some(integrity) = integrity else {
        return Err(ApiError::new(
            Code::PluginNotReady,
            format!("plugin \"{name}\" version {version} has no pinned remote entry yet"),
        ));
    };
    // Every file of a remote is named, in the cache and in its ETag, by the entry it belongs
    // to: a rebuilt entry under the same version never meets the chunks of the old one.
    let etag = assets::etag(&integrity, &path);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok(asset_response(
            StatusCode::NOT_MODIFIED,
            Body::empty(),
            content_type,
            &etag,
        ));
    }
    let (dir, entry_file) = remote_url.rsplit_once('/').unwrap_or((&remote_url, ""));
    let bytes = if path == entry_file {
        remote_entry(&state, &name, &version, &remote_url, &integrity).await?
    } else {
        let key = assets::key(&name, &version, &integrity, &path);
        match state.assets.get(&key) {
            Some(b) => {
                state.metrics.asset_hits.inc();
                b
            }
            None => {
                state.metrics.asset_misses.inc();
                let url = format!("{dir}/{path}");
                let b = crate::probe::get(&state.http, &url, 16 << 20)
                    .await
                    .map_err(|e| {
                        ApiError::new(
                            Code::UpstreamFailed,
                            format!("fetching {path} from plugin \"{name}\" failed: {e}"),
                        )
                    })?;
                state.assets.put(key, b.clone());
                b
            }
        }
    };
    Ok(asset_response(
        StatusCode::OK,
        Body::from(bytes),
        content_type,
        &etag,
    ))
}

/// The remote entry of a served version: the bytes the prober hashed, or, when this core has
/// not fetched them yet (just after a start), fetched now and served only if they still have
/// the pinned integrity.
async fn remote_entry(
    state: &AppState,
    name: &str,
    version: &str,
    remote_url: &str,
    integrity: &str,
) -> Result<Bytes, ApiError> {
    let held = state.registry.remote_entry(name, version);
    let fetched = held.is_none();
    let bytes = match held {
        Some(b) => b,
        None => crate::probe::get(
            &state.http,
            remote_url,
            crate::probe::MAX_REMOTE_ENTRY_BYTES,
        )
        .await
        .map_err(|e| {
            ApiError::new(
                Code::UpstreamFailed,
                format!("fetching the remote entry of plugin \"{name}\" failed: {e}"),
            )
        })?,
    };
    if crate::registry::integrity(&bytes) != integrity {
        return Err(ApiError::new(
            Code::PluginNotReady,
            format!("the remote entry of \"{name}\" {version} changed; withdrawn"),
        ));
    }
    if fetched {
        state.registry.keep_remote_bytes(name, version, &bytes);
    }
    Ok(bytes)
}

/// A remote file's response: one of the types a remote needs, under a policy that keeps it from
/// running as a page, revalidated by the browser on every use (`no-cache` with a strong ETag),
/// since a file's URL does not change when a plugin rebuilds its UI under the same version.
fn asset_response(
    status: StatusCode,
    body: Body,
    content_type: &'static str,
    etag: &str,
) -> Response {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(assets::FILE_CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    res
}
