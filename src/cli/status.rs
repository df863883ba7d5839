//! `purgeq status`: the audit view. Counts, paused lanes, recent jobs, or one job with its calls.
//!
//! Text output shows everything that came from outside escaped ([`display_safe`]); `--json`
//! carries the exact stored data.

use std::time::Duration;

use serde_json::json;

use super::table::Table;
use super::{Context, ExitCode, duration_arg};
use crate::clock;
use crate::dashboard::shape::{call_json, forecast_json, job_json, summary_json};
use serde::Serialize;

use crate::model::{DEFAULT_ACCOUNT, JobState, Provider};
use crate::quota::{self, Forecast};
use crate::settings::Settings;
use crate::store::{Call, Job, JobFilter, Store, Summary};
use crate::text::display_safe;

/// The longest field value `status JOB_ID` prints, in characters.
const MAX_FIELD_CHARS: usize = 2000;

/// Show the queue: counts per provider and state, paused lanes, and recent jobs; or one job and
/// every provider call that carried it.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    purgeq status\n  \
    purgeq status --state failed --since 1h\n  \
    purgeq status --tag build-42 --json\n  \
    purgeq status 1234")]
pub struct Args {
    /// Show this job and its provider calls.
    #[arg(value_name = "JOB_ID")]
    job: Option<i64>,

    /// Only jobs in this state.
    #[arg(long, value_enum)]
    state: Option<JobState>,

    /// Only jobs of this provider.
    #[arg(long, value_enum)]
    provider: Option<Provider>,

    /// Only jobs with this tag.
    #[arg(long)]
    tag: Option<String>,

    /// Only jobs of this provider account (as the config file names it).
    #[arg(long, value_name = "NAME")]
    account: Option<String>,

    /// Only jobs whose target contains this text.
    #[arg(long, value_name = "TEXT")]
    url: Option<String>,

    /// Only jobs changed within this long (e.g. 1h, 2d).
    #[arg(long, value_name = "DUR", value_parser = duration_arg)]
    since: Option<Duration>,

    /// How many recent jobs to list.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    limit: i64,

    /// Machine-readable output, times in RFC 3339 UTC.
    #[arg(long)]
    json: bool,
}

impl Args {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let store = ctx.open_read_only().await?;
        let now = clock::now_ms();
        if let Some(id) = self.job {
            let Some(job) = store.job(id).await? else {
                eprintln!("error: no job {id}");
                return Ok(ExitCode::Refused);
            };
            let calls = store.job_calls(id).await?;
            if self.json {
                let out = json!({ "job": job_json(&job), "calls": calls.iter().map(call_json).collect::<Vec<_>>() });
                println!("{out}");
            } else {
                print!("{}", render_job(&job, &calls, now));
            }
            return Ok(ExitCode::Success);
        }
        let summary = store.summary().await?;
        let filter = JobFilter {
            state: self.state,
            provider: self.provider,
            tag: self.tag.clone(),
            account: self.account.clone(),
            url_contains: self.url.clone(),
            updated_since: self
                .since
                .map(|d| now - i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            limit: self.limit,
        };
        let jobs = store.list_jobs(&filter).await?;
        let accounts = self.accounts(ctx, &store).await?;
        let forecasts = quota::forecasts(
            &summary.lanes,
            &store.queued_targets(&summary.lanes).await?,
            now,
        );
        if self.json {
            let mut out = summary_json(&summary, &jobs, now);
            out["accounts"] = json!(accounts);
            out["forecast"] = forecasts.iter().map(forecast_json).collect();
            println!("{out}");
        } else {
            let mut text = render_summary(&summary, &jobs, now, self.limit);
            if let Some(at) = text.find("\n\n").filter(|_| !accounts.is_empty()) {
                text.insert_str(at + 1, &accounts_table(&accounts));
            }
            print!("{text}");
            print!("{}", render_forecasts(&forecasts));
        }
        Ok(ExitCode::Success)
    }
}

/// Queued and running jobs of one provider account, and why they wait if no worker can send
/// them.
#[derive(Debug, Clone, Serialize)]
struct AccountRow {
    provider: Provider,
    account: String,
    queued: i64,
    running: i64,
    /// Set when the account is not configured: its jobs stay queued.
    reason: Option<String>,
}

