-- Late and corrected data: the dirty buckets waiting to be re-aggregated,
-- the earlier versions of revised or deleted 1m bars, and an index for
-- reading derived bars as they stood at an instant (their history is the
-- soft-deleted rows themselves: created_at..deleted_at is when a version
-- was live). The triggers that fill agg_dirty_buckets and
-- data_bars_history, and the functions that consume them, live in
-- sql/functions/45_late_data.sql (applied right after this step).
SET LOCAL client_min_messages = warning;

-- One row per (symbol, derived timeframe, bucket start) whose bar must be
-- recomputed. derivation_version is set by a rebuild (NULL: keep the
-- bar's version).
CREATE TABLE IF NOT EXISTS agg_dirty_buckets (
  canonical_symbol   text NOT NULL,
  timeframe          text NOT NULL,
  ts_utc             timestamptz NOT NULL,
  derivation_version integer,
  marked_at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (canonical_symbol, timeframe, ts_utc)
);

-- Earlier versions of 1m bars: the values a bar had from valid_from
-- (its ingested_at) until valid_to, when it was revised or deleted.
CREATE TABLE IF NOT EXISTS data_bars_history (
  canonical_symbol text NOT NULL,
  timeframe        text NOT NULL,
  ts_utc           timestamptz NOT NULL,
  open             double precision NOT NULL,
  high             double precision NOT NULL,
  low              double precision NOT NULL,
  close            double precision NOT NULL,
  vol              double precision NOT NULL,
  vwap             double precision,
  trade_count      bigint,
  source           text,
  valid_from       timestamptz NOT NULL,
  valid_to         timestamptz NOT NULL,
  change           text NOT NULL CHECK (change IN ('revised', 'deleted'))
);
CREATE INDEX IF NOT EXISTS data_bars_history_key
  ON data_bars_history (canonical_symbol, timeframe, ts_utc, valid_to);

-- Retired versions of derived bars, found by as-of reads; live rows keep
-- using the partial unique index, so catch-up writes pay nothing for it.
CREATE INDEX IF NOT EXISTS derived_data_bars_retired
  ON derived_data_bars (canonical_symbol, timeframe, ts_utc)
  WHERE deleted_at IS NOT NULL;

GRANT SELECT ON agg_dirty_buckets, data_bars_history TO barkeep_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON agg_dirty_buckets TO barkeep_worker;
GRANT SELECT ON data_bars_history TO barkeep_worker, barkeep_ingest;
