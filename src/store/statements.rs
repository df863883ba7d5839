//! The statements both backends run with the same Rust code: written once here, expanded into
//! each backend's `impl Backend` by [`shared_statements!`].
//!
//! A macro and not a generic function: the code is the same, but it binds and decodes through
//! each driver's concrete types (a generic version would need higher-ranked `Encode` bounds for
//! every bound type on every function). Placeholders are `$N` in every statement (SQLite accepts
//! them as well as `?N`). Text that is the same in both dialects stands here; text that differs
//! comes from the backend's [`super::backend::Dialect`] (`Self::SQL`), and many values bound as
//! one parameter go through the backend's `Self::list` (a JSON array for SQLite's `json_each`, a
//! bound array for PostgreSQL's `ANY`/`unnest`).
//!
//! Invariants:
//! - Every write runs inside a transaction from `Backend::begin` (SQLite: `BEGIN IMMEDIATE`, so
//!   a statement never fails with `SQLITE_BUSY_SNAPSHOT` on upgrading its read lock).
//! - Rows are decoded only through [`super::rows`].

/// The `Backend` methods whose code is the same for every dialect. Expects in scope: `sql_err`,
/// `rows`, the store's types, `Self::SQL`, `Self::list` and a `pool` field.
macro_rules! shared_statements {
    () => {
        async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
            let rows = sqlx::query(
                "SELECT provider, state, CAST(SUM(n) AS BIGINT) AS n FROM job_counts
                 GROUP BY provider, state HAVING SUM(n) <> 0 ORDER BY provider, state",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(sql_err)?;
            rows.iter().map(rows::state_count).collect()
        }

        async fn oldest_queued(&self) -> Result<Option<i64>, StoreError> {
            let providers: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
            sqlx::query_scalar(Self::SQL.oldest_queued)
                .bind(Self::list(&providers)?)
                .fetch_one(&self.pool)
                .await
                .map_err(sql_err)
        }

        async fn gates(&self) -> Result<Vec<Gate>, StoreError> {
            let rows = sqlx::query("SELECT * FROM lanes ORDER BY provider, account, action")
                .fetch_all(&self.pool)
                .await
                .map_err(sql_err)?;
            rows.iter().map(rows::gate).collect()
        }

        async fn gate(&self, lane: &Lane) -> Result<Option<Gate>, StoreError> {
            let sql = "SELECT * FROM lanes WHERE provider = $1 AND account = $2 AND action = $3";
            let query = Self::lane_query(sql, lane);
            let row = query.fetch_optional(&self.pool).await.map_err(sql_err)?;
            row.as_ref().map(rows::gate).transpose()
        }

        async fn job_page(&self, page: &JobPage) -> Result<Vec<Job>, StoreError> {
            let f = &page.filter;
            let rows = sqlx::query(Self::SQL.job_page)
                .bind(f.state.map(JobState::as_str))
                .bind(f.provider.map(Provider::as_str))
                .bind(&f.tag)
                .bind(&f.url_contains)
                .bind(f.updated_since)
                .bind(page.before)
                .bind(f.limit)
                .bind(&f.account)
                .fetch_all(&self.pool)
                .await
                .map_err(sql_err)?;
            rows.iter().map(rows::job).collect()
        }

        async fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
            let sql = concat!("SELECT ", rows::job_columns!(), " FROM jobs WHERE id = $1");
            let row = sqlx::query(sql)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(sql_err)?;
            row.as_ref().map(rows::job).transpose()
        }

        async fn job_calls(&self, id: i64) -> Result<Vec<Call>, StoreError> {
            let rows = sqlx::query(
                "SELECT c.* FROM calls c JOIN call_jobs cj ON cj.call_id = c.id
                 WHERE cj.job_id = $1 ORDER BY c.id",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_err)?;
            rows.iter().map(rows::call).collect()
        }

        async fn recent_calls(&self, limit: i64) -> Result<Vec<Call>, StoreError> {
            let rows = sqlx::query("SELECT * FROM calls ORDER BY id DESC LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(sql_err)?;
            rows.iter().map(rows::call).collect()
        }

        async fn hours(&self, first: i64) -> Result<Vec<(i64, i64, i64, i64)>, StoreError> {
            sqlx::query_as(
                "SELECT hour, enqueued, succeeded, failed FROM job_hours
                 WHERE hour >= $1 ORDER BY hour",
            )
            .bind(first)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_err)
        }

        async fn finish_times(&self, since: i64, limit: i64) -> Result<Vec<i64>, StoreError> {
            sqlx::query_scalar(Self::SQL.finish_times)
                .bind(since)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(sql_err)
        }

        async fn verb_candidates(
            &self,
            tx: &mut Tx<Self>,
            verb: Verb,
            selection: &Selection,
        ) -> Result<Vec<i64>, StoreError> {
            let sql = match verb {
                Verb::Retry => Self::SQL.retry_candidates,
                Verb::Cancel | Verb::Prioritize(_) => Self::SQL.cancel_candidates,
            };
            sqlx::query_scalar(sql)
                .bind(selection.provider.map(Provider::as_str))
                .bind(&selection.tag)
                .bind(&selection.account)
                .fetch_all(&mut **tx)
                .await
                .map_err(sql_err)
        }

        async fn lock_jobs(&self, tx: &mut Tx<Self>, ids: &[i64]) -> Result<Vec<Job>, StoreError> {
            let rows = sqlx::query(Self::SQL.lock_jobs)
                .bind(Self::list(ids)?)
                .fetch_all(&mut **tx)
                .await
                .map_err(sql_err)?;
            rows.iter().map(rows::job).collect()
        }

        async fn apply_verb(&self, tx: &mut Tx<Self>, verb: Verb, ids: (&[i64], i64)) -> Done {
            let (sql, rank) = match verb {
                Verb::Retry => (Self::SQL.retry, None),
                Verb::Cancel => (Self::SQL.cancel, None),
                Verb::Prioritize(p) => (Self::SQL.prioritize, Some(p.rank())),
            };
            let query = sqlx::query(sql).bind(Self::list(ids.0)?).bind(ids.1);
            // `$3` only where the statement has it.
            let query = match rank {
                Some(rank) => query.bind(rank),
                None => query,
            };
            query.execute(&mut **tx).await.map_err(sql_err)?;
            Ok(())
        }

        async fn delete_before(
            &self,
            tx: &mut Tx<Self>,
            before: i64,
            account: Option<&str>,
        ) -> Result<Pruned, StoreError> {
            // `CAST`: PostgreSQL must know the type of a parameter that may be NULL.
            let sql = concat!(
                "DELETE FROM jobs WHERE state IN ",
                super::final_states!(),
                " AND finished_at < $1 AND (CAST($2 AS TEXT) IS NULL OR account = $2)"
            );
            let jobs = sqlx::query(sql).bind(before).bind(account);
            let jobs = jobs.execute(&mut **tx).await;
            let calls = sqlx::query(
                "DELETE FROM calls WHERE started_at < $1
                   AND (CAST($2 AS TEXT) IS NULL OR account = $2)
                   AND NOT EXISTS (SELECT 1 FROM call_jobs cj WHERE cj.call_id = calls.id)",
            )
            .bind(before)
            .bind(account);
            let jobs = jobs.map_err(sql_err)?.rows_affected();
            let calls = calls.execute(&mut **tx).await.map_err(sql_err)?;
            Ok(Pruned {
                jobs,
                calls: calls.rows_affected(),
            })
        }

        async fn requeue_expired(&self, now: i64) -> Result<u64, StoreError> {
            let query = sqlx::query(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                                 updated_at = $1
                 WHERE state = 'running' AND lease_expires_at < $1",
            );
            self.write(query.bind(now)).await
        }

        async fn write(&self, query: Query<'static, Self::Db>) -> Result<u64, StoreError> {
            let mut tx = self.begin().await?;
            let done = query.execute(&mut *tx).await.map_err(sql_err)?;
            tx.commit().await.map_err(sql_err)?;
            Ok(done.rows_affected())
        }

        fn insert_query(jobs: &NewJobs, now: i64) -> Query<'static, Self::Db> {
            let query = sqlx::query(Self::SQL.insert_jobs).bind(jobs.provider.as_str());
            let query = query.bind(&jobs.account).bind(jobs.action.as_str());
            query.bind(&jobs.tag).bind(jobs.not_before).bind(now)
        }

        fn lane_query(sql: &'static str, lane: &Lane) -> Query<'static, Self::Db> {
            let query = sqlx::query(sql).bind(lane.provider.as_str());
            query.bind(&lane.account).bind(lane.action.as_str())
        }

        fn claim_query(sql: &'static str, lane: LaneClaim<'_>) -> Query<'static, Self::Db> {
            let req = lane.req;
            sqlx::query(sql)
                .bind(&req.owner)
                .bind(req.lease_until)
                .bind(req.now)
                .bind(req.provider.as_str())
                .bind(&req.account)
                .bind(lane.action.as_str())
        }

        async fn claim_every(&self, tx: &mut Tx<Self>, lane: LaneClaim<'_>) -> Claimed {
            let query = Self::claim_query(Self::SQL.claim_every, lane);
            let rows = query.fetch_all(&mut **tx).await.map_err(sql_err)?;
            rows.iter().map(rows::claimed).collect()
        }

        async fn claim_next(
            &self,
            tx: &mut Tx<Self>,
            lane: LaneClaim<'_>,
            limit: i64,
            page: i64,
        ) -> Claimed {
            let query = Self::claim_query(Self::SQL.claim_next, lane);
            let rows = query.bind(limit).bind(page).fetch_all(&mut **tx).await;
            rows.map_err(sql_err)?.iter().map(rows::claimed).collect()
        }

        async fn claim_targets(
            &self,
            tx: &mut Tx<Self>,
            lane: LaneClaim<'_>,
            targets: &[String],
        ) -> Claimed {
            let query = Self::claim_query(Self::SQL.claim_targets, lane);
            let query = query.bind(Self::list(targets)?);
            let rows = query.fetch_all(&mut **tx).await.map_err(sql_err)?;
            rows.iter().map(rows::claimed).collect()
        }

        async fn release(&self, owner: &str, ids: &[i64], now: i64) -> Result<u64, StoreError> {
            if ids.is_empty() {
                return Ok(0);
            }
            let query = sqlx::query(Self::SQL.release).bind(owner);
            self.write(query.bind(Self::list(ids)?).bind(now)).await
        }

        async fn insert_call(
            &self,
            tx: &mut Tx<Self>,
            call: &NewCall,
            held: &Held,
        ) -> Result<i64, StoreError> {
            let ids = Self::list(&held.ids)?;
            let id: i64 = sqlx::query_scalar(Self::SQL.insert_call)
                .bind(call.provider.as_str())
                .bind(&call.account)
                .bind(call.operation)
                .bind(&call.worker)
                .bind(call.account_wide)
                .bind(held.now)
                .bind(&ids)
                .fetch_one(&mut **tx)
                .await
                .map_err(sql_err)?;
            let link = sqlx::query(Self::SQL.link_call_jobs).bind(id).bind(&ids);
            link.execute(&mut **tx).await.map_err(sql_err)?;
            Ok(id)
        }

        async fn finish_call(&self, tx: &mut Tx<Self>, call: &CallEnd, now: i64) -> Done {
            let query = sqlx::query(
                "UPDATE calls SET finished_at = $2, http_status = $3, provider_code = $4,
                        request_id = $5, trace_id = $6, outcome = $7, message = $8
                 WHERE id = $1",
            )
            .bind(call.call_id)
            .bind(now)
            .bind(call.http_status.map(i64::from))
            .bind(call.provider_code)
            .bind(&call.request_id)
            .bind(&call.trace_id)
            .bind(call.outcome)
            .bind(&call.message);
            query.execute(&mut **tx).await.map_err(sql_err)?;
            Ok(())
        }

        async fn upsert_pause(&self, tx: &mut Tx<Self>, pause: &Pause<'_>, now: i64) -> Done {
            let query = Self::lane_query(
                "INSERT INTO lanes (provider, account, action, paused_until, strikes, reason,
                                    updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (provider, account, action) DO UPDATE SET
                     paused_until = excluded.paused_until, strikes = excluded.strikes,
                     reason = excluded.reason, updated_at = excluded.updated_at",
                pause.lane,
            );
            let query = query.bind(pause.until).bind(pause.strikes).bind(pause.reason);
            let query = query.bind(now);
            query.execute(&mut **tx).await.map_err(sql_err)?;
            Ok(())
        }

        async fn upsert_quota(&self, tx: &mut Tx<Self>, quota: &Quota<'_>, now: i64) -> Done {
            let query = Self::lane_query(
                "INSERT INTO lanes (provider, account, action, quota_day, surplus_day, quota_at,
                                    updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)
                 ON CONFLICT (provider, account, action) DO UPDATE SET
                     quota_day = excluded.quota_day, surplus_day = excluded.surplus_day,
                     quota_at = excluded.quota_at, updated_at = excluded.updated_at",
                quota.lane,
            );
            let query = query.bind(quota.quota_day).bind(quota.surplus_day).bind(now);
            query.execute(&mut **tx).await.map_err(sql_err)?;
            Ok(())
        }

        async fn next_due(&self, lane: &Lane) -> Result<Option<i64>, StoreError> {
            // N.B. One seek per priority into `jobs_ready_priority` (ordered by priority, then
            // `next_at`): a MIN over every priority at once would read the lane's whole queue.
            let sql = "SELECT MIN(due) AS due FROM (
                           SELECT (SELECT MIN(next_at) FROM jobs
                                   WHERE state = 'queued' AND provider = $1 AND account = $2
                                     AND action = $3 AND priority = p.column1) AS due
                           FROM (VALUES (0), (1), (2), (3)) AS p) dues";
            let row = Self::lane_query(sql, lane).fetch_one(&self.pool).await;
            rows::Columns::opt_int(&row.map_err(sql_err)?, "due")
        }

        async fn token(
            &self,
            provider: Provider,
            account: &str,
        ) -> Result<Option<CachedToken>, StoreError> {
            let row = sqlx::query(
                "SELECT access_token, expires_at, obtained_at FROM tokens
                 WHERE provider = $1 AND account = $2",
            )
            .bind(provider.as_str())
            .bind(account)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_err)?;
            row.as_ref().map(rows::token).transpose()
        }

        async fn save_token(
            &self,
            provider: Provider,
            account: &str,
            token: &CachedToken,
        ) -> Result<(), StoreError> {
            let query = sqlx::query(
                "INSERT INTO tokens (provider, account, access_token, expires_at, obtained_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (provider, account) DO UPDATE SET
                     access_token = excluded.access_token, expires_at = excluded.expires_at,
                     obtained_at = excluded.obtained_at",
            )
            .bind(provider.as_str())
            .bind(account)
            .bind(token.token.expose())
            .bind(token.expires_at)
            .bind(token.obtained_at);
            self.write(query).await.map(drop)
        }

        async fn optimize(&self) -> Result<(), StoreError> {
            let done = sqlx::query(Self::SQL.optimize).execute(&self.pool).await;
            done.map(drop).map_err(sql_err)
        }

        async fn pending_accounts(&self) -> Result<Vec<AccountCount>, StoreError> {
            // Kept by the triggers on `jobs`: a few rows, however long the queue.
            let rows = sqlx::query(
                "SELECT provider, account, state, n FROM job_counts
                 WHERE state IN ('queued', 'running') AND n <> 0
                 ORDER BY provider, account, state",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(sql_err)?;
            rows.iter().map(rows::account_count).collect()
        }

        async fn queued_targets(&self, lane: &Lane) -> Result<i64, StoreError> {
            // Read from `jobs_queued_target` in target order: no sort, no temporary table.
            let query = Self::lane_query(
                "SELECT COUNT(*) AS n FROM (SELECT DISTINCT target FROM jobs
                 WHERE state = 'queued' AND provider = $1 AND account = $2 AND action = $3) t",
                lane,
            );
            let count = query.fetch_one(&self.pool).await.map_err(sql_err)?;
            rows::Columns::int(&count, "n")
        }

        async fn ready_targets(&self, lane: &Lane, now: i64, limit: i64) -> Targets {
            let query = Self::lane_query(
                "SELECT DISTINCT target FROM jobs
                 WHERE state = 'queued' AND provider = $1 AND account = $2 AND action = $3
                   AND next_at <= $4 AND target IS NOT NULL
                 ORDER BY target LIMIT $5",
                lane,
            );
            let rows = query.bind(now).bind(limit).fetch_all(&self.pool).await;
            let rows = rows.map_err(sql_err)?;
            rows.iter().map(|row| rows::Columns::text(row, "target")).collect()
        }

        async fn ready_arrivals(&self, lane: &Lane, now: i64) -> Result<Span, StoreError> {
            let query = Self::lane_query(
                "SELECT MIN(created_at) AS oldest, MAX(created_at) AS newest FROM jobs
                 WHERE state = 'queued' AND provider = $1 AND account = $2 AND action = $3
                   AND next_at <= $4",
                lane,
            );
            let row = query.bind(now).fetch_one(&self.pool).await.map_err(sql_err)?;
            let oldest = rows::Columns::opt_int(&row, "oldest")?;
            Ok(oldest.zip(rows::Columns::opt_int(&row, "newest")?))
        }

        async fn notify_ready(&self, tx: &mut Tx<Self>) -> Done {
            if let Some(sql) = Self::SQL.notify_ready {
                let query = sqlx::query(sql).bind(super::wake::CHANNEL);
                query.execute(&mut **tx).await.map_err(sql_err)?;
            }
            Ok(())
        }

        async fn has_pending(&self, provider: Provider) -> Result<bool, StoreError> {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM jobs
                                WHERE state IN ('queued', 'running', 'confirming')
                                  AND provider = $1)",
            )
            .bind(provider.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(sql_err)
        }
    };
}
pub(super) use shared_statements;

