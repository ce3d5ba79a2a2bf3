//! `digits eval`: the tutorial's test step on a saved run, with per-class figures; or a model
//! scored on a folder of people's own labelled images.

use std::path::{Path, PathBuf};

use clap::Args;
use digits::data::{NUM_CLASSES, Split};
use digits::eval;
use digits::labelled::{self, Scorecard, Tally};
use digits::model::Ensemble;
use digits::predict::Verdict;
use digits::run::{RunConfig, RunDir};

use super::{Announce, DataArgs, DeviceArgs};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The run folder to evaluate; repeat it to evaluate an ensemble that averages the
    /// models' probabilities. With --images, the default is the models built into digits.
    #[arg(long = "model", value_name = "RUN", required_unless_present = "images")]
    models: Vec<PathBuf>,
    /// Score a folder of your own labelled images instead of a test set: a labels.csv
    /// (columns path,label), sub-folders 0 to 9, or files named after their digit (7.png).
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// With --images: list every image read wrongly or not read at all, surest first.
    #[arg(long, requires = "images")]
    mistakes: bool,
    #[command(flatten)]
    data: DataArgs,
    /// Images per batch (the average loss is a mean of batch means, as in the tutorial).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=65536))]
    batch_size: u32,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let selected = args.device.open(Announce::Stdout)?;
    if let Some(dir) = &args.images {
        return score_folder(&args, dir, &selected.device);
    }
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
    print_models(&configs);
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

/// Which models answer, one line each, and that several average their probabilities. Runs of
/// one recipe (the built-in models) differ only by their seed, which is then named.
fn print_models(configs: &[RunConfig]) {
    for config in configs {
        let seed = match &config.train {
            Some(train) if configs.len() > 1 => format!(" (seed {})", train.seed),
            _ => String::new(),
        };
        let (model, origin) = (config.model.describe(), config.origin());
        println!("Model: {model} {origin}{seed}");
    }
    if configs.len() > 1 {
        println!(
            "Ensemble of {} models, averaging probabilities",
            configs.len()
        );
    }
}

/// `--images DIR`: how the model reads people's own digits, folder by folder.
fn score_folder(args: &EvalArgs, dir: &Path, device: &burn::tensor::Device) -> anyhow::Result<()> {
    let images = labelled::read_folder(dir)?;
    let predictor = super::load_predictor(&args.models, device)?;
    print_models(&predictor.configs);
    let scorecard = labelled::score(&predictor, dir, images);
    let total = scorecard.total();
    let groups = scorecard.by_group();
    println!(
        "Images: {} in {} folder(s) of {}",
        total.images,
        groups.len(),
        dir.display()
    );
    let count = |verdict: Verdict| {
        scorecard
            .outcomes
            .iter()
            .filter(|o| o.answer.as_ref().is_ok_and(|a| a.verdict == verdict))
            .count()
    };
    let unread = scorecard
        .outcomes
        .iter()
        .filter(|o| o.answer.is_err())
        .count();
    println!(
        "Accuracy: {:.2}% ({} of {}); answered unsure: {}, not a digit: {}, several digits: {}, \
         unreadable: {}",
        100.0 * total.accuracy(),
        total.correct,
        total.images,
        count(Verdict::Unsure),
        count(Verdict::NotADigit),
        count(Verdict::SeveralDigits),
        unread
    );
    let confident: Vec<_> = scorecard
        .outcomes
        .iter()
        .filter(|o| o.answer.as_ref().is_ok_and(|a| a.verdict == Verdict::Digit))
        .collect();
    let confident_right = confident.iter().filter(|o| o.correct()).count();
    println!(
        "Confident answers: {} ({:.2}% of them right)",
        confident.len(),
        100.0 * confident_right as f64 / confident.len().max(1) as f64
    );
    print_tallies("folder", &groups);
    print_tallies("style", &scorecard.by_style());
    print_confusion(&scorecard);
    if args.mistakes {
        print_mistakes(&scorecard);
    }
    Ok(())
}

fn print_tallies(what: &str, tallies: &std::collections::BTreeMap<String, Tally>) {
    if tallies.is_empty() {
        return;
    }
    let width = tallies
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max(what.len());
    println!(
        "\n{what:<width$} {:>7} {:>8} {:>9} {:>9}",
        "images", "correct", "accuracy", "withheld"
    );
    for (name, tally) in tallies {
        println!(
            "{name:<width$} {:>7} {:>8} {:>8.1}% {:>9}",
            tally.images,
            tally.correct,
            100.0 * tally.accuracy(),
            tally.withheld
        );
    }
}

fn print_confusion(scorecard: &Scorecard) {
    println!("\nconfusion matrix of the images read (rows: label, columns: answer)");
    print!("{:>6}", "");
    (0..NUM_CLASSES).for_each(|c| print!("{c:>6}"));
    println!();
    for (label, row) in scorecard.confusion().iter().enumerate() {
        print!("{label:>6}");
        row.iter().for_each(|n| print!("{n:>6}"));
        println!();
    }
}

fn print_mistakes(scorecard: &Scorecard) {
    println!("\nmistakes (surest first)");
    for outcome in scorecard.mistakes() {
        let path = outcome.image.path.display();
        match &outcome.answer {
            Ok(answer) => println!(
                "{path}: label {}, read {} ({:.1}%, {})",
                outcome.image.label,
                answer.digit,
                100.0 * answer.confidence,
                answer.verdict.as_str()
            ),
            Err(why) => println!("{path}: label {}, not read: {why}", outcome.image.label),
        }
    }
}
