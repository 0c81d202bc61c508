//! Jobs end to end: a real core and `jobs-plugin` on the Rust SDK, real HTTP on loopback, the
//! SQLite store on disk, and two core replicas on the fake API server. What the plugin receives
//! (run ids, scheduled times, the verified call token), when, how often, and what an admin sees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_tests::client::{get_admin, http, post_admin, register_raw, within};
use tessera_tests::core::{Core, fast_config, temp_dir};
use tessera_tests::{free_port, jobs_plugin_bin};

mod cluster;

/// One `jobs-plugin` process.
struct Plugin {
    child: Option<Child>,
    port: u16,
    record: PathBuf,
}

impl Plugin {
    /// Starts `name` against `core_url` with `token`, declaring `jobs`.
    fn start(core_url: &str, name: &str, token: &str, jobs: Value) -> Plugin {
        Plugin::start_with(core_url, name, token, jobs, &[])
    }

    /// The same, with more environment (`CAPABILITIES`).
    fn start_with(
        core_url: &str,
        name: &str,
        token: &str,
        jobs: Value,
        env: &[(&str, &str)],
    ) -> Plugin {
        let record = temp_dir("jobs-record").join("record.jsonl");
        let port = free_port();
        let child = Command::new(jobs_plugin_bin())
            .env("PLUGIN_NAME", name)
            .env("PORT", port.to_string())
            .env("CORE_BASE_URL", core_url)
            .env("REG_TOKEN", token)
            .env("REGISTER_INTERVAL_SECONDS", "0.3")
            .env("RECORD_FILE", &record)
            .env("JOBS", jobs.to_string())
            .env_remove("REG_TOKEN_FILE")
            .env_remove("UI_REMOTE_PATH")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Plugin {
            child: Some(child),
            port,
            record,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/api{path}", self.port)
    }

    /// Every recorded line of `kind` (`start`, `end`, `aborted`).
    fn recorded(&self, kind: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["kind"] == kind)
            .collect()
    }

