//! The plugin API proxy end to end: a real core, the echo plugin on the Rust SDK (its call-token
//! check on every route), real HTTP on loopback. What a browser sends and what it gets back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_tests::client::{get_admin, http, post_admin, text, within};
use tessera_tests::core::{Core, fast_config, temp_dir};
use tessera_tests::{echo_plugin_bin, free_port};

/// The echo plugin, registered with a core.
struct Echo {
    child: Option<Child>,
    port: u16,
    ui: std::path::PathBuf,
    token: String,
    core_url: String,
}

impl Echo {
    fn start(core: &Core) -> Echo {
        let token = core.token(&["--plugin", "echo", "--capabilities", "ui:panel"]);
        let ui = temp_dir("echo-ui");
        std::fs::write(ui.join("remoteEntry.js"), "var plugin_echo={};\n").unwrap();
        let mut e = Echo {
            child: None,
            port: free_port(),
            ui,
            token,
            core_url: core.url.clone(),
        };
        e.spawn();
        e
    }

    fn spawn(&mut self) {
        let child = Command::new(echo_plugin_bin())
            .env("PORT", self.port.to_string())
            .env("UI_REMOTE_PATH", &self.ui)
            .env("CORE_BASE_URL", &self.core_url)
            .env("REG_TOKEN", &self.token)
            .env("REGISTER_INTERVAL_SECONDS", "0.3")
            .env_remove("REG_TOKEN_FILE")
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

    /// Requests the plugin's own HTTP metrics counted under `/api` (what reached it).
    async fn served(&self) -> f64 {
        text(&format!("http://127.0.0.1:{}/metrics", self.port))
            .await
            .lines()
            .filter(|l| l.starts_with("plugin_http_requests_total") && l.contains("route=\"/api"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |a, b| a + b)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn ready(core: &Core) {
    let admin = core.admin_token();
    within(Duration::from_secs(15), "echo Ready", || async {
        get_admin(core, &admin, "/api/plugins/echo").await["state"] == "Ready"
    })
    .await;
}

/// A core with `extra` config and the echo plugin Ready.
async fn setup(extra: &str) -> (Core, Echo) {
    let core = Core::start(&fast_config(&format!(
        "urlPolicy:\n  allowHosts: [127.0.0.1]\n{extra}"
    )));
    let echo = Echo::start(&core);
    ready(&core).await;
    (core, echo)
}

/// Waits until `GET /api/proxy/echo/echo` answers 200.
async fn answers_ok(core: &Core, limit: Duration, what: &str) {
    within(limit, what, || async {
        http()
            .get(url(core, "/echo"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
}

fn url(core: &Core, path: &str) -> String {
    format!("{}/api/proxy/echo{path}", core.url)
}

async fn json_of(res: reqwest::Response) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let s = res.status();
    let h = res.headers().clone();
    (s, h, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_reach_the_plugin_as_sent_with_a_call_token_and_nothing_of_the_browser() {
    let (core, _echo) = setup("").await;
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let res = http()
            .request(
                method.parse().unwrap(),
                url(&core, "/echo/items/a%2Fb?x=1&y=%20z"),
            )
            .header("authorization", "Bearer stolen-from-the-browser")
            .header("cookie", "tessera_session=abc; other=1")
            .header("x-tessera-user", "admin")
            .header("x-request-id", "req-proxy-1")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("x-custom", "kept")
            .body(vec![b'a'; 1000])
            .send()
            .await
            .unwrap();
        let (s, h, v) = json_of(res).await;
        assert_eq!(s, StatusCode::OK, "{method}: {v}");
        assert_eq!(v["method"], method);
        // Under basePath (/api), as sent: the app sees the path below its base.
        assert_eq!(v["path"], "/echo/items/a%2Fb", "{v}");
        assert_eq!(v["query"], "x=1&y=%20z", "{v}");
        assert_eq!(v["bodyBytes"], 1000, "{v}");
        // The SDK verified the core's call token (the handler ran); the caller is anonymous
        // in the default tenant, for a proxied request.
        assert_eq!(
            v["caller"],
            json!({"sub": "anonymous", "tenant": "default", "groups": [], "kind": "request"})
        );
        let sent = &v["headers"];
        assert!(
            sent["authorization"]
                .as_str()
                .unwrap()
                .starts_with("Bearer ey")
        );
        assert!(sent.get("cookie").is_none(), "{sent}");
        assert!(sent.get("x-tessera-user").is_none(), "{sent}");
        assert_eq!(sent["x-request-id"], "req-proxy-1");
        assert_eq!(
            sent["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(sent["x-custom"], "kept");
        assert_eq!(h["x-request-id"], "req-proxy-1");
    }
    // Without a path, and at the root of the base path.
    let res = http().get(url(&core, "")).send().await.unwrap();
    assert_ne!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_cannot_set_cookies_open_cors_or_run_as_a_page() {
    let (core, _echo) = setup("").await;
    let res = http().get(url(&core, "/cookie")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers();
    assert!(h.get("set-cookie").is_none(), "{h:?}");
    assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");
    assert_eq!(
        h["content-security-policy"],
        "sandbox; default-src 'none'; frame-ancestors 'none'"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_plugins_and_climbing_paths_are_refused_by_the_core() {
    let (core, echo) = setup("").await;
    let before = echo.served().await;
    let (s, _, v) = json_of(
        http()
            .get(format!("{}/api/proxy/nope/x", core.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "plugin_not_found");
    // Sent as they are (an HTTP client library would normalise them away).
    for p in [
        "/../metrics",
        "/%2e%2e/manifest",
        "/a/%2E/b",
        "/a/..%2F..%2Fmetrics/..",
    ] {
        let (status, body) = raw_get(&core, &format!("/api/proxy/echo{p}")).await;
        assert_eq!(status, 400, "{p}: {body}");
        assert!(body.contains("path_not_allowed"), "{p}: {body}");
    }
    assert_eq!(echo.served().await, before, "nothing reached the plugin");
}

/// `GET path` with the path sent byte for byte; the status and body.
async fn raw_get(core: &Core, path: &str) -> (u16, String) {
    let addr = core.url.trim_start_matches("http://").to_string();
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, out)
    })
    .await
    .unwrap()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap()
        / 1024.0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_megabytes_stream_both_ways_and_the_cores_memory_stays_flat() {
    let (core, _echo) =
        setup("proxy:\n  plugins:\n    echo:\n      maxBodyBytes: 209715200\n").await;
    let pid = core.pid().unwrap();
    // Warm up, then measure.
    http()
        .get(url(&core, "/bytes?n=1000000"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let base = rss_mib(pid);
    let total: u64 = 100 * 1024 * 1024;
    let mut res = http()
        .get(url(&core, &format!("/bytes?n={total}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut got = 0u64;
    let mut peak = base;
    while let Some(chunk) = res.chunk().await.unwrap() {
        got += chunk.len() as u64;
        peak = peak.max(rss_mib(pid));
    }
    assert_eq!(got, total);
    // Upload: 100 MB, chunked, as it is produced.
    let up = url(&core, "/count");
    let answer: Value = tokio::task::spawn_blocking(move || {
        reqwest::blocking::Client::new()
            .post(up)
            .body(reqwest::blocking::Body::new(
                std::io::repeat(b'y').take(total),
            ))
            .send()
            .unwrap()
            .json()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(answer["bytes"], total);
    peak = peak.max(rss_mib(pid));
    assert!(
        peak - base < 40.0,
        "the core's RSS grew from {base:.1} MiB to {peak:.1} MiB while 200 MB passed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_body_cap_answers_413_before_the_plugin_sees_a_byte() {
    let (core, echo) = setup("proxy:\n  maxBodyBytes: 1048576\n").await;
    let before = echo.served().await;
    let (s, _, v) = json_of(
        http()
            .post(url(&core, "/count"))
            .body(vec![0u8; 1024 * 1024 + 1])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large");
    assert_eq!(echo.served().await, before);
    // Chunked, without a length: cut at the cap.
    let up = url(&core, "/count");
    let status = tokio::task::spawn_blocking(move || {
        reqwest::blocking::Client::new()
            .post(up)
            .body(reqwest::blocking::Body::new(
                std::io::repeat(b'y').take(3 * 1024 * 1024),
            ))
            .send()
            .map(|r| r.status())
    })
    .await
    .unwrap();
    // The core answers 413, or the connection ends while the body is still being sent.
    if let Ok(s) = status {
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_sent_events_arrive_one_by_one() {
    let (core, _echo) = setup("").await;
    let started = Instant::now();
    let mut res = http()
        .get(url(&core, "/sse?n=3&gap_ms=700"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut seen = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = res.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = text.find("\n\n") {
            seen.push((text[..i].to_string(), started.elapsed()));
            text = text[i + 2..].to_string();
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[0].0.contains("data: {\"n\":0}"));
    // The first event is in hand long before the last is written.
    assert!(seen[0].1 < Duration::from_millis(600), "{seen:?}");
    assert!(seen[2].1 >= Duration::from_millis(1400), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrades_pass_through() {
    let (core, _echo) = setup("").await;
    let addr = core.url.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /api/proxy/echo/ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        s.write_all(b"ping through the core").unwrap();
        let mut echo = [0u8; 21];
        s.read_exact(&mut echo).unwrap();
        (String::from_utf8_lossy(&head).to_string(), echo.to_vec())
    })
    .await
    .unwrap();
    assert!(answer.0.starts_with("HTTP/1.1 101"), "{}", answer.0);
    assert!(
        answer.0.to_ascii_lowercase().contains("upgrade: websocket"),
        "{}",
        answer.0
    );
    assert_eq!(answer.1, b"ping through the core");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_plugin_is_answered_by_the_core_without_dialing() {
    let (core, echo) = setup("").await;
    let admin = core.admin_token();
    let (s, v) = post_admin(
        &core,
        &admin,
        "/api/plugins/echo/disable",
        json!({"reason": "test"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let before = echo.served().await;
    let (s, _, v) = json_of(http().get(url(&core, "/echo")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "plugin_not_ready");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("disabled"),
        "{v}"
    );
    assert_eq!(
        echo.served().await,
        before,
        "the core dialed a disabled plugin"
    );
    post_admin(&core, &admin, "/api/plugins/echo/enable", json!({})).await;
    // Enabled, it is served again once a probe passes.
    answers_ok(&core, Duration::from_secs(5), "echo served again").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_plugin_is_cut_at_the_response_timeout_with_504() {
    let (core, _echo) =
        setup("proxy:\n  plugins:\n    echo:\n      responseTimeoutSeconds: 1\n").await;
    let started = Instant::now();
    let (s, _, v) = json_of(http().get(url(&core, "/hang")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert_eq!(v["error"]["code"], "plugin_timeout");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("echo"),
        "{v}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_connections_are_502_then_the_circuit_opens_and_a_good_trial_closes_it() {
    // Slow probes, so the plugin stays Ready while its process is gone.
    let core = Core::start(
        "probe:\n  periodSeconds: 30\n  timeoutSeconds: 1\n  failureThreshold: 3\n  successThreshold: 1\nurlPolicy:\n  allowHosts: [127.0.0.1]\n",
    );
    let mut echo = Echo::start(&core);
    let admin = core.admin_token();
    within(Duration::from_secs(40), "echo Ready", || async {
        get_admin(&core, &admin, "/api/plugins/echo").await["state"] == "Ready"
    })
    .await;
    echo.kill();
    for i in 0..5 {
        let (s, _, v) = json_of(http().get(url(&core, "/echo")).send().await.unwrap()).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "attempt {i}: {v}");
        assert_eq!(v["error"]["code"], "upstream_failed");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("echo"),
            "{v}"
        );
    }
    let res = http().get(url(&core, "/echo")).send().await.unwrap();
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (s, _, v) = json_of(res).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "plugin_circuit_open");
    assert!((1..=10).contains(&retry), "{retry}");
    let metrics = text(&format!("{}/metrics", core.url)).await;
    assert!(
        metrics.contains("tessera_proxy_circuit_open{plugin=\"echo\"} 1"),
        "{metrics}"
    );
    // The plugin comes back; after the pause one trial goes through and closes the circuit.
    echo.spawn();
    answers_ok(&core, Duration::from_secs(15), "the circuit closed").await;
    let metrics = text(&format!("{}/metrics", core.url)).await;
    assert!(
        metrics.contains("tessera_proxy_circuit_open{plugin=\"echo\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tessera_proxy_requests_total{plugin=\"echo\",class=\"5xx\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_concurrency_limit_the_core_answers_503_with_retry_after() {
    let (core, _echo) = setup("proxy:\n  plugins:\n    echo:\n      maxInFlight: 2\n").await;
    let slow = || http().get(url(&core, "/slow?ms=1500")).send();
    let (a, b) = (tokio::spawn(slow()), tokio::spawn(slow()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = http().get(url(&core, "/echo")).send().await.unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    let (s, _, v) = json_of(res).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "plugin_overloaded");
    assert_eq!(a.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(b.await.unwrap().unwrap().status(), StatusCode::OK);
    // The slots are free again once the bodies ended.
    let (s, _, _) = json_of(http().get(url(&core, "/echo")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    // Prometheus text with the proxy's families, as promtool reads it.
    let metrics = text(&format!("{}/metrics", core.url)).await;
    for family in [
        "tessera_proxy_requests_total{plugin=\"echo\",class=\"2xx\"}",
        "tessera_proxy_requests_total{plugin=\"echo\",class=\"5xx\"} 1",
        "tessera_proxy_request_duration_seconds_bucket{",
        "tessera_proxy_in_flight{plugin=\"echo\"} 0",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    tessera_tests::promtool_check(&metrics);
}

/// A session cookie for `sub` (tenant acme), sealed with the core's key.
fn session(core: &Core, sub: &str) -> String {
    let key = tessera_core::users::cookie::SessionKey::load_or_create(&core.data_dir).unwrap();
    let now = tessera_core::auth::now();
    let s = tessera_core::users::Session {
        sub: sub.into(),
        name: sub.into(),
        tenant: "acme".into(),
        groups: vec!["staff".into()],
        iat: now,
        exp: now + 3600,
    };
    format!(
        "tessera_session={}",
        tessera_core::users::Users::seal_session(&key, &s).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn with_sign_in_the_plugin_is_told_the_user_and_other_sites_cannot_ride_the_cookie() {
    let secret = temp_dir("oidc").join("client-secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let (core, echo) = setup(&format!(
        "auth:\n  oidc:\n    issuer: http://127.0.0.1:9\n    clientId: tessera\n    clientSecretFile: {}\n",
        secret.display()
    ))
    .await;
    let cookie = session(&core, "alice");
    // No session: the core answers, the plugin is not called.
    let before = echo.served().await;
    let (s, _, v) = json_of(http().get(url(&core, "/echo")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "not_signed_in");
    // A read with the session: the plugin is told who calls, and never sees the cookie.
    let (s, _, v) = json_of(
        http()
            .get(url(&core, "/echo"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["caller"],
        json!({"sub": "alice", "tenant": "acme", "groups": ["staff"], "kind": "request"})
    );
    assert!(v["headers"].get("cookie").is_none());
    // A write riding the cookie from another site, or not saying where it comes from: refused.
    for origin in [Some("https://evil.example"), None] {
        let mut req = http()
            .post(url(&core, "/echo"))
            .header("cookie", &cookie)
            .body("x");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let (s, _, v) = json_of(req.send().await.unwrap()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{origin:?}: {v}");
        assert_eq!(v["error"]["code"], "origin_not_allowed");
    }
    // From the core's own page: through.
    let host = core.url.trim_start_matches("http://").to_string();
    let (s, _, v) = json_of(
        http()
            .post(url(&core, "/echo"))
            .header("cookie", &cookie)
            .header("origin", format!("http://{host}"))
            .body("x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        echo.served().await,
        before + 2.0,
        "exactly the two allowed calls reached it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_goes_quiet_past_the_idle_timeout_is_cut() {
    let (core, _echo) = setup("proxy:\n  idleTimeoutSeconds: 1\n").await;
    let started = Instant::now();
    let mut res = http()
        .get(url(&core, "/sse?n=3&gap_ms=2500"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut text = String::new();
    let ended = loop {
        match res.chunk().await {
            Ok(Some(c)) => text.push_str(&String::from_utf8_lossy(&c)),
            Ok(None) => break "end",
            Err(_) => break "error",
        }
    };
    // The first event came; the stream was cut a second into the silence, before the second.
    assert!(text.contains("data: {\"n\":0}"), "{text}");
    assert!(!text.contains("data: {\"n\":1}"), "{ended}: {text}");
    assert!(
        started.elapsed() < Duration::from_millis(2400),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_degraded_plugin_is_answered_by_the_core_with_503() {
    let (core, mut echo) = setup("").await;
    let admin = core.admin_token();
    echo.kill();
    within(Duration::from_secs(10), "echo Degraded", || async {
        get_admin(&core, &admin, "/api/plugins/echo").await["state"] == "Degraded"
    })
    .await;
    let (s, _, v) = json_of(http().get(url(&core, "/echo")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "plugin_not_ready");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("Degraded"),
        "{v}"
    );
}

/// Opens a raw connection to the core and sends `head` (a request line and headers).
fn raw(core: &Core, head: &str) -> std::net::TcpStream {
    let addr = core.url.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.replace("{host}", &addr).as_bytes())
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upload_is_the_callers_pace_not_a_plugin_timeout() {
    let (core, _echo) = setup(
        "proxy:\n  idleTimeoutSeconds: 5\n  plugins:\n    echo:\n      responseTimeoutSeconds: 1\n",
    )
    .await;
    let head = "POST /api/proxy/echo/count HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let mut s = raw(&core, head);
    let answer = tokio::task::spawn_blocking(move || {
        // Five chunks, 400 ms apart: two seconds in all, twice the response timeout.
        for _ in 0..5 {
            s.write_all(b"a\r\n0123456789\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(400));
        }
        s.write_all(b"0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("{\"bytes\":50}"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_uploads_are_refused_without_opening_the_circuit() {
    let (core, _echo) = setup("proxy:\n  idleTimeoutSeconds: 1\n").await;
    let head = "POST /api/proxy/echo/count HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\nConnection: close\r\n\r\nonly-a-start";
    let sockets: Vec<_> = (0..7).map(|_| raw(&core, head)).collect();
    let answers = tokio::task::spawn_blocking(move || {
        sockets
            .into_iter()
            .map(|mut s| {
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                out
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for a in &answers {
        assert!(
            a.is_empty() || a.starts_with("HTTP/1.1 400"),
            "a stalled upload is the caller's fault: {a}"
        );
    }
    // Seven broken uploads later, the plugin is still called.
    let (s, _, v) = json_of(http().get(url(&core, "/echo")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let metrics = text(&format!("{}/metrics", core.url)).await;
    assert!(
        !metrics.contains("tessera_proxy_circuit_open{plugin=\"echo\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_websocket_is_closed_after_the_idle_timeout() {
    let (core, _echo) = setup("proxy:\n  idleTimeoutSeconds: 1\n").await;
    let head = "GET /api/proxy/echo/ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let mut s = raw(&core, head);
    let (echoed, after_silence, waited) = tokio::task::spawn_blocking(move || {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        s.write_all(b"still here").unwrap();
        let mut echo = [0u8; 10];
        s.read_exact(&mut echo).unwrap();
        // Silence: the core closes both sides within about a second.
        let started = Instant::now();
        let mut rest = Vec::new();
        let n = s.read_to_end(&mut rest).map(|_| rest.len());
        (echo.to_vec(), n, started.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(echoed, b"still here");
    assert!(matches!(after_silence, Ok(0) | Err(_)), "{after_silence:?}");
    assert!(waited < Duration::from_secs(4), "{waited:?}");
}
