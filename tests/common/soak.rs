//! The soak and crash-loop harness: producer processes enqueue with heavy duplication while
//! worker processes drain against the emulator with random faults (in the crash loop, one worker
//! is SIGKILLed at random moments and restarted, again and again); then [`audit`] holds the
//! database up against what the producers were told and what the emulator saw.
//!
//! Sizes come from the environment: `PURGEQ_SOAK_SCALE=small|large` (default `small`, the CI
//! size), `PURGEQ_SOAK_SEED=N` and `PURGEQ_SOAK_KILLS=N` (the crash loop's SIGKILLs; the
//! producers keep going while they last). The seed decides the producers' choices, the fault sequence
//! and the kill delays; process timing still differs from run to run, so a failing run keeps
//! its scratch directory (database and worker logs) and prints where.

mod audit;
mod records;
mod report;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use purgeq::emulator::qiniu::DailyQuotas;
use purgeq::emulator::{EmulatorConfig, FaultKind, FaultPlan, RandomFaults};
use serde_json::Value;

use super::worker::{AK, SK, emulator, emulator_config};
use super::{Scratch, postgres_admin};

pub use report::Report;

/// The seed when `PURGEQ_SOAK_SEED` is not set.
const DEFAULT_SEED: u64 = 20_260_123;
/// A claim's lease: twice the request timeout, the least the worker accepts, so a killed
/// worker's jobs come back within seconds.
const LEASE: &str = "4s";
/// The lease in milliseconds, for the audit's bound on how long a job may stay `running`.
const LEASE_MS: i64 = 4_000;
/// One provider call's timeout: far above a loopback call even on a busy 2-core machine, so
/// only the `slow` fault times out.
const REQUEST_TIMEOUT: &str = "2s";
/// The `slow` fault answers after this, past the timeout: the worker gives up on a request the
/// fake then carries out.
const SLOW_DELAY_MS: u64 = 2_500;
/// Transient failures before a job fails for good. The worker's transient backoff starts at
/// 5 s and has no flag to shorten it; three attempts bound a job's backoff to 5 s + 10 s.
pub const MAX_ATTEMPTS: i64 = 3;
/// Distinct targets one refresh request may carry (60 URLs and 10 directories).
pub const REFRESH_BATCH: usize = 70;
/// Distinct targets one prefetch request may carry.
pub const PREFETCH_BATCH: usize = 60;
/// Every target is on this host (the emulator accepts every host).
const HOST: &str = "cdn.soak.test";
/// Every fault kind but `quota`: a quota answer pauses the lane for a minute at least (the
/// worker has no flag to shorten it), longer than a CI run.
const FAULT_KINDS: [FaultKind; 9] = [
    FaultKind::Http503,
    FaultKind::ServerError,
    FaultKind::Throttle,
    FaultKind::Qps,
    FaultKind::Slow,
    FaultKind::DropBefore,
    FaultKind::DropAfter,
    FaultKind::Garbage,
    FaultKind::Invalid,
];
/// How big a run is and what it does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `soak` or `crash loop`.
    pub name: &'static str,
    /// `small` or `large`.
    pub scale: &'static str,
    /// Seeds the producers, the emulator's faults and the kill delays.
    pub seed: u64,
    /// `enqueue` loops running at once.
    pub producers: usize,
    /// Worker processes; the crash loop kills and restarts the last one.
    pub workers: usize,
    /// How long the producers keep enqueueing (the crash loop also waits for its kills).
    pub produce_for: Duration,
    /// Distinct URLs to refresh, directories to refresh and URLs to prefetch: small pools, so
    /// targets repeat heavily.
    pub pools: [usize; 3],
    /// The most targets one `enqueue` carries.
    pub max_per_enqueue: usize,
    /// The probability that the emulator fails a request.
    pub fault_rate: f64,
    /// SIGKILLs in the crash loop (0: none).
    pub kills: usize,
    /// Each kill comes this long (uniform, in ms) after the victim was started.
    pub kill_delay_ms: (u64, u64),
    /// How long the queue may take to empty once the producers stop.
    pub drain_within: Duration,
}

