//! Reads about a lane's queue for spending its quota: distinct queued targets per lane (the
//! forecast), the distinct ready targets of one lane (directory escalation) and the arrival
//! times of its ready jobs (coalescing). Their statements are the backends'
//! (`statements.rs`).
//!
//! Invariant: read-only, and each read stays within one lane's queued jobs through the
//! `jobs_queued_target` and `jobs_ready` indexes (the forecast reads every queued job once).

use super::backend::Backend;
use super::{LaneTargets, Store, StoreError, dispatch};
use crate::model::Lane;

impl Store {
    /// Distinct queued targets per lane (for the quota forecast), lanes with none left out.
    pub async fn queued_targets(&self) -> Result<Vec<LaneTargets>, StoreError> {
        dispatch!(self, s => Backend::queued_targets(s).await)
    }

    /// Up to `limit` distinct targets of the lane's jobs ready at `now`, in target order.
    pub async fn ready_targets(
        &self,
        lane: &Lane,
        now: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => Backend::ready_targets(s, lane, now, limit).await)
    }

    /// The enqueue times (ms) of the oldest and the newest job of the lane ready at `now`, if
    /// it has any.
    pub async fn ready_arrivals(
        &self,
        lane: &Lane,
        now: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        dispatch!(self, s => Backend::ready_arrivals(s, lane, now).await)
    }
}
