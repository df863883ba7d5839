//! The query plans of the SQLite statements that update a worker's jobs by id.
//!
//! A record's update must loop over its own rows and find each job by rowid. Left to stale
//! statistics, SQLite once walked every confirming job through `jobs_state` and scanned the
//! updates for each, holding the write lock for seconds (BENCHMARKS.md, "A confirmation record
//! that walked every confirming job"). These tests load the `sqlite_stat1` rows of that run's
//! database into a fresh one and read the plans SQLite chooses.
//!
//! A statement keeps its plan when bound again (`sqlite.rs::stable_plans`): a claim, whose
//! `LIMIT`s are bound parameters, was otherwise parsed and planned anew at every execution.

use sqlx::Row;

use super::confirm::sqlite::UPDATE_CONFIRMING;
use super::sqlite::UPDATE_JOBS;
use super::{Durability, OpenOptions, SqliteStore};

/// `sqlite_stat1` as `ANALYZE` (run by `PRAGMA optimize`) left it when the table held 1,336
/// rows; the soak then grew it to 115,000 without a new analysis.
const STALE_STATS: &[(&str, &str)] = &[
    ("jobs_ready_priority", "1336 1336 1336 446 446 103 1"),
    ("jobs_confirming", "0 0 0 0"),
    ("jobs_finished", "0 0"),
    ("jobs_tag", "1336 103"),
    ("jobs_state", "1336 1336 1336 103"),
    ("jobs_leased", "0 0"),
    ("jobs_queued_target", "1336 1336 1336 446 2"),
    ("jobs_ready", "1336 1336 1336 446 103 1"),
];

/// The plan's lines for `sql` on a purgeq database carrying [`STALE_STATS`].
async fn plan_under_stale_stats(sql: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("q.db");
    let store = SqliteStore::open(&path, &OpenOptions::new(Durability::Normal))
        .await
        .expect("open and migrate");
    // One connection throughout: the reloaded statistics are that connection's.
    let mut conn = store.pool().acquire().await.expect("a connection");
    sqlx::raw_sql("ANALYZE; DELETE FROM sqlite_stat1")
        .execute(&mut *conn)
        .await
        .expect("an empty sqlite_stat1");
    for (index, stat) in STALE_STATS {
        sqlx::query("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('jobs', $1, $2)")
            .bind(index)
            .bind(stat)
            .execute(&mut *conn)
            .await
            .expect("insert a statistic");
    }
    sqlx::raw_sql("ANALYZE sqlite_schema")
        .execute(&mut *conn)
        .await
        .expect("reload the statistics");
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
        .bind("[]")
        .bind(0_i64)
        .bind("worker")
        .fetch_all(&mut *conn)
        .await
        .expect("explain");
    rows.iter()
        .map(|row| row.try_get::<String, _>("detail").expect("detail"))
        .collect()
}

fn assert_by_rowid(plan: &[String]) {
    assert!(
        plan.iter()
            .any(|line| line == "SEARCH jobs USING INTEGER PRIMARY KEY (rowid=?)"),
        "jobs not found by rowid: {plan:#?}"
    );
    assert!(
        !plan.iter().any(|line| line.contains("USING INDEX")),
        "an index of jobs walked: {plan:#?}"
    );
}

#[tokio::test]
async fn a_record_finds_its_jobs_by_rowid_under_stale_statistics() {
    assert_by_rowid(&plan_under_stale_stats(UPDATE_JOBS).await);
}

#[tokio::test]
async fn a_confirmation_record_finds_its_jobs_by_rowid_under_stale_statistics() {
    assert_by_rowid(&plan_under_stale_stats(UPDATE_CONFIRMING).await);
}

/// How many times SQLite planned `SELECT … LIMIT ?1` again while it was run three times, each
/// with a new value bound, on the writer's connection (as sqlx binds and steps a cached
/// statement).
async fn replans_of_a_bound_limit(store: &SqliteStore) -> i32 {
    use libsqlite3_sys as ffi;
    let mut conn = store.writer().acquire().await.expect("the writer");
    let mut handle = conn.lock_handle().await.expect("the handle");
    let db = handle.as_raw_handle().as_ptr();
    let sql = c"SELECT id FROM jobs ORDER BY id LIMIT ?1";
    let mut stmt = std::ptr::null_mut();
    // SAFETY: `db` is an open connection that `handle` keeps sqlx off; `stmt` is prepared,
    // used and finalized here, on this thread, before the handle is released.
    unsafe {
        let rc = ffi::sqlite3_prepare_v3(
            db,
            sql.as_ptr(),
            -1,
            ffi::SQLITE_PREPARE_PERSISTENT,
            &mut stmt,
            std::ptr::null_mut(),
        );
        assert_eq!(rc, ffi::SQLITE_OK, "prepare");
        for limit in 1..=3 {
            assert_eq!(ffi::sqlite3_bind_int64(stmt, 1, limit), ffi::SQLITE_OK);
            while ffi::sqlite3_step(stmt) == ffi::SQLITE_ROW {}
            ffi::sqlite3_reset(stmt);
        }
        let replans = ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_REPREPARE, 0);
        ffi::sqlite3_finalize(stmt);
        replans
    }
}

#[tokio::test]
async fn a_statement_bound_again_keeps_its_plan() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(
        &dir.path().join("q.db"),
        &OpenOptions::new(Durability::Normal),
    )
    .await
    .expect("open and migrate");
    assert_eq!(
        replans_of_a_bound_limit(&store).await,
        0,
        "a new LIMIT value must not make SQLite plan the statement again (every claim was)"
    );
}
