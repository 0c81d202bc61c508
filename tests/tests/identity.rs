//! Identity between plugins and the core: the plugin token a registration answers with, the
//! plugin-facing API it opens (and nothing else), and revocation ending it at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_tests::client::{http, manifest, post_admin, register};
use tessera_tests::core::{Core, fast_config};
use tessera_tests::plugin_server::TestPlugin;

fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

async fn whoami(core: &Core, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = http().get(format!("{}/api/plugin/v1/whoami", core.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let s = res.status();
    (s, res.json().await.unwrap_or(Value::Null))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_answers_with_a_plugin_token_that_opens_only_the_plugin_api() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let reg_token = core.token(&[
        "--plugin",
        "atlas",
        "--capabilities",
        "ui:route,ui:panel,events:publish",
        "--ttl",
        "30m",
    ]);
    let p = TestPlugin::start("atlas");
    let (s, body) = register(&core, &reg_token, &manifest("atlas", "1.0.0"), &p).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let token = body["pluginToken"]
        .as_str()
        .expect("pluginToken")
        .to_string();
    // The answer is still the plugin as the admin API shows it.
    assert_eq!(body["name"], "atlas");
    assert_eq!(body["state"], "Registering");

    let c = claims(&token);
    let r = claims(&reg_token);
    assert_eq!(c["aud"], "tessera-plugin");
    assert_eq!(c["iss"], "tessera");
    assert_eq!(c["sub"], "atlas");
    assert_eq!(c["caps"], json!(["events:publish", "ui:panel", "ui:route"]));
    assert_eq!(c["reg"], r["jti"]);
    let life = c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap();
    assert!(life <= 3600, "a plugin token lives at most an hour: {life}");
    // Never past the registration token's own expiry (30 minutes here).
    assert!(c["exp"].as_u64().unwrap() <= r["exp"].as_u64().unwrap());

    let (s, me) = whoami(&core, Some(&token)).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["plugin"], "atlas");
    assert_eq!(
        me["capabilities"],
        json!(["events:publish", "ui:panel", "ui:route"])
    );
    assert!(me["expiresAt"].as_str().unwrap().ends_with('Z'), "{me}");

    // The plugin API takes nothing but a plugin token, and the admin API no plugin token.
    let (s, e) = whoami(&core, None).await;
    assert_eq!((s, code(&e)), (StatusCode::UNAUTHORIZED, "token_missing"));
    let (s, e) = whoami(&core, Some(&reg_token)).await;
    assert_eq!(
        (s, code(&e)),
        (StatusCode::UNAUTHORIZED, "token_wrong_audience")
    );
    let (s, e) = whoami(&core, Some(&admin)).await;
    assert_eq!(
        (s, code(&e)),
        (StatusCode::UNAUTHORIZED, "token_wrong_audience")
    );
    let res = http()
        .get(format!("{}/api/plugins", core.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let e: Value = res.json().await.unwrap();
    assert_eq!(code(&e), "token_wrong_audience");
    // Nor does a plugin token register.
    let (s, e) = register(&core, &token, &manifest("atlas", "1.0.0"), &p).await;
    assert_eq!(
        (s, code(&e)),
        (StatusCode::UNAUTHORIZED, "token_wrong_audience")
    );

    // An idempotent repeat renews it too (a fresh token each time).
    let (s, again) = register(&core, &reg_token, &manifest("atlas", "1.0.0"), &p).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    let renewed = again["pluginToken"].as_str().unwrap();
    assert_ne!(renewed, token);
    assert_eq!(whoami(&core, Some(renewed)).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_the_registration_token_ends_its_plugin_tokens_and_their_renewal() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let reg_token = core.token(&["--plugin", "beacon", "--capabilities", "ui:panel,ui:route"]);
    let p = TestPlugin::start("beacon");
    let (s, body) = register(&core, &reg_token, &manifest("beacon", "1.0.0"), &p).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let token = body["pluginToken"].as_str().unwrap().to_string();
    assert_eq!(whoami(&core, Some(&token)).await.0, StatusCode::OK);

    let jti = claims(&reg_token)["jti"].as_str().unwrap().to_string();
    let (s, b) = post_admin(
        &core,
        &admin,
        &format!("/api/tokens/{jti}/revoke"),
        json!({}),
    )
    .await;
    assert!(s.is_success(), "{b}");

    let (s, e) = whoami(&core, Some(&token)).await;
    assert_eq!(
        (s, code(&e)),
        (StatusCode::UNAUTHORIZED, "token_revoked"),
        "{e}"
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains(&jti),
        "{e}"
    );
    // No renewal with the revoked registration token.
    let (s, e) = register(&core, &reg_token, &manifest("beacon", "1.0.0"), &p).await;
    assert_eq!((s, code(&e)), (StatusCode::UNAUTHORIZED, "token_revoked"));
    assert!(e.get("pluginToken").is_none());
}

async fn jwks_kids(core: &Core) -> Vec<String> {
    let v: Value = http()
        .get(format!("{}/.well-known/jwks.json", core.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

async fn admin_status(core: &Core, token: &str) -> (StatusCode, Value) {
    let res = http()
        .get(format!("{}/api/plugins", core.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let s = res.status();
    (s, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_rotate_breaks_nobody_and_retire_names_what_depends_on_the_key() {
    let core = Core::start(&fast_config(""));
    let dir = core.data_dir.to_str().unwrap().to_string();
    let old_admin = core.admin_token();
    let reg_token = core.token(&["--plugin", "atlas", "--capabilities", "ui:panel,ui:route"]);
    let p = TestPlugin::start("atlas");
    let (s, body) = register(&core, &reg_token, &manifest("atlas", "1.0.0"), &p).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let old_kid = claims_kid(&old_admin);
    assert_eq!(jwks_kids(&core).await, std::slice::from_ref(&old_kid));

    let out = tessera_tests::tessera(&["keys", "rotate", "--data-dir", &dir]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // A token minted with the new key right away is accepted at once (the core reads its keys
    // again when a token names one it does not hold).
    let new_admin = core.admin_token();
    let new_kid = claims_kid(&new_admin);
    assert_ne!(new_kid, old_kid);
    assert!(
        out.stdout
            .starts_with(&format!("{new_kid} signs from now on")),
        "{}",
        out.stdout
    );
    assert_eq!(admin_status(&core, &new_admin).await.0, StatusCode::OK);
    // Everything the old key signed keeps working; the JWKS serves both.
    assert_eq!(admin_status(&core, &old_admin).await.0, StatusCode::OK);
    let (s, again) = register(&core, &reg_token, &manifest("atlas", "1.0.0"), &p).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    // New plugin tokens are signed with the new key.
    assert_eq!(claims_kid(again["pluginToken"].as_str().unwrap()), new_kid);
    let mut kids = jwks_kids(&core).await;
    kids.sort();
    let mut both = vec![old_kid.clone(), new_kid.clone()];
    both.sort();
    assert_eq!(kids, both);

    // The list names which signs and what depends on each.
    let list = tessera_tests::tessera(&["keys", "list", "--data-dir", &dir]);
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    let line = |kid: &str| {
        list.stdout
            .lines()
            .find(|l| l.starts_with(kid))
            .unwrap()
            .to_string()
    };
    assert!(line(&new_kid).contains("signing"), "{}", list.stdout);
    assert!(line(&old_kid).contains("verifying"), "{}", list.stdout);
    assert!(line(&old_kid).trim_end().ends_with(" 2"), "{}", list.stdout);

    // The signing key cannot be retired; the old one not while live tokens depend on it.
    let refused = tessera_tests::tessera(&["keys", "retire", &new_kid, "--data-dir", &dir]);
    assert_eq!(refused.code, Some(1));
    assert!(
        refused.stderr.contains("signs: rotate first"),
        "{}",
        refused.stderr
    );
    let refused = tessera_tests::tessera(&["keys", "retire", &old_kid, "--data-dir", &dir]);
    assert_eq!(refused.code, Some(1));
    for jti in [
        claims(&old_admin)["jti"].clone(),
        claims(&reg_token)["jti"].clone(),
    ] {
        assert!(
            refused.stderr.contains(jti.as_str().unwrap()),
            "{}",
            refused.stderr
        );
    }
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert_eq!(admin_status(&core, &old_admin).await.0, StatusCode::OK);

    let forced =
        tessera_tests::tessera(&["keys", "retire", &old_kid, "--force", "--data-dir", &dir]);
    assert_eq!(forced.code, Some(0), "{}", forced.stderr);
    // Within seconds the core refuses what the retired key signed, and serves one key.
    let mut refused_at = None;
    for _ in 0..50 {
        let (s, e) = admin_status(&core, &old_admin).await;
        if s == StatusCode::UNAUTHORIZED {
            refused_at = Some(e);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let e = refused_at.expect("the retired key's token still accepted after 5 s");
    assert_eq!(code(&e), "token_unknown_key");
    assert_eq!(jwks_kids(&core).await, std::slice::from_ref(&new_kid));
    assert_eq!(admin_status(&core, &new_admin).await.0, StatusCode::OK);
}

fn claims_kid(token: &str) -> String {
    tessera_core::auth::kid_of(token).unwrap()
}

/// A core with sign-in configured (the provider is never reached by these checks: sessions are
/// sealed here with the core's own session key, as its callback would).
fn core_with_sign_in() -> Core {
    let secret = tessera_tests::core::temp_dir("oidc").join("client-secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    Core::start(&fast_config(&format!(
        "auth:\n  oidc:\n    issuer: http://127.0.0.1:9\n    clientId: tessera\n    clientSecretFile: {}\n    adminGroups: [tessera-admins]\n",
        secret.display()
    )))
}

fn session(core: &Core, sub: &str, groups: &[&str], exp_in: i64) -> String {
    let key = tessera_core::users::cookie::SessionKey::load_or_create(&core.data_dir).unwrap();
    let now = tessera_core::auth::now();
    let s = tessera_core::users::Session {
        sub: sub.into(),
        name: format!("{sub} example"),
        tenant: "acme".into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        iat: now,
        exp: now.checked_add_signed(exp_in).unwrap(),
    };
    tessera_core::users::Users::seal_session(&key, &s).unwrap()
}

async fn as_user(
    core: &Core,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http()
        .request(method, format!("{}{path}", core.url))
        .header("cookie", format!("tessera_session={cookie}"));
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let s = res.status();
    (s, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_name_the_user_and_admin_groups_open_the_admin_api_from_this_origin_only() {
    let core = core_with_sign_in();
    let admin_token = core.admin_token();
    let p = TestPlugin::start("atlas");
    let reg = core.token(&["--plugin", "atlas", "--capabilities", "ui:panel,ui:route"]);
    assert!(
        register(&core, &reg, &manifest("atlas", "1.0.0"), &p)
            .await
            .0
            .is_success()
    );
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let here = format!("http://{}", core.url.trim_start_matches("http://"));

    // Without a session: 401, and the shell page sends the browser to sign in.
    let res = http()
        .get(format!("{}/api/me", core.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let e: Value = res.json().await.unwrap();
    assert_eq!(code(&e), "not_signed_in");
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/", core.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()["location"], "/auth/login?return=/");
    let res = http()
        .get(format!("{}/api/shell/remotes", core.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // A session: who and which tenant.
    let alice = session(&core, "alice", &["tessera-admins"], 3600);
    let (s, me) = as_user(&core, get.clone(), "/api/me", &alice, None, None).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(
        me,
        json!({"sub": "alice", "name": "alice example", "tenant": "acme", "groups": ["tessera-admins"], "admin": true})
    );
    assert_eq!(
        as_user(&core, get.clone(), "/api/shell/remotes", &alice, None, None)
            .await
            .0,
        StatusCode::OK
    );

    // Expired, changed, or sealed with another key: not signed in.
    let expired = session(&core, "alice", &["tessera-admins"], -10);
    let (s, e) = as_user(&core, get.clone(), "/api/me", &expired, None, None).await;
    assert_eq!((s, code(&e)), (StatusCode::UNAUTHORIZED, "not_signed_in"));
    assert!(
        e["error"]["message"].as_str().unwrap().contains("expired"),
        "{e}"
    );
    let mut tampered = alice.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        as_user(&core, get.clone(), "/api/me", &tampered, None, None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let foreign = {
        let key = tessera_core::users::cookie::SessionKey::from_base64(
            &tessera_core::users::cookie::SessionKey::generate_base64().unwrap(),
        )
        .unwrap();
        let now = tessera_core::auth::now();
        tessera_core::users::Users::seal_session(
            &key,
            &tessera_core::users::Session {
                sub: "mallory".into(),
                name: "m".into(),
                tenant: "acme".into(),
                groups: vec!["tessera-admins".into()],
                iat: now,
                exp: now + 3600,
            },
        )
        .unwrap()
    };
    assert_eq!(
        as_user(&core, get.clone(), "/api/plugins", &foreign, None, None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // A user outside adminGroups: 403 on the admin API.
    let bob = session(&core, "bob", &["devs"], 3600);
    let (s, e) = as_user(&core, get.clone(), "/api/plugins", &bob, None, None).await;
    assert_eq!(
        (s, code(&e)),
        (StatusCode::FORBIDDEN, "admin_required"),
        "{e}"
    );

    // An admin user: reads, and changes from this origin only.
    assert_eq!(
        as_user(&core, get.clone(), "/api/plugins", &alice, None, None)
            .await
            .0,
        StatusCode::OK
    );
    let body = json!({"reason": "maintenance window"});
    let (s, e) = as_user(
        &core,
        post.clone(),
        "/api/plugins/atlas/disable",
        &alice,
        Some("http://evil.example"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (s, code(&e)),
        (StatusCode::FORBIDDEN, "origin_not_allowed"),
        "{e}"
    );
    let (s, e) = as_user(
        &core,
        post.clone(),
        "/api/plugins/atlas/disable",
        &alice,
        None,
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (s, code(&e)),
        (StatusCode::FORBIDDEN, "origin_not_allowed"),
        "a change needs Origin: {e}"
    );
    let (s, v) = as_user(
        &core,
        post.clone(),
        "/api/plugins/atlas/disable",
        &alice,
        Some(&here),
        Some(body),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "Disabled");
    // The audit names the user.
    let audit =
        tessera_tests::client::get_admin(&core, &admin_token, "/api/audit?plugin=atlas&limit=1")
            .await;
    let last = &audit["items"][0];
    assert_eq!(
        (last["action"].as_str(), last["actor"].as_str()),
        (Some("disable"), Some("user:alice")),
        "{audit}"
    );
    assert_eq!(v["disabled"]["by"], "user:alice");

    // Bearer tokens keep working for automation beside sessions.
    let (s, _) = post_admin(&core, &admin_token, "/api/plugins/atlas/enable", json!({})).await;
    assert!(s.is_success());

    // Sign out: the cookie is cleared (and only from this origin).
    let res = http()
        .post(format!("{}/auth/logout", core.url))
        .header("cookie", format!("tessera_session={alice}"))
        .header("origin", &here)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let set = res.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("tessera_session=;") && set.contains("Max-Age=0"),
        "{set}"
    );
}

/// The shell's event stream carries the user's tenant's events: it ends when the session
/// that opened it ends, however long it was open.
#[tokio::test(flavor = "multi_thread")]
async fn a_shell_event_stream_ends_with_its_session() {
    let core = core_with_sign_in();
    let short = session(&core, "alice", &["devs"], 2);
    let res = http()
        .get(format!("{}/api/shell/events", core.url))
        .header("cookie", format!("tessera_session={short}"))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    let body = res.text().await.expect("the stream ends by itself");
    let took = started.elapsed();
    assert!(body.contains("event: remotes"), "{body}");
    assert!(
        took < std::time::Duration::from_secs(6),
        "ended after {took:?}"
    );
    // And a new one is refused: the session is over.
    let (s, v) = as_user(
        &core,
        reqwest::Method::GET,
        "/api/shell/events",
        &short,
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&v), "not_signed_in");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_sign_in_the_shell_is_anonymous() {
    let core = Core::start(&fast_config(""));
    let v: Value = http()
        .get(format!("{}/api/me", core.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"sub": "anonymous", "name": "anonymous", "tenant": "default", "groups": [], "admin": false})
    );
    let res = http()
        .get(format!("{}/auth/login", core.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let e: Value = res.json().await.unwrap();
    assert_eq!(code(&e), "sign_in_not_configured");
}
