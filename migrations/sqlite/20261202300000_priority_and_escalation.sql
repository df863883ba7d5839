-- Issue 14. A job's priority as a rank, 0 (urgent), 1 (high), 2 (normal, the default) to 3 (low):
-- claims take the lowest rank first, then the oldest. And the directory whose refresh served a
-- URL job in place of its own URL refresh (directory escalation), if one did.
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 2 CHECK (priority BETWEEN 0 AND 3);
ALTER TABLE jobs ADD COLUMN served_by_dir TEXT;

-- The claim: ready jobs of one lane by priority, then in due order.
CREATE INDEX jobs_ready_priority ON jobs (provider, account, action, priority, next_at, id)
    WHERE state = 'queued';
