//! Where jobs keep what must survive the scheduler: run-time specs, each job's mark (the newest
//! scheduled time decided: never run again), and the last [`HISTORY`] runs of each job.
//!
//! Two implementations: SQLite (tables in `tessera.db`, [`SqliteJobs`]) and Kubernetes (one
//! ConfigMap per plugin, `crate::store::kube`). A run is recorded by [`JobStore::begin`] before
//! the plugin is called; a scheduled run is only recorded when its time is newer than the
//! job's mark, and recording it moves the mark, in one atomic write, so one scheduled time is
//! never run twice, whichever scheduler decides it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use tessera_sdk::jobs::JobSpec;

use super::StoreError;
use crate::runs::{HISTORY, Run, Trigger};
use crate::sync::lock;

/// What a scheduler reads when it takes over.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    /// Specs registered at run time, by plugin.
    pub specs: Vec<(String, JobSpec)>,
    /// Each job's mark: (plugin, job) -> newest scheduled time decided.
    pub marks: HashMap<(String, String), i64>,
    /// Runs that have not ended (Pending or Running).
    pub open: Vec<Run>,
}

/// What became of one run given to [`JobStore::begin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begun {
    /// Recorded (for a scheduled run, its job's mark moved to it): call it.
    Recorded,
    /// Its scheduled time was decided before (the mark is at or past it): never call it.
    Decided,
    /// Not written (the store failed for its plugin): decide it again later.
    Failed,
}

/// A place jobs keep their state.
pub trait JobStore: Send + Sync + 'static {
    /// Everything a scheduler needs at take-over (and, with other replicas, on each refresh).
    fn load(&self) -> Result<Stored, StoreError>;
    /// Records runs before they are called: a scheduled run only when its time is newer than
    /// its job's mark (which it then moves, in the same write); a manual run always. Answers,
    /// for each run, what became of it (`Err`: nothing was written).
    fn begin(&self, runs: &[Run]) -> Result<Vec<Begun>, StoreError>;
    /// Records what became of runs (by id), keeping the newest [`HISTORY`] of each job.
    fn update(&self, runs: &[Run]) -> Result<(), StoreError>;
    /// A plugin's runs, newest first (at least the newest [`HISTORY`] of each job; a few
    /// more may wait to be dropped).
    fn runs(&self, plugin: &str) -> Result<Vec<Run>, StoreError>;
    /// Creates or replaces a spec registered at run time; true when it was new.
    fn put_spec(&self, plugin: &str, spec: &JobSpec) -> Result<bool, StoreError>;
    /// Removes a spec registered at run time, with its runs and mark; false when absent.
    fn delete_spec(&self, plugin: &str, name: &str) -> Result<bool, StoreError>;
    /// Forgets everything of a plugin that was deleted.
    fn forget(&self, plugin: &str) -> Result<(), StoreError>;
    /// Whether other replicas write too (then the leader re-reads specs and manual runs
    /// every few seconds).
    fn shared(&self) -> bool {
        false
    }
}

const MIGRATIONS: &[&str] = &["CREATE TABLE job_specs (
        plugin TEXT NOT NULL,
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        PRIMARY KEY (plugin, name)
    );
    CREATE TABLE job_marks (
        plugin TEXT NOT NULL,
        job TEXT NOT NULL,
        mark_ms INTEGER NOT NULL,
        PRIMARY KEY (plugin, job)
    );
    CREATE TABLE job_runs (
        plugin TEXT NOT NULL,
        job TEXT NOT NULL,
        id TEXT NOT NULL,
        scheduled_ms INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        run TEXT NOT NULL,
        PRIMARY KEY (plugin, id)
    );
    CREATE INDEX job_runs_by_job ON job_runs (plugin, job, scheduled_ms);
    CREATE INDEX job_runs_open ON job_runs (outcome) WHERE outcome IN ('Pending', 'Running');"];

/// Share of a job's recorded ends that also drop its runs past [`HISTORY`].
const PRUNE_SHARE: f64 = 0.125;

/// Jobs in SQLite, beside the store's tables in `tessera.db`.
pub struct SqliteJobs {
    conn: Mutex<Connection>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("jobs: {e}"))
}