impl Plan {
    /// The soak: producers and workers against the faulty emulator, no crash.
    pub fn soak() -> Plan {
        Plan::from_env("soak", false)
    }

    /// The soak with one worker SIGKILLed and restarted again and again.
    pub fn crash_loop() -> Plan {
        Plan::from_env("crash loop", true)
    }

    fn from_env(name: &'static str, crash: bool) -> Plan {
        let large = match std::env::var("PURGEQ_SOAK_SCALE").as_deref() {
            Ok("large") => true,
            Ok("small") | Err(_) => false,
            Ok(other) => panic!("PURGEQ_SOAK_SCALE is small or large, not {other:?}"),
        };
        let seed = std::env::var("PURGEQ_SOAK_SEED").map_or(DEFAULT_SEED, |s| {
            s.parse().expect("PURGEQ_SOAK_SEED is a whole number")
        });
        let (secs, pools, max_per_enqueue, kills, drain) = if large {
            (180, [5_000, 200, 1_000], 200, 60, 180)
        } else {
            (15, [600, 30, 120], 60, 10, 60)
        };
        // N.B. The producers keep going for as long as the kills take.
        let kills = std::env::var("PURGEQ_SOAK_KILLS").map_or(kills, |s| {
            s.parse().expect("PURGEQ_SOAK_KILLS is a whole number")
        });
        Plan {
            name,
            scale: if large { "large" } else { "small" },
            seed,
            producers: 4,
            workers: 2,
            produce_for: Duration::from_secs(secs),
            pools,
            max_per_enqueue,
            fault_rate: 0.2,
            kills: if crash { kills } else { 0 },
            kill_delay_ms: (100, 1_500),
            drain_within: Duration::from_secs(drain),
        }
    }
}

/// What a kind of target is enqueued as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Url,
    Dir,
    Prefetch,
}

impl Target {
    /// Mostly URL refreshes, as in a deploy pipeline, with some directories and prefetches.
    fn pick(rng: &mut fastrand::Rng) -> Target {
        match rng.u8(..10) {
            0 => Target::Dir,
            1 => Target::Prefetch,
            _ => Target::Url,
        }
    }

    fn action(self) -> &'static str {
        match self {
            Target::Url => "refresh_url",
            Target::Dir => "refresh_dir",
            Target::Prefetch => "prefetch_url",
        }
    }

    fn flag(self) -> Option<&'static str> {
        match self {
            Target::Url => None,
            Target::Dir => Some("--dir"),
            Target::Prefetch => Some("--prefetch"),
        }
    }

    fn pool(self, plan: &Plan) -> usize {
        match self {
            Target::Url => plan.pools[0],
            Target::Dir => plan.pools[1],
            Target::Prefetch => plan.pools[2],
        }
    }

    fn nth(self, i: usize) -> String {
        match self {
            Target::Url => format!("https://{HOST}/u/{i}.js"),
            Target::Dir => format!("https://{HOST}/d/{i}/"),
            Target::Prefetch => format!("https://{HOST}/p/{i}.html"),
        }
    }
}

/// One `enqueue` that exited 0: the ids it reported for the targets it was given.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub ids: Vec<i64>,
    pub action: &'static str,
    pub targets: Vec<String>,
}

/// What the producers were told.
#[derive(Debug, Default)]
pub struct Produced {
    /// Every `enqueue` that succeeded.
    pub batches: Vec<Enqueued>,
    /// `cancel --all --tag` runs.
    pub cancels: usize,
    /// The ids those runs reported cancelled.
    pub cancelled: BTreeSet<i64>,
    /// Commands that failed: an `enqueue` or `cancel` must not fail under load.
    pub errors: Vec<String>,
}

impl Produced {
    fn merge(&mut self, other: Produced) {
        self.batches.extend(other.batches);
        self.cancels += other.cancels;
        self.cancelled.extend(other.cancelled);
        self.errors.extend(other.errors);
    }
}

