//! Job runs: what the scheduler records of each run of a plugin's job, kept by the store and
//! shown by the API. No I/O.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tessera_sdk::time::rfc3339_ms;

/// Runs kept per job (the newest).
pub const HISTORY: usize = 50;
/// Bytes of a run's response body kept with it.
pub const BODY_BYTES: usize = 4096;

/// How a run ended (or where it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Asked for (a manual run on a replica that does not schedule), not started yet.
    Pending,
    /// Called, no answer yet (or waiting to retry).
    Running,
    /// A 2xx answer.
    Succeeded,
    /// Every attempt failed (non-2xx, timeout, connection error).
    Failed,
    /// Not run: the plugin was not Ready or was disabled, or an earlier run still ran under
    /// `Forbid`.
    Skipped,
    /// Not run: no scheduler ran at that time and it was past the starting deadline when one
    /// did.
    Missed,
    /// Cancelled by a later run under `Replace` (its request aborted).
    Replaced,
    /// The scheduler running it stopped (a crash or a failover) before it ended; not retried.
    Interrupted,
}

impl Outcome {
    /// As it appears in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "Pending",
            Outcome::Running => "Running",
            Outcome::Succeeded => "Succeeded",
            Outcome::Failed => "Failed",
            Outcome::Skipped => "Skipped",
            Outcome::Missed => "Missed",
            Outcome::Replaced => "Replaced",
            Outcome::Interrupted => "Interrupted",
        }
    }

    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, Outcome::Pending | Outcome::Running)
    }
}

/// Why a run exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// Its schedule.
    Schedule,
    /// An admin (`POST /api/plugins/{name}/jobs/{job}/run`).
    Manual,
}

/// One run of a job, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// Unique per plugin; the same on every attempt (`Tessera-Run-Id`). A scheduled run's id is
    /// `<job>-<scheduled ms>`, so one scheduled time has one id wherever it is decided.
    pub id: String,
    /// The plugin.
    pub plugin: String,
    /// The job.
    pub job: String,
    /// Why it exists.
    pub trigger: Trigger,
    /// The time it was scheduled for (ms since the epoch); a manual run's, when it was asked.
    pub scheduled_ms: i64,
    /// When its first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    /// Where it is.
    pub outcome: Outcome,
    /// The last attempt's HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Attempts made (0 for a run that did not start).
    #[serde(default)]
    pub attempt: u32,
    /// What happened, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The first 4 KiB of the last answer's body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Who asked for a manual run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

impl Run {
    /// The id of the run of `job` scheduled for `at_ms`.
    pub fn scheduled_id(job: &str, at_ms: i64) -> String {
        format!("{job}-{at_ms}")
    }

    /// A run of `job` at `at_ms` that ends before it starts (Skipped, Missed).
    pub fn not_run(
        plugin: &str,
        job: &str,
        at_ms: i64,
        outcome: Outcome,
        why: String,
        now_ms: i64,
    ) -> Run {
        Run {
            id: Run::scheduled_id(job, at_ms),
            plugin: plugin.to_string(),
            job: job.to_string(),
            trigger: Trigger::Schedule,
            scheduled_ms: at_ms,
            started_ms: None,
            finished_ms: Some(now_ms),
            outcome,
            status: None,
            attempt: 0,
            message: Some(why),
            body: None,
            actor: None,
        }
    }

    /// The API's view of the run.
    pub fn view(&self) -> Value {
        let duration = match (self.started_ms, self.finished_ms) {
            (Some(s), Some(f)) => Some((f - s).max(0) as f64 / 1000.0),
            _ => None,
        };
        json!({
            "id": self.id,
            "trigger": self.trigger,
            "scheduled": rfc3339_ms(self.scheduled_ms),
            "started": self.started_ms.map(rfc3339_ms),
            "finished": self.finished_ms.map(rfc3339_ms),
            "outcome": self.outcome.as_str(),
            "status": self.status,
            "duration": duration,
            "attempt": self.attempt,
            "message": self.message,
            "body": self.body,
            "actor": self.actor,
        })
    }
}
