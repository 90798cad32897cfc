//! `barkeep serve`: one file per face of it (the token, the bars API, the
//! open bucket, the alerts and tasks reports, `/metrics`, the dashboard in
//! headless Chromium); this one holds what they share: a served database
//! and a plain HTTP/1.1 client.

mod auth;
mod bars_api;
mod dashboard;
mod guard;
mod metrics;
mod open_bucket;
mod reports;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};

use serde_json::Value;

use crate::common::TestDb;

/// A running `barkeep serve`, stopped when dropped.
struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(db: &TestDb, extra: &[&str]) -> Served {
    let mut args = vec!["serve", "--addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut child = db
        .command(&args)
        .env_remove("BARKEEP_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting barkeep serve");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("barkeep serve exited before listening")
            .expect("reading serve's output");
        if let Some(a) = line.strip_prefix("barkeep serve: listening on ") {
            break a.trim().parse().expect("a socket address");
        }
    };
    Served { child, addr }
}

/// A GET over plain HTTP/1.1: (status, body).
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let (status, _, body) = get_with_head(addr, path, token);
    (status, body)
}

/// A GET over plain HTTP/1.1: (status, the head in lower case, body).
fn get_with_head(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connecting to barkeep serve");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}

fn get_json(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, body) = get(addr, path, token);
    let json =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    (status, json)
}
