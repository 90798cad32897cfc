-- requires: 2
-- The SQL face of the aggregation: where a task starts and one chunk of its
-- catch-up. docs/DESIGN.md is the contract; src/engine implements the same.

CREATE OR REPLACE FUNCTION agg_bootstrap_cursor(symbol text, timeframe text, now timestamptz DEFAULT now())
RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
-- `now` is part of the checklist's call shape; a task's first bucket does
-- not depend on it.
-- @plpgsql_check_options: extra_warnings = false
#variable_conflict use_column
DECLARE
  v_symbol text := $1;
  v_tf text := $2;
  v_cal text;
  v_start timestamptz;
BEGIN
  PERFORM agg_check_timeframe(v_tf);
  v_cal := agg_symbol_calendar(v_symbol);
  SELECT s.agg_start_utc INTO v_start FROM data_agg_state s
  WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_tf;
  v_start := coalesce(v_start, agg_default_start());
  RETURN agg_first_bucket_at_or_after(v_cal, v_tf, v_start);
END $$;

-- The finality horizon H of a task: a bucket is final when its end <= H
-- (docs/DESIGN.md, "Finality"). The one rule, from what it reads: a task
-- reading 1m bars takes the data's reach (`reach`, the end of the newest
-- 1m bar), capped at now, or now - delay_seconds when the feed is quiet,
-- whichever is later; a higher timeframe follows its source task's cursor
-- (`source_cursor`), capped at now, NULL while the source has none. With
-- ignore_confirmation a higher timeframe uses now - delay instead.
-- agg_horizon, the live path and the Rust engine all call this.
CREATE OR REPLACE FUNCTION agg_finality_horizon(source_timeframe text, now timestamptz,
                                                delay_seconds integer, reach timestamptz,
                                                source_cursor timestamptz,
                                                ignore_confirmation boolean DEFAULT false)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  -- (least and greatest skip NULLs, so a missing reach or cursor is
  -- spelled out.)
  SELECT CASE
    WHEN $1 = '1m' AND $4 IS NULL THEN $2 - make_interval(secs => coalesce($3, 0))
    WHEN $1 = '1m' THEN greatest($2 - make_interval(secs => coalesce($3, 0)), least($2, $4))
    WHEN coalesce($6, false) THEN $2 - make_interval(secs => coalesce($3, 0))
    WHEN $5 IS NULL THEN NULL
    ELSE least($2, $5)
  END
$$;

-- The finality horizon of one stored task (agg_finality_horizon over its
-- delay, its symbol's 1m data and its source task's cursor).
CREATE OR REPLACE FUNCTION agg_horizon(symbol text, timeframe text, now timestamptz DEFAULT now(),
                                       ignore_confirmation boolean DEFAULT false)
RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_symbol text := $1;
  v_tf text := $2;
  v_src text;
  v_delay integer;
  v_reach timestamptz;
  v_src_cursor timestamptz;
BEGIN
  PERFORM agg_check_timeframe(v_tf);
  v_src := agg_source_timeframe(v_tf);
  SELECT s.aggregation_delay_seconds INTO v_delay FROM data_agg_state s
  WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_tf;
  IF v_src = '1m' THEN
    SELECT b.ts_utc + interval '1 minute' INTO v_reach FROM data_bars b
    WHERE b.canonical_symbol = v_symbol AND b.timeframe = '1m'
    ORDER BY b.ts_utc DESC LIMIT 1;
  ELSE
    SELECT s.last_agg_bar_ts_utc INTO v_src_cursor FROM data_agg_state s
    WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_src;
  END IF;
  RETURN agg_finality_horizon(v_src, coalesce($3, now()), v_delay, v_reach, v_src_cursor, $4);
END $$;

-- The bars of every bucket of `timeframe` whose source bars lie in
-- [from_ts, to_ts) (quality_score NULL: too thin, no bar). Plain SQL so the
-- planner inlines it into the statements below.
CREATE OR REPLACE FUNCTION agg_bucket_bars(symbol text, timeframe text, calendar text,
  from_ts timestamptz, to_ts timestamptz)
RETURNS TABLE (bucket timestamptz, open double precision, high double precision,
               low double precision, close double precision, vol double precision,
               vwap double precision, trade_count bigint, source_candles integer,
               expected_candles integer, quality_score smallint)
