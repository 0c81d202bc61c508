//! The registration loop.
//!
//! Waits for the core, registers, and retries transient failures (connection refused, 5xx, 429)
//! with capped (30 s), jittered exponential backoff. A permanent rejection (a 4xx other than 429)
//! is logged with the core's error code and message and shown by `/readyz`; the plugin keeps
//! serving and asks again every minute, in case the core's configuration changes.
//!
//! How it notices that the core no longer knows it: once accepted, it re-asserts its
//! registration every `REGISTER_INTERVAL_SECONDS` (default 15). Registration is idempotent, so
//! the core answers 200 and nothing changes; a core that lost its store (wiped, restored from an
//! old backup) answers 201 and the plugin is back within one interval, without a restart.
//!
//! Every accepted registration answers with a fresh plugin token (an hour at most); re-asserting
//! every 15 s keeps it fresh. A registration token the core refuses (revoked, expired) ends
//! the renewals at once.
//!
//! `REG_TOKEN_FILE` is read again before every attempt, and while refused the file is watched
//! every second: a rotated Secret or projected ServiceAccount token is used at once.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

/// Where registration stands; `/readyz` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum RegistrationStatus {
    /// No core configured (`CORE_BASE_URL` unset): the plugin runs standalone.
    NotConfigured,
    /// Not accepted yet.
    #[serde(rename_all = "camelCase")]
    Pending {
        /// Attempts so far.
        attempts: u32,
        /// Why the last attempt failed.
        last_error: Option<String>,
    },
    /// The core accepted it.
    #[serde(rename_all = "camelCase")]
    Accepted {
        /// The plugin's state in the core at the last answer.
        state: String,
    },
    /// The core refused it for a reason retrying will not fix.
    Rejected {
        /// The core's error code.
        code: String,
        /// The core's message.
        message: String,
    },
}

impl RegistrationStatus {
    /// Why this keeps the plugin not ready, if it does.
    pub fn not_ready_reason(&self) -> Option<String> {
        match self {
            RegistrationStatus::NotConfigured | RegistrationStatus::Accepted { .. } => None,
            RegistrationStatus::Pending {
                attempts,
                last_error,
            } => Some(format!(
                "not registered yet ({attempts} attempt(s){})",
                last_error
                    .as_ref()
                    .map(|e| format!("; last: {e}"))
                    .unwrap_or_default()
            )),
            RegistrationStatus::Rejected { code, message } => {
                Some(format!("rejected by the core: {code}: {message}"))
            }
        }
    }
}

/// Delay before retry number `attempt` (0-based): 0.5 s doubling, capped at 30 s, then scaled
/// by a random factor in [0.5, 1.0] so that plugins restarted together spread out.
pub fn backoff(attempt: u32) -> Duration {
    let base = 0.5_f64 * 2f64.powi(attempt.min(16) as i32);
    let capped = base.min(30.0);
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let jitter = 0.5 + 0.5 * f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX);
    Duration::from_secs_f64(capped * jitter)
}

