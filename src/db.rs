//! Where the database is and how to reach it: `--database-url` /
//! `DATABASE_URL`, or else the embedded cluster of [`crate::pg`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use tokio_postgres::{Client, Config, NoTls};

use crate::pg;

/// The resolved database target, ready to open connections.
#[derive(Clone, Debug)]
pub struct Database {
    config: Config,
    /// A human description for messages (never contains a password).
    pub describe: String,
}

impl Database {
    /// From a URL or key=value connection string.
    pub fn from_url(url: &str) -> Result<Self> {
        let config: Config = url.parse().context(
            "parsing the database URL (expected postgres://user@host/db or key=value pairs)",
        )?;
        let describe = describe(&config);
        Ok(Self { config, describe })
    }

    /// From explicit connection settings.
    pub fn from_config(config: Config) -> Self {
        let describe = describe(&config);
        Self { config, describe }
    }

    /// Resolve the target: an explicit URL wins; otherwise the embedded
    /// cluster under `home`, started on demand, with its `barkeep` database.
    pub async fn resolve(url: Option<&str>, home: PathBuf) -> Result<Self> {
        if let Some(url) = url {
            return Self::from_url(url);
        }
        let cluster = tokio::task::spawn_blocking(move || -> Result<pg::Cluster> {
            let cluster = pg::Cluster::new(&home)?;
            cluster.ensure_running()?;
            Ok(cluster)
        })
        .await
        .context("starting the embedded cluster")??;
        let admin = Self::from_config(cluster.config("postgres"));
        admin.create_database_if_missing(pg::DATABASE).await?;
        Ok(Self::from_config(cluster.config(pg::DATABASE)))
    }

    /// The connection settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Open one connection; its driver runs on the tokio runtime.
    pub async fn connect(&self) -> Result<Client> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .with_context(|| format!("connecting to {}", self.describe))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("database connection closed: {e}");
            }
        });
        Ok(client)
    }

    /// Open one connection whose asynchronous messages (LISTEN
    /// notifications) arrive on the returned channel; the channel closes
    /// when the connection does.
    pub async fn connect_listening(
        &self,
    ) -> Result<(
        Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    )> {
        let (client, mut connection) = self
            .config
            .connect(NoTls)
            .await
            .with_context(|| format!("connecting to {}", self.describe))?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages =
                futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        if tx.send(n).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("listening connection closed: {e}");
                        break;
                    }
                }
            }
        });
        Ok((client, rx))
    }

    /// Create `name` on this server unless it exists (safe under concurrency).
    pub async fn create_database_if_missing(&self, name: &str) -> Result<()> {
        let client = self.connect().await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .context("looking up databases")?
            .is_some();
        if exists {
            return Ok(());
        }
        let sql = format!("CREATE DATABASE {}", quote_ident(name));
        if let Err(e) = client.batch_execute(&sql).await {
            // Another process created it between our look-up and CREATE.
            let raced = e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE)
                || e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION);
            if !raced {
                return Err(e).with_context(|| format!("creating database {name}"));
            }
        }
        Ok(())
    }
}

/// Quote an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn describe(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    format!(
        "database {} on {} as {}",
        config.get_dbname().unwrap_or("(default)"),
        host,
        config.get_user().unwrap_or("(default user)")
    )
}
