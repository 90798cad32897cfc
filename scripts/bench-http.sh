#!/usr/bin/env bash
# Latency of `barkeep serve` side by side with plain SQL (BENCHMARKS.md, "HTTP"):
# /api/bars of 10,000 5m bars, /metrics with 1,000 symbols (6,000 tasks), and
# the dashboard's other reads at that scale, measured with wrk; /api/bars,
# /metrics and /api/quality are each followed at once by pgbench running the
# same queries for the same rows, so both sides see the same machine load.
# Prints p50 and p99 of each and the ratios of the server to its SQL.
#
# Usage: scripts/bench-http.sh [seconds_per_run]   (needs wrk, pgbench, psql, curl)
#   BIN=path         the barkeep binary to measure (default target/release/barkeep)
#   BIN_BEFORE=path  also serve this binary from the same database and measure
#                    it beside BIN, endpoint by endpoint (before/after a change)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
bin=${BIN:-$PWD/target/release/barkeep}
before=${BIN_BEFORE:-}
home=$(mktemp -d "${TMPDIR:-/tmp}/barkeep-bench-http-XXXXXX")
chmod 755 "$home"
export BARKEEP_HOME="$home/.barkeep"
unset DATABASE_URL
"$bin" pg start >/dev/null
sock=$("$bin" pg status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["socket_dir"])')
db="host=$sock dbname=barkeep user=postgres"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$bin" pg stop >/dev/null
}
trap cleanup EXIT
"$bin" db up >/dev/null

# 1,000 fx symbols and their 6,000 tasks; EURUSD gets 9 weeks of 1m bars
# (FX weekends closed) and a caught-up ladder, the others one 1m bar each so
# every task has a lag.
psql "$db" -q -v ON_ERROR_STOP=1 <<'SQL'
INSERT INTO core_asset_registry_all (canonical_symbol, asset_class)
SELECT 'SYM' || lpad(i::text, 4, '0'), 'fx' FROM generate_series(1, 999) i
UNION ALL SELECT 'EURUSD', 'fx'
ON CONFLICT DO NOTHING;
INSERT INTO data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol)
SELECT canonical_symbol, '1m', '2025-08-11 12:00+00', 1, 1.1, 0.9, 1, 0
FROM core_asset_registry_all WHERE canonical_symbol <> 'EURUSD'
ON CONFLICT DO NOTHING;
INSERT INTO data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol)
SELECT 'EURUSD', '1m', ts, p, p + 0.0003, p - 0.0003, p + 0.0001, 1
FROM (SELECT ts, 1.1 + 0.01 * sin(extract(epoch FROM ts) / 20000.0) AS p
      FROM generate_series(timestamptz '2025-07-01 00:00+00', '2025-08-29 23:59+00', interval '1 minute') ts
      WHERE extract(isodow FROM ts) < 6) s
ON CONFLICT DO NOTHING;
SELECT tasks_total FROM sync_agg_state_from_registry('prod', '2025-07-01 00:00+00');
SQL
"$bin" run --once >/dev/null 2>&1
# A run log of 10,000 runs, as a busy worker leaves it.
psql "$db" -q -v ON_ERROR_STOP=1 -c "INSERT INTO agg_run_log (canonical_symbol, timeframe, started_at, finished_at, status, bars_created)
  SELECT 'SYM0001', '5m', now() - i * interval '1 second', now() - i * interval '1 second' + (random() * 0.2) * interval '1 second', 'success', 1
  FROM generate_series(1, 10000) i;" -c "VACUUM ANALYZE;"
psql "$db" -At -c "SELECT 'tasks', count(*) FROM data_agg_state UNION ALL
  SELECT 'EURUSD 5m bars', count(*) FROM derived_data_bars WHERE canonical_symbol = 'EURUSD' AND timeframe = '5m'"

