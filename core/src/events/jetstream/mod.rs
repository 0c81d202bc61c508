//! The NATS JetStream engine (`events.nats.url`): what every replica of a cluster shares.
//!
//! One stream (`TESSERA_EVENTS`, subjects `tessera.events.<type>`,
//! `tessera.redrive.<consumer>` and `tessera.hooks.<plugin>.<webhook>`) holds accepted events
//! and webhook requests; a publish is answered once JetStream
//! acknowledged it (`Nats-Msg-Id` = `<source>:<id>`, so a repeated id is a duplicate). Each
//! backend subscription is one durable pull consumer filtering `tessera.events.<pattern>`, with
//! at most its window unacknowledged (1 when ordered): every replica pulls from it, so a
//! delivery goes to one of them and a replica that dies leaves its messages to the others once
//! their ack wait passes. A replica holds the message it is delivering through the retries
//! `policy` asks for (telling JetStream it is still working), so order holds and a subscriber
//! that comes back is served at once; a dead letter goes to `TESSERA_DEAD_LETTERS`. Shells are
//! fed from a plain subscription to `tessera.events.>` on every replica.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind, stream};
use futures_util::StreamExt;
use sha2::Digest;
use tokio::sync::watch;

use super::dispatch::deliver;
use super::envelope::Event;
use super::metrics::{EventsMetrics, PluginLabel};
use super::outbox::Published;
use super::policy::{self, Limits, Next};
use super::subs::{SubKey, Table};
use super::{ShellEvent, now_ms};
use crate::auth::Keys;
use crate::auth::call::CallTokens;
use crate::registry::Registry;
use crate::sync::{lock, read};

mod dead;

const EVENTS: &str = "TESSERA_EVENTS";
const DEAD: &str = "TESSERA_DEAD_LETTERS";
/// How long JetStream waits for word from the replica holding a message before handing it to
/// another: a replica says it is still working every third of it (during a delivery and between
/// retries), so only a replica that died lets it pass.
const ACK_WAIT: Duration = Duration::from_secs(6);
/// Most dead letters read to answer one list.
const DEAD_SCAN: u64 = 20_000;

fn subject(ty: &str) -> String {
    format!("tessera.events.{ty}")
}

/// Where a webhook's requests are published: apart from every event type, so no subscription
/// pattern reaches them; only the webhook's own consumer reads them.
pub fn hook_subject(key: &SubKey) -> String {
    format!(
        "tessera.hooks.{}.{}",
        key.plugin,
        key.webhook_name().unwrap_or_default()
    )
}

/// The subject a subscription's consumer reads.
fn filter(key: &SubKey) -> String {
    match key.webhook_name() {
        Some(_) => hook_subject(key),
        None => subject(&key.pattern),
    }
}

/// The durable consumer of a subscription: the plugin's name and a digest of the subscription.
pub fn consumer_name(key: &SubKey) -> String {
    let digest = sha2::Sha256::digest(format!("{}\0{}\0{}", key.plugin, key.pattern, key.path));
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{}_{hex}", key.plugin)
}

fn redrive_subject(consumer: &str) -> String {
    format!("tessera.redrive.{consumer}")
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// What the admin view and the gauges show of one subscription (refreshed every 2 s).
#[derive(Clone, Copy, Debug, Default)]
pub struct Backlog {
    /// Undelivered messages (waiting and unacknowledged).
    pub pending: u64,
    /// Unacknowledged (being delivered by some replica).
    pub in_flight: u32,
    /// Acceptance time of the oldest undelivered event.
    pub oldest_ms: Option<i64>,
}

/// The engine's handle.
pub struct Jet {
    client: async_nats::Client,
    js: jetstream::Context,
    limits: Limits,
    http: reqwest::Client,
    backlog: Mutex<BTreeMap<SubKey, Backlog>>,
    /// Consumers known to exist.
    created: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Jet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jet").finish_non_exhaustive()
    }
}

