//! The latency benchmark (issue 15): how soon a new job reaches the provider, what an idle worker
//! costs, and how a producer fares while a worker drains at full speed.
//!
//! - **wake**: a `purgeq worker` with the default poll interval (1 s), unpaced, idle; each job is
//!   enqueued through the library (`synchronous=FULL`) and timed from its commit to the moment
//!   the in-process emulator has purged it (polled every 200 µs). Enqueues are spread over the
//!   poll interval. Baseline: what polling alone gives, half the interval on average.
//! - **idle CPU**: the same worker's user + system CPU time (`/proc/PID/stat`) over a quiet
//!   minute, before the first measured enqueue.
//! - **busy**: `purgeq enqueue URL` processes, one after another, on a database holding the
//!   drain's jobs, first with no worker (the baseline), then while one unpaced worker drains it.
//! - **floor**: a minimal process (this benchmark binary, `--floor-insert`) that opens the same
//!   SQLite database and inserts one row with `synchronous=FULL` (PostgreSQL: `psql -c INSERT`),
//!   for the single-URL enqueue row.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use purgeq::emulator::Emulator;
use purgeq::emulator::qiniu::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY};
use purgeq::model::{Action, DEFAULT_ACCOUNT, Provider};
use purgeq::store::{Durability, NewJobs, OpenOptions, Store};

use crate::Sizes;
use crate::backend::{Backend, Scratch};
use crate::drain::{fill, start_emulator};
use crate::report::{Report, Row};
use crate::util::{self, ms, p50_p99, percentile};

/// How often the emulator is asked whether the job arrived.
const ARRIVAL_POLL: Duration = Duration::from_micros(200);

/// The longest any single wait here may take before the run is declared broken.
const GIVE_UP: Duration = Duration::from_secs(60);

/// The worker's default poll interval, the polling-only baseline.
const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// The idle worker's wake-up latency and CPU, then enqueues under a drain.
pub fn run(
    purgeq: &Path,
    backend: &Backend,
    sizes: &Sizes,
    report: &mut Report,
) -> anyhow::Result<()> {
    let rt = util::serving_runtime(1)?;
    idle(purgeq, backend, sizes, &rt, report)?;
    busy(purgeq, backend, sizes, &rt, report)
}

/// `purgeq worker` (the default poll interval, unpaced) against `emu`.
fn start_worker(purgeq: &Path, scratch: &Scratch, emu: &Emulator) -> anyhow::Result<Child> {
    let mut cmd = Command::new(purgeq);
    cmd.arg("--db")
        .arg(scratch.db_arg())
        .args(["worker", "--max-targets-per-sec", "0"])
        .args(["--max-requests-per-sec", "0"])
        .env("QINIU_ACCESS_KEY", DEMO_ACCESS_KEY)
        .env("QINIU_SECRET_KEY", DEMO_SECRET_KEY)
        .env("QINIU_ENDPOINT", emu.url())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().with_context(|| format!("starting {cmd:?}"))
}

/// Stops a worker with SIGTERM and checks it exits cleanly.
fn stop_worker(mut child: Child) -> anyhow::Result<()> {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .context("running kill")?;
    ensure!(killed.success(), "kill -TERM failed");
    let status = child.wait().context("waiting for the worker")?;
    ensure!(status.success(), "the worker exited with {status}");
    Ok(())
}

/// Waits until the emulator has purged `url`; the time from `since`.
fn arrival(emu: &Emulator, url: &str, since: Instant) -> anyhow::Result<Duration> {
    loop {
        if emu.stats().qiniu.purged.contains_key(url) {
            return Ok(since.elapsed());
        }
        if since.elapsed() > GIVE_UP {
            bail!("{url} was never purged");
        }
        std::thread::sleep(ARRIVAL_POLL);
    }
}

/// Enqueues one URL through the library (durably) and returns when it is committed.
fn enqueue_one(rt: &tokio::runtime::Runtime, store: &Store, url: &str) -> anyhow::Result<()> {
    let now = purgeq::clock::now_ms();
    let jobs = NewJobs {
        provider: Provider::Qiniu,
        account: DEFAULT_ACCOUNT.to_owned(),
        action: Action::RefreshUrl,
        tag: None,
        not_before: now,
        priority: purgeq::model::Priority::Normal,
        targets: vec![Some(url.to_owned())],
    };
    rt.block_on(store.enqueue(&jobs, now))
        .context("enqueueing")?;
    Ok(())
}

/// User + system CPU time of `pid` so far.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading stat")?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("a stat line")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("a short stat line")?
            .parse()
            .context("a stat field")
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command; the
    // kernel counts them in USER_HZ (100 per second on Linux).
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// An idle worker: its CPU over a quiet interval, then the latency from commit to request.
fn idle(
    purgeq: &Path,
    backend: &Backend,
    sizes: &Sizes,
    rt: &tokio::runtime::Runtime,
    report: &mut Report,
) -> anyhow::Result<()> {
    let scratch = backend.scratch()?;
    let store = rt
        .block_on(Store::connect(
            scratch.location(),
            &OpenOptions::new(Durability::Full),
        ))
        .context("opening the queue")?;
    let emu = rt.block_on(start_emulator())?;
    let worker = start_worker(purgeq, &scratch, &emu)?;
    enqueue_one(rt, &store, "https://cdn.example.com/warm-up")?;
    arrival(&emu, "https://cdn.example.com/warm-up", Instant::now())?;
    eprintln!(
        "{} idle worker: CPU over {} s",
        backend.name(),
        sizes.idle_secs
    );
    let before = cpu_time(worker.id())?;
    std::thread::sleep(Duration::from_secs(sizes.idle_secs));
    let cpu = cpu_time(worker.id())?.saturating_sub(before);
    let mut latencies = Vec::new();
    for i in 0..sizes.wake_runs {
        // Spread over the poll interval: 100 to 1,090 ms apart.
        std::thread::sleep(Duration::from_millis(100 + (i as u64 * 373) % 1000));
        let url = format!("https://cdn.example.com/wake-{i}");
        enqueue_one(rt, &store, &url)?;
        latencies.push(arrival(&emu, &url, Instant::now())?);
    }
    stop_worker(worker)?;
    rt.block_on(emu.shutdown());
    push_idle_rows(report, backend, sizes, cpu, &latencies);
    Ok(())
}

