//! Keeping SQLite's write-ahead log bounded.
//!
//! SQLite's own checkpoints (every 1000 pages, at commit) are `PASSIVE`: they give up on pages
//! a reader still needs and never shrink the file, so under a steady stream of readers and
//! writers the WAL can grow without end (421 MB in a long soak). The worker therefore runs a
//! `PASSIVE` checkpoint every second (every quarter second while the WAL is over a quarter of
//! [`WAL_BOUND`] and growing), and, when the file is over half of [`WAL_BOUND`], a
//! `TRUNCATE` checkpoint on a connection of its own: it takes its turn as purgeq's writers do
//! (`store/turn.rs`), then the write lock, copies every frame back, waits for the readers still
//! reading the WAL (trying every millisecond, 100 ms at most), and truncates the file to zero
//! bytes; when that fails, the worker looks again a quarter of a second later. Every
//! connection also carries `journal_size_limit` = [`WAL_BOUND`], so a WAL that was reset is
//! cut back to the bound.
//!
//! The worker's connections keep SQLite's `PASSIVE` checkpoint at commit every 1000 pages (a
//! `worker --once` runs no checkpoint task); a `TRUNCATE` that meets it waits it out.
//! A producer (`synchronous=FULL`) checkpoints on its own only once the WAL reaches three
//! quarters of the bound: with a worker keeping it under half, it never does, so a single
//! enqueue does not pay for copying the worker's pages back; with no worker, or while the
//! worker's resets keep failing (the large soak's first seconds), the WAL still stays bounded.
//!
//! Invariant: a checkpoint never loses a commit (it only copies committed frames into the
//! database file); the worst a failed one does is leave the WAL as it was.

use std::ffi::{c_int, c_void};

use sqlx::ConnectOptions as _;

use super::sqlite::sql_err;
use super::{Durability, SqliteStore, StoreError};

/// The documented bound of the WAL file (bytes), kept by the worker's checkpoints.
pub const WAL_BOUND: u64 = 64 * 1024 * 1024;

/// The WAL size (bytes) from which the worker resets the WAL (`TRUNCATE`): half the bound, so
/// that the writes of the second between two looks, and a reset that has to try again, stay
/// under it.
const TRUNCATE_FROM: u64 = WAL_BOUND / 2;

/// How many times, a millisecond apart, the `TRUNCATE` checkpoint tries a lock it waits for
/// (the write lock, then the readers'): about 100 ms in all (see `SqliteStore::truncate`).
const TRUNCATE_TRIES: c_int = 100;

/// How many times the `TRUNCATE` checkpoint tries again, 5 ms apart, while another process's
/// checkpoint runs.
const OTHER_CHECKPOINT_TRIES: u32 = 20;

/// The `TRUNCATE` checkpoint connection's busy handler: SQLite calls it with the number of
/// times it has already been called for this statement; non-zero means "try again".
extern "C" fn every_millisecond(_: *mut c_void, tries: c_int) -> c_int {
    if tries >= TRUNCATE_TRIES {
        return 0;
    }
    std::thread::sleep(std::time::Duration::from_millis(1));
    1
}

/// Replaces the connection's busy handler (SQLite's, from `busy_timeout`) with
/// [`every_millisecond`].
async fn poll_every_millisecond(conn: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    let mut handle = conn.lock_handle().await.map_err(sql_err)?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is this open connection's handle, and `handle` keeps sqlx's worker thread
    // off it while the call runs. The handler is a plain function that ignores its (null)
    // argument, so it outlives the connection and holds no state.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_busy_handler(db, Some(every_millisecond), std::ptr::null_mut())
    };
    if rc == libsqlite3_sys::SQLITE_OK {
        Ok(())
    } else {
        Err(StoreError::Busy)
    }
}

/// The bytes one WAL frame takes: a page of the default 4 KiB and its 24-byte header.
const FRAME_BYTES: u64 = 4096 + 24;

