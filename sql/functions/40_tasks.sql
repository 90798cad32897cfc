-- requires: 2
-- The task state machine: every transition of a data_agg_state row goes
-- through one function here (docs/DESIGN.md, "Task state").

-- Signatures that changed: agg_finish took the lease token only inside
-- stats, sync_agg_state_from_registry had no delay for new tasks.
DROP FUNCTION IF EXISTS agg_finish(text, text, boolean, timestamptz, jsonb, text, text, timestamptz, integer);
DROP FUNCTION IF EXISTS sync_agg_state_from_registry(text, timestamptz);
------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION agg_get_due_tasks(env text, now timestamptz DEFAULT now(), task_limit integer DEFAULT 100,
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

-- How many nominal buckets behind `now` a task's cursor may be for the
-- live path (1 h of 5m, 3 h of 15m, ... 12 weeks of 1w): the one
-- definition, read by the claims below and by the worker.
CREATE OR REPLACE FUNCTION agg_live_buckets_behind() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 12 $$;

-- Hard failures in a row after which a task stops (hard_failed when
-- mandatory, else disabled): the one definition.
CREATE OR REPLACE FUNCTION agg_hard_fail_threshold() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 3 $$;

-- The claim transition (idle or expired running -> running), the one
-- writer of a lease. Which tasks it takes is its scope:
--   'catch_up'   due idle tasks of `env` and running tasks whose lease
--                expired (`recovered`), in claim order;
--   'live'       due idle tasks of `env` whose cursor is at most
--                max_buckets_behind nominal buckets behind `now`;
--   'dependents' idle, healthy tasks of `of_timeframe` among `symbols`,
--                as close to the present as a live claim requires, that
--                are due or whose source's cursor has passed their next
--                bucket (the live path takes them right after their
--                source, sql/functions/47_live.sql).
-- Rows are taken FOR UPDATE SKIP LOCKED: a task another session holds is
-- left to it. Returned in claim order.
CREATE OR REPLACE FUNCTION agg_claim(scope text, env text, worker text, now timestamptz,
                                     max_tasks integer, lease_seconds integer,
                                     max_buckets_behind integer DEFAULT NULL,
                                     symbols text[] DEFAULT NULL, of_timeframe text DEFAULT NULL)
RETURNS TABLE (canonical_symbol text, timeframe text, source_timeframe text,
               last_agg_bar_ts_utc timestamptz, aggregation_delay_seconds integer,
               lease_token uuid, recovered boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_scope text := $1;
  v_env text := $2;
  v_worker text := $3;
  v_now timestamptz := coalesce($4, now());
  v_max integer := greatest(coalesce($5, 10), 0);
  v_lease interval := make_interval(secs => coalesce($6, 60));
  v_behind integer := coalesce($7, agg_live_buckets_behind());
  v_syms text[];
  v_tfs text[];
  v_recovered boolean[];
BEGIN
  IF v_lease <= interval '0' THEN
    RAISE EXCEPTION 'lease_seconds must be positive, got %', $6 USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF v_scope = 'catch_up' THEN
    PERFORM agg_check_env(v_env);
    SELECT array_agg(p.sym), array_agg(p.tf), array_agg(p.recovered)
    INTO v_syms, v_tfs, v_recovered
    FROM (SELECT s.canonical_symbol AS sym, s.timeframe AS tf, s.status = 'running' AS recovered
          FROM data_agg_state s
          JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
          WHERE s.enabled
            AND CASE WHEN v_env = 'prod' THEN r.active ELSE r.test_active END
            AND ((s.status = 'idle' AND s.next_run_at <= v_now)
              OR (s.status = 'running' AND (s.lease_expires_at IS NULL OR s.lease_expires_at < v_now)))
          ORDER BY s.is_mandatory DESC, agg_timeframe_rank(s.timeframe), s.task_priority,
                   s.last_successful_at_utc ASC NULLS FIRST, s.canonical_symbol
          LIMIT v_max
          FOR UPDATE OF s SKIP LOCKED) p;
  ELSIF v_scope = 'live' THEN
    PERFORM agg_check_env(v_env);
    SELECT array_agg(p.sym), array_agg(p.tf), array_agg(false)
    INTO v_syms, v_tfs, v_recovered
    FROM (SELECT s.canonical_symbol AS sym, s.timeframe AS tf
          FROM data_agg_state s
          JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
          WHERE s.enabled AND s.status = 'idle' AND s.next_run_at <= v_now
            AND CASE WHEN v_env = 'prod' THEN r.active ELSE r.test_active END
            AND s.last_agg_bar_ts_utc >= v_now - agg_timeframe_interval(s.timeframe) * v_behind
          ORDER BY s.is_mandatory DESC, agg_timeframe_rank(s.timeframe), s.task_priority,
                   s.last_successful_at_utc ASC NULLS FIRST, s.canonical_symbol
          LIMIT v_max
          FOR UPDATE OF s SKIP LOCKED) p;
  ELSIF v_scope = 'dependents' THEN
    SELECT array_agg(p.sym), array_agg(p.tf), array_agg(false)
    INTO v_syms, v_tfs, v_recovered
    FROM (SELECT s.canonical_symbol AS sym, s.timeframe AS tf
          FROM data_agg_state s
          LEFT JOIN data_agg_state src ON src.canonical_symbol = s.canonical_symbol
                                      AND src.timeframe = s.source_timeframe
          LEFT JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
          WHERE s.canonical_symbol = ANY ($8) AND s.timeframe = $9 AND s.enabled
            AND s.status = 'idle' AND s.transient_fail_streak = 0 AND s.hard_fail_streak = 0
            AND s.last_agg_bar_ts_utc >= v_now - agg_timeframe_interval(s.timeframe) * v_behind
            AND (s.next_run_at <= v_now
                 OR (s.source_timeframe <> '1m'
                     AND agg_bucket_start(agg_calendar(coalesce(r.asset_class, 'crypto')), s.timeframe,
                                          least(v_now, src.last_agg_bar_ts_utc)) > s.last_agg_bar_ts_utc))
          ORDER BY s.canonical_symbol
          LIMIT v_max
          FOR UPDATE OF s SKIP LOCKED) p;
  ELSE
    RAISE EXCEPTION 'unknown claim scope %', coalesce(quote_literal(v_scope), 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF v_syms IS NULL THEN
    RETURN;
  END IF;
  RETURN QUERY
  WITH claimed AS (
    UPDATE data_agg_state t SET status = 'running', running_started_at_utc = v_now,
      last_attempted_at_utc = v_now, lease_token = gen_random_uuid(), lease_owner = v_worker,
      lease_expires_at = v_now + v_lease, updated_at = now()
    FROM unnest(v_syms, v_tfs, v_recovered) WITH ORDINALITY AS p (sym, tf, recovered, i)
    WHERE t.canonical_symbol = p.sym AND t.timeframe = p.tf
    RETURNING t.canonical_symbol, t.timeframe, t.source_timeframe, t.last_agg_bar_ts_utc,
              t.aggregation_delay_seconds, t.lease_token, p.recovered, p.i
  )
  SELECT c.canonical_symbol, c.timeframe, c.source_timeframe, c.last_agg_bar_ts_utc,
         c.aggregation_delay_seconds, c.lease_token, c.recovered
  FROM claimed c ORDER BY c.i;
END $$;

-- The catch-up claim (the checklist's and the worker's call shape).
CREATE OR REPLACE FUNCTION agg_claim_tasks(env text, worker text, now timestamptz DEFAULT now(),
                                max_tasks integer DEFAULT 10, lease_seconds integer DEFAULT 60)
RETURNS TABLE (canonical_symbol text, timeframe text, source_timeframe text,
               last_agg_bar_ts_utc timestamptz, aggregation_delay_seconds integer,
               lease_token uuid, recovered boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  RETURN QUERY SELECT * FROM agg_claim('catch_up', $1, $2, $3, $4, $5);
END $$;

-- Claim up to max_tasks idle, due tasks whose cursor is at most
-- max_buckets_behind nominal buckets behind `now` (tasks taken over from a
-- dead worker, and tasks further behind, go through agg_claim_tasks).
CREATE OR REPLACE FUNCTION agg_claim_live(env text, worker text, now timestamptz DEFAULT now(),
                                          max_tasks integer DEFAULT 1000,
                                          lease_seconds integer DEFAULT 60,
                                          max_buckets_behind integer DEFAULT NULL)
RETURNS TABLE (canonical_symbol text, timeframe text, source_timeframe text,
               last_agg_bar_ts_utc timestamptz, aggregation_delay_seconds integer,
               lease_token uuid)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  RETURN QUERY
  SELECT c.canonical_symbol, c.timeframe, c.source_timeframe, c.last_agg_bar_ts_utc,
         c.aggregation_delay_seconds, c.lease_token
  FROM agg_claim('live', $1, $2, $3, coalesce($4, 1000), $5, $6) c;
END $$;

CREATE OR REPLACE FUNCTION agg_heartbeat(symbol text, timeframe text, lease_token uuid,
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

-- When a task runs next after a successful run that left its cursor at
-- `cursor` (agg_finish for one task, agg_finish_runs for a set): at once
-- when its next bucket is final already (`horizon`, agg_horizon: more
-- became final while it ran, new 1m data or its source task moving on); a
-- 1m-sourced task at that bucket's end + delay at the latest (new 1m data
-- reaching the bucket's end wakes it earlier, agg_wake); any other task
-- when its source's progress wakes it, the run interval as the fallback.
CREATE OR REPLACE FUNCTION agg_next_run(calendar text, timeframe text, source_timeframe text,
                                        cursor timestamptz, horizon timestamptz,
                                        delay_seconds integer, run_interval_minutes integer,
                                        now timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = public, pg_temp AS $$
DECLARE
  v_end timestamptz := agg_bucket_end($1, $2, $4);
BEGIN
  IF v_end IS NOT NULL AND $5 IS NOT NULL AND v_end <= $5 THEN
    RETURN $8;
  ELSIF $3 = '1m' AND v_end IS NOT NULL THEN
    RETURN greatest(v_end + make_interval(secs => $6), $8);
  END IF;
  RETURN $8 + make_interval(mins => $7);
END $$;

-- Tasks built from the given tasks (parallel arrays: symbol, timeframe,
-- new cursor, calendar) run as soon as that cursor has made one of their
-- buckets final; a task backing off after a failure keeps waiting.
CREATE OR REPLACE FUNCTION agg_wake_dependents(symbols text[], timeframes text[],
                                               cursors timestamptz[], calendars text[],
                                               now timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
BEGIN
  UPDATE data_agg_state s SET next_run_at = $5, updated_at = now()
  FROM unnest($1, $2, $3, $4) AS f (sym, tf, cur, cal)
  WHERE s.canonical_symbol = f.sym AND s.source_timeframe = f.tf
    AND s.status = 'idle' AND s.next_run_at > $5
    AND s.transient_fail_streak = 0 AND s.hard_fail_streak = 0
    AND s.last_agg_bar_ts_utc IS NOT NULL
    AND agg_bucket_end(f.cal, s.timeframe, s.last_agg_bar_ts_utc) <= least(f.cur, $5);
END $$;

-- The finish transition (running -> idle, or after hard failures
-- hard_failed / disabled), the one writer of a run's outcome, for a set
-- of tasks at once (the live path finishes a wave of hundreds of tasks in
-- one call; agg_finish is the one-task face). Parallel arrays: symbol,
-- timeframe, lease token (NULL: unfenced, the SQL face and operators), new
-- cursor, the cursor the run started from, bars created and bars of poor
-- quality; and, when the caller knows them, the horizons its next run
-- would see (NULL: agg_horizon finds them), whether the run stopped with
-- more final buckets waiting (due again at once), and the failure kind
-- ('transient' or 'hard'; NULL: success) with its error. A task whose
-- lease is no longer held is left alone (not returned). Every recorded run
-- is logged in agg_run_log (the newest 10 000 kept), and a success wakes
-- the tasks built from it.
DROP FUNCTION IF EXISTS agg_finish_runs(text[], text[], uuid[], timestamptz[], timestamptz[],
                                        integer[], integer[], timestamptz, timestamptz[]);
CREATE OR REPLACE FUNCTION agg_finish_runs(symbols text[], timeframes text[], lease_tokens uuid[],
                                           cursors timestamptz[], cursors_from timestamptz[],
                                           bars_created integer[], bars_quality_poor integer[],
                                           now timestamptz DEFAULT now(),
                                           horizons timestamptz[] DEFAULT NULL,
                                           continues boolean[] DEFAULT NULL,
                                           fail_kinds text[] DEFAULT NULL,
                                           errors text[] DEFAULT NULL,
                                           hard_fail_threshold integer DEFAULT NULL)
RETURNS TABLE (task_symbol text, task_timeframe text, task_status text, task_cursor timestamptz,
               task_next_run_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz := coalesce($8, now());
  v_threshold integer := coalesce($13, agg_hard_fail_threshold());
  v_syms text[];
  v_tfs text[];
  v_curs timestamptz[];
  v_cals text[];
  v_statuses text[];
  v_nexts timestamptz[];
  v_ok boolean[];
  v_first bigint;
  v_last bigint;
BEGIN
  WITH r AS (
    SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $9, $10, $11, $12)
      AS u (sym, tf, tok, cur, cur_from, created, poor, horizon, cont, kind, err)
  ), t AS MATERIALIZED (
    SELECT s.canonical_symbol AS sym, s.timeframe AS tf, s.lease_owner AS owner,
           coalesce(s.running_started_at_utc, v_now) AS started,
           r.kind IS NULL AS ok,
           CASE WHEN r.kind IS NULL THEN NULL WHEN r.kind = 'transient' THEN 'transient' ELSE 'hard' END AS kind,
           r.err,
           CASE WHEN r.kind IS NULL THEN greatest(s.last_agg_bar_ts_utc, r.cur)
                ELSE s.last_agg_bar_ts_utc END AS cur,
           coalesce(r.cur_from, s.last_agg_bar_ts_utc) AS cur_from,
           CASE WHEN r.kind IS NULL THEN coalesce(r.created, 0) ELSE 0 END AS created,
           CASE WHEN r.kind IS NULL THEN coalesce(r.poor, 0) ELSE 0 END AS poor,
           s.source_timeframe AS src, s.aggregation_delay_seconds AS delay,
           s.run_interval_minutes AS run_interval, r.horizon, coalesce(r.cont, false) AS cont,
           s.transient_fail_streak AS t_streak, s.hard_fail_streak AS h_streak, s.is_mandatory,
           agg_calendar(coalesce(g.asset_class, 'crypto')) AS cal
    FROM data_agg_state s
    JOIN r ON s.canonical_symbol = r.sym AND s.timeframe = r.tf
    LEFT JOIN core_asset_registry_all g ON g.canonical_symbol = s.canonical_symbol
    WHERE r.tok IS NULL OR (s.status = 'running' AND s.lease_token = r.tok)
    ORDER BY s.canonical_symbol, agg_timeframe_rank(s.timeframe)
    FOR UPDATE OF s
  ), n AS MATERIALIZED (
    SELECT t.*,
           CASE WHEN t.ok AND t.cont THEN v_now
                WHEN t.ok THEN agg_next_run(t.cal, t.tf, t.src, t.cur,
                                            coalesce(t.horizon, agg_horizon(t.sym, t.tf, v_now)),
                                            t.delay, t.run_interval, v_now)
                -- Failures back off: 5 s doubling per failure in a row, at most 300 s.
                ELSE v_now + least(interval '5 seconds'
                                   * power(2, least(CASE WHEN t.kind = 'transient' THEN t.t_streak
                                                         ELSE t.h_streak END, 16)),
                                   interval '300 seconds')
           END AS next,
           CASE WHEN t.kind = 'hard' AND t.h_streak + 1 >= v_threshold
                THEN CASE WHEN t.is_mandatory THEN 'hard_failed' ELSE 'disabled' END
                ELSE 'idle' END AS status
    FROM t
  ), done AS (
    UPDATE data_agg_state s SET status = n.status, last_agg_bar_ts_utc = n.cur,
      hard_fail_streak = CASE WHEN n.ok THEN 0 WHEN n.kind = 'hard' THEN s.hard_fail_streak + 1
                              ELSE s.hard_fail_streak END,
      transient_fail_streak = CASE WHEN n.ok THEN 0
                                   WHEN n.kind = 'transient' THEN s.transient_fail_streak + 1
                                   ELSE s.transient_fail_streak END,
      last_error = CASE WHEN n.ok THEN NULL ELSE n.err END,
      last_successful_at_utc = CASE WHEN n.ok THEN v_now ELSE s.last_successful_at_utc END,
      next_run_at = n.next,
      total_runs = s.total_runs + 1,
      total_bars_created = s.total_bars_created + n.created,
      total_bars_quality_poor = s.total_bars_quality_poor + n.poor,
      lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    FROM n WHERE s.canonical_symbol = n.sym AND s.timeframe = n.tf
    RETURNING s.canonical_symbol
  ), logged AS (
    INSERT INTO agg_run_log (canonical_symbol, timeframe, worker_id, started_at, finished_at, status,
      cursor_from, cursor_to, bars_created, bars_quality_poor, fail_kind, error)
    SELECT n.sym, n.tf, n.owner, n.started, v_now,
           CASE WHEN n.ok THEN 'success' WHEN n.kind = 'transient' THEN 'transient' ELSE 'failed' END,
           n.cur_from, n.cur, n.created, n.poor, n.kind, n.err
    FROM n ORDER BY n.sym, agg_timeframe_rank(n.tf)
    RETURNING id
  )
  SELECT array_agg(n.sym), array_agg(n.tf), array_agg(n.cur), array_agg(n.cal),
         array_agg(n.status), array_agg(n.next), array_agg(n.ok),
         (SELECT min(id) FROM logged), (SELECT max(id) FROM logged)
  INTO v_syms, v_tfs, v_curs, v_cals, v_statuses, v_nexts, v_ok, v_first, v_last
  FROM n;
  IF v_syms IS NULL THEN
    RETURN;
  END IF;
  PERFORM agg_wake_dependents(array_agg(u.sym), array_agg(u.tf), array_agg(u.cur), array_agg(u.cal), v_now)
  FROM unnest(v_syms, v_tfs, v_curs, v_cals, v_ok) AS u (sym, tf, cur, cal, ok)
  WHERE u.ok
  HAVING count(*) > 0;
  -- Keep the newest 10 000 runs, pruning when an id passes a hundred: cheap.
  IF v_last / 100 > (v_first - 1) / 100 THEN
    DELETE FROM agg_run_log WHERE id <= v_last - 10000;
  END IF;
  RETURN QUERY SELECT u.sym, u.tf, u.status, u.cur, u.next
  FROM unnest(v_syms, v_tfs, v_statuses, v_curs, v_nexts) AS u (sym, tf, status, cur, next);
END $$;

-- One run's outcome (the checklist's call shape; the work is
-- agg_finish_runs'). Fenced by the lease token when one is given (as the
-- lease_token parameter or, from older callers, in stats): a worker whose
-- lease was taken over changes nothing ('lease_lost'). Stats read:
-- bars_created, bars_quality_poor, cursor_from and continue.
CREATE OR REPLACE FUNCTION agg_finish(symbol text, timeframe text, success boolean, new_cursor timestamptz,
                           stats jsonb DEFAULT '{}', fail_kind text DEFAULT NULL, error text DEFAULT NULL,
                           now timestamptz DEFAULT now(), hard_fail_threshold integer DEFAULT NULL,
                           lease_token uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_symbol text := $1;
  v_tf text := $2;
  v_success boolean := coalesce($3, false);
  v_stats jsonb := coalesce($5, '{}');
  v_now timestamptz := coalesce($8, now());
  v_token uuid := $10;
  v_held uuid;
  f record;
BEGIN
  PERFORM agg_check_timeframe(v_tf);
  SELECT s.lease_token INTO v_held FROM data_agg_state s
  WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_tf FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no task % %', v_symbol, v_tf USING ERRCODE = 'no_data_found';
  END IF;
  IF v_token IS NULL AND v_stats ? 'lease_token' THEN
    v_token := (v_stats->>'lease_token')::uuid;
  END IF;
  IF v_token IS NOT NULL AND v_token IS DISTINCT FROM v_held THEN
    RETURN jsonb_build_object('success', false, 'reason', 'lease_lost');
  END IF;
  SELECT * INTO f FROM agg_finish_runs(
    ARRAY[v_symbol], ARRAY[v_tf], ARRAY[v_token], ARRAY[$4],
    ARRAY[(v_stats->>'cursor_from')::timestamptz],
    ARRAY[CASE WHEN v_success THEN coalesce((v_stats->>'bars_created')::integer, 0) ELSE 0 END],
    ARRAY[CASE WHEN v_success THEN coalesce((v_stats->>'bars_quality_poor')::integer, 0) ELSE 0 END],
    v_now, NULL, ARRAY[coalesce((v_stats->>'continue')::boolean, false)],
    ARRAY[CASE WHEN v_success THEN NULL ELSE coalesce($6, 'hard') END], ARRAY[$7], $9);
  IF NOT FOUND THEN
    RETURN jsonb_build_object('success', false, 'reason', 'lease_lost');
  END IF;
  RETURN jsonb_build_object('success', true, 'status', f.task_status, 'cursor', f.task_cursor,
    'next_run_at', f.task_next_run_at);
END $$;

-- The cursor move, the one writer of a cursor while its task runs: each
-- task's cursor (parallel arrays: symbol, timeframe, new cursor) moves
-- forward to the new one, never back; with `expected` (compare-and-set)
-- only where it still is at the expected one. The caller holds the task
-- rows (a chunk's, a catch-up's or the live path's lock), so the move
-- commits with the bars. Returns how many cursors moved.
CREATE OR REPLACE FUNCTION agg_move_cursors(symbols text[], timeframes text[], cursors timestamptz[],
                                            expected timestamptz[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_moved integer;
BEGIN
  UPDATE data_agg_state s SET last_agg_bar_ts_utc = greatest(s.last_agg_bar_ts_utc, u.cur),
    updated_at = now()
  FROM unnest($1, $2, $3, $4) AS u (sym, tf, cur, expected)
  WHERE s.canonical_symbol = u.sym AND s.timeframe = u.tf
    AND (u.expected IS NULL OR s.last_agg_bar_ts_utc = u.expected);
  GET DIAGNOSTICS v_moved = ROW_COUNT;
  RETURN v_moved;
END $$;

-- The restart transition: the tasks of `symbol` (NULL: every symbol) and
-- `timeframes` (NULL: every timeframe) start again. A start_from before a
-- task's start moves its start back to it (barkeep rebuild --from: the
-- buckets before are then re-aggregated as late data); with `rewind`, a
-- task that has a cursor starts over at the first bucket of its start on
-- its symbol's calendar (a class change, after the bars of the old
-- calendar were retired; the bench's fresh start). The caller retires or
-- keeps the bars. Returns how many tasks changed.
CREATE OR REPLACE FUNCTION agg_restart_tasks(symbol text, timeframes text[],
                                             start_from timestamptz DEFAULT NULL,
                                             rewind boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_rewind boolean := coalesce($4, false);
  v_changed integer;
BEGIN
  WITH t AS (
    SELECT s.canonical_symbol AS sym, s.timeframe AS tf,
           CASE WHEN $3 < s.agg_start_utc THEN $3 ELSE coalesce(s.agg_start_utc, agg_default_start()) END
             AS start
    FROM data_agg_state s
    WHERE ($1 IS NULL OR s.canonical_symbol = $1) AND ($2 IS NULL OR s.timeframe = ANY ($2))
      AND (s.agg_start_utc > $3 OR (v_rewind AND s.last_agg_bar_ts_utc IS NOT NULL))
    ORDER BY s.canonical_symbol, agg_timeframe_rank(s.timeframe)
    FOR UPDATE OF s
  )
  UPDATE data_agg_state s SET agg_start_utc = t.start,
    last_agg_bar_ts_utc = CASE WHEN v_rewind AND s.last_agg_bar_ts_utc IS NOT NULL
      THEN agg_first_bucket_at_or_after(agg_symbol_calendar(t.sym), t.tf, t.start)
      ELSE s.last_agg_bar_ts_utc END,
    updated_at = now()
  FROM t WHERE s.canonical_symbol = t.sym AND s.timeframe = t.tf;
  GET DIAGNOSTICS v_changed = ROW_COUNT;
  RETURN v_changed;
END $$;

-- Hand a claimed task back unrun (a worker stopping): idle and due at
-- once, lease cleared; not a run, so no counter, streak or log changes.
-- Fenced by the lease token: false when the lease is no longer held.
CREATE OR REPLACE FUNCTION agg_release(symbol text, timeframe text, lease_token uuid,
                                       now timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
BEGIN
  UPDATE data_agg_state s SET status = 'idle', next_run_at = coalesce($4, now()),
    lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
  WHERE s.canonical_symbol = $1 AND s.timeframe = $2 AND s.status = 'running'
    AND s.lease_token = $3;
  RETURN FOUND;
END $$;

-- New 1m data arrived for `symbols` (NULL: any symbol): make the idle
-- 1m-sourced tasks whose next bucket it made final due now. A task backing
-- off after a failure keeps its backoff. Returns how many tasks woke.
CREATE OR REPLACE FUNCTION agg_wake(symbols text[], now timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz := coalesce($2, now());
  v_woken integer;
  v_late integer;
BEGIN
  UPDATE data_agg_state s SET next_run_at = v_now, updated_at = now()
  WHERE ($1 IS NULL OR s.canonical_symbol = ANY ($1))
    AND s.source_timeframe = '1m' AND s.enabled AND s.status = 'idle'
    AND s.next_run_at > v_now
    AND s.transient_fail_streak = 0 AND s.hard_fail_streak = 0
    AND s.last_agg_bar_ts_utc IS NOT NULL
    AND agg_bucket_end(agg_symbol_calendar(s.canonical_symbol), s.timeframe, s.last_agg_bar_ts_utc)
        <= agg_horizon(s.canonical_symbol, s.timeframe, v_now);
  GET DIAGNOSTICS v_woken = ROW_COUNT;
  -- Late or corrected data behind a cursor (sql/functions/45_late_data.sql)
  -- is work too: any task of those symbols with dirty buckets runs now.
  IF to_regclass('agg_dirty_buckets') IS NOT NULL THEN
    EXECUTE
      'UPDATE data_agg_state s SET next_run_at = $2, updated_at = now()
       WHERE ($1 IS NULL OR s.canonical_symbol = ANY ($1))
         AND s.enabled AND s.status = ''idle'' AND s.next_run_at > $2
         AND s.transient_fail_streak = 0 AND s.hard_fail_streak = 0
         AND EXISTS (SELECT 1 FROM agg_dirty_buckets d
                     WHERE d.canonical_symbol = s.canonical_symbol AND d.timeframe = s.timeframe
                       AND d.ts_utc < s.last_agg_bar_ts_utc)'
      USING $1, v_now;
    GET DIAGNOSTICS v_late = ROW_COUNT;
    v_woken := v_woken + v_late;
  END IF;
  RETURN v_woken;
END $$;

-- End the sessions of frozen workers. A worker stopped inside a chunk
-- transaction (SIGSTOP, a frozen VM) holds its task's row lock, so the
-- claim skips the task although its lease expired, and a COPY waiting for
-- client data is not ended by statement_timeout. Worker sessions carry the
-- application_name 'barkeep <lease_owner>'; a session of an owner whose
-- lease expired more than grace_seconds ago, inside a transaction, is
-- terminated (its lease is void already: its writes would be fenced).
-- Returns how many sessions were ended.
CREATE OR REPLACE FUNCTION agg_end_frozen_sessions(now timestamptz DEFAULT now(),
                                                   grace_seconds integer DEFAULT 5)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz := coalesce($1, now());
  v_grace interval := make_interval(secs => coalesce($2, 5));
  v_ended integer := 0;
  v_pid integer;
BEGIN
  FOR v_pid IN
    SELECT a.pid FROM pg_stat_activity a
    WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
      AND a.xact_start IS NOT NULL AND a.xact_start < v_now - v_grace
      AND a.application_name IN (
        SELECT DISTINCT left('barkeep ' || s.lease_owner, 63) FROM data_agg_state s
        WHERE s.status = 'running' AND s.lease_owner IS NOT NULL
          AND s.lease_expires_at < v_now - v_grace)
  LOOP
    IF pg_terminate_backend(v_pid) THEN
      v_ended := v_ended + 1;
    END IF;
  END LOOP;
  RETURN v_ended;
END $$;

-- The first bucket of new tasks when nothing else is said: the one default.
CREATE OR REPLACE FUNCTION agg_default_start() RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT timestamptz '2025-07-01 00:00+00' $$;

CREATE OR REPLACE FUNCTION sync_agg_state_from_registry(env text, agg_start timestamptz DEFAULT NULL,
                                                         delay_seconds integer DEFAULT 120)
RETURNS TABLE (success boolean, tasks_created integer, tasks_enabled integer,
               tasks_disabled integer, tasks_total integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_env text := $1;
  v_start timestamptz := coalesce($2, agg_default_start());
  -- New 5m tasks wait this long for a quiet feed (docs/DESIGN.md,
  -- "Finality"); higher timeframes follow their source's cursor.
  v_delay integer := coalesce($3, 120);
  v_created integer;
  v_enabled integer;
  v_disabled integer;
  v_total integer;
BEGIN
  PERFORM agg_check_env(v_env);
  IF v_delay < 0 THEN
    RAISE EXCEPTION 'delay_seconds must not be negative, got %', v_delay
      USING ERRCODE = 'invalid_parameter_value';
  END IF;

  INSERT INTO data_agg_state (canonical_symbol, timeframe, source_timeframe, run_interval_minutes,
    aggregation_delay_seconds, is_mandatory, status, last_agg_bar_ts_utc, next_run_at,
    agg_start_utc, enabled, task_priority)
  SELECT r.canonical_symbol, tf.timeframe, agg_source_timeframe(tf.timeframe), 1,
         CASE WHEN tf.timeframe = '5m' THEN v_delay ELSE 0 END, true, 'idle',
         agg_first_bucket_at_or_after(agg_calendar(r.asset_class), tf.timeframe, a.start),
         now(), a.start, true, 100
  FROM core_asset_registry_all r
  -- Without a start, an asset's tasks begin at its first stored 1m bar, so
  -- no stored bar is left out; an asset with no bar yet takes the default.
  CROSS JOIN LATERAL (
    SELECT coalesce($2, (SELECT min(b.ts_utc) FROM data_bars b
                         WHERE b.canonical_symbol = r.canonical_symbol AND b.timeframe = '1m'),
                    v_start) AS start
  ) a
  CROSS JOIN unnest(agg_ladder()) AS tf (timeframe)
  WHERE CASE WHEN v_env = 'prod' THEN r.active ELSE r.test_active END
    AND NOT EXISTS (SELECT 1 FROM data_agg_state s
                    WHERE s.canonical_symbol = r.canonical_symbol AND s.timeframe = tf.timeframe)
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

-- Privileges: nobody by default; the worker runs these, the reader may look at what is due.
REVOKE EXECUTE ON FUNCTION
  agg_get_due_tasks(text, timestamptz, integer, integer),
  agg_claim_tasks(text, text, timestamptz, integer, integer),
  agg_heartbeat(text, text, uuid, timestamptz, integer),
  agg_finish(text, text, boolean, timestamptz, jsonb, text, text, timestamptz, integer, uuid),
  agg_finish_runs(text[], text[], uuid[], timestamptz[], timestamptz[], integer[], integer[], timestamptz, timestamptz[], boolean[], text[], text[], integer),
  agg_wake_dependents(text[], text[], timestamptz[], text[], timestamptz),
  agg_release(text, text, uuid, timestamptz),
  agg_wake(text[], timestamptz),
  agg_end_frozen_sessions(timestamptz, integer),
  sync_agg_state_from_registry(text, timestamptz, integer),
  agg_claim(text, text, text, timestamptz, integer, integer, integer, text[], text),
  agg_claim_live(text, text, timestamptz, integer, integer, integer),
  agg_move_cursors(text[], text[], timestamptz[], timestamptz[]),
  agg_restart_tasks(text, text[], timestamptz, boolean)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  agg_get_due_tasks(text, timestamptz, integer, integer),
  agg_claim_tasks(text, text, timestamptz, integer, integer),
  agg_heartbeat(text, text, uuid, timestamptz, integer),
  agg_finish(text, text, boolean, timestamptz, jsonb, text, text, timestamptz, integer, uuid),
  agg_finish_runs(text[], text[], uuid[], timestamptz[], timestamptz[], integer[], integer[], timestamptz, timestamptz[], boolean[], text[], text[], integer),
  agg_wake_dependents(text[], text[], timestamptz[], text[], timestamptz),
  agg_release(text, text, uuid, timestamptz),
  agg_wake(text[], timestamptz),
  agg_end_frozen_sessions(timestamptz, integer),
  sync_agg_state_from_registry(text, timestamptz, integer),
  agg_claim(text, text, text, timestamptz, integer, integer, integer, text[], text),
  agg_claim_live(text, text, timestamptz, integer, integer, integer),
  agg_move_cursors(text[], text[], timestamptz[], timestamptz[]),
  agg_restart_tasks(text, text[], timestamptz, boolean)
TO barkeep_worker;
GRANT EXECUTE ON FUNCTION agg_get_due_tasks(text, timestamptz, integer, integer) TO barkeep_reader;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    GRANT EXECUTE ON FUNCTION
      agg_get_due_tasks(text, timestamptz, integer, integer),
      agg_claim_tasks(text, text, timestamptz, integer, integer),
      agg_heartbeat(text, text, uuid, timestamptz, integer),
      agg_finish(text, text, boolean, timestamptz, jsonb, text, text, timestamptz, integer, uuid),
      agg_release(text, text, uuid, timestamptz),
      agg_wake(text[], timestamptz),
      agg_end_frozen_sessions(timestamptz, integer),
      sync_agg_state_from_registry(text, timestamptz, integer)
    TO service_role;
  END IF;
END $$;

------------------------------------------------------------------------------
-- Operator transitions (barkeep task ...). Each returns how many tasks it
-- changed and wakes running workers (NOTIFY barkeep_tasks). timeframe NULL
-- means every task of the symbol. They wait at most 5 s for a row lock, so
-- an operator is never stuck behind a frozen worker.
------------------------------------------------------------------------------

-- Let a disabled task run again; a task parked as 'disabled' becomes idle.
CREATE OR REPLACE FUNCTION agg_task_enable(symbol text, timeframe text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
SET lock_timeout = '5s' AS $$
DECLARE n integer;
BEGIN
  UPDATE data_agg_state s SET enabled = true, next_run_at = now(), updated_at = now(),
    status = CASE WHEN s.status = 'disabled' THEN 'idle' ELSE s.status END
  WHERE s.canonical_symbol = $1 AND ($2 IS NULL OR s.timeframe = $2);
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM pg_notify('barkeep_tasks', '');
  RETURN n;
END $$;

-- Stop a task from being claimed. Clearing the lease fences a worker still
-- running it: its next fenced write changes nothing.
CREATE OR REPLACE FUNCTION agg_task_disable(symbol text, timeframe text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
SET lock_timeout = '5s' AS $$
DECLARE n integer;
BEGIN
  UPDATE data_agg_state s SET enabled = false, status = 'disabled', lease_token = NULL,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
  WHERE s.canonical_symbol = $1 AND ($2 IS NULL OR s.timeframe = $2);
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM pg_notify('barkeep_tasks', '');
  RETURN n;
END $$;

-- Put a hard_failed, disabled or idle task back to idle with its streaks
-- cleared, due now. A running task is left to its worker.
CREATE OR REPLACE FUNCTION agg_task_reenable(symbol text, timeframe text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
SET lock_timeout = '5s' AS $$
DECLARE n integer;
BEGIN
  UPDATE data_agg_state s SET enabled = true, status = 'idle', hard_fail_streak = 0,
    transient_fail_streak = 0, last_error = NULL, next_run_at = now(),
    lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
  WHERE s.canonical_symbol = $1 AND ($2 IS NULL OR s.timeframe = $2)
    AND s.status IN ('hard_failed', 'disabled', 'idle');
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM pg_notify('barkeep_tasks', '');
  RETURN n;
END $$;

-- Set the claim priority (lower runs first; new tasks get 100).
CREATE OR REPLACE FUNCTION agg_task_priority(symbol text, timeframe text, priority integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
SET lock_timeout = '5s' AS $$
DECLARE n integer;
BEGIN
  UPDATE data_agg_state s SET task_priority = $3, updated_at = now()
  WHERE s.canonical_symbol = $1 AND ($2 IS NULL OR s.timeframe = $2);
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM pg_notify('barkeep_tasks', '');
  RETURN n;
END $$;

-- Set how long a task waits for a quiet feed before finalizing a bucket
-- (only tasks reading 1m bars use it); a healthy idle task looks again now.
CREATE OR REPLACE FUNCTION agg_task_delay(symbol text, timeframe text, delay_seconds integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
SET lock_timeout = '5s' AS $$
DECLARE n integer;
BEGIN
  IF $3 IS NULL OR $3 < 0 THEN
    RAISE EXCEPTION 'delay_seconds must be 0 or more, got %', coalesce($3::text, 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  UPDATE data_agg_state s SET aggregation_delay_seconds = $3, updated_at = now(),
    next_run_at = CASE WHEN s.status = 'idle' AND s.transient_fail_streak = 0
                        AND s.hard_fail_streak = 0 THEN now() ELSE s.next_run_at END
  WHERE s.canonical_symbol = $1 AND ($2 IS NULL OR s.timeframe = $2);
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM pg_notify('barkeep_tasks', '');
  RETURN n;
END $$;

REVOKE EXECUTE ON FUNCTION
  agg_task_enable(text, text), agg_task_disable(text, text),
  agg_task_reenable(text, text), agg_task_priority(text, text, integer),
  agg_task_delay(text, text, integer)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  agg_task_enable(text, text), agg_task_disable(text, text),
  agg_task_reenable(text, text), agg_task_priority(text, text, integer),
  agg_task_delay(text, text, integer)
TO barkeep_worker;
