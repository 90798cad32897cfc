-- requires: 5
-- Wake-ups for running workers (docs/DESIGN.md, "Wake-ups"): new 1m data
-- and registry changes are announced with NOTIFY, once per statement, so a
-- bulk COPY costs one notification. Workers LISTEN and fall back to a poll
-- at their next due time, so a lost notification only delays work.

-- Channel barkeep_data, payload: the comma-separated symbols whose 1m bars
-- the statement wrote, or '*' when they do not fit in one notification.
CREATE OR REPLACE FUNCTION agg_notify_data()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_symbols text;
BEGIN
  SELECT string_agg(DISTINCT n.canonical_symbol, ',') INTO v_symbols
  FROM agg_new_bars n WHERE n.timeframe = '1m';
  IF v_symbols IS NOT NULL THEN
    PERFORM pg_notify('barkeep_data', CASE WHEN length(v_symbols) > 7000 THEN '*' ELSE v_symbols END);
  END IF;
  RETURN NULL;
END $$;

-- Channel barkeep_registry: an asset was added, changed or removed.
CREATE OR REPLACE FUNCTION agg_notify_registry()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  PERFORM pg_notify('barkeep_registry', '');
  RETURN NULL;
END $$;

REVOKE EXECUTE ON FUNCTION agg_notify_data(), agg_notify_registry() FROM PUBLIC;

CREATE OR REPLACE TRIGGER agg_notify_data_insert
  AFTER INSERT ON data_bars REFERENCING NEW TABLE AS agg_new_bars
  FOR EACH STATEMENT EXECUTE FUNCTION agg_notify_data();
CREATE OR REPLACE TRIGGER agg_notify_data_update
  AFTER UPDATE ON data_bars REFERENCING NEW TABLE AS agg_new_bars
  FOR EACH STATEMENT EXECUTE FUNCTION agg_notify_data();
CREATE OR REPLACE TRIGGER agg_notify_registry_change
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON core_asset_registry_all
  FOR EACH STATEMENT EXECUTE FUNCTION agg_notify_registry();
