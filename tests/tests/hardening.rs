//! The core as an attacker meets it: idle and slow connections, plugin files that would run as
//! pages, cross-site reports, and the small refusals that must answer in the envelope.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_tests::client::{
    condition, get_admin, http, manifest, plugin, post_admin, register, remotes, within,
};
use tessera_tests::core::{Core, fast_config};
use tessera_tests::plugin_server::TestPlugin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn addr(core: &Core) -> std::net::SocketAddr {
    core.url
        .trim_start_matches("http://")
        .parse()
        .expect("core address")
}

/// Reads until the peer closes (or `limit` passes); what was read and whether it closed.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

async fn ready_plugin(core: &Core) -> TestPlugin {
    let p = TestPlugin::start("hello");
    let token = core.token(&["--plugin", "hello", "--capabilities", "ui:panel,ui:route"]);
    let (s, body) = register(core, &token, &manifest("hello", "1.0.0"), &p).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    within(Duration::from_secs(5), "hello listed", || async {
        !remotes(core).await.is_empty()
    })
    .await;
    p
}

/// 700 idle sockets against a core whose open-file limit is 512: the ones past the caps are
/// answered 503 and closed, `/healthz` answers throughout, the prober keeps its descriptors
/// (the plugin stays Ready over many probe rounds), and the idle ones are closed after the
/// header-read timeout.
#[tokio::test(flavor = "multi_thread")]
async fn idle_sockets_cannot_stop_the_core_or_withdraw_plugins() {
    let core = Core::start_with_open_file_limit(
        &fast_config("server:\n  headerReadTimeoutSeconds: 2\n  maxConnectionsPerClient: 200\n"),
        512,
    );
    let admin = core.admin_token();
    let _p = ready_plugin(&core).await;
    let target = addr(&core);

    // The flood comes from another loopback address than the checks below.
    let mut flood = Vec::new();
    for _ in 0..700 {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        if let Ok(s) = sock.connect(target).await {
            flood.push(s);
        }
    }
    assert!(
        flood.len() >= 600,
        "only {} connections opened",
        flood.len()
    );
    let started = Instant::now();

    // Past the per-client cap: a 503 in the envelope, then closed.
    let (bytes, closed) = read_to_close(flood.last_mut().unwrap(), Duration::from_secs(2)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed, "a connection over the cap was left open");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("\"code\":\"too_many_connections\""), "{text}");
    assert!(text.contains("\"requestId\""), "{text}");

    // The core answers, and the plugin stays Ready while the flood holds its sockets open.
    while started.elapsed() < Duration::from_millis(1500) {
        let res = http()
            .get(format!("{}/healthz", core.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(plugin(&core, &admin, "hello").await["state"], "Ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Idle connections are closed once the header-read timeout passes.
    let (_, closed) = read_to_close(&mut flood[0], Duration::from_secs(3)).await;
    assert!(
        closed,
        "an idle connection outlived the header-read timeout"
    );
    let metrics = http()
        .get(format!("{}/metrics", core.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let shed = metrics
        .lines()
        .find(|l| l.starts_with("tessera_connections_shed_total{reason=\"per_client\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(shed >= 400.0, "shed {shed}:\n{metrics}");
    let v = plugin(&core, &admin, "hello").await;
    assert_eq!(v["state"], "Ready", "{v}");
    assert_eq!(condition(&v, "Ready")["reason"], "Passed", "{v}");
    assert!(core.log().contains("too many connections"));
}

/// Past the global cap every new connection gets the 503 envelope and is closed; once the
/// holders go, the core answers again.
#[tokio::test(flavor = "multi_thread")]
async fn past_the_global_cap_connections_are_refused_then_served_again() {
    let core = Core::start(&fast_config("server:\n  maxConnections: 20\n"));
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(addr(&core)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(addr(&core)).await.unwrap();
    let (bytes, closed) = read_to_close(&mut extra, Duration::from_secs(2)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed, "over the global cap but left open");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.contains("as many connections open as it allows"),
        "{text}"
    );
    drop(held);
    within(Duration::from_secs(3), "served again", || async {
        http()
            .get(format!("{}/healthz", core.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// Nothing sent, half a request line, and a keep-alive connection after its response: each
/// is closed by the core within the header-read timeout.
#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_connections_are_closed() {
    let core = Core::start(&fast_config("server:\n  headerReadTimeoutSeconds: 1\n"));
    for (what, send) in [
        ("nothing", &b""[..]),
        ("half a request line", &b"GET /heal"[..]),
        (
            "a kept-alive connection",
            &b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        ),
    ] {
        let mut s = TcpStream::connect(addr(&core)).await.unwrap();
        s.write_all(send).await.unwrap();
        let started = Instant::now();
        let (bytes, closed) = read_to_close(&mut s, Duration::from_secs(4)).await;
        assert!(closed, "{what}: still open after 4 s");
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{what}: closed after {:?}",
            started.elapsed()
        );
        if what == "a kept-alive connection" {
            assert!(bytes.starts_with(b"HTTP/1.1 200"), "{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_files_are_served_only_as_types_a_remote_needs_and_never_as_pages() {
    let core = Core::start(&fast_config(""));
    let _p = ready_plugin(&core).await;
    for file in ["x.html", "x.svg", "x.htm", "README"] {
        let res = http()
            .get(format!("{}/plugins/hello/1.0.0/{file}", core.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{file}");
        assert_eq!(res.headers()["content-type"], "application/json");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "file_type_not_allowed", "{file}");
    }
    let res = http()
        .get(format!("{}/plugins/hello/1.0.0/chunk.js", core.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("sandbox"),
        "{csp}"
    );
    // An encoded slash is refused on the path as sent, not fetched decoded.
    let res = http()
        .get(format!("{}/plugins/hello/1.0.0/sub%2fchunk.js", core.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "path_not_allowed");
    assert!(body["error"]["requestId"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_reports_come_only_from_the_cores_own_pages() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let _p = ready_plugin(&core).await;
    let host = core.url.trim_start_matches("http://").to_string();
    let send = |origin: Option<&str>, site: Option<&str>, ctype: &str, body: Value| {
        let mut req = http()
            .post(format!("{}/api/shell/reports", core.url))
            .header("content-type", ctype)
            .body(body.to_string());
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(s) = site {
            req = req.header("sec-fetch-site", s);
        }
        req.send()
    };
    let failed = json!({"plugin": "hello", "version": "1.0.0", "ok": false, "stage": "load", "message": "forged"});
    for (origin, site, ctype, code) in [
        (
            Some("https://evil.example"),
            Some("cross-site"),
            "text/plain",
            "origin_not_allowed",
        ),
        (
            Some("https://evil.example"),
            None,
            "application/json",
            "origin_not_allowed",
        ),
        (
            None,
            Some("same-site"),
            "application/json",
            "origin_not_allowed",
        ),
        (None, None, "application/json", "origin_not_allowed"),
    ] {
        let res = send(origin, site, ctype, failed.clone()).await.unwrap();
        assert_eq!(res.status(), 403, "{origin:?} {site:?}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], code);
    }
    let own = format!("http://{host}");
    let res = send(
        Some(&own),
        Some("same-origin"),
        "text/plain",
        failed.clone(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 400, "a report must be JSON");
    let mut other = failed.clone();
    other["version"] = json!("9.9.9");
    let res = send(Some(&own), Some("same-origin"), "application/json", other)
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "a version the core does not serve");
    // Nothing of that reached the plugin's conditions.
    let v = plugin(&core, &admin, "hello").await;
    assert_eq!(condition(&v, "UiLoaded"), Value::Null, "{v}");
    // The core's own shell is heard.
    let res = send(Some(&own), Some("same-origin"), "application/json", failed)
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let v = plugin(&core, &admin, "hello").await;
    assert_eq!(condition(&v, "UiLoaded")["reason"], "UiLoadFailed", "{v}");
    // A report changes that condition and nothing else: the plugin stays Ready and listed.
    assert_eq!(v["state"], "Ready", "{v}");
    assert_eq!(condition(&v, "Ready")["reason"], "Passed", "{v}");
    assert_eq!(remotes(&core).await.len(), 1);
    // Violation reports from another site are refused too.
    let res = http()
        .post(format!("{}/api/shell/csp-reports", core.url))
        .header("content-type", "application/csp-report")
        .header("origin", "https://evil.example")
        .body(r#"{"csp-report":{"blocked-uri":"http://127.0.0.1/plugins/hello/1.0.0/x.js"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn small_refusals_answer_in_the_envelope_with_a_request_id() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let envelope = |v: &Value, code: &str| {
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["requestId"].is_string(), "{v}");
    };

    // Limits the spec states are enforced, not clamped.
    let res = http()
        .get(format!("{}/api/audit?limit=100000", core.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    envelope(&res.json().await.unwrap(), "invalid_request");

    // Null or inapplicable fields are errors, not ignored.
    for body in [
        json!({"plugin": "hello", "capabilities": null}),
        json!({"admin": true, "plugin": "hello"}),
    ] {
        let (s, v) = post_admin(&core, &admin, "/api/tokens", body).await;
        assert_eq!(s, 400, "{v}");
        envelope(&v, "invalid_request");
    }

    // Admin tokens must expire; a crit header this core does not understand is refused.
    let keys = tessera_core::auth::Keys::load_or_create(&core.data_dir).unwrap();
    let now = tessera_core::auth::now();
    let claims = tessera_core::auth::Claims {
        iss: "tessera".into(),
        aud: tessera_core::auth::AUD_ADMIN.into(),
        sub: "admin".into(),
        caps: vec![],
        ns: None,
        iat: now,
        nbf: None,
        exp: None,
        jti: "forever".into(),
        reg: None,
    };
    let forever = keys.sign(&claims).unwrap();
    let res = http()
        .get(format!("{}/api/plugins", core.url))
        .bearer_auth(&forever)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let v: Value = res.json().await.unwrap();
    envelope(&v, "token_malformed");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must expire")
    );
    let mut parts: Vec<String> = admin.split('.').map(String::from).collect();
    parts[0] = b64(
        &json!({"alg": "EdDSA", "typ": "JWT", "kid": keys.kid(), "crit": ["x-tessera"], "x-tessera": 1}),
    );
    let res = http()
        .get(format!("{}/api/plugins", core.url))
        .bearer_auth(parts.join("."))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let v: Value = res.json().await.unwrap();
    envelope(&v, "token_malformed");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("crit"),
        "{v}"
    );

    // Too many headers, and a path that is not valid percent-encoding.
    let mut req = http()
        .get(format!("{}/api/plugins", core.url))
        .bearer_auth(&admin);
    for i in 0..150 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 431);
    envelope(&res.json().await.unwrap(), "headers_too_large");
    let res = http()
        .get(format!("{}/api/plugins/%ff%fe", core.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    envelope(&res.json().await.unwrap(), "invalid_request");

    // URLs are judged as sent; a huge manifest value is not echoed back.
    let token = core.token(&["--plugin", "hello", "--capabilities", "ui:panel,ui:route"]);
    let p = TestPlugin::start("hello");
    let res = http()
        .post(format!("{}/api/plugins/register", core.url))
        .bearer_auth(&token)
        .json(&json!({"manifest": manifest("hello", "1.0.0"), "backendUrl": format!("{}\n", p.url), "remoteUrl": p.remote_url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.unwrap();
    envelope(&v, "url_not_allowed");
    assert_eq!(v["error"]["details"][0]["rule"], "syntax", "{v}");
    let mut m = manifest("hello", "1.0.0");
    m["ui"]["contributions"]["panels"][0]["id"] = json!("x".repeat(900_000));
    let res = http()
        .post(format!("{}/api/plugins/register", core.url))
        .bearer_auth(&token)
        .json(&json!({"manifest": m, "backendUrl": p.url, "remoteUrl": p.remote_url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let text = res.text().await.unwrap();
    assert!(text.len() < 10_000, "{} bytes echoed back", text.len());
    envelope(&serde_json::from_str(&text).unwrap(), "invalid_manifest");
    let _ = get_admin(&core, &admin, "/api/plugins").await;
}
