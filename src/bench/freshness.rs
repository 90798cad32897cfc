//! `barkeep bench freshness`: how soon bars appear with a real-time feed.
//!
//! In a scratch database it registers N symbols of one asset class (6
//! tasks each), loads the last hours of 1-minute bars, starts `barkeep run` as a child
//! process and lets it catch up. Then, for M minutes of wall time, it feeds
//! every symbol's bar of the minute that just ended, `--feed-lag-seconds`
//! after the minute's end, in one statement, as a live feed would. It
//! reports, per timeframe, the latency of each bar's appearance after the
//! 1m bar that completed it landed (5m), or after its last source bar
//! appeared (15m, 1h, ...), as p50/p99/max; and the worker process's CPU
//! and memory while idle and under the feed. A bar has appeared when
//! another session can read it: a watcher polls every 100 ms and notes when
//! each bar is first seen (an upper bound: a bar's `created_at` is the start
//! of the transaction that wrote it, which can be earlier than its commit).

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Stdio};
use std::time::{Duration as StdDuration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Duration, DurationRound, Utc};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::db::Database;
use crate::model::AssetClass;

/// Settings of the freshness benchmark.
#[derive(Debug, Clone)]
pub struct FreshnessConfig {
    /// Symbols fed (six tasks each), 1 to 9999.
    pub symbols: usize,
    /// Minutes of wall time to feed.
    pub minutes: u32,
    /// Each minute's bars land this many seconds after the minute ends.
    pub feed_lag_seconds: u64,
    /// The worker's lanes (`run --concurrency`).
    pub concurrency: usize,
    /// Asset class of the symbols (their calendar).
    pub class: AssetClass,
    /// Hours of 1m bars loaded before the feed starts.
    pub preload_hours: u32,
    /// Scratch database (dropped and created again on the same server).
    pub scratch_db: String,
}

/// Latencies of one timeframe, in milliseconds.
#[derive(Debug, serde::Serialize)]
pub struct Latency {
    pub timeframe: String,
    /// What the latency is measured from.
    pub after: String,
    pub bars: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// CPU and memory of the worker process over a window.
#[derive(Debug, serde::Serialize)]
pub struct Usage {
    pub window_seconds: f64,
    /// CPU time over wall time, in percent of one core.
    pub cpu_percent: f64,
    pub rss_mib: f64,
}

/// What the benchmark measured.
#[derive(Debug, serde::Serialize)]
pub struct FreshnessReport {
    pub symbols: usize,
    pub tasks: i64,
    pub minutes_fed: u32,
    pub feed_lag_seconds: u64,
    pub concurrency: usize,
    pub class: AssetClass,
    pub preload_hours: u32,
    pub catch_up_seconds: f64,
    pub latencies: Vec<Latency>,
    pub idle: Usage,
    pub under_load: Usage,
    pub peak_rss_mib: f64,
}

/// CPU seconds (user + system) and resident/peak memory of a process.
fn proc_usage(pid: u32) -> Result<(f64, f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> f64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    // utime and stime are fields 14 and 15 of stat (11 and 12 after the
    // name and state), in USER_HZ = 100 ticks per second on Linux.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    Ok((cpu, kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0))
}

fn usage_between(pid: u32, from: (Instant, f64), to: (Instant, f64)) -> Result<Usage> {
    let window = to.0.duration_since(from.0).as_secs_f64().max(1e-9);
    let (_, rss, _) = proc_usage(pid)?;
    Ok(Usage {
        window_seconds: window,
        cpu_percent: 100.0 * (to.1 - from.1) / window,
        rss_mib: rss,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn latency(timeframe: &str, after: &str, mut ms: Vec<f64>) -> Latency {
    ms.sort_by(|a, b| a.total_cmp(b));
    Latency {
        timeframe: timeframe.into(),
        after: after.into(),
        bars: ms.len(),
        p50_ms: percentile(&ms, 0.5),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
    }
}

/// Insert every symbol's 1m bars of the minutes [from, to).
async fn feed(
    client: &Client,
    symbols: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol, source)
             SELECT 'FR' || lpad(i::text, 4, '0'), '1m', t, 100 + i, 101 + i, 99 + i, 100.5 + i, 1, 'bench'
             FROM generate_series(0, $1 - 1) i,
                  generate_series($2::timestamptz, $3::timestamptz - interval '1 minute', interval '1 minute') t",
            &[&(symbols as i32), &from, &to],
        )
        .await
        .context("feeding 1m bars")?;
    Ok(())
}

/// A derived bar: symbol, timeframe, bucket start.
type BarKey = (String, String, DateTime<Utc>);

/// Poll every 100 ms for bars written since the last poll (allowing 10 s
/// for transactions that started before it) until `stop`; returns when each
/// bar was first seen.
async fn watch(db: Database, stop: CancellationToken) -> Result<HashMap<BarKey, DateTime<Utc>>> {
    let client = db.connect().await?;
    let mut seen = HashMap::new();
    let mut since = Utc::now() - Duration::seconds(10);
    loop {
        let polled = Utc::now();
        let rows = client
            .query(
                "SELECT canonical_symbol, timeframe, ts_utc FROM derived_data_bars
                 WHERE deleted_at IS NULL AND created_at >= $1",
                &[&since],
            )
            .await
            .context("watching for new bars")?;
        let at = Utc::now();
        for r in rows {
            seen.entry((r.get(0), r.get(1), r.get(2))).or_insert(at);
        }
        since = polled - Duration::seconds(10);
        tokio::select! {
            _ = tokio::time::sleep(StdDuration::from_millis(100)) => {}
            _ = stop.cancelled() => return Ok(seen),
        }
    }
}

/// Terminate the worker when dropped (the benchmark failed midway).
struct WorkerProcess(Child);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.0.wait();
        }
    }
}

