-- Reverts the worker's wake-ups: the NOTIFY triggers go here; their
-- functions (sql/functions/50_notify.sql) are dropped by barkeep right
-- after this script, in the same transaction. No data is touched.
SET LOCAL client_min_messages = warning;
DROP TRIGGER IF EXISTS agg_notify_data_insert ON data_bars;
DROP TRIGGER IF EXISTS agg_notify_data_update ON data_bars;
DROP TRIGGER IF EXISTS agg_notify_registry_change ON core_asset_registry_all;
