//! The enqueue benchmarks: a bulk enqueue from stdin, and single-URL enqueues end to end.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use purgeq::store::{Durability, Store};

use crate::Sizes;
use crate::baseline::{self, Sync};
use crate::report::{Report, Row};
use crate::util::{self, median, ms, per_sec, percentile, thousands};

/// Bulk enqueue: `purgeq enqueue -` against one rusqlite transaction, runs interleaved.
pub fn bulk(purgeq: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let urls = util::urls(sizes.bulk_urls);
    let mut stdin = urls.join("\n");
    stdin.push('\n');
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 1..=sizes.bulk_runs {
        let took = bulk_purgeq(purgeq, stdin.as_bytes(), urls.len())?;
        let base = bulk_baseline(&urls)?;
        eprintln!(
            "enqueue run {run}: purgeq {}, baseline {}",
            ms(took),
            ms(base)
        );
        ours.push(took);
        theirs.push(base);
    }
    let (ours, theirs) = (median(&ours), median(&theirs));
    let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
    report.push(Row {
        figure: format!(
            "bulk enqueue, {} URLs from stdin",
            thousands(urls.len() as u64)
        ),
        purgeq: format!(
            "{} URLs/s ({})",
            thousands(per_sec(urls.len(), ours)),
            ms(ours)
        ),
        baseline: format!(
            "{} URLs/s ({}) rusqlite, 1 tx",
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
fn bulk_purgeq(purgeq: &Path, stdin: &[u8], expected: usize) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let db = dir.path().join("q.db");
    create_store(&db)?;
    let mut cmd = Command::new(purgeq);
    cmd.arg("--db").arg(&db).args(["enqueue", "-"]);
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
    let stored = baseline::count_jobs(&db)?;
    ensure!(
        stored == expected,
        "purgeq stored {stored} jobs, expected {expected}"
    );
    Ok(took)
}

/// Creates a purgeq database (schema applied by the library's migrations).
fn create_store(db: &Path) -> anyhow::Result<()> {
    util::runtime()?.block_on(async {
        Store::open(db, Durability::Full)
            .await
            .with_context(|| format!("creating {}", db.display()))?;
        anyhow::Ok(())
    })
}

/// One baseline run into a fresh database with purgeq's schema.
fn bulk_baseline(urls: &[String]) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let mut conn = baseline::create(&dir.path().join("base.db"), Sync::Full)?;
    baseline::insert(&mut conn, urls, purgeq::clock::now_ms())
}

/// Single-URL enqueues, one process each, on an existing database; baseline `/bin/true`.
pub fn single(purgeq: &Path, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let db = dir.path().join("q.db");
    let enqueue = |n: usize| {
        let mut cmd = Command::new(purgeq);
        cmd.arg("--db")
            .arg(&db)
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
    let (p50, p90, spawn) = (median(&ours), percentile(&ours, 0.9), median(&spawns));
    report.push(Row {
        figure: format!(
            "single-URL enqueue, process end to end ({} runs)",
            ours.len()
        ),
        purgeq: format!("median {}, p90 {}", ms(p50), ms(p90)),
        baseline: format!("{} spawning /bin/true", ms(spawn)),
        comparison: format!("+{} over the spawn", ms(p50.saturating_sub(spawn))),
        target: String::new(),
        met: None,
    });
    Ok(())
}
