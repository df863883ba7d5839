//! Confirmation at the CDN: the store side of the worker's confirm loop, and what `wait` reads.
//!
//! Invariants:
//! - A `confirming` job holds no lease: a worker takes due ones by moving their `confirm_at`
//!   past the query ([`Store::take_confirmations`], one short transaction), and that value is
//!   the fence of the result ([`Store::record_confirmations`] changes a job only if it is still
//!   `confirming` with the same `confirm_at`). A worker that dies mid-query leaves the jobs
//!   `confirming`; they are due again when the hold ends. Nothing is lost.
//! - No transaction spans a query: the audit row is written before it ([`Store::begin_query`])
//!   and completed with the jobs' results in one transaction after it.
//! - [`Store::wait_counts`] only reads.

mod postgres;
pub(super) mod sqlite;

use serde::Serialize;

use super::backend::{Backend, Tx};
use super::{CallEnd, Store, StoreError, dispatch};
use crate::model::{Action, JobState, Provider};

/// Which confirming jobs a worker takes.
#[derive(Debug, Clone)]
pub struct TakeConfirmations {
    /// Provider.
    pub provider: Provider,
    /// Account.
    pub account: String,
    /// Jobs with `confirm_at <= now` are due.
    pub now: i64,
    /// Their `confirm_at` becomes this while the worker asks (its hold, and the fence).
    pub hold_until: i64,
    /// The due jobs of at most this many requests, earliest due first (jobs without a request
    /// id, confirmed by URL, count as one request).
    pub limit: i64,
}

/// A confirming job a worker took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirming {
    /// Job id.
    pub id: i64,
    /// Action.
    pub action: Action,
    /// The target whose CDN task tells: the job's own, or the directory whose refresh served
    /// it in its place (directory escalation).
    pub target: Option<String>,
    /// Attempts spent.
    pub attempts: i64,
    /// Enqueued (ms).
    pub created_at: i64,
    /// Accepted by the provider (ms).
    pub accepted_at: i64,
    /// The request id to ask about; `None`: ask by URL.
    pub request_id: Option<String>,
    /// The `confirm_at` the take set: the fence of the result.
    pub fence: i64,
}

/// The audit row of a confirmation query, written before it is sent.
#[derive(Debug, Clone)]
pub struct NewQuery {
    /// Provider.
    pub provider: Provider,
    /// Account.
    pub account: String,
    /// `refresh_list`, `prefetch_list`.
    pub operation: &'static str,
    /// Worker id.
    pub worker: String,
    /// The jobs asked about.
    pub job_ids: Vec<i64>,
    /// Distinct targets asked about.
    pub target_count: i64,
}

/// A confirming job's new state after a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfirmUpdate {
    /// Job id.
    pub id: i64,
    /// The `confirm_at` it was taken with; the update applies only if it is unchanged.
    pub fence: i64,
    /// New state: `confirming` (ask again), `succeeded`, `queued` (sent again) or `failed`.
    pub state: JobState,
    /// Attempts spent.
    pub attempts: i64,
    /// Next eligible time, for `queued` (ms).
    pub next_at: i64,
    /// When to ask again, for `confirming` (ms).
    pub confirm_at: Option<i64>,
    /// When the CDN says the task ended (ms).
    pub confirmed_at: Option<i64>,
    /// The CDN's detail (kept if `None`).
    pub cdn_detail: Option<String>,
    /// Error to record (kept if `None`).
    pub last_error: Option<String>,
}

/// What a worker writes after a confirmation query, in one transaction.
#[derive(Debug, Clone)]
pub struct ConfirmRecord {
    /// Now (ms).
    pub now: i64,
    /// The query's audit completion.
    pub call: Option<CallEnd>,
    /// The jobs' new states.
    pub jobs: Vec<ConfirmUpdate>,
}

/// The jobs `wait` follows: the listed ids, or every job with the tag and/or enqueued since.
#[derive(Debug, Clone, Default)]
pub struct WaitSelection {
    /// Explicit ids.
    pub ids: Vec<i64>,
    /// With no ids: jobs with this tag...
    pub tag: Option<String>,
    /// ...and enqueued at or after this (ms)...
    pub since: Option<i64>,
    /// ...and of this provider account.
    pub account: Option<String>,
}

/// A confirmation update as one row: id, fence, state, attempts, next_at, confirm_at,
/// confirmed_at, cdn_detail, last_error (both backends read it positionally).
pub(super) type ConfirmRow<'a> = (
    i64,
    i64,
    &'static str,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<&'a str>,
    Option<&'a str>,
);

