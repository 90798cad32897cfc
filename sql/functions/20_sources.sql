-- requires: 2
-- What the aggregation reads: a symbol's calendar, its final source bars,
-- and argument checks shared by the functions below.
------------------------------------------------------------------------------
-- The calendar of a registered symbol; unregistered symbols use utc.
-- PL/pgSQL, so its lookup is planned once per session: a SQL function with
-- a sub-select is not inlined and would be planned again on every call
-- from a PL/pgSQL statement.
CREATE OR REPLACE FUNCTION agg_symbol_calendar(symbol text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
  v_class text;
BEGIN
  SELECT r.asset_class INTO v_class FROM core_asset_registry_all r WHERE r.canonical_symbol = $1;
  RETURN agg_calendar(coalesce(v_class, 'crypto'));
END $$;

-- Final source bars of a symbol in [from_ts, to_ts): raw 1m bars, or live
-- stored derived bars. One of the two branches is pruned at plan time.
CREATE OR REPLACE FUNCTION agg_source_bars(symbol text, source_timeframe text, from_ts timestamptz, to_ts timestamptz)
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
CREATE OR REPLACE FUNCTION agg_next_source_ts(symbol text, source_timeframe text, from_ts timestamptz, to_ts timestamptz)
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
CREATE OR REPLACE FUNCTION agg_check_env(env text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF $1 IS NULL OR $1 NOT IN ('prod', 'dev', 'test') THEN
    RAISE EXCEPTION 'unknown env %: expected prod, dev or test', coalesce(quote_literal($1), 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
END $$;

-- Raise unless tf is a derived timeframe of the ladder.
CREATE OR REPLACE FUNCTION agg_check_timeframe(timeframe text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF agg_timeframe_rank($1) IS NULL THEN
    RAISE EXCEPTION 'unknown timeframe %: expected one of %',
      coalesce(quote_literal($1), 'NULL'), array_to_string(agg_ladder(), ', ')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
END $$;
