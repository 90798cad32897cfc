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

CREATE OR REPLACE FUNCTION agg_claim_tasks(env text, worker text, now timestamptz DEFAULT now(),
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

-- agg_finish's success transition for a set of tasks at once (the live
-- path, sql/functions/47_live.sql, finishes a wave of hundreds of tasks in
-- one call): parallel arrays of symbol, timeframe, lease token, new
-- cursor, the cursor the run started from, bars created and bars of poor
-- quality; and, when the caller knows them, the horizons its next run
-- would see (NULL: agg_horizon finds them). A task whose lease is no longer held is left alone (not
-- returned). Every recorded task is logged in agg_run_log as agg_finish
-- logs it, and its dependents woken the same way.
CREATE OR REPLACE FUNCTION agg_finish_runs(symbols text[], timeframes text[], lease_tokens uuid[],
                                           cursors timestamptz[], cursors_from timestamptz[],
                                           bars_created integer[], bars_quality_poor integer[],
                                           now timestamptz DEFAULT now(),
                                           horizons timestamptz[] DEFAULT NULL)
RETURNS TABLE (task_symbol text, task_timeframe text, task_status text, task_cursor timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_now timestamptz := coalesce($8, now());
  v_syms text[];
  v_tfs text[];
  v_curs timestamptz[];
  v_cals text[];
  v_first bigint;
  v_last bigint;
BEGIN
  WITH r AS (
    SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $9)
      AS u (sym, tf, tok, cur, cur_from, created, poor, horizon)
  ), t AS MATERIALIZED (
    SELECT s.canonical_symbol AS sym, s.timeframe AS tf, s.lease_owner AS owner,
           coalesce(s.running_started_at_utc, v_now) AS started,
           greatest(s.last_agg_bar_ts_utc, r.cur) AS cur,
           coalesce(r.cur_from, s.last_agg_bar_ts_utc) AS cur_from,
           coalesce(r.created, 0) AS created, coalesce(r.poor, 0) AS poor,
           s.source_timeframe AS src, s.aggregation_delay_seconds AS delay,
           s.run_interval_minutes AS run_interval, r.horizon,
           agg_calendar(coalesce(g.asset_class, 'crypto')) AS cal
    FROM data_agg_state s
    JOIN r ON s.canonical_symbol = r.sym AND s.timeframe = r.tf
    LEFT JOIN core_asset_registry_all g ON g.canonical_symbol = s.canonical_symbol
    WHERE s.status = 'running' AND s.lease_token = r.tok
    ORDER BY s.canonical_symbol, agg_timeframe_rank(s.timeframe)
    FOR UPDATE OF s
  ), done AS (
    UPDATE data_agg_state s SET status = 'idle', last_agg_bar_ts_utc = t.cur,
      hard_fail_streak = 0, transient_fail_streak = 0, last_error = NULL,
      last_successful_at_utc = v_now,
      next_run_at = agg_next_run(t.cal, t.tf, t.src, t.cur,
                                 coalesce(t.horizon, agg_horizon(t.sym, t.tf, v_now)),
                                 t.delay, t.run_interval, v_now),
      total_runs = s.total_runs + 1,
      total_bars_created = s.total_bars_created + t.created,
      total_bars_quality_poor = s.total_bars_quality_poor + t.poor,
      lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    FROM t WHERE s.canonical_symbol = t.sym AND s.timeframe = t.tf
    RETURNING s.canonical_symbol
  ), logged AS (
    INSERT INTO agg_run_log (canonical_symbol, timeframe, worker_id, started_at, finished_at, status,
      cursor_from, cursor_to, bars_created, bars_quality_poor, fail_kind, error)
    SELECT t.sym, t.tf, t.owner, t.started, v_now, 'success', t.cur_from, t.cur, t.created, t.poor,
           NULL, NULL
    FROM t ORDER BY t.sym, agg_timeframe_rank(t.tf)
    RETURNING id
  )
  SELECT array_agg(t.sym), array_agg(t.tf), array_agg(t.cur), array_agg(t.cal),
         (SELECT min(id) FROM logged), (SELECT max(id) FROM logged)
  INTO v_syms, v_tfs, v_curs, v_cals, v_first, v_last
  FROM t;
  IF v_syms IS NULL THEN
    RETURN;
  END IF;
  PERFORM agg_wake_dependents(v_syms, v_tfs, v_curs, v_cals, v_now);
  -- Keep the newest 10 000 runs, pruning when an id passes a hundred (as
  -- agg_finish does).
  IF v_last / 100 > (v_first - 1) / 100 THEN
    DELETE FROM agg_run_log WHERE id <= v_last - 10000;
  END IF;
  RETURN QUERY SELECT u.sym, u.tf, 'idle'::text, u.cur FROM unnest(v_syms, v_tfs, v_curs) AS u (sym, tf, cur);
