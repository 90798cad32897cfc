//! The worker rides out PostgreSQL restarts mid-run and mid-idle, on a
//! cluster of this test's own.

use std::time::{Duration as StdDuration, Instant};

use barkeep::model::AssetClass;
use chrono::{Duration, DurationRound};
use nix::sys::signal::Signal;
use tokio_postgres::Client;

use crate::fixtures::{db_now, live_bars, load_fx, register, OwnCluster};

use super::{
    child_stderr, clean_bars, insert_minutes, names, signal, spawn, wait_count, wait_exit, SEEDS,
};

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

async fn pg_count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
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
