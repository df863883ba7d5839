//! Checks made before a database is created, migrated or written: a special file (`/dev/null`,
//! a FIFO, a directory) or another application's SQLite database is refused untouched, and a
//! read-only open (for `status`) never migrates and never writes.
//!
//! Invariants: nothing here creates a file; a refused database is left byte for byte as it was
//! (the foreign check reads it without a journal-mode change: read-only, or on the writer's
//! connection before it writes, never with a rollback journal beside the file, which a
//! writer's read would roll back; a hot journal is refused as it lies). A read-only open
//! succeeds for a user who may only read the database file: SQLite opens a WAL database
//! read-only when its `-shm` and `-wal` exist (a worker running) or can be created; when
//! neither exists and they can't be created (no write access to the directory) and no
//! `-wal` file exists, no writer has the database open and it is opened `immutable`.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{ConnectOptions as _, Connection as _};

use super::StoreError;

/// The tables purgeq's migrator keeps; a database with tables but without this one is not ours.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

fn refused(path: &Path, why: impl Into<String>) -> StoreError {
    StoreError::Refused {
        path: path.display().to_string(),
        why: why.into(),
    }
}

fn not_sqlite(path: &Path) -> StoreError {
    refused(path, "it is not a SQLite database")
}

/// SQLite's `SQLITE_NOTADB` (26): the file's header is not a SQLite database's.
fn is_not_a_database(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "26")
}

/// SQLite's `SQLITE_READONLY_ROLLBACK` (776): a read-only connection met a hot rollback
/// journal, which only a writer may roll back. purgeq's own databases are WAL and never have
/// one; another program crashed while writing this file.
fn is_hot_journal(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "776")
}

fn hot_journal(path: &Path) -> StoreError {
    refused(
        path,
        "a hot rollback journal (-journal) lies beside it: a program crashed while writing it, \
         and purgeq does not roll that journal back; open the database once with that program \
         (or sqlite3) to recover it",
    )
}

/// Refuses a path that exists and is not a regular file (`/dev/null`, a FIFO, a directory),
/// before SQLite could create `-journal` or `-wal` files beside it.
pub(super) fn refuse_special_file(path: &Path) -> Result<(), StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(refused(
            path,
            "it is not a regular file (a device, a FIFO or a directory); name a database file",
        )),
        _ => Ok(()),
    }
}

/// The newest migration `migrator` embeds.
pub(super) fn newest(migrator: &sqlx::migrate::Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Whether an existing database may be inspected on the writer's own connection (see
/// [`inspect`]) instead of a read-only one first: it is a non-empty file with no rollback
/// journal beside it. A read-write connection only reads while inspecting, except that it
/// would roll back another application's hot journal; with a `-journal` file present the
/// read-only check runs first.
pub(super) fn inspectable_on_writer(path: &Path) -> bool {
    let mut journal = path.as_os_str().to_owned();
    journal.push("-journal");
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0)
        && std::fs::symlink_metadata(Path::new(&journal)).is_err()
}

/// Refuses an existing non-empty file that is not a SQLite database, or a SQLite database
/// holding tables but no purgeq migration history: another application's. Returns the newest
/// migration applied to it (0 for a new database, or when it could not be read), so a
/// producer opening a current schema skips the migrator.
pub(super) async fn refuse_foreign_sqlite(path: &Path) -> Result<i64, StoreError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(0);
    };
    if meta.len() == 0 {
        return Ok(0);
    }
    // N.B. SQLite reads the header, never this process: closing a descriptor of the file would
    // drop every `fcntl` lock this process's connections hold on it (see `store/sqlite.rs`).
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false);
    // Unreadable here means the real open will say why; this check only refuses what it saw.
    let mut conn = match options.connect().await {
        Ok(conn) => conn,
        Err(e) if is_not_a_database(&e) => return Err(not_sqlite(path)),
        Err(e) if is_hot_journal(&e) => return Err(hot_journal(path)),
        Err(_) => return Ok(0),
    };
    let inspected = inspect(path, &mut conn).await;
    let _ = conn.close().await;
    inspected
}

/// Refuses what [`refuse_foreign_sqlite`] refuses, reading through `conn` (read-only, or the
/// writer's before it has written anything or changed the journal mode). Returns the newest
/// migration applied (0 when it could not be read: the migrator runs and says why).
pub(super) async fn inspect(
    path: &Path,
    conn: &mut sqlx::SqliteConnection,
) -> Result<i64, StoreError> {
    let tables: Result<Vec<String>, _> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await;
    match tables {
        Err(e) if is_not_a_database(&e) => Err(not_sqlite(path)),
        Err(e) if is_hot_journal(&e) => Err(hot_journal(path)),
        Ok(tables) if !tables.is_empty() && !tables.iter().any(|t| t == MIGRATIONS_TABLE) => {
            let shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
            Err(refused(
                path,
                format!(
                    "it belongs to another application (its tables: {}); purgeq only uses a database it created",
                    crate::text::display_safe(&shown.join(", "), 200)
                ),
            ))
        }
        Ok(tables) if !tables.is_empty() => Ok(applied_version(conn).await),
        _ => Ok(0),
    }
}

