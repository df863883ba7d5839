-- A job state between `running` and `succeeded`: `confirming` (accepted by the provider, not yet
-- confirmed done by the CDN), and the columns confirmation keeps on the job (see the SQLite
-- migration of the same name for their meanings). Nothing already final changes.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('queued', 'running', 'confirming', 'succeeded', 'failed', 'cancelled'));
ALTER TABLE jobs
    ADD COLUMN accepted_at        BIGINT,
    ADD COLUMN confirm_at         BIGINT,
    ADD COLUMN confirm_request_id TEXT,
    ADD COLUMN confirmed_at       BIGINT,
    ADD COLUMN cdn_detail         TEXT;
CREATE INDEX jobs_confirming ON jobs (provider, account, confirm_at) WHERE state = 'confirming';
INSERT INTO job_counts (provider, state, n)
VALUES ('qiniu', 'confirming', 0), ('123pan', 'confirming', 0)
ON CONFLICT (provider, state) DO NOTHING;
