//! The core as users meet it: a real `tessera serve` process on a real SQLite file, plugin
//! services on loopback ports, plain HTTP calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_tests::client::{
    condition, http, manifest, plugin, post_admin, register, register_raw, remotes, within,
};
use tessera_tests::core::{Core, fast_config};
use tessera_tests::plugin_server::{TestPlugin, sri};

fn plugin_token(core: &Core, name: &str) -> String {
    core.token(&["--plugin", name, "--capabilities", "ui:panel,ui:route"])
}

/// Registers `name` at `version` served by `p` and waits until the shell lists it.
async fn register_until_listed(core: &Core, name: &str, version: &str, p: &TestPlugin) {
    let (s, body) = register(core, &plugin_token(core, name), &manifest(name, version), p).await;
    assert!(s.is_success(), "{body}");
    within(
        Duration::from_secs(5),
        &format!("{name} {version} listed"),
        || async {
            remotes(core)
                .await
                .iter()
                .any(|r| r["name"] == name && r["version"] == version)
        },
    )
    .await;
}

fn names(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// Reads `remotes` events from `/api/shell/events`.
struct Events {
    res: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(core: &Core) -> Events {
        let res = reqwest::Client::new()
            .get(format!("{}/api/shell/events", core.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Events {
            res,
            buf: String::new(),
        }
    }

    /// The next `remotes` event's list.
    async fn next(&mut self, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                if event.lines().any(|l| l == "event: remotes") {
                    let data: String = event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data: "))
                        .collect();
                    return serde_json::from_str(&data).unwrap();
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.res.chunk())
                .await
                .expect("no event in time")
                .unwrap()
                .expect("stream ended");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registered_plugin_becomes_ready_and_is_listed_with_integrity() {
    let core = Core::start(&fast_config(""));
    let p = TestPlugin::start("hello");
    let (status, body) = register(
        &core,
        &plugin_token(&core, "hello"),
        &manifest("hello", "1.0.0"),
        &p,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"], "Registering");

    let took = within(Duration::from_secs(5), "hello listed", || async {
        names(&remotes(&core).await) == ["hello"]
    })
    .await;
    assert!(took < Duration::from_secs(2), "became Ready in {took:?}");
    let list = remotes(&core).await;
    assert_eq!(list[0]["scope"], "plugin_hello");
    assert_eq!(
        list[0]["remoteEntry"],
        "/plugins/hello/1.0.0/remoteEntry.js"
    );
    assert_eq!(list[0]["integrity"], sri(&p.remote()));
    assert_eq!(list[0]["contributions"]["panels"][0]["id"], "hello.main");

    // The remote entry through the core: the exact bytes the integrity describes.
    let res = http()
        .get(format!("{}/plugins/hello/1.0.0/remoteEntry.js", core.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    // Revalidated on every use (a rebuilt UI keeps its URLs), with a strong ETag: 304 after.
    assert_eq!(res.headers()["cache-control"], "no-cache");
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
    assert_eq!(res.bytes().await.unwrap().to_vec(), p.remote());
    let res = http()
        .get(format!("{}/plugins/hello/1.0.0/remoteEntry.js", core.url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert!(res.bytes().await.unwrap().is_empty());
    // Other files come from the remote's directory; traversal is refused.
    let res = http()
        .get(format!("{}/plugins/hello/1.0.0/chunk.js", core.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http()
        .get(format!(
            "{}/plugins/hello/1.0.0/..%2f..%2fetc%2fpasswd",
            core.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = http()
        .get(format!("{}/plugins/hello/9.9.9/remoteEntry.js", core.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);

    // ETag and 304.
    let res = http()
        .get(format!("{}/api/shell/remotes", core.url))
        .send()
        .await
        .unwrap();
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let res = http()
        .get(format!("{}/api/shell/remotes", core.url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);

    // Same name and version again: idempotent.
    let (status, _) = register(
        &core,
        &plugin_token(&core, "hello"),
        &manifest("hello", "1.0.0"),
        &p,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let res = http()
        .get(format!("{}/api/shell/remotes", core.url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NOT_MODIFIED,
        "an idempotent repeat changes nothing"
    );

    // The core is ready once its first probe round is done.
    let res = http()
        .get(format!("{}/readyz", core.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_readiness_degrades_then_recovers_with_live_events() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let p = TestPlugin::start("gauge");
    register_until_listed(&core, "gauge", "1.0.0", &p).await;

    let mut events = Events::open(&core).await;
    assert_eq!(
        names(&events.next(Duration::from_secs(2)).await),
        ["gauge"],
        "current list on connect"
    );

    p.set_ready(false);
    let started = Instant::now();
    let list = events.next(Duration::from_secs(5)).await;
    assert!(list.is_empty(), "{list:?}");
    // Threshold 3 at period 0.2 s: withdrawn after about 0.6 s, not at the first failure.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "withdrawn after {:?}",
        started.elapsed()
    );
    let v = plugin(&core, &admin, "gauge").await;
    assert_eq!(v["state"], "Degraded");
    let ready = condition(&v, "Ready");
    assert_eq!(ready["reason"], "ReadinessProbeFailed");
    assert!(
        ready["message"].as_str().unwrap().contains("HTTP 503"),
        "{ready}"
    );
    assert!(v["probe"]["consecutiveFailures"].as_u64().unwrap() >= 3);
    let res = http()
        .get(format!("{}/plugins/gauge/1.0.0/remoteEntry.js", core.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        503,
        "a hidden plugin's assets are refused by the core itself"
    );

    p.set_ready(true);
    assert_eq!(names(&events.next(Duration::from_secs(5)).await), ["gauge"]);
    assert_eq!(plugin(&core, &admin, "gauge").await["state"], "Ready");

    // An unreachable remote entry withdraws it too, with its own reason.
    p.set_remote_status(404);
    assert!(events.next(Duration::from_secs(5)).await.is_empty());
    let v = plugin(&core, &admin, "gauge").await;
    let ready = condition(&v, "Ready");
    assert_eq!(ready["reason"], "RemoteEntryUnreachable", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_switch_hides_at_once_and_survives_restart() {
    let mut core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let p = TestPlugin::start("ledger");
    register_until_listed(&core, "ledger", "2.1.0", &p).await;
    let mut events = Events::open(&core).await;
    events.next(Duration::from_secs(2)).await;

    // A reason is required.
    let (s, body) = post_admin(&core, &admin, "/api/plugins/ledger/disable", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, body) = post_admin(
        &core,
        &admin,
        "/api/plugins/ledger/disable",
        json!({"reason": " "}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");

    let (s, body) = post_admin(
        &core,
        &admin,
        "/api/plugins/ledger/disable",
        json!({"reason": "incident 42"}),
    )
    .await;
    // From the acknowledgement on: the list is already empty, and the open shell hears of it
    // within 100 ms.
    let acknowledged = Instant::now();
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(events.next(Duration::from_secs(1)).await.is_empty());
    let took = acknowledged.elapsed();
    assert!(remotes(&core).await.is_empty());
    assert!(
        took < Duration::from_millis(100),
        "stream told of it {took:?} after the acknowledgement"
    );
    let res = http()
        .get(format!("{}/plugins/ledger/2.1.0/remoteEntry.js", core.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let v = plugin(&core, &admin, "ledger").await;
    assert_eq!(v["state"], "Disabled");
    assert_eq!(v["disabled"]["reason"], "incident 42");

    // Registration is accepted but the plugin stays disabled.
    let (s, body) = register(
        &core,
        &plugin_token(&core, "ledger"),
        &manifest("ledger", "2.2.0"),
        &p,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"], "Disabled");

    // Restart: the admin's decision is back.
    core.restart();
    assert_eq!(plugin(&core, &admin, "ledger").await["state"], "Disabled");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(remotes(&core).await.is_empty());

    let (s, _) = post_admin(&core, &admin, "/api/plugins/ledger/enable", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    within(Duration::from_secs(5), "ledger back", || async {
        names(&remotes(&core).await) == ["ledger"]
    })
    .await;
    assert_eq!(remotes(&core).await[0]["version"], "2.2.0");

    let audit: Value = http()
        .get(format!("{}/api/audit?plugin=ledger", core.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["register", "transition", "disable", "enable"] {
        assert!(actions.contains(&a), "{a} audited: {actions:?}");
    }
    let disable = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "disable")
        .unwrap();
    assert_eq!(disable["reason"], "incident 42");
    assert!(disable["actor"].as_str().unwrap().starts_with("admin:"));
    assert!(disable["requestId"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn new_version_keeps_the_old_one_listed_until_ready() {
    let core = Core::start(&fast_config(""));
    let p1 = TestPlugin::start("atlas");
    register(
        &core,
        &plugin_token(&core, "atlas"),
        &manifest("atlas", "1.0.0"),
        &p1,
    )
    .await;
    within(Duration::from_secs(5), "atlas 1.0.0", || async {
        remotes(&core)
            .await
            .first()
            .is_some_and(|r| r["version"] == "1.0.0")
    })
    .await;

    let p2 = TestPlugin::start("atlas");
    p2.set_ready(false);
    let (s, body) = register(
        &core,
        &plugin_token(&core, "atlas"),
        &manifest("atlas", "1.1.0"),
        &p2,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"], "Registering");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let list = remotes(&core).await;
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0]["version"], "1.0.0",
        "the last Ready version stays listed"
    );

    p2.set_ready(true);
    within(Duration::from_secs(5), "atlas 1.1.0", || async {
        remotes(&core)
            .await
            .first()
            .is_some_and(|r| r["version"] == "1.1.0")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_remote_bytes_withdraw_until_accepted() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let p = TestPlugin::start("pixel");
    register_until_listed(&core, "pixel", "1.0.0", &p).await;
    let pinned = remotes(&core).await[0]["integrity"].clone();
    // Accepting bytes that did not change changes nothing: still listed, same integrity.
    let (s, body) = post_admin(&core, &admin, "/api/plugins/pixel/accept-remote", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        (body["state"].clone(), body["integrity"].clone()),
        (json!("Ready"), pinned.clone())
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(remotes(&core).await[0]["integrity"], pinned);

    p.set_remote(b"var plugin_pixel={init:function(){},get:function(){ /* tampered */ }};");
    within(Duration::from_secs(5), "pixel withdrawn", || async {
        remotes(&core).await.is_empty()
    })
    .await;
    let v = plugin(&core, &admin, "pixel").await;
    assert_eq!(v["state"], "Degraded");
    assert!(
        v["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["reason"] == "RemoteEntryChanged"),
        "{v}"
    );
    // Probes passing again do not lift it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(remotes(&core).await.is_empty());

    let (s, body) = post_admin(&core, &admin, "/api/plugins/pixel/accept-remote", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    within(Duration::from_secs(5), "pixel back", || async {
        names(&remotes(&core).await) == ["pixel"]
    })
    .await;
    assert_eq!(remotes(&core).await[0]["integrity"], sri(&p.remote()));
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_checks_run_in_order_with_their_own_codes() {
    let core = Core::start(&fast_config(""));
    let p = TestPlugin::start("orders");
    let good = json!({"manifest": manifest("orders", "1.0.0"), "backendUrl": p.url, "remoteUrl": p.remote_url()});
    let token = plugin_token(&core, "orders");
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("<none>").to_string();

    // 401 before anything else, even with an oversized body.
    let huge = "x".repeat((1 << 20) + 10);
    let res = http()
        .post(format!("{}/api/plugins/register", core.url))
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(code(&body), "token_missing");
    assert!(body["error"]["requestId"].is_string());
    // 413
    let res = http()
        .post(format!("{}/api/plugins/register", core.url))
        .bearer_auth(&token)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(code(&res.json().await.unwrap()), "payload_too_large");
    // 400 invalid JSON / wrong shape
    let res = http()
        .post(format!("{}/api/plugins/register", core.url))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(code(&res.json().await.unwrap()), "invalid_request");
    // 400 manifest, every problem with its path
    let mut bad = good.clone();
    bad["manifest"]["version"] = json!("1.0");
    bad["manifest"]["capabilities"] = json!(["db:write"]);
    let (s, body) = register_raw(&core, &token, &bad).await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(code(&body), "invalid_manifest");
    let paths: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/capabilities/0", "/version"]);
    // 403 token for another plugin
    let (s, body) = register_raw(&core, &plugin_token(&core, "other"), &good).await;
    assert_eq!(
        (s.as_u16(), code(&body)),
        (403, "token_plugin_mismatch".into()),
        "{body}"
    );
    // 403 capabilities, listing requested/granted/missing
    let narrow = core.token(&["--plugin", "orders", "--capabilities", "ui:panel"]);
    let (s, body) = register_raw(&core, &narrow, &good).await;
    assert_eq!(
        (s.as_u16(), code(&body)),
        (403, "capability_not_granted".into()),
        "{body}"
    );
    assert_eq!(
        body["error"]["details"][0],
        json!({"requested": ["ui:panel", "ui:route"], "granted": ["ui:panel"], "missing": ["ui:route"]})
    );
    // 422 compatibility, naming field, range and version
    let mut future = good.clone();
    future["manifest"]["compat"]["core"] = json!(">=2.6 <3.0");
    let (s, body) = register_raw(&core, &token, &future).await;
    assert_eq!(
        (s.as_u16(), code(&body)),
        (422, "incompatible_core".into()),
        "{body}"
    );
    assert_eq!(
        body["error"]["message"],
        "compat.core \">=2.6 <3.0\" does not include core plugin API 2.5.0"
    );
    // 400 URL policy: SSRF targets
    for (url, rule) in [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("file:///etc/passwd", "scheme"),
        ("http://user:secret@127.0.0.1:1/", "userinfo"),
        ("http://10.1.2.3/", "allowlist"),
        ("http://metadata.google.internal/", "metadata"),
    ] {
        let mut b = good.clone();
        b["backendUrl"] = json!(url);
        let (s, body) = register_raw(&core, &token, &b).await;
        assert_eq!(
            (s.as_u16(), code(&body)),
            (400, "url_not_allowed".into()),
            "{url}: {body}"
        );
        assert_eq!(body["error"]["details"][0]["rule"], rule, "{url}");
        assert_eq!(body["error"]["details"][0]["url"], url);
    }
    // Accepted, then a collision with it is a 409 naming both plugins.
    let (s, body) = register_raw(&core, &token, &good).await;
    assert_eq!(s, 201, "{body}");
    let p2 = TestPlugin::start("thief");
    let mut m = manifest("thief", "1.0.0");
    m["ui"]["contributions"]["routes"][0]["path"] = json!("/orders/");
    let (s, body) = register(&core, &plugin_token(&core, "thief"), &m, &p2).await;
    assert_eq!(
        (s.as_u16(), code(&body)),
        (409, "contribution_conflict".into()),
        "{body}"
    );
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("\"thief\"") && msg.contains("\"orders\""),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_never_followed() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let p = TestPlugin::start("hopper");
    let body = json!({"manifest": manifest("hopper", "1.0.0"), "backendUrl": p.url, "remoteUrl": format!("{}/redirect/remoteEntry.js", p.url)});
    let (s, b) = register_raw(&core, &plugin_token(&core, "hopper"), &body).await;
    assert_eq!(s, 201, "{b}");
    within(Duration::from_secs(5), "redirect reported", || async {
        plugin(&core, &admin, "hopper").await["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| {
                c["reason"] == "RemoteEntryUnreachable"
                    && c["message"].as_str().unwrap_or("").contains("not followed")
            })
    })
    .await;
    assert!(remotes(&core).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn token_attacks_are_refused_with_their_own_codes() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let core = Core::start(&fast_config(""));
    let p = TestPlugin::start("vault");
    let good = json!({"manifest": manifest("vault", "1.0.0"), "backendUrl": p.url, "remoteUrl": p.remote_url()});
    let token = plugin_token(&core, "vault");
    let parts: Vec<&str> = token.split('.').collect();
    let payload: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    let with_payload = |f: &dyn Fn(&mut Value)| {
        let mut p = payload.clone();
        f(&mut p);
        format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(serde_json::to_vec(&p).unwrap()),
            parts[2]
        )
    };
    let other_core = Core::start(&fast_config(""));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
                parts[1]
            ),
            "token_algorithm_not_allowed",
        ),
        (
            "HS256",
            format!(
                "{}.{}.{}",
                B64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
                parts[1],
                parts[2]
            ),
            "token_algorithm_not_allowed",
        ),
        (
            "tampered payload",
            with_payload(&|p| p["caps"] = json!(["ui:panel", "ui:route", "http:outbound"])),
            "token_signature_invalid",
        ),
        (
            "other core's key",
            plugin_token(&other_core, "vault"),
            "token_unknown_key",
        ),
        ("garbage", "not-a-token".to_string(), "token_malformed"),
        ("admin token", core.admin_token(), "token_wrong_audience"),
    ];
    for (what, t, expected) in cases {
        let (s, body) = register_raw(&core, &t, &good).await;
        assert_eq!(s, 401, "{what}: {body}");
        assert_eq!(body["error"]["code"], expected, "{what}");
    }
    let expired = core.token(&[
        "--plugin",
        "vault",
        "--capabilities",
        "ui:panel,ui:route",
        "--ttl",
        "1s",
    ]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Within the 60 s leeway it still works; the expiry check itself is unit-tested with a
    // token an hour old, which the CLI cannot mint.
    let (s, _) = register_raw(&core, &expired, &good).await;
    assert_eq!(s, 201);

    // A plugin token cannot call the admin API.
    let res = http()
        .get(format!("{}/api/plugins", core.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Revoked token ids are refused, and stay refused after a restart.
    let admin = core.admin_token();
    let jti = payload["jti"].as_str().unwrap();
    let (s, body) = post_admin(
        &core,
        &admin,
        &format!("/api/tokens/{jti}/revoke"),
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = register_raw(&core, &token, &good).await;
    assert_eq!(
        (s.as_u16(), body["error"]["code"].as_str().unwrap()),
        (401, "token_revoked")
    );
    let mut core = core;
    core.restart();
    let (_, body) = register_raw(&core, &token, &good).await;
    assert_eq!(body["error"]["code"], "token_revoked");

    // Tokens minted over the API work like CLI ones.
    let (s, minted) = post_admin(
        &core,
        &admin,
        "/api/tokens",
        json!({"plugin": "vault", "capabilities": ["ui:panel", "ui:route"], "ttl": "1h"}),
    )
    .await;
    assert_eq!(s, 201, "{minted}");
    let (s, body) = register_raw(&core, minted["token"].as_str().unwrap(), &good).await;
    assert!(s == 200 || s == 201, "{body}");
    let (s, body) = post_admin(
        &core,
        &admin,
        "/api/tokens",
        json!({"plugin": "vault", "capabilities": ["db:write"]}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), body["error"]["code"].as_str().unwrap()),
        (400, "invalid_request")
    );
    // JWKS names the key every token carries.
    let jwks: Value = http()
        .get(format!("{}/.well-known/jwks.json", core.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_answer_429_with_retry_after() {
    let core = Core::start(&fast_config("rateLimit:\n  perTokenPerMinute: 3\n"));
    let p = TestPlugin::start("burst");
    let token = plugin_token(&core, "burst");
    let body = json!({"manifest": manifest("burst", "1.0.0"), "backendUrl": p.url, "remoteUrl": p.remote_url()});
    for _ in 0..3 {
        let (s, b) = register_raw(&core, &token, &body).await;
        assert!(s.is_success(), "{b}");
    }
    let res = http()
        .post(format!("{}/api/plugins/register", core.url))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["error"]["code"], "rate_limited");
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_concurrent_registrations_are_all_kept() {
    let core = Core::start(&fast_config(""));
    let p = TestPlugin::start("many");
    let mut tasks = Vec::new();
    for i in 0..100 {
        let name = format!("p{i:03}");
        let token = plugin_token(&core, &name);
        let url = core.url.clone();
        let body = json!({"manifest": manifest(&name, "1.0.0"), "backendUrl": p.url, "remoteUrl": p.remote_url()});
        tasks.push(tokio::spawn(async move {
            http()
                .post(format!("{url}/api/plugins/register"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let admin = core.admin_token();
    let all: Value = http()
        .get(format!("{}/api/plugins", core.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 100);
    let mut core = core;
    core.restart();
    let all: Value = http()
        .get(format!("{}/api/plugins", core.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        100,
        "all present after restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_registrations_loses_no_acknowledged_write() {
    let mut core = Core::start(&fast_config("rateLimit:\n  perAddressPerMinute: 100000\n"));
    let p = TestPlugin::start("crash");
    // Tokens first, so the registrations themselves race the kill.
    let work: Vec<(String, String)> = (0..200)
        .map(|i| {
            let name = format!("c{i:03}");
            let token = plugin_token(&core, &name);
            (name, token)
        })
        .collect();
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for (name, token) in work {
        let url = core.url.clone();
        let body = json!({"manifest": manifest(&name, "1.0.0"), "backendUrl": p.url, "remoteUrl": p.remote_url()});
        let client = client.clone();
        let ack = ack_tx.clone();
        tasks.push(tokio::spawn(async move {
            if let Ok(r) = client
                .post(format!("{url}/api/plugins/register"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                && r.status() == StatusCode::CREATED
            {
                let _ = ack.send(name);
            }
        }));
    }
    drop(ack_tx);
    // Kill once some registrations are acknowledged and others are still in flight.
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 30 {
        match tokio::time::timeout(Duration::from_secs(20), ack_rx.recv()).await {
            Ok(Some(name)) => acknowledged.push(name),
            _ => break,
        }
    }
    core.kill9();
    for t in tasks {
        let _ = t.await;
    }
    while let Ok(name) = ack_rx.try_recv() {
        acknowledged.push(name);
    }
    assert!(
        acknowledged.len() >= 30,
        "only {} registrations acknowledged before the kill",
        acknowledged.len()
    );
    let db = core.data_dir.join("tessera.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    core.restart();
    let admin = core.admin_token();
    let all: Value = http()
        .get(format!("{}/api/plugins", core.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let present: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    for name in &acknowledged {
        assert!(
            present.contains(&name.as_str()),
            "{name} was acknowledged but is gone"
        );
    }
    assert!(
        present.len() < 200 || acknowledged.len() == 200,
        "the kill landed mid-stream: {} of 200 present",
        present.len()
    );
    eprintln!(
        "acknowledged before kill -9: {}, present after restart: {}",
        acknowledged.len(),
        present.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_the_envelope_never_a_panic() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let c = http();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (c.get(format!("{}/nope", core.url)), 404, "not_found"),
        (
            c.delete(format!("{}/api/shell/remotes", core.url)),
            405,
            "method_not_allowed",
        ),
        (
            c.get(format!("{}/api/plugins/ghost", core.url))
                .bearer_auth(&admin),
            404,
            "plugin_not_found",
        ),
        (
            c.post(format!("{}/api/plugins/ghost/disable", core.url))
                .bearer_auth(&admin)
                .json(&json!({"reason": "x"})),
            404,
            "plugin_not_found",
        ),
        (
            c.post(format!("{}/api/plugins/ghost/enable", core.url))
                .bearer_auth(&admin),
            404,
            "plugin_not_found",
        ),
        (
            c.delete(format!("{}/api/plugins/ghost", core.url))
                .bearer_auth(&admin),
            404,
            "plugin_not_found",
        ),
        (
            c.get(format!("{}/api/audit?limit=banana", core.url))
                .bearer_auth(&admin),
            400,
            "invalid_request",
        ),
        (
            c.get(format!("{}/api/plugins", core.url))
                .header("authorization", "Basic Zm9vOmJhcg=="),
            401,
            "token_malformed",
        ),
        (
            c.post(format!("{}/api/tokens", core.url))
                .bearer_auth(&admin)
                .body("[]"),
            400,
            "invalid_request",
        ),
        (
            c.post(format!("{}/api/tokens", core.url))
                .bearer_auth(&admin)
                .json(&json!({"plugin": "Bad Name"})),
            400,
            "invalid_request",
        ),
        (
            c.post(format!("{}/api/plugins/register", core.url))
                .bearer_auth(plugin_token(&core, "x"))
                .json(&json!({"manifest": {}})),
            400,
            "invalid_request",
        ),
        (
            c.post(format!("{}/api/shell/reports", core.url))
                // What the shell\'s own fetch sends.
                .header("sec-fetch-site", "same-origin")
                .json(&json!({"plugin": "ghost", "version": "1.0.0", "message": "boom"})),
            404,
            "plugin_not_found",
        ),
        (
            c.get(format!("{}/plugins/ghost/1.0.0/remoteEntry.js", core.url)),
            404,
            "plugin_not_found",
        ),
    ];
    for (req, status, code) in cases {
        let res = req.send().await.unwrap();
        let got = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (
                got,
                body["error"]["code"].as_str().unwrap_or("<no envelope>")
            ),
            (status, code),
            "{body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(body["error"]["requestId"].is_string());
    }
    let res = c.get(format!("{}/healthz", core.url)).send().await.unwrap();
    assert_eq!(res.status(), 200, "still alive");
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_reports_become_the_ui_loaded_condition() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let p = TestPlugin::start("canvas");
    register(
        &core,
        &plugin_token(&core, "canvas"),
        &manifest("canvas", "1.0.0"),
        &p,
    )
    .await;
    let res = http()
        .post(format!("{}/api/shell/reports", core.url))
            // What the shell\'s own fetch sends.
            .header("sec-fetch-site", "same-origin")
        .json(&json!({"plugin": "canvas", "version": "1.0.0", "ok": false, "stage": "mount", "message": "TypeError: x is undefined"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let v = plugin(&core, &admin, "canvas").await;
    let c = condition(&v, "UiLoaded");
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "UiLoadFailed");
    assert!(
        c["message"].as_str().unwrap().contains("mount: TypeError"),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly_even_with_open_streams() {
    let mut core = Core::start(&fast_config(""));
    let _events = Events::open(&core).await;
    assert_eq!(core.terminate(), Some(0), "log:\n{}", core.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_valid_prometheus_text_with_the_core_figures() {
    let core = Core::start(&fast_config(""));
    let p = TestPlugin::start("meter");
    register(
        &core,
        &plugin_token(&core, "meter"),
        &manifest("meter", "1.0.0"),
        &p,
    )
    .await;
    register_raw(&core, "garbage", &json!({})).await;
    within(Duration::from_secs(5), "meter listed", || async {
        names(&remotes(&core).await) == ["meter"]
    })
    .await;
    http()
        .get(format!("{}/plugins/meter/1.0.0/chunk.js", core.url))
        .send()
        .await
        .unwrap();
    http()
        .get(format!("{}/plugins/meter/1.0.0/chunk.js", core.url))
        .send()
        .await
        .unwrap();
    let _events = Events::open(&core).await;
    // A raw path that is not a route must not become a label.
    http()
        .get(format!("{}/some/random/path/12345", core.url))
        .send()
        .await
        .unwrap();

    let res = http()
        .get(format!("{}/metrics", core.url))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = res.text().await.unwrap();
    tessera_tests::promtool_check(&text);

    for needle in [
        "tessera_registrations_total{outcome=\"accepted\"} 1",
        "tessera_registrations_total{outcome=\"token_malformed\"} 1",
        "tessera_plugins{state=\"Ready\"} 1",
        "tessera_asset_cache_misses_total 1",
        "tessera_asset_cache_hits_total 1",
        "tessera_sse_clients 1",
        "tessera_http_requests_total{method=\"POST\",route=\"/api/plugins/register\",status=\"201\"} 1",
        "tessera_probe_duration_seconds_count",
    ] {
        assert!(text.contains(needle), "missing {needle}\n{text}");
    }
    assert!(
        !text.contains("/some/random/path"),
        "raw paths leak into labels"
    );
}

/// `schemas/openapi.yaml` documents exactly the routes the core serves, and each is routed.
#[tokio::test(flavor = "multi_thread")]
async fn openapi_and_routes_agree() {
    let text =
        std::fs::read_to_string(tessera_tests::repo_root().join("schemas/openapi.yaml")).unwrap();
    let spec: Value = serde_norway::from_str(&text).unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let routed: std::collections::BTreeSet<(String, String)> = tessera_core::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routed);

    let core = Core::start(&fast_config(""));
    let c = http();
    for (method, path) in tessera_core::api::ROUTES {
        if *path == "/api/shell/events" {
            continue; // a stream; covered by the event tests
        }
        let url = format!(
            "{}{}",
            core.url,
            path.replace("{name}", "x")
                .replace("{jti}", "abc")
                .replace("{version}", "1.0.0")
                .replace("{path}", "a.js")
        );
        let req = match *method {
            "GET" => c.get(&url),
            "POST" => c.post(&url).json(&json!({})),
            "PUT" => c.put(&url).json(&json!({})),
            "PATCH" => c.patch(&url).json(&json!({})),
            "DELETE" => c.delete(&url),
            m => panic!("{m}"),
        };
        let res = req.send().await.unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("");
        assert!(
            code != "not_found" && code != "method_not_allowed",
            "{method} {path} is not routed: {status} {body}"
        );
    }
}

/// The config schema describes the config the core reads: defaults are valid, typos are refused
/// by both, and a bad file stops the core with its name.
#[test]
fn config_schema_matches_the_config_the_core_reads() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(tessera_tests::repo_root().join("schemas/config.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let defaults = serde_json::to_value(tessera_core::config::Config::default()).unwrap();
    let props: std::collections::BTreeSet<&String> =
        schema["properties"].as_object().unwrap().keys().collect();
    let fields: std::collections::BTreeSet<&String> =
        defaults.as_object().unwrap().keys().collect();
    assert_eq!(props, fields);
    for (section, value) in defaults.as_object().unwrap() {
        if let Some(obj) = value.as_object() {
            let sp: std::collections::BTreeSet<&String> =
                schema["properties"][section]["properties"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .collect();
            assert_eq!(sp, obj.keys().collect(), "{section}");
        }
    }
    let dir = tessera_tests::core::temp_dir("badcfg");
    let cfg = dir.join("c.yaml");
    std::fs::write(&cfg, "probe:\n  periodSecond: 1\n").unwrap();
    let out = std::process::Command::new(tessera_tests::tessera_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("c.yaml") && err.contains("periodSecond"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_unhealthy_is_shown_again_by_enable_or_a_new_version() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let p = TestPlugin::start("relay");
    register_until_listed(&core, "relay", "1.0.0", &p).await;

    // Enabling a plugin whose service is down does not show it.
    post_admin(
        &core,
        &admin,
        "/api/plugins/relay/disable",
        json!({"reason": "maintenance"}),
    )
    .await;
    p.set_ready(false);
    let (s, _) = post_admin(&core, &admin, "/api/plugins/relay/enable", json!({})).await;
    assert_eq!(s, 200);
    assert!(
        remotes(&core).await.is_empty(),
        "shown before its probes passed"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(remotes(&core).await.is_empty());
    p.set_ready(true);
    within(Duration::from_secs(5), "relay back", || async {
        names(&remotes(&core).await) == ["relay"]
    })
    .await;

    // A Degraded plugin that registers a new version does not bring the failing one back.
    p.set_ready(false);
    within(Duration::from_secs(5), "relay degraded", || async {
        remotes(&core).await.is_empty()
    })
    .await;
    let (s, body) = register(
        &core,
        &plugin_token(&core, "relay"),
        &manifest("relay", "1.1.0"),
        &p,
    )
    .await;
    assert_eq!(s, 201, "{body}");
    assert!(
        remotes(&core).await.is_empty(),
        "the failing 1.0.0 came back"
    );
    p.set_ready(true);
    within(Duration::from_secs(5), "relay 1.1.0", || async {
        remotes(&core)
            .await
            .first()
            .is_some_and(|r| r["version"] == "1.1.0")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_list_is_served_precompressed_to_clients_that_accept_gzip() {
    use std::io::Read;
    let core = Core::start(&fast_config(""));
    let p = TestPlugin::start("zipper");
    register_until_listed(&core, "zipper", "1.0.0", &p).await;
    let url = format!("{}/api/shell/remotes", core.url);
    let plain = http().get(&url).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain_etag = plain.headers()["etag"].to_str().unwrap().to_string();
    let plain_body = plain.bytes().await.unwrap();

    let res = http()
        .get(&url)
        .header("accept-encoding", "gzip, deflate, br")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");
    assert_eq!(res.headers()["vary"], "accept-encoding");
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(
        etag, plain_etag,
        "the two representations have their own tags"
    );
    let zipped = res.bytes().await.unwrap();
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain_body.to_vec());

    let res = http()
        .get(&url)
        .header("accept-encoding", "gzip")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let res = http()
        .get(&url)
        .header("accept-encoding", "gzip;q=0, identity")
        .send()
        .await
        .unwrap();
    assert!(
        res.headers().get("content-encoding").is_none(),
        "gzip refused with q=0"
    );
}
