//! The seam between the store's control flow and a SQL dialect.
//!
//! [`Backend`] is what differs between SQLite and PostgreSQL: statements and their bind syntax.
//! Everything else (which statements a store operation runs, in which transaction, in which
//! order, and what it concludes from their results) is written once, in the functions of this
//! module, generic over the backend. A backend's methods each run one statement (or a fixed
//! pair), hold no control flow, and decode rows only through [`super::rows`].
//!
//! Invariants the control flow keeps for every backend:
//! - Every write runs in a transaction opened by [`Backend::begin`] (SQLite: `BEGIN IMMEDIATE`),
//!   and committed or dropped (rolled back) before the function returns.
//! - An operator verb on explicit ids changes every listed job or none.
//! - A claim takes every ready duplicate of each chosen target. The distinct targets are the
//!   first ones of the lane's next ready jobs in claim order, found and claimed by one statement
//!   (repeated only when duplicates filled its page, see [`claim_next_targets`]).
//! - `record` completes the audit row, the fenced job updates and the gate changes in one
//!   transaction.

use std::collections::HashSet;

use sqlx::Transaction;

use super::dashboard::JobPage;
use super::rows;
use super::turn::Turn;
use super::{
    AccountCount, CachedToken, Call, CallEnd, ClaimRequest, ClaimedJob, Gate, GateChange, Job,
    JobUpdate, NewCall, NewJobs, Pruned, Record, Selection, StartedCall, StateCount, StoreError,
    Summary, VerbResult,
};
use crate::model::{Action, Lane, Priority, Provider};

/// At most this many ready jobs are read by one claim statement looking for distinct targets.
const CLAIM_PAGE: i64 = 512;

/// Ready jobs read per distinct target wanted (below [`CLAIM_PAGE`]): room for a few
/// duplicates each before the statement has to be repeated.
const CLAIM_PAGE_PER_TARGET: i64 = 4;

/// A backend's open transaction, with the writer's turn (SQLite, see `store/turn.rs`) held
/// until it ends. It dereferences to the connection, as sqlx's transaction does.
pub(super) struct Tx<B: Backend + ?Sized> {
    tx: Transaction<'static, B::Db>,
    _turn: Option<Turn>,
}

impl<B: Backend + ?Sized> Tx<B> {
    /// `tx`, holding `turn` until it is committed or dropped (rolled back).
    pub(super) fn new(tx: Transaction<'static, B::Db>, turn: Option<Turn>) -> Tx<B> {
        Tx { tx, _turn: turn }
    }

    /// Commits, then gives the turn back.
    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl<B: Backend + ?Sized> std::ops::Deref for Tx<B> {
    type Target = <B::Db as sqlx::Database>::Connection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl<B: Backend + ?Sized> std::ops::DerefMut for Tx<B> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// An operator verb that moves jobs between states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    /// `failed` or `cancelled` back to `queued`, attempts reset.
    Retry,
    /// `queued` to `cancelled`.
    Cancel,
    /// A queued job's priority set.
    Prioritize(Priority),
}

impl Verb {
    /// Why the verb does not apply to `job`, or `None` when it does.
    fn refusal(self, job: &Job) -> Option<String> {
        match self {
            Verb::Retry => rows::retry_refusal(job),
            Verb::Cancel => rows::cancel_refusal(job),
            Verb::Prioritize(_) => rows::prioritize_refusal(job),
        }
    }
}

/// The statement texts that differ between the dialects; every other statement is written once
/// in `statements.rs`. Placeholders are `$N` in both. `list` parameters are bound through the
/// backend's `list` (a JSON array for SQLite, an array for PostgreSQL).
pub(super) struct Dialect {
    /// The oldest `created_at` of a queued job; `$1` the providers (list).
    pub oldest_queued: &'static str,
    /// A page of jobs, newest first: state, provider, tag, URL part, updated since, id below,
    /// limit, account (`$1`..`$8`, each filter NULL for any).
    pub job_page: &'static str,
    /// Failed or cancelled job ids under the provider, tag and account filters, locked.
    pub retry_candidates: &'static str,
    /// Queued job ids under the provider, tag and account filters, locked.
    pub cancel_candidates: &'static str,
    /// The listed jobs (`$1`, list), locked, by id.
    pub lock_jobs: &'static str,
    /// Retries the listed jobs (`$1`, list) at `$2`.
    pub retry: &'static str,
    /// Cancels the listed jobs (`$1`, list) at `$2`.
    pub cancel: &'static str,
    /// Sets the priority rank `$3` of the listed queued jobs (`$1`, list) at `$2`.
    pub prioritize: &'static str,
    /// Claims every ready job of a lane: owner, lease until, now, provider, account, action.
    pub claim_every: &'static str,
    /// As `claim_every`, only the jobs whose target is in `$7` (list).
    pub claim_targets: &'static str,
    /// As `claim_every`, only the jobs whose target is among the first `$7` distinct targets
    /// of the lane's next `$8` ready jobs in claim order (see `next_targets!`).
    pub claim_next: &'static str,
    /// Returns `$1`'s running jobs among `$2` (list) to the queue at `$3`.
    pub release: &'static str,
    /// Inserts jobs: the targets are `$7` (list); see `Backend::insert_query`.
    pub insert_jobs: &'static str,
    /// Inserts an audit row: provider, account, operation, worker, account-wide, now, job ids
    /// (list, for the target count); returns its id.
    pub insert_call: &'static str,
    /// Links call `$1` to the jobs `$2` (list).
    pub link_call_jobs: &'static str,
    /// Enqueue-to-finish times of the newest succeeded jobs since `$1`, at most `$2`.
    pub finish_times: &'static str,
    /// Refreshes the planner's statistics.
    pub optimize: &'static str,
    /// Wakes listening workers on commit; `$1` the channel (`None`: the dialect has no such
    /// thing, and workers watch the database instead).
    pub notify_ready: Option<&'static str>,
}

/// One lane of a claim: the request and the action whose lane it is.
#[derive(Debug, Clone, Copy)]
pub(super) struct LaneClaim<'a> {
    /// The claim request (owner, lease, now, provider, account).
    pub req: &'a ClaimRequest,
    /// The lane's action.
    pub action: Action,
}

