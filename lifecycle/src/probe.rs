//! Probe rounds as the lifecycle sees them, and the consecutive counters the thresholds are
//! applied to. Fetching is the core's prober's job; here a round is its verdict.

use serde::Serialize;

use crate::model::Reason;

/// Thresholds applied to probe rounds (Kubernetes probe semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive successes to become Ready.
    pub success: u32,
    /// Consecutive failures to become Degraded.
    pub failure: u32,
}

/// Why a round failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// `ReadinessProbeFailed` or `RemoteEntryUnreachable`.
    pub reason: Reason,
    /// For people (`readiness probe failed: ...`).
    pub message: String,
}

/// The verdict of one probe round of one plugin version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// The version probed (a round of an older version is stale and changes nothing).
    pub version: String,
    /// `None` when both probes passed.
    pub failure: Option<Failure>,
    /// `sha384-...` of the remote entry's bytes, when they were fetched.
    pub integrity: Option<String>,
}

impl Round {
    /// A round from what the probes saw: the readiness endpoint's answer, and the remote entry's
    /// integrity or why it could not be fetched (readiness is reported first).
    pub fn new(
        version: impl Into<String>,
        ready: Result<(), String>,
        remote: Result<String, String>,
    ) -> Round {
        let (failure, integrity) = match (ready, remote) {
            (Err(e), remote) => (
                Some(Failure {
                    reason: Reason::ReadinessProbeFailed,
                    message: format!("readiness probe failed: {e}"),
                }),
                remote.ok(),
            ),
            (Ok(()), Err(e)) => (
                Some(Failure {
                    reason: Reason::RemoteEntryUnreachable,
                    message: format!("remote entry unreachable: {e}"),
                }),
                None,
            ),
            (Ok(()), Ok(hash)) => (None, Some(hash)),
        };
        Round {
            version: version.into(),
            failure,
            integrity,
        }
    }
}

/// Probe figures of a plugin (kept in memory, shown by the admin API).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeStats {
    /// Consecutive passing rounds.
    pub consecutive_successes: u32,
    /// Consecutive failing rounds.
    pub consecutive_failures: u32,
    /// Last passing round (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// Last failing round (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Why the last failing round failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure_reason: Option<String>,
    /// Latency of the last round, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_latency_ms: Option<u64>,
}

impl ProbeStats {
    /// The figures after one more round.
    pub fn count(&self, round: &Round, latency_ms: u64, now: &str) -> ProbeStats {
        let mut s = self.clone();
        s.last_latency_ms = Some(latency_ms);
        match &round.failure {
            None => {
                s.consecutive_successes = s.consecutive_successes.saturating_add(1);
                s.consecutive_failures = 0;
                s.last_success = Some(now.to_string());
            }
            Some(f) => {
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                s.consecutive_successes = 0;
                s.last_failure = Some(now.to_string());
                s.last_failure_reason = Some(f.message.clone());
            }
        }
        s
    }
}
