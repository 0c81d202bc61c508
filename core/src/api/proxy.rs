//! `ANY /api/proxy/{name}/{*path}`: a plugin's UI calls its own backend through the core.
//!
//! Decides who calls (the signed-in user, or `anonymous` without sign-in), whether the call may
//! be made (the browser's own pages only, for anything but a plain read, when sessions are in
//! play), and where it goes (the version the shell is shown, Ready and enabled; otherwise 503
//! without dialing); `crate::proxy` carries it.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::Response;
use tessera_lifecycle::model::State as LifeState;

use super::reports::{Strictness, same_origin};
use super::{AppState, RequestId};
use crate::auth::call::OnBehalfOf;
use crate::error::{ApiError, Code};
use crate::proxy::{Call, headers};

const PREFIX: &str = "/api/proxy/";

async fn proxy(State(state): State<AppState>, req: Request<Body>) -> Result<Response, ApiError> {
    let rid = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let uri = req.uri().clone();
    let rest = uri.path().strip_prefix(PREFIX).unwrap_or_default();
    let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !tessera_sdk::manifest::is_plugin_name(name) {
        return Err(ApiError::new(
            Code::PluginNotFound,
            format!(
                "no plugin named \"{}\"",
                name.chars().take(64).collect::<String>()
            ),
        ));
    }
    // Who calls first (nothing about plugins is told to a caller without a session), then
    // which plugin, then what path.
    // A browser on another site may not use the signed-in user's cookie: reads refuse a
    // request that says it is cross-site; writes and WebSockets must say they are same-origin.
    let h = req.headers();
    same_origin(h, Strictness::IfSent)?;
    let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if state.users.signs_in() && (!reads || headers::is_websocket(h)) {
        same_origin(h, Strictness::Required)?;
    }
    let user = super::auth::user(&state, h)?;

    let index = state.registry.index();
    let Some(rec) = index.get(name) else {
        return Err(ApiError::new(
            Code::PluginNotFound,
            format!("no plugin named \"{name}\""),
        ));
    };
    let served = match (rec.exposed(), rec.state) {
        (Some(d), LifeState::Ready | LifeState::Registering) => d,
        _ => {
            let why = if rec.disabled.is_some() {
                "disabled by an admin".to_string()
            } else {
                format!("{} (not Ready)", rec.state.as_str())
            };
            return Err(ApiError::new(
                Code::PluginNotReady,
                format!("plugin {name} is not being served: {why}; the core did not call it"),
            ));
        }
    };
    if !headers::path_is_safe(path) {
        return Err(ApiError::new(
            Code::PathNotAllowed,
            "a proxied path may not hold '.' or '..' segments (plain or encoded) or backslashes",
        ));
    }
    let target = state.proxy.target(name, served);
    drop(index);
    let who = OnBehalfOf {
        sub: user.sub,
        tenant: user.tenant,
        groups: user.groups,
    };
    state
        .proxy
        .forward(
            &state.keys,
            &target,
            Call {
                path,
                query: uri.query(),
                who,
                request_id: &rid,
            },
            req,
        )
        .await
}

/// The proxy's routes.
pub(super) fn routes() -> axum::Router<AppState> {
    let any = axum::routing::any(proxy);
    axum::Router::new()
        .route("/api/proxy/{name}", any.clone())
        .route("/api/proxy/{name}/", any.clone())
        .route("/api/proxy/{name}/{*path}", any)
}
