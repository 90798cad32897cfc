-- Reverts the late-data step: the triggers on data_bars (created by
-- sql/functions/45_late_data.sql, whose functions barkeep drops right
-- after this script), the dirty-bucket queue, the 1m history and the
-- index of retired derived bars. Bars stay; retired derived versions stay
-- soft-deleted rows.
SET LOCAL client_min_messages = warning;

DROP TRIGGER IF EXISTS data_bars_track_insert ON data_bars;
DROP TRIGGER IF EXISTS data_bars_track_update ON data_bars;
DROP TRIGGER IF EXISTS data_bars_track_delete ON data_bars;
DROP TRIGGER IF EXISTS data_bars_stamp_revision ON data_bars;
DROP INDEX IF EXISTS derived_data_bars_retired;
DROP TABLE IF EXISTS data_bars_history;
DROP TABLE IF EXISTS agg_dirty_buckets;
