-- Finding a file's quarantined rows: `quarantine list|purge --file` and
-- ingest, which leaves out the bad rows an earlier load of the same file
-- already quarantined (same file, symbol, line and text).
SET LOCAL client_min_messages = warning;
CREATE INDEX IF NOT EXISTS ingest_quarantine_file_line
  ON ingest_quarantine (file, line);