END $$;

CREATE OR REPLACE FUNCTION agg_finish(symbol text, timeframe text, success boolean, new_cursor timestamptz,
                           stats jsonb DEFAULT '{}', fail_kind text DEFAULT NULL, error text DEFAULT NULL,
                           now timestamptz DEFAULT now(), hard_fail_threshold integer DEFAULT 3,
                           lease_token uuid DEFAULT NULL)
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
  v_token uuid := $10;
  v_task data_agg_state%ROWTYPE;
  v_horizon timestamptz;
  v_end timestamptz;
  v_started timestamptz;
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
  -- Fencing: a worker whose lease was taken over changes nothing. The
  -- token comes as the lease_token parameter (or, from older callers, in
  -- stats); a call without one is unfenced (the SQL face, operators).
  IF v_token IS NULL AND v_stats ? 'lease_token' THEN
    v_token := (v_stats->>'lease_token')::uuid;
  END IF;
  IF v_token IS NOT NULL AND v_token IS DISTINCT FROM v_task.lease_token THEN
    RETURN jsonb_build_object('success', false, 'reason', 'lease_lost');
  END IF;
  v_started := coalesce(v_task.running_started_at_utc, v_now);

  IF v_success THEN
    v_cursor := greatest(v_task.last_agg_bar_ts_utc, v_new_cursor);
    v_status := 'idle';
    v_cal := agg_symbol_calendar(v_symbol);
    IF coalesce((v_stats->>'continue')::boolean, false) THEN
      v_next := v_now;
    ELSE
      -- The cursor is committed already (chunks move it), so the horizon
      -- read here is the one the next run would see.
      v_next := agg_next_run(v_cal, v_tf, v_task.source_timeframe, v_cursor,
                             agg_horizon(v_symbol, v_tf, v_now),
                             v_task.aggregation_delay_seconds, v_task.run_interval_minutes, v_now);
    END IF;
    UPDATE data_agg_state s SET status = v_status, last_agg_bar_ts_utc = v_cursor,
      hard_fail_streak = 0, transient_fail_streak = 0, last_error = NULL,
      last_successful_at_utc = v_now, next_run_at = v_next, total_runs = s.total_runs + 1,
      total_bars_created = s.total_bars_created + coalesce((v_stats->>'bars_created')::bigint, 0),
      total_bars_quality_poor = s.total_bars_quality_poor
                                + coalesce((v_stats->>'bars_quality_poor')::bigint, 0),
      lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE s.canonical_symbol = v_symbol AND s.timeframe = v_tf;
    PERFORM agg_wake_dependents(ARRAY[v_symbol], ARRAY[v_tf], ARRAY[v_cursor], ARRAY[v_cal], v_now);
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
  VALUES (v_symbol, v_tf, v_task.lease_owner, v_started, v_now,
    CASE WHEN v_success THEN 'success' WHEN v_kind = 'transient' THEN 'transient' ELSE 'failed' END,
    coalesce((v_stats->>'cursor_from')::timestamptz, v_task.last_agg_bar_ts_utc), v_cursor,
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
  CROSS JOIN (VALUES ('5m'), ('15m'), ('1h'), ('4h'), ('1d'), ('1w')) AS tf (timeframe)
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
  agg_finish_runs(text[], text[], uuid[], timestamptz[], timestamptz[], integer[], integer[], timestamptz, timestamptz[]),
  agg_wake_dependents(text[], text[], timestamptz[], text[], timestamptz),
  agg_release(text, text, uuid, timestamptz),
  agg_wake(text[], timestamptz),
  agg_end_frozen_sessions(timestamptz, integer),
  sync_agg_state_from_registry(text, timestamptz, integer)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  agg_get_due_tasks(text, timestamptz, integer, integer),
  agg_claim_tasks(text, text, timestamptz, integer, integer),
  agg_heartbeat(text, text, uuid, timestamptz, integer),
  agg_finish(text, text, boolean, timestamptz, jsonb, text, text, timestamptz, integer, uuid),
  agg_finish_runs(text[], text[], uuid[], timestamptz[], timestamptz[], integer[], integer[], timestamptz, timestamptz[]),
  agg_wake_dependents(text[], text[], timestamptz[], text[], timestamptz),
  agg_release(text, text, uuid, timestamptz),
  agg_wake(text[], timestamptz),
  agg_end_frozen_sessions(timestamptz, integer),
  sync_agg_state_from_registry(text, timestamptz, integer)
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
