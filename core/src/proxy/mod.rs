//! The plugin API proxy: `ANY /api/proxy/{plugin}/{*path}` -> `backendUrl + basePath + /path`.
//!
//! Bodies stream both ways (never buffered), each with an idle timeout; response headers have
//! their own timeout; WebSocket upgrades are spliced through. Every request carries a call token
//! for the caller (`api::proxy` decides who that is and which plugin version is served), and
//! crosses [`headers`]. One pooled HTTP/1.1 client with keep-alive serves every plugin; a
//! [`guard::Guard`] per plugin caps requests in flight and breaks the circuit.

pub mod body;
pub mod guard;
pub mod headers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::auth::Keys;
use crate::auth::call::{CallKind, CallTokens, OnBehalfOf};
use crate::config::ProxyConfig;
use crate::error::{ApiError, Code};
use crate::sync::lock;
use crate::telemetry::{PluginClassLabels, PluginLabels, ProxyMetrics};
use body::Watched;
use guard::{Guard, Refused};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Where a request goes: the served version's service and base path.
#[derive(Clone, Debug)]
pub struct Target {
    /// The plugin.
    pub plugin: String,
    /// `backendUrl` + `basePath`, without a trailing `/`.
    pub base: Arc<str>,
}

/// A request on someone's behalf.
#[derive(Debug)]
pub struct Call<'a> {
    /// The path under `basePath`, as sent (percent-encoded), without its leading `/`.
    pub path: &'a str,
    /// The query, as sent.
    pub query: Option<&'a str>,
    /// Who is calling.
    pub who: OnBehalfOf,
    /// The core's request id.
    pub request_id: &'a str,
}

