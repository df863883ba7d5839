//! Reading rows into the store's types, the same way for every backend.

use std::str::FromStr;

use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::{AccountCount, CachedToken, Call, ClaimedJob, Gate, Job, StateCount, StoreError};
use crate::model::Lane;

/// The column reads the mapping needs, implemented for each backend's row type.
pub(super) trait Columns {
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;

    /// A stored name (provider, action, state) parsed into its enum.
    fn name<T: FromStr>(&self, col: &str) -> Result<T, StoreError>
    where
        T::Err: std::fmt::Display,
    {
        self.text(col)?
            .parse::<T>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

macro_rules! columns_for {
    ($row:ty) => {
        impl Columns for $row {
            fn int(&self, col: &str) -> Result<i64, StoreError> {
                self.try_get(col).map_err(StoreError::Sql)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
                self.try_get(col).map_err(StoreError::Sql)
            }
            fn text(&self, col: &str) -> Result<String, StoreError> {
                self.try_get(col).map_err(StoreError::Sql)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
                self.try_get(col).map_err(StoreError::Sql)
            }
        }
    };
}

columns_for!(SqliteRow);
columns_for!(PgRow);

/// The columns [`job`] reads, for `concat!` into static queries.
macro_rules! job_columns {
    () => {
        "id, provider, account, action, target, tag, state, attempts, next_at, lease_owner, \
         lease_expires_at, request_id, provider_code, last_error, created_at, updated_at, finished_at, \
         priority, served_by_dir, accepted_at, confirm_at, confirmed_at, cdn_detail"
    };
}
pub(super) use job_columns;

pub(super) fn job(row: &impl Columns) -> Result<Job, StoreError> {
    Ok(Job {
        id: row.int("id")?,
        provider: row.name("provider")?,
        account: row.text("account")?,
        action: row.name("action")?,
        target: row.opt_text("target")?,
        tag: row.opt_text("tag")?,
        state: row.name("state")?,
        attempts: row.int("attempts")?,
        next_at: row.int("next_at")?,
        lease_owner: row.opt_text("lease_owner")?,
        lease_expires_at: row.opt_int("lease_expires_at")?,
        request_id: row.opt_text("request_id")?,
        provider_code: row.opt_int("provider_code")?,
        last_error: row.opt_text("last_error")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        finished_at: row.opt_int("finished_at")?,
        priority: priority(row.int("priority")?)?,
        served_by_dir: row.opt_text("served_by_dir")?,
        accepted_at: row.opt_int("accepted_at")?,
        confirm_at: row.opt_int("confirm_at")?,
        confirmed_at: row.opt_int("confirmed_at")?,
        cdn_detail: row.opt_text("cdn_detail")?,
    })
}

fn priority(rank: i64) -> Result<crate::model::Priority, StoreError> {
    crate::model::Priority::from_rank(rank)
        .ok_or_else(|| StoreError::Corrupt(format!("priority rank {rank}")))
}

pub(super) fn call(row: &impl Columns) -> Result<Call, StoreError> {
    Ok(Call {
        id: row.int("id")?,
        provider: row.name("provider")?,
        account: row.text("account")?,
        operation: row.text("operation")?,
        worker: row.text("worker")?,
        target_count: row.int("target_count")?,
        started_at: row.int("started_at")?,
        finished_at: row.opt_int("finished_at")?,
        http_status: row.opt_int("http_status")?,
        provider_code: row.opt_int("provider_code")?,
        request_id: row.opt_text("request_id")?,
        trace_id: row.opt_text("trace_id")?,
        outcome: row.opt_text("outcome")?,
        message: row.opt_text("message")?,
    })
}

pub(super) fn gate(row: &impl Columns) -> Result<Gate, StoreError> {
    Ok(Gate {
        lane: Lane {
            provider: row.name("provider")?,
            account: row.text("account")?,
            action: row.name("action")?,
        },
        paused_until: row.opt_int("paused_until")?,
        strikes: row.int("strikes")?,
        reason: row.opt_text("reason")?,
        quota_day: row.opt_int("quota_day")?,
        surplus_day: row.opt_int("surplus_day")?,
        quota_at: row.opt_int("quota_at")?,
    })
}

pub(super) fn claimed(row: &impl Columns) -> Result<ClaimedJob, StoreError> {
    Ok(ClaimedJob {
        id: row.int("id")?,
        action: row.name("action")?,
        target: row.opt_text("target")?,
        attempts: row.int("attempts")?,
    })
}

pub(super) fn state_count(row: &impl Columns) -> Result<StateCount, StoreError> {
    Ok(StateCount {
        provider: row.name("provider")?,
        state: row.name("state")?,
        count: row.int("n")?,
    })
}

pub(super) fn account_count(row: &impl Columns) -> Result<AccountCount, StoreError> {
    Ok(AccountCount {
        provider: row.name("provider")?,
        account: row.text("account")?,
        state: row.name("state")?,
        count: row.int("n")?,
    })
}

pub(super) fn confirming(row: &impl Columns) -> Result<super::Confirming, StoreError> {
    Ok(super::Confirming {
        id: row.int("id")?,
        action: row.name("action")?,
        target: row.opt_text("target")?,
        attempts: row.int("attempts")?,
        created_at: row.int("created_at")?,
        accepted_at: row.opt_int("accepted_at")?.unwrap_or_default(),
        request_id: row.opt_text("confirm_request_id")?,
        fence: row.int("confirm_at")?,
    })
}

pub(super) fn wait_count(row: &impl Columns) -> Result<(crate::model::JobState, i64), StoreError> {
    Ok((row.name("state")?, row.int("n")?))
}

pub(super) fn token(row: &impl Columns) -> Result<CachedToken, StoreError> {
    Ok(CachedToken {
        token: crate::secret::Secret::new(row.text("access_token")?),
        expires_at: row.int("expires_at")?,
        obtained_at: row.int("obtained_at")?,
    })
}

/// The refusal reason of an operator verb for a job in its current state, or `None` if the
/// verb applies. Shared so both backends refuse alike.
pub(super) fn retry_refusal(job: &Job) -> Option<String> {
    use crate::model::JobState;
    match job.state {
        JobState::Failed | JobState::Cancelled => None,
        JobState::Succeeded => Some(
            "it succeeded; there is nothing to retry (enqueue the target again to purge it again)"
                .to_owned(),
        ),
        JobState::Queued => Some("it is already queued".to_owned()),
        JobState::Running => Some("it is running; a worker holds it".to_owned()),
        JobState::Confirming => Some(
            "it was accepted and is being confirmed at the CDN; wait for its outcome".to_owned(),
        ),
    }
}

/// See [`retry_refusal`]: only a queued job's priority can change.
pub(super) fn prioritize_refusal(job: &Job) -> Option<String> {
    use crate::model::JobState;
    match job.state {
        JobState::Queued => None,
        JobState::Running => {
            Some("it is running: a worker has sent or is about to send it".to_owned())
        }
        JobState::Confirming => {
            Some("it was accepted and is being confirmed at the CDN".to_owned())
        }
        state => Some(format!("it already ended ({state})")),
    }
}

/// See [`retry_refusal`].
pub(super) fn cancel_refusal(job: &Job) -> Option<String> {
    use crate::model::JobState;
    match job.state {
        JobState::Queued => None,
        JobState::Running => Some(
            "it is running: a worker has sent or is about to send it; wait for its outcome"
                .to_owned(),
        ),
        JobState::Confirming => Some(
            "it was accepted by the provider and is being confirmed at the CDN; wait for its outcome"
                .to_owned(),
        ),
        state => Some(format!("it already ended ({state})")),
    }
}

/// Every refusal for an explicit id list: refused states and ids that don't exist.
pub(super) fn refusals(
    ids: &[i64],
    found: &[Job],
    refuse: impl Fn(&Job) -> Option<String>,
) -> Vec<super::Refusal> {
    let mut out: Vec<super::Refusal> = found
        .iter()
        .filter_map(|job| {
            refuse(job).map(|reason| super::Refusal {
                id: job.id,
                state: Some(job.state),
                reason,
            })
        })
        .collect();
    for id in ids {
        if !found.iter().any(|j| j.id == *id) {
            out.push(super::Refusal {
                id: *id,
                state: None,
                reason: "no such job".to_owned(),
            });
        }
    }
    out.sort_by_key(|r| r.id);
    out
}
