//! Who is calling a plugin's API: every route under `endpoints.basePath` accepts only a call
//! token the core minted (EdDSA, `iss: tessera`, `aud: plugin:<own name>`, unexpired), checked
//! against the core's JWKS. The JWKS is fetched at start, cached, and fetched again when a token
//! names an unknown `kid` (at most every 30 s); while the core cannot be reached the cached keys
//! keep working. Handlers take the caller as a typed [`Caller`] argument.
//!
//! The standard endpoints (`/healthz`, `/readyz`, `/metrics`, `/manifest`, the UI files) stay
//! open; an app opens one of its own routes only explicitly, through
//! [`PluginApp::public_routes`](super::PluginApp::public_routes).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// Least time between two JWKS fetches caused by unknown key ids.
pub const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Clock leeway on `exp`, in seconds.
const LEEWAY_SECS: u64 = 30;

/// On whose behalf the core calls, as its call token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The user's subject, `anonymous`, or `core` (the core's own calls: events, jobs).
    pub sub: String,
    /// The tenant.
    pub tenant: String,
    /// The user's groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Why the core calls: `request`, `event`, `job` or `webhook`.
    pub kind: String,
    /// The token's id.
    pub jti: String,
}

#[derive(Deserialize)]
struct CallClaims {
    sub: String,
    tenant: String,
    #[serde(default)]
    groups: Vec<String>,
    kind: String,
    jti: String,
    /// Required; checked after the audience (a token for someone else is first of all not
    /// for us).
    exp: u64,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "caller_unverified",
                "this route is not behind the call-token check (a public route cannot take a Caller)",
            )
        })
    }
}

/// The cached keys, and when they were last fetched.
#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

/// Verifies call tokens for one plugin.
pub(crate) struct Verifier {
    audience: String,
    jwks_url: Option<String>,
    http: reqwest::Client,
    cache: RwLock<KeyCache>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl Verifier {
    pub(crate) fn new(plugin: &str, core: Option<&str>, http: reqwest::Client) -> Verifier {
        Verifier {
            audience: format!("plugin:{plugin}"),
            jwks_url: core.map(|c| format!("{c}/.well-known/jwks.json")),
            http,
            cache: RwLock::new(KeyCache::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Fetches the JWKS once at start, so the first call does not wait for it.
    pub(crate) async fn prefetch(&self) {
        let _ = self.refresh().await;
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .get(kid)
            .cloned()
    }

    /// Fetches the JWKS again unless it was fetched in the last 30 s; the cached keys stay
    /// when the core cannot be reached.
    async fn refresh(&self) -> Result<(), String> {
        let Some(url) = &self.jwks_url else {
            return Err("no core configured".into());
        };
        let _one = self.fetching.lock().await;
        let recent = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .fetched
            .is_some_and(|t| t.elapsed() < JWKS_REFRESH_INTERVAL);
        if recent {
            return Ok(());
        }
        let fetched = async {
            let res = self.http.get(url).send().await.map_err(|e| e.to_string())?;
            if !res.status().is_success() {
                return Err(format!("HTTP {}", res.status().as_u16()));
            }
            res.json::<JwkSet>().await.map_err(|e| e.to_string())
        }
        .await;
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        cache.fetched = Some(Instant::now());
        let set = match fetched {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(url = %url, error = %e, "the core's JWKS cannot be fetched; the cached keys stay");
                return Err(e);
            }
        };
        let keys: HashMap<String, DecodingKey> = set
            .keys
            .iter()
            .filter(|k| {
                matches!(
                    &k.algorithm,
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_)
                )
            })
            .filter_map(|k| Some((k.common.key_id.clone()?, DecodingKey::from_jwk(k).ok()?)))
            .collect();
        if !keys.is_empty() {
            cache.keys = keys;
        }
        Ok(())
    }

    /// The caller a bearer token names, or why it is refused.
    pub(crate) async fn verify(&self, token: &str) -> Result<Caller, Response> {
        let unauthorized = |code: &str, msg: String| refused(StatusCode::UNAUTHORIZED, code, &msg);
        if self.jwks_url.is_none() {
            return Err(unauthorized(
                "core_not_configured",
                "this plugin accepts only calls from its core, and no core is configured (CORE_BASE_URL)".into(),
            ));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            unauthorized(
                "token_algorithm_not_allowed",
                "the token is not an EdDSA JWT from the core".into(),
            )
        })?;
        if header.alg != Algorithm::EdDSA {
            return Err(unauthorized(
                "token_algorithm_not_allowed",
                format!(
                    "token algorithm {:?} is not allowed; call tokens are EdDSA",
                    header.alg
                ),
            ));
        }
        let kid = header.kid.unwrap_or_default();
        let key = match self.key(&kid) {
            Some(k) => k,
            None => {
                let _ = self.refresh().await;
                self.key(&kid).ok_or_else(|| {
                    unauthorized(
                        "token_unknown_key",
                        format!("key id \"{kid}\" is not one of the core's signing keys"),
                    )
                })?
            }
        };
        let mut v = Validation::new(Algorithm::EdDSA);
        v.leeway = LEEWAY_SECS;
        // `exp` is required too (by the claims' type) and checked below, after the audience: a
        // token for someone else (a registration token, which may not expire) is first of all
        // not for us.
        v.validate_exp = false;
        v.set_required_spec_claims(&["iss", "aud", "sub"]);
        v.set_issuer(&["tessera"]);
        v.set_audience(&[&self.audience]);
        // Decoded loosely first, so the audience is judged before the claims' shape.
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let (code, msg) = match e.kind() {
                ErrorKind::ExpiredSignature => {
                    ("token_expired", "the call token has expired".into())
                }
                ErrorKind::InvalidAudience => (
                    "token_wrong_audience",
                    format!(
                        "the call token is not for this plugin: audience must be \"{}\"",
                        self.audience
                    ),
                ),
                ErrorKind::InvalidSignature => (
                    "token_signature_invalid",
                    "the call token's signature does not verify".into(),
                ),
                ErrorKind::InvalidIssuer => (
                    "token_wrong_issuer",
                    "the call token was not issued by the core".into(),
                ),
                other => (
                    "token_malformed",
                    format!("the call token cannot be read: {other:?}"),
                ),
            };
            unauthorized(code, msg)
        })?;
        let c: CallClaims = serde_json::from_value(data.claims).map_err(|e| {
            unauthorized(
                "token_malformed",
                format!("the call token lacks what a call token carries: {e}"),
            )
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if c.exp.saturating_add(LEEWAY_SECS) < now {
            return Err(unauthorized(
                "token_expired",
                "the call token has expired".into(),
            ));
        }
        Ok(Caller {
            sub: c.sub,
            tenant: c.tenant,
            groups: c.groups,
            kind: c.kind,
            jti: c.jti,
        })
    }
}

/// The middleware in front of the app's routes: a verified caller or 401.
pub(crate) async fn verify_caller(
    State(v): State<Arc<Verifier>>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let Some(token) = token else {
        return refused(
            StatusCode::UNAUTHORIZED,
            "token_missing",
            "this plugin accepts only calls from its core (Authorization: Bearer <call token>)",
        );
    };
    match v.verify(&token).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(res) => res,
    }
}

fn refused(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message, "details": []}});
    let mut res = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
    }
    res
}