impl Args {
    /// The accounts with queued or running jobs (narrowed by --provider and --account), each
    /// checked against the config file (names only: no secret is read).
    async fn accounts(&self, ctx: &Context, store: &Store) -> anyhow::Result<Vec<AccountRow>> {
        let configured = match ctx.settings() {
            Ok(settings) => Some(settings.filter(|s| s.has_accounts())),
            Err(e) => {
                eprintln!("warning: {e:#}");
                None
            }
        };
        let mut rows: Vec<AccountRow> = Vec::new();
        for c in store.pending_accounts().await? {
            if self.provider.is_some_and(|p| p != c.provider)
                || self.account.as_ref().is_some_and(|a| *a != c.account)
            {
                continue;
            }
            let row = match rows
                .iter_mut()
                .find(|r| r.provider == c.provider && r.account == c.account)
            {
                Some(row) => row,
                None => {
                    rows.push(AccountRow {
                        reason: configured
                            .as_ref()
                            .and_then(|s| unconfigured(s.as_ref(), c.provider, &c.account)),
                        provider: c.provider,
                        account: c.account.clone(),
                        queued: 0,
                        running: 0,
                    });
                    rows.last_mut().ok_or_else(|| anyhow::anyhow!("no row"))?
                }
            };
            match c.state {
                JobState::Running => row.running += c.count,
                _ => row.queued += c.count,
            }
        }
        Ok(rows)
    }
}

/// Why no worker sends `account`'s jobs, if it is not configured.
fn unconfigured(settings: Option<&Settings>, provider: Provider, account: &str) -> Option<String> {
    match settings {
        None if account == DEFAULT_ACCOUNT => None,
        None => Some(format!(
            "not configured: no config file names accounts (the environment serves only `{DEFAULT_ACCOUNT}`); its jobs stay queued"
        )),
        Some(s) => {
            let known = match provider {
                Provider::Qiniu => s.qiniu.iter().any(|q| q.name == account),
                Provider::Pan123 => s.pan123.iter().any(|p| p.name == account),
            };
            (!known).then(|| {
                format!(
                    "not configured: {} has no [[{}]] account named {account:?}; its jobs stay queued",
                    s.path.display(),
                    if provider == Provider::Qiniu { "qiniu" } else { "pan123" }
                )
            })
        }
    }
}

fn accounts_table(rows: &[AccountRow]) -> String {
    let mut t = Table::new(vec!["PROVIDER", "ACCOUNT", "QUEUED", "RUNNING", "NOTE"]);
    for r in rows {
        t.row(vec![
            r.provider.to_string(),
            display_safe(&r.account, 80),
            r.queued.to_string(),
            r.running.to_string(),
            r.reason.clone().unwrap_or_default(),
        ]);
    }
    format!("\n{}", t.render())
}

/// Prints the summary and the `limit` most recent jobs, as `purgeq status` does.
pub(super) async fn print_summary(store: &Store, limit: i64) -> anyhow::Result<()> {
    let summary = store.summary().await?;
    let jobs = store
        .list_jobs(&JobFilter {
            limit,
            ..JobFilter::default()
        })
        .await?;
    let now = clock::now_ms();
    let forecasts = quota::forecasts(
        &summary.lanes,
        &store.queued_targets(&summary.lanes).await?,
        now,
    );
    print!("{}", render_summary(&summary, &jobs, now, limit));
    print!("{}", render_forecasts(&forecasts));
    Ok(())
}

/// Prints one job and its calls, as `purgeq status JOB_ID` does.
pub(super) async fn print_job(store: &Store, id: i64) -> anyhow::Result<()> {
    if let Some(job) = store.job(id).await? {
        let calls = store.job_calls(id).await?;
        print!("{}", render_job(&job, &calls, clock::now_ms()));
    }
    Ok(())
}

fn ago(now: i64, then: i64) -> String {
    let d = Duration::from_millis(u64::try_from(now - then).unwrap_or(0));
    format!("{} ago", clock::human(d))
}

fn until(now: i64, then: i64) -> String {
    let d = Duration::from_millis(u64::try_from(then - now).unwrap_or(0));
    format!("in {}", clock::human(d))
}

