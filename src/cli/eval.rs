//! `digits eval`: the tutorial's test step on a saved run, with per-class figures.

use std::path::PathBuf;

use clap::Args;
use digits::data::Split;
use digits::device::DeviceChoice;
use digits::eval;
use digits::run::RunDir;

use super::DataArgs;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The run folder to evaluate.
    #[arg(long, value_name = "RUN")]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Images per batch (the average loss is a mean of batch means, as in the tutorial).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=65536))]
    batch_size: u32,
    /// auto (the best available) or cpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let selected = args.device.select();
    println!("Using {} device ({})", selected.name, selected.reason);
    let (config, model) = RunDir::open(&args.model)?.load_model(&selected.device)?;
    let test = args.data.resolve(config.dataset)?.load(Split::Test)?;
    let evaluation = eval::evaluate(&model, &test, args.batch_size as usize);
    println!(
        "Model: {} after {} epochs on {}",
        config.model.describe(),
        config.epochs_done,
        config.dataset
    );
    println!("Test set: {} ({} images)", test.name, test.len());
    println!(
        "Accuracy: {:.2}%, Avg loss: {:>8.6}",
        100.0 * evaluation.accuracy(),
        evaluation.avg_loss
    );
    println!("\nclass          images  correct  accuracy");
    for (class, (images, correct)) in evaluation.per_class().iter().enumerate() {
        println!(
            "{:<14} {images:>6}  {correct:>7}  {:>7.2}%",
            test.class_names()[class],
            100.0 * *correct as f64 / (*images).max(1) as f64
        );
    }
    Ok(())
}
