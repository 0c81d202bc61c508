//! `events-plugin`, a plugin on the Rust SDK for the events tests and benchmark: it publishes
//! through the core on request and receives deliveries with the SDK's `on_event`, recording
//! every attempt and every handled event, and it can be told to answer the next deliveries with
//! chosen statuses. Its UI panel shows the events its `shell: true` subscriptions receive.
//!
//! Environment, besides every SDK plugin's (`PORT`, `CORE_BASE_URL`, `REG_TOKEN`):
//! - `PLUGIN_NAME` (default `events-test`);
//! - `CAPABILITIES`: comma-separated (default `ui:panel,events:publish`); `PLUGIN_VERSION`
//!   (default `1.0.0`);
//! - `SUBSCRIBE`: comma-separated type patterns delivered to the backend at `/events`;
//! - `SUBSCRIBE_UNORDERED`: `N` to let `N` deliveries run at once (`ordered: false`);
//! - `SHELL_SUBSCRIBE`: comma-separated patterns delivered to the panel;
//! - `RECORD_FILE`: appends one JSON line per attempt and per handled event (kept across
//!   restarts of this process, so tests can count deliveries across them).
//!
//! Public routes (no call token; a test's controls): `POST /api/public/publish`
//! `{type, count, tenant?, id?, data?}`; `POST /api/public/answer` `{statuses: [500, 500]}` (the next
//! deliveries' answers); `GET /api/public/received`.

#[allow(dead_code)]
mod common;

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tessera_sdk::runtime::{self, CoreClient, PluginApp, PublishOptions, on_event};

#[derive(Default)]
struct Shared {
    core: Mutex<Option<CoreClient>>,
    answers: Mutex<VecDeque<u16>>,
    received: Mutex<Vec<Value>>,
    record: Option<PathBuf>,
}

