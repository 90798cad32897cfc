-- requires: 2
-- The calendar in SQL: the same buckets, expected counts and quality as
-- src/calendar.rs (a test sweeps 2000-2040 to prove it).
------------------------------------------------------------------------------
-- Pure helpers: plain SQL, IMMUTABLE, so the planner inlines them into the
-- set-based catch-up. They read no table, so EXECUTE stays public.
------------------------------------------------------------------------------

-- fx and metals trade on the FX clock; everything else is cut in UTC. The
-- class is read as Rust reads it: case and surrounding blanks do not matter.
CREATE OR REPLACE FUNCTION agg_calendar(asset_class text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN lower(btrim($1)) IN ('fx', 'metal') THEN 'fx' ELSE 'utc' END
$$;

-- The ladder: the derived timeframes in the order they are built and
-- claimed (each after its source, agg_source_timeframe). The one list in
-- SQL; src/calendar.rs holds Rust's, and a test holds the two equal.
CREATE OR REPLACE FUNCTION agg_ladder() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT ARRAY['5m', '15m', '1h', '4h', '1d', '1w']
$$;

-- Claim order of the ladder; NULL for anything that is not a derived timeframe.
CREATE OR REPLACE FUNCTION agg_timeframe_rank(timeframe text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT array_position(agg_ladder(), $1)
$$;

-- Which timeframe each derived timeframe is built from (the ladder's edges).
CREATE OR REPLACE FUNCTION agg_source_timeframe(timeframe text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE $1 WHEN '5m' THEN '1m' WHEN '15m' THEN '5m' WHEN '1h' THEN '5m'
                 WHEN '4h' THEN '1h' WHEN '1d' THEN '1h' WHEN '1w' THEN '1d' END
$$;

-- Nominal length of a bucket (fx 4h/1d/1w buckets may differ around DST).
CREATE OR REPLACE FUNCTION agg_timeframe_interval(timeframe text) RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE $1 WHEN '1m' THEN interval '1 minute' WHEN '5m' THEN interval '5 minutes'
                 WHEN '15m' THEN interval '15 minutes' WHEN '1h' THEN interval '1 hour'
                 WHEN '4h' THEN interval '4 hours' WHEN '1d' THEN interval '1 day'
                 WHEN '1w' THEN interval '7 days' END
$$;

-- The FXT bucket key of an instant: its FX-clock wall time (New York + 7 h,
-- through the IANA zone so DST is followed) floored to 4 h, the day or the
-- ISO week (Monday 00:00 FXT = Sunday 17:00 New York).
CREATE OR REPLACE FUNCTION agg_fxt_key(timeframe text, ts timestamptz) RETURNS timestamp
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
-- (The hour is subtracted in UTC wall time: immutable operators only.)
CREATE OR REPLACE FUNCTION agg_fxt_key_start(fxt_key timestamp) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN ((((($1 - interval '7 hours') AT TIME ZONE 'America/New_York') AT TIME ZONE 'UTC'
             - interval '1 hour') AT TIME ZONE 'UTC') AT TIME ZONE 'America/New_York')
         = $1 - interval '7 hours'
    THEN ((($1 - interval '7 hours') AT TIME ZONE 'America/New_York') AT TIME ZONE 'UTC'
          - interval '1 hour') AT TIME ZONE 'UTC'
    ELSE ($1 - interval '7 hours') AT TIME ZONE 'America/New_York'
  END
$$;

-- Start (label) of the bucket of `timeframe` that contains `ts`.
CREATE OR REPLACE FUNCTION agg_bucket_start(calendar text, timeframe text, ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN $1 = 'fx' AND $2 IN ('4h', '1d', '1w') THEN agg_fxt_key_start(agg_fxt_key($2, $3))
    -- 2000-01-03 is a Monday, so 7-day bins start on Mondays 00:00 UTC.
    ELSE date_bin(agg_timeframe_interval($2), $3, timestamptz '2000-01-03 00:00+00')
  END
$$;

-- End (exclusive) of the bucket that starts at `bucket_start`. UTC buckets
-- have a fixed length, added in UTC wall time: the same whatever the
-- session's TimeZone, and immutable operators only (timestamptz + interval
-- is merely stable), so the planner inlines this function into its callers
-- instead of planning its body on every call.
CREATE OR REPLACE FUNCTION agg_bucket_end(calendar text, timeframe text, bucket_start timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN $1 = 'fx' AND $2 IN ('4h', '1d', '1w')
      THEN agg_fxt_key_start(agg_fxt_key($2, $3) + agg_timeframe_interval($2))
    ELSE (($3 AT TIME ZONE 'UTC') + agg_timeframe_interval($2)) AT TIME ZONE 'UTC'
  END
$$;

-- The first bucket boundary at or after ts: where a task starting at ts begins.
CREATE OR REPLACE FUNCTION agg_first_bucket_at_or_after(calendar text, timeframe text, ts timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN agg_bucket_start($1, $2, $3) < $3
              THEN agg_bucket_end($1, $2, agg_bucket_start($1, $2, $3))
              ELSE agg_bucket_start($1, $2, $3) END
$$;

-- Source bars a full bucket has (the ladder table of docs/DESIGN.md).
CREATE OR REPLACE FUNCTION agg_expected_candles(calendar text, timeframe text, bucket_start timestamptz) RETURNS integer
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
CREATE OR REPLACE FUNCTION agg_quality(source_candles integer, expected_candles integer) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT (CASE
    WHEN $1 >= $2 THEN 2
    WHEN 5 * $1 >= 4 * $2 THEN 1
    WHEN 5 * $1 >= 3 * $2 THEN 0
    WHEN 20 * $1 >= 11 * $2 THEN -1
  END)::smallint
$$;
