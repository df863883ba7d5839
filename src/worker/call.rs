//! Serving a claim: pace, get a credential, open the audit row, send, settle, record; again
//! for what must be resent.
//!
//! Invariants:
//! - The audit row is opened before the request goes out and closed, with the jobs' outcomes,
//!   in one record after it; no transaction spans the call.
//! - A refused token is renewed and the request sent again once per claim; the refused call
//!   keeps its own audit row.
//! - On shutdown before a request goes out, its jobs are handed back untouched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::settle::{Settlement, Settling};
use super::{Lanes, Shared};
use crate::clock;
use crate::model::Action;
use crate::planner::Batch;
use crate::provider::{CallReport, Credential, Outcome};
use crate::store::{CallEnd, ClaimedJob, NewCall, Record, StoreError};

/// What became of one request of a claim.
enum Sent {
    /// Recorded; these jobs are still claimed and go out again at once (possibly none).
    Settled(Batch),
    /// The token was refused; renew it and send these jobs again.
    Renew(Batch),
    /// Nothing more to send: shutdown, no credential, or the jobs were taken over.
    Stopped,
}

/// What a claim's requests share.
struct Claim<'a> {
    lanes: &'a Lanes,
    attempts: HashMap<i64, i64>,
    strikes: &'a HashMap<Action, i64>,
    /// When the jobs' leases were last set (ms): at the claim, then at each renewal.
    leased_at: AtomicI64,
}

impl Shared {
    /// Sends the claimed jobs until every one is settled or handed back; with `escalate`, the
    /// URL jobs ride one refresh of that directory. `claimed_at` is the claim's `now`, from
    /// which its leases run.
    pub(super) async fn serve(
        &self,
        lanes: &Lanes,
        claimed: Vec<ClaimedJob>,
        escalate: Option<&str>,
        (strikes, claimed_at): (&HashMap<Action, i64>, i64),
    ) -> Result<(), StoreError> {
        let claim = Claim {
            lanes,
            attempts: claimed.iter().map(|j| (j.id, j.attempts)).collect(),
            strikes,
            leased_at: AtomicI64::new(claimed_at),
        };
        let mut batch = Batch::from_claimed(&claimed);
        if let Some(dir) = escalate {
            batch.escalate(dir);
        }
        let mut renewed = false;
        let mut renew = false;
        while !batch.is_empty() {
            match self.send_once(&claim, batch, renew, renewed).await? {
                Sent::Settled(rest) => batch = rest,
                Sent::Renew(rest) => (batch, renew, renewed) = (rest, true, true),
                Sent::Stopped => return Ok(()),
            }
        }
        Ok(())
    }

    /// One request: pace, credential, audit row, send, settle and record.
    async fn send_once(
        &self,
        claim: &Claim<'_>,
        batch: Batch,
        renew: bool,
        renewed: bool,
    ) -> Result<Sent, StoreError> {
        let Claim { lanes, .. } = claim;
        if !self.pace(lanes, &batch).await? {
            return Ok(Sent::Stopped);
        }
        let credential = match lanes.account.prepare(&self.store, renew).await {
            Ok(credential) => credential,
            Err(report) => {
                warn!(lane = %lanes.account.provider(), reason = %report.message, "no access token; pausing the lane");
                let settlement = self
                    .settling(claim, clock::now_ms())
                    .token_failure(&report, batch);
                self.record_settlement(None, settlement).await?;
                return Ok(Sent::Stopped);
            }
        };
        // The route's requests take turns until recorded (`pipeline.rs`): a kill leaves at
        // most one of them unrecorded. A stop that came meanwhile hands the batch back unsent.
        let _turn = lanes.turns.send().await;
        if self.shutdown.is_cancelled() {
            self.release_unsent(&batch).await?;
            return Ok(Sent::Stopped);
        }
        let Some((call_id, batch)) = self.begin(claim, batch).await? else {
            return Ok(Sent::Stopped);
        };
        let report = self.call(lanes, &batch, &credential).await;
        let now = clock::now_ms();
        let call = call_end(call_id, &report);
        if matches!(credential, Credential::Token(_)) && report.outcome == Outcome::Auth && !renewed
        {
            info!("the access token was refused; renewing it once and sending again");
            self.record_settlement(Some(call), Settlement::default())
                .await?;
            return Ok(Sent::Renew(batch));
        }
        let settlement = self.settling(claim, now).settle(&report, batch);
        let resend = self.record_settlement(Some(call), settlement).await?;
        Ok(Sent::Settled(resend))
    }

    fn settling<'a>(&self, claim: &'a Claim<'_>, now: i64) -> Settling<'a> {
        let account = &claim.lanes.account;
        Settling {
            provider: account.provider(),
            account: account.account(),
            attempts: &claim.attempts,
            strikes: claim.strikes,
            quota_reset_at: account.quota_reset_at(now),
            now,
            policies: self.config.policies,
            confirm_at: self
                .confirms(account.as_ref())
                .then(|| clock::add(now, self.config.confirm.interval)),
        }
    }

