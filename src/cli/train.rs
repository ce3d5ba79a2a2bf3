//! `digits train`: the tutorial's training, with its defaults, plus `--resume`. The run
//! itself is the library's [`digits::experiment`]; this parses flags and prints.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use digits::augment::AugmentConfig;
use digits::data::Split;
use digits::experiment::{Adjustments, Experiment, ExperimentError, Plan};
use digits::model::{Activation, ModelKind};
use digits::train::{ConfigError, EngineChoice, LrSchedule, OptimizerKind, Preset, TrainError};

use super::{Announce, DataArgs, DeviceArgs, at_least, progress::TrainPrinter};

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub settings: TrainSettings,
    /// Run folder to save into [default: runs/tutorial, or the next free runs/tutorial-N;
    /// with --resume: the resumed run].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep training a saved run from where it stopped.
    #[arg(long, value_name = "RUN")]
    resume: Option<PathBuf>,
}

/// What to train on and how: every training flag but where the run goes. A flag given
/// overrides the preset's value (or, with --resume, the run's); the defaults below are the
/// tutorial preset's.
#[derive(Debug, Clone, Args)]
pub struct TrainSettings {
    #[command(flatten)]
    data: DataArgs,
    /// tutorial (the tutorial's MLP and settings) or best (the strongest recipe for a laptop
    /// CPU: cnn, AdamW with weight decay 0.05, lr 0.003, one-cycle, batch 64, 15 epochs,
    /// augmentation) [default: tutorial].
    #[arg(long)]
    preset: Option<Preset>,
    /// mlp (the tutorial's), mlp-large, lenet5, cnn or cnn-large [default: the preset's].
    #[arg(long)]
    model: Option<ModelKind>,
    /// Epochs to train (with --resume: further epochs) [default: 10, or the preset's].
    #[arg(long, allow_negative_numbers = true, value_parser = at_least::<1>)]
    epochs: Option<usize>,
    /// Images per batch [default: 32, or the preset's].
    #[arg(
        long,
        allow_negative_numbers = true,
        value_parser = clap::builder::RangedI64ValueParser::<u32>::new().range(1..=65536)
    )]
    batch_size: Option<u32>,
    /// Learning rate (the peak, with a schedule) [default: 0.01, or the preset's].
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// adam, adamw or sgd; one other than the preset's comes with its own defaults
    /// [default: adam, or the preset's].
    #[arg(long)]
    optimizer: Option<OptimizerKind>,
    /// Weight decay [default: the optimizer's, 0 or AdamW's 0.01; or the preset's].
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// SGD's momentum, e.g. 0.9 (SGD only) [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    momentum: Option<f64>,
    /// constant, one-cycle, cosine or step[:EPOCHS[:FACTOR]] [default: constant, or the
    /// preset's].
    #[arg(long)]
    schedule: Option<LrSchedule>,
    /// Label smoothing, e.g. 0.1 [default: 0, or the preset's].
    #[arg(long, allow_negative_numbers = true)]
    label_smoothing: Option<f64>,
    /// Random distortions of the training images: none, digits (affine and elastic),
    /// affine, clothes (flips and shifts) or handwriting (for people's own digits)
    /// [default: none, or the preset's].
    #[arg(long)]
    augment: Option<AugmentChoice>,
    /// Marks that are no digit (crosses, stars, scribbles) added per training digit, taught
    /// to get no confident answer, e.g. 0.1 [default: 0].
    #[arg(long, value_name = "FRACTION")]
    not_digits: Option<f64>,
    /// Standardise inputs with the training set's mean and standard deviation (the best
    /// preset always does).
    #[arg(long)]
    normalize: bool,
    /// Hold out the last N training images to pick the best epoch (saved as
    /// best.safetensors, which eval, predict and serve then use).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least::<0>)]
    validation: Option<usize>,
    /// With --validation: stop after N epochs without a better validation accuracy.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least::<0>)]
    patience: Option<usize>,
    /// relu or sigmoid [default: relu].
    #[arg(long)]
    activation: Option<Activation>,
    /// MLP hidden layer widths [default: 128,400].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=65536))]
    hidden: Option<Vec<u32>>,
    /// Reshuffle the training set every epoch (the tutorial keeps its order; the best preset
    /// reshuffles).
    #[arg(long)]
    shuffle: bool,
    /// Seed for the initial weights, shuffling and augmentation [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    device: DeviceArgs,
    /// auto (digits' own CPU engine on the CPU, for every network without GELU; Burn's
    /// autodiff otherwise) or burn (always Burn's) [default: auto].
    #[arg(long)]
    engine: Option<EngineChoice>,
    /// Train on only the first N training images (for quick experiments).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least::<0>)]
    limit: Option<usize>,
}

/// The augmentations `--augment` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AugmentChoice {
    None,
    Digits,
    Affine,
    Clothes,
    /// For people's own digits: every pen, blur, tight crops, continental 1s and 7s, closed
    /// 4s and hooked 9s, framed as `prepare` frames them.
    Handwriting,
}

impl AugmentChoice {
    fn config(self) -> Option<AugmentConfig> {
        match self {
            AugmentChoice::None => None,
            AugmentChoice::Digits => Some(AugmentConfig::digits()),
            AugmentChoice::Affine => Some(AugmentConfig {
                elastic: None,
                ..AugmentConfig::digits()
            }),
            AugmentChoice::Clothes => Some(AugmentConfig::clothes()),
            AugmentChoice::Handwriting => Some(AugmentConfig::handwriting()),
        }
    }
}

