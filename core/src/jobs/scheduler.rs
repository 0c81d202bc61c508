//! The one scheduler: runs on the replica that leads (the Lease holder; the process on SQLite).
//! It owns the jobs' slots (spec, schedule, mark, runs in progress) on one task; run calls are
//! tasks of their own that report back when they end.
//!
//! Each pass: for every job, the scheduled times after its mark up to now are decided
//! (`plan::decide`), recorded with [`JobStore::begin`] in one write, and only then called. A
//! time the store refuses (its mark moved: another scheduler decided it) is not called.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tessera_sdk::jobs::{Concurrency, Schedule};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use super::call;
use super::metrics::{JobsMetrics, PluginLabel, RunLabels};
use super::model::{HISTORY, Job, Outcome, Run, Trigger};
use super::plan::{self, Decision, Facts};
use super::recorder::Recorder;
use super::{JobsError, Shared, now_ms};
use crate::auth::Keys;
use crate::auth::call::CallTokens;
use crate::registry::Registry;
use crate::store::jobs::{Begun, JobStore};

/// A job's identity: (plugin, job).
pub(super) type Key = (String, String);

/// What the scheduler is told.
pub(super) enum Msg {
    /// The jobs of these plugins changed (a manifest, or a spec registered at run time).
    Changed(Vec<String>),
    /// A run ended.
    Done(Box<Run>),
    /// An admin asks for a run now.
    Manual {
        plugin: String,
        job: String,
        actor: String,
        reply: oneshot::Sender<Result<Run, JobsError>>,
    },
}

struct Active {
    run: Run,
    abort: AbortHandle,
}

struct Slot {
    job: Job,
    schedule: Schedule,
    /// Newest scheduled time decided.
    mark_ms: i64,
    /// The first scheduled time after the mark (kept with it: a pass looks only at due slots).
    next_ms: Option<i64>,
    /// Its next time waits for a running call to end (woken by the end, not the clock).
    waiting: bool,
    running: Vec<Active>,
}

impl Slot {
    fn new(job: Job, schedule: Schedule, mark_ms: i64) -> Slot {
        let mut slot = Slot {
            job,
            schedule,
            mark_ms,
            next_ms: None,
            waiting: false,
            running: Vec::new(),
        };
        slot.set_mark(mark_ms);
        slot
    }

    fn set_mark(&mut self, mark_ms: i64) {
        self.mark_ms = mark_ms;
        self.next_ms = self.schedule.next_after(mark_ms);
    }

    /// When the scheduler should look at this job again (`None`: on a call's end).
    fn wake(&self) -> Option<i64> {
        if self.waiting { None } else { self.next_ms }
    }
}

/// The scheduler's parts.
pub(super) struct Scheduler {
    pub(super) shared: Arc<Shared>,
    pub(super) registry: Arc<Registry>,
    pub(super) keys: Arc<Keys>,
    pub(super) http: reqwest::Client,
    pub(super) metrics: JobsMetrics,
    pub(super) tx: mpsc::UnboundedSender<Msg>,
}

/// How often a leader sharing its store with other replicas reads specs and manual runs they
/// wrote.
const REFRESH: Duration = Duration::from_secs(2);

impl Scheduler {
    /// Reads the specs registered at run time (at start, and on a follower now and then).
    pub(super) async fn reload(&self) {
        let shared = self.shared.clone();
        match tokio::task::spawn_blocking(move || shared.store.load()).await {
            Ok(Ok(stored)) => self.shared.set_runtime(stored.specs),
            Ok(Err(e)) => tracing::warn!(error = %e, "jobs: cannot read the job store"),
            Err(e) => tracing::warn!(error = %e, "jobs: cannot read the job store"),
        }
        self.metrics.scheduled.set(self.shared.jobs().len() as i64);
    }