fn render_summary(summary: &Summary, jobs: &[Job], now: i64, limit: i64) -> String {
    if summary.counts.is_empty() {
        return "The queue is empty: no jobs have been enqueued (or all were pruned).\n".to_owned();
    }
    let mut out = String::new();
    let mut counts = Table::new(vec![
        "PROVIDER",
        "QUEUED",
        "RUNNING",
        "CONFIRMING",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
    ]);
    for provider in Provider::ALL {
        let of = |state: JobState| {
            summary
                .counts
                .iter()
                .find(|c| c.provider == *provider && c.state == state)
                .map_or(0, |c| c.count)
        };
        if JobState::ALL.iter().all(|s| of(*s) == 0) {
            continue;
        }
        let mut cells = vec![provider.to_string()];
        cells.extend(JobState::ALL.iter().map(|s| of(*s).to_string()));
        counts.row(cells);
    }
    out.push_str(&counts.render());
    match summary.oldest_queued_at {
        Some(t) => out.push_str(&format!("oldest queued job: enqueued {}\n", ago(now, t))),
        None => out.push_str("nothing queued\n"),
    }
    if !summary.lanes.is_empty() {
        out.push('\n');
        out.push_str(&lanes_table(summary, now));
    }
    out.push('\n');
    if jobs.is_empty() {
        out.push_str("No jobs match the filters.\n");
        return out;
    }
    out.push_str(&format!(
        "Most recent jobs (up to {limit}, newest first):\n"
    ));
    out.push_str(&jobs_table(jobs));
    out
}

/// Every lane: open, paused (and why) or waiting for its quota's reset, and the quota left.
fn lanes_table(summary: &Summary, now: i64) -> String {
    let quotas = quota::forecasts(&summary.lanes, &[], now);
    let mut lanes = Table::new(vec!["LANE", "STATE", "QUOTA LEFT", "REASON"]);
    for gate in &summary.lanes {
        let used_up = quotas.iter().find(|f| f.lane == gate.lane && f.left == 0);
        let (state, reason) = match (gate.paused_until, used_up) {
            (Some(t), _) if t > now => (
                format!("paused until {} ({})", clock::short(t), until(now, t)),
                gate.reason.clone().unwrap_or_default(),
            ),
            (_, Some(f)) => (
                format!(
                    "waiting until {} ({})",
                    clock::short(f.reset_at),
                    until(now, f.reset_at)
                ),
                format!(
                    "daily quota used up: nothing is sent before the reset ({})",
                    f.reset_name
                ),
            ),
            _ => ("open".to_owned(), String::new()),
        };
        let left = quotas.iter().find(|f| f.lane == gate.lane);
        let quota = match left {
            Some(f) => format!("{}/{}", f.left, f.quota_day),
            None => "-".to_owned(),
        };
        lanes.row(vec![gate.lane.to_string(), state, quota, reason]);
    }
    lanes.render()
}

/// Per lane with a quota: used today, left, distinct targets queued, and the forecast.
fn render_forecasts(forecasts: &[Forecast]) -> String {
    if forecasts.is_empty() {
        return String::new();
    }
    let mut table = Table::new(vec![
        "LANE",
        "USED TODAY",
        "LEFT",
        "QUEUED TARGETS",
        "FORECAST",
    ]);
    for f in forecasts {
        table.row(vec![
            f.lane.to_string(),
            format!("{}/{}", f.used_today, f.quota_day),
            f.left.to_string(),
            f.queued_targets.to_string(),
            f.message(),
        ]);
    }
    format!("\nQuota forecast:\n{}", table.render())
}

/// The most recent jobs, a failed one with its error.
fn jobs_table(jobs: &[Job]) -> String {
    let mut table = Table::new(vec![
        "ID",
        "STATE",
        "PROVIDER",
        "ACTION",
        "PRIORITY",
        "TRIES",
        "UPDATED",
        "REQUEST ID",
        "TARGET / ERROR",
    ]);
    for job in jobs {
        let mut detail = job
            .target
            .clone()
            .unwrap_or_else(|| "(whole account)".to_owned());
        if job.state == JobState::Failed
            && let Some(e) = &job.last_error
        {
            detail = format!("{detail}  [{e}]");
        }
        table.row(vec![
            job.id.to_string(),
            job.state.to_string(),
            job.provider.to_string(),
            job.action.to_string(),
            job.priority.to_string(),
            job.attempts.to_string(),
            clock::short(job.updated_at),
            job.request_id.clone().unwrap_or_else(|| "-".to_owned()),
            detail,
        ]);
    }
    table.render()
}

fn render_job(job: &Job, calls: &[Call], now: i64) -> String {
    let mut out = format!(
        "job {}: {} {} {}\n",
        job.id, job.provider, job.action, job.state
    );
    // Values may come from outside (targets, tags, provider text): shown escaped.
    for (name, value) in job_fields(job, calls, now) {
        let value = display_safe(&value, MAX_FIELD_CHARS);
        out.push_str(&format!("  {name:<12} {value}\n"));
    }
    out.push('\n');
    if calls.is_empty() {
        out.push_str("No provider call has carried this job yet.\n");
        return out;
    }
    out.push_str("Provider calls that carried it:\n");
    out.push_str(&calls_table(calls));
    out
}

