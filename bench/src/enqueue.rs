//! The enqueue benchmarks: a bulk enqueue from stdin, and single-URL enqueues end to end.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};

use crate::Sizes;
use crate::backend::{Backend, Scratch, open_store};
use crate::baseline::{self, Sync};
use crate::pgbase;
use crate::report::{Report, Row};
use crate::util::{self, median, ms, per_sec, percentile, thousands};

/// Bulk enqueue: `purgeq enqueue -` against the database's plain bulk insert, runs interleaved.
pub fn bulk(
    purgeq: &Path,
    backend: &Backend,
    sizes: &Sizes,
    report: &mut Report,
) -> anyhow::Result<()> {
    let urls = util::urls(sizes.bulk_urls);
    let mut stdin = urls.join("\n");
    stdin.push('\n');
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 1..=sizes.bulk_runs {
        let took = bulk_purgeq(purgeq, backend, stdin.as_bytes(), urls.len())?;
        let base = match backend {
            Backend::Sqlite => bulk_baseline(&urls)?,
            Backend::Postgres(_) => {
                let scratch = backend.scratch()?;
                scratch.create_schema()?;
                let url = scratch.pg_url().context("a PostgreSQL scratch database")?;
                util::runtime()?.block_on(pgbase::insert(url, &urls, purgeq::clock::now_ms()))?
            }
        };
        eprintln!(
            "{} enqueue run {run}: purgeq {}, baseline {}",
            backend.name(),
            ms(took),
            ms(base)
        );
        ours.push(took);
        theirs.push(base);
    }
    let (ours, theirs) = (median(&ours), median(&theirs));
    let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
    let how = match backend {
        Backend::Sqlite => "rusqlite INSERT, 1 tx",
        Backend::Postgres(_) => "sqlx COPY, 1 tx",
    };
    report.push(Row {
        backend: backend.name(),
        figure: format!(
            "bulk enqueue, {} URLs from stdin (median of {})",
            thousands(urls.len() as u64),
            sizes.bulk_runs
        ),
        purgeq: format!(
            "{} URLs/s ({})",
            thousands(per_sec(urls.len(), ours)),
            ms(ours)
        ),
        baseline: format!(
            "{} URLs/s ({}) {how}",
            thousands(per_sec(urls.len(), theirs)),
            ms(theirs)
        ),
        comparison: format!("{ratio:.2}x the baseline's time"),
        target: "<= 3x (aim 2x)".to_owned(),
        met: Some(ratio <= 3.0),
    });
    Ok(())
}

/// One `purgeq enqueue -` run into a fresh database whose schema already exists.
fn bulk_purgeq(
    purgeq: &Path,
    backend: &Backend,
    stdin: &[u8],
    expected: usize,
) -> anyhow::Result<Duration> {
    let scratch = backend.scratch()?;
    scratch.create_schema()?;
    let mut cmd = Command::new(purgeq);
    cmd.arg("--db").arg(scratch.db_arg()).args(["enqueue", "-"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let mut pipe = child.stdin.take().context("the child's stdin")?;
    // A child that fails early closes its stdin: its exit status and stderr tell why.
    let written = pipe.write_all(stdin);
    drop(pipe);
    let out = child.wait_with_output().context("waiting for purgeq")?;
    let took = start.elapsed();
    util::check_exit(&cmd, &out)?;
    written.context("writing the URLs to purgeq's stdin")?;
    let stored = count_jobs(&scratch)?;
    ensure!(
        stored == expected,
        "purgeq stored {stored} jobs, expected {expected}"
    );
    Ok(took)
}

/// How many jobs the scratch database holds (to check what a purgeq run wrote).
pub fn count_jobs(scratch: &Scratch) -> anyhow::Result<usize> {
    util::runtime()?.block_on(async {
        let store = open_store(scratch.location()).await?;
        let summary = store.summary().await.context("counting jobs")?;
        let n: i64 = summary.counts.iter().map(|c| c.count).sum();
        usize::try_from(n).context("a negative count")
    })
}

/// One baseline run into a fresh database with purgeq's schema.
fn bulk_baseline(urls: &[String]) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let mut conn = baseline::create(&dir.path().join("base.db"), Sync::Full)?;
    baseline::insert(&mut conn, urls, purgeq::clock::now_ms())
}

/// Single-URL enqueues, one process each, on an existing database; baseline `/bin/true`.
pub fn single(
    purgeq: &Path,
    backend: &Backend,
    sizes: &Sizes,
    report: &mut Report,
) -> anyhow::Result<()> {
    let scratch = backend.scratch()?;
    let enqueue = |n: usize| {
        let mut cmd = Command::new(purgeq);
        cmd.arg("--db")
            .arg(scratch.db_arg())
            .arg("enqueue")
            .arg(format!("https://cdn.example.com/x-{n}"));
        util::time_command(&mut cmd)
    };
    enqueue(0).context("the warm-up run")?;
    let ours = (1..=sizes.single_runs)
        .map(enqueue)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let spawns = (0..sizes.single_runs)
        .map(|_| util::time_command(&mut Command::new("/bin/true")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let floors = (0..sizes.single_runs)
        .map(|_| crate::latency::time_floor(&scratch))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (p50, p90, spawn) = (median(&ours), percentile(&ours, 0.9), median(&spawns));
    let (floor, over) = (median(&floors), p50.saturating_sub(spawn));
    let floor_is = match backend {
        Backend::Sqlite => "open + INSERT 1 row, synchronous=FULL (rusqlite process)",
        Backend::Postgres(_) => "psql -c INSERT 1 row",
    };
    report.push(Row {
        backend: backend.name(),
        figure: format!(
            "single-URL enqueue, process end to end ({} runs)",
            ours.len()
        ),
        purgeq: format!("median {}, p90 {}", ms(p50), ms(p90)),
        baseline: format!(
            "{} spawning /bin/true; floor {} ({floor_is})",
            ms(spawn),
            ms(floor)
        ),
        comparison: format!(
            "+{} over the spawn; {} the floor",
            ms(over),
            util::factor(p50, floor)
        ),
        target: "<= +2 ms over the spawn".to_owned(),
        met: Some(over <= Duration::from_millis(2)),
    });
    later(backend, sizes, &ours, enqueue, report)
}

/// `single_later` more of the same enqueues, with no worker, timed in stretches as long as the
/// first: a producer must not make the next one slower (SQLite: a WAL left behind is read back
/// by the next process to open it).
fn later(
    backend: &Backend,
    sizes: &Sizes,
    first: &[Duration],
    enqueue: impl Fn(usize) -> anyhow::Result<Duration>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let start = first.len() + 1;
    let runs = (start..start + sizes.single_later)
        .map(enqueue)
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The slowest stretch, not the last: a WAL that grows is reset now and then.
    let now = runs
        .chunks(first.len().max(1))
        .map(median)
        .max()
        .unwrap_or_default();
    let then = median(first);
    let ratio = now.as_secs_f64() / then.as_secs_f64().max(f64::EPSILON);
    report.push(Row {
        backend: backend.name(),
        figure: format!("single-URL enqueue after {} more, no worker", runs.len()),
        purgeq: format!("slowest median of {} in a row: {}", first.len(), ms(now)),
        baseline: format!("median of the first {}: {}", first.len(), ms(then)),
        comparison: format!("{ratio:.2}x the first runs"),
        target: "flat: <= 1.25x the first runs".to_owned(),
        met: Some(ratio <= 1.25),
    });
    Ok(())
}
