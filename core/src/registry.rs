//! The registry: the in-memory index of plugins that every request reads, and the only place
//! plugin state changes.
//!
//! ```text
//!   api (register, disable, ...) ─┐
//!                                 ├─▶ Registry ── persist (Store, one transaction) ──▶ index ──▶ shell snapshot
//!   probe (outcomes) ─────────────┘  (one writer thread, group commit)                           (watch channel)
//! ```
//!
//! A write builds the new record, persists it with its audit events, and only then swaps it into
//! the index: a change that is visible was committed. Writes queue for one writer thread, which
//! takes every write that arrived while the previous transaction ran and commits them together:
//! one fsync for many writes, each still acknowledged only after its commit.
//!
//! The shell snapshot (the JSON bytes of `GET /api/shell/remotes` and their ETag) is rebuilt on every change and published through a
//! `watch` channel, so the shell list and its live stream cost readers nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256, Sha384};
use tokio::sync::{mpsc, watch};

use crate::error::{ApiError, Code};
use crate::model::{
    AuditEvent, Deployment, Disabled, ManifestJson, PluginRecord, Reason, State, now_rfc3339,
};
use crate::store::{AuditQuery, Change, Store, StoreError};

/// Condition types.
pub mod condition {
    /// The core accepted the registration.
    pub const REGISTERED: &str = "Registered";
    /// Both probes pass.
    pub const READY: &str = "Ready";
    /// Not disabled by an admin.
    pub const ENABLED: &str = "Enabled";
    /// The shell loaded the UI.
    pub const UI_LOADED: &str = "UiLoaded";
}

/// What changes hands when a plugin registers (already validated by the API).
#[derive(Clone, Debug)]
pub struct Registration {
    /// Plugin name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Normalized manifest.
    pub manifest: ManifestJson,
    /// Service URL.
    pub backend_url: String,
    /// Remote entry URL.
    pub remote_url: String,
    /// Token id.
    pub token_id: String,
}

/// Who asked, for the audit log.
#[derive(Clone, Debug)]
pub struct Actor {
    /// `admin:<jti>`, `plugin:<name>`, `prober`, `shell`.
    pub who: String,
    /// The request id, when a request caused it.
    pub request_id: Option<String>,
}

impl Actor {
    /// The prober.
    pub fn prober() -> Actor {
        Actor {
            who: "prober".into(),
            request_id: None,
        }
    }
}

/// Result of one probe round of one plugin.
#[derive(Clone, Debug)]
pub struct ProbeOutcome {
    /// The version probed.
    pub version: String,
    /// `Ok` when the readiness endpoint answered 2xx; else why not.
    pub ready: Result<(), String>,
    /// The remote entry's bytes, or why they could not be fetched.
    pub remote: Result<bytes::Bytes, String>,
    /// How long the round took, in milliseconds.
    pub latency_ms: u64,
}

/// Least time between two rebuilds of the shell list by the publisher task.
const PUBLISH_PACING: std::time::Duration = std::time::Duration::from_millis(25);

/// What the prober needs to probe one plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTarget {
    /// Plugin name.
    pub name: String,
    /// The version being probed.
    pub version: String,
    /// Service URL.
    pub backend_url: String,
    /// Remote entry URL.
    pub remote_url: String,
    /// `health.readinessPath`.
    pub readiness_path: String,
}

/// Probe figures kept in memory for the admin API.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeStats {
    /// Consecutive passing rounds.
    pub consecutive_successes: u32,
    /// Consecutive failing rounds.
    pub consecutive_failures: u32,
    /// Last passing round (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// Last failing round (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Why the last failing round failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure_reason: Option<String>,
    /// Latency of the last round, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_latency_ms: Option<u64>,
}

/// The shell list, serialized (and gzip-compressed) once per change, so serving it costs no
/// per-request work: readers share these bytes by reference.
#[derive(Clone, Debug)]
pub struct ShellSnapshot {
    /// Bumps on every change of the list.
    pub generation: u64,
    /// The JSON body of `GET /api/shell/remotes`.
    pub body: bytes::Bytes,
    /// The same body, gzip-compressed (what browsers accept): made by the first request that
    /// asks for it, once per list, so churn with nobody reading costs no compression.
    gzip: std::sync::OnceLock<bytes::Bytes>,
    /// The same body as one server-sent event (`event: remotes`), made once per list and
    /// shared by every open stream, however many there are.
    event: std::sync::OnceLock<bytes::Bytes>,
    /// Its strong ETag (of the JSON; the gzip variant carries it with a `-gzip` suffix).
    pub etag: String,
}

impl ShellSnapshot {
    /// The gzip form of the body (compressed on first use).
    pub fn gzip(&self) -> bytes::Bytes {
        self.gzip.get_or_init(|| gzip(&self.body).into()).clone()
    }

    /// The list as a server-sent event: `event: remotes`, `id:` the generation, one `data:`
    /// line (the JSON is compact: it holds no line break).
    pub fn event(&self) -> bytes::Bytes {
        self.event
            .get_or_init(|| {
                let head = format!("event: remotes\nid: {}\ndata: ", self.generation);
                let mut out = Vec::with_capacity(head.len() + self.body.len() + 2);
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(&self.body);
                out.extend_from_slice(b"\n\n");
                out.into()
            })
            .clone()
    }
}

/// Thresholds the registry applies to probe outcomes.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// Consecutive successes to become Ready.
    pub success: u32,
    /// Consecutive failures to become Degraded.
    pub failure: u32,
}

/// The registry.
pub struct Registry {
    store: Arc<dyn Store>,
    thresholds: Thresholds,
    /// The index; std lock, held only to read or swap.
    index: RwLock<BTreeMap<String, PluginRecord>>,
    /// Revoked token ids.
    revoked: RwLock<HashSet<String>>,
    /// Probe figures, by plugin.
    stats: RwLock<HashMap<String, ProbeStats>>,
    /// Remote entry bytes by plugin, then version, as last fetched by the prober.
    remote_bytes: RwLock<HashMap<String, Vec<(String, bytes::Bytes)>>>,
    /// Bumps on every change of the index (the prober refreshes its targets from it).
    generation: std::sync::atomic::AtomicU64,
    /// Wakes the publisher task: the shell list must be rebuilt.
    dirty: tokio::sync::Notify,
    /// The shell-list entry of every exposed plugin, serialized when its exposure changes, so a
    /// rebuild of the list only concatenates bytes.
    entries: RwLock<BTreeMap<String, bytes::Bytes>>,
    /// Panel ids and route paths claimed by enabled plugins (their current and serving
    /// versions), so a registration checks collisions in O(its own contributions).
    claims: RwLock<Claims>,
    /// Writes waiting for the writer thread, which plans them in order, commits each batch as
    /// one transaction (group commit) and only then indexes it.
    ops: mpsc::UnboundedSender<Op>,
    shell: watch::Sender<Arc<ShellSnapshot>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// What `register` did.
#[derive(Debug)]
pub struct Registered {
    /// The record after the call.
    pub record: PluginRecord,
    /// False when the same name and version were registered already (idempotent repeat).
    pub changed: bool,
}

// === impl Registry ===

impl Registry {
    /// Loads the index from the store.
    /// Starts the writer thread, which stops once the registry is dropped.
    pub fn load(store: Arc<dyn Store>, thresholds: Thresholds) -> Result<Arc<Registry>, String> {
        let loaded = store.load().map_err(|e| e.to_string())?;
        let index: BTreeMap<String, PluginRecord> = loaded
            .plugins
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let snapshot = build_snapshot(&index, 0);
        let index_for_claims = index.clone();
        let (shell, _) = watch::channel(Arc::new(snapshot));
        let (ops, queued) = mpsc::unbounded_channel();
        let registry = Arc::new(Registry {
            store,
            thresholds,
            index: RwLock::new(index),
            revoked: RwLock::new(loaded.revoked.into_iter().collect()),
            stats: RwLock::new(HashMap::new()),
            remote_bytes: RwLock::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(1),
            dirty: tokio::sync::Notify::new(),
            claims: RwLock::new(Claims::build(&index_for_claims)),
            entries: RwLock::new(
                index_for_claims
                    .values()
                    .filter_map(|r| Some((r.name.clone(), entry_json(r)?)))
                    .collect(),
            ),
            ops,
            shell,
        });
        let weak = Arc::downgrade(&registry);
        std::thread::Builder::new()
            .name("tessera-writer".into())
            .spawn(move || run_writer(weak, queued))
            .map_err(|e| format!("cannot start the store writer: {e}"))?;
        Ok(registry)
    }

