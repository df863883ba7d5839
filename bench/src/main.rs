//! `purgeq-bench`: purgeq's performance figures, each beside a baseline measured in the same run
//! on the same machine (absolute times are noise; ratios are the result), on SQLite and, when a
//! server is given (`--pg URL` or `PURGEQ_BENCH_PG`), on PostgreSQL. BENCHMARKS.md explains
//! every figure.
//!
//! - **enqueue**: `purgeq enqueue -` (the real release binary, a child process) reads N distinct
//!   URLs from stdin into an existing empty database. Baseline: the same rows, same schema and
//!   indexes, inserted in one transaction by a plain client (rusqlite, one prepared statement,
//!   `synchronous=FULL`; PostgreSQL: one `COPY`). Median of 3 runs each.
//! - **single**: `purgeq enqueue URL` end to end, run sequentially on an existing database
//!   (median and p90). Baseline: spawning `/bin/true` the same way (the process spawn cost).
//!   Then 1,000 more with no worker, the slowest median of 50 in a row beside the first 50's:
//!   a producer must not leave the next one more to do.
//! - **drain**: N jobs over N/3 distinct targets enqueued through the library, then 1, and then 3
//!   `purgeq worker --once` processes at once (the real binary, unpaced) drain them against the
//!   in-process emulator: jobs recorded per second, requests sent against the minimum
//!   `ceil(distinct / 60)`, targets sent (quota units) against the distinct targets, the quota
//!   units dedupe saved, and each worker's peak RSS (`VmHWM`, polled from `/proc`). Every job
//!   must end `succeeded`. Baseline: the same number of rows set to `succeeded` in one
//!   transaction by a plain client; on SQLite also its floor row, the same `UPDATE`s committed
//!   once per request's jobs.
//! - **scale**: one database filled to 10k, 100k and 1M rows (92% finished, 6.5% queued); at
//!   each size, `Store::claim` (as the worker asks, then released) and `status` (library and
//!   process) p50/p99, beside the minimal queries a plain client needs for the same answers.
//! - **quota-week**: a simulated week (short days) of over-quota traffic through the worker
//!   (the library's loop, in process) against the emulator: quota units per distinct target,
//!   units left unused at each reset while work was queued, refusals. Baseline: the same week
//!   with the provider's quota readings hidden from the worker (full batches, as before issue
//!   14).
//!
//! - **latency**: an idle worker's CPU over a minute and the time from an enqueue's commit to
//!   its first request (default poll interval), then single-URL enqueues while one worker
//!   drains the drain's jobs, beside the same enqueues with no worker (see `latency.rs`).
//!
//! - **confirm**: N jobs over N/3 distinct targets drained by one `purgeq worker --once` with
//!   confirmation against the emulator (tasks done by the first query): task-list queries per
//!   accepted request, counted at the emulator. Baseline: one query per accepted request.
//!
//! Build the product first (`cargo build --release`), then `cargo run --release -p
//! purgeq-bench [-- --quick] [-- --only enqueue|single|drain|confirm|scale|quota-week|latency] [-- --pg URL]`.

mod backend;
mod baseline;
mod confirm;
mod drain;
mod enqueue;
mod latency;
mod pgbase;
mod quota_week;
mod report;
mod scale;
mod util;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

use backend::{Backend, PgAdmin};
use report::Report;

/// Measure purgeq against its baselines and print both side by side.
#[derive(Debug, Parser)]
#[command(name = "purgeq-bench")]
struct Args {
    /// A small, fast run to check that everything works (figures are not meaningful).
    #[arg(long)]
    quick: bool,

    /// Run only this benchmark.
    #[arg(long, value_enum)]
    only: Option<Bench>,

    /// A PostgreSQL URL allowed to create and drop databases; each measurement gets a scratch
    /// database of its own, dropped afterwards. Without it PostgreSQL is skipped.
    #[arg(long, env = "PURGEQ_BENCH_PG", value_name = "URL")]
    pg: Option<String>,

