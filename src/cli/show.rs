//! `digits show`: the tutorial's 3x3 grid of training samples.

use std::path::PathBuf;

use clap::Args;
use digits::data::{DatasetName, Split};
use digits::files::save_png;
use digits::show;

use super::{DataArgs, at_least};

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Which split to draw from.
    #[arg(long, default_value = "train", value_parser = parse_split)]
    split: Split,
    /// First sample (default: 59000 as in the tutorial, or the last samples of a smaller set).
    #[arg(long, allow_negative_numbers = true, value_parser = at_least::<0>)]
    start: Option<usize>,
    /// How many samples.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u16).range(1..=100))]
    count: u16,
    /// Where to write the PNG.
    #[arg(long, default_value = "samples.png")]
    out: PathBuf,
}

fn parse_split(s: &str) -> Result<Split, String> {
    match s {
        "train" => Ok(Split::Train),
        "test" => Ok(Split::Test),
        other => Err(format!("unknown split '{other}': expected train or test")),
    }
}

pub fn run(args: ShowArgs) -> anyhow::Result<()> {
    let data = args
        .data
        .resolve(DatasetName::Mnist, &[args.split])?
        .load(args.split)?;
    let range = show::sample_range(data.len(), args.start, usize::from(args.count));
    anyhow::ensure!(
        !range.is_empty(),
        "--start {} is past the end of the {} {} split ({} images)",
        args.start.unwrap_or(range.start),
        data.name,
        args.split,
        data.len()
    );
    let samples = show::samples(&data, range);
    print!("{}", show::preview(&samples, 3));
    save_png(&show::grid(&samples, 3).into(), &args.out)?;
    println!("Saved {} samples to {}", samples.len(), args.out.display());
    Ok(())
}
