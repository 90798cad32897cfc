//! A worker left running (`barkeep run` as a real process): one file per
//! topic (bars final on time, hard failures isolated, several workers on
//! one database, PostgreSQL restarts, frozen workers); this one holds what
//! they share: spawning and signalling the worker, waiting on it and on
//! the database, the data they load and the bars of a clean run.

mod failures;
mod finality;
mod frozen;
mod restarts;
mod sharing;

use std::process::{Child, Stdio};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio_postgres::Client;

use crate::common::{barkeep_on, stderr, TestDb};
use crate::fixtures::{live_bars, load_fx, LiveBar};

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

/// The seed of the first symbol's bars in the databases of these tests.
const SEEDS: u64 = 300;

/// Live bars of a clean single-worker run over the same data.
async fn clean_bars(symbols: &[String], days: i64) -> Vec<LiveBar> {
    let clean = TestDb::migrated().await;
    load_fx(&clean.client().await, symbols, days, SEEDS).await;
    let out = clean.cli(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    live_bars(&clean.client().await).await
}
