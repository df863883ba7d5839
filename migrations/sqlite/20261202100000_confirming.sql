-- no-transaction
-- A job state between `running` and `succeeded`: `confirming` (accepted by the provider, not yet
-- confirmed done by the CDN), and the columns confirmation keeps on the job. Nothing already
-- final changes.
--
-- SQLite cannot alter a CHECK constraint, so `jobs` is rebuilt (sqlite.org/lang_altertable.html,
-- "other kinds of table schema changes"). Foreign keys must be off while the old table is dropped,
-- or the drop's implicit DELETE would cascade into `call_jobs`; that pragma only works outside a
-- transaction, hence `no-transaction` above and our own BEGIN IMMEDIATE ... COMMIT around the
-- rebuild. Run twice (two processes migrating a new database at once), it gives the same result.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE jobs_new (
    id               INTEGER PRIMARY KEY,
    provider         TEXT    NOT NULL CHECK (provider IN ('qiniu', '123pan')),
    account          TEXT    NOT NULL DEFAULT 'default',
    action           TEXT    NOT NULL CHECK (action IN ('refresh_url', 'refresh_dir', 'prefetch_url', 'refresh_all')),
    target           TEXT    CHECK (target IS NOT NULL OR action = 'refresh_all'),
    tag              TEXT,
    state            TEXT    NOT NULL DEFAULT 'queued'
                             CHECK (state IN ('queued', 'running', 'confirming', 'succeeded', 'failed', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_at          INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    request_id       TEXT,
    provider_code    INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    -- When the provider last accepted the job (ms).
    accepted_at      INTEGER,
    -- While confirming: when the worker next asks the CDN (ms); also the fence of that ask.
    confirm_at       INTEGER,
    -- While confirming: the request id to ask about; NULL asks by the job's URL (Qiniu 400037).
    confirm_request_id TEXT,
    -- When the CDN says the task ended (ms).
    confirmed_at     INTEGER,
    -- The CDN's last word on the task (Qiniu `stateDetail`).
    cdn_detail       TEXT
);

INSERT INTO jobs_new (id, provider, account, action, target, tag, state, attempts, next_at,
                      lease_owner, lease_expires_at, request_id, provider_code, last_error,
                      created_at, updated_at, finished_at)
SELECT id, provider, account, action, target, tag, state, attempts, next_at,
       lease_owner, lease_expires_at, request_id, provider_code, last_error,
       created_at, updated_at, finished_at
FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

CREATE INDEX jobs_ready ON jobs (provider, account, action, next_at, id) WHERE state = 'queued';
CREATE INDEX jobs_queued_target ON jobs (provider, account, action, target) WHERE state = 'queued';
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_state ON jobs (state, provider, created_at);
CREATE INDEX jobs_updated ON jobs (updated_at);
CREATE INDEX jobs_tag ON jobs (tag) WHERE tag IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
-- The confirm loop: confirming jobs of one account in due order.
CREATE INDEX jobs_confirming ON jobs (provider, account, confirm_at) WHERE state = 'confirming';

INSERT OR IGNORE INTO job_counts (provider, state, n)
VALUES ('qiniu', 'confirming', 0), ('123pan', 'confirming', 0);

-- The triggers went with the old table; the same ones again.
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
BEGIN
    UPDATE job_counts SET n = n + 1 WHERE provider = new.provider AND state = new.state;
END;

CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs WHEN old.state <> new.state
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE provider = old.provider AND state = old.state;
    UPDATE job_counts SET n = n + 1 WHERE provider = new.provider AND state = new.state;
END;

CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
BEGIN
    UPDATE job_counts SET n = n - 1 WHERE provider = old.provider AND state = old.state;
END;

CREATE TRIGGER jobs_hours_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO job_hours (hour, enqueued) VALUES (new.created_at / 3600000, 1)
    ON CONFLICT (hour) DO UPDATE SET enqueued = enqueued + 1;
    DELETE FROM job_hours WHERE hour < new.created_at / 3600000 - 72;
END;

CREATE TRIGGER jobs_hours_finish AFTER UPDATE OF state ON jobs
WHEN old.state <> new.state AND new.state IN ('succeeded', 'failed')
BEGIN
    INSERT INTO job_hours (hour, succeeded, failed)
    VALUES (COALESCE(new.finished_at, new.updated_at) / 3600000,
            new.state = 'succeeded', new.state = 'failed')
    ON CONFLICT (hour) DO UPDATE SET succeeded = succeeded + excluded.succeeded,
                                     failed = failed + excluded.failed;
END;

COMMIT;
PRAGMA foreign_keys = ON;
