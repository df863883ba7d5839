-- `jobs_updated` (updated_at) had no reader: the one filter on `updated_at` (`status --since`,
-- the API's `since`) is written `($5 IS NULL OR updated_at >= $5)` beside `ORDER BY id DESC
-- LIMIT`, which SQLite answers by walking the table from the newest id. Every enqueue, claim
-- and record still kept it up, two index writes per job change: without it, a drain of
-- 100,000 jobs took 3.44 to 3.61 s against 3.69 to 3.76 s (BENCHMARKS.md). PostgreSQL keeps
-- its index: its one-shot plans can know the bound values and use it.
DROP INDEX IF EXISTS jobs_updated;
