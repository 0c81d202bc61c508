//! The template plugin (`plugin-template/backend` on the SDK runtime) with a real core: the
//! standard endpoints, registration, re-registration, rejection, and `tessera dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_tests::core::{Core, fast_config, temp_dir};
use tessera_tests::{free_port, hello_plugin_bin, repo_root, tessera};

/// A running hello-plugin process.
struct Plugin {
    child: Option<Child>,
    url: String,
    log: PathBuf,
}

impl Plugin {
    fn start(
        core_url: Option<&str>,
        token: Option<&str>,
        port: u16,
        extra: &[(&str, &str)],
    ) -> Plugin {
        let dir = temp_dir("hello");
        let dist = dir.join("dist");
        std::fs::create_dir_all(&dist).unwrap();
        std::fs::write(
            dist.join("remoteEntry.js"),
            "var plugin_hello={init:function(){},get:function(m){return Promise.resolve({\"./Panel\":1,\"./Routes\":1}[m]);}};\n",
        )
        .unwrap();
        let log = dir.join("plugin.log");
        let mut cmd = Command::new(hello_plugin_bin());
        cmd.env("PORT", port.to_string())
            .env("UI_REMOTE_PATH", &dist)
            .env("REGISTER_INTERVAL_SECONDS", "0.3")
            .env("RUST_LOG", "debug")
            .env_remove("CORE_BASE_URL")
            .env_remove("REG_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(u) = core_url {
            cmd.env("CORE_BASE_URL", u);
        }
        if let Some(t) = token {
            cmd.env("REG_TOKEN", t);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let p = Plugin {
            child: Some(child),
            url,
            log,
        };
        wait(Duration::from_secs(10), "plugin listening", || {
            get(&format!("{}/healthz", p.url)).is_some()
        });
        p
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.kill();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn get(url: &str) -> Option<(u16, String)> {
    let r = client().get(url).send().ok()?;
    let s = r.status().as_u16();
    Some((s, r.text().unwrap_or_default()))
}

fn wait(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state(core: &Core, admin: &str) -> Option<String> {
    let r = client()
        .get(format!("{}/api/plugins/hello", core.url))
        .bearer_auth(admin)
        .send()
        .ok()?;
    let v: Value = r.json().ok()?;
    v["state"].as_str().map(String::from)
}

fn token(core: &Core) -> String {
    core.token(&["--plugin", "hello", "--capabilities", "ui:panel,ui:route"])
}

#[test]
fn template_plugin_registers_and_serves_the_standard_endpoints() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let p = Plugin::start(
        Some(&core.url),
        Some(&token(&core)),
        free_port(),
        &[("PLUGIN_CONFIG", "greeting: Howdy")],
    );
    wait(Duration::from_secs(10), "hello Ready in the core", || {
        state(&core, &admin).as_deref() == Some("Ready")
    });

    let (s, body) = get(&format!("{}/readyz", p.url)).unwrap();
    assert_eq!(s, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["registration"]["status"], "accepted");

    // /manifest is the normalized plugin.yaml.
    let (_, body) = get(&format!("{}/manifest", p.url)).unwrap();
    let served: Value = serde_json::from_str(&body).unwrap();
    let expected: Value = serde_json::from_str(
        &tessera(&[
            "plugin",
            "validate",
            "--json",
            "plugin-template/plugin.yaml",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(served, expected);

    // The app's route under endpoints.basePath, with its configuration.
    let call = call_token(&core, "hello", "alice");
    let (s, body) = get_as(&format!("{}/api/v1/greeting", p.url), Some(&call));
    assert_eq!(
        (s, body),
        (200, serde_json::json!({"greeting": "Howdy, world"}))
    );

    // UI files with the right MIME type, traversal refused.
    let r = client()
        .get(format!("{}/mf/remoteEntry.js", p.url))
        .send()
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        get(&format!("{}/mf/..%2f..%2fetc%2fpasswd", p.url))
            .unwrap()
            .0,
        400
    );

    // A W3C traceparent reaches the logs.
    client()
        .get(format!("{}/api/v1/greeting", p.url))
        .bearer_auth(&call)
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .unwrap();
    wait(Duration::from_secs(3), "trace id logged", || {
        p.log().contains("4bf92f3577b34da6a3ce929d0e0e4736")
    });
    let line: Value = p
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736")
        .unwrap();
    for key in [
        "timestamp",
        "level",
        "plugin.name",
        "plugin.version",
        "trace_id",
        "span_id",
        "msg",
    ] {
        assert!(!line[key].is_null(), "{key} missing in {line}");
    }
    assert_eq!(line["plugin.name"], "hello");

    // /metrics has the standard families.
    let (_, text) = get(&format!("{}/metrics", p.url)).unwrap();
    for family in tessera_sdk::runtime::REQUIRED_FAMILIES {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    assert!(
        text.contains(
            r#"plugin_http_requests_total{method="GET",route="/api/v1/greeting",status="200"}"#
        ),
        "{text}"
    );
}

#[test]
fn killed_plugin_degrades_and_returns_when_restarted() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let port = free_port();
    let mut p = Plugin::start(Some(&core.url), Some(&token(&core)), port, &[]);
    wait(Duration::from_secs(10), "Ready", || {
        state(&core, &admin).as_deref() == Some("Ready")
    });
    p.kill();
    wait(Duration::from_secs(10), "Degraded", || {
        state(&core, &admin).as_deref() == Some("Degraded")
    });
    let _p2 = Plugin::start(Some(&core.url), Some(&token(&core)), port, &[]);
    wait(Duration::from_secs(10), "Ready again", || {
        state(&core, &admin).as_deref() == Some("Ready")
    });
}

#[test]
fn plugin_started_before_the_core_registers_when_it_comes_up() {
    let core_port = free_port();
    let core_url = format!("http://127.0.0.1:{core_port}");
    let dir = temp_dir("late-core");
    // Mint the token from the data dir the core will use.
    let out = Command::new(tessera_tests::tessera_bin())
        .args([
            "token",
            "issue",
            "--plugin",
            "hello",
            "--capabilities",
            "ui:panel,ui:route",
            "--init",
            "--data-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let p = Plugin::start(Some(&core_url), Some(&t), free_port(), &[]);
    std::thread::sleep(Duration::from_millis(800));
    let (s, body) = get(&format!("{}/readyz", p.url)).unwrap();
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("not registered yet"), "{body}");
    let core = Core::start_at(&dir, &fast_config(""), &format!("127.0.0.1:{core_port}"));
    let admin = core.admin_token();
    wait(
        Duration::from_secs(40),
        "registered after the core came up",
        || state(&core, &admin).as_deref() == Some("Ready"),
    );
}

#[test]
fn rejected_registration_is_explained_by_readyz() {
    let core = Core::start(&fast_config(""));
    let other = core.token(&[
        "--plugin",
        "someone-else",
        "--capabilities",
        "ui:panel,ui:route",
    ]);
    let p = Plugin::start(Some(&core.url), Some(&other), free_port(), &[]);
    wait(Duration::from_secs(10), "rejection shown", || {
        get(&format!("{}/readyz", p.url))
            .is_some_and(|(s, b)| s == 503 && b.contains("token_plugin_mismatch"))
    });
    let (_, body) = get(&format!("{}/healthz", p.url)).unwrap();
    assert_eq!(body, "ok", "it keeps serving");
    assert!(
        p.log().contains("token_plugin_mismatch"),
        "the core's code is logged"
    );
}

#[test]
fn wiped_core_gets_the_plugin_back_by_itself() {
    let core_port = free_port();
    let mut core = Core::start_at(
        &temp_dir("wipe"),
        &fast_config(""),
        &format!("127.0.0.1:{core_port}"),
    );
    let admin = core.admin_token();
    let _p = Plugin::start(Some(&core.url), Some(&token(&core)), free_port(), &[]);
    wait(Duration::from_secs(10), "Ready", || {
        state(&core, &admin).as_deref() == Some("Ready")
    });
    core.kill9();
    for f in ["tessera.db", "tessera.db-wal", "tessera.db-shm"] {
        let _ = std::fs::remove_file(core.data_dir.join(f));
    }
    core.restart();
    wait(
        Duration::from_secs(10),
        "registered again after the wipe",
        || state(&core, &admin).as_deref() == Some("Ready"),
    );
}

#[test]
fn bad_configuration_stops_the_plugin_with_the_path() {
    let out = Command::new(hello_plugin_bin())
        .env("PLUGIN_CONFIG", "greeting: 42\nextra: true")
        .env("PORT", free_port().to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config/greeting: 42 is not of type \"string\""),
        "{err}"
    );
    assert!(
        err.contains("config/extra: unknown property \"extra\""),
        "{err}"
    );
}

/// `tessera dev` from a tree without a built UI: builds it, brings the core and the plugin up,
/// Ready, and stops both on Ctrl-C.
#[test]
fn tessera_dev_reaches_ready_and_stops_cleanly() {
    let root = repo_root();
    let dist = root.join("plugin-template/ui/dist");
    let _ = std::fs::remove_dir_all(&dist);
    let data = temp_dir("dev");
    let (core_port, plugin_port) = (free_port(), free_port());
    let mut child = Command::new(tessera_tests::tessera_bin())
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{core_port}"),
            "--plugin-port",
            &plugin_port.to_string(),
            "--data-dir",
        ])
        .arg(&data)
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !seen.iter().any(|l: &String| l.starts_with("ready ")) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("tessera dev did not report Ready:\n{}", seen.join("\n")),
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("building the UI")),
        "the UI was built: {seen:?}"
    );
    assert!(Path::new(&dist.join("remoteEntry.js")).is_file());
    let (_, list) = get(&format!("http://127.0.0.1:{core_port}/api/shell/remotes")).unwrap();
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["name"], "hello");
    // The remote the core serves is the one rspack built.
    let (s, js) = get(&format!(
        "http://127.0.0.1:{core_port}/plugins/hello/0.1.0/remoteEntry.js"
    ))
    .unwrap();
    assert_eq!(s, 200);
    assert!(
        js.contains("plugin_hello") && js.contains("./Panel") && js.contains("./Routes"),
        "{js}"
    );

    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "tessera dev did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(
        get(&format!("http://127.0.0.1:{plugin_port}/healthz")).is_none(),
        "the plugin was stopped too"
    );
}

