//! Spending a route's quota well: what each lane may ask for, holding bursts until they
//! settle, and directory escalation.
//!
//! Invariants:
//! - A lane never asks for more than its known surplus (`crate::quota`): with nothing left it
//!   is not claimed from until the account's reset (`status` shows it waiting), so no attempt
//!   is spent.
//! - A coalescing route ([`crate::provider::Coalesce`]) holds ready jobs until none has
//!   arrived for its settle time, or its oldest ready job has waited its maximum delay. A
//!   `--once` run does not hold: it drains what is ready.
//! - Directory escalation happens only on a route that drains both the URL and the directory
//!   lane of an account that opted in, when the directory lane is open, the URL quota left cannot
//!   cover the ready URLs and the directory quota has a unit left. Prefetch never escalates:
//!   its route has no directory lane.

use std::collections::HashMap;
use std::time::Duration;

use tracing::info;

use super::{Lanes, Shared};
use crate::clock;
use crate::model::Action;
use crate::planner;
use crate::quota::Reading;
use crate::store::{ClaimRequest, ClaimedJob, Gate, StoreError};

/// The most distinct ready URLs read when looking for a directory to escalate.
const ESCALATION_SCAN: i64 = 100_000;

/// The URL jobs of one directory, claimed to ride one refresh of it.
pub(super) struct Escalation {
    /// The directory.
    pub dir: String,
    /// The URL jobs it serves.
    pub jobs: Vec<ClaimedJob>,
}

impl Shared {
    /// What is known to be left of the lane's daily quota now, from its gate's reading.
    pub(super) fn quota_left(&self, lanes: &Lanes, gate: &Gate, now: i64) -> Option<i64> {
        let reading = Reading::of(gate)?;
        let reset = lanes.account.quota_reset_at(reading.at)?;
        Some(reading.left(now, reset))
    }

    /// How long to hold the route's ready jobs so a burst costs one call; `None` to send now.
    pub(super) async fn hold(
        &self,
        lanes: &Lanes,
        limits: &[(Action, Option<usize>)],
        now: i64,
    ) -> Result<Option<Duration>, StoreError> {
        let Some(window) = lanes.route.coalesce.filter(|_| !self.config.once) else {
            return Ok(None);
        };
        let mut hold: Option<Duration> = None;
        for (action, _) in limits {
            let lane = lanes.lane(*action);
            if let Some((oldest, newest)) = self.store.ready_arrivals(&lane, now).await? {
                match window.hold(oldest, newest, now) {
                    None => return Ok(None),
                    Some(d) => hold = Some(hold.map_or(d, |h| h.min(d))),
                }
            }
        }
        Ok(hold)
    }

    /// Claims the URL jobs of the most crowded directory when escalation applies.
    pub(super) async fn escalation(
        &self,
        lanes: &Lanes,
        limits: &[(Action, Option<usize>)],
        left: &HashMap<Action, i64>,
        now: i64,
    ) -> Result<Option<Escalation>, StoreError> {
        let Some(threshold) = lanes.account.escalate_dir_after() else {
            return Ok(None);
        };
        // N.B. The URL lane may be paused for a used-up quota (that is when escalation helps
        // most); the directory lane must be open, and is not when the account is rate-limited
        // or refused.
        let has = |action| lanes.route.lanes.iter().any(|(a, _)| *a == action);
        let dir_open = limits.iter().any(|(a, _)| *a == Action::RefreshDir);
        if !has(Action::RefreshUrl) || !dir_open {
            return Ok(None);
        }
        let (Some(&url_left), Some(&dir_left)) =
            (left.get(&Action::RefreshUrl), left.get(&Action::RefreshDir))
        else {
            return Ok(None);
        };
        let url_lane = lanes.lane(Action::RefreshUrl);
        let urls = self
            .store
            .ready_targets(&url_lane, now, ESCALATION_SCAN)
            .await?;
        if dir_left < 1 || i64::try_from(urls.len()).unwrap_or(i64::MAX) <= url_left {
            return Ok(None);
        }
        let Some((dir, under)) = planner::crowded_dir(&urls, threshold) else {
            return Ok(None);
        };
        let req = self.claim_request(lanes, Vec::new(), now);
        let jobs = self
            .store
            .claim_listed(&req, Action::RefreshUrl, &under)
            .await?;
        if jobs.is_empty() {
            return Ok(None);
        }
        info!(
            dir,
            urls = under.len(),
            jobs = jobs.len(),
            url_left,
            "directory escalation: one directory refresh serves the URLs queued under it"
        );
        Ok(Some(Escalation { dir, jobs }))
    }

    /// A claim of the route's lanes for this worker, from `now`.
    pub(super) fn claim_request(
        &self,
        lanes: &Lanes,
        actions: Vec<(Action, Option<usize>)>,
        now: i64,
    ) -> ClaimRequest {
        ClaimRequest {
            provider: lanes.account.provider(),
            account: lanes.account.account().to_owned(),
            actions,
            owner: self.config.id.clone(),
            lease_until: clock::add(now, self.config.lease()),
            now,
        }
    }
}
