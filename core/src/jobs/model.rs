//! The jobs the scheduler knows and the API's view of them. Runs themselves are
//! [`crate::runs`].

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tessera_sdk::jobs::JobSpec;
use tessera_sdk::time::rfc3339_ms;

pub use crate::model::clip;
pub use crate::runs::{BODY_BYTES, HISTORY, Outcome, Run, Trigger};

/// Where a job's spec comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `jobs:` in the plugin's manifest.
    Manifest,
    /// `PUT /api/plugin/v1/jobs/{name}`.
    Api,
}

/// A job the scheduler knows: its plugin, spec and where the spec comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// The plugin.
    pub plugin: String,
    /// The spec, defaults filled in.
    pub spec: JobSpec,
    /// Where it comes from.
    pub source: Source,
}

/// The API's view of a job: its spec, its next run and its newest runs first.
pub fn job_view(job: &Job, next_ms: Option<i64>, runs: &[&Run]) -> Value {
    let mut v = serde_json::to_value(&job.spec).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("source".into(), json!(job.source));
        m.insert("nextRun".into(), json!(next_ms.map(rfc3339_ms)));
        m.insert(
            "running".into(),
            json!(runs.iter().filter(|r| !r.outcome.is_final()).count()),
        );
        m.insert(
            "runs".into(),
            Value::Array(runs.iter().map(|r| r.view()).collect()),
        );
    }
    v
}
