//! `jobs-plugin`, a plugin on the Rust SDK for the jobs tests and benchmark: its jobs (declared
//! from the environment, or registered at run time through the core) call `/jobs/...`, and it
//! records every call it receives, with the run id, the scheduled time and the verified caller.
//!
//! Environment, besides every SDK plugin's (`PORT`, `CORE_BASE_URL`, `REG_TOKEN`):
//! - `PLUGIN_NAME` (default `jobs-test`), `PLUGIN_VERSION` (default `1.0.0`), `CAPABILITIES`
//!   (comma-separated, default `jobs:schedule`);
//! - `JOBS`: a JSON array of job specs declared in the manifest (`[{"name": "tick",
//!   "schedule": "@every 1s", "path": "/jobs/ok"}]`);
//! - `RECORD_FILE`: appends one JSON line per call start, end and abort (kept across restarts
//!   of this process and shared by replicas of it, so tests can count runs across them).
//!
//! What a job does is in its path: `/jobs/ok`, `/jobs/sleep/<ms>`, `/jobs/fail/<n>` (the first
//! `n` attempts of each run answer 500), `/jobs/status/<code>`.
//!
//! Public routes (a test's controls): `PUT /api/public/jobs/{name}` (registers the body as a
//! job through `CoreClient::register_job`), `DELETE /api/public/jobs/{name}`,
//! `GET /api/public/calls` (what this process received).

#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use tessera_sdk::jobs::JobSpec;
use tessera_sdk::runtime::{self, CoreClient, JobRun, PluginApp};

#[derive(Default)]
struct Shared {
    core: Mutex<Option<CoreClient>>,
    calls: Mutex<Vec<Value>>,
    /// Attempts seen per run id.
    attempts: Mutex<HashMap<String, u32>>,
    record: Option<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
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
        lock(&self.calls).push(line);
    }
}

/// Records an abort when a call's handler is dropped before it answered (the core cancelled it).
struct Ends {
    shared: Arc<Shared>,
    run: String,
    answered: bool,
}

impl Drop for Ends {
    fn drop(&mut self) {
        if !self.answered {
            self.shared
                .record(json!({"kind": "aborted", "runId": self.run, "at": now_ms() as u64}));
        }
    }
}

struct App(Arc<Shared>);

async fn job(State(s): State<Arc<Shared>>, run: JobRun, Path(what): Path<String>) -> Response {
    let attempt = {
        let mut a = lock(&s.attempts);
        let n = a.entry(run.run_id.clone()).or_insert(0);
        *n += 1;
        *n
    };
    s.record(json!({
        "kind": "start", "job": run.job, "runId": run.run_id, "scheduled": run.scheduled_time,
        "attempt": attempt, "at": now_ms() as u64, "what": what,
        "caller": {"sub": run.caller.sub, "kind": run.caller.kind, "tenant": run.caller.tenant},
    }));
    let mut ends = Ends {
        shared: s.clone(),
        run: run.run_id.clone(),
        answered: false,
    };
    let parts: Vec<&str> = what.split('/').collect();
    let status = match parts.as_slice() {
        ["sleep", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            200
        }
        ["fail", n] if attempt <= n.parse().unwrap_or(0) => 500,
        ["status", code] => code.parse().unwrap_or(500),
        _ => 200,
    };
    ends.answered = true;
    s.record(json!({"kind": "end", "runId": run.run_id, "status": status, "at": now_ms() as u64}));
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        format!("{} attempt {attempt} of run {}", run.job, run.run_id),
    )
        .into_response()
}

impl PluginApp for App {
    fn routes(&self) -> Router {
        Router::new()
            .route("/jobs/{*what}", post(job))
            .with_state(self.0.clone())
    }

    fn public_routes(&self) -> Router {
        Router::new()
            .route("/public/jobs/{name}", put(register).delete(unregister))
            .route("/public/calls", get(calls))
            .with_state(self.0.clone())
    }

    async fn on_start(&self, core: CoreClient) {
        *lock(&self.0.core) = Some(core);
    }
}

fn core_answer(r: Result<Value, runtime::CoreError>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(runtime::CoreError::Refused {
            status,
            code,
            message,
        }) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            axum::Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

async fn register(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    axum::Json(mut body): axum::Json<Value>,
) -> Response {
    let Some(core) = lock(&s.core).clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not started").into_response();
    };
    body["name"] = json!(name);
    let spec: JobSpec = match serde_json::from_value(body) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    core_answer(core.register_job(&spec).await)
}

async fn unregister(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let Some(core) = lock(&s.core).clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not started").into_response();
    };
    core_answer(
        core.delete_job(&name)
            .await
            .map(|()| json!({"deleted": name})),
    )
}

async fn calls(State(s): State<Arc<Shared>>) -> axum::Json<Value> {
    axum::Json(Value::Array(lock(&s.calls).clone()))
}

fn manifest(name: &str) -> String {
    let version = std::env::var("PLUGIN_VERSION").unwrap_or_else(|_| "1.0.0".into());
    let caps = std::env::var("CAPABILITIES").unwrap_or_else(|_| "jobs:schedule".into());
    let jobs = std::env::var("JOBS").unwrap_or_default();
    let jobs = if jobs.trim().is_empty() {
        String::new()
    } else {
        format!("jobs: {jobs}\n")
    };
    format!(
        r#"name: {name}
version: "{version}"
compat:
  core: "^2.2"
  backend_sdk: "^1.3"
capabilities: [{caps}]
ui:
  mode: ModuleFederation
  remotePath: /mf/remoteEntry.js
endpoints:
  basePath: /api
health:
  livenessPath: /healthz
  readinessPath: /readyz
{jobs}"#
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let name = std::env::var("PLUGIN_NAME").unwrap_or_else(|_| "jobs-test".into());
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
