-- Phase 5: per-task start, enable flag and priority; the claim index; the
-- calendar helpers; and the SQL face of the aggregation (bootstrap, catch-up,
-- claim, heartbeat, finish, due tasks, registry sync). docs/DESIGN.md is the
-- contract these functions implement; the Rust engine implements the same.
SET LOCAL client_min_messages = warning;

ALTER TABLE data_agg_state
  ADD COLUMN IF NOT EXISTS agg_start_utc timestamptz NOT NULL DEFAULT '2025-07-01 00:00+00',
  ADD COLUMN IF NOT EXISTS enabled boolean NOT NULL DEFAULT true,
  ADD COLUMN IF NOT EXISTS task_priority integer NOT NULL DEFAULT 100;

-- Serves the claim: due rows are enabled, idle or running, and found by
-- next_run_at; the rest of the claim order is applied to that small set.
CREATE INDEX IF NOT EXISTS idx_agg_state_due_priority
  ON data_agg_state (next_run_at, is_mandatory DESC, task_priority)
  WHERE enabled AND status IN ('idle', 'running');

-- A database adopted from an earlier deployment may hold overloads of these
-- names; exactly one of each must remain.
DO $$
DECLARE f regprocedure;
BEGIN
  FOR f IN
    SELECT p.oid::regprocedure FROM pg_proc p
    WHERE p.pronamespace = current_schema()::regnamespace
      AND p.proname IN ('agg_bootstrap_cursor', 'catchup_aggregation_range', 'agg_finish',
                        'agg_get_due_tasks', 'sync_agg_state_from_registry',
                        'agg_claim_tasks', 'agg_heartbeat')
  LOOP
    EXECUTE format('DROP FUNCTION %s', f);
  END LOOP;
END $$;

------------------------------------------------------------------------------
-- Pure helpers: plain SQL, IMMUTABLE, so the planner inlines them into the
-- set-based catch-up. They read no table, so EXECUTE stays public.
------------------------------------------------------------------------------