/// The longest a job was seen `running` past its lease, sampled while the run went on.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeaseWatch {
    pub samples: u64,
    pub max_overdue_ms: i64,
    pub max_running: i64,
    /// The largest the SQLite `-wal` file was seen (0 on PostgreSQL).
    pub max_wal_bytes: u64,
}

/// One SIGKILL of the crash loop, and what the victim held when it died.
#[derive(Debug, Clone)]
pub struct Kill {
    pub pid: u32,
    /// How long after its start the victim was killed.
    pub after_ms: u64,
    /// Its calls begun and never completed (sent, or about to be, and not recorded).
    pub open_calls: i64,
    /// Jobs it had claimed.
    pub leased_jobs: i64,
}

/// How long each phase took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    pub produce: Duration,
    pub drain: Duration,
    pub total: Duration,
}

/// The scratch directory and the emulator's address, shared by every process started.
struct Ctx {
    scratch: Scratch,
    endpoint: String,
}

/// A worker process and its log. Dropping it kills the process, so a harness that panics
/// leaves none behind.
struct Worker {
    slot: usize,
    child: Child,
    log: PathBuf,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Both are no-ops for a process already reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ctx {
    /// `purgeq --db <scratch>` with the developer's environment for purgeq removed.
    fn purgeq(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_purgeq"));
        cmd.arg("--db")
            .arg(self.scratch.db_arg())
            .stdin(Stdio::null());
        for var in super::CLEARED {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Creates the database before the crowd arrives.
    fn init(&self) {
        let out = self.purgeq().arg("status").output().expect("purgeq runs");
        assert!(out.status.success(), "{}", super::stderr(&out));
    }

    fn spawn_worker(&self, slot: usize, generation: usize) -> Worker {
        let log = self
            .scratch
            .path(&format!("worker-{slot}.{generation}.log"));
        let child = self
            .purgeq()
            .args(["--log-format", "json", "worker"])
            .args(["--max-targets-per-sec", "0", "--max-requests-per-sec", "0"])
            .args(["--poll-interval", "50ms", "--lease", LEASE])
            .args(["--request-timeout", REQUEST_TIMEOUT, "--busy-timeout", "2s"])
            .args(["--max-attempts", &MAX_ATTEMPTS.to_string()])
            // Confirmation in the path: every accepted job is confirmed through the task lists
            // (the fake's tasks complete at once, so duplicates never meet a 400037).
            .args(["--confirm-interval", "50ms"])
            .env("QINIU_ACCESS_KEY", AK)
            .env("QINIU_SECRET_KEY", SK)
            .env("QINIU_ENDPOINT", &self.endpoint)
            .env("RUST_LOG", "purgeq=info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("worker log"))
            .spawn()
            .expect("worker starts");
        Worker { slot, child, log }
    }
}

/// Runs `plan` to the end and audits it. Panics only when the harness itself breaks; what the
/// product got wrong is in the report's violations.
pub fn run(plan: &Plan) -> Report {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let emu = runtime.block_on(emulator(emulator_for(plan)));
    let mut ctx = Ctx {
        scratch: Scratch::new(),
        endpoint: emu.url(),
    };
    ctx.init();
    let run = exercise(&ctx, plan);
    let report = audit::audit(audit::Evidence {
        plan,
        db: &Probe::open(&ctx.scratch),
        stats: &emu.stats(),
        run: &run,
    });
    drop(emu);
    if report.violations.is_empty() {
        return report;
    }
    ctx.scratch.dir.disable_cleanup(true);
    Report {
        kept: Some(ctx.scratch.dir.path().to_owned()),
        ..report
    }
}

/// The emulator: the test account, quotas that never run out, and random faults.
fn emulator_for(plan: &Plan) -> EmulatorConfig {
    let mut config = emulator_config();
    config.qiniu.quotas = DailyQuotas {
        url_refresh: 1 << 40,
        dir_refresh: 1 << 40,
        prefetch: 1 << 40,
    };
    config.faults = FaultPlan {
        random: Some(RandomFaults {
            rate: plan.fault_rate,
            seed: plan.seed,
            kinds: FAULT_KINDS.to_vec(),
        }),
        slow_delay_ms: SLOW_DELAY_MS,
        ..FaultPlan::default()
    };
    config
}

/// Everything the run did, for the audit.
pub struct Exercised {
    pub produced: Produced,
    pub kills: Vec<Kill>,
    pub leases: LeaseWatch,
    pub timings: Timings,
    /// Worker logs, every generation.
    pub logs: Vec<PathBuf>,
    /// What went wrong in the run itself: a queue that did not drain, a worker that did not
    /// stop cleanly.
    pub problems: Vec<String>,
}

/// Starts workers and producers, kills if asked, stops the producers, waits for the queue to
/// drain and stops the workers.
fn exercise(ctx: &Ctx, plan: &Plan) -> Exercised {
    let started = Instant::now();
    let mut workers: Vec<Worker> = (0..plan.workers)
        .map(|slot| ctx.spawn_worker(slot, 0))
        .collect();
    let mut logs: Vec<PathBuf> = workers.iter().map(|w| w.log.clone()).collect();
    let stop_producers = AtomicBool::new(false);
    let stop_watch = AtomicBool::new(false);
    thread::scope(|s| {
        let watch = s.spawn(|| watch_leases(ctx, &stop_watch));
        let producers: Vec<_> = (0..plan.producers)
            .map(|i| {
                let stop = &stop_producers;
                s.spawn(move || produce(ctx, plan, i, stop))
            })
            .collect();
        let kills = match workers.last_mut() {
            Some(victim) if plan.kills > 0 => crash_loop(ctx, plan, victim, &mut logs),
            _ => Vec::new(),
        };
        thread::sleep(plan.produce_for.saturating_sub(started.elapsed()));
        stop_producers.store(true, Ordering::Relaxed);
        let mut produced = Produced::default();
        for p in producers {
            produced.merge(p.join().expect("producer thread"));
        }
        let produce = started.elapsed();
        let mut problems = Vec::new();
        if let Err(e) = drain(ctx, plan.drain_within) {
            problems.push(e);
        }
        let drain = started.elapsed() - produce;
        stop_watch.store(true, Ordering::Relaxed);
        let leases = watch.join().expect("lease watch thread");
        problems.extend(workers.drain(..).filter_map(stop_worker));
        Exercised {
            produced,
            kills,
            leases,
            timings: Timings {
                produce,
                drain,
                total: started.elapsed(),
            },
            logs,
            problems,
        }
    })
}

/// One producer: `enqueue` runs back to back, each with up to `max_per_enqueue` targets drawn
/// from the small pools; one run in twenty is delayed, and half of those cancelled by tag at
/// once.
fn produce(ctx: &Ctx, plan: &Plan, index: usize, stop: &AtomicBool) -> Produced {
    let mut rng = fastrand::Rng::with_seed(plan.seed.wrapping_add(1 + index as u64));
    let file = ctx.scratch.path(&format!("producer-{index}.txt"));
    let mut out = Produced::default();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let kind = Target::pick(&mut rng);
        let n = rng.usize(1..=plan.max_per_enqueue);
        let pool = kind.pool(plan);
        let targets: Vec<String> = (0..n).map(|_| kind.nth(rng.usize(..pool))).collect();
        let tag = format!("p{index}-{round}");
        let delayed = rng.u8(..20) == 0;
        match enqueue(ctx, kind, &tag, delayed, &targets, &file) {
            Ok(ids) => out.batches.push(Enqueued {
                ids,
                action: kind.action(),
                targets,
            }),
            Err(e) => {
                out.errors.push(e);
                continue;
            }
        }
        if delayed && rng.bool() {
            out.cancels += 1;
            match run_json(
                ctx.purgeq()
                    .args(["cancel", "--all", "--json", "--tag", &tag]),
            ) {
                Ok(v) => out.cancelled.extend(ids_of(&v)),
                Err(e) => out.errors.push(format!("cancel --tag {tag}: {e}")),
            }
        }
    }
    out
}

fn enqueue(
    ctx: &Ctx,
    kind: Target,
    tag: &str,
    delayed: bool,
    targets: &[String],
    file: &Path,
) -> Result<Vec<i64>, String> {
    std::fs::write(file, targets.join("\n")).map_err(|e| format!("writing {file:?}: {e}"))?;
    let mut cmd = ctx.purgeq();
    cmd.args(["enqueue", "--json", "--tag", tag, "--file"])
        .arg(file);
    cmd.args(kind.flag());
    if delayed {
        cmd.args(["--delay", "2s"]);
    }
    let ids = ids_of(&run_json(&mut cmd).map_err(|e| format!("enqueue --tag {tag}: {e}"))?);
    if ids.len() == targets.len() {
        Ok(ids)
    } else {
        Err(format!(
            "enqueue --tag {tag} reported {} ids for {} targets",
            ids.len(),
            targets.len()
        ))
    }
}

/// Runs a `--json` command; an exit other than 0 is an error with its stderr.
fn run_json(cmd: &mut Command) -> Result<Value, String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{}: {}", out.status, super::stderr(&out).trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("stdout is not JSON: {e}"))
}

fn ids_of(v: &Value) -> Vec<i64> {
    v["ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_i64)
        .collect()
}

/// SIGKILLs `victim` `plan.kills` times, each a random delay after its (re)start, and
/// restarts it; notes what each victim held when it died.
fn crash_loop(ctx: &Ctx, plan: &Plan, victim: &mut Worker, logs: &mut Vec<PathBuf>) -> Vec<Kill> {
    let mut rng = fastrand::Rng::with_seed(plan.seed ^ 0xC4A5_4000);
    let db = Probe::open(&ctx.scratch);
    (1..=plan.kills)
        .map(|generation| {
            let after_ms = rng.u64(plan.kill_delay_ms.0..=plan.kill_delay_ms.1);
            thread::sleep(Duration::from_millis(after_ms));
            let pid = victim.child.id();
            victim.child.kill().expect("SIGKILL");
            victim.child.wait().expect("reap the victim");
            let count = |rest: &str| -> i64 {
                db.count(&format!("{rest} LIKE '%:{pid}:%'"))
                    .expect("query the killed worker's leftovers")
            };
            let kill = Kill {
                pid,
                after_ms,
                open_calls: count("FROM calls WHERE finished_at IS NULL AND worker"),
                leased_jobs: count("FROM jobs WHERE state = 'running' AND lease_owner"),
            };
            *victim = ctx.spawn_worker(victim.slot, generation);
            logs.push(victim.log.clone());
            kill
        })
        .collect()
}

/// Samples the oldest lease among `running` jobs until `stop`.
fn watch_leases(ctx: &Ctx, stop: &AtomicBool) -> LeaseWatch {
    let db = Probe::open(&ctx.scratch);
    let mut watch = LeaseWatch::default();
    while !stop.load(Ordering::Relaxed) {
        let mut sample = None;
        let read = db.each(
            "count(*), min(lease_expires_at)",
            "FROM jobs WHERE state = 'running'",
            |row| sample = Some((row[0].as_i64().unwrap_or(0), row[1].as_i64())),
        );
        // A reader can be refused for a moment (a WAL reset); skip that sample.
        if let (Ok(()), Some((running, oldest))) = (read, sample) {
            watch.samples += 1;
            watch.max_running = watch.max_running.max(running);
            if let Some(expires) = oldest {
                watch.max_overdue_ms = watch.max_overdue_ms.max(now_ms() - expires);
            }
        }
        let mut wal = ctx.scratch.db().into_os_string();
        wal.push("-wal");
        let wal_bytes = std::fs::metadata(wal).map_or(0, |m| m.len());
        watch.max_wal_bytes = watch.max_wal_bytes.max(wal_bytes);
        thread::sleep(Duration::from_millis(100));
    }
    watch
}

/// Waits until no job is queued, running or confirming.
fn drain(ctx: &Ctx, within: Duration) -> Result<(), String> {
    let db = Probe::open(&ctx.scratch);
    let deadline = Instant::now() + within;
    loop {
        let left = db
            .count("FROM jobs WHERE state IN ('queued', 'running', 'confirming')")
            .unwrap_or(-1);
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{left} jobs still queued, running or confirming {within:?} after the producers stopped"
            ));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// SIGTERMs a worker; it must exit 0 within the request timeout and some slack.
fn stop_worker(mut worker: Worker) -> Option<String> {
    let pid = worker.child.id();
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    if !sent.is_ok_and(|s| s.success()) {
        return Some(format!("could not SIGTERM worker {pid}"));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match worker.child.try_wait() {
            Ok(Some(status)) if status.success() => return None,
            Ok(Some(status)) => {
                return Some(format!("worker {pid} exited {status} after SIGTERM"));
            }
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = worker.child.kill();
                let _ = worker.child.wait();
                return Some(format!("worker {pid} did not exit within 15 s of SIGTERM"));
            }
        }
    }
}

/// Read-only queries on the queue database beside the processes writing it: SQLite directly,
/// PostgreSQL through `psql` (the suite's PostgreSQL half, `PURGEQ_TEST_BACKEND=postgres`).
/// Both schemas have the same tables and columns.
enum Probe {
    Sqlite(rusqlite::Connection),
    Postgres(String),
}

impl Probe {
    fn open(scratch: &Scratch) -> Probe {
        if postgres_admin().is_none() {
            return Probe::Sqlite(read_sqlite(&scratch.db()));
        }
        let url = scratch.db_arg().into_string().expect("a UTF-8 URL");
        Probe::Postgres(url)
    }

    /// Calls `row` with each row of `SELECT {columns} {rest}`, as JSON values in column order.
    fn each(&self, columns: &str, rest: &str, mut row: impl FnMut(&[Value])) -> Result<(), String> {
        match self {
            Probe::Sqlite(conn) => {
                let sql = format!("SELECT {columns} {rest}");
                let mut stmt = conn.prepare(&sql).map_err(|e| format!("{sql}: {e}"))?;
                let n = stmt.column_count();
                let mut rows = stmt.query([]).map_err(|e| format!("{sql}: {e}"))?;
                let mut values = Vec::with_capacity(n);
                while let Some(r) = rows.next().map_err(|e| format!("{sql}: {e}"))? {
                    values.clear();
                    for i in 0..n {
                        values.push(sqlite_value(r.get_ref(i).map_err(|e| e.to_string())?));
                    }
                    row(&values);
                }
                Ok(())
            }
            Probe::Postgres(url) => psql_each(
                url,
                &format!("SELECT json_build_array({columns}) {rest}"),
                row,
            ),
        }
    }

    /// `SELECT count(*) {rest}`.
    fn count(&self, rest: &str) -> Result<i64, String> {
        let mut n = None;
        self.each("count(*)", rest, |row| n = row[0].as_i64())?;
        n.ok_or_else(|| format!("no count from {rest}"))
    }
}

fn sqlite_value(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Integer(n) => n.into(),
        ValueRef::Real(x) => x.into(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
        ValueRef::Null | ValueRef::Blob(_) => Value::Null,
    }
}

/// Runs `sql` (one JSON array per row) with `psql` and streams its rows.
fn psql_each(url: &str, sql: &str, mut row: impl FnMut(&[Value])) -> Result<(), String> {
    let mut child = Command::new("psql")
        .args([url, "-qtAX", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("psql: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("psql: {e}"))?;
        let value: Value =
            serde_json::from_str(&line).map_err(|e| format!("psql printed {line:?}: {e}"))?;
        row(value.as_array().map_or(&[][..], Vec::as_slice));
    }
    let out = child.wait_with_output().map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("psql {sql}: {}", super::stderr(&out).trim()))
    }
}

/// A read-only connection to a SQLite queue database.
fn read_sqlite(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the queue database read-only");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    conn
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("ms fit i64")
}
