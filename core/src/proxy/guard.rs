//! What stands between the proxy and one plugin: a cap on requests in flight and a circuit
//! breaker. No I/O; the clock is passed in.
//!
//! The breaker: after [`FAILURES_TO_OPEN`] consecutive failures (connection refused or timed
//! out, or a 5xx answer) it opens for [`OPEN_FOR`]; every request meanwhile is answered by the
//! core. Then one trial request goes through: success closes it, failure opens it again.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Consecutive failures that open the circuit.
pub const FAILURES_TO_OPEN: u32 = 5;
/// How long an open circuit refuses.
pub const OPEN_FOR: Duration = Duration::from_secs(10);

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breaker {
    /// Requests pass; `failures` in a row so far.
    Closed {
        /// Consecutive failures.
        failures: u32,
    },
    /// Refusing until `until`.
    Open {
        /// When a trial may go through.
        until: Instant,
    },
    /// One trial request is out; the others are refused until it answers.
    Trial,
}

/// Whether a request may go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// As usual.
    Normal,
    /// As the one trial of a half-open circuit.
    Trial,
}

/// Why a request may not go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The circuit is open; retry after this long.
    CircuitOpen(Duration),
    /// As many requests as allowed are in flight.
    Overloaded,
}

impl Breaker {
    /// Admits a request at `now`, or says why not.
    pub fn admit(&mut self, now: Instant) -> Result<Pass, Duration> {
        match *self {
            Breaker::Closed { .. } => Ok(Pass::Normal),
            Breaker::Open { until } if now >= until => {
                *self = Breaker::Trial;
                Ok(Pass::Trial)
            }
            Breaker::Open { until } => Err(until - now),
            // The trial's answer is awaited; a second caller waits a second.
            Breaker::Trial => Err(Duration::from_secs(1)),
        }
    }

    /// Records how an admitted request went; answers whether the circuit just opened.
    pub fn record(&mut self, pass: Pass, ok: bool, now: Instant) -> bool {
        match (*self, pass, ok) {
            // A success counts while closed, or as the trial's answer; a late success of a
            // request admitted before the circuit opened does not cut the pause short.
            (Breaker::Closed { .. }, _, true) | (Breaker::Trial, Pass::Trial, true) => {
                *self = Breaker::Closed { failures: 0 };
                false
            }
            (Breaker::Trial, Pass::Trial, false) => {
                *self = Breaker::Open {
                    until: now + OPEN_FOR,
                };
                true
            }
            (Breaker::Closed { failures }, _, false) => {
                let failures = failures + 1;
                if failures >= FAILURES_TO_OPEN {
                    *self = Breaker::Open {
                        until: now + OPEN_FOR,
                    };
                    true
                } else {
                    *self = Breaker::Closed { failures };
                    false
                }
            }
            // A request admitted before the circuit opened answers late: nothing to add.
            _ => false,
        }
    }

    /// Whether requests are being refused.
    pub fn is_open(&self) -> bool {
        !matches!(self, Breaker::Closed { .. })
    }
}

/// One plugin's guard: its breaker and its in-flight count.
#[derive(Debug)]
pub struct Guard {
    breaker: Mutex<Breaker>,
    in_flight: AtomicU32,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            breaker: Mutex::new(Breaker::Closed { failures: 0 }),
            in_flight: AtomicU32::new(0),
        }
    }
}

/// A request let through: holds its in-flight slot until dropped (when the response body
/// ends), and reports its outcome to the breaker once.
#[derive(Debug)]
pub struct Permit {
    guard: Arc<Guard>,
    /// How it was admitted.
    pub pass: Pass,
    recorded: bool,
}

impl Permit {
    /// Records how the request went; answers whether the circuit just opened.
    pub fn record(&mut self, ok: bool, now: Instant) -> bool {
        self.recorded = true;
        crate::sync::lock(&self.guard.breaker).record(self.pass, ok, now)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.guard.in_flight.fetch_sub(1, Ordering::AcqRel);
        // A trial that ended without an outcome (the client went away, the body was too
        // large) must not leave the circuit waiting for it: the next request is the trial.
        if self.pass == Pass::Trial && !self.recorded {
            let mut b = crate::sync::lock(&self.guard.breaker);
            if *b == Breaker::Trial {
                *b = Breaker::Open {
                    until: Instant::now(),
                };
            }
        }
    }
}