    /// Internal: be the single-enqueue floor process (open DB, insert one row, exit).
    #[arg(long, hide = true, value_name = "DB")]
    floor_insert: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Bench {
    Enqueue,
    Single,
    Drain,
    Scale,
    QuotaWeek,
    Latency,
    Confirm,
}

/// How big each benchmark is.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// URLs per bulk enqueue.
    pub bulk_urls: usize,
    /// Runs of each bulk enqueue (median reported).
    pub bulk_runs: usize,
    /// Sequential single-URL enqueues.
    pub single_runs: usize,
    /// Further single-URL enqueues before the same number is timed again.
    pub single_later: usize,
    /// Jobs to drain.
    pub drain_jobs: usize,
    /// Distinct targets among them.
    pub drain_distinct: usize,
    /// Workers draining at once, in the second drain.
    pub drain_workers: usize,
    /// Jobs drained with confirmation (over a third as many distinct targets).
    pub confirm_jobs: usize,
    /// Table sizes for the claim and status latencies, smallest first.
    pub scale_rows: Vec<usize>,
    /// Timed claims at each size.
    pub claim_iters: usize,
    /// Timed in-process status reads at each size.
    pub status_iters: usize,
    /// Timed `purgeq status` processes at each size.
    pub status_spawns: usize,
    /// Simulated days in the quota week.
    pub week_days: usize,
    /// A simulated day's nominal length (a day ends early once its quota is spent or the
    /// worker goes quiet).
    pub week_day: std::time::Duration,
    /// New distinct URLs each simulated day (over the quota of 500).
    pub week_urls_per_day: usize,
    /// Seconds an idle worker's CPU is measured over.
    pub idle_secs: u64,
    /// Timed enqueue-to-request latencies with an idle worker.
    pub wake_runs: usize,
    /// Single-URL enqueues timed with no worker, and again under a drain.
    pub busy_enqueues: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                bulk_urls: 5_000,
                bulk_runs: 3,
                single_runs: 10,
                single_later: 40,
                drain_jobs: 6_000,
                drain_distinct: 2_000,
                drain_workers: 3,
                confirm_jobs: 1_800,
                scale_rows: vec![5_000, 20_000, 50_000],
                claim_iters: 30,
                status_iters: 20,
                status_spawns: 5,
                week_days: 3,
                week_day: std::time::Duration::from_millis(1500),
                week_urls_per_day: 800,
                idle_secs: 3,
                wake_runs: 5,
                busy_enqueues: 10,
            }
        } else {
            Sizes {
                bulk_urls: 100_000,
                bulk_runs: 3,
                single_runs: 50,
                single_later: 1_000,
                drain_jobs: 100_000,
                drain_distinct: 33_334,
                drain_workers: 3,
                confirm_jobs: 18_000,
                scale_rows: vec![10_000, 100_000, 1_000_000],
                claim_iters: 200,
                status_iters: 100,
                status_spawns: 20,
                week_days: 7,
                week_day: std::time::Duration::from_secs(2),
                week_urls_per_day: 800,
                idle_secs: 60,
                wake_runs: 40,
                busy_enqueues: 50,
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(db) = &args.floor_insert {
        return latency::floor_insert(db);
    }
    let sizes = Sizes::new(args.quick);
    let purgeq = util::purgeq_binary()?;
    let wanted = |b: Bench| args.only.is_none_or(|only| only == b);
    let mut report = Report::new(args.quick, &sizes.scale_rows);
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; run with `cargo run --release -p purgeq-bench`");
    }
    eprintln!("purgeq: {}", purgeq.display());
    let mut backends = vec![Backend::Sqlite];
    match args.pg.filter(|url| !url.is_empty()) {
        Some(url) => {
            let admin = PgAdmin::new(url);
            report.note(admin.describe()?);
            backends.push(Backend::Postgres(admin));
        }
        None => {
            eprintln!("PostgreSQL: skipped (set PURGEQ_BENCH_PG)");
            report.note("PostgreSQL: skipped (set PURGEQ_BENCH_PG)".to_owned());
        }
    }
    for backend in &backends {
        let name = backend.name();
        if wanted(Bench::Enqueue) {
            enqueue::bulk(&purgeq, backend, &sizes, &mut report)
                .with_context(|| format!("the {name} bulk enqueue benchmark"))?;
        }
        if wanted(Bench::Single) {
            enqueue::single(&purgeq, backend, &sizes, &mut report)
                .with_context(|| format!("the {name} single enqueue benchmark"))?;
        }
        if wanted(Bench::Drain) {
            drain::run(&purgeq, backend, &sizes, &mut report)
                .with_context(|| format!("the {name} drain benchmark"))?;
        }
        if wanted(Bench::QuotaWeek) {
            quota_week::run(backend, &sizes, &mut report)
                .with_context(|| format!("the {name} quota week benchmark"))?;
        }
        if wanted(Bench::Confirm) {
            confirm::run(&purgeq, backend, &sizes, &mut report)
                .with_context(|| format!("the {name} confirmation benchmark"))?;
        }
        if wanted(Bench::Scale) {
            scale::run(&purgeq, backend, &sizes, &mut report)
                .with_context(|| format!("the {name} claim and status latency benchmark"))?;
        }
        if wanted(Bench::Latency) {
            latency::run(&purgeq, backend, &sizes, &mut report)
                .with_context(|| format!("the {name} wake-up and busy enqueue benchmark"))?;
        }
    }
    report.print();
    Ok(())
}