impl Shared {
    fn record(&self, line: Value) {
        if let Some(path) = &self.record
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            // One write, so a reader never sees half a line.
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

struct App(Arc<Shared>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PluginApp for App {
    fn routes(&self) -> Router {
        let shared = self.0.clone();
        let handled = shared.clone();
        Router::new()
            .route(
                "/events",
                on_event(move |caller, event| {
                    let shared = handled.clone();
                    async move {
                        let line = json!({
                            "kind": "handled", "id": event.id, "type": event.ty,
                            "source": event.source, "n": event.data["n"], "tenant": event.tenant,
                            "caller": {"sub": caller.sub, "kind": caller.kind, "tenant": caller.tenant},
                        });
                        shared.record(line.clone());
                        lock(&shared.received).push(line);
                        Ok(())
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(shared, answer_as_told))
    }

    fn public_routes(&self) -> Router {
        Router::new()
            .route("/public/publish", post(publish))
            .route("/public/answer", post(set_answers))
            .route("/public/received", get(received))
            .with_state(self.0.clone())
    }

    async fn on_start(&self, core: CoreClient) {
        *lock(&self.0.core) = Some(core);
    }
}

/// Records every attempt; answers with the next told status, if any, before the SDK's handler.
async fn answer_as_told(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let told = lock(&s.answers).pop_front();
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let event: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    s.record(json!({"kind": "attempt", "id": event["id"], "n": event["data"]["n"], "status": told.unwrap_or(0)}));
    if let Some(status) = told {
        return StatusCode::from_u16(status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

#[derive(Deserialize)]
struct PublishReq {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default = "one")]
    count: u32,
    tenant: Option<String>,
    id: Option<String>,
    /// The data to publish (default `{"n": i}`).
    data: Option<Value>,
}

fn one() -> u32 {
    1
}

async fn publish(State(s): State<Arc<Shared>>, axum::Json(r): axum::Json<PublishReq>) -> Response {
    let Some(core) = lock(&s.core).clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not started").into_response();
    };
    let mut ids = Vec::new();
    for n in 0..r.count {
        let opts = PublishOptions {
            tenant: r.tenant.clone(),
            id: r.id.clone(),
            subject: None,
        };
        let data = r.data.clone().unwrap_or_else(|| json!({ "n": n }));
        match core.publish_event_with(&r.ty, data, opts).await {
            Ok(p) => ids.push(json!({"id": p.id, "duplicate": p.duplicate})),
            Err(e) => {
                let status = match &e {
                    runtime::CoreError::Refused { status, .. } => *status,
                    _ => 502,
                };
                return (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                    axum::Json(json!({"error": e.to_string(), "published": ids})),
                )
                    .into_response();
            }
        }
    }
    axum::Json(json!({ "published": ids })).into_response()
}

#[derive(Deserialize)]
struct Answers {
    statuses: Vec<u16>,
}

async fn set_answers(
    State(s): State<Arc<Shared>>,
    axum::Json(a): axum::Json<Answers>,
) -> StatusCode {
    lock(&s.answers).extend(a.statuses);
    StatusCode::NO_CONTENT
}

async fn received(State(s): State<Arc<Shared>>) -> axum::Json<Value> {
    axum::Json(Value::Array(lock(&s.received).clone()))
}

fn list(var: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn manifest(name: &str) -> String {
    let mut subs = String::new();
    let unordered = std::env::var("SUBSCRIBE_UNORDERED").ok();
    for p in list("SUBSCRIBE") {
        subs.push_str(&format!("    - type: \"{p}\"\n      path: /events\n"));
        if let Some(n) = &unordered {
            subs.push_str(&format!("      ordered: false\n      maxInFlight: {n}\n"));
        }
    }
    for p in list("SHELL_SUBSCRIBE") {
        subs.push_str(&format!("    - type: \"{p}\"\n      shell: true\n"));
    }
    let version = std::env::var("PLUGIN_VERSION").unwrap_or_else(|_| "1.0.0".into());
    let caps = match list("CAPABILITIES") {
        c if c.is_empty() => "ui:panel, events:publish".to_string(),
        c => c.join(", "),
    };
    let events = if subs.is_empty() {
        String::new()
    } else {
        format!("events:\n  subscribe:\n{subs}")
    };
    format!(
        r#"name: {name}
version: "{version}"
compat:
  core: "^2.1"
  backend_sdk: "^1.2"
capabilities: [{caps}]
ui:
  mode: ModuleFederation
  remotePath: /mf/remoteEntry.js
  contributions:
    panels:
      - id: {name}.events
        title: Events
endpoints:
  basePath: /api
health:
  livenessPath: /healthz
  readinessPath: /readyz
{events}"#
    )
}

/// A remote whose panel lists the events its UI receives (`sdk.events.subscribe`).
fn remote(name: &str) -> String {
    let scope = format!("plugin_{}", name.replace('-', "_"));
    let patterns: Vec<String> = list("SHELL_SUBSCRIBE");
    let patterns = serde_json::to_string(&patterns).unwrap_or_else(|_| "[]".into());
    format!(
        r#"var {scope} = {{
  init() {{}},
  get(module) {{
    return Promise.resolve(() => ({{
      mount(el, ctx) {{
        const list = document.createElement('ul');
        list.className = 'received-events';
        const note = document.createElement('p');
        note.className = 'events-waiting';
        note.textContent = 'Waiting for events';
        el.append(note, list);
        const offs = {patterns}.map((p) => ctx.sdk.events.subscribe(p, (event) => {{
          const li = document.createElement('li');
          li.textContent = event.type + ' #' + (event.data && event.data.n) + (event.tenant ? ' (' + event.tenant + ')' : '');
          list.append(li);
          note.textContent = list.children.length + ' event(s)';
        }}));
        return () => offs.forEach((off) => off());
      }}
    }}));
  }}
}};
"#
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let name = std::env::var("PLUGIN_NAME").unwrap_or_else(|_| "events-test".into());
    let shared = Arc::new(Shared {
        record: std::env::var_os("RECORD_FILE").map(PathBuf::from),
        ..Shared::default()
    });
    common::serve(App(shared), &name, &manifest(&name), &remote(&name)).await
}