fn interval() -> Duration {
    std::env::var("REGISTER_INTERVAL_SECONDS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.1)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(15))
}

/// The registration token, and the file it is read from again before every attempt (when
/// `REG_TOKEN_FILE` names one): the kubelet rewrites mounted Secrets and rotates projected
/// ServiceAccount tokens, and the plugin keeps up without a restart.
#[derive(Clone, Debug)]
pub struct TokenSource {
    /// The token as last read.
    pub token: String,
    /// Where to read it again.
    pub file: Option<std::path::PathBuf>,
}

impl TokenSource {
    /// The current token: the file's contents when it can be read and is not empty, else the
    /// last one read (with a warning).
    fn refresh(&mut self) -> &str {
        if let Some(f) = &self.file {
            match std::fs::read_to_string(f) {
                Ok(t) if !t.trim().is_empty() => {
                    let t = t.trim();
                    if t != self.token {
                        tracing::info!(file = %f.display(), "registration token changed on disk; using the new one");
                        self.token = t.to_string();
                    }
                }
                Ok(_) => {
                    tracing::warn!(file = %f.display(), "REG_TOKEN_FILE is empty; keeping the last token")
                }
                Err(e) => {
                    tracing::warn!(file = %f.display(), error = %e, "REG_TOKEN_FILE cannot be read; keeping the last token")
                }
            }
        }
        &self.token
    }

    /// Whether the file now holds another token than the one last sent.
    fn changed_on_disk(&self) -> bool {
        self.file.as_ref().is_some_and(|f| {
            std::fs::read_to_string(f).is_ok_and(|t| !t.trim().is_empty() && t.trim() != self.token)
        })
    }
}

/// Runs until `stop` turns true.
pub async fn run(
    http: reqwest::Client,
    core: String,
    mut token: TokenSource,
    body: Value,
    status: watch::Sender<RegistrationStatus>,
    plugin_token: watch::Sender<Option<String>>,
    mut stop: watch::Receiver<bool>,
) {
    let url = format!("{core}/api/plugins/register");
    let mut attempts: u32 = 0;
    let mut accepted_once = false;
    status.send_replace(RegistrationStatus::Pending {
        attempts: 0,
        last_error: None,
    });
    loop {
        let bearer = token.refresh().to_string();
        let wait = match http
            .post(&url)
            .bearer_auth(&bearer)
            .json(&body)
            .send()
            .await
        {
            Ok(res) => {
                let code = res.status();
                let retry_after = res
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let answer: Value = res.json().await.unwrap_or(Value::Null);
                if code.is_success() {
                    let state = answer["state"].as_str().unwrap_or("unknown").to_string();
                    if code == reqwest::StatusCode::CREATED && accepted_once {
                        tracing::warn!(state = %state, "the core did not know this plugin any more (store wiped or restored?); registered again");
                    } else if code == reqwest::StatusCode::CREATED || attempts > 0 || !accepted_once
                    {
                        tracing::info!(state = %state, "registered with the core");
                    }
                    accepted_once = true;
                    attempts = 0;
                    // Every accepted registration renews the plugin token.
                    if let Some(t) = answer["pluginToken"].as_str() {
                        plugin_token.send_replace(Some(t.to_string()));
                    }
                    status.send_replace(RegistrationStatus::Accepted { state });
                    interval()
                } else {
                    let err_code = answer["error"]["code"]
                        .as_str()
                        .unwrap_or("unknown")
                        .to_string();
                    let message = answer["error"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    if code.is_client_error() && code != reqwest::StatusCode::TOO_MANY_REQUESTS {
                        // A refused registration token (revoked, expired) ends the plugin
                        // token too: the core refuses it as well.
                        if code == reqwest::StatusCode::UNAUTHORIZED {
                            plugin_token.send_replace(None);
                        }
                        tracing::error!(status = code.as_u16(), code = %err_code, message = %message, "the core rejected the registration");
                        status.send_replace(RegistrationStatus::Rejected {
                            code: err_code,
                            message,
                        });
                        Duration::from_secs(60)
                    } else {
                        attempts = attempts.saturating_add(1);
                        let why = format!("HTTP {}: {err_code}: {message}", code.as_u16());
                        tracing::warn!(attempt = attempts, error = %why, "registration failed; retrying");
                        status.send_replace(RegistrationStatus::Pending {
                            attempts,
                            last_error: Some(why),
                        });
                        retry_after
                            .map(Duration::from_secs)
                            .unwrap_or_else(|| backoff(attempts - 1))
                    }
                }
            }
            Err(e) => {
                attempts = attempts.saturating_add(1);
                let why = if e.is_connect() {
                    format!("core not reachable at {core}")
                } else {
                    e.to_string()
                };
                if attempts == 1 || attempts.is_multiple_of(10) {
                    tracing::warn!(attempt = attempts, error = %why, "waiting for the core");
                }
                status.send_replace(RegistrationStatus::Pending {
                    attempts,
                    last_error: Some(why),
                });
                backoff(attempts - 1)
            }
        };
        // A refused plugin whose token lives in a file asks again as soon as the file changes
        // (the kubelet's rotation, an admin's new Secret), instead of after a minute.
        let rejected = matches!(*status.borrow(), RegistrationStatus::Rejected { .. });
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let step = if rejected && token.file.is_some() {
                Duration::from_secs(1).min(wait)
            } else {
                wait
            };
            let until = (tokio::time::Instant::now() + step).min(deadline);
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            if tokio::time::Instant::now() >= deadline || (rejected && token.changed_on_disk()) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for attempt in 0..40 {
            let d = backoff(attempt).as_secs_f64();
            let base = (0.5 * 2f64.powi(attempt.min(16) as i32)).min(30.0);
            assert!(
                d >= base * 0.5 - 1e-9 && d <= base + 1e-9,
                "attempt {attempt}: {d}"
            );
        }
        assert!(backoff(30) <= Duration::from_secs(30));
    }

    #[test]
    fn readiness_reasons() {
        assert_eq!(RegistrationStatus::NotConfigured.not_ready_reason(), None);
        assert_eq!(
            RegistrationStatus::Accepted {
                state: "Ready".into()
            }
            .not_ready_reason(),
            None
        );
        let r = RegistrationStatus::Rejected {
            code: "token_plugin_mismatch".into(),
            message: "m".into(),
        };
        assert_eq!(
            r.not_ready_reason().unwrap(),
            "rejected by the core: token_plugin_mismatch: m"
        );
    }
}
