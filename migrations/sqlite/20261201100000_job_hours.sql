-- Jobs enqueued, succeeded and failed per UTC hour, kept by triggers, so the dashboard's 24 h
-- chart reads at most a few dozen rows instead of scanning `jobs`. Hours older than three days
-- are deleted as new hours start: the table stays under ~100 rows.
CREATE TABLE job_hours (
    hour      INTEGER NOT NULL PRIMARY KEY, -- ms since the epoch / 3600000
    enqueued  INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0
);

INSERT INTO job_hours (hour, enqueued)
SELECT created_at / 3600000, COUNT(*) FROM jobs
WHERE created_at >= (CAST(strftime('%s', 'now') AS INTEGER) - 3 * 86400) * 1000
GROUP BY created_at / 3600000;

INSERT INTO job_hours (hour, succeeded, failed)
SELECT finished_at / 3600000, SUM(state = 'succeeded'), SUM(state = 'failed') FROM jobs
WHERE finished_at >= (CAST(strftime('%s', 'now') AS INTEGER) - 3 * 86400) * 1000
  AND state IN ('succeeded', 'failed')
GROUP BY finished_at / 3600000
ON CONFLICT (hour) DO UPDATE SET succeeded = excluded.succeeded, failed = excluded.failed;

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
