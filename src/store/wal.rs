//! Keeping SQLite's write-ahead log bounded.
//!
//! SQLite's own checkpoints (every 1000 pages, at commit) are `PASSIVE`: they give up on pages
//! a reader still needs and never shrink the file, so under a steady stream of readers and
//! writers the WAL can grow without end (421 MB in a long soak). The worker therefore runs a
//! `PASSIVE` checkpoint every second, and, when the file is over [`WAL_BOUND`], a `TRUNCATE`
//! checkpoint: it takes the write lock, waits for readers of older snapshots to finish, copies
//! every frame back and truncates the file to zero bytes, tried like every write transaction
//! (after 1, 2, 4, then every 8 ms) within the busy timeout. Every connection also carries
//! `journal_size_limit` = [`WAL_BOUND`], so a WAL that was reset is cut back to the bound.
//!
//! A producer (`synchronous=FULL`) checkpoints on its own only once the WAL reaches the bound
//! (`wal_autocheckpoint`): with a worker running it never does, so a single enqueue never pays
//! for copying the worker's pages back, and with no worker the WAL still stays bounded.
//!
//! Invariant: a checkpoint never loses a commit (it only copies committed frames into the
//! database file); the worst a failed one does is leave the WAL as it was.

use super::sqlite::sql_err;
use super::{Durability, SqliteStore, StoreError};

/// The documented bound of the WAL file (bytes), kept by the worker's checkpoints.
pub const WAL_BOUND: u64 = 64 * 1024 * 1024;

/// `wal_autocheckpoint` (pages) for a connection: SQLite's default of 1000 for the worker, the
/// bound (at the default page size of 4 KiB) for a producer.
pub(super) fn autocheckpoint(durability: Durability) -> String {
    match durability {
        Durability::Normal => "1000".to_owned(),
        Durability::Full => (WAL_BOUND / 4096).to_string(),
    }
}

impl SqliteStore {
    /// Checkpoints the WAL (`PASSIVE`; `TRUNCATE` when it is over [`WAL_BOUND`]) and returns
    /// its size in bytes before the checkpoint.
    pub(super) async fn checkpoint(&self) -> Result<u64, StoreError> {
        let size = self.wal_size();
        if size > WAL_BOUND {
            self.truncate().await?;
        } else {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(self.pool())
                .await
                .map_err(sql_err)?;
        }
        Ok(size)
    }

    /// A `TRUNCATE` checkpoint, tried as often as a write transaction tries for the lock, up to
    /// the busy timeout.
    ///
    /// N.B. It must take the write lock and wait for readers of older snapshots. Through
    /// SQLite's busy handler (sleeps up to 100 ms) it would never win the lock against writers
    /// that try every few milliseconds (`Backend::begin`): in a large soak the WAL grew to 992 MB.
    /// So it runs on the writer pool (no busy handler) and tries as they do. `busy` 1
    /// in its answer means it could not finish; the frames it copied stay copied.
    async fn truncate(&self) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + self.busy_timeout();
        let mut wait = super::sqlite::LOCK_RETRY;
        loop {
            let done = sqlx::query_scalar::<_, i64>("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(self.writer())
                .await
                .map_err(sql_err);
            match done {
                Ok(0) => return Ok(()),
                Ok(_) | Err(StoreError::Busy) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(super::sqlite::LOCK_RETRY_MAX);
                }
                Ok(_) => return Err(StoreError::Busy),
                Err(e) => return Err(e),
            }
        }
    }

    /// The size of the `-wal` file (0 when there is none).
    fn wal_size(&self) -> u64 {
        let mut wal = self.file().as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(wal).map_or(0, |m| m.len())
    }
}
