//! The registration-token Secrets the leader keeps for declared plugins.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use super::{KubeStore, PLUGIN_LABEL, TOKEN_KEY, api_status, managed, token_secret_name};
use crate::model::AuditEvent;
use crate::store::{Change, Store, StoreError};

impl KubeStore {
    /// The token in Secret `name` of namespace `ns`, if the Secret exists.
    pub async fn read_token_secret(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let s = self
            .bounded("reading a token Secret", secrets.get_opt(name))
            .await?
            .map_err(|e| format!("reading Secret {ns}/{name}: {e}"))?;
        Ok(s.and_then(|s| s.data)
            .and_then(|d| d.get(TOKEN_KEY).cloned())
            .and_then(|b| String::from_utf8(b.0).ok()))
    }

    /// Writes `token` as `data.token` of Secret `name` in `ns`. With `overwrite` false an
    /// existing Secret is kept as it is; returns whether the token was written.
    pub async fn write_token_secret(
        &self,
        ns: &str,
        name: &str,
        plugin: &str,
        token: &str,
        overwrite: bool,
    ) -> Result<bool, StoreError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let mut labels = managed();
        labels.insert(PLUGIN_LABEL.to_string(), plugin.to_string());
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(labels),
                ..Default::default()
            },
            string_data: Some(BTreeMap::from([(TOKEN_KEY.to_string(), token.to_string())])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        let created = self
            .bounded(
                "writing a token Secret",
                secrets.create(&PostParams::default(), &secret),
            )
            .await?;
        match created {
            Ok(_) => Ok(true),
            Err(e) if api_status(&e) == Some(409) && !overwrite => Ok(false),
            Err(e) if api_status(&e) == Some(409) => {
                for _ in 0..8 {
                    let mut current = self
                        .bounded("reading a token Secret", secrets.get(name))
                        .await?
                        .map_err(|e| format!("reading Secret {ns}/{name}: {e}"))?;
                    current.string_data = secret.string_data.clone();
                    current.data = None;
                    match self
                        .bounded(
                            "writing a token Secret",
                            secrets.replace(name, &PostParams::default(), &current),
                        )
                        .await?
                    {
                        Ok(_) => return Ok(true),
                        Err(e) if api_status(&e) == Some(409) => continue,
                        Err(e) => {
                            return Err(StoreError::Failed(format!(
                                "writing Secret {ns}/{name}: {e}"
                            )));
                        }
                    }
                }
                Err(StoreError::Failed(format!(
                    "writing Secret {ns}/{name}: too many concurrent changes"
                )))
            }
            Err(e) => Err(StoreError::Failed(format!(
                "writing Secret {ns}/{name}: {e}"
            ))),
        }
    }

    /// Revokes a token id in the store, auditing it (from async code).
    pub async fn revoke_token(self: &Arc<Self>, jti: &str, actor: &str) -> Result<(), StoreError> {
        let at = crate::model::now_rfc3339();
        let event = AuditEvent {
            id: 0,
            time: at.clone(),
            actor: actor.to_string(),
            action: "revoke-token".into(),
            plugin: None,
            reason: format!("token {jti} revoked"),
            request_id: None,
        };
        let me = self.clone();
        let jti = jti.to_string();
        tokio::task::spawn_blocking(move || {
            me.commit(&[Change::Revoke { jti, at }, Change::Audit(event)])
        })
        .await
        .map_err(|e| StoreError::Failed(e.to_string()))?
    }

    /// While this replica leads: makes sure every declared plugin without a `backendUrl` or a
    /// `serviceAccount` has its token Secret (never overwriting one), at start and every `period`.
    pub fn spawn_token_secrets(
        self: &Arc<Self>,
        plugins: Vec<crate::config::PluginEntry>,
        keys: Arc<crate::auth::Keys>,
        mut leading: watch::Receiver<bool>,
        period: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let wanted: Vec<_> = plugins
                .into_iter()
                .filter(|p| p.backend_url.is_none() && p.service_account.is_none())
                .collect();
            if wanted.is_empty() {
                return;
            }
            loop {
                if *leading.borrow_and_update() {
                    for p in &wanted {
                        if let Err(e) = me.ensure_token_secret(p, &keys).await {
                            tracing::warn!(plugin = %p.name, namespace = %p.namespace, error = %e, "token Secret not ensured");
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    changed = leading.changed() => if changed.is_err() { return },
                }
            }
        })
    }

    async fn ensure_token_secret(
        &self,
        p: &crate::config::PluginEntry,
        keys: &crate::auth::Keys,
    ) -> Result<(), StoreError> {
        let name = token_secret_name(&p.name);
        if self.read_token_secret(&p.namespace, &name).await?.is_some() {
            return Ok(());
        }
        let grant = crate::auth::Grant::new(&p.name, &p.capabilities, Some(&p.namespace))
            .map_err(|e| StoreError::Failed(e.0))?;
        let (token, claims) = keys.issue_grant(&grant, None).map_err(|e| e.to_string())?;
        if self
            .write_token_secret(&p.namespace, &name, &p.name, &token, false)
            .await?
        {
            tracing::info!(plugin = %p.name, namespace = %p.namespace, secret = %name, jti = %claims.jti, "registration token Secret created");
        }
        Ok(())
    }
}