fn push_idle_rows(
    report: &mut Report,
    backend: &Backend,
    sizes: &Sizes,
    cpu: Duration,
    latencies: &[Duration],
) {
    let p50 = percentile(latencies, 0.5);
    report.push(Row {
        backend: backend.name(),
        figure: format!(
            "enqueue commit to first request, idle worker, default poll interval ({} runs)",
            latencies.len()
        ),
        purgeq: p50_p99(latencies),
        baseline: format!(
            "polling alone: {} on average (half the {} interval)",
            ms(DEFAULT_POLL / 2),
            ms(DEFAULT_POLL)
        ),
        comparison: format!(
            "{:.0}x sooner",
            (DEFAULT_POLL / 2).as_secs_f64() / p50.as_secs_f64().max(1e-6)
        ),
        target: "p50 <= 50 ms".to_owned(),
        met: Some(p50 <= Duration::from_millis(50)),
    });
    let share = cpu.as_secs_f64() / sizes.idle_secs as f64 * 100.0;
    report.push(Row {
        backend: backend.name(),
        figure: format!("idle worker CPU over {} s", sizes.idle_secs),
        purgeq: format!("{} CPU, {share:.2}% of one core", ms(cpu)),
        baseline: String::new(),
        comparison: String::new(),
        target: "near zero (< 1% of a core)".to_owned(),
        met: Some(share < 1.0),
    });
}

/// Single-URL enqueue processes on the drain's database: alone, then under a draining worker.
fn busy(
    purgeq: &Path,
    backend: &Backend,
    sizes: &Sizes,
    rt: &tokio::runtime::Runtime,
    report: &mut Report,
) -> anyhow::Result<()> {
    let scratch = backend.scratch()?;
    rt.block_on(fill(scratch.location(), sizes))?;
    let enqueue = |n: usize| {
        let mut cmd = Command::new(purgeq);
        cmd.arg("--db")
            .arg(scratch.db_arg())
            .arg("enqueue")
            .arg(format!("https://cdn.example.com/producer-{n}"));
        util::time_command(&mut cmd)
    };
    let alone = (0..sizes.busy_enqueues)
        .map(enqueue)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let emu = rt.block_on(start_emulator())?;
    let worker = start_worker(purgeq, &scratch, &emu)?;
    eprintln!(
        "{} busy: enqueues while a worker drains {} jobs",
        backend.name(),
        util::thousands(sizes.drain_jobs as u64)
    );
    // Let the drain get going before the first timed enqueue.
    let start = Instant::now();
    while emu.stats().qiniu.purged.is_empty() && start.elapsed() < GIVE_UP {
        std::thread::sleep(Duration::from_millis(5));
    }
    let during = (sizes.busy_enqueues..2 * sizes.busy_enqueues)
        .map(enqueue)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let purged = emu.stats().qiniu.purged.len();
    stop_worker(worker)?;
    rt.block_on(emu.shutdown());
    let p99 = percentile(&during, 0.99);
    report.push(Row {
        backend: backend.name(),
        figure: format!(
            "single-URL enqueue while a worker drains {} jobs ({} runs; {} of {} targets sent by the last)",
            util::thousands(sizes.drain_jobs as u64),
            during.len(),
            util::thousands(purged as u64),
            util::thousands(sizes.drain_distinct as u64)
        ),
        purgeq: p50_p99(&during),
        baseline: format!("{} with no worker", p50_p99(&alone)),
        comparison: format!("p99 {}", util::factor(p99, percentile(&alone, 0.99))),
        target: "p99 <= 50 ms".to_owned(),
        met: Some(p99 <= Duration::from_millis(50)),
    });
    Ok(())
}

/// The floor of a single-URL enqueue: one process that opens the database and inserts one row
/// durably. Run as `purgeq-bench --floor-insert DB`.
pub fn floor_insert(db: &Path) -> anyhow::Result<()> {
    let conn =
        rusqlite::Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute(
        "INSERT INTO jobs (provider, account, action, target, state, attempts, next_at, \
                           created_at, updated_at) \
         VALUES ('qiniu', 'default', 'refresh_url', 'https://cdn.example.com/floor', 'queued', \
                 0, 0, 0, 0)",
        [],
    )?;
    Ok(())
}

/// One run of the floor process for `backend`'s scratch database.
pub fn time_floor(scratch: &Scratch) -> anyhow::Result<Duration> {
    let mut cmd = match scratch.pg_url() {
        Some(url) => {
            let mut cmd = Command::new("psql");
            cmd.args([url, "-qc"]).arg(
                "INSERT INTO jobs (provider, account, action, target, state, attempts, next_at, \
                 created_at, updated_at) VALUES ('qiniu', 'default', 'refresh_url', \
                 'https://cdn.example.com/floor', 'queued', 0, 0, 0, 0)",
            );
            cmd
        }
        None => {
            let mut cmd = Command::new(std::env::current_exe().context("this benchmark's path")?);
            cmd.arg("--floor-insert").arg(scratch.db_arg());
            cmd
        }
    };
    util::time_command(&mut cmd)
}