LANGUAGE sql STABLE AS $$
  SELECT g.*, agg_quality(g.source_candles, g.expected_candles)
  FROM (
    SELECT bucket,
           (array_agg(b.open ORDER BY b.ts_utc))[1],
           max(b.high),
           min(b.low),
           (array_agg(b.close ORDER BY b.ts_utc DESC))[1],
           sum(b.vol ORDER BY b.ts_utc),
           sum(b.vwap * b.vol ORDER BY b.ts_utc) FILTER (WHERE b.vol > 0 AND b.vwap IS NOT NULL)
             / nullif(sum(b.vol ORDER BY b.ts_utc) FILTER (WHERE b.vol > 0 AND b.vwap IS NOT NULL), 0),
           sum(b.trade_count)::bigint,
           count(*)::integer AS source_candles,
           agg_expected_candles($3, $2, bucket) AS expected_candles
    -- OFFSET 0 keeps `bucket` a plain column above, so the planner inlines
    -- agg_expected_candles (which reads it several times) instead of
    -- calling it per bucket.
    FROM (SELECT s.*, agg_bucket_start($3, $2, s.ts_utc) AS bucket
          FROM agg_source_bars($1, agg_source_timeframe($2), $4, $5) s OFFSET 0) b
    GROUP BY bucket
  ) g
$$;

-- The derivation_version of the newest retired version of a bar (NULL:
-- none), which a rebuild keeping versions gives the bar's next version.
CREATE OR REPLACE FUNCTION agg_retired_version(symbol text, timeframe text, bucket timestamptz)
RETURNS integer
LANGUAGE sql STABLE AS $$
  SELECT r.derivation_version FROM derived_data_bars r
  WHERE r.canonical_symbol = $1 AND r.timeframe = $2 AND r.ts_utc = $3 AND r.deleted_at IS NOT NULL
  ORDER BY r.deleted_at DESC LIMIT 1
$$;

