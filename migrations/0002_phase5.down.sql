-- Reverts Phase 5: drops the functions, the claim index and the three task
-- columns it added. Bars and task rows stay.
SET LOCAL client_min_messages = warning;

DROP FUNCTION IF EXISTS sync_agg_state_from_registry(text, timestamptz);
DROP FUNCTION IF EXISTS agg_finish(text, text, boolean, timestamptz, jsonb, text, text, timestamptz, integer);
DROP FUNCTION IF EXISTS agg_heartbeat(text, text, uuid, timestamptz, integer);
DROP FUNCTION IF EXISTS agg_claim_tasks(text, text, timestamptz, integer, integer);
DROP FUNCTION IF EXISTS agg_get_due_tasks(text, timestamptz, integer, integer);
DROP FUNCTION IF EXISTS catchup_aggregation_range(text, text, timestamptz, integer, timestamptz, integer, boolean);
DROP FUNCTION IF EXISTS agg_bootstrap_cursor(text, text, timestamptz);
DROP FUNCTION IF EXISTS agg_check_timeframe(text);
DROP FUNCTION IF EXISTS agg_check_env(text);
DROP FUNCTION IF EXISTS agg_next_source_ts(text, text, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS agg_source_bars(text, text, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS agg_symbol_calendar(text);
DROP FUNCTION IF EXISTS agg_quality(integer, integer);
DROP FUNCTION IF EXISTS agg_expected_candles(text, text, timestamptz);
DROP FUNCTION IF EXISTS agg_first_bucket_at_or_after(text, text, timestamptz);
DROP FUNCTION IF EXISTS agg_bucket_end(text, text, timestamptz);
DROP FUNCTION IF EXISTS agg_bucket_start(text, text, timestamptz);
DROP FUNCTION IF EXISTS agg_fxt_key_start(timestamp);
DROP FUNCTION IF EXISTS agg_fxt_key(text, timestamptz);
DROP FUNCTION IF EXISTS agg_timeframe_interval(text);
DROP FUNCTION IF EXISTS agg_source_timeframe(text);
DROP FUNCTION IF EXISTS agg_timeframe_rank(text);
DROP FUNCTION IF EXISTS agg_calendar(text);

DROP INDEX IF EXISTS idx_agg_state_due_priority;

ALTER TABLE data_agg_state
  DROP COLUMN IF EXISTS task_priority,
  DROP COLUMN IF EXISTS enabled,
  DROP COLUMN IF EXISTS agg_start_utc;
