//! barkeep keeps higher-timeframe market-data bars (5m, 15m, 1h, 4h, 1d, 1w)
//! continuously and correctly aggregated from 1-minute bars in PostgreSQL.
//!
//! # Layout
//!
//! - [`cli`]: command-line definitions and dispatch.
//! - [`pg`]: the embedded PostgreSQL cluster under `./.barkeep`.
//! - [`db`]: resolving and connecting to the database.
//! - [`migrate`]: reversible, checksummed migrations embedded from `migrations/`.
//! - [`assets`]: the instrument registry (`core_asset_registry_all`).
//! - [`ingest`]: parsing, validating and loading 1-minute bars.
//! - [`demo`]: the end-to-end demo on the shipped sample.
//! - [`tasks`]: `sync` of tasks from the registry and operator task commands.
//! - [`synth`]: seeded synthetic 1-minute bars for tests and benchmarks.

pub mod assets;
pub mod cli;
pub mod db;
pub mod demo;
pub mod ingest;
pub mod migrate;
pub mod pg;
pub mod synth;
pub mod tasks;
