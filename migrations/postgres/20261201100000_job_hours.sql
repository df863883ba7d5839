-- Jobs enqueued, succeeded and failed per UTC hour, kept by statement-level triggers, so the
-- dashboard's 24 h chart reads at most a few dozen rows instead of scanning `jobs`. Hours older
-- than three days are deleted on each insert: the table stays under ~100 rows.
CREATE TABLE job_hours (
    hour      BIGINT NOT NULL PRIMARY KEY, -- ms since the epoch / 3600000
    enqueued  BIGINT NOT NULL DEFAULT 0,
    succeeded BIGINT NOT NULL DEFAULT 0,
    failed    BIGINT NOT NULL DEFAULT 0
);

INSERT INTO job_hours (hour, enqueued)
SELECT created_at / 3600000, COUNT(*) FROM jobs
WHERE created_at >= (extract(epoch FROM now())::bigint - 3 * 86400) * 1000
GROUP BY created_at / 3600000;

INSERT INTO job_hours (hour, succeeded, failed)
SELECT finished_at / 3600000, COUNT(*) FILTER (WHERE state = 'succeeded'),
       COUNT(*) FILTER (WHERE state = 'failed') FROM jobs
WHERE finished_at >= (extract(epoch FROM now())::bigint - 3 * 86400) * 1000
  AND state IN ('succeeded', 'failed')
GROUP BY finished_at / 3600000
ON CONFLICT (hour) DO UPDATE SET succeeded = excluded.succeeded, failed = excluded.failed;

-- Rows are upserted in hour order, so concurrent statements lock them in one order.
CREATE FUNCTION jobs_hours_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_hours AS h (hour, enqueued)
    SELECT created_at / 3600000, COUNT(*) FROM new_rows GROUP BY 1 ORDER BY 1
    ON CONFLICT (hour) DO UPDATE SET enqueued = h.enqueued + excluded.enqueued;
    DELETE FROM job_hours
    WHERE hour < (SELECT MAX(created_at) / 3600000 - 72 FROM new_rows);
    RETURN NULL;
END
$$;

CREATE FUNCTION jobs_hours_finish() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_hours AS h (hour, succeeded, failed)
    SELECT COALESCE(n.finished_at, n.updated_at) / 3600000,
           COUNT(*) FILTER (WHERE n.state = 'succeeded'),
           COUNT(*) FILTER (WHERE n.state = 'failed')
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE o.state <> n.state AND n.state IN ('succeeded', 'failed')
    GROUP BY 1 ORDER BY 1
    ON CONFLICT (hour) DO UPDATE SET succeeded = h.succeeded + excluded.succeeded,
                                     failed = h.failed + excluded.failed;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_hours_insert AFTER INSERT ON jobs
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION jobs_hours_insert();

CREATE TRIGGER jobs_hours_finish AFTER UPDATE ON jobs
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION jobs_hours_finish();
