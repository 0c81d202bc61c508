//! The core's configuration: a YAML file (`--config`, schema in `schemas/config.schema.json`)
//! whose every field has a default, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod egress;
mod events;
mod proxy;
mod webhooks;
pub use egress::{DEFAULT_LISTEN as DEFAULT_EGRESS_LISTEN, EgressConfig, EgressRateLimit};
pub use events::{EventsConfig, NatsConfig};
pub use proxy::{ProxyConfig, ProxyLimits, ProxyPluginConfig};
pub use webhooks::WebhooksConfig;

/// Everything `tessera serve` can be told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Folder for `tessera.db` and the signing key.
    pub data_dir: PathBuf,
    /// Health gating.
    pub probe: ProbeConfig,
    /// Which URLs plugins may name.
    pub url_policy: UrlPolicyConfig,
    /// Registration rate limits.
    pub rate_limit: RateLimitConfig,
    /// The remote-asset cache.
    pub assets: AssetsConfig,
    /// Connection hygiene of the API listener.
    pub server: ServerConfig,
    /// The web shell.
    pub shell: ShellConfig,
    /// The plugin API proxy (`/api/proxy/{plugin}/...`).
    pub proxy: ProxyConfig,
    /// Events between plugins (retries, delivery timeout).
    pub events: EventsConfig,
    /// Webhooks (`POST /hooks/{plugin}/{name}`): rate limit, unsigned hooks allowed.
    pub webhooks: WebhooksConfig,
    /// The egress proxy plugins call out through (`http:outbound`).
    pub egress: EgressConfig,
    /// Who may use the shell and the admin API with a session (OpenID Connect).
    pub auth: AuthConfig,
    /// Where state lives: `sqlite` (a file in the data dir) or `kubernetes` (objects in a
    /// namespace).
    pub store: StoreKind,
    /// The Kubernetes store.
    pub kubernetes: KubernetesConfig,
    /// Plugins the admin declares (Kubernetes store): the leader keeps a registration-token
    /// Secret for each in its namespace, or, for entries with `backendUrl`, registers the plugin
    /// itself (a static plugin).
    pub plugins: Vec<PluginEntry>,
}

/// A plugin the admin declares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginEntry {
    /// Plugin name.
    pub name: String,
    /// Namespace of the plugin's Service (and of its token Secret).
    pub namespace: String,
    /// Capabilities granted.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The plugin's ServiceAccount (in `namespace`): the plugin registers with its projected
    /// token (audience `tessera`), checked by a TokenReview; no token Secret is kept for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// A static plugin: where its service answers (the core registers it; no token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_url: Option<String>,
    /// A static plugin's `remoteEntry.js` [default: `backendUrl` + the manifest's remotePath].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_url: Option<String>,
    /// A static plugin's manifest, inline [default: fetched from `backendUrl/manifest`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<serde_json::Value>,
}

impl PluginEntry {
    /// The granted capabilities, parsed.
    pub fn granted(&self) -> Result<Vec<tessera_sdk::Capability>, ConfigError> {
        self.capabilities
            .iter()
            .map(|c| {
                tessera_sdk::Capability::parse(c).map_err(|e| {
                    ConfigError::Invalid(format!("plugins[{}].capabilities: {e}", self.name))
                })
            })
            .collect()
    }
}

/// Where the core keeps its state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// `tessera.db` in the data dir.
    #[default]
    Sqlite,
    /// ConfigMaps, a Secret, a Lease and Events in one namespace.
    Kubernetes,
}

/// The Kubernetes store (`store: kubernetes`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Namespace of the core's objects [default: the pod's, or the kubeconfig's].
    pub namespace: Option<String>,
    /// Seconds the leader's Lease holds without renewal.
    pub lease_seconds: f64,
    /// Seconds between the leader's renewals.
    pub renew_seconds: f64,
    /// Seconds between a follower's attempts to acquire the Lease.
    pub retry_seconds: f64,
    /// Seconds any one API call may take before the write answers `store_unavailable`.
    pub api_timeout_seconds: f64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            namespace: None,
            lease_seconds: 15.0,
            renew_seconds: 10.0,
            retry_seconds: 2.0,
            api_timeout_seconds: 5.0,
        }
    }
}

