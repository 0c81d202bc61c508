//! Secrets, webhooks and egress end to end: a real core, `surfaces-plugin` on the Rust SDK, real
//! HTTP on loopback, the SQLite file on disk (and the fake API server for the cluster's
//! Secrets). What the plugin reads and receives, what a sender and an admin are answered, and
//! what is (and is not) on disk and in the logs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_tests::client::{get_admin, http, manifest, register_raw, within};
use tessera_tests::core::{Core, fast_config, temp_dir};
use tessera_tests::{free_port, surfaces_plugin_bin, tessera, tessera_with_stdin};

mod cluster;

/// One `surfaces-plugin` process.
struct Plugin {
    child: Option<Child>,
    port: u16,
    record: PathBuf,
    env: Vec<(String, String)>,
}

impl Plugin {
    /// Starts `name` against `core_url` with `token`; `extra` is YAML appended to its manifest.
    fn start(core: &Core, name: &str, token: &str, caps: &str, extra: &str) -> Plugin {
        let core_url = core.url.as_str();
        let record = temp_dir("surfaces-record").join("record.jsonl");
        let env = vec![
            ("PLUGIN_NAME".to_string(), name.to_string()),
            ("CORE_BASE_URL".to_string(), core_url.to_string()),
            ("REG_TOKEN".to_string(), token.to_string()),
            ("REGISTER_INTERVAL_SECONDS".to_string(), "0.3".to_string()),
            ("CAPABILITIES".to_string(), caps.to_string()),
            ("MANIFEST_EXTRA".to_string(), extra.to_string()),
            ("RECORD_FILE".to_string(), record.display().to_string()),
            ("TESSERA_EGRESS_URL".to_string(), core.egress_url.clone()),
        ];
        let mut p = Plugin {
            child: None,
            port: free_port(),
            record,
            env,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let child = Command::new(surfaces_plugin_bin())
            .env("PORT", self.port.to_string())
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

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/api{path}", self.port)
    }

    /// `GET /api/public/secret/{name}`: what `fetch_secret` answered.
    async fn secret(&self, name: &str) -> (StatusCode, Value) {
        let res = http()
            .get(self.url(&format!("/public/secret/{name}")))
            .send()
            .await
            .unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    /// Webhook deliveries received (across restarts of the process).
    fn deliveries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn ready(core: &Core, admin: &str, name: &str) {
    within(
        Duration::from_secs(20),
        &format!("{name} Ready"),
        || async {
            get_admin(core, admin, &format!("/api/plugins/{name}")).await["state"] == "Ready"
        },
    )
    .await;
}

/// A plugin token for `name` (granted `caps`), from a registration whose manifest adds `extra`.
async fn plugin_token(core: &Core, name: &str, caps: &str, extra: Value) -> String {
    let token = core.token(&["--plugin", name, "--capabilities", caps]);
    let mut m = manifest(name, "1.0.0");
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    let (status, answer) = register_raw(
        core,
        &token,
        &json!({"manifest": m, "backendUrl": format!("http://127.0.0.1:{}", free_port()),
                "remoteUrl": format!("http://127.0.0.1:{}/mf/remoteEntry.js", free_port())}),
    )
    .await;
    assert!(status.is_success(), "{status} {answer}");
    answer["pluginToken"].as_str().unwrap().to_string()
}

/// A token's claim, read without checking it (the test's own token).
fn claim(token: &str, name: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()[name]
        .as_str()
        .unwrap()
        .to_string()
}

async fn read_secret(core: &Core, token: &str, name: &str) -> reqwest::Response {
    http()
        .get(format!("{}/api/plugin/v1/secrets/{name}", core.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn files_contain(dir: &std::path::Path, needle: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter(|e| {
            std::fs::read(e.path())
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// An admin sets a secret with `tessera secret set` (value on stdin); the plugin reads it with
/// `fetch_secret`; names it does not declare, values not set and a token without the
/// capability are refused with their codes; the value is sealed on disk, never in the audit
/// log or the core's log, survives a kill -9 and a key rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reads_the_secrets_an_admin_set_and_nothing_else() {
    let mut core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let value = "sk_live_51Hq-a-real-looking-api-key-7f3a9c";
    let set = tessera_with_stdin(
        &[
            "secret",
            "set",
            "vault",
            "STRIPE_KEY",
            "--url",
            &core.url,
            "--admin-token",
            &admin,
        ],
        Some(format!("{value}\n").as_bytes()),
    );
    assert_eq!(set.code, Some(0), "{set:?}");
    assert!(
        set.stdout.contains("set secret STRIPE_KEY of plugin vault"),
        "{set:?}"
    );

    let token = core.token(&["--plugin", "vault", "--capabilities", "secrets:read"]);
    let p = Plugin::start(
        &core,
        "vault",
        &token,
        "secrets:read",
        "secrets: [STRIPE_KEY, WEBHOOK_SECRET]",
    );
    ready(&core, &admin, "vault").await;
    let (status, got) = p.secret("STRIPE_KEY").await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["value"], value);
    let (status, got) = p.secret("WEBHOOK_SECRET").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{got}");
    assert_eq!(got["error"]["code"], "secret_not_found");
    let (status, got) = p.secret("DATABASE_URL").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{got}");
    assert_eq!(got["error"]["code"], "secret_not_declared");

    // The bytes a client receives, straight from the core.
    let direct = plugin_token(
        &core,
        "vault2",
        "secrets:read,ui:panel,ui:route",
        json!({"secrets": ["STRIPE_KEY"]}),
    )
    .await;
    let put = http()
        .put(format!(
            "{}/api/plugins/vault2/secrets/STRIPE_KEY",
            core.url
        ))
        .bearer_auth(&admin)
        .json(&json!({"value": "v2-value"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let res = read_secret(&core, &direct, "STRIPE_KEY").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"name": "STRIPE_KEY", "value": "v2-value"})
    );
    // Another plugin's value is out of reach: vault2 reads its own STRIPE_KEY, not vault's.
    assert_ne!(
        read_secret(&core, &direct, "STRIPE_KEY")
            .await
            .json::<Value>()
            .await
            .unwrap()["value"],
        value
    );
    let ungranted = plugin_token(
        &core,
        "nosecrets",
        "ui:panel,ui:route",
        json!({"secrets": ["STRIPE_KEY"]}),
    )
    .await;
    let res = read_secret(&core, &ungranted, "STRIPE_KEY").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "capability_not_granted"
    );
    let res = read_secret(&core, "not-a-token", "STRIPE_KEY").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // What an admin sees: names, never values.
    let list = tessera(&[
        "secret",
        "list",
        "vault",
        "--url",
        &core.url,
        "--admin-token",
        &admin,
    ]);
    assert_eq!(list.code, Some(0), "{list:?}");
    assert!(list.stdout.contains("STRIPE_KEY"), "{list:?}");
    assert!(list.stdout.contains("WEBHOOK_SECRET"), "{list:?}");
    assert!(!list.stdout.contains(value), "{list:?}");
    let audit = get_admin(&core, &admin, "/api/audit?limit=1000")
        .await
        .to_string();
    assert!(audit.contains("read-secret"), "{audit}");
    assert!(audit.contains("secret \\\"STRIPE_KEY\\\" read"), "{audit}");
    assert!(
        !audit.contains(value) && !audit.contains("v2-value"),
        "{audit}"
    );

    // On disk: sealed; in the log: absent.
    assert_eq!(files_contain(&core.data_dir, value), Vec::<String>::new());
    assert!(!core.log().contains(value));

    // A kill -9, then a rotation of the key while the core runs: the value still reads.
    core.restart();
    let rotate = tessera(&[
        "secret",
        "rotate-key",
        "--data-dir",
        core.data_dir.to_str().unwrap(),
    ]);
    assert_eq!(rotate.code, Some(0), "{rotate:?}");
    assert!(
        rotate.stdout.contains("now seals 2 secret(s)"),
        "{rotate:?}"
    );
    let direct = plugin_token(
        &core,
        "vault2",
        "secrets:read,ui:panel,ui:route",
        json!({"secrets": ["STRIPE_KEY"]}),
    )
    .await;
    let res = read_secret(&core, &direct, "STRIPE_KEY").await;
    assert_eq!(res.json::<Value>().await.unwrap()["value"], "v2-value");

    // Bad input: one envelope, the value never echoed.
    for (body, what) in [
        (json!({"value": 42}), "a number"),
        (json!({"value": "x", "extra": 1}), "an extra field"),
        (json!("just-a-string"), "not an object"),
    ] {
        let res = http()
            .put(format!("{}/api/plugins/vault/secrets/STRIPE_KEY", core.url))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{what}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_secret", "{what}: {v}");
        assert!(!v.to_string().contains("just-a-string"), "{v}");
    }
    let res = http()
        .put(format!("{}/api/plugins/vault/secrets/not-a-name", core.url))
        .bearer_auth(&admin)
        .json(&json!({"value": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let del = tessera(&[
        "secret",
        "delete",
        "vault",
        "STRIPE_KEY",
        "--url",
        &core.url,
        "--admin-token",
        &admin,
    ]);
    assert_eq!(del.code, Some(0), "{del:?}");
    let again = tessera(&[
        "secret",
        "delete",
        "vault",
        "STRIPE_KEY",
        "--url",
        &core.url,
        "--admin-token",
        &admin,
    ]);
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(again.stderr.contains("secret_not_found"), "{again:?}");
    // The value never came from the command line.
    let argv = tessera(&["secret", "set", "vault", "STRIPE_KEY", "sk_on_argv"]);
    assert_ne!(argv.code, Some(0), "{argv:?}");
}

/// In a cluster the plugin's secrets are the keys of the Secret `tessera-secrets-<plugin>` in
/// its namespace; the core reads them and refuses to write them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_the_plugin_reads_its_secret_object() {
    let k = cluster::Cluster::fake().await;
    let config = format!(
        "{}plugins:\n- name: vault\n  namespace: apps\n  capabilities: [secrets:read]\n",
        cluster::config()
    );
    let core = k.replica("core-a", &config);
    let admin = k.admin();
    within(Duration::from_secs(10), "the token Secret", || async {
        cluster::secret_token(&k, "apps", "plugin-reg-token-vault").is_some()
    })
    .await;
    let token = cluster::secret_token(&k, "apps", "plugin-reg-token-vault").unwrap();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tessera-secrets-vault", "namespace": "apps"},
        "type": "Opaque",
        "data": {"API_KEY": base64_encode("from-the-cluster")},
    });
    let res = http()
        .post(format!(
            "{}/api/v1/namespaces/apps/secrets",
            k.fake_api().url()
        ))
        .json(&secret)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let p = Plugin::start(
        &core,
        "vault",
        &token,
        "secrets:read",
        "secrets: [API_KEY, OTHER]",
    );
    ready(&core, &admin, "vault").await;
    let (status, got) = p.secret("API_KEY").await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["value"], "from-the-cluster");
    let (status, got) = p.secret("OTHER").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{got}");
    let res = http()
        .put(format!("{}/api/plugins/vault/secrets/API_KEY", core.url))
        .bearer_auth(&admin)
        .json(&json!({"value": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "secrets_managed_elsewhere");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tessera-secrets-vault in namespace apps"),
        "{v}"
    );
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

const GITHUB_HOOK: &str = r#"secrets: [GITHUB_SECRET, STRIPE_SECRET]
webhooks:
  - name: github
    path: /hooks/github
    signature: {scheme: hmac-sha256, header: X-Hub-Signature-256, secret: GITHUB_SECRET, prefix: "sha256="}
    deliveryIdHeader: X-GitHub-Delivery
  - name: stripe
    path: /hooks/stripe
    signature: {scheme: hmac-sha256, header: Stripe-Signature, secret: STRIPE_SECRET, prefix: "v1="}
    timestampHeader: Stripe-Signature
    toleranceSeconds: 300
  - name: open
    path: /hooks/open"#;

fn hmac_hex(key: &str, msg: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    m.update(msg);
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A GitHub-style delivery: the body signed with the secret, its delivery id.
async fn send_github(
    core: &Core,
    plugin: &str,
    key: &str,
    id: &str,
    body: &str,
) -> (StatusCode, Value) {
    let res = http()
        .post(format!("{}/hooks/{plugin}/github", core.url))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", id)
        .header(
            "x-hub-signature-256",
            format!("sha256={}", hmac_hex(key, body.as_bytes())),
        )
        .header("x-forwarded-for", "203.0.113.9")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap_or(Value::Null))
}

fn set_secret(core: &Core, admin: &str, plugin: &str, name: &str, value: &str) {
    let set = tessera_with_stdin(
        &[
            "secret",
            "set",
            plugin,
            name,
            "--url",
            &core.url,
            "--admin-token",
            admin,
        ],
        Some(value.as_bytes()),
    );
    assert_eq!(set.code, Some(0), "{set:?}");
}

/// A signed request is answered 202 and reaches the plugin byte for byte (with the sender's
/// headers it keeps, a call token of kind webhook); a wrong signature is 401, a replayed
/// delivery id and a stale timestamp are 202 and never delivered (again); an unsigned hook the
/// admin does not allow is 401; over 1 MiB 413; over the rate 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_reaches_the_plugin_once_and_forgeries_do_not() {
    let core = Core::start(&fast_config("webhooks:\n  perMinute: 30\n"));
    let admin = core.admin_token();
    set_secret(
        &core,
        &admin,
        "ci",
        "GITHUB_SECRET",
        "It's a Secret to Everybody",
    );
    set_secret(&core, &admin, "ci", "STRIPE_SECRET", "whsec_test");
    let token = core.token(&["--plugin", "ci", "--capabilities", "webhooks:ingest"]);
    let p = Plugin::start(&core, "ci", &token, "webhooks:ingest", GITHUB_HOOK);
    ready(&core, &admin, "ci").await;

    let body = r#"{"ref":"refs/heads/main","commits":[{"id":"0d1a26e6"}]}"#;
    let (status, answer) = send_github(
        &core,
        "ci",
        "It's a Secret to Everybody",
        "72d3162e-cc78",
        body,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["id"], "72d3162e-cc78");
    assert_eq!(answer["duplicate"], false);
    within(Duration::from_secs(10), "the delivery", || async {
        !p.deliveries().is_empty()
    })
    .await;
    let d = &p.deliveries()[0];
    assert_eq!(d["body"], body);
    assert_eq!(d["webhook"], "github");
    assert_eq!(d["deliveryId"], "72d3162e-cc78");
    assert_eq!(d["type"], "ci.webhook.github");
    assert_eq!(d["caller"], json!({"sub": "core", "kind": "webhook"}));
    assert_eq!(d["headers"]["x-github-event"], "push");
    assert_eq!(d["headers"]["content-type"], "application/json");
    assert!(d["headers"].get("x-forwarded-for").is_none(), "{d}");

    // The plugin's webhook route takes deliveries from the core only: a request-kind call (a
    // user through the proxy) is refused by the SDK.
    let call = tessera(&[
        "token",
        "call",
        "ci",
        "--kind",
        "request",
        "--data-dir",
        core.data_dir.to_str().unwrap(),
    ]);
    assert_eq!(call.code, Some(0), "{call:?}");
    let res = http()
        .post(p.url("/hooks/github"))
        .bearer_auth(call.stdout.trim())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "not_a_webhook_delivery"
    );
    // Nobody else gives the webhook's event type: a plugin publishing it is refused.
    let publisher = plugin_token(&core, "ci2", "events:publish,ui:panel,ui:route", json!({})).await;
    let res = http()
        .post(format!("{}/api/plugin/v1/events", core.url))
        .bearer_auth(&publisher)
        .json(&json!({"type": "ci2.webhook.github", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_event"
    );

    // The same delivery again: 202, not delivered twice.
    let (status, answer) = send_github(
        &core,
        "ci",
        "It's a Secret to Everybody",
        "72d3162e-cc78",
        body,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["duplicate"], true);
    // Forged: signed with another key, or the body changed.
    let (status, answer) = send_github(&core, "ci", "guessed", "forged-1", body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["error"]["code"], "webhook_signature_invalid");
    let res = http()
        .post(format!("{}/hooks/ci/github", core.url))
        .header("x-github-delivery", "forged-2")
        .header(
            "x-hub-signature-256",
            format!(
                "sha256={}",
                hmac_hex("It's a Secret to Everybody", body.as_bytes())
            ),
        )
        .body(body.replace("main", "evil"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Stripe style: "t=<unix>,v1=<hmac of t.body>"; a timestamp ten minutes old is not delivered.
    let now = tessera_tests::now_ms() / 1000;
    let stripe = |t: i64, body: &str| {
        let sig = hmac_hex("whsec_test", format!("{t}.{body}").as_bytes());
        http()
            .post(format!("{}/hooks/ci/stripe", core.url))
            .header("content-type", "application/json")
            .header("stripe-signature", format!("t={t},v1={sig}"))
            .body(body.to_string())
            .send()
    };
    let res = stripe(now, r#"{"id":"evt_fresh"}"#).await.unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let res = stripe(now - 600, r#"{"id":"evt_stale"}"#).await.unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.json::<Value>().await.unwrap()["queued"], false);
    within(Duration::from_secs(10), "the stripe delivery", || async {
        p.deliveries().iter().any(|d| d["webhook"] == "stripe")
    })
    .await;

    // Unsigned and not allowed; unknown; too large.
    let res = http()
        .post(format!("{}/hooks/ci/open", core.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = http()
        .post(format!("{}/hooks/ci/nope", core.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "webhook_not_found"
    );
    let big = "x".repeat((1 << 20) + 1);
    let (status, _) = send_github(&core, "ci", "It's a Secret to Everybody", "big", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = p.deliveries();
    let github: Vec<&Value> = got.iter().filter(|d| d["webhook"] == "github").collect();
    assert_eq!(github.len(), 1, "{got:?}");
    let stripe_got: Vec<&Value> = got.iter().filter(|d| d["webhook"] == "stripe").collect();
    assert_eq!(stripe_got.len(), 1, "{got:?}");
    assert_eq!(stripe_got[0]["body"], r#"{"id":"evt_fresh"}"#);

    // The rate: 30 a minute per webhook, then 429 with Retry-After.
    let mut limited = None;
    for i in 0..40 {
        let (status, answer) = send_github(
            &core,
            "ci",
            "It's a Secret to Everybody",
            &format!("burst-{i}"),
            "{}",
        )
        .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(answer);
            break;
        }
    }
    let limited = limited.expect("no 429 within 40 requests at 30 a minute");
    assert_eq!(limited["error"]["code"], "rate_limited");

    let metrics = http()
        .get(format!("{}/metrics", core.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"tessera_webhooks_requests_total{plugin="ci",webhook="github",outcome="duplicate"} 1"#
        ),
        "{metrics}"
    );
    tessera_tests::promtool_check(&metrics);
}

/// On the SQLite outbox and on NATS JetStream.
mod a_webhook_accepted_while_the_plugin_or_the_core_was_down_is_delivered_later {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_webhook_accepted_while_the_plugin_or_the_core_was_down_is_delivered_later("")
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats() {
        let nats = tessera_tests::nats::NatsServer::start();
        super::a_webhook_accepted_while_the_plugin_or_the_core_was_down_is_delivered_later(
            &nats.config(),
        )
        .await;
    }
}

/// Accepted while the plugin was down, or just before the core was killed: delivered once the
/// plugin (or the core) is back, each once (a replay of the same delivery is answered 202 and
/// not stored again).
async fn a_webhook_accepted_while_the_plugin_or_the_core_was_down_is_delivered_later(engine: &str) {
    // A fixed port, so the plugin finds the core again after its restart.
    let listen = format!("127.0.0.1:{}", free_port());
    let mut core = Core::start_at(&temp_dir("core"), &fast_config(engine), &listen);
    let admin = core.admin_token();
    set_secret(&core, &admin, "ci", "GITHUB_SECRET", "s3cret");
    set_secret(&core, &admin, "ci", "STRIPE_SECRET", "unused");
    let token = core.token(&["--plugin", "ci", "--capabilities", "webhooks:ingest"]);
    let mut p = Plugin::start(&core, "ci", &token, "webhooks:ingest", GITHUB_HOOK);
    ready(&core, &admin, "ci").await;
    p.stop();
    within(Duration::from_secs(10), "ci not Ready", || async {
        get_admin(&core, &admin, "/api/plugins/ci").await["state"] != "Ready"
    })
    .await;
    let (status, answer) = send_github(&core, "ci", "s3cret", "while-down", r#"{"n":1}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let (status, answer) = send_github(&core, "ci", "s3cret", "while-down", r#"{"n":1}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["duplicate"], true, "{answer}");
    // Straight after the 202, the core dies.
    let (status, answer) = send_github(&core, "ci", "s3cret", "before-kill", r#"{"n":2}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    core.kill9();
    core.restart();
    p.spawn();
    for _ in 0..100 {
        if p.deliveries().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        p.deliveries().len() >= 2,
        "not delivered within 20 s: {:?}\nsubscriptions: {}\n{}",
        p.deliveries(),
        get_admin(&core, &admin, "/api/events/subscriptions").await,
        core.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids: Vec<String> = p
        .deliveries()
        .iter()
        .map(|d| d["deliveryId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["before-kill", "while-down"]);
}

/// A client of the core's egress proxy, authenticated as a plugin (Basic, token as password).
fn via_egress(core: &Core, token: Option<&str>) -> reqwest::Client {
    let mut proxy = reqwest::Proxy::all(&core.egress_url).unwrap();
    if let Some(t) = token {
        proxy = proxy.basic_auth("plugin", t);
    }
    reqwest::Client::builder()
        .proxy(proxy)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn refused_with(res: reqwest::Response) -> (StatusCode, String, String) {
    let status = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    (
        status,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
        v["error"]["message"].as_str().unwrap_or("").to_string(),
    )
}

/// A TLS server on loopback (`openssl s_server -www`) with a certificate for `localhost`; the
/// certificate's path, to trust it.
struct TlsServer {
    child: Child,
    port: u16,
    cert: PathBuf,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = temp_dir("tls");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl (the test command installs it)");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let port = free_port();
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-www",
                "-quiet",
                "-cert",
            ])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsServer { child, port, cert }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The plugin calls an allowed destination through `CoreClient::http()`; curl with
/// `HTTPS_PROXY` reaches an allowed TLS server through CONNECT with TLS end to end; every other
/// destination (another loopback port, metadata, a name not in egressAllow), a missing token
/// and a plugin without the capability are refused with their codes, audited and counted; the
/// rate answers 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reaches_what_it_may_through_the_egress_proxy_and_nothing_else() {
    let tls = TlsServer::start();
    let api_port = free_port();
    // The core's own API stands in for a plain http:// service on loopback.
    let config = fast_config(&format!(
        "egress:\n  allow: [\"localhost:{tls}\", \"127.0.0.1:{api_port}\"]\n  rateLimit:\n    perMinute: 40\n",
        tls = tls.port
    ));
    let core = Core::start_at(&temp_dir("core"), &config, &format!("127.0.0.1:{api_port}"));
    let admin = core.admin_token();
    let other = free_port();
    let extra = format!(
        "permissions:\n  network:\n    egressAllow: [\"127.0.0.1:{api_port}\", \"localhost:{tls}\", \"127.0.0.1:{other}\", \"169.254.169.254:80\"]",
        tls = tls.port
    );
    let token = core.token(&["--plugin", "outbound", "--capabilities", "http:outbound"]);
    let p = Plugin::start(&core, "outbound", &token, "http:outbound", &extra);
    ready(&core, &admin, "outbound").await;

    // Through the SDK's client: an allowed http:// service answers.
    let fetch = |url: String| {
        let p_url = p.url("/public/fetch");
        async move {
            let q: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
            http()
                .get(format!("{p_url}?url={q}"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let got = fetch(format!("http://127.0.0.1:{api_port}/healthz")).await;
    assert_eq!(got["status"], 200, "{got}");
    assert!(got["body"].as_str().unwrap().contains("ok"), "{got}");
    // Listed in egressAllow but loopback and not in the admin's egress.allow: refused.
    let got = fetch(format!("http://127.0.0.1:{other}/")).await;
    assert_eq!(got["status"], 403, "{got}");
    assert!(
        got["body"]
            .as_str()
            .unwrap()
            .contains("egress_address_not_allowed"),
        "{got}"
    );
    // Metadata, even when the manifest names it.
    let got = fetch("http://169.254.169.254/latest/meta-data/".into()).await;
    assert_eq!(got["status"], 403, "{got}");
    assert!(
        got["body"]
            .as_str()
            .unwrap()
            .contains("egress_address_not_allowed"),
        "{got}"
    );
    // Not in egressAllow.
    let got = fetch(format!("http://127.0.0.1:{}/", free_port())).await;
    assert_eq!(got["status"], 403, "{got}");
    assert!(
        got["body"].as_str().unwrap().contains("egress_not_allowed"),
        "{got}"
    );

    // curl, as any client honouring HTTPS_PROXY: TLS end to end to the allowed server (the
    // certificate checks out against the server's own: the core did not terminate TLS).
    let curl_token = plugin_token(
        &core,
        "curl-user",
        "http:outbound,ui:panel,ui:route",
        json!({"permissions": {"network": {"egressAllow": [format!("localhost:{}", tls.port), format!("localhost:{other}")]}}}),
    )
    .await;
    let proxy_url = core
        .egress_url
        .replace("http://", &format!("http://plugin:{curl_token}@"));
    let curl = |target: String| {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&tls.cert)
            .arg(target)
            .env("HTTPS_PROXY", &proxy_url)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .unwrap()
    };
    let out = curl(format!("https://localhost:{}/", tls.port));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("s_server"),
        "{out:?}"
    );
    let out = curl(format!("https://localhost:{other}/"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{out:?}"
    );

    // Straight to the proxy: the codes a client receives.
    let target = format!("http://127.0.0.1:{api_port}/healthz");
    let (s, code, _) =
        refused_with(via_egress(&core, None).get(&target).send().await.unwrap()).await;
    assert_eq!(
        (s, code.as_str()),
        (
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "egress_auth_required"
        )
    );
    let (s, code, _) = refused_with(
        via_egress(&core, Some("forged"))
            .get(&target)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, code.as_str()),
        (
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "egress_auth_required"
        )
    );
    let no_cap = plugin_token(
        &core,
        "inward",
        "ui:panel,ui:route",
        json!({"permissions": {"network": {"egressAllow": [format!("127.0.0.1:{api_port}")]}}}),
    )
    .await;
    let (s, code, _) = refused_with(
        via_egress(&core, Some(&no_cap))
            .get(&target)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::FORBIDDEN, "capability_not_granted")
    );
    let res = via_egress(&core, Some(&curl_token))
        .get(&target)
        .send()
        .await
        .unwrap();
    let (s, code, msg) = refused_with(res).await;
    assert_eq!(
        (s, code.as_str()),
        (StatusCode::FORBIDDEN, "egress_not_allowed"),
        "{msg}"
    );
    assert!(msg.contains("egressAllow"), "{msg}");

    // Refusals are audited and counted; connections metered by destination.
    let audit = get_admin(&core, &admin, "/api/audit?limit=1000")
        .await
        .to_string();
    assert!(audit.contains("egress-refused"), "{audit}");
    assert!(audit.contains("169.254.169.254"), "{audit}");
    let metrics = http()
        .get(format!("{}/metrics", core.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(r#"tessera_egress_connections_total{{plugin="outbound",destination="127.0.0.1:{api_port}",kind="http"}} 1"#)),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(r#"tessera_egress_connections_total{{plugin="curl-user",destination="localhost:{}",kind="tunnel"}} 1"#, tls.port)), "{metrics}");
    assert!(metrics.contains(r#"tessera_egress_refusals_total{plugin="outbound",reason="egress_address_not_allowed"} 2"#), "{metrics}");
    tessera_tests::promtool_check(&metrics);

    // The rate: 40 connections a minute per plugin.
    let mut limited = false;
    for _ in 0..60 {
        let res = via_egress(&core, Some(&curl_token))
            .get(&target)
            .send()
            .await
            .unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(
                res.json::<Value>().await.unwrap()["error"]["code"],
                "rate_limited"
            );
            limited = true;
            break;
        }
    }
    assert!(limited, "no 429 within 60 connections at 40 a minute");

    // Its registration token revoked, the plugin's token stops opening anything at once.
    let reg = claim(&curl_token, "reg");
    let (s, _) = tessera_tests::client::post_admin(
        &core,
        &admin,
        &format!("/api/tokens/{reg}/revoke"),
        json!({}),
    )
    .await;
    assert!(s.is_success(), "{s}");
    let (s, code, _) = refused_with(
        via_egress(&core, Some(&curl_token))
            .get(&target)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, code.as_str()),
        (
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "egress_auth_required"
        )
    );

    // The kill switch: a disabled plugin calls out nowhere until it is enabled again.
    let (s, _) = tessera_tests::client::post_admin(
        &core,
        &admin,
        "/api/plugins/outbound/disable",
        json!({"reason": "leaking data"}),
    )
    .await;
    assert!(s.is_success(), "{s}");
    let got = fetch(format!("http://127.0.0.1:{api_port}/healthz")).await;
    assert_eq!(got["status"], 403, "{got}");
    assert!(
        got["body"]
            .as_str()
            .unwrap()
            .contains("disabled by an admin"),
        "{got}"
    );
    let (s, _) =
        tessera_tests::client::post_admin(&core, &admin, "/api/plugins/outbound/enable", json!({}))
            .await;
    assert!(s.is_success(), "{s}");
    let got = fetch(format!("http://127.0.0.1:{api_port}/healthz")).await;
    assert_eq!(got["status"], 200, "{got}");
}

/// A name whose DNS answer is link-local (the core's `/etc/hosts` in a mount namespace of its
/// own) is refused on the address it resolves to, whatever the manifest allows; so is a name
/// resolving to loopback that the admin does not allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_a_forbidden_address_is_refused() {
    let dir = temp_dir("hosts");
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n169.254.169.254 evil.example.com\n127.0.0.1 rebind.example.com\n",
    )
    .unwrap();
    let core = Core::start_with_hosts(&fast_config(""), &hosts);
    let token = plugin_token(
        &core,
        "outbound",
        "http:outbound,ui:panel,ui:route",
        json!({"permissions": {"network": {"egressAllow": ["*.example.com:80"]}}}),
    )
    .await;
    for (host, ip) in [
        ("evil.example.com", "169.254.169.254"),
        ("rebind.example.com", "127.0.0.1"),
    ] {
        let res = via_egress(&core, Some(&token))
            .get(format!("http://{host}/"))
            .send()
            .await
            .unwrap();
        let (s, code, msg) = refused_with(res).await;
        assert_eq!(
            (s, code.as_str()),
            (StatusCode::FORBIDDEN, "egress_address_not_allowed"),
            "{host}: {msg}"
        );
        assert!(msg.contains(ip), "{host}: {msg}");
    }
}
