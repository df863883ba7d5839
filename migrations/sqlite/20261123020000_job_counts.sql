-- Job counts per provider and state, kept by triggers, so `status` and the metrics read ten rows
-- instead of counting the whole table (its cost would grow with the audit history).
CREATE TABLE job_counts (
    provider TEXT    NOT NULL,
    state    TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (provider, state)
) WITHOUT ROWID;

-- Every provider x state the CHECK constraints of `jobs` allow, so the triggers only UPDATE.
INSERT INTO job_counts (provider, state, n)
SELECT p.column1, s.column1, 0
FROM (VALUES ('qiniu'), ('123pan')) AS p,
     (VALUES ('queued'), ('running'), ('succeeded'), ('failed'), ('cancelled')) AS s;

UPDATE job_counts SET n = (
    SELECT COUNT(*) FROM jobs WHERE jobs.provider = job_counts.provider AND jobs.state = job_counts.state
);

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
