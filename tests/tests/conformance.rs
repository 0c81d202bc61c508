//! What a new user hits on day one, through the real core: declared UI needs its grant,
//! parameterised routes collide by shape, a restarted core never lists a remote it cannot
//! serve, a rebuilt entry never meets old chunks, and the token list.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_tests::client::{
    condition, get_admin, http, manifest, post_admin, register, remotes, within,
};
use tessera_tests::core::{Core, fast_config};
use tessera_tests::plugin_server::{TestPlugin, sri};

async fn get(url: &str) -> (u16, Vec<u8>) {
    let res = http().get(url).send().await.unwrap();
    let s = res.status().as_u16();
    (s, res.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_panels_and_routes_need_their_grant_even_when_not_listed() {
    let core = Core::start(&fast_config(""));
    let p = TestPlugin::start("inventory");
    let mut m = manifest("inventory", "1.0.0");
    m["capabilities"] = json!([]); // declared, not listed
    let token = core.token(&["--plugin", "inventory"]); // grants nothing
    let (status, body) = register(&core, &token, &m, &p).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "capability_not_granted");
    assert_eq!(
        body["error"]["details"][0],
        json!({"requested": ["ui:panel", "ui:route"], "granted": [], "missing": ["ui:panel", "ui:route"]})
    );
    assert!(remotes(&core).await.is_empty());

    let token = core.token(&[
        "--plugin",
        "inventory",
        "--capabilities",
        "ui:panel,ui:route",
    ]);
    let (status, body) = register(&core, &token, &m, &p).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let enabled = condition(&body, "Enabled");
    // Nobody acted: the plugin starts enabled, no admin enabled it.
    assert_eq!(enabled["reason"], "EnabledByDefault", "{enabled}");
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_that_differ_only_in_parameter_names_collide_across_plugins() {
    let core = Core::start(&fast_config(""));
    let (a, b) = (TestPlugin::start("shop"), TestPlugin::start("stock"));
    let mut ma = manifest("shop", "1.0.0");
    ma["ui"]["contributions"]["routes"] =
        json!([{"path": "/inventory/items/:sku", "component": "Routes#Item"}]);
    let token = |n: &str| core.token(&["--plugin", n, "--capabilities", "ui:panel,ui:route"]);
    let (s, body) = register(&core, &token("shop"), &ma, &a).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let mut mb = manifest("stock", "1.0.0");
    mb["ui"]["contributions"]["routes"] =
        json!([{"path": "/inventory/items/:id/", "component": "Item"}]);
    let (s, body) = register(&core, &token("stock"), &mb, &b).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "contribution_conflict");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("\"/inventory/items/:id/\"") && msg.contains("\"shop\""),
        "{msg}"
    );
    // Another shape is another route.
    mb["ui"]["contributions"]["routes"] =
        json!([{"path": "/inventory/items/:id/history", "component": "History"}]);
    let (s, body) = register(&core, &token("stock"), &mb, &b).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
}

/// After a restart the stored record says Ready before this core holds the entry's bytes: the
/// list must never name a remote the asset route then refuses. Every poll from the first
/// answer on must find each listed entry servable, with the pinned bytes.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_every_listed_remote_entry_is_served() {
    let mut core = Core::start(&fast_config(""));
    let p = TestPlugin::start("hello");
    let token = core.token(&["--plugin", "hello", "--capabilities", "ui:panel,ui:route"]);
    let (s, body) = register(&core, &token, &manifest("hello", "1.0.0"), &p).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    within(Duration::from_secs(5), "hello listed", || async {
        !remotes(&core).await.is_empty()
    })
    .await;

    for _ in 0..3 {
        core.restart();
        let start = Instant::now();
        let mut served = 0;
        while start.elapsed() < Duration::from_secs(2) {
            let Ok(res) = http()
                .get(format!("{}/api/shell/remotes", core.url))
                .send()
                .await
            else {
                continue;
            };
            let list: Vec<Value> = res.json().await.unwrap_or_default();
            for r in &list {
                let (status, bytes) = get(&format!(
                    "{}{}",
                    core.url,
                    r["remoteEntry"].as_str().unwrap()
                ))
                .await;
                assert_eq!(
                    status,
                    200,
                    "listed but not served: {}",
                    String::from_utf8_lossy(&bytes)
                );
                assert_eq!(sri(&bytes), r["integrity"].as_str().unwrap());
                served += 1;
            }
        }
        assert!(served > 0, "hello was never listed after the restart");
    }
}

