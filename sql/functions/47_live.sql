-- requires: 4
-- The live path (docs/DESIGN.md, "The live path"): once a task has caught
-- up, each run finalizes a bucket or two, and a worker doing that one task
-- at a time spends its time in round trips, not work. Here a worker claims
-- every due task that is close to the present in one call and advances a
-- whole group of them in one more, with the same functions as the SQL face
-- (agg_process_dirty, agg_horizon, agg_write_range, agg_finish), so the
-- bars are the ones any other path writes.

-- Claim up to max_tasks idle, due tasks whose cursor is at most
-- max_buckets_behind nominal buckets behind `now` (tasks taken over from a
-- dead worker, and tasks further behind, go through agg_claim_tasks).
CREATE OR REPLACE FUNCTION agg_claim_live(env text, worker text, now timestamptz DEFAULT now(),
                                          max_tasks integer DEFAULT 1000,
                                          lease_seconds integer DEFAULT 60,
                                          max_buckets_behind integer DEFAULT 12)
RETURNS TABLE (canonical_symbol text, timeframe text, source_timeframe text,
               last_agg_bar_ts_utc timestamptz, aggregation_delay_seconds integer,
               lease_token uuid)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_env text := $1;
  v_worker text := $2;
  v_now timestamptz := coalesce($3, now());
  v_max integer := coalesce($4, 1000);
  v_lease interval := make_interval(secs => coalesce($5, 60));
  v_behind integer := coalesce($6, 12);
BEGIN
  PERFORM agg_check_env(v_env);
  IF v_lease <= interval '0' THEN
    RAISE EXCEPTION 'lease_seconds must be positive, got %', $5 USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN QUERY
  WITH picked AS (
    SELECT s.canonical_symbol, s.timeframe
    FROM data_agg_state s
    JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
    WHERE s.enabled AND s.status = 'idle' AND s.next_run_at <= v_now
      AND CASE WHEN v_env = 'prod' THEN r.active ELSE r.test_active END
      AND s.last_agg_bar_ts_utc >= v_now - agg_timeframe_interval(s.timeframe) * v_behind
    ORDER BY s.is_mandatory DESC, agg_timeframe_rank(s.timeframe), s.task_priority,
             s.last_successful_at_utc ASC NULLS FIRST, s.canonical_symbol
    LIMIT greatest(v_max, 0)
    FOR UPDATE OF s SKIP LOCKED
  )
  UPDATE data_agg_state t SET status = 'running', running_started_at_utc = v_now,
    last_attempted_at_utc = v_now, lease_token = gen_random_uuid(), lease_owner = v_worker,
    lease_expires_at = v_now + v_lease, updated_at = now()
  FROM picked p
  WHERE t.canonical_symbol = p.canonical_symbol AND t.timeframe = p.timeframe
  RETURNING t.canonical_symbol, t.timeframe, t.source_timeframe, t.last_agg_bar_ts_utc,
            t.aggregation_delay_seconds, t.lease_token;
END $$;

-- Advance claimed tasks (parallel arrays of symbol, timeframe and lease
-- token) to their finality horizon and record each run with agg_finish, in
-- the caller's transaction. Tasks are taken symbol by symbol in ladder
-- order, the order in which the change-tracking trigger locks cursors, so
-- two callers and a feed cannot deadlock; a symbol's late data is
-- re-aggregated first, as on the fast path; what it rewrote for a task
-- not advanced here comes back as a row with outcome 'late' (counts only,
-- no task run). With take_dependents, a task
-- of one of these symbols that was not claimed but is due (a source task
-- advanced by this or an earlier call made it so: agg_finish wakes it) and
-- is as close to the present as a live claim requires is claimed here for
-- `worker` and advanced too, unless another session holds it. The worker
-- calls once for its claimed tasks, whose bars then commit at once, and
-- once more with NULL timeframes and tokens for the tasks that made due,
-- so a 15m bar follows the 5m bar that completed it within one more call
-- instead of one more claim round. A task whose lease is no longer held is left
-- alone ('lease_lost'); a task that fails is recorded as failed (transient
-- or hard by SQLSTATE) and the others go on.
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
  t record;
  w record;
  v_symbol text;
  v_cal text;
  v_late jsonb := '{}';
  v_tl jsonb;
  v_from timestamptz;
  v_horizon timestamptz;
  v_limit timestamptz;
  v_fin jsonb;
  v_state text;
  v_kind text;
  v_tok uuid;
  v_worker text := $6;
  v_lease interval := make_interval(secs => coalesce($7, 60));
  v_take boolean := coalesce($8, false);
  v_lates jsonb := '{}';
  v_done jsonb := '{}';
  v_counted jsonb := '{}';
  v_syms text[] := $1;
  v_tfs text[] := $2;
  v_toks uuid[] := $3;
  v_tf text;
  v_src text;
  a_sym text[];
  a_tok uuid[];
  a_from timestamptz[];
  a_to timestamptz[];
  a_hor timestamptz[];
  a_created integer[];
  a_poor integer[];
