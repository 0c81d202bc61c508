//! Jobs: plugins' scheduled calls, run by one scheduler (the Lease holder in a cluster, the
//! process on SQLite), each run recorded before it is called.
//!
//! ```text
//!  manifests (registry commits) ──▶ Shared: jobs table ◀── PUT/DELETE /api/plugin/v1/jobs/{name}
//!                                        │ Msg::Changed
//!                                        ▼
//!            scheduler (leader only): plan::decide each due time ─▶ JobStore::begin (mark moves)
//!                                        │ then, for each recorded Running run
//!                                        ▼
//!                     call task: POST basePath + path (call token kind job), retries ─▶ Msg::Done
//!                                        ▼
//!                                 JobStore::update (outcome, last 50 runs per job)
//! ```
//!
//! By concern: `model` (jobs and their views; runs are `crate::runs`), `plan` (pure decisions),
//! `scheduler`, `call`, `metrics`; persistence is `crate::store::jobs` (the trait and SQLite) and
//! `crate::store::kube::jobs`.

pub mod call;
pub mod metrics;
pub mod model;
pub mod plan;
mod recorder;
pub mod scheduler;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};

use tessera_sdk::jobs::{JobSpec, MAX_JOBS};
use tokio::sync::{mpsc, oneshot, watch};

use self::metrics::JobsMetrics;
use self::model::{Job, Outcome, Run, Source, Trigger};
use self::scheduler::{Msg, Scheduler};
use crate::auth::Keys;
use crate::model::PluginRecord;
use crate::registry::{Index, Observer, Registry};
use crate::store::jobs::JobStore;
use crate::sync::{read, write};

/// Why a jobs request was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// No such job.
    #[error("no such job")]
    NoSuchJob,
    /// A run is in progress and the job forbids overlap (carries its id).
    #[error("run {0} is still running (concurrency Forbid)")]
    Running(String),
    /// The plugin is not Ready and enabled.
    #[error("{0}")]
    NotReady(String),
    /// The job is declared in the plugin's manifest.
    #[error("declared in plugin.yaml")]
    Declared,
    /// The plugin would have more than [`MAX_JOBS`] jobs.
    #[error("too many jobs")]
    TooMany,
    /// This replica does not run the scheduler (asked while stepping down).
    #[error("this replica does not schedule jobs right now")]
    NotScheduling,
    /// The job store failed.
    #[error("{0}")]
    Store(String),
}

pub use crate::model::now_ms;

/// A manual run of `job`, asked by `actor` at `now`.
pub(crate) fn manual_run(plugin: &str, job: &str, actor: &str, now: i64, outcome: Outcome) -> Run {
    Run {
        id: format!("{job}-manual-{now}-{}", &crate::auth::new_jti()[..6]),
        plugin: plugin.to_string(),
        job: job.to_string(),
        trigger: Trigger::Manual,
        scheduled_ms: now,
        started_ms: (outcome == Outcome::Running).then_some(now),
        finished_ms: None,
        outcome,
        status: None,
        attempt: 0,
        message: None,
        body: None,
        actor: Some(actor.to_string()),
    }
}

/// What the API and the scheduler share: the store and the table of jobs.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn JobStore>,
    /// Jobs declared in manifests, by plugin.
    declared: RwLock<BTreeMap<String, Vec<JobSpec>>>,
    /// Jobs registered at run time, by plugin and name.
    runtime: RwLock<BTreeMap<String, BTreeMap<String, JobSpec>>>,
}

impl Shared {
    /// Every job: declared ones, then those registered at run time (a name declared wins).
    pub(crate) fn jobs(&self) -> Vec<Job> {
        let declared = read(&self.declared);
        let runtime = read(&self.runtime);
        let mut out = Vec::new();
        for (plugin, specs) in declared.iter() {
            for spec in specs {
                out.push(Job {
                    plugin: plugin.clone(),
                    spec: spec.clone(),
                    source: Source::Manifest,
                });
            }
        }
        for (plugin, specs) in runtime.iter() {
            let names: HashSet<&str> = declared
                .get(plugin)
                .map(|v| v.iter().map(|s| s.name.as_str()).collect())
                .unwrap_or_default();
            for spec in specs.values().filter(|s| !names.contains(s.name.as_str())) {
                out.push(Job {
                    plugin: plugin.clone(),
                    spec: spec.clone(),
                    source: Source::Api,
                });
            }
        }
        out
    }

