//! Events between plugins: publish (`POST /api/plugin/v1/events`), declared subscriptions,
//! at-least-once delivery to backends and live delivery to shells.
//!
//! ```text
//!  publish ─▶ envelope (checked, CloudEvents 1.0) ─▶ subs::Table (who matches)
//!          ─▶ outbox (group commit: event + one delivery per subscription) ─▶ 202
//!                      │ committed deliveries, in acceptance order
//!                      ▼
//!               dispatch (queues per subscription; policy decides ack/retry/dead letter)
//!          ─▶ shell feed (subscribing UIs, filtered by tenant in the shell's stream)
//! ```
//!
//! `envelope`, `policy` and `subs` are pure; `outbox` owns the SQLite connection; `dispatch`
//! owns the HTTP calls. With `events.nats.url`, `jetstream` takes the place of the outbox and
//! the dispatcher: one stream and a durable consumer per subscription that every replica shares.

pub mod dispatch;
pub mod envelope;
pub mod hooks;
pub mod jetstream;
pub mod metrics;
pub mod outbox;
pub mod policy;
pub mod subs;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, broadcast, mpsc, watch};

use crate::auth::Keys;
use crate::registry::{Index, Observer, Registry};
use crate::sync::{lock, read, write};
use dispatch::{Dispatcher, Queues};
use metrics::{EventsMetrics, PluginLabel};
use outbox::{DeadLetter, DeadQuery, Outbox, Published};
use subs::{SubKey, Table};

pub use crate::model::now_ms;

/// How long accepted events are remembered after their acceptance, once nothing waits for them
/// (a publisher repeating an id within it is answered with the first acceptance).
const REMEMBER: Duration = Duration::from_secs(24 * 3600);

/// An event for the shells: the subscribing plugins and the SSE frame that carries it.
#[derive(Debug)]
pub struct ShellEvent {
    /// The plugin whose UI subscribed.
    pub plugin: String,
    /// The event's tenant (`None`: every tenant).
    pub tenant: Option<String>,
    /// `event: plugin-event` with `{plugin, event}` as data.
    pub frame: bytes::Bytes,
}

/// One subscription as the admin API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    /// The subscribing plugin.
    pub plugin: String,
    /// Type pattern.
    #[serde(rename = "type")]
    pub pattern: String,
    /// Backend path (absent for the UI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// True for delivery to the plugin's UI.
    pub shell: bool,
    /// Whether backend delivery keeps order per source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordered: Option<bool>,
    /// In-flight window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Whether the subscriber receives now (Ready and enabled).
    pub receiving: bool,
    /// Undelivered events.
    pub pending: u64,
    /// Deliveries in flight.
    pub in_flight: u32,
    /// Dead letters.
    pub dead_letters: u64,
    /// Age of the oldest undelivered event, in seconds (0 when none waits).
    pub lag_seconds: f64,
}

/// Where accepted events live and who delivers them.
enum Engine {
    /// The SQLite outbox (or its in-memory twin) and this process's dispatcher.
    Outbox {
        outbox: Outbox,
        queues: Queues,
        incoming: std::sync::Mutex<Option<mpsc::UnboundedReceiver<outbox::Pending>>>,
    },
    /// NATS JetStream, shared by every replica.
    Jet(Arc<jetstream::Jet>),
}

/// The events surface.
pub struct Events {
    engine: Engine,
    table: Arc<RwLock<Table>>,
    wake: Arc<Notify>,
    shell: broadcast::Sender<Arc<ShellEvent>>,
    metrics: EventsMetrics,
    limits: policy::Limits,
    http: reqwest::Client,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

/// How the events surface is set up.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The SQLite file of the outbox; `None` keeps delivery state in memory.
    pub db: Option<std::path::PathBuf>,
    /// NATS JetStream instead of the outbox (`events.nats.url`).
    pub nats_url: Option<String>,
    /// Retry limits.
    pub limits: policy::Limits,
    /// The client deliveries go through (no redirects, guarded DNS: `probe::client` with the
    /// delivery timeout).
    pub http: reqwest::Client,
}

