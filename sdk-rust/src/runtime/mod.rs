//! The plugin-side runtime: what a plugin's backend gets by calling [`serve`].
//!
//! ```text
//!   serve(app, manifest)
//!     ├─ /healthz                process alive
//!     ├─ /readyz                 app.ready() + UI bundle present + registration accepted
//!     ├─ /metrics                Prometheus text: requests by route, durations, errors + app metrics
//!     ├─ /manifest               the normalized manifest
//!     ├─ <dir of ui.remotePath>/ the built UI files (UI_REMOTE_PATH on disk), right MIME types
//!     ├─ <endpoints.basePath>/   app.routes(), each call checked: a call token from the core
//!     │                          or 401 (see caller.rs); app.public_routes() unchecked
//!     └─ registration loop       registers with CORE_BASE_URL, retries, re-asserts, keeps the
//!                                plugin token fresh (see register.rs)
//! ```
//!
//! Environment: `PORT` (default 7001), `CORE_BASE_URL` (no registration when unset),
//! `REG_TOKEN` or `REG_TOKEN_FILE`, `SERVICE_URL` (how the core reaches this service; default
//! `http://127.0.0.1:$PORT`), `UI_REMOTE_PATH` (folder holding the built remote: remoteEntry.js
//! and its chunks; default `ui/dist`), `PLUGIN_CONFIG` (JSON or YAML text) or
//! `PLUGIN_CONFIG_FILE`, checked against the manifest's `configSchema` at start;
//! `TESSERA_EGRESS_URL` (else `HTTPS_PROXY`, else the core's host on port 8081) for
//! `CoreClient::http()`, and `NO_PROXY` for what it reaches directly.

mod caller;
mod client;
mod events;
mod jobs;
mod logs;
mod metrics;
mod register;
mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::manifest::{self, Format, Manifest};

pub use caller::{Caller, JWKS_REFRESH_INTERVAL};
pub use client::{CoreClient, CoreError, SECRET_CACHE};
pub use events::{
    Dedup, Event, EventError, EventType, PublishOptions, Published, Seen, on_event, on_event_with,
};
pub use jobs::JobRun;
pub use logs::init_logging;
pub use metrics::{AppMetrics, REQUIRED_FAMILIES};
pub use register::{RegistrationStatus, backoff};
pub use webhooks::WebhookDelivery;

/// A plugin's backend: its routes, readiness and life-cycle hooks.
pub trait PluginApp: Send + Sync + 'static {
    /// The app's own routes, served under the manifest's `endpoints.basePath`. Every request
    /// must carry a call token from the core (the SDK checks it and answers 401 otherwise);
    /// handlers take the verified [`Caller`] as an argument.
    fn routes(&self) -> Router {
        Router::new()
    }

    /// Routes served under `endpoints.basePath` without the call-token check: an explicit
    /// opt-out, for what must answer anyone (a public status badge, say). Empty by default.
    fn public_routes(&self) -> Router {
        Router::new()
    }

    /// Called once the server listens, with a client for the core.
    fn on_start(&self, core: CoreClient) -> impl Future<Output = ()> + Send {
        let _ = core;
        async {}
    }

    /// Called on SIGTERM/SIGINT, before the server stops.
    fn on_stop(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The app's own readiness; `Err(reason)` keeps `/readyz` red.
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }
}

/// What went wrong before the plugin could serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is wrong (environment or config).
    #[error("{0}")]
    Config(String),
    /// The server could not start.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Settings read from the environment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Port to listen on (all interfaces in a container, loopback by default).
    pub listen: SocketAddr,
    /// The core's base URL.
    pub core_base_url: Option<String>,
    /// The registration token (as read at start).
    pub token: Option<String>,
    /// `REG_TOKEN_FILE`, read again before every registration: a mounted Secret or a projected
    /// ServiceAccount token that the kubelet rotates is picked up without a restart.
    pub token_file: Option<PathBuf>,
    /// How the core reaches this service.
    pub service_url: String,
    /// Folder holding the built UI remote.
    pub ui_dir: PathBuf,
    /// The plugin's configuration.
    pub config: Value,
    /// The core's egress proxy (`TESSERA_EGRESS_URL`, else `HTTPS_PROXY`, else the core's host
    /// on port 8081).
    pub egress_url: Option<String>,
}

