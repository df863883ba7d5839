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

use super::backend::{Backend, CLAIM_PAGE, Pause, ReadyRow, Tx, UpdateRow, Verb, update_row};
use super::rows;
use super::{
    CachedToken, Call, CallEnd, ClaimRequest, ClaimedJob, Gate, Job, JobFilter, JobUpdate, NewCall,
    NewJobs, OpenOptions, Pruned, Selection, StateCount, StoreError,
};
use crate::model::{Action, JobState, Lane, Provider};

/// An enqueue of at least this many jobs refreshes the planner's statistics.
const ANALYZE_AFTER: usize = 10_000;

/// How long an operation waits for a pooled connection, e.g. while the server restarts.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The queue's PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
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
    /// The pool, for the dashboard's reads (src/store/dashboard.rs).
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
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
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(connect)
            .await
            .map_err(|source| StoreError::Connect {
                url: shown.clone(),
                source,
            })?;
        let ours = super::guard::refuse_foreign_pg(&pool, &shown).await?;
        if options.read_only && ours {
            super::guard::check_pg_schema(&pool, &shown, &MIGRATOR).await?;
            return Ok(PgStore { pool });
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
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: shown,
                source,
            })?;
        Ok(PgStore { pool })
    }
}

impl Backend for PgStore {
    type Db = Postgres;

    fn sql_err(e: sqlx::Error) -> StoreError {
        sql_err(e)
    }

    async fn begin(&self) -> Result<Tx<Self>, StoreError> {
        self.pool.begin().await.map_err(sql_err)
    }

    async fn insert_jobs(
        &self,
        tx: &mut Tx<Self>,
        jobs: &NewJobs,
        now: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO jobs (provider, account, action, target, tag, state, attempts, next_at,
                               created_at, updated_at)
             SELECT $1, $2, $3, t, $4, 'queued', 0, $5, $6, $6
             FROM unnest($7::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n
             RETURNING id",
        )
        .bind(jobs.provider.as_str())
        .bind(&jobs.account)
        .bind(jobs.action.as_str())
        .bind(&jobs.tag)
        .bind(jobs.not_before)
        .bind(now)
        .bind(&jobs.targets)
        .fetch_all(&mut **tx)
        .await
        .map_err(sql_err)?;
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

    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT provider, state, n FROM job_counts WHERE n <> 0 ORDER BY provider, state",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err)?;
        rows.iter().map(rows::state_count).collect()
    }

