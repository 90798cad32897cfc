-- The worker's wake-ups: statement-level NOTIFY triggers on data_bars and
-- core_asset_registry_all. Their trigger functions and the triggers are in
-- sql/functions/50_notify.sql, applied right after this step; this step
-- only marks the version they require. No table changes.
SELECT 1;