impl Settings {
    /// Reads the environment; `manifest` supplies the config schema.
    pub fn from_env(m: &Manifest) -> Result<Settings, ServeError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let port: u16 = match env("PORT") {
            Some(p) => p
                .trim()
                .parse()
                .map_err(|_| ServeError::Config(format!("PORT=\"{p}\" is not a port number")))?,
            None => 7001,
        };
        let host = env("LISTEN_HOST").unwrap_or_else(|| "127.0.0.1".to_string());
        let listen: SocketAddr = format!("{host}:{port}").parse().map_err(|_| {
            ServeError::Config(format!("LISTEN_HOST=\"{host}\" is not an IP address"))
        })?;
        let token = match (env("REG_TOKEN"), env("REG_TOKEN_FILE")) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(&f)
                    .map_err(|e| ServeError::Config(format!("REG_TOKEN_FILE={f}: {e}")))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let config_text = match (env("PLUGIN_CONFIG"), env("PLUGIN_CONFIG_FILE")) {
            (Some(t), _) => Some(("PLUGIN_CONFIG".to_string(), t)),
            (None, Some(f)) => Some((
                format!("PLUGIN_CONFIG_FILE={f}"),
                std::fs::read_to_string(&f)
                    .map_err(|e| ServeError::Config(format!("PLUGIN_CONFIG_FILE={f}: {e}")))?,
            )),
            (None, None) => None,
        };
        let config = match config_text {
            Some((source, text)) => manifest::parse_document(text.as_bytes(), Format::Yaml)
                .map_err(|e| ServeError::Config(format!("{source}: {e}")))?,
            None => json!({}),
        };
        let config = if config.is_null() { json!({}) } else { config };
        if let Some(schema) = &m.config_schema {
            let problems = manifest::validate_value_against(schema, &config, "");
            if !problems.is_empty() {
                let lines: Vec<String> = problems.iter().map(|p| format!("config{p}")).collect();
                return Err(ServeError::Config(format!(
                    "the plugin's configuration does not match configSchema:\n{}",
                    lines.join("\n")
                )));
            }
        }
        let core_base_url = env("CORE_BASE_URL").map(|u| u.trim_end_matches('/').to_string());
        let egress_url = env("TESSERA_EGRESS_URL")
            .or_else(|| env("HTTPS_PROXY"))
            .or_else(|| env("https_proxy"))
            .or_else(|| {
                let mut u = url_with_port(core_base_url.as_deref()?, 8081)?;
                u.push('/');
                Some(u)
            });
        if let Some(u) = &egress_url {
            reqwest::Proxy::all(u.as_str()).map_err(|e| {
                ServeError::Config(format!(
                    "egress proxy URL \"{u}\" (TESSERA_EGRESS_URL or HTTPS_PROXY): {e}"
                ))
            })?;
        }
        Ok(Settings {
            listen,
            egress_url,
            core_base_url,
            token_file: match env("REG_TOKEN") {
                Some(_) => None,
                None => env("REG_TOKEN_FILE").map(PathBuf::from),
            },
            token,
            service_url: env("SERVICE_URL").unwrap_or_else(|| format!("http://127.0.0.1:{port}")),
            ui_dir: PathBuf::from(env("UI_REMOTE_PATH").unwrap_or_else(|| "ui/dist".to_string())),
            config,
        })
    }
}

/// `base` (scheme://host[:port]) with its port replaced by `port`.
fn url_with_port(base: &str, port: u16) -> Option<String> {
    let (scheme, rest) = base.split_once("://")?;
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => authority,
    };
    Some(format!("{scheme}://{host}:{port}"))
}

