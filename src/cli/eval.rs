//! `digits eval`: the tutorial's test step on a saved run, with per-class figures.

use std::path::PathBuf;

use clap::Args;
use digits::data::Split;
use digits::device::DeviceChoice;
use digits::eval;
use digits::model::Ensemble;
use digits::run::RunDir;

use super::DataArgs;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The run folder to evaluate; repeat it to evaluate an ensemble that averages the
    /// models' probabilities.
    #[arg(long = "model", value_name = "RUN", required = true)]
    models: Vec<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Images per batch (the average loss is a mean of batch means, as in the tutorial).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=65536))]
    batch_size: u32,
    /// auto (CUDA, else a hardware wgpu adapter, else the CPU), cpu, cuda or wgpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let selected = args.device.select()?;
    println!("Using {} device ({})", selected.name, selected.reason);
    let (configs, models) = args
        .models
        .iter()
        .map(|run| RunDir::open(run)?.load_model(&selected.device))
        .collect::<Result<(Vec<_>, Vec<_>), _>>()?;
    let test = args
        .data
        .resolve(configs[0].dataset, &[Split::Test])?
        .load(Split::Test)?;
    let evaluation =
        eval::evaluate_ensemble(&Ensemble::new(models), &test, args.batch_size as usize);
    for config in &configs {
        println!("Model: {} {}", config.model.describe(), config.origin());
    }
    if configs.len() > 1 {
        println!(
            "Ensemble of {} models, averaging probabilities",
            configs.len()
        );
    }
    println!("Test set: {} ({} images)", test.name, test.len());
    println!(
        "Accuracy: {:.2}%, Avg loss: {:>8.6}",
        100.0 * evaluation.accuracy(),
        evaluation.avg_loss
    );
    let names = test.class_names();
    println!(
        "\n{:<14} {:>7} {:>9} {:>7} {:>7}",
        "class", "images", "precision", "recall", "F1"
    );
    for (class, m) in evaluation.per_class().iter().enumerate() {
        println!(
            "{:<14} {:>7} {:>8.2}% {:>6.2}% {:>7.4}",
            names[class],
            m.support,
            100.0 * m.precision,
            100.0 * m.recall,
            m.f1
        );
    }
    println!("\nconfusion matrix (rows: true class, columns: predicted class)");
    print!("{:>6}", "");
    (0..names.len()).for_each(|c| print!("{c:>6}"));
    println!();
    for (truth, row) in evaluation.confusion.iter().enumerate() {
        print!("{truth:>6}");
        row.iter().for_each(|n| print!("{n:>6}"));
        println!();
    }
    Ok(())
}
