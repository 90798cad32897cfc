-- The lease belongs to a running task (docs/DESIGN.md, "Task state"): a
-- running task holds a lease token, owner and expiry, and a task in any
-- other state holds none. The state machine's writers
-- (sql/functions/40_tasks.sql) keep it; this check makes a writer that
-- does not an error. A database adopted from an earlier deployment may hold
-- rows that break it: a lease left on a task that is not running is
-- cleared, and a running task without a whole lease is set idle and due
-- (a claim would have taken it over as expired anyway).
UPDATE data_agg_state
SET lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE status <> 'running'
  AND (lease_token IS NOT NULL OR lease_owner IS NOT NULL OR lease_expires_at IS NOT NULL);
UPDATE data_agg_state
SET status = 'idle', next_run_at = least(next_run_at, now()), lease_token = NULL,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE status = 'running'
  AND (lease_token IS NULL OR lease_owner IS NULL OR lease_expires_at IS NULL);
ALTER TABLE data_agg_state
  ADD CONSTRAINT data_agg_state_lease_check
  CHECK (CASE WHEN status = 'running'
              THEN lease_token IS NOT NULL AND lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL
              ELSE lease_token IS NULL AND lease_owner IS NULL AND lease_expires_at IS NULL END);
