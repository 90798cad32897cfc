-- barkeep base schema: the instrument registry, raw 1m bars, derived bars,
-- task state, run log, ingest quarantine, and three least-privilege roles.
-- Written with IF NOT EXISTS throughout so that a database whose tables were
-- created by an earlier deployment is adopted in place, rows kept.
SET LOCAL client_min_messages = warning;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'barkeep_ingest') THEN
    CREATE ROLE barkeep_ingest NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'barkeep_worker') THEN
    CREATE ROLE barkeep_worker NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'barkeep_reader') THEN
    CREATE ROLE barkeep_reader NOLOGIN;
  END IF;
END $$;

CREATE TABLE IF NOT EXISTS core_asset_registry_all (
  canonical_symbol text PRIMARY KEY,
  asset_class      text NOT NULL,
  active           boolean NOT NULL DEFAULT true,
  test_active      boolean NOT NULL DEFAULT true,
  base_timeframe   text NOT NULL DEFAULT '1m',
  display_name     text,
  tick_size        double precision,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE core_asset_registry_all ADD COLUMN IF NOT EXISTS test_active boolean NOT NULL DEFAULT true;
ALTER TABLE core_asset_registry_all ADD COLUMN IF NOT EXISTS base_timeframe text NOT NULL DEFAULT '1m';
ALTER TABLE core_asset_registry_all ADD COLUMN IF NOT EXISTS display_name text;
ALTER TABLE core_asset_registry_all ADD COLUMN IF NOT EXISTS tick_size double precision;
ALTER TABLE core_asset_registry_all ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE core_asset_registry_all ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();

CREATE TABLE IF NOT EXISTS data_bars (
  canonical_symbol text NOT NULL,
  timeframe        text NOT NULL DEFAULT '1m',
  ts_utc           timestamptz NOT NULL,
  open             double precision NOT NULL,
  high             double precision NOT NULL,
  low              double precision NOT NULL,
  close            double precision NOT NULL,
  vol              double precision NOT NULL DEFAULT 0,
  vwap             double precision,
  trade_count      bigint,
  source           text,
  ingested_at      timestamptz NOT NULL DEFAULT now(),
  raw              jsonb
);
-- Columns an earlier deployment's data_bars may lack.
ALTER TABLE data_bars ADD COLUMN IF NOT EXISTS vwap double precision;
ALTER TABLE data_bars ADD COLUMN IF NOT EXISTS trade_count bigint;
ALTER TABLE data_bars ADD COLUMN IF NOT EXISTS source text;
ALTER TABLE data_bars ADD COLUMN IF NOT EXISTS ingested_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE data_bars ADD COLUMN IF NOT EXISTS raw jsonb;
CREATE UNIQUE INDEX IF NOT EXISTS data_bars_symbol_tf_ts_key
  ON data_bars (canonical_symbol, timeframe, ts_utc);

-- No surrogate key: the live bar is found by (symbol, timeframe, ts_utc)
-- through the partial unique index, and a sequence plus a second index
-- would roughly double what writing a bar costs.
CREATE TABLE IF NOT EXISTS derived_data_bars (
  canonical_symbol   text NOT NULL,
  timeframe          text NOT NULL,
  ts_utc             timestamptz NOT NULL,
  open               double precision NOT NULL,
  high               double precision NOT NULL,
  low                double precision NOT NULL,
  close              double precision NOT NULL,
  vol                double precision NOT NULL DEFAULT 0,
  vwap               double precision,
  trade_count        bigint,
  source_timeframe   text NOT NULL,
  source_candles     integer NOT NULL,
  expected_candles   integer NOT NULL,
  quality_score      smallint NOT NULL,
  is_partial         boolean NOT NULL DEFAULT false,
  derivation_version integer NOT NULL DEFAULT 1,
  deleted_at         timestamptz,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now()
);
-- Columns an earlier deployment's derived_data_bars may lack.
ALTER TABLE derived_data_bars ADD COLUMN IF NOT EXISTS vwap double precision;
ALTER TABLE derived_data_bars ADD COLUMN IF NOT EXISTS trade_count bigint;
ALTER TABLE derived_data_bars ADD COLUMN IF NOT EXISTS is_partial boolean NOT NULL DEFAULT false;
ALTER TABLE derived_data_bars ADD COLUMN IF NOT EXISTS derivation_version integer NOT NULL DEFAULT 1;
ALTER TABLE derived_data_bars ADD COLUMN IF NOT EXISTS deleted_at timestamptz;
ALTER TABLE derived_data_bars ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE derived_data_bars ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
CREATE UNIQUE INDEX IF NOT EXISTS derived_data_bars_live_key
  ON derived_data_bars (canonical_symbol, timeframe, ts_utc)
  WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS data_agg_state (
  canonical_symbol          text NOT NULL,
  timeframe                 text NOT NULL,
  source_timeframe          text NOT NULL,
  run_interval_minutes      integer NOT NULL DEFAULT 1,
  aggregation_delay_seconds integer NOT NULL DEFAULT 0,
  is_mandatory              boolean NOT NULL DEFAULT true,
  status                    text NOT NULL DEFAULT 'idle',
  last_agg_bar_ts_utc       timestamptz,
  next_run_at               timestamptz NOT NULL DEFAULT now(),
  running_started_at_utc    timestamptz,
  last_attempted_at_utc     timestamptz,
  last_successful_at_utc    timestamptz,
  hard_fail_streak          integer NOT NULL DEFAULT 0,
  last_error                text,
  total_runs                bigint NOT NULL DEFAULT 0,
  total_bars_created        bigint NOT NULL DEFAULT 0,
  total_bars_quality_poor   bigint NOT NULL DEFAULT 0,
  updated_at                timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (canonical_symbol, timeframe)
);
-- Columns an earlier deployment's data_agg_state may lack.
ALTER TABLE data_agg_state ADD COLUMN IF NOT EXISTS running_started_at_utc timestamptz;
ALTER TABLE data_agg_state ADD COLUMN IF NOT EXISTS last_attempted_at_utc timestamptz;
ALTER TABLE data_agg_state ADD COLUMN IF NOT EXISTS total_runs bigint NOT NULL DEFAULT 0;
ALTER TABLE data_agg_state ADD COLUMN IF NOT EXISTS total_bars_created bigint NOT NULL DEFAULT 0;
ALTER TABLE data_agg_state ADD COLUMN IF NOT EXISTS total_bars_quality_poor bigint NOT NULL DEFAULT 0;
ALTER TABLE data_agg_state ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
-- Lease fencing and heartbeat (docs/DESIGN.md, "Task state").
ALTER TABLE data_agg_state ADD COLUMN IF NOT EXISTS lease_token uuid;
ALTER TABLE data_agg_state ADD COLUMN IF NOT EXISTS lease_owner text;
ALTER TABLE data_agg_state ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz;
ALTER TABLE data_agg_state ADD COLUMN IF NOT EXISTS transient_fail_streak integer NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS agg_run_log (
  id               bigserial PRIMARY KEY,
  canonical_symbol text NOT NULL,
  timeframe        text NOT NULL,
  worker_id        text,
  started_at       timestamptz NOT NULL,
  finished_at      timestamptz,
  status           text NOT NULL,
  cursor_from      timestamptz,
  cursor_to        timestamptz,
  bars_created     integer NOT NULL DEFAULT 0,
  bars_quality_poor integer NOT NULL DEFAULT 0,
  fail_kind        text,
  error            text
);
CREATE INDEX IF NOT EXISTS agg_run_log_started_idx ON agg_run_log (started_at);

CREATE TABLE IF NOT EXISTS ingest_quarantine (
  id               bigserial PRIMARY KEY,
  file             text NOT NULL,
  line             bigint NOT NULL,
  canonical_symbol text,
  raw_line         text NOT NULL,
  reason           text NOT NULL,
  quarantined_at   timestamptz NOT NULL DEFAULT now()
);

-- Least privilege: ingest writes raw bars, the worker aggregates, the reader reads.
GRANT USAGE ON SCHEMA public TO barkeep_ingest, barkeep_worker, barkeep_reader;
GRANT SELECT ON core_asset_registry_all, data_bars, derived_data_bars, data_agg_state,
  agg_run_log, ingest_quarantine TO barkeep_reader;
GRANT SELECT ON core_asset_registry_all TO barkeep_ingest;
GRANT SELECT, INSERT, UPDATE, DELETE ON data_bars TO barkeep_ingest;
GRANT SELECT, INSERT ON ingest_quarantine TO barkeep_ingest;
GRANT USAGE ON SEQUENCE ingest_quarantine_id_seq TO barkeep_ingest;
GRANT SELECT ON core_asset_registry_all, data_bars TO barkeep_worker;
GRANT SELECT, INSERT, UPDATE ON derived_data_bars, data_agg_state, agg_run_log TO barkeep_worker;
GRANT DELETE ON agg_run_log TO barkeep_worker;
GRANT USAGE ON SEQUENCE agg_run_log_id_seq TO barkeep_worker;

DO $$
BEGIN
  -- Managed PostgreSQL (Supabase) runs server-side jobs as service_role.
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    GRANT barkeep_worker TO service_role;
  END IF;
END $$;
