//! `CoreClient`: the plugin's client for the core's plugin-facing API (`whoami`, events, jobs,
//! secrets) and for calls out through the core's egress proxy (`http()`).

use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use super::AppMetrics;
use super::events::{self, EventType, PublishOptions, Published};

/// A client for the core's plugin-facing API: `whoami`, `publish_event` / `publish`,
/// `register_job` / `delete_job`, `fetch_secret`, and `http()`, a client whose calls go out
/// through the core's egress proxy.
#[derive(Clone, Debug)]
pub struct CoreClient {
    /// The core's base URL, when configured.
    pub base_url: Option<String>,
    /// The plugin's configuration (validated against `configSchema`).
    pub config: Value,
    /// The metrics registry `/metrics` serves; register the app's own metrics here.
    pub metrics: AppMetrics,
    http: reqwest::Client,
    plugin_token: watch::Receiver<Option<String>>,
    secrets: SecretCache,
    egress: Egress,
}

/// How long `http()` keeps one client (and its plugin token) before building it anew with the
/// latest token; plugin tokens live an hour.
const EGRESS_CLIENT_LIFE: Duration = Duration::from_secs(10 * 60);

/// The egress proxy's URL and the client last built for it, with its token and when.
#[derive(Clone, Default)]
struct Egress {
    url: Option<String>,
    client: std::sync::Arc<std::sync::Mutex<Option<(String, std::time::Instant, reqwest::Client)>>>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Secrets fetched in the last [`SECRET_CACHE`]: a plugin may call `fetch_secret` on every
/// request without a round trip each time. Its `Debug` never shows a value.
#[derive(Clone, Default)]
struct SecretCache(
    std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, String)>>,
    >,
);

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCache(..)")
    }
}

/// How long `CoreClient::fetch_secret` keeps a value before asking the core again.
pub const SECRET_CACHE: std::time::Duration = std::time::Duration::from_secs(60);

impl CoreClient {
    pub(super) fn new(
        base_url: Option<String>,
        config: Value,
        metrics: AppMetrics,
        http: reqwest::Client,
        plugin_token: watch::Receiver<Option<String>>,
        egress_url: Option<String>,
    ) -> CoreClient {
        CoreClient {
            base_url,
            config,
            metrics,
            http,
            plugin_token,
            secrets: SecretCache::default(),
            egress: Egress {
                url: egress_url,
                client: Default::default(),
            },
        }
    }

    /// A client for calls out of the cluster: every request goes through the core's egress
    /// proxy (`TESSERA_EGRESS_URL`, else `HTTPS_PROXY`, else the core's host on port 8081),
    /// authenticated with the plugin token, so it reaches exactly the `host:port`s the
    /// manifest's `permissions.network.egressAllow` names (capability `http:outbound`); https
    /// stays end to end (CONNECT). A refused destination answers 403 (`egress_not_allowed`,
    /// `egress_address_not_allowed`) for `http://` URLs and fails the connection for
    /// `https://` ones. Without a core configured, a plain client.
    pub fn http(&self) -> reqwest::Client {
        let token = self.plugin_token().unwrap_or_default();
        let Some(url) = &self.egress.url else {
            return self.http.clone();
        };
        let mut cached = self.egress.client.lock().unwrap_or_else(|p| p.into_inner());
        // Every registration (each 15 s) mints a new plugin token; the client (and its pool of
        // connections to the proxy) is kept while its token has most of its hour left.
        if let Some((t, built, c)) = cached.as_ref()
            && (*t == token || (!t.is_empty() && built.elapsed() < EGRESS_CLIENT_LIFE))
        {
            return c.clone();
        }
        let built = reqwest::Proxy::all(url.as_str()).and_then(|p| {
            reqwest::Client::builder()
                // NO_PROXY (the core and in-cluster services) is honoured as other clients do.
                .proxy(
                    p.basic_auth("plugin", &token)
                        .no_proxy(reqwest::NoProxy::from_env()),
                )
                .timeout(Duration::from_secs(60))
                .build()
        });
        match built {
            Ok(c) => {
                *cached = Some((token, std::time::Instant::now(), c.clone()));
                c
            }
            Err(e) => {
                // `Settings::from_env` checked the URL; a TLS back end that will not start is
                // all that is left, and the plain client fails the same way.
                tracing::error!(error = %e, egress = %url, "cannot build the egress client");
                self.http.clone()
            }
        }
    }

    /// The plugin token the last registration answered with (renewed by every registration,
    /// every 15 s; `None` before the first one, and after the core refused the registration
    /// token). It is what the plugin-facing API (`/api/plugin/v1/...`) accepts.
    pub fn plugin_token(&self) -> Option<String> {
        self.plugin_token.borrow().clone()
    }

    /// `GET /api/plugin/v1/whoami`: the plugin's name and granted capabilities, as the core
    /// sees its plugin token.
    pub async fn whoami(&self) -> Result<Value, CoreError> {
        self.call(reqwest::Method::GET, "whoami", None).await
    }

