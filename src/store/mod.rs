//! The store: the queue's durable state and the only place that speaks SQL.
//!
//! Invariants every backend keeps:
//! - An accepted job is never lost: `enqueue` commits all of a call's jobs or none, durably.
//! - A job changes state only through these methods. A `running` job belongs to its lease owner:
//!   every change to it ([`Store::record`], [`Store::release`]) is fenced by `lease_owner`, so a
//!   worker whose lease expired and was taken over can no longer overwrite the new owner's work.
//! - A lease that expires puts the job back to `queued` ([`Store::requeue_expired`]) without
//!   spending an attempt: the worker that held it may never have sent it.
//! - Write transactions are short and never span a provider call.
//! - The claim takes every ready duplicate of each chosen target, so one request serves them all.

mod backend;
mod confirm;
mod dashboard;
mod guard;
mod lanes;
#[cfg(test)]
mod plans;
mod postgres;
mod rows;
mod sqlite;
mod statements;
mod turn;
mod wake;
mod wal;

use backend::Verb;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use confirm::{
    ConfirmRecord, ConfirmUpdate, Confirming, NewQuery, TakeConfirmations, WaitSelection,
};
pub use dashboard::{HourCount, JobPage};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use wake::{SQLITE_PERIOD, Wake};
pub use wal::{WAL_BOUND, WalCheck};

pub use crate::model::ClaimedJob;
use crate::model::{Action, JobState, Lane, Priority, Provider};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database's directory or file could not be created.
    #[error("cannot create {path}")]
    Create {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("cannot open the database {path}")]
    Open {
        /// The database.
        path: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The database is refused untouched: a special file, another application's, or not
    /// usable read-only.
    #[error("refusing the database {path}: {why}")]
    Refused {
        /// The database.
        path: String,
        /// Why.
        why: String,
    },
    /// Migrations failed.
    #[error("cannot bring the database {path} up to date")]
    Migrate {
        /// The database.
        path: String,
        /// Why.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// Another process held the write lock for longer than the busy timeout.
    #[error(
        "the database is locked by another process for longer than the busy timeout; nothing was changed, try again (PURGEQ_BUSY_TIMEOUT sets the wait)"
    )]
    Busy,
    /// The PostgreSQL server could not be reached or refused the login.
    #[error("cannot connect to the PostgreSQL database {url}")]
    Connect {
        /// The URL, password removed.
        url: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The database file or its directory is read-only for this user.
    #[error(
        "the database is read-only for this user; nothing was changed (check the file's and directory's permissions)"
    )]
    ReadOnly,
    /// The disk is full.
    #[error("the disk holding the database is full; nothing was changed")]
    DiskFull,
    /// Any other database error.
    #[error("database error: {0}")]
    Sql(sqlx::Error),
    /// Rows could not be encoded for a statement that carries many at once.
    #[error("cannot encode rows for the database: {0}")]
    Encode(#[source] serde_json::Error),
    /// A stored value has an unknown name (a newer purgeq wrote it?).
    #[error("the database holds an unknown value: {0}")]
    Corrupt(String),
}

/// How a process commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A commit is on disk before it returns (SQLite `synchronous=FULL`). For producers and
    /// operators: an accepted job survives a power cut.
    Full,
    /// A commit may be lost on power loss, never corrupted (SQLite `synchronous=NORMAL`). For
    /// workers, whose leases expire and whose records can be redone.
    Normal,
}

/// How to open a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// How commits reach the disk.
    pub durability: Durability,
    /// How long a SQLite write waits for another process's lock before giving up.
    pub busy_timeout: Duration,
    /// Connections in the pool.
    pub max_connections: u32,
    /// Open read-only (for `status`): nothing is created, migrated or written.
    pub read_only: bool,
}

impl OpenOptions {
    /// The default busy timeout. Enqueue transactions are milliseconds long; this covers bursts
    /// of many concurrent producers.
    pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

    /// The defaults, with `durability`.
    pub fn new(durability: Durability) -> Self {
        OpenOptions {
            durability,
            busy_timeout: Self::BUSY_TIMEOUT,
            max_connections: 4,
            read_only: false,
        }
    }
}