pub(super) fn confirm_row(u: &ConfirmUpdate) -> ConfirmRow<'_> {
    (
        u.id,
        u.fence,
        u.state.as_str(),
        u.attempts,
        u.next_at,
        u.confirm_at,
        u.confirmed_at,
        u.cdn_detail.as_deref(),
        u.last_error.as_deref(),
    )
}

/// The confirmation statement texts that differ between the dialects (see
/// `store/backend.rs::Dialect`); the rest is written once in [`confirm_statements!`].
pub(super) struct ConfirmDialect {
    /// Moves `confirm_at` of the due jobs of the first `$5` requests of an account to `$1`:
    /// `$2` provider, `$3` account, `$4` now; returns them.
    pub take_confirming: &'static str,
    /// Links call `$1` to those of the jobs `$2` (list) that still exist.
    pub link_query_jobs: &'static str,
    /// Jobs per state with tag `$1`, enqueued at or after `$2`, of account `$3` (each NULL:
    /// any).
    pub wait_by_filter: &'static str,
    /// Jobs per state among the ids `$1` (list).
    pub wait_by_ids: &'static str,
}

/// What a confirmation write returns: how many jobs it changed.
pub(super) type Changed = Result<u64, StoreError>;

/// The statements confirmation needs. Each runs one statement; all but the fenced update are
/// written once ([`confirm_statements!`]).
pub(super) trait ConfirmBackend: Backend {
    /// The statement texts of this dialect.
    const CONFIRM_SQL: ConfirmDialect;

    /// Takes due confirming jobs, moving their `confirm_at` to the hold.
    async fn take_confirming(
        &self,
        tx: &mut Tx<Self>,
        req: &TakeConfirmations,
    ) -> Result<Vec<Confirming>, StoreError>;

    /// The earliest `confirm_at` of the account's confirming jobs.
    async fn next_confirm(&self, provider: Provider, account: &str) -> Result<Span, StoreError>;

    /// Writes a query's audit row (started at `query.1`) linked to its jobs; returns its id.
    async fn insert_query(&self, tx: &mut Tx<Self>, query: (&NewQuery, i64)) -> CallId;

    /// Applies the record's confirmation results, fenced; returns how many jobs changed.
    async fn update_confirming(&self, tx: &mut Tx<Self>, rec: &ConfirmRecord) -> Changed;

    /// Jobs per state among the selection.
    async fn wait_counts(&self, sel: &WaitSelection) -> Result<Vec<(JobState, i64)>, StoreError>;
}

/// A due time (ms), if there is one.
type Span = Option<i64>;

/// An audit row's id.
type CallId = Result<i64, StoreError>;