impl KubernetesConfig {
    /// The timings as durations.
    pub fn timing(&self) -> Timing {
        let d = |s: f64| std::time::Duration::from_secs_f64(s);
        Timing {
            api_timeout: d(self.api_timeout_seconds),
            lease: d(self.lease_seconds),
            renew: d(self.renew_seconds),
            retry: d(self.retry_seconds),
        }
    }
}

/// Timing of the Kubernetes store (from [`KubernetesConfig`]).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Bound on every API call.
    pub api_timeout: std::time::Duration,
    /// How long a Lease holds without renewal.
    pub lease: std::time::Duration,
    /// How often the leader renews.
    pub renew: std::time::Duration,
    /// How often a follower tries to acquire.
    pub retry: std::time::Duration,
}

/// Users: without `oidc` the shell is anonymous (user `anonymous`, tenant `default`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Sign-in with an OpenID provider.
    pub oidc: Option<OidcConfig>,
}

/// An OpenID Connect provider (authorization code + PKCE).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// This core's client id at the provider.
    pub client_id: String,
    /// A file holding the client secret (mounted from a Secret in a cluster).
    pub client_secret_file: PathBuf,
    /// Scopes asked for (`openid` is always asked for).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID-token claim naming the user's tenant.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// The ID-token claim listing the user's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Groups whose members may use the admin API with their session.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Where the provider sends the user back [default: `<scheme>://<Host of the login
    /// request>/auth/callback`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}

fn default_tenant_claim() -> String {
    "tenant".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

/// The reference web shell.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ShellConfig {
    /// Origins (scheme://host[:port]) remotes may also be loaded from, such as a CDN; added to
    /// the shell's Content-Security-Policy `script-src`.
    pub remote_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(".tessera"),
            probe: ProbeConfig::default(),
            url_policy: UrlPolicyConfig::default(),
            rate_limit: RateLimitConfig::default(),
            assets: AssetsConfig::default(),
            server: ServerConfig::default(),
            shell: ShellConfig::default(),
            proxy: ProxyConfig::default(),
            events: EventsConfig::default(),
            webhooks: WebhooksConfig::default(),
            egress: EgressConfig::default(),
            auth: AuthConfig::default(),
            store: StoreKind::Sqlite,
            kubernetes: KubernetesConfig::default(),
            plugins: Vec::new(),
        }
    }
}

/// Probe timings, in the spirit of Kubernetes probes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Seconds between probes of one plugin (jittered by up to 10%).
    pub period_seconds: f64,
    /// Seconds a probe may take.
    pub timeout_seconds: f64,
    /// Consecutive failures that withdraw a Ready plugin.
    pub failure_threshold: u32,
    /// Consecutive successes that make a plugin Ready.
    pub success_threshold: u32,
    /// Probes in flight at once.
    pub concurrency: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            period_seconds: 5.0,
            timeout_seconds: 2.0,
            failure_threshold: 3,
            success_threshold: 1,
            concurrency: 64,
        }
    }
}

impl ProbeConfig {
    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(self.period_seconds)
    }
    /// The timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_seconds)
    }
}

/// URL policy: which hosts plugin URLs may name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct UrlPolicyConfig {
    /// Host patterns: `loopback` (127.0.0.0/8, ::1, localhost), an exact host name or IP
    /// address, or `*.suffix` (any host ending in `.suffix`).
    pub allow_hosts: Vec<String>,
    /// With the Kubernetes store: a plugin URL must name a Service,
    /// `<service>.<namespace><suffix>`, with one of these suffixes (or a host in
    /// `allowHosts`, where `loopback` is ignored: it would be the core's own pod).
    pub cluster_service_suffixes: Vec<String>,
}

impl Default for UrlPolicyConfig {
    fn default() -> Self {
        UrlPolicyConfig {
            allow_hosts: vec!["loopback".to_string()],
            cluster_service_suffixes: vec![".svc".to_string(), ".svc.cluster.local".to_string()],
        }
    }
}