    /// The jobs of one plugin (declared first, then those registered at run time).
    pub(crate) fn jobs_of(&self, plugin: &str) -> Vec<Job> {
        let declared = read(&self.declared);
        let mine = declared.get(plugin).map(Vec::as_slice).unwrap_or_default();
        let mut out: Vec<Job> = mine
            .iter()
            .map(|spec| Job {
                plugin: plugin.to_string(),
                spec: spec.clone(),
                source: Source::Manifest,
            })
            .collect();
        if let Some(specs) = read(&self.runtime).get(plugin) {
            out.extend(
                specs
                    .values()
                    .filter(|s| !mine.iter().any(|d| d.name == s.name))
                    .map(|spec| Job {
                        plugin: plugin.to_string(),
                        spec: spec.clone(),
                        source: Source::Api,
                    }),
            );
        }
        out
    }

    pub(crate) fn set_runtime(&self, specs: Vec<(String, JobSpec)>) {
        let mut m: BTreeMap<String, BTreeMap<String, JobSpec>> = BTreeMap::new();
        for (plugin, spec) in specs {
            m.entry(plugin).or_default().insert(spec.name.clone(), spec);
        }
        *write(&self.runtime) = m;
    }
}

/// The jobs surface.
pub struct Jobs {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Msg>>>,
    leading: std::sync::Mutex<Option<watch::Receiver<bool>>>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}

/// The manifest field the jobs surface reads.
#[derive(Default, serde::Deserialize)]
struct JobsField {
    #[serde(default)]
    jobs: Vec<JobSpec>,
}

/// The jobs a record declares: those of the version the shell is shown, else of the latest
/// registered one.
fn declared_by(record: &PluginRecord) -> Vec<JobSpec> {
    let d = record.serving.as_ref().unwrap_or(&record.current);
    d.manifest.fields::<JobsField>().jobs
}