/// Sends an event to the shells of the plugins whose UI subscribes to `ty` and that are shown.
fn to_shells(
    shell: &broadcast::Sender<Arc<ShellEvent>>,
    registry: &Registry,
    table: &Table,
    ty: &str,
    tenant: Option<String>,
    envelope: &str,
) {
    if shell.receiver_count() == 0 {
        return;
    }
    let index = registry.index();
    for plugin in table.shells_for(ty) {
        if index.get(&plugin).and_then(|r| r.exposed()).is_none() {
            continue;
        }
        let frame = format!(
            "event: plugin-event\ndata: {{\"plugin\":{},\"event\":{}}}\n\n",
            serde_json::Value::String(plugin.clone()),
            envelope
        );
        let _ = shell.send(Arc::new(ShellEvent {
            plugin,
            tenant: tenant.clone(),
            frame: frame.into(),
        }));
    }
}

fn age_seconds(now: i64, oldest: Option<i64>) -> f64 {
    oldest.map_or(0.0, |o| (now - o).max(0) as f64 / 1000.0)
}

impl Events {
    /// Opens the outbox, or connects to NATS JetStream. The subscription table fills once the
    /// registry loads (as its observer).
    pub async fn open(settings: Settings, metrics: EventsMetrics) -> Result<Arc<Events>, String> {
        let engine = match &settings.nats_url {
            Some(url) => Engine::Jet(Arc::new(
                jetstream::Jet::connect(url, settings.limits, settings.http.clone()).await?,
            )),
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                let outbox = match &settings.db {
                    Some(path) => Outbox::open(path, tx)?,
                    None => Outbox::in_memory(tx)?,
                };
                Engine::Outbox {
                    outbox,
                    queues: Arc::default(),
                    incoming: std::sync::Mutex::new(Some(rx)),
                }
            }
        };
        let events = Events {
            engine,
            table: Arc::default(),
            wake: Arc::new(Notify::new()),
            shell: broadcast::channel(1024).0,
            metrics,
            limits: settings.limits,
            http: settings.http,
        };
        events.metrics.durable.set(i64::from(events.is_durable()));
        Ok(Arc::new(events))
    }

    /// Whether accepted events survive a crash.
    pub fn is_durable(&self) -> bool {
        match &self.engine {
            Engine::Outbox { outbox, .. } => outbox.is_durable(),
            Engine::Jet(_) => true,
        }
    }

    /// The engine's name, for logs and the admin view.
    pub fn engine(&self) -> &'static str {
        match &self.engine {
            Engine::Outbox { outbox, .. } if outbox.is_durable() => "sqlite",
            Engine::Outbox { .. } => "memory",
            Engine::Jet(_) => "nats",
        }
    }

    /// Loads what waited at the last stop and starts delivering; once.
    pub async fn start(
        self: &Arc<Self>,
        registry: Arc<Registry>,
        keys: Arc<Keys>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
        let (outbox, queues, incoming) = match &self.engine {
            Engine::Jet(jet) => {
                return Ok(jet.start(jetstream::Wiring {
                    registry,
                    table: self.table.clone(),
                    keys,
                    shell: self.shell.clone(),
                    metrics: self.metrics.clone(),
                    shutdown,
                    wake: self.wake.clone(),
                }));
            }
            Engine::Outbox {
                outbox,
                queues,
                incoming,
            } => (outbox, queues, incoming),
        };
        let Some(incoming) = lock(incoming).take() else {
            return Ok(Vec::new());
        };
        let waiting = outbox.pending().await?;
        if !waiting.is_empty() {
            tracing::info!(
                deliveries = waiting.len(),
                "event deliveries waiting from before the restart"
            );
        }
        let dispatcher = Dispatcher {
            registry,
            table: self.table.clone(),
            outbox: outbox.clone(),
            queues: queues.clone(),
            keys,
            http: self.http.clone(),
            limits: self.limits,
            metrics: self.metrics.clone(),
            wake: self.wake.clone(),
        };
        for p in waiting {
            dispatch::enqueue(queues, &self.table, p);
        }
        let run = tokio::spawn(dispatcher.run(incoming, shutdown.clone()));
        let outbox = outbox.clone();
        let mut stop = shutdown;
        let gc = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = every.tick() => outbox.gc(now_ms() - i64::try_from(REMEMBER.as_millis()).unwrap_or(0)),
                    _ = stop.changed() => return,
                }
            }
        });
        Ok(vec![run, gc])
    }

    /// Accepts an event from `plugin` (checked by the caller for `events:publish`): stored with
    /// one delivery per matching backend subscription, answered once durable, then sent to
    /// the subscribing UIs of Ready plugins.
    pub async fn publish(
        &self,
        event: envelope::Event,
        registry: &Registry,
    ) -> Result<Published, String> {
        let source = event.source.clone();
        let published = match &self.engine {
            // Every replica's shells hear it from NATS.
            Engine::Jet(jet) => {
                let index = registry.index();
                let matching: Vec<(SubKey, u32, Option<String>)> = read(&self.table)
                    .matching(&event.ty)
                    .map(|s| {
                        let since = index
                            .get(&s.key.plugin)
                            .map(|r| r.current.registered_at.clone());
                        (s.key.clone(), s.window, since)
                    })
                    .collect();
                jet.publish(&event, &matching).await?
            }
            Engine::Outbox { outbox, .. } => {
                let backend = read(&self.table).backend_for(&event.ty);
                let (ty, tenant, envelope) = (
                    event.ty.clone(),
                    event.tenant.clone(),
                    event.envelope.clone(),
                );
                let published = outbox.publish(event, backend).await?;
                if !published.duplicate {
                    to_shells(
                        &self.shell,
                        registry,
                        &read(&self.table),
                        &ty,
                        tenant,
                        &envelope,
                    );
                }
                published
            }
        };
        if !published.duplicate {
            self.metrics
                .published
                .get_or_create(&PluginLabel { plugin: source })
                .inc();
        }
        Ok(published)
    }

    /// Accepts what a webhook ingested: stored for the webhook's own subscription only (no
    /// other subscriber and no shell sees it), answered once durable. An id accepted before
    /// (within a day) is a duplicate: nothing new is stored or delivered.
    pub async fn ingest(
        &self,
        event: envelope::Event,
        key: SubKey,
        registry: &Registry,
    ) -> Result<Published, String> {
        match &self.engine {
            Engine::Jet(jet) => {
                let since = registry
                    .index()
                    .get(&key.plugin)
                    .map(|r| r.current.registered_at.clone());
                let subject = jetstream::hook_subject(&key);
                jet.publish_on(subject, &event, &[(key, subs::WEBHOOK_WINDOW, since)])
                    .await
            }
            Engine::Outbox { outbox, .. } => outbox.publish(event, vec![key]).await,
        }
    }

    /// The live feed of events for shells.
    pub fn shell_feed(&self) -> broadcast::Receiver<Arc<ShellEvent>> {
        self.shell.subscribe()
    }

    /// The dead-letter list.
    pub async fn dead_letters(&self, q: DeadQuery) -> Result<Vec<DeadLetter>, String> {
        match &self.engine {
            Engine::Outbox { outbox, .. } => outbox.dead_letters(q).await,
            Engine::Jet(jet) => jet.dead_letters(&q).await,
        }
    }

    /// Sends a dead letter again (from its first attempt); false when there is none.
    pub async fn redrive(&self, id: i64) -> Result<bool, String> {
        let found = match &self.engine {
            Engine::Outbox { outbox, .. } => outbox.redrive(id, now_ms()).await?.is_some(),
            Engine::Jet(jet) => jet.redrive(id).await?,
        };
        self.wake.notify_one();
        Ok(found)
    }

    /// Deletes a dead letter; false when there is none.
    pub async fn discard(&self, id: i64) -> Result<bool, String> {
        match &self.engine {
            Engine::Outbox { outbox, .. } => outbox.discard(id).await,
            Engine::Jet(jet) => jet.discard(id).await,
        }
    }

    /// Undelivered events, in flight, and the oldest's acceptance time, by subscription.
    fn backlogs(&self) -> BTreeMap<SubKey, (u64, u32, Option<i64>)> {
        match &self.engine {
            Engine::Outbox { queues, .. } => lock(queues)
                .iter()
                .map(|(k, q)| {
                    let (n, oldest) = q.backlog();
                    (k.clone(), (n, q.in_flight(), oldest))
                })
                .collect(),
            Engine::Jet(jet) => jet
                .backlog()
                .into_iter()
                .map(|(k, b)| (k, (b.pending, b.in_flight, b.oldest_ms)))
                .collect(),
        }
    }

    /// Every subscription with its backlog.
    pub async fn subscriptions(
        &self,
        registry: &Registry,
    ) -> Result<Vec<SubscriptionView>, String> {
        let dead: BTreeMap<SubKey, u64> = match &self.engine {
            Engine::Outbox { outbox, .. } => outbox.dead_counts().await?,
            Engine::Jet(jet) => jet.dead_counts().await?,
        }
        .into_iter()
        .collect();
        let index = registry.index();
        let now = now_ms();
        let table = read(&self.table).clone();
        if let Engine::Jet(jet) = &self.engine {
            let keys: Vec<SubKey> = table.backend().map(|s| s.key.clone()).collect();
            jet.refresh(&keys).await;
        }
        let backlogs = self.backlogs();
        let mut out = Vec::new();
        let receiving = |p: &str| index.get(p).and_then(|r| r.exposed()).is_some();
        for s in table.backend() {
            let (pending, in_flight, oldest) = backlogs.get(&s.key).copied().unwrap_or_default();
            out.push(SubscriptionView {
                plugin: s.key.plugin.clone(),
                pattern: s.key.pattern.clone(),
                path: Some(s.key.path.clone()),
                shell: false,
                ordered: Some(s.ordered),
                max_in_flight: (!s.ordered).then_some(s.window),
                receiving: receiving(&s.key.plugin),
                pending,
                in_flight,
                dead_letters: dead.get(&s.key).copied().unwrap_or(0),
                lag_seconds: age_seconds(now, oldest),
            });
        }
        for (plugin, pattern) in table.shell() {
            out.push(SubscriptionView {
                plugin: plugin.to_string(),
                pattern: pattern.to_string(),
                path: None,
                shell: true,
                ordered: None,
                max_in_flight: None,
                receiving: receiving(plugin),
                pending: 0,
                in_flight: 0,
                dead_letters: 0,
                lag_seconds: 0.0,
            });
        }
        Ok(out)
    }

    /// Sets the backlog gauges (at scrape time).
    pub fn export(&self) {
        let now = now_ms();
        let mut by_plugin: BTreeMap<String, (i64, Option<i64>)> = BTreeMap::new();
        for (key, (n, _, oldest)) in self.backlogs() {
            let e = by_plugin.entry(key.plugin).or_insert((0, None));
            e.0 += i64::try_from(n).unwrap_or(i64::MAX);
            e.1 = match (e.1, oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        // A plugin whose backlog is gone (delivered, or the plugin deleted) reads 0, not its last value.
        self.metrics.pending.clear();
        self.metrics.lag_seconds.clear();
        for (plugin, (n, oldest)) in by_plugin {
            let label = PluginLabel { plugin };
            self.metrics.pending.get_or_create(&label).set(n);
            self.metrics
                .lag_seconds
                .get_or_create(&label)
                .set(age_seconds(now, oldest));
        }
    }
}

impl Observer for Events {
    fn loaded(&self, index: &Index) {
        let mut t = write(&self.table);
        for r in index.records() {
            t.set(&r.name, Some(subs::of(r)));
        }
    }

    fn committed(&self, index: &Index, touched: &[String], _urgent: bool) {
        {
            let mut t = write(&self.table);
            for name in touched {
                t.set(name, index.get(name).map(subs::of));
            }
        }
        self.wake.notify_one();
    }
}
