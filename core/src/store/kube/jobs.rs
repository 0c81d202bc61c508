//! Jobs in a cluster: one ConfigMap per plugin, `tessera-jobs-<plugin>` (labels
//! `app.kubernetes.io/managed-by=tessera`, `tessera.dev/jobs=<plugin>`), holding the plugin's
//! run-time specs, each job's mark and its newest runs as JSON under `jobs.json`. Every write
//! is a read-modify-write carrying the `resourceVersion` it read, retried on `409 Conflict`, so
//! a mark only moves forward whoever writes: a deposed leader's write of a time the new leader
//! already decided fails instead of running it twice. The object stays under the API server's
//! 1 MiB limit: at most 50 runs a job, and the oldest bodies go first when it would not fit.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde::{Deserialize, Serialize};
use tessera_sdk::jobs::JobSpec;

use super::{KubeStore, api_status, failed, managed};
use crate::runs::{HISTORY, Run, Trigger};
use crate::store::StoreError;
use crate::store::jobs::{Begun, JobStore, Stored};

/// Label naming the plugin a jobs ConfigMap belongs to (and keeping it out of the records'
/// watch).
pub const JOBS_LABEL: &str = "tessera.dev/jobs";
const KEY: &str = "jobs.json";
/// Serialized size kept under the API server's 1 MiB object limit, with room for metadata.
const MAX_BYTES: usize = 900 * 1024;
/// Conflicting writers a write outlasts.
const ATTEMPTS: usize = 16;

fn name(plugin: &str) -> String {
    format!("tessera-jobs-{plugin}")
}

/// One plugin's jobs state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Doc {
    #[serde(default)]
    specs: BTreeMap<String, JobSpec>,
    #[serde(default)]
    marks: BTreeMap<String, i64>,
    /// Newest first, per job.
    #[serde(default)]
    runs: BTreeMap<String, Vec<Run>>,
}

impl Doc {
    fn put_run(&mut self, run: &Run) {
        let list = self.runs.entry(run.job.clone()).or_default();
        match list.iter_mut().find(|r| r.id == run.id) {
            Some(r) => *r = run.clone(),
            None => {
                list.push(run.clone());
                list.sort_by_key(|r| std::cmp::Reverse(r.scheduled_ms));
            }
        }
        // The newest HISTORY, and every open run.
        let mut kept = 0;
        list.retain(|r| {
            kept += 1;
            kept <= HISTORY || !r.outcome.is_final()
        });
    }

    /// Serialized, bodies and then messages of older runs dropped until it fits.
    fn fit(&mut self) -> Result<String, StoreError> {
        for keep in [usize::MAX, 10, 3, 1, 0] {
            if keep != usize::MAX {
                for list in self.runs.values_mut() {
                    for r in list.iter_mut().skip(keep) {
                        r.body = None;
                    }
                }
            }
            let text = serde_json::to_string(self).map_err(|e| failed("jobs", e))?;
            if text.len() <= MAX_BYTES {
                return Ok(text);
            }
        }
        for list in self.runs.values_mut() {
            list.truncate(10);
        }
        serde_json::to_string(self).map_err(|e| failed("jobs", e))
    }
}

/// Jobs in ConfigMaps.
pub struct KubeJobs(pub(super) Arc<KubeStore>);

/// Plugins written at once by one `begin` or `update` (a minute's tick touches many).
const CONCURRENT: usize = 32;

async fn read(store: &KubeStore, plugin: &str) -> Result<(Doc, Option<String>), StoreError> {
    let cm = store
        .bounded(
            "reading a plugin's jobs",
            store.configmaps().get_opt(&name(plugin)),
        )
        .await?
        .map_err(|e| failed(&name(plugin), e))?;
    Ok(match cm {
        Some(cm) => (parse(&cm), cm.metadata.resource_version),
        None => (Doc::default(), None),
    })
}

/// Applies `f` to the plugin's state and writes it back if it changed, again on conflict.
async fn modify<T>(
    store: &KubeStore,
    plugin: &str,
    mut f: impl FnMut(&mut Doc) -> T,
) -> Result<T, StoreError> {
    let api = store.configmaps();
    for _ in 0..ATTEMPTS {
        let (mut doc, rv) = read(store, plugin).await?;
        let before = doc.clone();
        let out = f(&mut doc);
        if doc == before {
            return Ok(out);
        }
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name(plugin)),
                namespace: Some(store.namespace.clone()),
                labels: Some({
                    let mut l = managed();
                    l.insert(JOBS_LABEL.to_string(), plugin.to_string());
                    l
                }),
                resource_version: rv.clone(),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(KEY.to_string(), doc.fit()?)])),
            ..Default::default()
        };
        let pp = PostParams::default();
        let res = match rv {
            Some(_) => {
                store
                    .bounded(
                        "writing a plugin's jobs",
                        api.replace(&name(plugin), &pp, &cm),
                    )
                    .await?
            }
            None => {
                store
                    .bounded("writing a plugin's jobs", api.create(&pp, &cm))
                    .await?
            }
        };
        match res {
            Ok(_) => return Ok(out),
            Err(e) if api_status(&e) == Some(409) => continue,
            Err(e) => return Err(failed(&name(plugin), e)),
        }
    }
    Err(StoreError::Failed(format!(
        "{}: still changed by other writers after {ATTEMPTS} attempts",
        name(plugin)
    )))
}

