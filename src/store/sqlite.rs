//! The embedded SQLite backend.
//!
//! Connection settings live in one place ([`SqliteStore::open`]): WAL, a busy timeout and foreign keys,
//! with `synchronous=FULL` for producers (an accepted job survives a power cut) and `NORMAL` for
//! the worker (it can redo a lost record; its leases expire). Every write transaction starts with
//! `BEGIN IMMEDIATE`: a deferred transaction that reads and then writes fails at once with
//! `SQLITE_BUSY_SNAPSHOT` under WAL, busy timeout or not. Statements carry many rows at once
//! through `json_each` over one bound JSON array, because each sqlx-sqlite statement is a round
//! trip to a worker thread.

use std::path::Path;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::backend::{Backend, CLAIM_PAGE, Pause, ReadyRow, Tx, Verb, encode, update_row};
use super::guard;
use super::rows;
use super::{
    CachedToken, Call, CallEnd, ClaimRequest, ClaimedJob, Durability, Gate, Job, JobFilter,
    JobUpdate, NewCall, NewJobs, OpenOptions, Pruned, Selection, StateCount, StoreError,
};
use crate::model::{Action, JobState, Lane, Provider};

/// The queue's SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// Maps SQLite's lock and permission failures to errors an operator can act on.
pub(super) fn sql_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        let primary = db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff);
        match primary {
            Some(5 | 6) => return StoreError::Busy,
            Some(8) => return StoreError::ReadOnly,
            Some(13) => return StoreError::DiskFull,
            _ => {}
        }
    }
    StoreError::Sql(e)
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl SqliteStore {
    /// The pool, for the dashboard's reads (src/store/dashboard.rs).
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    /// The parent directory is created when missing.
    pub async fn open(path: &Path, options: &OpenOptions) -> Result<SqliteStore, StoreError> {
        let shown = path.display().to_string();
        guard::refuse_special_file(path)?;
        guard::refuse_foreign_sqlite(path).await?;
        // A database not created yet is created as before (`status` then shows an empty queue).
        if options.read_only && std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            let pool = guard::open_sqlite_read_only(path, options.busy_timeout, &MIGRATOR).await?;
            return Ok(SqliteStore { pool });
        }
        prepare_files(path)?;
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match options.durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .connect_with(connect)
            .await
            .map_err(|e| match sql_err(e) {
                StoreError::Sql(source) => diagnose_open(path).unwrap_or(StoreError::Open {
                    path: shown.clone(),
                    source,
                }),
                other => other,
            })?;
        let store = SqliteStore { pool };
        store.migrate(&shown).await?;
        Ok(store)
    }

    /// Applies pending migrations. Several processes may open a new database at once: a loser
    /// of that race sees the winner's tables and tries again until every migration is applied.
    async fn migrate(&self, shown: &str) -> Result<(), StoreError> {
        let mut tries = 0;
        loop {
            match MIGRATOR.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if tries < 20 => {
                    tracing::debug!(error = %e, "migration raced another process; retrying");
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(source) => {
                    return Err(StoreError::Migrate {
                        path: shown.to_owned(),
                        source,
                    });
                }
            }
        }
    }
}

impl Backend for SqliteStore {
    type Db = Sqlite;

    fn sql_err(e: sqlx::Error) -> StoreError {
        sql_err(e)
    }

