//! The store layer for the command line and the HTTP face: the SQL they
//! need, beside the tables it reads, behind typed functions that return
//! typed rows. A handler or a command asks "is this symbol registered?" or
//! "the newest runs" and never holds SQL text itself. Every value is bound.
//!
//! - [`registry`] reads `core_asset_registry_all`.
//! - [`tasks`] reads `data_agg_state`.
//! - [`runs`] reads `agg_run_log`.
//! - [`bars`] reads `data_bars`.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

pub mod bars;
pub mod registry;
pub mod runs;
pub mod tasks;

/// Who the connection acts as, and the server's clock.
#[derive(Debug, Clone)]
pub struct Session {
    pub role: String,
    pub server_time: DateTime<Utc>,
}

/// The connection's role and the server's time.
pub async fn session(client: &Client) -> Result<Session> {
    let row = client
        .query_one("SELECT current_user::text, now()", &[])
        .await
        .context("asking the database")?;
    Ok(Session {
        role: row.get(0),
        server_time: row.get(1),
    })
}
