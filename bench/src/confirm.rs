//! The confirmation benchmark: what confirming every accepted Qiniu purge costs in task-list
//! queries, counted at the emulator.
//!
//! N jobs over N/3 distinct targets (so duplicates ride one request) are drained by one real
//! `purgeq worker --once` process against the in-process emulator, whose tasks complete after
//! [`COMPLETE_AFTER`]; the first query comes [`CONFIRM_INTERVAL`] after acceptance (the common
//! case: the CDN is done by the first look). Every job must end `succeeded` with the CDN's end
//! time. Baseline: one query per accepted request, the least that can confirm it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use purgeq::emulator::qiniu::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY};
use purgeq::emulator::{self, EmulatorConfig};
use purgeq::model::{Action, DEFAULT_ACCOUNT, JobState, Provider};
use purgeq::store::{JobFilter, Location, NewJobs};

use crate::Sizes;
use crate::backend::{Backend, open_store};
use crate::report::{Report, Row};
use crate::util::{self, ms, thousands};

/// How long the emulator's tasks stay `processing`.
const COMPLETE_AFTER: Duration = Duration::from_millis(500);
/// `--confirm-interval`: the first query comes after the tasks are done.
const CONFIRM_INTERVAL: &str = "1s";

/// Drains with confirmation, checks every job and reports the queries per accepted request.
pub fn run(
    purgeq: &Path,
    backend: &Backend,
    sizes: &Sizes,
    report: &mut Report,
) -> anyhow::Result<()> {
    let rt = util::serving_runtime(1)?;
    let jobs = sizes.confirm_jobs;
    let scratch = backend.scratch()?;
    rt.block_on(fill(scratch.location(), jobs))?;
    let mut config = EmulatorConfig::default();
    config.qiniu.quotas.url_refresh = 1_000_000;
    config.qiniu.complete_after = COMPLETE_AFTER;
    let emu = rt
        .block_on(emulator::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            config,
        ))
        .context("starting the emulator")?;
    eprintln!(
        "{} confirm: {} jobs queued, one worker starting",
        backend.name(),
        thousands(jobs as u64)
    );
    let started = Instant::now();
    let mut cmd = Command::new(purgeq);
    cmd.arg("--db")
        .arg(scratch.db_arg())
        .args(["worker", "--once", "--max-targets-per-sec", "0"])
        .args(["--max-requests-per-sec", "0", "--poll-interval", "100ms"])
        .args(["--confirm-interval", CONFIRM_INTERVAL])
        .env("QINIU_ACCESS_KEY", DEMO_ACCESS_KEY)
        .env("QINIU_SECRET_KEY", DEMO_SECRET_KEY)
        .env("QINIU_ENDPOINT", emu.url())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let out = cmd.output().context("running purgeq worker --once")?;
    util::check_exit(&cmd, &out)?;
    let took = started.elapsed();
    rt.block_on(check_confirmed(scratch.location(), jobs))?;
    let stats = emu.stats().qiniu;
    let accepted = stats.issued.len() as u64;
    let queries: u64 = ["refresh_list", "prefetch_list"]
        .iter()
        .filter_map(|op| stats.requests.get(*op))
        .sum();
    rt.block_on(emu.shutdown());
    let per_request = queries as f64 / accepted.max(1) as f64;
    report.push(Row {
        backend: backend.name(),
        figure: "confirm, task-list queries per accepted request".to_owned(),
        purgeq: format!(
            "{per_request:.2} ({} queries, {} requests, {} jobs, drained and confirmed in {})",
            thousands(queries),
            thousands(accepted),
            thousands(jobs as u64),
            ms(took)
        ),
        baseline: "1 query per accepted request".to_owned(),
        comparison: format!("{per_request:.2}x"),
        target: "<= 1 in the common case".to_owned(),
        met: Some(queries <= accepted),
    });
    Ok(())
}

/// Enqueues `jobs` jobs over `jobs / 3` distinct targets.
async fn fill(location: &Location, jobs: usize) -> anyhow::Result<()> {
    let store = open_store(location).await?;
    let distinct = util::urls((jobs / 3).max(1));
    let now = purgeq::clock::now_ms();
    let new = NewJobs {
        provider: Provider::Qiniu,
        account: DEFAULT_ACCOUNT.to_owned(),
        action: Action::RefreshUrl,
        tag: None,
        not_before: now,
        priority: purgeq::model::Priority::Normal,
        targets: (0..jobs)
            .map(|i| Some(distinct[i % distinct.len()].clone()))
            .collect(),
    };
    store.enqueue(&new, now).await.context("enqueueing")?;
    Ok(())
}

/// Every job succeeded with the CDN's end time.
async fn check_confirmed(location: &Location, jobs: usize) -> anyhow::Result<()> {
    let store = open_store(location).await?;
    let all = store
        .list_jobs(&JobFilter {
            limit: i64::try_from(jobs).unwrap_or(i64::MAX),
            ..JobFilter::default()
        })
        .await?;
    let confirmed = all
        .iter()
        .filter(|j| j.state == JobState::Succeeded && j.confirmed_at.is_some())
        .count();
    if confirmed != jobs {
        bail!("{confirmed} of {jobs} jobs succeeded with a confirmation");
    }
    Ok(())
}