/// Where the queue lives: a SQLite file, or a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite database file (a path, or a `sqlite://` URL).
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

impl Location {
    /// Reads `--db`/`PURGEQ_DB`: a `postgres://` or `postgresql://` URL, a `sqlite://` URL, or a
    /// path.
    pub fn parse(text: &str) -> Location {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Location::Postgres(text.to_owned())
        } else if let Some(path) = text.strip_prefix("sqlite://") {
            Location::Sqlite(PathBuf::from(path))
        } else {
            Location::Sqlite(PathBuf::from(text))
        }
    }

    /// For messages: the path, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(url) => postgres::redact(url),
        }
    }
}

/// The queue's database: SQLite (embedded, the default) or PostgreSQL (for several hosts).
/// The backend is chosen once, at open; every method means the same on both.
#[derive(Debug, Clone)]
pub enum Store {
    /// SQLite.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PgStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Sqlite($s) => $call,
            Store::Postgres($s) => $call,
        }
    };
}
use dispatch;

impl Store {
    /// Opens the database at `location` and applies pending migrations.
    pub async fn connect(location: &Location, options: &OpenOptions) -> Result<Store, StoreError> {
        Ok(match location {
            Location::Sqlite(path) => Store::Sqlite(SqliteStore::open(path, options).await?),
            Location::Postgres(url) => Store::Postgres(PgStore::connect(url, options).await?),
        })
    }

    /// Closes every connection and waits for them to close. On SQLite, the last connection to
    /// close checkpoints the WAL and deletes it, so the next process to open the database has
    /// none to read back; with a worker running, this is never the last connection.
    pub async fn close(self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }

    /// Inserts one job per target, all in one transaction, and returns their ids.
    pub async fn enqueue(&self, jobs: &NewJobs, now: i64) -> Result<Vec<i64>, StoreError> {
        dispatch!(self, s => backend::enqueue(s, jobs, now).await)
    }

    /// Inserts every group's jobs (one group per provider account) in one transaction, and
    /// returns each group's ids.
    pub async fn enqueue_groups(
        &self,
        groups: &[NewJobs],
        now: i64,
    ) -> Result<Vec<Vec<i64>>, StoreError> {
        dispatch!(self, s => backend::enqueue_groups(s, groups, now).await)
    }

    /// Counts per provider and state, every lane gate, and the oldest queued job.
    pub async fn summary(&self) -> Result<Summary, StoreError> {
        dispatch!(self, s => backend::summary(s).await)
    }

    /// Every lane gate row.
    pub async fn gates(&self) -> Result<Vec<Gate>, StoreError> {
        dispatch!(self, s => backend::Backend::gates(s).await)
    }

    /// One lane's gate, if it has a row.
    pub async fn gate(&self, lane: &Lane) -> Result<Option<Gate>, StoreError> {
        dispatch!(self, s => backend::Backend::gate(s, lane).await)
    }

