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
//! So every write transaction of purgeq, and the WAL reset, first waits for its turn, in the
//! order it asked, through a file beside the database (`<database>-turn`): a ticket lock.
//! - Drawing a ticket: under an exclusive `flock` of the whole file, held for three system
//!   calls, read the counter (the file's first 8 bytes), lock the ticket's own byte (`8 + n`,
//!   an open-file-description `fcntl` lock), write the counter + 1.
//! - Waiting: lock the byte of the ticket before (`8 + n - 1`), in the kernel, which wakes the
//!   waiter the moment its holder lets go (a waiter burns no CPU); then let go of it.
//! - The turn is held until the transaction ends: closing the file releases its byte, which
//!   wakes the next ticket. A process that dies releases its byte too.
//!
//! Only then is SQLite's write lock taken (`BEGIN IMMEDIATE`), nearly always free by then.
//! A plain `flock` (the first version) woke every waiter at each release and let the fastest
//! win: in the large soak a worker's record or the lease reaper still lost for whole leases.
//!
//! Invariant: the turn is an optimisation, never what keeps data safe. SQLite's own lock still
//! guards every write: a program that writes without a turn (an operator's `sqlite3`), a
//! rollback still running after its turn was given back, or a turn file that cannot be opened
//! (a read-only directory: the writer then goes without one) only means `BEGIN IMMEDIATE` meets
//! a busy lock and tries again, as it would without turns.
//!
//! N.B. The turn file is never one of SQLite's own files: closing a descriptor of a file
//! drops every process-owned `fcntl` lock the process holds on it, and SQLite's locks are such
//! locks (see `SqliteStore::migration_lock`). The turns' byte locks belong to an open file
//! description instead (`F_OFD_SETLK`, Linux), so each task's own descriptor holds its own
//! ticket; `flock` and `fcntl` locks do not interact on Linux. Elsewhere there are no turns.

use std::fs::File;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::StoreError;

/// Where a database's writers take turns.
#[derive(Debug, Clone)]
pub(super) struct Turns {
    path: PathBuf,
    mode: u32,
}

/// A writer's turn: its ticket's byte lock, released when dropped (closing the descriptor).
#[derive(Debug)]
pub(super) struct Turn {
    _ticket: File,
}

/// The byte of ticket 0; the bytes before it hold the counter.
const FIRST_TICKET_BYTE: u64 = 8;

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
    /// the turn file cannot be opened, written or locked (the writer goes without a turn).
    ///
    /// N.B. Each turn opens the file anew: a byte lock belongs to an open file, so two tasks
    /// of one process sharing a descriptor would share a ticket. A contended turn waits on a
    /// thread of its own, never tokio's blocking pool: the runtime waits for that pool when it
    /// shuts down, and a turn held by a stopped process would then hang the exit. A waiter
    /// abandoned at the deadline keeps its place, takes its turn when it comes and gives it
    /// back at once.
    pub(super) async fn take(&self, deadline: Instant) -> Result<Option<Turn>, StoreError> {
        let no_turn = |e: std::io::Error| {
            tracing::debug!(path = %self.path.display(), error = %e, "no write turn");
            Ok(None)
        };
        let (file, ticket) = match self.open().and_then(|file| draw(&file).map(|n| (file, n))) {
            Ok(drawn) => drawn,
            Err(e) => return no_turn(e),
        };
        let Some(before) = ticket.checked_sub(1) else {
            return Ok(Some(Turn { _ticket: file }));
        };
        match byte_lock(&file, before, Lock::TryWrite) {
            Ok(true) => return pass(file, before).map_or_else(no_turn, |turn| Ok(Some(turn))),
            Ok(false) => {}
            Err(e) => return no_turn(e),
        }
        let (send, taken) = tokio::sync::oneshot::channel();
        let waiter = std::thread::Builder::new()
            .name("purgeq-turn".to_owned())
            .spawn(move || {
                let turn = byte_lock(&file, before, Lock::Write).and_then(|_| pass(file, before));
                // An unwanted turn (the receiver gave up) is dropped, and so passed on.
                let _ = send.send(turn);
            });
        if let Err(e) = waiter {
            return no_turn(e);
        }
        match tokio::time::timeout_at(deadline.into(), taken).await {
            Ok(Ok(Ok(turn))) => Ok(Some(turn)),
            Ok(Ok(Err(e))) => no_turn(e),
            // N.B. The waiter always sends before it ends.
            Ok(Err(_)) => Ok(None),
            Err(_) => Err(StoreError::Busy),
        }
    }

    /// Opens the turn file for reading and writing (the counter), creating it with the
    /// database's mode when missing.
    fn open(&self) -> std::io::Result<File> {
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)
        };
        match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .mode(self.mode)
                    .open(&self.path)?;
                // N.B. Past the umask, so every writer of the group can draw tickets.
                file.set_permissions(std::fs::Permissions::from_mode(self.mode))?;
                Ok(file)
            }
            opened => opened,
        }
    }
}

/// The turn, once the ticket `before` ours has been let go of: its byte is ours for a moment,
/// and released at once.
fn pass(file: File, before: u64) -> std::io::Result<Turn> {
    byte_lock(&file, before, Lock::Unlock)?;
    Ok(Turn { _ticket: file })
}

