//! The worker: claim, call, record, for every lane at once.
//!
//! Invariants:
//! - A job is only changed by the worker holding its lease, and every write is fenced by
//!   `lease_owner` in the store. A lease is longer than the request timeout (checked by
//!   [`WorkerConfig::new`]), so a live worker always records its call before its lease can
//!   expire; a dead worker's jobs are requeued once their lease expires and another worker sends
//!   them again (at most one batch is sent twice per crash).
//! - No transaction is open across a provider call. The audit row is written before the call
//!   and completed, with the jobs' outcomes and lane changes, in one transaction after it.
//! - The worker knows providers only as [`Account`]s: each route of each account runs its own
//!   loop, so a paused or slow lane never delays another. Jobs are claimed for the route's
//!   provider and the account's own name.
//! - An idle route loop sleeps until its next due job, its poll interval, or a wake-up from the
//!   store (enqueue or retry committed; see `store/wake.rs`), whichever comes first. A wake-up
//!   is only a hint: polling stays, so a lost one delays a job by at most the poll interval.
//! - Accounts whose provider can confirm purges get a confirm loop of their own
//!   (`confirm.rs`); accepted jobs wait there as `confirming`, without a lease. With `--once`,
//!   the run ends when nothing is ready and nothing is left to confirm (or after
//!   `--confirm-timeout`).
//! - Shutdown stops claiming, lets a call in flight finish (bounded by the request timeout),
//!   records it, and returns claimed-but-unsent jobs to `queued`.

mod budget;
mod call;
mod config;
mod confirm;
mod pipeline;
mod settle;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{
    ConfirmSettings, DEFAULT_LEASE, Handles, LeaseError, Timeouts, WorkerConfig, worker_id,
};
pub use settle::Policies;

use crate::clock;
use crate::model::{Action, Lane};
use crate::provider::{Account, Route};
use crate::quota::{self, Allowance};
use crate::store::{ClaimedJob, Store, StoreError, Wake};

/// A worker failed in a way it cannot ride out.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often the worker checkpoints a SQLite WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How soon the worker looks again at a WAL that is filling, or that needed a reset and could
/// not be reset (`WalCheck::look_again_soon`).
const CHECKPOINT_AGAIN: Duration = Duration::from_millis(250);

/// The longest a worker sleeps on a paused lane before reading its gate again.
const PAUSED_RECHECK: Duration = Duration::from_secs(60);

struct Shared {
    store: Store,
    config: WorkerConfig,
    handles: Handles,
    shutdown: CancellationToken,
    wake: Wake,
    started: std::time::Instant,
}

/// One route of one account: what its route loops drive.
#[derive(Debug)]
struct Lanes {
    account: Arc<dyn Account>,
    route: Route,
    /// What the route's loops take turns at (`pipeline.rs`).
    turns: pipeline::Turns,
}

impl Lanes {
    /// The loop's name for the watchdog and logs: `qiniu/refresh@main`.
    fn name(&self) -> String {
        format!("{}@{}", self.route.name, self.account.account())
    }

    fn lane(&self, action: Action) -> Lane {
        Lane {
            provider: self.account.provider(),
            account: self.account.account().to_owned(),
            action,
        }
    }
}

/// What one round of a route loop did.
enum Step {
    /// Jobs were claimed and served; look again at once.
    Served,
    /// Nothing could be done; look again after this long.
    Idle(Duration),
}

/// What a round found claimable: the open lanes with their limits (capped by the quota
/// left) and strikes, and the quota known to be left on every lane of the route (paused or
/// not); or when to look again.
enum Open {
    Lanes {
        limits: Vec<(Action, Option<usize>)>,
        strikes: HashMap<Action, i64>,
        left: HashMap<Action, i64>,
    },
    Paused(Duration),
}