/// The columns a job update sets from its row `u` (the [`super::backend::UpdateRow`] columns),
/// for `concat!` into each dialect's update statement, which adds `updated_at`, `finished_at`
/// and the lease fence.
macro_rules! update_set {
    () => {
        "state = u.state,
         attempts = u.attempts,
         next_at = u.next_at,
         request_id = coalesce(u.request_id, jobs.request_id),
         provider_code = coalesce(u.provider_code, jobs.provider_code),
         last_error = coalesce(u.last_error, jobs.last_error),
         served_by_dir = coalesce(u.served_by_dir, jobs.served_by_dir),
         confirm_at = u.confirm_at,
         confirm_request_id = CASE WHEN u.state = 'confirming' THEN u.request_id END,
         lease_owner = NULL,
         lease_expires_at = NULL,"
    };
}
pub(super) use update_set;

/// The `SET` list of the operator verbs and of a claim, the same in both dialects.
macro_rules! retry_set {
    () => {
        "UPDATE jobs SET state = 'queued', attempts = 0, next_at = $2, updated_at = $2,
                finished_at = NULL, lease_owner = NULL, lease_expires_at = NULL"
    };
}
pub(super) use retry_set;

/// See [`retry_set!`].
macro_rules! cancel_set {
    () => {
        "UPDATE jobs SET state = 'cancelled', updated_at = $2, finished_at = $2,
                last_error = 'cancelled by operator'"
    };
}
pub(super) use cancel_set;