    // --- reads ---

    /// Every record.
    pub fn list(&self) -> Vec<PluginRecord> {
        read(&self.index).values().cloned().collect()
    }

    /// One record.
    pub fn get(&self, name: &str) -> Option<PluginRecord> {
        read(&self.index).get(name).cloned()
    }

    /// Probe figures of a plugin.
    pub fn stats(&self, name: &str) -> ProbeStats {
        read(&self.stats).get(name).cloned().unwrap_or_default()
    }

    /// Revoked token ids.
    pub fn revoked(&self) -> HashSet<String> {
        read(&self.revoked).clone()
    }

    /// Whether a token id is revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        read(&self.revoked).contains(jti)
    }

    /// The current shell snapshot.
    pub fn shell(&self) -> Arc<ShellSnapshot> {
        self.shell.borrow().clone()
    }

    /// Subscribes to shell snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ShellSnapshot>> {
        self.shell.subscribe()
    }

    /// The remote entry's bytes of an exposed plugin version, as last probed.
    pub fn remote_entry(&self, name: &str, version: &str) -> Option<bytes::Bytes> {
        read(&self.remote_bytes)
            .get(name)?
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, b)| b.clone())
    }

    /// The remote URL and integrity of `name` at `version` while that version is served, or the
    /// plugin's state when it is not; reads without copying the record.
    pub fn serving(
        &self,
        name: &str,
        version: &str,
    ) -> Option<Result<(String, Option<String>), State>> {
        let index = read(&self.index);
        let rec = index.get(name)?;
        Some(match rec.exposed().filter(|d| d.version == version) {
            Some(d) => Ok((d.remote_url.clone(), d.integrity.clone())),
            None => Err(rec.state),
        })
    }

    /// What the prober needs of every plugin it should probe, and the index generation it was
    /// read at.
    pub fn probe_targets(&self) -> (u64, Vec<ProbeTarget>) {
        let index = read(&self.index);
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let targets = index
            .values()
            .filter(|p| {
                matches!(p.state, State::Registering | State::Ready | State::Degraded)
                    && p.disabled.is_none()
            })
            .map(|p| ProbeTarget {
                name: p.name.clone(),
                version: p.current.version.clone(),
                backend_url: p.current.backend_url.clone(),
                remote_url: p.current.remote_url.clone(),
                readiness_path: p
                    .current
                    .manifest
                    .fields::<HealthFields>()
                    .health
                    .readiness_path
                    .unwrap_or_else(|| "/readyz".to_string()),
            })
            .collect();
        (generation, targets)
    }

    /// The index generation (bumps on every change).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Runs the task that rebuilds the shell list after changes, coalescing bursts (a thousand
    /// plugins turning Ready at start cost a handful of rebuilds, not a thousand).
    pub fn spawn_publisher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.dirty.notified().await;
                me.publish();
                // Under churn (thousands of plugins turning Ready), let changes gather for a
                // moment before the next rebuild; a lone change is still published at once.
                tokio::time::sleep(PUBLISH_PACING).await;
            }
        })
    }

    /// The audit log.
    pub async fn audit(&self, q: AuditQuery) -> Result<Vec<AuditEvent>, ApiError> {
        let store = self.store.clone();
        blocking(move || store.audit(&q)).await
    }

    /// Whether the store answers.
    pub async fn store_ok(&self) -> bool {
        let store = self.store.clone();
        blocking(move || store.ping()).await.is_ok()
    }

    // --- writes ---

    /// Registers (or re-registers) a plugin version. Conflicts with other plugins' panel ids
    /// and route paths are refused here, on the writer thread, against the claims of every
    /// write planned before it (committed or in the same batch), so two racing registrations
    /// cannot both claim the same id.
    pub async fn register(&self, reg: Registration, actor: &Actor) -> Result<Registered, ApiError> {
        let actor = actor.clone();
        self.submit(move |me, b| me.plan_register(b, &reg, &actor))
            .await
    }

    fn plan_register(
        &self,
        b: &mut Batch,
        reg: &Registration,
        actor: &Actor,
    ) -> Result<Registered, ApiError> {
        let now = now_rfc3339();
        let existing = b.get(self, &reg.name);
        self.check_conflicts(b, reg)?;

        let deployment = Deployment {
            version: reg.version.clone(),
            manifest: reg.manifest.clone(),
            backend_url: reg.backend_url.clone(),
            remote_url: reg.remote_url.clone(),
            integrity: None,
            registered_at: now.clone(),
            token_id: reg.token_id.clone(),
        };
        let (record, action, reason) = match existing {
            Some(rec)
                if rec.current.version == reg.version
                    && rec.current.manifest == reg.manifest
                    && rec.current.backend_url == reg.backend_url
                    && rec.current.remote_url == reg.remote_url
                    && !remote_changed(&rec) =>
            {
                return Ok(Registered {
                    record: rec,
                    changed: false,
                });
            }
            Some(mut rec) => {
                let same_version = rec.current.version == reg.version;
                rec.current = deployment;
                if same_version || !matches!(rec.state, State::Ready | State::Registering) {
                    // Re-registering the exposed version (new URLs, or after its remote
                    // changed), or a new version of a plugin that was not healthy: nothing
                    // stays exposed until the probes pass again. A Ready plugin's last version
                    // stays exposed while the new one is probed.
                    rec.serving = None;
                }
                if rec.state != State::Disabled {
                    rec.state = State::Registering;
                }
                mark_registered(&mut rec, &reg.version, &now);
                rec.updated_at = now.clone();
                let why = if same_version {
                    format!("re-registered version {}", reg.version)
                } else {
                    format!(
                        "new version {} (was {})",
                        reg.version,
                        rec.serving.as_ref().map_or("none", |s| s.version.as_str())
                    )
                };
                (rec, "register", why)
            }
            None => {
                let mut rec = PluginRecord {
                    name: reg.name.clone(),
                    state: State::Registering,
                    current: deployment,
                    serving: None,
                    disabled: None,
                    conditions: Vec::new(),
                    updated_at: now.clone(),
                };
                mark_registered(&mut rec, &reg.version, &now);
                rec.set_condition(
                    condition::ENABLED,
                    true,
                    Reason::EnabledByDefault,
                    "enabled (a plugin starts enabled)",
                    &now,
                );
                (
                    rec,
                    "register",
                    format!("first registration, version {}", reg.version),
                )
            }
        };
        write(&self.stats).remove(&reg.name);
        let event = audit(actor, action, Some(&reg.name), reason, &now);
        b.put(self, record.clone(), vec![event]);
        Ok(Registered {
            record,
            changed: true,
        })
    }

    fn check_conflicts(&self, b: &Batch, reg: &Registration) -> Result<(), ApiError> {
        let claims = read(&self.claims);
        let mine = contributions(&reg.manifest);
        let Some((what, id, other)) = mine.iter().find_map(|(key, written)| {
            let owner = claims.owner.get(key)?;
            (owner != &reg.name).then(|| (key.0, written.clone(), owner.clone()))
        }) else {
            return Ok(());
        };
        drop(claims);
        let version = b
            .get(self, &other)
            .map(|r| r.current.version)
            .unwrap_or_default();
        Err(ApiError::new(
            Code::ContributionConflict,
            format!(
                "{what} \"{id}\" of plugin \"{}\" is already used by plugin \"{other}\" (version {version})",
                reg.name
            ),
        )
        .with_details(vec![json!({
            "kind": what, "value": id,
            "plugin": reg.name, "conflictsWith": other, "conflictsWithVersion": version,
        })]))
    }

    /// The kill switch: hides the plugin at once, stops probing it.
    pub async fn disable(
        &self,
        name: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<PluginRecord, ApiError> {
        let (reason, by) = (reason.to_string(), actor.who.clone());
        self.edit(name, actor, move |_, rec, now| {
            rec.state = State::Disabled;
            rec.disabled = Some(Disabled {
                reason: reason.clone(),
                by: by.clone(),
                at: now.to_string(),
            });
            rec.set_condition(
                condition::ENABLED,
                false,
                Reason::DisabledByAdmin,
                reason.clone(),
                now,
            );
            Some(("disable", reason.clone()))
        })
        .await
    }

    /// Lifts the kill switch; the plugin is probed again before it is shown.
    pub async fn enable(&self, name: &str, actor: &Actor) -> Result<PluginRecord, ApiError> {
        self.edit(name, actor, |me, rec, now| {
            rec.disabled.as_ref()?;
            // Rounds from before the kill switch do not count towards Ready.
            write(&me.stats).remove(&rec.name);
            rec.disabled = None;
            rec.state = State::Registering;
            // Shown again only once its probes pass.
            rec.serving = None;
            rec.set_condition(
                condition::ENABLED,
                true,
                Reason::EnabledByAdmin,
                "enabled by an admin",
                now,
            );
            rec.set_condition(
                condition::READY,
                false,
                Reason::AwaitingProbe,
                "waiting for probes after being enabled",
                now,
            );
            Some(("enable", "enabled".to_string()))
        })
        .await
    }

    /// Lists a plugin declared in the config as `Installed` until it registers (nothing when it
    /// is known already; an `Installed` record gets the new `why` when it changed).
    pub async fn install(
        &self,
        name: &str,
        backend_url: &str,
        why: &str,
        actor: &Actor,
    ) -> Result<(), ApiError> {
        let (name, backend_url, why, actor) = (
            name.to_string(),
            backend_url.to_string(),
            why.to_string(),
            actor.clone(),
        );
        self.submit(move |me, b| {
            let now = now_rfc3339();
            let (mut rec, events) = match b.get(me, &name) {
                Some(rec) if rec.state != State::Installed => return Ok(()),
                Some(rec) => {
                    let same = rec
                        .conditions
                        .iter()
                        .any(|c| c.kind == condition::REGISTERED && c.message == why);
                    if same {
                        return Ok(());
                    }
                    (rec, Vec::new())
                }
                None => {
                    let manifest = ManifestJson::new(&json!({"name": name}))
                        .map_err(|e| ApiError::new(Code::Internal, e.to_string()))?;
                    let mut rec = PluginRecord {
                        name: name.clone(),
                        state: State::Installed,
                        current: Deployment {
                            version: String::new(),
                            manifest,
                            backend_url: backend_url.clone(),
                            remote_url: String::new(),
                            integrity: None,
                            registered_at: now.clone(),
                            token_id: String::new(),
                        },
                        serving: None,
                        disabled: None,
                        conditions: Vec::new(),
                        updated_at: now.clone(),
                    };
                    rec.set_condition(
                        condition::ENABLED,
                        true,
                        Reason::EnabledByDefault,
                        "enabled (a plugin starts enabled)",
                        &now,
                    );
                    let event = audit(&actor, "install", Some(&name), why.clone(), &now);
                    (rec, vec![event])
                }
            };
            rec.set_condition(
                condition::REGISTERED,
                false,
                Reason::AwaitingRegistration,
                why.clone(),
                &now,
            );
            rec.updated_at = now;
            b.put(me, rec, events);
            Ok(())
        })
        .await
    }

    /// Forgets a plugin.
    pub async fn delete(&self, name: &str, actor: &Actor) -> Result<(), ApiError> {
        let (name, actor) = (name.to_string(), actor.clone());
        self.submit(move |me, b| {
            if b.get(me, &name).is_none() {
                return Err(not_found(&name));
            }
            let now = now_rfc3339();
            let event = audit(&actor, "delete", Some(&name), "deleted".to_string(), &now);
            b.delete(me, &name, event);
            Ok(())
        })
        .await
    }

    /// Accepts a changed remote entry under the same version (after `RemoteEntryChanged`).
    pub async fn accept_remote(&self, name: &str, actor: &Actor) -> Result<PluginRecord, ApiError> {
        self.edit(name, actor, |_, rec, now| {
            rec.current.integrity = None;
            if rec.state == State::Degraded {
                rec.state = State::Registering;
            }
            rec.set_condition(
                condition::READY,
                false,
                Reason::AwaitingProbe,
                "remote entry accepted by an admin; waiting for probes",
                now,
            );
            Some(("accept-remote", "changed remote entry accepted".to_string()))
        })
        .await
    }

    /// Changes one existing record as `change` says (given the time), and audits it with the
    /// action and reason `change` returns; `None` means there was nothing to change.
    async fn edit(
        &self,
        name: &str,
        actor: &Actor,
        change: impl Fn(&Registry, &mut PluginRecord, &str) -> Option<(&'static str, String)>
        + Send
        + 'static,
    ) -> Result<PluginRecord, ApiError> {
        let (name, actor) = (name.to_string(), actor.clone());
        self.submit(move |me, b| {
            let mut rec = b.get(me, &name).ok_or_else(|| not_found(&name))?;
            let now = now_rfc3339();
            let Some((action, reason)) = change(me, &mut rec, &now) else {
                return b.get(me, &name).ok_or_else(|| not_found(&name));
            };
            rec.updated_at = now.clone();
            let event = audit(&actor, action, Some(&name), reason, &now);
            b.put(me, rec.clone(), vec![event]);
            Ok(rec)
        })
        .await
    }

    /// Revokes a token id (idempotent).
    pub async fn revoke(&self, jti: &str, actor: &Actor) -> Result<(), ApiError> {
        let (jti, actor) = (jti.to_string(), actor.clone());
        self.submit(move |_, b| {
            let now = now_rfc3339();
            let event = audit(
                &actor,
                "revoke-token",
                None,
                format!("token {jti} revoked"),
                &now,
            );
            b.revoke(jti.clone(), now, event);
            Ok(())
        })
        .await
    }

    /// Records a minted token in the token list, with its audit event.
    pub async fn record_issued(
        &self,
        token: crate::model::IssuedToken,
        actor: &Actor,
    ) -> Result<(), ApiError> {
        let actor = actor.clone();
        self.submit(move |_, b| {
            let now = now_rfc3339();
            let event = audit(&actor, "issue-token", None, token.audit_reason(), &now);
            b.changes.push(Change::Issue(Box::new(token.clone())));
            b.audit(vec![event]);
            Ok(())
        })
        .await
    }

    /// The token list, newest first, each with whether it is revoked.
    pub async fn tokens(&self) -> Result<Vec<(crate::model::IssuedToken, bool)>, ApiError> {
        let store = self.store.clone();
        let list = blocking(move || store.tokens()).await?;
        let revoked = read(&self.revoked);
        Ok(list
            .into_iter()
            .map(|t| {
                let r = revoked.contains(&t.jti);
                (t, r)
            })
            .collect())
    }

    /// Applies one probe round's outcome and makes the transitions the thresholds call for.
    pub async fn apply_probe(&self, name: &str, outcome: ProbeOutcome) -> Result<(), ApiError> {
        let hash = outcome.remote.as_ref().ok().map(|b| integrity(b));
        let failure = failure_of(&outcome);
        if self.probe_fast_path(name, &outcome, hash.as_deref()) {
            self.record_stats(name, outcome.latency_ms, &failure);
            if let Ok(bytes) = &outcome.remote {
                self.keep_remote_bytes(name, &outcome.version, bytes);
            }
            return Ok(());
        }
        let name = name.to_string();
        // The figures are counted once, however often the write is planned.
        let counted = std::sync::OnceLock::new();
        self.submit(move |me, b| {
            me.plan_probe(b, &name, &outcome, &hash, &failure, &counted);
            Ok(())
        })
        .await
    }

    fn plan_probe(
        &self,
        b: &mut Batch,
        name: &str,
        outcome: &ProbeOutcome,
        hash: &Option<String>,
        failure: &Option<(Reason, String)>,
        counted: &std::sync::OnceLock<ProbeStats>,
    ) {
        let Some(mut rec) = b.get(self, name) else {
            return;
        };
        if rec.current.version != outcome.version
            || matches!(rec.state, State::Disabled | State::Installed)
        {
            return; // a stale round, or a plugin the prober must leave alone
        }
        let now = now_rfc3339();
        let stats = counted
            .get_or_init(|| {
                if let Ok(bytes) = &outcome.remote {
                    self.keep_remote_bytes(name, &outcome.version, bytes);
                }
                self.record_stats(name, outcome.latency_ms, failure)
            })
            .clone();

        let before = (rec.state, rec.conditions.clone());
        let mut events = Vec::new();
        let changed_bytes = matches!((&rec.current.integrity, &hash), (Some(a), Some(b)) if a != b);
        if remote_changed(&rec) {
            // Withdrawn until re-registered or accepted; probes do not lift it.
        } else if changed_bytes {
            rec.state = State::Degraded;
            if rec
                .serving
                .as_ref()
                .is_some_and(|s| s.version == rec.current.version)
            {
                rec.serving = None;
            }
            let msg = format!(
                "remote entry bytes changed under version {} (was {}, now {}); withdrawn until the plugin re-registers or an admin accepts the new bytes",
                rec.current.version,
                rec.current.integrity.clone().unwrap_or_default(),
                hash.clone().unwrap_or_default()
            );
            rec.set_condition(
                condition::READY,
                false,
                Reason::RemoteEntryChanged,
                msg.clone(),
                &now,
            );
            events.push(audit(
                &Actor::prober(),
                "transition",
                Some(name),
                format!("Degraded: {msg}"),
                &now,
            ));
        } else {
            match (&failure, rec.state) {
                (None, State::Registering | State::Degraded)
                    if stats.consecutive_successes >= self.thresholds.success =>
                {
                    let from = rec.state;
                    rec.state = State::Ready;
                    if rec.current.integrity.is_none() {
                        rec.current.integrity = hash.clone();
                    }
                    rec.serving = Some(rec.current.clone());
                    rec.set_condition(
                        condition::READY,
                        true,
                        Reason::Passed,
                        format!(
                            "readiness and remote entry probes pass for version {}",
                            rec.current.version
                        ),
                        &now,
                    );
                    events.push(audit(
                        &Actor::prober(),
                        "transition",
                        Some(name),
                        format!("{} -> Ready: probes pass", from.as_str()),
                        &now,
                    ));
                }
                (Some((reason, msg)), State::Ready)
                    if stats.consecutive_failures >= self.thresholds.failure =>
                {
                    rec.state = State::Degraded;
                    rec.set_condition(
                        condition::READY,
                        false,
                        *reason,
                        format!(
                            "{msg} ({} consecutive failures)",
                            stats.consecutive_failures
                        ),
                        &now,
                    );
                    events.push(audit(
                        &Actor::prober(),
                        "transition",
                        Some(name),
                        format!("Ready -> Degraded: {msg}"),
                        &now,
                    ));
                }
                (Some((reason, msg)), State::Registering | State::Degraded) => {
                    rec.set_condition(condition::READY, false, *reason, msg.clone(), &now);
                }
                _ => {}
            }
        }
        // Persist only what changed the record's meaning (not every probe's message text).
        let reasons = |c: &[crate::model::Condition]| {
            c.iter()
                .map(|c| (c.kind.clone(), c.status.clone(), c.reason))
                .collect::<Vec<_>>()
        };
        if before.0 == rec.state && reasons(&before.1) == reasons(&rec.conditions) {
            return;
        }
        rec.updated_at = now;
        b.put(self, rec, events);
    }

    fn record_stats(
        &self,
        name: &str,
        latency_ms: u64,
        failure: &Option<(Reason, String)>,
    ) -> ProbeStats {
        let now = now_rfc3339();
        let mut all = write(&self.stats);
        let s = all.entry(name.to_string()).or_default();
        s.last_latency_ms = Some(latency_ms);
        match failure {
            None => {
                s.consecutive_successes = s.consecutive_successes.saturating_add(1);
                s.consecutive_failures = 0;
                s.last_success = Some(now);
            }
            Some((_, why)) => {
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                s.consecutive_successes = 0;
                s.last_failure = Some(now);
                s.last_failure_reason = Some(why.clone());
            }
        }
        s.clone()
    }

    /// Keeps a remote entry's bytes for the asset route (the prober's, or fetched on demand
    /// with the pinned integrity).
    pub fn keep_remote_bytes(&self, name: &str, version: &str, bytes: &bytes::Bytes) {
        let mut all = write(&self.remote_bytes);
        let versions = all.entry(name.to_string()).or_default();
        match versions.iter_mut().find(|(v, _)| v == version) {
            Some((_, b)) if b == bytes => {}
            Some((_, b)) => *b = bytes.clone(),
            None => versions.push((version.to_string(), bytes.clone())),
        }
    }

    /// The common probe outcome that changes nothing but the figures: a Ready plugin passing
    /// with the bytes it was admitted with, or a failing round below the threshold (or of a
    /// plugin already withdrawn for the same reason). Handled under a read lock, without
    /// copying the record. Returns false when the full path must run.
    fn probe_fast_path(&self, name: &str, outcome: &ProbeOutcome, hash: Option<&str>) -> bool {
        let index = read(&self.index);
        let Some(rec) = index.get(name) else {
            return false;
        };
        if rec.current.version != outcome.version || remote_changed(rec) {
            return false;
        }
        let ready_reason = rec
            .conditions
            .iter()
            .find(|c| c.kind == condition::READY)
            .map(|c| c.reason);
        let stats = read(&self.stats).get(name).cloned().unwrap_or_default();
        match (&outcome.ready, &outcome.remote) {
            (Ok(()), Ok(_)) => {
                rec.state == State::Ready
                    && rec.current.integrity.as_deref() == hash
                    && ready_reason == Some(Reason::Passed)
            }
            (ready, _) => {
                let reason = if ready.is_err() {
                    Reason::ReadinessProbeFailed
                } else {
                    Reason::RemoteEntryUnreachable
                };
                let integrity_ok = match (hash, rec.current.integrity.as_deref()) {
                    (Some(h), Some(i)) => h == i,
                    _ => true,
                };
                integrity_ok
                    && match rec.state {
                        State::Ready => stats.consecutive_failures + 1 < self.thresholds.failure,
                        State::Registering | State::Degraded => ready_reason == Some(reason),
                        _ => false,
                    }
            }
        }
    }

    /// Records what the shell saw when it loaded a remote.
    pub async fn report_ui(
        &self,
        name: &str,
        version: &str,
        ok: bool,
        message: &str,
        actor: &Actor,
    ) -> Result<(), ApiError> {
        let text = format!("version {version}: {message}");
        self.edit(name, actor, move |_, rec, now| {
            let ui_loaded = |rec: &PluginRecord| {
                rec.conditions
                    .iter()
                    .find(|c| c.kind == condition::UI_LOADED)
                    .map(|c| (c.status.clone(), c.reason))
            };
            let was = ui_loaded(rec);
            let reason = if ok {
                Reason::Passed
            } else {
                Reason::UiLoadFailed
            };
            rec.set_condition(condition::UI_LOADED, ok, reason, text.clone(), now);
            // Persisted only when the outcome changes, not for every page load.
            (was != ui_loaded(rec)).then(|| ("ui-report", text.clone()))
        })
        .await
        .map(|_| ())
    }

    /// Queues a write for the writer thread and waits until it is committed (or refused).
    /// `plan` runs on the writer, against the batch's view of the records, and must change the
    /// batch only once it has decided to succeed. It may run more than once: when the store
    /// reports that another writer changed the record first, the write is planned again on the
    /// record as it is now.
    async fn submit<T: Send + 'static>(
        &self,
        plan: impl Fn(&Registry, &mut Batch) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let op = Op {
            plan: Box::new(move |me, b| plan(me, b).map(|v| Box::new(v) as Planned)),
            answer: Box::new(move |r| {
                let r = r.and_then(|v| {
                    v.downcast::<T>().map(|v| *v).map_err(|_| {
                        ApiError::new(Code::Internal, "a write was answered with the wrong type")
                    })
                });
                let _ = tx.send(r);
            }),
        };
        self.ops
            .send(op)
            .map_err(|_| ApiError::store("the store writer has stopped"))?;
        rx.await
            .map_err(|_| ApiError::store("the write was abandoned by the store writer"))?
    }

    /// A record written by someone else (another replica, seen through the store's watch): put
    /// into the index in order with local writes, without writing them again. `accept` runs on
    /// the writer, in that order, and decides whether it is newer than what the index holds
    /// (so an echo of a local write, or an event older than it, changes nothing).
    pub async fn apply_external(
        &self,
        name: String,
        record: Option<PluginRecord>,
        accept: impl Fn() -> bool + Send + Sync + 'static,
    ) {
        let _ = self
            .submit(move |me, b| {
                if !accept() {
                    return Ok(());
                }
                match &record {
                    Some(r) => write(&me.claims).update(r),
                    None => write(&me.claims).remove(&name),
                }
                b.touched.insert(name.clone(), record.clone());
                Ok(())
            })
            .await;
    }

    /// Token ids revoked by someone else (another replica).
    pub fn apply_external_revoked(&self, jtis: impl IntoIterator<Item = String>) {
        write(&self.revoked).extend(jtis);
    }

    /// Plans a batch of writes, commits it as one transaction, indexes it and answers every
    /// write in it. On a conflict the whole batch is planned again on the current record.
    fn run_batch(&self, mut ops: Vec<Op>) {
        let mut attempt = 0;
        loop {
            let mut batch = Batch::default();
            let planned: Vec<Result<Planned, ApiError>> = ops
                .iter_mut()
                .map(|op| {
                    // A plan that panics fails its own write, not the writer.
                    let plan = std::panic::AssertUnwindSafe(|| (op.plan)(self, &mut batch));
                    std::panic::catch_unwind(plan).unwrap_or_else(|_| {
                        tracing::error!("a write panicked while being planned");
                        Err(ApiError::new(
                            Code::Internal,
                            "the write failed unexpectedly",
                        ))
                    })
                })
                .collect();
            let Batch {
                touched,
                changes,
                revoked,
                urgent,
            } = batch;
            let committed = if changes.is_empty() {
                Ok(())
            } else {
                self.store.commit(&changes)
            };
            match committed {
                Ok(()) => {
                    for c in &changes {
                        if let Change::Audit(e) = c {
                            tracing::info!(plugin = e.plugin.as_deref().unwrap_or(""), actor = %e.actor, action = %e.action, reason = %e.reason, request_id = e.request_id.as_deref().unwrap_or(""), "audit");
                        }
                    }
                    write(&self.revoked).extend(revoked);
                    self.index_committed(touched, urgent);
                    for (op, result) in ops.into_iter().zip(planned) {
                        (op.answer)(result);
                    }
                    return;
                }
                Err(StoreError::Conflict { name, current }) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::info!(plugin = %name, attempt, "record changed by another writer; planning the write again");
                    self.index_committed(HashMap::from([(name, current.map(|c| *c))]), false);
                    self.rebuild_claims();
                }
                Err(e) => {
                    // Claims were taken as the batch was planned; nothing of it happened.
                    self.rebuild_claims();
                    let why = e.to_string();
                    for (op, result) in ops.into_iter().zip(planned) {
                        (op.answer)(result.and_then(|_| Err(ApiError::store(&why))));
                    }
                    return;
                }
            }
        }
    }

    fn rebuild_claims(&self) {
        let rebuilt = Claims::build(&read(&self.index));
        *write(&self.claims) = rebuilt;
    }

    /// Swaps committed records into the index; republishes the shell list when what it exposes
    /// changed (at once for admin decisions, through the coalescing publisher otherwise).
    fn index_committed(&self, touched: HashMap<String, Option<PluginRecord>>, urgent: bool) {
        let exposure = |r: &PluginRecord| {
            r.exposed()
                .map(|d| (d.version.clone(), d.integrity.clone()))
        };
        let mut changed = false;
        {
            let mut index = write(&self.index);
            let mut entries = write(&self.entries);
            let mut remote_bytes = write(&self.remote_bytes);
            for (name, record) in touched {
                let before = index.get(&name).and_then(exposure);
                let Some(record) = record else {
                    changed |= before.is_some();
                    index.remove(&name);
                    entries.remove(&name);
                    remote_bytes.remove(&name);
                    write(&self.stats).remove(&name);
                    continue;
                };
                // Keep remote-entry bytes only for the versions that can still be served or
                // probed.
                let keep = [
                    Some(&record.current.version),
                    record.serving.as_ref().map(|s| &s.version),
                ];
                if let Some(versions) = remote_bytes.get_mut(&name) {
                    versions.retain(|(v, _)| keep.contains(&Some(v)));
                }
                if before != exposure(&record) {
                    changed = true;
                    match entry_json(&record) {
                        Some(e) => entries.insert(name.clone(), e),
                        None => entries.remove(&name),
                    };
                }
                index.insert(name, record);
            }
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if changed {
            if urgent {
                self.publish();
            } else {
                self.dirty.notify_one();
            }
        }
    }

    fn publish(&self) {
        let body = join_entries(&read(&self.entries));
        let current = self.shell.borrow().clone();
        if body != current.body {
            self.shell
                .send_replace(Arc::new(snapshot(body, current.generation + 1)));
        }
    }
}

