//! Confirming accepted purges at the CDN: one loop per account whose provider can tell
//! ([`Account::confirmer`]), beside the route loops.
//!
//! Invariants:
//! - A `confirming` job holds no lease. A round takes due jobs by moving their `confirm_at` past
//!   the query (the hold, one lease long), asks the provider with no transaction open (one audit
//!   row per query, counted in the account's pacer), and records the results fenced by that
//!   `confirm_at`. A worker killed mid-round leaves its jobs `confirming`; they are due again
//!   when the hold ends. On shutdown, jobs taken but not yet asked about are handed back at once.
//! - Per job: `success` -> `succeeded` with the CDN's end time; `failure` -> `queued` at once
//!   with the CDN's detail as its error (the attempt was spent at acceptance; sending again
//!   spends quota again), `failed` once attempts run out; `processing` or no usable answer -> asked again at a growing
//!   interval. A job still unconfirmed `--confirm-timeout` after acceptance, or whose request
//!   the provider does not know (or lists no task for at all), fails with an error starting
//!   `unconfirmed:` (it never counts as
//!   success; `purgeq retry` sends it again).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{ConfirmSettings, Shared, until};
use crate::clock;
use crate::model::{Action, JobState};
use crate::provider::{
    Account, CdnTask, ConfirmBy, ConfirmQuery, ConfirmReport, Confirmer, Listing, TaskState,
};
use crate::store::{
    CallEnd, ConfirmRecord, ConfirmUpdate, Confirming, NewQuery, StoreError, TakeConfirmations,
};

/// Requests whose due jobs one round takes (all of each request's, so one query answers them).
const TAKE_REQUESTS: i64 = 20;
/// URLs asked about in one query by URL.
const URLS_PER_QUERY: usize = 100;
/// Pages read for one query before taking what was read as all there is.
const MAX_PAGES: u32 = 100;

/// One query's worth of taken jobs.
struct Group {
    action: Action,
    by: ConfirmBy,
    jobs: Vec<Confirming>,
}

impl Shared {
    /// Whether `account`'s accepted jobs are confirmed.
    pub(super) fn confirms(&self, account: &dyn Account) -> bool {
        self.config.confirm.enabled && account.confirmer().is_some()
    }

    /// How long a once run waits for confirmations at most. Every job ends by itself within
    /// `--confirm-timeout` of its acceptance (plus one interval at most); this bounds a run
    /// whose jobs keep being accepted late.
    fn once_bound(&self) -> Duration {
        let c = &self.config.confirm;
        c.timeout * 2 + c.interval * 10
    }

    /// With `--once`: whether `account` still has jobs being confirmed and the once run has
    /// time left to wait for them.
    pub(super) async fn once_waits(&self, account: &dyn Account) -> bool {
        if !self.confirms(account) || self.started.elapsed() >= self.once_bound() {
            return false;
        }
        let pending = self
            .store
            .next_confirmation(account.provider(), account.account())
            .await;
        !matches!(pending, Ok(None))
    }

    /// Confirms `account`'s accepted jobs until shutdown (with `--once`: until the route loops
    /// are done and nothing is left to confirm, or `--confirm-timeout` has passed).
    pub(super) async fn confirm_loop(
        &self,
        account: &dyn Account,
        routes_done: &CancellationToken,
    ) {
        let Some(confirmer) = account.confirmer() else {
            return;
        };
        while !self.shutdown.is_cancelled() {
            let wait = match self.confirm_round(account, confirmer).await {
                Ok(None) => continue,
                Ok(Some(wait)) => wait,
                Err(e) => {
                    warn!(account = account.account(), error = %e, "confirmation round failed; retrying");
                    self.config.poll_interval
                }
            };
            if self.config.once && routes_done.is_cancelled() && !self.once_waits(account).await {
                if self.started.elapsed() >= self.once_bound() {
                    warn!("--once: stopped waiting for confirmations (twice --confirm-timeout)");
                }
                return;
            }
            if self.sleep(wait.min(self.config.poll_interval)).await {
                return;
            }
        }
    }

