-- Reverts the quarantine lookup index. No data is touched.
SET LOCAL client_min_messages = warning;
DROP INDEX IF EXISTS ingest_quarantine_file_line;
