//! Egress (`http:outbound`): the forward proxy plugins call out through, on its own listener
//! (`egress.listen`, `--egress-listen`, default 127.0.0.1:8081). `CONNECT host:port` opens a
//! tunnel (TLS stays end to end: the core never sees plaintext); an absolute-form `http://`
//! request is forwarded. Each request is authenticated by the plugin token in
//! `Proxy-Authorization` (Bearer, or Basic with the token as password), needs `http:outbound`,
//! is counted against the plugin's rate and concurrency, must name a `host:port` its manifest's
//! `egressAllow` admits, and is connected to the very address that was judged (`policy`): a
//! second DNS answer never gets a say. Refusals are audited and counted.
//!
//! ```text
//!  plugin ─CONNECT/GET─▶ auth ─▶ capability ─▶ rate ─▶ egressAllow ─▶ resolve + judge ─▶ dial
//!                                                                                      │
//!                                  200 + tunnel (bytes counted, idle timeout) ◀────────┘
//! ```

pub mod metrics;
pub mod policy;
mod tunnel;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;

use crate::auth::Keys;
use crate::auth::service_account::ServiceAccounts;
use crate::config::EgressConfig;
use crate::error::{ApiError, Code};
use crate::ratelimit::RateLimiter;
use crate::registry::{Actor, Registry};
use crate::sync::lock;
use metrics::{ConnectionLabels, EgressMetrics, RefusalLabels};
use policy::Destination;

/// The egress proxy.
pub struct Egress {
    config: EgressConfig,
    keys: Arc<Keys>,
    registry: Arc<Registry>,
    service_accounts: Arc<ServiceAccounts>,
    limiter: RateLimiter,
    open: Mutex<HashMap<String, u32>>,
    /// Plugin tokens checked in the last [`VERIFIED_TTL`]: a client that opens many
    /// connections with one token pays for one signature check, not one each (expiry and
    /// revocation are still checked every time).
    verified: Mutex<HashMap<String, Verified>>,
    metrics: EgressMetrics,
}

/// How long a checked plugin token is taken as checked.
const VERIFIED_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// A plugin token as checked: who, its grant, its id and expiry, and when it was checked.
#[derive(Clone)]
struct Verified {
    plugin: String,
    capabilities: Vec<String>,
    /// The token's id and that of the registration token it was issued for.
    jti: String,
    reg: String,
    exp: u64,
    at: std::time::Instant,
}

/// One open connection of a plugin; gives its slot back when dropped.
struct Slot {
    egress: Arc<Egress>,
    plugin: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.egress.open);
        if let Some(n) = open.get_mut(&self.plugin) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.plugin);
            }
        }
    }
}

#[derive(Default, Deserialize)]
struct Fields {
    #[serde(default)]
    permissions: tessera_sdk::manifest::Permissions,
}

/// Who is calling out, once authenticated.
struct Caller {
    plugin: String,
    capabilities: Vec<String>,
}

