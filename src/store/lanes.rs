//! Reads about a lane's queue for spending its quota: distinct queued targets per lane (the
//! forecast), the distinct ready targets of one lane (directory escalation) and the arrival
//! times of its ready jobs (coalescing). SQL for both backends side by side.
//!
//! Invariant: read-only, and each read stays within one lane's queued jobs through the
//! `jobs_queued_target` and `jobs_ready` indexes (the forecast reads every queued job once).

use super::{LaneTargets, Store, StoreError, postgres, rows, sqlite};
use crate::model::Lane;

impl Store {
    /// Distinct queued targets per lane (for the quota forecast), lanes with none left out.
    pub async fn queued_targets(&self) -> Result<Vec<LaneTargets>, StoreError> {
        const SQL: &str = "SELECT provider, account, action, COUNT(DISTINCT target) AS n FROM jobs
             WHERE state = 'queued' GROUP BY provider, account, action
             ORDER BY provider, account, action";
        match self {
            Store::Sqlite(s) => sqlx::query(SQL)
                .fetch_all(s.pool())
                .await
                .map_err(sqlite::sql_err)?
                .iter()
                .map(rows::lane_targets)
                .collect(),
            Store::Postgres(p) => sqlx::query(SQL)
                .fetch_all(p.pool())
                .await
                .map_err(postgres::sql_err)?
                .iter()
                .map(rows::lane_targets)
                .collect(),
        }
    }

    /// Up to `limit` distinct targets of the lane's jobs ready at `now`, in target order.
    pub async fn ready_targets(
        &self,
        lane: &Lane,
        now: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Sqlite(s) => sqlx::query_scalar(
                "SELECT DISTINCT target FROM jobs
                 WHERE state = 'queued' AND provider = ?1 AND account = ?2 AND action = ?3
                   AND next_at <= ?4 AND target IS NOT NULL
                 ORDER BY target LIMIT ?5",
            )
            .bind(lane.provider.as_str())
            .bind(&lane.account)
            .bind(lane.action.as_str())
            .bind(now)
            .bind(limit)
            .fetch_all(s.pool())
            .await
            .map_err(sqlite::sql_err),
            Store::Postgres(p) => sqlx::query_scalar(
                "SELECT DISTINCT target FROM jobs
                 WHERE state = 'queued' AND provider = $1 AND account = $2 AND action = $3
                   AND next_at <= $4 AND target IS NOT NULL
                 ORDER BY target LIMIT $5",
            )
            .bind(lane.provider.as_str())
            .bind(&lane.account)
            .bind(lane.action.as_str())
            .bind(now)
            .bind(limit)
            .fetch_all(p.pool())
            .await
            .map_err(postgres::sql_err),
        }
    }

    /// The enqueue times (ms) of the oldest and the newest job of the lane ready at `now`, if
    /// it has any.
    pub async fn ready_arrivals(
        &self,
        lane: &Lane,
        now: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let (oldest, newest): (Option<i64>, Option<i64>) = match self {
            Store::Sqlite(s) => sqlx::query_as(
                "SELECT MIN(created_at), MAX(created_at) FROM jobs
                 WHERE state = 'queued' AND provider = ?1 AND account = ?2 AND action = ?3
                   AND next_at <= ?4",
            )
            .bind(lane.provider.as_str())
            .bind(&lane.account)
            .bind(lane.action.as_str())
            .bind(now)
            .fetch_one(s.pool())
            .await
            .map_err(sqlite::sql_err)?,
            Store::Postgres(p) => sqlx::query_as(
                "SELECT MIN(created_at), MAX(created_at) FROM jobs
                 WHERE state = 'queued' AND provider = $1 AND account = $2 AND action = $3
                   AND next_at <= $4",
            )
            .bind(lane.provider.as_str())
            .bind(&lane.account)
            .bind(lane.action.as_str())
            .bind(now)
            .fetch_one(p.pool())
            .await
            .map_err(postgres::sql_err)?,
        };
        Ok(oldest.zip(newest))
    }
}
