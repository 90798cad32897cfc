-- Reverts 0013: the lease columns are no longer tied to 'running' (the
-- rows stay as they are).
ALTER TABLE data_agg_state DROP CONSTRAINT IF EXISTS data_agg_state_lease_check;