    /// The newest jobs matching `filter`.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let page = JobPage {
            filter: filter.clone(),
            before: None,
        };
        dispatch!(self, s => backend::Backend::job_page(s, &page).await)
    }

    /// One job, if it exists.
    pub async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        dispatch!(self, s => backend::Backend::job(s, id).await)
    }

    /// Every call that carried job `id`, oldest first.
    pub async fn job_calls(&self, id: i64) -> Result<Vec<Call>, StoreError> {
        dispatch!(self, s => backend::Backend::job_calls(s, id).await)
    }

    /// Puts failed or cancelled jobs back in the queue with their attempts reset: every
    /// selected job, or none if a listed one can't be.
    pub async fn retry(&self, selection: &Selection, now: i64) -> Result<VerbResult, StoreError> {
        dispatch!(self, s => backend::verb(s, Verb::Retry, selection, now).await)
    }

    /// Cancels queued jobs: every selected job, or none if a listed one can't be.
    pub async fn cancel(&self, selection: &Selection, now: i64) -> Result<VerbResult, StoreError> {
        dispatch!(self, s => backend::verb(s, Verb::Cancel, selection, now).await)
    }

    /// Sets the priority of queued jobs: every selected job, or none if a listed one isn't
    /// queued.
    pub async fn prioritize(
        &self,
        selection: &Selection,
        priority: Priority,
        now: i64,
    ) -> Result<VerbResult, StoreError> {
        dispatch!(self, s => backend::verb(s, Verb::Prioritize(priority), selection, now).await)
    }

    /// Deletes jobs that ended before `before` (ms), and calls no remaining job refers to.
    pub async fn prune(&self, before: i64, account: Option<&str>) -> Result<Pruned, StoreError> {
        dispatch!(self, s => backend::prune(s, before, account).await)
    }

    /// Puts every job whose lease expired before `now` back in the queue.
    pub async fn requeue_expired(&self, now: i64) -> Result<u64, StoreError> {
        dispatch!(self, s => backend::Backend::requeue_expired(s, now).await)
    }

    /// Claims, for each requested action, every ready job whose target is among the next
    /// distinct targets of the lane, in one transaction.
    pub async fn claim(&self, req: &ClaimRequest) -> Result<Vec<ClaimedJob>, StoreError> {
        dispatch!(self, s => backend::claim(s, req).await)
    }

    /// Returns claimed jobs that were never sent to the queue, untouched.
    pub async fn release(&self, owner: &str, ids: &[i64], now: i64) -> Result<u64, StoreError> {
        dispatch!(self, s => backend::Backend::release(s, owner, ids, now).await)
    }

    /// Renews the leases of the call's jobs that the worker still holds and writes the audit
    /// row linked to them, in one transaction, timed after the write lock is taken: a worker
    /// that waited for the lock sends only what it still owns, with a full lease ahead of it.
    /// `None` if it holds none of them any more. Fresh leases (`NewCall::lease` `None`) are
    /// not renewed: the row is written for every listed job.
    pub async fn begin_call(&self, call: &NewCall) -> Result<Option<StartedCall>, StoreError> {
        dispatch!(self, s => backend::begin_call(s, call).await)
    }

    /// Completes a call's audit row, applies the jobs' new states (fenced by lease owner) and
    /// the lane changes, in one transaction. Returns how many jobs changed: fewer than given
    /// means another worker took some over after their lease expired.
    pub async fn record(&self, rec: &Record) -> Result<u64, StoreError> {
        dispatch!(self, s => backend::record(s, rec).await)
    }

    /// When the next queued job of `lane` becomes ready (ms), if it has any.
    pub async fn next_due(&self, lane: &Lane) -> Result<Option<i64>, StoreError> {
        dispatch!(self, s => backend::Backend::next_due(s, lane).await)
    }

    /// The cached access token of a provider account, if any.
    pub async fn token(
        &self,
        provider: Provider,
        account: &str,
    ) -> Result<Option<CachedToken>, StoreError> {
        dispatch!(self, s => backend::Backend::token(s, provider, account).await)
    }

    /// Caches a provider account's access token, replacing the previous one.
    pub async fn save_token(
        &self,
        provider: Provider,
        account: &str,
        token: &CachedToken,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => backend::Backend::save_token(s, provider, account, token).await)
    }

    /// Refreshes the query planner's statistics (a worker does it when it starts, so its claims
    /// use the indexes even on a table that just grew by a bulk enqueue).
    pub async fn optimize(&self) -> Result<(), StoreError> {
        dispatch!(self, s => backend::Backend::optimize(s).await)
    }

    /// Starts the signal that wakes an idle worker when jobs become ready (PostgreSQL
    /// `LISTEN`, SQLite a watch on the WAL file or `PRAGMA data_version`; see
    /// `store/wake.rs`), until `stop`.
    pub fn wake(&self, stop: tokio_util::sync::CancellationToken) -> Wake {
        dispatch!(self, s => s.wake(stop))
    }

    /// Whether writes run one at a time for the whole database (SQLite's one write lock):
    /// more writers in one worker then only wait for each other.
    pub fn one_writer(&self) -> bool {
        matches!(self, Store::Sqlite(_))
    }

    /// Keeps a SQLite WAL bounded (see `store/wal.rs`): checkpoints it and says what it found;
    /// `None` on PostgreSQL, which needs nothing of the kind.
    pub async fn checkpoint(&self) -> Result<Option<WalCheck>, StoreError> {
        match self {
            Store::Sqlite(s) => s.checkpoint().await.map(Some),
            Store::Postgres(_) => Ok(None),
        }
    }

    /// Whether any job of `provider` is queued, running or being confirmed.
    pub async fn has_pending(&self, provider: Provider) -> Result<bool, StoreError> {
        dispatch!(self, s => backend::Backend::has_pending(s, provider).await)
    }

    /// Queued and running jobs per provider, account and state (zero counts left out).
    pub async fn pending_accounts(&self) -> Result<Vec<AccountCount>, StoreError> {
        dispatch!(self, s => backend::Backend::pending_accounts(s).await)
    }

    /// Claims every ready job of one of the request's lanes whose target is in `targets`, in
    /// one transaction (the request's `actions` are not used).
    pub async fn claim_listed(
        &self,
        req: &ClaimRequest,
        action: Action,
        targets: &[String],
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        dispatch!(self, s => backend::claim_listed(s, req, action, targets).await)
    }
}

