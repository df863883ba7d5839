//! The query plans of the SQLite statements that update a worker's jobs by id.
//!
//! A record's update must loop over its own rows and find each job by rowid. Left to stale
//! statistics, SQLite once walked every confirming job through `jobs_state` and scanned the
//! updates for each, holding the write lock for seconds (BENCHMARKS.md, "A confirmation record
//! that walked every confirming job"). These tests load the `sqlite_stat1` rows of that run's
//! database into a fresh one and read the plans SQLite chooses.

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
    ("jobs_updated", "1336 103"),
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
