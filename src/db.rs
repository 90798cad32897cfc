//! Where the database is and how to reach it: `--database-url` /
//! `DATABASE_URL`, or else the embedded cluster of [`crate::pg`].
//!
//! TLS follows libpq: `sslmode` (`disable`, `prefer`, `require`,
//! `verify-ca`, `verify-full`) and `sslrootcert` are read from the URL or
//! key=value string here, because tokio-postgres itself only knows
//! disable/prefer/require; they are stripped before the rest is handed to
//! tokio-postgres. rustls (with the ring provider) does the TLS. The
//! password never appears in a message: errors name the database, host and
//! user only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::pg;

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

/// Where trusted root certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Roots {
    /// The operating system's store (`sslrootcert=system`, or the default).
    System,
    /// A PEM file of one or more certificates.
    File(PathBuf),
}

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
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
        let (rest, ssl) = split_ssl_params(url)?;
        let mut config: Config = rest.parse().map_err(|e| {
            anyhow!(
                "parsing the database URL (expected postgres://user@host/db or key=value pairs): {e}"
            )
        })?;
        let mode = match &ssl.mode {
            Some(m) => SslMode::parse(m)?,
            None => SslMode::Prefer,
        };
        let roots = match ssl.root_cert.as_deref() {
            Some("system") => Some(Roots::System),
            Some(path) => Some(Roots::File(PathBuf::from(path))),
            // libpq reads ~/.postgresql/root.crt when it exists.
            None => default_root_file().map(Roots::File),
        };
        let explicit_roots = roots.is_some();
        let check = match mode {
            SslMode::Disable => Check::Nothing,
            SslMode::Prefer | SslMode::Require if explicit_roots => Check::Chain,
            SslMode::Prefer | SslMode::Require => Check::Nothing,
            SslMode::VerifyCa => Check::Chain,
            SslMode::VerifyFull => Check::ChainAndName,
        };
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let tls = match mode {
            SslMode::Disable => None,
            _ => Some(Arc::new(client_config(
                check,
                roots.unwrap_or(Roots::System),
            )?)),
        };
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
        let client = match &self.tls {
            None => {
                let (client, connection) = self
                    .config
                    .connect(NoTls)
                    .await
                    .map_err(|e| self.connect_error(e))?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("database connection closed: {e}");
                    }
                });
                client
            }
            Some(tls) => {
                let connector = MakeRustlsConnect::new(ClientConfig::clone(tls));
                let (client, connection) = self
                    .config
                    .connect(connector)
                    .await
                    .map_err(|e| self.connect_error(e))?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("database connection closed: {e}");
                    }
                });
                client
            }
        };
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
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = match &self.tls {
            None => {
                let (client, connection) = self
                    .config
                    .connect(NoTls)
                    .await
                    .map_err(|e| self.connect_error(e))?;
                tokio::spawn(forward_notifications(connection, tx));
                client
            }
            Some(tls) => {
                let connector = MakeRustlsConnect::new(ClientConfig::clone(tls));
                let (client, connection) = self
                    .config
                    .connect(connector)
                    .await
                    .map_err(|e| self.connect_error(e))?;
                tokio::spawn(forward_notifications(connection, tx));
                client
            }
        };
        Ok((client, rx))
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

/// Drive a connection, passing its notifications on until it closes.
async fn forward_notifications<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    tx: tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
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

fn default_root_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql/root.crt");
    path.is_file().then_some(path)
}

/// sslmode and sslrootcert as written in the connection string.
#[derive(Debug, Default, PartialEq, Eq)]
struct SslParams {
    mode: Option<String>,
    root_cert: Option<String>,
}

/// Take `sslmode` and `sslrootcert` out of a URL or key=value string.
fn split_ssl_params(conn: &str) -> Result<(String, SslParams)> {
    let mut ssl = SslParams::default();
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let Some((base, query)) = conn.split_once('?') else {
            return Ok((conn.to_string(), ssl));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => ssl.mode = Some(percent_decode(value)?),
                "sslrootcert" => ssl.root_cert = Some(percent_decode(value)?),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, ssl));
    }
    let mut rest = String::new();
    let mut last = 0;
    for (key, value, range) in key_values(conn)? {
        let slot = match key.as_str() {
            "sslmode" => &mut ssl.mode,
            "sslrootcert" => &mut ssl.root_cert,
            _ => continue,
        };
        *slot = Some(value);
        rest.push_str(&conn[last..range.start]);
        last = range.end;
    }
    rest.push_str(&conn[last..]);
    Ok((rest, ssl))
}

/// The pairs of a libpq key=value string with the byte range each covers.
fn key_values(s: &str) -> Result<Vec<(String, String, std::ops::Range<usize>)>> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i >= bytes.len() {
            return Ok(out);
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_string();
        i = skip_ws(i);
        if i >= bytes.len() || bytes[i] != b'=' {
            bail!("the connection string has {key:?} without '=value'");
        }
        i = skip_ws(i + 1);
        let mut value = Vec::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => bail!("the connection string has an unterminated quote"),
                    Some(b'\\') if i + 1 < bytes.len() => {
                        value.push(bytes[i + 1]);
                        i += 2;
                    }
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b) => {
                        value.push(*b);
                        i += 1;
                    }
                }
            }
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
        }
        let value = String::from_utf8(value).context("the connection string is not UTF-8")?;
        out.push((key, value, start..i));
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| anyhow!("bad percent-encoding in the database URL"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the database URL is not UTF-8 after decoding")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_roots(roots: &Roots) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading sslrootcert {}", path.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("reading sslrootcert {}", path.display()))?;
            if certs.is_empty() {
                bail!("sslrootcert {} holds no PEM certificate", path.display());
            }
            for cert in certs {
                store
                    .add(cert)
                    .with_context(|| format!("using a certificate of {}", path.display()))?;
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                bail!(
                    "no trusted root certificates found on this system (install the \
                     ca-certificates package) and no sslrootcert given; set sslrootcert to \
                     the CA file of your PostgreSQL provider"
                );
            }
        }
    }
    Ok(store)
}

fn client_config(check: Check, roots: Roots) -> Result<ClientConfig> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(AnyCertificate(provider)),
        Check::Chain | Check::ChainAndName => {
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::new(load_roots(&roots)?),
                provider,
            )
            .build()
            .context("setting up certificate checks")?;
            if check == Check::Chain {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `sslmode=require` (and `prefer`) without a root certificate: encrypt,
/// but accept any certificate, as libpq does. Handshake signatures are
/// still checked, so the session is bound to the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the host
/// name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_params_leave_urls() {
        let (rest, ssl) = split_ssl_params(
            "postgres://u:p%40ss@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p%40ss@h:5432/db?application_name=x");
        assert_eq!(ssl.mode.as_deref(), Some("verify-full"));
        assert_eq!(ssl.root_cert.as_deref(), Some("/tmp/ca.pem"));
        let (rest, ssl) = split_ssl_params("postgresql://h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://h/db");
        assert_eq!(ssl.mode.as_deref(), Some("require"));
    }

    #[test]
    fn ssl_params_leave_key_value_strings() {
        let (rest, ssl) = split_ssl_params(
            "host=h sslmode = 'verify-ca' password='a b\\'c' sslrootcert=/x/ca\\ 1.pem dbname=d",
        )
        .unwrap();
        assert_eq!(rest, "host=h  password='a b\\'c'  dbname=d");
        assert_eq!(ssl.mode.as_deref(), Some("verify-ca"));
        assert_eq!(ssl.root_cert.as_deref(), Some("/x/ca 1.pem"));
        let config: Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"a b'c"[..]));
    }

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
