//! The worker: claim, call, record, for every lane at once.
//!
//! Invariants:
//! - A job is only changed by the worker holding its lease, and every write is fenced by
//!   `lease_owner` in the store. A lease is longer than the request timeout, so a live worker
//!   always records its call before its lease can expire; a dead worker's jobs are requeued once
//!   their lease expires and another worker sends them again (at most one batch is sent twice
//!   per crash).
//! - No transaction is open across a provider call. The audit row is written before the call
//!   and completed, with the jobs' outcomes and lane changes, in one transaction after it.
//! - Each route (Qiniu refresh, Qiniu prefetch, 123pan) runs its own loop, so a paused or slow
//!   lane never delays another.
//! - Shutdown stops claiming, lets a call in flight finish (bounded by the request timeout),
//!   records it, and returns claimed-but-unsent jobs to `queued`.

mod settle;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use settle::{Policies, next_china_midnight};

use crate::clock;
use crate::metrics::Metrics;
use crate::model::{Action, DEFAULT_ACCOUNT, Lane, Provider};
use crate::pacer::Pacer;
use crate::planner::Batch;
use crate::provider::pan123::{self, Pan123Client};
use crate::provider::qiniu::{self, QiniuClient};
use crate::provider::{CallReport, Outcome};
use crate::seal;
use crate::secret::Secret;
use crate::service::Notifier;
use crate::store::{
    CachedToken, CallEnd, ClaimRequest, ClaimedJob, NewCall, Record, Store, StoreError,
};
use settle::Settling;

/// How the worker behaves. [`WorkerConfig::default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's lease owner id (unique per process).
    pub id: String,
    /// How long a claim is valid; must exceed the request timeout.
    pub lease: Duration,
    /// The longest an idle lane waits before looking for new jobs.
    pub poll_interval: Duration,
    /// URLs per Qiniu refresh or prefetch request.
    pub batch_urls: usize,
    /// Directories per Qiniu refresh request.
    pub batch_dirs: usize,
    /// Drain what is ready now, then return.
    pub once: bool,
    /// Backoff and attempt limits.
    pub policies: Policies,
    /// Targets per second per Qiniu account (0: unlimited).
    pub qiniu_targets_per_sec: f64,
    /// Requests per second per Qiniu account (0: unlimited).
    pub qiniu_requests_per_sec: f64,
    /// Requests per second per 123pan account (0: unlimited).
    pub pan123_requests_per_sec: f64,
    /// The service manager (systemd), fed from the loops; a no-op outside systemd.
    pub notifier: Arc<Notifier>,
    /// Where calls and claims are counted and timed (served by `--metrics-listen`).
    pub metrics: Arc<Metrics>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: worker_id(),
            lease: Duration::from_secs(120),
            poll_interval: Duration::from_secs(1),
            batch_urls: qiniu::MAX_REFRESH_URLS,
            batch_dirs: qiniu::MAX_REFRESH_DIRS,
            once: false,
            policies: Policies::default(),
            qiniu_targets_per_sec: f64::from(qiniu::RATE_TARGETS_PER_SEC),
            qiniu_requests_per_sec: f64::from(qiniu::RATE_REQUESTS_PER_SEC),
            pan123_requests_per_sec: pan123::REQUESTS_PER_SEC,
            notifier: Arc::new(Notifier::from_env()),
            metrics: Arc::default(),
        }
    }
}

/// `host:pid:random`, unique enough that two processes never share a lease owner.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}:{}:{:04x}", std::process::id(), fastrand::u16(..))
}

/// The provider clients the worker may use; a provider without one is not drained.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    /// Qiniu fusion CDN.
    pub qiniu: Option<QiniuClient>,
    /// 123pan open platform.
    pub pan123: Option<Pan123Client>,
}

/// A kind of request, with the lanes whose jobs it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    QiniuRefresh,
    QiniuPrefetch,
    Pan123,
}

impl Route {
    fn provider(self) -> Provider {
        match self {
            Route::QiniuRefresh | Route::QiniuPrefetch => Provider::Qiniu,
            Route::Pan123 => Provider::Pan123,
        }
    }

