-- purgeq schema, version 1. Never edit an applied migration: add a new file.
-- Times are integer milliseconds since the Unix epoch (UTC).

-- One row per purge target. A job moves queued -> running -> succeeded | failed | cancelled;
-- a running job whose lease expires goes back to queued.
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    provider         TEXT    NOT NULL CHECK (provider IN ('qiniu', '123pan')),
    account          TEXT    NOT NULL DEFAULT 'default',
    action           TEXT    NOT NULL CHECK (action IN ('refresh_url', 'refresh_dir', 'prefetch_url', 'refresh_all')),
    -- NULL only for a 123pan account-wide refresh enqueued without a URL.
    target           TEXT    CHECK (target IS NOT NULL OR action = 'refresh_all'),
    tag              TEXT,
    state            TEXT    NOT NULL DEFAULT 'queued'
                             CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_at          INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    request_id       TEXT,
    provider_code    INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER
);

-- The claim: ready jobs of one lane in due order.
CREATE INDEX jobs_ready ON jobs (provider, account, action, next_at, id) WHERE state = 'queued';
-- The claim's second step: every queued duplicate of the chosen targets.
CREATE INDEX jobs_queued_target ON jobs (provider, account, action, target) WHERE state = 'queued';
-- Requeueing expired leases and releasing a worker's claims.
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE state = 'running';
-- status: counts per provider and state, recent jobs, filters; prune by age.
CREATE INDEX jobs_state ON jobs (state, provider);
CREATE INDEX jobs_updated ON jobs (updated_at);
CREATE INDEX jobs_tag ON jobs (tag) WHERE tag IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- One row per provider call, written before the call and completed after it.
CREATE TABLE calls (
    id            INTEGER PRIMARY KEY,
    provider      TEXT    NOT NULL,
    account       TEXT    NOT NULL,
    -- The operation sent: refresh, prefetch (qiniu) or refresh_all (123pan).
    operation     TEXT    NOT NULL,
    worker        TEXT    NOT NULL,
    target_count  INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    http_status   INTEGER,
    provider_code INTEGER,
    request_id    TEXT,
    -- Qiniu's X-Reqid response header, for support tickets.
    trace_id      TEXT,
    outcome       TEXT,
    message       TEXT
);
CREATE INDEX calls_started ON calls (started_at);

-- Which jobs a call carried. A job carried by several calls (retries) has several rows.
CREATE TABLE call_jobs (
    call_id INTEGER NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    job_id  INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (call_id, job_id)
) WITHOUT ROWID;
CREATE INDEX call_jobs_job ON call_jobs (job_id);

-- Per-lane gate (provider account x action): a quota, rate-limit or auth failure pauses the lane
-- for every worker, and survives restarts.
CREATE TABLE lanes (
    provider      TEXT    NOT NULL,
    account       TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    paused_until  INTEGER,
    strikes       INTEGER NOT NULL DEFAULT 0,
    reason        TEXT,
    -- The provider's daily quota and what is left of it, as last reported.
    quota_day     INTEGER,
    surplus_day   INTEGER,
    quota_at      INTEGER,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (provider, account, action)
);

-- The 123pan access token, shared by CLI runs, restarts and workers.
CREATE TABLE tokens (
    provider     TEXT    NOT NULL,
    account      TEXT    NOT NULL,
    access_token TEXT    NOT NULL,
    expires_at   INTEGER NOT NULL,
    obtained_at  INTEGER NOT NULL,
    PRIMARY KEY (provider, account)
);
