-- purgeq schema for PostgreSQL, version 1: the same tables, states and meanings as the SQLite
-- schema in ../sqlite. Never edit an applied migration: add a new file.
-- Times are bigint milliseconds since the Unix epoch (UTC).

CREATE TABLE jobs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider         TEXT    NOT NULL CHECK (provider IN ('qiniu', '123pan')),
    account          TEXT    NOT NULL DEFAULT 'default',
    action           TEXT    NOT NULL CHECK (action IN ('refresh_url', 'refresh_dir', 'prefetch_url', 'refresh_all')),
    target           TEXT    CHECK (target IS NOT NULL OR action = 'refresh_all'),
    tag              TEXT,
    state            TEXT    NOT NULL DEFAULT 'queued'
                             CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_at          BIGINT  NOT NULL,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    request_id       TEXT,
    provider_code    BIGINT,
    last_error       TEXT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    finished_at      BIGINT
);

CREATE INDEX jobs_ready ON jobs (provider, account, action, next_at, id) WHERE state = 'queued';
CREATE INDEX jobs_queued_target ON jobs (provider, account, action, target) WHERE state = 'queued';
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_state ON jobs (state, provider, created_at);
CREATE INDEX jobs_updated ON jobs (updated_at);
CREATE INDEX jobs_tag ON jobs (tag) WHERE tag IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE calls (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider      TEXT    NOT NULL,
    account       TEXT    NOT NULL,
    operation     TEXT    NOT NULL,
    worker        TEXT    NOT NULL,
    target_count  BIGINT  NOT NULL,
    started_at    BIGINT  NOT NULL,
    finished_at   BIGINT,
    http_status   BIGINT,
    provider_code BIGINT,
    request_id    TEXT,
    trace_id      TEXT,
    outcome       TEXT,
    message       TEXT
);
CREATE INDEX calls_started ON calls (started_at);

CREATE TABLE call_jobs (
    call_id BIGINT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    job_id  BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (call_id, job_id)
);
CREATE INDEX call_jobs_job ON call_jobs (job_id);

CREATE TABLE lanes (
    provider      TEXT    NOT NULL,
    account       TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    paused_until  BIGINT,
    strikes       BIGINT  NOT NULL DEFAULT 0,
    reason        TEXT,
    quota_day     BIGINT,
    surplus_day   BIGINT,
    quota_at      BIGINT,
    updated_at    BIGINT  NOT NULL,
    PRIMARY KEY (provider, account, action)
);

CREATE TABLE tokens (
    provider     TEXT    NOT NULL,
    account      TEXT    NOT NULL,
    access_token TEXT    NOT NULL,
    expires_at   BIGINT  NOT NULL,
    obtained_at  BIGINT  NOT NULL,
    PRIMARY KEY (provider, account)
);
