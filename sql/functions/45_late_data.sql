-- requires: 4
-- Late and corrected data (docs/DESIGN.md "Late and corrected data"):
-- statement-level triggers on data_bars record the 5m buckets behind the 5m
-- cursor that an insert, update or delete touched, and keep the earlier
-- versions of revised or deleted 1m bars; agg_process_dirty re-aggregates
-- exactly the recorded buckets in ladder order, cascading up; agg_rebuild
-- recomputes a range on demand with a bumped derivation_version.

------------------------------------------------------------------------------
-- Change tracking on data_bars.
------------------------------------------------------------------------------

-- One function for the three triggers (a trigger with transition tables
-- takes one event). Per statement: one pass over the changed rows finds
-- each symbol's earliest stamp; the symbol's 5m cursor is read with FOR
-- KEY SHARE, which waits for a catch-up chunk holding the task row (FOR
-- UPDATE) to commit and then sees its cursor, so a row is either read by
-- that chunk or recorded here. Rows ahead of the cursor record nothing.
-- The same pass names the symbols for the workers' wake-up (NOTIFY on
-- barkeep_data, docs/DESIGN.md "Wake-ups"): one notification per
-- statement, the comma-separated symbols, or '*' when they do not fit.
CREATE OR REPLACE FUNCTION agg_track_1m_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_rows text;
  v_symbol text;
  v_earliest timestamptz;
  v_cursor timestamptz;
  v_symbols text[] := '{}'::text[];
  v_list text;
