//! Reads about a lane's queue for spending its quota: distinct queued targets per lane (the
//! forecast), the distinct ready targets of one lane (directory escalation) and the arrival
//! times of its ready jobs (coalescing). Their statements are the backends'
//! (`statements.rs`).
//!
//! Invariant: read-only, and each read stays within one lane's queued jobs through the
//! `jobs_queued_target` and `jobs_ready_priority` indexes (the forecast reads the queued jobs
//! of each lane with a quota reading once, and no other lane's).

use super::backend::Backend;
use super::{Gate, LaneTargets, Store, StoreError, dispatch};
use crate::model::Lane;
use crate::quota::Reading;

impl Store {
    /// Distinct queued targets of each lane among `gates` that has a quota reading: what the
    /// quota forecast needs ([`crate::quota::forecasts`]). Lanes without one are not read.
    pub async fn queued_targets(&self, gates: &[Gate]) -> Result<Vec<LaneTargets>, StoreError> {
        let mut counts = Vec::new();
        for gate in gates.iter().filter(|g| Reading::of(g).is_some()) {
            let lane = &gate.lane;
            let targets = dispatch!(self, s => Backend::queued_targets(s, lane).await)?;
            counts.push(LaneTargets {
                lane: lane.clone(),
                targets,
            });
        }
        Ok(counts)
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
