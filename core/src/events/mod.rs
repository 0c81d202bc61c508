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
//! owns the HTTP calls.

pub mod dispatch;
pub mod envelope;
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

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

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

/// The events surface.
pub struct Events {
    outbox: Outbox,
    table: Arc<RwLock<Table>>,
    queues: Queues,
    wake: Arc<Notify>,
    shell: broadcast::Sender<Arc<ShellEvent>>,
    metrics: EventsMetrics,
    limits: policy::Limits,
    delivery_timeout: Duration,
    incoming: std::sync::Mutex<Option<mpsc::UnboundedReceiver<outbox::Pending>>>,
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
    /// Retry limits.
    pub limits: policy::Limits,
    /// How long one delivery may take.
    pub delivery_timeout: Duration,
}

impl Events {
    /// Opens the outbox. The subscription table fills once the registry loads (as its observer).
    pub fn open(settings: Settings, metrics: EventsMetrics) -> Result<Arc<Events>, String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = match &settings.db {
            Some(path) => Outbox::open(path, tx)?,
            None => Outbox::in_memory(tx)?,
        };
        metrics.durable.set(i64::from(outbox.is_durable()));
        Ok(Arc::new(Events {
            outbox,
            table: Arc::default(),
            queues: Arc::default(),
            wake: Arc::new(Notify::new()),
            shell: broadcast::channel(1024).0,
            metrics,
            limits: settings.limits,
            delivery_timeout: settings.delivery_timeout,
            incoming: std::sync::Mutex::new(Some(rx)),
        }))
    }

    /// Whether accepted events survive a crash.
    pub fn is_durable(&self) -> bool {
        self.outbox.is_durable()
    }

    /// Loads what waited at the last stop and starts delivering; once.
    pub async fn start(
        self: &Arc<Self>,
        registry: Arc<Registry>,
        keys: Arc<Keys>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
        let Some(incoming) = lock(&self.incoming).take() else {
            return Ok(Vec::new());
        };
        let waiting = self.outbox.pending().await?;
        if !waiting.is_empty() {
            tracing::info!(
                deliveries = waiting.len(),
                "event deliveries waiting from before the restart"
            );
        }
        let dispatcher = Dispatcher {
            registry,
            table: self.table.clone(),
            outbox: self.outbox.clone(),
            queues: self.queues.clone(),
            keys,
            http: crate::probe::client(self.delivery_timeout),
            limits: self.limits,
            metrics: self.metrics.clone(),
            wake: self.wake.clone(),
        };
        for p in waiting {
            dispatch::enqueue(&self.queues, &self.table, p);
        }
        let run = tokio::spawn(dispatcher.run(incoming, shutdown.clone()));
        let outbox = self.outbox.clone();
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
        let (backend, shells) = {
            let t = read(&self.table);
            (t.backend_for(&event.ty), t.shells_for(&event.ty))
        };
        let source = event.source.clone();
        let tenant = event.tenant.clone();
        let envelope = event.envelope.clone();
        let published = self.outbox.publish(event, backend).await?;
        if published.duplicate {
            return Ok(published);
        }
        self.metrics
            .published
            .get_or_create(&PluginLabel { plugin: source })
            .inc();
        if !shells.is_empty() && self.shell.receiver_count() > 0 {
            let index = registry.index();
            for plugin in shells {
                if index.get(&plugin).and_then(|r| r.exposed()).is_none() {
                    continue;
                }
                let frame = format!(
                    "event: plugin-event\ndata: {{\"plugin\":{},\"event\":{}}}\n\n",
                    serde_json::Value::String(plugin.clone()),
                    envelope
                );
                let _ = self.shell.send(Arc::new(ShellEvent {
                    plugin,
                    tenant: tenant.clone(),
                    frame: frame.into(),
                }));
            }
        }
        Ok(published)
    }

    /// The live feed of events for shells.
    pub fn shell_feed(&self) -> broadcast::Receiver<Arc<ShellEvent>> {
        self.shell.subscribe()
    }

    /// The dead-letter list.
    pub async fn dead_letters(&self, q: DeadQuery) -> Result<Vec<DeadLetter>, String> {
        self.outbox.dead_letters(q).await
    }

    /// Sends a dead letter again (from its first attempt); false when there is none.
    pub async fn redrive(&self, id: i64) -> Result<bool, String> {
        let found = self.outbox.redrive(id, now_ms()).await?.is_some();
        self.wake.notify_one();
        Ok(found)
    }

    /// Deletes a dead letter; false when there is none.
    pub async fn discard(&self, id: i64) -> Result<bool, String> {
        self.outbox.discard(id).await
    }

    /// Every subscription with its backlog.
    pub async fn subscriptions(
        &self,
        registry: &Registry,
    ) -> Result<Vec<SubscriptionView>, String> {
        let dead: BTreeMap<SubKey, u64> = self.outbox.dead_counts().await?.into_iter().collect();
        let index = registry.index();
        let now = now_ms();
        let table = read(&self.table).clone();
        let queues = lock(&self.queues);
        let mut out = Vec::new();
        let receiving = |p: &str| index.get(p).and_then(|r| r.exposed()).is_some();
        for s in table.backend() {
            let (pending, oldest, in_flight) = queues.get(&s.key).map_or((0, None, 0), |q| {
                let (n, o) = q.backlog();
                (n, o, q.in_flight())
            });
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
                lag_seconds: oldest.map_or(0.0, |o| (now - o).max(0) as f64 / 1000.0),
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
        for (key, q) in lock(&self.queues).iter() {
            let (n, oldest) = q.backlog();
            let e = by_plugin.entry(key.plugin.clone()).or_insert((0, None));
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
                .set(oldest.map_or(0.0, |o| (now - o).max(0) as f64 / 1000.0));
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
