//! Confirmation statements for SQLite.

use super::{ConfirmBackend, ConfirmRow, Confirming, NewQuery, TakeConfirmations, WaitSelection};
use crate::model::{JobState, Provider};
use crate::store::backend::{Tx, encode};
use crate::store::rows;
use crate::store::sqlite::sql_err;
use crate::store::{SqliteStore, StoreError};

impl ConfirmBackend for SqliteStore {
    async fn take_confirming(
        &self,
        tx: &mut Tx<Self>,
        req: &TakeConfirmations,
    ) -> Result<Vec<Confirming>, StoreError> {
        // BEGIN IMMEDIATE holds the write lock: no other worker takes the same jobs.
        // N.B. Whole requests: every due job of the first requests due, so one query answers
        // all of a request's jobs (jobs without a request id count as one request).
        let rows = sqlx::query(
            "UPDATE jobs SET confirm_at = ?1
             WHERE state = 'confirming' AND provider = ?2 AND account = ?3 AND confirm_at <= ?4
               AND coalesce(confirm_request_id, '') IN (
                   SELECT coalesce(confirm_request_id, '') FROM jobs
                   WHERE state = 'confirming' AND provider = ?2 AND account = ?3
                     AND confirm_at <= ?4
                   GROUP BY 1 ORDER BY MIN(confirm_at) LIMIT ?5)
             RETURNING id, action, target, attempts, created_at, accepted_at,
                       confirm_request_id, confirm_at",
        )
        .bind(req.hold_until)
        .bind(req.provider.as_str())
        .bind(&req.account)
        .bind(req.now)
        .bind(req.limit)
        .fetch_all(&mut **tx)
        .await
        .map_err(sql_err)?;
        rows.iter().map(rows::confirming).collect()
    }

    async fn next_confirm(
        &self,
        provider: Provider,
        account: &str,
    ) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT MIN(confirm_at) FROM jobs
             WHERE state = 'confirming' AND provider = ?1 AND account = ?2",
        )
        .bind(provider.as_str())
        .bind(account)
        .fetch_one(self.pool())
        .await
        .map_err(sql_err)
    }

    async fn insert_query(
        &self,
        tx: &mut Tx<Self>,
        query: &NewQuery,
        now: i64,
    ) -> Result<i64, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO calls (provider, account, operation, worker, target_count, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )
        .bind(query.provider.as_str())
        .bind(&query.account)
        .bind(query.operation)
        .bind(&query.worker)
        .bind(query.target_count)
        .bind(now)
        .fetch_one(&mut **tx)
        .await
        .map_err(sql_err)?;
        sqlx::query(
            "INSERT INTO call_jobs (call_id, job_id)
             SELECT ?1, value FROM json_each(?2) WHERE value IN (SELECT id FROM jobs)",
        )
        .bind(id)
        .bind(encode(&query.job_ids)?)
        .execute(&mut **tx)
        .await
        .map_err(sql_err)?;
        Ok(id)
    }

    async fn update_confirming(
        &self,
        tx: &mut Tx<Self>,
        now: i64,
        rows: &[ConfirmRow<'_>],
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(concat!(
            "WITH u AS MATERIALIZED (
                 SELECT value ->> 0 AS id, value ->> 1 AS fence, value ->> 2 AS state,
                        value ->> 3 AS attempts, value ->> 4 AS next_at,
                        value ->> 5 AS confirm_at, value ->> 6 AS confirmed_at,
                        value ->> 7 AS cdn_detail, value ->> 8 AS last_error
                 FROM json_each(?1))
             UPDATE jobs SET
                 state = u.state,
                 attempts = u.attempts,
                 next_at = u.next_at,
                 confirm_at = u.confirm_at,
                 confirmed_at = coalesce(u.confirmed_at, jobs.confirmed_at),
                 cdn_detail = coalesce(u.cdn_detail, jobs.cdn_detail),
                 last_error = coalesce(u.last_error, jobs.last_error),
                 updated_at = ?2,
                 finished_at = CASE WHEN u.state IN ",
            crate::store::final_states!(),
            " THEN ?2 END
             FROM u
             WHERE jobs.id = u.id AND jobs.state = 'confirming' AND jobs.confirm_at = u.fence"
        ))
        .bind(encode(rows)?)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(sql_err)?;
        Ok(done.rows_affected())
    }

    async fn wait_counts(&self, sel: &WaitSelection) -> Result<Vec<(JobState, i64)>, StoreError> {
        let rows = if sel.ids.is_empty() {
            sqlx::query(
                "SELECT state, COUNT(*) AS n FROM jobs
                 WHERE (?1 IS NULL OR tag = ?1) AND (?2 IS NULL OR created_at >= ?2)
                 GROUP BY state",
            )
            .bind(&sel.tag)
            .bind(sel.since)
            .fetch_all(self.pool())
            .await
        } else {
            sqlx::query(
                "SELECT state, COUNT(*) AS n FROM jobs
                 WHERE id IN (SELECT value FROM json_each(?1)) GROUP BY state",
            )
            .bind(encode(&sel.ids)?)
            .fetch_all(self.pool())
            .await
        }
        .map_err(sql_err)?;
        rows.iter().map(rows::wait_count).collect()
    }
}
