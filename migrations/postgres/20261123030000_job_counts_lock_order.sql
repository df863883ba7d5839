-- Concurrent statements (a claim: queued -> running; a record: running -> succeeded) updated the
-- same counter rows in different orders and could deadlock. Lock the rows a statement touches in
-- one global order (provider, state) before updating them.
CREATE OR REPLACE FUNCTION jobs_count_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    deltas jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT jsonb_agg(jsonb_build_array(provider, state, k)) INTO deltas
        FROM (SELECT provider, state, COUNT(*) AS k FROM new_rows GROUP BY provider, state) AS d;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT jsonb_agg(jsonb_build_array(provider, state, -k)) INTO deltas
        FROM (SELECT provider, state, COUNT(*) AS k FROM old_rows GROUP BY provider, state) AS d;
    ELSE
        SELECT jsonb_agg(jsonb_build_array(provider, state, k)) INTO deltas
        FROM (SELECT provider, state, SUM(k) AS k FROM (
                  SELECT provider, state, 1 AS k FROM new_rows
                  UNION ALL
                  SELECT provider, state, -1 AS k FROM old_rows) AS u
              GROUP BY provider, state
              HAVING SUM(k) <> 0) AS d;
    END IF;
    IF deltas IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM job_counts c
    WHERE (c.provider, c.state) IN (SELECT e ->> 0, e ->> 1 FROM jsonb_array_elements(deltas) AS e)
    ORDER BY c.provider, c.state
    FOR UPDATE;
    UPDATE job_counts c SET n = c.n + (e ->> 2)::bigint
    FROM jsonb_array_elements(deltas) AS e
    WHERE c.provider = e ->> 0 AND c.state = e ->> 1;
    RETURN NULL;
END
$$;
