//! Persistence behind one trait, so the registry does not care where state lives: SQLite
//! everywhere (this module's `sqlite`), Kubernetes objects in a cluster (a later backend).
//!
//! Every write is one transaction that carries its audit events with it: a change and the record
//! of who made it are committed together or not at all, and a write is acknowledged only after
//! it is committed.

pub mod kube;
pub mod sqlite;

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
