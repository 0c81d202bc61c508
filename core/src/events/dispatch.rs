//! The dispatcher: delivers pending events to subscribing backends, at least once.
//!
//! It holds every pending delivery in memory (the outbox holds them on disk), one queue per
//! subscription. An ordered subscription keeps one sub-queue per source and sends only its
//! head, so a later event of a source waits while an earlier one is retried; others send up to
//! their window at once. A subscriber that is not Ready, or is disabled, gets nothing and
//! loses nothing: its deliveries wait, and when it becomes Ready again the waiting heads are
//! due at once. Outcomes follow `policy`; each is written to the outbox in its next batch.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::header;
use tokio::sync::{Notify, mpsc, watch};

use super::metrics::{EventsMetrics, PluginLabel};
use super::now_ms;
use super::outbox::{Outbox, Pending, Settle};
use super::policy::{self, Attempt, Limits, Next};
use super::subs::{SubKey, Table};
use crate::auth::Keys;
use crate::auth::call::{CallKind, CallTokens, OnBehalfOf};
use crate::registry::Registry;
use crate::sync::{lock, read};

/// One waiting delivery.
#[derive(Debug)]
struct Item {
    p: Pending,
    busy: bool,
}

/// One subscription's deliveries: by source when ordered, all under `""` otherwise.
#[derive(Debug, Default)]
pub(super) struct Queue {
    lanes: BTreeMap<String, VecDeque<Item>>,
    in_flight: u32,
}

impl Queue {
    fn push(&mut self, p: Pending, ordered: bool) {
        // Deliveries arrive in acceptance order (loaded at start, then as committed); a redriven
        // one joins the end, behind what waits, so a lane's head is always the one in flight.
        let lane = if ordered {
            p.source.clone()
        } else {
            String::new()
        };
        self.lanes
            .entry(lane)
            .or_default()
            .push_back(Item { p, busy: false });
    }

    fn remove(&mut self, id: i64) -> Option<Pending> {
        for lane in self.lanes.values_mut() {
            if let Some(at) = lane.iter().position(|i| i.p.id == id) {
                return lane.remove(at).map(|i| i.p);
            }
        }
        None
    }

    fn find(&mut self, id: i64) -> Option<&mut Item> {
        self.lanes
            .values_mut()
            .flat_map(|l| l.iter_mut())
            .find(|i| i.p.id == id)
    }

    /// Undelivered events and the acceptance time of the oldest.
    pub(super) fn backlog(&self) -> (u64, Option<i64>) {
        let n = self.lanes.values().map(|l| l.len() as u64).sum();
        let oldest = self
            .lanes
            .values()
            .filter_map(|l| l.front())
            .map(|i| i.p.accepted_ms)
            .min();
        (n, oldest)
    }

    /// Deliveries in flight.
    pub(super) fn in_flight(&self) -> u32 {
        self.in_flight
    }
}

/// The queues, shared with the admin view and the metrics.
pub(super) type Queues = Arc<Mutex<BTreeMap<SubKey, Queue>>>;

/// Adds a committed delivery to its subscription's queue.
pub(super) fn enqueue(queues: &Queues, table: &std::sync::RwLock<Table>, p: Pending) {
    let ordered = read(table).get(&p.sub).is_none_or(|s| s.ordered);
    lock(queues)
        .entry(p.sub.clone())
        .or_default()
        .push(p, ordered);
}

/// What the dispatcher needs.
pub(super) struct Dispatcher {
    pub(super) registry: Arc<Registry>,
    pub(super) table: Arc<std::sync::RwLock<Table>>,
    pub(super) outbox: Outbox,
    pub(super) queues: Queues,
    pub(super) keys: Arc<Keys>,
    pub(super) http: reqwest::Client,
    pub(super) limits: Limits,
    pub(super) metrics: EventsMetrics,
    pub(super) wake: Arc<Notify>,
}

/// A finished attempt.
struct Done {
    key: SubKey,
    id: i64,
    attempt: Attempt,
}

use crate::model::unit_random;

fn since_ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms().saturating_sub(ms)).unwrap_or(0))
}

