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
mod sqlite;

use serde::Serialize;

use super::backend::{Backend, Tx};
use super::{CallEnd, Store, StoreError};
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
    /// Target.
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
    /// ...and enqueued at or after this (ms).
    pub since: Option<i64>,
}

/// A confirmation update as one row: id, fence, state, attempts, next_at, confirm_at,
/// confirmed_at, cdn_detail, last_error (both backends read it positionally).
type ConfirmRow<'a> = (
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

fn confirm_row(u: &ConfirmUpdate) -> ConfirmRow<'_> {
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

/// The statements confirmation needs, per dialect. Each runs one statement.
pub(super) trait ConfirmBackend: Backend {
    /// Takes due confirming jobs, moving their `confirm_at` to the hold.
    async fn take_confirming(
        &self,
        tx: &mut Tx<Self>,
        req: &TakeConfirmations,
    ) -> Result<Vec<Confirming>, StoreError>;

    /// The earliest `confirm_at` of the account's confirming jobs.
    async fn next_confirm(
        &self,
        provider: Provider,
        account: &str,
    ) -> Result<Option<i64>, StoreError>;

    /// Writes a query's audit row linked to its jobs; returns its id.
    async fn insert_query(
        &self,
        tx: &mut Tx<Self>,
        query: &NewQuery,
        now: i64,
    ) -> Result<i64, StoreError>;

    /// Applies confirmation results, fenced; returns how many jobs changed.
    async fn update_confirming(
        &self,
        tx: &mut Tx<Self>,
        now: i64,
        rows: &[ConfirmRow<'_>],
    ) -> Result<u64, StoreError>;

    /// Jobs per state among the selection.
    async fn wait_counts(&self, sel: &WaitSelection) -> Result<Vec<(JobState, i64)>, StoreError>;
}

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
        .insert_query(&mut tx, query, crate::clock::now_ms())
        .await?;
    tx.commit().await.map_err(B::sql_err)?;
    Ok(id)
}

async fn record<B: ConfirmBackend>(b: &B, rec: &ConfirmRecord) -> Result<u64, StoreError> {
    let mut tx = b.begin().await?;
    if let Some(call) = &rec.call {
        b.finish_call(&mut tx, call, rec.now).await?;
    }
    let rows: Vec<ConfirmRow<'_>> = rec.jobs.iter().map(confirm_row).collect();
    let changed = if rows.is_empty() {
        0
    } else {
        b.update_confirming(&mut tx, rec.now, &rows).await?
    };
    tx.commit().await.map_err(B::sql_err)?;
    Ok(changed)
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Sqlite($s) => $call,
            Store::Postgres($s) => $call,
        }
    };
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