/// The [`ConfirmBackend`] methods whose code is the same for every dialect (see
/// `store/statements.rs` for why a macro). Expects in scope: `sql_err`, `rows`, `Self::list`,
/// `Self::CONFIRM_SQL` and a `pool()` method.
macro_rules! confirm_statements {
    () => {
        async fn take_confirming(
            &self,
            tx: &mut Tx<Self>,
            req: &TakeConfirmations,
        ) -> Result<Vec<Confirming>, StoreError> {
            let query = sqlx::query(Self::CONFIRM_SQL.take_confirming)
                .bind(req.hold_until)
                .bind(req.provider.as_str())
                .bind(&req.account)
                .bind(req.now)
                .bind(req.limit);
            let rows = query.fetch_all(&mut **tx).await.map_err(sql_err)?;
            rows.iter().map(rows::confirming).collect()
        }

        async fn next_confirm(
            &self,
            provider: Provider,
            account: &str,
        ) -> Result<Span, StoreError> {
            let query = sqlx::query(
                "SELECT MIN(confirm_at) AS due FROM jobs
                 WHERE state = 'confirming' AND provider = $1 AND account = $2",
            );
            let query = query.bind(provider.as_str()).bind(account);
            let row = query.fetch_one(self.pool()).await.map_err(sql_err)?;
            rows::Columns::opt_int(&row, "due")
        }

        async fn insert_query(&self, tx: &mut Tx<Self>, query: (&NewQuery, i64)) -> CallId {
            let (q, now) = query;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO calls (provider, account, operation, worker, target_count, started_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(q.provider.as_str())
            .bind(&q.account)
            .bind(q.operation)
            .bind(&q.worker)
            .bind(q.target_count)
            .bind(now)
            .fetch_one(&mut **tx)
            .await
            .map_err(sql_err)?;
            let link = sqlx::query(Self::CONFIRM_SQL.link_query_jobs).bind(id);
            let link = link.bind(Self::list(&q.job_ids)?);
            link.execute(&mut **tx).await.map_err(sql_err)?;
            Ok(id)
        }

        async fn wait_counts(
            &self,
            sel: &WaitSelection,
        ) -> Result<Vec<(JobState, i64)>, StoreError> {
            let query = if sel.ids.is_empty() {
                let query = sqlx::query(Self::CONFIRM_SQL.wait_by_filter).bind(&sel.tag);
                query.bind(sel.since).bind(&sel.account)
            } else {
                sqlx::query(Self::CONFIRM_SQL.wait_by_ids).bind(Self::list(&sel.ids)?)
            };
            let rows = query.fetch_all(self.pool()).await.map_err(sql_err)?;
            rows.iter().map(rows::wait_count).collect()
        }
    };
}
pub(super) use confirm_statements;

/// The columns a confirmation result sets from its row `u` (the [`ConfirmRow`] columns), for
/// `concat!` into each dialect's update, which adds `updated_at`, `finished_at` and the fence.
macro_rules! confirm_set {
    () => {
        "state = u.state,
         attempts = u.attempts,
         next_at = u.next_at,
         confirm_at = u.confirm_at,
         confirmed_at = coalesce(u.confirmed_at, jobs.confirmed_at),
         cdn_detail = coalesce(u.cdn_detail, jobs.cdn_detail),
         last_error = coalesce(u.last_error, jobs.last_error),"
    };
}
pub(super) use confirm_set;

async fn take<B: ConfirmBackend>(
    b: &B,
    req: &TakeConfirmations,
) -> Result<Vec<Confirming>, StoreError> {
    let mut tx = b.begin().await?;
    let mut jobs = b.take_confirming(&mut tx, req).await?;
    tx.commit().await.map_err(B::sql_err)?;
    jobs.sort_by_key(|j| j.id);
    Ok(jobs)
}

async fn begin_query<B: ConfirmBackend>(b: &B, query: &NewQuery) -> Result<i64, StoreError> {
    let mut tx = b.begin().await?;
    let id = b
        .insert_query(&mut tx, (query, crate::clock::now_ms()))
        .await?;
    tx.commit().await.map_err(B::sql_err)?;
    Ok(id)
}

async fn record<B: ConfirmBackend>(b: &B, rec: &ConfirmRecord) -> Result<u64, StoreError> {
    let mut tx = b.begin().await?;
    if let Some(call) = &rec.call {
        b.finish_call(&mut tx, call, rec.now).await?;
    }
    let changed = if rec.jobs.is_empty() {
        0
    } else {
        b.update_confirming(&mut tx, rec).await?
    };
    tx.commit().await.map_err(B::sql_err)?;
    Ok(changed)
}

impl Store {
    /// Takes the due confirming jobs of up to `req.limit` requests of one account, holding them
    /// until `req.hold_until`.
    pub async fn take_confirmations(
        &self,
        req: &TakeConfirmations,
    ) -> Result<Vec<Confirming>, StoreError> {
        dispatch!(self, s => take(s, req).await)
    }

    /// When the account's next confirming job is due (ms); `None` when it has none.
    pub async fn next_confirmation(
        &self,
        provider: Provider,
        account: &str,
    ) -> Result<Option<i64>, StoreError> {
        dispatch!(self, s => s.next_confirm(provider, account).await)
    }

    /// Writes the audit row of a confirmation query before it is sent; returns its id.
    pub async fn begin_query(&self, query: &NewQuery) -> Result<i64, StoreError> {
        dispatch!(self, s => begin_query(s, query).await)
    }

    /// Completes a query's audit row and applies its results (fenced by `confirm_at`), in one
    /// transaction. Returns how many jobs changed.
    pub async fn record_confirmations(&self, rec: &ConfirmRecord) -> Result<u64, StoreError> {
        dispatch!(self, s => record(s, rec).await)
    }

    /// Jobs per state among `sel` (only states with jobs). Reads only.
    pub async fn wait_counts(
        &self,
        sel: &WaitSelection,
    ) -> Result<Vec<(JobState, i64)>, StoreError> {
        dispatch!(self, s => s.wait_counts(sel).await)
    }
}