    async fn begin(&self) -> Result<Tx<Self>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sql_err)
    }

    async fn insert_jobs(
        &self,
        tx: &mut Tx<Self>,
        jobs: &NewJobs,
        now: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let done = sqlx::query(
            "INSERT INTO jobs (provider, account, action, target, tag, state, attempts, next_at, \
                               created_at, updated_at)
             SELECT ?1, ?2, ?3, value, ?4, 'queued', 0, ?5, ?6, ?6 FROM json_each(?7)",
        )
        .bind(jobs.provider.as_str())
        .bind(&jobs.account)
        .bind(jobs.action.as_str())
        .bind(&jobs.tag)
        .bind(jobs.not_before)
        .bind(now)
        .bind(encode(&jobs.targets)?)
        .execute(&mut **tx)
        .await
        .map_err(sql_err)?;
        // N.B. One INSERT under the write lock into a rowid table gives consecutive rowids
        // (max(rowid)+1 each), so the ids are the range ending at the last one.
        let last = done.last_insert_rowid();
        let n = i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
        Ok((last - n + 1..=last).collect())
    }

    async fn after_bulk_insert(&self, _rows: usize) -> Result<(), StoreError> {
        // SQLite's statistics are refreshed by `PRAGMA optimize` when a worker starts.
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
        // N.B. One MIN per provider, each answered from the `jobs_ready` index's first row.
        sqlx::query_scalar(
            "SELECT MIN(m) FROM (SELECT (SELECT MIN(created_at) FROM jobs
                                          WHERE state = 'queued' AND provider = p.value) AS m
                                 FROM json_each(?1) p)",
        )
        .bind(encode(
            &Provider::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        )?)
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
            sqlx::query("SELECT * FROM lanes WHERE provider = ?1 AND account = ?2 AND action = ?3")
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
             WHERE (?1 IS NULL OR state = ?1)
               AND (?2 IS NULL OR provider = ?2)
               AND (?3 IS NULL OR tag = ?3)
               AND (?4 IS NULL OR instr(target, ?4) > 0)
               AND (?5 IS NULL OR updated_at >= ?5)
             ORDER BY id DESC
             LIMIT ?6"
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
            " FROM jobs WHERE id = ?1"
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
             WHERE cj.job_id = ?1 ORDER BY c.id",
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
                   AND (?1 IS NULL OR provider = ?1) AND (?2 IS NULL OR tag = ?2) ORDER BY id"
            }
            Verb::Cancel => {
                "SELECT id FROM jobs WHERE state = 'queued'
                   AND (?1 IS NULL OR provider = ?1) AND (?2 IS NULL OR tag = ?2) ORDER BY id"
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
        // The transaction's write lock already keeps every row still.
        let rows = sqlx::query(concat!(
            "SELECT ",
            rows::job_columns!(),
            " FROM jobs WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id"
        ))
        .bind(encode(ids)?)
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
                "UPDATE jobs SET state = 'queued', attempts = 0, next_at = ?2, updated_at = ?2, \
                        finished_at = NULL, lease_owner = NULL, lease_expires_at = NULL
                 WHERE id IN (SELECT value FROM json_each(?1)) AND state IN ('failed', 'cancelled')"
            }
            Verb::Cancel => {
                "UPDATE jobs SET state = 'cancelled', updated_at = ?2, finished_at = ?2, \
                        last_error = 'cancelled by operator'
                 WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'queued'"
            }
        };
        sqlx::query(sql)
            .bind(encode(ids)?)
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
            " AND finished_at < ?1"
        ))
        .bind(before)
        .execute(&mut **tx)
        .await
        .map_err(sql_err)?
        .rows_affected();
        let calls = sqlx::query(
            "DELETE FROM calls WHERE started_at < ?1
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
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL, updated_at = ?1
             WHERE state = 'running' AND lease_expires_at < ?1",
        )
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(sql_err)?
        .rows_affected();
        tx.commit().await.map_err(sql_err)?;
        Ok(n)
    }

    async fn lock_lane(
        &self,
        _tx: &mut Tx<Self>,
        _req: &ClaimRequest,
        _action: Action,
    ) -> Result<(), StoreError> {
        // BEGIN IMMEDIATE holds the database's one write lock: no other claim runs meanwhile.
        Ok(())
    }

    async fn claim_every(
        &self,
        tx: &mut Tx<Self>,
        req: &ClaimRequest,
        action: Action,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let rows = sqlx::query(
            "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_expires_at = ?2, updated_at = ?3
             WHERE state = 'queued' AND provider = ?4 AND account = ?5 AND action = ?6 AND next_at <= ?3
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
             WHERE state = 'queued' AND provider = ?1 AND account = ?2 AND action = ?3 AND next_at <= ?4
               AND (next_at, id) > (?5, ?6)
             ORDER BY next_at, id LIMIT ?7",
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
        // N.B. `+next_at` keeps the planner off `jobs_ready` (a scan of the whole ready queue);
        // the chosen targets are looked up in `jobs_queued_target` instead.
        let rows = sqlx::query(
            "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_expires_at = ?2, updated_at = ?3
             WHERE state = 'queued' AND provider = ?4 AND account = ?5 AND action = ?6 AND +next_at <= ?3
               AND target IN (SELECT value FROM json_each(?7))
             RETURNING id, action, target, attempts",
        )
        .bind(&req.owner)
        .bind(req.lease_until)
        .bind(req.now)
        .bind(req.provider.as_str())
        .bind(&req.account)
        .bind(action.as_str())
        .bind(encode(targets)?)
        .fetch_all(&mut **tx)
        .await
        .map_err(sql_err)?;
        rows.iter().map(rows::claimed).collect()
    }

    async fn release(&self, owner: &str, ids: &[i64], now: i64) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL, updated_at = ?3
             WHERE state = 'running' AND lease_owner = ?1 AND id IN (SELECT value FROM json_each(?2))",
        )
        .bind(owner)
        .bind(encode(ids)?)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(sql_err)?
        .rows_affected();
        tx.commit().await.map_err(sql_err)?;
        Ok(n)
    }

    async fn renew_leases(
        &self,
        tx: &mut Tx<Self>,
        call: &NewCall,
    ) -> Result<(Vec<i64>, i64), StoreError> {
        // Read after BEGIN IMMEDIATE has the write lock: however long that took, the lease
        // runs from now.
        let now = crate::clock::now_ms();
        let mut held: Vec<i64> = sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at = ?1
             WHERE state = 'running' AND lease_owner = ?2 AND id IN (SELECT value FROM json_each(?3))
             RETURNING id",
        )
        .bind(crate::clock::add(now, call.lease))
        .bind(&call.worker)
        .bind(encode(&call.job_ids)?)
        .fetch_all(&mut **tx)
        .await
        .map_err(sql_err)?;
        held.sort_unstable();
        Ok((held, now))
    }

    async fn insert_call(
        &self,
        tx: &mut Tx<Self>,
        call: &NewCall,
        held: &[i64],
        now: i64,
    ) -> Result<i64, StoreError> {
        let ids = encode(held)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO calls (provider, account, operation, worker, target_count, started_at)
             SELECT ?1, ?2, ?3, ?4,
                    CASE WHEN ?5 THEN 1 ELSE COUNT(DISTINCT action || ' ' || coalesce(target, '')) END, ?6
             FROM jobs WHERE id IN (SELECT value FROM json_each(?7))
             RETURNING id",
        )
        .bind(call.provider.as_str())
        .bind(&call.account)
        .bind(call.operation)
        .bind(&call.worker)
        .bind(call.account_wide)
        .bind(now)
        .bind(&ids)
        .fetch_one(&mut **tx)
        .await
        .map_err(sql_err)?;
        sqlx::query("INSERT INTO call_jobs (call_id, job_id) SELECT ?1, value FROM json_each(?2)")
            .bind(id)
            .bind(&ids)
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
            "UPDATE calls SET finished_at = ?2, http_status = ?3, provider_code = ?4, request_id = ?5,
                    trace_id = ?6, outcome = ?7, message = ?8
             WHERE id = ?1",
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
        let rows: Vec<_> = jobs.iter().map(update_row).collect();
        // N.B. Each row is a JSON array in `UpdateRow` order. The MATERIALIZED CTE makes
        // the planner loop over the updates and find each job by rowid; otherwise it loops
        // over every running job and re-parses the JSON for each.
        let done = sqlx::query(concat!(
            "WITH u AS MATERIALIZED (
                 SELECT value ->> 0 AS id, value ->> 1 AS state, value ->> 2 AS attempts,
                        value ->> 3 AS next_at, value ->> 4 AS request_id,
                        value ->> 5 AS provider_code, value ->> 6 AS last_error,
                        value ->> 7 AS confirm_at
                 FROM json_each(?1))
             UPDATE jobs SET
                 state = u.state,
                 attempts = u.attempts,
                 next_at = u.next_at,
                 request_id = coalesce(u.request_id, jobs.request_id),
                 provider_code = coalesce(u.provider_code, jobs.provider_code),
                 last_error = coalesce(u.last_error, jobs.last_error),
                 lease_owner = NULL,
                 lease_expires_at = NULL,
                 updated_at = ?2,
                 confirm_at = u.confirm_at,
                 confirm_request_id = CASE WHEN u.state = 'confirming' THEN u.request_id END,
                 accepted_at = CASE WHEN u.state IN ",
            super::accepted_states!(),
            " THEN ?2 ELSE jobs.accepted_at END,
                 finished_at = CASE WHEN u.state IN ",
            super::final_states!(),
            " THEN ?2 END
             FROM u
             WHERE jobs.id = u.id AND jobs.state = 'running' AND jobs.lease_owner = ?3"
        ))
        .bind(encode(&rows)?)
        .bind(now)
        .bind(owner)
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
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
            "SELECT MIN(next_at) FROM jobs WHERE state = 'queued' AND provider = ?1 AND account = ?2 AND action = ?3",
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
            "SELECT access_token, expires_at, obtained_at FROM tokens WHERE provider = ?1 AND account = ?2",
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
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO tokens (provider, account, access_token, expires_at, obtained_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (provider, account) DO UPDATE SET
                 access_token = excluded.access_token, expires_at = excluded.expires_at,
                 obtained_at = excluded.obtained_at",
        )
        .bind(provider.as_str())
        .bind(account)
        .bind(token.token.expose())
        .bind(token.expires_at)
        .bind(token.obtained_at)
        .execute(&mut *tx)
        .await
        .map_err(sql_err)?;
        tx.commit().await.map_err(sql_err)?;
        Ok(())
    }

    async fn optimize(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA optimize")
            .execute(&self.pool)
            .await
            .map_err(sql_err)?;
        Ok(())
    }

    async fn has_pending(&self, provider: Provider) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('queued', 'running', 'confirming') AND provider = ?1)",
        )
        .bind(provider.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(sql_err)
    }
}