    /// Publishes an event (`POST /api/plugin/v1/events`, capability `events:publish`): `ty`
    /// must start with the plugin's name and a dot (`billing.invoice.created`), `data` is any
    /// JSON of at most 256 KiB. Returns once the core has stored it durably.
    pub async fn publish_event(
        &self,
        ty: &str,
        data: impl serde::Serialize,
    ) -> Result<Published, CoreError> {
        self.publish_event_with(ty, data, PublishOptions::default())
            .await
    }

    /// [`CoreClient::publish_event`] with a subject, your own id (a repeat is accepted once)
    /// or a tenant.
    pub async fn publish_event_with(
        &self,
        ty: &str,
        data: impl serde::Serialize,
        opts: PublishOptions,
    ) -> Result<Published, CoreError> {
        let data = serde_json::to_value(data).map_err(|e| CoreError::Refused {
            status: 0,
            code: "invalid_event".into(),
            message: format!("the data cannot be serialized: {e}"),
        })?;
        let body = events::publish_body(ty, data, opts);
        let answer = self
            .call(reqwest::Method::POST, "events", Some(body))
            .await?;
        serde_json::from_value(answer).map_err(|e| CoreError::Refused {
            status: 202,
            code: "unexpected_answer".into(),
            message: e.to_string(),
        })
    }

    /// Publishes a typed event: its type is `E::TYPE`, its data `event` serialized.
    pub async fn publish<E: EventType>(&self, event: &E) -> Result<Published, CoreError> {
        self.publish_event(E::TYPE, event).await
    }

    /// Registers (or replaces) a job at run time (`PUT /api/plugin/v1/jobs/{name}`, capability
    /// `jobs:schedule`), with the same fields and checks as a job in `plugin.yaml`; answers the
    /// job as the core keeps it (defaults filled in) with its next run. A job declared in
    /// `plugin.yaml` cannot be replaced this way (409 `job_declared`).
    pub async fn register_job(&self, spec: &crate::jobs::JobSpec) -> Result<Value, CoreError> {
        let body = serde_json::to_value(spec).map_err(|e| CoreError::Refused {
            status: 0,
            code: "invalid_job".into(),
            message: e.to_string(),
        })?;
        let path = format!("jobs/{}", spec.name);
        self.call(reqwest::Method::PUT, &path, Some(body)).await
    }

    /// Reads a secret the plugin's `plugin.yaml` lists (`GET /api/plugin/v1/secrets/{name}`,
    /// capability `secrets:read`), kept for [`SECRET_CACHE`] so calling it per request costs
    /// nothing. Errors: 403 `secret_not_declared` (not in `secrets`), 403
    /// `capability_not_granted`, 404 `secret_not_found` (no value set yet). The value is never
    /// logged by the SDK.
    pub async fn fetch_secret(&self, name: &str) -> Result<String, CoreError> {
        {
            let cache = self.secrets.0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, value)) = cache.get(name)
                && at.elapsed() < SECRET_CACHE
            {
                return Ok(value.clone());
            }
        }
        let answer = self
            .call(reqwest::Method::GET, &format!("secrets/{name}"), None)
            .await?;
        let value = answer["value"]
            .as_str()
            .ok_or_else(|| CoreError::Refused {
                status: 200,
                code: "unexpected_answer".into(),
                message: "the answer has no \"value\"".into(),
            })?
            .to_string();
        self.secrets
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (std::time::Instant::now(), value.clone()));
        Ok(value)
    }

    /// Forgets cached secrets, so the next `fetch_secret` asks the core (after a rotation).
    pub fn forget_secrets(&self) {
        self.secrets
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Removes a job registered at run time (`DELETE /api/plugin/v1/jobs/{name}`); its history
    /// goes with it.
    pub async fn delete_job(&self, name: &str) -> Result<(), CoreError> {
        self.call(reqwest::Method::DELETE, &format!("jobs/{name}"), None)
            .await
            .map(|_| ())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CoreError> {
        let base = self.base_url.as_deref().ok_or(CoreError::NotConfigured)?;
        let token = self.plugin_token().ok_or(CoreError::NotRegistered)?;
        let mut req = self
            .http
            .request(method, format!("{base}/api/plugin/v1/{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req
            .send()
            .await
            .map_err(|e| CoreError::Unreachable(e.to_string()))?;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(CoreError::Refused {
                status,
                code: body["error"]["code"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_string(),
                message: body["error"]["message"].as_str().unwrap_or("").to_string(),
            })
        }
    }
}

/// Why a call to the core's plugin-facing API failed.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// No core is configured (`CORE_BASE_URL`).
    #[error("no core is configured (CORE_BASE_URL)")]
    NotConfigured,
    /// The plugin holds no plugin token: not registered yet, or its registration was refused.
    #[error("no plugin token yet: the plugin is not registered")]
    NotRegistered,
    /// The core cannot be reached.
    #[error("the core cannot be reached: {0}")]
    Unreachable(String),
    /// The core answered with an error.
    #[error("the core answered {status}: {code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The error envelope's code.
        code: String,
        /// Its message.
        message: String,
    },
}
