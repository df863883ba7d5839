//! Confirmation statements for SQLite: the texts that differ, and the fenced update.

use super::{CallId, Span};
use super::{
    Changed, ConfirmBackend, ConfirmDialect, ConfirmRecord, ConfirmRow, Confirming, NewQuery,
    TakeConfirmations, WaitSelection, confirm_row, confirm_set, confirm_statements,
};
use crate::model::{JobState, Provider};
use crate::store::backend::{Tx, encode};
use crate::store::rows;
use crate::store::sqlite::sql_err;
use crate::store::{SqliteStore, StoreError};

impl ConfirmBackend for SqliteStore {
    const CONFIRM_SQL: ConfirmDialect = ConfirmDialect {
        // BEGIN IMMEDIATE holds the write lock: no other worker takes the same jobs.
        // N.B. Whole requests: every due job of the first requests due, so one query answers
        // all of a request's jobs (jobs without a request id count as one request).
        take_confirming: "UPDATE jobs SET confirm_at = $1
             WHERE state = 'confirming' AND provider = $2 AND account = $3 AND confirm_at <= $4
               AND coalesce(confirm_request_id, '') IN (
                   SELECT coalesce(confirm_request_id, '') FROM jobs
                   WHERE state = 'confirming' AND provider = $2 AND account = $3
                     AND confirm_at <= $4
                   GROUP BY 1 ORDER BY MIN(confirm_at) LIMIT $5)
             RETURNING id, action, coalesce(served_by_dir, target) AS target, attempts,
                       created_at, accepted_at, confirm_request_id, confirm_at",
        link_query_jobs: "INSERT INTO call_jobs (call_id, job_id)
             SELECT $1, value FROM json_each($2) WHERE value IN (SELECT id FROM jobs)",
        wait_by_filter: "SELECT state, COUNT(*) AS n FROM jobs
             WHERE ($1 IS NULL OR tag = $1) AND ($2 IS NULL OR created_at >= $2)
               AND ($3 IS NULL OR account = $3)
             GROUP BY state",
        wait_by_ids: "SELECT state, COUNT(*) AS n FROM jobs
             WHERE id IN (SELECT value FROM json_each($1)) GROUP BY state",
    };

    confirm_statements!();

    async fn update_confirming(&self, tx: &mut Tx<Self>, rec: &ConfirmRecord) -> Changed {
        let rows: Vec<ConfirmRow<'_>> = rec.jobs.iter().map(confirm_row).collect();
        let query = sqlx::query(UPDATE_CONFIRMING)
            .bind(encode(&rows)?)
            .bind(rec.now);
        let done = query.execute(&mut **tx).await.map_err(sql_err)?;
        Ok(done.rows_affected())
    }
}

/// The fenced update of a confirmation's jobs: `$1` the rows (JSON arrays in `ConfirmRow`
/// order), `$2` now.
///
/// N.B. The `+` keeps the planner off the indexes of `state` and `confirm_at`, so it loops
/// over the updates and finds each job by rowid. Left to its statistics it once chose to
/// walk every confirming job (`jobs_state`) and scan the updates for each: a round over
/// 19,000 confirming jobs held the write lock for 1 to 2.5 s, and every other writer waited.
pub(in crate::store) const UPDATE_CONFIRMING: &str = concat!(
    "WITH u AS MATERIALIZED (
         SELECT value ->> 0 AS id, value ->> 1 AS fence, value ->> 2 AS state,
                value ->> 3 AS attempts, value ->> 4 AS next_at,
                value ->> 5 AS confirm_at, value ->> 6 AS confirmed_at,
                value ->> 7 AS cdn_detail, value ->> 8 AS last_error
         FROM json_each($1))
     UPDATE jobs SET ",
    confirm_set!(),
    "
         updated_at = $2,
         finished_at = CASE WHEN u.state IN ",
    crate::store::final_states!(),
    " THEN $2 END
     FROM u
     WHERE jobs.id = u.id AND +jobs.state = 'confirming' AND +jobs.confirm_at = u.fence"
);