/// Whether `e` says the file is not a SQLite database: the writer's connect refuses it so.
pub(super) fn not_a_database(path: &Path, e: &sqlx::Error) -> Option<StoreError> {
    is_not_a_database(e).then(|| not_sqlite(path))
}

/// The newest migration applied successfully (0 when none could be read: the migrator runs).
const APPLIED: &str = "SELECT MAX(version) FROM _sqlx_migrations WHERE success";

async fn applied_version(conn: &mut sqlx::SqliteConnection) -> i64 {
    let read: Result<Option<i64>, _> = sqlx::query_scalar(APPLIED).fetch_one(conn).await;
    read.ok().flatten().unwrap_or(0)
}

/// For a PostgreSQL open of a purgeq database: the newest migration applied (0 if unreadable).
pub(super) async fn pg_applied(pool: &sqlx::PgPool) -> i64 {
    let read: Result<Option<i64>, _> = sqlx::query_scalar(APPLIED).fetch_one(pool).await;
    read.ok().flatten().unwrap_or(0)
}

/// Opens an existing SQLite database read-only: no file is created, no migration runs; a
/// schema older than this purgeq's is refused with a clear message.
pub(super) async fn open_sqlite_read_only(
    path: &Path,
    busy_timeout: std::time::Duration,
    migrator: &sqlx::migrate::Migrator,
) -> Result<SqlitePool, StoreError> {
    if !path.exists() {
        return Err(refused(
            path,
            "it does not exist (nothing has been enqueued yet)",
        ));
    }
    let base = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(busy_timeout);
    let connect = |options: SqliteConnectOptions| {
        super::sqlite::pool_options()
            .max_connections(2)
            .connect_with(options)
    };
    let wal = {
        let mut p = path.as_os_str().to_owned();
        p.push("-wal");
        std::path::PathBuf::from(p)
    };
    let pool = match connect(base.clone()).await {
        Ok(pool) => match sqlx::query("SELECT 1 FROM sqlite_master LIMIT 1")
            .execute(&pool)
            .await
        {
            Ok(_) => pool,
            Err(_) if !wal.exists() => connect(base.immutable(true))
                .await
                .map_err(open_err(path))?,
            Err(e) => return Err(open_err(path)(e)),
        },
        Err(_) if !wal.exists() => connect(base.immutable(true))
            .await
            .map_err(open_err(path))?,
        Err(e) => return Err(open_err(path)(e)),
    };
    check_schema(path, &pool, migrator).await?;
    Ok(pool)
}

fn open_err(path: &Path) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    }
}

async fn check_schema(
    path: &Path,
    pool: &SqlitePool,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    let have = sqlx::query_scalar(SCHEMA_VERSION).fetch_one(pool).await;
    schema_verdict(path, have.unwrap_or(None), migrator)
}

/// Refuses a PostgreSQL database (its current schema) holding tables but no purgeq migration
/// history: another application's. Runs before any migration. `true` when it is purgeq's
/// (false: an empty database, created as before).
pub(super) async fn refuse_foreign_pg(
    pool: &sqlx::PgPool,
    shown: &str,
) -> Result<bool, StoreError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .map_err(super::StoreError::Sql)?;
    if !tables.is_empty() && !tables.iter().any(|t| t == MIGRATIONS_TABLE) {
        let shown_tables: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
        return Err(StoreError::Refused {
            path: shown.to_owned(),
            why: format!(
                "it belongs to another application (its tables: {}); purgeq only uses a database it created",
                crate::text::display_safe(&shown_tables.join(", "), 200)
            ),
        });
    }
    Ok(!tables.is_empty())
}

/// For a read-only PostgreSQL open: the schema must be current (no migration runs).
pub(super) async fn check_pg_schema(
    pool: &sqlx::PgPool,
    shown: &str,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    let have = sqlx::query_scalar(SCHEMA_VERSION).fetch_one(pool).await;
    schema_verdict(Path::new(shown), have.unwrap_or(None), migrator)
}

/// The newest migration applied (NULL where none is, an error where the table is missing).
const SCHEMA_VERSION: &str = "SELECT MAX(version) FROM _sqlx_migrations WHERE success";

/// Whether a database at schema version `have` can be read without migrating.
fn schema_verdict(
    path: &Path,
    have: Option<i64>,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    let want = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match have {
        Some(have) if have >= want => Ok(()),
        Some(have) => Err(refused(
            path,
            format!(
                "its schema (version {have}) is older than this purgeq's ({want}), and a read-only open does not migrate: run `purgeq enqueue` or the worker once with write access"
            ),
        )),
        None => Err(refused(
            path,
            "it holds no purgeq schema (a read-only open does not create one)",
        )),
    }
}