-- The one write protocol of derived bars (docs/DESIGN.md "Versions of a
-- bar"), for every bucket in [from_ts, to_ts): a bar that did not exist is
-- inserted; an unchanged bar is not touched; a changed bar's live row is
-- retired (deleted_at = now()) and the new version inserted; a live bar
-- whose bucket no longer qualifies is retired. Buckets whose bar changed or
-- went are marked dirty for the timeframes built from this one, and with
-- `cascade_created` (re-aggregation behind the cursors) new bars too; a
-- catch-up ahead of the cursor need not: its dependents have not read that
-- far. `version` NULL keeps each bar's derivation_version.
CREATE OR REPLACE FUNCTION agg_write_range(symbol text, timeframe text, calendar text,
  from_ts timestamptz, to_ts timestamptz, version integer, cascade_created boolean,
  OUT created integer, OUT changed integer, OUT deleted integer, OUT poor integer,
  OUT skipped integer)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
  v_symbol text := $1;
  v_tf text := $2;
  v_cal text := $3;
  v_from timestamptz := $4;
  v_to timestamptz := $5;
  v_version integer := $6;
  v_cascade_created boolean := $7;
  v_src text := agg_source_timeframe($2);
  v_retired timestamptz[];
  v_touched timestamptz[];
BEGIN
  -- Catch-up ranges ahead of the cursor usually hold no live bar, which one
  -- index probe shows: every bar of the range is then new, and a plain
  -- INSERT does without the speculative insertion of ON CONFLICT (the task
  -- row lock keeps other writers of this task out; a bar that appeared
  -- anyway is a unique violation, not a silent skip).
  IF NOT EXISTS (SELECT 1 FROM derived_data_bars d
                 WHERE d.canonical_symbol = v_symbol AND d.timeframe = v_tf
                   AND d.deleted_at IS NULL AND d.ts_utc >= v_from AND d.ts_utc < v_to) THEN
    WITH nb AS MATERIALIZED (
      SELECT * FROM agg_bucket_bars(v_symbol, v_tf, v_cal, v_from, v_to)
    ), ins AS (
      INSERT INTO derived_data_bars AS d (canonical_symbol, timeframe, ts_utc, open, high, low,
        close, vol, vwap, trade_count, source_timeframe, source_candles, expected_candles,
        quality_score, is_partial, derivation_version)
      SELECT v_symbol, v_tf, nb.bucket, nb.open, nb.high, nb.low, nb.close, nb.vol, nb.vwap,
             nb.trade_count, v_src, nb.source_candles, nb.expected_candles, nb.quality_score,
             false, coalesce(v_version, agg_retired_version(v_symbol, v_tf, nb.bucket), 1)
      FROM nb WHERE nb.quality_score IS NOT NULL
      RETURNING d.ts_utc, d.quality_score
    )
    SELECT count(*), count(*) FILTER (WHERE ins.quality_score <= 0),
           (SELECT count(*) FROM nb WHERE nb.quality_score IS NULL),
           array_agg(ins.ts_utc) FILTER (WHERE v_cascade_created)
    INTO created, poor, skipped, v_touched
    FROM ins;
    changed := 0;
    deleted := 0;
    IF cardinality(v_touched) > 0
       AND to_regprocedure('agg_mark_dependents(text,text,text,timestamptz[],integer)') IS NOT NULL THEN
      PERFORM agg_mark_dependents(v_symbol, v_tf, v_cal, v_touched, v_version);
    END IF;
    RETURN;
  END IF;

  -- Retire live bars that changed or went.
  WITH nb AS MATERIALIZED (
    SELECT * FROM agg_bucket_bars(v_symbol, v_tf, v_cal, v_from, v_to) n
    WHERE n.quality_score IS NOT NULL
  ), gone AS (
    UPDATE derived_data_bars d SET deleted_at = now(), updated_at = now()
    WHERE d.canonical_symbol = v_symbol AND d.timeframe = v_tf AND d.deleted_at IS NULL
      AND d.ts_utc >= v_from AND d.ts_utc < v_to
      AND NOT EXISTS (
        SELECT 1 FROM nb
        WHERE nb.bucket = d.ts_utc
          AND (nb.open, nb.high, nb.low, nb.close, nb.vol, nb.vwap, nb.trade_count, v_src,
               nb.source_candles, nb.expected_candles, nb.quality_score, false,
               coalesce(v_version, d.derivation_version))
              IS NOT DISTINCT FROM
              (d.open, d.high, d.low, d.close, d.vol, d.vwap, d.trade_count, d.source_timeframe,
               d.source_candles, d.expected_candles, d.quality_score, d.is_partial,
               d.derivation_version))
    RETURNING d.ts_utc
  )
  SELECT array_agg(gone.ts_utc) INTO v_retired FROM gone;

  WITH nb AS MATERIALIZED (
    SELECT * FROM agg_bucket_bars(v_symbol, v_tf, v_cal, v_from, v_to)
  ), ins AS (
    INSERT INTO derived_data_bars AS d (canonical_symbol, timeframe, ts_utc, open, high, low, close,
      vol, vwap, trade_count, source_timeframe, source_candles, expected_candles, quality_score,
      is_partial, derivation_version)
    SELECT v_symbol, v_tf, nb.bucket, nb.open, nb.high, nb.low, nb.close, nb.vol, nb.vwap,
           nb.trade_count, v_src, nb.source_candles, nb.expected_candles, nb.quality_score, false,
           coalesce(v_version, agg_retired_version(v_symbol, v_tf, nb.bucket), 1)
    FROM nb WHERE nb.quality_score IS NOT NULL
    ON CONFLICT (canonical_symbol, timeframe, ts_utc) WHERE deleted_at IS NULL DO NOTHING
    RETURNING d.ts_utc, d.quality_score
  )
  SELECT count(*) FILTER (WHERE r.t IS NULL), count(*) FILTER (WHERE r.t IS NOT NULL),
         count(*) FILTER (WHERE ins.quality_score <= 0),
         (SELECT count(*) FROM nb WHERE nb.quality_score IS NULL),
         array_agg(ins.ts_utc) FILTER (WHERE r.t IS NULL AND v_cascade_created)
  INTO created, changed, poor, skipped, v_touched
  FROM ins LEFT JOIN unnest(v_retired) r(t) ON r.t = ins.ts_utc;
  deleted := coalesce(cardinality(v_retired), 0) - changed;
  v_touched := coalesce(v_touched, '{}') || coalesce(v_retired, '{}');

  IF cardinality(v_touched) > 0
     AND to_regprocedure('agg_mark_dependents(text,text,text,timestamptz[],integer)') IS NOT NULL THEN
    PERFORM agg_mark_dependents(v_symbol, v_tf, v_cal, v_touched, v_version);
  END IF;
END $$;

CREATE OR REPLACE FUNCTION catchup_aggregation_range(
  symbol text, timeframe text, start_cursor timestamptz, max_windows integer DEFAULT 500,
  now timestamptz DEFAULT now(), derivation_version integer DEFAULT 1,
  ignore_confirmation boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_symbol text := $1;
  v_tf text := $2;
  v_cursor timestamptz := $3;
  v_max integer := $4;
  v_now timestamptz := $5;
  v_version integer := coalesce($6, 1);
  v_ignore boolean := coalesce($7, false);
  v_cal text;
  v_src text;
  v_task data_agg_state%ROWTYPE;
  v_horizon timestamptz;
  v_final_end timestamptz;
  v_windows integer;
  v_scan_end timestamptz;
  v_new_cursor timestamptz;
  v_continue boolean;
  v_created integer;
  v_updated integer;
  v_deleted integer;
  v_poor integer;
  v_skipped integer;
  v_dirty integer := 0;
  v_d_created integer := 0;
  v_d_changed integer := 0;
  v_d_deleted integer := 0;
  v_d_poor integer := 0;
BEGIN
  PERFORM agg_check_timeframe(v_tf);
  IF v_cursor IS NULL THEN
    RAISE EXCEPTION 'start_cursor is NULL for % %: bootstrap the task first (agg_bootstrap_cursor)',
      v_symbol, v_tf USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF v_max IS NULL OR v_max <= 0 THEN
    RAISE EXCEPTION 'max_windows must be positive, got %', coalesce(v_max::text, 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF v_now IS NULL THEN
    RAISE EXCEPTION 'now must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  SELECT agg_calendar(r.asset_class) INTO v_cal
  FROM core_asset_registry_all r WHERE r.canonical_symbol = v_symbol;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'unknown symbol %: register it first', coalesce(quote_literal(v_symbol), 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF agg_bucket_start(v_cal, v_tf, v_cursor) <> v_cursor THEN
    RAISE EXCEPTION 'start_cursor % is not a % bucket start on the % calendar (the bucket starts at %)',
      v_cursor, v_tf, v_cal, agg_bucket_start(v_cal, v_tf, v_cursor)
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- The row lock serialises catch-ups of one task; the compare-and-set below
  -- makes a stale caller a no-op.
  SELECT * INTO v_task FROM data_agg_state s
  WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_tf FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no task % %: run sync_agg_state_from_registry first', v_symbol, v_tf
      USING ERRCODE = 'no_data_found';
  END IF;
  IF v_task.last_agg_bar_ts_utc IS DISTINCT FROM v_cursor THEN
    RETURN jsonb_build_object('success', false, 'reason', 'cursor_moved',
      'windows_processed', 0, 'cursor_advanced_to', v_task.last_agg_bar_ts_utc,
      'bars_created', 0, 'bars_updated', 0, 'bars_deleted', 0, 'bars_quality_poor', 0,
      'bars_skipped', 0, 'continue', false);
  END IF;

  -- Late and corrected data behind the cursor first (sql/functions/45_late_data.sql).
  IF to_regprocedure('agg_refresh_dirty(text,text,text,timestamptz,integer)') IS NOT NULL THEN
    SELECT r.buckets, r.created, r.changed, r.deleted, r.poor
    INTO v_dirty, v_d_created, v_d_changed, v_d_deleted, v_d_poor
    FROM agg_refresh_dirty(v_symbol, v_tf, v_cal, v_cursor, 100000) r;
  END IF;

  v_src := agg_source_timeframe(v_tf);
  v_horizon := agg_horizon(v_symbol, v_tf, v_now, v_ignore);
  IF v_horizon IS NULL THEN
    RETURN jsonb_build_object('success', true, 'reason', 'waiting_for_source',
      'windows_processed', 0, 'cursor_advanced_to', v_cursor,
      'bars_created', v_d_created, 'bars_updated', v_d_changed, 'bars_deleted', v_d_deleted,
      'bars_quality_poor', v_d_poor, 'bars_skipped', 0, 'dirty_buckets', v_dirty,
      'continue', false);
  END IF;
  -- Buckets starting before the horizon's bucket end at or before the horizon.
  v_final_end := agg_bucket_start(v_cal, v_tf, v_horizon);

  -- The first max_windows non-empty buckets, in one pass over the source
  -- rows in index order: a row opens a bucket when its bucket differs from
  -- the previous row's. The window function streams and the LIMIT stops the
  -- scan after the last bucket wanted, so a long backlog costs only the rows
  -- of this call's buckets, and empty weekends and gaps cost nothing.
  IF v_src = '1m' THEN
    SELECT count(*), max(agg_bucket_end(v_cal, v_tf, o.bucket)) INTO v_windows, v_scan_end
    FROM (SELECT t.bucket FROM (
            SELECT s.bucket, lag(s.bucket) OVER (ORDER BY s.ts_utc) AS prev
            FROM (SELECT b.ts_utc, agg_bucket_start(v_cal, v_tf, b.ts_utc) AS bucket
                  FROM data_bars b
                  WHERE b.canonical_symbol = v_symbol AND b.timeframe = '1m'
                    AND b.ts_utc >= v_cursor AND b.ts_utc < v_final_end
                  ORDER BY b.ts_utc) s) t
          WHERE t.prev IS DISTINCT FROM t.bucket LIMIT v_max) o;
  ELSE
    SELECT count(*), max(agg_bucket_end(v_cal, v_tf, o.bucket)) INTO v_windows, v_scan_end
    FROM (SELECT t.bucket FROM (
            SELECT s.bucket, lag(s.bucket) OVER (ORDER BY s.ts_utc) AS prev
            FROM (SELECT d.ts_utc, agg_bucket_start(v_cal, v_tf, d.ts_utc) AS bucket
                  FROM derived_data_bars d
                  WHERE d.canonical_symbol = v_symbol AND d.timeframe = v_src
                    AND d.deleted_at IS NULL AND NOT d.is_partial
                    AND d.ts_utc >= v_cursor AND d.ts_utc < v_final_end
                  ORDER BY d.ts_utc) s) t
          WHERE t.prev IS DISTINCT FROM t.bucket LIMIT v_max) o;
  END IF;

  IF v_windows >= v_max THEN
    v_new_cursor := v_scan_end;
    v_continue := true;
  ELSE
    v_new_cursor := greatest(v_cursor, v_final_end);
    v_continue := false;
  END IF;

  IF v_new_cursor > v_cursor THEN
    SELECT w.created, w.changed, w.deleted, w.poor, w.skipped
    INTO v_created, v_updated, v_deleted, v_poor, v_skipped
    FROM agg_write_range(v_symbol, v_tf, v_cal, v_cursor, v_new_cursor, v_version, false) w;

    PERFORM agg_move_cursors(ARRAY[v_symbol], ARRAY[v_tf], ARRAY[v_new_cursor], ARRAY[v_cursor]);
  END IF;

  RETURN jsonb_build_object('success', true,
    'reason', CASE WHEN v_continue THEN 'max_windows' ELSE 'caught_up' END,
    'windows_processed', v_windows, 'cursor_advanced_to', v_new_cursor,
    'bars_created', coalesce(v_created, 0) + v_d_created,
    'bars_updated', coalesce(v_updated, 0) + v_d_changed,
    'bars_deleted', coalesce(v_deleted, 0) + v_d_deleted,
    'bars_quality_poor', coalesce(v_poor, 0) + v_d_poor,
    'bars_skipped', coalesce(v_skipped, 0), 'dirty_buckets', v_dirty, 'continue', v_continue);
END $$;

-- Privileges: nobody by default; the worker runs these.
REVOKE EXECUTE ON FUNCTION
  agg_write_range(text, text, text, timestamptz, timestamptz, integer, boolean),
  agg_horizon(text, text, timestamptz, boolean),
  agg_bootstrap_cursor(text, text, timestamptz),
  catchup_aggregation_range(text, text, timestamptz, integer, timestamptz, integer, boolean)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  agg_horizon(text, text, timestamptz, boolean),
  agg_bootstrap_cursor(text, text, timestamptz),
  catchup_aggregation_range(text, text, timestamptz, integer, timestamptz, integer, boolean)
TO barkeep_worker;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    GRANT EXECUTE ON FUNCTION
      agg_horizon(text, text, timestamptz, boolean),
      agg_bootstrap_cursor(text, text, timestamptz),
      catchup_aggregation_range(text, text, timestamptz, integer, timestamptz, integer, boolean)
    TO service_role;
  END IF;
END $$;
