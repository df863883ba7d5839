//! Settling a call: what its [`Outcome`] means for each job and lane. Pure, no I/O.
//!
//! - Accepted: every job `succeeded` with the request id (or `confirming`, when the account
//!   confirms, from `confirm_at` on), except targets the provider named as invalid, which fail
//!   for good. An attempt is spent.
//! - In progress (Qiniu 400037): like accepted, with no request id: confirmed by URL.
//! - Invalid targets / rejected action: the named jobs fail for good; the rest of the request
//!   stays claimed and is sent again at once. URL jobs that rode a rejected directory refresh in
//!   their place (escalation) go back to the queue untouched, and the directory lane pauses.
//! - Accepted: a URL job that rode a directory refresh records that directory.
//! - Quota: every job goes back to `queued` with no attempt spent; the exhausted action's lane
//!   pauses with backoff, never past the provider's daily reset.
//! - Rate limit, auth: jobs go back untouched; the request's lanes pause with backoff.
//! - Transient: an attempt is spent; the job is rescheduled with jittered backoff, or `failed`
//!   with the last error once attempts run out.

use std::collections::HashMap;

use crate::clock;
use crate::model::{Action, JobState, Lane, Provider};
use crate::planner::Batch;
use crate::policy::RetryPolicy;
use crate::provider::{CallReport, Outcome, Rejection};
use crate::store::{GateChange, JobUpdate};

/// The policies and limits settling applies.
#[derive(Debug, Clone, Copy)]
pub struct Policies {
    /// A job fails once this many attempts are spent.
    pub max_attempts: u32,
    /// Job backoff after transient failures.
    pub transient: RetryPolicy,
    /// Lane pause after a used-up quota.
    pub quota: RetryPolicy,
    /// Lane pause after a rate limit.
    pub rate_limit: RetryPolicy,
    /// Lane pause after refused credentials.
    pub auth: RetryPolicy,
}

impl Default for Policies {
    fn default() -> Self {
        Policies {
            max_attempts: 8,
            transient: RetryPolicy::TRANSIENT,
            quota: RetryPolicy::QUOTA,
            rate_limit: RetryPolicy::RATE_LIMIT,
            auth: RetryPolicy::AUTH,
        }
    }
}

impl Policies {
    /// Every backoff multiplied by `factor` (for tests and demos against the emulator).
    pub fn scaled(self, factor: f64) -> Policies {
        let scale = |p: RetryPolicy| p.starting_at(p.initial.mul_f64(factor));
        Policies {
            transient: scale(self.transient),
            quota: scale(self.quota),
            rate_limit: scale(self.rate_limit),
            auth: scale(self.auth),
            ..self
        }
    }
}

/// What the call was, for settling.
#[derive(Debug)]
pub struct Settling<'a> {
    /// Provider and account of the lanes involved.
    pub provider: Provider,
    /// Account.
    pub account: &'a str,
    /// Attempts each job had spent before this call.
    pub attempts: &'a HashMap<i64, i64>,
    /// Current strikes of each lane in the request.
    pub strikes: &'a HashMap<Action, i64>,
    /// When the account's daily quotas reset (ms); `None` if it has none.
    pub quota_reset_at: Option<i64>,
    /// Now (ms).
    pub now: i64,
    /// Policies.
    pub policies: Policies,
    /// When accepted jobs are first confirmed (ms); `None`: they succeed at acceptance.
    pub confirm_at: Option<i64>,
}

/// The result of settling: new job states, lane changes, and what to send again.
#[derive(Debug, Default)]
pub struct Settlement {
    /// Job updates to record.
    pub updates: Vec<JobUpdate>,
    /// Gate changes to record.
    pub gates: Vec<GateChange>,
    /// Jobs still claimed that must be sent again at once.
    pub resend: Batch,
}

