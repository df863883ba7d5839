//! Keeping SQLite's write-ahead log bounded.
//!
//! SQLite's own checkpoints (every 1000 pages, at commit) are `PASSIVE`: they give up on pages
//! a reader still needs and never shrink the file, so under a steady stream of readers and
//! writers the WAL can grow without end (421 MB in a long soak). The worker therefore runs a
//! `PASSIVE` checkpoint every second, and, when the file is over [`WAL_BOUND`], a `TRUNCATE`
//! checkpoint: it waits (within the busy timeout) for readers of older snapshots to finish,
//! copies every frame back and truncates the file to zero bytes. Every connection also carries
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
        let statement = if size > WAL_BOUND {
            "PRAGMA wal_checkpoint(TRUNCATE)"
        } else {
            "PRAGMA wal_checkpoint(PASSIVE)"
        };
        sqlx::query(statement)
            .execute(self.pool())
            .await
            .map_err(sql_err)?;
        Ok(size)
    }

    /// The size of the `-wal` file (0 when there is none).
    fn wal_size(&self) -> u64 {
        let mut wal = self.file().as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(wal).map_or(0, |m| m.len())
    }
}
