//! The drain benchmark: the real worker process against the in-process emulator.

use std::io::{Read as _, Seek as _, SeekFrom};
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
use purgeq::store::{Location, NewJobs};

use crate::Sizes;
use crate::backend::{Backend, Scratch, open_store};
use crate::baseline::{self, Sync};
use crate::pgbase;
use crate::report::{Report, Row};
use crate::util::{self, ms, per_sec, thousands};

/// How often the worker's peak RSS is sampled.
const RSS_POLL: Duration = Duration::from_millis(5);

/// What one drain did.
struct Drained {
    /// From the first worker's start to the last one's exit.
    took: Duration,
    /// Each worker's peak RSS (kB).
    peak_rss_kb: Vec<u64>,
    /// Requests the emulator received.
    requests: u64,
    /// Targets it processed, duplicates included: the quota units spent.
    targets: u64,
    /// Targets it processed more than once.
    sent_twice: u64,
}

/// For each worker count, enqueues, drains with that many `purgeq worker --once` processes at
/// once, checks every job, and reports.
pub fn run(
    purgeq: &Path,
    backend: &Backend,
    sizes: &Sizes,
    report: &mut Report,
) -> anyhow::Result<()> {
    // One runtime thread serves the emulator while this thread waits for the workers.
    let rt = util::serving_runtime(1)?;
    let mut runs = Vec::new();
    for workers in [1, sizes.drain_workers] {
        let scratch = backend.scratch()?;
        rt.block_on(fill(scratch.location(), sizes))?;
        let emu = rt.block_on(start_emulator())?;
        eprintln!(
            "{} drain: {} jobs queued, {workers} worker(s) starting",
            backend.name(),
            thousands(sizes.drain_jobs as u64)
        );
        let (took, peak_rss_kb) = drain(purgeq, &scratch, &emu, workers)?;
        rt.block_on(check_all_succeeded(scratch.location(), sizes.drain_jobs))?;
        let stats = emu.stats().qiniu;
        runs.push((
            workers,
            Drained {
                took,
                peak_rss_kb,
                requests: stats.requests.values().sum(),
                targets: stats.issued.iter().map(|r| r.urls.len() as u64).sum(),
                sent_twice: stats.purged.values().filter(|&&n| n > 1).count() as u64,
            },
        ));
        rt.block_on(emu.shutdown());
    }
    let base = match backend {
        Backend::Sqlite => drain_baseline(sizes.drain_jobs, sizes.drain_jobs)?,
        Backend::Postgres(_) => {
            let scratch = backend.scratch()?;
            scratch.create_schema()?;
            let url = scratch.pg_url().context("a PostgreSQL scratch database")?;
            let now = purgeq::clock::now_ms();
            rt.block_on(async {
                let mut conn = pgbase::connect(url).await?;
                pgbase::drop_triggers(&mut conn).await?;
                let lines = pgbase::queued_lines(&util::urls(sizes.drain_jobs), now);
                pgbase::copy(&mut conn, pgbase::COPY_JOBS, &lines).await?;
                pgbase::succeed_all(url, now).await
            })?
        }
    };
    push_rows(report, backend, sizes, &runs, base);
    if let (Backend::Sqlite, Some((_, one))) = (backend, runs.first()) {
        push_floor(report, backend, sizes, one, base)?;
    }
    Ok(())
}

/// Enqueues `drain_jobs` jobs over `drain_distinct` targets, duplicates spread far apart.
pub async fn fill(location: &Location, sizes: &Sizes) -> anyhow::Result<()> {
    let store = open_store(location).await?;
    let distinct = util::urls(sizes.drain_distinct);
    let now = purgeq::clock::now_ms();
    let jobs = NewJobs {
        provider: Provider::Qiniu,
        account: DEFAULT_ACCOUNT.to_owned(),
        action: Action::RefreshUrl,
        tag: None,
        not_before: now,
        priority: purgeq::model::Priority::Normal,
        targets: (0..sizes.drain_jobs)
            .map(|i| Some(distinct[i % distinct.len()].clone()))
            .collect(),
    };
    store.enqueue(&jobs, now).await.context("enqueueing")?;
    Ok(())
}

/// The emulator with a daily URL quota large enough for the whole run.
pub async fn start_emulator() -> anyhow::Result<Emulator> {
    let mut config = EmulatorConfig::default();
    config.qiniu.quotas.url_refresh = 1_000_000;
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    emulator::start(listen, config)
        .await
        .context("starting the emulator")
}