    /// Runs until shutdown: schedules while `leading`, idles otherwise.
    pub(super) async fn run(
        self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        mut leading: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let calls = Arc::new(CallTokens::default());
        let recorder = Recorder::start(self.shared.store.clone());
        loop {
            // Followers answer manual runs through the store (the API does); anything sent
            // here meanwhile is stale.
            while !*leading.borrow() {
                tokio::select! {
                    r = leading.changed() => if r.is_err() { return },
                    // Specs other replicas registered, for this one's API.
                    _ = tokio::time::sleep(REFRESH), if self.shared.store.shared() => self.reload().await,
                    _ = shutdown.changed() => return,
                    m = rx.recv() => match m {
                        Some(Msg::Manual { reply, .. }) => { let _ = reply.send(Err(JobsError::NotScheduling)); }
                        Some(_) => {}
                        None => return,
                    },
                }
            }
            let mut pass = Pass {
                s: &self,
                recorder: &recorder,
                calls: calls.clone(),
                slots: BTreeMap::new(),
                marks: HashMap::new(),
                took_over_ms: now_ms(),
            };
            if let Err(e) = pass.take_over().await {
                tracing::warn!(error = %e, "jobs: cannot read the job store; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
            self.metrics.scheduling.set(1);
            tracing::info!(jobs = pass.slots.len(), "jobs: this replica schedules");
            let mut refreshed = tokio::time::Instant::now();
            let stop = loop {
                let wake = pass.tick().await;
                let sleep = wake
                    .map(|at| Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)))
                    .unwrap_or(Duration::from_secs(60));
                let sleep = if self.shared.store.shared() {
                    sleep.min(REFRESH)
                } else {
                    sleep
                };
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => pass.handle(m).await,
                        None => break true,
                    },
                    _ = tokio::time::sleep(sleep) => {}
                    r = leading.changed() => if r.is_err() || !*leading.borrow() { break false },
                    _ = shutdown.changed() => break true,
                }
                // Drain what else arrived, so a burst of ends is one pass.
                while let Ok(m) = rx.try_recv() {
                    pass.handle(m).await;
                }
                if self.shared.store.shared() && refreshed.elapsed() >= REFRESH {
                    refreshed = tokio::time::Instant::now();
                    pass.refresh().await;
                }
            };
            self.metrics.scheduling.set(0);
            pass.stop(stop).await;
            if stop {
                return;
            }
            tracing::info!("jobs: this replica no longer schedules");
        }
    }
}

/// One stretch of leadership.
struct Pass<'a> {
    s: &'a Scheduler,
    recorder: &'a Recorder,
    calls: Arc<CallTokens>,
    /// By (plugin, job): a plugin's jobs are one range.
    slots: BTreeMap<Key, Slot>,
    /// Marks as the store had them at take-over (for jobs seen later).
    marks: HashMap<Key, i64>,
    took_over_ms: i64,
}

