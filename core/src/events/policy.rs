//! What happens after a delivery attempt: pure rules, clocked by the caller.
//!
//! 2xx acknowledges; 408, 429, 5xx, timeouts and connection failures are retried with jittered
//! exponential backoff (1 s doubling to 5 min) until the attempt limit (10) or the age limit
//! (24 h since the event was accepted); any other status dead-letters at once.

use std::time::Duration;

/// First retry delay.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// Default attempt limit.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// Default age limit.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The subscriber answered with this status.
    Status(u16),
    /// No answer: connection refused or broken, or the delivery timed out.
    Failed(String),
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Delivered: forget it.
    Ack,
    /// Try again after this delay.
    Retry(Duration),
    /// Give up: keep it in the dead-letter list, with why.
    DeadLetter(String),
}

/// The limits of retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// Age (since acceptance) after which a failed attempt is the last.
    pub max_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

impl Attempt {
    /// Whether this outcome may succeed if tried again.
    fn is_transient(&self) -> bool {
        match self {
            Attempt::Status(s) => *s == 408 || *s == 429 || *s >= 500,
            Attempt::Failed(_) => true,
        }
    }

    /// Words for the dead-letter list and logs.
    pub fn describe(&self) -> String {
        match self {
            Attempt::Status(s) => format!("the subscriber answered {s}"),
            Attempt::Failed(why) => why.clone(),
        }
    }
}

/// The delay before retry number `attempts` (1 after the first failure), before jitter:
/// 1 s, 2 s, 4 s, ... capped at 5 min.
pub fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << exp).min(MAX_RETRY)
}

/// Jitters `d` into [0.8 d, 1.2 d) with `unit` in [0, 1), so retries of many deliveries that
/// failed together spread out.
pub fn jitter(d: Duration, unit: f64) -> Duration {
    d.mul_f64(0.8 + 0.4 * unit.clamp(0.0, 1.0))
}

/// What follows attempt number `attempts` (1 for the first) of an event accepted `age` ago.
pub fn next(outcome: &Attempt, attempts: u32, age: Duration, limits: Limits, unit: f64) -> Next {
    match outcome {
        Attempt::Status(s) if (200..300).contains(s) => Next::Ack,
        o if !o.is_transient() => Next::DeadLetter(format!(
            "{} (not retried: only 408, 429, 5xx and failed connections are)",
            o.describe()
        )),
        o if attempts >= limits.max_attempts => Next::DeadLetter(format!(
            "{} on attempt {attempts} of {}",
            o.describe(),
            limits.max_attempts
        )),
        o => {
            let delay = jitter(backoff(attempts), unit).min(MAX_RETRY);
            if age + delay > limits.max_age {
                Next::DeadLetter(format!(
                    "{} and the event is older than {} s",
                    o.describe(),
                    limits.max_age.as_secs()
                ))
            } else {
                Next::Retry(delay)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_attempts: 10,
        max_age: DEFAULT_MAX_AGE,
    };

    #[test]
    fn statuses_decide() {
        let young = Duration::from_secs(1);
        assert_eq!(next(&Attempt::Status(200), 1, young, L, 0.5), Next::Ack);
        assert_eq!(next(&Attempt::Status(204), 9, young, L, 0.5), Next::Ack);
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(
                next(&Attempt::Status(s), 1, young, L, 0.5),
                Next::Retry(Duration::from_secs(1)),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 409, 410, 422, 301, 100] {
            assert!(
                matches!(
                    next(&Attempt::Status(s), 1, young, L, 0.5),
                    Next::DeadLetter(_)
                ),
                "{s}"
            );
        }
        assert_eq!(
            next(
                &Attempt::Failed("connection refused".into()),
                2,
                young,
                L,
                0.5
            ),
            Next::Retry(Duration::from_secs(2))
        );
    }

    #[test]
    fn backoff_doubles_to_five_minutes_with_jitter() {
        let plain: Vec<u64> = (1..=11).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(plain, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
        assert_eq!(jitter(Duration::from_secs(10), 0.0), Duration::from_secs(8));
        assert!(jitter(Duration::from_secs(10), 0.999) < Duration::from_secs(12));
        // Never past five minutes, jitter included.
        let late = next(&Attempt::Status(503), 9, Duration::from_secs(1), L, 0.999);
        assert_eq!(late, Next::Retry(MAX_RETRY));
        assert_eq!(
            jitter(Duration::from_secs(10), 7.0),
            Duration::from_secs(12)
        );
    }

    #[test]
    fn limits_end_retries() {
        let young = Duration::from_secs(1);
        match next(&Attempt::Status(503), 10, young, L, 0.5) {
            Next::DeadLetter(why) => assert!(why.contains("attempt 10 of 10"), "{why}"),
            other => panic!("{other:?}"),
        }
        let old = DEFAULT_MAX_AGE - Duration::from_secs(1);
        assert!(matches!(
            next(&Attempt::Status(503), 3, old, L, 0.5),
            Next::DeadLetter(_)
        ));
    }
}
