//! Registration with a projected ServiceAccount token (`plugins[].serviceAccount`), checked by a
//! TokenReview: against the fake API server (real wire shapes of TokenRequest and TokenReview),
//! and the `#[ignore]`d `*_on_a_real_cluster` variant against `KUBECONFIG`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_tests::client::{get_admin, http, manifest, post_admin, within};
use tessera_tests::core::{Core, fast_config, temp_dir};
use tessera_tests::plugin_server::TestPlugin;

mod cluster;
use cluster::{Backend, Cluster, config};

/// A request to the cluster's API (fake or real) as its admin.
async fn kube(k: &Cluster, method: &str, path: &str, body: Value) -> (u16, Value) {
    match &k.backend {
        Backend::Fake(f) => {
            let res = http()
                .request(method.parse().unwrap(), format!("{}{path}", f.url()))
                .json(&body)
                .send()
                .await
                .unwrap();
            let s = res.status().as_u16();
            (s, res.json().await.unwrap_or(Value::Null))
        }
        Backend::Real(c) => {
            let req = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap())
                .unwrap();
            match c.request::<Value>(req).await {
                Ok(v) => (201, v),
                Err(kube::Error::Api(s)) => (s.code, json!({"message": s.message})),
                Err(e) => panic!("{path}: {e}"),
            }
        }
    }
}