/// Everything the standard endpoints share.
struct Shared<A> {
    app: A,
    manifest: Manifest,
    manifest_json: Value,
    ui_dir: PathBuf,
    entry_file: String,
    registration: watch::Receiver<RegistrationStatus>,
    metrics: AppMetrics,
}

/// For a container `HEALTHCHECK` (`<plugin binary> healthcheck`): asks this plugin's own
/// `/healthz` on `127.0.0.1:$PORT` (default 7001) and returns 0 when it answers 2xx within 2 s.
pub async fn healthcheck() -> std::process::ExitCode {
    let port = std::env::var("PORT").unwrap_or_else(|_| "7001".into());
    let url = format!("http://127.0.0.1:{port}/healthz");
    let answer = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
    {
        Ok(c) => c.get(&url).send().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match answer {
        Ok(r) if r.status().is_success() => std::process::ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("unhealthy: {url}: HTTP {}", r.status().as_u16());
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {url}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Loads the manifest from YAML text (usually `include_str!("../plugin.yaml")`), refusing an
/// invalid one with every problem.
pub fn manifest_from_yaml(text: &str) -> Result<Manifest, ServeError> {
    Manifest::from_bytes(text.as_bytes(), Format::Yaml)
        .map_err(|e| ServeError::Config(format!("plugin.yaml: {e}")))
}

/// Runs the plugin until SIGTERM/SIGINT: standard endpoints, the app's routes, registration.
pub async fn serve<A: PluginApp>(app: A, manifest: Manifest) -> Result<(), ServeError> {
    let settings = Settings::from_env(&manifest)?;
    serve_with(app, manifest, settings).await
}

/// [`serve`] with explicit settings.
pub async fn serve_with<A: PluginApp>(
    app: A,
    manifest: Manifest,
    settings: Settings,
) -> Result<(), ServeError> {
    let http = reqwest::Client::builder()
        // Calls to the core never go through a proxy the environment names (HTTPS_PROXY is
        // the egress proxy's, for calls out).
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ServeError::Config(format!("HTTP client: {e}")))?;
    let (reg_tx, reg_rx) = watch::channel(RegistrationStatus::NotConfigured);
    let (token_tx, token_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let remote_path = manifest.ui.remote_path.clone();
    let (ui_prefix, entry_file) = match remote_path.rsplit_once('/') {
        Some((dir, file)) => (dir.to_string(), file.to_string()),
        None => (String::new(), remote_path.clone()),
    };
    let base_path = manifest
        .endpoints
        .base_path
        .trim_end_matches('/')
        .to_string();
    let shared = Arc::new(Shared {
        manifest_json: manifest.to_json(),
        manifest: manifest.clone(),
        ui_dir: settings.ui_dir.clone(),
        entry_file,
        registration: reg_rx,
        metrics: AppMetrics::new(),
        app,
    });

    // Every route of the app's own checks its caller; public routes only when the app says so.
    let verifier = Arc::new(caller::Verifier::new(
        &manifest.name,
        settings.core_base_url.as_deref(),
        http.clone(),
    ));
    if settings.core_base_url.is_some() {
        let v = verifier.clone();
        tokio::spawn(async move { v.prefetch().await });
    }
    let app_routes = shared
        .app
        .routes()
        .route_layer(middleware::from_fn_with_state(
            verifier,
            caller::verify_caller,
        ))
        .merge(shared.app.public_routes());
    let standard = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<A>))
        .route("/metrics", get(metrics_text::<A>))
        .route("/manifest", get(manifest_json::<A>))
        .route(&format!("{ui_prefix}/{{*file}}"), get(ui_file::<A>))
        .with_state(shared.clone());
    let router = if base_path.is_empty() {
        standard.merge(app_routes)
    } else {
        standard.nest(&base_path, app_routes)
    };
    let router = router.layer(middleware::from_fn_with_state(shared.clone(), observe::<A>));

    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(addr = %addr, service_url = %settings.service_url, "plugin listening");
    println!("listening on http://{addr}");

    let core = CoreClient::new(
        settings.core_base_url.clone(),
        settings.config.clone(),
        shared.metrics.clone(),
        http.clone(),
        token_rx,
        settings.egress_url.clone(),
    );
    let registration = match (&settings.core_base_url, &settings.token) {
        (Some(base), Some(token)) => Some(tokio::spawn(register::run(
            http.clone(),
            base.clone(),
            register::TokenSource {
                token: token.clone(),
                file: settings.token_file.clone(),
            },
            json!({
                "manifest": shared.manifest_json,
                "backendUrl": settings.service_url,
                "remoteUrl": format!("{}{}", settings.service_url.trim_end_matches('/'), remote_path),
            }),
            reg_tx,
            token_tx,
            stop_rx.clone(),
        ))),
        (Some(_), None) => {
            let _ = reg_tx.send(RegistrationStatus::Rejected {
                code: "token_missing".into(),
                message: "CORE_BASE_URL is set but neither REG_TOKEN nor REG_TOKEN_FILE is".into(),
            });
            None
        }
        _ => None,
    };
    shared.app.on_start(core).await;

    let stopping = shared.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            crate::shutdown::signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
            stopping.app.on_stop().await;
        })
        .await?;
    if let Some(r) = registration {
        let _ = r.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Counts and times every request by route template, inside a span carrying the W3C trace ids.
async fn observe<A: PluginApp>(
    State(s): State<Arc<Shared<A>>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().to_string();
    let (trace_id, parent) = logs::trace_context(req.headers());
    let span_id = logs::new_span_id();
    let span = tracing::info_span!("request", trace_id = %trace_id, span_id = %span_id, parent_span_id = %parent);
    let started = Instant::now();
    let res = {
        use tracing::Instrument;
        next.run(req).instrument(span.clone()).await
    };
    let status = res.status().as_u16();
    s.metrics
        .observe(&method, &route, status, started.elapsed().as_secs_f64());
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(method = %method, route = %route, status, "request failed");
        } else {
            tracing::debug!(method = %method, route = %route, status, "request");
        }
    });
    res
}

