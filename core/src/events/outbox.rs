//! The outbox: accepted events and their delivery state, in SQLite (the data dir's
//! `tessera.db`, or memory where no durable engine is configured).
//!
//! One writer thread owns the connection. It takes every operation queued while the last
//! transaction ran and commits them together (group commit, as the registry does), answers
//! publishes only after the commit, and hands the committed deliveries to the dispatcher in
//! the order they were accepted. Acknowledgements ride the same batches; one lost in a crash
//! means the event is delivered again, never that it is lost.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::envelope::Event;
use super::subs::SubKey;

/// Most operations one transaction carries.
const MAX_BATCH: usize = 1024;

/// Migrations of the outbox's tables, applied in order (tracked in `events_schema_migrations`,
/// apart from the store's, so the outbox can also live in memory alone). Never
/// edit one that has shipped: add a new one.
const MIGRATIONS: &[&str] = &["CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        source TEXT NOT NULL,
        id TEXT NOT NULL,
        type TEXT NOT NULL,
        tenant TEXT,
        accepted_ms INTEGER NOT NULL,
        envelope TEXT NOT NULL,
        UNIQUE (source, id)
     );
     CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        seq INTEGER NOT NULL REFERENCES events (seq),
        plugin TEXT NOT NULL,
        pattern TEXT NOT NULL,
        path TEXT NOT NULL,
        dead INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_ms INTEGER NOT NULL,
        last_error TEXT,
        dead_ms INTEGER,
        UNIQUE (plugin, path, pattern, seq)
     );
     CREATE INDEX deliveries_dead ON deliveries (dead, plugin);
     CREATE INDEX deliveries_seq ON deliveries (seq);"];

/// A delivery waiting (or being retried), as the dispatcher holds it.
#[derive(Clone, Debug)]
pub struct Pending {
    /// Delivery id (also the dead-letter id).
    pub id: i64,
    /// The event's place in acceptance order.
    pub seq: i64,
    /// The subscription.
    pub sub: SubKey,
    /// The publishing plugin.
    pub source: String,
    /// Event type.
    pub ty: String,
    /// Tenant, if any.
    pub tenant: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Not before (milliseconds since the epoch).
    pub next_ms: i64,
    /// When the event was accepted.
    pub accepted_ms: i64,
    /// The CloudEvents envelope.
    pub envelope: Arc<str>,
}

/// A dead-lettered delivery.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Id for redrive and delete.
    pub id: String,
    /// The subscribing plugin.
    pub plugin: String,
    /// Its subscription's pattern.
    pub subscription: String,
    /// Its subscription's path.
    pub path: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why it was given up.
    pub reason: String,
    /// When (RFC 3339).
    pub dead_at: String,
    /// The event.
    pub event: Box<serde_json::value::RawValue>,
}

impl DeadLetter {
    /// The event's type.
    pub fn event_type(&self) -> Option<&str> {
        #[derive(serde::Deserialize)]
        struct Typed<'a> {
            #[serde(rename = "type", borrow)]
            ty: &'a str,
        }
        serde_json::from_str::<Typed<'_>>(self.event.get())
            .ok()
            .map(|t| t.ty)
    }
}

/// Filters of the dead-letter list.
#[derive(Clone, Debug, Default)]
pub struct DeadQuery {
    /// Subscribing plugin.
    pub plugin: Option<String>,
    /// Exact event type.
    pub ty: Option<String>,
    /// Most rows.
    pub limit: u32,
}

/// What became of a publish.
#[derive(Debug)]
pub struct Published {
    /// The event's place in acceptance order.
    pub seq: i64,
    /// The event id (the publisher's, on a repeat).
    pub id: String,
    /// When it was first accepted.
    pub accepted_ms: i64,
    /// True when the publisher sent this id before: nothing new was stored or delivered.
    pub duplicate: bool,
}

/// A delivery's fate, written in the next batch.
#[derive(Debug)]
pub enum Settle {
    /// Delivered.
    Ack(i64),
    /// Failed; tried again later.
    Retry {
        /// Delivery id.
        id: i64,
        /// Attempts made.
        attempts: u32,
        /// Not before.
        next_ms: i64,
        /// The last failure.
        error: String,
    },
    /// Given up.
    Dead {
        /// Delivery id.
        id: i64,
        /// Attempts made.
        attempts: u32,
        /// Why.
        reason: String,
        /// When.
        at_ms: i64,
    },
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Op {
    Publish(Box<Event>, Vec<SubKey>, Reply<Published>),
    Settle(Settle),
    Redrive(i64, i64, Reply<Option<Pending>>),
    Discard(i64, Reply<bool>),
    DeadLetters(DeadQuery, Reply<Vec<DeadLetter>>),
    DeadCounts(Reply<Vec<(SubKey, u64)>>),
    Pending(Reply<Vec<Pending>>),
    Gc(i64),
}

/// The outbox's handle; cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbox {
    ops: mpsc::UnboundedSender<Op>,
    durable: bool,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Outbox {
    /// Opens the outbox in the SQLite file at `path` (WAL, `synchronous=FULL`); committed
    /// deliveries go to `committed`.
    pub fn open(path: &Path, committed: mpsc::UnboundedSender<Pending>) -> Result<Outbox, String> {
        let conn = Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
        )
        .map_err(err)?;
        Self::start(conn, committed, true)
    }

