-- Job counts per provider, account and state (they were per provider and state), so `status`,
-- the dashboard and the worker's start read the queued and running jobs of each account from a
-- few rows instead of counting the queue: 58 ms of a 73 ms `status --json` with 65,000 queued
-- jobs. A row is created the first time its account enters its state (an upsert in the
-- triggers); rows that fall back to zero stay, and readers skip them.
DROP TRIGGER jobs_count_insert;
DROP TRIGGER jobs_count_update;
DROP TRIGGER jobs_count_delete;
DROP TABLE job_counts;

CREATE TABLE job_counts (
    provider TEXT    NOT NULL,
    account  TEXT    NOT NULL,
    state    TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (provider, account, state)
) WITHOUT ROWID;

INSERT INTO job_counts (provider, account, state, n)
SELECT provider, account, state, COUNT(*) FROM jobs GROUP BY provider, account, state;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO job_counts (provider, account, state, n)
    VALUES (new.provider, new.account, new.state, 1)
    ON CONFLICT (provider, account, state) DO UPDATE SET n = n + 1;
END;

-- A change of state (or, though no statement makes one, of provider or account) moves one count.
CREATE TRIGGER jobs_count_update AFTER UPDATE OF state, provider, account ON jobs
WHEN old.state <> new.state OR old.provider <> new.provider OR old.account <> new.account
BEGIN
    UPDATE job_counts SET n = n - 1
    WHERE provider = old.provider AND account = old.account AND state = old.state;
    INSERT INTO job_counts (provider, account, state, n)
    VALUES (new.provider, new.account, new.state, 1)
    ON CONFLICT (provider, account, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
BEGIN
    UPDATE job_counts SET n = n - 1
    WHERE provider = old.provider AND account = old.account AND state = old.state;
END;
