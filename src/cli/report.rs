//! `digits report` and `digits compare`: pictures of what runs did.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, FromArgMatches};
use digits::data::Split;
use digits::eval;
use digits::experiment::{Adjustments, Plan, next_free_name};
use digits::files::save_png;
use digits::report::{self, LabelledHistory, ReportInputs, charts};
use digits::run::RunDir;

use super::train::{TrainSettings, in_flag_terms, train};
use super::{Announce, DataArgs, DeviceArgs};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run folder to report on.
    run: PathBuf,
    /// Folder for the charts and report.html [default: RUN/report].
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn report(args: ReportArgs) -> anyhow::Result<()> {
    let run = RunDir::open(&args.run)?;
    let selected = args.device.open(Announce::Stdout)?;
    let (config, model) = run.load_model(&selected.device)?;
    let history = run.metrics()?;
    let test = args
        .data
        .resolve(config.dataset, &[Split::Test])?
        .load(Split::Test)?;
    let batch_size = config.train.clone().unwrap_or_default().batch_size;
    let evaluation = eval::evaluate(&model, &test, batch_size);
    let out = args.out.unwrap_or_else(|| args.run.join("report"));
    let name = run_name(&args.run);
    let inputs = ReportInputs {
        name: &name,
        config: &config,
        history: &history,
        evaluation: &evaluation,
        test: &test,
    };
    for path in report::write_report(&inputs, &out)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Run folders to compare.
    runs: Vec<PathBuf>,
    /// Train one run per value first, e.g. `activation=relu,sigmoid` or `optimizer=adam,sgd`
    /// (also lr, batch-size, seed, hidden as 128+400), all else as the training flags say.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    vary: Option<String>,
    #[command(flatten)]
    settings: TrainSettings,
    /// Where to write the chart.
    #[arg(long, default_value = "compare.png")]
    out: PathBuf,
}

pub fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let mut runs = args.runs.clone();
    if let Some(vary) = &args.vary {
        runs.extend(train_variants(vary, &args.settings)?);
    }
    if runs.len() < 2 {
        bail!("give at least two runs to compare, or --vary KEY=V1,V2");
    }
    let mut configs = Vec::new();
    let mut histories = Vec::new();
    for path in &runs {
        let run = RunDir::open(path)?;
        configs.push(run.config()?);
        let history = run.metrics()?;
        if history.is_empty() {
            bail!("{} has no recorded epochs", path.display());
        }
        histories.push(history);
    }
    let names = run_names(&runs);
    let labels = report::difference_labels(&configs, &names);
    println!(
        "{:<40} {:>8} {:>12} {:>10}",
        "run", "epochs", "test loss", "accuracy"
    );
    for (label, history) in labels.iter().zip(&histories) {
        let last = history.last().expect("checked non-empty");
        println!(
            "{label:<40} {:>8} {:>12.6} {:>9.2}%",
            last.epoch,
            last.test_loss,
            100.0 * last.test_accuracy
        );
    }
    let series: Vec<LabelledHistory> = labels
        .into_iter()
        .zip(histories)
        .map(|(label, history)| LabelledHistory { label, history })
        .collect();
    save_png(&charts::comparison_chart(&series)?.into(), &args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Trains one run per value of `KEY=V1,V2,...` under the next free `runs/compare-KEY[-N]`.
fn train_variants(vary: &str, settings: &TrainSettings) -> anyhow::Result<Vec<PathBuf>> {
    let (key, values) = vary
        .split_once('=')
        .context("--vary takes KEY=V1,V2,..., e.g. activation=relu,sigmoid")?;
    let values: Vec<&str> = values.split(',').filter(|v| !v.is_empty()).collect();
    if values.len() < 2 {
        bail!("--vary {key} needs at least two values");
    }
    // A fresh folder each time, so the same comparison can be run again.
    let parent = next_free_name(Path::new("runs"), &format!("compare-{key}"), Path::exists);
    // Refuse a bad value before spending minutes training the good ones.
    let common = settings.adjustments();
    let mut plans = Vec::new();
    for (i, value) in values.iter().enumerate() {
        if values[..i].contains(value) {
            bail!("--vary {key} lists {value} twice");
        }
        let adjustments = variant(key, value)?.or(&common);
        let plan = Plan::start(adjustments, Some(parent.join(value)))
            .map_err(in_flag_terms)
            .with_context(|| format!("--vary {key}={value}"))?;
        plans.push((value, plan));
    }
    let mut variants = Vec::new();
    for (value, plan) in plans {
        println!("\n== {key}={value} ==");
        variants.push(train(settings, plan)?);
    }
    Ok(variants)
}

/// What the training flag `--KEY VALUE` alone changes, parsed as `digits train` parses it. A
/// flag that takes a list has its items joined with `+` (`hidden=128+400`), since commas
/// separate the values.
fn variant(key: &str, value: &str) -> anyhow::Result<Adjustments> {
    let flags = TrainSettings::augment_args(clap::Command::new("--vary").no_binary_name(true));
    let delimiter = flags
        .get_arguments()
        .find(|arg| arg.get_long() == Some(key))
        .map(|arg| arg.get_value_delimiter())
        .with_context(|| format!("--vary cannot vary '{key}': it is no flag of digits train"))?;
    let value = match delimiter {
        Some(delimiter) => value.replace('+', &delimiter.to_string()),
        None => value.to_string(),
    };
    let matches = flags
        .try_get_matches_from([format!("--{key}"), value.clone()])
        .map_err(|err| {
            let message = err.to_string();
            let first = message.lines().next().unwrap_or_default();
            anyhow::anyhow!(
                "--vary {key}={value}: {}",
                first.trim_start_matches("error: ")
            )
        })?;
    let adjustments = TrainSettings::from_arg_matches(&matches)?.adjustments();
    if adjustments == Adjustments::default() {
        bail!("--vary cannot vary '{key}': it says where or how to train, not what");
    }
    Ok(adjustments)
}

fn run_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Each run's folder name, or its path as given where another run has the same folder name
/// (`a/run` and `b/run`).
fn run_names(runs: &[PathBuf]) -> Vec<String> {
    let names: Vec<String> = runs.iter().map(|p| run_name(p)).collect();
    names
        .iter()
        .zip(runs)
        .map(|(name, path)| {
            if names.iter().filter(|n| *n == name).count() > 1 {
                path.display().to_string()
            } else {
                name.clone()
            }
        })
        .collect()
}