/// `wal_autocheckpoint` (frames) for a connection: SQLite's default of 1000 for the worker;
/// for a producer, three quarters of the bound, past the worker's reset at half of it. When
/// it was the bound in pages, the frames' headers alone put the file 0.6% past the bound
/// before any producer checkpointed, and the large soak's first seconds, while its workers'
/// resets kept failing, peaked at 67.8 and 74.5 MB.
pub(super) fn autocheckpoint(durability: Durability) -> String {
    match durability {
        Durability::Normal => "1000".to_owned(),
        Durability::Full => (WAL_BOUND * 3 / 4 / FRAME_BYTES).to_string(),
    }
}

/// The WAL size (bytes) from which a process that is done with the store closes its
/// connections instead of leaving them to the exit (see `SqliteStore::close`).
const CLOSE_FROM: u64 = 1024 * 1024;

/// What one look at the WAL found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalCheck {
    /// The size of the `-wal` file before the checkpoint, in bytes.
    pub bytes: u64,
    /// Over the size that calls for a reset, and not reset: readers or writers kept the
    /// checkpoint from it (or another process's checkpoint ran throughout). Look again soon.
    pub pending: bool,
}

/// The WAL size (bytes) from which the worker looks at it four times as often: in the large
/// soak on a fast machine the WAL grew by up to 31 MB within a second, so a look every second
/// that found it just under [`TRUNCATE_FROM`] could find it past the bound at the next (74.5 MB
/// in one run).
const WATCH_FROM: u64 = WAL_BOUND / 4;

impl WalCheck {
    /// Whether to look again soon rather than at the usual interval, given the size the look
    /// before this one found: a reset is still due, or the WAL is filling (over [`WATCH_FROM`],
    /// not yet due for a reset, and larger than at the last look: an idle worker beside a WAL
    /// left at 20 MiB looks once a second).
    pub fn look_again_soon(&self, before: u64) -> bool {
        let filling = self.bytes > WATCH_FROM && self.bytes <= TRUNCATE_FROM && self.bytes > before;
        self.pending || filling
    }

    /// The size this look left the WAL at, for the next look's [`Self::look_again_soon`]: 0
    /// once reset.
    pub fn left(&self) -> u64 {
        if self.bytes > TRUNCATE_FROM && !self.pending {
            0
        } else {
            self.bytes
        }
    }
}

impl SqliteStore {
    /// Checkpoints the WAL: `PASSIVE`, or a reset (`TRUNCATE`) when it is over half of
    /// [`WAL_BOUND`].
    pub(super) async fn checkpoint(&self) -> Result<WalCheck, StoreError> {
        let bytes = self.wal_size();
        let pending = if bytes > TRUNCATE_FROM {
            !self.truncate().await?
        } else {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(self.pool())
                .await
                .map_err(sql_err)?;
            false
        };
        Ok(WalCheck { bytes, pending })
    }

    /// A `TRUNCATE` checkpoint on a connection of its own; whether the WAL was reset (or found
    /// reset by another process).
    ///
    /// N.B. It must take the write lock, copy every frame back, then wait for the readers
    /// still reading the WAL: readers that start once every frame is copied read the database
    /// file, so the ones left end within milliseconds. Both waits go through the connection's
    /// busy handler, and SQLite's own sleeps 1, 2, 5, 10, … up to 100 ms: in a large soak it
    /// lost the write lock to writers trying every few milliseconds nearly every time, and
    /// without a busy handler it gave up at the readers with every frame copied (200 tries in
    /// 2 s); either way the WAL reached 285–355 MB. So it first takes a writer's turn
    /// (`store/turn.rs`): purgeq's writers wait behind it instead of racing it. Then this
    /// connection's handler tries every millisecond, [`TRUNCATE_TRIES`] times, for a lock held
    /// by a writer without a turn and for the readers to finish, 100 ms at most. Another
    /// process's checkpoint (SQLite answers -1 frames, at once) is waited out a few
    /// milliseconds at a time.
    async fn truncate(&self) -> Result<bool, StoreError> {
        let _turn = self.take_turn().await?;
        let mut conn = self
            .connect_options()
            .clone()
            .connect()
            .await
            .map_err(sql_err)?;
        poll_every_millisecond(&mut conn).await?;
        let mut others = 0;
        let answer = loop {
            // (busy, frames in the WAL, frames copied back); -1 frames: another checkpoint runs.
            let answer = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut conn)
                .await
                .map_err(sql_err);
            match answer {
                Ok((_, -1, _)) if others < OTHER_CHECKPOINT_TRIES => {
                    others += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                answer => break answer,
            }
        };
        let _ = sqlx::Connection::close(conn).await;
        Ok(answer?.0 == 0)
    }

