//! Persistence behind one trait, so the registry does not care where state lives: SQLite
//! everywhere (`sqlite`), Kubernetes objects in a cluster (`kube`).
//!
//! Beside persistence, a store says how this replica stands among others ([`Coordination`]):
//! with SQLite it is alone and always leads; with Kubernetes a Lease elects the leader and a
//! watch reports what other replicas wrote ([`External`]), which `serve` feeds into the
//! registry. [`open`] picks the store the configuration names.
//!
//! Every write is one transaction that carries its audit events with it: a change and the record
//! of who made it are committed together or not at all, and a write is acknowledged only after
//! it is committed.

pub mod jobs;
pub mod kube;
pub mod secrets;
pub mod sqlite;

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::auth::Keys;
use crate::config::{Config, PluginEntry, StoreKind};
use crate::model::{AuditEvent, IssuedToken, PluginRecord};

/// What a store failed at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not take the write (unreachable, I/O, refused).
    #[error("{0}")]
    Failed(String),
    /// The record changed since the writer read it (another replica wrote it first). Carries
    /// the record as it is now (`None`: deleted), so the write can be planned again on it.
    #[error("plugin \"{name}\" was changed by another writer")]
    Conflict {
        /// The plugin.
        name: String,
        /// Its record now.
        current: Option<Box<PluginRecord>>,
    },
}

impl From<String> for StoreError {
    fn from(why: String) -> StoreError {
        StoreError::Failed(why)
    }
}

impl From<StoreError> for String {
    fn from(e: StoreError) -> String {
        e.to_string()
    }
}

/// Everything the registry needs at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every plugin record.
    pub plugins: Vec<PluginRecord>,
    /// Revoked token ids.
    pub revoked: Vec<String>,
}

/// Which audit events to read.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Only events about this plugin.
    pub plugin: Option<String>,
    /// Only events with an id below this (paging backwards from the newest).
    pub before: Option<i64>,
    /// At most this many (newest first).
    pub limit: u32,
}

/// One change to persist. A slice of them is committed as one transaction, in order.
#[derive(Clone, Debug)]
pub enum Change {
    /// Writes (creates or replaces) a plugin record.
    Put(Box<PluginRecord>),
    /// Deletes a plugin record (no error when absent).
    Delete(String),
    /// Records a revoked token id (idempotent), at an RFC 3339 time.
    Revoke {
        /// Token id.
        jti: String,
        /// When.
        at: String,
    },
    /// Appends an audit event.
    Audit(AuditEvent),
    /// Records a minted token in the token list (idempotent by `jti`).
    Issue(Box<IssuedToken>),
}

/// A place the core keeps its state.
pub trait Store: Send + Sync + 'static {
    /// Reads everything (at start).
    fn load(&self) -> Result<Loaded, StoreError>;
    /// Commits changes, in order, as one transaction: all of them or none. The registry groups
    /// the writes that arrive while the previous commit runs into one call (group commit).
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError>;
    /// Most changes one `commit` may carry: a store that cannot commit several records
    /// atomically (the Kubernetes API) takes one write at a time.
    fn max_batch(&self) -> usize {
        512
    }
    /// Reads audit events, newest first.
    fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
    /// Reads the token list, newest first.
    fn tokens(&self) -> Result<Vec<IssuedToken>, StoreError>;
    /// Whether the store answers.
    fn ping(&self) -> Result<(), StoreError>;
}

/// A change another replica made, seen through the store's watch. Applied by the registry's
/// writer in order with local writes, never written again.
pub enum External {
    /// A record as another writer left it (`None`: deleted). `newer` runs on the writer, in
    /// order, and says whether it is newer than what this replica holds (an echo of a local
    /// write, or an event older than it, is not).
    Record {
        /// The plugin.
        name: String,
        /// Its record now.
        record: Option<Box<PluginRecord>>,
        /// Whether to apply it.
        newer: Box<dyn Fn() -> bool + Send + Sync>,
    },
    /// After a re-list: every plugin not named here was deleted while unwatched; `forget` is
    /// called for each one removed.
    Present {
        /// The plugins that exist.
        names: HashSet<String>,
        /// Forgets the store's revision of a removed plugin.
        forget: Box<dyn Fn(&str) + Send + Sync>,
    },
    /// Token ids another replica revoked.
    Revoked(Vec<String>),
}

/// What leader-only upkeep needs.
pub struct Upkeep {
    /// Signs registration tokens the leader keeps in Secrets.
    pub keys: Arc<Keys>,
    /// Plugins the admin declares.
    pub plugins: Vec<PluginEntry>,
    /// Flips to `true` at shutdown (the leader then gives its Lease up).
    pub shutdown: watch::Receiver<bool>,
}