    async fn oldest_queued(&self) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT MIN(m) FROM (
                 SELECT (SELECT MIN(created_at) FROM jobs WHERE state = 'queued' AND provider = p) AS m
                 FROM unnest($1::text[]) AS p) AS per_provider",
        )
        .bind(Provider::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>())
        .fetch_one(&self.pool)
        .await
        .map_err(sql_err)
    }

    async fn gates(&self) -> Result<Vec<Gate>, StoreError> {
        let rows = sqlx::query("SELECT * FROM lanes ORDER BY provider, account, action")
            .fetch_all(&self.pool)
            .await
            .map_err(sql_err)?;
        rows.iter().map(rows::gate).collect()
    }

    async fn gate(&self, lane: &Lane) -> Result<Option<Gate>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM lanes WHERE provider = $1 AND account = $2 AND action = $3")
                .bind(lane.provider.as_str())
                .bind(&lane.account)
                .bind(lane.action.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(sql_err)?;
        row.as_ref().map(rows::gate).transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            rows::job_columns!(),
            " FROM jobs
             WHERE ($1::text IS NULL OR state = $1)
               AND ($2::text IS NULL OR provider = $2)
               AND ($3::text IS NULL OR tag = $3)
               AND ($4::text IS NULL OR strpos(target, $4) > 0)
               AND ($5::bigint IS NULL OR updated_at >= $5)
             ORDER BY id DESC
             LIMIT $6"
        ))
        .bind(filter.state.map(JobState::as_str))
        .bind(filter.provider.map(Provider::as_str))
        .bind(&filter.tag)
        .bind(&filter.url_contains)
        .bind(filter.updated_since)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err)?;
        rows.iter().map(rows::job).collect()
    }

    async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            rows::job_columns!(),
            " FROM jobs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_err)?;
        row.as_ref().map(rows::job).transpose()
    }

    async fn job_calls(&self, id: i64) -> Result<Vec<Call>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.* FROM calls c JOIN call_jobs cj ON cj.call_id = c.id
             WHERE cj.job_id = $1 ORDER BY c.id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err)?;
        rows.iter().map(rows::call).collect()
    }

    async fn verb_candidates(
        &self,
        tx: &mut Tx<Self>,
        verb: Verb,
        selection: &Selection,
    ) -> Result<Vec<i64>, StoreError> {
        let sql = match verb {
            Verb::Retry => {
                "SELECT id FROM jobs WHERE state IN ('failed', 'cancelled')
                   AND ($1::text IS NULL OR provider = $1) AND ($2::text IS NULL OR tag = $2)
                 ORDER BY id FOR UPDATE"
            }
            Verb::Cancel => {
                "SELECT id FROM jobs WHERE state = 'queued'
                   AND ($1::text IS NULL OR provider = $1) AND ($2::text IS NULL OR tag = $2)
                 ORDER BY id FOR UPDATE"
            }
        };
        sqlx::query_scalar(sql)
            .bind(selection.provider.map(Provider::as_str))
            .bind(&selection.tag)
            .fetch_all(&mut **tx)
            .await
            .map_err(sql_err)
    }

    async fn lock_jobs(&self, tx: &mut Tx<Self>, ids: &[i64]) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            rows::job_columns!(),
            " FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE"
        ))
        .bind(ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(sql_err)?;
        rows.iter().map(rows::job).collect()
    }

    async fn apply_verb(
        &self,
        tx: &mut Tx<Self>,
        verb: Verb,
        ids: &[i64],
        now: i64,
    ) -> Result<(), StoreError> {
        let sql = match verb {
            Verb::Retry => {
                "UPDATE jobs SET state = 'queued', attempts = 0, next_at = $2, updated_at = $2,
                        finished_at = NULL, lease_owner = NULL, lease_expires_at = NULL
                 WHERE id = ANY($1::bigint[]) AND state IN ('failed', 'cancelled')"
            }
            Verb::Cancel => {
                "UPDATE jobs SET state = 'cancelled', updated_at = $2, finished_at = $2,
                        last_error = 'cancelled by operator'
                 WHERE id = ANY($1::bigint[]) AND state = 'queued'"
            }
        };
        sqlx::query(sql)
            .bind(ids)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(sql_err)?;
        Ok(())
    }

    async fn delete_before(&self, tx: &mut Tx<Self>, before: i64) -> Result<Pruned, StoreError> {
        let jobs = sqlx::query(concat!(
            "DELETE FROM jobs WHERE state IN ",
            super::final_states!(),
            " AND finished_at < $1"
        ))
        .bind(before)
        .execute(&mut **tx)
        .await
        .map_err(sql_err)?
        .rows_affected();
        let calls = sqlx::query(
            "DELETE FROM calls WHERE started_at < $1
               AND NOT EXISTS (SELECT 1 FROM call_jobs cj WHERE cj.call_id = calls.id)",
        )
        .bind(before)
        .execute(&mut **tx)
        .await
        .map_err(sql_err)?
        .rows_affected();
        Ok(Pruned { jobs, calls })
    }

    async fn requeue_expired(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL, updated_at = $1
             WHERE state = 'running' AND lease_expires_at < $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(sql_err)?;
        Ok(done.rows_affected())
    }

    async fn lock_lane(
        &self,
        tx: &mut Tx<Self>,
        req: &ClaimRequest,
        action: Action,
    ) -> Result<(), StoreError> {
        let lane = format!("purgeq/{}/{}/{action}", req.provider, req.account);
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&lane)
            .execute(&mut **tx)
            .await
            .map_err(sql_err)?;
        Ok(())
    }

    async fn claim_every(
        &self,
        tx: &mut Tx<Self>,
        req: &ClaimRequest,
        action: Action,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let rows = sqlx::query(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, updated_at = $3
             WHERE id IN (SELECT id FROM jobs
                          WHERE state = 'queued' AND provider = $4 AND account = $5 AND action = $6
                            AND next_at <= $3
                          FOR UPDATE SKIP LOCKED)
             RETURNING id, action, target, attempts",
        )
        .bind(&req.owner)
        .bind(req.lease_until)
        .bind(req.now)
        .bind(req.provider.as_str())
        .bind(&req.account)
        .bind(action.as_str())
        .fetch_all(&mut **tx)
        .await
        .map_err(sql_err)?;
        rows.iter().map(rows::claimed).collect()
    }

    async fn ready_page(
        &self,
        tx: &mut Tx<Self>,
        req: &ClaimRequest,
        action: Action,
        after: (i64, i64),
    ) -> Result<Vec<ReadyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, next_at, target FROM jobs
             WHERE state = 'queued' AND provider = $1 AND account = $2 AND action = $3 AND next_at <= $4
               AND (next_at, id) > ($5, $6)
             ORDER BY next_at, id LIMIT $7",
        )
        .bind(req.provider.as_str())
        .bind(&req.account)
        .bind(action.as_str())
        .bind(req.now)
        .bind(after.0)
        .bind(after.1)
        .bind(CLAIM_PAGE)
        .fetch_all(&mut **tx)
        .await
        .map_err(sql_err)?;
        rows.iter().map(rows::ready).collect()
    }

    async fn claim_targets(
        &self,
        tx: &mut Tx<Self>,
        req: &ClaimRequest,
        action: Action,
        targets: &[String],
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let rows = sqlx::query(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, updated_at = $3
             WHERE id IN (SELECT id FROM jobs
                          WHERE state = 'queued' AND provider = $4 AND account = $5 AND action = $6
                            AND next_at <= $3 AND target = ANY($7::text[])
                          FOR UPDATE SKIP LOCKED)
             RETURNING id, action, target, attempts",
        )
        .bind(&req.owner)
        .bind(req.lease_until)
        .bind(req.now)
        .bind(req.provider.as_str())
        .bind(&req.account)
        .bind(action.as_str())
        .bind(targets)
        .fetch_all(&mut **tx)
        .await
        .map_err(sql_err)?;
        rows.iter().map(rows::claimed).collect()
    }

    async fn release(&self, owner: &str, ids: &[i64], now: i64) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL, updated_at = $3
             WHERE state = 'running' AND lease_owner = $1 AND id = ANY($2::bigint[])",
        )
        .bind(owner)
        .bind(ids)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(sql_err)?;
        Ok(done.rows_affected())
    }

    async fn renew_leases(
        &self,
        tx: &mut Tx<Self>,
        call: &NewCall,
    ) -> Result<(Vec<i64>, i64), StoreError> {
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
                .bind(crate::clock::add(now, call.lease))
                .bind(&held)
                .execute(&mut **tx)
                .await
                .map_err(sql_err)?;
        }
        Ok((held, now))
    }

    async fn insert_call(
        &self,
        tx: &mut Tx<Self>,
        call: &NewCall,
        held: &[i64],
        now: i64,
    ) -> Result<i64, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO calls (provider, account, operation, worker, target_count, started_at)
             SELECT $1, $2, $3, $4,
                    CASE WHEN $5 THEN 1 ELSE COUNT(DISTINCT action || ' ' || coalesce(target, '')) END, $6
             FROM jobs WHERE id = ANY($7::bigint[])
             RETURNING id",
        )
        .bind(call.provider.as_str())
        .bind(&call.account)
        .bind(call.operation)
        .bind(&call.worker)
        .bind(call.account_wide)
        .bind(now)
        .bind(held)
        .fetch_one(&mut **tx)
        .await
        .map_err(sql_err)?;
        sqlx::query("INSERT INTO call_jobs (call_id, job_id) SELECT $1, unnest($2::bigint[])")
            .bind(id)
            .bind(held)
            .execute(&mut **tx)
            .await
            .map_err(sql_err)?;
        Ok(id)
    }

    async fn finish_call(
        &self,
        tx: &mut Tx<Self>,
        call: &CallEnd,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE calls SET finished_at = $2, http_status = $3, provider_code = $4, request_id = $5,
                    trace_id = $6, outcome = $7, message = $8
             WHERE id = $1",
        )
        .bind(call.call_id)
        .bind(now)
        .bind(call.http_status.map(i64::from))
        .bind(call.provider_code)
        .bind(&call.request_id)
        .bind(&call.trace_id)
        .bind(call.outcome)
        .bind(&call.message)
        .execute(&mut **tx)
        .await
        .map_err(sql_err)?;
        Ok(())
    }

    async fn update_jobs(
        &self,
        tx: &mut Tx<Self>,
        owner: &str,
        now: i64,
        jobs: &[JobUpdate],
    ) -> Result<u64, StoreError> {
        // One bound array per column of `UPDATE_COLUMNS`, zipped back into rows by unnest.
        let mut cols = UpdateColumns::default();
        for job in jobs {
            cols.push(update_row(job));
        }
        let done = sqlx::query(concat!(
            "UPDATE jobs SET
                 state = u.state,
                 attempts = u.attempts,
                 next_at = u.next_at,
                 request_id = coalesce(u.request_id, jobs.request_id),
                 provider_code = coalesce(u.provider_code, jobs.provider_code),
                 last_error = coalesce(u.last_error, jobs.last_error),
                 lease_owner = NULL,
                 lease_expires_at = NULL,
                 updated_at = $8,
                 confirm_at = u.confirm_at,
                 confirm_request_id = CASE WHEN u.state = 'confirming' THEN u.request_id END,
                 accepted_at = CASE WHEN u.state IN ",
            super::accepted_states!(),
            " THEN $8 ELSE jobs.accepted_at END,
                 finished_at = CASE WHEN u.state IN ",
            super::final_states!(),
            " THEN $8 END
             FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[],
                         $6::bigint[], $7::text[], $10::bigint[])
                  AS u(id, state, attempts, next_at, request_id, provider_code, last_error,
                       confirm_at)
             WHERE jobs.id = u.id AND jobs.state = 'running' AND jobs.lease_owner = $9"
        ))
        .bind(cols.id)
        .bind(cols.state)
        .bind(cols.attempts)
        .bind(cols.next_at)
        .bind(cols.request_id)
        .bind(cols.provider_code)
        .bind(cols.last_error)
        .bind(now)
        .bind(owner)
        .bind(cols.confirm_at)
        .execute(&mut **tx)
        .await
        .map_err(sql_err)?;
        Ok(done.rows_affected())
    }

    async fn upsert_pause(
        &self,
        tx: &mut Tx<Self>,
        pause: &Pause<'_>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO lanes (provider, account, action, paused_until, strikes, reason, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (provider, account, action) DO UPDATE SET
                 paused_until = excluded.paused_until, strikes = excluded.strikes,
                 reason = excluded.reason, updated_at = excluded.updated_at",
        )
        .bind(pause.lane.provider.as_str())
        .bind(&pause.lane.account)
        .bind(pause.lane.action.as_str())
        .bind(pause.until)
        .bind(pause.strikes)
        .bind(pause.reason)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(sql_err)?;
        Ok(())
    }

    async fn upsert_quota(
        &self,
        tx: &mut Tx<Self>,
        lane: &Lane,
        quota_day: i64,
        surplus_day: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO lanes (provider, account, action, quota_day, surplus_day, quota_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (provider, account, action) DO UPDATE SET
                 quota_day = excluded.quota_day, surplus_day = excluded.surplus_day,
                 quota_at = excluded.quota_at, updated_at = excluded.updated_at",
        )
        .bind(lane.provider.as_str())
        .bind(&lane.account)
        .bind(lane.action.as_str())
        .bind(quota_day)
        .bind(surplus_day)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(sql_err)?;
        Ok(())
    }

    async fn next_due(&self, lane: &Lane) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT MIN(next_at) FROM jobs WHERE state = 'queued' AND provider = $1 AND account = $2 AND action = $3",
        )
        .bind(lane.provider.as_str())
        .bind(&lane.account)
        .bind(lane.action.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(sql_err)
    }

    async fn token(
        &self,
        provider: Provider,
        account: &str,
    ) -> Result<Option<CachedToken>, StoreError> {
        let row = sqlx::query(
            "SELECT access_token, expires_at, obtained_at FROM tokens WHERE provider = $1 AND account = $2",
        )
        .bind(provider.as_str())
        .bind(account)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_err)?;
        row.as_ref().map(rows::token).transpose()
    }

    async fn save_token(
        &self,
        provider: Provider,
        account: &str,
        token: &CachedToken,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tokens (provider, account, access_token, expires_at, obtained_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (provider, account) DO UPDATE SET
                 access_token = excluded.access_token, expires_at = excluded.expires_at,
                 obtained_at = excluded.obtained_at",
        )
        .bind(provider.as_str())
        .bind(account)
        .bind(token.token.expose())
        .bind(token.expires_at)
        .bind(token.obtained_at)
        .execute(&self.pool)
        .await
        .map_err(sql_err)?;
        Ok(())
    }

    async fn optimize(&self) -> Result<(), StoreError> {
        sqlx::query("ANALYZE jobs")
            .execute(&self.pool)
            .await
            .map_err(sql_err)?;
        Ok(())
    }

    async fn has_pending(&self, provider: Provider) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('queued', 'running', 'confirming') AND provider = $1)",
        )
        .bind(provider.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(sql_err)
    }
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
    confirm_at: Vec<Option<i64>>,
}

impl<'a> UpdateColumns<'a> {
    fn push(&mut self, row: UpdateRow<'a>) {
        let (id, state, attempts, next_at, request_id, provider_code, last_error, confirm_at) = row;
        self.id.push(id);
        self.state.push(state);
        self.attempts.push(attempts);
        self.next_at.push(next_at);
        self.request_id.push(request_id);
        self.provider_code.push(provider_code);
        self.last_error.push(last_error);
        self.confirm_at.push(confirm_at);
    }
}
