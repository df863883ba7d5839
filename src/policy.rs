//! Backoff policies: how long a job or a lane waits after a failure. Pure, no I/O.
//!
//! Every delay the worker persists (a job's `next_at`, a lane's `paused_until`) comes from one of
//! these `Copy` values, so a restart honours it. The `backoff` crate is unmaintained
//! (RUSTSEC-2025-0012), and these few lines need no crate.

use std::time::Duration;

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The first delay.
    pub initial: Duration,
    /// Each further strike multiplies the delay by this.
    pub factor: u32,
    /// The longest delay.
    pub cap: Duration,
    /// Fraction of the delay, in `[0, 1]`, that jitter may remove, so that jobs and workers
    /// that failed together do not come back together.
    pub jitter: f64,
}

impl RetryPolicy {
    /// Transient failures of a job (network, 5xx, unparseable bodies): 5 s, 10 s, 20 s ... 10 min.
    pub const TRANSIENT: RetryPolicy = RetryPolicy {
        initial: Duration::from_secs(5),
        factor: 2,
        cap: Duration::from_secs(600),
        jitter: 0.25,
    };

    /// A used-up daily quota: 1 min, 2 min, 4 min ... 1 h, and never past the provider's reset.
    /// Probing costs a request, not quota, and operators may raise a quota in the console.
    pub const QUOTA: RetryPolicy = RetryPolicy {
        initial: Duration::from_secs(60),
        factor: 2,
        cap: Duration::from_secs(3600),
        jitter: 0.1,
    };

    /// The provider's rate limit (HTTP 429, Qiniu 403022/403024): 1 s, 2 s ... 1 min.
    pub const RATE_LIMIT: RetryPolicy = RetryPolicy {
        initial: Duration::from_secs(1),
        factor: 2,
        cap: Duration::from_secs(60),
        jitter: 0.25,
    };

    /// Refused credentials: 30 s, 1 min ... 15 min, until an operator fixes them.
    pub const AUTH: RetryPolicy = RetryPolicy {
        initial: Duration::from_secs(30),
        factor: 2,
        cap: Duration::from_secs(900),
        jitter: 0.1,
    };

    /// The delay after `strike` consecutive failures (1-based), with `unit` in `[0, 1)` drawn
    /// by the caller (so tests can pin it).
    pub fn delay(&self, strike: u32, unit: f64) -> Duration {
        let exp = strike.saturating_sub(1).min(32);
        let base = self
            .initial
            .saturating_mul(self.factor.saturating_pow(exp))
            .min(self.cap);
        base.mul_f64(1.0 - self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0))
    }

    /// [`RetryPolicy::delay`] with a random jitter draw.
    pub fn delay_jittered(&self, strike: u32) -> Duration {
        self.delay(strike, fastrand::f64())
    }

    /// The same policy with every delay scaled down to start at `initial` (for tests and demos
    /// that cannot wait minutes).
    pub fn starting_at(self, initial: Duration) -> RetryPolicy {
        let ratio = initial.as_secs_f64() / self.initial.as_secs_f64().max(f64::MIN_POSITIVE);
        RetryPolicy {
            initial,
            cap: self.cap.mul_f64(ratio),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let p = RetryPolicy::TRANSIENT;
        assert_eq!(p.delay(1, 0.0), Duration::from_secs(5));
        assert_eq!(p.delay(2, 0.0), Duration::from_secs(10));
        assert_eq!(p.delay(4, 0.0), Duration::from_secs(40));
        assert_eq!(p.delay(30, 0.0), Duration::from_secs(600));
        assert_eq!(p.delay(u32::MAX, 0.0), Duration::from_secs(600));
    }

    #[test]
    fn jitter_only_shortens_and_stays_within_its_fraction() {
        let p = RetryPolicy::TRANSIENT;
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(3750));
        for _ in 0..100 {
            let d = p.delay_jittered(3);
            assert!(
                d <= Duration::from_secs(20) && d >= Duration::from_secs(15),
                "{d:?}"
            );
        }
    }

    #[test]
    fn scaling_keeps_the_shape() {
        let p = RetryPolicy::QUOTA.starting_at(Duration::from_millis(100));
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(p.cap, Duration::from_secs(6));
    }
}