/// Registration rate limits (token buckets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Registrations per minute per token.
    pub per_token_per_minute: u32,
    /// Registrations per minute per client address.
    pub per_address_per_minute: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_token_per_minute: 60,
            per_address_per_minute: 600,
        }
    }
}

/// The cache of remote files served under `/plugins/...`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AssetsConfig {
    /// Most bytes kept.
    pub cache_bytes: u64,
}

impl Default for AssetsConfig {
    fn default() -> Self {
        AssetsConfig {
            cache_bytes: 64 << 20,
        }
    }
}

/// How the API listener treats connections, so that idle or slow clients cannot hold the
/// core's file descriptors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Seconds a client has to send a request's headers, and that a keep-alive connection may
    /// wait idle for its next request.
    pub header_read_timeout_seconds: f64,
    /// Most open connections (event streams included); capped further by the process's
    /// open-file limit, less a reserve for the prober and the store.
    pub max_connections: usize,
    /// Most open connections from one client address.
    pub max_connections_per_client: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout_seconds: 10.0,
            max_connections: 16_384,
            max_connections_per_client: 1_024,
        }
    }
}

impl ServerConfig {
    /// The header-read (and keep-alive idle) timeout.
    pub fn header_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.header_read_timeout_seconds)
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read, or is not YAML/JSON of the expected shape.
    #[error("{file}: {message}")]
    Unreadable {
        /// The file.
        file: String,
        /// Why.
        message: String,
    },
    /// A value that cannot work (out of range, a name that is not a name, ...).
    #[error("{0}")]
    Invalid(String),
    /// A problem of a file's values.
    #[error("{file}: {problem}")]
    InFile {
        /// The file.
        file: String,
        /// The problem.
        problem: Box<ConfigError>,
    },
}

