//! `hello`, the template plugin's backend: three example routes under `endpoints.basePath`,
//! on top of everything `tessera_sdk::runtime::serve` provides (health, readiness, metrics,
//! manifest, the UI files, registration with the core, the call-token check):
//!
//! - `GET /v1/greeting`: the configured greeting;
//! - `GET /v1/caller`: who the core calls on behalf of (the verified call token);
//! - `GET /v1/whoami`: what the core says of this plugin (`/api/plugin/v1/whoami`, with the
//!   plugin token the SDK keeps fresh).
//!
//! Every route answers only calls from the core: a request without a call token gets 401.
//!
//! Run it beside a core (`tessera dev` does all of this):
//!
//! ```sh
//! CORE_BASE_URL=http://127.0.0.1:8080 REG_TOKEN=$(tessera token issue --plugin hello \
//!   --capabilities ui:panel,ui:route) UI_REMOTE_PATH=plugin-template/ui/dist PORT=7001 hello-plugin
//! ```

use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use tessera_sdk::runtime::{self, Caller, CoreClient, PluginApp};

/// The plugin's state: the configured greeting, and the client for the core.
#[derive(Default)]
struct Hello {
    greeting: Arc<RwLock<String>>,
    core: Arc<RwLock<Option<CoreClient>>>,
}

impl PluginApp for Hello {
    fn routes(&self) -> Router {
        Router::new()
            .route("/v1/greeting", get(greeting))
            .with_state(self.greeting.clone())
            .route("/v1/caller", get(caller))
            .route("/v1/whoami", get(whoami).with_state(self.core.clone()))
    }

    async fn on_start(&self, core: CoreClient) {
        if let Ok(mut c) = self.core.write() {
            *c = Some(core.clone());
        }
        let configured = core
            .config
            .get("greeting")
            .and_then(Value::as_str)
            .unwrap_or("Hello")
            .to_string();
        if let Ok(mut g) = self.greeting.write() {
            *g = configured;
        }
    }
}

async fn greeting(State(word): State<Arc<RwLock<String>>>) -> axum::Json<Value> {
    let word = word
        .read()
        .map(|g| g.clone())
        .unwrap_or_else(|_| "Hello".to_string());
    axum::Json(json!({ "greeting": format!("{word}, world") }))
}

/// Who the core calls on behalf of: the SDK verified the call token before this runs.
async fn caller(caller: Caller) -> axum::Json<Value> {
    axum::Json(json!({
        "sub": caller.sub, "tenant": caller.tenant, "groups": caller.groups, "kind": caller.kind,
    }))
}

/// What the core says of this plugin, asked with the plugin token.
async fn whoami(State(core): State<Arc<RwLock<Option<CoreClient>>>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let client = core.read().ok().and_then(|c| c.clone());
    let Some(client) = client else {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting").into_response();
    };
    match client.whoami().await {
        Ok(me) => axum::Json(me).into_response(),
        Err(e) => (
            axum::http::StatusCode::BAD_GATEWAY,
            axum::Json(
                json!({"error": {"code": "core_refused", "message": e.to_string(), "details": []}}),
            ),
        )
            .into_response(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // `hello-plugin healthcheck`: the container image's HEALTHCHECK.
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return runtime::healthcheck().await;
    }
    let manifest = match runtime::manifest_from_yaml(include_str!("../../plugin.yaml")) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    runtime::init_logging(&manifest.name, &manifest.version.to_string());
    match runtime::serve(Hello::default(), manifest).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(runtime::ServeError::Config(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
