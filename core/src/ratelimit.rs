//! Token-bucket rate limits keyed by token id or client address.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::{ApiError, Code};

/// Buckets by key; each refills `per_minute` tokens a minute up to `per_minute`.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Most keys kept before idle full buckets are dropped.
const MAX_KEYS: usize = 100_000;

impl RateLimiter {
    /// Takes one token from `key`'s bucket, or says how long to wait.
    pub fn check(&self, key: &str, per_minute: u32, what: &str) -> Result<(), ApiError> {
        let cap = f64::from(per_minute.max(1));
        let rate = cap / 60.0;
        let now = Instant::now();
        let mut buckets = crate::sync::lock(&self.buckets);
        if buckets.len() >= MAX_KEYS {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < cap);
        }
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(cap);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64;
            let mut e = ApiError::new(
                Code::RateLimited,
                format!("too many {what} (limit {per_minute} a minute); retry in {wait} s"),
            );
            e.retry_after = Some(wait);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_burst_with_retry_after() {
        let l = RateLimiter::default();
        for _ in 0..3 {
            l.check("k", 3, "for this token").unwrap();
        }
        let e = l.check("k", 3, "for this token").unwrap_err();
        assert_eq!(e.code, Code::RateLimited);
        assert!(e.retry_after.is_some_and(|s| (1..=20).contains(&s)));
        l.check("other", 3, "for this token").unwrap();
    }
}