/// See [`retry_set!`]: `$1` owner, `$2` lease until, `$3` now.
/// The first `$7` distinct targets of the lane's next `$8` ready jobs, in claim order: higher
/// priority (lower rank) first, then the oldest. A target queued at several priorities is
/// first met at its highest. Lane and `now` as in `claim_set!`'s statements; `$next_at` is how
/// the dialect names the due time in the page's filter (SQLite: `+next_at`, see there).
macro_rules! next_targets {
    ($next_at:literal) => {
        concat!(
            "SELECT target FROM (
                SELECT target, row_number() OVER (ORDER BY priority, next_at, id) AS pos
                FROM (SELECT target, priority, next_at, id FROM jobs
                      WHERE state = 'queued' AND provider = $4 AND account = $5 AND action = $6
                        AND ",
            $next_at,
            " <= $3
                      ORDER BY priority, next_at, id LIMIT $8) page) ranked
             GROUP BY target ORDER BY MIN(pos) LIMIT $7"
        )
    };
}
pub(super) use next_targets;

macro_rules! claim_set {
    () => {
        "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, updated_at = $3"
    };
}
pub(super) use claim_set;

/// The head of the audit row's insert, the same in both dialects: `$1`..`$6` provider, account,
/// operation, worker, account-wide, now; the dialect adds which jobs (`$7`) it counts.
macro_rules! insert_call_head {
    () => {
        "INSERT INTO calls (provider, account, operation, worker, target_count, started_at)
         SELECT $1, $2, $3, $4,
                CASE WHEN $5 THEN 1
                     ELSE COUNT(DISTINCT action || ' ' || coalesce(target, '')) END,
                $6
         FROM jobs "
    };
}
pub(super) use insert_call_head;

/// The head of the jobs' insert: `$1`..`$6` provider, account, action, tag, due, now; the
/// dialect adds where the targets (`$7`) come from, and the priority rank (`$8`).
macro_rules! insert_jobs_head {
    () => {
        "INSERT INTO jobs (provider, account, action, target, tag, state, attempts, next_at,
                           created_at, updated_at, priority)
         SELECT $1, $2, $3, "
    };
}
pub(super) use insert_jobs_head;