/// What a claim statement returns.
pub(super) type Claimed = Result<Vec<ClaimedJob>, StoreError>;

/// Distinct targets, as a statement returns them.
pub(super) type Targets = Result<Vec<String>, StoreError>;

/// The first and the last of some times (ms), if there are any.
pub(super) type Span = Option<(i64, i64)>;

/// What a statement that inserts rows returns: their ids.
pub(super) type Ids = Result<Vec<i64>, StoreError>;

/// What a statement that returns nothing returns.
pub(super) type Done = Result<(), StoreError>;

/// A statement of `DB` with its arguments.
pub(super) type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>;

/// The jobs of a call a worker still holds, ascending, and when their leases were renewed (ms).
#[derive(Debug, Clone)]
pub(super) struct Held {
    /// The job ids.
    pub ids: Vec<i64>,
    /// The renewal time, the call's start.
    pub now: i64,
}

/// What one SQL dialect provides. Each method runs one statement (or a fixed pair) and decodes
/// its rows; none decides anything. `tx` methods run inside the caller's transaction. Most are
/// written once for both dialects (`statements.rs`); the rest live in each backend's file.
pub(super) trait Backend: Sync {
    /// The sqlx database.
    type Db: sqlx::Database;

    /// The statement texts of this dialect.
    const SQL: Dialect;

    /// Maps a driver error to the store's, naming the conditions an operator can act on.
    fn sql_err(e: sqlx::Error) -> StoreError;

    /// Opens a write transaction (SQLite: `BEGIN IMMEDIATE`).
    async fn begin(&self) -> Result<Tx<Self>, StoreError>;

    /// Inserts one job per target and returns their ids, ascending.
    async fn insert_jobs(&self, tx: &mut Tx<Self>, jobs: &NewJobs, now: i64) -> Ids;

    /// After a large enqueue: refresh statistics if the backend needs it.
    async fn after_bulk_insert(&self, rows: usize) -> Result<(), StoreError>;

    /// Job counts per provider and state, zero counts left out.
    async fn counts(&self) -> Result<Vec<StateCount>, StoreError>;

    /// The enqueue time of the oldest queued job (ms).
    async fn oldest_queued(&self) -> Result<Option<i64>, StoreError>;

    /// Every lane gate row.
    async fn gates(&self) -> Result<Vec<Gate>, StoreError>;

    /// One lane's gate row.
    async fn gate(&self, lane: &Lane) -> Result<Option<Gate>, StoreError>;

    /// The newest jobs matching the page's filters, below its `before` id.
    async fn job_page(&self, page: &JobPage) -> Result<Vec<Job>, StoreError>;

