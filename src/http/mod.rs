//! `barkeep serve`: the dashboard, the JSON API and Prometheus `/metrics`
//! over one small pool of read-only connections.
//!
//! # Layout
//!
//! - [`auth`]: the bind rule (loopback, or a token) and the constant-time
//!   token check on every request but `/health`.
//! - [`api`]: `/api/bars`, `/api/tasks`, `/api/alerts`, `/api/health` and
//!   the dashboard's other reads.
//! - [`error`]: errors as JSON with a 4xx/5xx status.
//! - [`bars_json`]: a page of `/api/bars` ([`bars_json::BarsPage`]) written
//!   as JSON by hand, as serde would write it.
//!
//! The run log, the registry and the newest 1m bar are read through
//! [`crate::store`]; tasks, alerts, quality and the quarantine come from
//! the [`crate::ops`] services the command line prints.
//! - [`metrics`]: the Prometheus text exposition, computed at scrape time
//!   on two connections at once.
//! - [`assets`]: the page, its script and style, and the vendored
//!   `lightweight-charts`, all embedded in the binary.
//! - [`guard`]: the connection cap, the idle timeout and the security
//!   headers on every response.
//!
//! Every connection of the pool runs `SET ROLE barkeep_reader` and read-only
//! transactions, so the server can read what the reader role may and write
//! nothing, whichever user the database URL names.

pub mod api;
pub mod assets;
pub mod auth;
pub mod bars_json;
pub mod error;
pub mod guard;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::net::TcpListener;
use tokio_postgres::NoTls;

use crate::db::Database;

/// Most bars one `/api/bars` response holds; `next` pages beyond it.
pub const BARS_CAP: i64 = 10_000;

/// What `barkeep serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Where to listen (port 0: any free port).
    pub addr: SocketAddr,
    /// Bearer token every request but `/health` must carry; required for a
    /// non-loopback address.
    pub token: Option<String>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Most client connections held at once; more wait to be accepted.
    pub max_connections: usize,
    /// A client connection that sends and receives nothing this long is closed.
    pub idle_timeout: std::time::Duration,
}

impl ServeSettings {
    /// Settings from raw values: a non-loopback bind without a token, or an
    /// empty token, is refused here, before anything listens.
    pub fn new(addr: SocketAddr, token: Option<String>) -> Result<Self> {
        let token = match token {
            Some(t) if t.trim().is_empty() => {
                bail!("the token is empty: give a non-empty --token or BARKEEP_TOKEN")
            }
            other => other,
        };
        if !addr.ip().is_loopback() && token.is_none() {
            bail!(
                "refusing to serve on {addr} without a token: a non-loopback address needs --token or BARKEEP_TOKEN (or bind 127.0.0.1)"
            );
        }
        Ok(Self {
            addr,
            token,
            pool_size: 4,
            max_connections: 256,
            idle_timeout: std::time::Duration::from_secs(30),
        })
    }
}

/// Shared by every request.
pub struct AppState {
    pub pool: Pool,
    pub token: Option<auth::Token>,
    /// The newest `/metrics` exposition, for scrapes that arrive while it
    /// is being computed.
    pub metrics: metrics::Scrapes,
}

/// A pool of connections that act as `barkeep_reader`, read-only, with a
/// statement timeout so no request holds a connection for long.
pub fn reader_pool(database: &Database, size: usize) -> Result<Pool> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let config = database.config().clone();
    let manager = match database.tls_connector() {
        Some(tls) => Manager::from_config(config, tls, manager_config),
        None => Manager::from_config(config, NoTls, manager_config),
    };
    Pool::builder(manager)
        .max_size(size)
        .post_create(Hook::async_fn(|client, _| {
            Box::pin(async move {
                client
                    .batch_execute(
                        "SET ROLE barkeep_reader;
                         SET default_transaction_read_only = on;
                         SET statement_timeout = '10s';",
                    )
                    .await
                    .map_err(HookError::Backend)
            })
        }))
        .build()
        .context("building the connection pool")
}

/// The routes: `/health` open to all, everything else behind the token.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/", get(assets::index))
        .route("/api/bars", get(api::bars))
        .route("/api/tasks", get(api::tasks))
        .route("/api/alerts", get(api::alerts))
        .route("/api/health", get(api::health))
        .route("/api/quality", get(api::quality))
        .route("/api/runs", get(api::runs))
        .route("/api/quarantine", get(api::quarantine))
        .route("/api/symbols", get(api::symbols))
        .route("/metrics", get(metrics::metrics))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/health", get(api::liveness))
        .merge(protected)
        .layer(axum::middleware::from_fn(guard::security_headers))
        .with_state(state)
}

/// Serve until `shutdown` resolves. `on_listen` is told the bound address
/// (the real port when the settings asked for port 0).
pub async fn serve(
    database: &Database,
    settings: &ServeSettings,
    on_listen: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let pool = reader_pool(database, settings.pool_size)?;
    // Fail at start, not on the first request, when the database or the
    // reader role cannot be reached.
    let client = pool.get().await.map_err(|e| {
        anyhow::anyhow!(
            "connecting to {} as barkeep_reader: {e} (is the schema migrated with `barkeep db up`, and may this user SET ROLE barkeep_reader?)",
            database.describe
        )
    })?;
    drop(client);
    let state = Arc::new(AppState {
        pool,
        token: settings.token.as_deref().map(auth::Token::new),
        metrics: metrics::Scrapes::default(),
    });
    let listener = TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("binding {}", settings.addr))?;
    let local = listener.local_addr().context("reading the bound address")?;
    // Responses go out as soon as they are written: a streamed page's
    // pieces would otherwise wait on Nagle's algorithm for the client's
    // delayed acknowledgement (some 40 ms a response).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("setting TCP_NODELAY on a connection: {e}");
        }
    });
    let listener = guard::Guarded::new(listener, settings.max_connections, settings.idle_timeout);
    on_listen(local);
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}
