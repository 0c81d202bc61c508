//! Two core replicas on one (fake) Kubernetes API server: the `--store kubernetes` mode.
//!
//! The fake speaks the real wire protocol (see `tests/fake-kube`), the cores are real
//! `tessera serve` processes with a real `kube::Client` reaching it through a kubeconfig.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_tests::client::{get_admin, http, manifest, plugin, post_admin, within};
use tessera_tests::core::{Core, fast_config};
use tessera_tests::plugin_server::TestPlugin;

mod cluster;
use cluster::{Cluster, NS, config, secret_token, tessera_kube};

/// Registers `name` at version 1.0.0, served by `p`.
async fn register(core: &Core, token: &str, name: &str, p: &TestPlugin) -> (StatusCode, Value) {
    tessera_tests::client::register(core, token, &manifest(name, "1.0.0"), p).await
}

async fn listed(core: &Core) -> Vec<String> {
    let Ok(res) = http()
        .get(format!("{}/api/shell/remotes", core.url))
        .send()
        .await
    else {
        return vec![];
    };
    let list: Vec<Value> = res.json().await.unwrap_or_default();
    list.iter()
        .filter_map(|r| r["name"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registration_on_one_replica_reaches_the_other_and_a_disable_comes_back() {
    a_registration_on_one_replica_reaches_the_other_and_a_disable_comes_back_on(
        Cluster::fake().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a Kubernetes cluster from KUBECONFIG"]
async fn a_registration_on_one_replica_reaches_the_other_and_a_disable_comes_back_on_a_real_cluster()
 {
    a_registration_on_one_replica_reaches_the_other_and_a_disable_comes_back_on(
        Cluster::real().await,
    )
    .await;
}

async fn a_registration_on_one_replica_reaches_the_other_and_a_disable_comes_back_on(k: Cluster) {
    let a = k.replica("core-a", &config());
    let b = k.replica("core-b", &config());
    let p = TestPlugin::start("atlas");
    let (s, body) = register(&a, &k.plugin_token("atlas"), "atlas", &p).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    // Ready is decided by the leader (either replica); both lists must show it.
    within(Duration::from_secs(10), "atlas listed on A", || async {
        listed(&a).await.contains(&"atlas".to_string())
    })
    .await;
    let lag = within(
        Duration::from_secs(1),
        "atlas listed on B within 1 s of A",
        || async { listed(&b).await.contains(&"atlas".to_string()) },
    )
    .await;
    eprintln!("B listed atlas {lag:?} after A");
    // The record lives in a ConfigMap with the documented name and labels.
    let cm = k.get("configmaps", &k.ns, "tessera-plugin-atlas").unwrap();
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "tessera"
    );
    assert_eq!(cm["metadata"]["labels"]["tessera.dev/plugin"], "atlas");

    let admin = k.admin();
    let (s, body) = post_admin(
        &b,
        &admin,
        "/api/plugins/atlas/disable",
        json!({"reason": "incident 7"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let lag = within(
        Duration::from_secs(1),
        "atlas gone from A within 1 s",
        || async { !listed(&a).await.contains(&"atlas".to_string()) },
    )
    .await;
    eprintln!("A dropped atlas {lag:?} after B's disable");
    assert_eq!(plugin(&a, &admin, "atlas").await["state"], "Disabled");
    // Audit as Events regarding the ConfigMap.
    let events = k.list("events", &k.ns);
    assert!(
        events.iter().any(|e| e["action"] == "disable"
            && e["regarding"]["name"] == "tessera-plugin-atlas"
            && e["note"] == "incident 7"),
        "{events:?}"
    );
    let audit = get_admin(&a, &admin, "/api/audit?plugin=atlas").await;
    assert!(audit.to_string().contains("incident 7"), "{audit}");
    // Without a shared engine, event delivery is in memory per replica, and the core says so.
    let subs = get_admin(&a, &admin, "/api/events/subscriptions").await;
    assert_eq!(subs["durable"], false, "{subs}");
    let metrics = tessera_tests::client::text(&format!("{}/metrics", a.url)).await;
    assert!(
        metrics.lines().any(|l| l == "tessera_events_durable 0"),
        "{metrics}"
    );
    assert!(
        a.log().contains("accepted events are held in memory"),
        "{}",
        a.log()
    );
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_leader_dies_the_other_replica_probes_within_20_s() {
    when_the_leader_dies_the_other_replica_probes_within_20_s_on(Cluster::fake().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a Kubernetes cluster from KUBECONFIG"]
async fn when_the_leader_dies_the_other_replica_probes_within_20_s_on_a_real_cluster() {
    when_the_leader_dies_the_other_replica_probes_within_20_s_on(Cluster::real().await).await;
}

async fn when_the_leader_dies_the_other_replica_probes_within_20_s_on(k: Cluster) {
    // The documented default timings: Lease 15 s, renew 10 s, retry 2 s.
    let cfg = fast_config("urlPolicy:\n  allowHosts: [127.0.0.1]\n");
    let mut a = k.replica("core-a", &cfg);
    within(Duration::from_secs(10), "core-a leads", || async {
        k.leader().as_deref() == Some("core-a")
    })
    .await;
    let b = k.replica("core-b", &cfg);
    let p = TestPlugin::start("beacon");
    let (s, body) = register(&b, &k.plugin_token("beacon"), "beacon", &p).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    within(Duration::from_secs(10), "beacon listed on B", || async {
        listed(&b).await.contains(&"beacon".to_string())
    })
    .await;
    a.kill9();
    p.set_ready(false);
    let took = within(
        Duration::from_secs(20),
        "B probes and withdraws beacon",
        || async { !listed(&b).await.contains(&"beacon".to_string()) },
    )
    .await;
    eprintln!("B took over and withdrew the failing plugin {took:?} after the leader died");
    assert_eq!(k.leader().as_deref(), Some("core-b"));
    k.cleanup().await;
}

/// Whether a record is disabled (Enabled=False) and shows the UiLoaded outcome `ok`.
fn both(r: &Value, ok: bool) -> bool {
    let cond = |t: &str| {
        r["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .map(|c| c["status"].clone())
            .unwrap_or(Value::Null)
    };
    cond("Enabled") == "False" && cond("UiLoaded") == if ok { "True" } else { "False" }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_from_both_replicas_lose_no_update() {
    concurrent_writes_from_both_replicas_lose_no_update_on(Cluster::fake().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a Kubernetes cluster from KUBECONFIG"]
async fn concurrent_writes_from_both_replicas_lose_no_update_on_a_real_cluster() {
    concurrent_writes_from_both_replicas_lose_no_update_on(Cluster::real().await).await;
}

async fn concurrent_writes_from_both_replicas_lose_no_update_on(k: Cluster) {
    let a = k.replica("core-a", &config());
    let b = k.replica("core-b", &config());
    let p = TestPlugin::start("canvas");
    let (s, body) = register(&a, &k.plugin_token("canvas"), "canvas", &p).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let admin = k.admin();
    // A changes the Enabled condition (disable/enable) while B changes UiLoaded (shell
    // reports), on the same record, at the same time, 20 rounds. Without resourceVersion
    // preconditions one replica would overwrite the other's change.
    for round in 0..20 {
        let ok = round % 2 == 0;
        let disable = post_admin(
            &a,
            &admin,
            "/api/plugins/canvas/disable",
            json!({"reason": format!("round {round}")}),
        );
        let report = http()
            .post(format!("{}/api/shell/reports", b.url))
            // What the shell\'s own fetch sends.
            .header("sec-fetch-site", "same-origin")
            .json(&json!({"plugin": "canvas", "version": "1.0.0", "ok": ok, "stage": "mount", "message": format!("round {round}")}))
            .send();
        let ((s1, b1), r2) = tokio::join!(disable, report);
        assert_eq!(s1, StatusCode::OK, "{b1}");
        assert_eq!(r2.unwrap().status(), 202);
        // Both acknowledged writes are in the stored record at once...
        let stored = k.get("configmaps", &k.ns, "tessera-plugin-canvas").unwrap();
        let stored: Value =
            serde_json::from_str(stored["data"]["record.json"].as_str().unwrap()).unwrap();
        assert!(both(&stored, ok), "round {round}, the ConfigMap: {stored}");
        // ...and in each replica's view once the watch has delivered the other's.
        for core in [&a, &b] {
            within(
                Duration::from_secs(2),
                &format!("round {round}: both changes on {}", core.url),
                || async { both(&plugin(core, &admin, "canvas").await, ok) },
            )
            .await;
        }
        let (s, body) = post_admin(&a, &admin, "/api/plugins/canvas/enable", json!({})).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_and_expired_watch_resyncs_the_index() {
    let k = Cluster::fake().await;
    let a = k.replica("core-a", &config());
    let b = k.replica("core-b", &config());
    let p1 = TestPlugin::start("delta");
    let p2 = TestPlugin::start("echo");
    for (name, p) in [("delta", &p1), ("echo", &p2)] {
        let (s, body) = register(&a, &k.plugin_token(name), name, p).await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    within(Duration::from_secs(10), "both listed on B", || async {
        let l = listed(&b).await;
        l.contains(&"delta".to_string()) && l.contains(&"echo".to_string())
    })
    .await;
    // Cut every watch and forget the history: resuming gets 410 Expired, so the replicas must
    // re-list. A deletion made meanwhile is only visible to a re-list.
    k.fake_api().drop_watches();
    k.fake_api().compact();
    let admin = k.admin();
    let res = http()
        .delete(format!("{}/api/plugins/delta", a.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    within(
        Duration::from_secs(10),
        "delta gone from B after the re-list",
        || async {
            let l = listed(&b).await;
            !l.contains(&"delta".to_string()) && l.contains(&"echo".to_string())
        },
    )
    .await;
    let res = http()
        .get(format!("{}/api/plugins/delta", b.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_server_down_reads_keep_serving_writes_fail_fast_and_recover() {
    let k = Cluster::fake().await;
    let a = k.replica("core-a", &config());
    let b = k.replica("core-b", &config());
    let p = TestPlugin::start("fjord");
    let (s, body) = register(&a, &k.plugin_token("fjord"), "fjord", &p).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    within(Duration::from_secs(10), "fjord listed on both", || async {
        listed(&a).await.contains(&"fjord".to_string())
            && listed(&b).await.contains(&"fjord".to_string())
    })
    .await;
    let admin = k.admin();
    k.fake_api().set_unavailable(true);
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(10) {
        // Reads come from the index.
        assert!(listed(&a).await.contains(&"fjord".to_string()));
        assert!(listed(&b).await.contains(&"fjord".to_string()));
        // Writes answer 503 store_unavailable, within the API timeout (2 s) plus margin.
        let t = Instant::now();
        let (s, body) = post_admin(
            &b,
            &admin,
            "/api/plugins/fjord/disable",
            json!({"reason": "outage"}),
        )
        .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "took {:?}",
            t.elapsed()
        );
    }
    k.fake_api().set_unavailable(false);
    // Writes work again without a restart, and the change reaches the other replica.
    within(
        Duration::from_secs(10),
        "a write succeeds after the outage",
        || async {
            post_admin(
                &b,
                &admin,
                "/api/plugins/fjord/disable",
                json!({"reason": "after"}),
            )
            .await
            .0 == StatusCode::OK
        },
    )
    .await;
    within(
        Duration::from_secs(10),
        "A sees the disable after the outage",
        || async { !listed(&a).await.contains(&"fjord".to_string()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_share_one_signing_key() {
    replicas_starting_together_share_one_signing_key_on(Cluster::fake().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a Kubernetes cluster from KUBECONFIG"]
async fn replicas_starting_together_share_one_signing_key_on_a_real_cluster() {
    replicas_starting_together_share_one_signing_key_on(Cluster::real().await).await;
}

async fn replicas_starting_together_share_one_signing_key_on(k: Cluster) {
    let (kc1, kc2) = (k.kubeconfig.clone(), k.kubeconfig.clone());
    let cfg = config();
    let (cfg1, cfg2) = (cfg.clone(), cfg.clone());
    let (ns1, ns2) = (k.ns.clone(), k.ns.clone());
    let t1 = std::thread::spawn(move || Core::start_kube_as(&kc1, &ns1, &cfg1, "core-a"));
    let t2 = std::thread::spawn(move || Core::start_kube_as(&kc2, &ns2, &cfg2, "core-b"));
    let (a, b) = (t1.join().unwrap(), t2.join().unwrap());
    let secrets: Vec<Value> = k
        .list("secrets", &k.ns)
        .into_iter()
        .filter(|s| s["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tessera")
        .collect();
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    // A token signed with the Secret's key is accepted by both replicas.
    let admin = k.admin();
    for core in [&a, &b] {
        let res = http()
            .get(format!("{}/api/plugins", core.url))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", core.log());
    }
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plugin_urls_must_name_services_in_the_token_namespace() {
    plugin_urls_must_name_services_in_the_token_namespace_on(Cluster::fake().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a Kubernetes cluster from KUBECONFIG"]
async fn plugin_urls_must_name_services_in_the_token_namespace_on_a_real_cluster() {
    plugin_urls_must_name_services_in_the_token_namespace_on(Cluster::real().await).await;
}

async fn plugin_urls_must_name_services_in_the_token_namespace_on(k: Cluster) {
    // The default URL policy: no allowHosts beyond `loopback`, which cluster mode ignores.
    let a = k.replica("core-a", &fast_config(""));
    let body = |backend: &str| {
        json!({"manifest": manifest("gamma", "1.0.0"), "backendUrl": backend,
               "remoteUrl": format!("{backend}/mf/remoteEntry.js")})
    };
    let post = |token: String, body: Value| {
        let url = format!("{}/api/plugins/register", a.url);
        async move {
            let res = http()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let s = res.status();
            (s, res.json::<Value>().await.unwrap())
        }
    };
    for (token, backend, rule) in [
        (k.plugin_token("gamma"), "http://127.0.0.1:9", "cluster"),
        (k.plugin_token("gamma"), "http://gamma.plugins", "cluster"),
        (
            k.scoped_token("gamma", Some("plugins")),
            "http://gamma.other.svc:8080",
            "namespace",
        ),
    ] {
        let (s, v) = post(token, body(backend)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{backend}: {v}");
        assert_eq!(v["error"]["code"], "url_not_allowed", "{v}");
        assert_eq!(v["error"]["details"][0]["rule"], rule, "{backend}: {v}");
    }
    for backend in [
        "http://gamma.plugins.svc:8080",
        "http://gamma.plugins.svc.cluster.local:8080",
    ] {
        let (s, v) = post(k.scoped_token("gamma", Some("plugins")), body(backend)).await;
        assert!(s.is_success(), "{backend}: {v}");
    }
    k.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_keeps_token_secrets_and_rotation_revokes_the_old_token() {
    let k = Cluster::fake().await;
    // An admin's own Secret for "keep" exists before the core starts: never overwritten.
    let res = http()
        .post(format!(
            "{}/api/v1/namespaces/team-b/secrets",
            k.fake_api().url()
        ))
        .json(&json!({"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": "plugin-reg-token-keep"},
                      "stringData": {"token": "keep-me"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let cfg = format!(
        "{}plugins:\n- name: hello\n  namespace: team-a\n  capabilities: [ui:panel, ui:route]\n- name: keep\n  namespace: team-b\n  capabilities: [ui:panel]\n",
        config()
    );
    let a = k.replica("core-a", &cfg);
    let b = k.replica("core-b", &cfg);
    within(
        Duration::from_secs(10),
        "Secret team-a/plugin-reg-token-hello",
        || async { secret_token(&k, "team-a", "plugin-reg-token-hello").is_some() },
    )
    .await;
    assert_eq!(
        secret_token(&k, "team-b", "plugin-reg-token-keep").as_deref(),
        Some("keep-me")
    );
    let old = secret_token(&k, "team-a", "plugin-reg-token-hello").unwrap();
    let claims = tessera_core::auth::peek_claims(&old).unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.ns.as_deref()),
        ("hello", Some("team-a"))
    );
    assert_eq!(claims.caps, ["ui:panel", "ui:route"]);
    let p = TestPlugin::start("hello");
    let (s, body) = register(&a, &old, "hello", &p).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    // Rotation: a new token in the Secret, the old one refused by both replicas.
    let out: Value = serde_json::from_str(&tessera_kube(
        &k,
        &[
            "token",
            "rotate",
            "--plugin",
            "hello",
            "--k8s-namespace",
            "team-a",
            "--core-namespace",
            NS,
        ],
    ))
    .unwrap();
    assert_eq!(out["revoked"], claims.jti.as_str());
    let new = secret_token(&k, "team-a", "plugin-reg-token-hello").unwrap();
    assert_ne!(new, old);
    for core in [&a, &b] {
        within(Duration::from_secs(3), "the old token refused", || async {
            let (s, body) = register(core, &old, "hello", &p).await;
            s == StatusCode::UNAUTHORIZED && body["error"]["code"] == "token_revoked"
        })
        .await;
        let (s, body) = register(core, &new, "hello", &p).await;
        assert!(s.is_success(), "{body}");
    }

    // `token issue --k8s-secret` writes a token the cores accept.
    tessera_kube(
        &k,
        &[
            "token",
            "issue",
            "--plugin",
            "zeta",
            "--capabilities",
            "ui:panel,ui:route",
            "--namespace",
            "team-c",
            "--core-namespace",
            NS,
            "--k8s-secret",
            "zeta-token",
            "--k8s-namespace",
            "team-c",
        ],
    );
    let zeta = secret_token(&k, "team-c", "zeta-token").unwrap();
    let pz = TestPlugin::start("zeta");
    let (s, body) = register(&b, &zeta, "zeta", &pz).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn declared_plugins_are_installed_until_registered_and_static_ones_register_themselves() {
    let k = Cluster::fake().await;
    let omega = TestPlugin::start("omega"); // serves an invalid manifest at first
    let sigma = TestPlugin::start("sigma");
    let dead = tessera_tests::free_port();
    let cfg = format!(
        "{}plugins:\n\
         - {{name: omega, namespace: team-a, capabilities: [ui:panel, ui:route], backendUrl: \"{}\"}}\n\
         - {{name: sigma, namespace: team-a, capabilities: [ui:panel, ui:route], backendUrl: \"{}\", manifest: {}}}\n\
         - {{name: tau, namespace: team-a, capabilities: [ui:panel, ui:route]}}\n\
         - {{name: psi, namespace: team-a, capabilities: [ui:panel], backendUrl: \"http://127.0.0.1:{dead}\"}}\n",
        config(),
        omega.url,
        sigma.url,
        manifest("sigma", "1.0.0"),
    );
    let a = k.replica("core-a", &cfg);
    let b = k.replica("core-b", &cfg);
    let admin = k.admin();
    let registered = |v: &Value| {
        v["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Registered"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    // The inline static plugin registers and is shown on both replicas.
    within(
        Duration::from_secs(10),
        "sigma listed on A and B",
        || async {
            listed(&a).await.contains(&"sigma".to_string())
                && listed(&b).await.contains(&"sigma".to_string())
        },
    )
    .await;
    // The others are Installed, with the reason why, and not shown.
    within(
        Duration::from_secs(5),
        "omega, tau, psi Installed",
        || async {
            let mut ok = true;
            for n in ["omega", "tau", "psi"] {
                let v = plugin(&b, &admin, n).await;
                ok &=
                    v["state"] == "Installed" && registered(&v)["reason"] == "AwaitingRegistration";
            }
            ok
        },
    )
    .await;
    let omega_v = plugin(&a, &admin, "omega").await;
    assert_eq!(omega_v["version"], Value::Null, "{omega_v}");
    assert!(
        registered(&omega_v)["message"]
            .as_str()
            .unwrap()
            .contains("invalid_manifest"),
        "{omega_v}"
    );
    let tau = plugin(&a, &admin, "tau").await;
    assert!(
        registered(&tau)["message"]
            .as_str()
            .unwrap()
            .contains("team-a/plugin-reg-token-tau"),
        "{tau}"
    );
    let psi = plugin(&a, &admin, "psi").await;
    assert!(
        registered(&psi)["message"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{dead}/manifest")),
        "{psi}"
    );
    let l = listed(&a).await;
    assert!(
        !l.contains(&"omega".to_string()) && !l.contains(&"tau".to_string()),
        "{l:?}"
    );

    // omega's service now answers a valid manifest: the core registers it, probes gate it.
    omega.set_manifest(manifest("omega", "1.0.0"));
    within(
        Duration::from_secs(10),
        "omega listed after its manifest became valid",
        || async { listed(&b).await.contains(&"omega".to_string()) },
    )
    .await;
    // tau registers with the token the leader put in its Secret.
    let token = secret_token(&k, "team-a", "plugin-reg-token-tau").unwrap();
    let tp = TestPlugin::start("tau");
    let (s, body) = register(&a, &token, "tau", &tp).await;
    assert!(s.is_success(), "{body}");
    within(Duration::from_secs(10), "tau listed", || async {
        listed(&a).await.contains(&"tau".to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_stopped_with_sigterm_hands_the_lease_over_at_once() {
    let k = Cluster::fake().await;
    // The default timings (Lease 15 s): a takeover within 5 s means the Lease was released.
    let cfg = fast_config("urlPolicy:\n  allowHosts: [127.0.0.1]\n");
    let mut a = k.replica("core-a", &cfg);
    within(Duration::from_secs(10), "core-a leads", || async {
        k.leader().as_deref() == Some("core-a")
    })
    .await;
    let _b = k.replica("core-b", &cfg);
    assert_eq!(
        tokio::task::block_in_place(|| a.terminate()),
        Some(0),
        "{}",
        a.log()
    );
    assert!(a.log().contains("released the Lease"), "{}", a.log());
    let took = within(Duration::from_secs(5), "core-b leads", || async {
        k.leader().as_deref() == Some("core-b")
    })
    .await;
    eprintln!("core-b took the released Lease {took:?} after core-a stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_rotated_through_one_replica_breaks_no_token_on_the_other() {
    a_key_rotated_through_one_replica_breaks_no_token_on_the_other_on(Cluster::fake().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a Kubernetes cluster from KUBECONFIG"]
async fn a_key_rotated_through_one_replica_breaks_no_token_on_the_other_on_a_real_cluster() {
    a_key_rotated_through_one_replica_breaks_no_token_on_the_other_on(Cluster::real().await).await;
}

async fn a_key_rotated_through_one_replica_breaks_no_token_on_the_other_on(k: Cluster) {
    let a = k.replica("core-a", &config());
    let b = k.replica("core-b", &config());
    let old_admin = k.admin();
    let old_kid = tessera_core::auth::kid_of(&old_admin).unwrap();
    let out = tessera_kube(&k, &["keys", "rotate", "--core-namespace", &k.ns]);
    let new_kid = k.keys().kid();
    assert_ne!(new_kid, old_kid);
    assert!(out.starts_with(&new_kid), "{out}");
    // A mints with the new key within seconds; B accepts A's token at once.
    let started = Instant::now();
    let token = loop {
        let (s, body) = post_admin(
            &a,
            &old_admin,
            "/api/tokens",
            json!({"admin": true, "ttl": "10m"}),
        )
        .await;
        assert!(s.is_success(), "{body}");
        let t = body["token"].as_str().unwrap().to_string();
        if tessera_core::auth::kid_of(&t).as_deref() == Some(new_kid.as_str()) {
            break t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "A still signs with the old key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for core in [&b, &a] {
        let res = http()
            .get(format!("{}/api/plugins", core.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", core.log());
        // The old key's tokens keep working.
        let res = http()
            .get(format!("{}/api/plugins", core.url))
            .bearer_auth(&old_admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    // Retired (with --force: the token list names the old admin's minted tokens), the old key's
    // tokens are refused by both replicas within seconds.
    tessera_kube(
        &k,
        &[
            "keys",
            "retire",
            &old_kid,
            "--force",
            "--core-namespace",
            &k.ns,
        ],
    );
    for core in [&a, &b] {
        within(Duration::from_secs(10), "old key refused", || async {
            let res = http()
                .get(format!("{}/api/plugins", core.url))
                .bearer_auth(&old_admin)
                .send()
                .await
                .unwrap();
            res.status() == StatusCode::UNAUTHORIZED
        })
        .await;
    }
    k.cleanup().await;
}
