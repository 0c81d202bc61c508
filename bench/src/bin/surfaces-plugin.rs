//! `surfaces-plugin`, a plugin on the Rust SDK for the tests of the last three surfaces: it reads
//! secrets with `CoreClient::fetch_secret`, receives webhooks, and calls out through the
//! core's egress proxy with `CoreClient::http()`.
//!
//! Environment, besides every SDK plugin's (`PORT`, `CORE_BASE_URL`, `REG_TOKEN`):
//! - `PLUGIN_NAME` (default `surfaces-test`), `CAPABILITIES` (comma-separated, default
//!   `secrets:read`);
//! - `MANIFEST_EXTRA`: YAML appended to the manifest (`secrets`, `webhooks`, `permissions`);
//! - `RECORD_FILE`: one JSON line per webhook delivery received (kept across restarts).
//!
//! Public routes (a test's controls): `GET /api/public/secret/{name}` (answers what
//! `fetch_secret` answered), `GET /api/public/deliveries` (webhook deliveries this process
//! received), `GET /api/public/fetch?url=...` (a GET through `CoreClient::http()`).

#[allow(dead_code)]
mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tessera_sdk::runtime::{self, CoreClient, PluginApp, WebhookDelivery};

#[derive(Default)]
struct Shared {
    core: Mutex<Option<CoreClient>>,
    deliveries: Mutex<Vec<Value>>,
    record: Option<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct App(Arc<Shared>);

fn refused(e: runtime::CoreError) -> Response {
    match e {
        runtime::CoreError::Refused {
            status,
            code,
            message,
        } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            axum::Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response(),
        e => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

fn core(s: &Shared) -> Option<CoreClient> {
    lock(&s.core).clone()
}

async fn secret(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let Some(core) = core(&s) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not started").into_response();
    };
    match core.fetch_secret(&name).await {
        Ok(value) => axum::Json(json!({"name": name, "value": value})).into_response(),
        Err(e) => refused(e),
    }
}

async fn hook(State(s): State<Arc<Shared>>, d: WebhookDelivery) -> Response {
    let line = json!({
        "webhook": d.webhook,
        "deliveryId": d.delivery_id,
        "type": d.event_type,
        "headers": d.headers,
        "body": String::from_utf8_lossy(&d.body),
        "caller": {"sub": d.caller.sub, "kind": d.caller.kind},
    });
    if let Some(path) = &s.record
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
    lock(&s.deliveries).push(line);
    StatusCode::NO_CONTENT.into_response()
}

async fn deliveries(State(s): State<Arc<Shared>>) -> axum::Json<Value> {
    axum::Json(Value::Array(lock(&s.deliveries).clone()))
}

#[derive(serde::Deserialize)]
struct FetchQuery {
    url: String,
}

async fn fetch(State(s): State<Arc<Shared>>, Query(q): Query<FetchQuery>) -> Response {
    let Some(core) = core(&s) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not started").into_response();
    };
    let client = core.http();
    match client.get(&q.url).send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            let code = res
                .headers()
                .get("tessera-error-code")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let body = res.text().await.unwrap_or_default();
            axum::Json(json!({"status": status, "body": body, "code": code})).into_response()
        }
        Err(e) => axum::Json(json!({"error": format!("{e:?}")})).into_response(),
    }
}

impl PluginApp for App {
    fn routes(&self) -> Router {
        Router::new()
            .route("/hooks/{name}", post(hook))
            .with_state(self.0.clone())
    }

    fn public_routes(&self) -> Router {
        Router::new()
            .route("/public/secret/{name}", get(secret))
            .route("/public/deliveries", get(deliveries))
            .route("/public/fetch", get(fetch))
            .with_state(self.0.clone())
    }

    async fn on_start(&self, core: CoreClient) {
        *lock(&self.0.core) = Some(core);
    }
}

fn manifest(name: &str) -> String {
    let caps = std::env::var("CAPABILITIES").unwrap_or_else(|_| "secrets:read".into());
    let extra = std::env::var("MANIFEST_EXTRA").unwrap_or_default();
    format!(
        r#"name: {name}
version: "1.0.0"
compat:
  core: "^2.3"
  backend_sdk: "^1.4"
capabilities: [{caps}]
ui:
  mode: ModuleFederation
  remotePath: /mf/remoteEntry.js
endpoints:
  basePath: /api
health:
  livenessPath: /healthz
  readinessPath: /readyz
{extra}
"#
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let name = std::env::var("PLUGIN_NAME").unwrap_or_else(|_| "surfaces-test".into());
    let shared = Arc::new(Shared {
        record: std::env::var_os("RECORD_FILE").map(PathBuf::from),
        ..Shared::default()
    });
    common::serve(
        App(shared),
        &name,
        &manifest(&name),
        &common::empty_remote(&name),
    )
    .await
}