/// Runs the worker over `accounts` until `shutdown` is cancelled (or, with `once`, until
/// nothing is ready).
pub async fn run(
    store: Store,
    accounts: Vec<Arc<dyn Account>>,
    config: WorkerConfig,
    handles: Handles,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let wake = if config.once {
        Wake::never()
    } else {
        store.wake(shutdown.child_token())
    };
    let shared = Arc::new(Shared {
        store,
        config,
        handles,
        shutdown,
        wake,
        started: std::time::Instant::now(),
    });
    if let Err(e) = shared.store.optimize().await {
        warn!(error = %e, "could not refresh the planner's statistics");
    }
    let requeued = shared.store.requeue_expired(clock::now_ms()).await?;
    if requeued > 0 {
        info!(requeued, "requeued jobs whose lease expired");
    }
    let mut tasks = JoinSet::new();
    let mut route_tasks = spawn_routes(&shared, &accounts);
    let routes_done = CancellationToken::new();
    for account in accounts.iter().filter(|a| shared.confirms(a.as_ref())) {
        let (shared, account, done) = (
            Arc::clone(&shared),
            Arc::clone(account),
            routes_done.clone(),
        );
        tasks.spawn(async move { shared.confirm_loop(account.as_ref(), &done).await });
    }
    tasks.spawn(async move {
        while let Some(joined) = route_tasks.join_next().await {
            if let Err(e) = joined {
                warn!(error = %e, "a worker task ended abnormally");
            }
        }
        routes_done.cancel();
    });
    if !shared.config.once {
        spawn_housekeeping(&shared, &mut tasks);
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            warn!(error = %e, "a worker task ended abnormally");
        }
    }
    Ok(())
}

/// The loops of every route of every account (two per route that pipelines, see
/// `pipeline.rs`), each route registered with the watchdog.
fn spawn_routes(shared: &Arc<Shared>, accounts: &[Arc<dyn Account>]) -> JoinSet<()> {
    let routes: Vec<Arc<Lanes>> = accounts
        .iter()
        .flat_map(|account| {
            account.routes().iter().map(|route| {
                Arc::new(Lanes {
                    account: Arc::clone(account),
                    route: route.clone(),
                    turns: pipeline::Turns::default(),
                })
            })
        })
        .collect();
    for lanes in &routes {
        shared.handles.notifier.register(&lanes.name());
    }
    let mut route_tasks = JoinSet::new();
    for lanes in routes {
        for slot in 0..pipeline::slots(&lanes.route, shared.store.one_writer()) {
            let (shared, lanes) = (Arc::clone(shared), Arc::clone(&lanes));
            if slot == 0 {
                route_tasks.spawn(async move {
                    let _done = lanes.turns.leader_done().clone().drop_guard();
                    shared.drive(&lanes).await;
                });
            } else {
                route_tasks.spawn(async move { shared.follow(&lanes).await });
            }
        }
    }
    route_tasks
}

/// The long-running worker's housekeeping: the lease reaper, the status line, the WAL's
/// checkpoints, and the shutdown notice.
fn spawn_housekeeping(shared: &Arc<Shared>, tasks: &mut JoinSet<()>) {
    let reaper = Arc::clone(shared);
    tasks.spawn(async move { reaper.reap().await });
    let reporter = Arc::clone(shared);
    tasks.spawn(async move { reporter.report_status().await });
    let checkpointer = Arc::clone(shared);
    tasks.spawn(async move { checkpointer.checkpoint().await });
    let stopper = Arc::clone(shared);
    tasks.spawn(async move {
        stopper.shutdown.cancelled().await;
        info!("stopping: no new claims; the call in flight is finished and recorded");
        stopper.handles.notifier.stopping();
    });
}