/// Run the freshness benchmark on a scratch database next to `server`.
pub async fn measure(server: &Database, args: &FreshnessConfig) -> Result<FreshnessReport> {
    if args.symbols == 0 || args.symbols > 9999 {
        bail!("--symbols must be between 1 and 9999");
    }
    if server.config().get_dbname() == Some(args.scratch_db.as_str()) {
        bail!(
            "--scratch-db {} is the database barkeep is pointed at; give another name",
            args.scratch_db
        );
    }
    let scratch = super::scratch::recreate_scratch(server, &args.scratch_db).await?;
    let mut client = scratch.connect().await?;
    crate::migrate::up(&mut client, None).await?;
    let now: DateTime<Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    let minute = now.duration_trunc(Duration::minutes(1))?;
    let start =
        now.duration_trunc(Duration::hours(1))? - Duration::hours(i64::from(args.preload_hours));
    client
        .execute(
            "INSERT INTO core_asset_registry_all (canonical_symbol, asset_class, active, test_active)
             SELECT 'FR' || lpad(i::text, 4, '0'), $2, true, false FROM generate_series(0, $1 - 1) i",
            &[&(args.symbols as i32), &args.class.as_str()],
        )
        .await
        .context("registering the symbols")?;
    // The quiet-feed delay is set long so the catch-up and the idle wait
    // before the first fed minute (when the feed is silent) finalize
    // nothing early: what is measured is finality by the data's reach.
    let synced =
        crate::tasks::sync(&client, crate::model::Env::Prod, Some(start), Some(900)).await?;
    feed(&client, args.symbols, start, minute).await?;
    eprintln!(
        "bench freshness: {} symbols, {} tasks, backlog from {start}",
        args.symbols, synced.tasks_total
    );

    let exe = std::env::current_exe().context("finding the barkeep binary")?;
    let log_path =
        std::env::temp_dir().join(format!("barkeep-freshness-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let child = std::process::Command::new(exe)
        .args(["run", "--concurrency", &args.concurrency.to_string()])
        .env("DATABASE_URL", super::scratch::url_of(&scratch))
        .env("BARKEEP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting the worker")?;
    let worker = WorkerProcess(child);
    let pid = worker.0.id();
    eprintln!(
        "bench freshness: worker pid {pid}, log {}",
        log_path.display()
    );

    // Catch-up: wait until nothing is due or running.
    let t = Instant::now();
    loop {
        tokio::time::sleep(StdDuration::from_millis(250)).await;
        let busy: i64 = client
            .query_one(
                "SELECT count(*) FROM data_agg_state
                 WHERE status = 'running' OR (status = 'idle' AND next_run_at <= now())",
                &[],
            )
            .await?
            .get(0);
        if busy == 0 {
            break;
        }
        if t.elapsed() > StdDuration::from_secs(900) {
            bail!(
                "the worker did not catch up within 15 minutes (see {})",
                log_path.display()
            );
        }
    }
    let catch_up_seconds = t.elapsed().as_secs_f64();
    eprintln!("bench freshness: caught up in {catch_up_seconds:.1} s");

    // Idle until the first feed.
    // The first fed minute is the one ending after the catch-up, at least
    // 15 s away so that an idle window is measured; the minutes between the
    // backlog and it land together with it (a feed catching up after a gap).
    let mut next_end: DateTime<Utc> =
        Utc::now().duration_trunc(Duration::minutes(1))? + Duration::minutes(1);
    let lag = Duration::seconds(args.feed_lag_seconds as i64);
    if next_end + lag - Utc::now() < Duration::seconds(15) {
        next_end += Duration::minutes(1);
    }
    let idle_from = (Instant::now(), proc_usage(pid)?.0);
    // The minute before next_end is fed late too: a gap in the feed.
    let mut fed_from = minute;
    let mut landed: BTreeMap<DateTime<Utc>, DateTime<Utc>> = BTreeMap::new();
    let mut idle = None;
    let mut load_from = None;
    let stop_watch = CancellationToken::new();
    let watcher = tokio::spawn(watch(scratch.clone(), stop_watch.clone()));
    for _ in 0..args.minutes {
        let due = next_end + lag;
        let wait = (due - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        if idle.is_none() {
            let to = (Instant::now(), proc_usage(pid)?.0);
            idle = Some(usage_between(pid, idle_from, to)?);
            load_from = Some(to);
        }
        feed(&client, args.symbols, fed_from, next_end).await?;
        landed.insert(next_end, Utc::now());
        eprintln!("bench freshness: fed the minute ending {next_end}");
        fed_from = next_end;
        next_end += Duration::minutes(1);
    }
    tokio::time::sleep(StdDuration::from_secs(15)).await;
    let load_to = (Instant::now(), proc_usage(pid)?.0);
    let under_load = usage_between(pid, load_from.unwrap_or(load_to), load_to)?;
    let (_, _, peak) = proc_usage(pid)?;
    stop_watch.cancel();
    let seen = watcher.await.context("the bar watcher stopped")??;
    // A bar the watcher missed (none expected) counts from its created_at.
    let appeared = |key: BarKey, created: DateTime<Utc>| -> DateTime<Utc> {
        seen.get(&key).copied().unwrap_or(created)
    };

    // 5m: from the landing of the minute that completed the bucket.
    let first_end = landed.keys().next().copied().unwrap_or(next_end);
    let rows = client
        .query(
            "SELECT ts_utc + interval '5 minutes', created_at, canonical_symbol, ts_utc
             FROM derived_data_bars
             WHERE timeframe = '5m' AND deleted_at IS NULL AND ts_utc + interval '5 minutes' >= $1",
            &[&first_end],
        )
        .await?;
    let mut five = Vec::new();
    for r in rows {
        let end: DateTime<Utc> = r.get(0);
        let created = appeared((r.get(2), "5m".into(), r.get(3)), r.get(1));
        if let Some(land) = landed.get(&end) {
            five.push((created - *land).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    let mut latencies = vec![latency("5m", "its last 1m bar landed", five)];
    // Higher timeframes: from the appearance of their last source bar.
    for (tf, src, span) in [
        ("15m", "5m", 15),
        ("1h", "5m", 60),
        ("4h", "1h", 240),
        ("1d", "1h", 1440),
    ] {
        let rows = client
            .query(
                "SELECT b.canonical_symbol, b.ts_utc, b.created_at, s.ts_utc, s.created_at
                 FROM derived_data_bars b
                 JOIN derived_data_bars s ON s.canonical_symbol = b.canonical_symbol
                   AND s.timeframe = $2 AND s.deleted_at IS NULL
                   AND s.ts_utc = (SELECT max(x.ts_utc) FROM derived_data_bars x
                                   WHERE x.canonical_symbol = b.canonical_symbol
                                     AND x.timeframe = $2 AND x.deleted_at IS NULL
                                     AND x.ts_utc >= b.ts_utc
                                     AND x.ts_utc < b.ts_utc + make_interval(mins => $3))
                 WHERE b.timeframe = $1 AND b.deleted_at IS NULL
                   AND b.ts_utc + make_interval(mins => $3) >= $4",
                &[&tf, &src, &span, &first_end],
            )
            .await?;
        let ms: Vec<f64> = rows
            .iter()
            .map(|r| {
                let symbol: String = r.get(0);
                let bar = appeared((symbol.clone(), tf.into(), r.get(1)), r.get(2));
                let source = appeared((symbol, src.into(), r.get(3)), r.get(4));
                (bar - source).num_microseconds().unwrap_or(0) as f64 / 1000.0
            })
            .collect();
        if !ms.is_empty() {
            latencies.push(latency(tf, &format!("its last {src} bar appeared"), ms));
        }
    }
    drop(worker);
    drop(client);
    super::scratch::drop_scratch(server, &args.scratch_db).await?;
    Ok(FreshnessReport {
        symbols: args.symbols,
        tasks: i64::from(synced.tasks_total),
        minutes_fed: args.minutes,
        feed_lag_seconds: args.feed_lag_seconds,
        concurrency: args.concurrency,
        class: args.class,
        preload_hours: args.preload_hours,
        catch_up_seconds,
        latencies,
        idle: idle.unwrap_or(Usage {
            window_seconds: 0.0,
            cpu_percent: 0.0,
            rss_mib: 0.0,
        }),
        under_load,
        peak_rss_mib: peak,
    })
}