/// Most writes one transaction carries.
const MAX_BATCH: usize = 512;

/// How many times a write is planned again after conflicting with another writer.
const CONFLICT_RETRIES: u32 = 8;

/// What a plan decided (the value its caller gets once the write is committed).
type Planned = Box<dyn std::any::Any + Send>;

/// Plans a write against the batch's view of the records.
type Plan = Box<dyn FnMut(&Registry, &mut Batch) -> Result<Planned, ApiError> + Send>;

/// A write waiting for the writer.
struct Op {
    /// Plans the change against the batch's view of the records (may run again).
    plan: Plan,
    /// Tells the caller how it ended.
    answer: Box<dyn FnOnce(Result<Planned, ApiError>) + Send>,
}

/// The writes of one transaction, as the writer gathers them.
#[derive(Default)]
struct Batch {
    /// Records as this batch leaves them (`None`: deleted).
    touched: HashMap<String, Option<PluginRecord>>,
    /// What to persist, in order.
    changes: Vec<Change>,
    /// Token ids this batch revokes.
    revoked: Vec<String>,
    /// An admin decision is in the batch: the shell list is republished at once, not paced.
    urgent: bool,
}

impl Batch {
    /// A record as the writes planned so far leave it.
    fn get(&self, reg: &Registry, name: &str) -> Option<PluginRecord> {
        match self.touched.get(name) {
            Some(r) => r.clone(),
            None => reg.get(name),
        }
    }

