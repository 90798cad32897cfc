-- Reverts 0010: the counting trigger and the column go; the trigger's
-- function (sql/functions/55_lease_recoveries.sql) is dropped by barkeep
-- right after this script, in the same transaction.
SET LOCAL client_min_messages = warning;
DROP TRIGGER IF EXISTS agg_count_lease_recovery ON data_agg_state;
ALTER TABLE data_agg_state DROP COLUMN IF EXISTS lease_recoveries;
