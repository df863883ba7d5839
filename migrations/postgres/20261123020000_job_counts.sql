-- Job counts per provider and state, kept by statement-level triggers, so `status` and the
-- metrics read ten rows instead of counting the whole table. One counter update per statement
-- (not per row) keeps bulk enqueues and claims cheap.
CREATE TABLE job_counts (
    provider TEXT   NOT NULL,
    state    TEXT   NOT NULL,
    n        BIGINT NOT NULL,
    PRIMARY KEY (provider, state)
);

INSERT INTO job_counts (provider, state, n)
SELECT p, s, 0
FROM unnest(ARRAY['qiniu', '123pan']) AS p,
     unnest(ARRAY['queued', 'running', 'succeeded', 'failed', 'cancelled']) AS s;

UPDATE job_counts c SET n = t.k
FROM (SELECT provider, state, COUNT(*) AS k FROM jobs GROUP BY provider, state) AS t
WHERE c.provider = t.provider AND c.state = t.state;

CREATE FUNCTION jobs_count_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE job_counts c SET n = c.n - d.k
        FROM (SELECT provider, state, COUNT(*) AS k FROM old_rows GROUP BY provider, state) AS d
        WHERE c.provider = d.provider AND c.state = d.state;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        UPDATE job_counts c SET n = c.n + d.k
        FROM (SELECT provider, state, COUNT(*) AS k FROM new_rows GROUP BY provider, state) AS d
        WHERE c.provider = d.provider AND c.state = d.state;
    END IF;
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
