//! The writer: one thread that owns every change of plugin state.
//!
//! Commands are typed (one variant an operation, each with the reply its caller awaits). The
//! writer takes every command queued while the previous transaction ran, plans each in arrival
//! order against the batch's view of the records (the pure transitions of `tessera_lifecycle`;
//! planning changes nothing outside the batch, so a batch can be planned again), commits the
//! batch as one transaction, then swaps the index, tells the observers and answers. When the
//! store reports that another writer changed a record first, the record as it is now is
//! indexed and the whole batch is planned again on it.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tessera_lifecycle::claims::Claims;
use tessera_lifecycle::transition::{self, Step};
use tessera_lifecycle::{Actor, ProbeStats, Refusal, Registration, Round, Thresholds};
use tokio::sync::{mpsc, oneshot};

use super::observed::Observed;
use super::{Index, Observer, Registered, Registry};
use crate::error::{ApiError, Code};
use crate::model::{AuditEvent, IssuedToken, PluginRecord, now_rfc3339};
use crate::store::{Change, External, StoreError};
use crate::sync::write;

/// Most writes one transaction carries.
const MAX_BATCH: usize = 512;

/// How many times a batch is planned again after conflicting with another writer.
const CONFLICT_RETRIES: u32 = 8;

/// One operation on plugin state, with the slot its answer goes to.
pub(crate) enum Command {
    Register(Registration, Actor, Slot<Registered>),
    Disable(String, String, Actor, Slot<PluginRecord>),
    Enable(String, Actor, Slot<PluginRecord>),
    AcceptRemote(String, Actor, Slot<PluginRecord>),
    ReportUi(UiReport, Actor, Slot<()>),
    Install(Install, Actor, Slot<()>),
    Delete(String, Actor, Slot<()>),
    Revoke(String, Actor, Slot<()>),
    Issue(Box<IssuedToken>, Actor, Slot<()>),
    Note(Note, Actor, Slot<()>),
    Probe(Probe, Slot<()>),
    External(External, Slot<()>),
}

/// A shell's report of loading a plugin's UI.
pub(crate) struct UiReport {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) ok: bool,
    pub(crate) message: String,
}

/// An audit event of an action outside the lifecycle.
pub(crate) struct Note {
    pub(crate) action: String,
    pub(crate) plugin: Option<String>,
    pub(crate) reason: String,
}

/// A plugin the admin declared, listed until it registers.
pub(crate) struct Install {
    pub(crate) name: String,
    pub(crate) backend_url: String,
    pub(crate) why: String,
}

/// A probe round that may change a record.
pub(crate) struct Probe {
    pub(crate) name: String,
    pub(crate) round: Round,
    pub(crate) latency_ms: u64,
}

/// Where a command's answer goes: its caller, once the batch it was planned in is committed.
pub(crate) struct Slot<T> {
    reply: oneshot::Sender<Result<T, ApiError>>,
    planned: Option<Result<T, ApiError>>,
}

impl<T> From<oneshot::Sender<Result<T, ApiError>>> for Slot<T> {
    fn from(reply: oneshot::Sender<Result<T, ApiError>>) -> Slot<T> {
        Slot {
            reply,
            planned: None,
        }
    }
}

impl<T> Slot<T> {
    fn set(&mut self, planned: Result<T, Refusal>) {
        self.planned = Some(planned.map_err(ApiError::from));
    }

    fn fail(&mut self, e: ApiError) {
        self.planned = Some(Err(e));
    }

    /// Answers with what was planned, once the batch was committed (`Err`: it was not).
    fn answer(self, committed: Result<(), &str>) {
        let answer = match (self.planned, committed) {
            (Some(Err(refused)), _) => Err(refused),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (Some(Ok(_)), Err(why)) => Err(ApiError::store(why)),
            (None, _) => Err(ApiError::new(Code::Internal, "the write was not planned")),
        };
        let _ = self.reply.send(answer);
    }
}

