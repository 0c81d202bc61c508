//! `POST /api/plugins/register`: rate limits, the token, then `crate::admit`'s ordered checks,
//! then the registry.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{AUD_REGISTER, service_account};
use crate::error::{ApiError, Code};
use crate::model::ManifestJson;
use crate::registry::{Actor, Registration};
use crate::telemetry::OutcomeLabels;

use super::admin::view;
use super::{AppState, RequestId, bearer, json_body};
use crate::admit::{Grant, admit};

/// A registration's answer: the plugin as the admin API shows it, and its plugin token.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Registered<'a> {
    #[serde(flatten)]
    plugin: super::views::PluginView<'a>,
    plugin_token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterBody {
    manifest: Value,
    backend_url: String,
    remote_url: String,
}

pub(super) async fn register(
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

pub(super) async fn register_inner(
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
    // 1. token: one this core minted, or a ServiceAccount's the API server vouches for
    let token = bearer(&headers)?;
    let revoked = |j: &str| state.registry.is_revoked(j);
    let claims = if service_account::is_service_account_token(token) {
        state.service_accounts.check(token, revoked).await?
    } else {
        state.keys.check(token, AUD_REGISTER, revoked).await?
    };
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
    // 8. collisions (inside the registry, on its writer)
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
                token_id: claims.jti.clone(),
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
    // Every successful registration answers with a fresh plugin token (the SDK renews it by
    // registering again every 15 s, well within its hour).
    let (plugin_token, _) = state.keys.issue_plugin(&claims).map_err(|e| {
        ApiError::new(
            Code::Internal,
            format!("signing the plugin token failed: {e}"),
        )
    })?;
    let answer = Registered {
        plugin: view(&state, &out.record),
        plugin_token,
    };
    Ok((status, Json(answer)).into_response())
}

/// The registration endpoint.
pub(super) fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/api/plugins/register", axum::routing::post(register))
}