impl Shared {
    /// Sleeps for `d` unless shutdown comes first; returns whether shutdown came.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => true,
            () = tokio::time::sleep(d) => false,
        }
    }

    /// Sleeps for `d` unless a wake-up or shutdown comes first; returns whether shutdown came.
    async fn sleep_or_wake(&self, d: Duration, wake: &mut Wake) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => true,
            () = tokio::time::sleep(d) => false,
            () = wake.changed() => false,
        }
    }

    /// Keeps the service manager's `STATUS=` line current: queue depth and paused lanes.
    async fn report_status(&self) {
        let every = self.config.poll_interval.max(Duration::from_secs(1));
        loop {
            match self.store.summary().await {
                Ok(summary) => self
                    .handles
                    .notifier
                    .status(&status_line(&summary, clock::now_ms())),
                Err(e) => warn!(error = %e, "could not read the queue for the status line"),
            }
            if self.sleep(every).await {
                return;
            }
        }
    }

    /// Keeps a SQLite WAL under its bound (`store/wal.rs`); returns at once on PostgreSQL.
    async fn checkpoint(&self) {
        let mut before = 0;
        loop {
            let next = match self.store.checkpoint().await {
                Ok(None) => return,
                Ok(Some(check)) => {
                    let over = check.bytes > crate::store::WAL_BOUND;
                    match (over, check.pending) {
                        (true, true) => warn!(
                            wal_bytes = check.bytes,
                            "the WAL is over its bound and could not be reset yet; trying again"
                        ),
                        (true, false) => {
                            info!(
                                wal_bytes = check.bytes,
                                "the WAL was over its bound; reset it"
                            );
                        }
                        (false, _) => {}
                    }
                    let soon = check.look_again_soon(before);
                    before = check.left();
                    if soon {
                        CHECKPOINT_AGAIN
                    } else {
                        CHECKPOINT_EVERY
                    }
                }
                Err(e) => {
                    warn!(error = %e, "could not checkpoint the WAL");
                    CHECKPOINT_EVERY
                }
            };
            if self.sleep(next).await {
                return;
            }
        }
    }

    /// Requeues expired leases (a crashed worker's jobs) once per lease quarter.
    async fn reap(&self) {
        let every = (self.config.lease() / 4).max(Duration::from_millis(100));
        while !self.sleep(every).await {
            match self.store.requeue_expired(clock::now_ms()).await {
                Ok(0) => {}
                Ok(n) => info!(requeued = n, "requeued jobs whose lease expired"),
                Err(e) => warn!(error = %e, "could not requeue expired leases"),
            }
        }
    }

    async fn drive(&self, lanes: &Lanes) {
        // Idle waits are cut short so the loop itself keeps feeding the watchdog.
        let beat = self
            .handles
            .notifier
            .heartbeat_every()
            .unwrap_or(Duration::MAX);
        let name = lanes.name();
        let mut wake = self.wake.clone();
        while !self.shutdown.is_cancelled() {
            self.handles.notifier.beat(&name);
            // A wake-up that comes while this step runs cuts the next sleep short.
            wake.seen();
            let wait = match self.step(lanes).await {
                Ok(Step::Served) => continue,
                Ok(Step::Idle(wait)) => wait.min(beat),
                Err(e) => {
                    warn!(route = lanes.route.operation, account = lanes.account.account(), error = %e, "worker step failed; retrying");
                    self.config.poll_interval
                }
            };
            if self.config.once {
                // N.B. A once run keeps its routes polling while their account has jobs being
                // confirmed: one the CDN failed is queued again and must be sent again.
                if !self.once_waits(lanes.account.as_ref()).await {
                    return;
                }
                if self.sleep(wait.min(self.config.poll_interval)).await {
                    return;
                }
            } else if self.sleep_or_wake(wait, &mut wake).await {
                return;
            }
        }
    }

    /// The second loop of a route that pipelines (`pipeline.rs`): serves while the leader
    /// finds work, until the leader stops.
    async fn follow(&self, lanes: &Lanes) {
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = lanes.turns.leader_done().cancelled() => return,
                () = lanes.turns.work() => {}
            }
            while !self.shutdown.is_cancelled() {
                match self.step(lanes).await {
                    Ok(Step::Served) => {}
                    Ok(Step::Idle(_)) => break,
                    Err(e) => {
                        warn!(route = lanes.route.operation, account = lanes.account.account(), error = %e, "worker step failed; the route's first loop carries on");
                        break;
                    }
                }
            }
        }
    }

    /// Which of the route's lanes are open now and how many targets each may send, or how
    /// long until one may be. A lane with no quota left waits for the reset.
    async fn open_lanes(&self, lanes: &Lanes, now: i64) -> Result<Open, StoreError> {
        let mut limits = Vec::new();
        let mut strikes = HashMap::new();
        let mut left = HashMap::new();
        // A paused lane is looked at again when its pause ends, or within a minute.
        let mut wake = clock::add(now, PAUSED_RECHECK);
        for (action, limit) in &lanes.route.lanes {
            let gate = self.store.gate(&lanes.lane(*action)).await?;
            // Units the route's batch in flight may spend are not left for this one.
            let reading = gate.as_ref().and_then(|g| self.quota_left(lanes, g, now));
            let known = reading.map(|left| (left - lanes.turns.in_flight(*action)).max(0));
            if let Some(known) = known {
                left.insert(*action, known);
            }
            if let Some(until) = gate
                .as_ref()
                .and_then(|g| g.paused_until)
                .filter(|t| *t > now)
            {
                wake = wake.min(until);
                continue;
            }
            match quota::allowance(*limit, known) {
                Allowance::Send(limit) => {
                    strikes.insert(*action, gate.map_or(0, |g| g.strikes));
                    limits.push((*action, limit));
                }
                // What is left may all go to the batch in flight: look again once it is
                // recorded (with the provider's new reading), not at the reset.
                Allowance::Exhausted if reading.is_some_and(|left| left > 0) => {
                    wake = wake.min(clock::add(now, self.config.poll_interval));
                }
                // N.B. Nothing is written: the reading itself keeps the lane shut until the
                // reset (`status` shows it waiting), so its gate and strikes stay as they are.
                Allowance::Exhausted => {
                    let reset = lanes.account.quota_reset_at(now);
                    wake = wake.min(reset.unwrap_or(wake));
                }
            }
        }
        if limits.is_empty() {
            return Ok(Open::Paused(until(now, wake)));
        }
        Ok(Open::Lanes {
            limits,
            strikes,
            left,
        })
    }

    /// One claim-call-record round. The claim is this loop's turn alone (`pipeline.rs`); the
    /// call and its record overlap the route's other loop.
    async fn step(&self, lanes: &Lanes) -> Result<Step, StoreError> {
        let turn = lanes.turns.claim().await;
        let now = clock::now_ms();
        let (limits, strikes, left) = match self.open_lanes(lanes, now).await? {
            Open::Paused(wait) => return Ok(Step::Idle(wait)),
            Open::Lanes {
                limits,
                strikes,
                left,
            } => (limits, strikes, left),
        };
        if let Some(wait) = self.hold(lanes, &limits, now).await? {
            return Ok(Step::Idle(wait));
        }
        if let Some(escalation) = self.escalation(lanes, &limits, &left, now).await? {
            let _in_flight = lanes.turns.count(pipeline::units(&escalation.jobs, true));
            drop(turn);
            lanes.turns.claimed();
            let dir = Some(escalation.dir.as_str());
            self.serve(lanes, escalation.jobs, dir, (&strikes, now))
                .await?;
            return Ok(Step::Served);
        }
        let claimed = self.claim(lanes, &limits, now).await?;
        if claimed.is_empty() {
            let mut next = clock::add(now, self.config.poll_interval);
            for (action, _) in &limits {
                if let Some(due) = self.store.next_due(&lanes.lane(*action)).await? {
                    next = next.min(due.max(now));
                }
            }
            return Ok(Step::Idle(until(now, next)));
        }
        let _in_flight = lanes.turns.count(pipeline::units(&claimed, false));
        drop(turn);
        lanes.turns.claimed();
        self.serve(lanes, claimed, None, (&strikes, now)).await?;
        Ok(Step::Served)
    }

    /// Claims ready jobs of the open lanes, timing the claim.
    async fn claim(
        &self,
        lanes: &Lanes,
        limits: &[(Action, Option<usize>)],
        now: i64,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let started = std::time::Instant::now();
        let claimed = self
            .store
            .claim(&self.claim_request(lanes, limits.to_vec(), now))
            .await?;
        self.handles.metrics.observe_claim(
            lanes.account.provider(),
            lanes.account.account(),
            lanes.route.operation,
            started.elapsed(),
        );
        Ok(claimed)
    }
}

/// The wait from `now` to `then` (ms), zero if `then` has passed.
fn until(now: i64, then: i64) -> Duration {
    Duration::from_millis(u64::try_from(then - now).unwrap_or(0))
}

/// `42 queued, 3 running, 7 confirming; paused: qiniu/default/refresh_url until 16:00:00`.
fn status_line(summary: &crate::store::Summary, now: i64) -> String {
    let count = |state: crate::model::JobState| -> i64 {
        summary
            .counts
            .iter()
            .filter(|c| c.state == state)
            .map(|c| c.count)
            .sum()
    };
    let mut line = format!(
        "{} queued, {} running",
        count(crate::model::JobState::Queued),
        count(crate::model::JobState::Running)
    );
    let confirming = count(crate::model::JobState::Confirming);
    if confirming > 0 {
        line.push_str(&format!(", {confirming} confirming"));
    }
    let paused: Vec<String> = summary
        .lanes
        .iter()
        .filter_map(|g| {
            g.paused_until
                .filter(|t| *t > now)
                .map(|t| format!("{} until {}", g.lane, clock::short(t)))
        })
        .collect();
    if !paused.is_empty() {
        line.push_str("; paused: ");
        line.push_str(&paused.join(", "));
    }
    line
}