impl Dispatcher {
    /// Runs until `shutdown` turns true, taking committed deliveries from `incoming`.
    pub(super) async fn run(
        self,
        mut incoming: mpsc::UnboundedReceiver<Pending>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let calls = Arc::new(CallTokens::default());
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut exposed: HashSet<String> = HashSet::new();
        loop {
            let next = self.start_due(&calls, &done_tx, &mut exposed);
            let sleep = tokio::time::sleep(next.unwrap_or(Duration::from_secs(1)));
            tokio::select! {
                Some(p) = incoming.recv() => {
                    self.enqueue(p);
                    while let Ok(p) = incoming.try_recv() {
                        self.enqueue(p);
                    }
                }
                Some(d) = done_rx.recv() => {
                    self.settle(d);
                    while let Ok(d) = done_rx.try_recv() {
                        self.settle(d);
                    }
                }
                () = self.wake.notified() => {}
                () = sleep => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    fn enqueue(&self, p: Pending) {
        enqueue(&self.queues, &self.table, p);
    }

    /// Starts every delivery that is due and allowed; returns how long until the next one is.
    fn start_due(
        &self,
        calls: &Arc<CallTokens>,
        done: &mpsc::UnboundedSender<Done>,
        exposed: &mut HashSet<String>,
    ) -> Option<Duration> {
        let index = self.registry.index();
        // Read-locked for the pass (lock order: table, then queues, as in `enqueue`).
        let table = read(&self.table);
        let now = now_ms();
        let mut soonest: Option<i64> = None;
        let mut queues = lock(&self.queues);
        let mut gone = Vec::new();
        let mut now_exposed = HashSet::new();
        for (key, q) in queues.iter_mut() {
            let Some(record) = index.get(&key.plugin) else {
                gone.push((
                    key.clone(),
                    format!("plugin \"{}\" was deleted", key.plugin),
                ));
                continue;
            };
            let Some(sub) = table.get(key) else {
                gone.push((
                    key.clone(),
                    format!(
                        "plugin \"{}\" no longer subscribes to \"{}\" at {}",
                        key.plugin, key.pattern, key.path
                    ),
                ));
                continue;
            };
            // Not Ready, or disabled: wait, without counting attempts.
            let Some(deployment) = record.exposed() else {
                continue;
            };
            now_exposed.insert(key.plugin.clone());
            let back = !exposed.contains(&key.plugin);
            let (ordered, window) = (sub.ordered, sub.window);
            let limit = if ordered { u32::MAX } else { window };
            let mut start = Vec::new();
            let mut in_flight = q.in_flight;
            for lane in q.lanes.values_mut() {
                for item in lane.iter_mut() {
                    if in_flight >= limit && !back {
                        break; // the window is full
                    }
                    if back && !item.busy {
                        // It came back: what waited for it is due now.
                        item.p.next_ms = item.p.next_ms.min(now);
                    }
                    if !item.busy {
                        if item.p.next_ms > now {
                            soonest =
                                Some(soonest.map_or(item.p.next_ms, |s| s.min(item.p.next_ms)));
                        } else if in_flight < limit {
                            item.busy = true;
                            in_flight += 1;
                            start.push(item.p.clone());
                        }
                    }
                    if ordered {
                        break; // a later event of this source waits for the head
                    }
                }
            }
            q.in_flight = in_flight;
            if start.is_empty() {
                continue;
            }
            // Where they go, read from the manifest only when something is sent.
            let url = crate::model::plugin_url(deployment, &key.path);
            for p in start {
                self.spawn(calls, done, key.clone(), url.clone(), p);
            }
        }
        // A subscription ends with its plugin, or when its manifest drops it; what waited for it
        // goes to the dead letters (an admin sees it, and can redrive it should it come back).
        for (key, reason) in gone {
            if let Some(q) = queues.remove(&key) {
                tracing::warn!(plugin = %key.plugin, subscription = %key.pattern, %reason, "undelivered events dead-lettered");
                for item in q.lanes.into_values().flatten() {
                    self.outbox.settle(Settle::Dead {
                        id: item.p.id,
                        attempts: item.p.attempts,
                        reason: reason.clone(),
                        at_ms: now,
                    });
                }
            }
        }
        *exposed = now_exposed;
        soonest.map(|s| Duration::from_millis(u64::try_from(s - now).unwrap_or(0).max(1)))
    }

    fn spawn(
        &self,
        calls: &Arc<CallTokens>,
        done: &mpsc::UnboundedSender<Done>,
        key: SubKey,
        url: String,
        p: Pending,
    ) {
        let http = self.http.clone();
        let keys = self.keys.clone();
        let calls = calls.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let attempt = deliver(
                &http,
                &keys,
                &calls,
                &key,
                &url,
                p.tenant.as_deref(),
                &p.envelope,
            )
            .await;
            let _ = done.send(Done {
                key,
                id: p.id,
                attempt,
            });
        });
    }

    fn settle(&self, d: Done) {
        let mut queues = lock(&self.queues);
        let Some(q) = queues.get_mut(&d.key) else {
            return;
        };
        q.in_flight = q.in_flight.saturating_sub(1);
        let Some(item) = q.find(d.id) else {
            return;
        };
        item.busy = false;
        let attempts = item.p.attempts + 1;
        let age = since_ms(item.p.accepted_ms);
        let label = PluginLabel {
            plugin: d.key.plugin.clone(),
        };
        match policy::next(&d.attempt, attempts, age, self.limits, unit_random()) {
            Next::Ack => {
                q.remove(d.id);
                self.outbox.settle(Settle::Ack(d.id));
                self.metrics.delivered.get_or_create(&label).inc();
                self.metrics
                    .delivery_seconds
                    .get_or_create(&label)
                    .observe(age.as_secs_f64());
            }
            Next::Retry(delay) => {
                let next_ms = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                item.p.attempts = attempts;
                item.p.next_ms = next_ms;
                tracing::info!(plugin = %d.key.plugin, subscription = %d.key.pattern, event = %item.p.ty,
                    attempts, retry_in_ms = delay.as_millis() as u64, why = %d.attempt.describe(), "event delivery failed; retrying");
                self.outbox.settle(Settle::Retry {
                    id: d.id,
                    attempts,
                    next_ms,
                    error: d.attempt.describe(),
                });
                self.metrics.retried.get_or_create(&label).inc();
            }
            Next::DeadLetter(reason) => {
                let ty = item.p.ty.clone();
                q.remove(d.id);
                tracing::warn!(plugin = %d.key.plugin, subscription = %d.key.pattern, event = %ty,
                    attempts, %reason, "event delivery dead-lettered");
                self.outbox.settle(Settle::Dead {
                    id: d.id,
                    attempts,
                    reason,
                    at_ms: now_ms(),
                });
                self.metrics.dead_lettered.get_or_create(&label).inc();
            }
        }
        drop(queues);
        self.wake.notify_one();
    }
}

/// One attempt: `POST` the envelope as structured CloudEvents JSON with a call token.
pub(super) async fn deliver(
    http: &reqwest::Client,
    keys: &Keys,
    calls: &CallTokens,
    key: &SubKey,
    url: &str,
    tenant: Option<&str>,
    envelope: &str,
) -> Attempt {
    let who = OnBehalfOf::core(tenant);
    let kind = match key.webhook_name() {
        Some(_) => CallKind::Webhook,
        None => CallKind::Event,
    };
    let token = match calls.token(keys, &key.plugin, &who, kind) {
        Ok(t) => t,
        Err(e) => return Attempt::Failed(format!("cannot sign a call token: {e}")),
    };
    let req = match key.webhook_name() {
        // A webhook's request goes on as the sender sent it (binary mode).
        Some(name) => match super::hooks::request(name, envelope) {
            Ok((headers, body)) => http.post(url).headers(headers).body(body),
            Err(why) => return Attempt::Failed(why),
        },
        None => http
            .post(url)
            .header(header::CONTENT_TYPE, "application/cloudevents+json")
            .body(envelope.to_string()),
    };
    let res = req
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await;
    match res {
        Ok(r) => Attempt::Status(r.status().as_u16()),
        Err(e) if e.is_timeout() => Attempt::Failed("the delivery timed out".into()),
        Err(e) => Attempt::Failed(format!(
            "the subscriber cannot be reached: {}",
            crate::error::source_chain(&e)
        )),
    }
}