BEGIN
  IF TG_OP = 'UPDATE' THEN
    INSERT INTO data_bars_history (canonical_symbol, timeframe, ts_utc, open, high, low, close,
      vol, vwap, trade_count, source, valid_from, valid_to, change)
    SELECT o.canonical_symbol, o.timeframe, o.ts_utc, o.open, o.high, o.low, o.close,
           o.vol, o.vwap, o.trade_count, o.source, o.ingested_at, now(), 'revised'
    FROM old_rows o
    LEFT JOIN new_rows n ON n.canonical_symbol = o.canonical_symbol
      AND n.timeframe = o.timeframe AND n.ts_utc = o.ts_utc
    WHERE n.ts_utc IS NULL
       OR (o.open, o.high, o.low, o.close, o.vol, o.vwap, o.trade_count)
          IS DISTINCT FROM (n.open, n.high, n.low, n.close, n.vol, n.vwap, n.trade_count);
    v_rows := 'SELECT canonical_symbol, timeframe, ts_utc FROM new_rows
               UNION ALL SELECT canonical_symbol, timeframe, ts_utc FROM old_rows';
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO data_bars_history (canonical_symbol, timeframe, ts_utc, open, high, low, close,
      vol, vwap, trade_count, source, valid_from, valid_to, change)
    SELECT o.canonical_symbol, o.timeframe, o.ts_utc, o.open, o.high, o.low, o.close,
           o.vol, o.vwap, o.trade_count, o.source, o.ingested_at, now(), 'deleted'
    FROM old_rows o;
    v_rows := 'SELECT canonical_symbol, timeframe, ts_utc FROM old_rows';
  ELSE
    v_rows := 'SELECT canonical_symbol, timeframe, ts_utc FROM new_rows';
  END IF;

  FOR v_symbol, v_earliest IN EXECUTE format(
    'SELECT canonical_symbol AS symbol, min(ts_utc) AS earliest FROM (%s) c
     WHERE timeframe = ''1m'' GROUP BY canonical_symbol ORDER BY canonical_symbol', v_rows)
  LOOP
    v_symbols := v_symbols || v_symbol;
    SELECT s.last_agg_bar_ts_utc INTO v_cursor FROM data_agg_state s
    WHERE s.canonical_symbol = v_symbol AND s.timeframe = '5m'
    FOR KEY SHARE;
    IF v_cursor IS NOT NULL AND v_earliest < v_cursor THEN
      EXECUTE format(
        'INSERT INTO agg_dirty_buckets (canonical_symbol, timeframe, ts_utc)
         SELECT DISTINCT $1, ''5m'', agg_bucket_start(''utc'', ''5m'', c.ts_utc) FROM (%s) c
         WHERE c.canonical_symbol = $1 AND c.timeframe = ''1m'' AND c.ts_utc < $2
         ON CONFLICT DO NOTHING', v_rows)
      USING v_symbol, v_cursor;
    END IF;
    v_cursor := NULL;
  END LOOP;
  IF cardinality(v_symbols) > 0 THEN
    v_list := array_to_string(v_symbols, ',');
    PERFORM pg_notify('barkeep_data', CASE WHEN length(v_list) > 7000 THEN '*' ELSE v_list END);
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER data_bars_track_insert AFTER INSERT ON data_bars
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION agg_track_1m_changes();
CREATE OR REPLACE TRIGGER data_bars_track_update AFTER UPDATE ON data_bars
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION agg_track_1m_changes();
CREATE OR REPLACE TRIGGER data_bars_track_delete AFTER DELETE ON data_bars
  REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION agg_track_1m_changes();

-- A revised 1m bar is live from the revision on: its ingested_at moves to
-- now() whatever the client wrote (data_bars_history keeps the old values
-- with the old ingested_at), so `export --as-of` reads 1m bars exactly.
-- Only rows whose values change pay for this row-level trigger.
CREATE OR REPLACE FUNCTION agg_stamp_1m_revision() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.ingested_at := now();
  RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER data_bars_stamp_revision BEFORE UPDATE ON data_bars
  FOR EACH ROW
  WHEN ((OLD.open, OLD.high, OLD.low, OLD.close, OLD.vol, OLD.vwap, OLD.trade_count)
        IS DISTINCT FROM (NEW.open, NEW.high, NEW.low, NEW.close, NEW.vol, NEW.vwap, NEW.trade_count))
  EXECUTE FUNCTION agg_stamp_1m_revision();

------------------------------------------------------------------------------
-- Re-aggregation.
------------------------------------------------------------------------------

-- Mark the buckets of the timeframes built from `timeframe` that contain
-- `buckets` (bars of `timeframe` that changed or went), whatever their
-- cursor: a dependent that already read the old bar is corrected when its
-- cursor has passed the bucket. `version` (a rebuild's) travels up.
CREATE OR REPLACE FUNCTION agg_mark_dependents(symbol text, timeframe text, calendar text,
  buckets timestamptz[], version integer)
RETURNS integer
LANGUAGE sql VOLATILE AS $$
  WITH marked AS (
    INSERT INTO agg_dirty_buckets AS x (canonical_symbol, timeframe, ts_utc, derivation_version)
    SELECT DISTINCT $1, dep.tf, agg_bucket_start($3, dep.tf, b.ts), $5
    FROM unnest($4) b(ts)
    CROSS JOIN (SELECT t FROM unnest(agg_ladder()) t
                WHERE agg_source_timeframe(t) = $2) dep(tf)
    WHERE EXISTS (SELECT 1 FROM data_agg_state s
                  WHERE s.canonical_symbol = $1 AND s.timeframe = dep.tf)
    ON CONFLICT (canonical_symbol, timeframe, ts_utc) DO UPDATE
      SET derivation_version = greatest(x.derivation_version, EXCLUDED.derivation_version)
    RETURNING 1
  )
  SELECT count(*)::integer FROM marked
$$;

-- Re-aggregate the dirty buckets of one task that lie behind its cursor
-- (the caller holds the task row FOR UPDATE), at most max_buckets of them,
-- oldest first. Consecutive buckets are written as one range. The marks
-- are consumed in the caller's transaction, with the bars. Buckets before
-- the task's start (agg_start_utc) get no bar, as in a catch-up: their
-- marks are dropped (`barkeep rebuild --from` moves the start earlier).
CREATE OR REPLACE FUNCTION agg_refresh_dirty(symbol text, timeframe text, calendar text,
  cursor timestamptz, max_buckets integer,
  OUT buckets integer, OUT created integer, OUT changed integer, OUT deleted integer,
  OUT poor integer, OUT more boolean)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
  v_symbol text := $1;
  v_tf text := $2;
  v_cal text := $3;
  v_cursor timestamptz := $4;
  v_max integer := $5;
  v_first timestamptz;
  r record;
  w record;
BEGIN
  buckets := 0; created := 0; changed := 0; deleted := 0; poor := 0; more := false;
  IF v_cursor IS NULL THEN
    RETURN;
  END IF;
  SELECT agg_first_bucket_at_or_after(v_cal, v_tf, s.agg_start_utc) INTO v_first
  FROM data_agg_state s WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_tf;
  DELETE FROM agg_dirty_buckets d
  WHERE d.canonical_symbol = v_symbol AND d.timeframe = v_tf AND d.ts_utc < v_first;
  FOR r IN
    WITH picked AS (
      DELETE FROM agg_dirty_buckets d
      WHERE d.canonical_symbol = v_symbol AND d.timeframe = v_tf
        AND d.ts_utc IN (SELECT x.ts_utc FROM agg_dirty_buckets x
                         WHERE x.canonical_symbol = v_symbol AND x.timeframe = v_tf
                           AND x.ts_utc < v_cursor
                         ORDER BY x.ts_utc LIMIT v_max)
      RETURNING d.ts_utc AS s, d.derivation_version AS v
    ), spans AS (
      SELECT p.s, agg_bucket_end(v_cal, v_tf, agg_bucket_start(v_cal, v_tf, p.s)) AS e, p.v
      FROM picked p
    ), breaks AS (
      SELECT s, e, v,
             CASE WHEN lag(e) OVER w = s AND lag(v) OVER w IS NOT DISTINCT FROM v
                  THEN 0 ELSE 1 END AS brk
      FROM spans WINDOW w AS (ORDER BY s)
    ), islands AS (
      SELECT s, e, v, sum(brk) OVER (ORDER BY s) AS grp FROM breaks
    )
    SELECT min(s) AS from_ts, max(e) AS to_ts, min(v) AS v, count(*)::integer AS n
    FROM islands GROUP BY grp ORDER BY 1
  LOOP
    SELECT * INTO w FROM agg_write_range(v_symbol, v_tf, v_cal, r.from_ts, r.to_ts, r.v, true);
    buckets := buckets + r.n;
    created := created + w.created;
    changed := changed + w.changed;
    deleted := deleted + w.deleted;
    poor := poor + w.poor;
  END LOOP;
  more := EXISTS (SELECT 1 FROM agg_dirty_buckets x
                  WHERE x.canonical_symbol = v_symbol AND x.timeframe = v_tf AND x.ts_utc < v_cursor);
END $$;

-- Re-aggregate the symbol's dirty buckets behind each task's cursor in
-- ladder order, so a rewritten 5m bar's 15m and 1h buckets are done in the
-- same call. Each task row is locked FOR UPDATE before its sources are
-- read. One row per timeframe that had marks: its counts, and whether
-- marks behind its cursor remain (`more`: call again).
CREATE OR REPLACE FUNCTION agg_process_dirty_rows(symbol text, max_buckets integer DEFAULT 100000)
RETURNS TABLE (timeframe text, buckets integer, bars_created integer, bars_changed integer,
               bars_deleted integer, bars_quality_poor integer, more boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_symbol text := $1;
  v_max integer := coalesce($2, 100000);
  v_cal text;
  v_tf text;
  v_cursor timestamptz;
  r record;
BEGIN
  IF v_max <= 0 THEN
    RAISE EXCEPTION 'max_buckets must be positive, got %', v_max
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM agg_dirty_buckets d WHERE d.canonical_symbol = v_symbol) THEN
    RETURN;
  END IF;
  v_cal := agg_symbol_calendar(v_symbol);
  FOREACH v_tf IN ARRAY agg_ladder() LOOP
    CONTINUE WHEN NOT EXISTS (SELECT 1 FROM agg_dirty_buckets d
                              WHERE d.canonical_symbol = v_symbol AND d.timeframe = v_tf);
    SELECT s.last_agg_bar_ts_utc INTO v_cursor FROM data_agg_state s
    WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_tf FOR UPDATE;
    CONTINUE WHEN v_cursor IS NULL;
    SELECT * INTO r FROM agg_refresh_dirty(v_symbol, v_tf, v_cal, v_cursor, v_max);
    timeframe := v_tf;
    buckets := r.buckets;
    bars_created := r.created;
    bars_changed := r.changed;
    bars_deleted := r.deleted;
    bars_quality_poor := r.poor;
    more := r.more;
    RETURN NEXT;
  END LOOP;
END $$;

-- The SQL face of late data (cron-only deployments call it; the Rust
-- worker calls it first for every symbol it runs): agg_process_dirty_rows
-- as one object, the counts per timeframe that re-aggregated something and
-- whether marks behind a cursor remain ("continue": call again).
CREATE OR REPLACE FUNCTION agg_process_dirty(symbol text, max_buckets integer DEFAULT 100000)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_out jsonb;
BEGIN
  SELECT jsonb_build_object(
           'timeframes', coalesce(jsonb_object_agg(r.timeframe, jsonb_build_object(
               'buckets', r.buckets, 'bars_created', r.bars_created, 'bars_changed', r.bars_changed,
               'bars_deleted', r.bars_deleted, 'bars_quality_poor', r.bars_quality_poor))
             FILTER (WHERE r.buckets > 0), '{}'),
           'continue', coalesce(bool_or(r.more), false))
  INTO v_out
  FROM agg_process_dirty_rows($1, $2) r;
  RETURN v_out;
END $$;

------------------------------------------------------------------------------
-- Rebuild on demand.
------------------------------------------------------------------------------

-- The timeframes built from `timeframe`, itself included, in ladder order
-- (the ladder's edges followed from it).
CREATE OR REPLACE FUNCTION agg_timeframe_and_dependents(timeframe text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  WITH RECURSIVE family (tf) AS (
    SELECT $1
    UNION
    SELECT l.tf FROM family f JOIN unnest(agg_ladder()) AS l (tf) ON agg_source_timeframe(l.tf) = f.tf
    WHERE $1 = ANY (agg_ladder())
  )
  SELECT array_agg(f.tf ORDER BY coalesce(agg_timeframe_rank(f.tf), 0)) FROM family f
$$;

-- Mark every bucket of `timeframe` in [from_ts, to_ts) behind its cursor
-- that has source bars or a live bar, with a derivation_version one above
-- any the symbol's bars of that timeframe and above have had; the marks
-- carry it up the ladder, so agg_process_dirty rewrites every bar there
-- and above. from_ts defaults to the symbol's first 1m bar, to_ts to the
-- cursor. A from_ts before a task's start moves the start (of this
-- timeframe and those built from it) back to it. Refuses, changing
-- nothing: an unknown symbol or timeframe, no task, from_ts >= to_ts, a
-- range without data. Returns what it marked.
CREATE OR REPLACE FUNCTION agg_rebuild(symbol text, timeframe text,
  from_ts timestamptz DEFAULT NULL, to_ts timestamptz DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_symbol text := $1;
  v_tf text := $2;
  v_cal text;
  v_src text;
  v_cursor timestamptz;
  v_start timestamptz;
  v_from timestamptz;
  v_to timestamptz;
  v_version integer;
  v_marked integer;
  v_moved boolean := false;
  v_family text[];
BEGIN
  PERFORM agg_check_timeframe(v_tf);
  SELECT agg_calendar(r.asset_class) INTO v_cal
  FROM core_asset_registry_all r WHERE r.canonical_symbol = v_symbol;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'unknown symbol %: register it first', coalesce(quote_literal(v_symbol), 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT s.last_agg_bar_ts_utc, s.agg_start_utc INTO v_cursor, v_start FROM data_agg_state s
  WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_tf FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no task % %: run barkeep sync first', v_symbol, v_tf
      USING ERRCODE = 'no_data_found';
  END IF;
  v_src := agg_source_timeframe(v_tf);
  v_from := coalesce($3, (SELECT min(b.ts_utc) FROM data_bars b
                          WHERE b.canonical_symbol = v_symbol AND b.timeframe = '1m'));
  v_to := coalesce($4, v_cursor);
  IF v_from IS NULL THEN
    RAISE EXCEPTION 'no 1m bars of % to rebuild from', v_symbol USING ERRCODE = 'no_data_found';
  END IF;
  IF v_to IS NULL THEN
    RAISE EXCEPTION '% % has not been aggregated yet: nothing to rebuild (run the worker)', v_symbol, v_tf
      USING ERRCODE = 'no_data_found';
  END IF;
  IF v_from >= v_to THEN
    RAISE EXCEPTION 'from % must be before to %', v_from, v_to USING ERRCODE = 'invalid_parameter_value';
  END IF;
  v_from := agg_bucket_start(v_cal, v_tf, v_from);
  IF NOT EXISTS (SELECT 1 FROM agg_source_bars(v_symbol, v_src, v_from, v_to))
     AND NOT EXISTS (SELECT 1 FROM derived_data_bars d
                     WHERE d.canonical_symbol = v_symbol AND d.timeframe = v_tf
                       AND d.deleted_at IS NULL AND d.ts_utc >= v_from AND d.ts_utc < v_to) THEN
    RAISE EXCEPTION 'no % % bars and no % bars to build them from between % and %',
      v_symbol, v_tf, v_src, v_from, v_to USING ERRCODE = 'no_data_found';
  END IF;
  v_family := agg_timeframe_and_dependents(v_tf);
  IF v_from < v_start THEN
    PERFORM agg_restart_tasks(v_symbol, v_family, v_from, false);
    v_moved := true;
  END IF;
  SELECT coalesce(max(d.derivation_version), 0) + 1 INTO v_version FROM derived_data_bars d
  WHERE d.canonical_symbol = v_symbol AND d.timeframe = ANY (v_family);
  WITH marked AS (
    INSERT INTO agg_dirty_buckets AS x (canonical_symbol, timeframe, ts_utc, derivation_version)
    SELECT DISTINCT v_symbol, v_tf, agg_bucket_start(v_cal, v_tf, t.ts), v_version
    FROM (SELECT b.ts_utc AS ts FROM agg_source_bars(v_symbol, v_src, v_from, least(v_to, v_cursor)) b
          UNION
          SELECT d.ts_utc FROM derived_data_bars d
          WHERE d.canonical_symbol = v_symbol AND d.timeframe = v_tf AND d.deleted_at IS NULL
            AND d.ts_utc >= v_from AND d.ts_utc < least(v_to, v_cursor)) t
    ON CONFLICT (canonical_symbol, timeframe, ts_utc) DO UPDATE
      SET derivation_version = greatest(x.derivation_version, EXCLUDED.derivation_version)
    RETURNING 1
  )
  SELECT count(*) INTO v_marked FROM marked;
  RETURN jsonb_build_object('symbol', v_symbol, 'timeframe', v_tf, 'from', v_from, 'to', v_to,
    'derivation_version', v_version, 'buckets_marked', v_marked, 'start_moved', v_moved);
END $$;

------------------------------------------------------------------------------
-- Privileges: the trigger runs as its owner; the worker runs the rest.
------------------------------------------------------------------------------
REVOKE EXECUTE ON FUNCTION
  agg_track_1m_changes(),
  agg_mark_dependents(text, text, text, timestamptz[], integer),
  agg_refresh_dirty(text, text, text, timestamptz, integer),
  agg_process_dirty(text, integer),
  agg_process_dirty_rows(text, integer),
  agg_rebuild(text, text, timestamptz, timestamptz)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  agg_process_dirty(text, integer),
  agg_process_dirty_rows(text, integer),
  agg_rebuild(text, text, timestamptz, timestamptz),
  agg_mark_dependents(text, text, text, timestamptz[], integer)
TO barkeep_worker;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    GRANT EXECUTE ON FUNCTION
      agg_process_dirty(text, integer),
      agg_rebuild(text, text, timestamptz, timestamptz)
    TO service_role;
  END IF;
END $$;
