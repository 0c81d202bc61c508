//! The embedded store: one SQLite file (`tessera.db`), WAL journal, `synchronous=FULL`,
//! versioned migrations applied in order from an empty file.
//!
//! Plugin records are stored as JSON documents keyed by name (the same unit the Kubernetes
//! backend keeps per ConfigMap); audit events and revoked token ids are rows.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

/// File name of the SQLite database in the data dir.
pub const DB_FILE: &str = "tessera.db";

use super::{AuditQuery, Change, Loaded, Store, StoreError};
use crate::model::{AuditEvent, IssuedToken, PluginRecord, now_rfc3339};

/// Migrations, applied in order; the index + 1 is the schema version. Never edit one that has
/// shipped: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: plugin records, audit, revoked tokens.
    "CREATE TABLE plugins (
        name TEXT PRIMARY KEY NOT NULL,
        record TEXT NOT NULL,
        updated_at TEXT NOT NULL
     );
     CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        plugin TEXT,
        reason TEXT NOT NULL,
        request_id TEXT
     );
     CREATE INDEX audit_plugin ON audit (plugin, id);
     CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY NOT NULL,
        revoked_at TEXT NOT NULL
     );",
    // 2: the token list (what was minted, never the token).
    "CREATE TABLE issued_tokens (
        jti TEXT PRIMARY KEY NOT NULL,
        issued TEXT NOT NULL,
        record TEXT NOT NULL
     );",
];

/// Applies `migrations` in order to `conn`, recording each in `table` (version, applied_at); a
/// database at a version newer than the list is refused (a newer build wrote it).
pub(crate) fn migrate(
    conn: &mut Connection,
    table: &str,
    migrations: &[&str],
) -> Result<(), String> {
    let e = |e: rusqlite::Error| e.to_string();
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            version INTEGER PRIMARY KEY NOT NULL,
            applied_at TEXT NOT NULL
         );"
    ))
    .map_err(e)?;
    let current: i64 = conn
        .query_row(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {table}"),
            [],
            |r| r.get(0),
        )
        .map_err(e)?;
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    if current > known {
        return Err(format!(
            "the database is at schema version {current} ({table}), newer than this build knows ({known}); use a newer tessera"
        ));
    }
    for (i, sql) in migrations
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let tx = conn.transaction().map_err(e)?;
        tx.execute_batch(sql).map_err(e)?;
        tx.execute(
            &format!("INSERT INTO {table} (version, applied_at) VALUES (?1, ?2)"),
            params![i64::try_from(i).unwrap_or(i64::MAX) + 1, now_rfc3339()],
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
    }
    Ok(())
}

