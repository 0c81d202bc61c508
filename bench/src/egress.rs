//! `tessera-bench egress`: what a plugin's call out through the core's egress proxy costs,
//! against the same upstream called directly, in the same run.
//!
//! Registers one plugin (`http:outbound`, `egressAllow` naming the target's `host:port`) and,
//! with its plugin token, runs `concurrency` closed-loop callers for `seconds` each way:
//! - direct, keep-alive (what the upstream does at best);
//! - direct, a new connection per request (what the proxy does upstream: it dials each
//!   `http://` request's destination anew, after judging its address);
//! - through the egress proxy (absolute-form `http://`, keep-alive to the proxy).
//!
//! Every answer must be 200; the figures are requests a second and latency percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera_core::auth::Keys;
use tessera_sdk::Capability;

struct Figures {
    rps: f64,
    p50: f64,
    p99: f64,
    failed: usize,
}

async fn closed_loop(client: reqwest::Client, url: &str, concurrency: usize, secs: u64) -> Figures {
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0;
            while Instant::now() < until {
                let t = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => failed += 1,
                }
            }
            (lat, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        if let Ok((l, f)) = t.await {
            all.extend(l);
            failed += f;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Figures {
        rps: all.len() as f64 / secs,
        p50: crate::pct(&all, 50.0),
        p99: crate::pct(&all, 99.0),
        failed,
    }
}

/// Runs the comparison and prints one JSON object.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    core: &str,
    data_dir: &std::path::Path,
    fake: &str,
    plugin: usize,
    egress: &str,
    target: &str,
    seconds: u64,
    concurrency: usize,
) {
    let keys = Arc::new(Keys::load_or_create(data_dir).unwrap());
    let name = crate::name(plugin);
    let (token, _) = keys
        .issue_registration(
            &name,
            &[
                Capability::UiPanel,
                Capability::UiRoute,
                Capability::HttpOutbound,
            ],
            None,
            None,
        )
        .unwrap();
    let authority = url::Url::parse(target)
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap();
    let mut manifest = crate::manifest(plugin);
    manifest["capabilities"] = json!(["http:outbound", "ui:panel", "ui:route"]);
    manifest["permissions"] = json!({"network": {"egressAllow": [authority]}});
    let answer: Value = reqwest::Client::new()
        .post(format!("{core}/api/plugins/register"))
        .bearer_auth(token)
        .json(
            &json!({"manifest": manifest, "backendUrl": format!("{fake}/p/{plugin}"),
                      "remoteUrl": format!("{fake}/p/{plugin}/mf/remoteEntry.js")}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let plugin_token = answer["pluginToken"]
        .as_str()
        .unwrap_or_else(|| panic!("registration refused: {answer}"))
        .to_string();
    let pool = concurrency.max(1);
    let keep_alive = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(pool)
        .build()
        .unwrap();
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let proxied = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::all(egress)
                .unwrap()
                .basic_auth("plugin", &plugin_token),
        )
        .pool_max_idle_per_host(pool)
        .build()
        .unwrap();
    let direct = closed_loop(keep_alive, target, concurrency, seconds).await;
    let direct_new = closed_loop(fresh, target, concurrency, seconds).await;
    let through = closed_loop(proxied, target, concurrency, seconds).await;
    let f =
        |x: &Figures| json!({"rps": x.rps, "p50_ms": x.p50, "p99_ms": x.p99, "failed": x.failed});
    println!(
        "{}",
        json!({
            "direct_keepalive": f(&direct),
            "direct_new_connection": f(&direct_new),
            "egress": f(&through),
            "failed": direct.failed + direct_new.failed + through.failed,
        })
    );
}
