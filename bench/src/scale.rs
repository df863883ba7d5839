//! Claim and `status` latency as the table grows: one database filled in steps to each size
//! with a realistic mix of rows, purgeq's calls timed beside the minimal equivalent queries sent
//! by a plain client (rusqlite, or a bare sqlx connection for PostgreSQL) on the same table.
//!
//! The mix, per 200 rows: 12 queued URL refreshes (each target three times, as a deploy that
//! enqueues a file again before it is sent), 1 queued directory refresh, 2 failed, 1 cancelled,
//! 184 succeeded with a request id: 92% finished, 6.5% queued. Every queued job is ready.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use purgeq::model::{Action, DEFAULT_ACCOUNT, Provider};
use purgeq::store::{ClaimRequest, JobFilter, Store};
use rusqlite::{Connection, TransactionBehavior, params};
use sqlx::{Connection as _, Executor as _, PgConnection};
use tokio::runtime::Runtime;

use crate::Sizes;
use crate::backend::{Backend, open_store};
use crate::pgbase;
use crate::report::{Report, ScaleRow};
use crate::util::{self, factor, median, p50_p99, thousands};

/// Rows inserted per transaction while filling.
const FILL_CHUNK: u64 = 100_000;

/// Distinct targets per claim, as the worker asks: 60 URLs and 10 directories.
const URL_LIMIT: usize = 60;
const DIR_LIMIT: usize = 10;

/// Untimed claims and status reads before the timed ones, at each size.
const WARM_UP: usize = 5;

/// One row of the mix.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MixRow {
    action: &'static str,
    state: &'static str,
    target: String,
    attempts: i64,
    next_at: i64,
    request_id: Option<String>,
    provider_code: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
}

/// Row `i` of the mix; `t0` is when the first row was enqueued (one row every 5 ms after).
fn mix_row(i: u64, t0: i64) -> MixRow {
    let (block, r) = (i / 200, i % 200);
    let created = t0 + 5 * i as i64;
    let queued = |action, target| MixRow {
        action,
        state: "queued",
        target,
        attempts: 0,
        next_at: created,
        request_id: None,
        provider_code: None,
        last_error: None,
        created_at: created,
        updated_at: created,
        finished_at: None,
    };
    let done = created + 2_000;
    let finished = |state, request_id, provider_code, last_error, attempts| MixRow {
        action: "refresh_url",
        state,
        target: format!(
            "https://cdn.example.com/assets/build-{}/file-{i}.js",
            i / 1000
        ),
        attempts,
        next_at: created,
        request_id,
        provider_code,
        last_error,
        created_at: created,
        updated_at: done,
        finished_at: Some(done),
    };
    match r {
        0..12 => queued(
            "refresh_url",
            format!("https://cdn.example.com/queued/q-{}.js", block * 4 + r / 3),
        ),
        12 => queued("refresh_dir", format!("https://cdn.example.com/dir-{i}/")),
        13 | 14 => finished(
            "failed",
            None,
            None,
            Some("transient: HTTP 503 after 8 attempts".to_owned()),
            8,
        ),
        15 => finished("cancelled", None, None, None, 0),
        _ => finished(
            "succeeded",
            Some(format!("req-{i:08x}")),
            Some(200),
            None,
            0,
        ),
    }
}

/// A `COPY` text value: `\N` for NULL (no row of the mix has tabs, newlines or backslashes).
fn copy_value<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "\\N".to_owned(), |v| v.to_string())
}

const MIX_COLUMNS: &str = "provider, account, action, target, tag, state, attempts, next_at, \
                           request_id, provider_code, last_error, created_at, updated_at, \
                           finished_at";

/// A plain client on the benchmark's table: fills it, and runs the baselines.
enum Plain {
    Sqlite(Connection),
    Postgres(PgConnection),
}

