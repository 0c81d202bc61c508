//! `echo`, a plugin on the Rust SDK that the proxy tests and the benchmark call through the
//! core: it says what reached it (method, path, query, headers, body size, the verified caller)
//! and offers the shapes a proxy must carry: large bodies both ways, server-sent events, a
//! hanging and a failing endpoint, a slow one, a WebSocket echo, and cookie and CORS headers the
//! core must strip. Every route sits behind the SDK's call-token check.
//!
//! Environment: as every SDK plugin (`PORT`, `CORE_BASE_URL`, `REG_TOKEN`, `UI_REMOTE_PATH`).

use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tessera_sdk::runtime::{self, Caller, PluginApp};

const MANIFEST: &str = r#"
name: echo
version: "1.0.0"
compat:
  core: "^2.0"
  backend_sdk: "^1.0"
  frontend_sdk: "^1.1"
capabilities: [ui:panel]
ui:
  mode: ModuleFederation
  remotePath: /mf/remoteEntry.js
  contributions:
    panels:
      - id: echo.main
        title: Echo
endpoints:
  basePath: /api
health:
  livenessPath: /healthz
  readinessPath: /readyz
"#;

struct Echo;

impl PluginApp for Echo {
    fn routes(&self) -> Router {
        Router::new()
            .route("/echo", any(echo))
            .route("/echo/{*rest}", any(echo))
            .route("/bytes", get(bytes))
            .route("/count", post(count))
            .route("/sse", get(sse))
            .route("/hang", get(hang))
            .route("/fail", get(fail))
            .route("/slow", get(slow))
            .route("/ws", get(ws))
            .route("/cookie", get(cookie))
            .route("/greeting", get(greeting))
    }

    /// The benchmark's upstream, open to anyone so that nginx (which holds no call token) and
    /// the core call the same handlers.
    fn public_routes(&self) -> Router {
        Router::new()
            .route("/public/greeting", get(public_greeting))
            .route("/public/bytes", get(bytes))
    }
}

async fn public_greeting() -> axum::Json<Value> {
    axum::Json(json!({"greeting": "Hello, world"}))
}

/// What reached the plugin, as JSON.
async fn echo(caller: Caller, req: Request) -> axum::Json<Value> {
    let (parts, body) = req.into_parts();
    let mut headers = Map::new();
    for (k, v) in &parts.headers {
        headers.insert(
            k.as_str().to_string(),
            json!(String::from_utf8_lossy(v.as_bytes())),
        );
    }
    let mut len = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        len += chunk.len();
    }
    axum::Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "bodyBytes": len,
        "caller": {"sub": caller.sub, "tenant": caller.tenant, "groups": caller.groups, "kind": caller.kind},
    }))
}

/// A greeting that names the caller (the benchmark's small upstream).
async fn greeting(caller: Caller) -> axum::Json<Value> {
    axum::Json(json!({"greeting": "Hello, world", "caller": caller.sub, "tenant": caller.tenant}))
}

#[derive(Deserialize)]
struct N {
    n: Option<u64>,
    gap_ms: Option<u64>,
    ms: Option<u64>,
}

/// `n` bytes, produced 64 KiB at a time (never held whole).
async fn bytes(Query(q): Query<N>) -> Response {
    let total = q.n.unwrap_or(0);
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let stream = futures_util::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(chunk.len() as u64) as usize;
            Some((
                Ok::<_, std::io::Error>(chunk.slice(..take)),
                left - take as u64,
            ))
        }
    });
    let mut res = Response::new(Body::from_stream(stream));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    res
}

/// Counts the bytes of the body as they arrive.
async fn count(req: Request) -> axum::Json<Value> {
    let mut len = 0u64;
    let mut stream = req.into_body().into_data_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        len += chunk.len() as u64;
    }
    axum::Json(json!({ "bytes": len }))
}

/// `n` server-sent events, `gap_ms` apart.
async fn sse(Query(q): Query<N>) -> Response {
    let n = q.n.unwrap_or(3);
    let gap = Duration::from_millis(q.gap_ms.unwrap_or(300));
    let stream = futures_util::stream::unfold(0u64, move |i| async move {
        if i >= n {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        let event = format!("id: {i}\ndata: {{\"n\":{i}}}\n\n");
        Some((Ok::<_, std::io::Error>(Bytes::from(event)), i + 1))
    });
    let mut res = Response::new(Body::from_stream(stream));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    res
}

async fn hang() -> StatusCode {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::OK
}

async fn fail() -> (StatusCode, &'static str) {
    (StatusCode::INTERNAL_SERVER_ERROR, "failing on purpose")
}

async fn slow(Query(q): Query<N>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(q.ms.unwrap_or(500))).await;
    "slow"
}

/// A WebSocket handshake answered by hand, then every byte echoed back (the proxy only
/// splices bytes; framing is the two ends' business).
async fn ws(mut req: Request) -> Response {
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(up) = upgrade.await {
            let mut io = hyper_util::rt::TokioIo::new(up);
            let (mut r, mut w) = tokio::io::split(&mut io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        "sec-websocket-accept",
        HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    );
    res
}

/// Headers the core must not pass to the browser.
async fn cookie() -> impl IntoResponse {
    (
        [
            (header::SET_COOKIE, "tessera_session=forged; Path=/"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "https://evil.example"),
            (header::CONTENT_TYPE, "text/html"),
        ],
        "<script>alert(1)</script>",
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let manifest = match runtime::manifest_from_yaml(MANIFEST) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    runtime::init_logging(&manifest.name, &manifest.version.to_string());
    match runtime::serve(Echo, manifest).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