/// A rebuilt UI under the same version: a new entry, a new chunk. Once the core pins the new
/// entry, the chunk it serves is the new one, though the old one was cached under the same
/// URL; and the ETag changes with the entry.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_entry_never_meets_the_old_chunks() {
    let core = Core::start(&fast_config(""));
    let p = TestPlugin::start("hello");
    p.set_chunk(b"console.log('build 1');\n");
    let token = core.token(&["--plugin", "hello", "--capabilities", "ui:panel,ui:route"]);
    let m = manifest("hello", "1.0.0");
    let (s, body) = register(&core, &token, &m, &p).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    within(Duration::from_secs(5), "hello listed", || async {
        !remotes(&core).await.is_empty()
    })
    .await;
    let chunk = format!("{}/plugins/hello/1.0.0/chunk.js", core.url);
    let first = http().get(&chunk).send().await.unwrap();
    let first_etag = first.headers()["etag"].clone();
    assert_eq!(first.bytes().await.unwrap(), "console.log('build 1');\n");

    // Rebuild: new chunk, new entry bytes; the same version registers again.
    p.set_chunk(b"console.log('build 2');\n");
    p.set_remote(b"var plugin_hello={init:function(){},get:function(){return Promise.resolve(function(){return {build:2};});}};\n");
    let admin = core.admin_token();
    within(
        Duration::from_secs(5),
        "the changed entry withdrawn",
        || async { remotes(&core).await.is_empty() },
    )
    .await;
    let (s, body) = register(&core, &token, &m, &p).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    within(Duration::from_secs(5), "the new entry listed", || async {
        remotes(&core)
            .await
            .first()
            .is_some_and(|r| r["integrity"] == sri(&p.remote()))
    })
    .await;
    let second = http().get(&chunk).send().await.unwrap();
    assert_ne!(second.headers()["etag"], first_etag);
    assert_eq!(second.bytes().await.unwrap(), "console.log('build 2');\n");
    let rec = get_admin(&core, &admin, "/api/plugins/hello").await;
    assert_eq!(rec["state"], "Ready", "{rec}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_list_shows_what_was_minted_and_what_was_revoked_never_a_token() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let cli = core.token(&["--plugin", "hello", "--capabilities", "ui:panel"]);
    let (s, minted) = post_admin(
        &core,
        &admin,
        "/api/tokens",
        json!({"plugin": "shop", "capabilities": ["ui:route"], "ttl": "1h"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{minted}");
    let jti = minted["jti"].as_str().unwrap().to_string();
    let (s, body) = post_admin(
        &core,
        &admin,
        &format!("/api/tokens/{jti}/revoke"),
        json!({}),
    )
    .await;
    assert!(s.is_success(), "{body}");

    let res = http()
        .get(format!("{}/api/tokens", core.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        !text.contains(&cli) && !text.contains(&admin),
        "a token leaked: {text}"
    );
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    let by_subject = |s: &str| list.iter().find(|t| t["subject"] == s).unwrap().clone();
    let hello = by_subject("hello");
    assert_eq!(hello["kind"], "registration");
    assert_eq!(hello["capabilities"], json!(["ui:panel"]));
    assert_eq!(hello["expires"], Value::Null);
    assert_eq!(hello["revoked"], false);
    let shop = by_subject("shop");
    assert_eq!(shop["jti"], jti.as_str());
    assert_eq!(shop["revoked"], true);
    assert!(shop["expires"].is_string(), "{shop}");
    assert!(
        shop["issuedBy"].as_str().unwrap().starts_with("admin:"),
        "{shop}"
    );
    assert_eq!(by_subject("admin")["kind"], "admin");

    // Without an admin token: 401 in the envelope.
    let res = http()
        .get(format!("{}/api/tokens", core.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[test]
fn token_issue_refuses_a_data_dir_without_a_key_unless_init() {
    let dir = tessera_tests::core::temp_dir("no-key");
    let run = |extra: &[&str]| {
        std::process::Command::new(tessera_tests::tessera_bin())
            .args(["token", "issue", "--admin", "--data-dir"])
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds no signing key") && err.contains("--init"),
        "{err}"
    );
    assert!(!dir.join("signing-key.pem").exists());
    let out = run(&["--init"]);
    assert!(out.status.success(), "{out:?}");
    assert!(dir.join("signing-key.pem").exists());
    assert!(run(&[]).status.success());
}