/// `options` without the pool's idle and lifetime reaping. sqlx 0.9.0's reaper can read a
/// wrapped-around idle count and spin at 100% CPU forever (launchbadge/sqlx#3645, fixed after
/// 0.9.0 by sqlx PR 4289); without an idle timeout or a maximum lifetime, and with no minimum
/// of connections, sqlx starts no reaper at all. purgeq's pools are small and its connections
/// are cheap to keep: nothing is lost.
fn pool_options<DB: sqlx::Database>(
    options: sqlx::pool::PoolOptions<DB>,
) -> sqlx::pool::PoolOptions<DB> {
    options
        .idle_timeout(None)
        .max_lifetime(None)
        .min_connections(0)
}

/// The job states that are final, for SQL: a job in one of them never changes on its own
/// (see [`JobState::is_final`]; a unit test keeps the two lists equal).
macro_rules! final_states {
    () => {
        "('succeeded', 'failed', 'cancelled')"
    };
}

/// The states in which a provider has accepted the job, for SQL: `accepted_at` is set on entry.
macro_rules! accepted_states {
    () => {
        "('confirming', 'succeeded')"
    };
}
pub(crate) use accepted_states;
pub(crate) use final_states;

/// How `enqueue` and bulk operations refer to jobs of one kind.
#[derive(Debug, Clone)]
pub struct NewJobs {
    /// Provider to call.
    pub provider: Provider,
    /// Provider account.
    pub account: String,
    /// What to do.
    pub action: Action,
    /// The producer's label.
    pub tag: Option<String>,
    /// Not eligible before this time (ms).
    pub not_before: i64,
    /// How soon the jobs should go out.
    pub priority: Priority,
    /// One job per entry; `None` only for an account-wide refresh with no URL.
    pub targets: Vec<Option<String>>,
}

/// One job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    /// Job id.
    pub id: i64,
    /// Provider.
    pub provider: Provider,
    /// Provider account.
    pub account: String,
    /// Action.
    pub action: Action,
    /// Target URL or directory; `None` for an account-wide refresh.
    pub target: Option<String>,
    /// Producer's label.
    pub tag: Option<String>,
    /// State.
    pub state: JobState,
    /// Attempts spent (transient failures).
    pub attempts: i64,
    /// Not eligible before (ms).
    pub next_at: i64,
    /// Worker holding the lease, while running.
    pub lease_owner: Option<String>,
    /// When the lease expires (ms), while running.
    pub lease_expires_at: Option<i64>,
    /// Provider request id of the call that settled the job.
    pub request_id: Option<String>,
    /// Provider code of the last call.
    pub provider_code: Option<i64>,
    /// Last error, kept after a retry for the record.
    pub last_error: Option<String>,
    /// Enqueued (ms).
    pub created_at: i64,
    /// Last changed (ms).
    pub updated_at: i64,
    /// Reached an end state (ms).
    pub finished_at: Option<i64>,
    /// How soon it should go out.
    pub priority: Priority,
    /// The directory whose refresh served this URL job in its place (directory escalation).
    pub served_by_dir: Option<String>,
    /// Last accepted by the provider (ms).
    pub accepted_at: Option<i64>,
    /// While confirming: when the worker next asks the CDN (ms).
    pub confirm_at: Option<i64>,
    /// When the CDN said the task ended (ms).
    pub confirmed_at: Option<i64>,
    /// The CDN's last word on the task.
    pub cdn_detail: Option<String>,
}