/// Mode of a database directory purgeq creates: the owner and the group (the worker's user and
/// the producers who enqueue) may use it, nobody else; setgid so new files keep its group.
const DIR_MODE: u32 = 0o2770;
/// Mode of a database file purgeq creates: read-write for the owner and the group, nothing for
/// others. SQLite gives the `-wal` and `-shm` files the same mode.
const FILE_MODE: u32 = 0o660;

/// Creates the database's directory and file when missing, with [`DIR_MODE`] and [`FILE_MODE`]
/// whatever the umask, so a worker and a group of producers can share them. Existing ones are
/// left as they are: their modes are the operator's.
fn prepare_files(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let create_err = |p: &Path| {
        let p = p.display().to_string();
        move |source| StoreError::Create { path: p, source }
    };
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::create_dir_all(dir).map_err(create_err(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
            .map_err(create_err(dir))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))
            .map_err(create_err(path)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Create {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// SQLite reports a read-only file system as "unable to open database file" and a full disk,
/// while opening, as a "disk I/O error": try writing beside the database to name the cause.
fn diagnose_open(path: &Path) -> Option<StoreError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let probe = dir.join(format!(".purgeq-probe-{}", std::process::id()));
    let result = std::fs::write(&probe, b"probe");
    let _ = std::fs::remove_file(&probe);
    match result.err()?.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => {
            Some(StoreError::ReadOnly)
        }
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            Some(StoreError::DiskFull)
        }
        _ => None,
    }
}
