//! Helpers `bench/run` drives. Each subcommand prints one JSON object on stdout with its figures.
//!
//! - `fake-plugins`: one process serving N plugins' `/readyz` and `remoteEntry.js`
//!   (`/p/<i>/...`), with `/p/<i>/ready/<0|1>` to flip readiness.
//! - `register`: registers N distinct plugins with a core, C at a time (tokens minted in-process
//!   from the core's data dir): registrations/s and latency percentiles.
//! - `sqlite-baseline`: commits N rows of the same size to a bare SQLite file, one transaction
//!   each, WAL with the core's `synchronous` setting: commits/s.
//! - `gating`: flips one plugin's readiness red T times and measures until the core's event
//!   stream drops it.
//! - `events`: publish throughput (durable acceptance) and publish-to-delivery latency at a
//!   fixed rate, against a running core (`events.rs`); `nats-baseline`: bare JetStream
//!   publishes of the same size, the NATS engine's baseline.
//! - `jobs`: job lateness at a fixed schedule over a fleet, and the core's idle CPU and RSS
//!   with and without the jobs (`jobs.rs`).
//! - `sse`: opens N event streams to a core, reads the core's RSS with all of them open, then
//!   disables one plugin and measures until every stream has the list without it (fan-out).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a measuring tool: a failed step should stop loudly

mod egress;
mod events;
mod jobs;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tessera_core::auth::Keys;
use tessera_sdk::Capability;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    FakePlugins {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        count: usize,
    },
    Register {
        #[arg(long)]
        core: String,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        fake: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    SqliteBaseline {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        rows: usize,
        #[arg(long, default_value_t = 2000)]
        size: usize,
    },
    Gating {
        #[arg(long)]
        core: String,
        #[arg(long)]
        fake: String,
        #[arg(long)]
        plugin: usize,
        #[arg(long, default_value_t = 50)]
        trials: usize,
    },
    Sse {
        #[arg(long)]
        core: String,
        #[arg(long)]
        data_dir: PathBuf,
        /// The core's process id (its RSS is read from /proc).
        #[arg(long)]
        pid: u32,
        #[arg(long)]
        clients: usize,
        /// The plugin to disable (and enable again afterwards).
        #[arg(long)]
        plugin: String,
    },
    /// Publish throughput and publish-to-delivery latency.
    Events {
        #[arg(long)]
        core: String,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 10000)]
        count: usize,
        #[arg(long, default_value_t = 256)]
        size: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Bare JetStream publishes (the NATS engine's baseline).
    NatsBaseline {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 10000)]
        count: usize,
        #[arg(long, default_value_t = 512)]
        size: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Job lateness, and the core's idle CPU and RSS with and without the jobs.
    Jobs {
        #[arg(long)]
        core: String,
        #[arg(long)]
        data_dir: PathBuf,
        /// The core's process id (CPU and RSS are read from /proc).
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 1000)]
        plugins: usize,
        /// Jobs per plugin.
        #[arg(long, default_value_t = 10)]
        jobs: usize,
        #[arg(long, default_value = "* * * * *")]
        schedule: String,
        /// The schedule's period, in seconds.
        #[arg(long, default_value_t = 60)]
        period: u64,
        #[arg(long, default_value_t = 2)]
        ticks: usize,
    },
    /// Calls through the core's egress proxy against the same upstream called directly.
    Egress {
        #[arg(long)]
        core: String,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        fake: String,
        /// The fake plugin to register as the calling plugin.
        #[arg(long)]
        plugin: usize,
        /// The core's egress proxy (http://127.0.0.1:PORT).
        #[arg(long)]
        egress: String,
        /// An http:// URL the plugin may reach (its host:port in the core's egress.allow).
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// What a call token costs the proxy per request: handed out from the cache, or minted.
    CallTokens {
        #[arg(long, default_value_t = 20000)]
        iterations: usize,
    },
}

fn name(i: usize) -> String {
    format!("bench-{i:05}")
}

fn manifest(i: usize) -> Value {
    let n = name(i);
    json!({
        "name": n, "version": "1.0.0", "compat": {"core": "^2.0"},
        "capabilities": ["ui:panel", "ui:route"],
        "ui": {"mode": "ModuleFederation", "remotePath": "/mf/remoteEntry.js", "contributions": {
            "panels": [{"id": format!("{n}.main"), "title": format!("Panel of {n}")}],
            "routes": [{"path": format!("/{n}"), "component": "Page"}]
        }},
        "endpoints": {"basePath": "/api"},
        "health": {"livenessPath": "/healthz", "readinessPath": "/readyz"}
    })
}