/// Writes a run: `INSERT OR IGNORE` (a new run) or an upsert (its end); true when it wrote.
fn write_run(tx: &rusqlite::Transaction<'_>, run: &Run, upsert: bool) -> Result<bool, StoreError> {
    let json = serde_json::to_string(run).map_err(err)?;
    let sql = if upsert {
        "INSERT INTO job_runs (plugin, job, id, scheduled_ms, outcome, run)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (plugin, id) DO UPDATE SET outcome = excluded.outcome, run = excluded.run"
    } else {
        "INSERT OR IGNORE INTO job_runs (plugin, job, id, scheduled_ms, outcome, run)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    };
    let n = tx
        .execute(
            sql,
            params![
                run.plugin,
                run.job,
                run.id,
                run.scheduled_ms,
                run.outcome.as_str(),
                json
            ],
        )
        .map_err(err)?;
    Ok(n == 1)
}

impl SqliteJobs {
    /// Opens (and migrates) the jobs tables in the SQLite file at `path`.
    pub fn open(path: &Path) -> Result<SqliteJobs, String> {
        let mut conn = Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .map_err(|e| e.to_string())?;
        crate::store::sqlite::migrate(&mut conn, "jobs_schema_migrations", MIGRATIONS)?;
        Ok(SqliteJobs {
            conn: Mutex::new(conn),
        })
    }

    /// Keeps the newest [`HISTORY`] runs of a job (open runs are never dropped).
    fn prune(tx: &rusqlite::Transaction<'_>, plugin: &str, job: &str) -> Result<(), StoreError> {
        tx.execute(
            "DELETE FROM job_runs WHERE plugin = ?1 AND job = ?2
               AND outcome NOT IN ('Pending', 'Running')
               AND id NOT IN (SELECT id FROM job_runs WHERE plugin = ?1 AND job = ?2
                              ORDER BY scheduled_ms DESC, rowid DESC LIMIT ?3)",
            params![plugin, job, HISTORY as i64],
        )
        .map_err(err)?;
        Ok(())
    }
}

impl JobStore for SqliteJobs {
    fn load(&self) -> Result<Stored, StoreError> {
        let conn = lock(&self.conn);
        let mut out = Stored::default();
        let mut q = conn
            .prepare("SELECT plugin, spec FROM job_specs ORDER BY plugin, name")
            .map_err(err)?;
        let rows = q
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(err)?;
        for row in rows {
            let (plugin, spec) = row.map_err(err)?;
            match serde_json::from_str::<JobSpec>(&spec) {
                Ok(s) => out.specs.push((plugin, s)),
                Err(e) => {
                    tracing::warn!(%plugin, error = %e, "a stored job spec cannot be read; ignored")
                }
            }
        }
        let mut q = conn
            .prepare("SELECT plugin, job, mark_ms FROM job_marks")
            .map_err(err)?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(err)?;
        for row in rows {
            let (k, v) = row.map_err(err)?;
            out.marks.insert(k, v);
        }
        let mut q = conn
            .prepare("SELECT run FROM job_runs WHERE outcome IN ('Pending', 'Running') ORDER BY scheduled_ms")
            .map_err(err)?;
        let rows = q.query_map([], |r| r.get::<_, String>(0)).map_err(err)?;
        for row in rows {
            if let Ok(run) = serde_json::from_str::<Run>(&row.map_err(err)?) {
                out.open.push(run);
            }
        }
        Ok(out)
    }

    fn begin(&self, runs: &[Run]) -> Result<Vec<Begun>, StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut out = Vec::with_capacity(runs.len());
        let mut touched = std::collections::BTreeSet::new();
        for run in runs {
            if run.trigger == Trigger::Schedule {
                let mark: Option<i64> = tx
                    .query_row(
                        "SELECT mark_ms FROM job_marks WHERE plugin = ?1 AND job = ?2",
                        params![run.plugin, run.job],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(err)?;
                if mark.is_some_and(|m| m >= run.scheduled_ms) {
                    out.push(Begun::Decided);
                    continue;
                }
                tx.execute(
                    "INSERT INTO job_marks (plugin, job, mark_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (plugin, job) DO UPDATE SET mark_ms = excluded.mark_ms",
                    params![run.plugin, run.job, run.scheduled_ms],
                )
                .map_err(err)?;
            }
            let inserted = write_run(&tx, run, false)?;
            out.push(if inserted {
                Begun::Recorded
            } else {
                Begun::Decided
            });
            if run.outcome.is_final() {
                touched.insert((run.plugin.as_str(), run.job.as_str()));
            }
        }
        for (plugin, job) in touched {
            SqliteJobs::prune(&tx, plugin, job)?;
        }
        tx.commit().map_err(err)?;
        Ok(out)
    }

    fn update(&self, runs: &[Run]) -> Result<(), StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut touched = std::collections::BTreeSet::new();
        for run in runs {
            write_run(&tx, run, true)?;
            touched.insert((run.plugin.as_str(), run.job.as_str()));
        }
        // A job's old runs are dropped every few ends, not on each (a minute's tick ends
        // thousands of runs at once); readers take the newest HISTORY.
        for (plugin, job) in touched {
            if crate::model::unit_random() < PRUNE_SHARE {
                SqliteJobs::prune(&tx, plugin, job)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn runs(&self, plugin: &str) -> Result<Vec<Run>, StoreError> {
        let conn = lock(&self.conn);
        let mut q = conn
            .prepare(
                "SELECT run FROM job_runs WHERE plugin = ?1 ORDER BY scheduled_ms DESC, rowid DESC",
            )
            .map_err(err)?;
        let rows = q
            .query_map(params![plugin], |r| r.get::<_, String>(0))
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            if let Ok(run) = serde_json::from_str::<Run>(&row.map_err(err)?) {
                out.push(run);
            }
        }
        Ok(out)
    }

    fn put_spec(&self, plugin: &str, spec: &JobSpec) -> Result<bool, StoreError> {
        let conn = lock(&self.conn);
        let json = serde_json::to_string(spec).map_err(err)?;
        let existed: bool = conn
            .query_row(
                "SELECT 1 FROM job_specs WHERE plugin = ?1 AND name = ?2",
                params![plugin, spec.name],
                |_| Ok(()),
            )
            .optional()
            .map_err(err)?
            .is_some();
        conn.execute(
            "INSERT INTO job_specs (plugin, name, spec) VALUES (?1, ?2, ?3)
             ON CONFLICT (plugin, name) DO UPDATE SET spec = excluded.spec",
            params![plugin, spec.name, json],
        )
        .map_err(err)?;
        Ok(!existed)
    }

    fn delete_spec(&self, plugin: &str, name: &str) -> Result<bool, StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction().map_err(err)?;
        let n = tx
            .execute(
                "DELETE FROM job_specs WHERE plugin = ?1 AND name = ?2",
                params![plugin, name],
            )
            .map_err(err)?;
        if n > 0 {
            tx.execute(
                "DELETE FROM job_marks WHERE plugin = ?1 AND job = ?2",
                params![plugin, name],
            )
            .map_err(err)?;
            tx.execute(
                "DELETE FROM job_runs WHERE plugin = ?1 AND job = ?2",
                params![plugin, name],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(n > 0)
    }

    fn forget(&self, plugin: &str) -> Result<(), StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction().map_err(err)?;
        for table in ["job_specs", "job_marks", "job_runs"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE plugin = ?1"),
                params![plugin],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::Outcome;

    fn run(job: &str, at: i64, outcome: Outcome) -> Run {
        Run::not_run("p", job, at, outcome, "x".into(), at)
    }

    #[test]
    fn a_scheduled_time_is_recorded_once_and_history_is_bounded() {
        let dir = std::env::temp_dir().join(format!("tessera-jobs-{}", crate::auth::new_jti()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("t.db");
        let s = SqliteJobs::open(&db).unwrap();
        let mut r = run("a", 1000, Outcome::Running);
        r.finished_ms = None;
        assert_eq!(s.begin(&[r.clone()]).unwrap(), [Begun::Recorded]);
        // The same time again, or an older one: never recorded (never run) twice.
        assert_eq!(
            s.begin(&[r.clone(), run("a", 500, Outcome::Skipped)])
                .unwrap(),
            [Begun::Decided, Begun::Decided]
        );
        assert_eq!(s.load().unwrap().open.len(), 1);
        // Reopened (a restart): the mark holds.
        drop(s);
        let s = SqliteJobs::open(&db).unwrap();
        assert_eq!(s.load().unwrap().marks[&("p".into(), "a".into())], 1000);
        assert_eq!(s.begin(&[r.clone()]).unwrap(), [Begun::Decided]);
        r.outcome = Outcome::Succeeded;
        s.update(&[r]).unwrap();
        assert!(s.load().unwrap().open.is_empty());
        let many: Vec<Run> = (2..80)
            .map(|i| run("a", i * 1000, Outcome::Skipped))
            .collect();
        assert!(
            s.begin(&many)
                .unwrap()
                .iter()
                .all(|b| *b == Begun::Recorded)
        );
        let runs = s.runs("p").unwrap();
        assert_eq!(runs.len(), HISTORY);
        assert_eq!(runs[0].scheduled_ms, 79_000);
        std::fs::remove_dir_all(dir).ok();
    }
}
