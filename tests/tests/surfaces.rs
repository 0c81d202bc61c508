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
    fn start(core_url: &str, name: &str, token: &str, caps: &str, extra: &str) -> Plugin {
        let record = temp_dir("surfaces-record").join("record.jsonl");
        let env = vec![
            ("PLUGIN_NAME".to_string(), name.to_string()),
            ("CORE_BASE_URL".to_string(), core_url.to_string()),
            ("REG_TOKEN".to_string(), token.to_string()),
            ("REGISTER_INTERVAL_SECONDS".to_string(), "0.3".to_string()),
            ("CAPABILITIES".to_string(), caps.to_string()),
            ("MANIFEST_EXTRA".to_string(), extra.to_string()),
            ("RECORD_FILE".to_string(), record.display().to_string()),
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
        &core.url,
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
        &core.url,
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
