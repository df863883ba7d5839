//! Wake-ups: tells an idle worker that jobs may have become ready, so it need not wait for its
//! next poll.
//!
//! - PostgreSQL: enqueue and the operator's `retry` run `pg_notify` on [`CHANNEL`] inside their
//!   transaction, so the notification goes out when (and only if) they commit. The worker holds
//!   one `LISTEN` connection of its own; when that connection is lost it is re-established and
//!   a wake-up is given anyway (a notification may have been missed while it was down).
//! - SQLite on Linux: the worker watches the database's `-wal` file with inotify. Every commit,
//!   by any process, writes its pages to the WAL, so a write to the file is the signal; an idle
//!   worker costs nothing for it (SQLite in WAL mode needs every process on one host, so no
//!   commit is missed the way it would be on a network file system). A WAL file that cannot be
//!   watched, or another system, falls back to the poll below.
//! - SQLite otherwise: one connection of the worker reads `PRAGMA data_version` every
//!   [`SQLITE_PERIOD`]; the number changes when another connection (any process) commits. The
//!   read is answered from the WAL index in shared memory, but its round trips to sqlx's
//!   connection thread cost an idle worker about 0.8% of a core (`purgeq-bench --only
//!   latency`).
//!
//! Invariant: a wake-up is only a hint. The worker still polls at its poll interval, so a lost
//! signal delays a job, never loses it. A [`Wake`] remembers a signal given while its holder
//! was busy: [`Wake::changed`] returns at once for it.

use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The PostgreSQL channel enqueue and retry notify and workers listen on.
pub(super) const CHANNEL: &str = "purgeq_jobs";

/// How often the SQLite signal reads `PRAGMA data_version`.
pub const SQLITE_PERIOD: Duration = Duration::from_millis(25);

/// How long the signal waits before trying again after its connection failed.
const RETRY: Duration = Duration::from_secs(1);

/// A worker's end of the wake-up signal. Clones share the signal; each keeps its own "seen".
#[derive(Debug, Clone)]
pub struct Wake {
    rx: watch::Receiver<u64>,
}

impl Wake {
    /// A signal that never fires (the worker only polls).
    pub fn never() -> Wake {
        // With its sender gone, `changed` waits forever.
        channel().1
    }

    /// Marks every signal so far as seen.
    pub fn seen(&mut self) {
        self.rx.borrow_and_update();
    }

    /// Returns when a signal came after the last [`Wake::seen`] (at once if one already has);
    /// never, once the signal has stopped.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn channel() -> (watch::Sender<u64>, Wake) {
    let (tx, rx) = watch::channel(0);
    (tx, Wake { rx })
}

fn bump(tx: &watch::Sender<u64>) {
    tx.send_modify(|n| *n = n.wrapping_add(1));
}

/// Starts the SQLite signal: a task watching the WAL file (Linux), or polling with its own
/// connection, until `stop`.
pub(super) fn sqlite(options: SqliteConnectOptions, stop: CancellationToken) -> Wake {
    let (tx, wake) = channel();
    tokio::spawn(async move {
        #[cfg(target_os = "linux")]
        {
            let mut wal = options.get_filename().as_os_str().to_owned();
            wal.push("-wal");
            match inotify_wal::watch(std::path::Path::new(&wal), &tx, &stop).await {
                Ok(()) => return,
                Err(e) => {
                    warn!(error = %e, file = %std::path::Path::new(&wal).display(), "cannot watch the WAL file; reading PRAGMA data_version every 25 ms instead");
                    bump(&tx);
                }
            }
        }
        while !stop.is_cancelled() {
            if let Err(e) = watch_sqlite(&options, &tx, &stop).await {
                warn!(error = %e, "the wake-up signal's connection failed; polling until it is back");
                bump(&tx);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    });
    wake
}

async fn watch_sqlite(
    options: &SqliteConnectOptions,
    tx: &watch::Sender<u64>,
    stop: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let mut conn = options.connect().await?;
    let mut last: i64 = sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(&mut conn)
        .await?;
    let mut tick = tokio::time::interval(SQLITE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut conn)
            .await?;
        if now != last {
            last = now;
            bump(tx);
        }
    }
}

#[cfg(target_os = "linux")]
mod inotify_wal {
    use std::path::Path;

    use inotify::{EventMask, Inotify, StreamExt, WatchMask};
    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;
    use tracing::debug;

    use super::bump;

    /// Bumps `tx` on every write to the WAL file at `wal` until `stop`. A WAL file replaced
    /// or removed is watched again (with a wake-up, a commit may have come meanwhile); one
    /// that cannot be watched is an error.
    pub(super) async fn watch(
        wal: &Path,
        tx: &watch::Sender<u64>,
        stop: &CancellationToken,
    ) -> std::io::Result<()> {
        let inotify = Inotify::init()?;
        let mask = WatchMask::MODIFY | WatchMask::DELETE_SELF | WatchMask::MOVE_SELF;
        let mut watches = inotify.watches();
        watches.add(wal, mask)?;
        let mut events = inotify.into_event_stream([0u8; 1024])?;
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                event = events.next() => event,
            };
            let Some(event) = event else {
                return Err(std::io::Error::other("the inotify stream ended"));
            };
            let event = event?;
            bump(tx);
            if event
                .mask
                .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED)
            {
                debug!("the WAL file was replaced; watching the new one");
                events.watches().add(wal, mask)?;
            }
        }
    }
}

/// Starts the PostgreSQL signal: a task holding a `LISTEN` connection of its own until `stop`.
pub(super) fn postgres(options: PgConnectOptions, stop: CancellationToken) -> Wake {
    let (tx, wake) = channel();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                r = listen(&pool, &tx) => r,
            };
            if let Err(e) = outcome {
                warn!(error = %e, "the wake-up listener failed; polling until it is back");
            }
            bump(&tx);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    });
    wake
}

/// Listens until the connection fails; every notification, and every re-established
/// connection, is a wake-up.
async fn listen(pool: &sqlx::PgPool, tx: &watch::Sender<u64>) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    loop {
        match listener.try_recv().await? {
            Some(_) => bump(tx),
            None => {
                debug!("the wake-up listener's connection was lost and re-established");
                bump(tx);
            }
        }
    }
}
