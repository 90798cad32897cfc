-- Reverts 0008: the roles no longer read the migration history.
REVOKE SELECT ON barkeep_schema_migrations, barkeep_schema_functions
  FROM barkeep_ingest, barkeep_worker, barkeep_reader;
