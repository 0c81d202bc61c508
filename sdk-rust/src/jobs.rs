//! Jobs: the spec a plugin declares (`jobs:` in `plugin.yaml`, or `PUT /api/plugin/v1/jobs/{name}`
//! at run time) and its schedule.
//!
//! A schedule is, in UTC, a cron expression of 5 fields (`m h dom mon dow`) or 6 (seconds
//! first), a macro (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`,
//! `@hourly`), or `@every <duration>` (`@every 30s`, `@every 5m`, `@every 1h30m`; at least 1 s,
//! at most 24 h). Cron parsing is the `croner` crate's; `@every` and `@midnight` are ours.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Most jobs a plugin may have (declared and registered at run time together).
pub const MAX_JOBS: usize = 64;
/// Default `timeoutSeconds`.
pub const DEFAULT_TIMEOUT_SECS: u32 = 60;
/// Largest `timeoutSeconds` (one hour).
pub const MAX_TIMEOUT_SECS: u32 = 3600;
/// Default `startingDeadlineSeconds`.
pub const DEFAULT_STARTING_DEADLINE_SECS: u32 = 60;
/// Largest `startingDeadlineSeconds` (one day).
pub const MAX_STARTING_DEADLINE_SECS: u32 = 86_400;
/// Largest `retries`.
pub const MAX_RETRIES: u32 = 10;
/// Shortest `@every` period.
pub const MIN_EVERY: Duration = Duration::from_secs(1);
/// Longest `@every` period.
pub const MAX_EVERY: Duration = Duration::from_secs(86_400);

/// What happens when a run is due while an earlier run of the same job is still running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Concurrency {
    /// The new run is skipped (and recorded as Skipped).
    #[default]
    Forbid,
    /// Runs overlap.
    Allow,
    /// The running call is cancelled (recorded as Replaced) and the new run starts.
    Replace,
}

impl Concurrency {
    /// The name as written in a manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Concurrency::Forbid => "Forbid",
            Concurrency::Allow => "Allow",
            Concurrency::Replace => "Replace",
        }
    }
}

/// One job: what to call, when, and how. The normalized form has every default filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// Unique within the plugin (`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, at most 63 characters).
    pub name: String,
    /// When, in UTC: cron (5 or 6 fields), a macro such as `@hourly`, or `@every 30s`.
    pub schedule: String,
    /// Called as `POST endpoints.basePath + path`.
    pub path: String,
    /// Longest one attempt may take (1-3600 s, default 60).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    /// When a run is due while another still runs (default Forbid).
    #[serde(default)]
    pub concurrency: Concurrency,
    /// How late a run may still start (1-86400 s, default 60); a time missed by more is
    /// recorded as Missed.
    #[serde(default = "default_deadline")]
    pub starting_deadline_seconds: u32,
    /// Further attempts after a failed one (0-10, default 0), with jittered backoff.
    #[serde(default)]
    pub retries: u32,
}

fn default_timeout() -> u32 {
    DEFAULT_TIMEOUT_SECS
}

fn default_deadline() -> u32 {
    DEFAULT_STARTING_DEADLINE_SECS
}

impl JobSpec {
    /// A job with the defaults: Forbid, 60 s timeout, 60 s starting deadline, no retries.
    pub fn new(
        name: impl Into<String>,
        schedule: impl Into<String>,
        path: impl Into<String>,
    ) -> JobSpec {
        JobSpec {
            name: name.into(),
            schedule: schedule.into(),
            path: path.into(),
            timeout_seconds: DEFAULT_TIMEOUT_SECS,
            concurrency: Concurrency::Forbid,
            starting_deadline_seconds: DEFAULT_STARTING_DEADLINE_SECS,
            retries: 0,
        }
    }

    /// What is wrong with the spec beyond its shape, as (field, why) pairs; empty when valid.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !crate::names::is_dns_label(&self.name) {
            out.push((
                "name",
                format!(
                    "\"{}\" is not a job name: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
                    self.name
                ),
            ));
        }
        if let Err(why) = Schedule::parse(&self.schedule) {
            out.push(("schedule", why));
        }
        if !is_http_path(&self.path) {
            out.push((
                "path",
                format!(
                    "\"{}\" is not a path: it starts with '/', at most 512 characters of letters, digits and -._~:@!$&'()*+,;=%/",
                    self.path.escape_debug()
                ),
            ));
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.timeout_seconds) {
            out.push((
                "timeoutSeconds",
                format!("{} is outside 1-{MAX_TIMEOUT_SECS}", self.timeout_seconds),
            ));
        }
        if !(1..=MAX_STARTING_DEADLINE_SECS).contains(&self.starting_deadline_seconds) {
            out.push((
                "startingDeadlineSeconds",
                format!(
                    "{} is outside 1-{MAX_STARTING_DEADLINE_SECS}",
                    self.starting_deadline_seconds
                ),
            ));
        }
        if self.retries > MAX_RETRIES {
            out.push((
                "retries",
                format!("{} is outside 0-{MAX_RETRIES}", self.retries),
            ));
        }
        out
    }
}

/// The manifest schema's `httpPath`: `^/[A-Za-z0-9._~:@!$&'()*+,;=%/-]*$`, at most 512.
fn is_http_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= 512
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~:@!$&'()*+,;=%/-".contains(&b))
}

/// A parsed schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// A cron expression.
    Cron(Box<croner::Cron>),
    /// `@every <period>`: at every multiple of the period since the Unix epoch, so every
    /// replica and every restart agrees on the times.
    Every(Duration),
}

