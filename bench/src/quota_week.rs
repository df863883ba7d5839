//! The quota week: a simulated week of over-quota traffic through the real worker (the
//! library's `worker::run`, in process) against the in-process emulator, on simulated days.
//!
//! Each day brings more distinct URLs than the daily quota (500) and some duplicates. A day
//! ends once its quota is spent, a request is refused for quota (nothing more goes through
//! before the reset), the queue is empty, or the worker has gone quiet (no request for
//! [`QUIET`]), so a slow machine lengthens the days instead of cutting them short. At each
//! day's end the bench reads what the emulator has left of the day's URL quota and whether
//! jobs were still queued, then refills the quota and only then tells the worker's account that
//! the day turned, so the worker can never be ahead of the emulator's reset.
//!
//! Figures: quota units spent per distinct target served (1.00 means no unit went to a
//! duplicate, a refused request or a target sent twice), units left unused at the resets while
//! work was queued (0 means every unit of every day went to work), and requests refused for
//! quota. Baseline: the same week with the provider's quota readings hidden from the worker,
//! which then always asks for full batches, as purgeq did before issue 14.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use purgeq::emulator::qiniu::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY};
use purgeq::emulator::{self, EmulatorConfig};
use purgeq::model::{Action, DEFAULT_ACCOUNT, JobState, Priority, Provider};
use purgeq::planner::Batch;
use purgeq::provider::qiniu::{Credentials, QiniuAccount, QiniuClient, QiniuSettings};
use purgeq::provider::{Account, AccountBase, CallFuture, CallReport, Credential, Route};
use purgeq::secret::Secret;
use purgeq::store::{Location, NewJobs, Store};
use purgeq::worker::{DEFAULT_LEASE, Handles, Policies, Timeouts, WorkerConfig, worker_id};
use tokio_util::sync::CancellationToken;

use crate::Sizes;
use crate::backend::{Backend, open_store};
use crate::report::{Report, Row};
use crate::util::thousands;

/// The emulated account's daily URL refresh quota (Qiniu's default).
const QUOTA: u64 = 500;

/// A day ends after this long without a request reaching the emulator.
const QUIET: Duration = Duration::from_secs(5);

/// The longest a simulated day lasts.
const LONGEST_DAY: Duration = Duration::from_secs(60);

/// What one simulated week did.
#[derive(Debug, Default)]
struct Week {
    /// URL refresh units the emulator spent.
    units: u64,
    /// Distinct targets it refreshed.
    distinct: u64,
    /// Targets it refreshed more than once.
    twice: u64,
    /// Units left at the resets of days that ended with work queued.
    unused: u64,
    /// Requests refused for a used-up quota.
    refused: u64,
}

/// Days of a simulated week, turned by the bench: a reading counts until the first turn after
/// it; a turn not yet announced lies ahead (a nominal day after the last, or just ahead of now
/// once that has passed), so the worker waits for the bench's announcement.
#[derive(Debug)]
struct Days {
    start: i64,
    length: i64,
    turned: Mutex<Vec<i64>>,
}

impl Days {
    fn reset_after(&self, t: i64) -> i64 {
        let turned = self.turned.lock().map(|v| v.clone()).unwrap_or_default();
        if let Some(at) = turned.iter().find(|at| **at > t) {
            return *at;
        }
        let planned = turned.last().copied().unwrap_or(self.start) + self.length;
        planned.max(purgeq::clock::now_ms() + 1)
    }

    fn turn(&self) {
        if let Ok(mut turned) = self.turned.lock() {
            turned.push(purgeq::clock::now_ms());
        }
    }
}

/// The Qiniu account on simulated days; with `hide_readings`, as if the provider reported no
/// quota (the baseline).
#[derive(Debug)]
struct SimulatedDays {
    inner: QiniuAccount,
    days: Arc<Days>,
    hide_readings: bool,
}

impl Account for SimulatedDays {
    fn provider(&self) -> Provider {
        self.inner.provider()
    }
    fn base(&self) -> &AccountBase {
        self.inner.base()
    }
    fn prepare<'a>(
        &'a self,
        store: &'a Store,
        renew: bool,
    ) -> CallFuture<'a, Result<Credential, CallReport>> {
        self.inner.prepare(store, renew)
    }
    fn send<'a>(
        &'a self,
        route: &'a Route,
        batch: &'a Batch,
        credential: &'a Credential,
    ) -> CallFuture<'a, CallReport> {
        Box::pin(async move {
            let mut report = self.inner.send(route, batch, credential).await;
            if self.hide_readings {
                report.quotas.clear();
            }
            report
        })
    }
    fn quota_reset_at(&self, now: i64) -> Option<i64> {
        Some(self.days.reset_after(now))
    }
}

/// Runs the week with and without quota readings, and reports both.
pub fn run(backend: &Backend, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let rt = crate::util::serving_runtime(2)?;
    let name = backend.name();
    eprintln!("{name} quota week: {} simulated days", sizes.week_days);
    // N.B. Scratch databases are made and dropped outside the runtime (PostgreSQL's use one of
    // their own).
    let scratch = backend.scratch()?;
    let purgeq = rt.block_on(week(scratch.location(), sizes, false))?;
    let scratch = backend.scratch()?;
    let baseline = rt.block_on(week(scratch.location(), sizes, true))?;
    push_rows(report, name, &purgeq, &baseline);
    Ok(())
}

