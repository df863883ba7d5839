//! `purgeq wait`: block until every selected job has ended; the exit code says how.
//!
//! Waiting only reads the store (never a write lock). Progress goes to stderr: one live line on
//! a terminal, a plain line whenever the counts change otherwise; the verdict is the exit code.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use super::{Context, ExitCode, duration_arg, poll_interval_arg};
use crate::clock;
use crate::model::JobState;
use crate::store::{JobFilter, Store, WaitSelection};

/// Wait until every selected job has ended: succeeded, failed or cancelled.
///
/// A job accepted by Qiniu ends only once the CDN confirms the purge (see `worker
/// --confirm-interval`), so exit 0 means the new files are served. Exit codes: 0 every job
/// succeeded; 5 at least one failed or was cancelled (each is listed); 6 --timeout passed first;
/// 4 a listed job does not exist, or nothing matches the selection.
#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("select").required(true).multiple(true).args(["ids", "tag", "since", "account"])),
    after_help = "Examples:\n  \
    purgeq wait 41 42 43\n  \
    purgeq wait --tag build-42 --timeout 20m\n  \
    purgeq enqueue --tag build-42 --wait --timeout 20m URL...   # the same, in one step"
)]
pub struct Args {
    /// The jobs to wait for.
    #[arg(value_name = "JOB_ID", conflicts_with_all = ["tag", "since", "account"])]
    ids: Vec<i64>,

    /// Wait for every job with this tag.
    #[arg(long)]
    tag: Option<String>,

    /// Only jobs enqueued within this long (e.g. 10m), alone or with --tag.
    #[arg(long, value_name = "DUR", value_parser = duration_arg)]
    since: Option<Duration>,

    /// Only jobs of this provider account (as the config file names it), alone or with --tag
    /// and --since.
    #[arg(long, value_name = "NAME")]
    account: Option<String>,

    /// Give up after this long (exit 6); without it, wait as long as it takes.
    #[arg(long, value_name = "DUR", value_parser = duration_arg)]
    timeout: Option<Duration>,

    /// How often to read the jobs' states (10ms to 1h).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = poll_interval_arg)]
    poll_interval: Duration,
}

impl Args {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let store = ctx.open_read_only().await?;
        let now = clock::now_ms();
        let selection = WaitSelection {
            ids: self.ids.clone(),
            tag: self.tag.clone(),
            since: self.since.map(|d| now.saturating_sub(millis(d))),
            account: self.account.clone(),
        };
        wait(&store, &selection, self.timeout, self.poll_interval).await
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// How the selected jobs stand.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Tally {
    total: i64,
    queued: i64,
    running: i64,
    confirming: i64,
    succeeded: i64,
    failed: i64,
    cancelled: i64,
}

impl Tally {
    fn of(counts: &[(JobState, i64)]) -> Tally {
        let mut t = Tally::default();
        for (state, n) in counts {
            t.total += n;
            match state {
                JobState::Queued => t.queued += n,
                JobState::Running => t.running += n,
                JobState::Confirming => t.confirming += n,
                JobState::Succeeded => t.succeeded += n,
                JobState::Failed => t.failed += n,
                JobState::Cancelled => t.cancelled += n,
            }
        }
        t
    }

    fn done(&self) -> i64 {
        self.succeeded + self.failed + self.cancelled
    }

    fn line(&self, paused: &[String]) -> String {
        let mut line = format!(
            "{}/{} done ({} succeeded, {} failed, {} cancelled); {} confirming, {} running, {} queued",
            self.done(),
            self.total,
            self.succeeded,
            self.failed,
            self.cancelled,
            self.confirming,
            self.running,
            self.queued
        );
        if !paused.is_empty() {
            line.push_str("; paused: ");
            line.push_str(&paused.join(", "));
        }
        line
    }
}

