-- requires: 5
-- Wake-ups for running workers (docs/DESIGN.md, "Wake-ups"): new 1m data
-- and registry changes are announced with NOTIFY, once per statement, so a
-- bulk COPY costs one notification. Workers LISTEN and fall back to a poll
-- at their next due time, so a lost notification only delays work.

-- Channel barkeep_data, payload: the comma-separated symbols whose 1m bars
-- a statement inserted, revised or deleted, or '*' when they do not fit in
-- one notification. The change-tracking trigger sends it
-- (sql/functions/45_late_data.sql), from the same pass over the changed
-- rows; a trigger of its own here cost a second pass over every bulk load.
SET LOCAL client_min_messages = warning;
DROP TRIGGER IF EXISTS agg_notify_data_insert ON data_bars;
DROP TRIGGER IF EXISTS agg_notify_data_update ON data_bars;
DROP FUNCTION IF EXISTS agg_notify_data();

-- Channel barkeep_registry: an asset was added, changed or removed.
CREATE OR REPLACE FUNCTION agg_notify_registry()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  PERFORM pg_notify('barkeep_registry', '');
  RETURN NULL;
END $$;

REVOKE EXECUTE ON FUNCTION agg_notify_registry() FROM PUBLIC;

CREATE OR REPLACE TRIGGER agg_notify_registry_change
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON core_asset_registry_all
  FOR EACH STATEMENT EXECUTE FUNCTION agg_notify_registry();