/// What the engine's tasks share with the rest of the events surface.
pub struct Wiring {
    /// The index (who is Ready, where they listen).
    pub registry: Arc<Registry>,
    /// Who subscribes to what.
    pub table: Arc<RwLock<Table>>,
    /// Signs call tokens.
    pub keys: Arc<Keys>,
    /// The shells' live feed.
    pub shell: tokio::sync::broadcast::Sender<Arc<ShellEvent>>,
    /// Metrics.
    pub metrics: EventsMetrics,
    /// Stops the tasks.
    pub shutdown: watch::Receiver<bool>,
    /// Rings when the registry commits (a subscription may have come or gone).
    pub wake: Arc<tokio::sync::Notify>,
}

impl Jet {
    /// Connects and makes sure both streams exist (`max_age` bounds how long an event waits).
    pub async fn connect(url: &str, limits: Limits, http: reqwest::Client) -> Result<Jet, String> {
        let client = async_nats::ConnectOptions::new()
            .name("tessera-core")
            .connect(url)
            .await
            .map_err(|e| format!("events.nats.url {url}: {e}"))?;
        let js = jetstream::new(client.clone());
        let events = stream::Config {
            name: EVENTS.into(),
            subjects: vec![
                "tessera.events.>".into(),
                "tessera.redrive.>".into(),
                "tessera.hooks.>".into(),
            ],
            storage: stream::StorageType::File,
            // An event stays until every subscription it matches has it (or gave it up): one
            // waiting for a plugin that is away is never aged out.
            retention: stream::RetentionPolicy::Interest,
            duplicate_window: Duration::from_secs(24 * 3600).min(limits.max_age),
            allow_direct: true,
            ..Default::default()
        };
        // Created, or updated to this config (a stream from an earlier version gains the
        // webhooks' subjects).
        js.create_or_update_stream(events)
            .await
            .map_err(|e| format!("JetStream stream {EVENTS}: {e}"))?;
        let dead = stream::Config {
            name: DEAD.into(),
            subjects: vec!["tessera.dead.>".into()],
            storage: stream::StorageType::File,
            allow_direct: true,
            ..Default::default()
        };
        js.get_or_create_stream(dead)
            .await
            .map_err(|e| format!("JetStream stream {DEAD}: {e}"))?;
        Ok(Jet {
            client,
            js,
            limits,
            http,
            backlog: Mutex::default(),
            created: Mutex::default(),
        })
    }

    /// Whether the connection to NATS is up.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Stores an event; answers once JetStream acknowledged it. The consumers of the
    /// subscriptions it matches are made sure of first: the stream keeps an event only for
    /// consumers that exist when it arrives.
    pub async fn publish(
        &self,
        event: &Event,
        matching: &[(SubKey, u32, Option<String>)],
    ) -> Result<Published, String> {
        self.publish_on(subject(&event.ty), event, matching).await
    }

    /// [`Jet::publish`] on a given subject (a webhook's).
    pub async fn publish_on(
        &self,
        on: String,
        event: &Event,
        matching: &[(SubKey, u32, Option<String>)],
    ) -> Result<Published, String> {
        for (key, window, since) in matching {
            if !lock(&self.created).contains(&consumer_name(key)) {
                self.consumer(key, *window, since.clone()).await?;
            }
        }
        let msg = PublishMessage::build()
            .payload(event.envelope.clone().into())
            .message_id(format!("{}:{}", event.source, event.id));
        let ack = self
            .js
            .send_publish(on, msg)
            .await
            .map_err(err)?
            .await
            .map_err(err)?;
        Ok(Published {
            seq: i64::try_from(ack.sequence).unwrap_or(i64::MAX),
            id: event.id.clone(),
            accepted_ms: event.accepted_ms,
            duplicate: ack.duplicate,
        })
    }

