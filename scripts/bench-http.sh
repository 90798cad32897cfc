#!/usr/bin/env bash
# Latency of `barkeep serve` side by side with plain SQL (BENCHMARKS.md):
# /api/bars of 10,000 5m bars and /metrics with 1,000 symbols (6,000 tasks),
# measured with wrk, against pgbench running the same query of the same rows.
# Usage: scripts/bench-http.sh [duration_seconds]   (needs wrk, pgbench, psql)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
bin=target/release/barkeep
home=$(mktemp -d /tmp/barkeep-bench-http-XXXXXX)
chmod 755 "$home"
export BARKEEP_HOME="$home/.barkeep"
$bin pg start >/dev/null
sock=$($bin pg status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["socket_dir"])')
port=$(sed -n 's/^port *= *//p' "$BARKEEP_HOME"/data/postgresql.conf 2>/dev/null | head -1)
db="host=$sock dbname=barkeep user=postgres${port:+ port=$port}"
export DATABASE_URL="$db"
$bin db up >/dev/null

# 1,000 fx symbols and their 6,000 tasks; EURUSD gets 6 weeks of 1m bars
# (a random walk, FX weekends closed) and a caught-up ladder, the others one
# 1m bar each so every task has a lag.
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
      FROM generate_series(timestamptz '2025-07-01 00:00+00', '2025-08-11 23:59+00', interval '1 minute') ts
      WHERE extract(isodow FROM ts) < 6) s
ON CONFLICT DO NOTHING;
SELECT tasks_total FROM sync_agg_state_from_registry('prod', '2025-07-01 00:00+00');
SQL
$bin run --once >/dev/null
# A run log of 10,000 runs, as a busy worker leaves it.
psql "$db" -q -v ON_ERROR_STOP=1 -c "INSERT INTO agg_run_log (canonical_symbol, timeframe, started_at, finished_at, status, bars_created)
  SELECT 'SYM0001', '5m', now() - i * interval '1 second', now() - i * interval '1 second' + (random() * 0.2) * interval '1 second', 'success', 1
  FROM generate_series(1, 10000) i; ANALYZE;"
psql "$db" -At -c "SELECT 'tasks', count(*) FROM data_agg_state UNION ALL
  SELECT 'EURUSD 5m bars', count(*) FROM derived_data_bars WHERE canonical_symbol = 'EURUSD' AND timeframe = '5m'"

$bin serve --addr 127.0.0.1:0 >"$home/serve.log" 2>&1 &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null; $bin pg stop >/dev/null' EXIT
for _ in $(seq 50); do grep -q "listening on" "$home/serve.log" && break; sleep 0.2; done
addr=$(sed -n 's/^barkeep serve: listening on //p' "$home/serve.log")
bars="http://$addr/api/bars?symbol=EURUSD&timeframe=5m&from=2025-07-01&limit=10000"
curl -s "$bars" | python3 -c 'import json,sys; p=json.load(sys.stdin); print("api/bars count", p["count"], "bytes", len(json.dumps(p)))'
curl -s "http://$addr/metrics" | wc -lc | awk '{print "metrics lines", $1, "bytes", $2}'

cat >"$home/bars.sql" <<'SQL'
SELECT ts_utc, open, high, low, close, vol, vwap, trade_count, source_timeframe, source_candles,
       expected_candles, quality_score, is_partial
FROM derived_data_bars
WHERE canonical_symbol = 'EURUSD' AND timeframe = '5m' AND deleted_at IS NULL
  AND ts_utc >= '2025-07-01' ORDER BY ts_utc LIMIT 10001;
SQL
for c in 1 4; do
  echo "== concurrency $c, ${secs}s each"
  echo "-- wrk /api/bars (10,000 bars)"
  wrk -t1 -c$c -d${secs}s --latency "$bars" | sed -n '/Latency Distribution/,/Requests\/sec/p'
  echo "-- pgbench, the same rows by plain SQL"
  (cd "$home" && rm -f pgbench_log.* && pgbench -n -f bars.sql -c $c -j 1 -T $secs -l -h "$sock" ${port:+-p $port} -U postgres barkeep >/dev/null 2>&1 &&
    cat pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "   p50 %.2fms  p99 %.2fms  n=%d\n", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, NR}')
  echo "-- wrk /metrics (6,000 tasks)"
  wrk -t1 -c$c -d${secs}s --latency "http://$addr/metrics" | sed -n '/Latency Distribution/,/Requests\/sec/p'
done
echo "-- psql \\timing of the bars query (5 runs)"
for _ in 1 2 3 4 5; do psql "$db" -X -q -o /dev/null -c '\timing on' -f "$home/bars.sql" | grep Time; done