/// The fields of one job's page, in order, unescaped.
fn job_fields(job: &Job, calls: &[Call], now: i64) -> Vec<(&'static str, String)> {
    let dash = || "-".to_owned();
    let when = |t: i64| stamp(t, ago(now, t));
    let whole_account = || "(whole account)".to_owned();
    let mut fields = vec![
        ("target", job.target.clone().unwrap_or_else(whole_account)),
        ("account", job.account.clone()),
        ("tag", job.tag.clone().unwrap_or_else(dash)),
        ("priority", job.priority.to_string()),
    ];
    if let Some(dir) = &job.served_by_dir {
        fields.push(("served by", format!("the refresh of the directory {dir}")));
    }
    fields.push(("attempts", job.attempts.to_string()));
    fields.push(("created", when(job.created_at)));
    fields.push(("updated", when(job.updated_at)));
    if job.state == JobState::Queued && job.next_at > now {
        fields.push(("next try", stamp(job.next_at, until(now, job.next_at))));
    }
    if let Some(t) = job.finished_at {
        fields.push(("finished", when(t)));
    }
    if let (Some(owner), Some(t)) = (&job.lease_owner, job.lease_expires_at) {
        fields.push(("lease", format!("{owner} until {}", clock::short(t))));
    }
    fields.extend(timeline(job, calls, now));
    fields.push(("request id", job.request_id.clone().unwrap_or_else(dash)));
    let code = job.provider_code.map_or_else(dash, |c| c.to_string());
    fields.push(("code", code));
    fields.push(("last error", job.last_error.clone().unwrap_or_else(dash)));
    fields
}

/// A time and how far it is from now: `2026-12-03 14:20:21 (2s ago)`.
fn stamp(t: i64, relative: String) -> String {
    format!("{} ({relative})", clock::short(t))
}

/// A job's way to the edge: sent, accepted, confirmed, and what the CDN said.
fn timeline(job: &Job, calls: &[Call], now: i64) -> Vec<(&'static str, String)> {
    let at = |t: i64| stamp(t, ago(now, t));
    let mut out = Vec::new();
    let sent = calls.iter().rev().find(|c| !c.operation.ends_with("_list"));
    if let Some(call) = sent {
        out.push(("sent", at(call.started_at)));
    }
    if let Some(t) = job.accepted_at {
        out.push(("accepted", at(t)));
    }
    let confirmation = match (job.state, job.confirmed_at, job.confirm_at) {
        _ if !job.provider.offers_confirmation() => {
            "none: the provider offers no confirmation; the job ended at acceptance".to_owned()
        }
        (_, Some(t), _) => format!("{} (the CDN's end time)", at(t)),
        (JobState::Confirming, _, Some(t)) if t > now => {
            format!("pending; the CDN is asked again {}", until(now, t))
        }
        (JobState::Confirming, _, _) => "pending; the CDN is being asked".to_owned(),
        (JobState::Succeeded, None, _) => {
            "none: succeeded at acceptance (the worker ran with --no-confirm)".to_owned()
        }
        _ => "-".to_owned(),
    };
    out.push(("confirmed", confirmation));
    if let Some(detail) = &job.cdn_detail {
        out.push(("cdn detail", detail.clone()));
    }
    out
}

/// The provider calls that carried a job, oldest first.
fn calls_table(calls: &[Call]) -> String {
    let dash = || "-".to_owned();
    let mut table = Table::new(vec![
        "CALL",
        "STARTED",
        "TOOK",
        "TARGETS",
        "HTTP",
        "CODE",
        "OUTCOME",
        "REQUEST ID",
        "X-REQID",
        "MESSAGE",
    ]);
    for call in calls {
        table.row(vec![
            call.id.to_string(),
            clock::short(call.started_at),
            call.finished_at.map_or_else(
                || "unfinished".to_owned(),
                |f| format!("{}ms", f - call.started_at),
            ),
            call.target_count.to_string(),
            call.http_status.map_or_else(dash, |s| s.to_string()),
            call.provider_code.map_or_else(dash, |c| c.to_string()),
            call.outcome.clone().unwrap_or_else(dash),
            call.request_id.clone().unwrap_or_else(dash),
            call.trace_id.clone().unwrap_or_else(dash),
            call.message.clone().unwrap_or_else(dash),
        ]);
    }
    table.render()
}