async fn week(location: &Location, sizes: &Sizes, hide_readings: bool) -> anyhow::Result<Week> {
    let store = open_store(location).await?;
    let mut config = EmulatorConfig::default();
    config.qiniu.quotas.url_refresh = QUOTA;
    let emu = emulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .context("starting the emulator")?;
    let days = Arc::new(Days {
        start: purgeq::clock::now_ms(),
        length: i64::try_from(sizes.week_day.as_millis())?,
        turned: Mutex::new(Vec::new()),
    });
    let account = SimulatedDays {
        inner: qiniu_account(&emu.url())?,
        days: Arc::clone(&days),
        hide_readings,
    };
    let stop = CancellationToken::new();
    let worker = tokio::spawn(purgeq::worker::run(
        store.clone(),
        vec![Arc::new(account)],
        worker_config()?,
        Handles::from_env(),
        stop.clone(),
    ));
    let mut out = Week::default();
    for day in 0..sizes.week_days {
        enqueue_day(&store, day, sizes.week_urls_per_day).await?;
        day_ends(&emu, &store).await?;
        let left = emu.stats().qiniu.quota.url_refresh.surplus;
        if queued(&store).await? > 0 {
            out.unused += left;
        }
        emu.reset_quota();
        days.turn();
    }
    stop.cancel();
    worker.await.context("the worker task")??;
    let stats = emu.stats().qiniu;
    out.units = stats.days.values().map(|d| d.url_refresh).sum();
    out.refused = stats.days.values().map(|d| d.quota_refused).sum();
    out.distinct = stats.purged.len() as u64;
    out.twice = stats.purged.values().filter(|n| **n > 1).count() as u64;
    emu.shutdown().await;
    Ok(out)
}

/// Waits until the day's quota is spent or refused, the queue is empty or the worker has gone
/// quiet.
async fn day_ends(emu: &emulator::Emulator, store: &Store) -> anyhow::Result<()> {
    let refused = |stats: &purgeq::emulator::qiniu::QiniuStats| -> u64 {
        stats.days.values().map(|d| d.quota_refused).sum()
    };
    let refused_before = refused(&emu.stats().qiniu);
    let began = tokio::time::Instant::now();
    let (mut seen, mut last_request) = (u64::MAX, began);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stats = emu.stats().qiniu;
        let requests: u64 = stats.requests.values().sum();
        if requests != seen {
            (seen, last_request) = (requests, tokio::time::Instant::now());
        }
        if stats.quota.url_refresh.surplus == 0
            || refused(&stats) > refused_before
            || queued(store).await? == 0
            || last_request.elapsed() > QUIET
            || began.elapsed() > LONGEST_DAY
        {
            return Ok(());
        }
    }
}

fn qiniu_account(endpoint: &str) -> anyhow::Result<QiniuAccount> {
    let http = purgeq::provider::http_client(Duration::from_secs(10))?;
    let client = QiniuClient::new(
        http,
        endpoint.to_owned(),
        Credentials {
            access_key: DEMO_ACCESS_KEY.to_owned(),
            secret_key: Secret::new(DEMO_SECRET_KEY),
        },
    );
    let settings = QiniuSettings {
        targets_per_sec: 0.0,
        requests_per_sec: 0.0,
        ..QiniuSettings::default()
    };
    Ok(QiniuAccount::new(client, settings))
}

/// Polls often and backs off in milliseconds, so a day of a second or two is a whole day.
fn worker_config() -> anyhow::Result<WorkerConfig> {
    let mut config = WorkerConfig::new(worker_id(), DEFAULT_LEASE, Timeouts::default())?;
    config.poll_interval = Duration::from_millis(10);
    config.policies = Policies::default().scaled(0.001);
    Ok(config)
}

/// A day's traffic: `n` new distinct URLs, a fifth of them queued twice.
async fn enqueue_day(store: &Store, day: usize, n: usize) -> anyhow::Result<()> {
    let urls: Vec<String> = (0..n)
        .map(|i| format!("https://cdn.example.com/day-{day}/file-{i:05}.js"))
        .collect();
    let targets = urls.iter().chain(urls.iter().take(n / 5));
    let now = purgeq::clock::now_ms();
    let jobs = NewJobs {
        provider: Provider::Qiniu,
        account: DEFAULT_ACCOUNT.to_owned(),
        action: Action::RefreshUrl,
        tag: None,
        not_before: now,
        priority: Priority::Normal,
        targets: targets.cloned().map(Some).collect(),
    };
    store
        .enqueue(&jobs, now)
        .await
        .context("enqueueing a day")?;
    Ok(())
}

async fn queued(store: &Store) -> anyhow::Result<i64> {
    let summary = store.summary().await?;
    Ok(summary
        .counts
        .iter()
        .filter(|c| c.state == JobState::Queued)
        .map(|c| c.count)
        .sum())
}

fn push_rows(report: &mut Report, backend: &'static str, purgeq: &Week, baseline: &Week) {
    let per_target = |w: &Week| w.units as f64 / w.distinct.max(1) as f64;
    let row = |figure: &str, ours: String, base: String, target: &str, met: Option<bool>| Row {
        backend,
        figure: figure.to_owned(),
        purgeq: ours,
        baseline: base,
        comparison: String::new(),
        target: target.to_owned(),
        met,
    };
    let (ours, base) = (per_target(purgeq), per_target(baseline));
    report.push(row(
        "quota week: units per distinct target (readings hidden = baseline)",
        format!("{ours:.2}"),
        format!("{base:.2}"),
        "1.00",
        Some(format!("{ours:.2}") == "1.00" && purgeq.twice == 0),
    ));
    report.push(row(
        "quota week: units unused at resets while work was queued",
        thousands(purgeq.unused),
        thousands(baseline.unused),
        "0",
        Some(purgeq.unused == 0),
    ));
    report.push(row(
        "quota week: requests refused for quota",
        thousands(purgeq.refused),
        thousands(baseline.refused),
        "0",
        Some(purgeq.refused == 0),
    ));
    report.push(row(
        "quota week: distinct targets purged",
        thousands(purgeq.distinct),
        thousands(baseline.distinct),
        "",
        None,
    ));
}
