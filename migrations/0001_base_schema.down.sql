-- Removes the base schema. Roles are cluster-wide and may still hold
-- privileges in other databases, so they are dropped only when nothing else
-- depends on them.
SET LOCAL client_min_messages = warning;
DROP TABLE IF EXISTS ingest_quarantine;
DROP TABLE IF EXISTS agg_run_log;
DROP TABLE IF EXISTS data_agg_state;
DROP TABLE IF EXISTS derived_data_bars;
DROP TABLE IF EXISTS data_bars;
DROP TABLE IF EXISTS core_asset_registry_all;
REVOKE ALL ON SCHEMA public FROM barkeep_ingest, barkeep_worker, barkeep_reader;
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['barkeep_ingest', 'barkeep_worker', 'barkeep_reader'] LOOP
    BEGIN
      EXECUTE format('DROP ROLE IF EXISTS %I', r);
    EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
      NULL; -- still granted in another database, or made by a superuser for us
    END;
  END LOOP;
END $$;
