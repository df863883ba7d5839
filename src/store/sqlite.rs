//! The embedded SQLite backend.
//!
//! Connection settings live in one place (`connect_options`, `writer_options`, used by
//! [`SqliteStore::open`]): WAL, a busy timeout and foreign keys, with `synchronous=FULL` for
//! producers (an accepted job survives a power cut) and `NORMAL` for the worker (it can redo a
//! lost record; its leases expire), whose writer keeps statement journals in memory. An
//! existing database is inspected (`guard::inspect`) on the writer's own connection before the
//! journal mode is set, so an enqueue opens it once. Every write transaction starts with
//! `BEGIN IMMEDIATE`: a deferred transaction that reads and then writes fails at once with
//! `SQLITE_BUSY_SNAPSHOT` under WAL, busy timeout or not. Statements carry many rows at once
//! through `json_each` over one bound JSON array, because each sqlx-sqlite statement is a round
//! trip to a worker thread.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Sqlite};

use super::backend::{
    Backend, Claimed, Dialect, Done, Held, Ids, LaneClaim, Pause, Query, Quota, Span, Targets, Tx,
    Verb, encode, update_row,
};
use super::dashboard::JobPage;
use super::guard;
use super::rows;
use super::statements::{
    cancel_set, claim_set, insert_call_head, insert_jobs_head, next_targets, retry_set,
    shared_statements, update_set,
};
use super::turn::{Turn, Turns};
use super::{
    AccountCount, CachedToken, Call, CallEnd, Durability, Gate, Job, NewCall, NewJobs, OpenOptions,
    Pruned, Record, Selection, StateCount, StoreError,
};
use crate::model::{JobState, Lane, Provider};

/// The queue's SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads, migrations and checkpoints: SQLite's busy handler waits up to the busy timeout.
    pool: SqlitePool,
    /// Write transactions only, on one connection (see `connect_writer`): no busy handler;
    /// [`Backend::begin`] tries for the write lock itself (see there).
    writer: SqlitePool,
    /// How long `begin` keeps trying for the write lock.
    busy_timeout: Duration,
    /// How its connections are made, for the wake-up signal's own connection.
    connect: SqliteConnectOptions,
    /// Where its writers queue for the write lock (`store/turn.rs`).
    turns: Turns,
}

/// The first wait between two tries for the write lock; it doubles up to [`LOCK_RETRY_MAX`].
/// SQLite's own busy handler sleeps 1, 2, 5, 10, … up to 100 ms between tries: a producer
/// waiting behind a worker's back-to-back write transactions lost most races (a single
/// enqueue's p99 was 0.6 to 1.2 s while a worker drained). Trying every millisecond without
/// end burned the CPU the lock's holder needed when many processes waited (the large soak).
/// purgeq's writers now queue for their turn first (`store/turn.rs`), so these tries only
/// matter against a writer without a turn.
const LOCK_RETRY: Duration = Duration::from_millis(1);

/// The longest wait between two tries for the write lock.
const LOCK_RETRY_MAX: Duration = Duration::from_millis(8);

/// sqlx's threshold for a slow statement (its default).
const SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// The connection settings of a writable store at `path`, but for the journal mode: `open`
/// sets WAL once the database is known to be purgeq's.
///
/// A producer's statements can take seconds by design (100,000 URLs from stdin: about one; a
/// migration of a million jobs: about as long), so they are logged as slow at debug level, not
/// as a warning with their SQL on the producer's terminal. A worker's slow statement stays a
/// warning: every other writer waited for it.
fn connect_options(path: &Path, options: &OpenOptions) -> SqliteConnectOptions {
    let slow = match options.durability {
        Durability::Full => log::LevelFilter::Debug,
        Durability::Normal => log::LevelFilter::Warn,
    };
    SqliteConnectOptions::new()
        .log_slow_statements(slow, SLOW_STATEMENT)
        .filename(path)
        .create_if_missing(true)
        .synchronous(match options.durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        })
        .busy_timeout(options.busy_timeout)
        .pragma("journal_size_limit", super::wal::WAL_BOUND.to_string())
        .pragma(
            "wal_autocheckpoint",
            super::wal::autocheckpoint(options.durability),
        )
        .foreign_keys(true)
}

