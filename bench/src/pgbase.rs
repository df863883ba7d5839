//! The PostgreSQL baselines: the same rows and the same minimal queries sent by a plain sqlx
//! connection, with no queue logic and no process around it. Bulk writes use the server's
//! cheapest form (`COPY`, one set-based `UPDATE`), so these are floors, not typical clients.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::{Connection as _, Executor as _, PgConnection};

/// The columns purgeq's enqueue writes, as `COPY` takes them.
pub const COPY_JOBS: &str = "COPY jobs (provider, account, action, target, tag, state, attempts, \
                             next_at, created_at, updated_at) FROM STDIN";

/// A connection to the scratch database at `url`.
pub async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    PgConnection::connect(url)
        .await
        .context("connecting to the scratch database")
}

/// Drops the triggers on `jobs` (purgeq's job counts), leaving its tables and indexes: the plain
/// cost of storing and indexing the rows.
pub async fn drop_triggers(conn: &mut PgConnection) -> anyhow::Result<()> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'jobs'::regclass AND NOT tgisinternal",
    )
    .fetch_all(&mut *conn)
    .await?;
    for name in names {
        let sql = format!("DROP TRIGGER \"{name}\" ON jobs");
        conn.execute(sqlx::AssertSqlSafe(sql))
            .await
            .with_context(|| format!("dropping the trigger {name}"))?;
    }
    Ok(())
}

/// One `COPY` text line per target: a queued job as purgeq's enqueue writes it.
pub fn queued_lines(targets: &[String], now: i64) -> String {
    let mut out = String::with_capacity(targets.len() * 100);
    for t in targets {
        out.push_str(&format!(
            "qiniu\tdefault\trefresh_url\t{t}\t\\N\tqueued\t0\t{now}\t{now}\t{now}\n"
        ));
    }
    out
}

/// Streams `data` into `COPY statement` in its own transaction.
pub async fn copy(conn: &mut PgConnection, statement: &str, data: &str) -> anyhow::Result<u64> {
    let mut tx = conn.begin().await.context("beginning the copy")?;
    let mut copy = tx.copy_in_raw(statement).await.context("starting COPY")?;
    copy.send(data.as_bytes()).await.context("sending rows")?;
    let n = copy.finish().await.context("finishing COPY")?;
    tx.commit().await.context("committing the copy")?;
    Ok(n)
}

/// Inserts one queued job per target with one `COPY` in one transaction (into a database whose
/// schema exists; its count triggers are dropped first), and returns the time from `BEGIN` to the end of `COMMIT`.
pub async fn insert(url: &str, targets: &[String], now: i64) -> anyhow::Result<Duration> {
    let mut conn = connect(url).await?;
    drop_triggers(&mut conn).await?;
    let data = queued_lines(targets, now);
    let start = Instant::now();
    copy(&mut conn, COPY_JOBS, &data).await?;
    let took = start.elapsed();
    conn.close().await.ok();
    Ok(took)
}

/// Sets every job to succeeded (each with its own request id) with one `UPDATE` in one
/// transaction, and returns the time from `BEGIN` to the end of `COMMIT`.
pub async fn succeed_all(url: &str, now: i64) -> anyhow::Result<Duration> {
    let mut conn = connect(url).await?;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM jobs ORDER BY id")
        .fetch_all(&mut conn)
        .await?;
    let request_ids: Vec<String> = ids.iter().map(|id| format!("req-{id:08x}")).collect();
    let start = Instant::now();
    let mut tx = conn.begin().await?;
    sqlx::query(
        "UPDATE jobs SET state = 'succeeded', lease_owner = NULL, lease_expires_at = NULL,
                request_id = u.r, provider_code = 200, updated_at = $3, finished_at = $3
         FROM unnest($1::bigint[], $2::text[]) AS u(id, r) WHERE jobs.id = u.id",
    )
    .bind(&ids)
    .bind(&request_ids)
    .bind(now)
    .execute(&mut *tx)
    .await
    .context("updating the jobs")?;
    tx.commit().await?;
    let took = start.elapsed();
    conn.close().await.ok();
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_lines_have_every_column() {
        let lines = queued_lines(&["https://a/x".to_owned()], 7);
        assert_eq!(
            lines,
            "qiniu\tdefault\trefresh_url\thttps://a/x\t\\N\tqueued\t0\t7\t7\t7\n"
        );
    }
}