#[tokio::main]
async fn main() {
    match Cli::parse().cmd {
        Cmd::FakePlugins { port, count } => fake_plugins(port, count).await,
        Cmd::Register {
            core,
            data_dir,
            fake,
            count,
            offset,
            concurrency,
        } => register(&core, &data_dir, &fake, count, offset, concurrency).await,
        Cmd::SqliteBaseline { dir, rows, size } => sqlite_baseline(&dir, rows, size),
        Cmd::Gating {
            core,
            fake,
            plugin,
            trials,
        } => gating(&core, &fake, plugin, trials).await,
        Cmd::Sse {
            core,
            data_dir,
            pid,
            clients,
            plugin,
        } => sse(&core, &data_dir, pid, clients, &plugin).await,
        Cmd::Events {
            core,
            data_dir,
            count,
            size,
            concurrency,
            rate,
            seconds,
        } => events::run(&core, &data_dir, count, size, concurrency, rate, seconds).await,
        Cmd::NatsBaseline {
            url,
            count,
            size,
            concurrency,
        } => events::nats_baseline(&url, count, size, concurrency).await,
        Cmd::Jobs {
            core,
            data_dir,
            pid,
            plugins,
            jobs,
            schedule,
            period,
            ticks,
        } => {
            jobs::run(
                &core, &data_dir, pid, plugins, jobs, &schedule, period, ticks,
            )
            .await
        }
        Cmd::Egress {
            core,
            data_dir,
            fake,
            plugin,
            egress,
            target,
            seconds,
            concurrency,
        } => {
            egress::run(
                &core,
                &data_dir,
                &fake,
                plugin,
                &egress,
                &target,
                seconds,
                concurrency,
            )
            .await
        }
        Cmd::CallTokens { iterations } => call_tokens(iterations),
    }
}

// === call tokens ===

fn call_tokens(iterations: usize) {
    use tessera_core::auth::call::{CallKind, CallTokens, OnBehalfOf};
    let pem = Keys::generate_pem().unwrap_or_else(|e| panic!("key: {e}"));
    let keys = Keys::from_pem(&pem).unwrap_or_else(|e| panic!("key: {e}"));
    let who = |i: usize| OnBehalfOf {
        sub: format!("user-{i}"),
        tenant: "acme".into(),
        groups: vec!["staff".into()],
    };
    let iterations = iterations.max(1);
    // Cached: one caller, as a busy panel's calls are.
    let calls = CallTokens::default();
    let alice = who(0);
    let started = std::time::Instant::now();
    for _ in 0..iterations {
        let _ = calls.token(&keys, "echo", &alice, CallKind::Request);
    }
    let cached = started.elapsed().as_secs_f64() * 1e6 / iterations as f64;
    // Minted: a new caller every time (a fresh cache per call would measure the same).
    let minted_n = iterations.min(5000);
    let callers: Vec<OnBehalfOf> = (1..=minted_n).map(who).collect();
    let started = std::time::Instant::now();
    for w in &callers {
        let _ = calls.token(&keys, "echo", w, CallKind::Request);
    }
    let minted = started.elapsed().as_secs_f64() * 1e6 / minted_n as f64;
    println!(
        "{}",
        json!({"cached_us": (cached * 100.0).round() / 100.0, "minted_us": (minted * 100.0).round() / 100.0})
    );
}

// === fake plugins ===

async fn fake_plugins(port: u16, count: usize) {
    let ready: Arc<Vec<AtomicBool>> = Arc::new((0..count).map(|_| AtomicBool::new(true)).collect());
    let app = Router::new()
        .route("/p/{i}/readyz", get(readyz))
        .route("/p/{i}/ready/{on}", post(set_ready))
        .route("/p/{i}/mf/remoteEntry.js", get(remote))
        .route(
            "/p/{i}/mf/chunk.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript")],
                    "console.log('chunk');\n".repeat(200),
                )
            }),
        )
        .with_state(ready);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    println!(
        "{}",
        json!({"listening": format!("http://127.0.0.1:{port}"), "plugins": count})
    );
    axum::serve(listener, app).await.unwrap();
}

