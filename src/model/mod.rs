//! The base layer: barkeep's domain types and the calendar rules, with
//! nothing of the rest of the crate beneath them (only std and external
//! crates). Every other module may import these; these import no other
//! (docs/DESIGN.md, "Layers"; `tests/it/layers.rs` holds it).
//!
//! - [`symbol`]: the canonical instrument symbol.
//! - [`asset_class`]: asset classes and the calendar each one is cut on.
//! - [`env`](mod@env): which registry flag says an asset is active.
//! - [`timeframe`]: timeframes and the ladder.
//! - [`calendar`]: the `utc` and `fx` bucket calendars.
//! - [`bar`]: one bar, and a derived bar with its quality.

pub mod asset_class;
pub mod bar;
pub mod calendar;
pub mod env;
pub mod symbol;
pub mod timeframe;

pub use asset_class::AssetClass;
pub use bar::{Bar, DerivedBar};
pub use calendar::Calendar;
pub use env::Env;
pub use symbol::Symbol;
pub use timeframe::Timeframe;