impl Settling<'_> {
    fn lane(&self, action: Action) -> Lane {
        Lane {
            provider: self.provider,
            account: self.account.to_owned(),
            action,
        }
    }

    fn attempts(&self, id: i64) -> i64 {
        self.attempts.get(&id).copied().unwrap_or(0)
    }

    fn strike(&self, action: Action) -> i64 {
        self.strikes.get(&action).copied().unwrap_or(0) + 1
    }

    fn pause(
        &self,
        action: Action,
        policy: RetryPolicy,
        cap_at: Option<i64>,
        report: &CallReport,
    ) -> GateChange {
        let strikes = self.strike(action);
        let mut delay = policy.delay_jittered(u32::try_from(strikes).unwrap_or(u32::MAX));
        if let Some(asked) = report.retry_after {
            delay = delay.max(asked);
        }
        let mut until = clock::add(self.now, delay);
        if let Some(cap) = cap_at {
            until = until.min(cap.max(self.now + 1000));
        }
        GateChange::Pause {
            lane: self.lane(action),
            until,
            strikes,
            reason: reason(report),
        }
    }

    fn done(
        &self,
        ids: &[i64],
        state: JobState,
        report: &CallReport,
        error: Option<String>,
    ) -> Vec<JobUpdate> {
        ids.iter()
            .map(|&id| JobUpdate {
                id,
                state,
                attempts: self.attempts(id) + 1,
                next_at: self.now,
                request_id: report.request_id.clone(),
                provider_code: report.code,
                last_error: error.clone(),
                served_by_dir: None,
                confirm_at: None,
            })
            .collect()
    }

    fn untouched(&self, ids: &[i64], report: &CallReport) -> Vec<JobUpdate> {
        ids.iter()
            .map(|&id| JobUpdate {
                id,
                state: JobState::Queued,
                attempts: self.attempts(id),
                next_at: self.now,
                request_id: None,
                provider_code: report.code,
                last_error: Some(reason(report)),
                served_by_dir: None,
                confirm_at: None,
            })
            .collect()
    }

    /// Accepted: every job succeeds but the named ones, which fail; lanes with strikes open.
    fn accepted(
        &self,
        report: &CallReport,
        rejected: &[Rejection],
        batch: &mut Batch,
        actions: &[Action],
        out: &mut Settlement,
    ) {
        for ((_, target), ids) in batch.take(|_, _| true) {
            let refused = rejected
                .iter()
                .find(|r| Some(r.target.as_str()) == target.as_deref());
            match refused {
                Some(r) => out.updates.extend(self.done(
                    &ids,
                    JobState::Failed,
                    report,
                    Some(rejection(r.code, &r.reason)),
                )),
                None => {
                    let mut done = self.accept(&ids, report);
                    for job in done.iter_mut().filter(|j| batch.stands_in(j.id)) {
                        job.served_by_dir.clone_from(&target);
                    }
                    out.updates.extend(done);
                }
            }
        }
        for action in actions {
            if self.strikes.get(action).copied().unwrap_or(0) > 0 {
                out.gates.push(GateChange::Open {
                    lane: self.lane(*action),
                });
            }
        }
    }

    /// Accepted jobs: `confirming` from `confirm_at` when the account confirms, else done.
    fn accept(&self, ids: &[i64], report: &CallReport) -> Vec<JobUpdate> {
        match self.confirm_at {
            Some(at) => {
                let mut updates = self.done(ids, JobState::Confirming, report, None);
                for u in &mut updates {
                    u.confirm_at = Some(at);
                }
                updates
            }
            None => self.done(ids, JobState::Succeeded, report, None),
        }
    }

    /// Invalid targets: the named jobs fail and the rest is sent again; `Err` with the batch
    /// untouched if the provider named nothing that was sent.
    fn fail_named(
        &self,
        report: &CallReport,
        rejected: &[Rejection],
        mut batch: Batch,
        out: &mut Settlement,
    ) -> Result<(), Batch> {
        let named = batch.take(|_, t| rejected.iter().any(|r| Some(r.target.as_str()) == t));
        if named.is_empty() {
            return Err(batch);
        }
        for ((_, target), ids) in named {
            let r = rejected
                .iter()
                .find(|r| Some(r.target.as_str()) == target.as_deref());
            let why = r.map_or_else(|| reason(report), |r| rejection(r.code, &r.reason));
            out.updates
                .extend(self.done(&ids, JobState::Failed, report, Some(why)));
        }
        out.resend = batch;
        Ok(())
    }

    /// Rejected action: its own jobs fail for good and the rest is sent again. URL jobs that
    /// rode a directory refresh in their place (escalation) go back untouched, and the action's
    /// lane pauses so escalation stops trying. `Err` with the batch untouched if it carried no
    /// job of that action.
    fn action_rejected(
        &self,
        report: &CallReport,
        action: Action,
        mut batch: Batch,
        out: &mut Settlement,
    ) -> Result<(), Batch> {
        let refused = batch.take(|a, _| a == action);
        if refused.is_empty() {
            return Err(batch);
        }
        let mut stood_in = Vec::new();
        for (_, ids) in refused {
            let (back, own): (Vec<i64>, Vec<i64>) =
                ids.into_iter().partition(|id| batch.stands_in(*id));
            stood_in.extend(back);
            out.updates
                .extend(self.done(&own, JobState::Failed, report, Some(reason(report))));
        }
        if !stood_in.is_empty() {
            out.updates.extend(self.untouched(&stood_in, report));
            out.gates
                .push(self.pause(action, self.policies.auth, None, report));
        }
        out.resend = batch;
        Ok(())
    }

    /// Maps one call's report onto the jobs of `batch`.
    pub fn settle(&self, report: &CallReport, mut batch: Batch) -> Settlement {
        let mut out = Settlement::default();
        let actions: Vec<Action> = {
            let mut a: Vec<Action> = batch.targets.keys().map(|(a, _)| *a).collect();
            a.dedup();
            a
        };
        match &report.outcome {
            Outcome::Accepted { rejected } => {
                self.accepted(report, rejected, &mut batch, &actions, &mut out);
            }
            Outcome::InProgress => {
                // N.B. No request id: a confirming job without one is confirmed by URL.
                let report = CallReport {
                    request_id: None,
                    ..report.clone()
                };
                self.accepted(&report, &[], &mut batch, &actions, &mut out);
            }
            Outcome::InvalidTargets { rejected } => {
                if let Err(batch) = self.fail_named(report, rejected, batch, &mut out) {
                    // The provider named nothing we sent: resending would loop forever.
                    return self.transient(report, batch);
                }
            }
            Outcome::ActionRejected { action } => {
                if let Err(batch) = self.action_rejected(report, *action, batch, &mut out) {
                    return self.transient(report, batch);
                }
            }
            Outcome::Quota { action } => {
                out.updates = self.untouched(&batch.job_ids(), report);
                out.gates.push(self.pause(
                    *action,
                    self.policies.quota,
                    self.quota_reset_at,
                    report,
                ));
            }
            Outcome::RateLimited => {
                out.updates = self.untouched(&batch.job_ids(), report);
                for action in actions {
                    out.gates
                        .push(self.pause(action, self.policies.rate_limit, None, report));
                }
            }
            Outcome::Auth => {
                out.updates = self.untouched(&batch.job_ids(), report);
                for action in actions {
                    out.gates
                        .push(self.pause(action, self.policies.auth, None, report));
                }
            }
            Outcome::Transient => return self.transient(report, batch),
        }
        for q in &report.quotas {
            out.gates.push(GateChange::Quota {
                lane: self.lane(q.action),
                quota_day: q.quota_day,
                surplus_day: q.surplus_day,
            });
        }
        out
    }

    /// No access token could be had, so nothing was sent: the jobs go back untouched and the
    /// lane pauses (auth backoff when the credentials were refused, rate-limit backoff
    /// otherwise) with the reason for `status`.
    pub fn token_failure(&self, report: &CallReport, batch: Batch) -> Settlement {
        let policy = match report.outcome {
            Outcome::Auth => self.policies.auth,
            _ => self.policies.rate_limit,
        };
        let mut actions: Vec<Action> = batch.targets.keys().map(|(a, _)| *a).collect();
        actions.dedup();
        let gates = actions
            .into_iter()
            .map(|action| match self.pause(action, policy, None, report) {
                GateChange::Pause {
                    lane,
                    until,
                    strikes,
                    reason,
                } => GateChange::Pause {
                    lane,
                    until,
                    strikes,
                    reason: format!("no access token: {reason}"),
                },
                other => other,
            })
            .collect();
        Settlement {
            updates: self.untouched(&batch.job_ids(), report),
            gates,
            resend: Batch::default(),
        }
    }

    fn transient(&self, report: &CallReport, batch: Batch) -> Settlement {
        // One jitter draw per request: jobs that failed together stay together and are sent
        // again in one request, while different requests spread apart.
        let unit = fastrand::f64();
        let updates = batch
            .job_ids()
            .into_iter()
            .map(|id| {
                let attempts = self.attempts(id) + 1;
                let exhausted = attempts >= i64::from(self.policies.max_attempts);
                let delay = self
                    .policies
                    .transient
                    .delay(u32::try_from(attempts).unwrap_or(u32::MAX), unit);
                JobUpdate {
                    id,
                    state: if exhausted {
                        JobState::Failed
                    } else {
                        JobState::Queued
                    },
                    attempts,
                    next_at: if exhausted {
                        self.now
                    } else {
                        clock::add(self.now, delay)
                    },
                    request_id: report.request_id.clone(),
                    provider_code: report.code,
                    last_error: Some(if exhausted {
                        format!("gave up after {attempts} attempts: {}", reason(report))
                    } else {
                        reason(report)
                    }),
                    served_by_dir: None,
                    confirm_at: None,
                }
            })
            .collect();
        Settlement {
            updates,
            ..Settlement::default()
        }
    }
}

