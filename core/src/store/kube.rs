//! The Kubernetes store: state as objects in one namespace, no database and no CRDs.
//!
//! - one ConfigMap per plugin record, `tessera-plugin-<name>` (labels
//!   `app.kubernetes.io/managed-by=tessera`, `tessera.dev/plugin=<name>`), the record as JSON
//!   under `record.json`; every write carries the `resourceVersion` it was planned on, and a
//!   `409 Conflict` hands the current record back to the registry, which plans the write again;
//! - revoked token ids in ConfigMap `tessera-revoked-tokens` (one key per `jti`);
//! - audit as Events (`events.k8s.io/v1`) regarding the plugin's ConfigMap, written after the
//!   change they describe (the API has no transaction across objects) and logged as well;
//! - the signing key in Secret `tessera-signing-key`, created once by whichever replica comes
//!   first (the others read the winner's);
//! - leader election on Lease `tessera-core-leader`.
//!
//! A watch on the managed ConfigMaps feeds the registry's index on every replica. Every call is
//! bounded by a timeout, so a write during an API-server outage answers `store_unavailable`
//! instead of hanging in the client's retries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::watcher;
use tokio::sync::watch;

use super::{AuditQuery, Change, Loaded, Store, StoreError};
use crate::model::{AuditEvent, IssuedToken, PluginRecord};
use crate::registry::Registry;

/// Label every object Tessera manages carries.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label naming the plugin a ConfigMap holds.
pub const PLUGIN_LABEL: &str = "tessera.dev/plugin";
/// Key of the record in a plugin ConfigMap.
pub const RECORD_KEY: &str = "record.json";
/// ConfigMap of revoked token ids.
pub const REVOKED: &str = "tessera-revoked-tokens";
/// ConfigMap holding the token list: one data key per minted token id (a JSON record, never
/// the token).
pub const ISSUED: &str = "tessera-issued-tokens";
/// Secret holding the signing key.
pub const SIGNING_SECRET: &str = "tessera-signing-key";
/// Key of the PEM in the signing Secret.
pub const SIGNING_KEY: &str = "signing-key.pem";
/// Lease the replicas elect a leader with.
pub const LEASE: &str = "tessera-core-leader";
/// `reportingController` of Tessera's Events.
pub const CONTROLLER: &str = "tessera.dev/core";

/// The ConfigMap of a plugin.
pub fn configmap_name(plugin: &str) -> String {
    format!("tessera-plugin-{plugin}")
}

/// The Secret holding a declared plugin's registration token, in the plugin's namespace.
pub fn token_secret_name(plugin: &str) -> String {
    format!("plugin-reg-token-{plugin}")
}

/// Key of the token in a token Secret.
pub const TOKEN_KEY: &str = "token";

/// Timing of the Kubernetes store.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Bound on every API call.
    pub api_timeout: Duration,
    /// How long a Lease holds without renewal.
    pub lease: Duration,
    /// How often the leader renews.
    pub renew: Duration,
    /// How often a follower tries to acquire.
    pub retry: Duration,
}

/// State in Kubernetes objects.
pub struct KubeStore {
    client: kube::Client,
    /// The client the watch uses: without the client's own retries of 429/503/504, whose
    /// growing delays (up to minutes) would hold a replica's resync long after an API-server
    /// outage ends; the watch loop retries with its own short, capped backoff instead.
    watch_client: kube::Client,
    namespace: String,
    handle: tokio::runtime::Handle,
    timing: Timing,
    /// Who this replica is (pod name, or host name plus a random suffix).
    identity: String,
    /// `resourceVersion` of each plugin ConfigMap as last written or seen.
    versions: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore")
            .field("namespace", &self.namespace)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("{what}: {e}"))
}

