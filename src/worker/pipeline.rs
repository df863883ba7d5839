//! Pipelining: a route of one account runs two loops at once ("slots"), so one claims its next
//! batch while the other's request is in flight and recorded. One worker is then no longer bound
//! by its claim, call and record one after another.
//!
//! Invariants:
//! - A route's claims take turns ([`Turns::claim`]): one slot at a time reads the lanes' gates,
//!   decides their limits and claims, so two slots never split one decision.
//! - A route's requests take turns too ([`Turns::send`]), from the audit row until the outcome
//!   is recorded: at most one request of the route is in flight or unrecorded (a kill sends at
//!   most one batch twice), and at most one batch waits, claimed, behind it. A slot waits for
//!   the pacer before it waits for its turn, so the pacer still spaces every request.
//! - Targets claimed and not yet recorded count against their lane's known quota
//!   ([`InFlight`]), so the batch claimed behind a request never asks for units the request in
//!   flight may spend. They stop counting only after the outcome (and with it the provider's
//!   new reading) is recorded.
//! - Routes that refresh a whole account or coalesce bursts run one slot: their point is one
//!   call for many jobs. So does every route on SQLite: its one write lock serializes the
//!   slots' writes anyway, and in the large soak (six processes, 1,800-job requests) the extra
//!   writers starved each other and the checkpoints (the drain stalled, the WAL reached 1.4 GB).
//!   With the writers' turns (`store/turn.rs`) two slots no longer starve anything, but the
//!   trade stays poor: one worker's drain gains a tenth, two workers in the large soak drain a
//!   third slower (BENCHMARKS.md, tenth session).
//! - Only the first slot (the leader) polls and listens for wake-ups; the second follows: it
//!   wakes when the leader claims a batch ([`Turns::claimed`]), serves while there is more, and
//!   waits again at its first idle round. An idle route costs one loop's polling, and the
//!   follower stops when the leader does.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use tokio::sync::{Mutex as TurnLock, MutexGuard, Notify};
use tokio_util::sync::CancellationToken;

use crate::model::{Action, ClaimedJob};
use crate::provider::Route;

/// Slots of a route that pipelines.
const SLOTS: usize = 2;

/// How many loops to run for `route`; `one_writer` when the store takes one write at a time.
pub(super) fn slots(route: &Route, one_writer: bool) -> usize {
    if one_writer || route.account_wide || route.coalesce.is_some() {
        1
    } else {
        SLOTS
    }
}

/// What the slots of one route share.
#[derive(Debug, Default)]
pub(super) struct Turns {
    claiming: TurnLock<()>,
    sending: TurnLock<()>,
    in_flight: Mutex<HashMap<Action, i64>>,
    work: Notify,
    leader_done: CancellationToken,
}

impl Turns {
    /// The leader claimed a batch: there may be more for the follower.
    pub(super) fn claimed(&self) {
        self.work.notify_one();
    }

    /// Returns when the leader claimed a batch since the follower last looked, or never.
    pub(super) async fn work(&self) {
        self.work.notified().await;
    }

    /// Cancelled when the leader's loop has ended.
    pub(super) fn leader_done(&self) -> &CancellationToken {
        &self.leader_done
    }

    /// Waits for this slot's turn to read the gates and claim.
    pub(super) async fn claim(&self) -> MutexGuard<'_, ()> {
        self.claiming.lock().await
    }

    /// Waits for this slot's turn to open its audit row, send and record.
    pub(super) async fn send(&self) -> MutexGuard<'_, ()> {
        self.sending.lock().await
    }

    /// Targets of `action` claimed by the route and not yet recorded.
    pub(super) fn in_flight(&self, action: Action) -> i64 {
        let counts = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.get(&action).copied().unwrap_or(0)
    }

    /// Counts `targets` (per action) as in flight until the returned guard is dropped.
    pub(super) fn count(&self, targets: HashMap<Action, i64>) -> InFlight<'_> {
        let mut counts = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (action, n) in &targets {
            *counts.entry(*action).or_default() += n;
        }
        InFlight {
            turns: self,
            targets,
        }
    }
}

/// Targets counted as in flight; they stop counting when this is dropped.
#[derive(Debug)]
pub(super) struct InFlight<'a> {
    turns: &'a Turns,
    targets: HashMap<Action, i64>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut counts = self
            .turns
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (action, n) in &self.targets {
            if let Some(count) = counts.get_mut(action) {
                *count -= n;
            }
        }
    }
}

/// The quota units a claim will spend: its distinct targets per action, or one directory when
/// its URL jobs ride a directory refresh.
pub(super) fn units(claimed: &[ClaimedJob], escalated: bool) -> HashMap<Action, i64> {
    if escalated {
        return HashMap::from([(Action::RefreshDir, 1)]);
    }
    let distinct: HashSet<(Action, Option<&str>)> = claimed
        .iter()
        .map(|j| (j.action, j.target.as_deref()))
        .collect();
    let mut units = HashMap::new();
    for (action, _) in distinct {
        *units.entry(action).or_default() += 1;
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::job;

    #[test]
    fn in_flight_targets_count_until_their_guard_is_dropped() {
        let turns = Turns::default();
        let claimed = [
            job(1, Action::RefreshUrl, "a"),
            job(2, Action::RefreshUrl, "a"),
            job(3, Action::RefreshUrl, "b"),
            job(4, Action::RefreshDir, "d/"),
        ];
        let first = turns.count(units(&claimed, false));
        assert_eq!(turns.in_flight(Action::RefreshUrl), 2);
        assert_eq!(turns.in_flight(Action::RefreshDir), 1);
        let second = turns.count(units(&claimed[..2], true));
        assert_eq!(turns.in_flight(Action::RefreshDir), 2);
        drop(first);
        assert_eq!(turns.in_flight(Action::RefreshUrl), 0);
        assert_eq!(turns.in_flight(Action::RefreshDir), 1);
        drop(second);
        assert_eq!(turns.in_flight(Action::RefreshDir), 0);
    }
}
