//! HTTP helpers the cross-process tests share: a client, a manifest, admin calls, polling.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::core::Core;
use crate::plugin_server::TestPlugin;

/// A client with a 10 s timeout.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A normalized manifest for `name` with one panel and one route.
pub fn manifest(name: &str, version: &str) -> Value {
    json!({
        "name": name, "version": version, "compat": {"core": "^2.0"},
        "capabilities": ["ui:panel", "ui:route"],
        "ui": {"mode": "ModuleFederation", "remotePath": "/mf/remoteEntry.js", "contributions": {
            "panels": [{"id": format!("{name}.main"), "title": format!("{name} panel")}],
            "routes": [{"path": format!("/{name}"), "component": "Routes#Page"}]
        }},
        "endpoints": {"basePath": "/api"},
        "health": {"livenessPath": "/healthz", "readinessPath": "/readyz"}
    })
}

/// `POST` with an admin token; the status and the JSON body (null when there is none).
pub async fn post_admin(core: &Core, admin: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let res = http()
        .post(format!("{}{path}", core.url))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = res.status();
    (s, res.json().await.unwrap_or(Value::Null))
}

/// `GET` with an admin token; the JSON body.
pub async fn get_admin(core: &Core, admin: &str, path: &str) -> Value {
    http()
        .get(format!("{}{path}", core.url))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The admin view of a plugin.
pub async fn plugin(core: &Core, admin: &str, name: &str) -> Value {
    get_admin(core, admin, &format!("/api/plugins/{name}")).await
}

/// Polls `f` until it returns true or `limit` passes (then panics); returns how long it took.
pub async fn within<F, Fut>(limit: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST /api/plugins/register` with `token` and a raw body; the status and the JSON answer.
pub async fn register_raw(core: &Core, token: &str, body: &Value) -> (StatusCode, Value) {
    let res = http()
        .post(format!("{}/api/plugins/register", core.url))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Registers manifest `m` served by `p` with `token`; the status and the JSON answer.
pub async fn register(core: &Core, token: &str, m: &Value, p: &TestPlugin) -> (StatusCode, Value) {
    register_raw(
        core,
        token,
        &json!({"manifest": m, "backendUrl": p.url, "remoteUrl": p.remote_url()}),
    )
    .await
}

/// The shell's list (`GET /api/shell/remotes`).
pub async fn remotes(core: &Core) -> Vec<Value> {
    http()
        .get(format!("{}/api/shell/remotes", core.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The condition of type `kind` in a plugin view (admin API or registration answer).
pub fn condition(view: &Value, kind: &str) -> Value {
    view["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The body of `GET url` as text.
pub async fn text(url: &str) -> String {
    http()
        .get(url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}
