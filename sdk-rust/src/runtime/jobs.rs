//! Jobs on the plugin side: the run a job call carries ([`JobRun`], an extractor), and the
//! bodies of `CoreClient::register_job` / `delete_job`.
//!
//! The core calls `POST endpoints.basePath + path` for each run with a call token of kind `job`
//! and the headers `Tessera-Job`, `Tessera-Run-Id` and `Tessera-Scheduled-Time` (RFC 3339). A
//! 2xx answer is success (its body's first 4 KiB are kept with the run); anything else, a
//! timeout or a dropped connection is a failure, retried when the job has `retries`. A run id is
//! the same on every attempt of a run, so a handler can make its work idempotent by it.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Caller;

/// The run a job call is for. Taking it as a handler argument refuses (403) any call that is
/// not a job run from the core.
///
/// ```ignore
/// Router::new().route("/jobs/nightly", post(|run: JobRun| async move {
///     tracing::info!(job = %run.job, run = %run.run_id, at = %run.scheduled_time, "nightly");
///     "done"
/// }))
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRun {
    /// The job's name (`Tessera-Job`).
    pub job: String,
    /// The run's id (`Tessera-Run-Id`), the same on every attempt.
    pub run_id: String,
    /// The time the run was scheduled for, RFC 3339 UTC (`Tessera-Scheduled-Time`); for a
    /// manual run, when it was asked for.
    pub scheduled_time: String,
    /// The verified caller (`sub: core`, `kind: job`).
    pub caller: Caller,
}

fn refuse(code: &str, message: String) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

impl<S: Send + Sync> FromRequestParts<S> for JobRun {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.kind != "job" || caller.sub != "core" {
            return Err(refuse(
                "not_a_job_run",
                format!(
                    "this route takes job runs from the core, not calls of kind \"{}\"",
                    caller.kind
                ),
            ));
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        match (
            header("tessera-job"),
            header("tessera-run-id"),
            header("tessera-scheduled-time"),
        ) {
            (Some(job), Some(run_id), Some(scheduled_time)) => Ok(JobRun {
                job,
                run_id,
                scheduled_time,
                caller,
            }),
            _ => Err(refuse(
                "not_a_job_run",
                "a job run carries Tessera-Job, Tessera-Run-Id and Tessera-Scheduled-Time".into(),
            )),
        }
    }
}
