//! The embedded cluster and the demo: `barkeep demo` twice on a fresh home
//! (the second run loads nothing new and says so), two processes starting
//! the same cluster at once, and `pg stop`.

use std::process::{Command, Output};

use crate::common::{stderr, stdout};

fn barkeep(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_barkeep"))
        .args(args)
        .env("BARKEEP_HOME", home)
        .env_remove("DATABASE_URL")
        .output()
        .expect("starting barkeep")
}

/// A home the server's unprivileged user can reach (the system temp folder).
fn fresh_home() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("barkeep-home-")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn two_processes_starting_one_cluster_share_one_server_and_the_demo_runs_twice() {
    let dir = fresh_home();
    let home = dir.path().join(".barkeep");

    let starts: Vec<_> = (0..2)
        .map(|_| {
            let home = home.clone();
            std::thread::spawn(move || barkeep(&home, &["pg", "start"]))
        })
        .collect();
    for s in starts {
        let out = s.join().unwrap();
        assert!(out.status.success(), "pg start failed: {}", stderr(&out));
    }
    let status = barkeep(&home, &["pg", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["running"], true);
    let pid_file = std::fs::read_to_string(home.join("pgdata/postmaster.pid")).unwrap();
    let postmaster: i32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{postmaster}")).exists());

    let first = barkeep(&home, &["demo"]);
    assert!(first.status.success(), "demo failed: {}", stderr(&first));
    let text = stdout(&first);
    assert!(text.contains("16875 rows read, 16875 loaded"), "{text}");
    for tf in ["5m ", "15m ", "1h ", "4h ", "1d ", "1w "] {
        assert!(
            text.lines().any(|l| l.starts_with(tf)),
            "no {tf}line in {text}"
        );
    }

    let second = barkeep(&home, &["demo"]);
    assert!(
        second.status.success(),
        "second demo failed: {}",
        stderr(&second)
    );
    let text = stdout(&second);
    assert!(text.contains("nothing new"), "{text}");
    assert!(text.contains("wrote 0 bars"), "{text}");

    let stop = barkeep(&home, &["pg", "stop"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    let status = barkeep(&home, &["pg", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["running"], false);
}

#[test]
fn a_missing_server_binary_folder_is_named() {
    let dir = fresh_home();
    let out = Command::new(env!("CARGO_BIN_EXE_barkeep"))
        .args(["pg", "status"])
        .env("BARKEEP_HOME", dir.path())
        .env("BARKEEP_PG_BINDIR", "/nonexistent/pg/bin")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/pg/bin"),
        "{}",
        stderr(&out)
    );
}
