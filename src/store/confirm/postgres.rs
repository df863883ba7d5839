//! Confirmation statements for PostgreSQL: the texts that differ, and the fenced update.

use super::{CallId, Span};
use super::{
    Changed, ConfirmBackend, ConfirmDialect, ConfirmRecord, ConfirmRow, Confirming, NewQuery,
    TakeConfirmations, WaitSelection, confirm_row, confirm_set, confirm_statements,
};
use crate::model::{JobState, Provider};
use crate::store::backend::Tx;
use crate::store::postgres::sql_err;
use crate::store::rows;
use crate::store::{PgStore, StoreError};

impl ConfirmBackend for PgStore {
    const CONFIRM_SQL: ConfirmDialect = ConfirmDialect {
        // Whole requests, as on SQLite. SKIP LOCKED: two workers never take the same job; the
        // outer conditions are checked again on the locked row. `= ANY(ARRAY(...))`: each
        // subquery runs once (see the note above `claim_every` in store/postgres.rs).
        take_confirming: "UPDATE jobs SET confirm_at = $1
             WHERE id = ANY(ARRAY(
                 SELECT id FROM jobs
                 WHERE state = 'confirming' AND provider = $2 AND account = $3
                   AND confirm_at <= $4
                   AND coalesce(confirm_request_id, '') = ANY(ARRAY(
                       SELECT coalesce(confirm_request_id, '') FROM jobs
                       WHERE state = 'confirming' AND provider = $2 AND account = $3
                         AND confirm_at <= $4
                       GROUP BY 1 ORDER BY MIN(confirm_at) LIMIT $5))
                 FOR UPDATE SKIP LOCKED))
               AND state = 'confirming' AND confirm_at <= $4
             RETURNING id, action, coalesce(served_by_dir, target) AS target, attempts,
                       created_at, accepted_at, confirm_request_id, confirm_at",
        link_query_jobs: "INSERT INTO call_jobs (call_id, job_id)
             SELECT $1, j.id FROM jobs j WHERE j.id = ANY($2)",
        wait_by_filter: "SELECT state, COUNT(*) AS n FROM jobs
             WHERE ($1::text IS NULL OR tag = $1) AND ($2::bigint IS NULL OR created_at >= $2)
               AND ($3::text IS NULL OR account = $3)
             GROUP BY state",
        wait_by_ids: "SELECT state, COUNT(*) AS n FROM jobs WHERE id = ANY($1) GROUP BY state",
    };

    confirm_statements!();

    async fn update_confirming(&self, tx: &mut Tx<Self>, rec: &ConfirmRecord) -> Changed {
        let mut cols = Columns::default();
        for job in &rec.jobs {
            cols.push(confirm_row(job));
        }
        let query = sqlx::query(concat!(
            "UPDATE jobs SET ",
            confirm_set!(),
            "
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
        .bind(rec.now);
        let done = query.execute(&mut **tx).await.map_err(sql_err)?;
        Ok(done.rows_affected())
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