impl Plain {
    /// Appends rows `from..to` of the mix, `FILL_CHUNK` per transaction.
    fn fill(&mut self, rt: &Runtime, from: u64, to: u64, t0: i64) -> anyhow::Result<()> {
        let mut start = from;
        while start < to {
            let end = (start + FILL_CHUNK).min(to);
            match self {
                Plain::Sqlite(conn) => {
                    let tx = conn.transaction()?;
                    {
                        let mut stmt = tx.prepare(&format!(
                            "INSERT INTO jobs ({MIX_COLUMNS}) VALUES \
                             ('qiniu', 'default', ?1, ?2, NULL, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                        ))?;
                        for i in start..end {
                            let m = mix_row(i, t0);
                            stmt.execute(params![
                                m.action,
                                m.target,
                                m.state,
                                m.attempts,
                                m.next_at,
                                m.request_id,
                                m.provider_code,
                                m.last_error,
                                m.created_at,
                                m.updated_at,
                                m.finished_at
                            ])?;
                        }
                    }
                    tx.commit()?;
                }
                Plain::Postgres(conn) => {
                    let mut data = String::with_capacity((end - start) as usize * 160);
                    for i in start..end {
                        let m = mix_row(i, t0);
                        data.push_str(&format!(
                            "qiniu\tdefault\t{}\t{}\t\\N\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                            m.action,
                            m.target,
                            m.state,
                            m.attempts,
                            m.next_at,
                            copy_value(m.request_id),
                            copy_value(m.provider_code),
                            copy_value(m.last_error),
                            m.created_at,
                            m.updated_at,
                            copy_value(m.finished_at)
                        ));
                    }
                    let statement = format!("COPY jobs ({MIX_COLUMNS}) FROM STDIN");
                    rt.block_on(pgbase::copy(conn, &statement, &data))?;
                }
            }
            start = end;
        }
        if let Plain::Postgres(conn) = self {
            // What autovacuum would have done by the time a table this size is queried:
            // statistics for the planner, and the visibility map for index-only scans.
            rt.block_on(conn.execute("VACUUM ANALYZE jobs"))?;
        }
        Ok(())
    }

    /// Quota readings on both lanes, as a running worker leaves them: `status` then forecasts
    /// them from the lanes' distinct queued targets.
    fn quota_readings(&mut self, rt: &Runtime, now: i64) -> anyhow::Result<()> {
        let sql = format!(
            "INSERT INTO lanes (provider, account, action, quota_day, surplus_day, quota_at, updated_at)
             VALUES ('qiniu', 'default', 'refresh_url', 500, 200, {now}, {now}),
                    ('qiniu', 'default', 'refresh_dir', 10, 5, {now}, {now})"
        );
        match self {
            Plain::Sqlite(conn) => {
                conn.execute(&sql, [])?;
            }
            Plain::Postgres(conn) => {
                rt.block_on(conn.execute(sqlx::AssertSqlSafe(sql)))?;
            }
        }
        Ok(())
    }

    /// The minimal read a claim needs: the next ready jobs of each lane, in claim order (priority,
    /// then due time: the order `jobs_ready_priority` keeps).
    fn select_ready(&mut self, rt: &Runtime, now: i64) -> anyhow::Result<usize> {
        let mut n = 0;
        for (action, limit) in lanes(URL_LIMIT) {
            n += match self {
                Plain::Sqlite(conn) => {
                    let mut stmt = conn.prepare_cached(
                        "SELECT id, target FROM jobs
                         WHERE state = 'queued' AND provider = 'qiniu' AND account = 'default'
                           AND action = ?1 AND next_at <= ?2
                         ORDER BY priority, next_at, id LIMIT ?3",
                    )?;
                    let rows = stmt.query_map(params![action, now, limit], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, Option<String>>(1)?))
                    })?;
                    rows.collect::<Result<Vec<_>, _>>()?.len()
                }
                Plain::Postgres(conn) => rt
                    .block_on(
                        sqlx::query(
                            "SELECT id, target FROM jobs
                             WHERE state = 'queued' AND provider = 'qiniu' AND account = 'default'
                               AND action = $1 AND next_at <= $2
                             ORDER BY priority, next_at, id LIMIT $3",
                        )
                        .bind(action)
                        .bind(now)
                        .bind(limit)
                        .fetch_all(&mut *conn),
                    )?
                    .len(),
            };
        }
        Ok(n)
    }

    /// The minimal claim that writes: the next ready jobs of each lane set running and
    /// returned, in one transaction.
    fn claim_ready(
        &mut self,
        rt: &Runtime,
        owner: &str,
        now: i64,
        lanes: [(&'static str, i64); 2],
    ) -> anyhow::Result<usize> {
        let lease = now + 120_000;
        match self {
            Plain::Sqlite(conn) => {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut n = 0;
                for (action, limit) in lanes {
                    let mut stmt = tx.prepare_cached(
                        "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_expires_at = ?2,
                                updated_at = ?3
                         WHERE id IN (SELECT id FROM jobs
                                      WHERE state = 'queued' AND provider = 'qiniu'
                                        AND account = 'default' AND action = ?4 AND next_at <= ?3
                                      ORDER BY priority, next_at, id LIMIT ?5)
                         RETURNING id, target",
                    )?;
                    let rows = stmt
                        .query_map(params![owner, lease, now, action, limit], |row| {
                            Ok((row.get::<_, i64>(0)?, row.get::<_, Option<String>>(1)?))
                        })?;
                    n += rows.collect::<Result<Vec<_>, _>>()?.len();
                }
                tx.commit()?;
                Ok(n)
            }
            Plain::Postgres(conn) => rt.block_on(async {
                let mut tx = conn.begin().await?;
                let mut n = 0;
                for (action, limit) in lanes {
                    n += sqlx::query(
                        "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2,
                                updated_at = $3
                         WHERE id IN (SELECT id FROM jobs
                                      WHERE state = 'queued' AND provider = 'qiniu'
                                        AND account = 'default' AND action = $4 AND next_at <= $3
                                      ORDER BY priority, next_at, id LIMIT $5
                                      FOR UPDATE SKIP LOCKED)
                         RETURNING id, target",
                    )
                    .bind(owner)
                    .bind(lease)
                    .bind(now)
                    .bind(action)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?
                    .len();
                }
                tx.commit().await?;
                anyhow::Ok(n)
            }),
        }
    }

    /// Puts back what [`Plain::claim_ready`] took (untimed).
    fn release(&mut self, rt: &Runtime, owner: &str) -> anyhow::Result<()> {
        const SQLITE: &str = "UPDATE jobs SET state = 'queued', lease_owner = NULL, \
                              lease_expires_at = NULL WHERE state = 'running' AND lease_owner = ?1";
        const PG: &str = "UPDATE jobs SET state = 'queued', lease_owner = NULL, \
                          lease_expires_at = NULL WHERE state = 'running' AND lease_owner = $1";
        match self {
            Plain::Sqlite(conn) => {
                conn.prepare_cached(SQLITE)?.execute(params![owner])?;
            }
            Plain::Postgres(conn) => {
                rt.block_on(sqlx::query(PG).bind(owner).execute(&mut *conn))?;
            }
        }
        Ok(())
    }

    /// The minimal reads `status` needs: the counts per provider and state, and the newest jobs.
    fn status(&mut self, rt: &Runtime) -> anyhow::Result<usize> {
        const COUNTS: &str = "SELECT provider, state, COUNT(*) FROM jobs GROUP BY provider, state";
        const NEWEST: &str = "SELECT * FROM jobs ORDER BY id DESC LIMIT 20";
        match self {
            Plain::Sqlite(conn) => {
                let mut n = 0;
                for sql in [COUNTS, NEWEST] {
                    let mut stmt = conn.prepare_cached(sql)?;
                    let mut rows = stmt.query([])?;
                    while rows.next()?.is_some() {
                        n += 1;
                    }
                }
                Ok(n)
            }
            Plain::Postgres(conn) => rt.block_on(async {
                let counts = sqlx::query(COUNTS).fetch_all(&mut *conn).await?;
                let newest = sqlx::query(NEWEST).fetch_all(&mut *conn).await?;
                anyhow::Ok(counts.len() + newest.len())
            }),
        }
    }
}

/// The worker's lanes, as the baselines query them: `url_jobs` URL jobs and the directories.
fn lanes(url_jobs: usize) -> [(&'static str, i64); 2] {
    [
        ("refresh_url", url_jobs as i64),
        ("refresh_dir", DIR_LIMIT as i64),
    ]
}

/// URL jobs the claim takes in the mix: each queued URL target is there three times.
const URL_JOBS: usize = 3 * URL_LIMIT;

/// What was measured at one size.
struct AtSize {
    /// Jobs one purgeq claim took (60 URL targets with their duplicates, 10 directories).
    claimed: usize,
    /// Jobs one baseline claim took (60 URL jobs, 10 directory jobs).
    base_claimed: usize,
    /// Jobs the baseline claim of as many jobs as purgeq's took (180 URL jobs, 10 directories).
    same_claimed: usize,
    claim: Vec<Duration>,
    select: Vec<Duration>,
    update: Vec<Duration>,
    update_same: Vec<Duration>,
    status: Vec<Duration>,
    status_process: Vec<Duration>,
    status_base: Vec<Duration>,
}

/// Fills one database to each size in turn and measures claim and status latency at each.
pub fn run(
    purgeq: &Path,
    backend: &Backend,
    sizes: &Sizes,
    report: &mut Report,
) -> anyhow::Result<()> {
    let rt = util::runtime()?;
    let scratch = backend.scratch()?;
    let store = rt.block_on(open_store(scratch.location()))?;
    let mut plain = match scratch.location() {
        purgeq::store::Location::Sqlite(path) => {
            let conn = Connection::open(path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.busy_timeout(Duration::from_secs(10))?;
            Plain::Sqlite(conn)
        }
        purgeq::store::Location::Postgres(url) => {
            Plain::Postgres(rt.block_on(pgbase::connect(url))?)
        }
    };
    let largest = sizes.scale_rows.iter().copied().max().unwrap_or(0) as u64;
    // The oldest row was enqueued this long ago; the newest a few hours before now.
    let t0 = purgeq::clock::now_ms() - 5 * largest as i64 - 3_600_000;
    plain.quota_readings(&rt, purgeq::clock::now_ms())?;
    let mut results = Vec::new();
    let mut have = 0;
    for &size in &sizes.scale_rows {
        let fill_start = Instant::now();
        plain.fill(&rt, have, size as u64, t0)?;
        have = size as u64;
        eprintln!(
            "{} scale: {} rows in the table (filled in {:.1} s), measuring",
            backend.name(),
            thousands(have),
            fill_start.elapsed().as_secs_f64()
        );
        let at = measure(&rt, &store, &mut plain, purgeq, &scratch.db_arg(), sizes)
            .with_context(|| format!("at {} rows", thousands(have)))?;
        results.push(at);
    }
    drop(store);
    push_rows(report, backend.name(), &results);
    Ok(())
}

/// Times purgeq's claim and status beside the baselines, interleaved, on the current table.
fn measure(
    rt: &Runtime,
    store: &Store,
    plain: &mut Plain,
    purgeq: &Path,
    db: &std::ffi::OsStr,
    sizes: &Sizes,
) -> anyhow::Result<AtSize> {
    let owner = "purgeq-bench:claim";
    let base_owner = "purgeq-bench:baseline";
    let request = |now| ClaimRequest {
        provider: Provider::Qiniu,
        account: DEFAULT_ACCOUNT.to_owned(),
        actions: vec![
            (Action::RefreshUrl, Some(URL_LIMIT)),
            (Action::RefreshDir, Some(DIR_LIMIT)),
        ],
        owner: owner.to_owned(),
        lease_until: now + 120_000,
        now,
    };
    let mut at = AtSize {
        claimed: 0,
        base_claimed: 0,
        same_claimed: 0,
        claim: Vec::new(),
        select: Vec::new(),
        update: Vec::new(),
        update_same: Vec::new(),
        status: Vec::new(),
        status_process: Vec::new(),
        status_base: Vec::new(),
    };
    for i in 0..WARM_UP + sizes.claim_iters {
        let now = purgeq::clock::now_ms();
        let start = Instant::now();
        let claimed = rt.block_on(store.claim(&request(now)))?;
        let took = start.elapsed();
        ensure!(!claimed.is_empty(), "the claim found no jobs");
        at.claimed = claimed.len();
        let ids: Vec<i64> = claimed.iter().map(|j| j.id).collect();
        let released = rt.block_on(store.release(owner, &ids, now))?;
        ensure!(
            released as usize == ids.len(),
            "released {released} of {}",
            ids.len()
        );

        let start = Instant::now();
        let selected = plain.select_ready(rt, now)?;
        let select = start.elapsed();
        ensure!(selected > 0, "the baseline SELECT found no jobs");

        let start = Instant::now();
        let updated = plain.claim_ready(rt, base_owner, now, lanes(URL_LIMIT))?;
        let update = start.elapsed();
        ensure!(updated > 0, "the baseline claim found no jobs");
        at.base_claimed = updated;
        plain.release(rt, base_owner)?;

        let start = Instant::now();
        let updated = plain.claim_ready(rt, base_owner, now, lanes(URL_JOBS))?;
        let update_same = start.elapsed();
        at.same_claimed = updated;
        plain.release(rt, base_owner)?;

        if i >= WARM_UP {
            at.claim.push(took);
            at.select.push(select);
            at.update.push(update);
            at.update_same.push(update_same);
        }
    }
    let filter = JobFilter {
        limit: 20,
        ..JobFilter::default()
    };
    for i in 0..WARM_UP + sizes.status_iters {
        let start = Instant::now();
        rt.block_on(async {
            store.summary().await?;
            store.list_jobs(&filter).await
        })?;
        let took = start.elapsed();
        let start = Instant::now();
        plain.status(rt)?;
        let base = start.elapsed();
        if i >= WARM_UP {
            at.status.push(took);
            at.status_base.push(base);
        }
    }
    for _ in 0..sizes.status_spawns {
        let mut cmd = Command::new(purgeq);
        cmd.arg("--db").arg(db).args(["status", "--json"]);
        at.status_process.push(util::time_command(&mut cmd)?);
    }
    Ok(at)
}

/// The latency table's rows for one backend.
fn push_rows(report: &mut Report, backend: &'static str, results: &[AtSize]) {
    let (Some(first), Some(last)) = (results.first(), results.last()) else {
        return;
    };
    let cells = |f: &dyn Fn(&AtSize) -> String| results.iter().map(f).collect::<Vec<_>>();
    // Growth of the median from the smallest table to the largest.
    let growth = |f: &dyn Fn(&AtSize) -> &Vec<Duration>| {
        median(f(last)).as_secs_f64() / median(f(first)).as_secs_f64().max(1e-12)
    };
    let flat = "flat: p50 <= 2x smallest".to_owned();
    let latency = |figure: String, f: &dyn Fn(&AtSize) -> &Vec<Duration>, judged: bool| {
        let g = growth(f);
        ScaleRow {
            backend,
            figure,
            cells: cells(&|a| p50_p99(f(a))),
            growth: format!("p50 {g:.1}x"),
            target: if judged { flat.clone() } else { String::new() },
            met: judged.then_some(g <= 2.0),
        }
    };
    let jobs = |f: &dyn Fn(&AtSize) -> usize| {
        let (a, b) = (f(first), f(last));
        if a == b {
            format!("{a} jobs")
        } else {
            format!("{a}-{b} jobs")
        }
    };
    let claimed = jobs(&|a| a.claimed);
    let base_claimed = jobs(&|a| a.base_claimed);
    let same_claimed = jobs(&|a| a.same_claimed);
    report.push_scale(latency(
        format!(
            "claim: Store::claim, {URL_LIMIT} URLs + {DIR_LIMIT} dirs ({claimed}, {} runs)",
            first.claim.len()
        ),
        &|a| &a.claim,
        true,
    ));
    report.push_scale(latency(
        format!("claim baseline: SELECT next {URL_LIMIT} + {DIR_LIMIT} ready"),
        &|a| &a.select,
        false,
    ));
    report.push_scale(latency(
        format!(
            "claim baseline: UPDATE next {URL_LIMIT} + {DIR_LIMIT} RETURNING, 1 tx ({base_claimed})"
        ),
        &|a| &a.update,
        false,
    ));
    report.push_scale(latency(
        format!(
            "claim baseline: UPDATE next {URL_JOBS} + {DIR_LIMIT} RETURNING, 1 tx ({same_claimed}: as many as the claim)"
        ),
        &|a| &a.update_same,
        false,
    ));
    let vs_same = |a: &AtSize| {
        median(&a.claim).as_secs_f64() / median(&a.update_same).as_secs_f64().max(1e-12)
    };
    report.push_scale(ScaleRow {
        backend,
        figure: "claim p50 vs baselines (SELECT; UPDATE 70 jobs; UPDATE as many jobs)".to_owned(),
        cells: cells(&|a| {
            format!(
                "{}; {}; {}",
                factor(median(&a.claim), median(&a.select)),
                factor(median(&a.claim), median(&a.update)),
                factor(median(&a.claim), median(&a.update_same))
            )
        }),
        growth: String::new(),
        target: "<= 2x the UPDATE of as many jobs".to_owned(),
        met: Some(results.iter().all(|a| vs_same(a) <= 2.0)),
    });
    report.push_scale(latency(
        format!(
            "status: summary() + list_jobs(20) ({} runs)",
            first.status.len()
        ),
        &|a| &a.status,
        true,
    ));
    report.push_scale(latency(
        format!(
            "status: `purgeq status --json` process ({} runs)",
            first.status_process.len()
        ),
        &|a| &a.status_process,
        true,
    ));
    report.push_scale(latency(
        "status baseline: COUNT GROUP BY provider, state + 20 newest".to_owned(),
        &|a| &a.status_base,
        false,
    ));
    report.push_scale(ScaleRow {
        backend,
        figure: "status p50 vs baseline".to_owned(),
        cells: cells(&|a| factor(median(&a.status), median(&a.status_base))),
        growth: String::new(),
        target: String::new(),
        met: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_mostly_finished_with_some_queued() {
        let rows: Vec<MixRow> = (0..2_000).map(|i| mix_row(i, 0)).collect();
        let count = |state: &str| rows.iter().filter(|r| r.state == state).count();
        assert_eq!(count("succeeded"), 1_840);
        assert_eq!(count("queued"), 130);
        assert_eq!(count("failed"), 20);
        assert_eq!(count("cancelled"), 10);
        let queued_urls: std::collections::HashSet<&str> = rows
            .iter()
            .filter(|r| r.state == "queued" && r.action == "refresh_url")
            .map(|r| r.target.as_str())
            .collect();
        assert_eq!(queued_urls.len(), 40, "each queued URL three times");
        assert!(rows.iter().all(|r| r.next_at <= r.updated_at));
    }
}