BEGIN
  IF cardinality($1) IS DISTINCT FROM cardinality($2)
     OR cardinality($1) IS DISTINCT FROM cardinality($3) THEN
    RAISE EXCEPTION 'symbols, timeframes and lease_tokens must have the same length'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- Late data first, symbol by symbol, as on the fast path.
  FOR v_symbol IN
    SELECT DISTINCT x.sym FROM unnest($1) AS x (sym)
    WHERE EXISTS (SELECT 1 FROM agg_dirty_buckets d WHERE d.canonical_symbol = x.sym)
    ORDER BY 1
  LOOP
    BEGIN
      v_lates := v_lates || jsonb_build_object(v_symbol,
        coalesce(agg_process_dirty(v_symbol) -> 'timeframes', '{}'));
    EXCEPTION WHEN OTHERS THEN
      -- As on the fast path: the tasks still advance; the marks stay.
      RAISE WARNING 're-aggregating late % data: %', v_symbol, SQLERRM;
    END;
  END LOOP;
  v_symbol := NULL;
  -- The claimed tasks, one set-based write per timeframe in ladder order:
  -- rows locked in symbol order, horizons as agg_horizon finds them, and
  -- the bars of every task whose range holds no live bar yet (the usual
  -- case) inserted in one statement; cursors move, and the runs are
  -- recorded in one more (agg_finish_runs). The loop below then only
  -- returns their rows; a task with live bars in its range, or every task
  -- when this fails, takes the loop's one-task-at-a-time way.
  --
  -- With take_dependents, each timeframe's tasks of these symbols that are
  -- idle, close to the present and have a bucket to finalize (their
  -- source, advanced just before in this call, has passed it) are claimed
  -- first, set-based, and written the same way: a wave of 15m, 1h, 4h and
  -- 1d tasks after an hour's 5m bars costs one statement per timeframe.
  BEGIN
    FOREACH v_tf IN ARRAY ARRAY['5m', '15m', '1h', '4h', '1d', '1w'] LOOP
      v_src := agg_source_timeframe(v_tf);
      IF v_take AND v_src <> '1m' THEN
        WITH cand AS (
          SELECT s.canonical_symbol AS sym
          FROM data_agg_state s
          JOIN data_agg_state p ON p.canonical_symbol = s.canonical_symbol AND p.timeframe = v_src
          LEFT JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
          WHERE s.canonical_symbol = ANY ($1) AND s.timeframe = v_tf AND s.enabled
            AND s.status = 'idle' AND s.transient_fail_streak = 0 AND s.hard_fail_streak = 0
            AND s.last_agg_bar_ts_utc >= v_now - agg_timeframe_interval(v_tf) * 12
            AND agg_bucket_start(agg_calendar(coalesce(r.asset_class, 'crypto')), v_tf,
                                 least(v_now, p.last_agg_bar_ts_utc)) > s.last_agg_bar_ts_utc
          ORDER BY s.canonical_symbol
          FOR UPDATE OF s SKIP LOCKED
        ), got AS (
          UPDATE data_agg_state x SET status = 'running', running_started_at_utc = v_now,
            last_attempted_at_utc = v_now, lease_token = gen_random_uuid(), lease_owner = v_worker,
            lease_expires_at = v_now + v_lease, updated_at = now()
          FROM cand c WHERE x.canonical_symbol = c.sym AND x.timeframe = v_tf
          RETURNING x.canonical_symbol AS sym, x.lease_token AS tok
        )
        SELECT v_syms || coalesce(array_agg(g.sym), '{}'),
               v_tfs || coalesce(array_agg(v_tf), '{}'),
               v_toks || coalesce(array_agg(g.tok), '{}')
        INTO v_syms, v_tfs, v_toks
        FROM got g;
      END IF;
      WITH locked AS MATERIALIZED (
        SELECT s.canonical_symbol AS sym, u.tok, s.last_agg_bar_ts_utc AS cur,
               s.aggregation_delay_seconds AS delay
        FROM data_agg_state s
        JOIN unnest(v_syms, v_tfs, v_toks) AS u (sym, tf, tok)
          ON s.canonical_symbol = u.sym AND s.timeframe = u.tf AND s.lease_token = u.tok
        WHERE u.tf = v_tf AND s.status = 'running' AND s.last_agg_bar_ts_utc IS NOT NULL
        ORDER BY s.canonical_symbol
        FOR UPDATE OF s
      ), ranged AS MATERIALIZED (
        SELECT l.sym, l.tok, l.cur, c.cal, h.horizon, agg_bucket_start(c.cal, v_tf, h.horizon) AS lim
        FROM locked l
        -- agg_symbol_calendar, joined.
        CROSS JOIN LATERAL (
          SELECT agg_calendar(coalesce(
                   (SELECT r.asset_class FROM core_asset_registry_all r WHERE r.canonical_symbol = l.sym),
                   'crypto')) AS cal) c
        CROSS JOIN LATERAL (
          SELECT CASE WHEN v_src = '1m' THEN
                   greatest(v_now - make_interval(secs => coalesce(l.delay, 0)),
                            least(v_now, coalesce(
                              (SELECT b.ts_utc + interval '1 minute' FROM data_bars b
                               WHERE b.canonical_symbol = l.sym AND b.timeframe = '1m'
                               ORDER BY b.ts_utc DESC LIMIT 1),
                              v_now - make_interval(secs => coalesce(l.delay, 0)))))
                 -- NULL while the source has no cursor, as agg_horizon.
                 ELSE (SELECT least(v_now, p.last_agg_bar_ts_utc) FROM data_agg_state p
                       WHERE p.canonical_symbol = l.sym AND p.timeframe = v_src
                         AND p.last_agg_bar_ts_utc IS NOT NULL)
                 END AS horizon) h
      ), clear AS MATERIALIZED (
        SELECT r.* FROM ranged r
        WHERE r.lim > r.cur
          AND NOT EXISTS (SELECT 1 FROM derived_data_bars d
                          WHERE d.canonical_symbol = r.sym AND d.timeframe = v_tf
                            AND d.deleted_at IS NULL AND d.ts_utc >= r.cur AND d.ts_utc < r.lim)
      ), ins AS (
        INSERT INTO derived_data_bars AS d (canonical_symbol, timeframe, ts_utc, open, high, low,
          close, vol, vwap, trade_count, source_timeframe, source_candles, expected_candles,
          quality_score, is_partial, derivation_version)
        SELECT c.sym, v_tf, nb.bucket, nb.open, nb.high, nb.low, nb.close, nb.vol, nb.vwap,
               nb.trade_count, v_src, nb.source_candles, nb.expected_candles, nb.quality_score,
               false, v_version
        FROM clear c
        CROSS JOIN LATERAL agg_bucket_bars(c.sym, v_tf, c.cal, c.cur, c.lim) nb
        WHERE nb.quality_score IS NOT NULL
        RETURNING d.canonical_symbol, d.quality_score
      ), moved AS (
        UPDATE data_agg_state s SET last_agg_bar_ts_utc = c.lim, updated_at = now()
        FROM clear c WHERE s.canonical_symbol = c.sym AND s.timeframe = v_tf
        RETURNING s.canonical_symbol
      ), made AS (
        SELECT i.canonical_symbol AS sym, count(*)::integer AS n,
               (count(*) FILTER (WHERE i.quality_score <= 0))::integer AS poor
        FROM ins i GROUP BY 1
      ), res AS (
        SELECT c.sym, c.tok, c.cur AS cur_from, c.lim AS cur_to, c.horizon,
               coalesce(m.n, 0) AS created, coalesce(m.poor, 0) AS poor
        FROM clear c LEFT JOIN made m ON m.sym = c.sym
        UNION ALL
        SELECT r.sym, r.tok, r.cur, r.cur, r.horizon, 0, 0
        FROM ranged r WHERE r.lim IS NULL OR r.lim <= r.cur
      )
      SELECT array_agg(r.sym ORDER BY r.sym), array_agg(r.tok ORDER BY r.sym),
             array_agg(r.cur_from ORDER BY r.sym), array_agg(r.cur_to ORDER BY r.sym),
             array_agg(r.horizon ORDER BY r.sym),
             array_agg(r.created ORDER BY r.sym), array_agg(r.poor ORDER BY r.sym)
      INTO a_sym, a_tok, a_from, a_to, a_hor, a_created, a_poor
      FROM res r;
      -- Recorded at once, set-based (agg_finish_runs), with what late data
      -- rewrote for them counted as agg_finish would count it, and the
      -- horizons found above (the next run would see the same).
      IF a_sym IS NOT NULL THEN
        SELECT v_done || coalesce(jsonb_object_agg(f.task_symbol || ' ' || v_tf, jsonb_build_object(
                 'from', u.cur_from, 'to', u.cur_to, 'created', u.created, 'poor', u.poor,
                 'status', f.task_status)), '{}')
        INTO v_done
        FROM agg_finish_runs(
               a_sym, array_fill(v_tf, ARRAY[cardinality(a_sym)]), a_tok, a_to, a_from,
               ARRAY(SELECT x.created + coalesce((v_lates -> x.sym -> v_tf ->> 'bars_created')::integer, 0)
                     FROM unnest(a_sym, a_created) WITH ORDINALITY AS x (sym, created, i) ORDER BY x.i),
               ARRAY(SELECT x.poor + coalesce((v_lates -> x.sym -> v_tf ->> 'bars_quality_poor')::integer, 0)
                     FROM unnest(a_sym, a_poor) WITH ORDINALITY AS x (sym, poor, i) ORDER BY x.i),
               v_now, a_hor) f
        JOIN unnest(a_sym, a_from, a_to, a_created, a_poor) AS u (sym, cur_from, cur_to, created, poor)
          ON u.sym = f.task_symbol;
      END IF;
    END LOOP;
  EXCEPTION WHEN OTHERS THEN
    -- Undone with the claims made above: one task at a time instead.
    v_done := '{}';
    v_syms := $1;
    v_tfs := $2;
    v_toks := $3;
  END;
  FOR t IN
    SELECT s.sym, l.tf, u.tok
    FROM (SELECT DISTINCT x.sym FROM unnest($1) AS x (sym)) s
    CROSS JOIN unnest(ARRAY['5m', '15m', '1h', '4h', '1d', '1w']) WITH ORDINALITY AS l (tf, rank)
    LEFT JOIN unnest(v_syms, v_tfs, v_toks) AS u (sym, tf, tok) ON u.sym = s.sym AND u.tf = l.tf
    ORDER BY s.sym, l.rank
  LOOP
    IF t.sym IS DISTINCT FROM v_symbol THEN
      v_symbol := t.sym;
      v_cal := NULL;
      v_late := coalesce(v_lates -> t.sym, '{}');
    END IF;
    v_tok := t.tok;
    IF v_tok IS NULL THEN
      -- Not claimed: with take_dependents, claim it here if it is due.
      CONTINUE WHEN NOT v_take;
      PERFORM 1 FROM data_agg_state x
      WHERE x.canonical_symbol = t.sym AND x.timeframe = t.tf AND x.enabled AND x.status = 'idle'
        AND x.next_run_at <= v_now
        AND x.last_agg_bar_ts_utc >= v_now - agg_timeframe_interval(x.timeframe) * 12
        AND x.transient_fail_streak = 0 AND x.hard_fail_streak = 0
      FOR UPDATE SKIP LOCKED;
      CONTINUE WHEN NOT FOUND;
      UPDATE data_agg_state x SET status = 'running', running_started_at_utc = v_now,
        last_attempted_at_utc = v_now, lease_token = gen_random_uuid(), lease_owner = v_worker,
        lease_expires_at = v_now + v_lease, updated_at = now()
      WHERE x.canonical_symbol = t.sym AND x.timeframe = t.tf
      RETURNING x.lease_token INTO v_tok;
    END IF;
    task_symbol := t.sym;
    task_timeframe := t.tf;
    v_counted := v_counted || jsonb_build_object(t.sym || ' ' || t.tf, true);
    bars_created := 0; bars_changed := 0; bars_deleted := 0; bars_quality_poor := 0;
    buckets_reaggregated := 0; error_text := NULL;
    v_tl := v_late -> t.tf;
    IF v_tl IS NOT NULL THEN
      buckets_reaggregated := (v_tl ->> 'buckets')::integer;
      bars_created := (v_tl ->> 'bars_created')::integer;
      bars_changed := (v_tl ->> 'bars_changed')::integer;
      bars_deleted := (v_tl ->> 'bars_deleted')::integer;
      bars_quality_poor := (v_tl ->> 'bars_quality_poor')::integer;
    END IF;
    v_tl := v_done -> (t.sym || ' ' || t.tf);
    IF v_tl IS NOT NULL THEN
      -- Written and recorded above.
      outcome := 'done';
      task_status := v_tl ->> 'status';
      cursor_from := (v_tl ->> 'from')::timestamptz;
      cursor_to := (v_tl ->> 'to')::timestamptz;
      bars_created := bars_created + (v_tl ->> 'created')::integer;
      bars_quality_poor := bars_quality_poor + (v_tl ->> 'poor')::integer;
      RETURN NEXT;
      CONTINUE;
    END IF;
    BEGIN
      SELECT s.last_agg_bar_ts_utc INTO v_from FROM data_agg_state s
      WHERE s.canonical_symbol = t.sym AND s.timeframe = t.tf AND s.lease_token = v_tok
        AND s.status = 'running'
      FOR UPDATE;
      IF NOT FOUND THEN
        outcome := 'lease_lost'; task_status := NULL; cursor_from := NULL; cursor_to := NULL;
        RETURN NEXT;
        CONTINUE;
      END IF;
      IF v_from IS NULL THEN
        RAISE EXCEPTION 'the % % task has no cursor yet', t.sym, t.tf
          USING ERRCODE = 'null_value_not_allowed';
      END IF;
      cursor_from := v_from;
      cursor_to := v_from;
      v_horizon := agg_horizon(t.sym, t.tf, v_now);
      IF v_horizon IS NOT NULL THEN
        v_cal := coalesce(v_cal, agg_symbol_calendar(t.sym));
        v_limit := agg_bucket_start(v_cal, t.tf, v_horizon);
        IF v_limit > v_from THEN
          SELECT * INTO w FROM agg_write_range(t.sym, t.tf, v_cal, v_from, v_limit, v_version, false);
          UPDATE data_agg_state s SET last_agg_bar_ts_utc = v_limit, updated_at = now()
          WHERE s.canonical_symbol = t.sym AND s.timeframe = t.tf;
          cursor_to := v_limit;
          bars_created := bars_created + w.created;
          bars_changed := bars_changed + w.changed;
          bars_deleted := bars_deleted + w.deleted;
          bars_quality_poor := bars_quality_poor + w.poor;
        END IF;
      END IF;
      v_fin := agg_finish(t.sym, t.tf, true, cursor_to,
        jsonb_build_object('bars_created', bars_created, 'bars_quality_poor', bars_quality_poor,
                           'cursor_from', cursor_from, 'continue', false),
        NULL, NULL, v_now, 3, v_tok);
      outcome := 'done';
      task_status := v_fin ->> 'status';
      RETURN NEXT;
    EXCEPTION WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
      error_text := SQLERRM || ' (SQLSTATE ' || v_state || ')';
      v_kind := CASE WHEN v_state LIKE '08%'
                       OR v_state IN ('40001', '40P01', '57014', '55P03', '57P01', '57P02', '57P03')
                     THEN 'transient' ELSE 'hard' END;
      v_fin := agg_finish(t.sym, t.tf, false, NULL, '{}', v_kind, error_text, v_now, 3, v_tok);
      outcome := 'failed_' || v_kind;
      task_status := v_fin ->> 'status';
      bars_created := 0; bars_changed := 0; bars_deleted := 0; bars_quality_poor := 0;
      cursor_to := cursor_from;
      RETURN NEXT;
    END;
  END LOOP;
  -- A bar rewritten above marks the buckets above it, whatever their
  -- cursor (sql/functions/45_late_data.sql); a cursor this call then moved
  -- past such a mark leaves it behind: re-aggregate those now, not at the
  -- symbol's next run.
  FOR v_symbol IN
    SELECT DISTINCT x.sym FROM unnest($1) AS x (sym)
    WHERE EXISTS (SELECT 1 FROM agg_dirty_buckets d
                  JOIN data_agg_state s ON s.canonical_symbol = d.canonical_symbol
                                       AND s.timeframe = d.timeframe
                  WHERE d.canonical_symbol = x.sym AND d.ts_utc < s.last_agg_bar_ts_utc)
    ORDER BY 1
  LOOP
    BEGIN
      FOR t IN
        SELECT x.key AS tf, x.value AS v
        FROM jsonb_each(coalesce(agg_process_dirty(v_symbol) -> 'timeframes', '{}')) x
      LOOP
        v_lates := jsonb_set(v_lates, ARRAY[v_symbol],
          coalesce(v_lates -> v_symbol, '{}') || jsonb_build_object(t.tf || ' after', t.v));
      END LOOP;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 're-aggregating late % data: %', v_symbol, SQLERRM;
    END;
  END LOOP;
  -- Late data of tasks not advanced here (a dependents call takes only
  -- what is due, and the pass just above): counted, so nothing rewritten
  -- goes unreported.
  FOR t IN
    SELECT l.key AS sym, x.key AS tf, x.value AS v
    FROM jsonb_each(v_lates) l CROSS JOIN LATERAL jsonb_each(l.value) x
    ORDER BY 1, 2
  LOOP
    CONTINUE WHEN v_counted ? (t.sym || ' ' || t.tf);
    task_symbol := t.sym; task_timeframe := split_part(t.tf, ' ', 1); outcome := 'late'; task_status := NULL;
    cursor_from := NULL; cursor_to := NULL; error_text := NULL;
    buckets_reaggregated := (t.v ->> 'buckets')::integer;
    bars_created := (t.v ->> 'bars_created')::integer;
    bars_changed := (t.v ->> 'bars_changed')::integer;
    bars_deleted := (t.v ->> 'bars_deleted')::integer;
    bars_quality_poor := (t.v ->> 'bars_quality_poor')::integer;
    RETURN NEXT;
  END LOOP;
END $$;

REVOKE EXECUTE ON FUNCTION
  agg_claim_live(text, text, timestamptz, integer, integer, integer),
  agg_advance_live(text[], text[], uuid[], timestamptz, integer, text, integer, boolean)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  agg_claim_live(text, text, timestamptz, integer, integer, integer),
  agg_advance_live(text[], text[], uuid[], timestamptz, integer, text, integer, boolean)
TO barkeep_worker;