impl Schedule {
    /// Parses a schedule; the error says what is wrong and what is accepted.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("a schedule is needed: cron (\"*/5 * * * *\"), a macro (\"@hourly\") or \"@every 30s\"".into());
        }
        if let Some(rest) = t.strip_prefix("@every") {
            let period = parse_period(rest.trim()).map_err(|why| format!("\"{t}\" {why}"))?;
            return Ok(Schedule::Every(period));
        }
        let expr = match t {
            "@midnight" => "@daily",
            _ => t,
        };
        if expr.starts_with('@')
            && !matches!(
                expr,
                "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@hourly"
            )
        {
            return Err(format!(
                "\"{t}\" is not a known macro: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, or @every <duration>"
            ));
        }
        let fields = expr.split_whitespace().count();
        if !expr.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "\"{t}\" has {fields} field(s); cron takes 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
            ));
        }
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build();
        let cron = parser
            .parse(expr)
            .map_err(|e| format!("\"{t}\" is not a valid cron expression: {e}"))?;
        // A pattern that never matches (31 February) is refused now, not silently never run.
        cron.find_next_occurrence(&Utc::now(), false)
            .map_err(|e| format!("\"{t}\" never runs: {e}"))?;
        Ok(Schedule::Cron(Box::new(cron)))
    }

    /// The first scheduled time strictly after `after_ms` (milliseconds since the epoch,
    /// UTC), or `None` when there is none.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Schedule::Every(period) => {
                let p = i64::try_from(period.as_millis()).ok()?.max(1);
                Some((after_ms.div_euclid(p) + 1) * p)
            }
            Schedule::Cron(cron) => {
                let at: DateTime<Utc> = Utc.timestamp_millis_opt(after_ms).single()?;
                let next = cron.find_next_occurrence(&at, false).ok()?;
                Some(next.timestamp_millis())
            }
        }
    }
}

/// `30s`, `5m`, `1h30m`, `250ms` (Go's duration syntax, without fractions).
fn parse_period(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err(
            "needs a duration, e.g. \"@every 30s\", \"@every 5m\", \"@every 1h30m\"".into(),
        );
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err("is not a duration such as 30s, 5m or 1h30m".into());
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| "is too long a duration".to_string())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(format!("needs a unit after {n}: ms, s, m or h")),
            u => return Err(format!("has \"{u}\", not a unit: ms, s, m or h")),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "is too long a duration".to_string())?;
    }
    let d = Duration::from_millis(total);
    if d < MIN_EVERY || d > MAX_EVERY {
        return Err("is outside 1s-24h".into());
    }
    if !total.is_multiple_of(1000) {
        return Err("is not whole seconds".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_796_083_200_000; // 2026-12-01T00:00:00Z

    #[test]
    fn five_and_six_field_cron_macros_and_every() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(s.next_after(T0), Some(T0 + 300_000));
        let s = Schedule::parse("30 */5 * * * *").unwrap();
        assert_eq!(s.next_after(T0), Some(T0 + 30_000));
        let s = Schedule::parse("@hourly").unwrap();
        assert_eq!(s.next_after(T0 + 1), Some(T0 + 3_600_000));
        let s = Schedule::parse("@midnight").unwrap();
        assert_eq!(s.next_after(T0 + 1), Some(T0 + 86_400_000));
        let s = Schedule::parse("@every 1s").unwrap();
        assert_eq!(s.next_after(T0 + 1), Some(T0 + 1000));
        assert_eq!(s.next_after(T0), Some(T0 + 1000));
        let s = Schedule::parse("@every 1h30m").unwrap();
        assert_eq!(s.next_after(T0), Some(T0 + 5_400_000 - (T0 % 5_400_000)));
    }

    #[test]
    fn bad_schedules_say_what_is_accepted() {
        for (text, says) in [
            ("", "a schedule is needed"),
            ("* * * *", "has 4 field(s)"),
            ("* * * * * * *", "has 7 field(s)"),
            ("61 * * * *", "not a valid cron"),
            ("@every", "needs a duration"),
            ("@every 0s", "outside 1s-24h"),
            ("@every 25h", "outside 1s-24h"),
            ("@every 1500ms", "not whole seconds"),
            ("@every 5", "needs a unit"),
            ("@every 5d", "has \"d\", not a unit"),
            ("@fortnightly", "not a known macro"),
            ("0 0 31 2 *", "never runs"),
        ] {
            let err = Schedule::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn spec_bounds_are_checked() {
        let mut s = JobSpec::new("nightly", "@daily", "/jobs/nightly");
        assert!(s.problems().is_empty());
        s.timeout_seconds = 0;
        s.starting_deadline_seconds = 86_401;
        s.retries = 11;
        s.path = "jobs".into();
        s.name = "Nightly".into();
        let fields: Vec<_> = s.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "name",
                "path",
                "timeoutSeconds",
                "startingDeadlineSeconds",
                "retries"
            ]
        );
    }

    #[test]
    fn defaults_fill_in() {
        let s: JobSpec =
            serde_json::from_str(r#"{"name":"a","schedule":"@hourly","path":"/a"}"#).unwrap();
        assert_eq!(s, JobSpec::new("a", "@hourly", "/a"));
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({"name":"a","schedule":"@hourly","path":"/a","timeoutSeconds":60,
                "concurrency":"Forbid","startingDeadlineSeconds":60,"retries":0})
        );
    }
}