/// Draws the next ticket into `file`: locks the ticket's byte and counts it, under an `flock`
/// of the whole file (so two writers never draw the same number).
fn draw(file: &File) -> std::io::Result<u64> {
    file.lock()?;
    let drawn = (|| {
        let mut counter = [0u8; 8];
        let ticket = match file.read_at(&mut counter, 0)? {
            8 => u64::from_le_bytes(counter),
            _ => 0,
        };
        if !byte_lock(file, ticket, Lock::TryWrite)? {
            return Err(std::io::Error::other("the next ticket is held"));
        }
        let next = ticket
            .checked_add(1)
            .filter(|n| *n < MAX_TICKETS)
            .unwrap_or(0);
        file.write_at(&next.to_le_bytes(), 0)?;
        Ok(ticket)
    })();
    file.unlock()?;
    drawn
}

/// Tickets wrap around here, far below the largest lockable offset.
const MAX_TICKETS: u64 = 1 << 60;

/// What [`byte_lock`] does.
#[derive(Debug, Clone, Copy)]
enum Lock {
    /// Lock the byte if it is free; `false` if it is held.
    TryWrite,
    /// Wait until the byte is free, then lock it.
    Write,
    /// Release the byte.
    Unlock,
}

/// Locks or releases ticket `ticket`'s byte of `file` with an open-file-description lock.
#[cfg(target_os = "linux")]
fn byte_lock(file: &File, ticket: u64, op: Lock) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd as _;
    let (cmd, kind) = match op {
        Lock::TryWrite => (libc::F_OFD_SETLK, libc::F_WRLCK),
        Lock::Write => (libc::F_OFD_SETLKW, libc::F_WRLCK),
        Lock::Unlock => (libc::F_OFD_SETLK, libc::F_UNLCK),
    };
    let start = libc::off_t::try_from(FIRST_TICKET_BYTE + ticket % MAX_TICKETS)
        .map_err(std::io::Error::other)?;
    // SAFETY: `flock` is plain data; all-zero is a valid value, whose fields are then set.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = start;
    lock.l_len = 1;
    loop {
        // SAFETY: the descriptor is open for the whole call (`file` is borrowed), and `lock`
        // is a valid `flock` for an open-file-description lock (`l_pid` 0).
        if unsafe { libc::fcntl(file.as_raw_fd(), cmd, &lock) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN | libc::EACCES) if matches!(op, Lock::TryWrite) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// No open-file-description locks here: no turns.
#[cfg(not(target_os = "linux"))]
fn byte_lock(_: &File, _: u64, _: Lock) -> std::io::Result<bool> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt as _;
    use std::time::{Duration, Instant};

    use super::{Turns, draw};
    use crate::store::StoreError;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    /// The tickets drawn so far (the turn file's counter).
    fn drawn(turns: &Turns) -> u64 {
        let mut counter = [0u8; 8];
        let file = std::fs::File::open(&turns.path).expect("the turn file");
        file.read_exact_at(&mut counter, 0).expect("the counter");
        u64::from_le_bytes(counter)
    }

    /// Takes a turn in a task of its own once `drawn` tickets are out, and sends `name` when it
    /// has it; holds it 10 ms.
    async fn queue_up(
        turns: &Turns,
        name: &'static str,
        order: &tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) {
        let before = drawn(turns);
        let (turns_, order) = (turns.clone(), order.clone());
        tokio::spawn(async move {
            let turn = turns_
                .take(later())
                .await
                .expect("no error")
                .expect("a turn");
            order.send(name).expect("the test listens");
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(turn);
        });
        while drawn(turns) == before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_turn_is_exclusive_until_dropped_and_turns_come_in_the_order_asked() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let turns = Turns::new(&dir.path().join("q.db"), 0o600);
        let first = turns.take(soon()).await.expect("free").expect("a turn");
        assert!(
            matches!(turns.take(soon()).await, Err(StoreError::Busy)),
            "a second turn waits, and gives up at its deadline"
        );
        let (order, mut taken) = tokio::sync::mpsc::unbounded_channel();
        for name in ["a", "b", "c", "d"] {
            queue_up(&turns, name, &order).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            taken.try_recv().is_err(),
            "nobody has the turn held by the first"
        );
        drop(first);
        for name in ["a", "b", "c", "d"] {
            assert_eq!(taken.recv().await, Some(name));
        }
        // The abandoned ticket (the one that gave up) was passed over: a new one is free.
        let turn = turns.take(soon()).await.expect("free again");
        assert!(turn.is_some());
    }

    #[test]
    fn two_draws_never_get_the_same_ticket() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let turns = Turns::new(&dir.path().join("q.db"), 0o600);
        let (one, two) = (turns.open().expect("open"), turns.open().expect("open"));
        assert_eq!(draw(&one).expect("draw"), 0);
        assert_eq!(draw(&two).expect("draw"), 1);
        assert_eq!(drawn(&turns), 2);
    }

    #[tokio::test]
    async fn without_a_turn_file_a_writer_goes_without_a_turn() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let turns = Turns::new(&dir.path().join("missing-dir").join("q.db"), 0o600);
        let turn = turns.take(soon()).await.expect("not an error");
        assert!(turn.is_none());
    }
}
