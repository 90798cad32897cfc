-- Reverts the path as given: `file` (canonical) still names each row's file.
SET LOCAL client_min_messages = warning;
ALTER TABLE ingest_quarantine DROP COLUMN IF EXISTS file_as_given;
