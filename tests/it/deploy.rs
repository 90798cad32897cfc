//! The service files in `deploy/`: the worker started with the exact
//! command line of `barkeep-worker.service` stops cleanly on SIGTERM (what
//! `systemctl stop` sends) well within the unit's `TimeoutStopSec`, leaving
//! no task leased; `barkeep completions` prints valid scripts.
//! (`systemd-analyze verify` of the units runs in `.ci/run`.)

use std::path::Path;
use std::process::{Command, Stdio};

use barkeep::model::AssetClass;
use barkeep::synth::{generate, SynthSpec};

use crate::common::{stderr, stdout, TestDb};
use crate::fixtures::{load_bars, register};

/// `key=value` of the unit's [Service] section.
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
        .trim()
        .to_string()
}

#[tokio::test]
async fn the_worker_unit_stops_cleanly_on_sigterm_within_its_timeout() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/barkeep-worker.service"),
    )
    .unwrap();
    let timeout_secs: u64 = unit_value(&unit, "TimeoutStopSec").parse().unwrap();
    assert_eq!(unit_value(&unit, "Restart"), "on-failure");
    assert!(unit_value(&unit, "EnvironmentFile").starts_with("/etc/barkeep/"));
    let exec = unit_value(&unit, "ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/barkeep"));
    let args: Vec<&str> = words.collect();
    let grace: u64 = args
        .iter()
        .position(|a| *a == "--grace-seconds")
        .and_then(|i| args.get(i + 1))
        .expect("ExecStart sets --grace-seconds")
        .parse()
        .unwrap();
    assert!(
        grace < timeout_secs,
        "the grace ({grace}s) must end before systemd kills ({timeout_secs}s)"
    );

    let db = TestDb::migrated().await;
    let c = db.client().await;
    for (i, symbol) in ["EURUSD", "GBPUSD"].iter().enumerate() {
        register(&c, symbol, AssetClass::Fx, "2025-06-29T00:00:00Z").await;
        let bars: Vec<_> = generate(&SynthSpec {
            start: "2025-06-29T00:00:00Z".parse().unwrap(),
            minutes: 3 * 7 * 1440,
            seed: 7 + i as u64,
            ..SynthSpec::default()
        })
        .collect();
        load_bars(&c, symbol, &bars).await;
    }

    let child = db
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the worker has finished a task run, so it is in its loop.
    let mut polls = 0;
    while db.count("SELECT count(*) FROM agg_run_log").await == 0 {
        polls += 1;
        assert!(polls < 600, "the worker never finished a task");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let waiter = tokio::task::spawn_blocking(move || child.wait_with_output());
    let out = match tokio::time::timeout(std::time::Duration::from_secs(timeout_secs), waiter).await
    {
        Ok(joined) => joined.unwrap().unwrap(),
        Err(_) => panic!("the worker did not stop within TimeoutStopSec={timeout_secs}"),
    };
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        stderr(&out)
    );
    assert!(stdout(&out).contains("task runs in"), "{}", stdout(&out));
    assert_eq!(
        db.count("SELECT count(*) FROM data_agg_state WHERE lease_token IS NOT NULL")
            .await,
        0,
        "a task is still leased after a clean stop"
    );
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_barkeep"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in ["barkeep", "export", "database-url"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
        if shell == "bash" {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("barkeep.bash");
            std::fs::write(&path, &script).unwrap();
            let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
            assert!(check.status.success(), "bash -n: {}", stderr(&check));
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_barkeep"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
