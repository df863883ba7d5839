//! The embedded SQLite backend.
//!
//! Connection settings live in one place ([`Store::open`]): WAL, a busy timeout and foreign keys,
//! with `synchronous=FULL` for producers (an accepted job survives a power cut) and `NORMAL` for
//! the worker (it can redo a lost record; its leases expire). Every write transaction starts with
//! `BEGIN IMMEDIATE`: a deferred transaction that reads and then writes fails at once with
//! `SQLITE_BUSY_SNAPSHOT` under WAL, busy timeout or not. Statements carry many rows at once
//! through `json_each` over one bound JSON array, because each sqlx-sqlite statement is a round
//! trip to a worker thread.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::rows::{self, Columns as _};
use super::{
    CachedToken, Call, ClaimRequest, ClaimedJob, Durability, Gate, GateChange, Job, JobFilter,
    JobUpdate, NewCall, NewJobs, OpenOptions, Pruned, Record, Selection, StartedCall, StateCount,
    StoreError, Summary, VerbResult,
};
use crate::model::{Action, JobState, Lane, Provider};
use crate::planner::DistinctTargets;

/// Rows read per page while looking for the next distinct targets of a lane.
const CLAIM_PAGE: i64 = 512;

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

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    // Serializing plain strings, integers and derived structs cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
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
        prepare_files(path)?;
        let options = SqliteConnectOptions::new()
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
            .max_connections(4)
            .connect_with(options)
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

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sql_err)
    }

    /// Inserts one job per target, all in one transaction, and returns their ids.
    pub async fn enqueue(&self, jobs: &NewJobs, now: i64) -> Result<Vec<i64>, StoreError> {
        if jobs.targets.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
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
        .bind(json(&jobs.targets))
        .execute(&mut *tx)
        .await
        .map_err(sql_err)?;
        tx.commit().await.map_err(sql_err)?;
        // N.B. One INSERT under the write lock into a rowid table gives consecutive rowids
        // (max(rowid)+1 each), so the ids are the range ending at the last one.
        let last = done.last_insert_rowid();
        let n = i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
        Ok((last - n + 1..=last).collect())
    }

    /// Counts per provider and state, every lane gate, and the oldest queued job.
    pub async fn summary(&self) -> Result<Summary, StoreError> {
        let rows = sqlx::query(
            "SELECT provider, state, n FROM job_counts WHERE n <> 0 ORDER BY provider, state",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err)?;
        let mut counts = Vec::with_capacity(rows.len());
        for row in &rows {
            counts.push(StateCount {
                provider: row.name("provider")?,
                state: row.name("state")?,
                count: row.int("n")?,
            });
        }
        let mut oldest: Option<i64> = None;
        for provider in Provider::ALL {
            let at: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(created_at) FROM jobs WHERE state = 'queued' AND provider = ?1",
            )
            .bind(provider.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(sql_err)?;
            oldest = match (oldest, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(Summary {
            counts,
            lanes: self.gates().await?,
            oldest_queued_at: oldest,
        })
    }

    /// Every lane gate row.
    pub async fn gates(&self) -> Result<Vec<Gate>, StoreError> {
        let rows = sqlx::query("SELECT * FROM lanes ORDER BY provider, account, action")
            .fetch_all(&self.pool)
            .await
            .map_err(sql_err)?;
        rows.iter().map(rows::gate).collect()
    }

    /// One lane's gate, if it has a row.
    pub async fn gate(&self, lane: &Lane) -> Result<Option<Gate>, StoreError> {
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

    /// The newest jobs matching `filter`.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
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

    /// One job, if it exists.
    pub async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
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

    /// Every call that carried job `id`, oldest first.
    pub async fn job_calls(&self, id: i64) -> Result<Vec<Call>, StoreError> {
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

    /// Applies an operator verb: every selected job in one of `from` states moves to `to`, or,
    /// if any explicitly listed job can't, nothing changes and every refusal is returned.
    async fn apply_verb(
        &self,
        selection: &Selection,
        now: i64,
        refuse: fn(&Job) -> Option<String>,
        verb_sql: &'static str,
        select_sql: &'static str,
    ) -> Result<VerbResult, StoreError> {
        let mut tx = self.begin().await?;
        let ids: Vec<i64> = if selection.ids.is_empty() {
            sqlx::query_scalar(select_sql)
                .bind(selection.provider.map(Provider::as_str))
                .bind(&selection.tag)
                .fetch_all(&mut *tx)
                .await
                .map_err(sql_err)?
        } else {
            let rows = sqlx::query(
                "SELECT j.* FROM jobs j JOIN json_each(?1) ids ON j.id = ids.value ORDER BY j.id",
            )
            .bind(json(&selection.ids))
            .fetch_all(&mut *tx)
            .await
            .map_err(sql_err)?;
            let found: Vec<Job> = rows.iter().map(rows::job).collect::<Result<_, _>>()?;
            let refusals = rows::refusals(&selection.ids, &found, refuse);
            if !refusals.is_empty() {
                return Ok(VerbResult::Refused(refusals));
            }
            found.iter().map(|j| j.id).collect()
        };
        sqlx::query(verb_sql)
            .bind(json(&ids))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(sql_err)?;
        tx.commit().await.map_err(sql_err)?;
        Ok(VerbResult::Changed(ids))
    }

    /// Puts failed or cancelled jobs back in the queue with their attempts reset.
    pub async fn retry(&self, selection: &Selection, now: i64) -> Result<VerbResult, StoreError> {
        self.apply_verb(
            selection,
            now,
            rows::retry_refusal,
            "UPDATE jobs SET state = 'queued', attempts = 0, next_at = ?2, updated_at = ?2, \
                    finished_at = NULL, lease_owner = NULL, lease_expires_at = NULL
             WHERE id IN (SELECT value FROM json_each(?1)) AND state IN ('failed', 'cancelled')",
            "SELECT id FROM jobs WHERE state IN ('failed', 'cancelled')
               AND (?1 IS NULL OR provider = ?1) AND (?2 IS NULL OR tag = ?2) ORDER BY id",
        )
        .await
    }

    /// Cancels queued jobs.
    pub async fn cancel(&self, selection: &Selection, now: i64) -> Result<VerbResult, StoreError> {
        self.apply_verb(
            selection,
            now,
            rows::cancel_refusal,
            "UPDATE jobs SET state = 'cancelled', updated_at = ?2, finished_at = ?2, \
                    last_error = 'cancelled by operator'
             WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'queued'",
            "SELECT id FROM jobs WHERE state = 'queued'
               AND (?1 IS NULL OR provider = ?1) AND (?2 IS NULL OR tag = ?2) ORDER BY id",
        )
        .await
    }

    /// Deletes jobs that ended before `before` (ms), and calls no remaining job refers to.
    pub async fn prune(&self, before: i64) -> Result<Pruned, StoreError> {
        let mut tx = self.begin().await?;
        let jobs = sqlx::query(
            "DELETE FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at < ?1",
        )
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(sql_err)?
        .rows_affected();
        let calls = sqlx::query(
            "DELETE FROM calls WHERE started_at < ?1
               AND NOT EXISTS (SELECT 1 FROM call_jobs cj WHERE cj.call_id = calls.id)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(sql_err)?
        .rows_affected();
        tx.commit().await.map_err(sql_err)?;
        Ok(Pruned { jobs, calls })
    }

    /// Puts every job whose lease expired before `now` back in the queue.
    pub async fn requeue_expired(&self, now: i64) -> Result<u64, StoreError> {
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

    /// Claims, for each requested action, every ready job whose target is among the next
    /// distinct targets of the lane, in one transaction.
    pub async fn claim(&self, req: &ClaimRequest) -> Result<Vec<ClaimedJob>, StoreError> {
        let mut tx = self.begin().await?;
        let mut claimed = Vec::new();
        for (action, limit) in &req.actions {
            let rows = match limit {
                None => {
                    sqlx::query(
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
                    .fetch_all(&mut *tx)
                    .await
                }
                Some(limit) => {
                    let targets = next_targets(&mut tx, req, *action, *limit).await?;
                    if targets.is_empty() {
                        continue;
                    }
                    // N.B. `+next_at` keeps the planner off `jobs_ready` (a scan of the whole ready
                    // queue); the chosen targets are looked up in `jobs_queued_target` instead.
                    sqlx::query(
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
                    .bind(json(&targets))
                    .fetch_all(&mut *tx)
                    .await
                }
            }
            .map_err(sql_err)?;
            for row in &rows {
                claimed.push(ClaimedJob {
                    id: row.try_get("id").map_err(sql_err)?,
                    action: row.name("action")?,
                    target: row.try_get("target").map_err(sql_err)?,
                    attempts: row.try_get("attempts").map_err(sql_err)?,
                });
            }
        }
        tx.commit().await.map_err(sql_err)?;
        claimed.sort_by_key(|j| j.id);
        Ok(claimed)
    }

    /// Returns claimed jobs that were never sent to the queue, untouched.
    pub async fn release(&self, owner: &str, ids: &[i64], now: i64) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL, updated_at = ?3
             WHERE state = 'running' AND lease_owner = ?1 AND id IN (SELECT value FROM json_each(?2))",
        )
        .bind(owner)
        .bind(json(ids))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(sql_err)?
        .rows_affected();
        tx.commit().await.map_err(sql_err)?;
        Ok(n)
    }

    /// Writes the audit row of a call about to be made, linked to its jobs.
    pub async fn begin_call(&self, call: &NewCall) -> Result<Option<StartedCall>, StoreError> {
        let mut tx = self.begin().await?;
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
        .bind(json(&call.job_ids))
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_err)?;
        if held.is_empty() {
            return Ok(None);
        }
        held.sort_unstable();
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
        .bind(json(&held))
        .fetch_one(&mut *tx)
        .await
        .map_err(sql_err)?;
        sqlx::query("INSERT INTO call_jobs (call_id, job_id) SELECT ?1, value FROM json_each(?2)")
            .bind(id)
            .bind(json(&held))
            .execute(&mut *tx)
            .await
            .map_err(sql_err)?;
        tx.commit().await.map_err(sql_err)?;
        Ok(Some(StartedCall { id, held }))
    }

    /// Completes a call's audit row, applies the jobs' new states (fenced by lease owner) and
    /// the lane changes, in one transaction. Returns how many jobs changed: fewer than given
    /// means another worker took some over after their lease expired.
    pub async fn record(&self, rec: &Record) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        if let Some(call) = &rec.call {
            sqlx::query(
                "UPDATE calls SET finished_at = ?2, http_status = ?3, provider_code = ?4, request_id = ?5,
                        trace_id = ?6, outcome = ?7, message = ?8
                 WHERE id = ?1",
            )
            .bind(call.call_id)
            .bind(rec.now)
            .bind(call.http_status.map(i64::from))
            .bind(call.provider_code)
            .bind(&call.request_id)
            .bind(&call.trace_id)
            .bind(call.outcome)
            .bind(&call.message)
            .execute(&mut *tx)
            .await
            .map_err(sql_err)?;
        }
        let changed = if rec.jobs.is_empty() {
            0
        } else {
            update_jobs(&mut tx, &rec.owner, rec.now, &rec.jobs).await?
        };
        for change in &rec.gates {
            apply_gate(&mut tx, change, rec.now).await?;
        }
        tx.commit().await.map_err(sql_err)?;
        Ok(changed)
    }

    /// When the next queued job of `lane` becomes ready (ms), if it has any.
    pub async fn next_due(&self, lane: &Lane) -> Result<Option<i64>, StoreError> {
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

    /// The cached access token of a provider account, if any.
    pub async fn token(
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
        row.map(|row| {
            Ok(CachedToken {
                token: crate::secret::Secret::new(
                    row.try_get::<String, _>("access_token").map_err(sql_err)?,
                ),
                expires_at: row.try_get("expires_at").map_err(sql_err)?,
                obtained_at: row.try_get("obtained_at").map_err(sql_err)?,
            })
        })
        .transpose()
    }

    /// Caches a provider account's access token, replacing the previous one.
    pub async fn save_token(
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

    /// Lets SQLite refresh its statistics where they are stale.
    pub async fn optimize(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA optimize")
            .execute(&self.pool)
            .await
            .map_err(sql_err)?;
        Ok(())
    }

    /// Whether any job of `provider` is queued or running.
    pub async fn has_pending(&self, provider: Provider) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('queued', 'running') AND provider = ?1)",
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

/// Pages through the lane's ready jobs in due order until `limit` distinct targets are found.
async fn next_targets(
    tx: &mut Transaction<'static, Sqlite>,
    req: &ClaimRequest,
    action: Action,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let mut picker = DistinctTargets::new(limit);
    let mut after: (i64, i64) = (i64::MIN, i64::MIN);
    loop {
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
        for row in &rows {
            let target: Option<String> = row.try_get("target").map_err(sql_err)?;
            if let Some(target) = target
                && picker.offer(target)
            {
                return Ok(picker.into_targets());
            }
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == CLAIM_PAGE => {
                after = (
                    last.try_get("next_at").map_err(sql_err)?,
                    last.try_get("id").map_err(sql_err)?,
                );
            }
            _ => return Ok(picker.into_targets()),
        }
    }
}

async fn update_jobs(
    tx: &mut Transaction<'static, Sqlite>,
    owner: &str,
    now: i64,
    jobs: &[JobUpdate],
) -> Result<u64, StoreError> {
    // N.B. The MATERIALIZED CTE makes the planner loop over the updates and find each job by
    // rowid; otherwise it loops over every running job and re-parses the JSON for each.
    let done = sqlx::query(
        "WITH u AS MATERIALIZED (
             SELECT value ->> 'id' AS id, value ->> 'state' AS state, value ->> 'attempts' AS attempts,
                    value ->> 'next_at' AS next_at, value ->> 'request_id' AS request_id,
                    value ->> 'provider_code' AS provider_code, value ->> 'last_error' AS last_error
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
             finished_at = CASE WHEN u.state IN ('succeeded', 'failed', 'cancelled') THEN ?2 END
         FROM u
         WHERE jobs.id = u.id AND jobs.state = 'running' AND jobs.lease_owner = ?3",
    )
    .bind(json(jobs))
    .bind(now)
    .bind(owner)
    .execute(&mut **tx)
    .await
    .map_err(sql_err)?;
    Ok(done.rows_affected())
}

async fn apply_gate(
    tx: &mut Transaction<'static, Sqlite>,
    change: &GateChange,
    now: i64,
) -> Result<(), StoreError> {
    // Opening a lane is pausing it until never, with its strikes cleared.
    let (lane, until, strikes, reason) = match change {
        GateChange::Pause {
            lane,
            until,
            strikes,
            reason,
        } => (lane, Some(*until), *strikes, Some(reason.as_str())),
        GateChange::Open { lane } => (lane, None, 0, None),
        GateChange::Quota {
            lane,
            quota_day,
            surplus_day,
        } => {
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
            .bind(*quota_day)
            .bind(*surplus_day)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(sql_err)?;
            return Ok(());
        }
    };
    sqlx::query(
        "INSERT INTO lanes (provider, account, action, paused_until, strikes, reason, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (provider, account, action) DO UPDATE SET
                 paused_until = excluded.paused_until, strikes = excluded.strikes,
                 reason = excluded.reason, updated_at = excluded.updated_at",
    )
    .bind(lane.provider.as_str())
    .bind(&lane.account)
    .bind(lane.action.as_str())
    .bind(until)
    .bind(strikes)
    .bind(reason)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(sql_err)?;
    Ok(())
}