/// A scheduled run is recorded only past its job's mark, which it moves; a run is recorded once.
fn record(doc: &mut Doc, run: &Run) -> Begun {
    if run.trigger == Trigger::Schedule {
        if doc
            .marks
            .get(&run.job)
            .is_some_and(|m| *m >= run.scheduled_ms)
        {
            return Begun::Decided;
        }
        doc.marks.insert(run.job.clone(), run.scheduled_ms);
    }
    if doc
        .runs
        .get(&run.job)
        .is_some_and(|l| l.iter().any(|r| r.id == run.id))
    {
        return Begun::Decided;
    }
    doc.put_run(run);
    Begun::Recorded
}

impl KubeJobs {
    /// Runs `f` on each plugin's runs, `CONCURRENT` plugins at a time; answers each plugin's
    /// result with the positions of its runs.
    fn per_plugin<T: Send + 'static>(
        &self,
        runs: &[Run],
        f: fn(&mut Doc, &[Run]) -> T,
    ) -> Vec<(Vec<usize>, Result<T, StoreError>)> {
        let mut groups: BTreeMap<String, (Vec<usize>, Vec<Run>)> = BTreeMap::new();
        for (i, r) in runs.iter().enumerate() {
            let g = groups.entry(r.plugin.clone()).or_default();
            g.0.push(i);
            g.1.push(r.clone());
        }
        let store = self.0.clone();
        self.0.handle.block_on(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
            let mut set = tokio::task::JoinSet::new();
            for (plugin, (idx, mine)) in groups {
                let (store, permits) = (store.clone(), permits.clone());
                set.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let r = modify(&store, &plugin, |doc| f(doc, &mine)).await;
                    (idx, r)
                });
            }
            let mut out = Vec::new();
            while let Some(done) = set.join_next().await {
                if let Ok(r) = done {
                    out.push(r);
                }
            }
            out
        })
    }
}

fn parse(cm: &ConfigMap) -> Doc {
    cm.data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

impl JobStore for KubeJobs {
    fn load(&self) -> Result<Stored, StoreError> {
        let lp = ListParams::default().labels(JOBS_LABEL);
        let list = self
            .0
            .block("listing jobs", self.0.configmaps().list(&lp))?
            .map_err(|e| failed("listing jobs ConfigMaps", e))?;
        let mut out = Stored::default();
        for cm in list.items {
            let Some(plugin) = cm
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(JOBS_LABEL))
                .cloned()
            else {
                continue;
            };
            let doc = parse(&cm);
            for spec in doc.specs.into_values() {
                out.specs.push((plugin.clone(), spec));
            }
            for (job, mark) in doc.marks {
                out.marks.insert((plugin.clone(), job), mark);
            }
            for run in doc.runs.into_values().flatten() {
                if !run.outcome.is_final() {
                    out.open.push(run);
                }
            }
        }
        out.open.sort_by_key(|r| r.scheduled_ms);
        Ok(out)
    }

    fn begin(&self, runs: &[Run]) -> Result<Vec<Begun>, StoreError> {
        let mut out = vec![Begun::Failed; runs.len()];
        for (idx, result) in self.per_plugin(runs, |doc, mine| {
            mine.iter().map(|r| record(doc, r)).collect::<Vec<Begun>>()
        }) {
            match result {
                Ok(begun) => {
                    for (i, b) in idx.into_iter().zip(begun) {
                        out[i] = b;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "jobs: runs of a plugin not recorded"),
            }
        }
        Ok(out)
    }

    fn update(&self, runs: &[Run]) -> Result<(), StoreError> {
        let mut first = None;
        for (_, result) in self.per_plugin(runs, |doc, mine| {
            for r in mine {
                doc.put_run(r);
            }
        }) {
            if let Err(e) = result {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn runs(&self, plugin: &str) -> Result<Vec<Run>, StoreError> {
        let (doc, _) = self.0.handle.block_on(read(&self.0, plugin))?;
        let mut out: Vec<Run> = doc.runs.into_values().flatten().collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.scheduled_ms));
        Ok(out)
    }

    fn put_spec(&self, plugin: &str, spec: &JobSpec) -> Result<bool, StoreError> {
        self.0.handle.block_on(modify(&self.0, plugin, |doc| {
            doc.specs.insert(spec.name.clone(), spec.clone()).is_none()
        }))
    }

    fn delete_spec(&self, plugin: &str, job: &str) -> Result<bool, StoreError> {
        self.0.handle.block_on(modify(&self.0, plugin, |doc| {
            doc.marks.remove(job);
            doc.runs.remove(job);
            doc.specs.remove(job).is_some()
        }))
    }

    fn forget(&self, plugin: &str) -> Result<(), StoreError> {
        match self.0.block(
            "deleting a plugin's jobs",
            self.0
                .configmaps()
                .delete(&name(plugin), &DeleteParams::default()),
        )? {
            Ok(_) => Ok(()),
            Err(e) if api_status(&e) == Some(404) => Ok(()),
            Err(e) => Err(failed(&name(plugin), e)),
        }
    }

    fn shared(&self) -> bool {
        true
    }
}