# Serve a binary on a free port; prints its address.
serve() {
  local log=$home/serve-$2.log
  "$1" serve --addr 127.0.0.1:0 >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do grep -q "listening on" "$log" && break; sleep 0.2; done
  sed -n 's/^barkeep serve: listening on //p' "$log"
}
addr=$(serve "$bin" after)
addr_before=
if [ -n "$before" ]; then addr_before=$(serve "$before" before); fi
bars="/api/bars?symbol=EURUSD&timeframe=5m&from=2025-07-01&limit=10000"
curl -sf "http://$addr$bars" | python3 -c 'import json,sys; p=json.load(sys.stdin); print("api/bars count", p["count"], "bytes", len(json.dumps(p)))'
curl -sf "http://$addr/metrics" | wc -lc | awk '{print "metrics lines", $1, "bytes", $2}'
if [ -n "$before" ]; then
  # Both binaries answer the same: the bars byte for byte, the metrics
  # line for line but for the values that move with the clock and the
  # float sum of run durations (added up in another order).
  cmp <(curl -sf "http://$addr$bars") <(curl -sf "http://$addr_before$bars") && echo "api/bars: same bytes before and after"
  strip() {
    grep -v -e '^barkeep_scrape_duration_seconds ' -e '^barkeep_task_seconds_since_success' \
      -e '^barkeep_run_duration_seconds_sum ' | sort
  }
  diff <(curl -sf "http://$addr/metrics" | strip) <(curl -sf "http://$addr_before/metrics" | strip) >/dev/null &&
    echo "metrics: same series and values before and after (but seconds since success and the duration sum)" ||
    echo "metrics: series or values differ before and after"
fi

# The same rows by plain SQL: the bars as /api/bars reads them (src/bars.rs,
# `stored`); the four reads of /metrics (src/http/metrics.rs), which the
# server runs on two connections at once and pgbench one after the other;
# the newest 1m bar and the quality query of /api/quality
# (src/http/reads.rs, src/ops/quality.rs).
cat >"$home/bars.sql" <<'SQL'
SELECT ts_utc, open, high, low, close, vol, vwap, trade_count, source_timeframe, source_candles,
       expected_candles, quality_score, is_partial
FROM derived_data_bars
WHERE canonical_symbol = 'EURUSD' AND timeframe = '5m' AND deleted_at IS NULL
  AND ts_utc >= '2025-07-01' ORDER BY ts_utc ASC LIMIT 10001;
SQL
cat >"$home/metrics.sql" <<'SQL'
SELECT canonical_symbol, timeframe, status, hard_fail_streak, last_agg_bar_ts_utc,
       last_successful_at_utc,
       enabled AND status = 'idle' AND next_run_at <= now(),
       coalesce(status = 'running' AND lease_expires_at < now(), false),
       total_bars_created, total_bars_quality_poor, total_runs, lease_recoveries, now()
FROM data_agg_state;
SELECT y.canonical_symbol,
       (SELECT b.ts_utc FROM data_bars b
        WHERE b.canonical_symbol = y.canonical_symbol AND b.timeframe = '1m'
        ORDER BY b.ts_utc DESC LIMIT 1) AS latest_1m
FROM (SELECT DISTINCT canonical_symbol FROM data_agg_state
      WHERE (NULL::text IS NULL OR canonical_symbol = NULL)) y;
SELECT width_bucket(-d, '{-300,-60,-30,-10,-5,-2.5,-1,-0.5,-0.25,-0.1,-0.05,-0.025,-0.01,-0.005}'::float8[]),
       failed, count(*), coalesce(sum(d), 0)::float8
FROM (SELECT CASE WHEN finished_at IS NOT NULL
                  THEN date_part('epoch', finished_at - started_at) END AS d,
             CASE WHEN status <> 'success' THEN coalesce(fail_kind, 'hard') END AS failed
      FROM agg_run_log OFFSET 0) runs
GROUP BY 1, 2;
SELECT count(*) FROM ingest_quarantine;
SQL
newest_1m="SELECT max(latest_1m) FROM (SELECT r.canonical_symbol,
       (SELECT d.ts_utc FROM data_bars d WHERE d.canonical_symbol = r.canonical_symbol AND d.timeframe = '1m'
        ORDER BY d.ts_utc DESC LIMIT 1) AS latest_1m FROM core_asset_registry_all r) n"