async fn readyz(State(r): State<Arc<Vec<AtomicBool>>>, Path(i): Path<usize>) -> StatusCode {
    match r.get(i) {
        Some(b) if b.load(Ordering::Relaxed) => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn set_ready(
    State(r): State<Arc<Vec<AtomicBool>>>,
    Path((i, on)): Path<(usize, u8)>,
) -> StatusCode {
    match r.get(i) {
        Some(b) => {
            b.store(on == 1, Ordering::SeqCst);
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

async fn remote(Path(i): Path<usize>) -> impl IntoResponse {
    let scope = name(i).replace('-', "_");
    (
        [(header::CONTENT_TYPE, "text/javascript")],
        format!(
            "var plugin_{scope}={{init:function(){{}},get:function(m){{return Promise.resolve(function(){{return {{}};}});}}}};\n"
        ),
    )
}

// === registration ===

async fn register(
    core: &str,
    data_dir: &std::path::Path,
    fake: &str,
    count: usize,
    offset: usize,
    concurrency: usize,
) {
    let keys = Arc::new(Keys::load_or_create(data_dir).unwrap());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in offset..offset + count {
        let (token, _) = keys
            .issue_registration(
                &name(i),
                &[Capability::UiPanel, Capability::UiRoute],
                None,
                None,
            )
            .unwrap();
        let body = json!({"manifest": manifest(i), "backendUrl": format!("{fake}/p/{i}"), "remoteUrl": format!("{fake}/p/{i}/mf/remoteEntry.js")});
        let (client, sem, url) = (
            client.clone(),
            sem.clone(),
            format!("{core}/api/plugins/register"),
        );
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await.unwrap();
            let t = Instant::now();
            let res = client.post(url).bearer_auth(token).json(&body).send().await;
            (t.elapsed(), res.map(|r| r.status().as_u16()).unwrap_or(0))
        }));
    }
    let mut lat = Vec::with_capacity(count);
    let mut failed = 0;
    for t in tasks {
        let (d, s) = t.await.unwrap();
        if s != 201 && s != 200 {
            failed += 1;
        }
        lat.push(d.as_secs_f64() * 1000.0);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({"registrations": count, "failed": failed, "seconds": secs, "per_second": count as f64 / secs, "p50_ms": pct(&lat, 50.0), "p99_ms": pct(&lat, 99.0)})
    );
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// === bare SQLite ===

fn sqlite_baseline(dir: &std::path::Path, rows: usize, size: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("baseline.db");
    let _ = std::fs::remove_file(&path);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let _: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    conn.execute_batch("PRAGMA synchronous=FULL; CREATE TABLE t (name TEXT PRIMARY KEY, record TEXT NOT NULL, updated_at TEXT NOT NULL);").unwrap();
    let blob = "x".repeat(size);
    let started = Instant::now();
    for i in 0..rows {
        conn.execute_batch("BEGIN").unwrap();
        conn.execute(
            "INSERT INTO t (name, record, updated_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![name(i), blob, "2026-01-01T00:00:00Z"],
        )
        .unwrap();
        conn.execute_batch("COMMIT").unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"commits": rows, "seconds": secs, "per_second": rows as f64 / secs, "row_bytes": size})
    );
}

// === gating latency ===

async fn gating(core: &str, fake: &str, plugin: usize, trials: usize) {
    let client = reqwest::Client::new();
    let n = name(plugin);
    let mut samples = Vec::with_capacity(trials);
    for _ in 0..trials {
        // Make sure it is listed, then open the stream and flip readiness red.
        client
            .post(format!("{fake}/p/{plugin}/ready/1"))
            .send()
            .await
            .unwrap();
        wait_listed(&client, core, &n, true).await;
        let mut res = client
            .get(format!("{core}/api/shell/events"))
            .send()
            .await
            .unwrap();
        let mut buf = String::new();
        // Skip the current list.
        read_event(&mut res, &mut buf).await;
        let flipped = Instant::now();
        client
            .post(format!("{fake}/p/{plugin}/ready/0"))
            .send()
            .await
            .unwrap();
        loop {
            let data = read_event(&mut res, &mut buf).await;
            if !data.contains(&format!("\"name\":\"{n}\"")) {
                break;
            }
        }
        samples.push(flipped.elapsed().as_secs_f64() * 1000.0);
        drop(res);
    }
    client
        .post(format!("{fake}/p/{plugin}/ready/1"))
        .send()
        .await
        .unwrap();
    samples.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({"trials": trials, "p50_ms": pct(&samples, 50.0), "p99_ms": pct(&samples, 99.0), "max_ms": samples.last().copied().unwrap_or(0.0)})
    );
}