/// The writer connection's settings over `base`. The worker's keeps statement journals (a
/// multi-row write's undo log, a temp file past 64 KiB) in memory: its transactions are
/// bounded (a claim, a record). With files, a drain of 100,000 jobs created and unlinked 1,312
/// of them; without, it took a median 5.6 s against 5.9 s (BENCHMARKS.md). A producer's bulk
/// enqueue can be large, so it keeps SQLite's default.
fn writer_options(base: &SqliteConnectOptions, durability: Durability) -> SqliteConnectOptions {
    match durability {
        Durability::Normal => base.clone().pragma("temp_store", "MEMORY"),
        Durability::Full => base.clone(),
    }
}

/// Refuses a foreign database through the writer's connection (`guard::inspect`), before it
/// has written anything, then turns purgeq's database into WAL (already so unless an operator
/// changed it: then one statement). Returns the newest migration applied.
///
/// N.B. These reads wait out another process's lock up to the busy timeout, as the read-only
/// check did: the writer has no busy handler, and a read can meet one (a WAL reset, a
/// recovery). A failed read would send the open down the migrator's path.
async fn inspect_on(
    writer: &SqlitePool,
    path: &Path,
    busy_timeout: Duration,
) -> Result<i64, StoreError> {
    let mut conn = writer.acquire().await.map_err(sql_err)?;
    // N.B. A number formatted in: PRAGMA takes no bound parameters.
    let set_busy = |ms: u128| sqlx::AssertSqlSafe(format!("PRAGMA busy_timeout = {ms}"));
    sqlx::query(set_busy(busy_timeout.as_millis()))
        .execute(&mut *conn)
        .await
        .map_err(sql_err)?;
    let inspected = guard::inspect(path, &mut conn).await;
    if inspected.is_err() {
        drop(conn);
        writer.close().await;
        return inspected;
    }
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&mut *conn)
        .await
        .map_err(sql_err)?;
    sqlx::query(set_busy(0))
        .execute(&mut *conn)
        .await
        .map_err(sql_err)?;
    inspected
}

/// The pool of write transactions: `connect` without a busy handler (see `SqliteStore::writer`).
///
/// N.B. The busy handler is turned off last, after the connection's other pragmas ran with it.
/// Turning a new database into WAL takes a lock no busy handler waits for: a process that meets
/// another one doing it tries again, within the busy timeout.
async fn connect_writer(
    connect: &SqliteConnectOptions,
    busy_timeout: Duration,
) -> Result<SqlitePool, sqlx::Error> {
    // One writer connection: SQLite has one write lock, and a second connection would begin
    // each transaction with a page cache the other's commit had invalidated (one worker drained
    // 100,000 jobs in 10.7 s instead of 12.0 s, BENCHMARKS.md). Writers of this process wait
    // for it in the pool's order, at most the busy timeout.
    let pools = pool_options()
        .max_connections(1)
        .acquire_timeout(busy_timeout);
    let options = connect.clone().pragma("busy_timeout", "0");
    let deadline = std::time::Instant::now() + busy_timeout;
    loop {
        match pools.clone().connect_with(options.clone()).await {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            done => return done,
        }
    }
}

/// The pool settings of every SQLite pool: each connection is given the query planner
/// stability guarantee ([`stable_plans`]) before its first statement.
pub(super) fn pool_options() -> SqlitePoolOptions {
    super::pool_options(SqlitePoolOptions::new())
        .after_connect(|conn, _| Box::pin(async move { stable_plans(conn).await }))
}

