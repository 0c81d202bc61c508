//! Events end to end: a real core, two plugins on the Rust SDK (`events-plugin`: one publishes
//! with `CoreClient::publish_event`, one receives with `on_event`), real HTTP on loopback. Each
//! scenario runs twice: on the SQLite outbox on disk (`::sqlite`) and on a real NATS JetStream
//! server (`::nats`). What a subscriber receives, how often, in which order, and what an admin
//! sees; and two core replicas on the fake API server sharing one NATS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_tests::client::{get_admin, http, post_admin, register_raw, text, within};
use tessera_tests::core::{Core, fast_config, temp_dir};
use tessera_tests::nats::NatsServer;
use tessera_tests::{events_plugin_bin, free_port};

mod cluster;

/// Runs a scenario `async fn name(engine: &str)` on both engines: `name::sqlite`, `name::nats`.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name("").await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats() {
                let nats = tessera_tests::nats::NatsServer::start();
                super::$name(&nats.config()).await;
            }
        }
    )*};
}

on_both_engines!(
    a_published_event_reaches_its_subscriber_once_as_a_cloudevent_with_a_call_token,
    failures_are_retried_in_order_and_a_refusal_is_dead_lettered_until_redriven,
    a_subscriber_that_was_down_receives_everything_in_order_once_it_is_back,
    accepted_events_survive_kill_9_and_a_deduplicating_subscriber_sees_each_once,
    publishing_needs_the_capability_the_publishers_own_type_and_a_sane_body,
);

/// One `events-plugin` process (kept across restarts: same port, token and record file).
struct Plugin {
    name: String,
    child: Option<Child>,
    port: u16,
    env: Vec<(String, String)>,
    token: String,
    core_url: String,
    record: PathBuf,
}

impl Plugin {
    /// Starts `name` with a token granting `caps` and the plugin's `env` (`SUBSCRIBE`, ...).
    fn start(core: &Core, name: &str, caps: &str, env: &[(&str, &str)]) -> Plugin {
        let token = core.token(&["--plugin", name, "--capabilities", caps]);
        Plugin::start_with(&core.url, name, token, env)
    }