-- fx and metals trade on the FX clock; everything else is cut in UTC.
CREATE FUNCTION agg_calendar(asset_class text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN $1 IN ('fx', 'metal') THEN 'fx' ELSE 'utc' END
$$;

-- Claim order of the ladder; NULL for anything that is not a derived timeframe.
CREATE FUNCTION agg_timeframe_rank(timeframe text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE $1 WHEN '5m' THEN 1 WHEN '15m' THEN 2 WHEN '1h' THEN 3
                 WHEN '4h' THEN 4 WHEN '1d' THEN 5 WHEN '1w' THEN 6 END
$$;

-- The default ladder: which timeframe each derived timeframe is built from.
CREATE FUNCTION agg_source_timeframe(timeframe text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE $1 WHEN '5m' THEN '1m' WHEN '15m' THEN '5m' WHEN '1h' THEN '5m'
                 WHEN '4h' THEN '1h' WHEN '1d' THEN '1h' WHEN '1w' THEN '1d' END
$$;

-- Nominal length of a bucket (fx 4h/1d/1w buckets may differ around DST).
CREATE FUNCTION agg_timeframe_interval(timeframe text) RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE $1 WHEN '1m' THEN interval '1 minute' WHEN '5m' THEN interval '5 minutes'
                 WHEN '15m' THEN interval '15 minutes' WHEN '1h' THEN interval '1 hour'
                 WHEN '4h' THEN interval '4 hours' WHEN '1d' THEN interval '1 day'
                 WHEN '1w' THEN interval '7 days' END
$$;

-- The FXT bucket key of an instant: its FX-clock wall time (New York + 7 h,
-- through the IANA zone so DST is followed) floored to 4 h, the day or the
-- ISO week (Monday 00:00 FXT = Sunday 17:00 New York).
CREATE FUNCTION agg_fxt_key(timeframe text, ts timestamptz) RETURNS timestamp
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE $1
    WHEN '4h' THEN date_bin(interval '4 hours',
                            ($2 AT TIME ZONE 'America/New_York') + interval '7 hours',
                            timestamp '2000-01-03 00:00')
    WHEN '1d' THEN date_trunc('day', ($2 AT TIME ZONE 'America/New_York') + interval '7 hours')
    WHEN '1w' THEN date_trunc('week', ($2 AT TIME ZONE 'America/New_York') + interval '7 hours')
  END
$$;

-- The earliest instant whose FXT wall time is at or after the key.
-- PostgreSQL resolves an ambiguous New York time (the repeated hour of the
-- fall-back night) to the later, standard-time instant; the contract wants
-- the earlier one, so step back an hour when that hour shows the same wall time.
CREATE FUNCTION agg_fxt_key_start(fxt_key timestamp) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN (((($1 - interval '7 hours') AT TIME ZONE 'America/New_York') - interval '1 hour')
            AT TIME ZONE 'America/New_York') = $1 - interval '7 hours'
    THEN (($1 - interval '7 hours') AT TIME ZONE 'America/New_York') - interval '1 hour'
    ELSE ($1 - interval '7 hours') AT TIME ZONE 'America/New_York'
  END
$$;

-- Start (label) of the bucket of `timeframe` that contains `ts`.
CREATE FUNCTION agg_bucket_start(calendar text, timeframe text, ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN $1 = 'fx' AND $2 IN ('4h', '1d', '1w') THEN agg_fxt_key_start(agg_fxt_key($2, $3))
    -- 2000-01-03 is a Monday, so 7-day bins start on Mondays 00:00 UTC.
    ELSE date_bin(agg_timeframe_interval($2), $3, timestamptz '2000-01-03 00:00+00')
  END
$$;

-- End (exclusive) of the bucket that starts at `bucket_start`.
CREATE FUNCTION agg_bucket_end(calendar text, timeframe text, bucket_start timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN $1 = 'fx' AND $2 IN ('4h', '1d', '1w')
      THEN agg_fxt_key_start(agg_fxt_key($2, $3) + agg_timeframe_interval($2))
    ELSE $3 + agg_timeframe_interval($2)
  END
$$;

-- The first bucket boundary at or after ts: where a task starting at ts begins.
CREATE FUNCTION agg_first_bucket_at_or_after(calendar text, timeframe text, ts timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN agg_bucket_start($1, $2, $3) < $3
              THEN agg_bucket_end($1, $2, agg_bucket_start($1, $2, $3))
              ELSE agg_bucket_start($1, $2, $3) END
$$;

-- Source bars a full bucket has (the ladder table of docs/DESIGN.md).
CREATE FUNCTION agg_expected_candles(calendar text, timeframe text, bucket_start timestamptz) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE $2
    WHEN '5m' THEN 5
    WHEN '15m' THEN 3
    WHEN '1h' THEN 12
    WHEN '4h' THEN (extract(epoch FROM agg_bucket_end($1, $2, $3) - $3) / 3600)::integer
    WHEN '1d' THEN (extract(epoch FROM agg_bucket_end($1, $2, $3) - $3) / 3600)::integer
    WHEN '1w' THEN CASE WHEN $1 = 'fx' THEN 5 ELSE 7 END
  END
$$;

-- Quality of a bucket from integer counts; NULL means the bucket gets no bar.
CREATE FUNCTION agg_quality(source_candles integer, expected_candles integer) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT (CASE
    WHEN $1 >= $2 THEN 2
    WHEN 5 * $1 >= 4 * $2 THEN 1
    WHEN 5 * $1 >= 3 * $2 THEN 0
    WHEN 20 * $1 >= 11 * $2 THEN -1
  END)::smallint
$$;

-- The calendar of a registered symbol; unregistered symbols use utc.
CREATE FUNCTION agg_symbol_calendar(symbol text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT agg_calendar(coalesce(
    (SELECT asset_class FROM core_asset_registry_all WHERE canonical_symbol = $1), 'crypto'))
$$;

-- Final source bars of a symbol in [from_ts, to_ts): raw 1m bars, or live
-- stored derived bars. One of the two branches is pruned at plan time.
CREATE FUNCTION agg_source_bars(symbol text, source_timeframe text, from_ts timestamptz, to_ts timestamptz)
RETURNS TABLE (ts_utc timestamptz, open double precision, high double precision,
               low double precision, close double precision, vol double precision,
               vwap double precision, trade_count bigint)
LANGUAGE sql STABLE AS $$
  SELECT b.ts_utc, b.open, b.high, b.low, b.close, coalesce(b.vol, 0), b.vwap, b.trade_count
  FROM data_bars b
  WHERE $2 = '1m' AND b.canonical_symbol = $1 AND b.timeframe = '1m'
    AND b.ts_utc >= $3 AND b.ts_utc < $4
  UNION ALL
  SELECT d.ts_utc, d.open, d.high, d.low, d.close, coalesce(d.vol, 0), d.vwap, d.trade_count
  FROM derived_data_bars d
  WHERE $2 <> '1m' AND d.canonical_symbol = $1 AND d.timeframe = $2
    AND d.deleted_at IS NULL AND NOT d.is_partial
    AND d.ts_utc >= $3 AND d.ts_utc < $4
$$;

-- The first final source bar at or after from_ts and before to_ts. A plain
-- min() per table, so each hop of the catch-up's bucket walk is one index probe
-- whatever the statistics say.
CREATE FUNCTION agg_next_source_ts(symbol text, source_timeframe text, from_ts timestamptz, to_ts timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN $2 = '1m'
    THEN (SELECT min(b.ts_utc) FROM data_bars b
          WHERE b.canonical_symbol = $1 AND b.timeframe = '1m' AND b.ts_utc >= $3 AND b.ts_utc < $4)
    ELSE (SELECT min(d.ts_utc) FROM derived_data_bars d
          WHERE d.canonical_symbol = $1 AND d.timeframe = $2 AND d.deleted_at IS NULL
            AND NOT d.is_partial AND d.ts_utc >= $3 AND d.ts_utc < $4)
  END
$$;

-- Raise unless env names a registry flag.
CREATE FUNCTION agg_check_env(env text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF $1 IS NULL OR $1 NOT IN ('prod', 'dev', 'test') THEN
    RAISE EXCEPTION 'unknown env %: expected prod, dev or test', coalesce(quote_literal($1), 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
END $$;

-- Raise unless tf is a derived timeframe of the ladder.
CREATE FUNCTION agg_check_timeframe(timeframe text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF agg_timeframe_rank($1) IS NULL THEN
    RAISE EXCEPTION 'unknown timeframe %: expected one of 5m, 15m, 1h, 4h, 1d, 1w',
      coalesce(quote_literal($1), 'NULL') USING ERRCODE = 'invalid_parameter_value';
  END IF;
END $$;

------------------------------------------------------------------------------
-- The checklist's five functions, the claim and the heartbeat.
------------------------------------------------------------------------------

CREATE FUNCTION agg_bootstrap_cursor(symbol text, timeframe text, now timestamptz DEFAULT now())
RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
  v_start := coalesce(v_start, timestamptz '2025-07-01 00:00+00');
  RETURN agg_first_bucket_at_or_after(v_cal, v_tf, v_start);
END $$;

CREATE FUNCTION catchup_aggregation_range(
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
  v_src_cursor timestamptz;
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

  v_src := agg_source_timeframe(v_tf);
  v_horizon := v_now - make_interval(secs => v_task.aggregation_delay_seconds);
  IF v_src <> '1m' AND NOT v_ignore THEN
    SELECT s.last_agg_bar_ts_utc INTO v_src_cursor FROM data_agg_state s
    WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_src;
    IF v_src_cursor IS NULL THEN
      RETURN jsonb_build_object('success', true, 'reason', 'waiting_for_source',
        'windows_processed', 0, 'cursor_advanced_to', v_cursor,
        'bars_created', 0, 'bars_updated', 0, 'bars_deleted', 0, 'bars_quality_poor', 0,
        'bars_skipped', 0, 'continue', false);
    END IF;
    v_horizon := least(v_horizon, v_src_cursor);
  END IF;
  -- Buckets starting before the horizon's bucket end at or before the horizon.
  v_final_end := agg_bucket_start(v_cal, v_tf, v_horizon);

  -- Find the first max_windows non-empty buckets by hopping from one
  -- bucket to the next source bar: each hop is one index probe, so empty
  -- weekends and gaps cost nothing.
  WITH RECURSIVE walk (n, bucket_end) AS (
    SELECT 1, agg_bucket_end(v_cal, v_tf, agg_bucket_start(v_cal, v_tf, f.ts))
    FROM (SELECT agg_next_source_ts(v_symbol, v_src, v_cursor, v_final_end) AS ts) f
    WHERE f.ts IS NOT NULL
    UNION ALL
    SELECT w.n + 1, agg_bucket_end(v_cal, v_tf, agg_bucket_start(v_cal, v_tf, nx.ts))
    FROM walk w
    CROSS JOIN LATERAL (SELECT agg_next_source_ts(v_symbol, v_src, w.bucket_end, v_final_end) AS ts) nx
    WHERE w.n < v_max AND nx.ts IS NOT NULL
  )
  SELECT count(*), max(w.bucket_end) INTO v_windows, v_scan_end FROM walk w;

  IF v_windows >= v_max THEN
    v_new_cursor := v_scan_end;
    v_continue := true;
  ELSE
    v_new_cursor := greatest(v_cursor, v_final_end);
    v_continue := false;
  END IF;

  IF v_new_cursor > v_cursor THEN
    WITH bucketed AS (
      SELECT agg_bucket_start(v_cal, v_tf, b.ts_utc) AS bucket, b.*
      FROM agg_source_bars(v_symbol, v_src, v_cursor, v_new_cursor) b
    ), bars AS (
      SELECT bucket,
             (array_agg(open ORDER BY ts_utc))[1] AS open,
             max(high) AS high,
             min(low) AS low,
             (array_agg(close ORDER BY ts_utc DESC))[1] AS close,
             sum(vol ORDER BY ts_utc) AS vol,
             sum(vwap * vol ORDER BY ts_utc) FILTER (WHERE vol > 0 AND vwap IS NOT NULL)
               / nullif(sum(vol ORDER BY ts_utc) FILTER (WHERE vol > 0 AND vwap IS NOT NULL), 0) AS vwap,
             sum(trade_count)::bigint AS trade_count,
             count(*)::integer AS source_candles,
             agg_expected_candles(v_cal, v_tf, bucket) AS expected_candles
      FROM bucketed GROUP BY bucket
    ), graded AS (
      SELECT bars.*, agg_quality(source_candles, expected_candles) AS quality_score FROM bars
    ), written AS (
      INSERT INTO derived_data_bars AS d (canonical_symbol, timeframe, ts_utc, open, high, low, close,
        vol, vwap, trade_count, source_timeframe, source_candles, expected_candles, quality_score,
        is_partial, derivation_version)
      SELECT v_symbol, v_tf, g.bucket, g.open, g.high, g.low, g.close, g.vol, g.vwap, g.trade_count,
             v_src, g.source_candles, g.expected_candles, g.quality_score, false, v_version
      FROM graded g WHERE g.quality_score IS NOT NULL
      ON CONFLICT (canonical_symbol, timeframe, ts_utc) WHERE deleted_at IS NULL DO UPDATE SET
        open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
        vol = EXCLUDED.vol, vwap = EXCLUDED.vwap, trade_count = EXCLUDED.trade_count,
        source_timeframe = EXCLUDED.source_timeframe, source_candles = EXCLUDED.source_candles,
        expected_candles = EXCLUDED.expected_candles, quality_score = EXCLUDED.quality_score,
        is_partial = false, derivation_version = EXCLUDED.derivation_version, updated_at = now()
      WHERE (d.open, d.high, d.low, d.close, d.vol, d.vwap, d.trade_count, d.source_timeframe,
             d.source_candles, d.expected_candles, d.quality_score, d.is_partial, d.derivation_version)
        IS DISTINCT FROM
            (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.vol, EXCLUDED.vwap,
             EXCLUDED.trade_count, EXCLUDED.source_timeframe, EXCLUDED.source_candles,
             EXCLUDED.expected_candles, EXCLUDED.quality_score, false, EXCLUDED.derivation_version)
      RETURNING (d.xmax = 0) AS created, d.quality_score
    ), retired AS (
      -- A live bar whose bucket no longer qualifies (or lost every source) goes.
      UPDATE derived_data_bars d SET deleted_at = now(), updated_at = now()
      WHERE d.canonical_symbol = v_symbol AND d.timeframe = v_tf AND d.deleted_at IS NULL
        AND d.ts_utc >= v_cursor AND d.ts_utc < v_new_cursor
        AND NOT EXISTS (SELECT 1 FROM graded g
                        WHERE g.bucket = d.ts_utc AND g.quality_score IS NOT NULL)
      RETURNING 1
    )
    SELECT (SELECT count(*) FILTER (WHERE created) FROM written),
           (SELECT count(*) FILTER (WHERE NOT created) FROM written),
           (SELECT count(*) FROM retired),
           (SELECT count(*) FILTER (WHERE quality_score <= 0) FROM written),
           (SELECT count(*) FROM graded WHERE quality_score IS NULL)
    INTO v_created, v_updated, v_deleted, v_poor, v_skipped;

    UPDATE data_agg_state s SET last_agg_bar_ts_utc = v_new_cursor, updated_at = now()
    WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_tf AND s.last_agg_bar_ts_utc = v_cursor;
  END IF;

  RETURN jsonb_build_object('success', true,
    'reason', CASE WHEN v_continue THEN 'max_windows' ELSE 'caught_up' END,
    'windows_processed', v_windows, 'cursor_advanced_to', v_new_cursor,
    'bars_created', coalesce(v_created, 0), 'bars_updated', coalesce(v_updated, 0),
    'bars_deleted', coalesce(v_deleted, 0), 'bars_quality_poor', coalesce(v_poor, 0),
    'bars_skipped', coalesce(v_skipped, 0), 'continue', v_continue);
END $$;

CREATE FUNCTION agg_get_due_tasks(env text, now timestamptz DEFAULT now(), task_limit integer DEFAULT 100,
                                  stale_seconds integer DEFAULT 600)
RETURNS TABLE (canonical_symbol text, timeframe text, source_timeframe text, status text,
               last_agg_bar_ts_utc timestamptz, next_run_at timestamptz, is_mandatory boolean,
               task_priority integer, last_successful_at_utc timestamptz, lease_expires_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_env text := $1;
  v_now timestamptz := coalesce($2, now());
  v_limit integer := coalesce($3, 100);
  v_stale interval := make_interval(secs => coalesce($4, 600));
BEGIN
  PERFORM agg_check_env(v_env);
  RETURN QUERY
  SELECT s.canonical_symbol, s.timeframe, s.source_timeframe, s.status, s.last_agg_bar_ts_utc,
         s.next_run_at, s.is_mandatory, s.task_priority, s.last_successful_at_utc, s.lease_expires_at
  FROM data_agg_state s
  JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
  WHERE s.enabled
    AND CASE WHEN v_env = 'prod' THEN r.active ELSE r.test_active END
    AND ((s.status = 'idle' AND s.next_run_at <= v_now)
      OR (s.status = 'running' AND (s.lease_expires_at IS NULL OR s.lease_expires_at < v_now
                                    OR s.running_started_at_utc < v_now - v_stale)))
  ORDER BY s.is_mandatory DESC, agg_timeframe_rank(s.timeframe), s.task_priority,
           s.last_successful_at_utc ASC NULLS FIRST, s.canonical_symbol
  LIMIT greatest(v_limit, 0);
END $$;

CREATE FUNCTION agg_claim_tasks(env text, worker text, now timestamptz DEFAULT now(),
                                max_tasks integer DEFAULT 10, lease_seconds integer DEFAULT 60)
RETURNS TABLE (canonical_symbol text, timeframe text, source_timeframe text,
               last_agg_bar_ts_utc timestamptz, aggregation_delay_seconds integer,
               lease_token uuid, recovered boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_env text := $1;
  v_worker text := $2;
  v_now timestamptz := coalesce($3, now());
  v_max integer := coalesce($4, 10);
  v_lease interval := make_interval(secs => coalesce($5, 60));
BEGIN
  PERFORM agg_check_env(v_env);
  IF v_lease <= interval '0' THEN
    RAISE EXCEPTION 'lease_seconds must be positive, got %', $5 USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN QUERY
  WITH picked AS (
    SELECT s.canonical_symbol, s.timeframe, s.status = 'running' AS recovered
    FROM data_agg_state s
    JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
    WHERE s.enabled
      AND CASE WHEN v_env = 'prod' THEN r.active ELSE r.test_active END
      AND ((s.status = 'idle' AND s.next_run_at <= v_now)
        OR (s.status = 'running' AND (s.lease_expires_at IS NULL OR s.lease_expires_at < v_now)))
    ORDER BY s.is_mandatory DESC, agg_timeframe_rank(s.timeframe), s.task_priority,
             s.last_successful_at_utc ASC NULLS FIRST, s.canonical_symbol
    LIMIT greatest(v_max, 0)
    FOR UPDATE OF s SKIP LOCKED
  ), claimed AS (
    UPDATE data_agg_state t SET status = 'running', running_started_at_utc = v_now,
      last_attempted_at_utc = v_now, lease_token = gen_random_uuid(), lease_owner = v_worker,
      lease_expires_at = v_now + v_lease, updated_at = now()
    FROM picked p
    WHERE t.canonical_symbol = p.canonical_symbol AND t.timeframe = p.timeframe
    RETURNING t.canonical_symbol, t.timeframe, t.source_timeframe, t.last_agg_bar_ts_utc,
              t.aggregation_delay_seconds, t.lease_token, p.recovered, t.is_mandatory,
              t.task_priority, t.last_successful_at_utc
  )
  SELECT c.canonical_symbol, c.timeframe, c.source_timeframe, c.last_agg_bar_ts_utc,
         c.aggregation_delay_seconds, c.lease_token, c.recovered
  FROM claimed c
  ORDER BY c.is_mandatory DESC, agg_timeframe_rank(c.timeframe), c.task_priority,
           c.last_successful_at_utc ASC NULLS FIRST, c.canonical_symbol;
END $$;

CREATE FUNCTION agg_heartbeat(symbol text, timeframe text, lease_token uuid,
                              now timestamptz DEFAULT now(), lease_seconds integer DEFAULT 60)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
BEGIN
  UPDATE data_agg_state s
  SET lease_expires_at = coalesce($4, now()) + make_interval(secs => coalesce($5, 60)), updated_at = now()
  WHERE s.canonical_symbol = $1 AND s.timeframe = $2 AND s.status = 'running' AND s.lease_token = $3;
  RETURN FOUND;
END $$;

CREATE FUNCTION agg_finish(symbol text, timeframe text, success boolean, new_cursor timestamptz,
                           stats jsonb DEFAULT '{}', fail_kind text DEFAULT NULL, error text DEFAULT NULL,
                           now timestamptz DEFAULT now(), hard_fail_threshold integer DEFAULT 3)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_symbol text := $1;
  v_tf text := $2;
  v_success boolean := coalesce($3, false);
  v_new_cursor timestamptz := $4;
  v_stats jsonb := coalesce($5, '{}');
  v_kind text := $6;
  v_error text := $7;
  v_now timestamptz := coalesce($8, now());
  v_threshold integer := coalesce($9, 3);
  v_task data_agg_state%ROWTYPE;
  v_cal text;
  v_cursor timestamptz;
  v_next timestamptz;
  v_status text;
  v_streak integer;
  v_log_id bigint;
BEGIN
  PERFORM agg_check_timeframe(v_tf);
  SELECT * INTO v_task FROM data_agg_state s
  WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_tf FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no task % %', v_symbol, v_tf USING ERRCODE = 'no_data_found';
  END IF;
  -- Fencing: a worker whose lease was taken over changes nothing.
  IF v_stats ? 'lease_token'
     AND (v_stats->>'lease_token')::uuid IS DISTINCT FROM v_task.lease_token THEN
    RETURN jsonb_build_object('success', false, 'reason', 'lease_lost');
  END IF;

  IF v_success THEN
    v_cursor := greatest(v_task.last_agg_bar_ts_utc, v_new_cursor);
    v_status := 'idle';
    IF coalesce((v_stats->>'continue')::boolean, false) THEN
      v_next := v_now;
    ELSE
      v_cal := agg_symbol_calendar(v_symbol);
      v_next := agg_bucket_end(v_cal, v_tf, v_cursor)
                + make_interval(secs => v_task.aggregation_delay_seconds);
      IF v_next IS NULL OR v_next <= v_now THEN
        -- The next bucket is already due by the clock: it waits on its source.
        v_next := v_now + make_interval(mins => v_task.run_interval_minutes);
      END IF;
    END IF;
    UPDATE data_agg_state s SET status = v_status, last_agg_bar_ts_utc = v_cursor,
      hard_fail_streak = 0, transient_fail_streak = 0, last_error = NULL,
      last_successful_at_utc = v_now, next_run_at = v_next, total_runs = s.total_runs + 1,
      total_bars_created = s.total_bars_created + coalesce((v_stats->>'bars_created')::bigint, 0),
      total_bars_quality_poor = s.total_bars_quality_poor
                                + coalesce((v_stats->>'bars_quality_poor')::bigint, 0),
      lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_tf;
    -- Tasks built from this one can move as soon as its cursor does.
    IF v_cursor IS DISTINCT FROM v_task.last_agg_bar_ts_utc THEN
      UPDATE data_agg_state s SET next_run_at = v_now, updated_at = now()
      WHERE s.canonical_symbol = v_symbol AND s.source_timeframe = v_tf
        AND s.status = 'idle' AND s.next_run_at > v_now;
    END IF;
  ELSIF v_kind = 'transient' THEN
    v_cursor := v_task.last_agg_bar_ts_utc;
    v_status := 'idle';
    v_streak := v_task.transient_fail_streak;
    v_next := v_now + least(interval '5 seconds' * power(2, least(v_streak, 16)), interval '300 seconds');
    UPDATE data_agg_state s SET status = v_status, transient_fail_streak = s.transient_fail_streak + 1,
      last_error = v_error, next_run_at = v_next, total_runs = s.total_runs + 1,
      lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_tf;
  ELSE
    v_cursor := v_task.last_agg_bar_ts_utc;
    v_streak := v_task.hard_fail_streak;
    v_next := v_now + least(interval '5 seconds' * power(2, least(v_streak, 16)), interval '300 seconds');
    IF v_streak + 1 >= v_threshold THEN
      v_status := CASE WHEN v_task.is_mandatory THEN 'hard_failed' ELSE 'disabled' END;
    ELSE
      v_status := 'idle';
    END IF;
    UPDATE data_agg_state s SET status = v_status, hard_fail_streak = s.hard_fail_streak + 1,
      last_error = v_error, next_run_at = v_next, total_runs = s.total_runs + 1,
      lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_tf;
  END IF;

  INSERT INTO agg_run_log (canonical_symbol, timeframe, worker_id, started_at, finished_at, status,
    cursor_from, cursor_to, bars_created, bars_quality_poor, fail_kind, error)
  VALUES (v_symbol, v_tf, v_task.lease_owner, coalesce(v_task.running_started_at_utc, v_now), v_now,
    CASE WHEN v_success THEN 'success' WHEN v_kind = 'transient' THEN 'transient' ELSE 'failed' END,
    v_task.last_agg_bar_ts_utc, v_cursor,
    CASE WHEN v_success THEN coalesce((v_stats->>'bars_created')::integer, 0) ELSE 0 END,
    CASE WHEN v_success THEN coalesce((v_stats->>'bars_quality_poor')::integer, 0) ELSE 0 END,
    CASE WHEN v_success THEN NULL ELSE coalesce(v_kind, 'hard') END, v_error)
  RETURNING id INTO v_log_id;
  -- Keep the newest 10 000 runs; pruning every 100th insert keeps it cheap.
  IF v_log_id % 100 = 0 THEN
    DELETE FROM agg_run_log WHERE id <= v_log_id - 10000;
  END IF;

  RETURN jsonb_build_object('success', true, 'status', v_status, 'cursor', v_cursor,
    'next_run_at', v_next);
END $$;

CREATE FUNCTION sync_agg_state_from_registry(env text, agg_start timestamptz DEFAULT '2025-07-01 00:00+00')
RETURNS TABLE (success boolean, tasks_created integer, tasks_enabled integer,
               tasks_disabled integer, tasks_total integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_env text := $1;
  v_start timestamptz := coalesce($2, timestamptz '2025-07-01 00:00+00');
  v_created integer;
  v_enabled integer;
  v_disabled integer;
  v_total integer;
BEGIN
  PERFORM agg_check_env(v_env);

  INSERT INTO data_agg_state (canonical_symbol, timeframe, source_timeframe, run_interval_minutes,
    aggregation_delay_seconds, is_mandatory, status, last_agg_bar_ts_utc, next_run_at,
    agg_start_utc, enabled, task_priority)
  SELECT r.canonical_symbol, tf.timeframe, agg_source_timeframe(tf.timeframe), 1, 0, true, 'idle',
         agg_first_bucket_at_or_after(agg_calendar(r.asset_class), tf.timeframe, v_start),
         now(), v_start, true, 100
  FROM core_asset_registry_all r
  CROSS JOIN (VALUES ('5m'), ('15m'), ('1h'), ('4h'), ('1d'), ('1w')) AS tf (timeframe)
  WHERE CASE WHEN v_env = 'prod' THEN r.active ELSE r.test_active END
  ON CONFLICT (canonical_symbol, timeframe) DO NOTHING;
  GET DIAGNOSTICS v_created = ROW_COUNT;

  -- Tasks parked by an earlier sync come back with their asset. A task an
  -- operator disabled (status 'disabled') stays disabled.
  UPDATE data_agg_state s SET enabled = true, updated_at = now()
  FROM core_asset_registry_all r
  WHERE r.canonical_symbol = s.canonical_symbol AND NOT s.enabled AND s.status <> 'disabled'
    AND CASE WHEN v_env = 'prod' THEN r.active ELSE r.test_active END;
  GET DIAGNOSTICS v_enabled = ROW_COUNT;

  UPDATE data_agg_state s SET enabled = false, updated_at = now()
  WHERE s.enabled AND NOT EXISTS (
    SELECT 1 FROM core_asset_registry_all r
    WHERE r.canonical_symbol = s.canonical_symbol
      AND CASE WHEN v_env = 'prod' THEN r.active ELSE r.test_active END);
  GET DIAGNOSTICS v_disabled = ROW_COUNT;

  SELECT count(*) INTO v_total FROM data_agg_state;
  RETURN QUERY SELECT true, v_created, v_enabled, v_disabled, v_total;
END $$;

------------------------------------------------------------------------------
-- Privileges: nobody by default; the worker runs the aggregation, the reader
-- may look at what is due.
------------------------------------------------------------------------------
REVOKE EXECUTE ON FUNCTION
  agg_bootstrap_cursor(text, text, timestamptz),
  catchup_aggregation_range(text, text, timestamptz, integer, timestamptz, integer, boolean),
  agg_get_due_tasks(text, timestamptz, integer, integer),
  agg_claim_tasks(text, text, timestamptz, integer, integer),
  agg_heartbeat(text, text, uuid, timestamptz, integer),
  agg_finish(text, text, boolean, timestamptz, jsonb, text, text, timestamptz, integer),
  sync_agg_state_from_registry(text, timestamptz)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  agg_bootstrap_cursor(text, text, timestamptz),
  catchup_aggregation_range(text, text, timestamptz, integer, timestamptz, integer, boolean),
  agg_get_due_tasks(text, timestamptz, integer, integer),
  agg_claim_tasks(text, text, timestamptz, integer, integer),
  agg_heartbeat(text, text, uuid, timestamptz, integer),
  agg_finish(text, text, boolean, timestamptz, jsonb, text, text, timestamptz, integer),
  sync_agg_state_from_registry(text, timestamptz)
TO barkeep_worker;
GRANT EXECUTE ON FUNCTION agg_get_due_tasks(text, timestamptz, integer, integer) TO barkeep_reader;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    GRANT EXECUTE ON FUNCTION
      agg_bootstrap_cursor(text, text, timestamptz),
      catchup_aggregation_range(text, text, timestamptz, integer, timestamptz, integer, boolean),
      agg_get_due_tasks(text, timestamptz, integer, integer),
      agg_claim_tasks(text, text, timestamptz, integer, integer),
      agg_heartbeat(text, text, uuid, timestamptz, integer),
      agg_finish(text, text, boolean, timestamptz, jsonb, text, text, timestamptz, integer),
      sync_agg_state_from_registry(text, timestamptz)
    TO service_role;
  END IF;
END $$;
