//! The Helm chart of the core (`chart/`), checked with the real tools: `helm lint --strict`,
//! `helm template` over a set of values, `kubernetes-validate --strict` for the oldest and the
//! newest Kubernetes the chart supports, values refused by `values.schema.json`, policy checks
//! on the rendered objects, and the rendered config read by the core itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tessera_tests::repo_root;

/// The oldest and the newest Kubernetes versions the chart is validated against.
const KUBE_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

fn helm() -> PathBuf {
    tessera_tests::tool("helm", "HELM", "helm/helm")
}

fn kubernetes_validate() -> PathBuf {
    tessera_tests::tool(
        "kubernetes-validate",
        "KUBERNETES_VALIDATE",
        "venv/bin/kubernetes-validate",
    )
}

/// Runs helm with a scratch HOME (it writes caches there).
fn run_helm(args: &[&str]) -> Output {
    let home = std::env::temp_dir().join(format!("tessera-helm-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    Command::new(helm())
        .args(args)
        .current_dir(repo_root())
        .env("HOME", &home)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("run helm")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template` of the core chart with `--set-json` pairs; the rendered YAML.
fn render(sets: &[&str]) -> Result<String, String> {
    render_chart("chart", "tessera-system", sets)
}

fn render_chart(chart: &str, namespace: &str, sets: &[&str]) -> Result<String, String> {
    let mut args = vec!["template", "t", chart, "--namespace", namespace];
    for s in sets {
        args.push("--set-json");
        args.push(s);
    }
    let out = run_helm(&args);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(text(&out))
    }
}

fn docs(yaml: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(yaml) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if !v.is_null() {
            out.push(v);
        }
    }
    out
}

/// The values cases every check runs over (each a list of `--set-json` pairs).
fn cases() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("defaults", vec![]),
        (
            "declared plugins in two namespaces",
            vec![
                r#"plugins=[{"name":"hello","namespace":"team-a","capabilities":["ui:panel","ui:route"]},{"name":"billing","namespace":"team-b","capabilities":["ui:panel"],"backendUrl":"http://billing.team-b.svc:8080"}]"#,
            ],
        ),
        (
            "monitoring on",
            vec![
                r#"serviceMonitor={"enabled":true,"interval":"15s","labels":{"release":"prom"}}"#,
                r#"grafanaDashboard={"enabled":true,"labels":{"grafana_dashboard":"1"}}"#,
                r#"prometheusRule={"enabled":true,"labels":{"release":"prom"},"jobFailures":5,"jobLatenessSeconds":2}"#,
            ],
        ),
        (
            "no PDB, no NetworkPolicy, one replica",
            vec![
                "replicaCount=1",
                r#"podDisruptionBudget={"enabled":false,"minAvailable":1}"#,
                r#"networkPolicy={"enabled":false}"#,
            ],
        ),
        (
            "narrow network policy",
            vec![
                r#"networkPolicy={"enabled":true,"apiServerCIDR":"10.96.0.1/32","ingressFrom":[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"ingress"}}}]}"#,
            ],
        ),
        (
            "custom image, resources, service and scheduling",
            vec![
                r#"image={"repository":"registry.example.com/tessera","tag":"1.2.3","pullPolicy":"Always"}"#,
                r#"resources={"requests":{"cpu":"250m","memory":"192Mi"},"limits":{"cpu":"1","memory":"512Mi"}}"#,
                r#"service={"type":"LoadBalancer","port":8080}"#,
                r#"nodeSelector={"kubernetes.io/os":"linux"}"#,
                r#"tolerations=[{"key":"dedicated","operator":"Equal","value":"tessera","effect":"NoSchedule"}]"#,
                r#"imagePullSecrets=[{"name":"regcred"}]"#,
            ],
        ),
        (
            "existing service account, CDN, faster probes and leases",
            vec![
                r#"serviceAccount={"create":false,"name":"tessera-sa"}"#,
                r#"shell={"remoteOrigins":["https://cdn.example.com"]}"#,
                r#"urlPolicy={"allowHosts":["cdn.example.com"],"clusterServiceSuffixes":[".svc"]}"#,
                r#"probe={"periodSeconds":2,"timeoutSeconds":1,"failureThreshold":2,"successThreshold":1,"concurrency":32}"#,
                r#"kubernetes={"leaseSeconds":10,"renewSeconds":5,"retrySeconds":1,"apiTimeoutSeconds":3}"#,
                "replicaCount=3",
            ],
        ),
        (
            "plugins registering with their ServiceAccount",
            vec![
                r#"plugins=[{"name":"hello","namespace":"team-a","serviceAccount":"hello","capabilities":["ui:panel","events:publish"]},{"name":"billing","namespace":"team-b","capabilities":["ui:panel"]}]"#,
            ],
        ),
        (
            "events on a NATS server beside the chart, narrow network policy",
            vec![
                r#"events={"deliveryTimeoutSeconds":10,"maxAttempts":5,"maxAgeHours":48,"nats":{"url":"nats://nats.nats.svc:4333"}}"#,
                r#"networkPolicy={"enabled":true,"apiServerCIDR":"10.96.0.1/32"}"#,
            ],
        ),
        (
            "users sign in with OpenID Connect",
            vec![
                r#"auth={"oidc":{"enabled":true,"issuer":"https://login.example.com","clientId":"tessera","clientSecretName":"tessera-oidc","adminGroups":["platform"]}}"#,
            ],
        ),
    ]
}

#[test]
fn the_chart_lints_strictly() {
    let out = run_helm(&["lint", "--strict", "chart"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn every_rendering_is_valid_kubernetes_for_the_oldest_and_newest_versions() {
    for (name, sets) in cases() {
        let yaml = render(&sets).unwrap_or_else(|e| panic!("{name}: {e}"));
        validate(name, &yaml);
    }
}

/// Every built-in object of a rendering passes `kubernetes-validate --strict` for the oldest
/// and the newest supported Kubernetes (the ServiceMonitor, a CRD, is left out).
fn validate(name: &str, yaml: &str) {
    {
        let builtin: Vec<String> = docs(yaml)
            .into_iter()
            .filter(|d| d["apiVersion"] != "monitoring.coreos.com/v1")
            .map(|d| serde_norway::to_string(&d).unwrap())
            .collect();
        let input = builtin.join("---\n");
        for version in KUBE_VERSIONS {
            let mut child = Command::new(kubernetes_validate())
                .args(["--strict", "-k", version, "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run kubernetes-validate");
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
            drop(child.stdin.take());
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{name}, Kubernetes {version}:\n{}",
                text(&out)
            );
        }
    }
}

/// Non-root, no escalation, read-only root, no capabilities, seccomp, requests, probes.
fn pod_policies(name: &str, all: &[Value]) {
    let deploy = all.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for c in containers(deploy) {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        assert!(
            c["resources"]["requests"]["cpu"].is_string(),
            "{name}: cpu request"
        );
        assert!(
            c["resources"]["requests"]["memory"].is_string(),
            "{name}: memory request"
        );
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{name}: memory limit"
        );
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
    }
}

fn containers(d: &Value) -> Vec<&Value> {
    d.pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|c| c.iter().collect())
        .unwrap_or_default()
}

#[test]
fn rendered_objects_follow_the_policies() {
    const CLUSTER_SCOPED: [&str; 6] = [
        "ClusterRole",
        "ClusterRoleBinding",
        "Namespace",
        "CustomResourceDefinition",
        "PersistentVolume",
        "StorageClass",
    ];
    for (name, sets) in cases() {
        let all = docs(&render(&sets).unwrap());
        let reviews = sets.iter().any(|s| s.contains("serviceAccount\":\""));
        for d in &all {
            let kind = d["kind"].as_str().unwrap();
            let what = format!("{name}: {kind} {}", d["metadata"]["name"]);
            if reviews && kind == "ClusterRoleBinding" {
                // The one cluster-scoped grant: TokenReview for ServiceAccount plugins.
                assert_eq!(
                    d["roleRef"],
                    serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"}),
                    "{what}"
                );
                assert_eq!(d["subjects"][0]["name"], "t-tessera", "{what}");
                assert_eq!(d["subjects"][0]["namespace"], "tessera-system", "{what}");
            } else {
                assert!(!CLUSTER_SCOPED.contains(&kind), "{what} is cluster-scoped");
            }
            let labels = &d["metadata"]["labels"];
            for l in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/version",
                "helm.sh/chart",
            ] {
                assert!(labels[l].is_string(), "{what} lacks label {l}");
            }
        }
        assert_eq!(
            all.iter()
                .filter(|d| d["kind"] == "ClusterRoleBinding")
                .count(),
            usize::from(reviews),
            "{name}: the TokenReview binding exactly when a plugin has a serviceAccount"
        );
        pod_policies(name, &all);
        let netpol = all.iter().any(|d| d["kind"] == "NetworkPolicy");
        let disabled = sets
            .iter()
            .any(|s| s.contains(r#"networkPolicy={"enabled":false"#));
        assert_eq!(netpol, !disabled, "{name}: NetworkPolicy");
        // The core's Role: exactly the verbs docs/kubernetes.md documents.
        let role = all
            .iter()
            .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"].is_null())
            .unwrap();
        let rules: Vec<(String, String, String)> = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["apiGroups"][0].as_str().unwrap().to_string(),
                    r["resources"][0].as_str().unwrap().to_string(),
                    r["verbs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join(","),
                )
            })
            .collect();
        assert_eq!(
            rules,
            [
                ("", "configmaps", "get,list,watch,create,update,delete"),
                ("", "secrets", "get,create"),
                ("coordination.k8s.io", "leases", "get,create,update"),
                ("events.k8s.io", "events", "create,list"),
            ]
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())),
            "{name}"
        );
    }
}

#[test]
fn service_account_plugins_get_no_token_secret_role() {
    let (_, sets) = cases()
        .into_iter()
        .find(|(n, _)| n.contains("ServiceAccount"))
        .unwrap();
    let all = docs(&render(&sets).unwrap());
    let roles: Vec<&str> = all
        .iter()
        .filter(|d| d["kind"] == "Role")
        .filter(|d| {
            d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-plugin-tokens"))
        })
        .filter_map(|d| d["metadata"]["namespace"].as_str())
        .collect();
    assert_eq!(roles, ["team-b"], "token Secrets are kept for billing only");
}

/// In each declared plugin's namespace the core may create and read token Secrets, and read
/// the plugin's own secrets Secret (`tessera-secrets-<plugin>`) by name; nothing else.
#[test]
fn declared_plugin_namespaces_get_a_token_role_and_a_secrets_role_and_nothing_more() {
    let (_, sets) = cases().remove(1);
    let all = docs(&render(&sets).unwrap());
    let mut namespaced: Vec<(String, String, String)> = all
        .iter()
        .filter(|d| d["metadata"]["namespace"].is_string())
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["metadata"]["namespace"].as_str().unwrap().to_string(),
                d["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .rsplit("-plugin-")
                    .next()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    namespaced.sort();
    let expected: Vec<(String, String, String)> = [
        ("Role", "team-a", "secrets"),
        ("Role", "team-a", "tokens"),
        ("Role", "team-b", "secrets"),
        ("Role", "team-b", "tokens"),
        ("RoleBinding", "team-a", "secrets"),
        ("RoleBinding", "team-a", "tokens"),
        ("RoleBinding", "team-b", "secrets"),
        ("RoleBinding", "team-b", "tokens"),
    ]
    .iter()
    .map(|(k, n, r)| (k.to_string(), n.to_string(), r.to_string()))
    .collect();
    assert_eq!(namespaced, expected);
    for role in all
        .iter()
        .filter(|d| d["kind"] == "Role" && d["metadata"]["namespace"].is_string())
    {
        let name = role["metadata"]["name"].as_str().unwrap();
        let ns = role["metadata"]["namespace"].as_str().unwrap();
        let expected = if name.ends_with("-plugin-tokens") {
            serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]}])
        } else {
            let plugin = if ns == "team-a" { "hello" } else { "billing" };
            serde_json::json!([{"apiGroups": [""], "resources": ["secrets"],
                "resourceNames": [format!("tessera-secrets-{plugin}")], "verbs": ["get"]}])
        };
        assert_eq!(role["rules"], expected, "{name} in {ns}");
    }
}

/// The config.yaml the chart renders, as the core reads it.
fn rendered_config(sets: &[&str]) -> String {
    let all = docs(&render(sets).unwrap());
    let cm = all
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["config.yaml"].is_string())
        .unwrap();
    cm["data"]["config.yaml"].as_str().unwrap().to_string()
}

#[test]
fn the_rendered_config_is_one_the_core_accepts() {
    for (name, sets) in cases() {
        let yaml = rendered_config(&sets);
        let path = std::env::temp_dir().join(format!(
            "tessera-chart-config-{}-{}.yaml",
            std::process::id(),
            name.replace(' ', "-")
        ));
        std::fs::write(&path, &yaml).unwrap();
        let cfg = tessera_core::config::Config::from_file(&path)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
        cfg.check_final()
            .unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
        assert_eq!(
            cfg.store,
            tessera_core::config::StoreKind::Kubernetes,
            "{name}"
        );
    }
    // The NATS engine reaches the core's config, and its network policy lets the core reach it.
    let (_, nats) = cases()
        .into_iter()
        .find(|(n, _)| n.starts_with("events on a NATS server"))
        .unwrap();
    let path = std::env::temp_dir().join(format!("tessera-chart-nats-{}.yaml", std::process::id()));
    std::fs::write(&path, rendered_config(&nats)).unwrap();
    let cfg = tessera_core::config::Config::from_file(&path).unwrap();
    assert_eq!(
        cfg.events.nats.map(|n| n.url),
        Some("nats://nats.nats.svc:4333".to_string())
    );
    let policy = docs(&render(&nats).unwrap())
        .into_iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .unwrap();
    assert!(
        policy["spec"]["egress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["ports"][0]["port"] == 4333),
        "{policy}"
    );
    let cfg = rendered_config(&cases()[1].1);
    assert!(
        cfg.contains("name: billing") && cfg.contains("backendUrl: http://billing.team-b.svc:8080"),
        "{cfg}"
    );
}

#[test]
fn bad_values_are_refused_by_the_schema_with_the_field_named() {
    for (set, field) in [
        ("replicaCount=0", "replicaCount"),
        (
            r#"image={"repository":"x","pullPolicy":"Sometimes"}"#,
            "pullPolicy",
        ),
        (r#"service={"type":"ClusterIP","port":70000}"#, "port"),
        (r#"probe={"periodSeconds":"fast"}"#, "periodSeconds"),
        (r#"plugins=[{"name":"hello"}]"#, "namespace"),
        (
            r#"plugins=[{"name":"Hello World","namespace":"a"}]"#,
            "name",
        ),
        (
            r#"networkPolicy={"enabled":true,"apiServerCIDR":"anywhere"}"#,
            "apiServerCIDR",
        ),
        (r#"replicas=3"#, "replicas"),
        (r#"resources={"requests":{"cpu":"lots"}}"#, "cpu"),
    ] {
        let err = render(&[set]).expect_err(set);
        assert!(
            err.contains("values don't meet the specifications of the schema")
                && err.contains(field),
            "{set}: {err}"
        );
    }
}

#[test]
fn the_dashboard_uses_only_metrics_the_core_exports() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("chart/dashboards/tessera.json")).unwrap(),
    )
    .unwrap();
    let mut names = std::collections::BTreeSet::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("tessera_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    assert!(names.len() >= 9, "{names:?}");
    // Traffic that gives every family a sample: requests, a registration whose readiness
    // fails (probe failures), a CSP report about that plugin.
    let core = tessera_tests::core::Core::start(&tessera_tests::core::fast_config(""));
    let plugin = tessera_tests::plugin_server::TestPlugin::start("dash");
    plugin.set_ready(false);
    let http = reqwest::blocking::Client::new();
    let token = core.token(&["--plugin", "dash", "--capabilities", "ui:panel,ui:route"]);
    let res = http
        .post(format!("{}/api/plugins/register", core.url))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "manifest": tessera_tests::client::manifest("dash", "1.0.0"),
            "backendUrl": plugin.url, "remoteUrl": plugin.remote_url()}))
        .send()
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().unwrap());
    let res = http
        .post(format!("{}/api/shell/csp-reports", core.url))
        .header("content-type", "application/csp-report")
        .body(format!(
            r#"{{"csp-report": {{"blocked-uri": "{}/plugins/dash/1.0.0/x.js", "violated-directive": "script-src-elem"}}}}"#,
            core.url
        ))
        .send()
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let _ = http
        .get(format!("{}/plugins/dash/1.0.0/remoteEntry.js", core.url))
        .send();
    let base = |n: &str| -> String {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| n.strip_suffix(s))
            .unwrap_or(n)
            .to_string()
    };
    let mut families = Vec::new();
    for _ in 0..100 {
        let metrics = http
            .get(format!("{}/metrics", core.url))
            .send()
            .unwrap()
            .text()
            .unwrap();
        families = metrics
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        if names.iter().all(|n| families.contains(&base(n))) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for n in &names {
        assert!(
            families.contains(&base(n)),
            "the dashboard uses {n}, which the core does not export ({families:?})"
        );
    }
}

/// The chart's alerts pass `promtool check rules`, fire on the series they are about (and not
/// on healthy ones) under `promtool test rules`, and use only metrics the core exports.
#[test]
fn the_alert_rules_pass_promtool_and_fire_when_they_should() {
    let yaml = render(&[r#"prometheusRule={"enabled":true}"#]).unwrap();
    let rule = docs(&yaml)
        .into_iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let dir = tessera_tests::core::temp_dir("rules");
    let rules = dir.join("rules.yaml");
    std::fs::write(&rules, serde_norway::to_string(&rule["spec"]).unwrap()).unwrap();
    let promtool = tessera_tests::tool("promtool", "PROMTOOL", "prometheus/usr/bin/promtool");
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let tests = r#"rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'tessera_jobs_runs_total{plugin="billing",job="invoice",outcome="Failed"}'
        values: '0+1x40'
      - series: 'tessera_jobs_runs_total{plugin="billing",job="sync",outcome="Succeeded"}'
        values: '0+10x40'
      - series: 'tessera_jobs_runs_total{plugin="billing",job="sync",outcome="Missed"}'
        values: '0x20 1x20'
      - series: 'tessera_jobs_lateness_seconds_bucket{plugin="slowpoke",le="1.0"}'
        values: '0+1x40'
      - series: 'tessera_jobs_lateness_seconds_bucket{plugin="slowpoke",le="5.0"}'
        values: '0+60x40'
      - series: 'tessera_jobs_lateness_seconds_bucket{plugin="slowpoke",le="+Inf"}'
        values: '0+60x40'
      - series: 'tessera_jobs_lateness_seconds_bucket{plugin="billing",le="1.0"}'
        values: '0+60x40'
      - series: 'tessera_jobs_lateness_seconds_bucket{plugin="billing",le="+Inf"}'
        values: '0+60x40'
      - series: 'tessera_jobs_scheduler_active{pod="a"}'
        values: '1x10 0x30'
    alert_rule_test:
      - eval_time: 30m
        alertname: TesseraJobFailing
        exp_alerts:
          - exp_labels: {severity: warning, plugin: billing, job: invoice}
            exp_annotations:
              summary: Job invoice of plugin billing keeps failing
              description: 30 runs failed in 30 minutes (every attempt, retries included). Its last runs and their answers are at GET /api/plugins/billing/jobs.
      - eval_time: 30m
        alertname: TesseraJobsMissed
        exp_alerts:
          - exp_labels: {severity: warning, plugin: billing, job: sync}
            exp_annotations:
              summary: Job sync of plugin billing missed scheduled times
              description: No scheduler ran for longer than the job's starting deadline (no replica held the Lease, or the core was down).
      - eval_time: 10m
        alertname: TesseraJobsMissed
        exp_alerts: []
      - eval_time: 25m
        alertname: TesseraJobsLate
        exp_alerts:
          - exp_labels: {severity: warning, plugin: slowpoke}
            exp_annotations:
              summary: Jobs of plugin slowpoke start late
              description: 99% of runs start within 4.959s of their scheduled time (threshold 1 s). The scheduler is overloaded or the core is starved of CPU.
      - eval_time: 11m
        alertname: TesseraJobSchedulerAbsent
        exp_alerts: []
      - eval_time: 15m
        alertname: TesseraJobSchedulerAbsent
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations:
              summary: No Tessera replica schedules jobs
              description: No replica has held the Lease for 2 minutes; scheduled jobs are not running.
"#;
    std::fs::write(dir.join("tests.yaml"), tests).unwrap();
    let out = Command::new(&promtool)
        .args(["test", "rules", "tests.yaml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Every metric an alert reads is one the core exports: a core running a failing job.
    let core = tessera_tests::core::Core::start(&tessera_tests::core::fast_config(""));
    let token = core.token(&["--plugin", "failing", "--capabilities", "jobs:schedule"]);
    let mut plugin = Command::new(tessera_tests::jobs_plugin_bin())
        .env("PLUGIN_NAME", "failing")
        .env("PORT", tessera_tests::free_port().to_string())
        .env("CORE_BASE_URL", &core.url)
        .env("REG_TOKEN", token)
        .env(
            "JOBS",
            r#"[{"name": "fail", "schedule": "@every 1s", "path": "/jobs/status/503"}]"#,
        )
        .env_remove("REG_TOKEN_FILE")
        .env_remove("UI_REMOTE_PATH")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut metrics = String::new();
    for _ in 0..300 {
        metrics = reqwest::blocking::get(format!("{}/metrics", core.url))
            .unwrap()
            .text()
            .unwrap();
        if metrics.contains("outcome=\"Failed\"") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = plugin.kill();
    let _ = plugin.wait();
    for r in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
        let expr = r["expr"].as_str().unwrap();
        let name = &expr[expr.find("tessera_").unwrap()..];
        let name = &name[..name
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap()];
        assert!(
            metrics.contains(&format!("\n{name}{{")) || metrics.contains(&format!("\n{name} ")),
            "{} reads {name}, which the core does not export:\n{metrics}",
            r["alert"]
        );
    }
}

// === the plugin library chart and the template plugin's chart ===

/// A copy of the template plugin's chart with its library dependency built, in a fresh folder
/// (tests run in parallel; `helm dependency build` writes into the chart).
fn plugin_chart() -> String {
    let root = std::env::temp_dir().join(format!(
        "tessera-plugin-chart-{}-{}",
        std::process::id(),
        tessera_core::auth::new_jti()
    ));
    let copy = |from: &str, to: &std::path::Path| {
        let out = Command::new("cp")
            .arg("-r")
            .arg(repo_root().join(from))
            .arg(to)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    std::fs::create_dir_all(root.join("chart")).unwrap();
    std::fs::create_dir_all(root.join("plugin-template")).unwrap();
    copy("chart/tessera-plugin", &root.join("chart/tessera-plugin"));
    copy("plugin-template/chart", &root.join("plugin-template/chart"));
    let _ = std::fs::remove_dir_all(root.join("plugin-template/chart/charts"));
    let chart = root.join("plugin-template/chart").display().to_string();
    let out = run_helm(&["dependency", "build", &chart]);
    assert!(out.status.success(), "{}", text(&out));
    chart
}

fn plugin_cases() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("defaults", vec![]),
        (
            "autoscaling",
            vec![
                r#"autoscaling={"enabled":true,"minReplicas":2,"maxReplicas":6,"targetCPUUtilizationPercentage":70}"#,
            ],
        ),
        (
            "projected ServiceAccount token",
            vec![r#"registrationToken={"serviceAccountToken":true}"#],
        ),
        (
            "own token Secret, config, image and core",
            vec![
                r#"registrationToken={"secretName":"hello-token","key":"jwt"}"#,
                r#"config={"greeting":"hi","limits":{"rps":10}}"#,
                r#"image={"repository":"registry.example.com/hello","tag":"0.1.0-rc1","pullPolicy":"Always"}"#,
                r#"core={"url":"http://tessera.platform.svc:8080","namespace":"platform","podLabels":{"app.kubernetes.io/name":"tessera","app.kubernetes.io/instance":"prod"}}"#,
            ],
        ),
    ]
}

#[test]
fn the_plugin_charts_lint_strictly() {
    let chart = plugin_chart();
    for c in [chart.as_str(), "chart/tessera-plugin"] {
        let out = run_helm(&["lint", "--strict", c]);
        assert!(out.status.success(), "{c}: {}", text(&out));
    }
}

#[test]
fn plugin_chart_renderings_are_valid_and_follow_the_policies() {
    let chart = plugin_chart();
    for (name, sets) in plugin_cases() {
        let yaml = render_chart(&chart, "team-a", &sets).unwrap_or_else(|e| panic!("{name}: {e}"));
        validate(name, &yaml);
        let all = docs(&yaml);
        pod_policies(name, &all);
        for d in &all {
            let labels = &d["metadata"]["labels"];
            assert_eq!(labels["plugin.name"], "hello", "{name}: {d}");
            assert!(labels["plugin.version"].is_string(), "{name}: {d}");
            let kind = d["kind"].as_str().unwrap();
            assert!(
                !kind.starts_with("Cluster"),
                "{name}: {kind} is cluster-scoped"
            );
        }
        let deploy = all.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let env = containers(deploy)[0]["env"].as_array().unwrap().clone();
        let var = |n: &str| env.iter().find(|e| e["name"] == n).cloned();
        assert_eq!(var("LISTEN_HOST").unwrap()["value"], "0.0.0.0", "{name}");
        if name.starts_with("projected") {
            // No Secret and no Role: the pod's own token, projected for audience tessera.
            assert!(var("REG_TOKEN").is_none(), "{name}");
            assert_eq!(
                var("REG_TOKEN_FILE").unwrap()["value"],
                "/var/run/secrets/tessera/token"
            );
            assert!(!all.iter().any(|d| d["kind"] == "Role"), "{name}");
            let pod = &deploy["spec"]["template"]["spec"];
            let vol = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "tessera-token")
                .unwrap();
            assert_eq!(
                vol["projected"]["sources"][0]["serviceAccountToken"],
                serde_json::json!({"audience": "tessera", "expirationSeconds": 3600, "path": "token"})
            );
            assert_eq!(pod["serviceAccountName"], "hello");
            let mounts = containers(deploy)[0]["volumeMounts"].as_array().unwrap();
            assert!(
                mounts.iter().any(|m| m["name"] == "tessera-token"
                    && m["mountPath"] == "/var/run/secrets/tessera"),
                "{name}"
            );
            continue;
        }
        let token = env.iter().find(|e| e["name"] == "REG_TOKEN").unwrap();
        let secret = if name.starts_with("own token") {
            "hello-token"
        } else {
            "plugin-reg-token-hello"
        };
        assert_eq!(token["valueFrom"]["secretKeyRef"]["name"], secret, "{name}");
        // Least privilege: get on that one Secret.
        let role = all.iter().find(|d| d["kind"] == "Role").unwrap();
        assert_eq!(
            role["rules"],
            serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get"]}]),
            "{name}"
        );
        // Default-deny egress: DNS and the core, nothing else; calls out go through the core's
        // egress proxy, which the pod's proxy variables name (and never for the core itself).
        let np = all.iter().find(|d| d["kind"] == "NetworkPolicy").unwrap();
        assert_eq!(
            np["spec"]["policyTypes"],
            serde_json::json!(["Ingress", "Egress"])
        );
        let egress = np["spec"]["egress"].as_array().unwrap();
        assert_eq!(egress.len(), 2, "{name}: {egress:?}");
        assert_eq!(egress[0]["ports"][0]["port"], 53, "{name}");
        assert!(
            egress[1]["to"][0]["namespaceSelector"].is_object()
                && egress[1]["to"][0]["podSelector"].is_object(),
            "{name}"
        );
        let core_host = if name.starts_with("own token") {
            "tessera.platform.svc"
        } else {
            "tessera.tessera-system.svc"
        };
        let proxy = format!("http://{core_host}:8081");
        for v in ["HTTPS_PROXY", "HTTP_PROXY", "TESSERA_EGRESS_URL"] {
            assert_eq!(var(v).unwrap()["value"], proxy.as_str(), "{name}: {v}");
        }
        let no_proxy = var("NO_PROXY").unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            no_proxy.split(',').any(|h| h == core_host),
            "{name}: {no_proxy}"
        );
        if name == "autoscaling" {
            assert!(all.iter().any(|d| d["kind"] == "HorizontalPodAutoscaler"));
            assert!(
                deploy["spec"]["replicas"].is_null(),
                "the HPA owns replicas"
            );
        }
    }
}

#[test]
fn the_plugin_chart_version_the_label_and_plugin_yaml_agree() {
    let chart: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo_root().join("plugin-template/chart/Chart.yaml")).unwrap(),
    )
    .unwrap();
    let manifest: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo_root().join("plugin-template/plugin.yaml")).unwrap(),
    )
    .unwrap();
    let app_version = chart["appVersion"].as_str().unwrap();
    assert_eq!(app_version, manifest["version"].as_str().unwrap());
    assert_eq!(chart["name"], manifest["name"]);
    let all = docs(&render_chart(&plugin_chart(), "team-a", &[]).unwrap());
    for d in &all {
        assert_eq!(
            d["metadata"]["labels"]["plugin.version"], app_version,
            "{d}"
        );
    }
    let deploy = all.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["labels"]["plugin.version"],
        app_version
    );
}

#[test]
fn bad_plugin_values_are_refused_by_the_schema() {
    let chart = plugin_chart();
    for (set, field) in [
        (r#"plugin={"name":"Hello"}"#, "name"),
        (
            r#"core={"url":"http://t.x.svc","namespace":"x","podLabels":{"a":"b"},"egressPort":0}"#,
            "egressPort",
        ),
        (
            r#"core={"url":"tessera","namespace":"x","podLabels":{"a":"b"}}"#,
            "url",
        ),
        (r#"service={"port":0}"#, "port"),
        (r#"replicas=2"#, "replicas"),
    ] {
        let err = render_chart(&chart, "team-a", &[set]).expect_err(set);
        assert!(
            err.contains("values don't meet the specifications of the schema")
                && err.contains(field),
            "{set}: {err}"
        );
    }
}
