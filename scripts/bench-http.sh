#!/usr/bin/env bash
# Latency of `barkeep serve` side by side with plain SQL (BENCHMARKS.md, "HTTP"):
# /api/bars of 10,000 5m bars and /metrics with 1,000 symbols (6,000 tasks),
# measured with wrk, each followed at once by pgbench running the same query
# of the same rows, so both sides see the same machine load. Prints p50 and
# p99 of each side and their ratios.
# Usage: scripts/bench-http.sh [seconds_per_run]   (needs wrk, pgbench, psql, curl)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
bin=$PWD/target/release/barkeep
home=$(mktemp -d "${TMPDIR:-/tmp}/barkeep-bench-http-XXXXXX")
chmod 755 "$home"
export BARKEEP_HOME="$home/.barkeep"
unset DATABASE_URL
"$bin" pg start >/dev/null
sock=$("$bin" pg status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["socket_dir"])')
db="host=$sock dbname=barkeep user=postgres"
serve_pid=
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null
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
  FROM generate_series(1, 10000) i; ANALYZE;"
psql "$db" -At -c "SELECT 'tasks', count(*) FROM data_agg_state UNION ALL
  SELECT 'EURUSD 5m bars', count(*) FROM derived_data_bars WHERE canonical_symbol = 'EURUSD' AND timeframe = '5m'"

"$bin" serve --addr 127.0.0.1:0 >"$home/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 50); do grep -q "listening on" "$home/serve.log" && break; sleep 0.2; done
addr=$(sed -n 's/^barkeep serve: listening on //p' "$home/serve.log")
bars="http://$addr/api/bars?symbol=EURUSD&timeframe=5m&from=2025-07-01&limit=10000"
metrics="http://$addr/metrics"
curl -sf "$bars" | python3 -c 'import json,sys; p=json.load(sys.stdin); print("api/bars count", p["count"], "bytes", len(json.dumps(p)))'
curl -sf "$metrics" | wc -lc | awk '{print "metrics lines", $1, "bytes", $2}'

# The same rows by plain SQL: the bars as /api/bars reads them
# (src/bars.rs, `stored`), and the task read behind /metrics
# (src/ops/status.rs, `tasks`) with the counter sums it adds.
cat >"$home/bars.sql" <<'SQL'
SELECT ts_utc, open, high, low, close, vol, vwap, trade_count, source_timeframe, source_candles,
       expected_candles, quality_score, is_partial
FROM derived_data_bars
WHERE canonical_symbol = 'EURUSD' AND timeframe = '5m' AND deleted_at IS NULL
  AND ts_utc >= '2025-07-01' ORDER BY ts_utc ASC LIMIT 10001;
SQL
cat >"$home/metrics.sql" <<'SQL'
WITH symbols AS MATERIALIZED (
  SELECT DISTINCT canonical_symbol FROM data_agg_state
  WHERE (NULL::text IS NULL OR canonical_symbol = NULL)),
newest AS MATERIALIZED (
  SELECT y.canonical_symbol,
         (SELECT b.ts_utc FROM data_bars b
          WHERE b.canonical_symbol = y.canonical_symbol AND b.timeframe = '1m'
          ORDER BY b.ts_utc DESC LIMIT 1) AS latest_1m
  FROM symbols y)
SELECT s.canonical_symbol, s.timeframe, coalesce(r.asset_class, 'crypto'), s.status,
       s.enabled, s.is_mandatory, s.task_priority, s.agg_start_utc,
       s.last_agg_bar_ts_utc, s.next_run_at, s.last_successful_at_utc,
       s.hard_fail_streak, s.transient_fail_streak, s.last_error, s.total_runs,
       s.total_bars_created, n.latest_1m
FROM data_agg_state s
LEFT JOIN core_asset_registry_all r ON r.canonical_symbol = s.canonical_symbol
JOIN newest n ON n.canonical_symbol = s.canonical_symbol;
SELECT timeframe, sum(total_bars_created)::bigint, sum(total_bars_quality_poor)::bigint,
       sum(total_runs)::bigint, sum(lease_recoveries)::bigint
FROM data_agg_state GROUP BY timeframe;
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

printf "%-28s %5s %9s %9s %9s %9s %9s\n" "what" "conns" "p50 ms" "p99 ms" "req/s" "p50 ratio" "p99 ratio"
for c in 1 4; do
  for what in bars metrics; do
    url=$bars; sql=$home/bars.sql; label="/api/bars 10,000 bars"
    if [ "$what" = metrics ]; then url=$metrics; sql=$home/metrics.sql; label="/metrics 6,000 tasks"; fi
    read -r h50 h99 hrps < <(wrk_run "$c" "$url")
    read -r s50 s99 srps < <(pgbench_run "$c" "$sql")
    printf "%-28s %5d %9.2f %9.2f %9.0f\n" "$label (wrk)" "$c" "$h50" "$h99" "$hrps"
    printf "%-28s %5d %9.2f %9.2f %9.0f %9.2f %9.2f\n" "  same SQL (pgbench)" "$c" "$s50" "$s99" "$srps" \
      "$(echo "$h50 / $s50" | bc -l)" "$(echo "$h99 / $s99" | bc -l)"
  done
done
echo "-- psql \\timing of the bars query (5 runs)"
for _ in 1 2 3 4 5; do psql "$db" -X -q -o /dev/null -c '\timing on' -f "$home/bars.sql" | grep Time; done