    /// Starts `name` against the core at `core_url` with a registration token.
    fn start_with(core_url: &str, name: &str, token: String, env: &[(&str, &str)]) -> Plugin {
        let mut p = Plugin {
            name: name.to_string(),
            child: None,
            port: free_port(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            token,
            core_url: core_url.to_string(),
            record: temp_dir("events-record").join("record.jsonl"),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let child = Command::new(events_plugin_bin())
            .env("PLUGIN_NAME", &self.name)
            .env("PORT", self.port.to_string())
            .env("CORE_BASE_URL", &self.core_url)
            .env("REG_TOKEN", &self.token)
            .env("REGISTER_INTERVAL_SECONDS", "0.3")
            .env("RECORD_FILE", &self.record)
            .env_remove("REG_TOKEN_FILE")
            .env_remove("UI_REMOTE_PATH")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/api{path}", self.port)
    }

    /// Publishes `count` events of `ty` through the SDK (data `{"n": i}`); the plugin's answer.
    async fn publish(&self, body: Value) -> (StatusCode, Value) {
        let res = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
            .post(self.url("/public/publish"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    /// The next deliveries are answered with `statuses`.
    async fn answer(&self, statuses: &[u16]) {
        let res = http()
            .post(self.url("/public/answer"))
            .json(&json!({ "statuses": statuses }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }

    /// Every recorded line of `kind` (`attempt` or `handled`), across restarts.
    fn recorded(&self, kind: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["kind"] == kind)
            .collect()
    }

    /// The `n` of every handled event, in the order they were handled.
    fn handled_ns(&self) -> Vec<u64> {
        self.recorded("handled")
            .iter()
            .filter_map(|v| v["n"].as_u64())
            .collect()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn state(core: &Core, admin: &str, name: &str) -> String {
    get_admin(core, admin, &format!("/api/plugins/{name}")).await["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn ready(core: &Core, admin: &str, name: &str) {
    within(
        Duration::from_secs(20),
        &format!("{name} Ready"),
        || async { state(core, admin, name).await == "Ready" },
    )
    .await;
}

/// A publisher (`billing`) and a subscriber (`ledger`, `billing.invoice.*` at `/events`), Ready.
async fn pair(core: &Core, admin: &str) -> (Plugin, Plugin) {
    let a = Plugin::start(core, "billing", "ui:panel,events:publish", &[]);
    let b = Plugin::start(
        core,
        "ledger",
        "ui:panel,events:subscribe",
        &[
            ("SUBSCRIBE", "billing.invoice.*"),
            ("CAPABILITIES", "ui:panel"),
        ],
    );
    ready(core, admin, "billing").await;
    ready(core, admin, "ledger").await;
    (a, b)
}

async fn a_published_event_reaches_its_subscriber_once_as_a_cloudevent_with_a_call_token(
    engine: &str,
) {
    let core = Core::start(&fast_config(engine));
    let admin = core.admin_token();
    let (a, b) = pair(&core, &admin).await;

    let (status, answer) = a
        .publish(json!({"type": "billing.invoice.created", "tenant": "acme"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = answer["published"][0]["id"].as_str().unwrap().to_string();
    within(Duration::from_secs(10), "delivered", || async {
        !b.recorded("handled").is_empty()
    })
    .await;
    let got = &b.recorded("handled")[0];
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["type"], "billing.invoice.created");
    assert_eq!(got["source"], "/plugins/billing");
    assert_eq!(got["tenant"], "acme");
    // The core's own call, in the event's tenant, verified by the SDK against the JWKS.
    assert_eq!(
        got["caller"],
        json!({"sub": "core", "kind": "event", "tenant": "acme"})
    );

    // A type the subscription does not match is not delivered; a repeated id is accepted once.
    let (_, other) = a.publish(json!({"type": "billing.payment.failed"})).await;
    assert_eq!(other["published"][0]["duplicate"], false);
    let (_, again) = a
        .publish(json!({"type": "billing.invoice.created", "id": "inv-7", "count": 3}))
        .await;
    let dups: Vec<&Value> = again["published"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["duplicate"])
        .collect();
    assert_eq!(dups, [&json!(false), &json!(true), &json!(true)]);
    within(Duration::from_secs(10), "inv-7 delivered", || async {
        b.recorded("handled").iter().any(|h| h["id"] == "inv-7")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = b
        .recorded("handled")
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [id.as_str(), "inv-7"],
        "each event once, nothing unmatched"
    );
    assert_eq!(b.recorded("attempt").len(), 2);

    // What the admin sees, and the metrics (valid Prometheus text).
    let subs = get_admin(&core, &admin, "/api/events/subscriptions").await;
    assert_eq!(subs["durable"], true);
    assert_eq!(
        subs["engine"],
        if engine.is_empty() { "sqlite" } else { "nats" }
    );
    let s = &subs["items"][0];
    assert_eq!(
        (
            s["plugin"].as_str(),
            s["type"].as_str(),
            s["path"].as_str(),
            s["pending"].as_u64(),
            s["receiving"].as_bool()
        ),
        (
            Some("ledger"),
            Some("billing.invoice.*"),
            Some("/events"),
            Some(0),
            Some(true)
        )
    );
    let metrics = text(&format!("{}/metrics", core.url)).await;
    tessera_tests::promtool_check(&metrics);
    for line in [
        "tessera_events_published_total{plugin=\"billing\"} 3",
        "tessera_events_delivered_total{plugin=\"ledger\"} 2",
        "tessera_events_durable 1",
        "tessera_events_pending{plugin=\"ledger\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

async fn failures_are_retried_in_order_and_a_refusal_is_dead_lettered_until_redriven(engine: &str) {
    let core = Core::start(&fast_config(engine));
    let admin = core.admin_token();
    let (a, b) = pair(&core, &admin).await;

    // 500 twice, then 200: three attempts with backoff (about 1 s, then 2 s); the second
    // event waits behind the first.
    b.answer(&[500, 500]).await;
    let started = std::time::Instant::now();
    a.publish(json!({"type": "billing.invoice.created", "count": 2}))
        .await;
    within(Duration::from_secs(15), "both delivered", || async {
        b.handled_ns().len() == 2
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(2300),
        "backoff: {:?}",
        started.elapsed()
    );
    let attempts: Vec<(u64, u64)> = b
        .recorded("attempt")
        .iter()
        .map(|v| (v["n"].as_u64().unwrap(), v["status"].as_u64().unwrap()))
        .collect();
    // Status 0: answered by the SDK's handler (200).
    assert_eq!(attempts, [(0, 500), (0, 500), (0, 0), (1, 0)]);
    assert_eq!(b.handled_ns(), [0, 1]);
    let metrics = text(&format!("{}/metrics", core.url)).await;
    assert!(
        metrics.contains("tessera_events_retried_total{plugin=\"ledger\"} 2"),
        "{metrics}"
    );

    // 400: not retried, dead-lettered at once; listed for the admin; redriven, delivered.
    b.answer(&[400]).await;
    a.publish(json!({"type": "billing.invoice.voided"})).await;
    let list = within(Duration::from_secs(10), "dead-lettered", || async {
        get_admin(
            &core,
            &admin,
            "/api/events/dead-letters?plugin=ledger&type=billing.invoice.voided",
        )
        .await["items"]
            .as_array()
            .is_some_and(|i| i.len() == 1)
    })
    .await;
    let _ = list;
    let dead = get_admin(&core, &admin, "/api/events/dead-letters?plugin=ledger").await["items"][0]
        .clone();
    assert_eq!(dead["attempts"], 1);
    assert_eq!(dead["event"]["type"], "billing.invoice.voided");
    assert!(
        dead["reason"].as_str().unwrap().contains("answered 400"),
        "{dead}"
    );
    assert_eq!(
        get_admin(&core, &admin, "/api/events/dead-letters?plugin=billing").await["items"],
        json!([])
    );
    // Not redelivered by itself.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.handled_ns(), [0, 1]);
    let id = dead["id"].as_str().unwrap();
    let (status, body) = post_admin(
        &core,
        &admin,
        &format!("/api/events/dead-letters/{id}/redrive"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    within(Duration::from_secs(10), "redriven", || async {
        b.handled_ns().len() == 3
    })
    .await;
    assert_eq!(
        get_admin(&core, &admin, "/api/events/dead-letters").await["items"],
        json!([])
    );
    let (status, body) = post_admin(
        &core,
        &admin,
        &format!("/api/events/dead-letters/{id}/redrive"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "dead_letter_not_found");
    let audit = get_admin(&core, &admin, "/api/audit?limit=20").await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "redrive-event"),
        "{audit}"
    );

    // Deleting a dead letter.
    b.answer(&[422]).await;
    a.publish(json!({"type": "billing.invoice.voided"})).await;
    within(Duration::from_secs(10), "dead again", || async {
        get_admin(&core, &admin, "/api/events/dead-letters").await["items"]
            .as_array()
            .is_some_and(|i| i.len() == 1)
    })
    .await;
    let id = get_admin(&core, &admin, "/api/events/dead-letters").await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = http()
        .delete(format!("{}/api/events/dead-letters/{id}", core.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get_admin(&core, &admin, "/api/events/dead-letters").await["items"],
        json!([])
    );
}

async fn a_subscriber_that_was_down_receives_everything_in_order_once_it_is_back(engine: &str) {
    let core = Core::start(&fast_config(engine));
    let admin = core.admin_token();
    let (a, mut b) = pair(&core, &admin).await;
    b.kill();
    a.publish(json!({"type": "billing.invoice.created", "count": 20}))
        .await;
    within(Duration::from_secs(10), "ledger Degraded", || async {
        state(&core, &admin, "ledger").await == "Degraded"
    })
    .await;
    let s = get_admin(&core, &admin, "/api/events/subscriptions").await["items"][0].clone();
    assert_eq!(s["pending"], 20, "{s}");
    assert_eq!(s["receiving"], false);
    // Down long enough for the backoff to pass 16 s; nothing is dead-lettered for it.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        get_admin(&core, &admin, "/api/events/dead-letters").await["items"],
        json!([])
    );
    b.spawn();
    let took = within(Duration::from_secs(20), "all 20 delivered", || async {
        b.handled_ns().len() == 20
    })
    .await;
    assert_eq!(b.handled_ns(), (0..20).collect::<Vec<_>>());
    // Delivered once Ready again, not after the backoff's next turn.
    assert!(took < Duration::from_secs(10), "{took:?}");
    let s = get_admin(&core, &admin, "/api/events/subscriptions").await["items"][0].clone();
    assert_eq!(s["pending"], 0, "{s}");

    // Disabled by an admin: its events wait (no attempt, no dead letter) until it is enabled.
    let attempts = b.recorded("attempt").len();
    let (s, body) = post_admin(
        &core,
        &admin,
        "/api/plugins/ledger/disable",
        json!({"reason": "maintenance"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    a.publish(json!({"type": "billing.invoice.created", "count": 3}))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        b.recorded("attempt").len(),
        attempts,
        "nothing sent to a disabled plugin"
    );
    let s = get_admin(&core, &admin, "/api/events/subscriptions").await["items"][0].clone();
    assert_eq!(
        (s["pending"].as_u64(), s["receiving"].as_bool()),
        (Some(3), Some(false)),
        "{s}"
    );
    assert_eq!(
        get_admin(&core, &admin, "/api/events/dead-letters").await["items"],
        json!([])
    );
    let (s, body) = post_admin(&core, &admin, "/api/plugins/ledger/enable", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    within(
        Duration::from_secs(10),
        "the 3 delivered once enabled",
        || async { b.handled_ns().len() == 23 },
    )
    .await;
    assert_eq!(&b.handled_ns()[20..], [0, 1, 2]);
}

/// A new version that no longer subscribes: what waited for the old subscription is not sent to
/// a path the plugin may not serve any more; on SQLite it becomes dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_a_new_version_drops_ends_and_its_waiting_events_are_dead_lettered() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let (a, mut b) = pair(&core, &admin).await;
    let (s, body) = post_admin(
        &core,
        &admin,
        "/api/plugins/ledger/disable",
        json!({"reason": "upgrade"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    a.publish(json!({"type": "billing.invoice.created", "count": 2}))
        .await;
    // Version 2 of ledger subscribes to nothing.
    b.kill();
    b.env.retain(|(k, _)| k != "SUBSCRIBE");
    b.env.push(("PLUGIN_VERSION".into(), "2.0.0".into()));
    // On a port of its own: nothing the core still sends to version 1 can reach version 2.
    b.port = free_port();
    b.spawn();
    post_admin(&core, &admin, "/api/plugins/ledger/enable", json!({})).await;
    within(Duration::from_secs(20), "ledger 2.0.0 Ready", || async {
        let v = get_admin(&core, &admin, "/api/plugins/ledger").await;
        v["state"] == "Ready" && v["version"] == "2.0.0"
    })
    .await;
    within(Duration::from_secs(10), "dead-lettered", || async {
        get_admin(&core, &admin, "/api/events/dead-letters?plugin=ledger").await["items"]
            .as_array()
            .is_some_and(|i| i.len() == 2)
    })
    .await;
    let dead = get_admin(&core, &admin, "/api/events/dead-letters?plugin=ledger").await;
    assert!(
        dead["items"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no longer subscribes"),
        "{dead}"
    );
    assert!(b.recorded("attempt").is_empty());
    assert_eq!(
        get_admin(&core, &admin, "/api/events/subscriptions").await["items"],
        json!([])
    );
}

async fn accepted_events_survive_kill_9_and_a_deduplicating_subscriber_sees_each_once(
    engine: &str,
) {
    // One address across restarts, so the plugins find the core again.
    let listen = format!("127.0.0.1:{}", free_port());
    let mut core = Core::start_at(&temp_dir("events-kill"), &fast_config(engine), &listen);
    let admin = core.admin_token();
    let (a, mut b) = pair(&core, &admin).await;
    b.kill();
    let (status, answer) = a
        .publish(json!({"type": "billing.invoice.created", "count": 1000}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["published"].as_array().unwrap().len(), 1000);
    // Accepted and undelivered: the core dies without a chance to flush anything.
    core.kill9();
    core.restart();
    b.spawn();
    within(Duration::from_secs(30), "deliveries under way", || async {
        b.handled_ns().len() >= 200
    })
    .await;
    // Again, in the middle of delivering: some answers are not recorded yet.
    core.kill9();
    core.restart();
    within(Duration::from_secs(60), "all 1,000 delivered", || async {
        b.handled_ns().len() >= 1000
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ns = b.handled_ns();
    assert_eq!(ns, (0..1000).collect::<Vec<_>>(), "each once, in order");
    let attempts = b.recorded("attempt").len();
    assert!(attempts >= 1000, "{attempts}");
    let s = get_admin(&core, &admin, "/api/events/subscriptions").await["items"][0].clone();
    assert_eq!(s["pending"], 0, "{s}");
}

/// Registers `name` (a panel, `subscribe` as its `events.subscribe` unless null) at an address
/// nothing serves, with a token granting `caps`: the registration's status and answer (with
/// its `pluginToken`).
async fn register_bare(
    core: &Core,
    name: &str,
    caps: &str,
    subscribe: Value,
) -> (StatusCode, Value) {
    let token = core.token(&["--plugin", name, "--capabilities", caps]);
    let mut m = tessera_tests::client::manifest(name, "1.0.0");
    m["ui"]["contributions"]["routes"] = json!([]);
    m["capabilities"] = json!(["ui:panel"]);
    if !subscribe.is_null() {
        m["events"] = json!({ "subscribe": subscribe });
    }
    let body = json!({"manifest": m, "backendUrl": "http://127.0.0.1:9", "remoteUrl": "http://127.0.0.1:9/mf/remoteEntry.js"});
    register_raw(core, &token, &body).await
}

/// `POST /api/plugin/v1/events` with `token`.
async fn publish_raw(core: &Core, token: &str, body: &Value) -> reqwest::Response {
    http()
        .post(format!("{}/api/plugin/v1/events", core.url))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn publishing_needs_the_capability_the_publishers_own_type_and_a_sane_body(engine: &str) {
    let core = Core::start(&fast_config(engine));
    let admin = core.admin_token();
    let core = &core;
    let publish = |token: String, body: Value| async move {
        let res = publish_raw(core, &token, &body).await;
        let s = res.status();
        (s, res.json::<Value>().await.unwrap_or(Value::Null))
    };
    let (s, reg) = register_bare(core, "quiet", "ui:panel", Value::Null).await;
    assert_eq!(s, StatusCode::CREATED, "{reg}");
    let quiet = reg["pluginToken"].as_str().unwrap().to_string();
    let (s, body) = publish(quiet, json!({"type": "quiet.x", "data": 1})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "capability_not_granted");
    assert_eq!(
        body["error"]["details"][0]["missing"],
        json!(["events:publish"])
    );

    let (_, reg) = register_bare(core, "shop", "ui:panel,events:publish", Value::Null).await;
    let shop = reg["pluginToken"].as_str().unwrap().to_string();
    let cases = [
        (
            json!({"type": "billing.invoice.created", "data": {}}),
            StatusCode::FORBIDDEN,
            "event_type_not_owned",
        ),
        (
            json!({"type": "shop", "data": {}}),
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
        (
            json!({"type": "shop.order.created"}),
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
        (
            json!({"type": "shop.order.created", "data": 1, "tenant": "a b"}),
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
        (
            json!({"type": "shop.order.created", "data": "x".repeat(300 * 1024)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let (s, answer) = publish(shop.clone(), body.clone()).await;
        assert_eq!(
            (s, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{answer}"
        );
    }
    let (s, ok) = publish(
        shop.clone(),
        json!({"type": "shop.order.created", "data": {"total": 3}}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ok}");
    assert_eq!(ok["source"], "/plugins/shop");
    // Neither an admin token nor none at all.
    let (s, _) = publish(
        admin.clone(),
        json!({"type": "shop.order.created", "data": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Subscribing needs the grant: the registration is refused.
    let (s, body) = register_bare(
        core,
        "audit",
        "ui:panel",
        json!([{"type": "shop.>", "path": "/events"}]),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "capability_not_granted");
    assert_eq!(
        body["error"]["details"][0]["missing"],
        json!(["events:subscribe"])
    );
}

/// Two core replicas on the fake API server share one NATS: a plugin publishes through replica
/// A, A is killed right after the 202, and replica B delivers the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_accepted_by_a_replica_killed_right_after_the_202_is_delivered_by_the_other() {
    use tessera_sdk::Capability::{EventsPublish, EventsSubscribe, UiPanel};
    let nats = NatsServer::start();
    let k = cluster::Cluster::fake().await;
    // A replica that dies holding a delivery gives it back after the ack wait (the delivery
    // timeout and 5 s, at least 10 s).
    let config = format!(
        "{}events:\n  deliveryTimeoutSeconds: 2\n  nats:\n    url: {}\n",
        cluster::config(),
        nats.url()
    );
    let mut a = k.replica("core-a", &config);
    let b = k.replica("core-b", &config);
    let token = |name: &str, caps: &[tessera_sdk::Capability]| {
        k.keys()
            .issue_registration(name, caps, None, None)
            .unwrap()
            .0
    };
    let admin = k.admin();
    let publisher = Plugin::start_with(
        &a.url,
        "billing",
        token("billing", &[UiPanel, EventsPublish]),
        &[],
    );
    let subscriber = Plugin::start_with(
        &b.url,
        "ledger",
        token("ledger", &[UiPanel, EventsSubscribe]),
        &[
            ("SUBSCRIBE", "billing.invoice.*"),
            ("CAPABILITIES", "ui:panel"),
        ],
    );
    for (core, name) in [(&a, "billing"), (&b, "ledger")] {
        within(
            Duration::from_secs(20),
            &format!("{name} Ready"),
            || async {
                get_admin(core, &admin, &format!("/api/plugins/{name}")).await["state"] == "Ready"
            },
        )
        .await;
    }
    for core in [&a, &b] {
        let subs = get_admin(core, &admin, "/api/events/subscriptions").await;
        assert_eq!(
            (subs["durable"].as_bool(), subs["engine"].as_str()),
            (Some(true), Some("nats")),
            "{subs}"
        );
    }
    // Nothing delivered yet: the subscriber records every attempt.
    let (status, answer) = publisher
        .publish(json!({"type": "billing.invoice.created", "count": 5}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    a.kill9();
    within(
        Duration::from_secs(30),
        "all 5 delivered through B",
        || async { subscriber.handled_ns().len() >= 5 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(subscriber.handled_ns(), [0, 1, 2, 3, 4]);
    let subs = get_admin(&b, &admin, "/api/events/subscriptions").await;
    assert_eq!(subs["items"][0]["pending"], 0, "{subs}");
    drop(b);
    k.cleanup().await;
}

/// A plugin publishing past `events.publishPerMinute` is told to wait (429 with Retry-After);
/// another plugin is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_past_the_rate_limit_is_refused_with_retry_after() {
    let core = Core::start(&fast_config("events:\n  publishPerMinute: 3\n"));
    let core = &core;
    let mut tokens = Vec::new();
    for name in ["shop", "other"] {
        let (s, v) = register_bare(core, name, "ui:panel,events:publish", Value::Null).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        tokens.push(v["pluginToken"].as_str().unwrap().to_string());
    }
    let (shop, other) = (tokens[0].clone(), tokens[1].clone());
    let publish = |token: String, ty: &'static str| async move {
        publish_raw(core, &token, &json!({"type": ty, "data": 1})).await
    };
    for _ in 0..3 {
        assert_eq!(
            publish(shop.clone(), "shop.order.created").await.status(),
            StatusCode::ACCEPTED
        );
    }
    let refused = publish(shop.clone(), "shop.order.created").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    assert_eq!(
        publish(other.clone(), "other.thing.done").await.status(),
        StatusCode::ACCEPTED
    );
}
