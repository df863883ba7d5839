-- status finds the oldest queued job per provider with an index seek, not a scan.
DROP INDEX jobs_state;
CREATE INDEX jobs_state ON jobs (state, provider, created_at);