impl Egress {
    /// The proxy.
    pub fn new(
        config: EgressConfig,
        keys: Arc<Keys>,
        registry: Arc<Registry>,
        service_accounts: Arc<ServiceAccounts>,
        metrics: EgressMetrics,
    ) -> Arc<Egress> {
        Arc::new(Egress {
            config,
            keys,
            registry,
            service_accounts,
            limiter: RateLimiter::default(),
            open: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// The proxy as a router: every request, whatever its target, goes to one handler.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    fn refused(&self, plugin: &str, e: ApiError) -> Response {
        self.metrics
            .refusals
            .get_or_create(&RefusalLabels {
                plugin: plugin.to_string(),
                reason: e.code.as_str().to_string(),
            })
            .inc();
        e.into_response()
    }

    /// Records a refusal of an authenticated plugin in the audit log (not awaited).
    fn audit(&self, plugin: &str, why: String) {
        let registry = self.registry.clone();
        let plugin = plugin.to_string();
        tokio::spawn(async move {
            let actor = Actor {
                who: format!("plugin:{plugin}"),
                request_id: None,
            };
            let _ = registry
                .note("egress-refused", Some(&plugin), why, &actor)
                .await;
        });
    }

    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let missing = || {
            ApiError::new(
                Code::EgressAuthRequired,
                "the egress proxy needs the plugin token: Proxy-Authorization: Bearer <plugin token> (or Basic with the token as password)",
            )
        };
        let value = headers
            .get(header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(missing)?;
        let token = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
                rest.trim().to_string()
            }
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(missing)?;
                decoded
                    .split_once(':')
                    .map(|(_, pass)| pass.to_string())
                    .ok_or_else(missing)?
            }
            _ => return Err(missing()),
        };
        let revoked =
            |j: &str| self.registry.is_revoked(j) || self.service_accounts.is_withdrawn(j);
        let cached = lock(&self.verified).get(&token).cloned();
        if let Some(v) = cached
            && v.at.elapsed() < VERIFIED_TTL
            && v.exp > crate::auth::now()
            && !revoked(&v.jti)
            && !revoked(&v.reg)
        {
            return Ok(Caller {
                plugin: v.plugin,
                capabilities: v.capabilities,
            });
        }
        let claims = self.keys.check_plugin(&token, revoked).await.map_err(|e| {
            ApiError::new(
                Code::EgressAuthRequired,
                format!("the plugin token was refused: {}", e.message),
            )
        })?;
        let mut verified = lock(&self.verified);
        if verified.len() >= 10_000 {
            verified.retain(|_, v| v.at.elapsed() < VERIFIED_TTL);
        }
        verified.insert(
            token,
            Verified {
                plugin: claims.sub.clone(),
                capabilities: claims.caps.clone(),
                jti: claims.jti.clone(),
                reg: claims.reg.clone().unwrap_or_default(),
                exp: claims.exp.unwrap_or(u64::MAX),
                at: std::time::Instant::now(),
            },
        );
        Ok(Caller {
            plugin: claims.sub,
            capabilities: claims.caps,
        })
    }

    fn take_slot(self: &Arc<Self>, plugin: &str) -> Option<Slot> {
        let mut open = lock(&self.open);
        let n = open.entry(plugin.to_string()).or_insert(0);
        if *n >= self.config.rate_limit.concurrent {
            return None;
        }
        *n += 1;
        Some(Slot {
            egress: self.clone(),
            plugin: plugin.to_string(),
        })
    }

    /// The address to dial for `d`: resolved once, each answer judged, the first admitted
    /// one kept.
    async fn resolve(&self, d: &Destination) -> Result<SocketAddr, ApiError> {
        let addrs: Vec<SocketAddr> = match d.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, d.port)],
            Err(_) => tokio::time::timeout(
                self.config.connect_timeout(),
                tokio::net::lookup_host((d.host.as_str(), d.port)),
            )
            .await
            .map_err(|_| ApiError::new(Code::UpstreamFailed, format!("resolving {d} timed out")))?
            .map_err(|e| ApiError::new(Code::UpstreamFailed, format!("{d} does not resolve: {e}")))?
            .collect(),
        };
        let mut first_refusal = None;
        for a in &addrs {
            match policy::refuse_address(&a.ip(), d, &self.config.allow) {
                None => return Ok(*a),
                Some(why) => {
                    first_refusal.get_or_insert(why);
                }
            }
        }
        Err(ApiError::new(
            Code::EgressAddressNotAllowed,
            first_refusal.unwrap_or_else(|| format!("{d} resolves to no address")),
        ))
    }
}

/// Where a request goes: a tunnel to `host:port`, or an `http://` request.
fn destination(req: &Request) -> Result<Destination, ApiError> {
    let bad = |why: String| ApiError::new(Code::InvalidRequest, why);
    if req.method() == Method::CONNECT {
        let authority = req
            .uri()
            .authority()
            .ok_or_else(|| bad("CONNECT needs host:port".into()))?;
        return Destination::parse(authority.as_str(), None).map_err(bad);
    }
    match (req.uri().scheme_str(), req.uri().authority()) {
        (Some("http"), Some(a)) => Destination::parse(a.as_str(), Some(80)).map_err(bad),
        (Some("https"), _) => Err(bad(
            "send https through a tunnel: CONNECT host:443 (any client honouring HTTPS_PROXY does)".into(),
        )),
        _ => Err(bad(
            "this is a forward proxy: send CONNECT host:port, or a request with an absolute http:// URI".into(),
        )),
    }
}

