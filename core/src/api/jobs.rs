//! Jobs: `PUT`/`DELETE /api/plugin/v1/jobs/{name}` (a plugin registers its own jobs at run
//! time, plugin token with `jobs:schedule`) and the admin's view and manual runs
//! (`/api/plugins/{name}/jobs...`).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tessera_sdk::Capability;
use tessera_sdk::jobs::{JobSpec, MAX_JOBS, Schedule};

use super::plugin_v1::PluginCaller;
use super::{AdminActor, ApiPath, AppState, read_body};
use crate::error::{ApiError, Code};
use crate::jobs::JobsError;
use crate::jobs::model::{Job, job_view};

fn refused(e: JobsError, plugin: &str, job: &str) -> ApiError {
    match e {
        JobsError::NoSuchJob => ApiError::new(
            Code::JobNotFound,
            format!("plugin \"{plugin}\" has no job named \"{job}\""),
        ),
        JobsError::Running(run) => ApiError::new(
            Code::JobRunning,
            format!("job \"{job}\" of plugin \"{plugin}\" is running (run {run}) and its concurrency is Forbid; try again when it ends"),
        )
        .with_details(vec![json!({"runId": run})]),
        JobsError::NotReady(why) => ApiError::new(
            Code::PluginNotReady,
            format!("job \"{job}\" cannot run now: {why}"),
        ),
        JobsError::Declared => ApiError::new(
            Code::JobDeclared,
            format!("job \"{job}\" is declared in plugin \"{plugin}\"'s plugin.yaml; change it there and register a new version"),
        ),
        JobsError::TooMany => ApiError::new(
            Code::InvalidJob,
            format!("plugin \"{plugin}\" already has {MAX_JOBS} jobs, the most a plugin may have"),
        ),
        JobsError::NotScheduling | JobsError::Store(_) => ApiError::new(
            Code::StoreUnavailable,
            format!("jobs cannot be read or written now: {e}"),
        ),
    }
}

fn next_run(job: &Job) -> Option<i64> {
    Schedule::parse(&job.spec.schedule)
        .ok()?
        .next_after(crate::jobs::now_ms())
}

/// `PUT /api/plugin/v1/jobs/{name}`: creates (201) or replaces (200) a job of the calling
/// plugin.
async fn put(
    State(state): State<AppState>,
    caller: PluginCaller,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(Capability::JobsSchedule)?;
    let bytes = read_body(&headers, body).await?;
    let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            Code::InvalidJob,
            format!("the body is not a JSON object: {e}"),
        )
    })?;
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::new(
            Code::InvalidJob,
            "the body must be a JSON object: {\"schedule\", \"path\", ...}",
        ));
    };
    match obj.get("name") {
        None => {
            obj.insert("name".into(), json!(name));
        }
        Some(Value::String(n)) if *n == name => {}
        Some(other) => {
            return Err(ApiError::new(
                Code::InvalidJob,
                format!("the body's name {other} differs from the URL's \"{name}\""),
            ));
        }
    }
    let spec: JobSpec = serde_json::from_value(value)
        .map_err(|e| ApiError::new(Code::InvalidJob, format!("not a job: {e}")))?;
    let problems = spec.problems();
    if !problems.is_empty() {
        let details: Vec<Value> = problems
            .iter()
            .map(|(field, why)| json!({"path": format!("/{field}"), "message": why}))
            .collect();
        let first = problems
            .iter()
            .map(|(f, why)| format!("{f}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(
            ApiError::new(Code::InvalidJob, format!("the job is not valid: {first}"))
                .with_details(details),
        );
    }
    let created = state
        .jobs
        .put(&caller.plugin, spec.clone())
        .await
        .map_err(|e| refused(e, &caller.plugin, &name))?;
    state
        .registry
        .note(
            "put-job",
            Some(&caller.plugin),
            format!(
                "job \"{name}\" {} (schedule \"{}\", path {})",
                if created { "registered" } else { "replaced" },
                spec.schedule,
                spec.path
            ),
            &caller.actor,
        )
        .await?;
    let job = Job {
        plugin: caller.plugin.clone(),
        spec,
        source: crate::jobs::model::Source::Api,
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(job_view(&job, next_run(&job), &[]))).into_response())
}

/// `DELETE /api/plugin/v1/jobs/{name}`: 204, or 404 when the plugin has no such job.
async fn delete(
    State(state): State<AppState>,
    caller: PluginCaller,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.require(Capability::JobsSchedule)?;
    let deleted = state
        .jobs
        .delete(&caller.plugin, &name)
        .await
        .map_err(|e| refused(e, &caller.plugin, &name))?;
    if !deleted {
        return Err(refused(JobsError::NoSuchJob, &caller.plugin, &name));
    }
    state
        .registry
        .note(
            "delete-job",
            Some(&caller.plugin),
            format!("job \"{name}\" deleted"),
            &caller.actor,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/plugins/{name}/jobs`: each job with its next run and its last 50 runs.
async fn list(
    State(state): State<AppState>,
    _admin: AdminActor,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    if state.registry.get(&name).is_none() {
        return Err(ApiError::new(
            Code::PluginNotFound,
            format!("no plugin named \"{name}\""),
        ));
    }
    let jobs = state.jobs.jobs_of(&name);
    let runs = state
        .jobs
        .runs(&name)
        .await
        .map_err(|e| refused(e, &name, ""))?;
    let items: Vec<Value> = jobs
        .iter()
        .map(|j| {
            let mine: Vec<_> = runs
                .iter()
                .filter(|r| r.job == j.spec.name)
                .take(crate::jobs::model::HISTORY)
                .collect();
            job_view(j, next_run(j), &mine)
        })
        .collect();
    Ok(Json(json!({"plugin": name, "jobs": items})).into_response())
}

/// `POST /api/plugins/{name}/jobs/{job}/run`: 202 with the run; 409 `job_running` while a run
/// is in progress under Forbid.
async fn run(
    State(state): State<AppState>,
    AdminActor(actor): AdminActor,
    ApiPath((name, job)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    if state.registry.get(&name).is_none() {
        return Err(ApiError::new(
            Code::PluginNotFound,
            format!("no plugin named \"{name}\""),
        ));
    }
    let run = state
        .jobs
        .run_now(&name, &job, &actor.who)
        .await
        .map_err(|e| refused(e, &name, &job))?;
    state
        .registry
        .note(
            "run-job",
            Some(&name),
            format!("manual run {} of job \"{job}\"", run.id),
            &actor,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(run.view())).into_response())
}

/// The jobs endpoints.
pub(super) fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post, put as put_route};
    axum::Router::new()
        .route("/api/plugin/v1/jobs/{name}", put_route(put).delete(delete))
        .route("/api/plugins/{name}/jobs", get(list))
        .route("/api/plugins/{name}/jobs/{job}/run", post(run))
}