impl TrainSettings {
    /// What the flags change, for the library.
    pub fn adjustments(&self) -> Adjustments {
        Adjustments {
            preset: self.preset,
            model: self.model,
            hidden: self
                .hidden
                .as_ref()
                .map(|widths| widths.iter().map(|&w| w as usize).collect()),
            activation: self.activation,
            normalize: self.normalize,
            epochs: self.epochs,
            batch_size: self.batch_size.map(|b| b as usize),
            lr: self.lr,
            optimizer: self.optimizer,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            schedule: self.schedule,
            label_smoothing: self.label_smoothing,
            augment: self.augment.map(AugmentChoice::config),
            not_digits: self.not_digits,
            validation: self.validation,
            patience: self.patience,
            engine: self.engine,
            shuffle: self.shuffle,
            seed: self.seed,
            limit: self.limit,
        }
    }
}

/// Training was stopped by Ctrl-C or SIGTERM and saved: `main` exits with 130, as shells
/// expect of an interrupted command.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let adjustments = args.settings.adjustments();
    let plan = match &args.resume {
        Some(run) => Plan::resume(run, adjustments, args.out),
        None => Plan::start(adjustments, args.out),
    }
    .map_err(in_flag_terms)?;
    let out = train(&args.settings, plan)?;
    println!("Done! Saved to {}", out.display());
    Ok(())
}

/// Trains as `plan` says, on the data and device `settings` name, printing the tutorial's
/// lines; returns the run folder.
pub fn train(settings: &TrainSettings, plan: Plan) -> anyhow::Result<PathBuf> {
    let selected = settings.device.open(Announce::Stdout)?;
    let resolved = settings
        .data
        .resolve(plan.dataset(), &[Split::Train, Split::Test])?;
    let (train_set, test_set) = (resolved.load(Split::Train)?, resolved.load(Split::Test)?);
    let mut experiment = plan
        .prepare(resolved.dataset, train_set, test_set, &selected.device)
        .map_err(in_flag_terms)?
        .with_cancel_token(super::interrupt::cancel_on_signal());
    describe(&experiment);
    let out = experiment.out().to_path_buf();
    let history = match experiment.fit(&mut TrainPrinter::new()) {
        Err(TrainError::Interrupted {
            epoch,
            batches_done,
        }) => {
            println!(
                "Interrupted during epoch {epoch} after {batches_done} batches; saved to {}. \
                 Continue with: digits train --resume {0}",
                out.display()
            );
            return Err(Interrupted.into());
        }
        Err(err @ TrainError::Diverged { .. }) => {
            let kept = if experiment.has_checkpoint() {
                format!("{} keeps the last good checkpoint", out.display())
            } else {
                "nothing was saved".to_string()
            };
            return Err(anyhow!("{err}; {kept}"));
        }
        Err(err) => return Err(err.into()),
        Ok(history) => history,
    };
    let best = history
        .iter()
        .filter_map(|m| m.validation_accuracy.map(|a| (a, m)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((validation_accuracy, metrics)) = best {
        println!(
            "Best epoch by validation: {} (validation {:.2}%, test {:.2}%), saved as best.safetensors",
            metrics.epoch,
            100.0 * validation_accuracy,
            100.0 * metrics.test_accuracy
        );
    }
    Ok(out)
}

/// The tutorial's lines about the data and the model, and where a resumed run goes on.
fn describe(experiment: &Experiment) {
    let (train_set, test_set) = (experiment.train_set(), experiment.test_set());
    let trainer = experiment.trainer();
    let (model, config) = (trainer.model_config(), trainer.config());
    println!(
        "Dataset: {} ({} training images, {} test images{})",
        train_set.name,
        train_set.len(),
        test_set.len(),
        experiment
            .validation_set()
            .map(|v| format!(", {} held out for validation", v.len()))
            .unwrap_or_default()
    );
    if let Some(first) = test_set.batches(config.batch_size, None).next() {
        println!("Shape of X [N, C, H, W]: {:?}", first.shape());
        println!("Shape of y: [{}] int64", first.len());
    }
    println!(
        "Model: {} ({} parameters); {:?} lr {}, batch {}",
        model.describe(),
        model.parameter_count(),
        config.optimizer.kind(),
        config.lr,
        config.batch_size
    );
    match experiment.resumed_at() {
        None => {}
        Some((epochs_done, 0)) => println!("Resuming after epoch {epochs_done}"),
        Some((epochs_done, n)) => println!(
            "Resuming epoch {} after its first {n} batches",
            epochs_done + 1
        ),
    }
}

/// The library's complaint about a setting, told in the flags that set it.
pub fn in_flag_terms(err: ExperimentError) -> anyhow::Error {
    match err {
        ExperimentError::Config(ConfigError::OutOfRange {
            setting,
            requirement,
        }) => anyhow!("--{} must be {requirement}", setting.replace('_', "-")),
        ExperimentError::Config(ConfigError::MomentumWithout(kind)) => {
            anyhow!("--momentum is a setting of --optimizer sgd; {kind} has none")
        }
        ExperimentError::Config(ConfigError::PatienceWithoutValidation) => {
            anyhow!("--patience needs --validation N: the images to judge each epoch on")
        }
        ExperimentError::HiddenWithoutMlp => anyhow!(
            "--hidden sets the widths of an MLP; the convolutional models have fixed layers"
        ),
        ExperimentError::ArchitectureFixed => anyhow!(
            "--preset, --model, --activation, --hidden and --normalize cannot change when \
             resuming: the architecture is the saved run's"
        ),
        ExperimentError::RunExists(out) => anyhow!(
            "{} already holds a run; continue it with --resume {0}, or choose another --out",
            out.display()
        ),
        other => other.into(),
    }
}
