//! The audit's verdict: figures printed after every run, and violations in words.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::{LEASE_MS, MAX_ATTEMPTS, PREFETCH_BATCH, REFRESH_BATCH, Timings};

/// The audit's verdict: the run's figures and every invariant it broke.
#[derive(Debug, Default)]
pub struct Report {
    pub figures: Figures,
    pub violations: Vec<String>,
    /// The scratch directory (database, worker logs), kept when something was violated.
    pub kept: Option<PathBuf>,
}

impl Report {
    pub fn print(&self) {
        println!("{}", self.figures);
        for v in &self.violations {
            println!("  VIOLATION {v}");
        }
        if let Some(dir) = &self.kept {
            println!("  kept the database and worker logs in {}", dir.display());
        }
    }

    pub fn assert_clean(&self) {
        assert!(
            self.violations.is_empty(),
            "{} broke {} invariants:\n{}",
            self.figures.title,
            self.violations.len(),
            self.violations.join("\n")
        );
    }
}

/// The figures a run prints.
#[derive(Debug, Default)]
pub struct Figures {
    pub title: String,
    pub enqueues: usize,
    pub cancels: usize,
    pub jobs: usize,
    pub distinct_targets: usize,
    pub states: BTreeMap<String, usize>,
    pub failed_invalid: usize,
    pub failed_exhausted: usize,
    pub requests_received: u64,
    pub requests_served: usize,
    pub calls: usize,
    pub calls_unfinished: usize,
    pub list_queries: usize,
    pub list_faults: u64,
    pub calls_seen: BTreeMap<&'static str, usize>,
    pub faults: BTreeMap<String, u64>,
    pub target_sends: usize,
    pub duplicates: usize,
    pub explainable: usize,
    pub lost_to_faults: usize,
    pub lost_to_kills: usize,
    pub kills: usize,
    pub kill_phases: BTreeMap<&'static str, usize>,
    pub max_duplicates_per_kill: usize,
    pub lease_samples: u64,
    pub max_running: i64,
    pub max_lease_overdue_ms: i64,
    pub max_wal_bytes: u64,
    pub worker_warnings: BTreeMap<String, usize>,
    pub timings: Timings,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_target = self.jobs as f64 / self.distinct_targets.max(1) as f64;
        let state = |s: &str| self.states.get(s).copied().unwrap_or(0);
        writeln!(f, "{}", self.title)?;
        writeln!(
            f,
            "  jobs       {} accepted from {} enqueue runs ({} cancel runs); {} distinct targets, {per_target:.1} jobs per target",
            self.jobs, self.enqueues, self.cancels, self.distinct_targets
        )?;
        writeln!(
            f,
            "  ended      succeeded {}, failed {} ({} refused as invalid, {} after {MAX_ATTEMPTS} attempts), cancelled {}",
            state("succeeded"),
            state("failed"),
            self.failed_invalid,
            self.failed_exhausted,
            state("cancelled")
        )?;
        writeln!(
            f,
            "  requests   {} received by the fake, {} served; {} audit rows ({} cut short by kills)",
            self.requests_received, self.requests_served, self.calls, self.calls_unfinished
        )?;
        writeln!(
            f,
            "  confirm    {} task-list queries audited ({} faults injected into them)",
            self.list_queries, self.list_faults
        )?;
        let total: u64 = self.faults.values().sum();
        writeln!(f, "  faults     {total} injected: {}", join(&self.faults))?;
        writeln!(f, "  calls      {}", join(&self.calls_seen))?;
        writeln!(
            f,
            "  sends      {} target sends; {} duplicates, at most {} explainable; served answers lost: {} to faults, {} to kills",
            self.target_sends,
            self.duplicates,
            self.explainable,
            self.lost_to_faults,
            self.lost_to_kills
        )?;
        writeln!(
            f,
            "  kills      {}{}{}; duplicates per kill at most {} (bound: one batch per route, {} + {})",
            self.kills,
            if self.kills > 0 { ": " } else { "" },
            if self.kills > 0 {
                join(&self.kill_phases)
            } else {
                String::new()
            },
            self.max_duplicates_per_kill,
            REFRESH_BATCH,
            PREFETCH_BATCH
        )?;
        writeln!(
            f,
            "  leases     {} samples, at most {} jobs running; longest past its lease {} ms (bound {LEASE_MS})",
            self.lease_samples, self.max_running, self.max_lease_overdue_ms
        )?;
        writeln!(
            f,
            "  wal        at most {:.1} MB (bound {} MB; 0 on PostgreSQL)",
            self.max_wal_bytes as f64 / 1e6,
            purgeq::store::WAL_BOUND / (1024 * 1024)
        )?;
        if self.worker_warnings.is_empty() {
            writeln!(f, "  warnings   none")?;
        }
        for (i, (warning, n)) in self.worker_warnings.iter().enumerate() {
            let label = if i == 0 { "warnings" } else { "" };
            writeln!(f, "  {label:<10} {n} x {warning}")?;
        }
        write!(
            f,
            "  wall time  produce {:.1} s, drain {:.1} s, total {:.1} s",
            self.timings.produce.as_secs_f64(),
            self.timings.drain.as_secs_f64(),
            self.timings.total.as_secs_f64()
        )
    }
}

fn join<K: fmt::Display, V: fmt::Display>(map: &BTreeMap<K, V>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
    parts.join(", ")
}

/// Violations, at most five shown per check.
#[derive(Default)]
pub(super) struct Violations {
    shown: Vec<String>,
    per_check: BTreeMap<&'static str, usize>,
}

impl Violations {
    pub(super) fn add(&mut self, check: &'static str, what: String) {
        let n = self.per_check.entry(check).or_default();
        *n += 1;
        if *n <= 5 {
            self.shown.push(format!("{check}: {what}"));
        }
    }

    pub(super) fn into_list(mut self) -> Vec<String> {
        for (check, n) in &self.per_check {
            if *n > 5 {
                self.shown
                    .push(format!("{check}: ... {} more like these", n - 5));
            }
        }
        self.shown
    }
}
