-- Job counts per provider, account and state (they were per provider and state), so `status`,
-- the dashboard and the worker's start read the queued and running jobs of each account from a
-- few rows instead of counting the queue (see the SQLite migration of the same name). A row is
-- created the first time its account enters its state; rows that fall back to zero stay, and
-- readers skip them.
DROP TRIGGER jobs_count_insert ON jobs;
DROP TRIGGER jobs_count_update ON jobs;
DROP TRIGGER jobs_count_delete ON jobs;
DROP FUNCTION jobs_count_apply();
DROP TABLE job_counts;

CREATE TABLE job_counts (
    provider TEXT   NOT NULL,
    account  TEXT   NOT NULL,
    state    TEXT   NOT NULL,
    n        BIGINT NOT NULL,
    PRIMARY KEY (provider, account, state)
);

INSERT INTO job_counts (provider, account, state, n)
SELECT provider, account, state, COUNT(*) FROM jobs GROUP BY provider, account, state;

-- One counter change per statement and key. Concurrent statements (a claim: queued -> running;
-- a record: running -> succeeded) touch the same rows: each creates the keys it lacks, then
-- locks its rows in one global order (provider, account, state) before updating them, so two
-- never wait for each other in opposite orders.
CREATE FUNCTION jobs_count_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    deltas jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT jsonb_agg(jsonb_build_array(provider, account, state, k)) INTO deltas
        FROM (SELECT provider, account, state, COUNT(*) AS k FROM new_rows
              GROUP BY provider, account, state) AS d;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT jsonb_agg(jsonb_build_array(provider, account, state, -k)) INTO deltas
        FROM (SELECT provider, account, state, COUNT(*) AS k FROM old_rows
              GROUP BY provider, account, state) AS d;
    ELSE
        SELECT jsonb_agg(jsonb_build_array(provider, account, state, k)) INTO deltas
        FROM (SELECT provider, account, state, SUM(k) AS k FROM (
                  SELECT provider, account, state, 1 AS k FROM new_rows
                  UNION ALL
                  SELECT provider, account, state, -1 AS k FROM old_rows) AS u
              GROUP BY provider, account, state
              HAVING SUM(k) <> 0) AS d;
    END IF;
    IF deltas IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO job_counts (provider, account, state, n)
    SELECT e ->> 0, e ->> 1, e ->> 2, 0 FROM jsonb_array_elements(deltas) AS e
    ORDER BY 1, 2, 3
    ON CONFLICT (provider, account, state) DO NOTHING;
    PERFORM 1 FROM job_counts c
    WHERE (c.provider, c.account, c.state) IN
          (SELECT e ->> 0, e ->> 1, e ->> 2 FROM jsonb_array_elements(deltas) AS e)
    ORDER BY c.provider, c.account, c.state
    FOR UPDATE;
    UPDATE job_counts c SET n = c.n + (e ->> 3)::bigint
    FROM jsonb_array_elements(deltas) AS e
    WHERE c.provider = e ->> 0 AND c.account = e ->> 1 AND c.state = e ->> 2;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_apply();
CREATE TRIGGER jobs_count_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_apply();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_apply();