/// Turns on `SQLITE_DBCONFIG_ENABLE_QPSG`: a statement keeps its plan whatever values are
/// bound. Without it, a statement whose `LIMIT` is a bound parameter is marked to be planned
/// again at each new binding, and sqlx binds every parameter at each execution: every claim
/// was parsed and planned anew (1,117 times in a drain of 100,000 jobs; 7% of the writer
/// thread's time). Plans then depend on the schema and `sqlite_stat1` only, which the
/// statements' texts already pin where it matters (`+` on indexed columns).
async fn stable_plans(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is this open connection's handle, and `handle` keeps sqlx's worker thread
    // off it while the call runs. The option takes an int and an optional out-pointer (null).
    let rc = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            db,
            libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as std::ffi::c_int,
            std::ptr::null_mut::<std::ffi::c_int>(),
        )
    };
    if rc == libsqlite3_sys::SQLITE_OK {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            format!("SQLite refused the query planner stability guarantee (code {rc})").into(),
        ))
    }
}

/// Whether `e` is SQLite's "database is locked" (or "table is locked").
fn is_busy(e: &sqlx::Error) -> bool {
    matches!(primary_code(e), Some(5 | 6))
}

/// The primary SQLite result code of a database error.
fn primary_code(e: &sqlx::Error) -> Option<i32> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    db.code()
        .and_then(|c| c.parse::<i32>().ok())
        .map(|c| c & 0xff)
}

/// Maps SQLite's lock and permission failures to errors an operator can act on.
pub(super) fn sql_err(e: sqlx::Error) -> StoreError {
    match primary_code(&e) {
        Some(5 | 6) => StoreError::Busy,
        Some(8) => StoreError::ReadOnly,
        Some(13) => StoreError::DiskFull,
        _ => StoreError::Sql(e),
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    /// The parent directory is created when missing.
    pub async fn open(path: &Path, options: &OpenOptions) -> Result<SqliteStore, StoreError> {
        let shown = path.display().to_string();
        guard::refuse_special_file(path)?;
        // An existing database is inspected on the writer's connection, before it changes
        // anything: a single enqueue then opens the database once, not twice (a median 8.5 ms
        // became 7.7 ms, BENCHMARKS.md).
        let on_writer = !options.read_only && guard::inspectable_on_writer(path);
        let checked = if on_writer {
            None
        } else {
            Some(guard::refuse_foreign_sqlite(path).await?)
        };
        // A database not created yet is created as before (`status` then shows an empty queue).
        if options.read_only && std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            return Self::open_read_only(path, options.busy_timeout).await;
        }
        prepare_files(path)?;
        let unchanged = connect_options(path, options);
        let connect = unchanged.clone().journal_mode(SqliteJournalMode::Wal);
        // A single enqueue writes only: the read pool connects when first used.
        let pool = pool_options()
            .max_connections(options.max_connections.max(1))
            .connect_lazy_with(connect.clone());
        let writer_options = writer_options(
            if on_writer { &unchanged } else { &connect },
            options.durability,
        );
        let writer = connect_writer(&writer_options, options.busy_timeout)
            .await
            .map_err(|e| open_error(path, e))?;
        let applied = match checked {
            Some(applied) => applied,
            None => inspect_on(&writer, path, options.busy_timeout).await?,
        };
        let store = SqliteStore {
            pool,
            writer,
            busy_timeout: options.busy_timeout,
            connect,
            turns: Turns::new(path, FILE_MODE),
        };
        // The guard read the newest applied migration: a current schema needs no migrator run.
        if applied != guard::newest(&MIGRATOR) {
            store.migrate(&shown).await?;
        }
        Ok(store)
    }

    /// Opens an existing database for reading only (`status`): no migration, no write.
    async fn open_read_only(
        path: &Path,
        busy_timeout: Duration,
    ) -> Result<SqliteStore, StoreError> {
        let pool = guard::open_sqlite_read_only(path, busy_timeout, &MIGRATOR).await?;
        let connect = (*pool.connect_options()).clone();
        Ok(SqliteStore {
            writer: pool.clone(),
            pool,
            busy_timeout,
            connect,
            turns: Turns::new(path, FILE_MODE),
        })
    }

    /// The pool, for the WAL's checkpoints (src/store/wal.rs).
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The writer's one-connection pool, for a producer's close (src/store/wal.rs).
    pub(super) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// How its connections are made, for the WAL's `TRUNCATE` checkpoint (`store/wal.rs`).
    pub(super) fn connect_options(&self) -> &SqliteConnectOptions {
        &self.connect
    }

    /// Waits for a writer's turn (`store/turn.rs`), as a write transaction does: for the WAL's
    /// `TRUNCATE` checkpoint, which takes the write lock.
    pub(super) async fn take_turn(&self) -> Result<Option<Turn>, StoreError> {
        let deadline = std::time::Instant::now() + self.busy_timeout;
        self.turns.take(deadline).await
    }

    /// The database file.
    pub(super) fn file(&self) -> &Path {
        self.connect.get_filename()
    }

    /// Starts the wake-up signal (see `store/wake.rs`) until `stop`.
    pub(super) fn wake(&self, stop: tokio_util::sync::CancellationToken) -> super::Wake {
        super::wake::sqlite(self.connect.clone(), stop)
    }

    /// Applies pending migrations. Several processes may open a new database at once: a loser
    /// of that race sees the winner's tables and tries again until every migration is applied.
    async fn migrate(&self, shown: &str) -> Result<(), StoreError> {
        // One migrator at a time across processes: sqlx takes no lock on SQLite, and a
        // migration that runs outside a transaction (the `confirming` table rebuild) would
        // otherwise be run again by a second process after later migrations had added columns.
        // An exclusive `flock` on the database's directory (see `migration_lock`). Released
        // when `_guard` drops.
        let _guard = self.migration_lock().await;
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

impl SqliteStore {
    /// Waits for the exclusive migration lock: a `flock` on the database's directory. `None`
    /// (migrating unlocked, as sqlx does) when it cannot be locked, e.g. on a file system
    /// without `flock`.
    ///
    /// N.B. Never a descriptor of the database file itself: POSIX drops every `fcntl` lock a
    /// process holds on a file when it closes any descriptor of it. SQLite's locks are `fcntl`
    /// locks, so closing such a lock file would leave this process's connections unlocked, and
    /// the next program to close the database (an operator's `sqlite3`) would take itself for
    /// the last connection and delete the WAL and `-shm` under them: a worker blind to new
    /// jobs, writing to a deleted WAL.
    async fn migration_lock(&self) -> Option<std::fs::File> {
        let path = match self.file().parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        let locked = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path)?;
            file.lock()?;
            Ok::<_, std::io::Error>(file)
        })
        .await;
        match locked {
            Ok(Ok(file)) => Some(file),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "no migration lock; migrating unlocked");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "no migration lock; migrating unlocked");
                None
            }
        }
    }

    /// Many values as one bound parameter: a JSON array, read by `json_each`.
    pub(super) fn list<T: serde::Serialize>(values: &[T]) -> Result<String, StoreError> {
        encode(values)
    }
}

