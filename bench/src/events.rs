//! `tessera-bench events`: what the events surface costs, against a running core.
//!
//! A publisher (`bench-pub`, registered with a token minted from the core's data dir) and a
//! subscriber (`bench-sub`, this process's own HTTP server: `/readyz`, a remote entry, and
//! `POST /api/events` that records when each event arrived). Two figures:
//! - throughput: `count` publishes of `size` bytes of data, `concurrency` at a time, each
//!   answered 202 only once durable (every one also fans out to the subscriber);
//! - latency: publishes due at a fixed `rate` for `seconds` (open loop: each is due at its
//!   time, whether or not the last was answered), from the time it was due to the time the
//!   subscriber received it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tessera_core::auth::Keys;
use tessera_sdk::Capability;

/// Arrival times by event id.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receive(State(arrivals): State<Arrivals>, body: Bytes) -> &'static str {
    let now = Instant::now();
    if let Ok(v) = serde_json::from_slice::<Value>(&body)
        && let Some(id) = v["id"].as_str()
    {
        arrivals.lock().unwrap().insert(id.to_string(), now);
    }
    "ok"
}

fn manifest(name: &str, subscribe: bool) -> Value {
    let mut m = json!({
        "name": name, "version": "1.0.0", "compat": {"core": "^2.1"},
        "capabilities": ["events:publish"],
        "ui": {"mode": "ModuleFederation", "remotePath": "/mf/remoteEntry.js"},
        "endpoints": {"basePath": "/api"},
        "health": {"livenessPath": "/healthz", "readinessPath": "/readyz"}
    });
    if subscribe {
        m["events"] = json!({"subscribe": [{"type": "bench-pub.>", "path": "/events"}]});
    }
    m
}

async fn register(
    client: &reqwest::Client,
    core: &str,
    keys: &Keys,
    name: &str,
    caps: &[Capability],
    base: &str,
) -> String {
    let (token, _) = keys.issue_registration(name, caps, None, None).unwrap();
    let body = json!({"manifest": manifest(name, name == "bench-sub"), "backendUrl": base, "remoteUrl": format!("{base}/mf/remoteEntry.js")});
    let res = client
        .post(format!("{core}/api/plugins/register"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let answer: Value = res.json().await.unwrap();
    assert!(status.is_success(), "registering {name}: {answer}");
    answer["pluginToken"].as_str().unwrap().to_string()
}

/// Runs both figures; prints one JSON object.
pub async fn run(
    core: &str,
    data_dir: &std::path::Path,
    count: usize,
    size: usize,
    concurrency: usize,
    rate: u32,
    seconds: u64,
) {
    let arrivals: Arrivals = Arc::default();
    let app = Router::new()
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/mf/remoteEntry.js",
            get(|| async { "var plugin_bench_sub = {};" }),
        )
        .route("/api/events", post(receive))
        .with_state(arrivals.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let keys = Keys::load_or_create(data_dir).unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(64))
        .build()
        .unwrap();
    let publisher = register(
        &client,
        core,
        &keys,
        "bench-pub",
        &[Capability::EventsPublish],
        &base,
    )
    .await;
    register(
        &client,
        core,
        &keys,
        "bench-sub",
        &[Capability::EventsPublish, Capability::EventsSubscribe],
        &base,
    )
    .await;
    // The subscriber must be Ready before anything is delivered to it.
    let (admin, _) = keys.issue_admin(600).unwrap();
    for _ in 0..400 {
        let v: Value = client
            .get(format!("{core}/api/plugins/bench-sub"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["state"] == "Ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let url = format!("{core}/api/plugin/v1/events");
    let data = "x".repeat(size);
    let publish = |id: String| {
        let (client, url, token) = (client.clone(), url.clone(), publisher.clone());
        let body = json!({"type": "bench-pub.item.created", "id": id, "data": {"blob": data}});
        async move {
            let res = client.post(url).bearer_auth(token).json(&body).send().await;
            res.map(|r| r.status().as_u16()).unwrap_or(0)
        }
    };

    // Throughput: closed loop.
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let f = publish(format!("t{i}"));
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let s = f.await;
            drop(permit);
            (t.elapsed(), s)
        }));
    }
    let mut lat = Vec::with_capacity(count);
    let mut failed = 0;
    for t in tasks {
        let (d, s) = t.await.unwrap();
        failed += usize::from(s != 202);
        lat.push(d.as_secs_f64() * 1000.0);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let publish_rps = count as f64 / secs;
    let publish_p99 = super::pct(&lat, 99.0);
    // Let the throughput phase's deliveries drain before measuring latency.
    for _ in 0..600 {
        if arrivals.lock().unwrap().len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = arrivals.lock().unwrap().len();

    // Latency: open loop at `rate`.
    let total = rate as u64 * seconds;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let start = tokio::time::Instant::now();
    let mut due = HashMap::with_capacity(total as usize);
    let mut sent = Vec::with_capacity(total as usize);
    for i in 0..total {
        let at = start + period * (i as u32);
        tokio::time::sleep_until(at).await;
        let id = format!("l{i}");
        due.insert(id.clone(), at.into_std());
        sent.push(tokio::spawn(publish(id)));
    }
    let mut lfailed = 0;
    for s in sent {
        lfailed += usize::from(s.await.unwrap() != 202);
    }
    for _ in 0..400 {
        let got = arrivals
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with('l'))
            .count();
        if got as u64 >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let arrived = arrivals.lock().unwrap().clone();
    let mut e2e: Vec<f64> = due
        .iter()
        .filter_map(|(id, at)| {
            arrived
                .get(id)
                .map(|t| t.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    e2e.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "publishes": count, "failed": failed, "seconds": secs, "per_second": publish_rps,
            "publish_p50_ms": super::pct(&lat, 50.0), "publish_p99_ms": publish_p99,
            "drained": drained, "data_bytes": size,
            "rate": rate, "latency_events": total, "latency_failed": lfailed,
            "delivered": e2e.len(), "e2e_p50_ms": super::pct(&e2e, 50.0),
            "e2e_p99_ms": super::pct(&e2e, 99.0), "e2e_max_ms": e2e.last().copied().unwrap_or(0.0),
        })
    );
}

/// Bare JetStream publishes of `size` bytes, `concurrency` at a time, each awaited until the
/// server acknowledged it: the engine's own rate, for the events figures on NATS.
pub async fn nats_baseline(url: &str, count: usize, size: usize, concurrency: usize) {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream("BENCH_BASELINE").await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "BENCH_BASELINE".into(),
        subjects: vec!["bench.baseline.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (js, payload) = (js.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let ok = match js.publish(format!("bench.baseline.{i}"), payload).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            drop(permit);
            ok
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += usize::from(!t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = js.delete_stream("BENCH_BASELINE").await;
    println!(
        "{}",
        json!({"publishes": count, "failed": failed, "seconds": secs, "per_second": count as f64 / secs, "bytes": size})
    );
}
