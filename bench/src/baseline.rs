//! The baselines: what plain SQLite does with the same rows, through rusqlite, with no queue
//! logic, no async runtime and no process around it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use purgeq::store::Location;
use rusqlite::{Connection, params};

use crate::backend::open_store;
use crate::util;

/// The columns purgeq's enqueue writes, one row per target.
const INSERT: &str = "INSERT INTO jobs (provider, account, action, target, tag, state, attempts, \
                      next_at, created_at, updated_at) \
                      VALUES ('qiniu', 'default', 'refresh_url', ?1, NULL, 'queued', 0, ?2, ?2, ?2)";

/// What a worker writes for a job whose call succeeded.
const SUCCEED: &str = "UPDATE jobs SET state = 'succeeded', lease_owner = NULL, \
                       lease_expires_at = NULL, request_id = ?2, provider_code = 200, \
                       updated_at = ?3, finished_at = ?3 WHERE id = ?1";

/// How a connection commits, as in purgeq's `Durability`.
#[derive(Debug, Clone, Copy)]
pub enum Sync {
    /// `synchronous=FULL`, as `purgeq enqueue` uses.
    Full,
    /// `synchronous=NORMAL`, as the worker uses.
    Normal,
}

/// Creates a database at `path` with purgeq's tables and indexes (its migrations, applied by
/// the library) and connection settings, without the triggers that keep its job counts: the
/// plain cost of storing and indexing the rows.
pub fn create(path: &Path, sync: Sync) -> anyhow::Result<Connection> {
    util::runtime()?.block_on(async {
        let store = open_store(&Location::Sqlite(path.to_owned())).await?;
        drop(store);
        anyhow::Ok(())
    })?;
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    let triggers: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'jobs'")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for name in triggers {
        conn.execute_batch(&format!("DROP TRIGGER \"{name}\""))
            .with_context(|| format!("dropping the trigger {name}"))?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")
        .context("setting journal_mode=WAL")?;
    let level = match sync {
        Sync::Full => "FULL",
        Sync::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level)
        .context("setting synchronous")?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .context("setting foreign_keys=ON")?;
    Ok(conn)
}

/// Inserts one queued job per target with one prepared statement in one transaction, and
/// returns the time from `BEGIN` to the end of `COMMIT`.
pub fn insert(conn: &mut Connection, targets: &[String], now: i64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let tx = conn.transaction().context("beginning the insert")?;
    {
        let mut stmt = tx.prepare(INSERT).context("preparing the insert")?;
        for target in targets {
            stmt.execute(params![target, now])
                .context("inserting a job")?;
        }
    }
    tx.commit().context("committing the insert")?;
    Ok(start.elapsed())
}

/// Sets jobs `1..=count` to succeeded with one prepared statement, committing every `per_tx`
/// rows, and returns the time from the first `BEGIN` to the end of the last `COMMIT`.
pub fn succeed(
    conn: &mut Connection,
    count: usize,
    per_tx: usize,
    now: i64,
) -> anyhow::Result<Duration> {
    let last = i64::try_from(count).context("too many rows")?;
    let per_tx = i64::try_from(per_tx.max(1)).context("too many rows per transaction")?;
    let start = Instant::now();
    let mut first = 1;
    while first <= last {
        let tx = conn.transaction().context("beginning the update")?;
        {
            let mut stmt = tx.prepare_cached(SUCCEED).context("preparing the update")?;
            for id in first..=last.min(first + per_tx - 1) {
                let request_id = format!("req-{id:08x}");
                stmt.execute(params![id, request_id, now])
                    .context("updating a job")?;
            }
        }
        tx.commit().context("committing the update")?;
        first += per_tx;
    }
    Ok(start.elapsed())
}
