-- `jobs_ready` is covered by `jobs_ready_priority`; see the SQLite migration of the same name.
DROP INDEX IF EXISTS jobs_ready;
