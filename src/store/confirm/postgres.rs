//! Confirmation statements for PostgreSQL.

use super::{ConfirmBackend, ConfirmRow, Confirming, NewQuery, TakeConfirmations, WaitSelection};
use crate::model::{JobState, Provider};
use crate::store::backend::Tx;
use crate::store::postgres::sql_err;
use crate::store::rows;
use crate::store::{PgStore, StoreError};

impl ConfirmBackend for PgStore {
    async fn take_confirming(
        &self,
        tx: &mut Tx<Self>,
        req: &TakeConfirmations,
    ) -> Result<Vec<Confirming>, StoreError> {
        // Whole requests, as on SQLite. SKIP LOCKED: two workers never take the same job; the
        // outer conditions are checked again on the locked row.
        let rows = sqlx::query(
            "UPDATE jobs SET confirm_at = $1
             WHERE id IN (SELECT id FROM jobs
                          WHERE state = 'confirming' AND provider = $2 AND account = $3
                            AND confirm_at <= $4
                            AND coalesce(confirm_request_id, '') IN (
                                SELECT coalesce(confirm_request_id, '') FROM jobs
                                WHERE state = 'confirming' AND provider = $2 AND account = $3
                                  AND confirm_at <= $4
                                GROUP BY 1 ORDER BY MIN(confirm_at) LIMIT $5)
                          FOR UPDATE SKIP LOCKED)
               AND state = 'confirming' AND confirm_at <= $4
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
             WHERE state = 'confirming' AND provider = $1 AND account = $2",
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
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
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
             SELECT $1, j.id FROM jobs j WHERE j.id = ANY($2)",
        )
        .bind(id)
        .bind(&query.job_ids)
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
        let mut cols = Columns::default();
        for row in rows {
            cols.push(*row);
        }
        let done = sqlx::query(concat!(
            "UPDATE jobs SET
                 state = u.state,
                 attempts = u.attempts,
                 next_at = u.next_at,
                 confirm_at = u.confirm_at,
                 confirmed_at = coalesce(u.confirmed_at, jobs.confirmed_at),
                 cdn_detail = coalesce(u.cdn_detail, jobs.cdn_detail),
                 last_error = coalesce(u.last_error, jobs.last_error),
                 updated_at = $10,
                 finished_at = CASE WHEN u.state IN ",
            crate::store::final_states!(),
            " THEN $10 END
             FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[],
                         $6::bigint[], $7::bigint[], $8::text[], $9::text[])
                  AS u(id, fence, state, attempts, next_at, confirm_at, confirmed_at,
                       cdn_detail, last_error)
             WHERE jobs.id = u.id AND jobs.state = 'confirming' AND jobs.confirm_at = u.fence"
        ))
        .bind(cols.id)
        .bind(cols.fence)
        .bind(cols.state)
        .bind(cols.attempts)
        .bind(cols.next_at)
        .bind(cols.confirm_at)
        .bind(cols.confirmed_at)
        .bind(cols.cdn_detail)
        .bind(cols.last_error)
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
                 WHERE ($1::text IS NULL OR tag = $1) AND ($2::bigint IS NULL OR created_at >= $2)
                 GROUP BY state",
            )
            .bind(&sel.tag)
            .bind(sel.since)
            .fetch_all(self.pool())
            .await
        } else {
            sqlx::query("SELECT state, COUNT(*) AS n FROM jobs WHERE id = ANY($1) GROUP BY state")
                .bind(&sel.ids)
                .fetch_all(self.pool())
                .await
        }
        .map_err(sql_err)?;
        rows.iter().map(rows::wait_count).collect()
    }
}

/// One bound array per column of a confirmation row, zipped back into rows by unnest.
#[derive(Default)]
struct Columns<'a> {
    id: Vec<i64>,
    fence: Vec<i64>,
    state: Vec<&'static str>,
    attempts: Vec<i64>,
    next_at: Vec<i64>,
    confirm_at: Vec<Option<i64>>,
    confirmed_at: Vec<Option<i64>>,
    cdn_detail: Vec<Option<&'a str>>,
    last_error: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, row: ConfirmRow<'a>) {
        let (id, fence, state, attempts, next_at, confirm_at, confirmed_at, cdn_detail, last_error) =
            row;
        self.id.push(id);
        self.fence.push(fence);
        self.state.push(state);
        self.attempts.push(attempts);
        self.next_at.push(next_at);
        self.confirm_at.push(confirm_at);
        self.confirmed_at.push(confirmed_at);
        self.cdn_detail.push(cdn_detail);
        self.last_error.push(last_error);
    }
}