fn api_status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl KubeStore {
    /// Connects with in-cluster config or `KUBECONFIG`, in `namespace` (default: the
    /// kubeconfig's, or the pod's).
    pub async fn connect(namespace: Option<String>, timing: Timing) -> Result<KubeStore, String> {
        let config = kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration (in-cluster or KUBECONFIG): {e}"))?;
        let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
        let mut watch_config = config.clone();
        watch_config.default_retry = false;
        let client = kube::Client::try_from(config)
            .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
        let watch_client = kube::Client::try_from(watch_config)
            .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
        let identity = std::env::var("POD_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "tessera".into());
                format!("{host}-{}", &crate::auth::new_jti()[..8])
            });
        Ok(KubeStore {
            client,
            watch_client,
            namespace,
            handle: tokio::runtime::Handle::current(),
            timing,
            identity,
            versions: Mutex::new(HashMap::new()),
        })
    }

    /// The namespace it keeps state in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// This replica's identity (Lease holder, Event reporting instance).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// An API call bounded by the timeout (`Err`: it did not answer in time).
    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, String> {
        let timeout = self.timing.api_timeout;
        tokio::time::timeout(timeout, fut).await.map_err(|_| {
            format!(
                "{what}: the Kubernetes API did not answer within {} s",
                timeout.as_secs_f64()
            )
        })
    }

    /// The same, from a blocking thread (the store's synchronous methods).
    fn block<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, StoreError> {
        self.handle
            .block_on(self.bounded(what, fut))
            .map_err(StoreError::Failed)
    }

    fn version(&self, name: &str) -> Option<String> {
        lock(&self.versions).get(name).cloned()
    }

    fn set_version(&self, name: &str, rv: Option<String>) {
        let mut v = lock(&self.versions);
        match rv {
            Some(rv) => v.insert(name.to_string(), rv),
            None => v.remove(name),
        };
    }

    /// Moves the version the index reflects to `rv` when it is newer (called on the writer
    /// thread, in order with local writes); false for an echo of a local write or an event
    /// older than what the index holds.
    fn advance(&self, name: &str, rv: &str, exists: bool) -> bool {
        let mut v = lock(&self.versions);
        let newer = match v.get(name) {
            None => true,
            Some(known) => match (known.parse::<u64>(), rv.parse::<u64>()) {
                (Ok(known), Ok(seen)) => seen > known,
                _ => known != rv,
            },
        };
        if newer {
            if exists {
                v.insert(name.to_string(), rv.to_string());
            } else {
                v.remove(name);
            }
        }
        newer
    }

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

    fn put(&self, rec: &PluginRecord) -> Result<(), StoreError> {
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

    fn delete(&self, name: &str) -> Result<(), StoreError> {
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
    fn revoke(&self, jti: &str, at: &str) -> Result<(), StoreError> {
        self.add_to_list(REVOKED, jti, at, "revoking a token")
    }

    fn issue(&self, token: &IssuedToken) -> Result<(), StoreError> {
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

    /// Writes an audit event as a Kubernetes Event regarding the plugin's ConfigMap. The
    /// change it describes is already committed, so a failure here is logged, not returned.
    fn audit_event(&self, e: &AuditEvent) {
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
            action: Some(truncate(&e.action, 128)),
            reason: Some(reason_of(&e.action)),
            note: Some(truncate(&e.reason, 1024)),
            regarding: Some(regarding),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(truncate(&self.identity, 128)),
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

    /// Reads the signing key from its Secret, creating it when missing; replicas starting
    /// together end up with one key (the create that lost reads the winner's).
    pub async fn signing_key(&self) -> Result<String, String> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let read = |s: Secret| -> Result<String, String> {
            s.data
                .and_then(|d| d.get(SIGNING_KEY).cloned())
                .and_then(|b| String::from_utf8(b.0).ok())
                .ok_or_else(|| format!("Secret {SIGNING_SECRET} has no {SIGNING_KEY}"))
        };
        if let Some(s) = self
            .bounded("reading the signing key", secrets.get_opt(SIGNING_SECRET))
            .await?
            .map_err(|e| format!("reading Secret {SIGNING_SECRET}: {e}"))?
        {
            return read(s);
        }
        let pem = crate::auth::Keys::generate_pem().map_err(|e| e.to_string())?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(SIGNING_SECRET.into()),
                labels: Some(managed()),
                ..Default::default()
            },
            string_data: Some(BTreeMap::from([(SIGNING_KEY.to_string(), pem.clone())])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        match self
            .bounded(
                "creating the signing key",
                secrets.create(&PostParams::default(), &secret),
            )
            .await?
        {
            Ok(_) => Ok(pem),
            Err(e) if api_status(&e) == Some(409) => {
                let s = self
                    .bounded("reading the signing key", secrets.get(SIGNING_SECRET))
                    .await?
                    .map_err(|e| format!("reading Secret {SIGNING_SECRET}: {e}"))?;
                read(s)
            }
            Err(e) => Err(format!("creating Secret {SIGNING_SECRET}: {e}")),
        }
    }

    /// Feeds the registry from a watch on the managed ConfigMaps: changes other replicas make
    /// reach this replica's index and shell list. After a re-list (a dropped or expired watch),
    /// records that disappeared meanwhile are removed.
    pub fn spawn_watch(self: &Arc<Self>, registry: Arc<Registry>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let cfg = watcher::Config::default().labels(&format!("{MANAGED_BY}=tessera"));
            let api = Api::namespaced(me.watch_client.clone(), &me.namespace);
            let mut stream = std::pin::pin!(watcher::watcher(api, cfg));
            let mut relisted: Option<HashSet<String>> = None;
            let mut backoff = Duration::from_millis(200);
            // Retried with a backoff capped at 2 s: after an outage, replicas resync within it.
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
                match ev {
                    watcher::Event::Init => relisted = Some(HashSet::new()),
                    watcher::Event::InitApply(cm) => {
                        if let Some(seen) = &mut relisted
                            && let Some(name) = plugin_of(&cm)
                        {
                            seen.insert(name);
                        }
                        me.apply_seen(&registry, &cm).await;
                    }
                    watcher::Event::InitDone => {
                        // Records the re-list did not return were deleted while unwatched.
                        if let Some(seen) = relisted.take() {
                            for r in registry.list() {
                                if seen.contains(&r.name) {
                                    continue;
                                }
                                let (m, name) = (me.clone(), r.name.clone());
                                registry
                                    .apply_external(r.name, None, move || {
                                        m.set_version(&name, None);
                                        true
                                    })
                                    .await;
                            }
                        }
                    }
                    watcher::Event::Apply(cm) => me.apply_seen(&registry, &cm).await,
                    watcher::Event::Delete(cm) => {
                        if let Some(name) = plugin_of(&cm) {
                            let rv = cm.metadata.resource_version.clone().unwrap_or_default();
                            let (m, n) = (me.clone(), name.clone());
                            registry
                                .apply_external(name, None, move || m.advance(&n, &rv, false))
                                .await;
                        }
                    }
                }
            }
        })
    }

    async fn apply_seen(self: &Arc<Self>, registry: &Registry, cm: &ConfigMap) {
        if cm.metadata.name.as_deref() == Some(REVOKED) {
            registry.apply_external_revoked(cm.data.iter().flat_map(|d| d.keys().cloned()));
            return;
        }
        let Some(name) = plugin_of(cm) else { return };
        let rv = cm.metadata.resource_version.clone().unwrap_or_default();
        match parse_record(cm) {
            Some(Ok(rec)) if rec.name == name => {
                let (m, n) = (self.clone(), name.clone());
                registry
                    .apply_external(name, Some(rec), move || m.advance(&n, &rv, true))
                    .await;
            }
            _ => {
                tracing::warn!(configmap = ?cm.metadata.name, "plugin ConfigMap without a readable record; ignored")
            }
        }
    }

    /// Elects a leader on the Lease: `true` on the channel while this replica leads. Until
    /// `shutdown`, then it releases the Lease (if held) so another replica takes over at once.
    pub fn spawn_leader_election(
        self: &Arc<Self>,
        leading: watch::Sender<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let leases: Api<Lease> = Api::namespaced(me.client.clone(), &me.namespace);
            let mut observed: Option<(Option<String>, Option<String>)> = None;
            let mut observed_at = Instant::now();
            let mut last_renewed: Option<Instant> = None;
            loop {
                let leader = me
                    .try_lead(&leases, &mut observed, &mut observed_at, &mut last_renewed)
                    .await;
                let leader = leader || last_renewed.is_some_and(|t| t.elapsed() < me.timing.lease);
                if !leader {
                    last_renewed = None;
                }
                leading.send_if_modified(|l| std::mem::replace(l, leader) != leader);
                let wait = if leader {
                    me.timing.renew
                } else {
                    me.timing.retry
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => break,
                }
            }
            if *leading.borrow() {
                leading.send_replace(false);
                me.release(&leases).await;
            }
        })
    }

    /// One round of the election; true when this replica holds the Lease after it.
    async fn try_lead(
        &self,
        leases: &Api<Lease>,
        observed: &mut Option<(Option<String>, Option<String>)>,
        observed_at: &mut Instant,
        last_renewed: &mut Option<Instant>,
    ) -> bool {
        let now = MicroTime(Timestamp::now());
        let secs = i32::try_from(self.timing.lease.as_secs().max(1)).unwrap_or(15);
        let current = match self
            .bounded("reading the Lease", leases.get_opt(LEASE))
            .await
        {
            Ok(Ok(l)) => l,
            _ => return false,
        };
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE.into()),
                    labels: Some(managed()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            let ok = matches!(
                self.bounded(
                    "creating the Lease",
                    leases.create(&PostParams::default(), &lease)
                )
                .await,
                Ok(Ok(_))
            );
            if ok {
                *last_renewed = Some(Instant::now());
                tracing::info!(identity = %self.identity, "leading (created the Lease)");
            }
            return ok;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = (
            holder.clone(),
            spec.renew_time.as_ref().map(|t| t.0.to_string()),
        );
        if observed.as_ref() != Some(&record) {
            *observed = Some(record);
            *observed_at = Instant::now();
        }
        let duration = spec
            .lease_duration_seconds
            .map_or(self.timing.lease, |s| Duration::from_secs(s.max(0) as u64));
        let mine = holder.as_deref() == Some(self.identity.as_str());
        // Judged by when this replica saw the Lease change, not by the holder's clock.
        let expired = holder.is_none() || observed_at.elapsed() > duration;
        if !mine && !expired {
            return false;
        }
        if !mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(secs);
        spec.renew_time = Some(now);
        match self
            .bounded(
                "renewing the Lease",
                leases.replace(LEASE, &PostParams::default(), &lease),
            )
            .await
        {
            Ok(Ok(_)) => {
                if !mine {
                    tracing::info!(identity = %self.identity, "leading (took over the Lease)");
                }
                *last_renewed = Some(Instant::now());
                true
            }
            _ => false,
        }
    }

    /// Gives the Lease up (on shutdown), so the next replica need not wait for it to expire.
    async fn release(&self, leases: &Api<Lease>) {
        let Ok(Ok(Some(mut lease))) = self
            .bounded("reading the Lease", leases.get_opt(LEASE))
            .await
        else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_duration_seconds = Some(1);
        let _ = self
            .bounded(
                "releasing the Lease",
                leases.replace(LEASE, &PostParams::default(), &lease),
            )
            .await;
        tracing::info!(identity = %self.identity, "released the Lease");
    }
}