impl Pass<'_> {
    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn JobStore) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let shared = self.s.shared.clone();
        tokio::task::spawn_blocking(move || f(shared.store.as_ref()).map_err(|e| e.to_string()))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Reads the store: marks, specs registered at run time, runs a previous scheduler left
    /// open (recorded Interrupted: not run again) and manual runs asked for meanwhile.
    async fn take_over(&mut self) -> Result<(), String> {
        let stored = self.store(|s| s.load()).await?;
        self.s.shared.set_runtime(stored.specs);
        self.marks = stored.marks;
        self.sync_slots(None);
        let now = now_ms();
        let mut interrupted = Vec::new();
        let mut pending = Vec::new();
        for mut run in stored.open {
            if run.outcome == Outcome::Pending {
                pending.push(run);
                continue;
            }
            run.outcome = Outcome::Interrupted;
            run.finished_ms = Some(now);
            run.message = Some(
                "the scheduler running it stopped before it ended (a restart or a failover); not run again".into(),
            );
            interrupted.push(run);
        }
        for r in &interrupted {
            self.count(r);
        }
        if !interrupted.is_empty() {
            tracing::warn!(
                runs = interrupted.len(),
                "jobs: runs left open by a previous scheduler recorded as Interrupted"
            );
            self.store(move |s| s.update(&interrupted)).await?;
        }
        self.start_pending(pending).await;
        Ok(())
    }

    /// With other replicas: specs they registered and manual runs they were asked for.
    async fn refresh(&mut self) {
        match self.store(|s| s.load()).await {
            Ok(stored) => {
                self.s.shared.set_runtime(stored.specs);
                self.sync_slots(None);
                let pending = stored
                    .open
                    .into_iter()
                    .filter(|r| r.outcome == Outcome::Pending)
                    .collect();
                self.start_pending(pending).await;
            }
            Err(e) => tracing::warn!(error = %e, "jobs: cannot refresh from the job store"),
        }
    }

    async fn start_pending(&mut self, pending: Vec<Run>) {
        for mut run in pending {
            let key = (run.plugin.clone(), run.job.clone());
            let now = now_ms();
            let exposed = self.exposure(&run.plugin);
            let Some(slot) = self.slots.get(&key) else {
                run.outcome = Outcome::Skipped;
                run.finished_ms = Some(now);
                run.message = Some("the job no longer exists".into());
                self.finish(run);
                continue;
            };
            if let Err(why) = exposed {
                run.outcome = Outcome::Skipped;
                run.finished_ms = Some(now);
                run.message = Some(why);
                self.finish(run);
                continue;
            }
            if !slot.running.is_empty() && slot.job.spec.concurrency == Concurrency::Forbid {
                run.outcome = Outcome::Skipped;
                run.finished_ms = Some(now);
                run.message = Some("an earlier run is still running (concurrency Forbid)".into());
                self.finish(run);
                continue;
            }
            run.outcome = Outcome::Running;
            run.started_ms = Some(now);
            let r = run.clone();
            if self.store(move |s| s.update(&[r])).await.is_ok() {
                self.launch(run, slot.job.spec.concurrency == Concurrency::Replace);
            }
        }
    }

    /// Makes the slots of `plugins` (`None`: all) match the jobs that exist now.
    fn sync_slots(&mut self, plugins: Option<&[String]>) {
        let jobs = match plugins {
            None => self.s.shared.jobs(),
            Some(names) => names
                .iter()
                .flat_map(|p| self.s.shared.jobs_of(p))
                .collect(),
        };
        let now = now_ms();
        let mut seen = std::collections::HashSet::new();
        for job in jobs {
            let key = (job.plugin.clone(), job.spec.name.clone());
            seen.insert(key.clone());
            match self.slots.get_mut(&key) {
                Some(slot) if slot.job == job => {}
                Some(slot) => {
                    if let Ok(schedule) = Schedule::parse(&job.spec.schedule) {
                        slot.schedule = schedule;
                        slot.job = job;
                        slot.set_mark(slot.mark_ms);
                    }
                }
                None => {
                    let Ok(schedule) = Schedule::parse(&job.spec.schedule) else {
                        tracing::warn!(plugin = %job.plugin, job = %job.spec.name, "jobs: a stored schedule does not parse; not scheduled");
                        continue;
                    };
                    // A job never decided before starts from now: its first time is the next.
                    let mark_ms = self.marks.get(&key).copied().unwrap_or(now);
                    self.slots.insert(key, Slot::new(job, schedule, mark_ms));
                }
            }
        }
        // A job that is gone is no longer scheduled; a call in progress ends on its own.
        let gone: Vec<Key> = match plugins {
            None => self
                .slots
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect(),
            Some(names) => names
                .iter()
                .flat_map(|p| {
                    self.slots
                        .range((p.clone(), String::new())..)
                        .take_while(move |(k, _)| k.0 == *p)
                        .map(|(k, _)| k.clone())
                })
                .filter(|k| !seen.contains(k))
                .collect(),
        };
        for key in gone {
            if let Some(slot) = self.slots.remove(&key) {
                for a in &slot.running {
                    a.abort.abort();
                }
            }
        }
        self.s.metrics.scheduled.set(self.slots.len() as i64);
    }

    /// `Err(why)` unless the plugin is Ready and enabled.
    fn exposure(&self, plugin: &str) -> Result<(), String> {
        let index = self.s.registry.index();
        match index.get(plugin) {
            None => Err("the plugin is not registered".into()),
            Some(r) if r.disabled.is_some() => Err("the plugin is disabled".into()),
            Some(r) if r.exposed().is_none() => {
                Err(format!("the plugin is {}, not Ready", r.state.as_str()))
            }
            Some(_) => Ok(()),
        }
    }

    /// Decides every due time, records the decisions in one write, then starts the calls.
    /// Answers when the next time is due.
    async fn tick(&mut self) -> Option<i64> {
        let now = now_ms();
        let mut records: Vec<Run> = Vec::new();
        let mut starts: Vec<(Key, bool)> = Vec::new(); // (key, replace) by index in `records`
        let mut start_at: Vec<usize> = Vec::new();
        // Only the jobs with a time due (a pass with nothing due is a scan of numbers). A time
        // is decided, recorded and called at that time, never ahead of it: a run recorded but
        // not yet called when its scheduler dies would be lost (recorded, so never run again).
        let horizon = now;
        let due: Vec<Key> = self
            .slots
            .iter()
            .filter(|(_, s)| s.next_ms.is_some_and(|n| n <= horizon))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let exposed = self.exposure(&key.0);
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            slot.waiting = false;
            let (times, dropped) = plan::due_times(&slot.schedule, slot.mark_ms, horizon);
            if times.is_empty() {
                continue;
            }
            let mut running = slot.running.len();
            let deadline_ms = i64::from(slot.job.spec.starting_deadline_seconds) * 1000;
            // Misses are the oldest times; after a long outage of a frequent job only the
            // newest are kept, the first of them saying how many more there were.
            let misses = times
                .iter()
                .take_while(|&&at| now - at > deadline_ms)
                .count();
            let unrecorded = misses.saturating_sub(HISTORY);
            for (i, at) in times.into_iter().enumerate() {
                let facts = Facts {
                    at_ms: at,
                    now_ms: now,
                    deadline_ms,
                    took_over_ms: self.took_over_ms,
                    exposed: exposed.as_ref().map(|_| ()).map_err(String::as_str),
                    running,
                    concurrency: slot.job.spec.concurrency,
                };
                let plugin = &slot.job.plugin;
                let name = &slot.job.spec.name;
                match plan::decide(facts) {
                    Decision::Wait => {
                        slot.waiting = true;
                        break;
                    }
                    Decision::Miss(_) if i < unrecorded => {}
                    Decision::Miss(why) => {
                        let extra = unrecorded as u64 + dropped;
                        let why = if i == unrecorded && extra > 0 {
                            format!("{why}; {extra} earlier scheduled times were missed too")
                        } else {
                            why
                        };
                        records.push(Run::not_run(plugin, name, at, Outcome::Missed, why, now))
                    }
                    Decision::Skip(why) => {
                        records.push(Run::not_run(plugin, name, at, Outcome::Skipped, why, now))
                    }
                    d @ (Decision::Start | Decision::Replace) => {
                        let replace = d == Decision::Replace;
                        if replace {
                            running = 0;
                        }
                        running += 1;
                        start_at.push(records.len());
                        starts.push((key.clone(), replace));
                        records.push(Run {
                            id: Run::scheduled_id(name, at),
                            plugin: plugin.clone(),
                            job: name.clone(),
                            trigger: Trigger::Schedule,
                            scheduled_ms: at,
                            started_ms: Some(now),
                            finished_ms: None,
                            outcome: Outcome::Running,
                            status: None,
                            attempt: 0,
                            message: None,
                            body: None,
                            actor: None,
                        });
                    }
                }
                slot.set_mark(at);
            }
        }
        let mut retry = false;
        if !records.is_empty() {
            let batch = records.clone();
            let begun = match self.store(move |s| s.begin(&batch)).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "jobs: cannot record runs; retrying");
                    vec![Begun::Failed; records.len()]
                }
            };
            let mut replace = vec![false; records.len()];
            for ((_, r), i) in starts.iter().zip(&start_at) {
                replace[*i] = *r;
            }
            let mut launch = std::collections::HashSet::new();
            launch.extend(start_at.iter().copied());
            for (i, run) in records.iter().enumerate() {
                match begun.get(i).copied().unwrap_or(Begun::Failed) {
                    Begun::Recorded if launch.contains(&i) => {
                        self.launch(run.clone(), replace[i]);
                    }
                    Begun::Recorded => self.count(run),
                    Begun::Decided => {
                        tracing::info!(plugin = %run.plugin, job = %run.job, run = %run.id, "jobs: scheduled time already decided elsewhere; not run");
                    }
                    Begun::Failed => {
                        // Not written, so not called: decided again on the next pass (and
                        // missed if that is past its deadline).
                        retry = true;
                        if let Some(slot) =
                            self.slots.get_mut(&(run.plugin.clone(), run.job.clone()))
                        {
                            let mark = slot.mark_ms.min(run.scheduled_ms - 1);
                            slot.set_mark(mark);
                        }
                    }
                }
            }
        }
        if retry {
            return Some(now + 1000);
        }
        self.slots.values().filter_map(Slot::wake).min()
    }

    /// Calls the plugin for a recorded run (cancelling the running ones first under Replace).
    fn launch(&mut self, run: Run, replace: bool) {
        let key = (run.plugin.clone(), run.job.clone());
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        if replace {
            let now = now_ms();
            let replaced: Vec<Run> = slot
                .running
                .drain(..)
                .map(|a| {
                    a.abort.abort();
                    let mut r = a.run;
                    r.outcome = Outcome::Replaced;
                    r.finished_ms = Some(now);
                    r.message = Some(format!("cancelled by run {} (concurrency Replace)", run.id));
                    r
                })
                .collect();
            for r in replaced {
                self.finish(r);
            }
        }
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        let index = self.s.registry.index();
        let Some(url) = index
            .get(&run.plugin)
            .and_then(|r| r.exposed())
            .map(|d| crate::model::plugin_url(d, &slot.job.spec.path))
        else {
            let mut r = run;
            r.outcome = Outcome::Skipped;
            r.finished_ms = Some(now_ms());
            r.message = Some("the plugin is no longer Ready".into());
            self.finish(r);
            return;
        };
        let who = call::Caller {
            http: self.s.http.clone(),
            keys: self.s.keys.clone(),
            calls: self.calls.clone(),
            lateness: self.s.metrics.lateness.clone(),
        };
        let (spec, tx, r) = (slot.job.spec.clone(), self.s.tx.clone(), run.clone());
        let task = tokio::spawn(async move {
            let ended = who.run(url, spec, r).await;
            let _ = tx.send(Msg::Done(Box::new(ended)));
        });
        slot.running.push(Active {
            run,
            abort: task.abort_handle(),
        });
    }

    async fn handle(&mut self, m: Msg) {
        match m {
            Msg::Changed(plugins) => self.sync_slots(Some(&plugins)),
            Msg::Done(run) => {
                let key = (run.plugin.clone(), run.job.clone());
                let Some(slot) = self.slots.get_mut(&key) else {
                    self.finish(*run);
                    return;
                };
                let before = slot.running.len();
                slot.running.retain(|a| a.run.id != run.id);
                // Replaced (or stepped down) meanwhile: already recorded.
                if slot.running.len() < before {
                    self.finish(*run);
                }
            }
            Msg::Manual {
                plugin,
                job,
                actor,
                reply,
            } => {
                let _ = reply.send(self.manual(plugin, job, actor).await);
            }
        }
    }

    async fn manual(
        &mut self,
        plugin: String,
        job: String,
        actor: String,
    ) -> Result<Run, JobsError> {
        let key = (plugin.clone(), job.clone());
        let slot = self.slots.get(&key).ok_or(JobsError::NoSuchJob)?;
        if let Err(why) = self.exposure(&plugin) {
            return Err(JobsError::NotReady(why));
        }
        let concurrency = slot.job.spec.concurrency;
        if concurrency == Concurrency::Forbid
            && let Some(a) = slot.running.first()
        {
            return Err(JobsError::Running(a.run.id.clone()));
        }
        let now = now_ms();
        let run = super::manual_run(&plugin, &job, &actor, now, Outcome::Running);
        let r = run.clone();
        match self.store(move |s| s.begin(&[r])).await {
            Ok(b) if b.first() == Some(&Begun::Recorded) => {}
            Ok(_) => return Err(JobsError::Store("the run was not recorded".into())),
            Err(e) => return Err(JobsError::Store(e)),
        }
        self.launch(run.clone(), concurrency == Concurrency::Replace);
        Ok(run)
    }

    /// Records a run's end (off the scheduler's task) and counts it.
    fn finish(&self, run: Run) {
        self.count(&run);
        if let (Some(s), Some(f)) = (run.started_ms, run.finished_ms) {
            self.s
                .metrics
                .duration
                .get_or_create(&PluginLabel {
                    plugin: run.plugin.clone(),
                })
                .observe((f - s).max(0) as f64 / 1000.0);
        }
        self.recorder.record(run);
    }

    fn count(&self, run: &Run) {
        if run.outcome.is_final() {
            self.s
                .metrics
                .runs
                .get_or_create(&RunLabels {
                    plugin: run.plugin.clone(),
                    job: run.job.clone(),
                    outcome: run.outcome.as_str().to_string(),
                })
                .inc();
        }
    }

    /// Leadership ended (`shutdown`: the process stops). Calls in progress are cancelled; at
    /// shutdown they are recorded Interrupted here, otherwise by the next leader.
    async fn stop(&mut self, shutdown: bool) {
        let now = now_ms();
        let mut ended = Vec::new();
        for slot in self.slots.values_mut() {
            for a in slot.running.drain(..) {
                a.abort.abort();
                let mut r = a.run;
                r.outcome = Outcome::Interrupted;
                r.finished_ms = Some(now);
                r.message = Some("the core stopped while it ran; not run again".into());
                ended.push(r);
            }
        }
        if shutdown {
            for r in ended {
                self.finish(r);
            }
        }
        self.recorder.flush().await;
    }
}
