//! Audit as Kubernetes Events (`events.k8s.io/v1`) regarding the plugin's ConfigMap, written
//! after the change they describe (the API has no transaction across objects), and read back
//! for `GET /api/audit`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};

use super::{CONTROLLER, KubeStore, MANAGED_BY, REVOKED, configmap_name, failed, managed};
use crate::model::AuditEvent;
use crate::store::{AuditQuery, StoreError};

impl KubeStore {
    /// Writes an audit event as a Kubernetes Event regarding the plugin's ConfigMap. The
    /// change it describes is already committed, so a failure here is logged, not returned.
    pub(super) fn audit_event(&self, e: &AuditEvent) {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: Some(
                e.plugin
                    .as_deref()
                    .map_or(REVOKED.to_string(), configmap_name),
            ),
            namespace: Some(self.namespace.clone()),
            ..Default::default()
        };
        let mut annotations = BTreeMap::from([("tessera.dev/actor".to_string(), e.actor.clone())]);
        if let Some(p) = &e.plugin {
            annotations.insert("tessera.dev/plugin".into(), p.clone());
        }
        if let Some(r) = &e.request_id {
            annotations.insert("tessera.dev/request-id".into(), r.clone());
        }
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some("tessera-".into()),
                labels: Some(managed()),
                annotations: Some(annotations),
                ..Default::default()
            },
            action: Some(crate::model::clip(&e.action, 128)),
            reason: Some(reason_of(&e.action)),
            note: Some(crate::model::clip(&e.reason, 1024)),
            regarding: Some(regarding),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(crate::model::clip(&self.identity, 128)),
            event_time: Some(MicroTime(Timestamp::now())),
            type_: Some("Normal".into()),
            ..Default::default()
        };
        match self.block(
            "writing an audit Event",
            events.create(&PostParams::default(), &event),
        ) {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %err, action = %e.action, "audit Event not written")
            }
            Err(err) => tracing::warn!(error = %err, action = %e.action, "audit Event not written"),
        }
    }

    /// Audit events, newest first, as the query asks.
    pub(super) fn read_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().labels(&format!("{MANAGED_BY}=tessera"));
        let list = self
            .block("reading audit Events", events.list(&lp))?
            .map_err(|e| failed("listing Events", e))?;
        let mut out: Vec<AuditEvent> = list
            .items
            .into_iter()
            .filter(|e| e.reporting_controller.as_deref() == Some(CONTROLLER))
            .filter_map(|e| {
                let ann = e.metadata.annotations.clone().unwrap_or_default();
                Some(AuditEvent {
                    id: e.metadata.resource_version.as_deref()?.parse().ok()?,
                    time: e
                        .event_time
                        .as_ref()
                        .map(|t| t.0.to_string())
                        .unwrap_or_default(),
                    actor: ann.get("tessera.dev/actor").cloned().unwrap_or_default(),
                    action: e.action.clone().unwrap_or_default(),
                    plugin: ann.get("tessera.dev/plugin").cloned(),
                    reason: e.note.clone().unwrap_or_default(),
                    request_id: ann.get("tessera.dev/request-id").cloned(),
                })
            })
            .filter(|e| q.plugin.is_none() || e.plugin == q.plugin)
            .filter(|e| q.before.is_none_or(|b| e.id < b))
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.id));
        out.truncate(q.limit as usize);
        Ok(out)
    }
}

/// An Event `reason` (UpperCamelCase) from an audit action (`accept-remote` -> `AcceptRemote`).
fn reason_of(action: &str) -> String {
    action
        .split(['-', '_', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_reasons_are_upper_camel_case() {
        assert_eq!(reason_of("accept-remote"), "AcceptRemote");
        assert_eq!(reason_of("disable"), "Disable");
        assert_eq!(reason_of("revoke-token"), "RevokeToken");
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(crate::model::clip("héllo", 2), "h");
        assert_eq!(crate::model::clip("abc", 8), "abc");
    }
}
