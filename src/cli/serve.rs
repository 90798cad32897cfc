//! `barkeep serve`: flags to [`ServeSettings`], then the HTTP server of
//! [`crate::http`] until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Result;

use super::Global;
use crate::http::{self, ServeSettings};

/// Arguments of `barkeep serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; anything but loopback needs a token. Port 0
    /// picks a free port (the address is printed on start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Bearer token every request but /health must carry (header
    /// `Authorization: Bearer …` or `?token=` for the dashboard).
    #[arg(long, env = "BARKEEP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Most client connections held at once; further ones wait to be accepted.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,
    /// Close a client connection that sends and receives nothing this many seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub idle_timeout_seconds: u64,
}

/// Run `barkeep serve`.
pub async fn run(global: &Global, args: ServeArgs) -> Result<ExitCode> {
    let settings = match ServeSettings::new(args.addr, args.token) {
        Ok(s) => ServeSettings {
            max_connections: args.max_connections as usize,
            idle_timeout: std::time::Duration::from_secs(args.idle_timeout_seconds),
            ..s
        },
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    super::ignore_closed_pipes();
    let database = global.database().await?;
    let tokened = settings.token.is_some();
    http::serve(
        &database,
        &settings,
        |addr| {
            println!(
                "barkeep serve: dashboard at http://{addr}/{}",
                if tokened { " (add ?token=…)" } else { "" }
            );
            println!("barkeep serve: listening on {addr}");
        },
        shutdown_signal(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