    /// Ends a short-lived process's use of the store (a producer's). The first process to open
    /// a database that no other process has open reads back every frame of the WAL (about
    /// 0.3 ms per MiB here), and a producer alone leaves its frames behind at exit: with no
    /// worker running, each single enqueue took longer than the one before (5.6 ms at a 6 MB
    /// WAL, 9.5 ms at 19 MB). So from [`CLOSE_FROM`] the process closes its connections: if
    /// they are the database's last (no worker), SQLite checkpoints the WAL and deletes it.
    /// Below it, they are left to the exit, which costs nothing: a close that checkpoints
    /// costs about a millisecond, more than reading back a small WAL.
    pub(super) async fn close(self) {
        if self.wal_size() >= CLOSE_FROM {
            self.writer().close().await;
            self.pool().close().await;
        }
    }

    /// The size of the `-wal` file (0 when there is none).
    fn wal_size(&self) -> u64 {
        let mut wal = self.file().as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(wal).map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::{ConnectOptions as _, Connection as _, SqliteConnection};

    use super::SqliteStore;
    use crate::store::{Durability, OpenOptions};

    /// A connection of its own to the store's database (another process's, as far as SQLite
    /// can tell).
    async fn second_connection(store: &SqliteStore) -> SqliteConnection {
        store
            .connect_options()
            .clone()
            .connect()
            .await
            .expect("a second connection")
    }

    /// A new database with frames in its WAL, and a connection reading them in a transaction.
    async fn wal_and_reader(dir: &tempfile::TempDir) -> (SqliteStore, SqliteConnection) {
        let path = dir.path().join("queue.db");
        let store = SqliteStore::open(&path, &OpenOptions::new(Durability::Normal))
            .await
            .expect("open");
        sqlx::query("PRAGMA user_version = 7")
            .execute(store.pool())
            .await
            .expect("write a frame");
        let mut reader = second_connection(&store).await;
        sqlx::raw_sql("BEGIN; SELECT count(*) FROM jobs;")
            .execute(&mut reader)
            .await
            .expect("a read transaction on the WAL");
        assert!(store.wal_size() > 0);
        (store, reader)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn truncate_waits_for_a_reader_that_ends_soon_and_empties_the_wal() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (store, mut reader) = wal_and_reader(&dir).await;
        let ends = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            sqlx::raw_sql("COMMIT")
                .execute(&mut reader)
                .await
                .expect("end the read");
            reader
        });
        let reset = store.truncate().await.expect("checkpoint");
        assert!(
            reset,
            "the reset waits out a reader that ends within its wait"
        );
        assert_eq!(store.wal_size(), 0);
        let reader = ends.await.expect("the reader ran");
        reader.close().await.expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn truncate_gives_up_on_a_reader_that_stays_and_keeps_every_frame() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (store, mut reader) = wal_and_reader(&dir).await;
        let before = store.wal_size();
        let reset = store.truncate().await.expect("checkpoint");
        assert!(!reset, "a reader of the WAL outlasted the wait");
        assert_eq!(store.wal_size(), before, "the WAL is left as it was");
        sqlx::raw_sql("COMMIT")
            .execute(&mut reader)
            .await
            .expect("end the read");
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(store.pool())
            .await
            .expect("read");
        assert_eq!(version, 7, "no commit was lost");
        let reset = store.truncate().await.expect("checkpoint");
        assert!(reset, "with the reader gone, the reset succeeds");
        assert_eq!(store.wal_size(), 0);
        reader.close().await.expect("close");
    }

    /// A producer's store after queueing enough jobs that its WAL is over [`super::CLOSE_FROM`].
    async fn producer_with_a_large_wal(dir: &tempfile::TempDir) -> SqliteStore {
        let path = dir.path().join("queue.db");
        let store = SqliteStore::open(&path, &OpenOptions::new(Durability::Full))
            .await
            .expect("open");
        let jobs = crate::store::NewJobs {
            provider: crate::model::Provider::Qiniu,
            account: crate::model::DEFAULT_ACCOUNT.to_owned(),
            action: crate::model::Action::RefreshUrl,
            tag: None,
            not_before: 0,
            priority: crate::model::Priority::Normal,
            targets: (0..20_000)
                .map(|i| Some(format!("https://cdn.example.com/{i}.js")))
                .collect(),
        };
        crate::store::backend::enqueue(&store, &jobs, 1)
            .await
            .expect("enqueue");
        assert!(
            store.wal_size() >= super::CLOSE_FROM,
            "{}",
            store.wal_size()
        );
        store
    }

    async fn queued(path: &std::path::Path) -> i64 {
        let store = SqliteStore::open(path, &OpenOptions::new(Durability::Normal))
            .await
            .expect("reopen");
        sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(store.pool())
            .await
            .expect("count")
    }

    #[tokio::test]
    async fn the_last_process_to_close_a_large_wal_checkpoints_and_deletes_it() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = producer_with_a_large_wal(&dir).await;
        let path = store.file().to_owned();
        store.close().await;
        let wal = dir.path().join("queue.db-wal");
        assert!(!wal.exists(), "the WAL is gone after the last close");
        assert_eq!(queued(&path).await, 20_000, "no commit was lost");
    }

    #[tokio::test]
    async fn a_close_beside_another_open_connection_leaves_the_wal_to_it() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = producer_with_a_large_wal(&dir).await;
        let path = store.file().to_owned();
        let mut worker = second_connection(&store).await;
        let before = store.wal_size();
        store.close().await;
        let wal = dir.path().join("queue.db-wal");
        let after = std::fs::metadata(&wal)
            .expect("the WAL is still there")
            .len();
        assert_eq!(
            after, before,
            "nothing was checkpointed under the open connection"
        );
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(&mut worker)
            .await
            .expect("count");
        assert_eq!(n, 20_000);
        worker.close().await.expect("close");
        assert_eq!(queued(&path).await, 20_000);
    }

    #[test]
    fn a_filling_wal_is_looked_at_again_soon() {
        use super::{TRUNCATE_FROM, WATCH_FROM, WalCheck};
        let look = |bytes, pending, before| WalCheck { bytes, pending }.look_again_soon(before);
        assert!(
            !look(WATCH_FROM, false, 0),
            "a quarter full: the usual interval"
        );
        assert!(look(WATCH_FROM + 1, false, 0), "filling");
        assert!(
            look(TRUNCATE_FROM, false, WATCH_FROM),
            "filling, not yet due for a reset"
        );
        assert!(
            !look(TRUNCATE_FROM, false, TRUNCATE_FROM),
            "not growing: the usual interval"
        );
        assert!(
            !look(TRUNCATE_FROM + 1, false, 0),
            "over half: it was just reset"
        );
        assert!(look(TRUNCATE_FROM + 1, true, 0), "due and not reset");
        assert!(
            look(TRUNCATE_FROM + 1, true, TRUNCATE_FROM + 1),
            "due, growing or not"
        );
        assert!(!look(0, false, 0));
        let reset = WalCheck {
            bytes: TRUNCATE_FROM + 1,
            pending: false,
        };
        assert_eq!(reset.left(), 0, "a reset WAL starts again from nothing");
        let filling = WalCheck {
            bytes: WATCH_FROM + 1,
            pending: false,
        };
        assert_eq!(filling.left(), WATCH_FROM + 1);
        assert!(
            look(WATCH_FROM + 2, false, reset.left()),
            "filling again after a reset"
        );
    }
}
