-- requires: 4
-- The live path (docs/DESIGN.md, "The live path"): once a task has caught
-- up, each run finalizes a bucket or two, and a worker doing that one task
-- at a time spends its time in round trips, not work. Here a worker claims
-- every due task that is close to the present in one call (agg_claim_live,
-- sql/functions/40_tasks.sql) and advances a whole group of them in one
-- more, agg_advance_live, built of three set-based pieces per timeframe:
-- the horizons (agg_live_ranges), the writes (agg_live_write) and the
-- finishes (agg_finish_runs). Their bars are the ones any other path
-- writes (the same agg_bucket_bars and agg_write_range as the SQL face).
-- Nothing here catches an error: a failing call rolls back whole and the
-- worker logs it, counts it and runs the group on its fast path.

-- The horizons piece: lock the tasks of `of_timeframe` among the given
-- ones (parallel arrays: symbol, lease token) whose lease is still held,
-- in symbol order, and find each one's range: from its cursor to the
-- start of the bucket its finality horizon (agg_finality_horizon) falls
-- in; cursor_to = cursor_from when no new bucket is final.
CREATE OR REPLACE FUNCTION agg_live_ranges(of_timeframe text, symbols text[], lease_tokens uuid[],
                                           now timestamptz)
RETURNS TABLE (task_symbol text, lease_token uuid, calendar text, horizon timestamptz,
               cursor_from timestamptz, cursor_to timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_tf text := $1;
  v_src text := agg_source_timeframe($1);
  v_now timestamptz := coalesce($4, now());
BEGIN
  RETURN QUERY
  WITH locked AS MATERIALIZED (
    SELECT s.canonical_symbol AS sym, u.tok, s.last_agg_bar_ts_utc AS cur,
           s.aggregation_delay_seconds AS delay
    FROM data_agg_state s
    JOIN unnest($2, $3) AS u (sym, tok) ON s.canonical_symbol = u.sym AND s.lease_token = u.tok
    WHERE s.timeframe = v_tf AND s.status = 'running'
    ORDER BY s.canonical_symbol
    FOR UPDATE OF s
  ), ranged AS MATERIALIZED (
    SELECT l.sym, l.tok, l.cur, c.cal,
           agg_finality_horizon(v_src, v_now, l.delay,
             CASE WHEN v_src = '1m' THEN
               (SELECT b.ts_utc + interval '1 minute' FROM data_bars b
                WHERE b.canonical_symbol = l.sym AND b.timeframe = '1m'
                ORDER BY b.ts_utc DESC LIMIT 1) END,
             CASE WHEN v_src <> '1m' THEN
               (SELECT p.last_agg_bar_ts_utc FROM data_agg_state p
                WHERE p.canonical_symbol = l.sym AND p.timeframe = v_src) END) AS horizon
    FROM locked l
    -- agg_symbol_calendar, joined.
    CROSS JOIN LATERAL (
      SELECT agg_calendar(coalesce(
               (SELECT r.asset_class FROM core_asset_registry_all r WHERE r.canonical_symbol = l.sym),
               'crypto')) AS cal) c
  )
  SELECT r.sym, r.tok, r.cal, r.horizon, r.cur,
         greatest(r.cur, coalesce(agg_bucket_start(r.cal, v_tf, r.horizon), r.cur))
  FROM ranged r ORDER BY r.sym;
END $$;

-- The writes piece: the bars of each range of `of_timeframe` (parallel
-- arrays: symbol, calendar, from, to; empty ranges are skipped) by the one
-- write protocol, and the cursors moved to the range ends
-- (agg_move_cursors). Ranges that hold no live bar yet (the usual case)
-- are written by one INSERT for all of them; a range with live bars (a bar
-- written ahead, a rebuild) goes through agg_write_range, which retires
-- what changed. The caller holds the task rows. One row per range written.
CREATE OR REPLACE FUNCTION agg_live_write(of_timeframe text, derivation_version integer,
                                          symbols text[], calendars text[],
                                          cursors_from timestamptz[], cursors_to timestamptz[])
RETURNS TABLE (task_symbol text, bars_created integer, bars_changed integer, bars_deleted integer,
               bars_quality_poor integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_tf text := $1;
  v_src text := agg_source_timeframe($1);
  v_version integer := coalesce($2, 1);
  v_syms text[];
  v_cals text[];
  v_from timestamptz[];
  v_to timestamptz[];
  v_busy boolean[];
  n_sym text[];
  n_created integer[];
  n_poor integer[];
  b_sym text[];
  b_created integer[];
  b_changed integer[];
  b_deleted integer[];
  b_poor integer[];
BEGIN
  SELECT array_agg(u.sym ORDER BY u.sym), array_agg(u.cal ORDER BY u.sym),
         array_agg(u.cur ORDER BY u.sym), array_agg(u.lim ORDER BY u.sym),
         array_agg(EXISTS (SELECT 1 FROM derived_data_bars d
                           WHERE d.canonical_symbol = u.sym AND d.timeframe = v_tf
                             AND d.deleted_at IS NULL AND d.ts_utc >= u.cur AND d.ts_utc < u.lim)
                   ORDER BY u.sym)
  INTO v_syms, v_cals, v_from, v_to, v_busy
  FROM unnest($3, $4, $5, $6) AS u (sym, cal, cur, lim)
  WHERE u.lim > u.cur;
  IF v_syms IS NULL THEN
    RETURN;
  END IF;
  -- Ranges without live bars: every bar is new, one plain INSERT.
  WITH ins AS (
    INSERT INTO derived_data_bars AS d (canonical_symbol, timeframe, ts_utc, open, high, low,
      close, vol, vwap, trade_count, source_timeframe, source_candles, expected_candles,
      quality_score, is_partial, derivation_version)
    SELECT c.sym, v_tf, nb.bucket, nb.open, nb.high, nb.low, nb.close, nb.vol, nb.vwap,
           nb.trade_count, v_src, nb.source_candles, nb.expected_candles, nb.quality_score,
           false, v_version
    FROM unnest(v_syms, v_cals, v_from, v_to, v_busy) AS c (sym, cal, cur, lim, busy)
    CROSS JOIN LATERAL agg_bucket_bars(c.sym, v_tf, c.cal, c.cur, c.lim) nb
    WHERE NOT c.busy AND nb.quality_score IS NOT NULL
    RETURNING d.canonical_symbol, d.quality_score
  )
  SELECT array_agg(m.sym), array_agg(m.n), array_agg(m.poor)
  INTO n_sym, n_created, n_poor
  FROM (SELECT i.canonical_symbol AS sym, count(*)::integer AS n,
               (count(*) FILTER (WHERE i.quality_score <= 0))::integer AS poor
        FROM ins i GROUP BY 1) m;
  -- Ranges with live bars: the whole protocol, range by range.
  SELECT array_agg(c.sym), array_agg(w.created), array_agg(w.changed), array_agg(w.deleted),
         array_agg(w.poor)
  INTO b_sym, b_created, b_changed, b_deleted, b_poor
  FROM unnest(v_syms, v_cals, v_from, v_to, v_busy) AS c (sym, cal, cur, lim, busy)
  CROSS JOIN LATERAL agg_write_range(c.sym, v_tf, c.cal, c.cur, c.lim, v_version, false) w
  WHERE c.busy;
  PERFORM agg_move_cursors(v_syms, array_fill(v_tf, ARRAY[cardinality(v_syms)]), v_to);
  RETURN QUERY
  SELECT c.sym, coalesce(n.created, b.created, 0), coalesce(b.changed, 0), coalesce(b.deleted, 0),
         coalesce(n.poor, b.poor, 0)
  FROM unnest(v_syms) AS c (sym)
  LEFT JOIN unnest(n_sym, n_created, n_poor) AS n (sym, created, poor) ON n.sym = c.sym
  LEFT JOIN unnest(b_sym, b_created, b_changed, b_deleted, b_poor)
    AS b (sym, created, changed, deleted, poor) ON b.sym = c.sym;
END $$;

-- Advance claimed tasks (parallel arrays of symbol, timeframe and lease
-- token) to their finality horizon and record each run, in the caller's
-- transaction. First each symbol's late data is re-aggregated
-- (agg_process_dirty_rows), symbol by symbol in the order the
-- change-tracking trigger locks cursors, so two callers and a feed cannot
-- deadlock. Then, timeframe by timeframe in ladder order: with
-- take_dependents, the tasks of these symbols that are due or whose source
-- has just passed their next bucket are claimed for `worker`
-- (agg_claim's 'dependents' scope); the ranges are found, the bars written
-- and the runs recorded (agg_finish_runs), with what late data rewrote
-- for a task counted in its run. A task whose lease is no longer held
-- comes back as 'lease_lost' and is left alone. Last, marks a moved cursor
-- left behind are re-aggregated. Late data of a task not advanced here
-- comes back as a row with outcome 'late' (counts only, no run). The
-- worker calls once for its claimed tasks, whose bars then commit at once,
-- and once more with NULL timeframes and tokens for the tasks that made
-- due, so a 15m bar follows the 5m bar that completed it within one more
-- call instead of one more claim round.
DROP FUNCTION IF EXISTS agg_advance_live(text[], text[], uuid[], timestamptz, integer);
DROP FUNCTION IF EXISTS agg_advance_live(text[], text[], uuid[], timestamptz, integer, text, integer);
CREATE OR REPLACE FUNCTION agg_advance_live(symbols text[], timeframes text[], lease_tokens uuid[],
                                            now timestamptz DEFAULT now(),
                                            derivation_version integer DEFAULT 1,
                                            worker text DEFAULT NULL,
                                            lease_seconds integer DEFAULT 60,
                                            take_dependents boolean DEFAULT false)
RETURNS TABLE (task_symbol text, task_timeframe text, outcome text, task_status text,
               cursor_from timestamptz, cursor_to timestamptz, bars_created integer,
               bars_changed integer, bars_deleted integer, bars_quality_poor integer,
               buckets_reaggregated integer, error_text text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz := coalesce($4, now());
  v_version integer := coalesce($5, 1);
  v_take boolean := coalesce($8, false);
  v_syms text[] := coalesce($1, '{}'::text[]);
  v_tfs text[] := coalesce($2, '{}'::text[]);
  v_toks uuid[] := coalesce($3, '{}'::uuid[]);
  v_symbols text[];
  v_symbol text;
  v_tf text;
  -- Late data re-aggregated before the advance, per task.
  l_sym text[] := '{}'::text[];
  l_tf text[] := '{}'::text[];
  l_buckets integer[] := '{}'::integer[];
  l_created integer[] := '{}'::integer[];
  l_changed integer[] := '{}'::integer[];
  l_deleted integer[] := '{}'::integer[];
  l_poor integer[] := '{}'::integer[];
  -- One timeframe's claimed tasks, their ranges and what was written.
  t_sym text[];
  t_tok uuid[];
  r_sym text[];
  r_tok uuid[];
  r_cal text[];
  r_hor timestamptz[];
  r_from timestamptz[];
  r_to timestamptz[];
  w_sym text[];
  w_created integer[];
  w_changed integer[];
  w_deleted integer[];
  w_poor integer[];
  -- Every task answered for.
  a_sym text[] := '{}'::text[];
  a_tf text[] := '{}'::text[];
BEGIN
  IF cardinality(v_syms) <> cardinality(v_tfs) OR cardinality(v_syms) <> cardinality(v_toks) THEN
    RAISE EXCEPTION 'symbols, timeframes and lease_tokens must have the same length'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT coalesce(array_agg(DISTINCT x.sym ORDER BY x.sym), '{}') INTO v_symbols
  FROM unnest(v_syms) AS x (sym);

  -- Late data first, symbol by symbol, as on the fast path.
  FOREACH v_symbol IN ARRAY v_symbols LOOP
    CONTINUE WHEN NOT EXISTS (SELECT 1 FROM agg_dirty_buckets d WHERE d.canonical_symbol = v_symbol);
    SELECT l_sym || array_agg(v_symbol), l_tf || array_agg(d.timeframe),
           l_buckets || array_agg(d.buckets), l_created || array_agg(d.bars_created),
           l_changed || array_agg(d.bars_changed), l_deleted || array_agg(d.bars_deleted),
           l_poor || array_agg(d.bars_quality_poor)
    INTO l_sym, l_tf, l_buckets, l_created, l_changed, l_deleted, l_poor
    FROM agg_process_dirty_rows(v_symbol) d WHERE d.buckets > 0;
  END LOOP;

  FOREACH v_tf IN ARRAY agg_ladder() LOOP
    IF v_take THEN
      SELECT v_syms || coalesce(array_agg(c.canonical_symbol), '{}'),
             v_tfs || coalesce(array_agg(c.timeframe), '{}'),
             v_toks || coalesce(array_agg(c.lease_token), '{}')
      INTO v_syms, v_tfs, v_toks
      FROM agg_claim('dependents', NULL, $6, v_now, cardinality(v_symbols), $7, NULL,
                     v_symbols, v_tf) c;
    END IF;
    SELECT array_agg(u.sym ORDER BY u.sym), array_agg(u.tok ORDER BY u.sym) INTO t_sym, t_tok
    FROM unnest(v_syms, v_tfs, v_toks) AS u (sym, tf, tok)
    WHERE u.tf = v_tf AND u.tok IS NOT NULL;
    CONTINUE WHEN t_sym IS NULL;
    a_sym := a_sym || t_sym;
    a_tf := a_tf || array_fill(v_tf, ARRAY[cardinality(t_sym)]);

    -- Horizons.
    SELECT array_agg(r.task_symbol), array_agg(r.lease_token), array_agg(r.calendar),
           array_agg(r.horizon), array_agg(r.cursor_from), array_agg(r.cursor_to)
    INTO r_sym, r_tok, r_cal, r_hor, r_from, r_to
    FROM agg_live_ranges(v_tf, t_sym, t_tok, v_now) r;
    IF array_position(r_from, NULL) IS NOT NULL THEN
      RAISE EXCEPTION 'the % % task has no cursor yet', r_sym[array_position(r_from, NULL)], v_tf
        USING ERRCODE = 'null_value_not_allowed';
    END IF;

    -- Writes, then finishes with what late data rewrote for the task.
    IF r_sym IS NOT NULL THEN
      SELECT array_agg(w.task_symbol), array_agg(w.bars_created), array_agg(w.bars_changed),
             array_agg(w.bars_deleted), array_agg(w.bars_quality_poor)
      INTO w_sym, w_created, w_changed, w_deleted, w_poor
      FROM agg_live_write(v_tf, v_version, r_sym, r_cal, r_from, r_to) w;
      RETURN QUERY
      WITH r AS (
        SELECT x.sym, x.tok, x.hor, x.cur_from, x.cur_to, x.i,
               coalesce(w.created, 0) AS w_created, coalesce(w.changed, 0) AS w_changed,
               coalesce(w.deleted, 0) AS w_deleted, coalesce(w.poor, 0) AS w_poor,
               coalesce(l.buckets, 0) AS l_buckets, coalesce(l.created, 0) AS l_created,
               coalesce(l.changed, 0) AS l_changed, coalesce(l.deleted, 0) AS l_deleted,
               coalesce(l.poor, 0) AS l_poor
        FROM unnest(r_sym, r_tok, r_hor, r_from, r_to) WITH ORDINALITY
          AS x (sym, tok, hor, cur_from, cur_to, i)
        LEFT JOIN unnest(w_sym, w_created, w_changed, w_deleted, w_poor)
          AS w (sym, created, changed, deleted, poor) ON w.sym = x.sym
        LEFT JOIN unnest(l_sym, l_tf, l_buckets, l_created, l_changed, l_deleted, l_poor)
          AS l (sym, tf, buckets, created, changed, deleted, poor) ON l.sym = x.sym AND l.tf = v_tf
      ), f AS (
        SELECT * FROM agg_finish_runs(
          ARRAY(SELECT r.sym FROM r ORDER BY r.i), array_fill(v_tf, ARRAY[cardinality(r_sym)]),
          ARRAY(SELECT r.tok FROM r ORDER BY r.i), ARRAY(SELECT r.cur_to FROM r ORDER BY r.i),
          ARRAY(SELECT r.cur_from FROM r ORDER BY r.i),
          ARRAY(SELECT r.w_created + r.l_created FROM r ORDER BY r.i),
          ARRAY(SELECT r.w_poor + r.l_poor FROM r ORDER BY r.i),
          v_now, ARRAY(SELECT r.hor FROM r ORDER BY r.i))
      )
      SELECT r.sym, v_tf, 'done', f.task_status, r.cur_from, r.cur_to, r.w_created + r.l_created,
             r.w_changed + r.l_changed, r.w_deleted + r.l_deleted, r.w_poor + r.l_poor,
             r.l_buckets, NULL::text
      FROM r JOIN f ON f.task_symbol = r.sym;
    END IF;

    -- Tasks whose lease was taken over: left alone.
    RETURN QUERY
    SELECT u.sym, v_tf, 'lease_lost', NULL::text, NULL::timestamptz, NULL::timestamptz,
           coalesce(l.created, 0), coalesce(l.changed, 0), coalesce(l.deleted, 0),
           coalesce(l.poor, 0), coalesce(l.buckets, 0), NULL::text
    FROM unnest(t_sym) AS u (sym)
    LEFT JOIN unnest(l_sym, l_tf, l_buckets, l_created, l_changed, l_deleted, l_poor)
      AS l (sym, tf, buckets, created, changed, deleted, poor) ON l.sym = u.sym AND l.tf = v_tf
    WHERE u.sym <> ALL (coalesce(r_sym, '{}'));
  END LOOP;

  -- A bar rewritten above marks the buckets above it, whatever their
  -- cursor (sql/functions/45_late_data.sql); a cursor this call then moved
  -- past such a mark leaves it behind: re-aggregate those now, not at the
  -- symbol's next run.
  FOREACH v_symbol IN ARRAY v_symbols LOOP
    CONTINUE WHEN NOT EXISTS (SELECT 1 FROM agg_dirty_buckets d
                              JOIN data_agg_state s ON s.canonical_symbol = d.canonical_symbol
                                                   AND s.timeframe = d.timeframe
                              WHERE d.canonical_symbol = v_symbol AND d.ts_utc < s.last_agg_bar_ts_utc);
    RETURN QUERY
    SELECT v_symbol, d.timeframe, 'late', NULL::text, NULL::timestamptz, NULL::timestamptz,
           d.bars_created, d.bars_changed, d.bars_deleted, d.bars_quality_poor, d.buckets, NULL::text
    FROM agg_process_dirty_rows(v_symbol) d WHERE d.buckets > 0;
  END LOOP;
  -- Late data of tasks not advanced here (a dependents call takes only
  -- what is due): counted, so nothing rewritten goes unreported.
  RETURN QUERY
  SELECT l.sym, l.tf, 'late', NULL::text, NULL::timestamptz, NULL::timestamptz,
         l.created, l.changed, l.deleted, l.poor, l.buckets, NULL::text
  FROM unnest(l_sym, l_tf, l_buckets, l_created, l_changed, l_deleted, l_poor)
    AS l (sym, tf, buckets, created, changed, deleted, poor)
  WHERE NOT EXISTS (SELECT 1 FROM unnest(a_sym, a_tf) AS a (sym, tf)
                    WHERE a.sym = l.sym AND a.tf = l.tf);
END $$;

REVOKE EXECUTE ON FUNCTION
  agg_live_ranges(text, text[], uuid[], timestamptz),
  agg_live_write(text, integer, text[], text[], timestamptz[], timestamptz[]),
  agg_advance_live(text[], text[], uuid[], timestamptz, integer, text, integer, boolean)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  agg_advance_live(text[], text[], uuid[], timestamptz, integer, text, integer, boolean)
TO barkeep_worker;