    /// A name for logs and the watchdog.
    fn name(self) -> &'static str {
        match self {
            Route::QiniuRefresh => "qiniu/refresh",
            Route::QiniuPrefetch => "qiniu/prefetch",
            Route::Pan123 => "123pan/refresh_all",
        }
    }

    fn operation(self) -> &'static str {
        match self {
            Route::QiniuRefresh => "refresh",
            Route::QiniuPrefetch => "prefetch",
            Route::Pan123 => "refresh_all",
        }
    }

    /// The lanes this route drains, each with its per-request limit of distinct targets.
    fn actions(self, config: &WorkerConfig) -> Vec<(Action, Option<usize>)> {
        match self {
            Route::QiniuRefresh => vec![
                (Action::RefreshUrl, Some(config.batch_urls)),
                (Action::RefreshDir, Some(config.batch_dirs)),
            ],
            Route::QiniuPrefetch => vec![(Action::PrefetchUrl, Some(config.batch_urls))],
            // One call refreshes the whole account: it serves every ready job.
            Route::Pan123 => vec![(Action::RefreshAll, None)],
        }
    }

    /// Targets one request carries: 123pan's refresh has one, the whole account, whatever the
    /// jobs' URLs.
    fn targets_sent(self, batch: &Batch) -> usize {
        match self {
            Route::QiniuRefresh | Route::QiniuPrefetch => batch.target_count(),
            Route::Pan123 => 1,
        }
    }

    fn quota_reset_at(self, now: i64) -> i64 {
        // 123pan has no daily quota; its lanes never pause for one.
        next_china_midnight(now)
    }
}

/// A worker failed in a way it cannot ride out.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The longest a worker sleeps on a paused lane before reading its gate again.
const PAUSED_RECHECK: Duration = Duration::from_secs(60);

struct Shared {
    store: Store,
    providers: Providers,
    config: WorkerConfig,
    qiniu_pacer: Pacer,
    pan123_pacer: Pacer,
    shutdown: CancellationToken,
}

