//! barkeep's integration tests: one binary, one module per capability,
//! each test on a fresh database of a real PostgreSQL cluster.

mod common;
mod migrations;
