//! The drain benchmark: the real worker process against the in-process emulator.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use purgeq::emulator::qiniu::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY};
use purgeq::emulator::{self, Emulator, EmulatorConfig};
use purgeq::model::{Action, DEFAULT_ACCOUNT, JobState, Provider};
use purgeq::planner::minimum_requests;
use purgeq::provider::qiniu::MAX_REFRESH_URLS;
use purgeq::store::{Durability, NewJobs, Store};

use crate::Sizes;
use crate::baseline::{self, Sync};
use crate::report::{Report, Row};
use crate::util::{self, ms, per_sec, thousands};

/// How often the worker's peak RSS is sampled.
const RSS_POLL: Duration = Duration::from_millis(5);

/// What one worker run did.
struct Drained {
    took: Duration,
    peak_rss_kb: u64,
}

/// Enqueues, drains with `purgeq worker --once`, checks every job, and reports.
pub fn run(purgeq: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    // One runtime thread serves the emulator while this thread waits for the worker.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting a Tokio runtime")?;
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let db = dir.path().join("q.db");
    rt.block_on(fill(&db, sizes))?;
    let emu = rt.block_on(start_emulator())?;
    eprintln!(
        "drain: {} jobs queued, worker starting",
        thousands(sizes.drain_jobs as u64)
    );
    let drained = drain(purgeq, &db, &emu)?;
    rt.block_on(check_all_succeeded(&db, sizes.drain_jobs))?;
    let stats = emu.stats().qiniu;
    let sent = Sent {
        requests: stats.requests.values().sum(),
        minimum: minimum_requests(sizes.drain_distinct, MAX_REFRESH_URLS) as u64,
        targets: stats.issued.iter().map(|r| r.urls.len()).sum(),
    };
    let base = drain_baseline(sizes.drain_jobs)?;
    push_rows(report, sizes, &drained, base, &sent);
    rt.block_on(emu.shutdown());
    Ok(())
}

/// Enqueues `drain_jobs` jobs over `drain_distinct` targets, duplicates spread far apart.
async fn fill(db: &Path, sizes: &Sizes) -> anyhow::Result<()> {
    let store = Store::open(db, Durability::Normal)
        .await
        .with_context(|| format!("creating {}", db.display()))?;
    let distinct = util::urls(sizes.drain_distinct);
    let now = purgeq::clock::now_ms();
    let jobs = NewJobs {
        provider: Provider::Qiniu,
        account: DEFAULT_ACCOUNT.to_owned(),
        action: Action::RefreshUrl,
        tag: None,
        not_before: now,
        targets: (0..sizes.drain_jobs)
            .map(|i| Some(distinct[i % distinct.len()].clone()))
            .collect(),
    };
    store.enqueue(&jobs, now).await.context("enqueueing")?;
    Ok(())
}

/// The emulator with a daily URL quota large enough for the whole run.
async fn start_emulator() -> anyhow::Result<Emulator> {
    let mut config = EmulatorConfig::default();
    config.qiniu.quotas.url_refresh = 1_000_000;
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    emulator::start(listen, config)
        .await
        .context("starting the emulator")
}

/// Runs `purgeq worker --once`, unpaced, while sampling its peak RSS.
fn drain(purgeq: &Path, db: &Path, emu: &Emulator) -> anyhow::Result<Drained> {
    let mut cmd = Command::new(purgeq);
    cmd.arg("--db")
        .arg(db)
        .args(["worker", "--once", "--max-targets-per-sec", "0"])
        .args(["--max-requests-per-sec", "0"])
        .env("QINIU_ACCESS_KEY", DEMO_ACCESS_KEY)
        .env("QINIU_SECRET_KEY", DEMO_SECRET_KEY)
        .env("QINIU_ENDPOINT", emu.url())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_peak_rss(child.id(), Arc::clone(&stop));
    let out = child.wait_with_output().context("waiting for the worker");
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peak_rss_kb = poller
        .join()
        .map_err(|_| anyhow::anyhow!("the RSS poller panicked"))?;
    let out = out?;
    util::check_exit(&cmd, &out)?;
    Ok(Drained { took, peak_rss_kb })
}

/// Samples `VmHWM` of `pid` until `stop`, returning the largest value seen (kB). `VmHWM` only
/// grows, so the last sample before the process exits is its peak.
fn poll_peak_rss(pid: u32, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    let path = format!("/proc/{pid}/status");
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            // An exited (zombie) process has no VmHWM line; keep what was seen before.
            if let Some(kb) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| vm_hwm_kb(&s))
            {
                peak = peak.max(kb);
            }
            std::thread::sleep(RSS_POLL);
        }
        peak
    })
}

