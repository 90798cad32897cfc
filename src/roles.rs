//! The three least-privilege roles the schema grants to (`barkeep_ingest`,
//! `barkeep_worker`, `barkeep_reader`), made before the migrations run.
//!
//! Roles are cluster-wide, and on managed PostgreSQL the user that owns the
//! database is often not a superuser. `db up` creates missing roles when the
//! user may (superuser or CREATEROLE), uses them when they already exist,
//! and otherwise stops before writing anything, printing the exact SQL a
//! superuser must run first.

use anyhow::{bail, Context, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::db::quote_ident;

/// The roles migration 1 grants privileges to.
pub const ROLES: [&str; 3] = ["barkeep_ingest", "barkeep_worker", "barkeep_reader"];

/// What the connected user may do about the roles.
#[derive(Debug, serde::Serialize)]
pub struct RoleCheck {
    pub user: String,
    pub may_create: bool,
    pub missing: Vec<String>,
}

/// Look up which roles are missing and whether the current user may create them.
pub async fn check(client: &Client) -> Result<RoleCheck> {
    let row = client
        .query_one(
            "SELECT current_user::text, rolsuper OR rolcreaterole
               FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .context("reading the connected user's rights")?;
    let roles: Vec<String> = ROLES.iter().map(|r| r.to_string()).collect();
    let missing = client
        .query(
            "SELECT r FROM unnest($1::text[]) WITH ORDINALITY AS t(r, n)
              WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) ORDER BY n",
            &[&roles],
        )
        .await
        .context("looking up barkeep's roles")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(RoleCheck {
        user: row.get(0),
        may_create: row.get(1),
        missing,
    })
}

/// The SQL a superuser runs to make `missing` (one statement a line).
pub fn setup_sql(missing: &[String]) -> String {
    missing
        .iter()
        .map(|r| format!("CREATE ROLE {} NOLOGIN;", quote_ident(r)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Make sure every role exists: create the missing ones when the user may,
/// otherwise fail with the SQL to run first.
pub async fn ensure(client: &Client) -> Result<()> {
    let check = check(client).await?;
    if check.missing.is_empty() {
        return Ok(());
    }
    if !check.may_create {
        bail!(
            "the roles {} do not exist and the user {:?} may not create roles (no CREATEROLE); \
             nothing was changed. Ask a superuser to run this SQL once on this server, then run \
             `barkeep db up` again:\n{}",
            check.missing.join(", "),
            check.user,
            setup_sql(&check.missing)
        );
    }
    for role in &check.missing {
        let sql = format!("CREATE ROLE {} NOLOGIN", quote_ident(role));
        if let Err(e) = client.batch_execute(&sql).await {
            // Another `db up` on another database of this server made it first.
            if e.code() != Some(&SqlState::DUPLICATE_OBJECT) {
                return Err(e).with_context(|| format!("creating role {role}"));
            }
        }
        tracing::info!("created role {role}");
    }
    Ok(())
}
