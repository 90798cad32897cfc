//! The key=value connection strings the tests build (`common::conninfo`):
//! a socket path, a user, a database name or a password holding a quote,
//! a backslash or a space reaches barkeep and the server as written, as
//! libpq's quoting promises.

use std::path::PathBuf;

use barkeep::db::Database;
use tokio_postgres::config::Host;

use crate::common::{conninfo, url_for, TestDb};

#[test]
fn values_with_quotes_backslashes_and_spaces_parse_back_as_written() {
    let host = r"/tmp/it's a \dir";
    let password = r"pa'ss\wo rd\'";
    let user = "o'neil";
    let dbname = r"bars\live";
    let text = conninfo(&[
        ("host", host),
        ("port", "5433"),
        ("user", user),
        ("password", password),
        ("dbname", dbname),
        ("sslmode", "disable"),
    ]);
    let database = Database::from_url(&text).unwrap_or_else(|e| panic!("{text}: {e:#}"));
    let config = database.config();
    assert_eq!(config.get_hosts(), &[Host::Unix(PathBuf::from(host))]);
    assert_eq!(config.get_ports(), &[5433]);
    assert_eq!(config.get_user(), Some(user));
    assert_eq!(config.get_password(), Some(password.as_bytes()));
    assert_eq!(config.get_dbname(), Some(dbname));
}

#[tokio::test]
async fn a_database_named_with_a_quote_and_a_backslash_is_reached_by_its_name() {
    let db = TestDb::migrated().await;
    let admin = db.client().await;
    // Named like the harness's databases, so a crashed run's copy is swept.
    let name = format!(r"bkt_{}_it's\here", std::process::id());
    let ident = format!("\"{}\"", name.replace('"', "\"\""));
    admin
        .batch_execute(&format!("CREATE DATABASE {ident}"))
        .await
        .unwrap();
    let reached: Result<String, String> = async {
        let client = Database::from_url(&url_for(&name))
            .map_err(|e| format!("{e:#}"))?
            .connect()
            .await
            .map_err(|e| format!("{e:#}"))?;
        let row = client
            .query_one("SELECT current_database()::text", &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.get(0))
    }
    .await;
    admin
        .batch_execute(&format!("DROP DATABASE {ident} WITH (FORCE)"))
        .await
        .unwrap();
    assert_eq!(reached, Ok(name));
}