    /// Takes due jobs and asks about them; `Some(wait)` when none was due.
    async fn confirm_round(
        &self,
        account: &dyn Account,
        confirmer: &dyn Confirmer,
    ) -> Result<Option<Duration>, StoreError> {
        let (provider, name) = (account.provider(), account.account());
        let now = clock::now_ms();
        let taken = self
            .store
            .take_confirmations(&TakeConfirmations {
                provider,
                account: name.to_owned(),
                now,
                hold_until: clock::add(now, self.config.lease()),
                limit: TAKE_REQUESTS,
            })
            .await?;
        if taken.is_empty() {
            let next = self.store.next_confirmation(provider, name).await?;
            return Ok(Some(
                next.map_or(self.config.poll_interval, |t| until(now, t)),
            ));
        }
        let mut groups = groups(confirmer, taken).into_iter();
        while let Some(group) = groups.next() {
            if self.shutdown.is_cancelled() {
                let rest: Vec<Confirming> = std::iter::once(group)
                    .chain(groups)
                    .flat_map(|g| g.jobs)
                    .collect();
                self.hand_back(&rest).await?;
                break;
            }
            self.confirm_group(account, confirmer, group).await?;
        }
        Ok(None)
    }

    /// Makes taken jobs due again at once (on shutdown).
    async fn hand_back(&self, jobs: &[Confirming]) -> Result<(), StoreError> {
        let now = clock::now_ms();
        let updates = jobs
            .iter()
            .map(|j| ConfirmUpdate {
                confirm_at: Some(now),
                ..unchanged(j, now)
            })
            .collect();
        self.store
            .record_confirmations(&ConfirmRecord {
                now,
                call: None,
                jobs: updates,
            })
            .await?;
        info!(
            jobs = jobs.len(),
            "shutting down: handed back jobs awaiting confirmation"
        );
        Ok(())
    }

    /// Asks about one group, page by page, and records the result.
    async fn confirm_group(
        &self,
        account: &dyn Account,
        confirmer: &dyn Confirmer,
        group: Group,
    ) -> Result<(), StoreError> {
        let mut tasks = Vec::new();
        for page in 0..MAX_PAGES {
            let wait = account.pacer().reserve(1).await;
            if !wait.is_zero() && self.sleep(wait).await {
                return self.hand_back(&group.jobs).await;
            }
            let (call, answer) = self.query(account, confirmer, &group, page).await?;
            let now = clock::now_ms();
            let judge = Judge {
                now,
                settings: self.config.confirm,
                max_attempts: i64::from(self.config.policies.max_attempts),
                asked: asked(&group.by),
            };
            let updates = match answer.listing {
                Listing::Tasks {
                    tasks: page_tasks,
                    total,
                    page_size,
                } => {
                    let more =
                        !page_tasks.is_empty() && (u64::from(page) + 1) * page_size.max(1) < total;
                    tasks.extend(page_tasks);
                    if more && page + 1 < MAX_PAGES {
                        self.record_confirm(account, call, Vec::new()).await?;
                        continue;
                    }
                    if tasks.is_empty() && total == 0 {
                        // N.B. The query matches nothing at all: the CDN does not know it.
                        group
                            .jobs
                            .iter()
                            .map(|j| judge.unconfirmed(j, "the CDN lists no task for it"))
                            .collect()
                    } else {
                        judge.tasks(&group.jobs, &tasks)
                    }
                }
                Listing::UnknownRequest => group
                    .jobs
                    .iter()
                    .map(|j| judge.unconfirmed(j, "the CDN does not know the request id"))
                    .collect(),
                Listing::Unanswered => group.jobs.iter().map(|j| judge.later(j, None)).collect(),
            };
            return self.record_confirm(account, call, updates).await;
        }
        Ok(())
    }

    /// Writes the audit row, sends one query, counts and logs it.
    async fn query(
        &self,
        account: &dyn Account,
        confirmer: &dyn Confirmer,
        group: &Group,
        page: u32,
    ) -> Result<(CallEnd, ConfirmReport), StoreError> {
        let operation = confirmer.operation(group.action);
        let mut targets: Vec<&str> = group
            .jobs
            .iter()
            .filter_map(|j| j.target.as_deref())
            .collect();
        targets.sort_unstable();
        targets.dedup();
        let call_id = self
            .store
            .begin_query(&NewQuery {
                provider: account.provider(),
                account: account.account().to_owned(),
                operation,
                worker: self.config.id.clone(),
                job_ids: group.jobs.iter().map(|j| j.id).collect(),
                target_count: i64::try_from(targets.len()).unwrap_or(i64::MAX),
            })
            .await?;
        let started = Instant::now();
        let answer = confirmer
            .query(&ConfirmQuery {
                action: group.action,
                by: group.by.clone(),
                page,
            })
            .await;
        let outcome = answer.listing.label(&answer.report);
        self.handles.metrics.observe_call(
            account.provider(),
            account.account(),
            operation,
            outcome,
            started.elapsed(),
        );
        let report = &answer.report;
        info!(
            lane = %format!("{}/{operation}", account.provider()),
            asked = %asked(&group.by),
            page,
            jobs = group.jobs.len(),
            code = report.code.unwrap_or_default(),
            http_status = report.http_status.unwrap_or_default(),
            outcome,
            "confirmation query"
        );
        Ok((call_end(call_id, &group.by, &answer, outcome), answer))
    }