impl Config {
    /// Reads a config file (YAML or JSON), refusing unknown fields and impossible values.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let file = || path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            file: file(),
            message: e.to_string(),
        })?;
        let config: Config =
            serde_norway::from_str(&text).map_err(|e| ConfigError::Unreadable {
                file: file(),
                message: e.to_string(),
            })?;
        config.check().map_err(|e| ConfigError::InFile {
            file: file(),
            problem: Box::new(e),
        })?;
        Ok(config)
    }

    /// Refuses values that cannot work.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.proxy.check()?;
        self.events.check()?;
        self.webhooks.check()?;
        self.egress.check()?;
        let p = &self.probe;
        if !(p.period_seconds.is_finite() && p.period_seconds >= 0.05) {
            return Err(ConfigError::Invalid(
                "probe.periodSeconds must be at least 0.05".to_string(),
            ));
        }
        if !(p.timeout_seconds.is_finite() && p.timeout_seconds > 0.0) {
            return Err(ConfigError::Invalid(
                "probe.timeoutSeconds must be positive".to_string(),
            ));
        }
        if p.failure_threshold == 0 || p.success_threshold == 0 || p.concurrency == 0 {
            return Err(ConfigError::Invalid(
                "probe thresholds and concurrency must be at least 1".to_string(),
            ));
        }
        for o in &self.shell.remote_origins {
            let ok = (o.starts_with("https://") || o.starts_with("http://"))
                && !o
                    .trim_end_matches('/')
                    .contains(|c: char| c.is_whitespace() || c == ';' || c == '\'' || c == '"')
                && o.matches('/').count() == 2;
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "shell.remoteOrigins: \"{o}\" is not an origin (scheme://host[:port])"
                )));
            }
        }
        let sv = &self.server;
        if !(sv.header_read_timeout_seconds.is_finite()
            && (0.1..=3600.0).contains(&sv.header_read_timeout_seconds))
        {
            return Err(ConfigError::Invalid(
                "server.headerReadTimeoutSeconds must be between 0.1 and 3600".to_string(),
            ));
        }
        if sv.max_connections == 0 || sv.max_connections_per_client == 0 {
            return Err(ConfigError::Invalid(
                "server.maxConnections and maxConnectionsPerClient must be at least 1".into(),
            ));
        }
        if self.rate_limit.per_token_per_minute == 0 || self.rate_limit.per_address_per_minute == 0
        {
            return Err(ConfigError::Invalid(
                "rate limits must be at least 1 per minute".to_string(),
            ));
        }
        let k = &self.kubernetes;
        for (name, v) in [
            ("leaseSeconds", k.lease_seconds),
            ("renewSeconds", k.renew_seconds),
            ("retrySeconds", k.retry_seconds),
            ("apiTimeoutSeconds", k.api_timeout_seconds),
        ] {
            if !(v.is_finite() && (0.1..=3600.0).contains(&v)) {
                return Err(ConfigError::Invalid(format!(
                    "kubernetes.{name} must be between 0.1 and 3600"
                )));
            }
        }
        if k.renew_seconds >= k.lease_seconds {
            return Err(ConfigError::Invalid(
                "kubernetes.renewSeconds must be shorter than kubernetes.leaseSeconds".into(),
            ));
        }
        if let Some(ns) = &k.namespace
            && !is_namespace(ns)
        {
            return Err(ConfigError::Invalid(format!(
                "kubernetes.namespace: \"{ns}\" is not a namespace name"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        let mut accounts = std::collections::HashSet::new();
        for p in &self.plugins {
            if !tessera_sdk::manifest::is_plugin_name(&p.name) {
                return Err(ConfigError::Invalid(format!(
                    "plugins: \"{}\" is not a plugin name",
                    p.name
                )));
            }
            if !seen.insert(&p.name) {
                return Err(ConfigError::Invalid(format!(
                    "plugins: \"{}\" is listed twice",
                    p.name
                )));
            }
            if !is_namespace(&p.namespace) {
                return Err(ConfigError::Invalid(format!(
                    "plugins[{}].namespace: \"{}\" is not a namespace name",
                    p.name, p.namespace
                )));
            }
            p.granted()?;
            if let Some(sa) = &p.service_account {
                if !tessera_sdk::names::is_dns_label(sa) {
                    return Err(ConfigError::Invalid(format!(
                        "plugins[{}].serviceAccount: \"{sa}\" is not a ServiceAccount name this core accepts (lowercase letters, digits and '-', at most 63)",
                        p.name
                    )));
                }
                if p.backend_url.is_some() {
                    return Err(ConfigError::Invalid(format!(
                        "plugins[{}]: a static plugin (backendUrl) is registered by the core and has no serviceAccount",
                        p.name
                    )));
                }
                if !accounts.insert((&p.namespace, sa)) {
                    return Err(ConfigError::Invalid(format!(
                        "plugins[{}].serviceAccount: {}/{sa} is already declared for another plugin",
                        p.name, p.namespace
                    )));
                }
            }
            if p.backend_url.is_none() && (p.remote_url.is_some() || p.manifest.is_some()) {
                return Err(ConfigError::Invalid(format!(
                    "plugins[{}]: remoteUrl and manifest are for static plugins, which need backendUrl",
                    p.name
                )));
            }
        }
        Ok(())
    }

    /// Rules across settings that command-line flags may still change (checked after them).
    pub fn check_final(&self) -> Result<(), ConfigError> {
        self.check()?;
        if !self.plugins.is_empty() && self.store != StoreKind::Kubernetes {
            return Err(ConfigError::Invalid(
                "plugins: declared plugins need the Kubernetes store (store: kubernetes)".into(),
            ));
        }
        Ok(())
    }
}

/// A Kubernetes namespace name (an RFC 1123 label).
fn is_namespace(ns: &str) -> bool {
    tessera_sdk::names::is_dns_label(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_fields_override_defaults_and_typos_are_refused() {
        let c: Config = serde_norway::from_str("probe:\n  periodSeconds: 0.2\n").unwrap();
        assert_eq!(c.probe.period_seconds, 0.2);
        assert_eq!(c.probe.failure_threshold, 3);
        assert!(serde_norway::from_str::<Config>("probe:\n  period: 1\n").is_err());
        let mut bad = Config::default();
        bad.probe.failure_threshold = 0;
        assert!(bad.check().is_err());
    }
}
