//! Health gating: the prober GETs each plugin's readiness endpoint and remote entry on a
//! jittered period, with a timeout, bounded concurrency and pooled connections, and hands each
//! round's outcome to the registry, which applies the thresholds.
//!
//! The HTTP client never follows redirects and resolves names through a guard that refuses
//! link-local and metadata addresses, so a plugin URL cannot point the core at them through DNS
//! either. After start every plugin is probed at once; `first_round_done` turns true when that
//! round has finished, and the core's `/readyz` waits for it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{Semaphore, watch};

use crate::config::ProbeConfig;
use crate::policy::{is_link_local, is_metadata_ip};
use crate::registry::{ProbeOutcome, ProbeTarget, Registry};
use crate::telemetry::{Metrics, ReasonLabels};

/// Largest remote entry the prober reads.
pub const MAX_REMOTE_ENTRY_BYTES: usize = 5 << 20;

/// Builds the HTTP client the core uses to reach plugins.
pub fn client(timeout: Duration) -> reqwest::Client {
    client_keeping(timeout, usize::MAX)
}

/// [`client`], keeping at most `idle` idle connections per plugin between bursts (a minute's
/// jobs open many at once; keeping them all costs memory until the next minute, and measured
/// no faster).
pub fn client_keeping(timeout: Duration, idle: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(idle)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .dns_resolver(Arc::new(GuardedResolver))
        .user_agent(concat!("tessera-core/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Resolves names, dropping link-local and metadata answers (DNS rebinding towards metadata
/// services).
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_link_local(&a.ip()) && !is_metadata_ip(&a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no address the core may reach").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Runs the prober until `shutdown` turns true.
pub async fn run(
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    cfg: ProbeConfig,
    first_round_done: watch::Sender<bool>,
    mut leading: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = client(cfg.timeout());
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    let period = cfg.period();
    let tick = (period / 5).clamp(Duration::from_millis(10), Duration::from_millis(200));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Rounds due, earliest first. Work per wake-up is proportional to the rounds due, not to
    // the number of plugins; an entry whose plugin is gone or in flight is dropped when popped.
    let mut queue: BinaryHeap<Reverse<(Instant, String)>> = BinaryHeap::new();
    let mut known: HashMap<String, ProbeTarget> = HashMap::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut seen_generation = 0;
    // Whether anyone can still change who leads (false: this replica stays as it is).
    let mut election_open = true;
    let mut first_round: Option<HashSet<String>> = None;
    let mut last_refresh = Instant::now();

    loop {
        if !*leading.borrow_and_update() {
            // Another replica leads and probes: forget the schedule, wait to lead.
            queue.clear();
            known.clear();
            seen_generation = 0;
            tokio::select! {
                changed = leading.changed() => {
                    if changed.is_err() {
                        let _ = shutdown.changed().await;
                        break;
                    }
                    continue;
                }
                _ = shutdown.changed() => break,
            }
        }
        let now = Instant::now();
        // Re-read the targets when the index changed, at most once a tick: while thousands of
        // plugins register, re-reading after every commit would cost more than the probing.
        if registry.generation() != seen_generation
            && (first_round.is_none() || last_refresh.elapsed() >= tick)
        {
            last_refresh = Instant::now();
            let (generation, targets) = registry.probe_targets();
            seen_generation = generation;
            let mut next = HashMap::with_capacity(targets.len());
            for t in targets {
                // New plugins, and new versions of known ones, are probed at once.
                let fresh = known.get(&t.name).is_none_or(|k| k.version != t.version);
                if fresh && !in_flight.contains(&t.name) {
                    queue.push(Reverse((now, t.name.clone())));
                }
                next.insert(t.name.clone(), t);
            }
            known = next;
            if first_round.is_none() {
                first_round = Some(known.keys().cloned().collect());
            }
        }
        // A round is spawned only with a permit in hand, so at most `concurrency` rounds (and
        // their tasks) exist at once, however many are due: 10,000 due rounds are 10,000
        // queue entries, not 10,000 parked tasks.
        let mut saturated = false;
        while let Some(Reverse((when, _))) = queue.peek() {
            if *when > now {
                break;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                saturated = true;
                break;
            };
            let Some(Reverse((_, name))) = queue.pop() else {
                break;
            };
            let Some(t) = known.get(&name) else { continue };
            if !in_flight.insert(name) {
                continue;
            }
            let registry = registry.clone();
            let client = client.clone();
            let done = done_tx.clone();
            let metrics = metrics.clone();
            let t = t.clone();
            tokio::spawn(async move {
                let outcome = probe_once(
                    &client,
                    &t.backend_url,
                    &t.remote_url,
                    &t.readiness_path,
                    &t.version,
                )
                .await;
                metrics
                    .probe_duration
                    .observe(outcome.latency_ms as f64 / 1000.0);
                // A round the core could not even attempt (no descriptor left) says nothing
                // about the plugin: it is not counted, and the next round decides.
                let local = [outcome.ready.as_ref().err(), outcome.remote.as_ref().err()]
                    .into_iter()
                    .flatten()
                    .any(|m| m.contains(NO_DESCRIPTORS));
                if local {
                    metrics
                        .probe_failures
                        .get_or_create(&ReasonLabels {
                            reason: "CoreOutOfDescriptors".to_string(),
                        })
                        .inc();
                    tracing::warn!(plugin = %t.name, "probe round skipped: the core has no file descriptor left");
                    drop(permit);
                    let _ = done.send(t.name);
                    return;
                }
                let failed = match (&outcome.ready, &outcome.remote) {
                    (Err(_), _) => Some("ReadinessProbeFailed"),
                    (_, Err(_)) => Some("RemoteEntryUnreachable"),
                    _ => None,
                };
                if let Some(reason) = failed {
                    metrics
                        .probe_failures
                        .get_or_create(&ReasonLabels {
                            reason: reason.to_string(),
                        })
                        .inc();
                }
                if let Err(e) = registry.apply_probe(&t.name, outcome).await {
                    tracing::warn!(plugin = %t.name, error = %e, "probe outcome not recorded");
                }
                // Free the permit before saying so: the loop spawns the next round on this wake-up.
                drop(permit);
                let _ = done.send(t.name);
            });
        }
        // Wake at the earliest due round (so exposure flips as soon as a round is due), and at
        // least every `tick` to pick up newly registered plugins. While every permit is taken,
        // a finished round (which frees one) is what wakes it.
        let wake = match queue.peek() {
            Some(Reverse((when, _))) if !saturated => {
                when.saturating_duration_since(Instant::now()).min(tick)
            }
            _ => tick,
        };
        tokio::select! {
            _ = shutdown.changed() => break,
            changed = leading.changed(), if election_open => election_open = changed.is_ok(),
            _ = tokio::time::sleep(wake) => {}
            Some(name) = done_rx.recv() => {
                let mut finished = vec![name];
                while let Ok(n) = done_rx.try_recv() {
                    finished.push(n);
                }
                let now = Instant::now();
                for name in finished {
                    in_flight.remove(&name);
                    if let Some(waiting) = &mut first_round {
                        waiting.remove(&name);
                    }
                    if known.contains_key(&name) {
                        queue.push(Reverse((now + jittered(period), name)));
                    }
                }
            }
        }
        if first_round.as_ref().is_some_and(HashSet::is_empty) && !*first_round_done.borrow() {
            first_round_done.send_replace(true);
        }
        if *shutdown.borrow() {
            break;
        }
    }
}

/// A period shortened by up to 10%, so plugins registered together spread out.
fn jittered(period: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let frac = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX);
    period.mul_f64(1.0 - 0.1 * frac)
}

/// One round: readiness endpoint and remote entry, concurrently.
pub async fn probe_once(
    client: &reqwest::Client,
    backend_url: &str,
    remote_url: &str,
    path: &str,
    version: &str,
) -> ProbeOutcome {
    let started = Instant::now();
    let ready_url = format!("{}{}", backend_url.trim_end_matches('/'), path);
    let (ready, remote) = tokio::join!(
        get(client, &ready_url, 64 << 10),
        get(client, remote_url, MAX_REMOTE_ENTRY_BYTES)
    );
    ProbeOutcome {
        version: version.to_string(),
        ready: ready.map(|_| ()),
        remote,
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// Marks a failure of the core's own: it could not open a socket (EMFILE/ENFILE).
pub const NO_DESCRIPTORS: &str = "the core has no file descriptor left";

/// GETs a URL, expecting 2xx, reading at most `limit` bytes.
pub async fn get(client: &reqwest::Client, url: &str, limit: usize) -> Result<Bytes, String> {
    let describe = |e: reqwest::Error| describe(url, &e);
    let mut res = client.get(url).send().await.map_err(describe)?;
    let status = res.status();
    if status.is_redirection() {
        let to = res
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        return Err(format!(
            "GET {url}: HTTP {status}, redirect to {to} not followed"
        ));
    }
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {}", status.as_u16()));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = res.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > limit {
            return Err(format!("GET {url}: body larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A failed fetch of `url`, for people: what failed, never an empty URL.
fn describe(url: &str, e: &reqwest::Error) -> String {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(23 | 24))
        {
            return format!("GET {url}: {NO_DESCRIPTORS} ({io})");
        }
        src = s.source();
    }
    if e.is_timeout() {
        format!("GET {url}: timed out")
    } else if e.is_connect() {
        format!("GET {url}: connection failed")
    } else {
        let mut msg = format!("GET {url}: {e}");
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        msg
    }
}
