//! `purgeq-bench`: the README's performance figures, each beside a baseline measured in the same
//! run on the same machine (absolute times are noise; ratios are the result).
//!
//! - **enqueue**: `purgeq enqueue -` (the real release binary, a child process) reads N distinct
//!   URLs from stdin into an existing empty database. Baseline: the same rows, same schema and
//!   indexes, same pragmas (WAL, `synchronous=FULL`), inserted by rusqlite with one prepared
//!   statement in one transaction. purgeq's time includes its process start, validation and
//!   commit; the baseline's is the transaction alone. Median of 3 runs each.
//! - **single**: `purgeq enqueue URL` end to end, run sequentially on an existing database
//!   (median and p90). Baseline: spawning `/bin/true` the same way (the process spawn cost).
//! - **drain**: N jobs over N/3 distinct targets enqueued through the library, then `purgeq
//!   worker --once` (the real binary, unpaced) drains them against the in-process emulator. It
//!   reports jobs recorded per second, requests sent against the minimum `ceil(distinct / 60)`,
//!   and the worker's peak RSS (`VmHWM`, polled from `/proc`). Every job must end `succeeded`.
//!   Baseline: the same number of rows set to `succeeded` by rusqlite, one prepared `UPDATE` per
//!   row in one transaction.
//!
//! Build the product first (`cargo build --release`), then `cargo run --release --bin
//! purgeq-bench [-- --quick] [-- --only enqueue|single|drain]`.

mod baseline;
mod drain;
mod enqueue;
mod report;
mod util;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Bench {
    Enqueue,
    Single,
    Drain,
}

/// How big each benchmark is.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// URLs per bulk enqueue.
    pub bulk_urls: usize,
    /// Runs of each bulk enqueue (median reported).
    pub bulk_runs: usize,
    /// Sequential single-URL enqueues.
    pub single_runs: usize,
    /// Jobs to drain.
    pub drain_jobs: usize,
    /// Distinct targets among them.
    pub drain_distinct: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                bulk_urls: 5_000,
                bulk_runs: 3,
                single_runs: 10,
                drain_jobs: 6_000,
                drain_distinct: 2_000,
            }
        } else {
            Sizes {
                bulk_urls: 100_000,
                bulk_runs: 3,
                single_runs: 50,
                drain_jobs: 100_000,
                drain_distinct: 33_334,
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sizes = Sizes::new(args.quick);
    let purgeq = util::purgeq_binary()?;
    let wanted = |b: Bench| args.only.is_none_or(|only| only == b);
    let mut report = Report::new(args.quick);
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; run with `cargo run --release --bin purgeq-bench`"
        );
    }
    eprintln!("purgeq: {}", purgeq.display());
    if wanted(Bench::Enqueue) {
        enqueue::bulk(&purgeq, &sizes, &mut report).context("the bulk enqueue benchmark")?;
    }
    if wanted(Bench::Single) {
        enqueue::single(&purgeq, &sizes, &mut report).context("the single enqueue benchmark")?;
    }
    if wanted(Bench::Drain) {
        drain::run(&purgeq, &sizes, &mut report).context("the drain benchmark")?;
    }
    report.print();
    Ok(())
}
