//! `tessera-bench jobs`: what the jobs surface costs, against a running core.
//!
//! This process serves `plugins` plugins, each on a port of its own (`/readyz`, a remote
//! entry, and `POST /api/jobs/<job>` that records when each run arrived and for which scheduled
//! time) and registers them with the core twice: first without jobs (the baseline: the same
//! fleet, probed), then as a new version declaring `jobs` jobs each on `schedule`. Figures:
//! - lateness: arrival at the plugin minus the scheduled time (`Tessera-Scheduled-Time`), for
//!   every run of `ticks` ticks;
//! - the core's CPU while idle between ticks, with the jobs and without (same fleet, same
//!   probing), and its RSS with and without them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tessera_core::auth::Keys;
use tessera_sdk::Capability;

/// (scheduled ms, arrival ms) of every run received.
type Arrivals = Arc<Mutex<Vec<(i64, i64)>>>;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn name(i: usize) -> String {
    format!("jobs-{i:05}")
}

async fn run_job(State(a): State<Arrivals>, headers: HeaderMap) -> &'static str {
    let now = now_ms();
    if let Some(t) = headers
        .get("tessera-scheduled-time")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        a.lock().unwrap().push((t.timestamp_millis(), now));
    }
    "ok"
}

async fn remote(Path(i): Path<usize>) -> impl IntoResponse {
    let scope = name(i).replace('-', "_");
    (
        [(header::CONTENT_TYPE, "text/javascript")],
        format!(
            "var plugin_{scope}={{init:function(){{}},get:function(){{return Promise.resolve(function(){{return {{}};}});}}}};\n"
        ),
    )
}

fn manifest(i: usize, version: &str, jobs: usize, schedule: &str) -> Value {
    let mut m = json!({
        "name": name(i), "version": version, "compat": {"core": "^2.2"},
        "ui": {"mode": "ModuleFederation", "remotePath": "/mf/remoteEntry.js"},
        "endpoints": {"basePath": "/api"},
        "health": {"livenessPath": "/healthz", "readinessPath": "/readyz"}
    });
    if jobs > 0 {
        m["jobs"] = Value::Array(
            (0..jobs)
                .map(|j| json!({"name": format!("job-{j}"), "schedule": schedule, "path": format!("/jobs/{j}")}))
                .collect(),
        );
    }
    m
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

async fn register_all(
    client: &reqwest::Client,
    core: &str,
    keys: &Keys,
    bases: &Arc<Vec<String>>,
    version: &str,
    jobs: usize,
    schedule: &str,
) {
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for (i, base) in bases.iter().enumerate() {
        let (token, _) = keys
            .issue_registration(&name(i), &[Capability::JobsSchedule], None, None)
            .unwrap();
        let body = json!({"manifest": manifest(i, version, jobs, schedule), "backendUrl": base, "remoteUrl": format!("{base}/mf/remoteEntry.js")});
        let (client, sem, url) = (
            client.clone(),
            sem.clone(),
            format!("{core}/api/plugins/register"),
        );
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await.unwrap();
            let res = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(
                res.status().is_success(),
                "registration: {}",
                res.text().await.unwrap_or_default()
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Waits until every plugin serves `version` (Ready).
async fn wait_ready(client: &reqwest::Client, core: &str, plugins: usize, version: &str) {
    for _ in 0..2400 {
        let list: Vec<Value> = client
            .get(format!("{core}/api/shell/remotes"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if list.iter().filter(|p| p["version"] == version).count() >= plugins {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("not every plugin became Ready at {version}");
}

/// Runs the figures; prints one JSON object.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    core: &str,
    data_dir: &std::path::Path,
    pid: u32,
    plugins: usize,
    jobs: usize,
    schedule: &str,
    period_secs: u64,
    ticks: usize,
) {
    let keys = Keys::load_or_create(data_dir).unwrap();
    let arrivals: Arrivals = Arc::default();
    // Each plugin its own service (its own port), as in a cluster: a burst of calls is spread
    // over the plugins' listeners, not queued at one.
    let mut bases = Vec::with_capacity(plugins);
    for i in 0..plugins {
        let app = Router::new()
            .route("/readyz", get(|| async { "ok" }))
            .route(
                "/mf/remoteEntry.js",
                get(move || async move { remote(Path(i)).await }),
            )
            .route("/api/jobs/{j}", post(run_job))
            .with_state(arrivals.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        bases.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }
    let bases = Arc::new(bases);
    let client = reqwest::Client::new();
    let period = Duration::from_secs(period_secs);
    // Idle windows sit between ticks: from a fifth of the period after a tick to four fifths.
    let idle_window = || async {
        let into = now_ms().rem_euclid(period_secs as i64 * 1000);
        let start = period.as_millis() as i64 / 5;
        let wait = (start - into).rem_euclid(period_secs as i64 * 1000);
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        let window = period * 3 / 5;
        let c0 = cpu_seconds(pid);
        let t0 = Instant::now();
        tokio::time::sleep(window).await;
        (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64()
    };

    // The same fleet without jobs: the baseline.
    register_all(&client, core, &keys, &bases, "1.0.0", 0, schedule).await;
    wait_ready(&client, core, plugins, "1.0.0").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_without = crate::rss_mib(pid);
    let cpu_without = idle_window().await;

    // With the jobs.
    register_all(&client, core, &keys, &bases, "1.0.1", jobs, schedule).await;
    wait_ready(&client, core, plugins, "1.0.1").await;
    // Count from the next tick on (the first may find plugins still settling).
    let next_tick = (now_ms() / (period_secs as i64 * 1000) + 1) * period_secs as i64 * 1000;
    arrivals.lock().unwrap().clear();
    let mut cpu_with = Vec::new();
    for _ in 0..ticks {
        cpu_with.push(idle_window().await);
    }
    // Every run of the ticks before the last idle window (each had that window to arrive).
    let last_tick = now_ms() / (period_secs as i64 * 1000) * period_secs as i64 * 1000;
    let rss_with = crate::rss_mib(pid);
    let got: Vec<(i64, i64)> = arrivals
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|(s, _)| *s >= next_tick && *s <= last_tick)
        .collect();
    let mut late: Vec<f64> = got.iter().map(|(s, a)| (a - s) as f64).collect();
    late.sort_by(f64::total_cmp);
    let ticks_seen: std::collections::BTreeSet<i64> = got.iter().map(|(s, _)| *s).collect();
    let cpu_with = cpu_with.iter().sum::<f64>() / cpu_with.len().max(1) as f64;
    println!(
        "{}",
        json!({
            "jobs": plugins * jobs, "plugins": plugins, "schedule": schedule,
            "runs": got.len(), "ticks": ticks_seen.len(), "expected_runs": ticks_seen.len() * plugins * jobs,
            "lateness_p50_ms": crate::pct(&late, 50.0), "lateness_p99_ms": crate::pct(&late, 99.0),
            "lateness_max_ms": late.last().copied().unwrap_or(0.0),
            "idle_cpu_cores_with_jobs": cpu_with, "idle_cpu_cores_without_jobs": cpu_without,
            "rss_with_mib": rss_with, "rss_without_mib": rss_without,
        })
    );
}
