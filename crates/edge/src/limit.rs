//! Per-user rate limit on ingest: events per second with a burst, counted per user so
//! that one noisy client never slows another.
//!
//! GCRA (the generic cell rate algorithm): each user has a "theoretical arrival time"
//! (TAT); admitting `n` events moves it `n` emission intervals ahead, and a request is
//! refused when that would put it more than a burst ahead of now. One instant per user
//! is the whole state, and a user whose TAT has passed is indistinguishable from one
//! never seen, which is what keeps the map small: such entries are pruned.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Events per second, sustained.
    pub per_second: f64,
    /// Events admitted at once after a quiet spell.
    pub burst: u32,
}

/// Why events were refused, and when to come back.
#[derive(Debug, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
    /// The request alone holds more events than the burst: it can never pass whole.
    pub over_burst: bool,
}

pub struct RateLimiter {
    interval: u128,
    tolerance: u128,
    start: Instant,
    state: Mutex<State>,
}

struct State {
    /// Each user's theoretical arrival time, in nanoseconds since `start`.
    tats: HashMap<String, u128>,
    /// Size at which entries at full allowance are next pruned.
    prune_at: usize,
}

const PRUNE_MIN: usize = 10_000;

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        let interval = (1e9 / limit.per_second.max(1e-9)).min(u64::MAX as f64) as u128;
        Self {
            interval,
            tolerance: interval * u128::from(limit.burst.max(1)),
            start: Instant::now(),
            state: Mutex::new(State {
                tats: HashMap::new(),
                prune_at: PRUNE_MIN,
            }),
        }
    }

    /// Admits `n` events of `key` now, or refuses all of them.
    pub fn admit(&self, key: &str, n: u32) -> Result<(), Limited> {
        self.admit_at(key, n, Instant::now())
    }

    fn admit_at(&self, key: &str, n: u32, at: Instant) -> Result<(), Limited> {
        let now = at.saturating_duration_since(self.start).as_nanos();
        let cost = self.interval * u128::from(n);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let tat = state.tats.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat + cost;
        if new_tat - now > self.tolerance {
            let over_burst = cost > self.tolerance;
            // Over the burst: the earliest the bucket is full again is the best advice.
            let wait = if over_burst {
                tat - now
            } else {
                new_tat - now - self.tolerance
            };
            return Err(Limited {
                retry_after: Duration::from_nanos(wait.min(u64::MAX as u128) as u64),
                over_burst,
            });
        }
        state.tats.insert(key.to_owned(), new_tat);
        if state.tats.len() >= state.prune_at {
            state.tats.retain(|_, tat| *tat > now);
            state.prune_at = (state.tats.len() * 2).max(PRUNE_MIN);
        }
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().unwrap().tats.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimit { per_second, burst })
    }

    #[test]
    fn a_burst_then_the_sustained_rate_per_user() {
        let l = limiter(10.0, 5);
        let t0 = l.start;
        for _ in 0..5 {
            l.admit_at("a", 1, t0).unwrap();
        }
        let refused = l.admit_at("a", 1, t0).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert!(!refused.over_burst);
        // Another user is not affected.
        l.admit_at("b", 5, t0).unwrap();
        // One interval later, one more event of "a" fits.
        let t1 = t0 + Duration::from_millis(100);
        l.admit_at("a", 1, t1).unwrap();
        assert!(l.admit_at("a", 1, t1).is_err());
    }

    #[test]
    fn a_request_is_admitted_or_refused_whole() {
        let l = limiter(10.0, 10);
        let t0 = l.start;
        l.admit_at("a", 7, t0).unwrap();
        // 4 more would exceed the burst: none is counted.
        assert!(l.admit_at("a", 4, t0).is_err());
        l.admit_at("a", 3, t0).unwrap();
        let too_big = l.admit_at("b", 11, t0).unwrap_err();
        assert!(too_big.over_burst);
    }

    #[test]
    fn users_at_full_allowance_are_forgotten() {
        let l = limiter(1000.0, 1);
        let t0 = l.start;
        for i in 1..PRUNE_MIN {
            l.admit_at(&i.to_string(), 1, t0).unwrap();
        }
        assert_eq!(l.len(), PRUNE_MIN - 1);
        l.admit_at("late", 1, t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(l.len(), 1);
    }
}