/// Runs `$body` with the command's slot, whatever its answer type.
macro_rules! with_slot {
    ($command:expr, $slot:ident => $body:expr) => {
        match $command {
            Command::Register(.., $slot) => $body,
            Command::Disable(.., $slot) => $body,
            Command::Enable(.., $slot) => $body,
            Command::AcceptRemote(.., $slot) => $body,
            Command::ReportUi(.., $slot) => $body,
            Command::Install(.., $slot) => $body,
            Command::Delete(.., $slot) => $body,
            Command::Revoke(.., $slot) => $body,
            Command::Issue(.., $slot) => $body,
            Command::Note(.., $slot) => $body,
            Command::Probe(.., $slot) => $body,
            Command::External(.., $slot) => $body,
        }
    };
}

impl Command {
    /// Plans the command into the batch (its answer is kept until the batch commits).
    fn plan(&mut self, p: &mut Planner<'_>) {
        match self {
            Command::Register(reg, actor, slot) => slot.set(p.register(reg, actor)),
            Command::Disable(name, reason, actor, slot) => slot.set(p.edit(name, |rec, now| {
                Some(transition::disable(rec, reason, actor, now))
            })),
            Command::Enable(name, actor, slot) => {
                slot.set(p.edit(name, |rec, now| transition::enable(rec, actor, now)))
            }
            Command::AcceptRemote(name, actor, slot) => {
                slot.set(p.edit(name, |rec, now| transition::accept_remote(rec, actor, now)))
            }
            Command::ReportUi(r, actor, slot) => slot.set(
                p.edit(&r.name, |rec, now| {
                    transition::report_ui(rec, &r.version, r.ok, &r.message, actor, now)
                })
                .map(|_| ()),
            ),
            Command::Install(i, actor, slot) => slot.set(p.install(i, actor)),
            Command::Delete(name, actor, slot) => slot.set(p.delete(name, actor)),
            Command::Revoke(jti, actor, slot) => {
                let event = transition::revoke(jti, actor, p.now);
                p.batch.changes.push(Change::Revoke {
                    jti: jti.clone(),
                    at: p.now.to_string(),
                });
                p.batch.audit(vec![event]);
                p.batch.revoked.push(jti.clone());
                slot.set(Ok(()));
            }
            Command::Issue(token, actor, slot) => {
                let event = transition::issue(token, actor, p.now);
                p.batch.changes.push(Change::Issue(token.clone()));
                p.batch.audit(vec![event]);
                slot.set(Ok(()));
            }
            Command::Note(n, actor, slot) => {
                let event = transition::note(
                    actor,
                    &n.action,
                    n.plugin.as_deref(),
                    n.reason.clone(),
                    p.now,
                );
                p.batch.audit(vec![event]);
                slot.set(Ok(()));
            }
            Command::Probe(probe, slot) => {
                p.probe(probe);
                slot.set(Ok(()));
            }
            Command::External(change, slot) => {
                p.external(change);
                slot.set(Ok(()));
            }
        }
    }
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
    /// Probe counters as this batch leaves them (`None`: reset).
    stats: HashMap<String, Option<ProbeStats>>,
    /// An admin decision is in the batch: observers show it at once, not paced.
    urgent: bool,
}

impl Batch {
    fn audit(&mut self, events: Vec<AuditEvent>) {
        self.urgent |= events.iter().any(|e| e.actor.starts_with("admin:"));
        self.changes.extend(events.into_iter().map(Change::Audit));
    }
}

/// Plans commands against the committed index plus the batch so far.
struct Planner<'a> {
    index: &'a Index,
    claims: &'a mut Claims,
    observed: &'a Observed,
    thresholds: Thresholds,
    now: &'a str,
    batch: Batch,
}