    /// Records a query's audit row and its jobs' results; counts and logs the results.
    async fn record_confirm(
        &self,
        account: &dyn Account,
        call: CallEnd,
        updates: Vec<(ConfirmUpdate, &'static str, i64)>,
    ) -> Result<(), StoreError> {
        let now = clock::now_ms();
        for (update, result, created_at) in &updates {
            let metrics = &self.handles.metrics;
            metrics.observe_confirmation(account.provider(), result);
            if update.state == JobState::Succeeded {
                let waited = Duration::from_millis(u64::try_from(now - created_at).unwrap_or(0));
                metrics.observe_confirmed(account.provider(), waited);
            }
            if *result == "failure" {
                warn!(
                    job = update.id,
                    state = %update.state,
                    error = update.last_error.as_deref().unwrap_or_default(),
                    "the CDN failed a purge after accepting it"
                );
            }
        }
        let jobs: Vec<ConfirmUpdate> = updates.into_iter().map(|(u, _, _)| u).collect();
        let expected = jobs.len() as u64;
        // Retried like a call's record: the fence keeps a late write from undoing another
        // worker's, and an unrecorded audit row would be a lost answer.
        let record = ConfirmRecord {
            now,
            call: Some(call),
            jobs,
        };
        let changed = self
            .retrying("a confirmation query's answer", || {
                self.store.record_confirmations(&record)
            })
            .await?;
        if changed < expected {
            warn!(
                expected,
                changed, "some confirmations were recorded by another worker first"
            );
        }
        Ok(())
    }
}

/// A query's audit completion; it records the request id asked about.
fn call_end(
    call_id: i64,
    by: &ConfirmBy,
    answer: &ConfirmReport,
    outcome: &'static str,
) -> CallEnd {
    let report = &answer.report;
    CallEnd {
        call_id,
        http_status: report.http_status,
        provider_code: report.code,
        request_id: match by {
            ConfirmBy::Request(id) => Some(id.clone()),
            ConfirmBy::Urls(_) => None,
        },
        trace_id: report.trace_id.clone(),
        outcome,
        message: report.message.clone(),
    }
}

/// What a group asked about, for logs and errors.
fn asked(by: &ConfirmBy) -> String {
    match by {
        ConfirmBy::Request(id) => format!("request {id}"),
        ConfirmBy::Urls(urls) => format!("{} URL(s)", urls.len()),
    }
}

/// Groups taken jobs into queries: one per request id, and jobs without one (Qiniu 400037) by
/// URL, up to [`URLS_PER_QUERY`] per query, per kind of task.
fn groups(confirmer: &dyn Confirmer, taken: Vec<Confirming>) -> Vec<Group> {
    let mut by_request: BTreeMap<(&'static str, String), Group> = BTreeMap::new();
    let mut by_url: BTreeMap<&'static str, Vec<Confirming>> = BTreeMap::new();
    for job in taken {
        let operation = confirmer.operation(job.action);
        match job.request_id.clone() {
            Some(id) => by_request
                .entry((operation, id.clone()))
                .or_insert_with(|| Group {
                    action: job.action,
                    by: ConfirmBy::Request(id),
                    jobs: Vec::new(),
                })
                .jobs
                .push(job),
            None => by_url.entry(operation).or_default().push(job),
        }
    }
    let mut out: Vec<Group> = by_request.into_values().collect();
    for (_, mut jobs) in by_url {
        jobs.sort_by(|a, b| a.target.cmp(&b.target));
        let mut urls: Vec<String> = Vec::new();
        let mut current: Vec<Confirming> = Vec::new();
        for job in jobs {
            let target = job.target.clone().unwrap_or_default();
            if urls.last() != Some(&target) {
                if urls.len() == URLS_PER_QUERY {
                    out.push(url_group(
                        std::mem::take(&mut urls),
                        std::mem::take(&mut current),
                    ));
                }
                urls.push(target);
            }
            current.push(job);
        }
        if !current.is_empty() {
            out.push(url_group(urls, current));
        }
    }
    out
}

fn url_group(urls: Vec<String>, jobs: Vec<Confirming>) -> Group {
    Group {
        action: jobs.first().map_or(Action::RefreshUrl, |j| j.action),
        by: ConfirmBy::Urls(urls),
        jobs,
    }
}

/// A job left as it is: still confirming, due at its fence.
fn unchanged(job: &Confirming, now: i64) -> ConfirmUpdate {
    ConfirmUpdate {
        id: job.id,
        fence: job.fence,
        state: JobState::Confirming,
        attempts: job.attempts,
        next_at: now,
        confirm_at: Some(job.fence),
        confirmed_at: None,
        cdn_detail: None,
        last_error: None,
    }
}

/// Decides each job's new state from a query's answer. Pure.
struct Judge {
    now: i64,
    settings: ConfirmSettings,
    max_attempts: i64,
    asked: String,
}

/// A job's update, the result's metric label, and its enqueue time.
type Judged = (ConfirmUpdate, &'static str, i64);

impl Judge {
    /// Each job against the newest task listed for its target.
    fn tasks(&self, jobs: &[Confirming], tasks: &[CdnTask]) -> Vec<Judged> {
        jobs.iter()
            .map(|job| {
                let task = tasks
                    .iter()
                    .filter(|t| Some(t.url.as_str()) == job.target.as_deref())
                    .min_by_key(|t| std::cmp::Reverse(t.created_at));
                match task {
                    Some(task) => self.task(job, task),
                    // N.B. Not yet listed is not unknown: ask again until the timeout.
                    None => self.later(job, None),
                }
            })
            .collect()
    }

    fn task(&self, job: &Confirming, task: &CdnTask) -> Judged {
        let state = match task.state {
            TaskState::Success => "success",
            TaskState::Failure => "failure",
            TaskState::Processing => "processing",
        };
        let detail = Some(if task.detail.is_empty() {
            state.to_owned()
        } else {
            format!("{state}: {}", task.detail)
        });
        match task.state {
            TaskState::Success => (
                ConfirmUpdate {
                    state: JobState::Succeeded,
                    confirm_at: None,
                    confirmed_at: Some(task.end_at.unwrap_or(self.now)),
                    cdn_detail: detail,
                    ..unchanged(job, self.now)
                },
                "success",
                job.created_at,
            ),
            TaskState::Failure => self.failure(job, detail, &task.detail),
            TaskState::Processing => self.later(job, detail),
        }
    }

    /// The CDN failed the task: send again (spending quota again), or give up. The attempt was
    /// spent when the provider accepted it.
    fn failure(&self, job: &Confirming, detail: Option<String>, said: &str) -> Judged {
        let attempts = job.attempts;
        let exhausted = attempts >= self.max_attempts;
        let why = if said.is_empty() { "no detail" } else { said };
        let last_error = if exhausted {
            format!(
                "gave up after {attempts} attempts: the CDN failed the purge ({}): {why}",
                self.asked
            )
        } else {
            format!(
                "the CDN failed the purge ({}): {why}; sent again, which spends quota again",
                self.asked
            )
        };
        (
            ConfirmUpdate {
                state: if exhausted {
                    JobState::Failed
                } else {
                    JobState::Queued
                },
                attempts,
                confirm_at: None,
                cdn_detail: detail,
                last_error: Some(last_error),
                ..unchanged(job, self.now)
            },
            "failure",
            job.created_at,
        )
    }

    /// Not done yet (or no usable answer): ask again later, unless the timeout has passed.
    fn later(&self, job: &Confirming, detail: Option<String>) -> Judged {
        let elapsed = Duration::from_millis(u64::try_from(self.now - job.accepted_at).unwrap_or(0));
        if elapsed >= self.settings.timeout {
            let why = format!(
                "the CDN had not finished the purge {} after accepting it (--confirm-timeout); it may still complete",
                clock::human(elapsed)
            );
            let (mut update, result, created_at) = self.unconfirmed(job, &why);
            update.cdn_detail = detail;
            return (update, result, created_at);
        }
        (
            ConfirmUpdate {
                confirm_at: Some(clock::add(self.now, self.settings.next_delay(elapsed))),
                cdn_detail: detail,
                ..unchanged(job, self.now)
            },
            "processing",
            job.created_at,
        )
    }

    /// The documented end of a job the CDN cannot confirm: `failed`, its error starting
    /// `unconfirmed:`.
    fn unconfirmed(&self, job: &Confirming, why: &str) -> Judged {
        (
            ConfirmUpdate {
                state: JobState::Failed,
                confirm_at: None,
                last_error: Some(format!(
                    "unconfirmed: {why} ({}); `purgeq retry {}` sends it again",
                    self.asked, job.id
                )),
                ..unchanged(job, self.now)
            },
            "unconfirmed",
            job.created_at,
        )
    }
}
