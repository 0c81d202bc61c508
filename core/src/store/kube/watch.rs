//! The watch on the managed ConfigMaps: changes other replicas make, as a stream of
//! [`External`] changes that `serve` feeds into the registry (this module does not know the
//! registry). After a re-list (a dropped or expired watch), records that disappeared meanwhile
//! are reported gone.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::mpsc;

use super::{KubeStore, REVOKED, parse_record, plugin_of};
use crate::store::External;

impl KubeStore {
    /// Watches the managed ConfigMaps and sends what other replicas changed, in order, until
    /// the receiver is dropped. Retried with a backoff capped at 2 s: after an outage, replicas
    /// resync within it.
    pub fn spawn_watch(
        self: &Arc<Self>,
        out: mpsc::Sender<External>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let cfg = watcher::Config::default().labels(&super::records_selector());
            let api = Api::namespaced(me.watch_client.clone(), &me.namespace);
            let mut stream = std::pin::pin!(watcher::watcher(api, cfg));
            let mut relisted: Option<HashSet<String>> = None;
            let mut backoff = Duration::from_millis(200);
            while let Some(ev) = stream.next().await {
                let ev = match ev {
                    Ok(ev) => {
                        backoff = Duration::from_millis(200);
                        ev
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "watch on plugin ConfigMaps failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                };
                let change = match ev {
                    watcher::Event::Init => {
                        relisted = Some(HashSet::new());
                        None
                    }
                    watcher::Event::InitApply(cm) => {
                        if let Some(seen) = &mut relisted
                            && let Some(name) = plugin_of(&cm)
                        {
                            seen.insert(name);
                        }
                        me.seen(&cm)
                    }
                    // Records the re-list did not return were deleted while unwatched.
                    watcher::Event::InitDone => relisted.take().map(|names| {
                        let m = me.clone();
                        External::Present {
                            names,
                            forget: Box::new(move |name| m.set_version(name, None)),
                        }
                    }),
                    watcher::Event::Apply(cm) => me.seen(&cm),
                    watcher::Event::Delete(cm) => plugin_of(&cm).map(|name| {
                        let rv = cm.metadata.resource_version.clone().unwrap_or_default();
                        let (m, n) = (me.clone(), name.clone());
                        External::Record {
                            name,
                            record: None,
                            newer: Box::new(move || m.advance(&n, &rv, false)),
                        }
                    }),
                };
                if let Some(change) = change
                    && out.send(change).await.is_err()
                {
                    return;
                }
            }
        })
    }

    /// A ConfigMap as seen by the watch: a record (applied only if newer than what the index
    /// holds), or the revoked-token list.
    fn seen(self: &Arc<Self>, cm: &ConfigMap) -> Option<External> {
        if cm.metadata.name.as_deref() == Some(REVOKED) {
            let jtis = cm.data.iter().flat_map(|d| d.keys().cloned()).collect();
            return Some(External::Revoked(jtis));
        }
        let name = plugin_of(cm)?;
        let rv = cm.metadata.resource_version.clone().unwrap_or_default();
        match parse_record(cm) {
            Some(Ok(rec)) if rec.name == name => {
                let (m, n) = (self.clone(), name.clone());
                Some(External::Record {
                    name,
                    record: Some(Box::new(rec)),
                    newer: Box::new(move || m.advance(&n, &rv, true)),
                })
            }
            _ => {
                tracing::warn!(configmap = ?cm.metadata.name, "plugin ConfigMap without a readable record; ignored");
                None
            }
        }
    }
}
