//! Client-side pacing under a provider's published rate limits.
//!
//! A token bucket per limit (targets per second, requests per second), shared by every lane of
//! one provider account. Callers reserve what a request needs and sleep off any deficit, so a
//! burst is spread out instead of refused. This is in-process only: if the provider still says
//! "slow down", the lane gate in the database takes over. It runs on tokio's clock, so tests can
//! pause time. A rate of zero disables that limit (the emulator has none).

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_sec: f64, now: Instant) -> Self {
        // A burst of one second's worth, at least one whole request.
        let capacity = per_sec.max(1.0);
        Bucket {
            rate: per_sec,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes `n` tokens (possibly going into debt) and returns how long to wait before use.
    fn reserve(&mut self, n: f64, now: Instant) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now;
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Paces one provider account's requests.
#[derive(Debug)]
pub struct Pacer {
    buckets: Mutex<(Bucket, Bucket)>,
}

impl Pacer {
    /// A pacer allowing `targets_per_sec` targets and `requests_per_sec` requests per second
    /// (zero: unlimited).
    pub fn new(targets_per_sec: f64, requests_per_sec: f64) -> Self {
        let now = Instant::now();
        Pacer {
            buckets: Mutex::new((
                Bucket::new(targets_per_sec, now),
                Bucket::new(requests_per_sec, now),
            )),
        }
    }

    /// How long to wait before sending one request of `targets` targets; the capacity is
    /// reserved now.
    pub async fn reserve(&self, targets: usize) -> Duration {
        let now = Instant::now();
        let mut b = self.buckets.lock().await;
        let t = b.0.reserve(targets as f64, now);
        let r = b.1.reserve(1.0, now);
        t.max(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spreads_targets_over_time_at_the_rate() {
        let pacer = Pacer::new(240.0, 0.0);
        // One second's burst is free, then each 60-target request waits a quarter second.
        assert_eq!(pacer.reserve(240).await, Duration::ZERO);
        assert_eq!(pacer.reserve(60).await, Duration::from_millis(250));
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(pacer.reserve(60).await, Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn limits_requests_per_second() {
        let pacer = Pacer::new(0.0, 5.0);
        for _ in 0..5 {
            assert_eq!(pacer.reserve(1).await, Duration::ZERO);
        }
        assert_eq!(pacer.reserve(1).await, Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_means_unlimited() {
        let pacer = Pacer::new(0.0, 0.0);
        for _ in 0..1000 {
            assert_eq!(pacer.reserve(100).await, Duration::ZERO);
        }
    }
}