async fn create_service_account(k: &Cluster, name: &str) {
    let (s, v) = kube(
        k,
        "POST",
        &format!("/api/v1/namespaces/{}/serviceaccounts", k.ns),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
}

/// A projected token of ServiceAccount `name` (TokenRequest), for `audience` (None: the API
/// server's default).
async fn sa_token(k: &Cluster, name: &str, audience: Option<&str>) -> String {
    let mut spec = json!({"expirationSeconds": 3600});
    if let Some(a) = audience {
        spec["audiences"] = json!([a]);
    }
    let (s, v) = kube(
        k,
        "POST",
        &format!("/api/v1/namespaces/{}/serviceaccounts/{name}/token", k.ns),
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    v["status"]["token"].as_str().unwrap().to_string()
}

async fn register(core: &Core, token: &str, p: &TestPlugin) -> (StatusCode, Value) {
    tessera_tests::client::register(core, token, &manifest("hello", "1.0.0"), p).await
}

async fn whoami(core: &Core, token: &str) -> (StatusCode, Value) {
    let res = http()
        .get(format!("{}/api/plugin/v1/whoami", core.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let s = res.status();
    (s, res.json().await.unwrap())
}

fn declared(k: &Cluster) -> String {
    format!(
        "{}plugins:\n- name: hello\n  namespace: {}\n  serviceAccount: hello\n  capabilities: [ui:panel, ui:route, events:publish]\n",
        config(),
        k.ns
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plugin_registers_with_its_service_account_token() {
    a_plugin_registers_with_its_service_account_token_on(Cluster::fake().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real cluster: KUBECONFIG"]
async fn a_plugin_registers_with_its_service_account_token_on_a_real_cluster() {
    a_plugin_registers_with_its_service_account_token_on(Cluster::real().await).await;
}

async fn a_plugin_registers_with_its_service_account_token_on(k: Cluster) {
    create_service_account(&k, "hello").await;
    create_service_account(&k, "stranger").await;
    let core = k.replica("core-a", &declared(&k));
    let admin = k.admin();
    let p = TestPlugin::start("hello");

    // The ServiceAccount's token for audience `tessera` registers the declared plugin, with
    // the declared grants, and answers a plugin token.
    let token = sa_token(&k, "hello", Some("tessera")).await;
    let (s, v) = register(&core, &token, &p).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let plugin_token = v["pluginToken"].as_str().unwrap().to_string();
    let (s, me) = whoami(&core, &plugin_token).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["plugin"], "hello", "{me}");
    let caps: Vec<&str> = me["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(caps, ["events:publish", "ui:panel", "ui:route"], "{me}");
    // Again (the SDK re-registers every 15 s): unchanged, a fresh plugin token.
    let (s, v) = register(&core, &token, &p).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["pluginToken"].is_string());

    // The same ServiceAccount's token for the API server's own audience: refused.
    let default_aud = sa_token(&k, "hello", None).await;
    let (s, v) = register(&core, &default_aud, &p).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "service_account_token_invalid", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("audience"),
        "{v}"
    );
    // A ServiceAccount nobody declared: the API server vouches for it, the core refuses it.
    let stranger = sa_token(&k, "stranger", Some("tessera")).await;
    let (s, v) = register(&core, &stranger, &p).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "service_account_not_mapped", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{}/stranger", k.ns)),
        "{v}"
    );
    // A token with its payload changed (another ServiceAccount named in it): unknown to the
    // API server.
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    claims["sub"] = json!(format!("system:serviceaccount:{}:admin", k.ns));
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    let (s, v) = register(&core, &parts.join("."), &p).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "service_account_token_invalid", "{v}");

    // Nothing to distribute: the leader keeps no token Secret for a ServiceAccount plugin.
    assert!(
        k.get("secrets", &k.ns, "plugin-reg-token-hello").is_none(),
        "a token Secret was written for a ServiceAccount plugin"
    );

    // The kill switch for a ServiceAccount: revoking its id stops its registrations and ends
    // the plugin tokens it was given.
    let id = format!("serviceaccount_{}_hello", k.ns);
    let (s, v) = post_admin(
        &core,
        &admin,
        &format!("/api/tokens/{id}/revoke"),
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = register(&core, &token, &p).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "token_revoked", "{v}");
    let (s, v) = whoami(&core, &plugin_token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "token_revoked", "{v}");
    let audit = get_admin(&core, &admin, "/api/audit?plugin=hello").await;
    assert!(
        audit.to_string().contains("plugin:hello"),
        "the registration is audited: {audit}"
    );
    k.cleanup().await;
}

/// A hello-plugin process (the SDK runtime) reading its token from `REG_TOKEN_FILE`.
struct Plugin(std::process::Child);

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_tokens_are_refused_and_the_sdk_follows_the_kubelets_rotation() {
    let k = Cluster::fake().await;
    create_service_account(&k, "hello").await;
    let cfg = format!(
        "{}plugins:\n- name: hello\n  namespace: {}\n  serviceAccount: hello\n  capabilities: [ui:panel, ui:route]\n",
        config(),
        k.ns
    );
    let core = k.replica("core-a", &cfg);
    let admin = k.admin();

    // A token never shown to the core expires: the API server says so, the core passes it on.
    let stale = sa_token(&k, "hello", Some("tessera")).await;
    k.fake_api().expire_service_account_tokens();
    let p = TestPlugin::start("hello");
    let (s, v) = register(&core, &stale, &p).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "service_account_token_invalid", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("expired"),
        "{v}"
    );
    drop(p);

    // The plugin starts with the expired token in its projected file: refused, it keeps
    // trying; the kubelet writes a fresh token and the plugin registers without a restart.
    let dir = temp_dir("projected");
    let file = dir.join("token");
    std::fs::write(&file, &stale).unwrap();
    let ui = dir.join("dist");
    std::fs::create_dir_all(&ui).unwrap();
    std::fs::write(ui.join("remoteEntry.js"), "var plugin_hello={};\n").unwrap();
    let port = tessera_tests::free_port();
    let _plugin = Plugin(
        Command::new(tessera_tests::hello_plugin_bin())
            .env("PORT", port.to_string())
            .env("UI_REMOTE_PATH", &ui)
            .env("REGISTER_INTERVAL_SECONDS", "0.3")
            .env("CORE_BASE_URL", &core.url)
            .env_remove("REG_TOKEN")
            .env("REG_TOKEN_FILE", &file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("plugin.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    within(
        Duration::from_secs(10),
        "the refusal shown by /readyz",
        || async {
            let Ok(r) = http().get(&readyz).send().await else {
                return false;
            };
            r.text()
                .await
                .unwrap_or_default()
                .contains("service_account_token_invalid")
        },
    )
    .await;
    let fresh = sa_token(&k, "hello", Some("tessera")).await;
    // The kubelet swaps the file atomically (a symlink flip); a rename does the same here.
    std::fs::write(dir.join("token.new"), &fresh).unwrap();
    std::fs::rename(dir.join("token.new"), &file).unwrap();
    // A refused plugin watches its token file: registered within seconds, not a minute.
    within(Duration::from_secs(10), "hello registered", || async {
        let v = get_admin(&core, &admin, "/api/plugins/hello").await;
        // Declared plugins are Installed, without a version, until they register.
        v["version"].is_string()
    })
    .await;
    k.cleanup().await;
}

#[tokio::test]
async fn a_core_without_a_cluster_says_it_cannot_check_service_account_tokens() {
    let core = Core::start(&fast_config("urlPolicy:\n  allowHosts: [127.0.0.1]\n"));
    let p = TestPlugin::start("hello");
    let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let token = format!(
        "{}.{}.{}",
        enc(json!({"alg": "RS256", "kid": "k"})),
        enc(
            json!({"iss": "https://kubernetes.default.svc.cluster.local",
                   "sub": "system:serviceaccount:team-a:hello", "aud": ["tessera"],
                   "exp": 4_102_444_800u64})
        ),
        URL_SAFE_NO_PAD.encode([7u8; 256])
    );
    let (s, v) = register(&core, &token, &p).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "service_account_token_invalid", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("SQLite"),
        "{v}"
    );
}
