-- Reverts Phase 5: the claim index and the three task columns it added.
-- The functions of sql/functions/ that require this step are dropped by
-- barkeep right after this script, in the same transaction. Bars and task
-- rows stay.
SET LOCAL client_min_messages = warning;

DROP INDEX IF EXISTS idx_agg_state_due_priority;

ALTER TABLE data_agg_state
  DROP COLUMN IF EXISTS task_priority,
  DROP COLUMN IF EXISTS enabled,
  DROP COLUMN IF EXISTS agg_start_utc;