impl Jobs {
    /// The jobs surface on `store` (runtime specs are read when the scheduler starts).
    pub fn new(store: Arc<dyn JobStore>) -> Arc<Jobs> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Jobs {
            shared: Arc::new(Shared {
                store,
                declared: RwLock::new(BTreeMap::new()),
                runtime: RwLock::new(BTreeMap::new()),
            }),
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            leading: std::sync::Mutex::new(None),
        })
    }

    /// Starts the scheduler: it schedules while `leading` is true. `http` calls plugins; each
    /// attempt is bounded by its job's timeout, so the client's own should be longer than
    /// [`tessera_sdk::jobs::MAX_TIMEOUT_SECS`].
    pub fn start(
        &self,
        registry: Arc<Registry>,
        keys: Arc<Keys>,
        http: reqwest::Client,
        metrics: JobsMetrics,
        leading: watch::Receiver<bool>,
        shutdown: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let rx = crate::sync::lock(&self.rx).take()?;
        *crate::sync::lock(&self.leading) = Some(leading.clone());
        let scheduler = Scheduler {
            shared: self.shared.clone(),
            registry,
            keys,
            http,
            metrics,
            tx: self.tx.clone(),
        };
        Some(tokio::spawn(async move {
            // Run-time specs are known on every replica (for the API), not only the leader's.
            scheduler.reload().await;
            scheduler.run(rx, leading, shutdown).await
        }))
    }

    fn leading(&self) -> bool {
        crate::sync::lock(&self.leading)
            .as_ref()
            .is_some_and(|l| *l.borrow())
    }

    /// The jobs of a plugin.
    pub fn jobs_of(&self, plugin: &str) -> Vec<Job> {
        self.shared.jobs_of(plugin)
    }

    /// A plugin's runs, newest first.
    pub async fn runs(&self, plugin: &str) -> Result<Vec<Run>, JobsError> {
        let shared = self.shared.clone();
        let plugin = plugin.to_string();
        tokio::task::spawn_blocking(move || shared.store.runs(&plugin))
            .await
            .map_err(|e| JobsError::Store(e.to_string()))?
            .map_err(|e| JobsError::Store(e.to_string()))
    }

    /// Registers or replaces a job at run time; true when it is new.
    pub async fn put(&self, plugin: &str, spec: JobSpec) -> Result<bool, JobsError> {
        let declared = read(&self.shared.declared)
            .get(plugin)
            .is_some_and(|v| v.iter().any(|s| s.name == spec.name));
        if declared {
            return Err(JobsError::Declared);
        }
        let count = self.shared.jobs_of(plugin).len();
        let exists = read(&self.shared.runtime)
            .get(plugin)
            .is_some_and(|m| m.contains_key(&spec.name));
        if !exists && count >= MAX_JOBS {
            return Err(JobsError::TooMany);
        }
        let shared = self.shared.clone();
        let (p, s) = (plugin.to_string(), spec.clone());
        let created = tokio::task::spawn_blocking(move || shared.store.put_spec(&p, &s))
            .await
            .map_err(|e| JobsError::Store(e.to_string()))?
            .map_err(|e| JobsError::Store(e.to_string()))?;
        write(&self.shared.runtime)
            .entry(plugin.to_string())
            .or_default()
            .insert(spec.name.clone(), spec);
        let _ = self.tx.send(Msg::Changed(vec![plugin.to_string()]));
        Ok(created)
    }

    /// Removes a job registered at run time; false when there is none.
    pub async fn delete(&self, plugin: &str, name: &str) -> Result<bool, JobsError> {
        let declared = read(&self.shared.declared)
            .get(plugin)
            .is_some_and(|v| v.iter().any(|s| s.name == name));
        if declared {
            return Err(JobsError::Declared);
        }
        let shared = self.shared.clone();
        let (p, n) = (plugin.to_string(), name.to_string());
        let deleted = tokio::task::spawn_blocking(move || shared.store.delete_spec(&p, &n))
            .await
            .map_err(|e| JobsError::Store(e.to_string()))?
            .map_err(|e| JobsError::Store(e.to_string()))?;
        if let Some(m) = write(&self.shared.runtime).get_mut(plugin) {
            m.remove(name);
        }
        let _ = self.tx.send(Msg::Changed(vec![plugin.to_string()]));
        Ok(deleted)
    }

    /// Runs a job now. The replica that schedules starts it at once; another records it as
    /// Pending for the scheduler, which starts it within seconds.
    pub async fn run_now(&self, plugin: &str, job: &str, actor: &str) -> Result<Run, JobsError> {
        let Some(spec) = self
            .shared
            .jobs_of(plugin)
            .into_iter()
            .find(|j| j.spec.name == job)
        else {
            return Err(JobsError::NoSuchJob);
        };
        if self.leading() {
            let (reply, answer) = oneshot::channel();
            let sent = self.tx.send(Msg::Manual {
                plugin: plugin.to_string(),
                job: job.to_string(),
                actor: actor.to_string(),
                reply,
            });
            if sent.is_ok() {
                match answer.await {
                    Ok(Err(JobsError::NotScheduling)) | Err(_) => {}
                    Ok(r) => return r,
                }
            }
        }
        // Not the scheduler: judged on the store, started by the scheduler.
        let runs = self.runs(plugin).await?;
        if spec.spec.concurrency == tessera_sdk::jobs::Concurrency::Forbid
            && let Some(open) = runs.iter().find(|r| r.job == job && !r.outcome.is_final())
        {
            return Err(JobsError::Running(open.id.clone()));
        }
        let run = manual_run(plugin, job, actor, now_ms(), Outcome::Pending);
        let shared = self.shared.clone();
        let r = run.clone();
        let begun = tokio::task::spawn_blocking(move || shared.store.begin(&[r]))
            .await
            .map_err(|e| JobsError::Store(e.to_string()))?
            .map_err(|e| JobsError::Store(e.to_string()))?;
        if begun.first() != Some(&crate::store::jobs::Begun::Recorded) {
            return Err(JobsError::Store("the run was not recorded".into()));
        }
        Ok(run)
    }

    fn observe(&self, index: &Index, names: &mut dyn Iterator<Item = &str>) {
        let mut gone = Vec::new();
        let mut touched = Vec::new();
        {
            let mut declared = write(&self.shared.declared);
            for name in names {
                touched.push(name.to_string());
                match index.get(name) {
                    Some(rec) => {
                        let specs = declared_by(rec);
                        if specs.is_empty() {
                            declared.remove(name);
                        } else {
                            declared.insert(name.to_string(), specs);
                        }
                    }
                    None => {
                        declared.remove(name);
                        gone.push(name.to_string());
                    }
                }
            }
        }
        if !gone.is_empty() {
            let mut runtime = write(&self.shared.runtime);
            for name in &gone {
                runtime.remove(name);
            }
        }
        // A deleted plugin's jobs go with it; the scheduler (one writer) forgets them.
        if !gone.is_empty() && self.leading() {
            let shared = self.shared.clone();
            // Called on the registry's writer thread: the store is written off it.
            std::thread::spawn(move || {
                for name in gone {
                    if let Err(e) = shared.store.forget(&name) {
                        tracing::warn!(plugin = %name, error = %e, "jobs: cannot forget a deleted plugin's jobs");
                    }
                }
            });
        }
        let _ = self.tx.send(Msg::Changed(touched));
    }
}

impl Observer for Jobs {
    fn loaded(&self, index: &Index) {
        let names: Vec<String> = index.records().map(|r| r.name.clone()).collect();
        self.observe(index, &mut names.iter().map(String::as_str));
    }

    fn committed(&self, index: &Index, touched: &[String], _urgent: bool) {
        self.observe(index, &mut touched.iter().map(String::as_str));
    }
}