impl Guard {
    /// Lets a request through, or says why not.
    pub fn enter(self: &Arc<Self>, max_in_flight: u32, now: Instant) -> Result<Permit, Refused> {
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_in_flight).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Refused::Overloaded);
        }
        // The slot is taken first: a trial is only started by a request that will be sent.
        let admitted = crate::sync::lock(&self.breaker).admit(now);
        match admitted {
            Ok(pass) => Ok(Permit {
                guard: self.clone(),
                pass,
                recorded: false,
            }),
            Err(left) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                Err(Refused::CircuitOpen(left))
            }
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether the circuit refuses requests now.
    pub fn is_open(&self) -> bool {
        crate::sync::lock(&self.breaker).is_open()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn five_failures_in_a_row_open_the_circuit_for_ten_seconds() {
        let t0 = Instant::now();
        let mut b = Breaker::Closed { failures: 0 };
        for i in 0..4 {
            assert_eq!(b.admit(t0), Ok(Pass::Normal));
            assert!(!b.record(Pass::Normal, false, t0), "opened after {}", i + 1);
        }
        // A success in between starts the count again.
        assert!(!b.record(Pass::Normal, true, t0));
        for _ in 0..4 {
            assert!(!b.record(Pass::Normal, false, t0));
        }
        assert!(
            b.record(Pass::Normal, false, t0),
            "the fifth failure opens it"
        );
        assert_eq!(b.admit(t0), Err(OPEN_FOR));
        assert_eq!(
            b.admit(t0 + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );
    }

    #[test]
    fn one_trial_after_the_pause_closes_or_reopens_it() {
        let t0 = Instant::now();
        let mut b = Breaker::Open { until: t0 };
        assert_eq!(b.admit(t0), Ok(Pass::Trial));
        // Others are refused while the trial is out.
        assert!(b.admit(t0).is_err());
        // The trial fails: open for another ten seconds.
        assert!(b.record(Pass::Trial, false, t0));
        assert!(b.admit(t0 + Duration::from_secs(9)).is_err());
        assert_eq!(b.admit(t0 + OPEN_FOR), Ok(Pass::Trial));
        // The trial succeeds: closed.
        assert!(!b.record(Pass::Trial, true, t0 + OPEN_FOR));
        assert_eq!(b.admit(t0 + OPEN_FOR), Ok(Pass::Normal));
        assert!(!b.is_open());
    }

    #[test]
    fn late_answers_from_before_the_opening_change_nothing() {
        let t0 = Instant::now();
        let mut b = Breaker::Open {
            until: t0 + OPEN_FOR,
        };
        assert!(!b.record(Pass::Normal, false, t0));
        assert!(!b.record(Pass::Normal, true, t0));
        assert!(b.is_open(), "a late success does not end the pause");
        // Nor does it close the circuit while the trial is out.
        let mut b = Breaker::Trial;
        assert!(!b.record(Pass::Normal, true, t0));
        assert_eq!(b, Breaker::Trial);
    }

    #[test]
    fn the_in_flight_cap_is_held_until_permits_drop() {
        let g = Arc::new(Guard::default());
        let now = Instant::now();
        let a = g.enter(2, now).unwrap();
        let b = g.enter(2, now).unwrap();
        assert_eq!(g.enter(2, now).unwrap_err(), Refused::Overloaded);
        assert_eq!(g.in_flight(), 2);
        drop(a);
        let c = g.enter(2, now).unwrap();
        drop((b, c));
        assert_eq!(g.in_flight(), 0);
    }

    #[test]
    fn a_refusal_by_the_breaker_frees_the_slot_it_took() {
        let g = Arc::new(Guard::default());
        let now = Instant::now();
        for _ in 0..FAILURES_TO_OPEN {
            let mut p = g.enter(10, now).unwrap();
            p.record(false, now);
        }
        assert!(g.is_open());
        assert!(matches!(g.enter(10, now), Err(Refused::CircuitOpen(_))));
        assert_eq!(g.in_flight(), 0);
    }
}

#[cfg(test)]
mod trial_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_trial_dropped_without_an_outcome_lets_the_next_request_try() {
        let g = Arc::new(Guard::default());
        let t0 = Instant::now();
        *crate::sync::lock(&g.breaker) = Breaker::Open { until: t0 };
        let trial = g.enter(10, t0).unwrap();
        assert_eq!(trial.pass, Pass::Trial);
        assert!(g.enter(10, t0).is_err(), "one trial at a time");
        drop(trial);
        let next = g.enter(10, Instant::now()).unwrap();
        assert_eq!(next.pass, Pass::Trial);
    }
}
