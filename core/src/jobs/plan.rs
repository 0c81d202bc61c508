//! The scheduler's decisions as pure functions: which scheduled times are due, what to do with
//! each, and how long to wait before a retry. Unit-tested without a clock or a server.

use std::time::Duration;

use tessera_sdk::jobs::{Concurrency, Schedule};

/// Scheduled times looked at in one go for one job (a long outage of a frequent job is
/// summarized, not replayed time by time).
pub const MAX_DUE: usize = 1000;

/// The scheduled times after `mark_ms` up to `now_ms`, oldest first, at most [`MAX_DUE`]; when
/// more were due, the count of older ones left out (they are all past any starting deadline
/// the schema allows when that many are due at once, or the newest are).
pub fn due_times(schedule: &Schedule, mark_ms: i64, now_ms: i64) -> (Vec<i64>, u64) {
    let mut out = std::collections::VecDeque::new();
    let mut dropped = 0u64;
    let mut at = mark_ms;
    while let Some(next) = schedule.next_after(at) {
        if next > now_ms {
            break;
        }
        if out.len() == MAX_DUE {
            out.pop_front();
            dropped += 1;
            // A frequent schedule and a long outage: jump close to now instead of stepping
            // through every time.
            if dropped > 100_000 {
                break;
            }
        }
        out.push_back(next);
        at = next;
    }
    (out.into(), dropped)
}

/// What to do with one scheduled time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Call the plugin.
    Start,
    /// Cancel the running call(s) (recorded as Replaced), then call.
    Replace,
    /// Record it as Skipped, with why.
    Skip(String),
    /// Record it as Missed, with why.
    Miss(String),
    /// Leave it for when the running call ends (a time missed while no scheduler ran, under
    /// Forbid or Replace: each such time runs once, one after the other).
    Wait,
}

/// The facts a decision rests on.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// The scheduled time.
    pub at_ms: i64,
    /// Now.
    pub now_ms: i64,
    /// The job's starting deadline.
    pub deadline_ms: i64,
    /// When this scheduler took over: earlier times were missed while none ran.
    pub took_over_ms: i64,
    /// `Err(why)` when the plugin is not Ready and enabled.
    pub exposed: Result<(), &'a str>,
    /// Runs of the job in progress.
    pub running: usize,
    /// The job's concurrency policy.
    pub concurrency: Concurrency,
}

/// Decides what to do with a due scheduled time.
pub fn decide(f: Facts<'_>) -> Decision {
    let late = f.now_ms - f.at_ms;
    if late > f.deadline_ms {
        return Decision::Miss(format!(
            "{:.1} s late, past the starting deadline of {} s (no scheduler ran at that time)",
            late as f64 / 1000.0,
            f.deadline_ms / 1000
        ));
    }
    if let Err(why) = f.exposed {
        return Decision::Skip(why.to_string());
    }
    if f.running == 0 {
        return Decision::Start;
    }
    let caught_up = f.at_ms < f.took_over_ms;
    match f.concurrency {
        Concurrency::Allow => Decision::Start,
        _ if caught_up => Decision::Wait,
        Concurrency::Forbid => {
            Decision::Skip("an earlier run is still running (concurrency Forbid)".into())
        }
        Concurrency::Replace => Decision::Replace,
    }
}

/// The wait before attempt `next` (2, 3, ...) of a run: 1 s doubling, capped at 60 s, jittered
/// to between half and all of it (`unit` in [0, 1)).
pub fn retry_delay(next: u32, unit: f64) -> Duration {
    let exp = next.saturating_sub(2).min(6);
    let full = (1000u64 << exp).min(60_000) as f64;
    Duration::from_millis((full * (0.5 + 0.5 * unit.clamp(0.0, 1.0))) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(s: u64) -> Schedule {
        Schedule::Every(Duration::from_secs(s))
    }

    fn facts(at_ms: i64, now_ms: i64) -> Facts<'static> {
        Facts {
            at_ms,
            now_ms,
            deadline_ms: 60_000,
            took_over_ms: 0,
            exposed: Ok(()),
            running: 0,
            concurrency: Concurrency::Forbid,
        }
    }

    #[test]
    fn due_times_are_every_time_after_the_mark_up_to_now() {
        assert_eq!(
            due_times(&every(1), 10_000, 13_500),
            (vec![11_000, 12_000, 13_000], 0)
        );
        assert_eq!(due_times(&every(1), 13_000, 13_999), (vec![], 0));
        // A mark on a scheduled time is that time handled: it is never due again.
        assert_eq!(due_times(&every(1), 13_000, 14_000), (vec![14_000], 0));
        let (times, dropped) = due_times(&every(1), 0, 2_000_000);
        assert_eq!(times.len(), MAX_DUE);
        assert_eq!(dropped, 1000);
        assert_eq!(times.last(), Some(&2_000_000));
    }

    #[test]
    fn an_on_time_run_starts_and_a_late_one_past_the_deadline_is_missed() {
        assert_eq!(decide(facts(1000, 1200)), Decision::Start);
        assert_eq!(decide(facts(1000, 61_000)), Decision::Start);
        assert!(
            matches!(decide(facts(1000, 61_001)), Decision::Miss(m) if m.contains("starting deadline of 60 s"))
        );
    }

    #[test]
    fn a_plugin_not_ready_or_disabled_skips_the_run() {
        let f = Facts {
            exposed: Err("plugin is disabled"),
            ..facts(1000, 1000)
        };
        assert_eq!(decide(f), Decision::Skip("plugin is disabled".into()));
    }

    #[test]
    fn concurrency_decides_a_run_due_while_one_runs() {
        let busy = Facts {
            running: 1,
            took_over_ms: 500,
            ..facts(1000, 1000)
        };
        assert!(matches!(decide(busy), Decision::Skip(m) if m.contains("Forbid")));
        assert_eq!(
            decide(Facts {
                concurrency: Concurrency::Allow,
                ..busy
            }),
            Decision::Start
        );
        assert_eq!(
            decide(Facts {
                concurrency: Concurrency::Replace,
                ..busy
            }),
            Decision::Replace
        );
        // Times missed while no scheduler ran run one after the other, none skipped.
        let caught_up = Facts {
            took_over_ms: 5000,
            ..busy
        };
        assert_eq!(decide(caught_up), Decision::Wait);
        assert_eq!(
            decide(Facts {
                concurrency: Concurrency::Replace,
                ..caught_up
            }),
            Decision::Wait
        );
        assert_eq!(
            decide(Facts {
                concurrency: Concurrency::Allow,
                ..caught_up
            }),
            Decision::Start
        );
    }

    #[test]
    fn retries_back_off_with_jitter_and_a_cap() {
        assert_eq!(retry_delay(2, 1.0), Duration::from_secs(1));
        assert_eq!(retry_delay(2, 0.0), Duration::from_millis(500));
        assert_eq!(retry_delay(3, 1.0), Duration::from_secs(2));
        assert_eq!(retry_delay(11, 1.0), Duration::from_secs(60));
        assert!(retry_delay(4, 0.3) < Duration::from_secs(4));
    }
}