fn rejection(code: i64, why: &str) -> String {
    format!("rejected by provider ({code}): {why}")
}

/// The one-line reason recorded on jobs and gates.
fn reason(report: &CallReport) -> String {
    let what = match report.outcome {
        Outcome::Quota { .. } => "daily quota used up",
        Outcome::RateLimited => "rate limited",
        Outcome::Auth => "credentials refused",
        Outcome::ActionRejected { .. } => "action not enabled for the account",
        Outcome::InvalidTargets { .. } => "invalid target",
        Outcome::Transient => "transient failure",
        Outcome::Accepted { .. } => "accepted",
        Outcome::InProgress => "already in progress",
    };
    match report.code {
        Some(code) => format!("{what} ({code}): {}", report.message),
        None => format!("{what}: {}", report.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{QuotaReading, Rejection};
    use crate::store::ClaimedJob;

    fn report(outcome: Outcome) -> CallReport {
        CallReport {
            outcome,
            http_status: Some(200),
            code: Some(200),
            request_id: Some("req-1".into()),
            trace_id: None,
            message: "msg".into(),
            quotas: vec![],
            retry_after: None,
        }
    }

    fn batch() -> Batch {
        let job = |id, action, t: &str| ClaimedJob {
            id,
            action,
            target: Some(t.into()),
            attempts: 0,
        };
        Batch::from_claimed(&[
            job(1, Action::RefreshUrl, "http://a/1"),
            job(2, Action::RefreshUrl, "http://a/1"),
            job(3, Action::RefreshUrl, "http://a/2"),
            job(4, Action::RefreshDir, "http://a/d/"),
        ])
    }

    fn settle(
        outcome: Outcome,
        attempts: &HashMap<i64, i64>,
        strikes: &HashMap<Action, i64>,
    ) -> Settlement {
        let s = Settling {
            provider: Provider::Qiniu,
            account: "default",
            attempts,
            strikes,
            quota_reset_at: Some(2_000_000),
            now: 1_000_000,
            policies: Policies::default(),
            confirm_at: None,
        };
        s.settle(&report(outcome), batch())
    }

    fn states(s: &Settlement) -> Vec<(i64, JobState, i64)> {
        let mut v: Vec<_> = s
            .updates
            .iter()
            .map(|u| (u.id, u.state, u.attempts))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn accepted_succeeds_all_but_the_named_and_clears_strikes() {
        let strikes = HashMap::from([(Action::RefreshUrl, 2)]);
        let rejected = vec![Rejection {
            target: "http://a/2".into(),
            code: 400031,
            reason: "bad".into(),
        }];
        let s = settle(Outcome::Accepted { rejected }, &HashMap::new(), &strikes);
        assert_eq!(
            states(&s),
            vec![
                (1, JobState::Succeeded, 1),
                (2, JobState::Succeeded, 1),
                (3, JobState::Failed, 1),
                (4, JobState::Succeeded, 1)
            ]
        );
        assert!(
            s.updates
                .iter()
                .all(|u| u.request_id.as_deref() == Some("req-1"))
        );
        assert_eq!(
            s.gates,
            vec![GateChange::Open {
                lane: Lane::new(Provider::Qiniu, Action::RefreshUrl)
            }]
        );
        assert!(s.resend.is_empty());
    }

    #[test]
    fn invalid_targets_fail_alone_and_the_rest_is_resent() {
        let rejected = vec![Rejection {
            target: "http://a/1".into(),
            code: 400032,
            reason: "host".into(),
        }];
        let s = settle(
            Outcome::InvalidTargets { rejected },
            &HashMap::new(),
            &HashMap::new(),
        );
        assert_eq!(
            states(&s),
            vec![(1, JobState::Failed, 1), (2, JobState::Failed, 1)]
        );
        assert_eq!(s.resend.job_ids(), vec![3, 4]);
    }

    #[test]
    fn invalid_naming_nothing_sent_is_transient_not_a_loop() {
        let rejected = vec![Rejection {
            target: "http://elsewhere/".into(),
            code: 400031,
            reason: "?".into(),
        }];
        let s = settle(
            Outcome::InvalidTargets { rejected },
            &HashMap::new(),
            &HashMap::new(),
        );
        assert!(s.resend.is_empty());
        assert!(
            s.updates
                .iter()
                .all(|u| u.state == JobState::Queued && u.attempts == 1)
        );
    }

    #[test]
    fn rejected_action_fails_only_its_jobs() {
        let s = settle(
            Outcome::ActionRejected {
                action: Action::RefreshDir,
            },
            &HashMap::new(),
            &HashMap::new(),
        );
        assert_eq!(states(&s), vec![(4, JobState::Failed, 1)]);
        assert_eq!(s.resend.job_ids(), vec![1, 2, 3]);
    }

    #[test]
    fn urls_escalated_to_a_refused_directory_refresh_go_back_untouched() {
        let s = Settling {
            provider: Provider::Qiniu,
            account: "default",
            attempts: &HashMap::new(),
            strikes: &HashMap::new(),
            quota_reset_at: None,
            now: 1_000_000,
            policies: Policies::default(),
            confirm_at: None,
        };
        let mut escalated = batch();
        escalated.escalate("http://a/d/");
        let outcome = Outcome::ActionRejected {
            action: Action::RefreshDir,
        };
        let out = s.settle(&report(outcome), escalated);
        assert_eq!(
            states(&out),
            vec![
                (1, JobState::Queued, 0),
                (2, JobState::Queued, 0),
                (3, JobState::Queued, 0),
                (4, JobState::Failed, 1)
            ]
        );
        assert!(
            matches!(&out.gates[..], [GateChange::Pause { lane, .. }] if lane.action == Action::RefreshDir)
        );
        assert!(out.resend.is_empty());
    }

    #[test]
    fn quota_requeues_without_an_attempt_and_pauses_until_at_most_the_reset() {
        let attempts = HashMap::from([(1, 3)]);
        let strikes = HashMap::from([(Action::RefreshUrl, 20)]);
        let s = settle(
            Outcome::Quota {
                action: Action::RefreshUrl,
            },
            &attempts,
            &strikes,
        );
        assert_eq!(
            states(&s),
            vec![
                (1, JobState::Queued, 3),
                (2, JobState::Queued, 0),
                (3, JobState::Queued, 0),
                (4, JobState::Queued, 0)
            ]
        );
        match &s.gates[..] {
            [
                GateChange::Pause {
                    lane,
                    until,
                    strikes,
                    ..
                },
            ] => {
                assert_eq!(lane.action, Action::RefreshUrl);
                assert_eq!(*strikes, 21);
                assert_eq!(*until, 2_000_000, "capped at the reset");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rate_limit_and_auth_pause_every_lane_of_the_request() {
        for outcome in [Outcome::RateLimited, Outcome::Auth] {
            let s = settle(outcome, &HashMap::new(), &HashMap::new());
            assert!(
                s.updates
                    .iter()
                    .all(|u| u.state == JobState::Queued && u.attempts == 0)
            );
            assert_eq!(s.gates.len(), 2);
        }
    }

    #[test]
    fn transient_spends_an_attempt_then_fails_at_the_limit() {
        let attempts = HashMap::from([(1, 7), (2, 0)]);
        let s = settle(Outcome::Transient, &attempts, &HashMap::new());
        let one = s.updates.iter().find(|u| u.id == 1).unwrap();
        assert_eq!((one.state, one.attempts), (JobState::Failed, 8));
        assert!(
            one.last_error
                .as_deref()
                .unwrap()
                .contains("gave up after 8 attempts")
        );
        let two = s.updates.iter().find(|u| u.id == 2).unwrap();
        assert_eq!((two.state, two.attempts), (JobState::Queued, 1));
        assert!(two.next_at > 1_000_000 && two.next_at <= 1_005_000);
    }

    #[test]
    fn accepted_jobs_are_confirmed_when_the_account_confirms() {
        let (attempts, strikes) = (HashMap::new(), HashMap::new());
        let settling = |outcome| {
            Settling {
                provider: Provider::Qiniu,
                account: "default",
                attempts: &attempts,
                strikes: &strikes,
                quota_reset_at: None,
                now: 5,
                policies: Policies::default(),
                confirm_at: Some(60),
            }
            .settle(&report(outcome), batch())
        };
        let s = settling(Outcome::Accepted { rejected: vec![] });
        assert!(s.updates.iter().all(|u| u.state == JobState::Confirming
            && u.confirm_at == Some(60)
            && u.request_id.as_deref() == Some("req-1")));
        // 400037: confirmed by URL, so no request id.
        let s = settling(Outcome::InProgress);
        assert_eq!(s.updates.len(), 4);
        assert!(
            s.updates.iter().all(|u| u.state == JobState::Confirming
                && u.attempts == 1
                && u.request_id.is_none())
        );
    }

    #[test]
    fn quota_readings_are_kept() {
        let mut r = report(Outcome::Accepted { rejected: vec![] });
        r.quotas = vec![QuotaReading {
            action: Action::RefreshUrl,
            quota_day: 500,
            surplus_day: 440,
        }];
        let s = Settling {
            provider: Provider::Qiniu,
            account: "default",
            attempts: &HashMap::new(),
            strikes: &HashMap::new(),
            quota_reset_at: Some(0),
            now: 0,
            policies: Policies::default(),
            confirm_at: None,
        }
        .settle(&r, batch());
        assert!(s.gates.contains(&GateChange::Quota {
            lane: Lane::new(Provider::Qiniu, Action::RefreshUrl),
            quota_day: 500,
            surplus_day: 440
        }));
    }

    #[test]
    fn scaling_shrinks_every_backoff_alike() {
        let p = Policies::default().scaled(0.01);
        assert_eq!(p.transient.initial, std::time::Duration::from_millis(50));
        assert_eq!(p.quota.initial, std::time::Duration::from_millis(600));
        assert_eq!(p.quota.cap, std::time::Duration::from_secs(36));
        assert_eq!(p.auth.initial, std::time::Duration::from_millis(300));
        assert_eq!(p.max_attempts, 8);
    }
}