impl Backend for SqliteStore {
    type Db = Sqlite;

    const SQL: Dialect = Dialect {
        // N.B. One MIN per provider, each answered from the `jobs_state` index's first row.
        oldest_queued: "SELECT MIN(m) FROM (SELECT (SELECT MIN(created_at) FROM jobs
                                                     WHERE state = 'queued' AND provider = p.value) AS m
                                            FROM json_each($1) p)",
        job_page: concat!(
            "SELECT ",
            rows::job_columns!(),
            " FROM jobs
             WHERE ($1 IS NULL OR state = $1)
               AND ($2 IS NULL OR provider = $2)
               AND ($3 IS NULL OR tag = $3)
               AND ($4 IS NULL OR instr(target, $4) > 0)
               AND ($5 IS NULL OR updated_at >= $5)
               AND ($6 IS NULL OR id < $6)
               AND ($8 IS NULL OR account = $8)
             ORDER BY id DESC
             LIMIT $7"
        ),
        // The transaction's write lock (BEGIN IMMEDIATE) already keeps every row still.
        retry_candidates: "SELECT id FROM jobs WHERE state IN ('failed', 'cancelled')
                             AND ($1 IS NULL OR provider = $1) AND ($2 IS NULL OR tag = $2)
                             AND ($3 IS NULL OR account = $3)
                           ORDER BY id",
        cancel_candidates: "SELECT id FROM jobs WHERE state = 'queued'
                              AND ($1 IS NULL OR provider = $1) AND ($2 IS NULL OR tag = $2)
                              AND ($3 IS NULL OR account = $3)
                            ORDER BY id",
        lock_jobs: concat!(
            "SELECT ",
            rows::job_columns!(),
            " FROM jobs WHERE id IN (SELECT value FROM json_each($1)) ORDER BY id"
        ),
        retry: concat!(
            retry_set!(),
            " WHERE id IN (SELECT value FROM json_each($1)) AND state IN ('failed', 'cancelled')"
        ),
        cancel: concat!(
            cancel_set!(),
            " WHERE id IN (SELECT value FROM json_each($1)) AND state = 'queued'"
        ),
        prioritize: "UPDATE jobs SET priority = $3, updated_at = $2
                     WHERE id IN (SELECT value FROM json_each($1)) AND state = 'queued'",
        claim_every: concat!(
            claim_set!(),
            "
                      WHERE state = 'queued' AND provider = $4 AND account = $5 AND action = $6
                        AND next_at <= $3
                      RETURNING id, action, target, attempts"
        ),
        // N.B. `+next_at` keeps the planner off any range on `next_at` (it once chose the
        // since-dropped `jobs_ready`: a scan of the whole ready queue); the chosen targets are
        // looked up in `jobs_queued_target` instead.
        claim_targets: concat!(
            claim_set!(),
            "
                        WHERE state = 'queued' AND provider = $4 AND account = $5 AND action = $6
                          AND +next_at <= $3 AND target IN (SELECT value FROM json_each($7))
                        RETURNING id, action, target, attempts"
        ),
        // N.B. `+next_at` outside as in `claim_targets`: the chosen targets are looked up by
        // target. Inside, it keeps the page on `jobs_ready_priority` (read in claim order, stops
        // at the limit); without statistics the planner took a range on `next_at` (of the
        // since-dropped `jobs_ready`) and sorted every ready job of the lane.
        claim_next: concat!(
            claim_set!(),
            "
                     WHERE state = 'queued' AND provider = $4 AND account = $5 AND action = $6
                       AND +next_at <= $3 AND target IN (",
            next_targets!("+next_at"),
            ")
                     RETURNING id, action, target, attempts"
        ),
        release: "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                                  updated_at = $3
                  WHERE state = 'running' AND lease_owner = $1
                    AND id IN (SELECT value FROM json_each($2))",
        insert_call: concat!(
            insert_call_head!(),
            "WHERE id IN (SELECT value FROM json_each($7)) RETURNING id"
        ),
        link_call_jobs: "INSERT INTO call_jobs (call_id, job_id) SELECT $1, value FROM json_each($2)",
        // `+state`: keep SQLite on the finished_at index (reading the newest first and stopping
        // at the limit) instead of jobs_state and a sort of every succeeded job.
        finish_times: "SELECT finished_at - created_at FROM jobs
                       WHERE finished_at >= $1 AND +state = 'succeeded'
                       ORDER BY finished_at DESC LIMIT $2",
        optimize: "PRAGMA optimize",
        // Workers see a commit as a write to the WAL file, or through `PRAGMA data_version`
        // (store/wake.rs).
        notify_ready: None,
        insert_jobs: concat!(
            insert_jobs_head!(),
            "value, $4, 'queued', 0, $5, $6, $6, $8 FROM json_each($7)"
        ),
    };

    fn sql_err(e: sqlx::Error) -> StoreError {
        sql_err(e)
    }

    async fn begin(&self) -> Result<Tx<Self>, StoreError> {
        let deadline = std::time::Instant::now() + self.busy_timeout;
        let turn = self.turns.take(deadline).await?;
        // N.B. With the turn, the lock is nearly always free. Without one (another program
        // writing, a rollback finishing, no turn file) this tries after 1, 2, 4, then every
        // 8 ms (see `LOCK_RETRY`) until the busy timeout.
        let mut wait = LOCK_RETRY;
        loop {
            match self
                .writer
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(|e| match e {
                    // The one writer connection stayed taken past the busy timeout.
                    sqlx::Error::PoolTimedOut => StoreError::Busy,
                    e => sql_err(e),
                }) {
                Err(StoreError::Busy) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(LOCK_RETRY_MAX);
                }
                done => return done.map(|tx| Tx::new(tx, turn)),
            }
        }
    }

    async fn insert_jobs(&self, tx: &mut Tx<Self>, jobs: &NewJobs, now: i64) -> Ids {
        let query = Self::insert_query(jobs, now)
            .bind(encode(&jobs.targets)?)
            .bind(jobs.priority.rank());
        let done = query.execute(&mut **tx).await.map_err(sql_err)?;
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

    async fn lock_lane(&self, _tx: &mut Tx<Self>, _lane: LaneClaim<'_>) -> Result<(), StoreError> {
        // BEGIN IMMEDIATE holds the database's one write lock: no other claim runs meanwhile.
        Ok(())
    }

    async fn renew_leases(
        &self,
        tx: &mut Tx<Self>,
        call: &NewCall,
        lease: std::time::Duration,
    ) -> Result<Held, StoreError> {
        // Read after BEGIN IMMEDIATE has the write lock: however long that took, the lease
        // runs from now.
        let now = crate::clock::now_ms();
        let mut held: Vec<i64> = sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at = $1
             WHERE state = 'running' AND lease_owner = $2 AND id IN (SELECT value FROM json_each($3))
             RETURNING id",
        )
        .bind(crate::clock::add(now, lease))
        .bind(&call.worker)
        .bind(encode(&call.job_ids)?)
        .fetch_all(&mut **tx)
        .await
        .map_err(sql_err)?;
        held.sort_unstable();
        Ok(Held { ids: held, now })
    }

    async fn update_jobs(&self, tx: &mut Tx<Self>, rec: &Record) -> Result<u64, StoreError> {
        let rows: Vec<_> = rec.jobs.iter().map(update_row).collect();
        let query = sqlx::query(UPDATE_JOBS)
            .bind(encode(&rows)?)
            .bind(rec.now)
            .bind(&rec.owner);
        let done = query.execute(&mut **tx).await.map_err(sql_err)?;
        Ok(done.rows_affected())
    }

    shared_statements!();
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