async fn handle(State(e): State<Arc<Egress>>, req: Request) -> Response {
    let caller = match e.authenticate(req.headers()).await {
        Ok(c) => c,
        Err(err) => {
            let mut res = e.refused("unknown", err);
            res.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tessera-egress\""),
            );
            return res;
        }
    };
    let plugin = caller.plugin.clone();
    if !caller
        .capabilities
        .iter()
        .any(|c| c == tessera_sdk::Capability::HttpOutbound.name())
    {
        let why = format!(
            "plugin \"{plugin}\" is not granted \"http:outbound\"; its registration token must grant it"
        );
        e.audit(&plugin, why.clone());
        return e.refused(&plugin, ApiError::new(Code::CapabilityNotGranted, why));
    }
    if let Err(err) = e.limiter.check(
        &plugin,
        e.config.rate_limit.per_minute,
        "connections through the egress proxy",
    ) {
        return e.refused(&plugin, err);
    }
    let d = match destination(&req) {
        Ok(d) => d,
        Err(err) => return e.refused(&plugin, err),
    };
    let (allow, disabled) = e
        .registry
        .index()
        .get(&plugin)
        .map(|r| {
            (
                r.current
                    .manifest
                    .fields::<Fields>()
                    .permissions
                    .network
                    .egress_allow,
                r.disabled.is_some(),
            )
        })
        .unwrap_or_default();
    if disabled {
        let why =
            format!("plugin \"{plugin}\" is disabled by an admin; it calls out again once enabled");
        e.audit(&plugin, why.clone());
        return e.refused(&plugin, ApiError::new(Code::EgressNotAllowed, why));
    }
    if policy::is_metadata_host(&d.host) {
        let why = format!("{d} is a cloud metadata host; never reachable");
        e.audit(&plugin, why.clone());
        return e.refused(&plugin, ApiError::new(Code::EgressAddressNotAllowed, why));
    }
    let entry = match policy::allowed(&allow, &d) {
        Some(entry) => entry.to_string(),
        None => {
            let why = format!(
                "plugin \"{plugin}\" may not reach {d}: its plugin.yaml's permissions.network.egressAllow does not name it"
            );
            e.audit(&plugin, why.clone());
            return e
                .refused(&plugin, ApiError::new(Code::EgressNotAllowed, why))
                .into_response();
        }
    };
    let Some(slot) = e.take_slot(&plugin) else {
        return e.refused(
            &plugin,
            ApiError::new(
                Code::RateLimited,
                format!(
                    "plugin \"{plugin}\" holds {} connections through the egress proxy, the most it may",
                    e.config.rate_limit.concurrent
                ),
            ),
        );
    };
    let addr = match e.resolve(&d).await {
        Ok(a) => a,
        Err(err) => {
            if err.code == Code::EgressAddressNotAllowed {
                e.audit(&plugin, err.message.clone());
            }
            return e.refused(&plugin, err);
        }
    };
    let stream = match tokio::time::timeout(
        e.config.connect_timeout(),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(err)) => {
            return e.refused(
                &plugin,
                ApiError::new(Code::UpstreamFailed, format!("{d} ({addr}): {err}")),
            );
        }
        Err(_) => {
            return e.refused(
                &plugin,
                ApiError::new(
                    Code::UpstreamFailed,
                    format!("connecting to {d} ({addr}) timed out"),
                ),
            );
        }
    };
    let _ = stream.set_nodelay(true);
    let kind = if req.method() == Method::CONNECT {
        "tunnel"
    } else {
        "http"
    };
    e.metrics
        .connections
        .get_or_create(&ConnectionLabels {
            plugin: plugin.clone(),
            destination: entry.clone(),
            kind: kind.into(),
        })
        .inc();
    let counters = tunnel::Counters::new(&e.metrics, &plugin, &entry);
    if req.method() == Method::CONNECT {
        let idle = e.config.idle_timeout();
        tokio::spawn(async move {
            let _slot = slot;
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => tunnel::pump(upgraded, stream, idle, counters).await,
                Err(err) => tracing::debug!(error = %err, "egress: the client did not upgrade"),
            }
        });
        return StatusCode::OK.into_response();
    }
    match tunnel::forward(req, stream, slot, counters, e.config.idle_timeout()).await {
        Ok(res) => res,
        Err(why) => e.refused(
            &plugin,
            ApiError::new(Code::UpstreamFailed, format!("{d}: {why}")),
        ),
    }
}