/// The `VmHWM` field of a `/proc/PID/status` text, in kB.
fn vm_hwm_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Fails unless all `expected` jobs are `succeeded`.
async fn check_all_succeeded(db: &Path, expected: usize) -> anyhow::Result<()> {
    let store = Store::open(db, Durability::Normal)
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    let summary = store.summary().await.context("reading the job counts")?;
    let succeeded: i64 = summary
        .counts
        .iter()
        .filter(|c| c.state == JobState::Succeeded)
        .map(|c| c.count)
        .sum();
    let total: i64 = summary.counts.iter().map(|c| c.count).sum();
    if usize::try_from(succeeded).ok() != Some(expected) || succeeded != total {
        let counts: Vec<String> = summary
            .counts
            .iter()
            .map(|c| format!("{} {}", c.count, c.state))
            .collect();
        bail!(
            "after the drain, expected {expected} succeeded jobs, found: {}",
            counts.join(", ")
        );
    }
    Ok(())
}

/// The same number of rows set to succeeded by rusqlite in one transaction.
fn drain_baseline(jobs: usize) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let mut conn = baseline::create(&dir.path().join("base.db"), Sync::Normal)?;
    let now = purgeq::clock::now_ms();
    let urls = util::urls(jobs);
    baseline::insert(&mut conn, &urls, now)?;
    baseline::succeed(&mut conn, jobs, now)
}

/// What the emulator saw.
struct Sent {
    requests: u64,
    minimum: u64,
    targets: usize,
}

/// The drain's rows: throughput, requests, targets and memory.
fn push_rows(report: &mut Report, sizes: &Sizes, drained: &Drained, base: Duration, sent: &Sent) {
    report.push(throughput_row(sizes, drained.took, base));
    report.push(Row {
        figure: "drain, requests sent".to_owned(),
        purgeq: thousands(sent.requests),
        baseline: format!(
            "{} minimum: ceil({} / {MAX_REFRESH_URLS})",
            thousands(sent.minimum),
            thousands(sizes.drain_distinct as u64)
        ),
        comparison: difference(sent.requests, sent.minimum),
        target: "== minimum".to_owned(),
        met: Some(sent.requests == sent.minimum),
    });
    let distinct = sizes.drain_distinct as u64;
    report.push(Row {
        figure: "drain, targets sent".to_owned(),
        purgeq: thousands(sent.targets as u64),
        baseline: format!("{} distinct", thousands(distinct)),
        comparison: difference(sent.targets as u64, distinct),
        target: "== distinct".to_owned(),
        met: Some(sent.targets as u64 == distinct),
    });
    // VmHWM counts KiB; the target is in MB.
    let rss_mb = drained.peak_rss_kb as f64 * 1024.0 / 1e6;
    report.push(Row {
        figure: "drain, worker peak RSS (VmHWM)".to_owned(),
        purgeq: format!("{rss_mb:.1} MB"),
        baseline: String::new(),
        comparison: String::new(),
        target: "< 30 MB".to_owned(),
        met: Some(drained.peak_rss_kb > 0 && rss_mb < 30.0),
    });
}

fn throughput_row(sizes: &Sizes, took: Duration, base: Duration) -> Row {
    let rate = per_sec(sizes.drain_jobs, took);
    Row {
        figure: format!(
            "drain, {} jobs over {} targets",
            thousands(sizes.drain_jobs as u64),
            thousands(sizes.drain_distinct as u64)
        ),
        purgeq: format!("{} jobs/s ({})", thousands(rate), ms(took)),
        baseline: format!(
            "{} rows/s ({}) rusqlite UPDATE, 1 tx",
            thousands(per_sec(sizes.drain_jobs, base)),
            ms(base)
        ),
        comparison: format!(
            "{:.1}x the baseline's time",
            took.as_secs_f64() / base.as_secs_f64()
        ),
        target: ">= 10,000 jobs/s (aim 50,000)".to_owned(),
        met: Some(rate >= 10_000),
    }
}

/// `equal`, or how far `value` is from `reference` (`+3`, `-1`).
fn difference(value: u64, reference: u64) -> String {
    match value.cmp(&reference) {
        std::cmp::Ordering::Equal => "equal".to_owned(),
        std::cmp::Ordering::Greater => format!("+{}", value - reference),
        std::cmp::Ordering::Less => format!("-{}", reference - value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_hwm() {
        let status = "Name:\tpurgeq\nVmPeak:\t  100 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(vm_hwm_kb(status), Some(12_345));
        assert_eq!(vm_hwm_kb("Name:\tzombie\nState:\tZ (zombie)\n"), None);
    }
}
