//! The worker's settings, validated where they are built, and the handles passed beside them.
//!
//! Invariant: a [`WorkerConfig`] always has a lease long enough that a live worker records its
//! call before the lease expires: at least twice the request timeout, and at least the request
//! timeout plus the database's busy timeout. [`WorkerConfig::new`] is the only way to set it.

use std::sync::Arc;
use std::time::Duration;

use super::Policies;
use crate::metrics::Metrics;
use crate::service::Notifier;

/// The default lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(120);

/// The timeouts a lease must outlast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Timeout of one provider call, connection included.
    pub request: Duration,
    /// How long a database write may wait for a lock.
    pub busy: Duration,
}

impl Default for Timeouts {
    /// 30 s per request (the `--request-timeout` default), 5 s busy (the `--busy-timeout`
    /// default).
    fn default() -> Self {
        Timeouts {
            request: Duration::from_secs(30),
            busy: Duration::from_secs(5),
        }
    }
}

/// A lease too short for a live worker to record its call in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Shorter than the request timeout plus the busy timeout.
    #[error(
        "the lease ({lease:?}) must be at least the request timeout ({request:?}) plus the busy timeout ({busy:?}), so a live worker can always record its call before its lease expires"
    )]
    ShorterThanCallAndWrite {
        /// The lease asked for.
        lease: Duration,
        /// The request timeout.
        request: Duration,
        /// The busy timeout.
        busy: Duration,
    },
    /// Shorter than twice the request timeout.
    #[error(
        "the lease ({lease:?}) must be at least twice the request timeout ({request:?}), so a live worker always records its call before its lease expires"
    )]
    ShorterThanTwoCalls {
        /// The lease asked for.
        lease: Duration,
        /// The request timeout.
        request: Duration,
    },
}

/// How the worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's lease owner id (unique per process; see [`worker_id`]).
    pub id: String,
    lease: Duration,
    /// The lease less a call and a write (see [`WorkerConfig::fresh_for`]).
    fresh_for: Duration,
    /// The longest an idle lane waits before looking for new jobs.
    pub poll_interval: Duration,
    /// Drain what is ready now, then return.
    pub once: bool,
    /// Backoff and attempt limits.
    pub policies: Policies,
    /// Whether and how accepted purges are confirmed at the CDN.
    pub confirm: ConfirmSettings,
}

/// How accepted purges are confirmed at the CDN (for accounts whose provider can tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmSettings {
    /// Confirm at all (`--no-confirm` turns it off: jobs succeed at acceptance).
    pub enabled: bool,
    /// The first query comes this long after acceptance; later ones at a growing interval
    /// (half the time since acceptance, between this and ten times this).
    pub interval: Duration,
    /// A job still unconfirmed this long after acceptance fails as unconfirmed; `--once` waits
    /// at most this long for its confirmations.
    pub timeout: Duration,
}

impl Default for ConfirmSettings {
    /// On, first query a minute after acceptance, an hour at most.
    fn default() -> Self {
        ConfirmSettings {
            enabled: true,
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(3600),
        }
    }
}

impl ConfirmSettings {
    /// The wait before asking again about a job accepted `elapsed` ago.
    pub fn next_delay(&self, elapsed: Duration) -> Duration {
        (elapsed / 2).clamp(self.interval, self.interval * 10)
    }
}

impl WorkerConfig {
    /// A configuration with the documented defaults, if `lease` outlasts `timeouts`.
    pub fn new(id: String, lease: Duration, timeouts: Timeouts) -> Result<Self, LeaseError> {
        let Timeouts { request, busy } = timeouts;
        if lease < request + busy {
            return Err(LeaseError::ShorterThanCallAndWrite {
                lease,
                request,
                busy,
            });
        }
        if lease < request * 2 {
            return Err(LeaseError::ShorterThanTwoCalls { lease, request });
        }
        Ok(WorkerConfig {
            id,
            lease,
            fresh_for: lease - (request + busy),
            poll_interval: Duration::from_secs(1),
            once: false,
            policies: Policies::default(),
            confirm: ConfirmSettings::default(),
        })
    }

    /// How long a claim is valid.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// A lease set less than this long ago still outlasts a call and the write of its
    /// outcome: the audit row is written without renewing it.
    pub fn fresh_for(&self) -> Duration {
        self.fresh_for
    }
}

/// What the worker reports to, passed beside its configuration.
#[derive(Debug, Clone)]
pub struct Handles {
    /// The service manager (systemd), fed from the loops; a no-op outside systemd.
    pub notifier: Arc<Notifier>,
    /// Where calls and claims are counted and timed.
    pub metrics: Arc<Metrics>,
}

impl Handles {
    /// The service manager named by the environment, and fresh metrics.
    pub fn from_env() -> Self {
        Handles {
            notifier: Arc::new(Notifier::from_env()),
            metrics: Arc::default(),
        }
    }
}

/// `host:pid:random`, unique enough that two processes never share a lease owner.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}:{}:{:04x}", std::process::id(), fastrand::u16(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn timeouts(request: u64, busy: u64) -> Timeouts {
        Timeouts {
            request: S(request),
            busy: S(busy),
        }
    }

    #[test]
    fn confirmation_asks_at_a_growing_interval() {
        let c = ConfirmSettings::default();
        assert_eq!(c.next_delay(S(0)), S(60));
        assert_eq!(c.next_delay(S(300)), S(150));
        assert_eq!(c.next_delay(S(86_400)), S(600));
    }

    #[test]
    fn the_default_lease_outlasts_the_default_timeouts() {
        let config = WorkerConfig::new("w".into(), DEFAULT_LEASE, Timeouts::default()).unwrap();
        assert_eq!(config.lease(), DEFAULT_LEASE);
    }

    #[test]
    fn a_lease_shorter_than_a_call_and_a_write_is_refused() {
        let err = WorkerConfig::new("w".into(), S(40), timeouts(20, 30)).unwrap_err();
        assert_eq!(
            err,
            LeaseError::ShorterThanCallAndWrite {
                lease: S(40),
                request: S(20),
                busy: S(30)
            }
        );
        assert!(err.to_string().contains("the busy timeout (30s)"));
    }

    #[test]
    fn a_lease_shorter_than_two_calls_is_refused() {
        let err = WorkerConfig::new("w".into(), S(50), timeouts(30, 5)).unwrap_err();
        assert_eq!(
            err,
            LeaseError::ShorterThanTwoCalls {
                lease: S(50),
                request: S(30)
            }
        );
        assert!(WorkerConfig::new("w".into(), S(60), timeouts(30, 5)).is_ok());
    }
}
