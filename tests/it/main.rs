//! barkeep's integration tests: one binary, one module per capability,
//! each test on a fresh database of a real PostgreSQL cluster.

mod calendar;
mod calendar_sql;
mod checklist;
#[allow(dead_code)] // helpers used by some capabilities only
mod common;
mod conninfo;
mod defaults;
mod deploy;
mod embedded;
mod engine;
mod fixtures;
mod gaps;
mod http;
mod ingest;
mod late_data;
mod layers;
mod live;
mod managed;
mod migrations;
mod ops;
mod plpgsql_check;
mod privileges;
mod quarantine;
mod reference;
mod restore;
mod running;
mod sql_functions;
mod starts;
mod state_machine;
mod tasks;
mod tls;
mod verify;
mod worker;
