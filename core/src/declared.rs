//! Plugins the admin declares in the config (`plugins:`, Kubernetes store).
//!
//! While this replica leads, every declared plugin that is not known yet is listed as
//! `Installed` (reason `AwaitingRegistration`). An entry with `backendUrl` is a static plugin:
//! the core registers it itself, with the manifest given inline or fetched from
//! `backendUrl/manifest` (through the prober's client: no redirects, link-local answers
//! dropped), after the same checks a self-registration passes (schema and rules, capabilities
//! against the entry's grant, compatibility, URL policy in the entry's namespace). From then
//! on it is probed and gated like any other plugin. An entry without `backendUrl` waits for the
//! plugin to register with the token the leader keeps in its Secret.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::admit::{Grant, admit};
use crate::config::{Config, PluginEntry};
use crate::model::ManifestJson;
use crate::registry::{Actor, Registration, Registry};

/// Largest manifest fetched from a static plugin.
const MAX_MANIFEST: usize = 1024 * 1024;

fn actor() -> Actor {
    Actor {
        who: "config".into(),
        request_id: None,
    }
}

/// Runs the reconciliation of declared plugins while this replica leads, at once and then every
/// probe period (at least 1 s, at most 10 s).
pub fn spawn(
    registry: Arc<Registry>,
    config: Arc<Config>,
    client: reqwest::Client,
    mut leading: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if config.plugins.is_empty() {
            return;
        }
        let period = config
            .probe
            .period()
            .clamp(Duration::from_secs(1), Duration::from_secs(10));
        loop {
            if *leading.borrow_and_update() {
                for entry in &config.plugins {
                    reconcile(&registry, &config, &client, entry).await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                changed = leading.changed() => if changed.is_err() { return },
            }
        }
    })
}

async fn reconcile(
    registry: &Registry,
    config: &Config,
    client: &reqwest::Client,
    e: &PluginEntry,
) {
    let Some(backend) = &e.backend_url else {
        let why = format!(
            "declared in the config; waiting for the plugin to register with its token (Secret {}/{})",
            e.namespace,
            crate::store::kube::token_secret_name(&e.name)
        );
        if let Err(err) = registry.install(&e.name, "", &why, &actor()).await {
            tracing::warn!(plugin = %e.name, error = %err, "declared plugin not listed");
        }
        return;
    };
    let backend = backend.trim_end_matches('/').to_string();
    let manifest = match &e.manifest {
        Some(m) => Ok(m.clone()),
        None => fetch_manifest(client, config, e, &backend).await,
    };
    let registered = match manifest {
        Ok(m) => register(registry, config, e, &backend, &m).await,
        Err(why) => Err(why),
    };
    if let Err(why) = registered {
        tracing::warn!(plugin = %e.name, reason = %why, "static plugin not registered");
        if let Err(err) = registry.install(&e.name, &backend, &why, &actor()).await {
            tracing::warn!(plugin = %e.name, error = %err, "static plugin not listed");
        }
    }
}

/// GETs `backendUrl/manifest` (the SDK runtime serves it), after the URL policy admits the
/// backend URL.
async fn fetch_manifest(
    client: &reqwest::Client,
    config: &Config,
    e: &PluginEntry,
    backend: &str,
) -> Result<Value, String> {
    let cluster =
        (config.store == crate::config::StoreKind::Kubernetes).then_some(crate::policy::Cluster {
            namespace: Some(&e.namespace),
        });
    crate::policy::check(backend, &config.url_policy, cluster)
        .map_err(|r| format!("backendUrl \"{}\" is not allowed: {}", r.url, r.message))?;
    let url = format!("{backend}/manifest");
    let res = client
        .get(&url)
        .send()
        .await
        .map_err(|err| format!("waiting for {url}: {err}"))?;
    if !res.status().is_success() {
        return Err(format!("waiting for {url}: HTTP {}", res.status().as_u16()));
    }
    let bytes = res
        .bytes()
        .await
        .map_err(|err| format!("reading {url}: {err}"))?;
    if bytes.len() > MAX_MANIFEST {
        return Err(format!("{url}: the manifest is larger than 1 MiB"));
    }
    serde_json::from_slice(&bytes).map_err(|err| format!("{url}: not a JSON manifest: {err}"))
}

async fn register(
    registry: &Registry,
    config: &Config,
    e: &PluginEntry,
    backend: &str,
    manifest: &Value,
) -> Result<(), String> {
    let remote = match &e.remote_url {
        Some(r) => r.clone(),
        None => {
            let path = manifest
                .pointer("/ui/remotePath")
                .and_then(Value::as_str)
                .unwrap_or("/mf/remoteEntry.js");
            format!("{backend}{path}")
        }
    };
    let granted = e.granted().map_err(|e| e.to_string())?;
    let grant = Grant {
        plugin: &e.name,
        capabilities: &granted,
        namespace: Some(&e.namespace),
    };
    let m = admit(config, manifest, &grant, backend, &remote)
        .map_err(|err| format!("{}: {}", err.code.as_str(), details(&err)))?;
    let manifest = ManifestJson::new(&m.to_json()).map_err(|err| err.to_string())?;
    registry
        .register(
            Registration {
                name: m.name.clone(),
                version: m.version.to_string(),
                manifest,
                backend_url: backend.to_string(),
                remote_url: remote,
                token_id: "config".into(),
            },
            &actor(),
        )
        .await
        .map(|_| ())
        .map_err(|err| format!("{}: {}", err.code.as_str(), err.message))
}

/// An error's message with the first few details, for the `Installed` condition.
fn details(err: &crate::error::ApiError) -> String {
    let mut out = err.message.clone();
    for d in err.details.iter().take(5) {
        let what = d
            .get("message")
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| d.to_string());
        match d.get("path").and_then(Value::as_str) {
            Some(p) => out.push_str(&format!("; {p}: {what}")),
            None => out.push_str(&format!("; {what}")),
        }
    }
    out
}
