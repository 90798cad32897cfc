//! barkeep keeps higher-timeframe market-data bars (5m, 15m, 1h, 4h, 1d, 1w)
//! continuously and correctly aggregated from 1-minute bars in PostgreSQL.
//!
//! # Layout
//!
//! - [`model`]: the base layer: `Symbol`, `AssetClass`, `Env`, `Timeframe`,
//!   the utc and fx bucket calendars, one `Bar`; it imports nothing of the crate.
//! - [`error`]: `UsageError` and which database failures are transient.
//! - [`cli`]: command-line definitions and dispatch.
//! - [`pg`]: the embedded PostgreSQL cluster under `./.barkeep`.
//! - [`db`]: resolving and connecting to the database.
//! - [`store`]: the SQL of the command line and the HTTP face, beside its tables, as typed functions.
//! - [`migrate`]: reversible, checksummed migrations embedded from `migrations/`,
//!   and `require_migrated`.
//! - [`roles`]: the least-privilege roles, made (or asked for) before migrating.
//! - [`copy_binary`]: PostgreSQL's binary COPY format, encoder and field readers.
//! - [`engine`]: the fast aggregation path (fold, binary COPY source and sink).
//! - [`worker`]: claiming, running and finishing tasks (`barkeep run`).
//! - [`bars`]: reading stored bars and the one definition of the open (partial) bucket.
//! - [`export`]: printing stored bars (`barkeep export`, `--as-of`).
//! - [`http`]: `barkeep serve`: the dashboard, the JSON API and `/metrics`.
//! - [`rebuild`]: recomputing a range of derived bars (`barkeep rebuild`).
//! - [`assets`]: the instrument registry (`core_asset_registry_all`).
//! - [`ingest`]: parsing, validating and loading 1-minute bars.
//! - [`demo`]: the end-to-end demo on the shipped sample.
//! - [`tasks`]: `sync` of tasks from the registry and operator task commands.
//! - [`ops`]: status, alerts, quality, quarantine, verify, backup and restore.
//! - [`bench`](mod@bench): barkeep against plain SQL on the same data (`barkeep bench`).
//! - [`synth`]: seeded synthetic 1-minute bars for tests and benchmarks.

pub mod assets;
pub mod bars;
pub mod bench;
pub mod cli;
pub mod copy_binary;
pub mod db;
pub mod demo;
pub mod engine;
pub mod error;
pub mod export;
pub mod http;
pub mod ingest;
pub mod migrate;
pub mod model;
pub mod ops;
pub mod pg;
pub mod rebuild;
pub mod roles;
pub mod store;
pub mod synth;
pub mod tasks;
pub mod worker;