// === registration-token Secrets ===

impl KubeStore {
    /// The token in Secret `name` of namespace `ns`, if the Secret exists.
    pub async fn read_token_secret(&self, ns: &str, name: &str) -> Result<Option<String>, String> {
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
    ) -> Result<bool, String> {
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
                        Err(e) => return Err(format!("writing Secret {ns}/{name}: {e}")),
                    }
                }
                Err(format!(
                    "writing Secret {ns}/{name}: too many concurrent changes"
                ))
            }
            Err(e) => Err(format!("writing Secret {ns}/{name}: {e}")),
        }
    }

    /// Revokes a token id in the store, auditing it (from async code).
    pub async fn revoke_token(self: &Arc<Self>, jti: &str, actor: &str) -> Result<(), String> {
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
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }

    /// While this replica leads: makes sure every declared plugin without a `backendUrl` has
    /// its token Secret (never overwriting one), at start and every `period`.
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
                .filter(|p| p.backend_url.is_none())
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
    ) -> Result<(), String> {
        let name = token_secret_name(&p.name);
        if self.read_token_secret(&p.namespace, &name).await?.is_some() {
            return Ok(());
        }
        let (token, claims) = keys
            .issue_registration(&p.name, &p.granted()?, Some(p.namespace.clone()), None)
            .map_err(|e| e.to_string())?;
        if self
            .write_token_secret(&p.namespace, &name, &p.name, &token, false)
            .await?
        {
            tracing::info!(plugin = %p.name, namespace = %p.namespace, secret = %name, jti = %claims.jti, "registration token Secret created");
        }
        Ok(())
    }
}