    /// One job.
    async fn job(&self, id: i64) -> Result<Option<Job>, StoreError>;

    /// Every call that carried job `id`, oldest first.
    async fn job_calls(&self, id: i64) -> Result<Vec<Call>, StoreError>;

    /// The `limit` most recent calls, newest first.
    async fn recent_calls(&self, limit: i64) -> Result<Vec<Call>, StoreError>;

    /// The hourly rollup rows (hour, enqueued, succeeded, failed) from hour `first` on.
    async fn hours(&self, first: i64) -> Result<Vec<(i64, i64, i64, i64)>, StoreError>;

    /// Enqueue-to-finish times (ms) of the newest succeeded jobs since `since`, at most `limit`.
    async fn finish_times(&self, since: i64, limit: i64) -> Result<Vec<i64>, StoreError>;

    /// The ids of every job `verb` applies to under the selection's filters, locked.
    async fn verb_candidates(
        &self,
        tx: &mut Tx<Self>,
        verb: Verb,
        selection: &Selection,
    ) -> Result<Vec<i64>, StoreError>;

    /// The listed jobs that exist, locked, by id.
    async fn lock_jobs(&self, tx: &mut Tx<Self>, ids: &[i64]) -> Result<Vec<Job>, StoreError>;

    /// Applies `verb` to `ids` (only those still in a state it accepts) at `now`.
    async fn apply_verb(&self, tx: &mut Tx<Self>, verb: Verb, ids: (&[i64], i64)) -> Done;

    /// Deletes finished jobs and unreferenced calls older than `before` (ms).
    async fn delete_before(
        &self,
        tx: &mut Tx<Self>,
        before: i64,
        account: Option<&str>,
    ) -> Result<Pruned, StoreError>;

    /// Puts every job whose lease expired before `now` back in the queue.
    async fn requeue_expired(&self, now: i64) -> Result<u64, StoreError>;

