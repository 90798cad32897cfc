//! The environment a worker or command serves: which registry flag
//! (`active` or `test_active`) says an asset is in play.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};

/// Which registry flag says an asset is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Env {
    /// `active`.
    Prod,
    /// `test_active`.
    Dev,
    /// `test_active`.
    Test,
}

impl Env {
    pub fn as_str(self) -> &'static str {
        match self {
            Env::Prod => "prod",
            Env::Dev => "dev",
            Env::Test => "test",
        }
    }
}

impl fmt::Display for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Env {
    type Err = anyhow::Error;
    fn from_str(raw: &str) -> Result<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "prod" => Ok(Env::Prod),
            "dev" => Ok(Env::Dev),
            "test" => Ok(Env::Test),
            _ => bail!("unknown env {raw:?}: expected prod, dev or test"),
        }
    }
}
