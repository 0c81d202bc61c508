//! Plugin secrets in a cluster: the Secret `tessera-secrets-<plugin>` in the plugin's namespace,
//! one key a secret name. The core only reads it (RBAC `get` on exactly those names); admins
//! set it with the plugin chart, `kubectl` or External Secrets.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::KubeStore;
use crate::store::StoreError;
use crate::store::secrets::{Owner, SecretInfo, SecretStore};

/// The Secret holding a plugin's secrets, in its namespace.
pub fn plugin_secret_name(plugin: &str) -> String {
    format!("tessera-secrets-{plugin}")
}

/// Reads plugin secrets from their Secrets.
pub struct KubeSecrets(pub Arc<KubeStore>);

impl KubeSecrets {
    fn read(&self, owner: &Owner) -> Result<Option<Secret>, StoreError> {
        let ns = owner.namespace.as_deref().ok_or_else(|| {
            StoreError::Failed(format!(
                "the namespace of plugin \"{}\" is not known (its backendUrl names no <service>.<namespace>.svc host)",
                owner.plugin
            ))
        })?;
        let name = plugin_secret_name(&owner.plugin);
        let secrets: Api<Secret> = Api::namespaced(self.0.client.clone(), ns);
        self.0
            .block("reading a plugin's Secret", secrets.get_opt(&name))?
            .map_err(|e| StoreError::Failed(format!("reading Secret {ns}/{name}: {e}")))
    }
}

impl SecretStore for KubeSecrets {
    fn get(&self, owner: &Owner, name: &str) -> Result<Option<String>, StoreError> {
        let Some(secret) = self.read(owner)? else {
            return Ok(None);
        };
        if let Some(v) = secret.data.as_ref().and_then(|d| d.get(name)) {
            return String::from_utf8(v.0.clone()).map(Some).map_err(|_| {
                StoreError::Failed(format!(
                    "key {name} of Secret {} is not UTF-8 text",
                    plugin_secret_name(&owner.plugin)
                ))
            });
        }
        Ok(secret.string_data.and_then(|d| d.get(name).cloned()))
    }

    fn put(&self, owner: &Owner, _: &str, _: &str) -> Result<bool, StoreError> {
        Err(StoreError::Failed(
            self.managed_elsewhere(owner).unwrap_or_default(),
        ))
    }

    fn delete(&self, owner: &Owner, _: &str) -> Result<bool, StoreError> {
        Err(StoreError::Failed(
            self.managed_elsewhere(owner).unwrap_or_default(),
        ))
    }

    fn list(&self, owner: &Owner) -> Result<Vec<SecretInfo>, StoreError> {
        let Some(secret) = self.read(owner)? else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = secret.data.unwrap_or_default().into_keys().collect();
        names.extend(secret.string_data.unwrap_or_default().into_keys());
        names.sort();
        names.dedup();
        Ok(names
            .into_iter()
            .map(|name| SecretInfo {
                name,
                updated_at: None,
            })
            .collect())
    }

    fn managed_elsewhere(&self, owner: &Owner) -> Option<String> {
        Some(format!(
            "in a cluster, plugin \"{}\"'s secrets are the keys of Secret {} in namespace {}; set them there (plugin chart, kubectl or External Secrets), the core only reads them",
            owner.plugin,
            plugin_secret_name(&owner.plugin),
            owner
                .namespace
                .as_deref()
                .unwrap_or("<the plugin's namespace>")
        ))
    }
}
