//! Plugin records as ConfigMaps, and the revoked and issued token lists: the writes of
//! [`Store::commit`](super::Store::commit), each carrying the `resourceVersion` it was planned
//! on.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams, Preconditions};

use super::{
    ISSUED, KubeStore, PLUGIN_LABEL, RECORD_KEY, REVOKED, api_status, configmap_name, failed,
    managed, parse_record,
};
use crate::model::{IssuedToken, PluginRecord};
use crate::store::StoreError;

impl KubeStore {
    fn record_configmap(
        &self,
        rec: &PluginRecord,
        rv: Option<String>,
    ) -> Result<ConfigMap, StoreError> {
        let json = serde_json::to_string(rec).map_err(|e| failed("record", e))?;
        Ok(ConfigMap {
            metadata: ObjectMeta {
                name: Some(configmap_name(&rec.name)),
                namespace: Some(self.namespace.clone()),
                labels: Some({
                    let mut l = managed();
                    l.insert(PLUGIN_LABEL.to_string(), rec.name.clone());
                    l
                }),
                resource_version: rv,
                ..Default::default()
            },
            data: Some(BTreeMap::from([(RECORD_KEY.to_string(), json)])),
            ..Default::default()
        })
    }

    /// Reads a plugin's record as it is now, for a conflict.
    fn conflict(&self, name: &str) -> StoreError {
        let api = self.configmaps();
        let cm_name = configmap_name(name);
        match self.block("reading after a conflict", api.get_opt(&cm_name)) {
            Ok(Ok(Some(cm))) => {
                self.set_version(name, cm.metadata.resource_version.clone());
                match parse_record(&cm) {
                    Some(Ok(rec)) => StoreError::Conflict {
                        name: name.to_string(),
                        current: Some(Box::new(rec)),
                    },
                    _ => failed(&cm_name, "the stored record cannot be read"),
                }
            }
            Ok(Ok(None)) => {
                self.set_version(name, None);
                StoreError::Conflict {
                    name: name.to_string(),
                    current: None,
                }
            }
            Ok(Err(e)) => failed(&cm_name, e),
            Err(e) => e,
        }
    }

    pub(super) fn put(&self, rec: &PluginRecord) -> Result<(), StoreError> {
        let api = self.configmaps();
        let cm_name = configmap_name(&rec.name);
        let known = self.version(&rec.name);
        let body = self.record_configmap(rec, known.clone())?;
        let pp = PostParams::default();
        let res = match known {
            Some(_) => self.block("writing a plugin record", api.replace(&cm_name, &pp, &body))?,
            None => self.block("writing a plugin record", api.create(&pp, &body))?,
        };
        match res {
            Ok(cm) => {
                self.set_version(&rec.name, cm.metadata.resource_version);
                Ok(())
            }
            // Changed (409) or deleted (404) since it was read, or created by another replica.
            Err(e) if matches!(api_status(&e), Some(409 | 404)) => Err(self.conflict(&rec.name)),
            Err(e) => Err(failed(&cm_name, e)),
        }
    }

    pub(super) fn delete(&self, name: &str) -> Result<(), StoreError> {
        let api = self.configmaps();
        let cm_name = configmap_name(name);
        let dp = DeleteParams {
            preconditions: self.version(name).map(|rv| Preconditions {
                resource_version: Some(rv),
                uid: None,
            }),
            ..Default::default()
        };
        match self.block("deleting a plugin record", api.delete(&cm_name, &dp))? {
            Ok(_) => {
                self.set_version(name, None);
                Ok(())
            }
            Err(e) if api_status(&e) == Some(404) => {
                self.set_version(name, None);
                Ok(())
            }
            Err(e) if api_status(&e) == Some(409) => Err(self.conflict(name)),
            Err(e) => Err(failed(&cm_name, e)),
        }
    }

    /// Adds a token id to the revoked set (a set union: retried on conflict until it lands).
    pub(super) fn revoke(&self, jti: &str, at: &str) -> Result<(), StoreError> {
        self.add_to_list(REVOKED, jti, at, "revoking a token")
    }

    pub(super) fn issue(&self, token: &IssuedToken) -> Result<(), StoreError> {
        let json = serde_json::to_string(token)
            .map_err(|e| StoreError::Failed(format!("recording a token: {e}")))?;
        self.add_to_list(ISSUED, &token.jti, &json, "recording a token")
    }

    /// Adds `key` to a list kept as one ConfigMap's data (created when missing), unless it is
    /// there already; a concurrent change of the list is read again and retried.
    fn add_to_list(
        &self,
        list: &str,
        key: &str,
        value: &str,
        what: &str,
    ) -> Result<(), StoreError> {
        let api = self.configmaps();
        for _ in 0..16 {
            let current = self
                .block(what, api.get_opt(list))?
                .map_err(|e| failed(list, e))?;
            let res = match current {
                Some(mut cm) => {
                    let data = cm.data.get_or_insert_with(BTreeMap::new);
                    if data.contains_key(key) {
                        return Ok(());
                    }
                    data.insert(key.to_string(), value.to_string());
                    self.block(what, api.replace(list, &PostParams::default(), &cm))?
                }
                None => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(list.to_string()),
                            labels: Some(managed()),
                            ..Default::default()
                        },
                        data: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
                        ..Default::default()
                    };
                    self.block(what, api.create(&PostParams::default(), &cm))?
                }
            };
            match res {
                Ok(_) => return Ok(()),
                Err(e) if api_status(&e) == Some(409) => continue,
                Err(e) => return Err(failed(list, e)),
            }
        }
        Err(StoreError::Failed(format!(
            "{what}: too many concurrent changes to ConfigMap {list}"
        )))
    }
}