async fn wait_listed(client: &reqwest::Client, core: &str, n: &str, listed: bool) {
    let needle = format!("\"name\":\"{n}\"");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let body = client
            .get(format!("{core}/api/shell/remotes"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if body.contains(&needle) == listed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{n} never became listed={listed}");
}

async fn read_event(res: &mut reqwest::Response, buf: &mut String) -> String {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if event.lines().any(|l| l == "event: remotes") {
                return event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
            }
            continue;
        }
        let chunk = res.chunk().await.unwrap().expect("stream ended");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Reads `remotes` events from a stream; scans only the bytes not scanned yet, so a large
/// list arriving in many chunks costs linear time.
struct EventReader {
    res: reqwest::Response,
    buf: Vec<u8>,
    scanned: usize,
}

impl EventReader {
    async fn next_remotes(&mut self) -> Vec<u8> {
        loop {
            let from = self.scanned.saturating_sub(1);
            if let Some(i) = self.buf[from..].windows(2).position(|w| w == b"\n\n") {
                let end = from + i + 2;
                let event: Vec<u8> = self.buf.drain(..end).collect();
                self.scanned = 0;
                if event.starts_with(b"event: remotes\n") {
                    return event;
                }
                continue;
            }
            self.scanned = self.buf.len();
            let chunk = self.res.chunk().await.unwrap().expect("stream ended");
            self.buf.extend_from_slice(&chunk);
        }
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

async fn sse(core: &str, data_dir: &std::path::Path, pid: u32, clients: usize, plugin: &str) {
    let keys = Keys::load_or_create(data_dir).unwrap();
    let (admin, _) = keys.issue_admin(600).unwrap();
    let client = reqwest::Client::new();
    let rss_before = rss_mib(pid);
    let needle = format!("\"name\":\"{plugin}\"");
    let (connected_tx, mut connected_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    for _ in 0..clients {
        // One connection per stream, as separate browsers would have.
        let c = reqwest::Client::new();
        let (url, needle) = (format!("{core}/api/shell/events"), needle.clone());
        let (connected, seen) = (connected_tx.clone(), seen_tx.clone());
        tokio::spawn(async move {
            let res = c.get(url).send().await.unwrap();
            assert_eq!(res.status(), 200);
            let mut r = EventReader {
                res,
                buf: Vec::new(),
                scanned: 0,
            };
            let first = r.next_remotes().await;
            assert!(
                first.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "the plugin is not listed to begin with"
            );
            connected.send(()).unwrap();
            loop {
                let event = r.next_remotes().await;
                if !event.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    seen.send(Instant::now()).unwrap();
                    break;
                }
            }
            // Hold the stream open until the run ends.
            while let Ok(Some(_)) = r.res.chunk().await {}
        });
    }
    for _ in 0..clients {
        connected_rx.recv().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_open = rss_mib(pid);
    let t0 = Instant::now();
    let res = client
        .post(format!("{core}/api/plugins/{plugin}/disable"))
        .bearer_auth(&admin)
        .json(&json!({"reason": "bench: fan-out"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "disable: {}", res.status());
    let mut lat = Vec::with_capacity(clients);
    for _ in 0..clients {
        lat.push(
            seen_rx
                .recv()
                .await
                .unwrap()
                .duration_since(t0)
                .as_secs_f64()
                * 1000.0,
        );
    }
    let rss_after = rss_mib(pid);
    let res = client
        .post(format!("{core}/api/plugins/{plugin}/enable"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "enable: {}", res.status());
    lat.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({"clients": clients, "rss_before_mib": rss_before, "rss_open_mib": rss_open,
               "rss_after_event_mib": rss_after, "fanout_p50_ms": pct(&lat, 50.0),
               "fanout_p99_ms": pct(&lat, 99.0), "fanout_max_ms": lat.last().copied().unwrap_or(0.0)})
    );
}
