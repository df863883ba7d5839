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

mod sqlite;

use serde::Serialize;

pub use sqlite::{Durability, Store};

use crate::model::{Action, JobState, Lane, Provider};

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
        "the database is locked by another process (waited {waited_secs}s); nothing was changed, try again"
    )]
    Busy {
        /// How long we waited.
        waited_secs: u64,
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
    #[error("database error")]
    Sql(#[source] sqlx::Error),
    /// A stored value has an unknown name (a newer purgeq wrote it?).
    #[error("the database holds an unknown value: {0}")]
    Corrupt(String),
}

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
    /// ...and this tag, in a state the verb accepts.
    pub tag: Option<String>,
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

/// A job claimed by a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// Job id.
    pub id: i64,
    /// Action.
    pub action: Action,
    /// Target.
    pub target: Option<String>,
    /// Attempts spent before this claim.
    pub attempts: i64,
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
    /// Worker id.
    pub worker: String,
    /// Distinct targets in the request.
    pub target_count: i64,
    /// Jobs it carries.
    pub job_ids: Vec<i64>,
    /// Now (ms).
    pub started_at: i64,
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