    /// Waits for the account's pacer; on shutdown first, hands the batch back and says so.
    async fn pace(&self, lanes: &Lanes, batch: &Batch) -> Result<bool, StoreError> {
        let targets = lanes.route.targets_sent(batch);
        let wait = lanes.account.pacer().reserve(targets).await;
        if self.shutdown.is_cancelled() || (!wait.is_zero() && self.sleep(wait).await) {
            self.release_unsent(batch).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// On shutdown: returns the batch's unsent jobs to the queue, untouched.
    async fn release_unsent(&self, batch: &Batch) -> Result<(), StoreError> {
        let released = self
            .store
            .release(&self.config.id, &batch.job_ids(), clock::now_ms())
            .await?;
        info!(released, "shutting down: returned unsent jobs to the queue");
        Ok(())
    }

    /// Opens the audit row for the jobs still held; `None` if none are. Leases still fresh
    /// ([`crate::worker::WorkerConfig::fresh_for`]) are not renewed: they outlast the call and
    /// its record, and the write is one `UPDATE` of every job shorter.
    async fn begin(
        &self,
        claim: &Claim<'_>,
        mut batch: Batch,
    ) -> Result<Option<(i64, Batch)>, StoreError> {
        let lanes = claim.lanes;
        let job_ids = batch.job_ids();
        let now = clock::now_ms();
        let lease = self.config.lease();
        let fresh = now
            < clock::add(
                claim.leased_at.load(Ordering::Relaxed),
                self.config.fresh_for(),
            );
        let Some(started) = self
            .store
            .begin_call(&NewCall {
                provider: lanes.account.provider(),
                account: lanes.account.account().to_owned(),
                operation: lanes.route.operation,
                worker: self.config.id.clone(),
                account_wide: lanes.route.account_wide,
                job_ids: job_ids.clone(),
                lease: (!fresh).then_some(lease),
            })
            .await?
        else {
            warn!(
                jobs = job_ids.len(),
                "another worker took the whole batch over before it was sent"
            );
            return Ok(None);
        };
        if !fresh {
            claim.leased_at.store(now, Ordering::Relaxed);
        }
        if started.held.len() < job_ids.len() {
            warn!(
                lost = job_ids.len() - started.held.len(),
                "another worker took some jobs over before they were sent; sending the rest"
            );
            batch.retain_jobs(&started.held);
        }
        Ok(Some((started.id, batch)))
    }

    /// Sends the request, then times, counts and logs it.
    async fn call(&self, lanes: &Lanes, batch: &Batch, credential: &Credential) -> CallReport {
        let (provider, operation) = (lanes.account.provider(), lanes.route.operation);
        let started = Instant::now();
        let report = lanes.account.send(&lanes.route, batch, credential).await;
        let outcome = report.outcome.label();
        self.handles.metrics.observe_call(
            provider,
            lanes.account.account(),
            operation,
            outcome,
            started.elapsed(),
        );
        info!(
            lane = %format!("{provider}/{operation}"),
            account = lanes.account.account(),
            targets = lanes.route.targets_sent(batch),
            jobs = batch.job_ids().len(),
            request_id = report.request_id.as_deref().unwrap_or("-"),
            code = report.code.unwrap_or_default(),
            http_status = report.http_status.unwrap_or_default(),
            outcome,
            latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "provider call"
        );
        report
    }

    /// Records a call's end and its settlement; returns what must be sent again.
    async fn record_settlement(
        &self,
        call: Option<CallEnd>,
        settlement: Settlement,
    ) -> Result<Batch, StoreError> {
        let record = Record {
            owner: self.config.id.clone(),
            now: clock::now_ms(),
            call,
            jobs: settlement.updates,
            gates: settlement.gates,
        };
        let expected = record.jobs.len() as u64;
        let changed = self.record(&record).await?;
        if changed < expected {
            warn!(
                expected,
                changed, "some jobs were taken over by another worker after their lease expired"
            );
        }
        Ok(settlement.resend)
    }

    /// Records a settlement, retrying while the database is unreachable: a lost record means
    /// the batch is sent again once its lease expires. It keeps trying for two leases. Past
    /// the first, the reaper may have requeued the jobs (and a worker claimed them again), but
    /// the record changes only jobs still running under this worker's lease owner, and its
    /// audit row and gate changes are this worker's facts: a record that lands after the
    /// lease, before the reaper, spares a resend, and only a killed worker (or a database
    /// unreachable for two leases) leaves a call unrecorded.
    async fn record(&self, record: &Record) -> Result<u64, StoreError> {
        let horizon = self.config.lease() * 2;
        self.retrying_for("a call's outcome", horizon, || self.store.record(record))
            .await
    }

    /// Runs a store write, retrying with a growing delay while the database is unreachable
    /// (locked, restarting), for at most a lease: past it, the jobs may be another worker's.
    pub(super) async fn retrying<T, F, Fut>(&self, what: &str, write: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        self.retrying_for(what, self.config.lease(), write).await
    }

    /// [`Self::retrying`] for at most `horizon`.
    async fn retrying_for<T, F, Fut>(
        &self,
        what: &str,
        horizon: Duration,
        mut write: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let give_up = Instant::now() + horizon;
        let mut delay = Duration::from_millis(100);
        loop {
            match write().await {
                Ok(n) => return Ok(n),
                Err(e) if Instant::now() + delay < give_up => {
                    warn!(error = %e, retry_in = ?delay, "could not record {what}; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }
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
