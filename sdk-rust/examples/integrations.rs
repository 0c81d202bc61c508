//! `integrations`: a plugin backend that uses the three surfaces a plugin needs to talk to the
//! world: it reads its API key with `fetch_secret`, calls an outside API with that key through
//! the core's egress proxy (`CoreClient::http()`), and receives GitHub-style signed webhooks
//! (`WebhookDelivery`), even those sent while it was down. It builds with the workspace;
//! docs/egress.md, docs/secrets.md and docs/webhooks.md point to it.
//!
//! Its config (`PLUGIN_CONFIG`) names the API: `{"apiBase": "http://127.0.0.1:9000"}` (the
//! default); `plugin.yaml`'s `egressAllow` must name that `host:port`, and a loopback or private
//! address must also be in the core's `egress.allow`. Run it beside a core:
//!
//! ```sh
//! mkdir -p /tmp/integrations-ui && echo 'var plugin_integrations = {};' > /tmp/integrations-ui/remoteEntry.js
//! CORE_BASE_URL=http://127.0.0.1:8080 PORT=7103 UI_REMOTE_PATH=/tmp/integrations-ui \
//!   REG_TOKEN=$(tessera token issue --plugin integrations \
//!     --capabilities http:outbound,secrets:read,webhooks:ingest) \
//!   target/debug/examples/integrations
//! ```
//!
//! Routes (under `/api`, through the core's proxy `/api/proxy/integrations/...`):
//! `GET /status` (the API's `/status.json`, called with `Authorization: Bearer <API_KEY>`),
//! `GET /deliveries` (the webhooks received), and `POST /hooks/github` (the core's deliveries).

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tessera_sdk::runtime::{self, Caller, CoreClient, PluginApp, WebhookDelivery};

#[derive(Default)]
struct Integrations {
    core: Mutex<Option<CoreClient>>,
    deliveries: Mutex<Vec<Value>>,
}

type Shared = Arc<Integrations>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The outside API's status, called with the plugin's API key: the key comes from the core
/// (`fetch_secret`, cached 60 s), the call goes out through the core's egress proxy.
async fn status(State(s): State<Shared>, caller: Caller) -> Response {
    let Some(core) = lock(&s.core).clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response();
    };
    let key = match core.fetch_secret("API_KEY").await {
        Ok(k) => k,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("API_KEY: {e}")).into_response(),
    };
    let base = core.config["apiBase"]
        .as_str()
        .unwrap_or("http://127.0.0.1:9000")
        .trim_end_matches('/')
        .to_string();
    let res = core
        .http()
        .get(format!("{base}/status.json"))
        .bearer_auth(key)
        .send()
        .await;
    match res {
        Ok(r) => {
            let code = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            axum::Json(json!({"for": caller.sub, "apiStatus": code, "api": body})).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{base}: {e}")).into_response(),
    }
}

/// One webhook delivery: the sender's body and headers, checked by the core (signature, replay)
/// before it answered the sender 202. The same delivery may arrive twice (at least once): key
/// any work by `delivery_id`.
async fn github(State(s): State<Shared>, d: WebhookDelivery) -> StatusCode {
    let event = d.headers.get("x-github-event").cloned().unwrap_or_default();
    tracing::info!(delivery = %d.delivery_id, %event, "github webhook");
    let mut seen = lock(&s.deliveries);
    if !seen.iter().any(|v| v["deliveryId"] == d.delivery_id) {
        seen.push(json!({
            "deliveryId": d.delivery_id,
            "event": event,
            "body": String::from_utf8_lossy(&d.body),
        }));
    }
    StatusCode::NO_CONTENT
}

async fn deliveries(State(s): State<Shared>) -> axum::Json<Value> {
    axum::Json(Value::Array(lock(&s.deliveries).clone()))
}

struct App(Shared);

impl PluginApp for App {
    fn routes(&self) -> Router {
        Router::new()
            .route("/status", get(status))
            .route("/deliveries", get(deliveries))
            // `WebhookDelivery` refuses (403) anything but a delivery from the core.
            .route("/hooks/github", post(github))
            .with_state(self.0.clone())
    }

    async fn on_start(&self, core: CoreClient) {
        *lock(&self.0.core) = Some(core);
    }
}

const MANIFEST: &str = r#"
name: integrations
version: "1.0.0"
compat: {core: "^2.5", backend_sdk: "^1.6"}
capabilities: [http:outbound, secrets:read, webhooks:ingest]
ui: {mode: ModuleFederation, remotePath: /mf/remoteEntry.js}
endpoints: {basePath: /api}
health: {livenessPath: /healthz, readinessPath: /readyz}
configSchema:
  type: object
  properties:
    apiBase: {type: string, format: uri}
secrets: [API_KEY, GITHUB_WEBHOOK_SECRET]
permissions:
  network:
    egressAllow: ["127.0.0.1:9000", "api.github.com:443"]
webhooks:
  - name: github
    path: /hooks/github
    signature:
      scheme: hmac-sha256
      header: X-Hub-Signature-256
      secret: GITHUB_WEBHOOK_SECRET
      prefix: "sha256="
    deliveryIdHeader: X-GitHub-Delivery
"#;

#[tokio::main]
async fn main() -> ExitCode {
    runtime::init_logging("integrations", "1.0.0");
    let manifest = match runtime::manifest_from_yaml(MANIFEST) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match runtime::serve(App(Shared::default()), manifest).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
