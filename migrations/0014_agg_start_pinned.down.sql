-- Reverts 0014: no task remembers whether its start was pinned.
ALTER TABLE data_agg_state DROP COLUMN IF EXISTS agg_start_pinned;