async fn readyz<A: PluginApp>(State(s): State<Arc<Shared<A>>>) -> Response {
    let mut reasons = Vec::new();
    if let Err(e) = s.app.ready().await {
        reasons.push(format!("app: {e}"));
    }
    if !s.ui_dir.join(&s.entry_file).is_file() {
        reasons.push(format!(
            "ui: {} is missing (build the UI; UI_REMOTE_PATH={})",
            s.ui_dir.join(&s.entry_file).display(),
            s.ui_dir.display()
        ));
    }
    let reg = s.registration.borrow().clone();
    if let Some(r) = reg.not_ready_reason() {
        reasons.push(format!("registration: {r}"));
    }
    let body = json!({
        "ready": reasons.is_empty(),
        "plugin": s.manifest.name,
        "version": s.manifest.version.to_string(),
        "registration": reg,
        "reasons": reasons,
    });
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text<A: PluginApp>(State(s): State<Arc<Shared<A>>>) -> Response {
    let mut res = s.metrics.encode().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

async fn manifest_json<A: PluginApp>(State(s): State<Arc<Shared<A>>>) -> axum::Json<Value> {
    axum::Json(s.manifest_json.clone())
}

async fn ui_file<A: PluginApp>(
    State(s): State<Arc<Shared<A>>>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Response {
    let ok = !file.is_empty()
        && file
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('\\'));
    if !ok {
        return (StatusCode::BAD_REQUEST, "bad path").into_response();
    }
    let path = s.ui_dir.join(&file);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut res = bytes.into_response();
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::mime::content_type(&file)),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            res
        }
        Err(_) => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