/// The proxy: its client, its settings, a guard per plugin.
pub struct Proxy {
    client: Client<Connector, Body>,
    config: ProxyConfig,
    guards: Mutex<HashMap<String, Arc<Guard>>>,
    /// Each plugin's target, with the `(backendUrl, registeredAt)` it was computed for.
    targets: Mutex<HashMap<String, (String, String, Target)>>,
    calls: CallTokens,
    metrics: ProxyMetrics,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Status class label.
fn class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl Proxy {
    /// A proxy with `config`, counting into `metrics`.
    pub fn new(config: ProxyConfig, metrics: ProxyMetrics) -> Proxy {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout()));
        http.set_nodelay(true);
        http.enforce_http(false);
        let tls = hyper_rustls::HttpsConnectorBuilder::new();
        let tls = match tls.with_native_roots() {
            Ok(b) => b,
            Err(e) => {
                // No CA bundle: plain-HTTP plugins (the cluster's Services) still work; an
                // https backendUrl fails its handshake with the reason.
                tracing::warn!(error = %e, "proxy: no root certificates; https plugin backends will be refused");
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
            }
        };
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Proxy {
            client,
            config,
            guards: Mutex::new(HashMap::new()),
            targets: Mutex::new(HashMap::new()),
            calls: CallTokens::default(),
            metrics,
        }
    }

    fn guard(&self, plugin: &str) -> Arc<Guard> {
        let mut guards = lock(&self.guards);
        if let Some(g) = guards.get(plugin) {
            return g.clone();
        }
        let g = Arc::new(Guard::default());
        guards.insert(plugin.to_string(), g.clone());
        g
    }

    /// Where requests for `plugin`'s served `deployment` go (computed once per registration).
    pub fn target(&self, plugin: &str, deployment: &crate::model::Deployment) -> Target {
        let mut targets = lock(&self.targets);
        if let Some((url, at, t)) = targets.get(plugin)
            && *url == deployment.backend_url
            && *at == deployment.registered_at
        {
            return t.clone();
        }
        let base = crate::model::plugin_url(deployment, "");
        let t = Target {
            plugin: plugin.to_string(),
            base: base.trim_end_matches('/').into(),
        };
        targets.insert(
            plugin.to_string(),
            (
                deployment.backend_url.clone(),
                deployment.registered_at.clone(),
                t.clone(),
            ),
        );
        t
    }

    /// Sets the in-flight and circuit gauges (at scrape time).
    pub fn export(&self) {
        for (plugin, g) in lock(&self.guards).iter() {
            let l = PluginLabels {
                plugin: plugin.clone(),
            };
            self.metrics
                .in_flight
                .get_or_create(&l)
                .set(i64::from(g.in_flight()));
            self.metrics
                .circuit_open
                .get_or_create(&l)
                .set(i64::from(g.is_open()));
        }
    }

    /// Forwards `req` to `target` on behalf of `call.who`; counts the answer.
    pub async fn forward(
        &self,
        keys: &Keys,
        target: &Target,
        call: Call<'_>,
        req: Request<Body>,
    ) -> Result<Response<Body>, ApiError> {
        let plugin = target.plugin.clone();
        let result = self.forward_inner(keys, target, call, req).await;
        let status = match &result {
            Ok(r) => r.status(),
            Err(e) => e.code.status(),
        };
        self.metrics
            .requests
            .get_or_create(&PluginClassLabels {
                plugin,
                class: class(status),
            })
            .inc();
        result
    }

    async fn forward_inner(
        &self,
        keys: &Keys,
        target: &Target,
        call: Call<'_>,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, ApiError> {
        let name = target.plugin.as_str();
        let limits = self.config.limits(name);
        if let Some(len) = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > limits.max_body_bytes
        {
            return Err(too_large(name, limits.max_body_bytes));
        }
        let uri = match call.query {
            Some(q) => format!("{}/{}?{q}", target.base, call.path),
            None => format!("{}/{}", target.base, call.path),
        };
        let uri: Uri = uri.parse().map_err(|e| {
            ApiError::new(
                Code::UpstreamFailed,
                format!("plugin {name}: the proxied URL is not valid: {e}"),
            )
        })?;
        let token = self
            .calls
            .token(keys, name, &call.who, CallKind::Request)
            .map_err(|e| ApiError::new(Code::Internal, format!("signing a call token: {e}")))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| ApiError::new(Code::Internal, format!("call token header: {e}")))?;

        let guard = self.guard(name);
        let now = Instant::now();
        let permit = guard.enter(limits.max_in_flight, now).map_err(|r| match r {
            Refused::Overloaded => {
                tracing::warn!(plugin = name, limit = limits.max_in_flight, "proxy: plugin overloaded");
                let mut e = ApiError::new(
                    Code::PluginOverloaded,
                    format!(
                        "plugin {name} already has {} requests in flight through the core; retry shortly",
                        limits.max_in_flight
                    ),
                );
                e.retry_after = Some(1);
                e
            }
            Refused::CircuitOpen(left) => {
                let mut e = ApiError::new(
                    Code::PluginCircuitOpen,
                    format!(
                        "plugin {name} failed {} times in a row; the core stops calling it for {} s",
                        guard::FAILURES_TO_OPEN,
                        guard::OPEN_FOR.as_secs()
                    ),
                );
                e.retry_after = Some(left.as_secs().max(1));
                e
            }
        })?;
        let mut permit = permit;

        let websocket = headers::is_websocket(req.headers());
        let incoming_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let uploads = !(websocket || axum::body::HttpBody::is_end_stream(&body));
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
        let broke = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut up = Request::builder()
            .method(parts.method)
            .uri(uri)
            .body(if uploads {
                Body::new(Watched::upload(
                    http_body_util::Limited::new(
                        body,
                        usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX),
                    ),
                    limits.idle_timeout,
                    sent_tx,
                    broke.clone(),
                ))
            } else {
                Body::empty()
            })
            .map_err(|e| ApiError::new(Code::Internal, format!("building the request: {e}")))?;
        *up.headers_mut() = headers::to_plugin(parts.headers, &bearer, call.request_id, websocket);

        let started = Instant::now();
        // The response-header timeout starts once the request body has been sent: a slow
        // upload is the caller's pace (bounded by the idle timeout), not the plugin's.
        let sending = self.client.request(up);
        tokio::pin!(sending);
        let early = if uploads {
            tokio::select! {
                r = &mut sending => Some(r),
                _ = sent_rx => None,
            }
        } else {
            None
        };
        let answer = match early {
            Some(r) => Ok(r),
            None => tokio::time::timeout(limits.response_timeout, &mut sending).await,
        };
        let mut failed = |ok: bool| {
            if permit.record(ok, Instant::now()) {
                tracing::warn!(
                    plugin = name,
                    "proxy: circuit opened after {} consecutive failures",
                    guard::FAILURES_TO_OPEN
                );
            }
        };
        let mut res = match answer {
            Err(_) => {
                failed(false);
                tracing::warn!(
                    plugin = name,
                    timeout_s = limits.response_timeout.as_secs_f64(),
                    "proxy: plugin timed out"
                );
                return Err(ApiError::new(
                    Code::PluginTimeout,
                    format!(
                        "plugin {name} sent no response headers within {} s",
                        limits.response_timeout.as_secs_f64()
                    ),
                ));
            }
            Ok(Err(e)) => {
                if is_too_large(&e) {
                    return Err(too_large(name, limits.max_body_bytes));
                }
                if broke.load(std::sync::atomic::Ordering::Acquire) {
                    // The caller's body broke off (stalled, aborted): not the plugin's failure.
                    return Err(ApiError::new(
                        Code::InvalidRequest,
                        format!(
                            "the request body broke off before it reached plugin {name}: {}",
                            crate::error::source_chain(&e)
                        ),
                    ));
                }
                failed(false);
                let why = if e.is_connect() {
                    format!(
                        "plugin {name} could not be reached: {}",
                        crate::error::source_chain(&e)
                    )
                } else {
                    format!(
                        "plugin {name} failed to answer: {}",
                        crate::error::source_chain(&e)
                    )
                };
                tracing::warn!(plugin = name, error = %why, "proxy: upstream failed");
                return Err(ApiError::new(Code::UpstreamFailed, why));
            }
            Ok(Ok(res)) => res,
        };
        failed(!res.status().is_server_error());
        self.metrics
            .duration
            .get_or_create(&PluginLabels {
                plugin: name.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());

        if let Some(incoming) = incoming_upgrade
            && res.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let outgoing = hyper::upgrade::on(&mut res);
            let plugin = name.to_string();
            let idle = limits.idle_timeout;
            tokio::spawn(async move {
                let upgraded = (incoming.await, outgoing.await);
                // A WebSocket holds its in-flight slot until both sides have switched; the
                // session then lasts while bytes move (the idle timeout ends a silent one).
                drop(permit);
                match upgraded {
                    (Ok(a), Ok(b)) => {
                        body::splice(TokioIo::new(a), TokioIo::new(b), idle).await;
                    }
                    (a, b) => {
                        tracing::warn!(
                            plugin,
                            browser = a.is_ok(),
                            plugin_side = b.is_ok(),
                            "proxy: a WebSocket upgrade did not complete"
                        );
                    }
                }
            });
            let (parts, _) = res.into_parts();
            let mut out = Response::new(Body::empty());
            *out.status_mut() = parts.status;
            *out.headers_mut() = headers::to_browser(parts.headers, true);
            return Ok(out);
        }
        let (parts, body) = res.into_parts();
        let mut out = Response::new(Body::new(Watched::new(
            body,
            limits.idle_timeout,
            Some(permit),
        )));
        *out.status_mut() = parts.status;
        *out.headers_mut() = headers::to_browser(parts.headers, false);
        Ok(out)
    }
}

fn too_large(name: &str, max: u64) -> ApiError {
    ApiError::new(
        Code::PayloadTooLarge,
        format!(
            "the request body is over {max} bytes, the most the core passes on to plugin {name}"
        ),
    )
}

/// Whether a client error was the request body going over its cap.
fn is_too_large(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}