/// Waits until every job of `selection` has ended (or `timeout`), showing progress on stderr.
pub(super) async fn wait(
    store: &Store,
    selection: &WaitSelection,
    timeout: Option<Duration>,
    poll: Duration,
) -> anyhow::Result<ExitCode> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut shown = Progress::new();
    loop {
        let tally = Tally::of(&store.wait_counts(selection).await?);
        if !selection.ids.is_empty() && tally.total < selection.ids.len() as i64 {
            shown.finish();
            eprintln!(
                "error: {} of the {} listed jobs do not exist",
                selection.ids.len() as i64 - tally.total,
                selection.ids.len()
            );
            return Ok(ExitCode::Refused);
        }
        if tally.total == 0 {
            eprintln!("error: no job matches the selection");
            return Ok(ExitCode::Refused);
        }
        let paused = if tally.queued > 0 {
            paused_lanes(store).await?
        } else {
            Vec::new()
        };
        shown.show(&tally.line(&paused));
        if tally.done() == tally.total {
            shown.finish();
            return verdict(store, selection, &tally).await;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            shown.finish();
            eprintln!(
                "timed out: {} of {} jobs have not ended ({} confirming, {} running, {} queued)",
                tally.total - tally.done(),
                tally.total,
                tally.confirming,
                tally.running,
                tally.queued
            );
            return Ok(ExitCode::TimedOut);
        }
        tokio::time::sleep(poll).await;
    }
}

/// Every paused lane with its reason.
async fn paused_lanes(store: &Store) -> anyhow::Result<Vec<String>> {
    let now = clock::now_ms();
    Ok(store
        .gates()
        .await?
        .into_iter()
        .filter(|g| g.paused_until.is_some_and(|t| t > now))
        .map(|g| {
            let why = crate::text::display_safe(g.reason.as_deref().unwrap_or("-"), 120);
            format!("{} ({why})", g.lane)
        })
        .collect())
}

/// Exit 0 when every job succeeded, else lists what did not and exits 5.
async fn verdict(
    store: &Store,
    selection: &WaitSelection,
    tally: &Tally,
) -> anyhow::Result<ExitCode> {
    if tally.failed + tally.cancelled == 0 {
        eprintln!("all {} jobs succeeded", tally.total);
        return Ok(ExitCode::Success);
    }
    eprintln!(
        "{} of {} jobs did not succeed ({} failed, {} cancelled):",
        tally.failed + tally.cancelled,
        tally.total,
        tally.failed,
        tally.cancelled
    );
    let jobs = if selection.ids.is_empty() {
        let mut jobs = Vec::new();
        for state in [JobState::Failed, JobState::Cancelled] {
            jobs.extend(
                store
                    .list_jobs(&JobFilter {
                        state: Some(state),
                        tag: selection.tag.clone(),
                        updated_since: selection.since,
                        account: selection.account.clone(),
                        limit: 20,
                        ..JobFilter::default()
                    })
                    .await?,
            );
        }
        jobs
    } else {
        let mut jobs = Vec::new();
        for id in &selection.ids {
            if let Some(job) = store.job(*id).await?
                && matches!(job.state, JobState::Failed | JobState::Cancelled)
            {
                jobs.push(job);
            }
        }
        jobs
    };
    for job in jobs.iter().take(20) {
        let target = job.target.as_deref().unwrap_or("(whole account)");
        let error = job.last_error.as_deref().unwrap_or("-");
        eprintln!(
            "  job {} {}: {}  [{}]",
            job.id,
            job.state,
            crate::text::display_safe(target, 200),
            crate::text::display_safe(error, 300)
        );
    }
    Ok(ExitCode::Unsuccessful)
}

/// Progress on stderr: a live line on a terminal, a plain line per change otherwise.
struct Progress {
    terminal: bool,
    last: Option<String>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn show(&mut self, line: &str) {
        if self.last.as_deref() == Some(line) {
            return;
        }
        let mut err = std::io::stderr().lock();
        // N.B. Progress is best effort: a closed stderr must not end the wait.
        let _ = if self.terminal {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
        self.last = Some(line.to_owned());
    }

    fn finish(&mut self) {
        if self.terminal && self.last.is_some() {
            eprintln!();
        }
        self.last = None;
    }
}