impl Planner<'_> {
    /// A record as the commands planned so far leave it.
    fn get(&self, name: &str) -> Option<PluginRecord> {
        match self.batch.touched.get(name) {
            Some(r) => r.clone(),
            None => self.index.get(name).cloned(),
        }
    }

    fn put(&mut self, step: Step) {
        // Claims are taken at once, so the next registration in this batch sees them.
        self.claims.update(&step.record);
        if step.reset_probes {
            self.batch.stats.insert(step.record.name.clone(), None);
        }
        self.batch
            .changes
            .push(Change::Put(Box::new(step.record.clone())));
        self.batch.audit(step.events);
        self.batch
            .touched
            .insert(step.record.name.clone(), Some(step.record));
    }

    fn register(&mut self, reg: &Registration, actor: &Actor) -> Result<Registered, Refusal> {
        let existing = self.get(&reg.name);
        transition::check_claims(self.claims, reg, |owner| {
            self.get(owner).map(|r| r.current.version)
        })?;
        match (
            transition::register(existing.clone(), reg, actor, self.now),
            existing,
        ) {
            (Some(step), _) => {
                let record = step.record.clone();
                self.put(step);
                Ok(Registered {
                    record,
                    changed: true,
                })
            }
            (None, Some(record)) => Ok(Registered {
                record,
                changed: false,
            }),
            (None, None) => Err(Refusal::NotFound {
                name: reg.name.clone(),
            }),
        }
    }

    /// Changes one existing record as `change` says; `None` from it means nothing changed.
    fn edit(
        &mut self,
        name: &str,
        change: impl FnOnce(PluginRecord, &str) -> Option<Step>,
    ) -> Result<PluginRecord, Refusal> {
        let rec = self.get(name).ok_or_else(|| Refusal::NotFound {
            name: name.to_string(),
        })?;
        match change(rec.clone(), self.now) {
            Some(step) => {
                let record = step.record.clone();
                self.put(step);
                Ok(record)
            }
            None => Ok(rec),
        }
    }

    fn install(&mut self, i: &Install, actor: &Actor) -> Result<(), Refusal> {
        let existing = self.get(&i.name);
        if let Some(step) =
            transition::install(existing, &i.name, &i.backend_url, &i.why, actor, self.now)?
        {
            self.put(step);
        }
        Ok(())
    }

    fn delete(&mut self, name: &str, actor: &Actor) -> Result<(), Refusal> {
        if self.get(name).is_none() {
            return Err(Refusal::NotFound {
                name: name.to_string(),
            });
        }
        self.claims.remove(name);
        self.batch.changes.push(Change::Delete(name.to_string()));
        self.batch
            .audit(vec![transition::delete(name, actor, self.now)]);
        self.batch.touched.insert(name.to_string(), None);
        Ok(())
    }

    fn probe(&mut self, probe: &Probe) {
        let Some(rec) = self.get(&probe.name) else {
            return;
        };
        if !transition::probe_applies(&rec, &probe.round) {
            return; // a stale round, or a plugin the prober must leave alone
        }
        let before = match self.batch.stats.get(&probe.name) {
            Some(s) => s.clone().unwrap_or_default(),
            None => self.observed.stats(&probe.name),
        };
        let stats = before.count(&probe.round, probe.latency_ms, self.now);
        self.batch
            .stats
            .insert(probe.name.clone(), Some(stats.clone()));
        if let Some(step) = transition::probe(rec, &probe.round, &stats, self.thresholds, self.now)
        {
            self.put(step);
        }
    }

    fn external(&mut self, change: &External) {
        match change {
            External::Record {
                name,
                record,
                newer,
            } => {
                if let Some(record) = transition::external(record.as_deref().cloned(), newer()) {
                    match &record {
                        Some(r) => self.claims.update(r),
                        None => self.claims.remove(name),
                    }
                    self.batch.touched.insert(name.clone(), record);
                }
            }
            External::Present { names, forget } => {
                let gone: Vec<String> = self
                    .index
                    .records()
                    .map(|r| r.name.clone())
                    .filter(|n| !names.contains(n))
                    .collect();
                for name in gone {
                    forget(&name);
                    self.claims.remove(&name);
                    self.batch.touched.insert(name, None);
                }
            }
            External::Revoked(jtis) => self.batch.revoked.extend(jtis.iter().cloned()),
        }
    }
}

/// The writer thread's state.
pub(super) struct Writer {
    registry: Weak<Registry>,
    /// Panel ids and route paths held by enabled plugins; only the writer reads or changes it.
    claims: Claims,
    observers: Vec<Arc<dyn Observer>>,
}

