-- The path of a quarantined row's file as the user gave it to ingest
-- (relative to the folder ingest ran in, or through a link), beside `file`,
-- its canonical form, which identifies the file for re-ingest and
-- `quarantine --file`. NULL for rows quarantined before this step.
SET LOCAL client_min_messages = warning;
ALTER TABLE ingest_quarantine ADD COLUMN IF NOT EXISTS file_as_given text;
