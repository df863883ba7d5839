//! The PostgreSQL backend, for fleets whose producers and workers run on several hosts.
//!
//! Same tables, states and guarantees as the SQLite backend (see the module docs of
//! [`super`]). What differs is how concurrent workers are kept apart: a claim takes a
//! transaction-scoped advisory lock on its lane, so two workers never pick the same targets,
//! and locks the chosen rows with `FOR UPDATE SKIP LOCKED`, so a row another transaction holds
//! (an operator's `cancel`, a worker recording an outcome) is passed over instead of waited
//! for. The lock lasts the claim's transaction, milliseconds, never a provider call. The token
//! cache and lane gates live in the database, so the whole fleet shares one token and one pause.
//! Many rows travel in one statement as bound arrays (`unnest`) or one JSON document
//! (`jsonb_to_recordset`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::backend::{
    Backend, Claimed, Dialect, Done, Held, Ids, LaneClaim, Pause, Query, Quota, Span, Targets, Tx,
    UpdateRow, Verb, update_row,
};
use super::dashboard::JobPage;
use super::rows;
use super::statements::{
    cancel_set, claim_set, insert_call_head, insert_jobs_head, next_targets, retry_set,
    shared_statements, update_set,
};
use super::{
    AccountCount, CachedToken, Call, CallEnd, Gate, Job, NewCall, NewJobs, OpenOptions, Pruned,
    Record, Selection, StateCount, StoreError,
};
use crate::model::{JobState, Lane, Provider};

/// An enqueue of at least this many jobs refreshes the planner's statistics.
const ANALYZE_AFTER: usize = 10_000;

/// How long an operation waits for a pooled connection, e.g. while the server restarts.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The queue's PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// How its connections are made, for the wake-up listener's own connection.
    connect: PgConnectOptions,
}

/// `url` with its password replaced, for messages.
pub(super) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Setting a password only fails for URLs that cannot have one.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(an unparseable postgres URL)".to_owned(),
    }
}

/// Maps PostgreSQL's read-only and disk-full conditions to errors an operator can act on.
pub(super) fn sql_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        match db.code().as_deref() {
            Some("25006") => return StoreError::ReadOnly,
            Some("53100") => return StoreError::DiskFull,
            Some("55P03") => return StoreError::Busy,
            _ => {}
        }
    }
    StoreError::Sql(e)
}

impl PgStore {
    /// Closes the pool's connections.
    pub(super) async fn close(self) {
        self.pool.close().await;
    }

    /// Connects to the database at `url` and applies pending migrations (under the migrator's
    /// advisory lock, so several hosts may start at once).
    pub async fn connect(url: &str, options: &OpenOptions) -> Result<PgStore, StoreError> {
        let shown = redact(url);
        let connect = PgConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
            url: shown.clone(),
            source,
        })?;
        // A read-only open (status) of an existing queue can't write, whatever it runs; an
        // empty database is created as before.
        let connect = if options.read_only {
            connect.options([("default_transaction_read_only", "on")])
        } else {
            connect
        };
        let pool = super::pool_options(PgPoolOptions::new())
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(connect.clone())
            .await
            .map_err(|source| StoreError::Connect {
                url: shown.clone(),
                source,
            })?;
        let ours = super::guard::refuse_foreign_pg(&pool, &shown).await?;
        if options.read_only && ours {
            super::guard::check_pg_schema(&pool, &shown, &MIGRATOR).await?;
            return Ok(PgStore { pool, connect });
        }
        if options.read_only {
            // An empty database: created (migrated) as before, so `status` shows an empty queue.
            pool.close().await;
            let writable = OpenOptions {
                read_only: false,
                ..*options
            };
            return Box::pin(Self::connect(url, &writable)).await;
        }
        // A current schema needs no migrator run (one read tells).
        if !ours || super::guard::pg_applied(&pool).await != super::guard::newest(&MIGRATOR) {
            MIGRATOR
                .run(&pool)
                .await
                .map_err(|source| StoreError::Migrate {
                    path: shown,
                    source,
                })?;
        }
        Ok(PgStore { pool, connect })
    }

    /// The pool, for the confirmation statements (src/store/confirm/postgres.rs).
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts the wake-up listener (see `store/wake.rs`) until `stop`.
    pub(super) fn wake(&self, stop: tokio_util::sync::CancellationToken) -> super::Wake {
        super::wake::postgres(self.connect.clone(), stop)
    }
}

impl PgStore {
    /// Many values as one bound parameter: an array, read by `ANY` or `unnest`.
    pub(super) fn list<T>(values: &[T]) -> Result<&[T], StoreError> {
        Ok(values)
    }
}

impl Backend for PgStore {
    type Db = Postgres;