/// One provider call, as audited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Call {
    /// Call id.
    pub id: i64,
    /// Provider.
    pub provider: Provider,
    /// Account.
    pub account: String,
    /// `refresh`, `prefetch` or `refresh_all`.
    pub operation: String,
    /// Worker that made it.
    pub worker: String,
    /// Distinct targets sent.
    pub target_count: i64,
    /// Sent (ms).
    pub started_at: i64,
    /// Answer or failure recorded (ms); `None` if the worker died mid-call.
    pub finished_at: Option<i64>,
    /// HTTP status.
    pub http_status: Option<i64>,
    /// Provider body code.
    pub provider_code: Option<i64>,
    /// Provider request id.
    pub request_id: Option<String>,
    /// Transport trace id (Qiniu `X-Reqid`).
    pub trace_id: Option<String>,
    /// Outcome class.
    pub outcome: Option<String>,
    /// Message.
    pub message: Option<String>,
}

/// A lane's gate and quota, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gate {
    /// The lane.
    pub lane: Lane,
    /// Paused until (ms), if paused.
    pub paused_until: Option<i64>,
    /// Consecutive failures that paused it, for the backoff.
    pub strikes: i64,
    /// Why it is paused.
    pub reason: Option<String>,
    /// Daily quota, as last reported.
    pub quota_day: Option<i64>,
    /// Daily quota left, as last reported.
    pub surplus_day: Option<i64>,
    /// When the quota was reported (ms).
    pub quota_at: Option<i64>,
}

/// Counts for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Jobs per provider and state (zero counts left out).
    pub counts: Vec<StateCount>,
    /// Every lane with a gate row.
    pub lanes: Vec<Gate>,
    /// Enqueue time of the oldest queued job (ms).
    pub oldest_queued_at: Option<i64>,
}

/// How many distinct targets a lane has queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaneTargets {
    /// The lane.
    pub lane: Lane,
    /// Distinct queued targets.
    pub targets: i64,
}

/// Jobs of one provider in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateCount {
    /// Provider.
    pub provider: Provider,
    /// State.
    pub state: JobState,
    /// How many.
    pub count: i64,
}

/// Queued or running jobs of one provider account in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountCount {
    /// Provider.
    pub provider: Provider,
    /// Account.
    pub account: String,
    /// State (queued or running).
    pub state: JobState,
    /// How many.
    pub count: i64,
}

/// Filters for listing jobs. Every set field must match.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// State.
    pub state: Option<JobState>,
    /// Provider.
    pub provider: Option<Provider>,
    /// Tag, exactly.
    pub tag: Option<String>,
    /// Substring of the target.
    pub url_contains: Option<String>,
    /// Changed at or after (ms).
    pub updated_since: Option<i64>,
    /// Provider account.
    pub account: Option<String>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// Which jobs an operator verb applies to: the listed ids, or every job matching the filters.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Explicit ids: each must exist and be in a state the verb accepts.
    pub ids: Vec<i64>,
    /// With no ids: every job of this provider...
    pub provider: Option<Provider>,
    /// ...and this tag...
    pub tag: Option<String>,
    /// ...and this account, in a state the verb accepts.
    pub account: Option<String>,
}

/// A job an operator verb refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The job id.
    pub id: i64,
    /// Its state, if it exists.
    pub state: Option<JobState>,
    /// Why.
    pub reason: String,
}

/// The result of an operator verb: either every selected job changed, or none did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerbResult {
    /// These jobs changed.
    Changed(Vec<i64>),
    /// Nothing changed because of these.
    Refused(Vec<Refusal>),
}

/// What `prune` deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Finished jobs deleted.
    pub jobs: u64,
    /// Calls no job refers to any more, deleted.
    pub calls: u64,
}

