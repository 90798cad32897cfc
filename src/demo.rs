//! `barkeep demo`: the whole job on the embedded database with the shipped
//! AUDUSD sample.

use std::process::ExitCode;

use anyhow::Result;

use crate::assets::{self, AssetClass, Symbol};
use crate::cli::Global;
use crate::migrate;

/// Arguments of `barkeep demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// Run the demo.
pub async fn run(global: &Global, _args: DemoArgs) -> Result<ExitCode> {
    let database = global.database().await?;
    let mut client = database.connect().await?;
    migrate::up(&mut client, None).await?;
    let symbol = Symbol::parse("AUDUSD")?;
    assets::add(
        &client,
        &symbol,
        AssetClass::Fx,
        Some("Australian dollar / US dollar"),
        true,
    )
    .await?;
    println!("demo: database ready at {}", database.describe);
    Ok(ExitCode::SUCCESS)
}