#[test]
fn plugin_check_passes_on_the_template_and_names_what_fails() {
    let p = Plugin::start(None, None, free_port(), &[]);
    let run = tessera(&[
        "plugin",
        "check",
        "--url",
        &p.url,
        "--manifest",
        "plugin-template/plugin.yaml",
    ]);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    for check in [
        "healthz",
        "readyz",
        "metrics",
        "manifest schema",
        "manifest matches",
        "remote entry",
    ] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains(check)),
            "{check}:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.trim_end().ends_with("6 passed, 0 failed"),
        "{}",
        run.stdout
    );

    // A manifest that differs from the one served.
    let dir = temp_dir("check");
    let other = dir.join("plugin.yaml");
    let text = std::fs::read_to_string(repo_root().join("plugin-template/plugin.yaml")).unwrap();
    std::fs::write(&other, text.replace("title: Hello", "title: Bonjour")).unwrap();
    let run = tessera(&[
        "plugin",
        "check",
        "--url",
        &p.url,
        "--manifest",
        other.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let fail = run.stdout.lines().find(|l| l.starts_with("FAIL")).unwrap();
    assert!(
        fail.contains("manifest matches") && fail.contains("/ui/contributions/panels"),
        "{fail}"
    );

    // A service with a broken /manifest (and no metrics): each failing check is named.
    let bad = tessera_tests::plugin_server::TestPlugin::start("hello");
    let run = tessera(&["plugin", "check", "--url", &bad.url]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let failed: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert!(
        failed.iter().any(|l| l.contains("manifest schema")),
        "{}",
        run.stdout
    );
    assert!(
        failed.iter().any(|l| l.contains("metrics")),
        "{}",
        run.stdout
    );

    // Nothing listening at all.
    let run = tessera(&[
        "plugin",
        "check",
        "--url",
        &format!("http://127.0.0.1:{}", free_port()),
    ]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout
            .lines()
            .next()
            .unwrap_or("")
            .starts_with("FAIL  healthz"),
        "{}",
        run.stdout
    );
}

#[test]
fn health_commands_answer_for_container_healthchecks() {
    let core = Core::start(&fast_config(""));
    let port = free_port();
    let mut p = Plugin::start(None, None, port, &[]);
    wait(Duration::from_secs(10), "hello answers /healthz", || {
        get(&format!("{}/healthz", p.url)).is_some_and(|(s, _)| s == 200)
    });
    let plugin_check = |port: u16| {
        Command::new(hello_plugin_bin())
            .arg("healthcheck")
            .env("PORT", port.to_string())
            .output()
            .unwrap()
    };
    assert!(plugin_check(port).status.success());
    let core_check = |url: String| tessera(&["health", "--url", &url]);
    assert_eq!(core_check(format!("{}/healthz", core.url)).code, Some(0));
    let bad = core_check(format!("{}/no-such-endpoint", core.url));
    assert_eq!(bad.code, Some(1), "{}", bad.stderr);
    assert!(bad.stderr.contains("HTTP 404"), "{}", bad.stderr);
    p.kill();
    let down = plugin_check(port);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("unhealthy"));
}

/// A call token signed with the core's own key (what the core presents when it calls a
/// plugin), on behalf of `sub` in tenant `acme`.
fn call_token(core: &Core, plugin: &str, sub: &str) -> String {
    use tessera_core::auth::call::{CallKind, CallTokens, OnBehalfOf};
    let keys = tessera_core::auth::Keys::load_or_create(&core.data_dir).unwrap();
    let who = OnBehalfOf {
        sub: sub.into(),
        tenant: "acme".into(),
        groups: vec!["ops".into()],
    };
    CallTokens::default()
        .token(&keys, plugin, &who, CallKind::Request)
        .unwrap()
}

/// GET with an optional bearer token: the status and the JSON answer.
fn get_as(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = client().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

/// A JWT with any header and claims, signed with garbage.
fn forged(header: Value, claims: Value) -> String {
    use base64::Engine;
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    format!("{}.{}.c2lnbmF0dXJl", b64(&header), b64(&claims))
}

#[test]
fn template_plugin_answers_only_calls_from_its_core() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let reg = token(&core);
    let p = Plugin::start(Some(&core.url), Some(&reg), free_port(), &[]);
    wait(Duration::from_secs(10), "hello Ready in the core", || {
        state(&core, &admin).as_deref() == Some("Ready")
    });
    let greeting = format!("{}/api/v1/greeting", p.url);

    // Without a call token: 401 in the envelope, and the app never runs.
    let r = client().get(&greeting).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let e: Value = r.json().unwrap();
    assert_eq!(e["error"]["code"], "token_missing");

    // The core's call token: the app runs and sees who called.
    let t = call_token(&core, "hello", "alice");
    let (s, body) = get_as(&greeting, Some(&t));
    assert_eq!((s, body["greeting"].as_str()), (200, Some("Hello, world")));
    let (s, who) = get_as(&format!("{}/api/v1/caller", p.url), Some(&t));
    assert_eq!(s, 200, "{who}");
    assert_eq!(
        who,
        serde_json::json!({"sub": "alice", "tenant": "acme", "groups": ["ops"], "kind": "request"})
    );

    let code = |t: &str| get_as(&greeting, Some(t)).1["error"]["code"].clone();
    let now = tessera_core::auth::now();
    let good = serde_json::json!({"iss": "tessera", "aud": "plugin:hello", "sub": "mallory",
        "tenant": "acme", "groups": [], "kind": "request", "iat": now, "exp": now + 60, "jti": "x"});
    // alg none and HS256 are refused before any key is looked at.
    assert_eq!(
        code(&forged(serde_json::json!({"alg": "none"}), good.clone())),
        "token_algorithm_not_allowed"
    );
    assert_eq!(
        code(&forged(
            serde_json::json!({"alg": "HS256", "typ": "JWT"}),
            good.clone()
        )),
        "token_algorithm_not_allowed"
    );
    // The core's key with a forged signature.
    let kid = tessera_core::auth::Keys::load_or_create(&core.data_dir)
        .unwrap()
        .kid();
    assert_eq!(
        code(&forged(
            serde_json::json!({"alg": "EdDSA", "kid": kid}),
            good.clone()
        )),
        "token_signature_invalid"
    );
    // Another plugin's call token, a registration token, an expired one.
    assert_eq!(
        code(&call_token(&core, "other", "alice")),
        "token_wrong_audience"
    );
    assert_eq!(code(&reg), "token_wrong_audience");
    let keys = tessera_core::auth::Keys::load_or_create(&core.data_dir).unwrap();
    let mut old = good.clone();
    old["iat"] = serde_json::json!(now - 600);
    old["exp"] = serde_json::json!(now - 300);
    assert_eq!(code(&keys.sign(&old).unwrap()), "token_expired");
    // A key the core does not have (the JWKS is fetched again, at most every 30 s).
    let stranger =
        tessera_core::auth::Keys::from_pem(&tessera_core::auth::Keys::generate_pem().unwrap())
            .unwrap();
    assert_eq!(code(&stranger.sign(&good).unwrap()), "token_unknown_key");

    // The standard endpoints stay open.
    for open in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/manifest",
        "/mf/remoteEntry.js",
    ] {
        assert_eq!(get(&format!("{}{open}", p.url)).unwrap().0, 200, "{open}");
    }

    // `tessera token call` mints the same, for trying a plugin's API by hand.
    let dir = core.data_dir.to_str().unwrap().to_string();
    let cli = tessera(&[
        "token",
        "call",
        "hello",
        "--sub",
        "carol",
        "--tenant",
        "t2",
        "--groups",
        "a,b",
        "--data-dir",
        &dir,
    ]);
    assert_eq!(cli.code, Some(0), "{}", cli.stderr);
    let (s, who) = get_as(&format!("{}/api/v1/caller", p.url), Some(cli.stdout.trim()));
    assert_eq!(s, 200, "{who}");
    assert_eq!(
        who,
        serde_json::json!({"sub": "carol", "tenant": "t2", "groups": ["a", "b"], "kind": "request"})
    );

    // The core gone: the cached keys still verify its tokens.
    let t = call_token(&core, "hello", "bob");
    let mut core = core;
    core.kill9();
    let (s, who) = get_as(&format!("{}/api/v1/caller", p.url), Some(&t));
    assert_eq!((s, who["sub"].as_str()), (200, Some("bob")), "{who}");
}

