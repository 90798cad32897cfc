//! barkeep's integration tests: one binary, one module per capability,
//! each test on a fresh database of a real PostgreSQL cluster.

#[allow(dead_code)] // helpers used by some capabilities only
mod common;
mod ingest;
mod migrations;
mod privileges;
