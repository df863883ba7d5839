//! Turns at SQLite's write lock: purgeq's writers queue in the kernel instead of polling.
//!
//! SQLite has no queue for its write lock: a writer that finds it taken either sleeps in its
//! busy handler or tries again later (`SqliteStore::begin` tries every 1 to 8 ms). With six
//! processes on two cores (the large soak), every release left the lock idle until some
//! waiter's next try, the tries took CPU from the holder, and a process that finished one
//! transaction and began the next at once kept winning: workers' records and confirmation
//! rounds waited past their 2 s busy timeout by the hundred, and the `TRUNCATE` checkpoint
//! that bounds the WAL lost its turn to writers.
//!
//! So every write transaction of purgeq, and the WAL reset, first takes an exclusive `flock`
//! on a file beside the database (`<database>-turn`), waiting in the kernel: each release
//! wakes the waiters at once, and a waiter burns no CPU. The turn is held until the
//! transaction ends. Only then is SQLite's write lock taken (`BEGIN IMMEDIATE`), which is
//! nearly always free by then.
//!
//! Invariant: the turn is an optimisation, never what keeps data safe. SQLite's own lock still
//! guards every write: a program that writes without a turn (an operator's `sqlite3`), a
//! rollback still running after its turn was given back, or a turn file that cannot be opened
//! (a read-only directory: the writer then goes without one) only means `BEGIN IMMEDIATE` meets
//! a busy lock and tries again, as it would without turns.
//!
//! N.B. The turn file is never one of SQLite's own files: closing a descriptor of a file
//! drops every `fcntl` lock the process holds on it, and SQLite's locks are `fcntl` locks (see
//! `SqliteStore::migration_lock`). `flock` and `fcntl` locks do not interact on Linux.

use std::fs::{File, TryLockError};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::StoreError;

/// Where a database's writers take turns.
#[derive(Debug, Clone)]
pub(super) struct Turns {
    path: PathBuf,
    mode: u32,
}

/// A writer's turn: the exclusive `flock` on the turn file, released when dropped (closing
/// the descriptor).
#[derive(Debug)]
pub(super) struct Turn {
    _locked: File,
}

impl Turns {
    /// The turns of the database at `db`; the file is created (with `mode`) when first needed.
    pub(super) fn new(db: &Path, mode: u32) -> Turns {
        let mut path = db.as_os_str().to_owned();
        path.push("-turn");
        Turns {
            path: path.into(),
            mode,
        }
    }

    /// Waits for this process's turn until `deadline`: `Err(Busy)` past it, `Ok(None)` when
    /// the turn file cannot be opened or locked (the writer goes without a turn).
    ///
    /// N.B. Each turn opens the file anew: `flock` locks belong to an open file, so two tasks
    /// of one process sharing a descriptor would both hold the lock. A contended turn waits on
    /// a thread of its own, never tokio's blocking pool: the runtime waits for that pool when
    /// it shuts down, and a lock held by a stopped process would then hang the exit. A waiter
    /// abandoned at the deadline takes its turn when it comes and gives it back at once.
    pub(super) async fn take(&self, deadline: Instant) -> Result<Option<Turn>, StoreError> {
        let file = match self.open() {
            Ok(file) => file,
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "no write turn");
                return Ok(None);
            }
        };
        match file.try_lock() {
            Ok(()) => return Ok(Some(Turn { _locked: file })),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                tracing::debug!(path = %self.path.display(), error = %e, "no write turn");
                return Ok(None);
            }
        }
        let (send, taken) = tokio::sync::oneshot::channel();
        let waiter = std::thread::Builder::new()
            .name("purgeq-turn".to_owned())
            .spawn(move || {
                // An unwanted turn (the receiver gave up) is dropped, and so released.
                let _ = send.send(file.lock().map(|()| Turn { _locked: file }));
            });
        if let Err(e) = waiter {
            tracing::debug!(error = %e, "no thread to wait for a write turn");
            return Ok(None);
        }
        match tokio::time::timeout_at(deadline.into(), taken).await {
            Ok(Ok(Ok(turn))) => Ok(Some(turn)),
            Ok(Ok(Err(e))) => {
                tracing::debug!(path = %self.path.display(), error = %e, "no write turn");
                Ok(None)
            }
            // N.B. The waiter always sends before it ends.
            Ok(Err(_)) => Ok(None),
            Err(_) => Err(StoreError::Busy),
        }
    }

    /// Opens the turn file, read-only when it exists (a `flock` needs no write access, so a
    /// producer allowed to write only the database's files still takes turns), else creating
    /// it.
    fn open(&self) -> std::io::Result<File> {
        match File::open(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .mode(self.mode)
                .open(&self.path),
            opened => opened,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Turns;
    use crate::store::StoreError;

    #[tokio::test]
    async fn a_turn_is_exclusive_until_dropped_and_a_waiter_gets_it_then() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let turns = Turns::new(&dir.path().join("q.db"), 0o600);
        let soon = || Instant::now() + Duration::from_millis(50);
        let first = turns.take(soon()).await.expect("free").expect("a turn");
        assert!(dir.path().join("q.db-turn").exists());
        assert!(
            matches!(turns.take(soon()).await, Err(StoreError::Busy)),
            "a second turn waits, and gives up at its deadline"
        );
        let waiter = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.take(Instant::now() + Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        let second = waiter.await.expect("the waiter ran");
        assert!(matches!(second, Ok(Some(_))), "the waiter got the turn");
    }

    #[tokio::test]
    async fn without_a_turn_file_a_writer_goes_without_a_turn() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let turns = Turns::new(&dir.path().join("missing-dir").join("q.db"), 0o600);
        let turn = turns
            .take(Instant::now() + Duration::from_millis(50))
            .await
            .expect("not an error");
        assert!(turn.is_none());
    }
}
