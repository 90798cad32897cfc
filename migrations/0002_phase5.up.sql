-- Phase 5: per-task start, enable flag and priority and the claim index.
-- The functions of the SQL face (calendar helpers, bootstrap, catch-up,
-- claim, heartbeat, finish, due tasks, registry sync) live in
-- sql/functions/ and are applied after this step; reverting it drops them.
SET LOCAL client_min_messages = warning;

ALTER TABLE data_agg_state
  ADD COLUMN IF NOT EXISTS agg_start_utc timestamptz NOT NULL DEFAULT '2025-07-01 00:00+00',
  ADD COLUMN IF NOT EXISTS enabled boolean NOT NULL DEFAULT true,
  ADD COLUMN IF NOT EXISTS task_priority integer NOT NULL DEFAULT 100;

-- Serves the claim: due rows are enabled, idle or running, and found by
-- next_run_at; the rest of the claim order is applied to that small set.
CREATE INDEX IF NOT EXISTS idx_agg_state_due_priority
  ON data_agg_state (next_run_at, is_mandatory DESC, task_priority)
  WHERE enabled AND status IN ('idle', 'running');

-- A database adopted from an earlier deployment may hold overloads of these
-- names; exactly one of each must remain.
DO $$
DECLARE f regprocedure;
BEGIN
  FOR f IN
    SELECT p.oid::regprocedure FROM pg_proc p
    WHERE p.pronamespace = current_schema()::regnamespace
      AND p.proname IN ('agg_bootstrap_cursor', 'catchup_aggregation_range', 'agg_finish',
                        'agg_get_due_tasks', 'sync_agg_state_from_registry',
                        'agg_claim_tasks', 'agg_heartbeat')
  LOOP
    EXECUTE format('DROP FUNCTION %s', f);
  END LOOP;
END $$;
