//! The plugin-facing API, `/api/plugin/v1/...`: what a registered plugin calls with the plugin
//! token its registration answered with (never a registration or admin token). The surfaces
//! that need a capability (events, jobs, secrets) land here, each behind [`PluginCaller`].

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{AppState, RequestId, bearer};
use crate::error::ApiError;
use crate::registry::Actor;

/// The plugin a request comes from: extracting it checks the plugin token (signature,
/// `aud: tessera-plugin`, expiry, revocation of the token and of the registration token it was
/// issued for).
pub(crate) struct PluginCaller {
    /// The plugin's name.
    pub(crate) plugin: String,
    /// Capabilities its token grants.
    pub(crate) capabilities: Vec<String>,
    /// When the token expires (seconds since the epoch).
    pub(crate) expires: u64,
    /// `plugin:<name>` with the request id, for the audit log.
    pub(crate) actor: Actor,
}

impl axum::extract::FromRequestParts<AppState> for PluginCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let claims = state
            .keys
            .check_plugin(bearer(&parts.headers)?, |j| {
                state.registry.is_revoked(j) || state.service_accounts.is_withdrawn(j)
            })
            .await?;
        Ok(PluginCaller {
            actor: Actor {
                who: format!("plugin:{}", claims.sub),
                request_id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()),
            },
            plugin: claims.sub,
            capabilities: claims.caps,
            expires: claims.exp.unwrap_or_default(),
        })
    }
}

impl PluginCaller {
    /// Refuses the call (403 `capability_not_granted`) unless the token grants `cap`.
    pub(crate) fn require(&self, cap: tessera_sdk::Capability) -> Result<(), ApiError> {
        if self.capabilities.iter().any(|c| c == cap.name()) {
            return Ok(());
        }
        Err(ApiError::new(
            crate::error::Code::CapabilityNotGranted,
            format!(
                "plugin \"{}\" is not granted \"{cap}\"; its registration token must grant it",
                self.plugin
            ),
        )
        .with_details(vec![serde_json::json!({
            "requested": [cap.name()],
            "granted": self.capabilities,
            "missing": [cap.name()],
        })]))
    }
}

/// `GET /api/plugin/v1/whoami`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WhoAmI {
    plugin: String,
    capabilities: Vec<String>,
    expires_at: String,
}

async fn whoami(caller: PluginCaller) -> Result<Response, ApiError> {
    let expires_at =
        tessera_sdk::time::rfc3339(i64::try_from(caller.expires).unwrap_or(i64::MAX), 0);
    Ok(Json(WhoAmI {
        plugin: caller.plugin,
        capabilities: caller.capabilities,
        expires_at,
    })
    .into_response())
}

/// The plugin-facing endpoints.
pub(super) fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/api/plugin/v1/whoami", axum::routing::get(whoami))
}
