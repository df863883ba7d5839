//! The dashboard's reads: a page of jobs (keyset paging), recent provider calls, the hourly
//! rollup and enqueue-to-finish times. SQL for both backends side by side.
//!
//! Invariants:
//! - Every read is bounded: a LIMIT on an indexed order (jobs by id, calls by id, finished jobs
//!   by `finished_at`) or the `job_hours` rollup, which triggers keep under ~100 rows. No read
//!   scans `jobs` or `calls` in full, so the page loads in about the same time at 1M jobs.
//! - Read-only: nothing here writes.

use serde::Serialize;
use sqlx::Row as _;

use super::{Call, Job, JobFilter, Store, StoreError, postgres, rows, sqlite};
use crate::model::{JobState, Provider};

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
        let f = &page.filter;
        match self {
            Store::Sqlite(s) => sqlx::query(concat!(
                "SELECT ",
                rows::job_columns!(),
                " FROM jobs
                 WHERE (?1 IS NULL OR state = ?1)
                   AND (?2 IS NULL OR provider = ?2)
                   AND (?3 IS NULL OR tag = ?3)
                   AND (?4 IS NULL OR instr(target, ?4) > 0)
                   AND (?5 IS NULL OR updated_at >= ?5)
                   AND (?6 IS NULL OR id < ?6)
                 ORDER BY id DESC
                 LIMIT ?7"
            ))
            .bind(f.state.map(JobState::as_str))
            .bind(f.provider.map(Provider::as_str))
            .bind(&f.tag)
            .bind(&f.url_contains)
            .bind(f.updated_since)
            .bind(page.before)
            .bind(f.limit)
            .fetch_all(s.pool())
            .await
            .map_err(sqlite::sql_err)?
            .iter()
            .map(rows::job)
            .collect(),
            Store::Postgres(p) => sqlx::query(concat!(
                "SELECT ",
                rows::job_columns!(),
                " FROM jobs
                 WHERE ($1::text IS NULL OR state = $1)
                   AND ($2::text IS NULL OR provider = $2)
                   AND ($3::text IS NULL OR tag = $3)
                   AND ($4::text IS NULL OR strpos(target, $4) > 0)
                   AND ($5::bigint IS NULL OR updated_at >= $5)
                   AND ($6::bigint IS NULL OR id < $6)
                 ORDER BY id DESC
                 LIMIT $7"
            ))
            .bind(f.state.map(JobState::as_str))
            .bind(f.provider.map(Provider::as_str))
            .bind(&f.tag)
            .bind(&f.url_contains)
            .bind(f.updated_since)
            .bind(page.before)
            .bind(f.limit)
            .fetch_all(p.pool())
            .await
            .map_err(postgres::sql_err)?
            .iter()
            .map(rows::job)
            .collect(),
        }
    }

    /// The `limit` most recent provider calls, newest first.
    pub async fn recent_calls(&self, limit: i64) -> Result<Vec<Call>, StoreError> {
        match self {
            Store::Sqlite(s) => sqlx::query("SELECT * FROM calls ORDER BY id DESC LIMIT ?1")
                .bind(limit)
                .fetch_all(s.pool())
                .await
                .map_err(sqlite::sql_err)?
                .iter()
                .map(rows::call)
                .collect(),
            Store::Postgres(p) => sqlx::query("SELECT * FROM calls ORDER BY id DESC LIMIT $1")
                .bind(limit)
                .fetch_all(p.pool())
                .await
                .map_err(postgres::sql_err)?
                .iter()
                .map(rows::call)
                .collect(),
        }
    }

    /// Jobs enqueued, succeeded and failed per hour, for the hours from the one holding
    /// `since` (ms) on, oldest first; hours with nothing are left out.
    pub async fn hourly(&self, since: i64) -> Result<Vec<HourCount>, StoreError> {
        let first = since.div_euclid(HOUR_MS);
        let rows: Vec<(i64, i64, i64, i64)> = match self {
            Store::Sqlite(s) => sqlx::query_as(
                "SELECT hour, enqueued, succeeded, failed FROM job_hours
                 WHERE hour >= ?1 ORDER BY hour",
            )
            .bind(first)
            .fetch_all(s.pool())
            .await
            .map_err(sqlite::sql_err)?,
            Store::Postgres(p) => sqlx::query_as(
                "SELECT hour, enqueued, succeeded, failed FROM job_hours
                 WHERE hour >= $1 ORDER BY hour",
            )
            .bind(first)
            .fetch_all(p.pool())
            .await
            .map_err(postgres::sql_err)?,
        };
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
        let mut times: Vec<i64> = match self {
            // `+state`: keep SQLite on the finished_at index (reading the newest first and
            // stopping at the limit) instead of jobs_state and a sort of every succeeded job.
            Store::Sqlite(s) => sqlx::query(
                "SELECT finished_at - created_at FROM jobs
                 WHERE finished_at >= ?1 AND +state = 'succeeded'
                 ORDER BY finished_at DESC LIMIT ?2",
            )
            .bind(since)
            .bind(limit)
            .fetch_all(s.pool())
            .await
            .map_err(sqlite::sql_err)?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()
            .map_err(sqlite::sql_err)?,
            Store::Postgres(p) => sqlx::query(
                "SELECT finished_at - created_at FROM jobs
                 WHERE finished_at >= $1 AND finished_at IS NOT NULL AND state = 'succeeded'
                 ORDER BY finished_at DESC LIMIT $2",
            )
            .bind(since)
            .bind(limit)
            .fetch_all(p.pool())
            .await
            .map_err(postgres::sql_err)?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()
            .map_err(postgres::sql_err)?,
        };
        times.sort_unstable();
        Ok(times)
    }
}