    /// An outbox in memory: events live as long as this process (a cluster without NATS).
    pub fn in_memory(committed: mpsc::UnboundedSender<Pending>) -> Result<Outbox, String> {
        let conn = Connection::open_in_memory().map_err(err)?;
        Self::start(conn, committed, false)
    }

    fn start(
        mut conn: Connection,
        committed: mpsc::UnboundedSender<Pending>,
        durable: bool,
    ) -> Result<Outbox, String> {
        crate::store::sqlite::migrate(&mut conn, "events_schema_migrations", MIGRATIONS)?;
        let (ops, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("tessera-outbox".into())
            .spawn(move || writer(conn, rx, committed))
            .map_err(err)?;
        Ok(Outbox { ops, durable })
    }

    /// Whether accepted events survive a crash of this process.
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    async fn ask<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(op(tx))
            .map_err(|_| "the outbox has stopped".to_string())?;
        rx.await.map_err(|_| "the outbox has stopped".to_string())?
    }

    /// Stores `event` with one delivery per subscription; answers once committed.
    pub async fn publish(&self, event: Event, subs: Vec<SubKey>) -> Result<Published, String> {
        self.ask(|r| Op::Publish(Box::new(event), subs, r)).await
    }

    /// Records a delivery's fate (in the next batch; not awaited).
    pub fn settle(&self, s: Settle) {
        let _ = self.ops.send(Op::Settle(s));
    }

    /// Moves a dead letter back to pending, due at `now_ms`; `None` if there is no such dead letter.
    pub async fn redrive(&self, id: i64, now_ms: i64) -> Result<Option<Pending>, String> {
        self.ask(|r| Op::Redrive(id, now_ms, r)).await
    }

    /// Deletes a dead letter; false if there is none with that id.
    pub async fn discard(&self, id: i64) -> Result<bool, String> {
        self.ask(|r| Op::Discard(id, r)).await
    }

    /// The dead-letter list, newest first.
    pub async fn dead_letters(&self, q: DeadQuery) -> Result<Vec<DeadLetter>, String> {
        self.ask(|r| Op::DeadLetters(q, r)).await
    }

    /// Dead letters by subscription.
    pub async fn dead_counts(&self) -> Result<Vec<(SubKey, u64)>, String> {
        self.ask(Op::DeadCounts).await
    }

    /// Every pending delivery, in acceptance order (at start).
    pub async fn pending(&self) -> Result<Vec<Pending>, String> {
        self.ask(Op::Pending).await
    }

    /// Forgets events accepted before `before_ms` that nothing waits for any more.
    pub fn gc(&self, before_ms: i64) {
        let _ = self.ops.send(Op::Gc(before_ms));
    }
}

/// What a batch answers once it is committed.
enum Answer {
    Published(Reply<Published>, Result<Published, String>, Vec<Pending>),
    Redriven(Reply<Option<Pending>>, Result<Option<Pending>, String>),
    Discarded(Reply<bool>, Result<bool, String>),
}

