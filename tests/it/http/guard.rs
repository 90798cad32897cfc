//! What `serve` does whatever the route: the security headers on every
//! response (the dashboard's policy allows its inline scripts by hash, which
//! the Chromium test of `dashboard.rs` holds), idle connections closed, and
//! a cap on connections held at once.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::{get_with_head, serve};
use crate::fixtures::audusd_db;

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let db = audusd_db().await;
    let server = serve(&db, &[]);
    for path in ["/", "/health", "/api/tasks", "/no/such/page"] {
        let (_, head, _) = get_with_head(server.addr, path, None);
        for header in [
            "x-frame-options: deny",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "content-security-policy: default-src 'none'; script-src 'sha256-",
            "frame-ancestors 'none'",
        ] {
            assert!(head.contains(header), "{path}: no {header:?} in {head}");
        }
    }
}

/// Read until the server closes the connection or `limit` passes: whether it closed.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let db = audusd_db().await;
    let server = serve(&db, &["--idle-timeout-seconds", "1"]);
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)),
        "an idle connection stayed open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before its idle time"
    );

    // A kept-alive connection is closed once it falls silent after a request.
    let mut kept = TcpStream::connect(server.addr).unwrap();
    write!(kept, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(
        closed_within(&mut kept, Duration::from_secs(10)),
        "a kept-alive idle connection stayed open"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let db = audusd_db().await;
    let server = serve(
        &db,
        &["--max-connections", "2", "--idle-timeout-seconds", "60"],
    );
    let first = TcpStream::connect(server.addr).unwrap();
    let _second = TcpStream::connect(server.addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = TcpStream::connect(server.addr).unwrap();
    write!(
        third,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = Vec::new();
    let waited = third.read_to_end(&mut buf);
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a third connection was served past a cap of 2: {waited:?} {}",
        String::from_utf8_lossy(&buf)
    );
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    third.read_to_end(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}
