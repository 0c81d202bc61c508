//! One attempt of a job run: `POST basePath + path` with a call token (`kind: job`) and the
//! `Tessera-Job`, `Tessera-Run-Id` and `Tessera-Scheduled-Time` headers, bounded by the job's
//! timeout; the first 4 KiB of the answer's body are kept.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use reqwest::header;
use tessera_sdk::jobs::JobSpec;

use super::metrics::PluginLabel;
use super::model::{BODY_BYTES, Outcome, Run, clip};
use super::{now_ms, plan};
use crate::auth::Keys;
use crate::auth::call::{CallKind, CallTokens, OnBehalfOf};

/// What a run's calls need.
pub(super) struct Caller {
    pub(super) http: reqwest::Client,
    pub(super) keys: Arc<Keys>,
    pub(super) calls: Arc<CallTokens>,
    /// `tessera_jobs_lateness_seconds`, observed when the first attempt starts.
    pub(super) lateness: Family<PluginLabel, Histogram, fn() -> Histogram>,
}

impl Caller {
    /// Runs `r` (recorded): makes its attempts with backoff between them, and answers the run
    /// as it ended.
    pub(super) async fn run(self, url: String, spec: JobSpec, mut r: Run) -> Run {
        let started = now_ms();
        r.started_ms = Some(started);
        self.lateness
            .get_or_create(&PluginLabel {
                plugin: r.plugin.clone(),
            })
            .observe((started - r.scheduled_ms).max(0) as f64 / 1000.0);
        let scheduled = tessera_sdk::time::rfc3339_ms(r.scheduled_ms);
        let target = Target {
            plugin: &r.plugin,
            url: &url,
            job: &r.job,
            run_id: &r.id,
            scheduled: &scheduled,
            timeout: Duration::from_secs(u64::from(spec.timeout_seconds)),
        };
        let mut attempts = 0;
        let answer = loop {
            attempts += 1;
            let a = attempt(&self.http, &self.keys, &self.calls, &target).await;
            if a.failure.is_none() || attempts > spec.retries {
                break a;
            }
            tracing::info!(plugin = %r.plugin, job = %r.job, run = %r.id, attempts, why = ?a.failure, "jobs: run attempt failed; retrying");
            tokio::time::sleep(plan::retry_delay(attempts + 1, crate::model::unit_random())).await;
        };
        r.attempt = attempts;
        r.status = answer.status;
        r.body = answer.body;
        r.finished_ms = Some(now_ms());
        match answer.failure {
            None => {
                r.outcome = Outcome::Succeeded;
                r.message = None;
            }
            Some(why) => {
                r.outcome = Outcome::Failed;
                r.message = Some(if attempts > 1 {
                    format!("{why} (after {attempts} attempts)")
                } else {
                    why
                });
            }
        }
        r
    }
}

/// Where and what to call.
struct Target<'a> {
    /// The plugin.
    pub plugin: &'a str,
    /// `backendUrl + basePath + path`.
    pub url: &'a str,
    /// The job.
    pub job: &'a str,
    /// The run id.
    pub run_id: &'a str,
    /// The scheduled time, RFC 3339.
    pub scheduled: &'a str,
    /// The job's timeout.
    pub timeout: Duration,
}

/// How an attempt ended.
#[derive(Debug)]
struct Answer {
    /// The HTTP status, when one came.
    pub status: Option<u16>,
    /// The first 4 KiB of the body.
    pub body: Option<String>,
    /// Why it failed (`None`: a 2xx).
    pub failure: Option<String>,
}

/// Makes one attempt.
async fn attempt(
    http: &reqwest::Client,
    keys: &Keys,
    calls: &CallTokens,
    t: &Target<'_>,
) -> Answer {
    let token = match calls.token(keys, t.plugin, &OnBehalfOf::core(None), CallKind::Job) {
        Ok(tok) => tok,
        Err(e) => {
            return Answer {
                status: None,
                body: None,
                failure: Some(format!("cannot sign a call token: {e}")),
            };
        }
    };
    let call = async {
        let res = http
            .post(t.url)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header("tessera-job", t.job)
            .header("tessera-run-id", t.run_id)
            .header("tessera-scheduled-time", t.scheduled)
            .header(header::CONTENT_LENGTH, "0")
            .send()
            .await;
        let mut res = match res {
            Ok(r) => r,
            Err(e) => {
                return Answer {
                    status: None,
                    body: None,
                    failure: Some(format!(
                        "the plugin cannot be reached: {}",
                        crate::error::source_chain(&e)
                    )),
                };
            }
        };
        let status = res.status().as_u16();
        let mut bytes = Vec::new();
        while bytes.len() < BODY_BYTES {
            match res.chunk().await {
                Ok(Some(c)) => bytes.extend_from_slice(&c),
                Ok(None) => break,
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_BYTES)]);
        let body = (!text.is_empty()).then(|| clip(&text, BODY_BYTES));
        Answer {
            status: Some(status),
            body,
            failure: (!(200..300).contains(&status))
                .then(|| format!("the plugin answered {status}")),
        }
    };
    match tokio::time::timeout(t.timeout, call).await {
        Ok(a) => a,
        Err(_) => Answer {
            status: None,
            body: None,
            failure: Some(format!(
                "no answer within the job's timeout of {} s",
                t.timeout.as_secs()
            )),
        },
    }
}