    fn put(&mut self, reg: &Registry, record: PluginRecord, events: Vec<AuditEvent>) {
        // Claims are taken at once, so the next registration in this batch sees them.
        write(&reg.claims).update(&record);
        self.changes.push(Change::Put(Box::new(record.clone())));
        self.audit(events);
        self.touched.insert(record.name.clone(), Some(record));
    }

    fn delete(&mut self, reg: &Registry, name: &str, event: AuditEvent) {
        write(&reg.claims).remove(name);
        self.changes.push(Change::Delete(name.to_string()));
        self.audit(vec![event]);
        self.touched.insert(name.to_string(), None);
    }

    fn revoke(&mut self, jti: String, at: String, event: AuditEvent) {
        self.changes.push(Change::Revoke {
            jti: jti.clone(),
            at,
        });
        self.audit(vec![event]);
        self.revoked.push(jti);
    }

    fn audit(&mut self, events: Vec<AuditEvent>) {
        self.urgent |= events.iter().any(|e| e.actor.starts_with("admin:"));
        self.changes.extend(events.into_iter().map(Change::Audit));
    }
}

/// The writer thread: takes every write queued while the previous transaction ran, plans them
/// in arrival order, and commits them as one transaction. Acknowledgements still follow the
/// commit; what batching saves is one fsync per write.
fn run_writer(registry: std::sync::Weak<Registry>, mut queued: mpsc::UnboundedReceiver<Op>) {
    while let Some(first) = queued.blocking_recv() {
        let Some(me) = registry.upgrade() else {
            return;
        };
        let max = me.store.max_batch().clamp(1, MAX_BATCH);
        let mut ops = vec![first];
        while ops.len() < max {
            match queued.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        me.run_batch(ops);
    }
}

/// Why a probe round failed, if it did.
fn failure_of(outcome: &ProbeOutcome) -> Option<(Reason, String)> {
    match (&outcome.ready, &outcome.remote) {
        (Err(e), _) => Some((
            Reason::ReadinessProbeFailed,
            format!("readiness probe failed: {e}"),
        )),
        (_, Err(e)) => Some((
            Reason::RemoteEntryUnreachable,
            format!("remote entry unreachable: {e}"),
        )),
        _ => None,
    }
}

/// Sets the conditions of a freshly accepted registration of `version`. What a shell saw of
/// an earlier registration (`UiLoaded`) no longer applies: it is cleared until a shell loads
/// this one.
fn mark_registered(rec: &mut PluginRecord, version: &str, now: &str) {
    rec.conditions.retain(|c| c.kind != condition::UI_LOADED);
    rec.set_condition(
        condition::REGISTERED,
        true,
        Reason::RegistrationAccepted,
        format!("version {version} registered"),
        now,
    );
    rec.set_condition(
        condition::READY,
        false,
        Reason::AwaitingProbe,
        format!("waiting for the first probes of version {version}"),
        now,
    );
}

/// Whether the record is withdrawn for a changed remote entry.
fn remote_changed(rec: &PluginRecord) -> bool {
    rec.conditions
        .iter()
        .any(|c| c.kind == condition::READY && c.reason == Reason::RemoteEntryChanged)
}

/// `sha384-<base64>` of bytes, as Subresource Integrity has it.
pub fn integrity(bytes: &[u8]) -> String {
    format!("sha384-{}", STANDARD.encode(Sha384::digest(bytes)))
}

/// A manifest's panel ids and route paths as claim keys (a route by its
/// `tessera_sdk::manifest::route::key`: `/a/:x` and `/a/:y/` claim the same), each with the
/// value as the manifest writes it.
fn contributions(manifest: &ManifestJson) -> Vec<((&'static str, String), String)> {
    let c = manifest.fields::<ClaimFields>().ui.contributions;
    let panels = c
        .panels
        .into_iter()
        .filter_map(|p| p.id)
        .map(|p| (("panel id", p.clone()), p));
    let routes = c
        .routes
        .into_iter()
        .filter_map(|r| r.path)
        .map(|p| (("route path", tessera_sdk::manifest::route::key(&p)), p));
    panels.chain(routes).collect()
}

/// Who holds each panel id and route path.
#[derive(Debug, Default)]
struct Claims {
    owner: HashMap<(&'static str, String), String>,
    by_plugin: HashMap<String, Vec<(&'static str, String)>>,
}

impl Claims {
    fn build(index: &BTreeMap<String, PluginRecord>) -> Claims {
        let mut c = Claims::default();
        for rec in index.values() {
            c.update(rec);
        }
        c
    }

    /// Replaces a plugin's claims with those of its current and serving versions (none while
    /// it is disabled).
    fn update(&mut self, rec: &PluginRecord) {
        self.remove(&rec.name);
        if rec.disabled.is_some() {
            return;
        }
        let mut keys: Vec<(&'static str, String)> = contributions(&rec.current.manifest)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        if let Some(s) = &rec.serving {
            keys.extend(contributions(&s.manifest).into_iter().map(|(key, _)| key));
        }
        keys.sort();
        keys.dedup();
        for k in &keys {
            self.owner
                .entry(k.clone())
                .or_insert_with(|| rec.name.clone());
        }
        self.by_plugin.insert(rec.name.clone(), keys);
    }

    fn remove(&mut self, name: &str) {
        for k in self.by_plugin.remove(name).unwrap_or_default() {
            if self.owner.get(&k).is_some_and(|o| o == name) {
                self.owner.remove(&k);
            }
        }
    }
}

/// One entry of the shell list.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ShellRemote<'a> {
    name: &'a str,
    version: &'a str,
    scope: String,
    remote_entry: String,
    integrity: &'a str,
    contributions: Contributions<'a>,
}

/// A plugin's `ui.contributions`, copied as the manifest has it, or empty lists.
#[derive(Serialize)]
#[serde(untagged)]
enum Contributions<'a> {
    Declared(&'a serde_json::value::RawValue),
    Nothing { panels: [(); 0], routes: [(); 0] },
}

/// The fields of a manifest the shell list copies (as raw JSON text).
#[derive(Default, serde::Deserialize)]
struct ShellFields<'a> {
    #[serde(default, borrow)]
    ui: ShellUi<'a>,
}

#[derive(Default, serde::Deserialize)]
struct ShellUi<'a> {
    #[serde(default, borrow)]
    contributions: Option<&'a serde_json::value::RawValue>,
}

/// The field of a manifest the prober reads.
#[derive(Default, serde::Deserialize)]
struct HealthFields {
    #[serde(default)]
    health: Health,
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    readiness_path: Option<String>,
}

/// The fields of a manifest that claim names: panel ids and route paths.
#[derive(Default, serde::Deserialize)]
struct ClaimFields {
    #[serde(default)]
    ui: ClaimUi,
}

#[derive(Default, serde::Deserialize)]
struct ClaimUi {
    #[serde(default)]
    contributions: ClaimContributions,
}

#[derive(Default, serde::Deserialize)]
struct ClaimContributions {
    #[serde(default)]
    panels: Vec<Claimed>,
    #[serde(default)]
    routes: Vec<Claimed>,
}

#[derive(Default, serde::Deserialize)]
struct Claimed {
    id: Option<String>,
    path: Option<String>,
}

/// The shell-list entry of a plugin, when it is exposed.
fn entry_json(rec: &PluginRecord) -> Option<bytes::Bytes> {
    let dep = rec.exposed()?;
    let integrity = dep.integrity.as_deref()?;
    let file = dep
        .remote_url
        .rsplit('/')
        .next()
        .filter(|f| !f.is_empty())
        .unwrap_or("remoteEntry.js");
    let entry = ShellRemote {
        name: &rec.name,
        version: &dep.version,
        scope: format!("plugin_{}", rec.name.replace('-', "_")),
        remote_entry: format!("/plugins/{}/{}/{}", rec.name, dep.version, file),
        integrity,
        contributions: dep
            .manifest
            .fields::<ShellFields<'_>>()
            .ui
            .contributions
            .map_or(
                Contributions::Nothing {
                    panels: [],
                    routes: [],
                },
                Contributions::Declared,
            ),
    };
    serde_json::to_vec(&entry).ok().map(Into::into)
}

/// `[e1,e2,...]` from the entries, in name order.
fn join_entries(entries: &BTreeMap<String, bytes::Bytes>) -> bytes::Bytes {
    let len: usize = entries.values().map(|e| e.len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, e) in entries.values().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.push(b']');
    out.into()
}

fn list_body(index: &BTreeMap<String, PluginRecord>) -> bytes::Bytes {
    let entries: BTreeMap<String, bytes::Bytes> = index
        .values()
        .filter_map(|r| Some((r.name.clone(), entry_json(r)?)))
        .collect();
    join_entries(&entries)
}

fn build_snapshot(index: &BTreeMap<String, PluginRecord>, generation: u64) -> ShellSnapshot {
    snapshot(list_body(index), generation)
}

/// The snapshot of a list body: its ETag and gzip form are computed here, once.
fn snapshot(body: bytes::Bytes, generation: u64) -> ShellSnapshot {
    let digest = Sha256::digest(&body);
    let etag = format!(
        "\"{}\"",
        digest[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    ShellSnapshot {
        generation,
        gzip: std::sync::OnceLock::new(),
        event: std::sync::OnceLock::new(),
        body,
        etag,
    }
}

/// Gzip at the best ratio: done once per change of the list, not per request.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        flate2::Compression::best(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

fn audit(
    actor: &Actor,
    action: &str,
    plugin: Option<&str>,
    reason: String,
    now: &str,
) -> AuditEvent {
    AuditEvent {
        id: 0,
        time: now.to_string(),
        actor: actor.who.clone(),
        action: action.to_string(),
        plugin: plugin.map(String::from),
        reason,
        request_id: actor.request_id.clone(),
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(Code::PluginNotFound, format!("no plugin named \"{name}\""))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::store(e)),
        Err(e) => Err(ApiError::store(e)),
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Loaded, StoreError};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// An in-memory store that counts transactions, takes a little time per commit (as an
    /// fsync does) and can be told to refuse writes.
    #[derive(Default)]
    struct Counting {
        records: std::sync::Mutex<BTreeMap<String, PluginRecord>>,
        audit: std::sync::Mutex<Vec<AuditEvent>>,
        commits: AtomicUsize,
        fail: AtomicBool,
    }

    impl Store for Counting {
        fn load(&self) -> Result<Loaded, StoreError> {
            Ok(Loaded::default())
        }
        fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
            std::thread::sleep(std::time::Duration::from_millis(2));
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Failed("disk full".into()));
            }
            self.commits.fetch_add(1, Ordering::SeqCst);
            let mut records = self.records.lock().unwrap();
            for c in changes {
                match c {
                    Change::Put(r) => {
                        records.insert(r.name.clone(), (**r).clone());
                    }
                    Change::Delete(n) => {
                        records.remove(n);
                    }
                    Change::Audit(e) => self.audit.lock().unwrap().push(e.clone()),
                    Change::Revoke { .. } | Change::Issue(_) => {}
                }
            }
            Ok(())
        }
        fn audit(&self, _: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
            Ok(self.audit.lock().unwrap().clone())
        }
        fn tokens(&self) -> Result<Vec<crate::model::IssuedToken>, StoreError> {
            Ok(Vec::new())
        }
        fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn registration(name: &str, panel: &str) -> Registration {
        Registration {
            name: name.into(),
            version: "1.0.0".into(),
            manifest: ManifestJson::new(
                &json!({"name": name, "ui": {"contributions": {"panels": [{"id": panel}]}}}),
            )
            .unwrap(),
            backend_url: "http://127.0.0.1:1".into(),
            remote_url: "http://127.0.0.1:1/mf/remoteEntry.js".into(),
            token_id: "t".into(),
        }
    }

    fn open(store: &Arc<Counting>) -> Arc<Registry> {
        let thresholds = Thresholds {
            success: 1,
            failure: 1,
        };
        Registry::load(store.clone(), thresholds).unwrap()
    }

    fn admin() -> Actor {
        Actor {
            who: "admin:test".into(),
            request_id: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_transactions_and_none_is_lost() {
        let store = Arc::new(Counting::default());
        let reg = open(&store);
        let mut tasks = Vec::new();
        for i in 0..200 {
            let reg = reg.clone();
            tasks.push(tokio::spawn(async move {
                let who = admin();
                let name = format!("p{i:03}");
                reg.register(registration(&name, &format!("{name}.panel")), &who)
                    .await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().unwrap().changed);
        }
        let commits = store.commits.load(Ordering::SeqCst);
        assert!(
            commits < 100,
            "200 concurrent registrations took {commits} transactions"
        );
        // Every acknowledged write is in the store and the index, with its audit event.
        let stored = store.records.lock().unwrap().clone();
        assert_eq!(stored.len(), 200);
        assert_eq!(reg.list(), stored.values().cloned().collect::<Vec<_>>());
        assert_eq!(store.audit.lock().unwrap().len(), 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_in_one_batch_see_each_other() {
        let store = Arc::new(Counting::default());
        let reg = open(&store);
        let who = admin();
        // Queued together: the second claims the first's panel id and must be refused even
        // though the first is not committed when the second is planned.
        let (a, b) = tokio::join!(
            reg.register(registration("a", "shared.panel"), &who),
            reg.register(registration("b", "shared.panel"), &who),
        );
        // join! polls in order, so "a" is queued first.
        assert!(a.is_ok());
        assert_eq!(b.unwrap_err().code, Code::ContributionConflict);
        // A disable and an enable queued together apply in order, each on the other's result.
        let (d, e) = tokio::join!(reg.disable("a", "incident", &who), reg.enable("a", &who),);
        assert_eq!(d.unwrap().state, State::Disabled);
        let e = e.unwrap();
        assert!(e.disabled.is_none());
        assert_eq!(e.state, State::Registering);
        assert_eq!(reg.get("a").unwrap(), e);
        assert_eq!(store.records.lock().unwrap().get("a"), Some(&e));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_transaction_changes_nothing_and_frees_its_claims() {
        let store = Arc::new(Counting::default());
        let reg = open(&store);
        let who = admin();
        store.fail.store(true, Ordering::SeqCst);
        let err = reg
            .register(registration("a", "x.panel"), &who)
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::StoreUnavailable);
        assert!(err.message.contains("disk full"), "{}", err.message);
        assert!(reg.get("a").is_none());
        assert!(store.records.lock().unwrap().is_empty());
        // The failed write's panel id is free again once the store recovers.
        store.fail.store(false, Ordering::SeqCst);
        let ok = reg
            .register(registration("b", "x.panel"), &who)
            .await
            .unwrap();
        assert!(ok.changed);
        assert_eq!(reg.get("b").unwrap().state, State::Registering);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_stops_with_the_registry() {
        let store = Arc::new(Counting::default());
        let reg = open(&store);
        let who = admin();
        reg.register(registration("a", "a.panel"), &who)
            .await
            .unwrap();
        let weak = Arc::downgrade(&reg);
        drop(reg);
        for _ in 0..100 {
            if weak.upgrade().is_none() && Arc::strong_count(&store) == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the registry (and its store) outlived its last handle");
    }
}

#[cfg(test)]
mod entry_tests {
    use super::*;

    fn exposed(manifest: serde_json::Value) -> PluginRecord {
        let dep = Deployment {
            version: "1.2.3".into(),
            manifest: ManifestJson::new(&manifest).unwrap(),
            backend_url: "http://127.0.0.1:1".into(),
            remote_url: "http://127.0.0.1:1/mf/remoteEntry.js".into(),
            integrity: Some("sha384-x".into()),
            registered_at: now_rfc3339(),
            token_id: "t".into(),
        };
        PluginRecord {
            name: "a-b".into(),
            state: State::Ready,
            current: dep.clone(),
            serving: Some(dep),
            disabled: None,
            conditions: vec![],
            updated_at: now_rfc3339(),
        }
    }

    #[test]
    fn shell_entries_copy_contributions_and_default_to_empty_lists() {
        let with = exposed(json!({"name": "a-b", "ui": {"contributions": {
            "panels": [{"id": "a-b.main", "title": "T"}], "routes": [{"path": "/a-b/", "component": "Page"}]}}}));
        let entry: serde_json::Value = serde_json::from_slice(&entry_json(&with).unwrap()).unwrap();
        assert_eq!(
            entry,
            json!({"name": "a-b", "version": "1.2.3", "scope": "plugin_a_b",
                "remoteEntry": "/plugins/a-b/1.2.3/remoteEntry.js", "integrity": "sha384-x",
                "contributions": {"panels": [{"id": "a-b.main", "title": "T"}],
                                  "routes": [{"path": "/a-b/", "component": "Page"}]}})
        );
        assert_eq!(
            contributions(&with.current.manifest),
            [
                (("panel id", "a-b.main".to_string()), "a-b.main".to_string()),
                (("route path", "/a-b".to_string()), "/a-b/".to_string())
            ]
        );
        let without = exposed(json!({"name": "a-b"}));
        let entry: serde_json::Value =
            serde_json::from_slice(&entry_json(&without).unwrap()).unwrap();
        assert_eq!(entry["contributions"], json!({"panels": [], "routes": []}));
        assert!(contributions(&without.current.manifest).is_empty());
    }
}