#[test]
fn template_plugin_keeps_its_plugin_token_fresh_until_its_registration_token_is_revoked() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let reg = token(&core);
    let p = Plugin::start(Some(&core.url), Some(&reg), free_port(), &[]);
    wait(Duration::from_secs(10), "hello Ready in the core", || {
        state(&core, &admin).as_deref() == Some("Ready")
    });
    let whoami = format!("{}/api/v1/whoami", p.url);
    let t = call_token(&core, "hello", "alice");
    let (s, me) = get_as(&whoami, Some(&t));
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["plugin"], "hello");
    assert_eq!(
        me["capabilities"],
        serde_json::json!(["ui:panel", "ui:route"])
    );
    // Renewed by every registration (every 0.3 s here): the expiry moves on.
    let first = me["expiresAt"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let later = get_as(&whoami, Some(&t)).1["expiresAt"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(later > first, "{first} then {later}");

    // Revoking the registration token ends the plugin token at once.
    let jti = tessera_core::auth::peek_claims(&reg).unwrap().jti;
    let r = client()
        .post(format!("{}/api/tokens/{jti}/revoke", core.url))
        .bearer_auth(&admin)
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    wait(Duration::from_secs(3), "whoami refused", || {
        get_as(&whoami, Some(&t)).0 == 502
    });
    let (_, e) = get_as(&whoami, Some(&t));
    let msg = e["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("token_revoked") || msg.contains("not registered"),
        "{e}"
    );
}
