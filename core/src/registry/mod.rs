//! The registry: the index of plugins that every request reads, and the one owner of every
//! change to plugin state.
//!
//! ```text
//!  api, declared ──┐  Command   ┌──────────── writer thread ─────────────┐   Arc<Index>
//!  probe ──────────┼──────────▶ │ plan (tessera_lifecycle transitions)   │──▶ readers (swap on commit)
//!  store watch ────┘  (queue)   │ commit (Store, one transaction/batch)  │──▶ observers (shell list, ...)
//!                               └────────────────────────────────────────┘
//! ```
//!
//! - Writes are typed [`writer::Command`]s queued for one writer thread. It takes every
//!   command that arrived while the previous transaction ran, plans them in order with the pure
//!   transitions of `tessera_lifecycle`, commits the batch as one transaction (group commit: one
//!   fsync for many writes), and only then swaps the new [`Index`] in, tells the observers, and
//!   answers each command. A change that is visible was committed.
//! - Readers take an immutable snapshot ([`Registry::index`], an `Arc<Index>`): no lock is held
//!   while they read, and what they read never changes under them.
//! - Records written by another replica (the Kubernetes store's watch) arrive as commands too,
//!   in order with local writes; `serve` wires the store's stream in, the store does not know
//!   the registry.
//! - What the prober observes but does not persist (consecutive-round counters, the remote
//!   entry's bytes) lives beside the index in [`observed`].
//!
//! Requests read the index; `/api/audit`, `/api/tokens` and `/readyz` (a store ping) read the
//! store.

mod index;
mod observed;
mod writer;

use std::sync::{Arc, RwLock};

pub use index::{Index, ProbeTarget};
pub use tessera_lifecycle::{Actor, ProbeStats, Registration, Thresholds, condition};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::model::{AuditEvent, IssuedToken, PluginRecord};
use crate::store::{AuditQuery, External, Store};
use crate::sync::read;
use observed::Observed;
use writer::Command;

/// Result of one probe round of one plugin, as the prober saw it.
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

/// Sees every commit, on the writer thread, before the commit's writes are acknowledged (so a
/// client that was answered sees what it changed). Must be quick: the writer waits for it.
pub trait Observer: Send + Sync + 'static {
    /// The index as loaded at start.
    fn loaded(&self, index: &Index);
    /// The index after a commit, the names it touched, and whether an admin decision is among
    /// them (to be shown at once rather than paced).
    fn committed(&self, index: &Index, touched: &[String], urgent: bool);
}

/// The registry.
pub struct Registry {
    /// Where state is persisted (audit and token list are read from it directly).
    store: Arc<dyn Store>,
    /// The committed index; swapped (or changed in place while no reader holds it) on commit.
    index: RwLock<Arc<Index>>,
    /// Probe counters and remote entry bytes (not persisted).
    observed: Observed,
    /// Thresholds for the prober's shortcut (the writer has its own copy).
    thresholds: Thresholds,
    /// Commands waiting for the writer thread.
    commands: mpsc::UnboundedSender<Command>,
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
    /// Loads the index from the store, shows it to the observers and starts the writer thread,
    /// which stops once the registry is dropped.
    pub fn load(
        store: Arc<dyn Store>,
        thresholds: Thresholds,
        observers: Vec<Arc<dyn Observer>>,
    ) -> Result<Arc<Registry>, crate::store::StoreError> {
        let loaded = store.load()?;
        let index = Index::new(loaded.plugins, loaded.revoked);
        for o in &observers {
            o.loaded(&index);
        }
        let claims = tessera_lifecycle::claims::Claims::build(index.records());
        let (commands, queued) = mpsc::unbounded_channel();
        let registry = Arc::new(Registry {
            store,
            index: RwLock::new(Arc::new(index)),
            observed: Observed::default(),
            thresholds,
            commands,
        });
        let writer = writer::Writer::new(Arc::downgrade(&registry), claims, observers);
        std::thread::Builder::new()
            .name("tessera-writer".into())
            .spawn(move || writer.run(queued))
            .map_err(|e| {
                crate::store::StoreError::Failed(format!("cannot start the store writer: {e}"))
            })?;
        Ok(registry)
    }