    /// Keeps other workers off the lane until the transaction ends (PostgreSQL); a no-op where
    /// the write lock already does it (SQLite).
    async fn lock_lane(&self, tx: &mut Tx<Self>, lane: LaneClaim<'_>) -> Result<(), StoreError>;

    /// `sql` with a lane claim's parameters bound as `$1`..`$6`: owner, lease until, now,
    /// provider, account, action.
    fn claim_query(sql: &'static str, lane: LaneClaim<'_>) -> Query<'static, Self::Db>;

    /// Runs one write statement in a transaction of its own; returns the rows it changed.
    async fn write(&self, query: Query<'static, Self::Db>) -> Result<u64, StoreError>;

    /// The dialect's `insert_jobs` statement with `$1`..`$6` bound: provider, account, action,
    /// tag, due, now (the dialect binds the targets, `$7`).
    fn insert_query(jobs: &NewJobs, now: i64) -> Query<'static, Self::Db>;

    /// `sql` with a lane bound as `$1`..`$3`: provider, account, action.
    fn lane_query(sql: &'static str, lane: &Lane) -> Query<'static, Self::Db>;

    /// Claims every ready job of the lane.
    async fn claim_every(&self, tx: &mut Tx<Self>, lane: LaneClaim<'_>) -> Claimed;

    /// Claims every ready job of the lane whose target is among the first `limit` distinct
    /// targets of its next `page` ready jobs, in claim order.
    async fn claim_next(
        &self,
        tx: &mut Tx<Self>,
        lane: LaneClaim<'_>,
        limit: i64,
        page: i64,
    ) -> Claimed;

    /// Claims every ready job of the lane whose target is in `targets`.
    async fn claim_targets(
        &self,
        tx: &mut Tx<Self>,
        lane: LaneClaim<'_>,
        targets: &[String],
    ) -> Claimed;

    /// Returns `owner`'s running jobs among `ids` to the queue.
    async fn release(&self, owner: &str, ids: &[i64], now: i64) -> Result<u64, StoreError>;

    /// Renews the lease of the call's jobs `worker` still holds, timed after the rows (or the
    /// database) are locked.
    async fn renew_leases(
        &self,
        tx: &mut Tx<Self>,
        call: &NewCall,
        lease: std::time::Duration,
    ) -> Result<Held, StoreError>;

    /// Writes a call's audit row, linked to the held jobs, and returns its id.
    async fn insert_call(
        &self,
        tx: &mut Tx<Self>,
        call: &NewCall,
        held: &Held,
    ) -> Result<i64, StoreError>;

    /// Completes a call's audit row.
    async fn finish_call(&self, tx: &mut Tx<Self>, call: &CallEnd, now: i64) -> Done;

    /// Applies the record's job updates, fenced by its owner's lease; returns how many changed.
    async fn update_jobs(&self, tx: &mut Tx<Self>, rec: &Record) -> Result<u64, StoreError>;

    /// Sets a lane's pause (`until: None` opens it), strikes and reason.
    async fn upsert_pause(&self, tx: &mut Tx<Self>, pause: &Pause<'_>, now: i64) -> Done;

    /// Keeps a lane's latest quota reading.
    async fn upsert_quota(&self, tx: &mut Tx<Self>, quota: &Quota<'_>, now: i64) -> Done;

    /// When the next queued job of `lane` becomes ready (ms).
    async fn next_due(&self, lane: &Lane) -> Result<Option<i64>, StoreError>;

    /// The cached access token of a provider account.
    async fn token(
        &self,
        provider: Provider,
        account: &str,
    ) -> Result<Option<CachedToken>, StoreError>;

    /// Caches a provider account's access token.
    async fn save_token(
        &self,
        provider: Provider,
        account: &str,
        token: &CachedToken,
    ) -> Result<(), StoreError>;

    /// Refreshes the query planner's statistics.
    async fn optimize(&self) -> Result<(), StoreError>;

    /// Whether any job of `provider` is queued, running or being confirmed.
    async fn has_pending(&self, provider: Provider) -> Result<bool, StoreError>;

    /// Queued and running jobs per provider, account and state (zero counts left out).
    async fn pending_accounts(&self) -> Result<Vec<AccountCount>, StoreError>;

    /// Distinct queued targets of the lane.
    async fn queued_targets(&self, lane: &Lane) -> Result<i64, StoreError>;

    /// Up to `limit` distinct targets of the lane's jobs ready at `now`, in target order.
    async fn ready_targets(&self, lane: &Lane, now: i64, limit: i64) -> Targets;

    /// The enqueue times (ms) of the oldest and the newest job of the lane ready at `now`.
    async fn ready_arrivals(&self, lane: &Lane, now: i64) -> Result<Span, StoreError>;

    /// Tells waiting workers, when `tx` commits, that jobs became ready (see `store/wake.rs`).
    async fn notify_ready(&self, tx: &mut Tx<Self>) -> Done;
}

/// A lane's quota reading.
#[derive(Debug, Clone, Copy)]
pub(super) struct Quota<'a> {
    /// The lane.
    pub lane: &'a Lane,
    /// The day's quota.
    pub quota_day: i64,
    /// What is left of it.
    pub surplus_day: i64,
}

/// A lane gate's new pause state.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pause<'a> {
    /// The lane.
    pub lane: &'a Lane,
    /// Paused until (ms); `None` opens the lane.
    pub until: Option<i64>,
    /// Consecutive strikes.
    pub strikes: i64,
    /// Why.
    pub reason: Option<&'a str>,
}

/// Commits `tx`.
async fn commit<B: Backend>(tx: Tx<B>) -> Result<(), StoreError> {
    tx.commit().await.map_err(B::sql_err)
}

/// Inserts one job per target, all in one transaction, and returns their ids.
pub(super) async fn enqueue<B: Backend>(
    b: &B,
    jobs: &NewJobs,
    now: i64,
) -> Result<Vec<i64>, StoreError> {
    if jobs.targets.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = b.begin().await?;
    let ids = b.insert_jobs(&mut tx, jobs, now).await?;
    b.notify_ready(&mut tx).await?;
    commit::<B>(tx).await?;
    b.after_bulk_insert(ids.len()).await?;
    Ok(ids)
}

/// Inserts every group (one per provider account) in one transaction: all or none.
pub(super) async fn enqueue_groups<B: Backend>(
    b: &B,
    groups: &[NewJobs],
    now: i64,
) -> Result<Vec<Vec<i64>>, StoreError> {
    let mut tx = b.begin().await?;
    let mut ids = Vec::with_capacity(groups.len());
    for jobs in groups {
        ids.push(if jobs.targets.is_empty() {
            Vec::new()
        } else {
            b.insert_jobs(&mut tx, jobs, now).await?
        });
    }
    b.notify_ready(&mut tx).await?;
    commit::<B>(tx).await?;
    b.after_bulk_insert(ids.iter().map(Vec::len).sum()).await?;
    Ok(ids)
}

/// Counts per provider and state, every lane gate, and the oldest queued job.
pub(super) async fn summary<B: Backend>(b: &B) -> Result<Summary, StoreError> {
    Ok(Summary {
        counts: b.counts().await?,
        lanes: b.gates().await?,
        oldest_queued_at: b.oldest_queued().await?,
    })
}

/// Applies an operator verb: every selected job it accepts changes, or, if any explicitly listed
/// job can't, nothing changes and every refusal is returned.
pub(super) async fn verb<B: Backend>(
    b: &B,
    verb: Verb,
    selection: &Selection,
    now: i64,
) -> Result<VerbResult, StoreError> {
    let mut tx = b.begin().await?;
    let ids = if selection.ids.is_empty() {
        b.verb_candidates(&mut tx, verb, selection).await?
    } else {
        let found = b.lock_jobs(&mut tx, &selection.ids).await?;
        let refusals = rows::refusals(&selection.ids, &found, |j| verb.refusal(j));
        if !refusals.is_empty() {
            return Ok(VerbResult::Refused(refusals));
        }
        found.iter().map(|j| j.id).collect()
    };
    b.apply_verb(&mut tx, verb, (&ids, now)).await?;
    if verb == Verb::Retry {
        b.notify_ready(&mut tx).await?;
    }
    commit::<B>(tx).await?;
    Ok(VerbResult::Changed(ids))
}

/// Deletes jobs that ended before `before` (ms), and calls no remaining job refers to.
pub(super) async fn prune<B: Backend>(
    b: &B,
    before: i64,
    account: Option<&str>,
) -> Result<Pruned, StoreError> {
    let mut tx = b.begin().await?;
    let pruned = b.delete_before(&mut tx, before, account).await?;
    commit::<B>(tx).await?;
    Ok(pruned)
}

/// Claims, for each requested action, every ready job whose target is among the next distinct
/// targets of the lane (or every ready job, with no limit), in one transaction.
pub(super) async fn claim<B: Backend>(
    b: &B,
    req: &ClaimRequest,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let mut tx = b.begin().await?;
    let mut claimed = Vec::new();
    for (action, limit) in &req.actions {
        let lane = LaneClaim {
            req,
            action: *action,
        };
        b.lock_lane(&mut tx, lane).await?;
        let jobs = match limit {
            None => b.claim_every(&mut tx, lane).await?,
            Some(limit) => claim_next_targets(b, &mut tx, lane, *limit).await?,
        };
        claimed.extend(jobs);
    }
    commit::<B>(tx).await?;
    claimed.sort_by_key(|j| j.id);
    Ok(claimed)
}

/// Claims the lane's next `limit` distinct targets with every ready job of each, by priority,
/// then in due order (a target queued at several priorities is first met at its highest).
///
/// One statement reads a page of the next ready jobs and claims all duplicates of the first
/// distinct targets in it. A page short of `limit` distinct targets holds only claimed
/// targets' jobs, so the statement is repeated only when it claimed a whole page or more
/// (many duplicates of few targets), for the targets still missing.
async fn claim_next_targets<B: Backend>(
    b: &B,
    tx: &mut Tx<B>,
    lane: LaneClaim<'_>,
    limit: usize,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let mut claimed = Vec::new();
    let mut missing = limit;
    while missing > 0 {
        let wanted = i64::try_from(missing).unwrap_or(i64::MAX);
        let page = wanted.saturating_mul(CLAIM_PAGE_PER_TARGET).min(CLAIM_PAGE);
        let jobs = b.claim_next(tx, lane, wanted, page).await?;
        let targets: HashSet<&Option<String>> = jobs.iter().map(|j| &j.target).collect();
        let whole_page = jobs.len() as i64 >= page;
        missing = missing.saturating_sub(targets.len());
        let none = jobs.is_empty();
        claimed.extend(jobs);
        if none || !whole_page {
            break;
        }
    }
    Ok(claimed)
}

/// Claims every ready job of one lane whose target is in `targets`, in one transaction.
pub(super) async fn claim_listed<B: Backend>(
    b: &B,
    req: &ClaimRequest,
    action: Action,
    targets: &[String],
) -> Result<Vec<ClaimedJob>, StoreError> {
    let mut tx = b.begin().await?;
    let lane = LaneClaim { req, action };
    b.lock_lane(&mut tx, lane).await?;
    let mut claimed = b.claim_targets(&mut tx, lane, targets).await?;
    commit::<B>(tx).await?;
    claimed.sort_by_key(|j| j.id);
    Ok(claimed)
}

/// Renews the leases of the call's jobs the worker still holds and writes the audit row linked
/// to them, in one transaction. `None` if it holds none of them any more.
pub(super) async fn begin_call<B: Backend>(
    b: &B,
    call: &NewCall,
) -> Result<Option<StartedCall>, StoreError> {
    let mut tx = b.begin().await?;
    let held = match call.lease {
        Some(lease) => b.renew_leases(&mut tx, call, lease).await?,
        // N.B. Fresh leases cannot have expired, so no other worker can have taken a job.
        None => {
            let mut ids = call.job_ids.clone();
            ids.sort_unstable();
            Held {
                ids,
                now: crate::clock::now_ms(),
            }
        }
    };
    if held.ids.is_empty() {
        return Ok(None);
    }
    let id = b.insert_call(&mut tx, call, &held).await?;
    commit::<B>(tx).await?;
    Ok(Some(StartedCall { id, held: held.ids }))
}

/// Completes a call's audit row, applies the jobs' new states (fenced by lease owner) and the
/// lane changes, in one transaction. Returns how many jobs changed.
pub(super) async fn record<B: Backend>(b: &B, rec: &Record) -> Result<u64, StoreError> {
    let mut tx = b.begin().await?;
    if let Some(call) = &rec.call {
        b.finish_call(&mut tx, call, rec.now).await?;
    }
    let changed = if rec.jobs.is_empty() {
        0
    } else {
        b.update_jobs(&mut tx, rec).await?
    };
    for change in &rec.gates {
        apply_gate(b, &mut tx, change, rec.now).await?;
    }
    commit::<B>(tx).await?;
    Ok(changed)
}

async fn apply_gate<B: Backend>(
    b: &B,
    tx: &mut Tx<B>,
    change: &GateChange,
    now: i64,
) -> Result<(), StoreError> {
    // Opening a lane is pausing it until never, with its strikes cleared.
    let pause = match change {
        GateChange::Pause {
            lane,
            until,
            strikes,
            reason,
        } => Pause {
            lane,
            until: Some(*until),
            strikes: *strikes,
            reason: Some(reason),
        },
        GateChange::Open { lane } => Pause {
            lane,
            until: None,
            strikes: 0,
            reason: None,
        },
        GateChange::Quota {
            lane,
            quota_day,
            surplus_day,
        } => {
            let quota = Quota {
                lane,
                quota_day: *quota_day,
                surplus_day: *surplus_day,
            };
            return b.upsert_quota(tx, &quota, now).await;
        }
    };
    b.upsert_pause(tx, &pause, now).await
}

/// A job update as the row both backends read: the explicit column list of the update
/// statement, in this order: id, state, attempts, next_at, request_id, provider_code,
/// last_error, served_by_dir, confirm_at. A new column is added here, in [`update_row`] and in
/// both statements; nothing depends on Rust field names.
pub(super) type UpdateRow<'a> = (
    i64,
    &'static str,
    i64,
    i64,
    Option<&'a str>,
    Option<i64>,
    Option<&'a str>,
    Option<&'a str>,
    Option<i64>,
);

/// `job` as an [`UpdateRow`].
pub(super) fn update_row(job: &JobUpdate) -> UpdateRow<'_> {
    (
        job.id,
        job.state.as_str(),
        job.attempts,
        job.next_at,
        job.request_id.as_deref(),
        job.provider_code,
        job.last_error.as_deref(),
        job.served_by_dir.as_deref(),
        job.confirm_at,
    )
}

/// `value` as JSON, for a statement that takes many rows in one bound parameter.
pub(super) fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(StoreError::Encode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobState;

    #[test]
    fn the_sql_final_states_are_the_models() {
        let sql = super::super::final_states!();
        for state in JobState::ALL {
            let listed = sql.contains(&format!("'{}'", state.as_str()));
            assert_eq!(listed, state.is_final(), "{state} in {sql}");
        }
    }

    #[test]
    fn an_update_row_is_in_column_order() {
        let job = JobUpdate {
            id: 7,
            state: JobState::Failed,
            attempts: 2,
            next_at: 3,
            request_id: Some("r".into()),
            provider_code: Some(400_031),
            last_error: Some("e".into()),
            served_by_dir: Some("d".into()),
            confirm_at: Some(9),
        };
        let json = encode(&update_row(&job)).unwrap();
        assert_eq!(json, r#"[7,"failed",2,3,"r",400031,"e","d",9]"#);
    }
}