impl Writer {
    pub(super) fn new(
        registry: Weak<Registry>,
        claims: Claims,
        observers: Vec<Arc<dyn Observer>>,
    ) -> Writer {
        Writer {
            registry,
            claims,
            observers,
        }
    }

    /// Takes every command queued while the previous transaction ran and commits them as one;
    /// stops once the registry is dropped.
    pub(super) fn run(mut self, mut queued: mpsc::UnboundedReceiver<Command>) {
        while let Some(first) = queued.blocking_recv() {
            let Some(registry) = self.registry.upgrade() else {
                return;
            };
            let max = registry.store.max_batch().clamp(1, MAX_BATCH);
            let mut commands = vec![first];
            while commands.len() < max {
                match queued.try_recv() {
                    Ok(c) => commands.push(c),
                    Err(_) => break,
                }
            }
            self.run_batch(&registry, commands);
        }
    }

    fn run_batch(&mut self, registry: &Registry, mut commands: Vec<Command>) {
        let mut attempt = 0;
        loop {
            let index = registry.index();
            let now = now_rfc3339();
            let mut p = Planner {
                index: &index,
                claims: &mut self.claims,
                observed: &registry.observed,
                thresholds: registry.thresholds,
                now: &now,
                batch: Batch::default(),
            };
            for c in commands.iter_mut() {
                // A plan that panics fails its own write, not the writer.
                let planned =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.plan(&mut p)));
                if planned.is_err() {
                    tracing::error!("a write panicked while being planned");
                    with_slot!(c, slot => slot.fail(ApiError::new(Code::Internal, "the write failed unexpectedly")));
                }
            }
            let batch = p.batch;
            let committed = if batch.changes.is_empty() {
                Ok(())
            } else {
                registry.store.commit(&batch.changes)
            };
            match committed {
                Ok(()) => {
                    for c in &batch.changes {
                        if let Change::Audit(e) = c {
                            tracing::info!(plugin = e.plugin.as_deref().unwrap_or(""), actor = %e.actor, action = %e.action, reason = %e.reason, request_id = e.request_id.as_deref().unwrap_or(""), "audit");
                        }
                    }
                    self.index_committed(registry, batch);
                    for c in commands {
                        with_slot!(c, slot => slot.answer(Ok(())));
                    }
                    return;
                }
                Err(StoreError::Conflict { name, current }) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::info!(plugin = %name, attempt, "record changed by another writer; planning the write again");
                    let current = Batch {
                        touched: HashMap::from([(name, current.map(|c| *c))]),
                        ..Batch::default()
                    };
                    self.index_committed(registry, current);
                    self.claims = Claims::build(registry.index().records());
                }
                Err(e) => {
                    // Claims were taken as the batch was planned; nothing of it happened.
                    self.claims = Claims::build(registry.index().records());
                    let why = e.to_string();
                    for c in commands {
                        with_slot!(c, slot => slot.answer(Err(&why)));
                    }
                    return;
                }
            }
        }
    }

    /// Puts a committed batch into the index and the observed figures, then tells the
    /// observers (before anyone is answered).
    fn index_committed(&self, registry: &Registry, batch: Batch) {
        let Batch {
            touched,
            revoked,
            stats,
            urgent,
            ..
        } = batch;
        for (name, s) in stats {
            match s {
                Some(s) => registry.observed.set_stats(&name, s),
                None => registry.observed.reset_stats(&name),
            }
        }
        if touched.is_empty() && revoked.is_empty() {
            return;
        }
        for (name, rec) in &touched {
            let keep = rec.as_ref().map(|r| {
                [
                    Some(r.current.version.as_str()),
                    r.serving.as_ref().map(|s| s.version.as_str()),
                ]
            });
            registry.observed.retain(name, keep);
        }
        let names: Vec<String> = touched.keys().cloned().collect();
        let index = {
            let mut held = write(&registry.index);
            // In place while no reader holds the snapshot; a copy of the pointers otherwise.
            Arc::make_mut(&mut held).apply(touched, revoked);
            held.clone()
        };
        for o in &self.observers {
            o.committed(&index, &names, urgent);
        }
    }
}