    /// First attempts received for `job`, by scheduled time (each a list: more than one is a
    /// scheduled time run twice).
    fn first_attempts(&self, job: &str) -> BTreeMap<String, Vec<Value>> {
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for s in self.recorded("start") {
            if s["job"] == job && s["attempt"] == 1 {
                out.entry(s["scheduled"].as_str().unwrap().to_string())
                    .or_default()
                    .push(s);
            }
        }
        out
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

async fn jobs(core: &Core, admin: &str, plugin: &str) -> HashMap<String, Value> {
    let v = get_admin(core, admin, &format!("/api/plugins/{plugin}/jobs")).await;
    v["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs in {v}"))
        .iter()
        .map(|j| (j["name"].as_str().unwrap().to_string(), j.clone()))
        .collect()
}

fn runs<'a>(job: &'a Value, outcome: &'a str) -> impl Iterator<Item = &'a Value> {
    job["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(move |r| outcome.is_empty() || r["outcome"] == outcome)
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

fn token(core: &Core, name: &str, caps: &str) -> String {
    core.token(&["--plugin", name, "--capabilities", caps])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_every_second_runs_each_scheduled_time_once_with_a_job_call_token() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let p = Plugin::start(
        &core.url,
        "clock",
        &token(&core, "clock", "jobs:schedule"),
        json!([{"name": "tick", "schedule": "@every 1s", "path": "/jobs/ok"}]),
    );
    ready(&core, &admin, "clock").await;
    within(Duration::from_secs(15), "five successful runs", || async {
        runs(&jobs(&core, &admin, "clock").await["tick"], "Succeeded").count() >= 5
    })
    .await;
    let job = jobs(&core, &admin, "clock").await["tick"].clone();
    assert_eq!(job["schedule"], "@every 1s");
    assert_eq!(job["source"], "manifest");
    assert_eq!(job["concurrency"], "Forbid");
    assert!(job["nextRun"].is_string(), "{job}");
    // What the plugin received: one call per scheduled time, whole seconds one apart, each
    // with the run id the core recorded, the core as caller and kind job (the SDK verified the
    // call token against the core's keys before the handler ran).
    let got = p.first_attempts("tick");
    let times: Vec<i64> = got.keys().map(|t| ms(t)).collect();
    assert!(times.len() >= 5, "{got:?}");
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], 1000, "consecutive scheduled times: {times:?}");
    }
    for (at, calls) in &got {
        assert_eq!(calls.len(), 1, "{at} run {} times", calls.len());
        let c = &calls[0];
        assert_eq!(c["caller"]["kind"], "job");
        assert_eq!(c["caller"]["sub"], "core");
        assert_eq!(ms(at) % 1000, 0, "@every 1s runs on whole seconds: {at}");
        // On time: received within a second of its scheduled time.
        let late = c["at"].as_i64().unwrap() - ms(at);
        assert!((0..1000).contains(&late), "{at} received {late} ms late");
    }
    for r in runs(&job, "Succeeded") {
        let id = r["id"].as_str().unwrap();
        let at = r["scheduled"].as_str().unwrap();
        assert_eq!(got[at][0]["runId"], id, "{r}");
        assert_eq!(r["status"], 200);
        assert_eq!(r["attempt"], 1);
        assert_eq!(r["trigger"], "schedule");
        assert!(r["duration"].as_f64().unwrap() < 1.0, "{r}");
        assert!(ms(r["started"].as_str().unwrap()) >= ms(at));
        assert_eq!(
            r["body"].as_str().unwrap(),
            format!("tick attempt 1 of run {id}"),
            "the answer's body is kept with the run"
        );
    }
    // A job's route answers job runs only: a request through the proxy (a call token of kind
    // request) is refused by the SDK's JobRun, and never counted as a run.
    let res = http()
        .post(format!("{}/api/proxy/clock/jobs/ok", core.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_a_job_run", "{body}");
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
            "tessera_jobs_runs_total{plugin=\"clock\",job=\"tick\",outcome=\"Succeeded\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("tessera_jobs_scheduled 1"), "{metrics}");
    assert!(
        metrics.contains("tessera_jobs_scheduler_active 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tessera_jobs_lateness_seconds_bucket{le=\"1.0\",plugin=\"clock\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_skips_overlapping_times_and_replace_aborts_the_running_call() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let p = Plugin::start(
        &core.url,
        "overlap",
        &token(&core, "overlap", "jobs:schedule"),
        json!([
            {"name": "slow", "schedule": "@every 1s", "path": "/jobs/sleep/2500"},
            {"name": "swap", "schedule": "@every 2s", "path": "/jobs/sleep/30000", "concurrency": "Replace"},
        ]),
    );
    ready(&core, &admin, "overlap").await;
    within(
        Duration::from_secs(20),
        "a skipped and a replaced run",
        || async {
            let j = jobs(&core, &admin, "overlap").await;
            runs(&j["slow"], "Succeeded").count() >= 2
                && runs(&j["slow"], "Skipped").count() >= 2
                && runs(&j["swap"], "Replaced").count() >= 2
        },
    )
    .await;
    let j = jobs(&core, &admin, "overlap").await;
    // Forbid: never two calls at once; the times that would overlap are recorded as Skipped.
    for r in runs(&j["slow"], "Skipped") {
        assert!(
            r["message"]
                .as_str()
                .unwrap()
                .contains("still running (concurrency Forbid)"),
            "{r}"
        );
        assert!(r["started"].is_null(), "a skipped run never started: {r}");
        assert!(
            !p.first_attempts("slow")
                .contains_key(r["scheduled"].as_str().unwrap()),
            "skipped {} was called",
            r["scheduled"]
        );
    }
    let mut calls: Vec<(i64, i64)> = Vec::new();
    let ends: HashMap<String, i64> = p
        .recorded("end")
        .iter()
        .map(|e| {
            (
                e["runId"].as_str().unwrap().to_string(),
                e["at"].as_i64().unwrap(),
            )
        })
        .collect();
    for (_, c) in p.first_attempts("slow") {
        if let Some(end) = ends.get(c[0]["runId"].as_str().unwrap()) {
            calls.push((c[0]["at"].as_i64().unwrap(), *end));
        }
    }
    calls.sort();
    for w in calls.windows(2) {
        assert!(w[1].0 >= w[0].1, "calls overlapped under Forbid: {calls:?}");
    }
    // Replace: the running call is cancelled (the plugin sees its request aborted) and recorded.
    let aborted: Vec<String> = p
        .recorded("aborted")
        .iter()
        .map(|a| a["runId"].as_str().unwrap().to_string())
        .collect();
    let replaced: Vec<&Value> = runs(&j["swap"], "Replaced").collect();
    for r in &replaced {
        assert!(
            r["message"]
                .as_str()
                .unwrap()
                .contains("cancelled by run swap-"),
            "{r}"
        );
        assert!(r["finished"].is_string(), "{r}");
    }
    within(
        Duration::from_secs(5),
        "the replaced calls aborted at the plugin",
        || async {
            let aborted: Vec<String> = p
                .recorded("aborted")
                .iter()
                .map(|a| a["runId"].as_str().unwrap().to_string())
                .collect();
            replaced
                .iter()
                .all(|r| aborted.iter().any(|a| *a == r["id"]))
        },
    )
    .await;
    assert!(!aborted.is_empty() || !replaced.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_is_retried_with_backoff_and_its_failure_is_kept() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let p = Plugin::start(
        &core.url,
        "flaky",
        &token(&core, "flaky", "jobs:schedule"),
        json!([
            {"name": "twice", "schedule": "@every 10s", "path": "/jobs/fail/2", "retries": 2},
            {"name": "broken", "schedule": "@every 10s", "path": "/jobs/status/503", "retries": 1},
        ]),
    );
    ready(&core, &admin, "flaky").await;
    within(Duration::from_secs(30), "both jobs ended once", || async {
        let j = jobs(&core, &admin, "flaky").await;
        runs(&j["twice"], "Succeeded").count() >= 1 && runs(&j["broken"], "Failed").count() >= 1
    })
    .await;
    let j = jobs(&core, &admin, "flaky").await;
    let ok = runs(&j["twice"], "Succeeded").next().unwrap();
    assert_eq!(ok["attempt"], 3, "{ok}");
    let id = ok["id"].as_str().unwrap();
    let attempts: Vec<i64> = p
        .recorded("start")
        .iter()
        .filter(|s| s["runId"] == id)
        .map(|s| s["at"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts.len(), 3, "three attempts of one run: {attempts:?}");
    // Backoff: 1 s doubling, jittered to between half and all of it.
    let (gap1, gap2) = (attempts[1] - attempts[0], attempts[2] - attempts[1]);
    assert!((450..1500).contains(&gap1), "first retry after {gap1} ms");
    assert!((950..2500).contains(&gap2), "second retry after {gap2} ms");
    let failed = runs(&j["broken"], "Failed").next().unwrap();
    assert_eq!(failed["attempt"], 2, "{failed}");
    assert_eq!(failed["status"], 503);
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("the plugin answered 503 (after 2 attempts)"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_runs_disabled_plugins_and_jobs_registered_at_run_time() {
    let core = Core::start(&fast_config(""));
    let admin = core.admin_token();
    let p = Plugin::start(
        &core.url,
        "ops",
        &token(&core, "ops", "jobs:schedule"),
        json!([
            {"name": "report", "schedule": "0 3 * * *", "path": "/jobs/ok"},
            {"name": "long", "schedule": "0 4 * * *", "path": "/jobs/sleep/4000"},
        ]),
    );
    ready(&core, &admin, "ops").await;
    // A manual run: 202 with the run, which the plugin receives and the history keeps.
    let (s, run) = post_admin(&core, &admin, "/api/plugins/ops/jobs/report/run", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{run}");
    assert_eq!(run["trigger"], "manual");
    assert!(
        run["actor"].as_str().unwrap().starts_with("admin:"),
        "{run}"
    );
    let id = run["id"].as_str().unwrap().to_string();
    within(
        Duration::from_secs(5),
        "the manual run succeeded",
        || async {
            runs(&jobs(&core, &admin, "ops").await["report"], "Succeeded").any(|r| r["id"] == id)
        },
    )
    .await;
    assert!(p.recorded("start").iter().any(|s| s["runId"] == id));
    // Under Forbid a second run while one runs is refused with 409 job_running.
    let (s, _) = post_admin(&core, &admin, "/api/plugins/ops/jobs/long/run", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, body) = post_admin(&core, &admin, "/api/plugins/ops/jobs/long/run", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "job_running");
    let (s, body) = post_admin(&core, &admin, "/api/plugins/ops/jobs/nope/run", json!({})).await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("job_not_found"))
    );
    let audit = get_admin(&core, &admin, "/api/audit?plugin=ops").await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "run-job" && e["reason"].as_str().unwrap().contains(&id)),
        "{audit}"
    );

    // A job registered at run time through the SDK (CoreClient::register_job).
    let put = |name: &str, body: Value| {
        let url = p.url(&format!("/public/jobs/{name}"));
        async move {
            let r = http().put(url).json(&body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, v) = put("beat", json!({"schedule": "@every 1s", "path": "/jobs/ok"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["source"], "api");
    assert_eq!(v["timeoutSeconds"], 60, "defaults filled in: {v}");
    let (s, v) = put("bad", json!({"schedule": "@every 1", "path": "/jobs/ok"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "invalid_job");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs a unit"),
        "{v}"
    );
    let (s, v) = put("report", json!({"schedule": "@hourly", "path": "/jobs/ok"})).await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("job_declared"))
    );
    within(
        Duration::from_secs(10),
        "the registered job ran",
        || async { runs(&jobs(&core, &admin, "ops").await["beat"], "Succeeded").count() >= 2 },
    )
    .await;

    // Disabled: due runs are skipped and recorded; enabled again, they run.
    let (s, _) = post_admin(
        &core,
        &admin,
        "/api/plugins/ops/disable",
        json!({"reason": "maintenance"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    within(
        Duration::from_secs(10),
        "runs skipped while disabled",
        || async {
            runs(&jobs(&core, &admin, "ops").await["beat"], "Skipped")
                .any(|r| r["message"] == "the plugin is disabled")
        },
    )
    .await;
    let skipped: Vec<String> = runs(&jobs(&core, &admin, "ops").await["beat"], "Skipped")
        .map(|r| r["scheduled"].as_str().unwrap().to_string())
        .collect();
    let received = p.first_attempts("beat");
    assert!(
        skipped.iter().all(|t| !received.contains_key(t)),
        "a skipped run was called"
    );
    let (s, _) = post_admin(&core, &admin, "/api/plugins/ops/enable", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let before = p.first_attempts("beat").len();
    within(
        Duration::from_secs(10),
        "runs again once enabled",
        || async { p.first_attempts("beat").len() >= before + 2 },
    )
    .await;
    let r = http()
        .delete(p.url("/public/jobs/beat"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!jobs(&core, &admin, "ops").await.contains_key("beat"));
    let r = http()
        .delete(p.url("/public/jobs/beat"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let audit = get_admin(&core, &admin, "/api/audit?plugin=ops").await;
    for action in ["put-job", "delete-job"] {
        assert!(
            audit["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == action),
            "{action}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_need_the_jobs_schedule_grant() {
    let core = Core::start(&fast_config(""));
    // Declared: the registration is refused without the grant.
    let t = token(&core, "nogrant", "ui:panel");
    let mut m = tessera_tests::client::manifest("nogrant", "1.0.0");
    m["jobs"] = json!([{"name": "a", "schedule": "@hourly", "path": "/a"}]);
    let (s, body) = register_raw(
        &core,
        &t,
        &json!({"manifest": m, "backendUrl": "http://127.0.0.1:9", "remoteUrl": "http://127.0.0.1:9/mf/remoteEntry.js"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "capability_not_granted");
    assert!(
        body["error"]["details"][0]["missing"]
            .as_array()
            .unwrap()
            .contains(&json!("jobs:schedule")),
        "{body}"
    );
    // At run time: the plugin-facing API refuses a plugin token without it.
    let admin = core.admin_token();
    let p = Plugin::start_with(
        &core.url,
        "plain",
        &token(&core, "plain", "ui:panel"),
        json!([]),
        &[("CAPABILITIES", "")],
    );
    ready(&core, &admin, "plain").await;
    let r = http()
        .put(p.url("/public/jobs/x"))
        .json(&json!({"schedule": "@hourly", "path": "/jobs/ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "capability_not_granted");
    // Without a plugin token at all: 401.
    let r = http()
        .put(format!("{}/api/plugin/v1/jobs/x", core.url))
        .json(&json!({"schedule": "@hourly", "path": "/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v = get_admin(&core, &admin, "/api/plugins/plain/jobs").await;
    assert_eq!(v, json!({"plugin": "plain", "jobs": []}));
    let r = http()
        .get(format!("{}/api/plugins/nobody/jobs", core.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_core_restarted_across_scheduled_times_runs_each_missed_time_once() {
    let dir = temp_dir("jobs-restart");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut core = Core::start_at(&dir, &fast_config(""), &listen);
    let admin = core.admin_token();
    let p = Plugin::start(
        &core.url,
        "steady",
        &token(&core, "steady", "jobs:schedule"),
        json!([
            {"name": "tick", "schedule": "@every 1s", "path": "/jobs/ok"},
            {"name": "strict", "schedule": "@every 1s", "path": "/jobs/ok", "startingDeadlineSeconds": 1},
        ]),
    );
    ready(&core, &admin, "steady").await;
    within(
        Duration::from_secs(10),
        "runs before the restart",
        || async { p.first_attempts("tick").len() >= 2 },
    )
    .await;
    core.kill9();
    let down = tessera_tests::now_ms();
    tokio::time::sleep(Duration::from_secs(4)).await;
    core.restart();
    let up = tessera_tests::now_ms();
    within(
        Duration::from_secs(15),
        "runs after the restart",
        || async { p.first_attempts("tick").keys().any(|t| ms(t) > up + 2000) },
    )
    .await;
    // No scheduled time was called twice, and each one from the first to the last is in the
    // history: those missed while the core was down ran after it came back (inside their
    // starting deadline of 60 s); a time while the plugin re-registered (not Ready) is Skipped.
    let got = p.first_attempts("tick");
    for (at, calls) in &got {
        assert_eq!(calls.len(), 1, "{at} ran {} times", calls.len());
    }
    let history = jobs(&core, &admin, "steady").await["tick"].clone();
    let outcome: HashMap<i64, String> = runs(&history, "")
        .map(|r| {
            (
                ms(r["scheduled"].as_str().unwrap()),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let (first, last) = (
        ms(got.keys().next().unwrap()),
        ms(got.keys().last().unwrap()),
    );
    for t in (first..=last).step_by(1000) {
        match outcome.get(&t).map(String::as_str) {
            // Running: received, its end not recorded yet when the history was read.
            Some("Succeeded" | "Running") => assert!(
                got.keys().any(|k| ms(k) == t),
                "{t} Succeeded but not received: {:?}; history {history}",
                p.recorded("start")
            ),
            Some("Skipped") => assert!(!got.keys().any(|k| ms(k) == t)),
            other => panic!("{t}: {other:?} (down {down}, up {up}); history {history}"),
        }
    }
    let missed_while_down: Vec<i64> = (first..=last)
        .step_by(1000)
        .filter(|t| *t > down + 1000 && *t < up - 1000)
        .collect();
    assert!(!missed_while_down.is_empty(), "down {down}, up {up}");
    for t in missed_while_down {
        let at = got
            .iter()
            .find(|(k, _)| ms(k) == t)
            .unwrap_or_else(|| panic!("{t}, missed while down, never ran; history {history}"));
        assert!(
            at.1[0]["at"].as_i64().unwrap() >= up - 500,
            "{t} ran before the restart"
        );
    }
    // With a starting deadline of 1 s, the times missed while down are recorded as Missed.
    let j = jobs(&core, &admin, "steady").await;
    let missed: Vec<&Value> = runs(&j["strict"], "Missed").collect();
    assert!(!missed.is_empty(), "{}", j["strict"]);
    for r in missed {
        assert!(
            r["message"]
                .as_str()
                .unwrap()
                .contains("past the starting deadline of 1 s"),
            "{r}"
        );
        assert!(
            !p.first_attempts("strict")
                .contains_key(r["scheduled"].as_str().unwrap())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_neither_skips_nor_doubles_a_job_that_fires_every_second() {
    use tessera_sdk::Capability::JobsSchedule;
    let k = cluster::Cluster::fake().await;
    let config = cluster::config();
    let mut a = k.replica("core-a", &config);
    let mut b = k.replica("core-b", &config);
    let admin = k.admin();
    within(Duration::from_secs(10), "a leader", || async {
        k.leader().is_some()
    })
    .await;
    let token = k
        .keys()
        .issue_registration("pulse", &[JobsSchedule], None, None)
        .unwrap()
        .0;
    // The plugin registers with the replica that will survive.
    let leader = k.leader().unwrap();
    let (leader_core, follower) = if leader == "core-a" {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    let p = Plugin::start(
        &follower.url,
        "pulse",
        &token,
        json!([{"name": "beat", "schedule": "@every 1s", "path": "/jobs/ok"}]),
    );
    ready(follower, &admin, "pulse").await;
    within(
        Duration::from_secs(10),
        "runs under the first leader",
        || async { p.first_attempts("beat").len() >= 3 },
    )
    .await;
    leader_core.kill9();
    let killed = tessera_tests::now_ms();
    within(
        Duration::from_secs(30),
        "the other replica schedules",
        || async {
            p.first_attempts("beat")
                .keys()
                .any(|t| ms(t) > killed + 3000)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = p.first_attempts("beat");
    let times: Vec<i64> = got.keys().map(|t| ms(t)).collect();
    for (at, calls) in &got {
        assert_eq!(
            calls.len(),
            1,
            "{at} ran {} times across the failover",
            calls.len()
        );
    }
    for w in times.windows(2) {
        assert_eq!(
            w[1] - w[0],
            1000,
            "a scheduled time was lost in the failover: {times:?}"
        );
    }
    // The history lives in the cluster (a ConfigMap per plugin) and the survivor shows it.
    let j = jobs(follower, &admin, "pulse").await;
    assert!(
        runs(&j["beat"], "Succeeded").count() >= times.len() - 2,
        "{}",
        j["beat"]
    );
    assert!(k.get("configmaps", &k.ns, "tessera-jobs-pulse").is_some());
}
