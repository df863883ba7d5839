//! Helpers shared by the benchmarks: locating the binary, running and timing processes, stats.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The `purgeq` binary built next to this one (`target/release/purgeq` for a release bench).
pub fn purgeq_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating the bench's own executable")?;
    let purgeq = me.with_file_name("purgeq");
    if !purgeq.is_file() {
        bail!(
            "{} does not exist: build it first with `cargo build --release` (the bench runs the \
             real binary and never builds it itself)",
            purgeq.display()
        );
    }
    warn_if_older(&purgeq, &me);
    Ok(purgeq)
}

/// `cargo run -p purgeq-bench` rebuilds the bench, not `purgeq`: warn when the binary under
/// test is older than the bench, as it may not match the source.
fn warn_if_older(purgeq: &Path, bench: &Path) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(ours), Some(bench_built)) = (modified(purgeq), modified(bench))
        && ours < bench_built
    {
        eprintln!(
            "warning: {} is older than the bench; if the source changed since, run `cargo build \
             --release` first",
            purgeq.display()
        );
    }
}

/// A current-thread Tokio runtime, for the library calls that set up and check databases.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a Tokio runtime")
}

/// A Tokio runtime with `threads` worker threads, to serve the in-process emulator (and
/// worker) while the calling thread waits for child processes.
pub fn serving_runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting a Tokio runtime")
}

/// `count` distinct URLs, as a deploy pipeline would list its changed files.
pub fn urls(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("https://cdn.example.com/assets/build-42/file-{i:07}.js"))
        .collect()
}

/// Runs `cmd` with stdout discarded and stderr captured, and returns its wall time (spawn to
/// exit). Fails, showing stderr, unless it exits 0.
pub fn time_command(cmd: &mut Command) -> anyhow::Result<Duration> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let took = start.elapsed();
    check_exit(cmd, &out)?;
    Ok(took)
}

/// Fails with the command's stderr unless it exited 0.
pub fn check_exit(cmd: &Command, out: &Output) -> anyhow::Result<()> {
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The `p`-th percentile (0.0 to 1.0, nearest rank) of `samples`; zero when empty.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let Some(last) = sorted.len().checked_sub(1) else {
        return Duration::ZERO;
    };
    // Nearest rank: the smallest sample with at least p of the samples at or below it.
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.saturating_sub(1).min(last)]
}

/// The median of `samples` (the lower middle one of an even count).
pub fn median(samples: &[Duration]) -> Duration {
    percentile(samples, 0.5)
}

/// `count` per `took`, rounded.
pub fn per_sec(count: usize, took: Duration) -> u64 {
    (count as f64 / took.as_secs_f64().max(1e-9)).round() as u64
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A short latency: microseconds under a millisecond, else milliseconds.
pub fn short(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 100_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.0} ms", us / 1000.0)
    }
}

/// `p50 / p99` of `samples`.
pub fn p50_p99(samples: &[Duration]) -> String {
    format!(
        "{} / {}",
        short(median(samples)),
        short(percentile(samples, 0.99))
    )
}

/// `a / b` as a factor (`3.1x`).
pub fn factor(a: Duration, b: Duration) -> String {
    format!("{:.1}x", a.as_secs_f64() / b.as_secs_f64().max(1e-12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn short_latencies_pick_a_unit() {
        assert_eq!(short(Duration::from_micros(41)), "41 µs");
        assert_eq!(short(Duration::from_micros(1_234)), "1.23 ms");
        assert_eq!(short(Duration::from_millis(250)), "250 ms");
        assert_eq!(
            factor(Duration::from_millis(3), Duration::from_millis(2)),
            "1.5x"
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let s: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(median(&s), Duration::from_millis(5));
        assert_eq!(percentile(&s, 0.9), Duration::from_millis(9));
        assert_eq!(median(&s[..3]), Duration::from_millis(2));
        assert_eq!(median(&[]), Duration::ZERO);
    }
}
