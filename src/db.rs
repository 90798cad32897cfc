//! Where the database is and how to reach it: `--database-url` /
//! `DATABASE_URL`, or else the embedded cluster of [`crate::pg`].
//!
//! TLS follows libpq: `sslmode` (`disable`, `prefer`, `require`,
//! `verify-ca`, `verify-full`) and `sslrootcert` are read from the URL or
//! key=value string here, because tokio-postgres itself only knows
//! disable/prefer/require; they are stripped before the rest is handed to
//! tokio-postgres (`conninfo` reads them, `tls` turns them into rustls
//! settings). The password never appears in a message: errors name the
//! database, host and user only.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rustls::ClientConfig;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, NoTls, Notification, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::pg;

mod conninfo;
mod tls;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain connections only.
    Disable,
    /// TLS when the server offers it, no certificate check (libpq's default).
    Prefer,
    /// TLS or nothing; the certificate is checked only when a root
    /// certificate is given (then as `verify-ca`), as libpq does.
    Require,
    /// TLS, certificate chain checked against the root certificates.
    VerifyCa,
    /// TLS, chain checked and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => bail!(
                "unknown sslmode {other:?}; expected disable, prefer, require, verify-ca or verify-full"
            ),
        })
    }

    /// The name libpq uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// The resolved database target, ready to open connections.
#[derive(Clone, Debug)]
pub struct Database {
    config: Config,
    ssl_mode: SslMode,
    /// None for plain connections.
    tls: Option<Arc<ClientConfig>>,
    /// A human description for messages (never contains a password).
    pub describe: String,
}

impl Database {
    /// From a URL or key=value connection string.
    pub fn from_url(url: &str) -> Result<Self> {
        let (rest, ssl) = conninfo::split_ssl_params(url)?;
        let mut config: Config = rest.parse().map_err(|e| {
            anyhow!(
                "parsing the database URL (expected postgres://user@host/db or key=value pairs): {e}"
            )
        })?;
        let mode = match &ssl.mode {
            Some(m) => SslMode::parse(m)?,
            None => SslMode::Prefer,
        };
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let tls = tls::client_config_for(mode, ssl.root_cert.as_deref())?;
        let describe = describe(&config, mode);
        Ok(Self {
            config,
            ssl_mode: mode,
            tls,
            describe,
        })
    }

    /// From explicit connection settings (plain connections, as used for the
    /// embedded cluster's unix socket).
    pub fn from_config(mut config: Config) -> Self {
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let describe = describe(&config, SslMode::Disable);
        Self {
            config,
            ssl_mode: SslMode::Disable,
            tls: None,
            describe,
        }
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

    /// The connection settings (without sslmode/sslrootcert).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The effective sslmode.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// The TLS connector of this target (None for plain connections), for
    /// callers that open connections themselves, such as a pool.
    pub fn tls_connector(&self) -> Option<MakeRustlsConnect> {
        self.tls
            .as_ref()
            .map(|tls| MakeRustlsConnect::new(ClientConfig::clone(tls)))
    }

    /// Open one connection; its driver runs on the tokio runtime.
    pub async fn connect(&self) -> Result<Client> {
        self.open(None).await
    }

    /// Open one connection whose asynchronous messages (LISTEN
    /// notifications) arrive on the returned channel; the channel closes
    /// when the connection does.
    pub async fn connect_listening(
        &self,
    ) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<Notification>)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = self.open(Some(tx)).await?;
        Ok((client, rx))
    }

    /// Open one connection, plain or over this target's TLS, and spawn its
    /// driver (passing notifications to `notifications` when given).
    async fn open(
        &self,
        notifications: Option<tokio::sync::mpsc::UnboundedSender<Notification>>,
    ) -> Result<Client> {
        match self.tls_connector() {
            None => self.open_with(NoTls, notifications).await,
            Some(connector) => self.open_with(connector, notifications).await,
        }
    }

    async fn open_with<T>(
        &self,
        tls: T,
        notifications: Option<tokio::sync::mpsc::UnboundedSender<Notification>>,
    ) -> Result<Client>
    where
        T: MakeTlsConnect<Socket>,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let (client, connection) = self
            .config
            .connect(tls)
            .await
            .map_err(|e| self.connect_error(e))?;
        tokio::spawn(drive(connection, notifications));
        Ok(client)
    }

    /// This target with adjusted connection settings (same TLS).
    pub fn tuned(&self, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut tuned = self.clone();
        adjust(&mut tuned.config);
        tuned
    }

    /// A connection error with what to do about it, and never the password.
    fn connect_error(&self, e: tokio_postgres::Error) -> anyhow::Error {
        let text = error_chain(&e);
        let host = self
            .config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_default();
        let hint = if text.contains("NotValidForName") || text.contains("not valid for name") {
            Some(format!(
                "the server's certificate does not name the host {host:?} (sslmode=verify-full \
                 checks the name): connect by a name the certificate lists, or use sslmode=verify-ca"
            ))
        } else if text.contains("UnknownIssuer")
            || text.contains("unknown issuer")
            || text.contains("BadSignature")
        {
            Some(format!(
                "the server's certificate is not signed by a trusted root (sslmode={}): set \
                 sslrootcert to the CA file your provider publishes, or sslrootcert=system",
                self.ssl_mode.as_str()
            ))
        } else if text.contains("no encryption") {
            Some(
                "the server accepts only TLS connections from here: use sslmode=require \
                 (or verify-full with sslrootcert) instead of sslmode=disable"
                    .to_string(),
            )
        } else if text.contains("server does not support TLS") {
            Some(format!(
                "the server does not offer TLS but sslmode={} demands it",
                self.ssl_mode.as_str()
            ))
        } else {
            None
        };
        let err = anyhow::Error::new(e);
        let err = match hint {
            Some(h) => err.context(h),
            None => err,
        };
        err.context(format!("connecting to {}", self.describe))
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

/// Drive a connection until it closes, passing its notifications on when
/// someone listens (and closing it when the listener is gone).
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notifications: Option<tokio::sync::mpsc::UnboundedSender<Notification>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
        match (message, &notifications) {
            (Ok(tokio_postgres::AsyncMessage::Notification(n)), Some(tx)) => {
                if tx.send(n).is_err() {
                    break;
                }
            }
            (Ok(_), _) => {}
            (Err(e), _) => {
                tracing::debug!("database connection closed: {e}");
                break;
            }
        }
    }
}

/// Quote an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn describe(config: &Config, mode: SslMode) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let tls = match (config.get_hosts().first(), mode) {
        (Some(tokio_postgres::config::Host::Unix(_)), _) => String::new(),
        (_, mode) => format!(" (sslmode={})", mode.as_str()),
    };
    format!(
        "database {} on {} as {}{tls}",
        config.get_dbname().unwrap_or("(default)"),
        host,
        config.get_user().unwrap_or("(default user)")
    )
}

/// The error and its sources in one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        text.push_str(&format!(" {s:?}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_sslmode_is_refused_without_echoing_the_password() {
        let err = Database::from_url("postgres://u:secret@h/db?sslmode=verify")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown sslmode"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = format!(
            "{:#}",
            Database::from_url("host=h password=secret port=x").unwrap_err()
        );
        assert!(!err.contains("secret"), "{err}");
    }
}
