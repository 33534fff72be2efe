//! The one retry policy of `ugc`: exponential backoff with jitter. Every loop that waits
//! for something to come back (a store, a broker, a log) uses it, so that many
//! processes restarted together do not retry in lockstep.

use std::future::Future;
use std::time::Duration;

/// Pauses that double from `min` up to `max`; each is drawn in [50%, 100%] of its step.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            current: min,
        }
    }

    /// Back to the shortest pause, after a success.
    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// The next pause.
    pub fn next_pause(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        step.mul_f64(rand::random_range(0.5..=1.0))
    }

    /// Waits the next pause.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }
}

/// Runs `op` until it succeeds, fails with an error `retryable` says is for good, or
/// has been tried `attempts` times (`None`: until it succeeds); waits with `backoff`
/// between tries, and tells `on_retry` about each failure it retries.
pub async fn retry<T, E, F, Fut>(
    mut backoff: Backoff,
    attempts: Option<u32>,
    retryable: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(u32, &E),
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if retryable(&e) && attempts.is_none_or(|n| attempt < n) => {
                on_retry(attempt, &e);
                backoff.wait().await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_max_with_jitter_below_each_step() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        for step in [100u64, 200, 400, 400, 400] {
            let p = b.next_pause();
            let step = Duration::from_millis(step);
            assert!(p >= step / 2 && p <= step, "{p:?} for a step of {step:?}");
        }
        b.reset();
        assert!(b.next_pause() <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn retries_what_is_retryable_and_stops_at_the_attempts() {
        let quick = || Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        let mut calls = 0;
        let r: Result<(), &str> = retry(
            quick(),
            Some(3),
            |_| true,
            |_, _| {},
            || {
                calls += 1;
                async { Err("down") }
            },
        )
        .await;
        assert_eq!((r, calls), (Err("down"), 3));
        let mut calls = 0;
        let r: Result<(), &str> = retry(
            quick(),
            None,
            |e| *e != "bad",
            |_, _| {},
            || {
                calls += 1;
                async { Err("bad") }
            },
        )
        .await;
        assert_eq!((r, calls), (Err("bad"), 1));
        let mut calls = 0;
        let r = retry(
            quick(),
            None,
            |_: &&str| true,
            |_, _| {},
            || {
                calls += 1;
                let n = calls;
                async move { if n < 4 { Err("down") } else { Ok(n) } }
            },
        )
        .await;
        assert_eq!(r, Ok(4));
    }
}