/// A SQLite-backed [`Store`].
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(err(format!(
                "{}: cannot use WAL journal (got {mode})",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
            .map_err(err)?;
        let store = SqliteStore {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let conn = self.lock()?;
        conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(err)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn
            .lock()
            .map_err(|_| err("store connection poisoned"))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        migrate(&mut conn, "schema_migrations", MIGRATIONS).map_err(StoreError::Failed)
    }
}

fn insert_audit(tx: &rusqlite::Transaction<'_>, events: &[AuditEvent]) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO audit (time, actor, action, plugin, reason, request_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(err)?;
    for e in events {
        stmt.execute(params![
            e.time,
            e.actor,
            e.action,
            e.plugin,
            e.reason,
            e.request_id
        ])
        .map_err(err)?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare("SELECT name, record FROM plugins ORDER BY name")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(err)?;
        let mut plugins = Vec::new();
        for row in rows {
            let (name, json) = row.map_err(err)?;
            let record: PluginRecord = serde_json::from_str(&json)
                .map_err(|e| err(format!("plugin record {name:?} cannot be read: {e}")))?;
            plugins.push(record);
        }
        let mut stmt = conn
            .prepare("SELECT jti FROM revoked_tokens")
            .map_err(err)?;
        let revoked = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        Ok(Loaded { plugins, revoked })
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        // Serialize before taking the connection: the lock is held for the SQL alone.
        let mut rows = Vec::with_capacity(changes.len());
        for c in changes {
            rows.push(match c {
                Change::Put(r) => Some(serde_json::to_string(r).map_err(err)?),
                Change::Issue(t) => Some(serde_json::to_string(t).map_err(err)?),
                _ => None,
            });
        }
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(err)?;
        for (c, json) in changes.iter().zip(rows) {
            match (c, json) {
                (Change::Put(r), Some(json)) => {
                    tx.prepare_cached(
                        "INSERT INTO plugins (name, record, updated_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT(name) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
                    )
                    .and_then(|mut st| st.execute(params![r.name, json, r.updated_at]))
                    .map_err(err)?;
                }
                (Change::Delete(name), _) => {
                    tx.prepare_cached("DELETE FROM plugins WHERE name = ?1")
                        .and_then(|mut st| st.execute(params![name]))
                        .map_err(err)?;
                }
                (Change::Revoke { jti, at }, _) => {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO revoked_tokens (jti, revoked_at) VALUES (?1, ?2)",
                    )
                    .and_then(|mut st| st.execute(params![jti, at]))
                    .map_err(err)?;
                }
                (Change::Audit(e), _) => insert_audit(&tx, std::slice::from_ref(e))?,
                (Change::Issue(t), Some(json)) => {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO issued_tokens (jti, issued, record) VALUES (?1, ?2, ?3)",
                    )
                    .and_then(|mut st| st.execute(params![t.jti, t.issued, json]))
                    .map_err(err)?;
                }
                (Change::Put(_) | Change::Issue(_), None) => {
                    return Err(err("record not serialized"));
                }
            }
        }
        tx.commit().map_err(err)
    }

    fn tokens(&self) -> Result<Vec<IssuedToken>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached("SELECT jti, record FROM issued_tokens ORDER BY issued DESC, jti")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (jti, json) = row.map_err(err)?;
            out.push(
                serde_json::from_str(&json)
                    .map_err(|e| err(format!("token {jti:?} cannot be read: {e}")))?,
            );
        }
        Ok(out)
    }

    fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, time, actor, action, plugin, reason, request_id FROM audit
                 WHERE (?1 IS NULL OR plugin = ?1) AND (?2 IS NULL OR id < ?2)
                 ORDER BY id DESC LIMIT ?3",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![q.plugin, q.before, q.limit], |r| {
                Ok(AuditEvent {
                    id: r.get(0)?,
                    time: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    plugin: r.get(4)?,
                    reason: r.get(5)?,
                    request_id: r.get(6)?,
                })
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn ping(&self) -> Result<(), StoreError> {
        let conn = self.lock()?;
        conn.query_row("SELECT 1", [], |_| Ok(()))
            .optional()
            .map(|_| ())
            .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Deployment, State};

    fn record(name: &str) -> PluginRecord {
        PluginRecord {
            name: name.into(),
            state: State::Registering,
            current: Deployment {
                version: "1.0.0".into(),
                manifest: crate::model::ManifestJson::new(&serde_json::json!({"name": name}))
                    .unwrap(),
                backend_url: "http://127.0.0.1:1".into(),
                remote_url: "http://127.0.0.1:1/mf/remoteEntry.js".into(),
                integrity: None,
                registered_at: now_rfc3339(),
                token_id: "t".into(),
            },
            serving: None,
            disabled: None,
            conditions: vec![],
            updated_at: now_rfc3339(),
        }
    }

    fn event(action: &str, plugin: Option<&str>) -> AuditEvent {
        AuditEvent {
            id: 0,
            time: now_rfc3339(),
            actor: "test".into(),
            action: action.into(),
            plugin: plugin.map(String::from),
            reason: "because".into(),
            request_id: None,
        }
    }

    #[test]
    fn migrates_an_empty_file_and_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("tessera-sqlite-{}", crate::auth::new_jti()));
        let path = dir.join("tessera.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
            s.commit(&[
                Change::Put(Box::new(record("a"))),
                Change::Audit(event("register", Some("a"))),
            ])
            .unwrap();
            // One transaction, in order: b is written, then deleted.
            s.commit(&[
                Change::Put(Box::new(record("b"))),
                Change::Audit(event("register", Some("b"))),
                Change::Delete("b".into()),
                Change::Audit(event("delete", Some("b"))),
            ])
            .unwrap();
            for _ in 0..2 {
                s.commit(&[
                    Change::Revoke {
                        jti: "jti-1".into(),
                        at: now_rfc3339(),
                    },
                    Change::Audit(event("revoke-token", None)),
                ])
                .unwrap();
            }
        }
        let s = SqliteStore::open(&path).unwrap();
        let loaded = s.load().unwrap();
        assert_eq!(loaded.plugins, vec![record_named(&loaded, "a")]);
        assert_eq!(loaded.revoked, vec!["jti-1".to_string()]);
        let all = s
            .audit(&AuditQuery {
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            all.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            [
                "revoke-token",
                "revoke-token",
                "delete",
                "register",
                "register"
            ]
        );
        let b = s
            .audit(&AuditQuery {
                plugin: Some("b".into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(b.len(), 2);
        let page = s
            .audit(&AuditQuery {
                before: Some(all[1].id),
                limit: 2,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            page.iter().map(|e| e.id).collect::<Vec<_>>(),
            [all[2].id, all[3].id]
        );
        let mode: String = s
            .lock()
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        std::fs::remove_dir_all(dir).ok();
    }

    fn record_named(loaded: &Loaded, name: &str) -> PluginRecord {
        loaded
            .plugins
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .unwrap()
    }
}
