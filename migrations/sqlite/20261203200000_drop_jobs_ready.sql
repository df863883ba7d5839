-- `jobs_ready` (provider, account, action, next_at, id) is covered by `jobs_ready_priority`
-- (the same with priority before next_at), which every claim reads since priorities came. Its
-- only reader left, the lane's next due time, now seeks `jobs_ready_priority` once per
-- priority. Every enqueue and claim maintained it for nothing: without it, a drain of 100,000
-- jobs took 8.8 to 9.0 s against 9.7 to 9.9 s (BENCHMARKS.md).
DROP INDEX IF EXISTS jobs_ready;