/// Why the writer's connection to `path` failed, in terms an operator can act on.
fn open_error(path: &Path, e: sqlx::Error) -> StoreError {
    if let Some(refused) = guard::not_a_database(path, &e) {
        return refused;
    }
    match sql_err(e) {
        StoreError::Sql(source) => diagnose_open(path).unwrap_or(StoreError::Open {
            path: path.display().to_string(),
            source,
        }),
        other => other,
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

/// A record's update of its jobs: `$1` the rows (JSON arrays in `UpdateRow` order), `$2` now,
/// `$3` the lease owner.
///
/// N.B. The MATERIALIZED CTE and the `+` make the planner loop over the updates and find each
/// job by rowid, whatever the statistics say: otherwise it may walk every running job
/// (`jobs_state`) and scan the updates, or re-parse the JSON, for each (see
/// `UPDATE_CONFIRMING`, where it did).
pub(super) const UPDATE_JOBS: &str = concat!(
    "WITH u AS MATERIALIZED (
         SELECT value ->> 0 AS id, value ->> 1 AS state, value ->> 2 AS attempts,
                value ->> 3 AS next_at, value ->> 4 AS request_id,
                value ->> 5 AS provider_code, value ->> 6 AS last_error,
                value ->> 7 AS served_by_dir, value ->> 8 AS confirm_at
         FROM json_each($1))
     UPDATE jobs SET ",
    update_set!(),
    "
         updated_at = $2,
         accepted_at = CASE WHEN u.state IN ",
    super::accepted_states!(),
    " THEN $2 ELSE jobs.accepted_at END,
         finished_at = CASE WHEN u.state IN ",
    super::final_states!(),
    " THEN $2 END
     FROM u
     WHERE jobs.id = u.id AND +jobs.state = 'running' AND +jobs.lease_owner = $3"
);