fn writer(
    mut conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Op>,
    committed: mpsc::UnboundedSender<Pending>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        // IMMEDIATE: the write lock up front, so a batch that reads first cannot fail later on
        // a snapshot another connection (the plugin store) moved past.
        let mut tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => {
                fail_all(batch, &e.to_string());
                continue;
            }
        };
        let mut answers = Vec::new();
        for op in batch {
            match op {
                Op::Publish(event, subs, reply) => {
                    // One savepoint a publish: a failed one leaves nothing of itself behind.
                    let r = match tx.savepoint() {
                        Ok(mut sp) => {
                            let r = insert(&sp, &event, &subs);
                            let done = if r.is_ok() {
                                sp.commit()
                            } else {
                                sp.rollback()
                            };
                            r.and_then(|r| done.map(|()| r).map_err(err))
                        }
                        Err(e) => Err(err(e)),
                    };
                    let (r, pending) = match r {
                        Ok((p, pending)) => (Ok(p), pending),
                        Err(e) => (Err(e), Vec::new()),
                    };
                    answers.push(Answer::Published(reply, r, pending));
                }
                Op::Settle(s) => {
                    if let Err(e) = settle(&tx, &s) {
                        tracing::warn!(error = %e, "recording a delivery's outcome failed; it will be delivered again");
                    }
                }
                Op::Redrive(id, now, reply) => {
                    answers.push(Answer::Redriven(reply, redrive(&tx, id, now)))
                }
                Op::Discard(id, reply) => {
                    let r = tx
                        .execute("DELETE FROM deliveries WHERE id = ?1 AND dead = 1", [id])
                        .map(|n| n > 0)
                        .map_err(err);
                    answers.push(Answer::Discarded(reply, r));
                }
                Op::DeadLetters(q, reply) => {
                    let _ = reply.send(dead_letters(&tx, &q));
                }
                Op::DeadCounts(reply) => {
                    let _ = reply.send(dead_counts(&tx));
                }
                Op::Pending(reply) => {
                    let _ = reply.send(load_pending(&tx));
                }
                Op::Gc(before) => {
                    let r = tx.execute(
                        "DELETE FROM events WHERE accepted_ms < ?1
                           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = events.seq)",
                        [before],
                    );
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "forgetting old events failed");
                    }
                }
            }
        }
        let done = tx.commit().map_err(err);
        for a in answers {
            match (a, &done) {
                (Answer::Published(reply, r, pending), Ok(())) => {
                    for p in pending {
                        let _ = committed.send(p);
                    }
                    let _ = reply.send(r);
                }
                (Answer::Redriven(reply, r), Ok(())) => {
                    if let Ok(Some(p)) = &r {
                        let _ = committed.send(p.clone());
                    }
                    let _ = reply.send(r);
                }
                (Answer::Discarded(reply, r), Ok(())) => {
                    let _ = reply.send(r);
                }
                (Answer::Published(reply, ..), Err(e)) => {
                    let _ = reply.send(Err(e.clone()));
                }
                (Answer::Redriven(reply, _), Err(e)) => {
                    let _ = reply.send(Err(e.clone()));
                }
                (Answer::Discarded(reply, _), Err(e)) => {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

fn fail_all(batch: Vec<Op>, why: &str) {
    for op in batch {
        let e = Err(why.to_string());
        match op {
            Op::Publish(_, _, r) => drop(r.send(e)),
            Op::Redrive(_, _, r) => drop(r.send(Err(why.to_string()))),
            Op::Discard(_, r) => drop(r.send(Err(why.to_string()))),
            Op::DeadLetters(_, r) => drop(r.send(Err(why.to_string()))),
            Op::DeadCounts(r) => drop(r.send(Err(why.to_string()))),
            Op::Pending(r) => drop(r.send(Err(why.to_string()))),
            Op::Settle(_) | Op::Gc(_) => {}
        }
    }
}

fn insert(
    tx: &rusqlite::Connection,
    e: &Event,
    subs: &[SubKey],
) -> Result<(Published, Vec<Pending>), String> {
    let inserted = tx
        .execute(
            "INSERT INTO events (source, id, type, tenant, accepted_ms, envelope)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (source, id) DO NOTHING",
            params![e.source, e.id, e.ty, e.tenant, e.accepted_ms, e.envelope],
        )
        .map_err(err)?;
    if inserted == 0 {
        let (seq, accepted_ms): (i64, i64) = tx
            .query_row(
                "SELECT seq, accepted_ms FROM events WHERE source = ?1 AND id = ?2",
                params![e.source, e.id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(err)?;
        return Ok((
            Published {
                seq,
                id: e.id.clone(),
                accepted_ms,
                duplicate: true,
            },
            Vec::new(),
        ));
    }
    let seq = tx.last_insert_rowid();
    let envelope: Arc<str> = e.envelope.as_str().into();
    let mut pending = Vec::with_capacity(subs.len());
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO deliveries (seq, plugin, pattern, path, next_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(err)?;
    for s in subs {
        stmt.execute(params![seq, s.plugin, s.pattern, s.path, e.accepted_ms])
            .map_err(err)?;
        pending.push(Pending {
            id: tx.last_insert_rowid(),
            seq,
            sub: s.clone(),
            source: e.source.clone(),
            ty: e.ty.clone(),
            tenant: e.tenant.clone(),
            attempts: 0,
            next_ms: e.accepted_ms,
            accepted_ms: e.accepted_ms,
            envelope: envelope.clone(),
        });
    }
    Ok((
        Published {
            seq,
            id: e.id.clone(),
            accepted_ms: e.accepted_ms,
            duplicate: false,
        },
        pending,
    ))
}

fn settle(tx: &rusqlite::Transaction<'_>, s: &Settle) -> rusqlite::Result<usize> {
    match s {
        Settle::Ack(id) => tx.execute("DELETE FROM deliveries WHERE id = ?1", [id]),
        Settle::Retry {
            id,
            attempts,
            next_ms,
            error,
        } => tx.execute(
            "UPDATE deliveries SET attempts = ?2, next_ms = ?3, last_error = ?4 WHERE id = ?1",
            params![id, attempts, next_ms, error],
        ),
        Settle::Dead {
            id,
            attempts,
            reason,
            at_ms,
        } => tx.execute(
            "UPDATE deliveries SET dead = 1, attempts = ?2, last_error = ?3, dead_ms = ?4 WHERE id = ?1",
            params![id, attempts, reason, at_ms],
        ),
    }
}

const PENDING_COLUMNS: &str =
    "d.id, d.seq, d.plugin, d.pattern, d.path, e.source, e.type, e.tenant,
    d.attempts, d.next_ms, e.accepted_ms, e.envelope";

fn pending_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Pending> {
    let envelope: String = r.get(11)?;
    Ok(Pending {
        id: r.get(0)?,
        seq: r.get(1)?,
        sub: SubKey {
            plugin: r.get(2)?,
            pattern: r.get(3)?,
            path: r.get(4)?,
        },
        source: r.get(5)?,
        ty: r.get(6)?,
        tenant: r.get(7)?,
        attempts: r.get(8)?,
        next_ms: r.get(9)?,
        accepted_ms: r.get(10)?,
        envelope: envelope.into(),
    })
}

fn load_pending(tx: &rusqlite::Transaction<'_>) -> Result<Vec<Pending>, String> {
    let mut stmt = tx
        .prepare(&format!(
            "SELECT {PENDING_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.seq
             WHERE d.dead = 0 ORDER BY d.seq, d.id"
        ))
        .map_err(err)?;
    let rows = stmt.query_map([], pending_row).map_err(err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(err)
}

fn redrive(tx: &rusqlite::Transaction<'_>, id: i64, now: i64) -> Result<Option<Pending>, String> {
    let n = tx
        .execute(
            "UPDATE deliveries SET dead = 0, attempts = 0, next_ms = ?2, dead_ms = NULL
             WHERE id = ?1 AND dead = 1",
            params![id, now],
        )
        .map_err(err)?;
    if n == 0 {
        return Ok(None);
    }
    tx.query_row(
        &format!(
            "SELECT {PENDING_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.seq WHERE d.id = ?1"
        ),
        [id],
        pending_row,
    )
    .optional()
    .map_err(err)
}

fn dead_letters(tx: &rusqlite::Transaction<'_>, q: &DeadQuery) -> Result<Vec<DeadLetter>, String> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT d.id, d.plugin, d.pattern, d.path, d.attempts, COALESCE(d.last_error, ''),
                    COALESCE(d.dead_ms, 0), e.envelope
             FROM deliveries d JOIN events e ON e.seq = d.seq
             WHERE d.dead = 1 AND (?1 IS NULL OR d.plugin = ?1) AND (?2 IS NULL OR e.type = ?2)
             ORDER BY d.dead_ms DESC, d.id DESC LIMIT ?3",
        )
        .map_err(err)?;
    let rows = stmt
        .query_map(params![q.plugin, q.ty, q.limit], |r| {
            let dead_ms: i64 = r.get(6)?;
            let envelope: String = r.get(7)?;
            Ok((
                DeadLetter {
                    id: r.get::<_, i64>(0)?.to_string(),
                    plugin: r.get(1)?,
                    subscription: r.get(2)?,
                    path: r.get(3)?,
                    attempts: r.get(4)?,
                    reason: r.get(5)?,
                    dead_at: tessera_sdk::time::rfc3339_ms(dead_ms),
                    event: serde_json::value::RawValue::from_string("null".into())
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                },
                envelope,
            ))
        })
        .map_err(err)?;
    let mut out = Vec::new();
    for row in rows {
        let (mut d, envelope) = row.map_err(err)?;
        d.event = serde_json::value::RawValue::from_string(envelope).map_err(err)?;
        out.push(d);
    }
    Ok(out)
}

fn dead_counts(tx: &rusqlite::Transaction<'_>) -> Result<Vec<(SubKey, u64)>, String> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT plugin, pattern, path, COUNT(*) FROM deliveries WHERE dead = 1
             GROUP BY plugin, pattern, path",
        )
        .map_err(err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                SubKey {
                    plugin: r.get(0)?,
                    pattern: r.get(1)?,
                    path: r.get(2)?,
                },
                u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
            ))
        })
        .map_err(err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(err)
}
