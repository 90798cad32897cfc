//! A worker left running (`barkeep run` as a real process): complete bars
//! as soon as their last minute lands, quiet buckets at end + delay, hard
//! failures isolated, several workers sharing one database, PostgreSQL
//! restarts, frozen workers, and clean stops.

use std::process::{Child, Stdio};
use std::time::{Duration as StdDuration, Instant};

use barkeep::assets::AssetClass;
use chrono::{DateTime, Duration, DurationRound, Utc};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio_postgres::Client;

use crate::common::{barkeep_on, stderr, TestDb};
use crate::fixtures::{live_bars, load_fx, register, LiveBar, OwnCluster};

fn spawn(url: &str, args: &[&str]) -> Child {
    barkeep_on(url, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting barkeep")
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).expect("signalling the worker");
}

/// Wait for a child to exit, killing it after `limit` (a hang is a failure).
async fn wait_exit(child: &mut Child, limit: StdDuration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("barkeep still running after {limit:?}");
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

fn child_stderr(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// Poll `sql` (one bigint) until it returns `want`; panics after `limit`.
async fn wait_count(c: &Client, sql: &str, want: i64, limit: StdDuration) {
    let deadline = Instant::now() + limit;
    loop {
        let n: i64 = c.query_one(sql, &[]).await.unwrap().get(0);
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: still {n}, not {want}, after {limit:?}"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

async fn db_now(c: &Client) -> DateTime<Utc> {
    c.query_one("SELECT now()", &[]).await.unwrap().get(0)
}

/// Insert the 1m bars of minutes `minutes` after `start` with plain SQL.
async fn insert_minutes(
    c: &Client,
    symbol: &str,
    start: DateTime<Utc>,
    minutes: std::ops::Range<i64>,
) {
    let ts: Vec<DateTime<Utc>> = minutes.map(|m| start + Duration::minutes(m)).collect();
    c.execute(
        "INSERT INTO data_bars (canonical_symbol, timeframe, ts_utc, open, high, low, close, vol, source)
         SELECT $1, '1m', t, 100, 101, 99, 100.5, 1, 'test' FROM unnest($2::timestamptz[]) t",
        &[&symbol, &ts],
    )
    .await
    .unwrap();
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:02}")).collect()
}

const COUNT_5M: &str =
    "SELECT count(*) FROM derived_data_bars WHERE timeframe = '5m' AND deleted_at IS NULL";
const COUNT_15M: &str =
    "SELECT count(*) FROM derived_data_bars WHERE timeframe = '15m' AND deleted_at IS NULL";

#[tokio::test]
async fn complete_buckets_are_final_when_their_last_minute_lands_and_quiet_ones_at_end_plus_delay()
{
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let now = db_now(&c).await;
    let start = now.duration_trunc(Duration::minutes(15)).unwrap() - Duration::minutes(30);
    register(&c, "BTCUSD", AssetClass::Crypto, &start.to_rfc3339()).await;
    // A long delay: nothing here becomes final by the clock alone.
    let out = db.cli(&["task", "delay", "BTCUSD", "5m", "--seconds", "3600"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut worker = spawn(&db.url, &["run", "--lease-seconds", "10"]);

    // 14 minutes: two complete 5m buckets, the third lacks its last minute.
    insert_minutes(&c, "BTCUSD", start, 0..14).await;
    wait_count(&c, COUNT_5M, 2, StdDuration::from_secs(30)).await;
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    assert_eq!(
        db.count(COUNT_5M).await,
        2,
        "an incomplete bucket was finalized"
    );
    assert_eq!(db.count(COUNT_15M).await, 0);

    // Its last minute lands: the 5m bar and the 15m bar above it follow.
    insert_minutes(&c, "BTCUSD", start, 14..15).await;
    wait_count(&c, COUNT_15M, 1, StdDuration::from_secs(30)).await;
    let full = db
        .count(
            "SELECT count(*) FROM derived_data_bars WHERE deleted_at IS NULL
             AND ((timeframe = '5m' AND source_candles = 5) OR (timeframe = '15m' AND source_candles = 3))",
        )
        .await;
    assert_eq!(full, 4, "every bar has all its sources");

    // The feed goes quiet after 3 minutes of the next bucket: it is final
    // at end + delay, with 3 of 5 minutes.
    insert_minutes(&c, "BTCUSD", start, 15..18).await;
    let end = start + Duration::minutes(20);
    let delay = (db_now(&c).await + Duration::seconds(3) - end).num_seconds() + 1;
    let out = db.cli(&[
        "task",
        "delay",
        "BTCUSD",
        "5m",
        "--seconds",
        &delay.to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_count(&c, COUNT_5M, 4, StdDuration::from_secs(30)).await;
    let row = c
        .query_one(
            "SELECT b.source_candles, b.quality_score, b.created_at >= $1
             FROM derived_data_bars b WHERE b.timeframe = '5m' AND b.ts_utc = $2",
            &[
                &(end + Duration::seconds(delay)),
                &(end - Duration::minutes(5)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_eq!(row.get::<_, i16>(1), 0);
    assert!(row.get::<_, bool>(2), "finalized before end + delay");

    // A plain SQL delete of a minute behind the cursor wakes the worker
    // (the change-tracking trigger's NOTIFY), which rewrites its 5m bar
    // and the 15m bar above it (keeping the old one as history) well
    // before its next poll.
    c.execute(
        "DELETE FROM data_bars WHERE canonical_symbol = 'BTCUSD' AND ts_utc = $1",
        &[&(start + Duration::minutes(1))],
    )
    .await
    .unwrap();
    let first = start.to_rfc3339();
    wait_count(
        &c,
        &format!(
            "SELECT count(*) FROM derived_data_bars WHERE ts_utc = '{first}'
             AND ((timeframe = '5m' AND deleted_at IS NULL AND source_candles = 4)
                  OR (timeframe = '15m' AND deleted_at IS NOT NULL))"
        ),
        2,
        StdDuration::from_secs(10),
    )
    .await;

    signal(&worker, Signal::SIGTERM);
    let status = wait_exit(&mut worker, StdDuration::from_secs(30)).await;
    let log = child_stderr(&mut worker);
    assert!(status.success(), "{log}");
    assert!(log.contains("task run"), "one line per task run: {log}");
    assert!(
        log.contains("reaggregated=1 changed=1"),
        "the run that rewrote the bar says so: {log}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM data_agg_state WHERE status = 'running'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_task_failing_hard_ends_hard_failed_while_others_finish_and_reenable_brings_it_back() {
    let db = TestDb::migrated().await;
    let symbols = vec!["GOODUSD".to_string(), "BADUSD".to_string()];
    load_fx(&db.client().await, &symbols, 3, SEEDS).await;
    let c = db.client().await;
    c.batch_execute(
        "CREATE FUNCTION test_fail_bad() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.canonical_symbol = 'BADUSD' AND NEW.timeframe = '5m' THEN
             RAISE EXCEPTION 'injected failure';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER test_fail_bad BEFORE INSERT ON derived_data_bars
           FOR EACH ROW EXECUTE FUNCTION test_fail_bad();",
    )
    .await
    .unwrap();
    let mut worker = spawn(&db.url, &["run", "--once"]);
    let status = wait_exit(&mut worker, StdDuration::from_secs(120)).await;
    let log = child_stderr(&mut worker);
    assert!(!status.success(), "a failed task must fail --once: {log}");
    let row = c
        .query_one(
            "SELECT status, hard_fail_streak FROM data_agg_state
             WHERE canonical_symbol = 'BADUSD' AND timeframe = '5m'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "hard_failed");
    assert_eq!(row.get::<_, i32>(1), 3);
    assert_eq!(
        db.count("SELECT count(*) FROM agg_run_log WHERE canonical_symbol = 'BADUSD' AND status = 'failed'")
            .await,
        3
    );
    // The good symbol was not held up.
    let good = db
        .count(
            "SELECT count(*) FROM derived_data_bars
             WHERE canonical_symbol = 'GOODUSD' AND deleted_at IS NULL",
        )
        .await;
    assert!(good > 0);
    assert_eq!(
        db.count("SELECT count(*) FROM data_agg_state WHERE canonical_symbol = 'GOODUSD' AND (status <> 'idle' OR hard_fail_streak > 0)")
            .await,
        0
    );

    c.batch_execute("DROP TRIGGER test_fail_bad ON derived_data_bars")
        .await
        .unwrap();
    let out = db.cli(&["task", "reenable", "BADUSD"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = db.cli(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Both symbols' data span the same days: every cursor ends level.
    let uneven = db
        .count(
            "SELECT count(*) FROM data_agg_state g JOIN data_agg_state b USING (timeframe)
             WHERE g.canonical_symbol = 'GOODUSD' AND b.canonical_symbol = 'BADUSD'
               AND (g.last_agg_bar_ts_utc IS DISTINCT FROM b.last_agg_bar_ts_utc
                    OR b.status <> 'idle')",
        )
        .await;
    assert_eq!(uneven, 0);
    assert!(
        db.count("SELECT count(*) FROM derived_data_bars WHERE canonical_symbol = 'BADUSD'")
            .await
            > 0
    );
}

/// The seed of the first symbol's bars in this file's databases.
const SEEDS: u64 = 300;

/// Live bars of a clean single-worker run over the same data.
async fn clean_bars(symbols: &[String], days: i64) -> Vec<LiveBar> {
    let clean = TestDb::migrated().await;
    load_fx(&clean.client().await, symbols, days, SEEDS).await;
    let out = clean.cli(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    live_bars(&clean.client().await).await
}

/// Bars were written exactly once: no soft-deleted rewrite, and the run
/// log counts as many created bars as are stored.
async fn written_once(db: &TestDb) {
    let all = db.count("SELECT count(*) FROM derived_data_bars").await;
    let live = db
        .count("SELECT count(*) FROM derived_data_bars WHERE deleted_at IS NULL")
        .await;
    assert_eq!(all, live, "some bucket was written more than once");
    let logged = db
        .count("SELECT coalesce(sum(bars_created), 0)::bigint FROM agg_run_log WHERE status = 'success'")
        .await;
    assert_eq!(logged, live, "the run log counts every bar once");
}

#[tokio::test]
async fn four_workers_on_one_database_write_each_bucket_once() {
    let symbols = names("FX", 6);
    let expected = clean_bars(&symbols, 14).await;
    let db = TestDb::migrated().await;
    load_fx(&db.client().await, &symbols, 14, SEEDS).await;
    let mut workers: Vec<Child> = (0..4)
        .map(|_| spawn(&db.url, &["run", "--once", "--max-windows", "500"]))
        .collect();
    for w in &mut workers {
        let status = wait_exit(w, StdDuration::from_secs(180)).await;
        let log = child_stderr(w);
        assert!(status.success(), "{log}");
    }
    assert_eq!(live_bars(&db.client().await).await, expected);
    written_once(&db).await;
    let owners = db
        .count("SELECT count(DISTINCT worker_id) FROM agg_run_log")
        .await;
    assert!(owners >= 2, "only {owners} worker(s) did any work");
}

#[tokio::test]
async fn two_workers_on_a_backlog_share_the_runs() {
    let symbols = names("SH", 16);
    let db = TestDb::migrated().await;
    load_fx(&db.client().await, &symbols, 5, SEEDS).await;
    let mut a = spawn(&db.url, &["run", "--once"]);
    let mut b = spawn(&db.url, &["run", "--once"]);
    for w in [&mut a, &mut b] {
        let status = wait_exit(w, StdDuration::from_secs(180)).await;
        let log = child_stderr(w);
        assert!(status.success(), "{log}");
    }
    let c = db.client().await;
    let rows = c
        .query(
            "SELECT worker_id, count(*) FROM agg_run_log WHERE status = 'success'
             GROUP BY worker_id ORDER BY 2",
            &[],
        )
        .await
        .unwrap();
    let counts: Vec<i64> = rows.iter().map(|r| r.get(1)).collect();
    let total: i64 = counts.iter().sum();
    eprintln!("task runs per worker: {counts:?}");
    assert_eq!(counts.len(), 2, "both workers ran tasks: {counts:?}");
    assert!(
        counts[0] * 4 >= total,
        "a fair share is at least a quarter each: {counts:?}"
    );
    written_once(&db).await;
}

/// A PostgreSQL cluster of this test alone (it is restarted), with a
/// migrated `barkeep` database.
struct Restartable {
    own: OwnCluster,
    url: String,
}

impl Restartable {
    async fn start() -> Restartable {
        let own = tokio::task::spawn_blocking(|| OwnCluster::start("bk-restart", None))
            .await
            .unwrap();
        let admin = barkeep::db::Database::from_config(own.cluster.config("postgres"));
        admin.create_database_if_missing("barkeep").await.unwrap();
        let user = own
            .cluster
            .config("barkeep")
            .get_user()
            .unwrap()
            .to_string();
        let url = own.conn(&user, "barkeep");
        let db = barkeep::db::Database::from_url(&url).unwrap();
        barkeep::migrate::up(&mut db.connect().await.unwrap(), None)
            .await
            .unwrap();
        Restartable { own, url }
    }

    async fn client(&self) -> Client {
        barkeep::db::Database::from_url(&self.url)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Stop the server, keep it down for `down`, start it again; returns
    /// when it accepts connections.
    async fn restart(&self, down: StdDuration) -> Instant {
        let c = self.own.cluster.clone();
        tokio::task::spawn_blocking(move || c.stop())
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(down).await;
        let c = self.own.cluster.clone();
        tokio::task::spawn_blocking(move || c.ensure_running())
            .await
            .unwrap()
            .unwrap();
        Instant::now()
    }
}

#[tokio::test]
async fn the_worker_rides_out_postgresql_restarts_mid_run_and_mid_idle() {
    let symbols = names("RS", 3);
    let expected = clean_bars(&symbols, 14).await;
    let pg = Restartable::start().await;
    {
        load_fx(&pg.client().await, &symbols, 14, SEEDS).await;
    }
    // Mid-run: a catch-up in small chunks loses its server for 2 s.
    let mut worker = spawn(&pg.url, &["run", "--once", "--max-windows", "200"]);
    tokio::time::sleep(StdDuration::from_millis(800)).await;
    let back = pg.restart(StdDuration::from_secs(2)).await;
    // Work resumes within 10 s of the server being back.
    {
        let c = pg.client().await;
        let back_at = db_now(&c).await - Duration::milliseconds(back.elapsed().as_millis() as i64);
        loop {
            let resumed: i64 = c
                .query_one(
                    "SELECT count(*) FROM agg_run_log WHERE finished_at >= $1",
                    &[&back_at],
                )
                .await
                .unwrap()
                .get(0);
            if resumed > 0 {
                break;
            }
            assert!(
                back.elapsed() < StdDuration::from_secs(10),
                "no task run finished within 10 s of the server being back"
            );
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        eprintln!(
            "mid-run restart: work resumed {:?} after the server was back",
            back.elapsed()
        );
    }
    let status = wait_exit(&mut worker, StdDuration::from_secs(120)).await;
    let log = child_stderr(&mut worker);
    eprintln!(
        "mid-run restart: --once finished {:?} after the server was back",
        back.elapsed()
    );
    eprintln!("WORKERLOG {log}");
    assert!(status.success(), "{log}");
    assert!(
        log.contains("retrying"),
        "the log says what happened: {log}"
    );
    let c = pg.client().await;
    // Shown only when an assertion below fails.
    for r in c
        .query("SELECT s::text FROM data_agg_state s ORDER BY 1", &[])
        .await
        .unwrap()
    {
        eprintln!("task {}", r.get::<_, String>(0));
    }
    assert_eq!(live_bars(&c).await, expected);
    assert_eq!(
        pg_count(
            &c,
            "SELECT count(*) FROM data_agg_state WHERE status <> 'idle'"
        )
        .await,
        0
    );

    // Mid-idle: a running worker loses its server while waiting; data that
    // arrives afterwards is aggregated without anyone's help.
    let now = db_now(&c).await;
    let start = now.duration_trunc(Duration::minutes(5)).unwrap() - Duration::minutes(20);
    register(&c, "BTCUSD", AssetClass::Crypto, &start.to_rfc3339()).await;
    c.execute(
        "UPDATE data_agg_state SET aggregation_delay_seconds = 3600 WHERE canonical_symbol = 'BTCUSD'",
        &[],
    )
    .await
    .unwrap();
    drop(c);
    let mut worker = spawn(&pg.url, &["run", "--lease-seconds", "10"]);
    tokio::time::sleep(StdDuration::from_secs(2)).await;
    let back = pg.restart(StdDuration::from_secs(2)).await;
    let c = pg.client().await;
    insert_minutes(&c, "BTCUSD", start, 0..5).await;
    // Aggregated within 10 s of the server being back.
    wait_count(
        &c,
        "SELECT count(*) FROM derived_data_bars WHERE canonical_symbol = 'BTCUSD' AND timeframe = '5m'",
        1,
        StdDuration::from_secs(10).saturating_sub(back.elapsed()),
    )
    .await;
    eprintln!(
        "mid-idle restart: new data aggregated {:?} after the server was back",
        back.elapsed()
    );
    signal(&worker, Signal::SIGTERM);
    let status = wait_exit(&mut worker, StdDuration::from_secs(30)).await;
    let log = child_stderr(&mut worker);
    assert!(status.success(), "{log}");
}

async fn pg_count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// A snapshot of every stored bar row, deleted ones included.
async fn all_bar_rows(c: &Client) -> Vec<String> {
    c.query("SELECT b::text FROM derived_data_bars b ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_worker_frozen_mid_copy_is_taken_over_and_changes_nothing_when_it_wakes() {
    let symbols = names("FZ", 3);
    let expected = clean_bars(&symbols, 28).await;
    let db = TestDb::migrated().await;
    load_fx(&db.client().await, &symbols, 28, SEEDS).await;
    let c = db.client().await;
    let lease = 10;
    let mut a = spawn(
        &db.url,
        &[
            "run",
            "--lease-seconds",
            &lease.to_string(),
            "--max-windows",
            "3000",
            "--concurrency",
            "1",
        ],
    );
    let pattern = format!("barkeep %:{}:%", a.id());
    // Stop the worker when the server shows it inside a COPY of bars, and
    // keep it stopped if it still is (its chunk transaction open, its task
    // row locked); otherwise let it go on and watch for the next COPY.
    let in_copy = "SELECT count(*) FROM pg_stat_activity a
                   WHERE a.application_name LIKE $1 AND a.state = 'active'
                     AND a.query LIKE 'COPY derived_data_bars%'";
    let mut frozen = None;
    let watch = Instant::now();
    while watch.elapsed() < StdDuration::from_secs(60) {
        let seen: i64 = c.query_one(in_copy, &[&pattern]).await.unwrap().get(0);
        if seen == 0 {
            tokio::time::sleep(StdDuration::from_millis(2)).await;
            continue;
        }
        signal(&a, Signal::SIGSTOP);
        let still: i64 = c.query_one(in_copy, &[&pattern]).await.unwrap().get(0);
        if still > 0 {
            frozen = Some(Instant::now());
            break;
        }
        signal(&a, Signal::SIGCONT);
    }
    let frozen = frozen.expect("never caught the worker inside a COPY");
    let task: (String, String) = {
        let r = c
            .query_one(
                "SELECT canonical_symbol, timeframe FROM data_agg_state
                 WHERE status = 'running' ORDER BY running_started_at_utc LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };

    // An operator command on the locked task returns within seconds.
    let t = Instant::now();
    let out = db.cli(&["task", "disable", &task.0, &task.1]);
    let took = t.elapsed();
    eprintln!(
        "task disable on a task locked by a frozen worker returned in {took:?}: {}",
        stderr(&out).trim()
    );
    assert!(took < StdDuration::from_secs(lease as u64), "{took:?}");
    if out.status.success() {
        let out = db.cli(&["task", "reenable", &task.0, &task.1]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // Another worker takes the task over once the lease has expired.
    let out = db.cli(&["run", "--once", "--lease-seconds", &lease.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The run log shows the takeover when the task's run was logged; the
    // bars below are what must hold either way.
    let taken_over: Option<DateTime<Utc>> = c
        .query_one(
            "SELECT max(finished_at) FROM agg_run_log
             WHERE canonical_symbol = $1 AND timeframe = $2",
            &[&task.0, &task.1],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!(
        "frozen task finished by another worker {:?} after the freeze (lease {lease} s)",
        frozen.elapsed()
    );
    let _ = taken_over;
    assert_eq!(live_bars(&c).await, expected);

    // The frozen worker wakes up: it owns nothing any more and writes nothing.
    let before = all_bar_rows(&c).await;
    signal(&a, Signal::SIGCONT);
    tokio::time::sleep(StdDuration::from_secs(3)).await;
    signal(&a, Signal::SIGTERM);
    let status = wait_exit(&mut a, StdDuration::from_secs(40)).await;
    let log = child_stderr(&mut a);
    assert!(status.success(), "{log}");
    assert_eq!(
        all_bar_rows(&c).await,
        before,
        "the woken worker changed bars"
    );
    assert_eq!(live_bars(&c).await, expected);
    assert_eq!(
        db.count("SELECT count(*) FROM data_agg_state WHERE status = 'running'")
            .await,
        0
    );
}