    const SQL: Dialect = Dialect {
        oldest_queued: "SELECT MIN(m) FROM (
                            SELECT (SELECT MIN(created_at) FROM jobs
                                    WHERE state = 'queued' AND provider = p) AS m
                            FROM unnest($1::text[]) AS p) AS per_provider",
        job_page: concat!(
            "SELECT ",
            rows::job_columns!(),
            " FROM jobs
             WHERE ($1::text IS NULL OR state = $1)
               AND ($2::text IS NULL OR provider = $2)
               AND ($3::text IS NULL OR tag = $3)
               AND ($4::text IS NULL OR strpos(target, $4) > 0)
               AND ($5::bigint IS NULL OR updated_at >= $5)
               AND ($6::bigint IS NULL OR id < $6)
               AND ($8::text IS NULL OR account = $8)
             ORDER BY id DESC
             LIMIT $7"
        ),
        retry_candidates: "SELECT id FROM jobs WHERE state IN ('failed', 'cancelled')
                             AND ($1::text IS NULL OR provider = $1)
                             AND ($2::text IS NULL OR tag = $2)
                             AND ($3::text IS NULL OR account = $3)
                           ORDER BY id FOR UPDATE",
        cancel_candidates: "SELECT id FROM jobs WHERE state = 'queued'
                              AND ($1::text IS NULL OR provider = $1)
                              AND ($2::text IS NULL OR tag = $2)
                              AND ($3::text IS NULL OR account = $3)
                            ORDER BY id FOR UPDATE",
        lock_jobs: concat!(
            "SELECT ",
            rows::job_columns!(),
            " FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE"
        ),
        retry: concat!(
            retry_set!(),
            " WHERE id = ANY($1::bigint[]) AND state IN ('failed', 'cancelled')"
        ),
        cancel: concat!(
            cancel_set!(),
            " WHERE id = ANY($1::bigint[]) AND state = 'queued'"
        ),
        prioritize: "UPDATE jobs SET priority = $3, updated_at = $2
                     WHERE id = ANY($1::bigint[]) AND state = 'queued'",
        // N.B. The claims (and `take_confirming`) pick their rows as `id = ANY(ARRAY(...))`:
        // the subquery is an InitPlan, run once. As `id IN (...)` a plan made while the table
        // was nearly empty (a prepared statement's generic plan, kept until the next ANALYZE)
        // ran the locking subquery again for every row of the table: with 6,000 jobs one take
        // ran for 94 s, and the worker looked hung (the PostgreSQL soak, seed 1001).
        claim_every: concat!(
            claim_set!(),
            "
                      WHERE id = ANY(ARRAY(SELECT id FROM jobs
                                           WHERE state = 'queued' AND provider = $4
                                             AND account = $5 AND action = $6 AND next_at <= $3
                                           FOR UPDATE SKIP LOCKED))
                      RETURNING id, action, target, attempts"
        ),
        claim_targets: concat!(
            claim_set!(),
            "
                        WHERE id = ANY(ARRAY(SELECT id FROM jobs
                                             WHERE state = 'queued' AND provider = $4
                                               AND account = $5 AND action = $6
                                               AND next_at <= $3 AND target = ANY($7::text[])
                                             FOR UPDATE SKIP LOCKED))
                        RETURNING id, action, target, attempts"
        ),
        claim_next: concat!(
            claim_set!(),
            "
                     WHERE id = ANY(ARRAY(SELECT id FROM jobs
                                          WHERE state = 'queued' AND provider = $4
                                            AND account = $5 AND action = $6 AND next_at <= $3
                                            AND target = ANY(ARRAY(",
            next_targets!("next_at"),
            "))
                                          FOR UPDATE SKIP LOCKED))
                     RETURNING id, action, target, attempts"
        ),
        release: "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                                  updated_at = $3
                  WHERE state = 'running' AND lease_owner = $1 AND id = ANY($2::bigint[])",
        insert_call: concat!(
            insert_call_head!(),
            "WHERE id = ANY($7::bigint[]) RETURNING id"
        ),
        link_call_jobs: "INSERT INTO call_jobs (call_id, job_id) SELECT $1, unnest($2::bigint[])",
        finish_times: "SELECT finished_at - created_at FROM jobs
                       WHERE finished_at >= $1 AND finished_at IS NOT NULL AND state = 'succeeded'
                       ORDER BY finished_at DESC LIMIT $2",
        optimize: "ANALYZE jobs",
        // Delivered when the transaction commits, and not at all if it rolls back.
        notify_ready: Some("SELECT pg_notify($1, '')"),
        insert_jobs: concat!(
            insert_jobs_head!(),
            "t, $4, 'queued', 0, $5, $6, $6, $8
             FROM unnest($7::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n
             RETURNING id"
        ),
    };

    fn sql_err(e: sqlx::Error) -> StoreError {
        sql_err(e)
    }

    async fn begin(&self) -> Result<Tx<Self>, StoreError> {
        let tx = self.pool.begin().await.map_err(sql_err)?;
        Ok(Tx::new(tx, None))
    }

    async fn insert_jobs(&self, tx: &mut Tx<Self>, jobs: &NewJobs, now: i64) -> Ids {
        let query = Self::insert_query(jobs, now)
            .bind(&jobs.targets)
            .bind(jobs.priority.rank());
        let rows = query.fetch_all(&mut **tx).await.map_err(sql_err)?;
        let mut ids = rows
            .iter()
            .map(|row| rows::Columns::int(row, "id"))
            .collect::<Ids>()?;
        ids.sort_unstable();
        Ok(ids)
    }

    async fn after_bulk_insert(&self, rows: usize) -> Result<(), StoreError> {
        // A bulk insert into a young table leaves the planner without statistics until
        // autovacuum comes by; until then claims scan every queued row instead of the indexes.
        if rows >= ANALYZE_AFTER {
            self.optimize().await?;
        }
        Ok(())
    }

    async fn lock_lane(&self, tx: &mut Tx<Self>, lane: LaneClaim<'_>) -> Result<(), StoreError> {
        let key = format!(
            "purgeq/{}/{}/{}",
            lane.req.provider, lane.req.account, lane.action
        );
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&key)
            .execute(&mut **tx)
            .await
            .map_err(sql_err)?;
        Ok(())
    }

    async fn renew_leases(
        &self,
        tx: &mut Tx<Self>,
        call: &NewCall,
        lease: std::time::Duration,
    ) -> Result<Held, StoreError> {
        let mut held: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state = 'running' AND lease_owner = $1 AND id = ANY($2::bigint[])
             ORDER BY id FOR UPDATE",
        )
        .bind(&call.worker)
        .bind(&call.job_ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(sql_err)?;
        held.sort_unstable();
        // Read once the rows are locked: however long that took, the lease runs from now.
        let now = crate::clock::now_ms();
        if !held.is_empty() {
            sqlx::query("UPDATE jobs SET lease_expires_at = $1 WHERE id = ANY($2::bigint[])")
                .bind(crate::clock::add(now, lease))
                .bind(&held)
                .execute(&mut **tx)
                .await
                .map_err(sql_err)?;
        }
        Ok(Held { ids: held, now })
    }

    async fn update_jobs(&self, tx: &mut Tx<Self>, rec: &Record) -> Result<u64, StoreError> {
        // One bound array per column of `UPDATE_COLUMNS`, zipped back into rows by unnest.
        let mut cols = UpdateColumns::default();
        for job in &rec.jobs {
            cols.push(update_row(job));
        }
        let query = sqlx::query(concat!(
            "UPDATE jobs SET ",
            update_set!(),
            "
                 updated_at = $8,
                 accepted_at = CASE WHEN u.state IN ",
            super::accepted_states!(),
            " THEN $8 ELSE jobs.accepted_at END,
                 finished_at = CASE WHEN u.state IN ",
            super::final_states!(),
            " THEN $8 END
             FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[],
                         $6::bigint[], $7::text[], $10::text[], $11::bigint[])
                  AS u(id, state, attempts, next_at, request_id, provider_code, last_error,
                       served_by_dir, confirm_at)
             WHERE jobs.id = u.id AND jobs.state = 'running' AND jobs.lease_owner = $9"
        ))
        .bind(cols.id)
        .bind(cols.state)
        .bind(cols.attempts)
        .bind(cols.next_at)
        .bind(cols.request_id)
        .bind(cols.provider_code)
        .bind(cols.last_error)
        .bind(rec.now)
        .bind(&rec.owner)
        .bind(cols.served_by_dir)
        .bind(cols.confirm_at);
        let done = query.execute(&mut **tx).await.map_err(sql_err)?;
        Ok(done.rows_affected())
    }

    shared_statements!();
}

/// Job updates as one array per column, in `UpdateRow` order.
#[derive(Default)]
struct UpdateColumns<'a> {
    id: Vec<i64>,
    state: Vec<&'static str>,
    attempts: Vec<i64>,
    next_at: Vec<i64>,
    request_id: Vec<Option<&'a str>>,
    provider_code: Vec<Option<i64>>,
    last_error: Vec<Option<&'a str>>,
    served_by_dir: Vec<Option<&'a str>>,
    confirm_at: Vec<Option<i64>>,
}

impl<'a> UpdateColumns<'a> {
    fn push(&mut self, row: UpdateRow<'a>) {
        let (
            id,
            state,
            attempts,
            next_at,
            request_id,
            provider_code,
            last_error,
            served_by_dir,
            confirm_at,
        ) = row;
        self.id.push(id);
        self.state.push(state);
        self.attempts.push(attempts);
        self.next_at.push(next_at);
        self.request_id.push(request_id);
        self.provider_code.push(provider_code);
        self.last_error.push(last_error);
        self.served_by_dir.push(served_by_dir);
        self.confirm_at.push(confirm_at);
    }
}
