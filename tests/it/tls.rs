//! TLS as libpq does it: a cluster of this test's own (not the shared test
//! cluster) with `ssl = on`, a certificate authority and server certificate
//! made here, and pg_hba allowing TCP only with TLS. Checks `sslmode`
//! require / verify-ca / verify-full / disable and `sslrootcert`, the
//! messages of refusals, and that the password never shows.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use barkeep::db::Database;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::common::{barkeep_on, conninfo, stderr};
use crate::fixtures::{free_port, OwnCluster};

const PASSWORD: &str = "tls-secret-8d1f";

struct TlsCluster {
    _own: OwnCluster,
    port: u16,
    dir: PathBuf,
}

struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn authority(name: &str) -> Authority {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    Authority { cert, key }
}

fn write_owned(path: &Path, text: &str, like: &Path, mode: u32) {
    std::fs::write(path, text).unwrap();
    let meta = std::fs::metadata(like).unwrap();
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Start a cluster with TLS on 127.0.0.1 whose certificate names `localhost`
/// and is signed by a fresh CA written to `<dir>/ca.pem`; a second,
/// unrelated CA is written to `<dir>/other-ca.pem`.
async fn tls_cluster() -> TlsCluster {
    let port = free_port();
    let own = OwnCluster::start("barkeep-tls-", Some(port));
    let cluster = &own.cluster;
    cluster.stop().unwrap();

    let ca = authority("barkeep test CA");
    let other = authority("some other CA");
    let server_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = params.signed_by(&server_key, &ca.cert, &ca.key).unwrap();

    let data = cluster.data_dir();
    write_owned(&data.join("server.crt"), &server.pem(), &data, 0o644);
    write_owned(
        &data.join("server.key"),
        &server_key.serialize_pem(),
        &data,
        0o600,
    );
    write_owned(
        &data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        &data,
        0o600,
    );
    let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
    conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
    write_owned(&data.join("postgresql.conf"), &conf, &data, 0o600);
    cluster.ensure_running().unwrap();

    let dir = own.home.path().to_path_buf();
    std::fs::write(dir.join("ca.pem"), ca.cert.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other.cert.pem()).unwrap();

    let admin = own.superuser("postgres").await;
    admin
        .batch_execute(&format!("CREATE ROLE tls_user LOGIN PASSWORD '{PASSWORD}'"))
        .await
        .unwrap();
    TlsCluster {
        _own: own,
        port,
        dir,
    }
}

impl TlsCluster {
    /// A key=value string reaching the server as `host` at 127.0.0.1.
    fn conn(&self, host: &str, extra: &[(&str, &str)]) -> String {
        let port = self.port.to_string();
        let mut params = vec![
            ("host", host),
            ("hostaddr", "127.0.0.1"),
            ("port", port.as_str()),
            ("user", "tls_user"),
            ("password", PASSWORD),
            ("dbname", "postgres"),
        ];
        params.extend_from_slice(extra);
        conninfo(&params)
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    fn other_ca(&self) -> String {
        self.dir.join("other-ca.pem").display().to_string()
    }
}

/// Connect and report whether the session is encrypted.
async fn encrypted(conn: &str) -> Result<bool, String> {
    let database = Database::from_url(conn).map_err(|e| format!("{e:#}"))?;
    let client = database.connect().await.map_err(|e| format!("{e:#}"))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

fn refused(outcome: Result<bool, String>) -> String {
    let message = outcome.expect_err("the connection should have been refused");
    assert!(
        !message.contains(PASSWORD),
        "the password shows in: {message}"
    );
    message
}

#[tokio::test]
async fn sslmodes_and_root_certificates_behave_as_in_libpq() {
    let pg = tls_cluster().await;

    // require: encrypted, no certificate check.
    assert_eq!(
        encrypted(&pg.conn("localhost", &[("sslmode", "require")])).await,
        Ok(true)
    );
    assert_eq!(
        encrypted(&pg.conn("wrong.example", &[("sslmode", "require")])).await,
        Ok(true)
    );
    // The default (prefer) also encrypts when the server offers TLS.
    assert_eq!(encrypted(&pg.conn("localhost", &[])).await, Ok(true));

    // verify-full with the right root and host.
    let ca = pg.ca();
    let right = [("sslmode", "verify-full"), ("sslrootcert", ca.as_str())];
    assert_eq!(encrypted(&pg.conn("localhost", &right)).await, Ok(true));

    // SCRAM bound to the TLS channel (Neon's connection strings ask for it).
    let bound = [right[0], right[1], ("channel_binding", "require")];
    assert_eq!(encrypted(&pg.conn("localhost", &bound)).await, Ok(true));

    // verify-full with a host name the certificate does not list.
    let message = refused(encrypted(&pg.conn("wrong.example", &right)).await);
    assert!(
        message.contains("does not name the host \"wrong.example\""),
        "{message}"
    );

    // verify-ca ignores the name but checks the chain.
    let ca_only = [("sslmode", "verify-ca"), ("sslrootcert", ca.as_str())];
    assert_eq!(
        encrypted(&pg.conn("wrong.example", &ca_only)).await,
        Ok(true)
    );

    // A root that did not sign the server's certificate.
    for mode in ["verify-full", "verify-ca", "require"] {
        let other_ca = pg.other_ca();
        let wrong = [("sslmode", mode), ("sslrootcert", other_ca.as_str())];
        let message = refused(encrypted(&pg.conn("localhost", &wrong)).await);
        assert!(
            message.contains("not signed by a trusted root"),
            "{mode}: {message}"
        );
    }

    // Plain connections to a server that takes TCP only with TLS.
    let message = refused(encrypted(&pg.conn("localhost", &[("sslmode", "disable")])).await);
    assert!(
        message.contains("accepts only TLS connections"),
        "{message}"
    );

    // A root file that does not exist is named.
    let message = refused(
        encrypted(&pg.conn(
            "localhost",
            &[
                ("sslmode", "verify-full"),
                ("sslrootcert", "/nonexistent/ca.pem"),
            ],
        ))
        .await,
    );
    assert!(message.contains("/nonexistent/ca.pem"), "{message}");

    // The binary, with a URL: the same parameters, the same messages.
    let url = |query: &str| {
        format!(
            "postgres://tls_user:{PASSWORD}@localhost:{}/postgres?{query}",
            pg.port
        )
    };
    let run = |url: String| barkeep_on(&url, &["db", "status"]).output().unwrap();
    let out = run(url(&format!("sslmode=verify-full&sslrootcert={}", pg.ca())));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(url("sslmode=disable"));
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("accepts only TLS connections"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}
