-- Managed PostgreSQL: every barkeep role may read the migration history,
-- so `barkeep db status` works as the reader (it never writes).
GRANT SELECT ON barkeep_schema_migrations, barkeep_schema_functions
  TO barkeep_ingest, barkeep_worker, barkeep_reader;