/// Runs `workers` `purgeq worker --once` processes at once, unpaced, while sampling their peak
/// RSS; returns the time from the first start to the last exit.
fn drain(
    purgeq: &Path,
    scratch: &Scratch,
    emu: &Emulator,
    workers: usize,
) -> anyhow::Result<(Duration, Vec<u64>)> {
    let command = || {
        let mut cmd = Command::new(purgeq);
        cmd.arg("--db")
            .arg(scratch.db_arg())
            .args(["worker", "--once", "--max-targets-per-sec", "0"])
            .args(["--max-requests-per-sec", "0"])
            // Sending only: confirmation has its own benchmark (`--only confirm`).
            .arg("--no-confirm")
            .env("QINIU_ACCESS_KEY", DEMO_ACCESS_KEY)
            .env("QINIU_SECRET_KEY", DEMO_SECRET_KEY)
            .env("QINIU_ENDPOINT", emu.url())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    };
    let start = Instant::now();
    let mut running = Vec::new();
    for _ in 0..workers {
        let mut cmd = command();
        // Each worker's stderr goes to a file of its own: a pipe nobody reads while this thread
        // waits for another worker would fill up and stall the worker writing to it.
        let log = tempfile::tempfile().context("creating a file for a worker's stderr")?;
        cmd.stderr(Stdio::from(
            log.try_clone().context("sharing the stderr file")?,
        ));
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let poller = poll_peak_rss(child.id(), Arc::clone(&stop));
        running.push((cmd, child, log, stop, poller));
    }
    let mut exits = Vec::new();
    for (cmd, mut child, log, stop, poller) in running {
        let status = child.wait().context("waiting for a worker");
        stop.store(true, Ordering::Relaxed);
        let peak = poller
            .join()
            .map_err(|_| anyhow::anyhow!("the RSS poller panicked"))?;
        exits.push((cmd, status, log, peak));
    }
    let took = start.elapsed();
    let mut peaks = Vec::new();
    for (cmd, status, mut log, peak) in exits {
        let status = status?;
        if !status.success() {
            let mut stderr = String::new();
            log.seek(SeekFrom::Start(0)).ok();
            log.read_to_string(&mut stderr).ok();
            bail!("{cmd:?} failed ({status}):\n{stderr}");
        }
        peaks.push(peak);
    }
    Ok((took, peaks))
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
async fn check_all_succeeded(location: &Location, expected: usize) -> anyhow::Result<()> {
    let store = open_store(location).await?;
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

/// The same number of rows set to succeeded by rusqlite, `per_tx` rows to a transaction.
fn drain_baseline(jobs: usize, per_tx: usize) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let mut conn = baseline::create(&dir.path().join("base.db"), Sync::Normal)?;
    let now = purgeq::clock::now_ms();
    let urls = util::urls(jobs);
    baseline::insert(&mut conn, &urls, now)?;
    baseline::succeed(&mut conn, jobs, per_tx, now)
}

/// The SQLite floor of a queue that makes each request's outcome durable: the baseline's
/// per-row UPDATEs committed once per request's jobs (a full request of targets and their
/// duplicates), beside the one-transaction baseline and the one-worker drain. No target: it
/// shows how much of the gap to the one-transaction baseline is the commits themselves.
fn push_floor(
    report: &mut Report,
    backend: &Backend,
    sizes: &Sizes,
    drained: &Drained,
    one_tx: Duration,
) -> anyhow::Result<()> {
    let per_request = (MAX_REFRESH_URLS * sizes.drain_jobs).div_ceil(sizes.drain_distinct.max(1));
    let floor = drain_baseline(sizes.drain_jobs, per_request)?;
    report.push(Row {
        backend: backend.name(),
        figure: format!(
            "drain floor: the baseline's UPDATEs, one commit per request's {per_request} jobs"
        ),
        purgeq: format!(
            "1 worker: {} jobs/s ({:.1}x the floor's time)",
            thousands(per_sec(sizes.drain_jobs, drained.took)),
            drained.took.as_secs_f64() / floor.as_secs_f64()
        ),
        baseline: format!(
            "{} rows/s ({}) one commit per {per_request} rows",
            thousands(per_sec(sizes.drain_jobs, floor)),
            ms(floor)
        ),
        comparison: format!(
            "the floor is {:.2}x the one-transaction baseline's rate",
            one_tx.as_secs_f64() / floor.as_secs_f64()
        ),
        target: String::new(),
        met: None,
    });
    Ok(())
}

/// The drain's rows: throughput per worker count, requests, quota units and memory.
fn push_rows(
    report: &mut Report,
    backend: &Backend,
    sizes: &Sizes,
    runs: &[(usize, Drained)],
    base: Duration,
) {
    let name = backend.name();
    let how = match backend {
        Backend::Sqlite => "rusqlite UPDATE per row, 1 tx",
        Backend::Postgres(_) => "sqlx UPDATE FROM unnest, 1 tx",
    };
    for (workers, drained) in runs {
        let rate = per_sec(sizes.drain_jobs, drained.took);
        // SQLite's one writer: one worker against half the plain per-row rate. PostgreSQL:
        // a floor for 1 and for 3 workers.
        let (target, met) = match backend {
            Backend::Sqlite if *workers == 1 => (
                ">= 0.5x the baseline's rows/s",
                rate as f64 >= 0.5 * per_sec(sizes.drain_jobs, base) as f64,
            ),
            _ => (">= 10,000 jobs/s", rate >= 10_000),
        };
        report.push(Row {
            backend: name,
            figure: format!(
                "drain, {} jobs over {} targets, {workers} worker{}",
                thousands(sizes.drain_jobs as u64),
                thousands(sizes.drain_distinct as u64),
                if *workers == 1 { "" } else { "s at once" }
            ),
            purgeq: format!("{} jobs/s ({})", thousands(rate), ms(drained.took)),
            baseline: format!(
                "{} rows/s ({}) {how}",
                thousands(per_sec(sizes.drain_jobs, base)),
                ms(base)
            ),
            comparison: format!(
                "{:.1}x the baseline's time",
                drained.took.as_secs_f64() / base.as_secs_f64()
            ),
            target: target.to_owned(),
            met: Some(met),
        });
    }
    let per_run = |f: &dyn Fn(&Drained) -> String| {
        runs.iter()
            .map(|(w, d)| format!("{} ({w}w)", f(d)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let minimum = minimum_requests(sizes.drain_distinct, MAX_REFRESH_URLS) as u64;
    let worst = |f: &dyn Fn(&Drained) -> u64| runs.iter().map(|(_, d)| f(d)).max().unwrap_or(0);
    let requests = worst(&|d| d.requests);
    report.push(Row {
        backend: name,
        figure: "drain, requests sent".to_owned(),
        purgeq: per_run(&|d| thousands(d.requests)),
        baseline: format!(
            "{} minimum: ceil({} / {MAX_REFRESH_URLS})",
            thousands(minimum),
            thousands(sizes.drain_distinct as u64)
        ),
        comparison: difference(requests, minimum),
        target: "== minimum".to_owned(),
        met: Some(runs.iter().all(|(_, d)| d.requests == minimum)),
    });
    let distinct = sizes.drain_distinct as u64;
    let sent_twice = worst(&|d| d.sent_twice);
    report.push(Row {
        backend: name,
        figure: "drain, targets sent (quota units)".to_owned(),
        purgeq: per_run(&|d| thousands(d.targets)),
        baseline: format!("{} distinct", thousands(distinct)),
        comparison: format!(
            "{}; {sent_twice} sent twice",
            difference(worst(&|d| d.targets), distinct)
        ),
        target: "== distinct, none twice".to_owned(),
        met: Some(
            runs.iter()
                .all(|(_, d)| d.targets == distinct && d.sent_twice == 0),
        ),
    });
    let jobs = sizes.drain_jobs as u64;
    let spent = worst(&|d| d.targets);
    let saved = jobs.saturating_sub(spent);
    report.push(Row {
        backend: name,
        figure: "quota units saved by dedupe".to_owned(),
        purgeq: format!(
            "{} jobs -> {} units: {} saved ({:.1}%)",
            thousands(jobs),
            thousands(spent),
            thousands(saved),
            saved as f64 * 100.0 / jobs as f64
        ),
        baseline: format!("{} units without dedupe (one per job)", thousands(jobs)),
        comparison: format!("{:.2}x fewer units", jobs as f64 / spent.max(1) as f64),
        target: format!("== jobs - distinct ({})", thousands(jobs - distinct)),
        met: Some(saved == jobs - distinct),
    });
    // VmHWM counts KiB; the target is in MB.
    let mb = |kb: u64| kb as f64 * 1024.0 / 1e6;
    let peaks: Vec<u64> = runs
        .iter()
        .flat_map(|(_, d)| d.peak_rss_kb.iter().copied())
        .collect();
    report.push(Row {
        backend: name,
        figure: "drain, worker peak RSS (VmHWM)".to_owned(),
        purgeq: per_run(&|d| {
            d.peak_rss_kb
                .iter()
                .map(|&kb| format!("{:.1}", mb(kb)))
                .collect::<Vec<_>>()
                .join(" / ")
                + " MB"
        }),
        baseline: String::new(),
        comparison: String::new(),
        target: "< 30 MB".to_owned(),
        met: Some(peaks.iter().all(|&kb| kb > 0 && mb(kb) < 30.0)),
    });
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
