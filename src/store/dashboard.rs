//! The dashboard's reads: a page of jobs (keyset paging), recent provider calls, the hourly
//! rollup and enqueue-to-finish times (their statements are the backends').
//!
//! Invariants:
//! - Every read is bounded: a LIMIT on an indexed order (jobs by id, calls by id, finished jobs
//!   by `finished_at`) or the `job_hours` rollup, which triggers keep under ~100 rows. No read
//!   scans `jobs` or `calls` in full, so the page loads in about the same time at 1M jobs.
//! - Read-only: nothing here writes.

use serde::Serialize;

use super::backend::Backend;
use super::{Call, Job, JobFilter, Store, StoreError, dispatch};

/// One page of jobs: those matching `filter`, newest first, with an id below `before`.
#[derive(Debug, Clone, Default)]
pub struct JobPage {
    /// The filters of `status`; `limit` is the page size.
    pub filter: JobFilter,
    /// Only jobs with an id below this (the last id of the previous page).
    pub before: Option<i64>,
}

/// Jobs enqueued and finished in one UTC hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourCount {
    /// Start of the hour (ms since the epoch).
    pub hour_start: i64,
    /// Jobs enqueued.
    pub enqueued: i64,
    /// Jobs that succeeded.
    pub succeeded: i64,
    /// Jobs that failed for good.
    pub failed: i64,
}

const HOUR_MS: i64 = 3_600_000;

impl Store {
    /// A page of jobs matching the filters, newest first.
    pub async fn job_page(&self, page: &JobPage) -> Result<Vec<Job>, StoreError> {
        dispatch!(self, s => Backend::job_page(s, page).await)
    }

    /// The `limit` most recent provider calls, newest first.
    pub async fn recent_calls(&self, limit: i64) -> Result<Vec<Call>, StoreError> {
        dispatch!(self, s => Backend::recent_calls(s, limit).await)
    }

    /// Jobs enqueued, succeeded and failed per hour, for the hours from the one holding
    /// `since` (ms) on, oldest first; hours with nothing are left out.
    pub async fn hourly(&self, since: i64) -> Result<Vec<HourCount>, StoreError> {
        let first = since.div_euclid(HOUR_MS);
        let rows = dispatch!(self, s => Backend::hours(s, first).await)?;
        Ok(rows
            .into_iter()
            .map(|(hour, enqueued, succeeded, failed)| HourCount {
                hour_start: hour * HOUR_MS,
                enqueued,
                succeeded,
                failed,
            })
            .collect())
    }

    /// Enqueue-to-finish times (ms) of the at most `limit` jobs that succeeded most recently,
    /// since `since` (ms), ascending.
    pub async fn finish_times(&self, since: i64, limit: i64) -> Result<Vec<i64>, StoreError> {
        let mut times = dispatch!(self, s => Backend::finish_times(s, since, limit).await)?;
        times.sort_unstable();
        Ok(times)
    }
}
