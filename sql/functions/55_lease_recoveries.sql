-- requires: 10
-- Lease recoveries (docs/DESIGN.md, "Task state"). A claim that takes over
-- a running task whose lease expired (agg_claim_tasks returns it with
-- `recovered`) gives the row a new lease token while it stays 'running';
-- this trigger adds one to data_agg_state.lease_recoveries for exactly that
-- change. It is a trigger on the row rather than a line of agg_claim_tasks
-- so that function (which requires step 2) never names a column of step 10,
-- and `db down --to 9` leaves a working claim.
CREATE OR REPLACE FUNCTION agg_count_lease_recovery()
RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
  NEW.lease_recoveries := OLD.lease_recoveries + 1;
  RETURN NEW;
END $$;

REVOKE EXECUTE ON FUNCTION agg_count_lease_recovery() FROM PUBLIC;

SET LOCAL client_min_messages = warning;
DROP TRIGGER IF EXISTS agg_count_lease_recovery ON data_agg_state;
RESET client_min_messages;
CREATE TRIGGER agg_count_lease_recovery
  BEFORE UPDATE OF lease_token ON data_agg_state
  FOR EACH ROW
  WHEN (OLD.status = 'running' AND NEW.status = 'running'
        AND NEW.lease_token IS DISTINCT FROM OLD.lease_token)
  EXECUTE FUNCTION agg_count_lease_recovery();