/// How this replica stands among others, once coordination started.
pub struct Replication {
    /// `true` while this replica leads: only the leader probes (and so writes transitions).
    pub leading: watch::Receiver<bool>,
    /// What other replicas changed, in order (`serve` feeds it into the registry).
    pub external: mpsc::Receiver<External>,
    /// Whether other replicas may exist: a follower's readiness does not wait for probes it
    /// does not run, and the leader declares the configured plugins.
    pub clustered: bool,
    /// Background tasks, stopped at shutdown.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Ends after `shutdown` flips, once the Lease (if held) is released: awaited, not aborted.
    pub election: Option<tokio::task::JoinHandle<()>>,
    /// Keeps a constant `leading` channel open.
    _alone: Option<watch::Sender<bool>>,
}

impl Replication {
    /// A replica alone: it always leads, nobody else writes.
    pub fn alone() -> Replication {
        let (tx, leading) = watch::channel(true);
        let (_, external) = mpsc::channel(1);
        Replication {
            leading,
            external,
            clustered: false,
            tasks: Vec::new(),
            election: None,
            _alone: Some(tx),
        }
    }

    /// A replica among others, with its election and watch running.
    pub fn among_others(
        leading: watch::Receiver<bool>,
        external: mpsc::Receiver<External>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
        election: tokio::task::JoinHandle<()>,
    ) -> Replication {
        Replication {
            leading,
            external,
            clustered: true,
            tasks,
            election: Some(election),
            _alone: None,
        }
    }
}

/// The seam between `serve` and the store's way of sharing state with other replicas.
pub trait Coordination: Send {
    /// Starts leader election, the watch and the leader's upkeep (nothing for a replica alone).
    fn start(self: Box<Self>, upkeep: Upkeep) -> Replication;
}

/// A replica alone (SQLite).
#[derive(Debug)]
pub struct Alone;

impl Coordination for Alone {
    fn start(self: Box<Self>, _: Upkeep) -> Replication {
        Replication::alone()
    }
}

/// A store, opened as the configuration says.
pub struct Opened {
    /// Where state is persisted.
    pub store: Arc<dyn Store>,
    /// The signing keys (a file beside SQLite; a Secret in Kubernetes).
    pub keys: Keys,
    /// Where, for logs and errors.
    pub place: String,
    /// How this replica will stand among others.
    pub coordination: Box<dyn Coordination>,
    /// The key session cookies are sealed with, when users sign in (`auth.oidc`).
    pub session_key: Option<crate::users::cookie::SessionKey>,
    /// Who checks ServiceAccount tokens (the Kubernetes API server's TokenReview), in a cluster.
    pub token_reviewer: Option<Arc<dyn crate::auth::service_account::TokenReviewer>>,
    /// The SQLite file the event outbox shares (`None`: no durable engine; in memory).
    pub events_db: Option<std::path::PathBuf>,
    /// Where jobs keep specs, marks and runs.
    pub jobs: Arc<dyn jobs::JobStore>,
    /// Where plugin secrets are kept (sealed in `tessera.db`; Secrets in a cluster).
    pub secrets: Arc<dyn secrets::SecretStore>,
}

/// Opens the store the configuration names, with its signing keys.
pub async fn open(config: &Config) -> Result<Opened, StoreError> {
    match config.store {
        StoreKind::Sqlite => {
            let keys = Keys::load_or_create(&config.data_dir)
                .map_err(|e| format!("signing key in {}: {e}", config.data_dir.display()))?;
            let db = config.data_dir.join(sqlite::DB_FILE);
            let store = sqlite::SqliteStore::open(&db)
                .map_err(|e| format!("store {}: {e}", db.display()))?;
            let session_key = match config.auth.oidc {
                Some(_) => Some(
                    crate::users::cookie::SessionKey::load_or_create(&config.data_dir)
                        .map_err(|e| StoreError::Failed(format!("session key: {e}")))?,
                ),
                None => None,
            };
            let jobs = jobs::SqliteJobs::open(&db)
                .map_err(|e| format!("jobs in {}: {e}", db.display()))?;
            let secrets = secrets::SqliteSecrets::open(&db, &config.data_dir)
                .map_err(|e| format!("secrets in {}: {e}", db.display()))?;
            Ok(Opened {
                secrets: Arc::new(secrets),
                store: Arc::new(store),
                keys,
                place: db.display().to_string(),
                coordination: Box::new(Alone),
                session_key,
                token_reviewer: None,
                events_db: Some(db),
                jobs: Arc::new(jobs),
            })
        }
        StoreKind::Kubernetes => kube::open(config).await,
    }
}