/// Runs the worker until `shutdown` is cancelled (or, with `once`, until nothing is ready).
pub async fn run(
    store: Store,
    providers: Providers,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let shared = Arc::new(Shared {
        qiniu_pacer: Pacer::new(config.qiniu_targets_per_sec, config.qiniu_requests_per_sec),
        pan123_pacer: Pacer::new(0.0, config.pan123_requests_per_sec),
        store,
        providers,
        config,
        shutdown,
    });
    if let Err(e) = shared.store.optimize().await {
        warn!(error = %e, "could not refresh the planner's statistics");
    }
    let requeued = shared.store.requeue_expired(clock::now_ms()).await?;
    if requeued > 0 {
        info!(requeued, "requeued jobs whose lease expired");
    }
    let mut routes = Vec::new();
    if shared.providers.qiniu.is_some() {
        routes.extend([Route::QiniuRefresh, Route::QiniuPrefetch]);
    }
    if shared.providers.pan123.is_some() {
        routes.push(Route::Pan123);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for route in &routes {
        shared.config.notifier.register(route.name());
    }
    for route in routes {
        let shared = Arc::clone(&shared);
        tasks.spawn(async move { shared.drive(route).await });
    }
    if !shared.config.once {
        let reaper = Arc::clone(&shared);
        tasks.spawn(async move { reaper.reap().await });
        let reporter = Arc::clone(&shared);
        tasks.spawn(async move { reporter.report_status().await });
        let stopper = Arc::clone(&shared);
        tasks.spawn(async move {
            stopper.shutdown.cancelled().await;
            info!("stopping: no new claims; the call in flight is finished and recorded");
            stopper.config.notifier.stopping();
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            warn!(error = %e, "a worker task ended abnormally");
        }
    }
    Ok(())
}

impl Shared {
    /// Sleeps for `d` unless shutdown comes first; returns whether shutdown came.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => true,
            () = tokio::time::sleep(d) => false,
        }
    }

    /// Keeps the service manager's `STATUS=` line current: queue depth and paused lanes.
    async fn report_status(&self) {
        let every = self.config.poll_interval.max(Duration::from_secs(1));
        loop {
            match self.store.summary().await {
                Ok(summary) => self
                    .config
                    .notifier
                    .status(&status_line(&summary, clock::now_ms())),
                Err(e) => warn!(error = %e, "could not read the queue for the status line"),
            }
            if self.sleep(every).await {
                return;
            }
        }
    }

    /// Requeues expired leases (a crashed worker's jobs) once per lease quarter.
    async fn reap(&self) {
        let every = (self.config.lease / 4).max(Duration::from_millis(100));
        while !self.sleep(every).await {
            match self.store.requeue_expired(clock::now_ms()).await {
                Ok(0) => {}
                Ok(n) => info!(requeued = n, "requeued jobs whose lease expired"),
                Err(e) => warn!(error = %e, "could not requeue expired leases"),
            }
        }
    }

    async fn drive(&self, route: Route) {
        let lanes: Vec<(Action, Option<usize>)> = route.actions(&self.config);
        // Idle waits are cut short so the loop itself keeps feeding the watchdog.
        let beat = self
            .config
            .notifier
            .heartbeat_every()
            .unwrap_or(Duration::MAX);
        while !self.shutdown.is_cancelled() {
            self.config.notifier.beat(route.name());
            match self.step(route, &lanes).await {
                Ok(Some(wait)) => {
                    let wait = wait.min(beat);
                    if self.config.once || self.sleep(wait).await {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(route = route.operation(), error = %e, "worker step failed; retrying");
                    if self.config.once || self.sleep(self.config.poll_interval).await {
                        return;
                    }
                }
            }
        }
    }

    /// One claim-call-record round. Returns how long to wait when there was nothing to do.
    async fn step(
        &self,
        route: Route,
        lanes: &[(Action, Option<usize>)],
    ) -> Result<Option<Duration>, StoreError> {
        let now = clock::now_ms();
        let mut open = Vec::new();
        let mut strikes = HashMap::new();
        // A paused lane is looked at again when its pause ends, or within a minute.
        let mut wake = clock::add(now, PAUSED_RECHECK);
        for (action, limit) in lanes {
            let lane = Lane::new(route.provider(), *action);
            let gate = self.store.gate(&lane).await?;
            match gate
                .as_ref()
                .and_then(|g| g.paused_until)
                .filter(|t| *t > now)
            {
                Some(until) => wake = wake.min(until),
                None => {
                    strikes.insert(*action, gate.map_or(0, |g| g.strikes));
                    open.push((*action, *limit));
                }
            }
        }
        if open.is_empty() {
            return Ok(Some(Duration::from_millis(
                u64::try_from(wake - now).unwrap_or(0),
            )));
        }
        let claim_started = std::time::Instant::now();
        let claimed = self
            .store
            .claim(&ClaimRequest {
                provider: route.provider(),
                account: DEFAULT_ACCOUNT.to_owned(),
                actions: open.clone(),
                owner: self.config.id.clone(),
                lease_until: clock::add(now, self.config.lease),
                now,
            })
            .await?;
        self.config.metrics.observe_claim(
            route.provider(),
            route.operation(),
            claim_started.elapsed(),
        );
        if claimed.is_empty() {
            let mut next = clock::add(now, self.config.poll_interval);
            for (action, _) in &open {
                if let Some(due) = self
                    .store
                    .next_due(&Lane::new(route.provider(), *action))
                    .await?
                {
                    next = next.min(due.max(now));
                }
            }
            return Ok(Some(Duration::from_millis(
                u64::try_from(next - now).unwrap_or(0),
            )));
        }
        self.serve(route, claimed, &strikes).await?;
        Ok(None)
    }

    /// Sends the claimed jobs until every one is settled or handed back.
    async fn serve(
        &self,
        route: Route,
        claimed: Vec<ClaimedJob>,
        strikes: &HashMap<Action, i64>,
    ) -> Result<(), StoreError> {
        let attempts: HashMap<i64, i64> = claimed.iter().map(|j| (j.id, j.attempts)).collect();
        let settling = |now| Settling {
            provider: route.provider(),
            account: DEFAULT_ACCOUNT,
            attempts: &attempts,
            strikes,
            quota_reset_at: route.quota_reset_at(now),
            now,
            policies: self.config.policies,
        };
        let mut batch = Batch::from_claimed(&claimed);
        // A 401 from 123pan renews the token once and sends again.
        let mut renew = false;
        let mut renewed = false;
        while !batch.is_empty() {
            let wait = self.pacer(route).reserve(route.targets_sent(&batch)).await;
            if self.shutdown.is_cancelled() || (!wait.is_zero() && self.sleep(wait).await) {
                let released = self
                    .store
                    .release(&self.config.id, &batch.job_ids(), clock::now_ms())
                    .await?;
                info!(released, "shutting down: returned unsent jobs to the queue");
                return Ok(());
            }
            let token = match self.token(route, renew).await {
                Ok(token) => token,
                Err(report) => {
                    warn!(lane = %route.provider(), reason = %report.message, "no access token; pausing the lane");
                    let settlement = settling(clock::now_ms()).token_failure(&report, batch);
                    self.record(&Record {
                        owner: self.config.id.clone(),
                        now: clock::now_ms(),
                        call: None,
                        jobs: settlement.updates,
                        gates: settlement.gates,
                    })
                    .await?;
                    return Ok(());
                }
            };
            let job_ids = batch.job_ids();
            let Some(started) = self
                .store
                .begin_call(&NewCall {
                    provider: route.provider(),
                    account: DEFAULT_ACCOUNT.to_owned(),
                    operation: route.operation(),
                    worker: self.config.id.clone(),
                    account_wide: route == Route::Pan123,
                    job_ids: job_ids.clone(),
                    lease: self.config.lease,
                })
                .await?
            else {
                warn!(
                    jobs = job_ids.len(),
                    "another worker took the whole batch over before it was sent"
                );
                return Ok(());
            };
            if started.held.len() < job_ids.len() {
                warn!(
                    lost = job_ids.len() - started.held.len(),
                    "another worker took some jobs over before they were sent; sending the rest"
                );
                batch.retain_jobs(&started.held);
            }
            let (call_id, job_ids) = (started.id, started.held);
            let started = std::time::Instant::now();
            let report = self.send(route, &batch, token.as_ref()).await;
            self.config.metrics.observe_call(
                route.provider(),
                route.operation(),
                report.outcome.label(),
                started.elapsed(),
            );
            info!(
                lane = %format!("{}/{}", route.provider(), route.operation()),
                targets = route.targets_sent(&batch),
                jobs = job_ids.len(),
                request_id = report.request_id.as_deref().unwrap_or("-"),
                code = report.code.unwrap_or_default(),
                http_status = report.http_status.unwrap_or_default(),
                outcome = report.outcome.label(),
                latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "provider call"
            );
            let now = clock::now_ms();
            if token.is_some() && report.outcome == Outcome::Auth && !renewed {
                info!("the access token was refused; renewing it once and sending again");
                self.record(&Record {
                    owner: self.config.id.clone(),
                    now,
                    call: Some(call_end(call_id, &report)),
                    jobs: Vec::new(),
                    gates: Vec::new(),
                })
                .await?;
                (renew, renewed) = (true, true);
                continue;
            }
            let settlement = settling(now).settle(&report, batch);
            let record = Record {
                owner: self.config.id.clone(),
                now,
                call: Some(call_end(call_id, &report)),
                jobs: settlement.updates,
                gates: settlement.gates,
            };
            let expected = record.jobs.len() as u64;
            let changed = self.record(&record).await?;
            if changed < expected {
                warn!(
                    expected,
                    changed,
                    "some jobs were taken over by another worker after their lease expired"
                );
            }
            batch = settlement.resend;
        }
        Ok(())
    }

    /// Records a settlement, retrying while the database is unreachable: a lost record means
    /// the batch is sent again once its lease expires. Past the lease the jobs may belong to
    /// another worker, so it gives up then.
    async fn record(&self, record: &Record) -> Result<u64, StoreError> {
        let give_up = std::time::Instant::now() + self.config.lease;
        let mut delay = Duration::from_millis(100);
        loop {
            match self.store.record(record).await {
                Ok(n) => return Ok(n),
                Err(e) if std::time::Instant::now() + delay < give_up => {
                    warn!(error = %e, retry_in = ?delay, "could not record a call's outcome; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn pacer(&self, route: Route) -> &Pacer {
        match route {
            Route::QiniuRefresh | Route::QiniuPrefetch => &self.qiniu_pacer,
            Route::Pan123 => &self.pan123_pacer,
        }
    }

    /// The access token a route's calls need (123pan), from the store's cache while it is
    /// fresh, else (or when `renew`) a new one, cached for every process sharing the store.
    async fn token(&self, route: Route, renew: bool) -> Result<Option<Secret>, CallReport> {
        let (Route::Pan123, Some(client)) = (route, &self.providers.pan123) else {
            return Ok(None);
        };
        let now = clock::now_ms();
        let cached = match self.store.token(Provider::Pan123, DEFAULT_ACCOUNT).await {
            // Stored sealed; a value that does not open (an old plain token) is renewed.
            Ok(cached) => cached.and_then(|c| {
                Some(CachedToken {
                    token: seal::open(client.client_secret(), &c.token)?,
                    ..c
                })
            }),
            Err(e) => {
                warn!(error = %e, "could not read the cached access token");
                None
            }
        };
        if let Some(cached) = cached
            && !renew
            && !pan123::needs_renewal(cached.obtained_at, cached.expires_at, now)
        {
            return Ok(Some(cached.token));
        }
        let fresh = client.access_token().await.map_err(|report| *report)?;
        info!(expires_at = %clock::rfc3339(fresh.expires_at), "obtained a new 123pan access token");
        let cached = CachedToken {
            token: fresh.token,
            expires_at: fresh.expires_at,
            obtained_at: now,
        };
        let saved = match seal::seal(client.client_secret(), &cached.token) {
            Some(token) => {
                let sealed = CachedToken {
                    token,
                    expires_at: cached.expires_at,
                    obtained_at: cached.obtained_at,
                };
                self.store
                    .save_token(Provider::Pan123, DEFAULT_ACCOUNT, &sealed)
                    .await
                    .map_err(|e| e.to_string())
            }
            None => Err("no random nonce to seal it".to_owned()),
        };
        if let Err(e) = saved {
            warn!(error = %e, "could not cache the access token; it is used for this call only");
        }
        Ok(Some(cached.token))
    }

    async fn send(&self, route: Route, batch: &Batch, token: Option<&Secret>) -> CallReport {
        match (route, &self.providers.qiniu, &self.providers.pan123, token) {
            (Route::QiniuRefresh, Some(client), _, _) => {
                client
                    .refresh(
                        &batch.targets_of(Action::RefreshUrl),
                        &batch.targets_of(Action::RefreshDir),
                    )
                    .await
            }
            (Route::QiniuPrefetch, Some(client), _, _) => {
                client
                    .prefetch(&batch.targets_of(Action::PrefetchUrl))
                    .await
            }
            (Route::Pan123, _, Some(client), Some(token)) => client.refresh(token).await,
            _ => CallReport::transient(format!(
                "no {} credentials are configured",
                route.provider()
            )),
        }
    }
}

/// `42 queued, 3 running; paused: qiniu/default/refresh_url until 16:00:00`.
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

fn call_end(call_id: i64, report: &CallReport) -> CallEnd {
    CallEnd {
        call_id,
        http_status: report.http_status,
        provider_code: report.code,
        request_id: report.request_id.clone(),
        trace_id: report.trace_id.clone(),
        outcome: report.outcome.label(),
        message: report.message.clone(),
    }
}
