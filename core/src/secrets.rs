//! Plugin secrets (`secrets:read`): where a plugin's values are found and which names it may
//! read. Persistence is `crate::store::secrets` (sealed in `tessera.db`) or
//! `crate::store::kube::plugin_secrets` (a Secret in the plugin's namespace); the HTTP surface
//! is `crate::api::secrets`. Values never reach a log line, an error message or the audit log.

use std::sync::Arc;

use serde::Deserialize;

use crate::config::PluginEntry;
use crate::model::PluginRecord;
use crate::store::StoreError;
use crate::store::secrets::{Owner, SecretInfo, SecretStore};

/// The longest value accepted, in characters (as the OpenAPI schema's `maxLength` counts).
pub const MAX_VALUE_CHARS: usize = 65_536;

/// The secrets surface.
pub struct Secrets {
    store: Arc<dyn SecretStore>,
    /// Namespaces of the plugins the admin declares.
    declared: Vec<PluginEntry>,
}

#[derive(Default, Deserialize)]
struct SecretsField {
    #[serde(default)]
    secrets: Vec<String>,
}

/// The secret names a plugin's latest registered manifest lists.
pub fn declared_names(record: &PluginRecord) -> Vec<String> {
    record.current.manifest.fields::<SecretsField>().secrets
}

/// Whether `name` is a secret name (`^[A-Za-z_][A-Za-z0-9_]*$`, at most 253 characters).
pub fn is_secret_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 253
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The namespace in a cluster Service host (`<service>.<namespace>.svc[...]`).
fn namespace_of(backend_url: &str) -> Option<String> {
    let host = url::Url::parse(backend_url).ok()?.host_str()?.to_string();
    let mut labels = host.split('.');
    let (_, ns, svc) = (labels.next()?, labels.next()?, labels.next()?);
    (svc == "svc").then(|| ns.to_string())
}

impl Secrets {
    /// Secrets kept in `store`.
    pub fn new(store: Arc<dyn SecretStore>, declared: Vec<PluginEntry>) -> Secrets {
        Secrets { store, declared }
    }

    /// Whose secrets: the plugin, with its namespace (declared by the admin, else that of its
    /// Service).
    pub fn owner(&self, plugin: &str, record: Option<&PluginRecord>) -> Owner {
        let namespace = self
            .declared
            .iter()
            .find(|e| e.name == plugin)
            .map(|e| e.namespace.clone())
            .or_else(|| record.and_then(|r| namespace_of(&r.current.backend_url)));
        Owner {
            plugin: plugin.to_string(),
            namespace,
        }
    }

    /// `None` when admins set values through the core; else where they are managed.
    pub fn managed_elsewhere(&self, owner: &Owner) -> Option<String> {
        self.store.managed_elsewhere(owner)
    }

    /// A value (`None`: not set).
    pub async fn get(&self, owner: Owner, name: String) -> Result<Option<String>, StoreError> {
        let store = self.store.clone();
        blocking(move || store.get(&owner, &name)).await
    }

    /// Sets a value; true when it was new.
    pub async fn put(&self, owner: Owner, name: String, value: String) -> Result<bool, StoreError> {
        let store = self.store.clone();
        blocking(move || store.put(&owner, &name, &value)).await
    }

    /// Removes a value; false when it was not set.
    pub async fn delete(&self, owner: Owner, name: String) -> Result<bool, StoreError> {
        let store = self.store.clone();
        blocking(move || store.delete(&owner, &name)).await
    }

    /// The names set.
    pub async fn list(&self, owner: Owner) -> Result<Vec<SecretInfo>, StoreError> {
        let store = self.store.clone();
        blocking(move || store.list(&owner)).await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Failed(format!("secrets: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_namespaces() {
        assert!(is_secret_name("STRIPE_KEY"));
        assert!(is_secret_name("_x1"));
        assert!(!is_secret_name("1X"));
        assert!(!is_secret_name("A-B"));
        assert!(!is_secret_name(""));
        assert_eq!(
            namespace_of("http://billing.payments.svc:8080").as_deref(),
            Some("payments")
        );
        assert_eq!(
            namespace_of("http://billing.payments.svc.cluster.local").as_deref(),
            Some("payments")
        );
        assert_eq!(namespace_of("http://127.0.0.1:9000"), None);
    }
}