impl Store for KubeStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let api = self.configmaps();
        let lp = ListParams::default().labels(&format!("{MANAGED_BY}=tessera"));
        let list = self
            .block("listing plugin records", api.list(&lp))?
            .map_err(|e| failed("listing ConfigMaps", e))?;
        let mut loaded = Loaded::default();
        for cm in list.items {
            if cm.metadata.name.as_deref() == Some(REVOKED) {
                loaded
                    .revoked
                    .extend(cm.data.iter().flat_map(|d| d.keys().cloned()));
                continue;
            }
            let Some(name) = plugin_of(&cm) else { continue };
            match parse_record(&cm) {
                Some(Ok(rec)) => {
                    self.set_version(&name, cm.metadata.resource_version.clone());
                    loaded.plugins.push(rec);
                }
                _ => {
                    return Err(failed(
                        &configmap_name(&name),
                        "the stored record cannot be read",
                    ));
                }
            }
        }
        Ok(loaded)
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut audit = Vec::new();
        for c in changes {
            match c {
                Change::Put(rec) => self.put(rec)?,
                Change::Delete(name) => self.delete(name)?,
                Change::Revoke { jti, at } => self.revoke(jti, at)?,
                Change::Issue(t) => self.issue(t)?,
                Change::Audit(e) => audit.push(e),
            }
        }
        for e in audit {
            self.audit_event(e);
        }
        Ok(())
    }

    fn max_batch(&self) -> usize {
        1
    }

    fn tokens(&self) -> Result<Vec<IssuedToken>, StoreError> {
        let cm = self
            .block("reading the token list", self.configmaps().get_opt(ISSUED))?
            .map_err(|e| failed(ISSUED, e))?;
        let mut out: Vec<IssuedToken> = cm
            .and_then(|cm| cm.data)
            .unwrap_or_default()
            .values()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        out.sort_by(|a, b| b.issued.cmp(&a.issued).then_with(|| a.jti.cmp(&b.jti)));
        Ok(out)
    }

    fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
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

    fn ping(&self) -> Result<(), StoreError> {
        let api = self.configmaps();
        self.block("reaching the Kubernetes API", api.get_opt(REVOKED))?
            .map(|_| ())
            .map_err(|e| failed("reaching the Kubernetes API", e))
    }
}

/// The label every object Tessera writes carries.
fn managed() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY.to_string(), "tessera".to_string())])
}

fn plugin_of(cm: &ConfigMap) -> Option<String> {
    cm.metadata.labels.as_ref()?.get(PLUGIN_LABEL).cloned()
}

fn parse_record(cm: &ConfigMap) -> Option<Result<PluginRecord, serde_json::Error>> {
    let json = cm.data.as_ref()?.get(RECORD_KEY)?;
    Some(serde_json::from_str(json))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 8), "abc");
    }
}