/// What a worker asks the claim for, per action of one provider account.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Provider.
    pub provider: Provider,
    /// Account.
    pub account: String,
    /// For each action: how many distinct targets at most (`None`: every ready job).
    pub actions: Vec<(Action, Option<usize>)>,
    /// The worker's lease owner id.
    pub owner: String,
    /// Lease expiry (ms).
    pub lease_until: i64,
    /// Now (ms): jobs with `next_at <= now` are ready.
    pub now: i64,
}

/// An audit row for a call about to be made.
#[derive(Debug, Clone)]
pub struct NewCall {
    /// Lane provider and account.
    pub provider: Provider,
    /// Account.
    pub account: String,
    /// `refresh`, `prefetch`, `refresh_all`.
    pub operation: &'static str,
    /// Worker id, the jobs' lease owner.
    pub worker: String,
    /// The call refreshes a whole account: it carries one target whatever its jobs' URLs.
    pub account_wide: bool,
    /// Jobs it is meant to carry.
    pub job_ids: Vec<i64>,
    /// The jobs' leases are renewed to this long from the moment the call is written; `None`
    /// when they are fresh (they outlast the call and its record) and are left as they are.
    pub lease: Option<std::time::Duration>,
}

/// A call written to the audit trail, about to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedCall {
    /// The call's id.
    pub id: i64,
    /// The jobs the worker still holds, now under a fresh lease: only these may be sent.
    pub held: Vec<i64>,
}

/// The completion of an audit row.
#[derive(Debug, Clone)]
pub struct CallEnd {
    /// The call.
    pub call_id: i64,
    /// HTTP status.
    pub http_status: Option<u16>,
    /// Body code.
    pub provider_code: Option<i64>,
    /// Provider request id.
    pub request_id: Option<String>,
    /// Transport trace id.
    pub trace_id: Option<String>,
    /// Outcome label.
    pub outcome: &'static str,
    /// Message.
    pub message: String,
}

/// The new state of one claimed job, computed by the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobUpdate {
    /// Job id.
    pub id: i64,
    /// New state (`queued` to go back to the queue).
    pub state: JobState,
    /// Attempts spent.
    pub attempts: i64,
    /// Next eligible time (ms).
    pub next_at: i64,
    /// Request id to record (kept if `None`).
    pub request_id: Option<String>,
    /// Provider code.
    pub provider_code: Option<i64>,
    /// Error to record (kept if `None`).
    pub last_error: Option<String>,
    /// The directory whose refresh served the job in place of its own target (kept if `None`).
    pub served_by_dir: Option<String>,
    /// With state `confirming`: when to first ask the CDN (ms). The request id to ask about is
    /// `request_id`; `None` there asks by the job's URL.
    pub confirm_at: Option<i64>,
}

/// A change to a lane's gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateChange {
    /// Pause the lane.
    Pause {
        /// Lane.
        lane: Lane,
        /// Until (ms).
        until: i64,
        /// Consecutive strikes, including this one.
        strikes: i64,
        /// Why.
        reason: String,
    },
    /// The lane works again: clear pause and strikes.
    Open {
        /// Lane.
        lane: Lane,
    },
    /// The provider reported the lane's daily quota.
    Quota {
        /// Lane.
        lane: Lane,
        /// Daily quota.
        quota_day: i64,
        /// Left today.
        surplus_day: i64,
    },
}

/// A provider access token cached for every process sharing the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedToken {
    /// The token.
    pub token: crate::secret::Secret,
    /// When it expires (ms).
    pub expires_at: i64,
    /// When it was obtained (ms).
    pub obtained_at: i64,
}

/// Everything a worker writes after a call, in one transaction.
#[derive(Debug, Clone)]
pub struct Record {
    /// The worker's lease owner id: only its running jobs change.
    pub owner: String,
    /// Now (ms).
    pub now: i64,
    /// The call's audit completion.
    pub call: Option<CallEnd>,
    /// New job states.
    pub jobs: Vec<JobUpdate>,
    /// Gate changes.
    pub gates: Vec<GateChange>,
}
