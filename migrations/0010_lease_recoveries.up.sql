-- Lease recoveries: how many times a claim took a task over from a worker
-- whose lease had expired (agg_claim_tasks' `recovered`), kept per task so
-- `/metrics` can expose one cumulative count whichever worker recovered it.
-- The trigger that counts, and its function, are in
-- sql/functions/55_lease_recoveries.sql, applied right after this step.
ALTER TABLE data_agg_state ADD COLUMN IF NOT EXISTS lease_recoveries bigint NOT NULL DEFAULT 0;