quality_from=$(psql "$db" -At -c "SELECT ($newest_1m) - interval '7 days'")
cat >"$home/quality.sql" <<SQL
$newest_1m;
SELECT d.canonical_symbol, d.timeframe, count(*),
       count(*) FILTER (WHERE d.quality_score >= 1),
       count(*) FILTER (WHERE d.quality_score <= 0),
       round(100.0 * count(*) FILTER (WHERE d.quality_score >= 1) / count(*), 1)::float8,
       coalesce(sum(m.present), 0)::bigint,
       sum(d.expected_candles * CASE d.source_timeframe WHEN '1m' THEN 1 WHEN '5m' THEN 5
             WHEN '15m' THEN 15 WHEN '1h' THEN 60 WHEN '4h' THEN 240 WHEN '1d' THEN 1440
             ELSE 0 END)::bigint
FROM derived_data_bars d
LEFT JOIN core_asset_registry_all r ON r.canonical_symbol = d.canonical_symbol
CROSS JOIN LATERAL (
  SELECT count(*) AS present FROM data_bars b
  WHERE b.canonical_symbol = d.canonical_symbol AND b.timeframe = '1m'
    AND b.ts_utc >= d.ts_utc
    AND b.ts_utc < agg_bucket_end(agg_calendar(coalesce(r.asset_class, 'crypto')),
                                  d.timeframe, d.ts_utc)
) m
WHERE d.deleted_at IS NULL AND NOT d.is_partial AND d.ts_utc >= '$quality_from'
GROUP BY d.canonical_symbol, d.timeframe;
SQL

# p50 and p99 in ms of a wrk run: "50%  3.21ms" lines of --latency.
wrk_run() {
  wrk -t1 -c"$1" -d"${secs}s" --latency "$2" | tee -a "$home/wrk.log" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    /Requests\/sec/ { rps = $2 }
    END { printf "%.2f %.2f %.0f\n", p50, p99, rps }'
}
# p50 and p99 in ms of a pgbench run, from its per-transaction log.
pgbench_run() {
  (cd "$home" && rm -f pgbench_log.* &&
    pgbench -n -f "$2" -c "$1" -j 1 -T "$secs" -l -h "$sock" -U postgres barkeep >"$home/pgbench.out" 2>&1 &&
    cat pgbench_log.* | awk '{print $3}' | sort -n |
      awk '{a[NR]=$1} END {printf "%.2f %.2f %.0f\n", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, NR/'"$secs"'}')
}

printf "%-30s %5s %9s %9s %9s %9s %9s\n" "what" "conns" "p50 ms" "p99 ms" "req/s" "p50 ratio" "p99 ratio"
# One endpoint: the binary before (if any), the binary measured, then its
# SQL (if any) with the ratios of the server's latency to the SQL's.
measure() {
  local c=$1 label=$2 path=$3 sql=${4:-}
  local h50 h99 hrps s50 s99 srps b50 b99 brps
  if [ -n "$addr_before" ]; then
    read -r b50 b99 brps < <(wrk_run "$c" "http://$addr_before$path")
    printf "%-30s %5d %9.2f %9.2f %9.0f\n" "$label before" "$c" "$b50" "$b99" "$brps"
  fi
  read -r h50 h99 hrps < <(wrk_run "$c" "http://$addr$path")
  printf "%-30s %5d %9.2f %9.2f %9.0f\n" "$label" "$c" "$h50" "$h99" "$hrps"
  if [ -n "$sql" ]; then
    read -r s50 s99 srps < <(pgbench_run "$c" "$sql")
    printf "%-30s %5d %9.2f %9.2f %9.0f %9.2f %9.2f\n" "  same SQL (pgbench)" "$c" "$s50" "$s99" "$srps" \
      "$(echo "$h50 / $s50" | bc -l)" "$(echo "$h99 / $s99" | bc -l)"
  fi
}
for c in 1 4; do
  measure "$c" "/api/bars 10,000 bars" "$bars" "$home/bars.sql"
  measure "$c" "/metrics 6,000 tasks" "/metrics" "$home/metrics.sql"
done
measure 1 "/api/quality" "/api/quality" "$home/quality.sql"
for path in /api/tasks /api/alerts /api/health /api/runs?limit=50 /api/quarantine /api/symbols; do
  measure 1 "$path" "$path"
done
echo "-- psql \\timing of the bars query (5 runs)"
for _ in 1 2 3 4 5; do psql "$db" -X -q -o /dev/null -c '\timing on' -f "$home/bars.sql" | grep Time; done