    /// Starts the reconciler (one delivery loop per subscription), the backlog refresher and
    /// the shells' feed.
    pub fn start(self: &Arc<Self>, w: Wiring) -> Vec<tokio::task::JoinHandle<()>> {
        let w = Arc::new(w);
        vec![
            tokio::spawn(self.clone().reconcile(w.clone())),
            tokio::spawn(self.clone().feed_shells(w)),
        ]
    }

    /// Keeps one delivery loop running per backend subscription, and the backlog fresh.
    async fn reconcile(self: Arc<Self>, w: Arc<Wiring>) {
        let calls = Arc::new(CallTokens::default());
        let mut loops: HashMap<SubKey, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut shutdown = w.shutdown.clone();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut refreshed = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            let subs: Vec<(SubKey, u32)> = read(&w.table)
                .backend()
                .map(|s| (s.key.clone(), s.window))
                .collect();
            for (key, window) in &subs {
                if loops.get(key).is_some_and(|h| !h.is_finished()) {
                    continue;
                }
                let task =
                    self.clone()
                        .deliver_loop(w.clone(), calls.clone(), key.clone(), *window);
                loops.insert(key.clone(), tokio::spawn(task));
            }
            let mut ended = Vec::new();
            loops.retain(|key, h| {
                let keep = subs.iter().any(|(k, _)| k == key);
                if !keep {
                    h.abort();
                    ended.push(key.clone());
                }
                keep
            });
            // A subscription that ended (its plugin deleted, or its manifest dropped it) takes
            // its consumer, and what waited in it, along.
            for key in ended {
                lock(&self.created).remove(&consumer_name(&key));
                if let Ok(stream) = self.js.get_stream(EVENTS).await
                    && stream.delete_consumer(&consumer_name(&key)).await.is_ok()
                {
                    tracing::warn!(plugin = %key.plugin, subscription = %key.pattern, "subscription ended; its consumer and undelivered events are gone");
                }
            }
            let changed = subs.len() != lock(&self.backlog).len();
            if changed || refreshed.elapsed() >= Duration::from_secs(2) {
                self.refresh_backlog(&subs).await;
                refreshed = std::time::Instant::now();
            }
            tokio::select! {
                _ = tick.tick() => {}
                () = w.wake.notified() => {}
                _ = shutdown.changed() => break,
            }
        }
        for h in loops.into_values() {
            h.abort();
        }
    }

    /// Reads every subscription's backlog from JetStream now (the admin view), and keeps it.
    pub async fn refresh(&self, subs: &[SubKey]) -> BTreeMap<SubKey, Backlog> {
        let subs: Vec<(SubKey, u32)> = subs.iter().map(|k| (k.clone(), 1)).collect();
        self.refresh_backlog(&subs).await;
        self.backlog()
    }

    async fn refresh_backlog(&self, subs: &[(SubKey, u32)]) {
        let Ok(stream) = self.js.get_stream(EVENTS).await else {
            return;
        };
        let mut fresh = BTreeMap::new();
        for (key, _) in subs {
            let Ok(info) = stream.consumer_info(consumer_name(key)).await else {
                continue;
            };
            let pending = info.num_pending + info.num_ack_pending as u64;
            let oldest_ms = if pending > 0 {
                stream
                    .direct_get_next_for_subject(
                        subject(&key.pattern),
                        Some(info.ack_floor.stream_sequence + 1),
                    )
                    .await
                    .ok()
                    .map(|m| i64::try_from(m.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
            } else {
                None
            };
            fresh.insert(
                key.clone(),
                Backlog {
                    pending,
                    in_flight: u32::try_from(info.num_ack_pending).unwrap_or(u32::MAX),
                    oldest_ms,
                },
            );
        }
        *lock(&self.backlog) = fresh;
    }

    /// The last backlog read, by subscription.
    pub fn backlog(&self) -> BTreeMap<SubKey, Backlog> {
        lock(&self.backlog).clone()
    }

    async fn consumer(
        &self,
        key: &SubKey,
        window: u32,
        since: Option<String>,
    ) -> Result<jetstream::consumer::PullConsumer, String> {
        let name = consumer_name(key);
        // The subscription exists since its plugin registered: events accepted from then on are
        // its own, even those accepted before this consumer was created.
        let deliver_policy = since
            .and_then(|t| {
                time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map_or(DeliverPolicy::New, |start_time| {
                DeliverPolicy::ByStartTime { start_time }
            });
        let stream = self.js.get_stream(EVENTS).await.map_err(err)?;
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!(
                "plugin {} subscribes {} at {}",
                key.plugin, key.pattern, key.path
            )),
            filter_subjects: vec![filter(key), redrive_subject(&name)],
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_deliver: -1,
            max_ack_pending: i64::from(window.max(1)),
            deliver_policy,
            ..Default::default()
        };
        let consumer = stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(err)?;
        lock(&self.created).insert(name);
        Ok(consumer)
    }

    /// Pulls and delivers one subscription's events while this replica runs.
    async fn deliver_loop(
        self: Arc<Self>,
        w: Arc<Wiring>,
        calls: Arc<CallTokens>,
        key: SubKey,
        window: u32,
    ) {
        let http = self.http.clone();
        let since = w
            .registry
            .index()
            .get(&key.plugin)
            .map(|r| r.current.registered_at.clone());
        let consumer = loop {
            match self.consumer(&key, window, since.clone()).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(plugin = %key.plugin, subscription = %key.pattern, error = %e, "JetStream consumer not available; trying again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        let mut running = tokio::task::JoinSet::new();
        loop {
            if *w.shutdown.borrow() {
                return;
            }
            // Not Ready, or disabled: nothing is pulled; the events wait in the stream.
            if target(&w.registry, &key).is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            // Each message is handled on its own; up to `window` at once.
            while running.len() >= window.max(1) as usize {
                running.join_next().await;
            }
            let room = window.max(1) as usize - running.len();
            let batch = consumer
                .fetch()
                .max_messages(room)
                .expires(Duration::from_secs(1))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(plugin = %key.plugin, error = %e, "pulling events failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(m) = batch.next().await {
                match m {
                    Ok(m) => {
                        let (me, w, http, calls, key) = (
                            self.clone(),
                            w.clone(),
                            http.clone(),
                            calls.clone(),
                            key.clone(),
                        );
                        running.spawn(async move { me.handle(&w, &http, &calls, &key, m).await });
                    }
                    Err(e) => {
                        tracing::warn!(plugin = %key.plugin, error = %e, "pulling events failed")
                    }
                }
            }
        }
    }

    /// Delivers one message until it is acknowledged or dead-lettered (or the replica stops).
    async fn handle(
        &self,
        w: &Wiring,
        http: &reqwest::Client,
        calls: &CallTokens,
        key: &SubKey,
        msg: jetstream::Message,
    ) {
        let (mut attempts, accepted_ms) = match msg.info() {
            Ok(i) => (
                u32::try_from(i.delivered).unwrap_or(1).max(1),
                i64::try_from(i.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
            ),
            Err(_) => (1, now_ms()),
        };
        let envelope: Arc<str> = String::from_utf8_lossy(&msg.payload).into();
        let parsed: serde_json::Value = serde_json::from_str(&envelope).unwrap_or_default();
        let tenant = parsed["tenant"].as_str().map(String::from);
        let ty = parsed["type"].as_str().unwrap_or("").to_string();
        let label = PluginLabel {
            plugin: key.plugin.clone(),
        };
        let progress_every = ACK_WAIT / 3;
        loop {
            // Wait for the subscriber, telling JetStream this replica still holds the message.
            let url = loop {
                if *w.shutdown.borrow() {
                    return; // redelivered to another replica once the ack wait passes
                }
                if let Some(url) = target(&w.registry, key) {
                    break url;
                }
                let _ = msg.ack_with(AckKind::Progress).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let outcome = {
                let attempt = deliver(
                    http,
                    &w.keys,
                    calls,
                    key,
                    &url,
                    tenant.as_deref(),
                    &envelope,
                );
                tokio::pin!(attempt);
                let mut progress = tokio::time::interval_at(
                    tokio::time::Instant::now() + progress_every,
                    progress_every,
                );
                loop {
                    tokio::select! {
                        outcome = &mut attempt => break outcome,
                        _ = progress.tick() => {
                            let _ = msg.ack_with(AckKind::Progress).await;
                        }
                    }
                }
            };
            let age = Duration::from_millis(u64::try_from(now_ms() - accepted_ms).unwrap_or(0));
            match policy::next(
                &outcome,
                attempts,
                age,
                self.limits,
                crate::model::unit_random(),
            ) {
                Next::Ack => {
                    if let Err(e) = msg.double_ack().await {
                        tracing::warn!(plugin = %key.plugin, error = %e, "acknowledging a delivered event failed; it may come again");
                    }
                    w.metrics.delivered.get_or_create(&label).inc();
                    w.metrics
                        .delivery_seconds
                        .get_or_create(&label)
                        .observe(age.as_secs_f64());
                    return;
                }
                Next::Retry(delay) => {
                    w.metrics.retried.get_or_create(&label).inc();
                    tracing::info!(plugin = %key.plugin, subscription = %key.pattern, event = %ty,
                        attempts, retry_in_ms = delay.as_millis() as u64, why = %outcome.describe(), "event delivery failed; retrying");
                    attempts += 1;
                    let until = tokio::time::Instant::now() + delay;
                    let mut was_receiving = true;
                    while tokio::time::Instant::now() < until {
                        let _ = msg.ack_with(AckKind::Progress).await;
                        let step = progress_every.min(until - tokio::time::Instant::now());
                        tokio::time::sleep(step.min(Duration::from_millis(200))).await;
                        // A subscriber that was away and is back is served at once.
                        let receiving = target(&w.registry, key).is_some();
                        if receiving && !was_receiving {
                            break;
                        }
                        was_receiving = receiving;
                        if *w.shutdown.borrow() {
                            return;
                        }
                    }
                }
                Next::DeadLetter(reason) => {
                    tracing::warn!(plugin = %key.plugin, subscription = %key.pattern, event = %ty,
                        attempts, %reason, "event delivery dead-lettered");
                    if let Err(e) = self.dead_letter(key, attempts, &reason, &envelope).await {
                        tracing::warn!(plugin = %key.plugin, error = %e, "keeping a dead letter failed; the event will be delivered again");
                        let _ = msg
                            .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                            .await;
                        return;
                    }
                    let _ = msg.ack_with(AckKind::Term).await;
                    w.metrics.dead_lettered.get_or_create(&label).inc();
                    return;
                }
            }
        }
    }

    /// Hands every event to the shells of this replica whose plugin's UI subscribes to it.
    async fn feed_shells(self: Arc<Self>, w: Arc<Wiring>) {
        let mut shutdown = w.shutdown.clone();
        let mut sub = loop {
            match self.client.subscribe("tessera.events.>").await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "subscribing to events for the shells failed; trying again");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        loop {
            let m = tokio::select! {
                m = sub.next() => m,
                _ = shutdown.changed() => return,
            };
            let Some(m) = m else { return };
            let Ok(text) = std::str::from_utf8(&m.payload) else {
                continue;
            };
            let parsed: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            let (Some(ty), tenant) = (
                parsed["type"].as_str(),
                parsed["tenant"].as_str().map(String::from),
            ) else {
                continue;
            };
            super::to_shells(&w.shell, &w.registry, &read(&w.table), ty, tenant, text);
        }
    }
}

/// Where a subscription's deliveries go now, if its plugin is Ready and enabled.
fn target(registry: &Registry, key: &SubKey) -> Option<String> {
    let index = registry.index();
    let deployment = index.get(&key.plugin)?.exposed()?;
    Some(crate::model::plugin_url(deployment, &key.path))
}