    // --- reads ---

    /// The committed index, as of now (an immutable snapshot).
    pub fn index(&self) -> Arc<Index> {
        read(&self.index).clone()
    }

    /// Every record.
    pub fn list(&self) -> Vec<PluginRecord> {
        self.index().records().cloned().collect()
    }

    /// One record.
    pub fn get(&self, name: &str) -> Option<PluginRecord> {
        self.index().get(name).cloned()
    }

    /// Probe figures of a plugin.
    pub fn stats(&self, name: &str) -> ProbeStats {
        self.observed.stats(name)
    }

    /// Whether a token id is revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.index().is_revoked(jti)
    }

    /// The remote entry's bytes of an exposed plugin version, as last probed.
    pub fn remote_entry(&self, name: &str, version: &str) -> Option<bytes::Bytes> {
        self.observed.remote_entry(name, version)
    }

    /// Keeps a remote entry's bytes for the asset route (fetched on demand with the pinned
    /// integrity).
    pub fn keep_remote_bytes(&self, name: &str, version: &str, bytes: &bytes::Bytes) {
        self.observed.keep_remote_bytes(name, version, bytes);
    }

    /// The remote URL and integrity of `name` at `version` while that version is served, or the
    /// plugin's state when it is not.
    pub fn serving(
        &self,
        name: &str,
        version: &str,
    ) -> Option<Result<(String, Option<String>), crate::model::State>> {
        self.index().serving(name, version)
    }

    /// What the prober needs of every plugin it should probe, and the index generation it was
    /// read at.
    pub fn probe_targets(&self) -> (u64, Vec<ProbeTarget>) {
        let index = self.index();
        (index.generation(), index.probe_targets())
    }

    /// The index generation (bumps on every commit).
    pub fn generation(&self) -> u64 {
        self.index().generation()
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

    /// The token list, newest first, each with whether it is revoked.
    pub async fn tokens(&self) -> Result<Vec<(IssuedToken, bool)>, ApiError> {
        let store = self.store.clone();
        let list = blocking(move || store.tokens()).await?;
        let index = self.index();
        Ok(list
            .into_iter()
            .map(|t| {
                let r = index.is_revoked(&t.jti);
                (t, r)
            })
            .collect())
    }

    // --- writes ---

    /// Registers (or re-registers) a plugin version. Conflicts with other plugins' panel ids
    /// and route paths are refused on the writer, against the claims of every write planned
    /// before it (committed or in the same batch), so two racing registrations cannot both
    /// claim the same id.
    pub async fn register(&self, reg: Registration, actor: &Actor) -> Result<Registered, ApiError> {
        self.submit(|reply| Command::Register(reg, actor.clone(), reply.into()))
            .await
    }

    /// The kill switch: hides the plugin at once, stops probing it.
    pub async fn disable(
        &self,
        name: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<PluginRecord, ApiError> {
        let (name, reason) = (name.to_string(), reason.to_string());
        self.submit(|reply| Command::Disable(name, reason, actor.clone(), reply.into()))
            .await
    }

    /// Lifts the kill switch; the plugin is probed again before it is shown.
    pub async fn enable(&self, name: &str, actor: &Actor) -> Result<PluginRecord, ApiError> {
        let name = name.to_string();
        self.submit(|reply| Command::Enable(name, actor.clone(), reply.into()))
            .await
    }

    /// Accepts a changed remote entry under the same version (after `RemoteEntryChanged`).
    pub async fn accept_remote(&self, name: &str, actor: &Actor) -> Result<PluginRecord, ApiError> {
        let name = name.to_string();
        self.submit(|reply| Command::AcceptRemote(name, actor.clone(), reply.into()))
            .await
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
        let report = writer::UiReport {
            name: name.to_string(),
            version: version.to_string(),
            ok,
            message: message.to_string(),
        };
        self.submit(|reply| Command::ReportUi(report, actor.clone(), reply.into()))
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
        let install = writer::Install {
            name: name.to_string(),
            backend_url: backend_url.to_string(),
            why: why.to_string(),
        };
        self.submit(|reply| Command::Install(install, actor.clone(), reply.into()))
            .await
    }

    /// Forgets a plugin.
    pub async fn delete(&self, name: &str, actor: &Actor) -> Result<(), ApiError> {
        let name = name.to_string();
        self.submit(|reply| Command::Delete(name, actor.clone(), reply.into()))
            .await
    }

    /// Revokes a token id (idempotent).
    pub async fn revoke(&self, jti: &str, actor: &Actor) -> Result<(), ApiError> {
        let jti = jti.to_string();
        self.submit(|reply| Command::Revoke(jti, actor.clone(), reply.into()))
            .await
    }

    /// Records an audit event of an action outside the plugin lifecycle.
    pub async fn note(
        &self,
        action: &str,
        plugin: Option<&str>,
        reason: String,
        actor: &Actor,
    ) -> Result<(), ApiError> {
        let note = writer::Note {
            action: action.to_string(),
            plugin: plugin.map(String::from),
            reason,
        };
        self.submit(|reply| Command::Note(note, actor.clone(), reply.into()))
            .await
    }

    /// Records a minted token in the token list, with its audit event.
    pub async fn record_issued(&self, token: IssuedToken, actor: &Actor) -> Result<(), ApiError> {
        self.submit(|reply| Command::Issue(Box::new(token), actor.clone(), reply.into()))
            .await
    }

    /// Applies one probe round's outcome and makes the transitions the thresholds call for.
    /// The common round that changes nothing but the counters is decided here, without the
    /// writer.
    pub async fn apply_probe(&self, name: &str, outcome: ProbeOutcome) -> Result<(), ApiError> {
        let round = tessera_lifecycle::Round::new(
            outcome.version.clone(),
            outcome.ready.clone(),
            outcome
                .remote
                .as_ref()
                .map(|b| integrity(b))
                .map_err(Clone::clone),
        );
        if let Ok(bytes) = &outcome.remote {
            self.observed
                .keep_remote_bytes(name, &outcome.version, bytes);
        }
        {
            let index = self.index();
            if let Some(rec) = index.get(name) {
                let stats = self.observed.stats(name);
                if tessera_lifecycle::transition::probe_is_quiet(
                    rec,
                    &round,
                    &stats,
                    self.thresholds,
                ) {
                    let now = crate::model::now_rfc3339();
                    self.observed
                        .set_stats(name, stats.count(&round, outcome.latency_ms, &now));
                    return Ok(());
                }
            }
        }
        let probe = writer::Probe {
            name: name.to_string(),
            round,
            latency_ms: outcome.latency_ms,
        };
        self.submit(|reply| Command::Probe(probe, reply.into()))
            .await
    }

    /// Records written by someone else (another replica, seen through the store's watch): put
    /// into the index in order with local writes, without writing them again.
    pub async fn apply_external(&self, change: External) {
        let _ = self
            .submit(|reply| Command::External(change, reply.into()))
            .await;
    }

    /// Queues a command for the writer thread and waits until it is committed (or refused).
    async fn submit<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, ApiError>>) -> Command,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .map_err(|_| ApiError::store("the store writer has stopped"))?;
        rx.await
            .map_err(|_| ApiError::store("the write was abandoned by the store writer"))?
    }
}

/// `sha384-<base64>` of bytes, as Subresource Integrity has it.
pub fn integrity(bytes: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha384::digest(bytes))
    )
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

#[cfg(test)]
mod tests;
