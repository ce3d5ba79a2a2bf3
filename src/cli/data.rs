//! `digits data fetch` and `digits data info`.

use anyhow::Context;
use clap::{Args, Subcommand};
use digits::choice::Choice;
use digits::data::download::{self, Silent};
use digits::data::{DataSource, DatasetName, Fallback, Split};

use super::{DataArgs, progress};

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download a dataset into --data-dir, checking every file against its published digest.
    Fetch(FetchArgs),
    /// Say where a dataset is found and how many images each split holds (never downloads).
    Info(InfoArgs),
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    data: DataArgs,
}

pub fn run(command: DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::Fetch(args) => fetch(args.data),
        DataCommand::Info(args) => info(args.data),
    }
}

fn fetch(data: DataArgs) -> anyhow::Result<()> {
    let dataset = data.dataset.unwrap_or(DatasetName::Mnist);
    if dataset.files().is_none() {
        println!("{dataset} is built into digits; there is nothing to download.");
        return Ok(());
    }
    let dir = data.data_dir.join(dataset.name());
    download::fetch_dataset(
        dataset,
        &dir,
        &data.fetch_options(),
        &mut progress::DownloadBars::new(),
    )
    .with_context(|| format!("fetching {dataset}"))?;
    println!("{dataset} is ready in {}", dir.display());
    Ok(())
}

/// Reports what is on disk: it neither downloads nor falls back, so a missing dataset is an
/// error that names the missing files and how to get them.
fn info(data: DataArgs) -> anyhow::Result<()> {
    let source = DataSource {
        fetch: None,
        ..data.source(DatasetName::Mnist)
    };
    let resolved =
        source.resolve_splits(&[Split::Train, Split::Test], Fallback::Never, &mut Silent)?;
    match &resolved.dir {
        Some(dir) => println!("{}: {}", resolved.dataset, dir.display()),
        None => println!("{}: built in", resolved.dataset),
    }
    for split in [Split::Train, Split::Test] {
        let set = resolved.load(split)?;
        println!("  {split}: {} images", set.len());
    }
    Ok(())
}
