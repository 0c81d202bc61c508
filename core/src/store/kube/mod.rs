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
//! A watch on the managed ConfigMaps reports what other replicas change, as a stream that
//! `serve` feeds into every replica's registry. Every call is bounded by a timeout, so a write
//! during an API-server outage answers `store_unavailable` instead of hanging in the client's
//! retries.
//!
//! By concern: this file (the client, `resourceVersion` tracking, [`Store`]), `records`
//! (ConfigMap writes), `events` (audit), `watch`, `lease` (leader election), `secrets` (signing
//! key, registration-token Secrets), and [`KubeStore::replicate`] (the coordination seam).

mod events;
pub mod jobs;
mod keys;
mod lease;
pub mod plugin_secrets;
mod records;
mod reviews;
mod secrets;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};

use super::{AuditQuery, Change, Loaded, Store, StoreError};
use crate::config::Timing;
use crate::model::{AuditEvent, IssuedToken, PluginRecord};
use crate::sync::lock;

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
    pub async fn connect(
        namespace: Option<String>,
        timing: Timing,
    ) -> Result<KubeStore, StoreError> {
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
    ) -> Result<Result<T, kube::Error>, StoreError> {
        let timeout = self.timing.api_timeout;
        tokio::time::timeout(timeout, fut).await.map_err(|_| {
            StoreError::Failed(format!(
                "{what}: the Kubernetes API did not answer within {} s",
                timeout.as_secs_f64()
            ))
        })
    }

    /// The same, from a blocking thread (the store's synchronous methods).
    fn block<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, StoreError> {
        self.handle.block_on(self.bounded(what, fut))
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
}

impl Store for KubeStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let api = self.configmaps();
        let lp = ListParams::default().labels(&records_selector());
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
        self.read_audit(q)
    }

    fn ping(&self) -> Result<(), StoreError> {
        let api = self.configmaps();
        self.block("reaching the Kubernetes API", api.get_opt(REVOKED))?
            .map(|_| ())
            .map_err(|e| failed("reaching the Kubernetes API", e))
    }
}

/// The managed ConfigMaps that hold records and token lists (not plugins' jobs).
fn records_selector() -> String {
    format!("{MANAGED_BY}=tessera,!{}", jobs::JOBS_LABEL)
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

/// Opens the Kubernetes store and its signing key (creating the Secret when missing).
pub(super) async fn open(config: &crate::config::Config) -> Result<super::Opened, StoreError> {
    let store = Arc::new(
        KubeStore::connect(
            config.kubernetes.namespace.clone(),
            config.kubernetes.timing(),
        )
        .await?,
    );
    let pems = store
        .signing_keys()
        .await
        .map_err(|e| StoreError::Failed(format!("signing key: {e}")))?;
    let loader: Arc<dyn crate::auth::KeyLoader> = Arc::new(keys::KubeKeys(store.clone()));
    let keys = crate::auth::Keys::from_pems(&pems, Some(loader))
        .map_err(|e| StoreError::Failed(format!("Secret {SIGNING_SECRET}: {e}")))?;
    let session_key = match config.auth.oidc {
        Some(_) => Some(store.session_key().await?),
        None => None,
    };
    Ok(super::Opened {
        session_key,
        events_db: None,
        jobs: Arc::new(jobs::KubeJobs(store.clone())),
        secrets: Arc::new(plugin_secrets::KubeSecrets(store.clone())),
        token_reviewer: Some(Arc::new(reviews::KubeTokenReviewer::new(
            store.client.clone(),
            config.kubernetes.timing().api_timeout,
        ))),
        place: format!("namespace {}", store.namespace()),
        store: store.clone(),
        keys,
        coordination: Box::new(Replicas(store)),
    })
}

/// Replicas sharing one namespace: a Lease elects the leader, a watch reports the others'
/// writes, and the leader keeps the declared plugins' token Secrets.
struct Replicas(Arc<KubeStore>);

impl super::Coordination for Replicas {
    fn start(self: Box<Self>, upkeep: super::Upkeep) -> super::Replication {
        let store = self.0;
        let (leading_tx, leading) = tokio::sync::watch::channel(false);
        let (external_tx, external) = tokio::sync::mpsc::channel(256);
        let election = store.spawn_leader_election(leading_tx, upkeep.shutdown);
        let tasks = vec![
            store.spawn_watch(external_tx),
            store.spawn_token_secrets(
                upkeep.plugins,
                upkeep.keys,
                leading.clone(),
                std::time::Duration::from_secs(30),
            ),
        ];
        super::Replication::among_others(leading, external, tasks, election)
    }
}
